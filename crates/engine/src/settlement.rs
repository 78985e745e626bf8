//! Terminal settlement. A terminal closes its batch with an 0500 (DE3 92xxxx) carrying its totals —
//! DE74 credits count, DE76 debits count, DE86 credits amount, DE88 debits amount (ISO 8583:1987) — which
//! the switch compares with its own record of that batch (`books.rs`: approved or accepted, not reversed,
//! since the terminal's last settlement). In balance: 0510 RC 00 and the batch closes. Out of balance:
//! 0510 RC 95; the terminal then uploads each transaction of its batch (0320, answered 0330, each matched
//! to the switch's record or recorded as one it never saw) and closes with an 0500 (DE3 96xxxx): 0510
//! RC 00, and every discrepancy is recorded for the settlement report.
//!
//! A single switch reads the batch from its own books. In cluster mode a terminal's transactions go
//! through whichever node its connection reached (a terminal that connects for each transaction, behind
//! a balancer, reaches them all), so a settlement message reads the batch from the shared store instead,
//! as every node recorded it ([`Action::ReadBatch`]), and is answered once the store has answered.

use compact_str::CompactString;
use iso8583::{ECHO_FIELDS, Message, ResponseCode};

use crate::FastMap;
use crate::books::{Books, Settled, Totals, totals};
use crate::engine::{Engine, Request, span};
use crate::event::{Action, ConnId, Now, TxnId};
use crate::journal::{Record, Step};

/// RC 95: reconcile error — the terminal's totals differ from the switch's.
pub(crate) const OUT_OF_BALANCE: ResponseCode = ResponseCode(*b"95");

/// Cluster mode: a terminal's open batch, to be read from the shared store once the records before the
/// request are committed (see [`Action::ReadBatch`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenBatch {
    /// The settlement message's transaction, which the answer names.
    pub txn: TxnId,
    pub terminal: CompactString,
    pub merchant: CompactString,
}

/// What a settlement request asks, by its processing code's first two digits.
#[derive(Debug)]
enum Asks {
    /// 92: here are my totals.
    Compare(Totals),
    /// 96: my batch is uploaded; close it.
    Close,
}

/// What a settlement message does with its terminal's batch.
#[derive(Debug)]
enum Use {
    /// An 0500: compare it, or close it (`None` only for one admission refuses as unreadable).
    Settle(Option<Asks>),
    /// An 0320: find one transaction in it.
    Upload,
}

/// A settlement message admitted, with what it needs of its batch.
#[derive(Debug)]
struct Settling {
    req: Request,
    fingerprint: u64,
    terminal: CompactString,
    merchant: CompactString,
    uses: Use,
}

/// A terminal's batch as a settlement message reads it: its transactions as they stand, and what it
/// uploaded since its last settlement request.
struct Batch {
    settled: Vec<Settled>,
    uploads: Vec<(u32, u64, bool)>,
}

impl Batch {
    fn of(books: &Books, terminal: &str, merchant: &str) -> Batch {
        Batch {
            settled: books.batch(terminal, merchant),
            uploads: books.uploads(terminal, merchant).to_vec(),
        }
    }
}

/// Cluster mode: the settlement messages waiting for their batch from the store.
#[derive(Debug, Default)]
pub(crate) struct Reads(FastMap<TxnId, Settling>);

impl Reads {
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// A retransmit of `txn`'s request, if it waits for its batch: answered with it.
    pub(crate) fn join(&mut self, txn: TxnId, conn: ConnId) -> bool {
        self.0
            .get_mut(&txn)
            .map(|s| s.req.waiters.push(conn))
            .is_some()
    }

    /// A connection closed: its answers can no longer be delivered. Returns the transactions it waited on.
    pub(crate) fn closed(&mut self, conn: ConnId) -> Vec<TxnId> {
        (self.0.iter_mut())
            .filter_map(|(&txn, s)| s.req.left(conn).then_some(txn))
            .collect()
    }
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
        let readable = asks.is_some();
        self.settling(now, txn, conn, msg, readable, Use::Settle(asks), out);
    }

    /// A terminal's 0320: one transaction of its batch, uploaded after an out-of-balance settlement. Its
    /// STAN is the one DE90 names, else its own.
    pub(crate) fn upload(&mut self, now: Now, conn: ConnId, msg: Message, out: &mut Vec<Action>) {
        let txn = self.new_txn();
        let _txn = span(txn);
        let readable = msg.has(4);
        self.settling(now, txn, conn, msg, readable, Use::Upload, out);
    }

    /// Admits a settlement message and records it; answers it from this engine's books, or (cluster
    /// mode) asks the store for the batch and answers it when the store has answered.
    #[allow(clippy::too_many_arguments)]
    fn settling(
        &mut self,
        now: Now,
        txn: TxnId,
        conn: ConnId,
        msg: Message,
        readable: bool,
        uses: Use,
        out: &mut Vec<Action>,
    ) {
        let Some((key, fingerprint)) = self.admit(now, txn, conn, &msg, readable, out) else {
            return;
        };
        let received = self.received(&msg, &key, fingerprint);
        let (terminal, merchant) = (received.terminal.clone(), received.merchant.clone());
        Self::journal(now, txn, Step::Received(received), out);
        let settling = Settling {
            req: Request {
                key,
                msg,
                waiters: vec![conn],
            },
            fingerprint,
            terminal,
            merchant,
            uses,
        };
        if self.config.shared_store {
            out.push(Action::ReadBatch(OpenBatch {
                txn,
                terminal: settling.terminal.clone(),
                merchant: settling.merchant.clone(),
            }));
            self.reads.0.insert(txn, settling);
            return;
        }
        let batch = Batch::of(&self.books, &settling.terminal, &settling.merchant);
        self.settle(now, txn, settling, batch, out);
    }

    /// Cluster mode: the store's answer to [`Action::ReadBatch`]: every node's records of the batch's
    /// transactions (with the node that recorded each), or `None` if they could not be read (the
    /// terminal is refused with 91 and may try again).
    pub(crate) fn on_batch_read(
        &mut self,
        now: Now,
        txn: TxnId,
        records: Option<Vec<(String, Record)>>,
        out: &mut Vec<Action>,
    ) {
        let Some(settling) = self.reads.0.remove(&txn) else {
            return;
        };
        let _txn = span(txn);
        let Some(records) = records else {
            tracing::warn!("the batch could not be read from the store; the terminal is told 91");
            return self.unavailable(now, txn, &settling.req, false, out);
        };
        // A retransmit of a request another node took (its answer lost with that node, or the
        // connection): that node's outcome is repeated, not the batch compared or closed again.
        if let Some(rc) = outcome_elsewhere(&records, &settling) {
            return self.answer_settlement(now, txn, settling, rc, out);
        }
        // Folded as this engine's own books are, with closed batches forgotten: what is left of the
        // terminal's is its open batch.
        let mut books = Books::open_batches();
        for (node, record) in &records {
            books.add(node, record);
        }
        let batch = Batch::of(&books, &settling.terminal, &settling.merchant);
        self.settle(now, txn, settling, batch, out);
    }

    /// The node ends: the settlement messages still waiting for their batch are told 91.
    pub(crate) fn give_up_reads(&mut self, now: Now, out: &mut Vec<Action>) {
        let mut waiting: Vec<(TxnId, Settling)> = self.reads.0.drain().collect();
        // In transaction order, not the hash map's: the same events give the same records.
        waiting.sort_unstable_by_key(|(txn, _)| *txn);
        for (txn, settling) in waiting {
            self.unavailable(now, txn, &settling.req, false, out);
        }
    }

    /// Answers a settlement message from its terminal's `batch`.
    fn settle(
        &mut self,
        now: Now,
        txn: TxnId,
        settling: Settling,
        batch: Batch,
        out: &mut Vec<Action>,
    ) {
        let asks = match &settling.uses {
            Use::Upload => return self.uploaded(now, txn, settling, &batch, out),
            Use::Settle(asks) => asks,
        };
        let (terminal, merchant) = (settling.terminal.clone(), settling.merchant.clone());
        let ours = totals(&batch.settled);
        let (rc, closed) = match asks {
            Some(Asks::Compare(theirs)) => match *theirs {
                theirs if theirs == ours => (ResponseCode::APPROVED, Some((false, 0))),
                theirs => {
                    tracing::warn!(
                        ?ours,
                        ?theirs,
                        "terminal out of balance; batch upload expected"
                    );
                    let step = Step::BatchOutOfBalance {
                        terminal: terminal.clone(),
                        merchant: merchant.clone(),
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
                let uploads = &batch.uploads;
                let unknown = uploads.iter().filter(|(_, _, found)| !found).count();
                let missing = batch.settled.iter().filter(|s| s.stands > 0).filter(|s| {
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
        self.answer_settlement(now, txn, settling, rc, out);
    }

    /// An 0320, matched against its terminal's `batch`.
    fn uploaded(
        &mut self,
        now: Now,
        txn: TxnId,
        settling: Settling,
        batch: &Batch,
        out: &mut Vec<Action>,
    ) {
        let msg = &settling.req.msg;
        let stan = msg
            .original_data()
            .map_or(settling.req.key.stan, |o| o.stan);
        let amount = msg.amount().unwrap_or(0);
        let found = (batch.settled.iter()).any(|s| s.stan == stan && s.stands == amount);
        let uploaded = Step::BatchUploaded {
            terminal: settling.terminal.clone(),
            merchant: settling.merchant.clone(),
            stan,
            amount,
            found,
        };
        Self::journal(now, txn, uploaded, out);
        self.answer_settlement(now, txn, settling, ResponseCode::APPROVED, out);
    }

    /// Answers a settlement message with `rc`, kept for its repeats.
    fn answer_settlement(
        &mut self,
        now: Now,
        txn: TxnId,
        settling: Settling,
        rc: ResponseCode,
        out: &mut Vec<Action>,
    ) {
        let answer = self.local_answer(&settling.req.msg, ECHO_FIELDS, rc);
        let Request { key, waiters, .. } = settling.req;
        self.answer_kept(now, txn, key, &waiters, answer, out);
    }
}

/// What a node gave the request `settling` repeats, as `records` (its batch read from the store) tell
/// it: a settlement closed (00) or found out of balance (95), an upload recorded (00). Settlement
/// messages are not claimed in the store as financial ones are; the read finds them instead.
fn outcome_elsewhere(records: &[(String, Record)], settling: &Settling) -> Option<ResponseCode> {
    // Every transaction that received this request: it may have been repeated on several nodes
    // before one of them answered.
    let mut same = Vec::new();
    let mut outcome = None;
    for (node, record) in records {
        let this = (node.as_str(), record.txn);
        match &record.step {
            Step::Received(r)
                if r.mti == settling.req.msg.mti()
                    && (r.stan, r.date) == (settling.req.key.stan, settling.req.key.date)
                    && r.fingerprint == settling.fingerprint
                    && (r.terminal == settling.terminal && r.merchant == settling.merchant) =>
            {
                same.push(this);
            }
            Step::BatchClosed { .. } | Step::BatchUploaded { .. } if same.contains(&this) => {
                outcome = Some(ResponseCode::APPROVED);
            }
            Step::BatchOutOfBalance { .. } if same.contains(&this) => {
                outcome = Some(OUT_OF_BALANCE)
            }
            _ => {}
        }
    }
    outcome
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
