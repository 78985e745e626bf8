//! Recovery: the engine's state rebuilt from the journal after a restart.
//!
//! Every transaction's records are folded into a trail, and each trail decides what stands:
//! - a request the issuer may hold a debit for (forwarded, and not declined) whose terminal was not told
//!   "approved" is in doubt: it is reversed, like a timeout;
//! - a reversal queued and neither acknowledged nor expired resumes with its attempts and expiry;
//! - a request still inside the idempotency window gets its entry back, so that a retransmit is replayed
//!   what its terminal was told (RC 91 when the answer never reached it), never forwarded again.

use std::time::{Instant, SystemTime};

use compact_str::{CompactString, ToCompactString};
use iso8583::{Class, ResponseCode};
use tinystr::TinyAsciiStr;

use crate::FastMap;
use crate::books::Books;
use crate::config::Config;
use crate::engine::Engine;
use crate::event::{Action, Now, TxnId};
use crate::idempotency::{Answer, Done, Key, State};
use crate::journal::{Original, Received, Record, Step};
use crate::reversal::Source;
use crate::saf::Kind;

/// What recovery found, for the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovered {
    pub records: u64,
    pub transactions: u64,
    /// Forwarded with no outcome the terminal was told: reversed now.
    pub in_doubt: u64,
    /// Reversals that were pending and resume.
    pub reversals: u64,
    /// Advices accepted from terminals, not yet acknowledged by their issuer, that resume.
    pub advices: u64,
    /// Idempotency entries put back.
    pub idempotency_entries: u64,
}

/// One transaction's records, folded.
#[derive(Debug, Default)]
pub(crate) struct Trail {
    received: Option<(SystemTime, Received)>,
    /// Issuer and the request as recorded.
    forwarded: Option<(CompactString, Original)>,
    answered: Option<(ResponseCode, Option<CompactString>)>,
    told: Option<ResponseCode>,
    /// When the reversal was queued, and attempts sent.
    reversal: Option<(SystemTime, u32)>,
    reversal_done: bool,
    /// An advice accepted from its terminal: when it was queued, its issuer, what was kept of it, and
    /// the attempts sent.
    advice: Option<(SystemTime, CompactString, Original, u32)>,
    advice_done: bool,
    /// A settlement message acted on: the answer its records decide (its terminal may not have heard
    /// it, but the batch is as it left it).
    settled: Option<ResponseCode>,
    /// Refused before it was forwarded.
    pub(crate) rejected: bool,
    /// Answered, with no terminal left to tell.
    pub(crate) undeliverable: bool,
    /// Cluster mode: another node's transaction held its key.
    held_elsewhere: bool,
}

impl Trail {
    /// The trail of one transaction's records, oldest first.
    pub(crate) fn of(records: Vec<Record>) -> Trail {
        let mut trail = Trail::default();
        for r in records {
            trail.add(r.at, r.step);
        }
        trail
    }

    fn add(&mut self, at: SystemTime, step: Step) {
        match step {
            Step::Received(r) => self.received = Some((at, r)),
            Step::Forwarded {
                issuer, original, ..
            } => self.forwarded = Some((issuer, original)),
            Step::Answered { rc, auth_code } => self.answered = Some((rc, auth_code)),
            // What stands at the issuer from here on, and what a replay or a reversal names.
            Step::ApprovedAmount { amount } => {
                if let Some((_, original)) = &mut self.forwarded {
                    original.set(4, amount.to_compact_string());
                }
            }
            // Carried by every attempt of the reversal, set on the original as when it was queued.
            Step::ReversalReplaces { amounts } => {
                if let Some((_, original)) = &mut self.forwarded {
                    original.set(95, amounts);
                }
            }
            Step::Told { rc } => self.told = Some(rc),
            Step::ReversalQueued => self.reversal = Some((at, 0)),
            Step::ReversalSent { attempt, .. } => {
                if let Some((_, attempts)) = &mut self.reversal {
                    *attempts = (*attempts).max(attempt);
                }
            }
            Step::ReversalAcknowledged { .. } | Step::ReversalExpired { .. } => {
                self.reversal_done = true
            }
            Step::AdviceQueued { issuer, advice } => self.advice = Some((at, issuer, advice, 0)),
            Step::AdviceSent { attempt, .. } => {
                if let Some((_, _, _, attempts)) = &mut self.advice {
                    *attempts = (*attempts).max(attempt);
                }
            }
            Step::AdviceAcknowledged { .. } | Step::AdviceExpired { .. } => self.advice_done = true,
            Step::Rejected { .. } => self.rejected = true,
            Step::Undeliverable { .. } => self.undeliverable = true,
            Step::HeldElsewhere { .. } => self.held_elsewhere = true,
            Step::Adopted { .. } | Step::ReversalRefused { .. } | Step::AdviceRefused { .. } => {}
            // The terminals' batches are the books' (`books.rs`); here, only the answer they decide.
            Step::BatchOutOfBalance { .. } => {
                self.settled = Some(crate::settlement::OUT_OF_BALANCE);
            }
            Step::BatchUploaded { .. } | Step::BatchClosed { .. } => {
                self.settled = self.settled.or(Some(ResponseCode::APPROVED));
            }
            Step::Joined
            | Step::Disconnected
            | Step::Replayed { .. }
            | Step::TimedOut
            | Step::LateAnswer { .. }
            | Step::InDoubt => {}
            // The forward before it never left.
            Step::Withdrawn => self.forwarded = None,
        }
    }

    pub(crate) fn forwarded(&self) -> bool {
        self.forwarded.is_some()
    }

    /// A reversal of it was queued (it timed out, was in doubt, or its approval went untold).
    pub(crate) fn reversing(&self) -> bool {
        self.reversal.is_some()
    }

    pub(crate) fn told(&self) -> Option<ResponseCode> {
        self.told
    }

    /// The request as forwarded, with the amount that stands at the issuer: its issuer's name and what
    /// the journal kept of it.
    pub(crate) fn forward(&self) -> Option<&(CompactString, Original)> {
        self.forwarded.as_ref()
    }

    /// The answer a retransmit is replayed when its terminal was told `rc`: with the auth code of an
    /// approval, the amount of a partial one and the request's RRN, as recorded.
    pub(crate) fn answer(&self, txn: TxnId, rc: ResponseCode) -> Answer {
        let rrn = self
            .forwarded
            .as_ref()
            .and_then(|(_, o)| o.rrn())
            .and_then(|rrn| kept(txn, "RRN", rrn));
        let auth_code = self
            .answered
            .as_ref()
            .and_then(|(_, a)| a.as_ref())
            .filter(|_| rc.is_approval())
            .and_then(|code| kept(txn, "auth code", code.as_str()));
        let amount = self
            .forwarded
            .as_ref()
            .and_then(|(_, o)| o.field(4)?.parse().ok())
            .filter(|_| rc == ResponseCode::PARTIAL);
        Answer::Rebuilt {
            rc,
            auth_code,
            rrn,
            amount,
        }
    }

    /// Forwarded, possibly debited, and neither told "approved" nor reversed: it must be reversed.
    fn in_doubt(&self, config: &Config) -> bool {
        self.reversal.is_none() && self.may_be_debited(config) && !self.told_approved()
    }

    /// Work is left: a reversal to make or to finish, or an advice still owed.
    fn unfinished(&self, config: &Config) -> bool {
        self.in_doubt(config)
            || (self.reversal.is_some() && !self.reversal_done)
            || self.advice_owed()
    }

    /// Received, and then nothing: not forwarded, queued, refused, answered or found held elsewhere.
    fn stranded(&self) -> bool {
        self.received.is_some()
            && self.forwarded.is_none()
            && self.advice.is_none()
            && self.told.is_none()
            && self.settled.is_none()
            && !self.rejected
            && !self.held_elsewhere
    }

    /// An advice was accepted from its terminal (and so is owed to its issuer, or was delivered).
    pub(crate) fn advice_queued(&self) -> bool {
        self.advice.is_some()
    }

    fn advice_owed(&self) -> bool {
        self.advice.is_some() && !self.advice_done
    }

    /// Whether the terminal was told its request was approved.
    fn told_approved(&self) -> bool {
        self.told.is_some_and(|rc| rc.is_approval())
    }

    /// Whether the issuer may hold money for it: forwarded, not declined, and not of a kind that moves
    /// none by its issuer's policy (one no longer configured is taken to).
    pub(crate) fn may_be_debited(&self, config: &Config) -> bool {
        let Some((issuer, original)) = &self.forwarded else {
            return false;
        };
        let policy = config.issuers.iter().find(|i| i.name == issuer);
        let processing = original
            .field(3)
            .and_then(|p| p.as_bytes().first_chunk().copied());
        policy.is_none_or(|i| i.policy.moves_money(processing))
            && self
                .answered
                .as_ref()
                .is_none_or(|(rc, _)| rc.is_approval())
    }
}

/// The journal's records as read back, folded per transaction (records stream in; only the trails are
/// kept).
#[derive(Debug)]
pub struct Recovery {
    trails: FastMap<TxnId, Trail>,
    records: u64,
    /// The highest transaction id ever used, when the records read back do not all reach it.
    numbered: Option<TxnId>,
    /// The terminals' open batches, as the records leave them.
    books: Books,
}

impl Default for Recovery {
    fn default() -> Recovery {
        Recovery {
            trails: FastMap::default(),
            records: 0,
            numbered: None,
            books: Books::open_batches(),
        }
    }
}

impl Recovery {
    /// New transactions are numbered after `txn` even if no record read back is of it (cluster mode
    /// reads back only what a takeover did not hand on, but ids must never repeat).
    pub fn numbered_after(&mut self, txn: TxnId) {
        self.numbered = self.numbered.max(Some(txn));
    }

    /// Adds the next record, oldest first.
    pub fn add(&mut self, record: Record) {
        self.records += 1;
        self.books.add("", &record);
        self.trails
            .entry(record.txn)
            .or_default()
            .add(record.at, record.step);
    }
}

impl Engine {
    /// Rebuilds the engine's state from the journal's records before any other event. The actions
    /// (records of what recovery decided, reversal timers) are carried out like any other.
    pub fn recover(&mut self, now: Now, recovery: Recovery, out: &mut Vec<Action>) -> Recovered {
        let mut found = Recovered {
            records: recovery.records,
            transactions: recovery.trails.len() as u64,
            ..Recovered::default()
        };
        self.books = recovery.books;
        self.books.limit(self.config.idempotency.max_entries);
        let start = out.len();
        let mut trails: Vec<_> = recovery.trails.into_iter().collect();
        // Oldest first, as the idempotency table expects.
        trails.sort_unstable_by_key(|(txn, _)| *txn);
        if let Some(last) = trails.last().map(|(txn, _)| *txn).max(recovery.numbered) {
            self.resume_numbering(last);
        }
        for (txn, trail) in trails {
            self.recover_one(now, txn, trail, &mut found, out);
        }
        self.book(&out[start..]);
        found
    }

    /// Cluster mode: takes over the unfinished work among `records`, those of node `node` whose lease
    /// lapsed. Each transaction with a reversal to make or to finish becomes one of this engine's (a new
    /// id), its records copied under that id after an [`Step::Adopted`] naming the original, so that
    /// this node's own recovery finds the work too; then it is recovered like this node's own: reversed
    /// if in doubt, its pending reversal resumed with its attempt count.
    pub fn adopt(
        &mut self,
        now: Now,
        node: &str,
        records: Vec<Record>,
        out: &mut Vec<Action>,
    ) -> Recovered {
        let mut found = Recovered {
            records: records.len() as u64,
            ..Recovered::default()
        };
        let mut by_txn: std::collections::BTreeMap<TxnId, Vec<Record>> = Default::default();
        for r in records {
            by_txn.entry(r.txn).or_default().push(r);
        }
        found.transactions = by_txn.len() as u64;
        let start = out.len();
        for (original, records) in by_txn {
            let trail = Trail::of(records.clone());
            if !trail.unfinished(&self.config) {
                continue;
            }
            let txn = self.new_txn();
            let _span = crate::engine::span(txn);
            let adopted = Step::Adopted {
                node: node.into(),
                txn: original,
            };
            Self::journal(now, txn, adopted, out);
            out.extend(
                records
                    .into_iter()
                    .map(|r| Action::Journal(Record { txn, ..r })),
            );
            self.recover_one(now, txn, trail, &mut found, out);
        }
        self.book(&out[start..]);
        found
    }

    fn recover_one(
        &mut self,
        now: Now,
        txn: TxnId,
        trail: Trail,
        found: &mut Recovered,
        out: &mut Vec<Action>,
    ) {
        let issuer = (trail.forwarded.as_ref()).and_then(|(name, _)| self.issuer_named(txn, name));
        // Received, and stopped before anything came of it (its next records were not yet durable):
        // closed as refused, so that the key it claimed (cluster mode) is free for a retransmit on any
        // node, not held by a transaction that will never go on.
        if trail.stranded() {
            let rc = ResponseCode::ISSUER_UNAVAILABLE;
            Self::journal(now, txn, Step::Rejected { rc }, out);
        }
        let in_doubt = trail.in_doubt(&self.config);
        if in_doubt {
            found.in_doubt += 1;
            Self::journal(now, txn, Step::InDoubt, out);
        }
        let pending = trail.unfinished(&self.config);
        if let (true, Some(issuer), Some((_, original))) = (pending, issuer, &trail.forwarded) {
            match self.recorded_original(original, issuer) {
                Ok(msg) if in_doubt => self.queue_reversal(now, txn, (msg, issuer), None, out),
                Ok(msg) => {
                    let (queued, attempts) = trail.reversal.unwrap_or((now.wall, 0));
                    let queued = mono(now, queued);
                    let kind = Kind::Reversal;
                    self.restore_owed(now, txn, kind, (msg, issuer), attempts, queued);
                }
                Err(error) => tracing::error!(
                    ?txn,
                    %error,
                    "recorded request cannot be rebuilt for its reversal; needs manual action"
                ),
            }
            found.reversals += u64::from(!in_doubt);
        }
        if let (true, Some((at, name, advice, attempts))) = (trail.advice_owed(), &trail.advice)
            && let Some(issuer) = self.issuer_named(txn, name)
        {
            match self.recorded_original(advice, issuer) {
                Ok(msg) => {
                    let queued = mono(now, *at);
                    let kind = Kind::Advice;
                    self.restore_owed(now, txn, kind, (msg, issuer), *attempts, queued);
                    found.advices += 1;
                }
                Err(error) => tracing::error!(
                    ?txn,
                    %error,
                    "recorded advice cannot be rebuilt; needs manual action"
                ),
            }
        }
        if self.restore_entry(now, txn, trail, issuer) {
            found.idempotency_entries += 1;
        }
    }

    /// The index of the issuer the journal names; one no longer configured is reported.
    fn issuer_named(&self, txn: TxnId, name: &str) -> Option<usize> {
        let index = self.config.issuers.iter().position(|i| i.name == name);
        if index.is_none() {
            tracing::error!(
                ?txn,
                issuer = name,
                "issuer no longer configured; needs manual action"
            );
        }
        index
    }

    /// Puts a request's idempotency entry back if it is still inside the window and has an answer to
    /// replay. A request that never left has none: a retransmit of it is a first attempt.
    fn restore_entry(&mut self, now: Now, txn: TxnId, trail: Trail, issuer: Option<usize>) -> bool {
        let Some((at, received)) = &trail.received else {
            return false;
        };
        let since = mono(now, *at);
        let expired = now.mono.saturating_duration_since(since) >= self.config.idempotency.window;
        let (Some(key), false, false) = (
            Key::recorded(received, &self.config.card_key),
            expired,
            trail.held_elsewhere,
        ) else {
            return false;
        };
        let (rc, approved) = if trail.advice.is_some() {
            // Accepted once queued, whether or not the terminal heard it.
            (trail.told.unwrap_or(ResponseCode::APPROVED), None)
        } else if matches!(
            received.mti.class(),
            Class::REVERSAL | Class::RECONCILIATION | Class::FILE_ACTION
        ) {
            // A terminal's reversal or settlement message is answered locally once acted on.
            let Some(rc) = trail.told.or(trail.settled) else {
                return false;
            };
            (rc, None)
        } else {
            let Some((_, original)) = &trail.forwarded else {
                return false;
            };
            match trail.told {
                // Approved and not reversed: a terminal's own reversal may still need the original.
                Some(rc) if rc.is_approval() => {
                    let stands = trail.reversal.is_none() && trail.may_be_debited(&self.config);
                    let source = stands.then(|| Source::Recorded(Box::new(original.clone())));
                    (rc, source.zip(issuer))
                }
                Some(rc) => (rc, None),
                // Forwarded, never told: it is being reversed; a retransmit learns it failed.
                None => (ResponseCode::ISSUER_UNAVAILABLE, None),
            }
        };
        let fingerprint = received.fingerprint;
        let done = Done {
            txn,
            answer: trail.answer(txn, rc),
            approved,
        };
        self.idempotency
            .restore(key, fingerprint, State::Done(Box::new(done)), since);
        true
    }
}

/// The monotonic instant of a recorded wall-clock time (now, if it lies before this process's clock).
fn mono(now: Now, at: SystemTime) -> Instant {
    let age = now.wall.duration_since(at).unwrap_or_default();
    now.mono.checked_sub(age).unwrap_or(now.mono)
}

/// A recorded auth code or RRN as a replay keeps it; one that does not fit (longer than the ISO
/// field, or not ASCII) is left out of replays, with a warning.
fn kept<const N: usize>(txn: TxnId, what: &str, value: &str) -> Option<TinyAsciiStr<N>> {
    let kept = value.parse().ok();
    if kept.is_none() {
        tracing::warn!(?txn, what, "recorded value too long to replay; left out");
    }
    kept
}
