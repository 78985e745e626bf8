//! A node's life: its first start, crashes (what was not durable is lost), and restarts that recover
//! from its journal.

use std::time::Duration;

use engine::{Config, Engine, Event, Gate, LinkId};

use super::{Committed, Ev, Journal, World};
use crate::store::Batch;

impl<G: Gate + Default> World<G> {
    /// A node dies: what was not yet durable is lost (on a disk, any prefix of it may survive: a torn
    /// group commit); held effects never happen, or the last commit went through and only some of its
    /// effects did.
    pub(super) fn crash(&mut self, n: usize) {
        if self.nodes[n].engine.is_none() {
            return;
        }
        self.run.crashes += 1;
        if self.rng.bool() && self.store_back_in().is_none() {
            // The commit went through; the process dies before the engine hears of it.
            let mut released = match self.make_durable(n) {
                Committed::Durable(seq, ..) => self.released(n, seq),
                Committed::Fenced => Vec::new(),
            };
            let done = self.rng.usize(0..=released.len());
            for effect in released.drain(..done) {
                self.effect(n, effect);
            }
        } else if let Journal::Disk(disk) = &mut self.nodes[n].journal {
            disk.crash(&mut self.rng);
        }
        self.links_die(n);
        self.down(n);
    }

    /// A node's process is gone: its connections close, its terminals reconnect, and it is started
    /// again after a while unless it was lost.
    pub(super) fn down(&mut self, n: usize) {
        let node = &mut self.nodes[n];
        node.gate = G::default();
        node.sync_due = false;
        node.timer_at = None;
        node.engine = None;
        node.paused = None;
        node.pause_armed = None;
        node.lease_generation += 1;
        // Kept in its pleas file, they are the new process's to take on; not with the machine lost.
        if !self.pleas_file || node.lost {
            node.pleas.clear();
        }
        if let Journal::Shared { batch, .. } = &mut node.journal {
            *batch = Batch::default();
        }
        let conns = self.conns.iter().filter(|(_, (_, on))| *on == n);
        for conn in conns.map(|(c, _)| *c).collect::<Vec<_>>() {
            self.close(conn);
        }
        for t in 0..self.terminals.len() {
            let later = self.ms(100..2_000);
            self.at(later, Ev::Connect(t));
        }
        self.links_gone(n);
        let downtime = self.ms(500..5_000);
        if !self.nodes[n].lost {
            self.at(downtime, Ev::Restart(n));
        }
    }

    /// A node starts again: a new engine recovers from the durable journal, then its links connect.
    pub(super) fn restart(&mut self, n: usize) {
        let Some(recovery) = self.read_back(n) else {
            let later = self.ms(200..1_000);
            return self.at(later, Ev::Restart(n));
        };
        let mut engine = self.new_engine(n);
        let mut out = Vec::new();
        engine.recover(self.clock(), recovery, &mut out);
        self.nodes[n].engine = Some(engine);
        self.carry_out(n, out);
        for plea in self.nodes[n].pleas.clone() {
            self.handle(n, Event::Plea(plea));
        }
        for link in 0..self.nodes[n].links.len() {
            let after = self.ms(10..500);
            self.at(after, Ev::LinkUp(n, LinkId(link as u32)));
        }
        self.keep_lease(n);
    }

    /// Node `n`'s next engine (a start or a restart): the world's configuration, with the node's STANs.
    pub(super) fn new_engine(&mut self, n: usize) -> Engine {
        let node = &mut self.nodes[n];
        node.incarnation += 1;
        Engine::new(Config {
            stans: node.stans,
            ..self.config.clone()
        })
    }

    /// A node's first start: nothing to recover, and its links connect at once.
    pub(super) fn start_node(&mut self, n: usize) {
        if self.store.is_some() {
            let recovery = self.read_back(n);
            assert!(
                recovery.is_some(),
                "nobody takes a node over before it starts"
            );
        }
        self.nodes[n].engine = Some(self.new_engine(n));
        for link in 0..self.nodes[n].links.len() {
            self.at(Duration::ZERO, Ev::LinkUp(n, LinkId(link as u32)));
        }
        self.keep_lease(n);
    }
}
