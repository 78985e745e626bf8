//! The cluster's part of the simulated world: each node's lease and its takeover of lapsed nodes, the
//! fence that ends a node which lost its epoch, paused nodes, and the faults only a cluster has.

use std::time::Duration;

use engine::{Event, Gate, Holder, Plea, Recovery, TxnId};

use super::{Ev, FAULTS, Journal, World};
use crate::store::{Batch, Store};

/// Commits a node's batch; the store's answers to its claims (`None`: won) and lookups, as the cluster
/// journal's writer gives them, or `None` when the node is fenced.
pub(super) fn commit(
    store: &mut Store,
    node: &str,
    epoch: u64,
    batch: &Batch,
) -> Option<Vec<(TxnId, Option<Holder>)>> {
    if batch.is_empty() {
        return Some(Vec::new());
    }
    let lost = store.commit(node, epoch, batch).ok()?;
    let claims = batch.claims.iter().map(|claim| {
        let holder = lost.contains(&claim.txn).then(|| {
            store
                .holder(claim, node)
                .expect("a lost claim has a holder")
        });
        (claim.txn, holder)
    });
    let lookups = batch
        .lookups
        .iter()
        .map(|key| (key.txn, store.looked_up(key, node)));
    Some(claims.chain(lookups).collect())
}

impl<G: Gate + Default> World<G> {
    /// Nodes lost for good (never node a: someone must be left to take the others over) and paused
    /// nodes, some for less than a lease and some for longer.
    pub(super) fn schedule_cluster_faults(&mut self) {
        let faults = FAULTS.as_millis() as u64;
        for n in 1..self.nodes.len() {
            if self.rng.u32(0..4) == 0 {
                let at = self.ms(0..faults);
                self.at(at, Ev::Lose(n));
            }
        }
        let lease = self.lease.as_millis() as u64;
        for _ in 0..self.rng.u32(0..=2) {
            let (at, n) = (self.ms(0..faults), self.any_node());
            let pause = self.ms(lease / 2..lease * 3);
            self.at(at, Ev::Pause(n, pause));
        }
        if self.outages_past_lease {
            // Every terminal drops its connection during it: a request of its in flight is repeated
            // on whichever node it reaches next, which refuses it at once.
            let (at, outage) = (self.ms(0..faults), self.ms(lease..lease * 3));
            self.at(at, Ev::Outage(outage));
            for t in 0..self.terminals.len() {
                let during = at + self.ms(0..outage.as_millis() as u64);
                self.at(during, Ev::Disconnect(t));
            }
            // And a node is killed during it, holding pleas the store could not be told of.
            let (during, n) = (at + self.ms(0..outage.as_millis() as u64), self.any_node());
            self.at(during, Ev::Crash(n));
        } else if self.rng.bool() {
            let (at, outage) = (self.ms(0..faults), self.ms(100..lease * 2));
            self.at(at, Ev::Outage(outage));
        }
    }

    /// The store cannot be reached until `for_` from now: commits wait for it (their engines told
    /// the journal cannot write), nodes cannot join, renew their leases or take others over.
    pub(super) fn outage(&mut self, for_: Duration) {
        self.run.outages += 1;
        let end = self.now + for_;
        self.outage = Some(self.outage.map_or(end, |e| e.max(end)));
    }

    /// How long until the store can be reached again; `None` when it can now.
    pub(super) fn store_back_in(&self) -> Option<Duration> {
        self.outage
            .filter(|&end| self.now < end)
            .map(|end| end - self.now)
    }

    /// A node's commit finds the store unreachable: the writer tells the engine once, and commits the
    /// batch (with what comes meanwhile) once the store is back.
    pub(super) fn commit_waits(&mut self, n: usize, back: Duration) {
        // Due already: what the engine does on hearing it joins this batch, not a commit of its own.
        self.nodes[n].sync_due = true;
        let retry = back + self.ms(0..50);
        self.at(retry, Ev::Sync(n));
        if !std::mem::replace(&mut self.nodes[n].unwritable, true) {
            self.handle(n, Event::JournalWritable(false));
        }
    }

    /// What a node's new incarnation recovers from: its disk, or what the store hands it on joining
    /// (`None` while a live node is taking its work over: it tries again).
    pub(super) fn read_back(&mut self, n: usize) -> Option<Recovery> {
        let now = self.now;
        let node = &mut self.nodes[n];
        match &mut node.journal {
            Journal::Disk(disk) => Some(disk.recover()),
            Journal::Shared { .. } if self.outage.is_some_and(|end| now < end) => None,
            Journal::Shared {
                epoch,
                next_seq,
                batch,
            } => {
                let store = self.store.as_mut().expect("a cluster's store");
                let joined = store.join(&node.name, now)?;
                *epoch = joined.epoch;
                *next_seq = joined.last_seq + 1;
                *batch = Batch::default();
                let mut recovery = Recovery::default();
                if let Some(last) = joined.last_txn {
                    recovery.numbered_after(last);
                }
                for record in joined.records {
                    recovery.add(record);
                }
                Some(recovery)
            }
        }
    }

    /// A cluster node renews its lease a third of a lease before it lapses.
    pub(super) fn keep_lease(&mut self, n: usize) {
        if self.store.is_none() {
            return;
        }
        let node = &mut self.nodes[n];
        node.lease_generation += 1;
        let generation = node.lease_generation;
        self.at(self.lease / 3, Ev::Lease(n, generation));
        // Joined just now: its lease runs from its join.
        self.licensed(n);
    }

    /// The lease task's turn: renew, then take over one lapsed node's work if there is one; the engine
    /// adopts it, and the commit of its records hands the work on.
    pub(super) fn lease(&mut self, n: usize, generation: u64) {
        let node = &self.nodes[n];
        let (Some(engine), Journal::Shared { epoch, .. }) = (&node.engine, &node.journal) else {
            return;
        };
        if node.lease_generation != generation {
            return;
        }
        // The lease task cannot reach the store: it tries again at its next turn.
        if self.store_back_in().is_some() {
            return self.at(self.lease / 3, Ev::Lease(n, generation));
        }
        let (oldest, epoch, now) = (engine.oldest_needed(), *epoch, self.now);
        let store = self.store.as_mut().expect("a cluster's store");
        let taken = store
            .renew(&node.name, epoch, now, oldest)
            .and_then(|()| store.take_over(&node.name, epoch, now));
        let Ok(taken) = taken else {
            return self.fenced(n);
        };
        self.licensed(n);
        if let Some(takeover) = taken {
            self.run.takeovers += 1;
            let (now, mut out) = (self.clock(), Vec::new());
            let engine = self.nodes[n].engine.as_mut().expect("a running node");
            engine.adopt(now, &takeover.node, takeover.records, &mut out);
            // In the batch before the records that carry the work on, as the switch's driver appends
            // both before its journal's next flush: one commit holds both. A crash armed for those
            // records that strikes before the commit takes both with it (the takeover lapses with the
            // node); one that strikes after it leaves both committed.
            let retire = (takeover.node, takeover.through);
            self.nodes[n].journal.batch().retire.push(retire);
            self.carry_out(n, out);
        }
        // Its own pleas held in the store again (one admitted while the store was away is not there
        // yet), then the pleas no live node has taken on, each for the engine to act on.
        self.hold_pleas(n, self.nodes[n].pleas.clone());
        let (node, store) = (
            &self.nodes[n],
            self.store.as_mut().expect("a cluster's store"),
        );
        let Journal::Shared { epoch, .. } = &node.journal else {
            unreachable!("a cluster node's journal is the store")
        };
        for plea in store.take_pleas(&node.name, *epoch, self.now) {
            self.handle(n, Event::Plea(plea));
        }
        self.at(self.lease / 3, Ev::Lease(n, generation));
    }

    /// The store refused the node's commit or renewal: the process ends (telling nobody anything more)
    /// and its supervisor starts it again. The pleas it holds are left in the store first: it can
    /// reach the store, which is how it learnt of the fence.
    pub(super) fn fenced(&mut self, n: usize) {
        self.run.fenced += 1;
        let pleas = std::mem::take(&mut self.nodes[n].pleas);
        (self.store.as_mut().expect("a cluster's store")).plead(pleas);
        self.down(n);
    }

    /// A plea's reversal has its outcome durable: the node forgets it, and the store's copy (if another
    /// node left it there) goes too, unless the store cannot be reached: then it stays, and the node
    /// that takes it next finds the work done.
    /// Node `n` holds `pleas` in the store, if it can reach it.
    pub(super) fn hold_pleas(&mut self, n: usize, pleas: impl IntoIterator<Item = Plea>) {
        let (node, reachable) = (&self.nodes[n], self.store_back_in().is_none());
        if let (Journal::Shared { epoch, .. }, true) = (&node.journal, reachable) {
            let store = self.store.as_mut().expect("a cluster's store");
            store.hold_pleas(&node.name, *epoch, pleas);
        }
    }

    pub(super) fn plea_settled(&mut self, n: usize, plea: &Plea) {
        self.nodes[n].pleas.remove(plea);
        if self.store_back_in().is_none() {
            (self.store.as_mut().expect("a cluster's store")).settle_plea(plea);
        }
    }

    pub(super) fn pause(&mut self, n: usize, pause: Duration) {
        let node = &mut self.nodes[n];
        if node.engine.is_some() && node.paused.is_none() {
            node.paused = Some(Vec::new());
            self.at(pause, Ev::Resume(n));
        }
    }

    /// The node continues: it sees, in order and all at once, what happened while it was stopped.
    pub(super) fn resume(&mut self, n: usize) {
        let Some(waiting) = self.nodes[n].paused.take() else {
            return;
        };
        for ev in waiting {
            self.on(ev);
        }
    }
}
