//! A queue of fixed-size chunks, for the eviction queues that grow with traffic (the idempotency
//! table's, the books'). A `VecDeque` that outgrows its capacity copies itself whole into one twice the
//! size, and the request that pushed past it waits for all of it: 33 ms at a million entries, at the
//! moment the idempotency cap was first reached (`benches/engine_tail.rs`). Here growing takes one more
//! chunk and moves nothing; a chunk emptied at the front is kept for the next one needed at the back,
//! so a queue at steady state allocates nothing. Only the chunks in use are resident.

use std::collections::VecDeque;

/// Items a chunk holds: 2 MiB of 32-byte items, as an eviction queue's are.
const CHUNK: usize = 1 << 16;

#[derive(Debug)]
pub(crate) struct Fifo<T> {
    chunks: VecDeque<VecDeque<T>>,
    /// An emptied chunk, kept for reuse.
    spare: Option<VecDeque<T>>,
    len: usize,
}

impl<T> Default for Fifo<T> {
    fn default() -> Self {
        Fifo {
            chunks: VecDeque::new(),
            spare: None,
            len: 0,
        }
    }
}

impl<T> Fifo<T> {
    pub(crate) fn push_back(&mut self, item: T) {
        if self.chunks.back().is_none_or(|c| c.len() == CHUNK) {
            let chunk = self.fresh();
            self.chunks.push_back(chunk);
        }
        self.chunks.back_mut().expect("a chunk").push_back(item);
        self.len += 1;
    }

    pub(crate) fn push_front(&mut self, item: T) {
        if self.chunks.front().is_none_or(|c| c.len() == CHUNK) {
            let chunk = self.fresh();
            self.chunks.push_front(chunk);
        }
        self.chunks.front_mut().expect("a chunk").push_front(item);
        self.len += 1;
    }

    /// Puts all of `older` in front, in its order: its chunks move, their items do not.
    pub(crate) fn prepend(&mut self, older: Fifo<T>) {
        self.len += older.len;
        for chunk in older.chunks.into_iter().rev() {
            self.chunks.push_front(chunk);
        }
    }

    pub(crate) fn front(&self) -> Option<&T> {
        self.chunks.front().and_then(VecDeque::front)
    }

    pub(crate) fn pop_front(&mut self) -> Option<T> {
        let chunk = self.chunks.front_mut()?;
        let item = chunk.pop_front();
        if chunk.is_empty() {
            self.spare = self.chunks.pop_front();
        }
        self.len -= usize::from(item.is_some());
        item
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Oldest first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flatten()
    }

    fn fresh(&mut self) -> VecDeque<T> {
        self.spare
            .take()
            .unwrap_or_else(|| VecDeque::with_capacity(CHUNK))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against `VecDeque`, across chunk boundaries both ways.
    #[test]
    fn it_behaves_as_a_deque_for_what_the_queues_do() {
        let mut ours = Fifo::default();
        let mut model = VecDeque::new();
        let mut next = 0u64;
        // Pushes, pops and returns to the front in a fixed irregular pattern over 3.5 chunks.
        for round in 0..(CHUNK as u64 * 7 / 2) {
            match round % 7 {
                0..=3 => {
                    ours.push_back(next);
                    model.push_back(next);
                    next += 1;
                }
                4 | 5 => assert_eq!(ours.pop_front(), model.pop_front()),
                _ => {
                    if let Some(item) = model.pop_front() {
                        assert_eq!(ours.pop_front(), Some(item));
                        ours.push_front(item);
                        model.push_front(item);
                    }
                }
            }
            assert_eq!(ours.front(), model.front());
            assert_eq!(ours.len(), model.len());
            if round % 4096 == 0 {
                assert!(ours.iter().eq(model.iter()), "at round {round}");
            }
        }
        assert!(ours.iter().eq(model.iter()));
        while let Some(item) = model.pop_front() {
            assert_eq!(ours.pop_front(), Some(item));
        }
        assert_eq!(ours.pop_front(), None);
        assert_eq!(ours.iter().count(), 0);
    }

    #[test]
    fn prepending_puts_the_older_queue_in_front_in_its_order() {
        let (mut older, mut newer) = (Fifo::default(), Fifo::default());
        // Partly filled chunks on both sides, and more than one chunk in front.
        (0..CHUNK + 10).for_each(|i| older.push_back(i));
        older.pop_front();
        (CHUNK + 10..CHUNK + 20).for_each(|i| newer.push_back(i));
        newer.prepend(older);
        assert_eq!(newer.len(), CHUNK + 19);
        assert!(newer.iter().copied().eq(1..CHUNK + 20));
        newer.push_back(CHUNK + 20);
        assert!(std::iter::from_fn(|| newer.pop_front()).eq(1..CHUNK + 21));
        assert!(newer.is_empty());
    }

    #[test]
    fn a_chunk_emptied_at_the_front_is_reused_at_the_back() {
        let mut q = Fifo::default();
        for i in 0..CHUNK + 1 {
            q.push_back(i);
        }
        for _ in 0..CHUNK {
            q.pop_front();
        }
        assert!(q.spare.is_some(), "the emptied chunk is kept");
        for i in 0..CHUNK {
            q.push_back(i);
        }
        assert!(q.spare.is_none(), "and taken again");
        assert_eq!(q.chunks.len(), 2);
    }
}
