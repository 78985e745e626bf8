//! Write-ahead gates with a fault, in place of the shipped one: what the simulation must catch.

use engine::{Action, Gate, Outbox, TxnId};

/// A gate that lets every effect out at once: what the simulation must catch.
#[derive(Debug, Default)]
pub(crate) struct Leaky;

impl Gate for Leaky {
    fn appended(&mut self, _: u64, _: TxnId) {}
    fn effect(&mut self, effect: Action) -> Option<Action> {
        Some(effect)
    }
    fn repeat(&mut self, _: TxnId, answer: Action) -> Option<Action> {
        Some(answer)
    }
    fn durable(&mut self, _: u64, _: &mut Vec<Action>) {}
    fn withdraw(&mut self, _: &[TxnId]) {}
    fn held(&self) -> usize {
        0
    }
}

/// The shipped gate, but for withdrawals, which it forgets: a provisional forward whose claim was lost
/// goes out all the same. What the cluster simulation must catch.
#[derive(Debug, Default)]
pub(crate) struct Unwithdrawn(Outbox);

impl Gate for Unwithdrawn {
    fn appended(&mut self, seq: u64, txn: TxnId) {
        self.0.appended(seq, txn)
    }
    fn effect(&mut self, effect: Action) -> Option<Action> {
        self.0.effect(effect)
    }
    fn repeat(&mut self, txn: TxnId, answer: Action) -> Option<Action> {
        self.0.repeat(txn, answer)
    }
    fn durable(&mut self, seq: u64, released: &mut Vec<Action>) {
        self.0.durable(seq, released)
    }
    fn withdraw(&mut self, _: &[TxnId]) {}
    fn held(&self) -> usize {
        self.0.held()
    }
}
