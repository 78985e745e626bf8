//! The acquirer's books, folded from journal records: for every financial transaction (0200, and 0220
//! advices) what stands for its merchant — what its terminal was told was approved or accepted, less what
//! was reversed. One fold serves the settlement report over a whole journal (every node's, in cluster
//! mode), the switch's own record of each terminal's open batch (fed with the records it writes and
//! those recovery reads back), and the simulation's check against the issuer's books.
//!
//! Authorizations (0100, 0120) are holds, not settled: their completion (a 0220) is.

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use compact_str::CompactString;
use griddle::hash_map::Entry as Slot;
use iso8583::Class;
use serde::{Deserialize, Serialize};

use crate::event::TxnId;
use crate::journal::{Original, Record, Step};
use crate::places::Places;
use crate::{GrowingMap, GrowingSet};

/// A transaction's place in the books: the node that recorded it (empty for a single node) and its id.
pub type Place = (CompactString, TxnId);

/// Counts and amounts (minor units) of a batch, as a terminal's 0500 carries them (DE74, DE76, DE86,
/// DE88) and as the switch records them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub credits: u64,
    pub debits: u64,
    pub credit_amount: u64,
    pub debit_amount: u64,
}

/// One financial transaction, as it stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Settled {
    pub node: CompactString,
    pub txn: TxnId,
    /// When it was received.
    #[serde(skip)]
    pub at: SystemTime,
    pub terminal: CompactString,
    pub merchant: CompactString,
    pub stan: u32,
    pub rrn: Option<CompactString>,
    /// A refund (processing code 20): the cardholder is credited.
    pub credit: bool,
    /// What was approved (or advised).
    pub amount: u64,
    /// What stands after any reversal: the amount, what a partial reversal left, or 0.
    pub stands: u64,
    pub reversed: bool,
}

impl Settled {
    /// What stands, signed: positive for the merchant (a debit of the cardholder), negative for a refund.
    pub fn net(&self) -> i64 {
        let stands = self.stands as i64;
        if self.credit { -stands } else { stands }
    }
}

/// A terminal's upload of its batch: the totals its settlement request claimed (out of balance), and
/// what it uploaded since, each transaction once: STAN, amount, found.
#[derive(Debug, Default)]
struct Round {
    claimed: Option<Totals>,
    uploads: Vec<(u32, u64, bool)>,
}

/// What the records of one transaction say, as far as the books care.
#[derive(Debug, Clone, Default)]
struct Entry {
    at: Option<SystemTime>,
    terminal: CompactString,
    merchant: CompactString,
    stan: u32,
    /// A financial request (0200) or advice (0220).
    financial: bool,
    processing: Option<CompactString>,
    rrn: Option<CompactString>,
    amount: Option<u64>,
    told_approved: bool,
    advised: bool,
    reversed: bool,
    /// What a partial reversal left standing.
    replaced: Option<u64>,
    /// Another transaction whose work this one took over (its records copied here).
    adopted: Option<Place>,
}

impl Entry {
    /// Whether `add` reads `step` at all. Every step is named, so that a new one is placed on one
    /// side or the other; `add` checks that it folds every step said to be read.
    fn reads(step: &Step) -> bool {
        match step {
            Step::Received(_)
            | Step::Forwarded { .. }
            | Step::AdviceQueued { .. }
            | Step::ApprovedAmount { .. }
            | Step::Told { .. }
            | Step::ReversalQueued
            | Step::ReversalReplaces { .. }
            | Step::Adopted { .. } => true,
            Step::Rejected { .. }
            | Step::Joined
            | Step::Disconnected
            | Step::Replayed { .. }
            | Step::Answered { .. }
            | Step::TimedOut
            | Step::LateAnswer { .. }
            | Step::Undeliverable { .. }
            | Step::InDoubt
            | Step::ReversalSent { .. }
            | Step::ReversalAcknowledged { .. }
            | Step::ReversalExpired { .. }
            | Step::HeldElsewhere { .. }
            | Step::ReversalRefused { .. }
            | Step::AdviceSent { .. }
            | Step::AdviceAcknowledged { .. }
            | Step::AdviceRefused { .. }
            | Step::AdviceExpired { .. }
            | Step::BatchOutOfBalance { .. }
            | Step::BatchUploaded { .. }
            | Step::BatchClosed { .. }
            | Step::Withdrawn => false,
        }
    }

    fn add(&mut self, record: &Record) {
        let original = |o: &Original, entry: &mut Entry| {
            entry.processing = o.field(3).map(CompactString::from);
            entry.rrn = o.rrn().map(CompactString::from);
            entry.amount = o.field(4).and_then(|a| a.parse().ok()).or(entry.amount);
        };
        match &record.step {
            Step::Received(r) => {
                self.at = Some(record.at);
                self.terminal = r.terminal.clone();
                self.merchant = r.merchant.clone();
                self.stan = r.stan;
                self.financial = r.mti.class() == Class::FINANCIAL;
                self.amount = r.amount;
            }
            Step::Forwarded { original: o, .. } => original(o, self),
            Step::AdviceQueued { advice, .. } => {
                original(advice, self);
                self.advised = true;
            }
            Step::ApprovedAmount { amount } => self.amount = Some(*amount),
            Step::Told { rc } => self.told_approved = rc.is_approval(),
            Step::ReversalQueued => self.reversed = true,
            Step::ReversalReplaces { amounts } => {
                self.replaced = amounts.get(..12).and_then(|a| a.parse().ok());
            }
            Step::Adopted { node, txn } => self.adopted = Some((node.clone(), *txn)),
            // `reads` names the steps folded above, so that the rest are never looked up.
            step => debug_assert!(!Entry::reads(step), "{step:?} is read but not folded"),
        }
    }

    /// What stands for the merchant, if it is a financial transaction the terminal was told of.
    fn settled(&self, (node, txn): Place) -> Option<Settled> {
        let moves_money = !self
            .processing
            .as_deref()
            .is_some_and(|p| p.starts_with("30") || p.starts_with("31"));
        let accepted = self.told_approved || self.advised;
        if !(self.financial && accepted && moves_money) {
            return None;
        }
        let amount = self.amount.unwrap_or(0);
        let stands = match (self.reversed, self.replaced) {
            (false, _) => amount,
            (true, Some(actual)) => actual.min(amount),
            (true, None) => 0,
        };
        Some(Settled {
            node,
            txn,
            at: self.at.unwrap_or(SystemTime::UNIX_EPOCH),
            terminal: self.terminal.clone(),
            merchant: self.merchant.clone(),
            stan: self.stan,
            rrn: self.rrn.clone(),
            credit: self
                .processing
                .as_deref()
                .is_some_and(|p| p.starts_with("20")),
            amount,
            stands,
            reversed: self.reversed,
        })
    }

    /// Folds what an adopter did into the transaction it took over: a takeover's copy carries the
    /// original's own records (its Received among them); a terminal's reversal that adopted it carries
    /// only the reversal, and its own answer is not the original's.
    fn merge(&mut self, adopter: &Entry) {
        self.reversed |= adopter.reversed;
        self.replaced = self.replaced.or(adopter.replaced);
        if !adopter.financial {
            return;
        }
        if self.at.is_none() {
            *self = Entry {
                adopted: None,
                ..adopter.clone()
            };
        }
        self.told_approved |= adopter.told_approved;
        self.advised |= adopter.advised;
    }
}

/// A terminal and merchant: whose batch.
pub type Batch = (CompactString, CompactString);

/// A terminal's settlement as the records tell it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Closed {
    pub terminal: CompactString,
    pub merchant: CompactString,
    #[serde(skip)]
    pub at: SystemTime,
    /// 0: in balance (or every uploaded item matched).
    pub discrepancies: u32,
    /// It took a batch upload to close.
    pub uploaded: bool,
}

/// The books: every transaction's entry, by place, and the terminals' settlements.
#[derive(Debug)]
pub struct Books {
    entries: GrowingMap<Place, Entry>,
    /// The places of each terminal's transactions: a batch is read, and closed, without a look at
    /// every other terminal's.
    by_batch: HashMap<Batch, GrowingSet<Place>>,
    /// Places in the order their entries began, for eviction.
    places: Places,
    /// The most entries kept; beyond, the oldest go first.
    cap: usize,
    /// Entries dropped to stay within `cap` while their batch was open.
    evicted: u64,
    /// The switch's own books: a closed batch is forgotten (see [`Books::open_batches`]).
    forget_closed: bool,
    /// Each terminal's upload in progress.
    uploads: HashMap<Batch, Round>,
    closed: Vec<Closed>,
}

impl Default for Books {
    fn default() -> Books {
        Books {
            entries: GrowingMap::default(),
            by_batch: HashMap::new(),
            places: Places::default(),
            cap: usize::MAX,
            evicted: 0,
            forget_closed: false,
            uploads: HashMap::new(),
            closed: Vec::new(),
        }
    }
}

impl Books {
    /// Books that keep only open batches: a batch's transactions are forgotten once it closes.
    pub fn open_batches() -> Books {
        Books {
            forget_closed: true,
            ..Books::default()
        }
    }

    /// Keeps at most `cap` transactions, the oldest dropped first (a terminal that never settles
    /// must not grow the switch without bound).
    pub fn limit(&mut self, cap: usize) {
        self.cap = cap.max(1);
        self.evict();
    }

    /// Transactions dropped to stay within the limit while their batch was open.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Drops the oldest entries beyond the cap. The places of entries already gone (declined,
    /// closed) are the queue's to sweep out ([`Places`]).
    fn evict(&mut self) {
        while self.entries.len() > self.cap {
            let entries = &self.entries;
            let Some(place) = self.places.pop_front(|p| entries.contains_key(p)) else {
                return;
            };
            if self.forget(&place) {
                self.evicted += 1;
            }
        }
    }

    /// Every settlement closed, in the order recorded.
    pub fn closed(&self) -> &[Closed] {
        &self.closed
    }

    /// What `terminal` uploaded since its settlement request was found out of balance.
    pub fn uploads(&self, terminal: &str, merchant: &str) -> &[(u32, u64, bool)] {
        let batch = (terminal.into(), merchant.into());
        self.uploads
            .get(&batch)
            .map(|round| round.uploads.as_slice())
            .unwrap_or_default()
    }

    fn settlement(&mut self, record: &Record) {
        match &record.step {
            Step::BatchOutOfBalance {
                terminal,
                merchant,
                theirs,
                ..
            } => {
                // A new round of uploads, unless it is the round in progress found out of balance
                // again: in a cluster, one 0500 repeated on a second node while the first was still
                // reading its batch, whose answer may be recorded after uploads that followed the
                // other's.
                let round = self.uploads.entry((terminal.clone(), merchant.clone()));
                let round = round.or_default();
                if round.claimed != Some(*theirs) {
                    *round = Round {
                        claimed: Some(*theirs),
                        uploads: Vec::new(),
                    };
                }
            }
            Step::BatchUploaded {
                terminal,
                merchant,
                stan,
                amount,
                found,
            } => {
                // A set: in a cluster, one 0320 repeated on a second node while the first was
                // still reading its batch is recorded by both, and counts once.
                let round = (self.uploads)
                    .entry((terminal.clone(), merchant.clone()))
                    .or_default();
                let upload = (*stan, *amount, *found);
                if !round.uploads.contains(&upload) {
                    round.uploads.push(upload);
                }
            }
            Step::BatchClosed {
                terminal,
                merchant,
                uploaded,
                discrepancies,
                ..
            } => {
                let batch = (terminal.clone(), merchant.clone());
                self.uploads.remove(&batch);
                if self.forget_closed {
                    return self.close(terminal, merchant);
                }
                self.closed.push(Closed {
                    terminal: terminal.clone(),
                    merchant: merchant.clone(),
                    at: record.at,
                    discrepancies: *discrepancies,
                    uploaded: *uploaded,
                });
            }
            _ => {}
        }
    }
    /// Adds one record of node `node` (records of a transaction oldest first). A transaction is kept
    /// only if it can reach the books: a financial request or advice, or one that took over another.
    pub fn add(&mut self, node: &str, record: &Record) {
        self.settlement(record);
        // Records the books do not read (the issuer's answer, a reversal's attempts, ...) are not
        // looked up. A new transaction is found missing and added in one lookup.
        if !Entry::reads(&record.step) {
            return;
        }
        let starts = match &record.step {
            Step::Received(r) => r.mti.class() == Class::FINANCIAL,
            Step::Adopted { .. } => true,
            _ => false,
        };
        let place = (CompactString::from(node), record.txn);
        let (entry, new) = match self.entries.entry(place.clone()) {
            Slot::Occupied(found) => (found.into_mut(), false),
            Slot::Vacant(room) if starts => (room.insert(Entry::default()), true),
            Slot::Vacant(_) => return,
        };
        entry.add(record);
        // Declined (or never approved): it can never settle, so nothing of it is kept.
        let refused = matches!(record.step, Step::Told { rc } if !rc.is_approval());
        if refused && !entry.advised && entry.adopted.is_none() {
            self.forget(&place);
            self.places.forgotten(1);
            return;
        }
        let batch = match &record.step {
            Step::Received(r) => Some((r.terminal.clone(), r.merchant.clone())),
            Step::Adopted { node, txn } => self.adopted_into(&place, (node.clone(), *txn)),
            _ => None,
        };
        if let Some(batch) = batch {
            self.by_batch
                .entry(batch)
                .or_default()
                .insert(place.clone());
        }
        if new {
            let (entries, places) = (&self.entries, &mut self.places);
            places.push(place, entries.len(), |p| entries.contains_key(p));
            self.evict();
        }
    }

    /// The batch of the transaction `root` that the transaction at `place` took over, which it joins:
    /// what it did (a reversal) counts in that batch. A terminal's reversal of a transaction another
    /// node holds carries no financial request of its own to place it. `None` if `root` is not in
    /// these books (a takeover's copy of its records places it).
    fn adopted_into(&mut self, place: &Place, root: Place) -> Option<Batch> {
        let root = self.entries.get(&root).filter(|r| r.at.is_some())?;
        let batch = (root.terminal.clone(), root.merchant.clone());
        let adopter = self.entries.get_mut(place)?;
        if adopter.at.is_none() {
            (adopter.terminal, adopter.merchant) = batch.clone();
        }
        Some(batch)
    }

    /// Drops the entry at `place`; returns whether there was one. Its place in the eviction queue is
    /// the caller's to account for.
    fn forget(&mut self, place: &Place) -> bool {
        let Some(entry) = self.entries.remove(place) else {
            return false;
        };
        let batch = (entry.terminal, entry.merchant);
        if let Some(places) = self.by_batch.get_mut(&batch) {
            places.remove(place);
            if places.is_empty() {
                self.by_batch.remove(&batch);
            }
        }
        true
    }

    /// Forgets every transaction of `terminal` at `merchant`: its batch is closed.
    pub fn close(&mut self, terminal: &str, merchant: &str) {
        let batch = (CompactString::from(terminal), CompactString::from(merchant));
        let mut forgotten = 0;
        for place in self.by_batch.remove(&batch).unwrap_or_default() {
            forgotten += usize::from(self.entries.remove(&place).is_some());
        }
        self.places.forgotten(forgotten);
    }

    /// The open batch of `terminal` at `merchant`: its transactions as they stand.
    pub fn batch(&self, terminal: &str, merchant: &str) -> Vec<Settled> {
        let batch = (CompactString::from(terminal), CompactString::from(merchant));
        let places = self.by_batch.get(&batch).into_iter().flatten();
        self.resolve(places.filter_map(|p| Some((p, self.entries.get(p)?))))
    }

    /// Every financial transaction a terminal was told of, as it stands, oldest first. A transaction
    /// another took over counts once, with what the taker did to it.
    pub fn settled(&self) -> Vec<Settled> {
        self.resolve(self.entries.iter())
    }

    /// `entries` (some or all of the books') as they stand: what an adopter among them did is folded
    /// into the transaction it took over.
    fn resolve<'a>(
        &'a self,
        entries: impl Iterator<Item = (&'a Place, &'a Entry)>,
    ) -> Vec<Settled> {
        let mut roots: BTreeMap<Place, Entry> = BTreeMap::new();
        let mut adopters: Vec<(&Place, &Entry)> = Vec::new();
        for (place, entry) in entries {
            match &entry.adopted {
                Some(_) => adopters.push((place, entry)),
                None => {
                    roots.insert(place.clone(), entry.clone());
                }
            }
        }
        // Oldest first, so that a chain of takeovers resolves in order.
        adopters.sort_by(|a, b| a.0.cmp(b.0));
        for (_, adopter) in adopters {
            let mut root = adopter.adopted.clone();
            while let Some(place) = root.take() {
                match self.entries.get(&place).map(|e| e.adopted.clone()) {
                    Some(Some(earlier)) => root = Some(earlier),
                    // Taken over from a transaction these books have (among `entries` or not).
                    Some(None) => {
                        if let Some(root) = roots.get_mut(&place) {
                            root.merge(adopter);
                        }
                    }
                    // Its records are not in these books: the adopter's copy stands for it.
                    None => roots.entry(place).or_default().merge(adopter),
                }
            }
        }
        let mut settled: Vec<Settled> = roots
            .into_iter()
            .filter_map(|(place, entry)| entry.settled(place))
            .collect();
        settled.sort_by_key(|s| (s.at, s.txn));
        settled
    }
}

/// What stands of `settled`, signed, per RRN: the acquirer's side of a reconciliation with the issuer.
pub fn net_by_rrn<'a>(settled: impl IntoIterator<Item = &'a Settled>) -> BTreeMap<String, i64> {
    let mut net = BTreeMap::new();
    for s in settled.into_iter().filter(|s| s.stands > 0) {
        *net.entry(s.rrn.as_deref().unwrap_or_default().to_string())
            .or_default() += s.net();
    }
    net
}

/// The totals of `settled` (a batch's transactions).
pub fn totals<'a>(settled: impl IntoIterator<Item = &'a Settled>) -> Totals {
    let mut t = Totals::default();
    for s in settled.into_iter().filter(|s| s.stands > 0) {
        match s.credit {
            true => (t.credits, t.credit_amount) = (t.credits + 1, t.credit_amount + s.stands),
            false => (t.debits, t.debit_amount) = (t.debits + 1, t.debit_amount + s.stands),
        }
    }
    t
}

#[cfg(test)]
mod tests;
