//! The store-and-forward rules, one mechanism for everything the switch owes issuers (reversals and
//! advices): queued, sent at once, repeated with backoff until the issuer acknowledges, resumed when a
//! link signs on, given up (and reported for manual action) at expiry. Their state is the `saf` part's;
//! what each attempt looks like is its kind's (`reversal.rs`, `advice.rs`).

use std::time::Instant;

use iso8583::{Class, Message, ResponseCode};

use crate::engine::Engine;
use crate::event::{Action, LinkId, Now, TimerId, TxnId};
use crate::journal::Step;
use crate::links::Pending;
use crate::saf::Kind;
use crate::stats::Owed;

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Reversal => "reversal",
            Kind::Advice => "advice",
        })
    }
}

impl Kind {
    fn sent(self, attempt: u32, link: LinkId, upstream_stan: u32) -> Step {
        match self {
            Kind::Reversal => Step::ReversalSent {
                attempt,
                link,
                upstream_stan,
            },
            Kind::Advice => Step::AdviceSent {
                attempt,
                link,
                upstream_stan,
            },
        }
    }

    fn acknowledged(self, rc: ResponseCode) -> Step {
        match self {
            Kind::Reversal => Step::ReversalAcknowledged { rc },
            Kind::Advice => Step::AdviceAcknowledged { rc },
        }
    }

    fn refused(self, rc: ResponseCode) -> Step {
        match self {
            Kind::Reversal => Step::ReversalRefused { rc },
            Kind::Advice => Step::AdviceRefused { rc },
        }
    }

    fn expired(self, attempts: u32) -> Step {
        match self {
            Kind::Reversal => Step::ReversalExpired { attempts },
            Kind::Advice => Step::AdviceExpired { attempts },
        }
    }

    /// Attempt `attempt` (0 = the first) of `message`, with upstream STAN `stan`, at `now`.
    fn attempt(
        self,
        message: &Message,
        attempt: u32,
        stan: u32,
        now: Now,
    ) -> Result<Message, iso8583::Error> {
        match self {
            Kind::Reversal => crate::reversal::reversal(message, attempt, stan),
            Kind::Advice => crate::advice::attempt(message, attempt, stan, now),
        }
    }

    /// The class the issuer's answer comes in.
    fn class(self, message: &Message) -> Class {
        match self {
            Kind::Reversal => Class::REVERSAL,
            Kind::Advice => message.mti().class(),
        }
    }
}

impl Engine {
    fn counts(&mut self, kind: Kind) -> &mut Owed {
        match kind {
            Kind::Reversal => &mut self.stats.reversals,
            Kind::Advice => &mut self.stats.advices,
        }
    }

    /// Queues what `txn` owes `issuer` (its queue record already journaled) and sends the first attempt.
    pub(crate) fn owe(
        &mut self,
        now: Now,
        txn: TxnId,
        kind: Kind,
        (message, issuer): (Message, usize),
        behind: Option<LinkId>,
        out: &mut Vec<Action>,
    ) {
        self.saf.queue(txn, kind, issuer, message, 0, now.mono);
        if let Some(link) = behind {
            self.saf.behind(txn, link);
        }
        self.send_owed(now, txn, out);
    }

    /// Puts back what was found owed in the journal at recovery, with its attempts so far and the time
    /// it was queued (its expiry runs from then). Its next attempt goes out right away.
    pub(crate) fn restore_owed(
        &mut self,
        now: Now,
        txn: TxnId,
        kind: Kind,
        (message, issuer): (Message, usize),
        attempts: u32,
        queued: Instant,
    ) {
        self.saf.queue(txn, kind, issuer, message, attempts, queued);
        self.arm(TimerId::Saf(txn), now.mono);
    }

    /// A link of `issuer` signed on: what was waiting for one goes out now, not at its backoff.
    pub(crate) fn resume_owed(&mut self, now: Now, issuer: usize) {
        for txn in self.saf.waiting_for(issuer) {
            self.arm(TimerId::Saf(txn), now.mono);
        }
    }

    /// Sends the next attempt of what `txn` owes, or gives it up when it has expired.
    pub(crate) fn send_owed(&mut self, now: Now, txn: TxnId, out: &mut Vec<Action>) {
        let policy = self.config.reversal;
        let Some(entry) = self.saf.get(txn) else {
            return;
        };
        let (kind, issuer, attempts, behind) =
            (entry.kind, entry.issuer, entry.attempts, entry.behind);
        let expired = now.mono.saturating_duration_since(entry.queued) >= policy.expiry
            || attempts >= policy.max_attempts;
        if expired {
            self.counts(kind).expired += 1;
            tracing::error!(
                ?txn,
                attempts,
                "{kind} never acknowledged; given up: needs manual action"
            );
            Self::journal(now, txn, kind.expired(attempts), out);
            self.forget_owed(txn);
            return;
        }
        let backoff = policy
            .backoff
            .saturating_mul(1 << attempts.min(16))
            .min(policy.max_backoff);
        // Without a link the attempt waits for one; it does not count.
        let behind = behind.filter(|&link| self.links.is_ready(link));
        let Some(link) = behind.or_else(|| self.links.pick(issuer)) else {
            self.saf.wait(txn);
            self.arm(TimerId::Saf(txn), now.mono + policy.backoff);
            return;
        };
        let class = kind.class(&entry.message);
        let key = self.links.claim(link, class, Pending::Saf(txn));
        let msg = match kind.attempt(&entry.message, attempts, key.stan, now) {
            Ok(msg) => msg,
            Err(error) => {
                self.links.release(key);
                tracing::error!(?txn, %error, "{kind} cannot be built; needs manual action");
                return;
            }
        };
        let attempt = self.saf.attempted(txn, key);
        let counts = self.counts(kind);
        if attempt == 1 {
            counts.sent += 1;
        } else {
            counts.repeated += 1;
        }
        Self::journal(now, txn, kind.sent(attempt, link, key.stan), out);
        out.push(Action::Send {
            link,
            txn: Some(txn),
            msg,
        });
        self.arm(TimerId::Saf(txn), now.mono + backoff);
    }

    /// The issuer's answer ends what `txn` owed (approved, or — for a reversal — "original not found":
    /// the issuer holds nothing) unless its code is one the issuer's policy retries; the attempt timer
    /// then repeats it.
    pub(crate) fn owed_answered(
        &mut self,
        now: Now,
        txn: TxnId,
        rc: ResponseCode,
        out: &mut Vec<Action>,
    ) {
        let Some(entry) = self.saf.get(txn) else {
            return;
        };
        let kind = entry.kind;
        let policy = &self.config.issuers[entry.issuer].policy;
        if policy.retry_codes.contains(&rc) {
            tracing::warn!(%rc, "{kind} refused by the issuer; repeated at its next attempt");
            return Self::journal(now, txn, kind.refused(rc), out);
        }
        self.counts(kind).acknowledged += 1;
        tracing::info!(%rc, "{kind} acknowledged");
        Self::journal(now, txn, kind.acknowledged(rc), out);
        self.cancel(TimerId::Saf(txn));
        self.forget_owed(txn);
    }

    fn forget_owed(&mut self, txn: TxnId) {
        for key in self.saf.remove(txn) {
            self.links.release(key);
        }
    }
}
