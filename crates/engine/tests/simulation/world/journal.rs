//! Where a node's records go (its simulated disk, or the shared store), and the group commit that
//! makes them durable and lets out the effects held for them.

use std::time::Duration;

use engine::{Action, Event, Gate, Holder, Record, TxnId};

use super::{Ev, FAULTS, STALLS, World, cluster};
use crate::disk::Disk;
use crate::store::Batch;

/// Where a node's records go.
pub(super) enum Journal {
    Disk(Disk),
    /// The shared store, through this node's incarnation: its epoch, and the batch being gathered.
    Shared {
        epoch: u64,
        next_seq: u64,
        batch: Batch,
    },
}

impl Journal {
    pub(super) fn append(&mut self, record: Record) -> u64 {
        match self {
            Journal::Disk(disk) => disk.append(&record),
            Journal::Shared {
                next_seq, batch, ..
            } => {
                let seq = *next_seq;
                *next_seq += 1;
                batch.records.push((seq, record));
                seq
            }
        }
    }

    pub(super) fn unsynced(&self) -> bool {
        match self {
            Journal::Disk(disk) => disk.unsynced(),
            Journal::Shared { batch, .. } => !batch.is_empty(),
        }
    }

    pub(super) fn batch(&mut self) -> &mut Batch {
        match self {
            Journal::Shared { batch, .. } => batch,
            // One node has no shared store: its engine claims no key.
            Journal::Disk(_) => panic!("single-node engine asked the shared store"),
        }
    }
}

/// Batches read for settlement messages: each message's transaction and what the store gave.
pub(super) type Reads = Vec<(TxnId, Option<Vec<(String, Record)>>)>;

/// What a group commit made of a node's pending records.
pub(super) enum Committed {
    /// Durable through this record (none: nothing was appended), the store's answers to claims and
    /// lookups, and the batches read after it.
    Durable(Option<u64>, Vec<(TxnId, Option<Holder>)>, Reads),
    /// The store refused it: the node lost its epoch.
    Fenced,
}

impl<G: Gate + Default> World<G> {
    pub(super) fn schedule_sync(&mut self, n: usize) {
        let node = &mut self.nodes[n];
        if node.journal.unsynced() && !node.sync_due {
            node.sync_due = true;
            let shared = matches!(node.journal, Journal::Shared { .. });
            let commit = if shared && self.now < FAULTS && self.rng.u64(0..STALLS) == 0 {
                // A database under load: a commit that outlasts the issuers' response timeout.
                Duration::from_millis(self.rng.u64(4_000..12_000))
            } else {
                Duration::from_micros(self.rng.u64(0..5_000))
            };
            self.at(commit, Ev::Sync(n));
        }
    }

    /// The group commit: every pending record is durable, and the effects held for them go out; a
    /// cluster node then learns the store's answers to its claims, or that it is fenced.
    pub(super) fn sync(&mut self, n: usize) {
        self.nodes[n].sync_due = false;
        if self.nodes[n].engine.is_none() {
            return;
        }
        if let Some(back) = self.store_back_in() {
            return self.commit_waits(n, back);
        }
        match self.make_durable(n) {
            Committed::Durable(seq, answers, reads) => {
                // Read on a connection of their own, after the commit: some time later.
                let generation = self.nodes[n].lease_generation;
                for (txn, records) in reads {
                    let later = self.ms(0..500);
                    self.at(later, Ev::BatchRead(n, generation, txn, records));
                }
                // As the switch's writer reports them: writable again, the claims' answers, then the
                // durable mark that lets the held effects out, so that no provisional forward leaves
                // while the engine still takes its claim for unsettled.
                if std::mem::take(&mut self.nodes[n].unwritable) {
                    self.handle(n, Event::JournalWritable(true));
                }
                if !self.answers_first {
                    for effect in self.released(n, seq) {
                        self.effect(n, effect);
                    }
                    // As long as a database under load may take to say who holds each key.
                    let (later, generation) = (self.ms(0..3_000), self.nodes[n].lease_generation);
                    return self.at(later, Ev::Answers(n, generation, answers));
                }
                self.answered(n, answers);
                for effect in self.released(n, seq) {
                    self.effect(n, effect);
                }
            }
            Committed::Fenced => self.fenced(n),
        }
    }

    /// The store's answers to a node's claims and lookups, into its engine.
    pub(super) fn answered(&mut self, n: usize, answers: Vec<(TxnId, Option<Holder>)>) {
        for (txn, holder) in answers {
            self.handle(n, Event::Claimed { txn, holder });
        }
    }

    pub(super) fn make_durable(&mut self, n: usize) -> Committed {
        let node = &mut self.nodes[n];
        let (seq, answers, lost, reads) = match &mut node.journal {
            Journal::Disk(disk) => (Some(disk.sync()), Vec::new(), Vec::new(), Vec::new()),
            Journal::Shared { epoch, batch, .. } => {
                let batch = std::mem::take(batch);
                let store = self.store.as_mut().expect("a cluster's store");
                let Some(answers) = cluster::commit(store, &node.name, *epoch, &batch) else {
                    return Committed::Fenced;
                };
                // The claims this commit lost (the claims' answers come first, then the lookups').
                let lost: Vec<TxnId> = (answers[..batch.claims.len()].iter())
                    .filter(|(_, holder)| holder.is_some())
                    .map(|(txn, _)| *txn)
                    .collect();
                // Each batch read after the commit; one in twenty fails (the database went away).
                let read = |b| match self.shared_batches {
                    true => store.batch(b),
                    false => (store.batch(b).into_iter())
                        .filter(|(n, _)| *n == node.name)
                        .collect(),
                };
                let reads = (batch.reads.iter())
                    .map(|b| (b.txn, (self.rng.u32(0..20) != 0).then(|| read(b))))
                    .collect();
                (
                    batch.records.last().map(|(seq, _)| *seq),
                    answers,
                    lost,
                    reads,
                )
            }
        };
        if seq.is_some() {
            // Their provisional forwards never go out.
            node.gate.withdraw(&lost);
        }
        Committed::Durable(seq, answers, reads)
    }

    /// The effects the gate holds for records up to `seq` (none: nothing was appended), let out.
    pub(super) fn released(&mut self, n: usize, seq: Option<u64>) -> Vec<Action> {
        let mut released = Vec::new();
        if let Some(seq) = seq {
            self.nodes[n].gate.durable(seq, &mut released);
        }
        released
    }
}
