//! Store-and-forward reversals: queued when the issuer may hold a debit the terminal was not told of,
//! repeated with backoff until the issuer acknowledges, given up (and reported) at expiry.
//!
//! Each reversal has its own timer, so a slow one never holds up another or new purchases.

use std::time::{Duration, Instant};

use bytes::Bytes;
use compact_str::CompactString;
use iso8583::{Message, Mti, OriginalData, ResponseCode};

use crate::engine::Engine;
use crate::event::{Action, LinkId, Now, TimerId, TxnId};
use crate::journal::{Original, Step};
use crate::links::Pending;

/// Fields of the original a reversal repeats.
const REVERSAL_FIELDS: &[u8] = &[2, 3, 4, 7, 12, 13, 22, 25, 32, 37, 41, 42, 49];
/// Fields of the original a reversal is built from: those it repeats and those its DE90 names.
const NEEDED_FIELDS: &[u8] = &[2, 3, 4, 7, 11, 12, 13, 22, 25, 32, 33, 37, 41, 42, 49];

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
    /// The last attempt found no link up: it goes out when one signs on.
    waiting: bool,
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
                waiting: false,
            },
        );
        self.send_reversal(now, txn, out);
    }

    /// Puts back a reversal found pending in the journal at recovery, with its attempts so far and the
    /// time it was queued (its expiry runs from then). Its next attempt goes out right away.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn restore_reversal(
        &mut self,
        now: Now,
        txn: TxnId,
        original: Message,
        issuer: usize,
        attempts: u32,
        queued: Instant,
        out: &mut Vec<Action>,
    ) {
        self.reversal_order.push_back((queued, txn));
        self.reversals.insert(
            txn,
            Reversal {
                issuer,
                original,
                attempts,
                queued,
                sent: Vec::new(),
                waiting: false,
            },
        );
        out.push(Action::Arm {
            id: TimerId::Reversal(txn),
            at: now.mono,
        });
    }

    /// A link of `issuer` signed on: reversals that were waiting for one go out now, not at their backoff,
    /// oldest first (so that the order does not depend on the hash map's).
    pub(crate) fn resume_reversals(&self, now: Now, issuer: usize, out: &mut Vec<Action>) {
        let mut waiting: Vec<TxnId> = self
            .reversals
            .iter()
            .filter(|(_, r)| r.issuer == issuer && r.waiting)
            .map(|(&txn, _)| txn)
            .collect();
        waiting.sort_unstable();
        for txn in waiting {
            out.push(Action::Arm {
                id: TimerId::Reversal(txn),
                at: now.mono,
            });
        }
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
            if let Some(rev) = self.reversals.get_mut(&txn) {
                rev.waiting = true;
            }
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
        rev.waiting = false;
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
        tracing::info!(%rc, "reversal acknowledged");
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

/// What a reversal of an approved request is built from: the request as sent, or (after a restart) as the
/// journal recorded it, turned into a message only if a reversal is needed.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    /// The fields a reversal needs, encoded in the issuer's dialect.
    Sent(Bytes),
    Recorded(Box<Original>),
}

impl Source {
    /// What a reversal of `forwarded` needs: a few fields instead of the whole message, whose PIN block,
    /// track and EMV data would otherwise stay in memory for the length of the idempotency window.
    pub(crate) fn sent(forwarded: &Message) -> Source {
        // The fields' wire bytes are copied as they are: nothing is decoded or checked again.
        let needed = forwarded.response(NEEDED_FIELDS).map(|mut m| {
            m.set_mti(forwarded.mti());
            m
        });
        // Only a response has no response: a forwarded request always does.
        Source::Sent(crate::idempotency::kept(
            needed.as_ref().unwrap_or(forwarded),
        ))
    }
}

impl Engine {
    /// The original request of a reversal to `issuer`.
    pub(crate) fn original(
        &self,
        source: Source,
        issuer: usize,
    ) -> Result<Message, iso8583::Error> {
        match source {
            Source::Sent(wire) => Message::decode(self.config.issuers[issuer].spec, wire),
            Source::Recorded(original) => {
                let mut msg = Message::new(self.config.issuers[issuer].spec, original.mti);
                for (n, value) in &original.fields {
                    msg.set(*n, value)?;
                }
                Ok(msg)
            }
        }
    }
}

/// What the journal keeps of a forwarded request for its reversal: everything a reversal repeats but the
/// card number, and the fields DE90 names.
pub(crate) fn recorded(forwarded: &Message) -> Original {
    let fields = NEEDED_FIELDS
        .iter()
        .filter(|&&n| n != 2)
        .filter_map(|&n| {
            let field = forwarded.get(n)?;
            let value = match field.as_str() {
                Some(text) => CompactString::from(text),
                None => CompactString::from_utf8_lossy(&field.to_vec()),
            };
            Some((n, value))
        })
        .collect();
    Original {
        mti: forwarded.mti(),
        fields,
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
