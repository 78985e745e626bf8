//! Store-and-forward reversals: queued when the issuer may hold a debit the terminal was not told of,
//! repeated with backoff until the issuer acknowledges, given up (and reported) at expiry.
//!
//! Each reversal has its own timer, so a slow one never holds up another or new purchases.

use std::time::{Duration, Instant};

use compact_str::CompactString;
use iso8583::{Message, Mti, OriginalData, ResponseCode};

use crate::engine::Engine;
use crate::event::{Action, LinkId, Now, TimerId, TxnId};
use crate::idempotency::{FINGERPRINT_FIELDS, fingerprint_as};
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

/// What a reversal of an approved request is built from, kept while a terminal's reversal of it may
/// still come, and turned into a message only if one does.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    /// What the switch set on the forward; the rest comes from the terminal's reversal.
    Forwarded(Forwarded),
    /// After a restart: the forward as the journal recorded it (all but the card number).
    Recorded(Box<Original>),
}

/// The fields the switch set on a forward that its reversal repeats or names in DE90 (the RRN is kept
/// with the answer). 12 bytes instead of the fields a reversal needs, encoded (about 145 bytes), for
/// every approval in the idempotency window: the card, amount and terminal fields come from the
/// terminal's reversal, which repeats them, checked against the original's fingerprint.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Forwarded {
    mti: Mti,
    stan: u32,
    /// DE7, MMDDhhmmss.
    transmission: u32,
}

impl Forwarded {
    pub(crate) fn of(forwarded: &Message) -> Forwarded {
        Forwarded {
            mti: forwarded.mti(),
            stan: forwarded.stan().unwrap_or(0),
            transmission: forwarded
                .transmission_time()
                .and_then(|t| u32::try_from(t).ok())
                .unwrap_or(0),
        }
    }
}

impl Engine {
    /// The original request of a reversal to `issuer`, as the journal recorded it.
    pub(crate) fn recorded_original(
        &self,
        original: &Original,
        issuer: usize,
    ) -> Result<Message, iso8583::Error> {
        let mut msg = Message::new(self.config.issuers[issuer].spec, original.mti);
        for (n, value) in &original.fields {
            msg.set(*n, value)?;
        }
        Ok(msg)
    }

    /// The original request, as `issuer` got it, of an approval a terminal's `reversal` reverses:
    /// from what was kept of it (`source`), its RRN and its fingerprint.
    pub(crate) fn reversed_original(
        &self,
        source: Source,
        issuer: usize,
        reversal: &Message,
        rrn: Option<&str>,
        fingerprint: u64,
    ) -> Result<Message, iso8583::Error> {
        let forwarded = match source {
            Source::Recorded(original) => return self.recorded_original(&original, issuer),
            Source::Forwarded(forwarded) => forwarded,
        };
        // What the switch set on the forward, with the rest from the terminal's reversal. Unless that
        // has the original's card, processing code, amount and currency, those are left out: the
        // reversal names its original by DE90, DE37 and DE11 alone.
        let same =
            fingerprint_as(forwarded.mti.class(), reversal, &self.config.card_key) == fingerprint;
        let mut msg = reversal.translate(self.config.issuers[issuer].spec)?;
        msg.set_mti(forwarded.mti);
        if !same {
            tracing::warn!(
                "a terminal's reversal differs from its original in card, processing code, amount \
                 or currency; reversed by the original's identifiers"
            );
            for &n in FINGERPRINT_FIELDS {
                msg.remove(n);
            }
        }
        msg.set_number(11, u64::from(forwarded.stan))?
            .set_number(7, u64::from(forwarded.transmission))?
            .set(32, &self.config.acquirer_id)?;
        if let Some(rrn) = rrn {
            msg.set(37, rrn)?;
        }
        Ok(msg)
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
