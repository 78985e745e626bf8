//! A node's links to the issuer, run as the switch's link tasks run them: a message the engine sends
//! waits its turn in its link's queue (the process may be paused meanwhile), then, in a cluster, for
//! the node's licence to write upstream (`engine::Licence`) if it needs one, and reaches the issuer
//! after those written before it on the link.

use std::collections::VecDeque;
use std::time::Duration;

use engine::{Event, Gate, Licence, LinkId};
use iso8583::Message;

use super::{Ev, World};

#[derive(Debug, Default)]
pub(super) struct Link {
    pub(super) up: bool,
    /// Its connection: a message queued on one that dropped is dropped with it.
    pub(super) epoch: u64,
    /// What the link task has yet to write, in order; from the first that waits for the licence on,
    /// while the licence has run out.
    queue: VecDeque<Message>,
    /// Whether the link task's turn is queued (an [`Ev::Write`]).
    turn: bool,
    /// When the last message written on it reaches the issuer: one connection delivers in order, so
    /// none written after it arrives sooner.
    last: Duration,
}

impl<G: Gate + Default> World<G> {
    /// The engine sends `msg` on `link`: the link task writes it at its next turn, if the process runs
    /// then.
    pub(super) fn send(&mut self, n: usize, link: LinkId, msg: Message) {
        let state = &mut self.nodes[n].links[link.0 as usize];
        if !state.up {
            return;
        }
        state.queue.push_back(msg);
        if !std::mem::replace(&mut state.turn, true) {
            let (epoch, turn) = (state.epoch, Duration::from_micros(self.rng.u64(0..2_000)));
            self.at(turn, Ev::Write(n, link, epoch));
        }
        if let Some(pause) = self.nodes[n].pause_armed.take() {
            self.pause(n, pause);
        }
    }

    /// The link task's turn on the link's connection `epoch`: it writes what is queued, up to a
    /// message that needs a licence the node does not have.
    pub(super) fn write(&mut self, n: usize, link: LinkId, epoch: u64) {
        let state = &mut self.nodes[n].links[link.0 as usize];
        if state.epoch != epoch {
            return;
        }
        state.turn = false;
        let writable = self.writable(n, link);
        self.write_first(n, link, writable);
    }

    /// How many of the link's queued messages may be written now.
    fn writable(&self, n: usize, link: LinkId) -> usize {
        let licensed = self.nodes[n]
            .licence
            .is_none_or(|licence| licence.allows(self.clock().mono));
        let queue = &self.nodes[n].links[link.0 as usize].queue;
        (queue.iter())
            .position(|msg| !licensed && Licence::needed_for(msg.mti()))
            .unwrap_or(queue.len())
    }

    /// Writes the first `count` messages queued on the link: they reach the issuer even if the link
    /// or the node dies meanwhile.
    fn write_first(&mut self, n: usize, link: LinkId, count: usize) {
        for _ in 0..count {
            let wire = self.wire();
            let (now, state) = (self.now, &mut self.nodes[n].links[link.0 as usize]);
            let msg = state.queue.pop_front().expect("a message queued");
            state.last = state.last.max(now + wire);
            let (epoch, delay) = (state.epoch, state.last - now);
            self.at(delay, Ev::ToIssuer(n, link, epoch, msg));
        }
    }

    /// Node `n`'s lease was renewed now (or it joined): its licence runs from now, and what waited for
    /// it is written.
    pub(super) fn licensed(&mut self, n: usize) {
        if !self.licences {
            return;
        }
        let licence = Licence::from_renewal(self.clock().mono, self.lease);
        self.nodes[n].licence = Some(licence);
        for link in 0..self.nodes[n].links.len() {
            let link = LinkId(link as u32);
            if !self.nodes[n].links[link.0 as usize].turn {
                let writable = self.writable(n, link);
                self.write_first(n, link, writable);
            }
        }
    }

    pub(super) fn link_up(&mut self, n: usize, link: LinkId) {
        let node = &mut self.nodes[n];
        let state = &mut node.links[link.0 as usize];
        if node.engine.is_some() && !state.up {
            state.up = true;
            state.epoch += 1;
            self.handle(n, Event::LinkUp(link));
        }
    }

    /// A link drops (its messages in flight are lost, and those queued for it) and
    /// reconnects a little later.
    pub(super) fn link_down(&mut self, n: usize, link: LinkId) {
        let state = &mut self.nodes[n].links[link.0 as usize];
        if !state.up {
            return;
        }
        state.up = false;
        state.epoch += 1;
        state.queue.clear();
        state.turn = false;
        self.handle(n, Event::LinkDown(link));
        let later = self.ms(200..5_000);
        self.at(later, Ev::LinkUp(n, link));
    }

    /// Node `n`'s process dies: its link tasks wrote some of what they could before it did.
    pub(super) fn links_die(&mut self, n: usize) {
        for link in 0..self.nodes[n].links.len() {
            let link = LinkId(link as u32);
            let writable = self.writable(n, link);
            let written = self.rng.usize(0..=writable);
            self.write_first(n, link, written);
        }
    }

    /// Node `n`'s process is gone, and its links with it.
    pub(super) fn links_gone(&mut self, n: usize) {
        for state in &mut self.nodes[n].links {
            state.up = false;
            state.epoch += 1;
            state.queue.clear();
            state.turn = false;
        }
    }
}
