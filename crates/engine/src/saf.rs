//! Store-and-forward reversals: queued when the issuer may hold a debit the terminal was not told of,
//! repeated with backoff until the issuer acknowledges, given up (and reported) at expiry.
//!
//! Each reversal has its own timer, so a slow one never holds up another or new purchases.

use std::time::{Duration, Instant};

use iso8583::{Message, Mti, OriginalData, ResponseCode};

use crate::engine::Engine;
use crate::event::{Action, LinkId, Now, TimerId, TxnId};
use crate::journal::Step;
use crate::links::Pending;

/// Fields of the original a reversal repeats.
const REVERSAL_FIELDS: &[u8] = &[2, 3, 4, 7, 12, 13, 22, 25, 32, 37, 41, 42, 49];

#[derive(Debug)]
pub(crate) struct Reversal {
    issuer: usize,
    /// The original request as the issuer got it.
    original: Message,
    /// Attempts sent so far.
    attempts: u32,
    pub(crate) queued: Instant,
    /// Every attempt's (link, STAN): an answer to any of them acknowledges the reversal.
    sent: Vec<(LinkId, u32)>,
}

impl Engine {
    /// Queues the reversal of `txn` (once: queuing it again does nothing) and sends its first attempt.
    pub(crate) fn queue_reversal(
        &mut self,
        now: Now,
        txn: TxnId,
        original: Message,
        issuer: usize,
        out: &mut Vec<Action>,
    ) {
        if self.reversals.contains_key(&txn) {
            return;
        }
        self.stats.reversals_queued += 1;
        Self::journal(now, txn, Step::ReversalQueued, out);
        self.reversal_order.push_back((now.mono, txn));
        self.reversals.insert(
            txn,
            Reversal {
                issuer,
                original,
                attempts: 0,
                queued: now.mono,
                sent: Vec::new(),
            },
        );
        self.send_reversal(now, txn, out);
    }

    /// Sends the next attempt of a reversal, or gives it up when it has expired.
    pub(crate) fn send_reversal(&mut self, now: Now, txn: TxnId, out: &mut Vec<Action>) {
        let policy = self.config.reversal;
        let Some(rev) = self.reversals.get(&txn) else {
            return;
        };
        let expired = now.mono.saturating_duration_since(rev.queued) >= policy.expiry
            || rev.attempts >= policy.max_attempts;
        if expired {
            let attempts = rev.attempts;
            self.stats.reversals_expired += 1;
            tracing::error!(
                ?txn,
                attempts,
                "reversal never acknowledged; given up: needs manual action"
            );
            Self::journal(now, txn, Step::ReversalExpired { attempts }, out);
            self.forget_reversal(txn);
            return;
        }
        let backoff = policy
            .backoff
            .saturating_mul(1 << rev.attempts.min(16))
            .min(policy.max_backoff);
        let wait = |at: Duration| Action::Arm {
            id: TimerId::Reversal(txn),
            at: now.mono + at,
        };
        // Without a link the attempt waits for one; it does not count.
        let Some(link) = self.pick_link(rev.issuer) else {
            out.push(wait(policy.backoff));
            return;
        };
        let pending = &self.pending;
        let stan = self.links[link.0 as usize].next_stan(|s| pending.contains_key(&(link, 4, s)));
        let Some(rev) = self.reversals.get_mut(&txn) else {
            return;
        };
        let msg = match reversal(&rev.original, rev.attempts, stan) {
            Ok(msg) => msg,
            Err(error) => {
                tracing::error!(?txn, %error, "reversal cannot be built; needs manual action");
                return;
            }
        };
        let attempt = rev.attempts;
        rev.attempts += 1;
        rev.sent.push((link, stan));
        self.pending.insert((link, 4, stan), Pending::Reversal(txn));
        if attempt == 0 {
            self.stats.reversals_sent += 1;
        } else {
            self.stats.reversals_repeated += 1;
        }
        Self::journal(
            now,
            txn,
            Step::ReversalSent {
                attempt: attempt + 1,
                link,
                upstream_stan: stan,
            },
            out,
        );
        out.push(Action::Send { link, msg });
        out.push(wait(backoff));
    }

    /// Any 0410 ends the reversal: approved, or "original not found" (the issuer holds nothing).
    pub(crate) fn reversal_acknowledged(
        &mut self,
        now: Now,
        txn: TxnId,
        rc: ResponseCode,
        out: &mut Vec<Action>,
    ) {
        if !self.reversals.contains_key(&txn) {
            return;
        }
        self.stats.reversals_acknowledged += 1;
        Self::journal(now, txn, Step::ReversalAcknowledged { rc }, out);
        out.push(Action::Cancel(TimerId::Reversal(txn)));
        self.forget_reversal(txn);
    }

    fn forget_reversal(&mut self, txn: TxnId) {
        if let Some(rev) = self.reversals.remove(&txn) {
            for (link, stan) in rev.sent {
                self.pending.remove(&(link, 4, stan));
            }
        }
    }
}

/// Attempt `attempt` (0 = the 0400, then 0401 repeats) of the reversal of `original`.
fn reversal(original: &Message, attempt: u32, stan: u32) -> Result<Message, iso8583::Error> {
    let mti = if attempt == 0 {
        Mti::REVERSAL
    } else {
        Mti::REVERSAL_REPEAT
    };
    let mut msg = original.response(REVERSAL_FIELDS)?;
    msg.set_mti(mti);
    msg.set_number(11, u64::from(stan))?;
    let data = OriginalData {
        mti: original.mti(),
        stan: original.stan().unwrap_or(0),
        transmission: original.transmission_time().unwrap_or(0),
        acquirer: original.number(32).unwrap_or(0),
        forwarding: original.number(33).unwrap_or(0),
    };
    msg.set(90, data.to_digits())?;
    Ok(msg)
}
