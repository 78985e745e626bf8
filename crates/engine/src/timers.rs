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
///
/// A request's response timer is cancelled when its answer comes, long before its deadline, so most of
/// the heap would be stale: a response timeout's worth of traffic, half a million entries at 20 000/s
/// and 25 s, and a heap that doubles moves them all at once on the push that fills it (11 ms at 524 288
/// in `benches/engine_tail.rs`). So once stale entries outnumber the armed ones, the heap is rebuilt
/// from the armed timers alone: a few hundred at a time, a request's worth of work spread over as many
/// pushes, and the heap stays small.
///
/// Deadlines are the engine's `Instant`s; the table only compares them, so its tests use numbers.
#[derive(Debug)]
pub(crate) struct Timers<T = Instant> {
    heap: BinaryHeap<Reverse<(T, u64, TimerId)>>,
    armed: FastMap<TimerId, (T, u64)>,
    next: u64,
}

impl<T> Default for Timers<T> {
    fn default() -> Self {
        Timers {
            heap: BinaryHeap::new(),
            armed: FastMap::default(),
            next: 0,
        }
    }
}

/// Stale entries the heap may hold beyond as many as there are armed timers, before it is rebuilt.
const STALE: usize = 1024;

impl<T: Ord + Copy> Timers<T> {
    /// Fires `id` at `at`, replacing any earlier arming of it.
    pub(crate) fn arm(&mut self, id: TimerId, at: T) {
        self.next += 1;
        self.armed.insert(id, (at, self.next));
        self.heap.push(Reverse((at, self.next, id)));
        if self.heap.len() > 2 * self.armed.len() + STALE {
            self.heap = (self.armed.iter())
                .map(|(&id, &(at, n))| Reverse((at, n, id)))
                .collect();
        }
    }

    pub(crate) fn cancel(&mut self, id: TimerId) {
        self.armed.remove(&id);
    }

    /// When `id` fires, if armed.
    pub(crate) fn deadline(&self, id: TimerId) -> Option<T> {
        self.armed.get(&id).map(|&(at, _)| at)
    }

    /// The earliest deadline.
    pub(crate) fn next_deadline(&mut self) -> Option<T> {
        self.drop_stale();
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// The earliest timer due at `now`, disarmed, with when it was due.
    pub(crate) fn pop_due(&mut self, now: T) -> Option<(T, TimerId)> {
        self.drop_stale();
        let &Reverse((at, _, id)) = self.heap.peek()?;
        if at > now {
            return None;
        }
        self.heap.pop();
        self.armed.remove(&id);
        Some((at, id))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::TxnId;

    /// A million requests, each answered long before its deadline, with a few timers still armed among
    /// them: the heap holds about as many entries as there are armed timers, and they fire in order.
    #[test]
    fn cancelled_timers_do_not_pile_up_and_the_armed_ones_still_fire_in_order() {
        // Deadlines in milliseconds.
        let mut timers = Timers::<u64>::default();
        let mut most = 0;
        for i in 0..1_000_000u64 {
            let id = TimerId::Response(TxnId(i));
            timers.arm(id, 30_000 + i);
            // One in a hundred thousand is left armed; the rest are answered.
            if i % 100_000 != 7 {
                timers.cancel(id);
            }
            most = most.max(timers.heap.len());
        }
        // Twice the armed timers (ten, and the one being armed) and the stale allowance, and the push
        // that triggers the rebuild.
        assert!(
            most <= 2 * 11 + STALE + 1,
            "the heap reached {most} entries"
        );
        let mut fired = Vec::new();
        while let Some((_, TimerId::Response(TxnId(i)))) = timers.pop_due(u64::MAX) {
            fired.push(i);
        }
        let armed: Vec<u64> = (0..10).map(|k| k * 100_000 + 7).collect();
        assert_eq!(fired, armed);
    }
}
