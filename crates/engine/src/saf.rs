//! The store-and-forward part of the engine: reversals owed to issuers, in the order they were queued.
//! Each has its own timer (in the engine's timer table), so a slow one never holds up another or new
//! purchases; this part only keeps their state.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use iso8583::Message;

use crate::event::TxnId;
use crate::links::PendingKey;

#[derive(Debug)]
pub(crate) struct Reversal {
    pub(crate) issuer: usize,
    /// The original request as the issuer got it.
    pub(crate) original: Message,
    /// Attempts sent so far.
    pub(crate) attempts: u32,
    pub(crate) queued: Instant,
    /// Every attempt's upstream key: an answer to any of them acknowledges the reversal.
    sent: Vec<PendingKey>,
    /// The last attempt found no link up: it goes out when one signs on.
    waiting: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Saf {
    reversals: HashMap<TxnId, Reversal>,
    /// Reversals in the order they were queued, with entries for finished ones dropped lazily: the front
    /// is the oldest pending one.
    order: VecDeque<(Instant, TxnId)>,
}

impl Saf {
    pub(crate) fn len(&self) -> usize {
        self.reversals.len()
    }

    pub(crate) fn contains(&self, txn: TxnId) -> bool {
        self.reversals.contains_key(&txn)
    }

    pub(crate) fn get(&self, txn: TxnId) -> Option<&Reversal> {
        self.reversals.get(&txn)
    }

    /// The lowest transaction with a pending reversal.
    pub(crate) fn lowest_txn(&self) -> Option<TxnId> {
        self.reversals.keys().min().copied()
    }

    /// When the oldest pending reversal was queued.
    pub(crate) fn oldest(&mut self) -> Option<Instant> {
        while let Some(&(at, txn)) = self.order.front() {
            if self.reversals.get(&txn).is_some_and(|r| r.queued == at) {
                return Some(at);
            }
            self.order.pop_front();
        }
        None
    }

    /// Queues the reversal of `txn`, with `attempts` already sent since `queued`.
    pub(crate) fn queue(
        &mut self,
        txn: TxnId,
        issuer: usize,
        original: Message,
        attempts: u32,
        queued: Instant,
    ) {
        self.order.push_back((queued, txn));
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
    }

    /// The reversals of `issuer` that wait for a link, oldest first (so that the order does not depend
    /// on the hash map's).
    pub(crate) fn waiting_for(&self, issuer: usize) -> Vec<TxnId> {
        let mut waiting: Vec<TxnId> = self
            .reversals
            .iter()
            .filter(|(_, r)| r.issuer == issuer && r.waiting)
            .map(|(&txn, _)| txn)
            .collect();
        waiting.sort_unstable();
        waiting
    }

    /// The attempt found no link: it goes out when one signs on.
    pub(crate) fn wait(&mut self, txn: TxnId) {
        if let Some(r) = self.reversals.get_mut(&txn) {
            r.waiting = true;
        }
    }

    /// An attempt went out with `key`; returns its number (1 = the first).
    pub(crate) fn attempted(&mut self, txn: TxnId, key: PendingKey) -> u32 {
        let Some(r) = self.reversals.get_mut(&txn) else {
            return 0;
        };
        r.attempts += 1;
        r.waiting = false;
        r.sent.push(key);
        r.attempts
    }

    /// Forgets the reversal of `txn`; returns the upstream keys of its attempts.
    pub(crate) fn remove(&mut self, txn: TxnId) -> Vec<PendingKey> {
        self.reversals
            .remove(&txn)
            .map(|r| r.sent)
            .unwrap_or_default()
    }
}
