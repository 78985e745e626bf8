//! Terminal settlement. A terminal closes its batch with an 0500 (DE3 92xxxx) carrying its totals —
//! DE74 credits count, DE76 debits count, DE86 credits amount, DE88 debits amount (ISO 8583:1987) — which
//! the switch compares with its own record of that batch (`books.rs`: approved or accepted, not reversed,
//! since the terminal's last settlement). In balance: 0510 RC 00 and the batch closes. Out of balance:
//! 0510 RC 95; the terminal then uploads each transaction of its batch (0320, answered 0330, each matched
//! to the switch's record or recorded as one it never saw) and closes with an 0500 (DE3 96xxxx): 0510
//! RC 00, and every discrepancy is recorded for the settlement report.

use iso8583::{ECHO_FIELDS, Message, ResponseCode};

use crate::books::{Totals, totals};
use crate::engine::{Engine, span};
use crate::event::{Action, ConnId, Now, TxnId};
use crate::idempotency::Key;
use crate::journal::Step;

/// RC 95: reconcile error — the terminal's totals differ from the switch's.
pub(crate) const OUT_OF_BALANCE: ResponseCode = ResponseCode(*b"95");

/// What a settlement request asks, by its processing code's first two digits.
enum Asks {
    /// 92: here are my totals.
    Compare(Totals),
    /// 96: my batch is uploaded; close it.
    Close,
}

impl Engine {
    /// A terminal's 0500.
    pub(crate) fn settlement(
        &mut self,
        now: Now,
        conn: ConnId,
        msg: Message,
        out: &mut Vec<Action>,
    ) {
        let txn = self.new_txn();
        let _txn = span(txn);
        let asks = match crate::fields::processing(&msg) {
            Some([b'9', b'2']) => carried(&msg).map(Asks::Compare),
            Some([b'9', b'6']) => Some(Asks::Close),
            _ => None,
        };
        let Some((key, fingerprint)) = self.admit(now, txn, conn, &msg, asks.is_some(), out) else {
            return;
        };
        let received = self.received(&msg, &key, fingerprint);
        let (terminal, merchant) = (received.terminal.clone(), received.merchant.clone());
        Self::journal(now, txn, Step::Received(received), out);
        let batch = self.books.batch(&terminal, &merchant);
        let ours = totals(&batch);
        let (rc, closed) = match asks {
            Some(Asks::Compare(theirs)) => match theirs {
                theirs if theirs == ours => (ResponseCode::APPROVED, Some((false, 0))),
                theirs => {
                    tracing::warn!(
                        ?ours,
                        ?theirs,
                        "terminal out of balance; batch upload expected"
                    );
                    let (terminal, merchant) = (terminal.clone(), merchant.clone());
                    let step = Step::BatchOutOfBalance {
                        terminal,
                        merchant,
                        ours,
                        theirs,
                    };
                    Self::journal(now, txn, step, out);
                    (OUT_OF_BALANCE, None)
                }
            },
            // After an upload: what was uploaded and not found, and what the switch has and was not
            // uploaded, are the discrepancies.
            _ => {
                let uploads = self.books.uploads(&terminal, &merchant);
                let unknown = uploads.iter().filter(|(_, _, found)| !found).count();
                let missing = batch.iter().filter(|s| s.stands > 0).filter(|s| {
                    !uploads
                        .iter()
                        .any(|&(stan, amount, found)| found && stan == s.stan && amount == s.stands)
                });
                (
                    ResponseCode::APPROVED,
                    Some((true, (unknown + missing.count()) as u32)),
                )
            }
        };
        if let Some((uploaded, discrepancies)) = closed {
            if discrepancies > 0 {
                tracing::warn!(
                    discrepancies,
                    "batch closed with discrepancies; see the settlement report"
                );
            }
            let closed = Step::BatchClosed {
                terminal,
                merchant,
                totals: ours,
                uploaded,
                discrepancies,
            };
            Self::journal(now, txn, closed, out);
        }
        self.answer_settlement(now, txn, key, conn, &msg, rc, out);
    }

    /// A terminal's 0320: one transaction of its batch, uploaded after an out-of-balance settlement. Its
    /// STAN is the one DE90 names, else its own.
    pub(crate) fn upload(&mut self, now: Now, conn: ConnId, msg: Message, out: &mut Vec<Action>) {
        let txn = self.new_txn();
        let _txn = span(txn);
        let Some((key, fingerprint)) = self.admit(now, txn, conn, &msg, msg.has(4), out) else {
            return;
        };
        let received = self.received(&msg, &key, fingerprint);
        let (terminal, merchant) = (received.terminal.clone(), received.merchant.clone());
        Self::journal(now, txn, Step::Received(received), out);
        let stan = msg.original_data().map_or(key.stan, |o| o.stan);
        let amount = msg.amount().unwrap_or(0);
        let batch = self.books.batch(&terminal, &merchant);
        let found = batch.iter().any(|s| s.stan == stan && s.stands == amount);
        let uploaded = Step::BatchUploaded {
            terminal,
            merchant,
            stan,
            amount,
            found,
        };
        Self::journal(now, txn, uploaded, out);
        self.answer_settlement(now, txn, key, conn, &msg, ResponseCode::APPROVED, out);
    }

    /// Answers a settlement message with `rc`, kept for its repeats.
    #[allow(clippy::too_many_arguments)]
    fn answer_settlement(
        &mut self,
        now: Now,
        txn: TxnId,
        key: Key,
        conn: ConnId,
        msg: &Message,
        rc: ResponseCode,
        out: &mut Vec<Action>,
    ) {
        let answer = self.local_answer(msg, ECHO_FIELDS, rc);
        self.answer_kept(now, txn, key, &[conn], answer, out);
    }
}

/// The totals a settlement request carries: where its dialect says (`None` if they cannot be read
/// there), else in DE74, DE76, DE86 and DE88 (a field left out counts 0).
fn carried(msg: &Message) -> Option<Totals> {
    let Some(layout) = msg.spec().totals() else {
        let n = |field| msg.number(field).unwrap_or(0);
        return Some(Totals {
            credits: n(74),
            debits: n(76),
            credit_amount: n(86),
            debit_amount: n(88),
        });
    };
    let value = msg.get(layout.field)?.to_vec();
    let n = |(offset, len): (usize, usize)| -> Option<u64> {
        let digits = value.get(offset..offset.checked_add(len)?)?;
        std::str::from_utf8(digits).ok()?.parse().ok()
    };
    Some(Totals {
        credits: n(layout.credits)?,
        debits: n(layout.debits)?,
        credit_amount: n(layout.credit_amount)?,
        debit_amount: n(layout.debit_amount)?,
    })
}
