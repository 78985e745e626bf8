//! The books' eviction queue: the place of every transaction they keep, oldest first.
//!
//! A transaction the books forget (declined, or its batch closed) leaves its place in the queue, as
//! a queue cannot take an item out of its middle. Left there, behind one old transaction that stays
//! (a terminal that does not settle) every decline would add a place for good, and the eviction
//! that finally passed them would pop them all at once. So once more than half the queue is
//! forgotten places, each push also sweeps a few places from the front into a second queue, keeping
//! only the transactions still kept; when the sweep has passed every place that was there when it
//! began, the swept queue goes back in front. The queue stays within about twice the transactions
//! kept, the order of those is unchanged, and no push does more than [`STEP`] places of sweeping. A
//! queue of places still kept costs nothing more: no sweep begins.

use crate::books::Place;
use crate::fifo::Fifo;

/// Places swept at each push, at most.
const STEP: usize = 4;
/// Forgotten places tolerated beyond the number kept before a sweep begins.
const SLACK: usize = 1024;

#[derive(Debug, Default)]
pub(crate) struct Places {
    /// Oldest first: `swept`, then `rest`.
    swept: Fifo<Place>,
    rest: Fifo<Place>,
    /// Places at the front of `rest` still to sweep (0: no sweep under way).
    sweeping: usize,
    /// Places in the queue whose transactions were forgotten.
    stale: usize,
}

impl Places {
    /// Adds the place of a transaction the books just began to keep (`kept` of them now, `is_kept`
    /// telling which), and sweeps a few.
    pub(crate) fn push(&mut self, place: Place, kept: usize, is_kept: impl Fn(&Place) -> bool) {
        self.rest.push_back(place);
        if self.sweeping == 0 && self.stale > kept + SLACK {
            debug_assert!(self.swept.is_empty(), "no sweep under way");
            self.sweeping = self.rest.len();
        }
        for _ in 0..STEP.min(self.sweeping) {
            let place = self.rest.pop_front().expect("a place to sweep");
            self.sweeping -= 1;
            if is_kept(&place) {
                self.swept.push_back(place);
            } else {
                self.stale -= 1;
            }
        }
        if self.sweeping == 0 && !self.swept.is_empty() {
            self.rest.prepend(std::mem::take(&mut self.swept));
        }
    }

    /// `n` transactions whose places are in the queue were forgotten.
    pub(crate) fn forgotten(&mut self, n: usize) {
        self.stale += n;
        debug_assert!(self.stale <= self.len(), "only places in the queue");
    }

    /// Takes the oldest place, `is_kept` telling whether its transaction still is.
    pub(crate) fn pop_front(&mut self, is_kept: impl Fn(&Place) -> bool) -> Option<Place> {
        let place = match self.swept.pop_front() {
            Some(place) => place,
            None => {
                let place = self.rest.pop_front()?;
                self.sweeping = self.sweeping.saturating_sub(1);
                place
            }
        };
        if !is_kept(&place) {
            self.stale -= 1;
        }
        Some(place)
    }

    pub(crate) fn len(&self) -> usize {
        self.swept.len() + self.rest.len()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashSet, VecDeque};

    use compact_str::CompactString;

    use super::*;
    use crate::event::TxnId;

    fn place(txn: u64) -> Place {
        (CompactString::default(), TxnId(txn))
    }

    /// Pushes `txn`, kept or forgotten at once (nine in ten), and every 5 000th a burst: a third of
    /// those kept forgotten together (batches closed).
    fn push(places: &mut Places, kept: &mut HashSet<u64>, rng: &mut fastrand::Rng, txn: u64) {
        kept.insert(txn);
        places.push(place(txn), kept.len(), |p| kept.contains(&p.1.0));
        if txn > 0 && rng.u8(..10) < 9 {
            kept.remove(&txn);
            places.forgotten(1);
        }
        if txn % 5_000 == 4_999 {
            let gone: Vec<u64> = (kept.iter().copied())
                .filter(|&t| t > 0 && t % 3 == 0)
                .collect();
            gone.iter().for_each(|t| {
                kept.remove(t);
            });
            places.forgotten(gone.len());
        }
    }

    /// Behind one transaction kept from the start, the places of those forgotten do not pile up.
    #[test]
    fn forgotten_places_behind_an_old_one_do_not_pile_up() {
        let (mut places, mut kept) = (Places::default(), HashSet::new());
        let mut rng = fastrand::Rng::with_seed(11);
        for txn in 0..200_000 {
            push(&mut places, &mut kept, &mut rng, txn);
            assert!(
                places.len() <= 4 * kept.len() + 2 * SLACK,
                "{} places for {} kept at {txn}",
                places.len(),
                kept.len()
            );
        }
        assert_eq!(
            places.pop_front(|p| kept.contains(&p.1.0)),
            Some(place(0)),
            "the oldest is still in front"
        );
    }

    /// Against a model (every place pushed, in order): what comes out first is always the oldest
    /// transaction still kept, sweeps or not.
    #[test]
    fn the_oldest_kept_comes_out_first_through_the_sweeps() {
        let (mut places, mut kept) = (Places::default(), HashSet::new());
        let mut rng = fastrand::Rng::with_seed(12);
        let mut model = VecDeque::new();
        for txn in 0..200_000 {
            push(&mut places, &mut kept, &mut rng, txn);
            model.push_back(txn);
            if txn % 50 != 0 {
                continue;
            }
            while model.front().is_some_and(|t| !kept.contains(t)) {
                model.pop_front();
            }
            let got = std::iter::from_fn(|| places.pop_front(|p| kept.contains(&p.1.0)))
                .map(|p| p.1.0)
                .find(|t| kept.contains(t));
            assert_eq!(got, model.pop_front(), "at {txn}");
            if let Some(t) = got {
                kept.remove(&t);
            }
        }
    }
}
