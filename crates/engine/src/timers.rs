//! The engine's one timer table. The engine arms and cancels timers as it decides; the shell asks only
//! for the next deadline ([`Engine::poll_timeout`](crate::Engine::poll_timeout)) and hands the time back
//! when it passes ([`Engine::handle_timeout`](crate::Engine::handle_timeout)), as quinn-proto's
//! connections do. So the driver and the simulation run the same timers, and a shell keeps one sleep.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use crate::FastMap;
use crate::event::TimerId;

/// Armed timers by deadline. Cancelling or re-arming only updates `armed`; the heap's stale entries are
/// dropped when they reach the top (every armed timer is in the heap once with its current deadline and
/// number). The number orders timers with the same deadline by arming, so a run replays exactly.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, u64, TimerId)>>,
    armed: FastMap<TimerId, (Instant, u64)>,
    next: u64,
}

impl Timers {
    /// Room for `expected` entries in the heap from the start. A cancelled timer stays in it until its
    /// deadline, so it holds about a response timeout's worth of requests; grown by doubling, it would
    /// move them all at once on the request that fills it (11 ms at half a million), stalling every
    /// message behind that request.
    pub(crate) fn with_capacity(expected: usize) -> Timers {
        Timers {
            heap: BinaryHeap::with_capacity(expected),
            ..Timers::default()
        }
    }

    /// Fires `id` at `at`, replacing any earlier arming of it.
    pub(crate) fn arm(&mut self, id: TimerId, at: Instant) {
        self.next += 1;
        self.armed.insert(id, (at, self.next));
        self.heap.push(Reverse((at, self.next, id)));
    }

    pub(crate) fn cancel(&mut self, id: TimerId) {
        self.armed.remove(&id);
    }

    /// When `id` fires, if armed.
    pub(crate) fn deadline(&self, id: TimerId) -> Option<Instant> {
        self.armed.get(&id).map(|&(at, _)| at)
    }

    /// The earliest deadline.
    pub(crate) fn next_deadline(&mut self) -> Option<Instant> {
        self.drop_stale();
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// The earliest timer due at `now`, disarmed.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<TimerId> {
        self.drop_stale();
        let &Reverse((at, _, id)) = self.heap.peek()?;
        if at > now {
            return None;
        }
        self.heap.pop();
        self.armed.remove(&id);
        Some(id)
    }

    fn drop_stale(&mut self) {
        while let Some(&Reverse((_, n, id))) = self.heap.peek() {
            if self
                .armed
                .get(&id)
                .is_some_and(|&(_, current)| current == n)
            {
                return;
            }
            self.heap.pop();
        }
    }
}
