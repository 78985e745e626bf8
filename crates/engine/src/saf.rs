//! The store-and-forward part of the engine: what the switch owes issuers — reversals and advices — in
//! the order it was queued. Each entry has its own timer (in the engine's timer table), so a slow one
//! never holds up another or new purchases; this part only keeps their state (the rules that use it
//! are in `owed.rs`).

use std::collections::VecDeque;
use std::time::Instant;

use iso8583::Message;

use crate::FastMap;
use crate::event::{LinkId, TxnId};
use crate::links::PendingKey;

/// What an entry owes the issuer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The undoing of a request that may have left money standing (0400, repeated as 0401).
    Reversal,
    /// An advice a terminal was told was accepted (0120 or 0220, repeated as 0121 or 0221).
    Advice,
}

impl Kind {
    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) kind: Kind,
    pub(crate) issuer: usize,
    /// A reversal's original request as the issuer got it; an advice as the issuer gets it (its STAN
    /// and DE7 set per attempt).
    pub(crate) message: Message,
    /// Attempts sent so far.
    pub(crate) attempts: u32,
    pub(crate) queued: Instant,
    /// Every attempt's upstream key: an answer to any of them acknowledges the entry.
    sent: Vec<PendingKey>,
    /// The last attempt found no link up: it goes out when one signs on.
    waiting: bool,
    /// The link its original went on, for a reversal made while the original may still be on its way
    /// (its answer timed out): its attempts go on it while it is up, behind the original on one
    /// connection, so that they cannot reach the issuer first (an issuer that finds no original for a
    /// reversal acknowledges it, and the original that follows stands).
    pub(crate) behind: Option<LinkId>,
}

#[derive(Debug, Default)]
pub(crate) struct Saf {
    entries: FastMap<TxnId, Entry>,
    /// Entries of each kind in the order they were queued, with entries for finished ones dropped
    /// lazily: the front is the oldest pending one.
    order: [VecDeque<(Instant, TxnId)>; 2],
    pending: [usize; 2],
}

impl Saf {
    /// Entries of `kind` pending.
    pub(crate) fn len(&self, kind: Kind) -> usize {
        self.pending[kind.index()]
    }

    pub(crate) fn contains(&self, txn: TxnId) -> bool {
        self.entries.contains_key(&txn)
    }

    pub(crate) fn get(&self, txn: TxnId) -> Option<&Entry> {
        self.entries.get(&txn)
    }

    /// The lowest transaction with a pending entry.
    pub(crate) fn lowest_txn(&self) -> Option<TxnId> {
        self.entries.keys().min().copied()
    }

    /// When the oldest pending entry of `kind` was queued.
    pub(crate) fn oldest(&mut self, kind: Kind) -> Option<Instant> {
        let order = &mut self.order[kind.index()];
        while let Some(&(at, txn)) = order.front() {
            if self.entries.get(&txn).is_some_and(|e| e.queued == at) {
                return Some(at);
            }
            order.pop_front();
        }
        None
    }

    /// Queues what `txn` owes, with `attempts` already sent since `queued`.
    pub(crate) fn queue(
        &mut self,
        txn: TxnId,
        kind: Kind,
        issuer: usize,
        message: Message,
        attempts: u32,
        queued: Instant,
    ) {
        self.order[kind.index()].push_back((queued, txn));
        let entry = Entry {
            kind,
            issuer,
            message,
            attempts,
            queued,
            sent: Vec::new(),
            waiting: false,
            behind: None,
        };
        if let Some(replaced) = self.entries.insert(txn, entry) {
            self.pending[replaced.kind.index()] -= 1;
        }
        self.pending[kind.index()] += 1;
    }

    /// The entry of `txn` goes on `link` while it is up (see [`Entry::behind`]).
    pub(crate) fn behind(&mut self, txn: TxnId, link: LinkId) {
        if let Some(e) = self.entries.get_mut(&txn) {
            e.behind = Some(link);
        }
    }

    /// Changes what the entry of `txn` sends from its next attempt on; returns whether it did.
    pub(crate) fn amend(
        &mut self,
        txn: TxnId,
        change: impl FnOnce(&mut Message) -> Result<(), iso8583::Error>,
    ) -> bool {
        self.entries
            .get_mut(&txn)
            .is_some_and(|e| change(&mut e.message).is_ok())
    }

    /// The entries of `issuer` that wait for a link, oldest first (so that the order does not depend
    /// on the hash map's).
    pub(crate) fn waiting_for(&self, issuer: usize) -> Vec<TxnId> {
        let mut waiting: Vec<TxnId> = self
            .entries
            .iter()
            .filter(|(_, e)| e.issuer == issuer && e.waiting)
            .map(|(&txn, _)| txn)
            .collect();
        waiting.sort_unstable();
        waiting
    }

    /// The attempt found no link: it goes out when one signs on.
    pub(crate) fn wait(&mut self, txn: TxnId) {
        if let Some(e) = self.entries.get_mut(&txn) {
            e.waiting = true;
        }
    }

    /// An attempt went out with `key`; returns its number (1 = the first).
    pub(crate) fn attempted(&mut self, txn: TxnId, key: PendingKey) -> u32 {
        let Some(e) = self.entries.get_mut(&txn) else {
            return 0;
        };
        e.attempts += 1;
        e.waiting = false;
        e.sent.push(key);
        e.attempts
    }

    /// Forgets the entry of `txn`; returns the upstream keys of its attempts.
    pub(crate) fn remove(&mut self, txn: TxnId) -> Vec<PendingKey> {
        let Some(entry) = self.entries.remove(&txn) else {
            return Vec::new();
        };
        self.pending[entry.kind.index()] -= 1;
        entry.sent
    }
}
