//! The write-ahead gate: an effect (a message to an issuer or a terminal, a link closed) leaves only after
//! every journal record emitted before it is durable. Effects are held in order, so a group commit
//! delays them by at most one batch while the engine goes on with new events.
//!
//! This is the one implementation of the rule. The switch's driver runs it over the real journal; the
//! simulation runs it over a simulated disk, and proves that breaking it is noticed by swapping in a gate
//! that lets effects out early (which is why it is a trait).

use std::collections::VecDeque;

use crate::FastMap;
use crate::event::{Action, TxnId};
use crate::journal::Record;

/// See the module documentation. Sequence numbers are the journal's own: increasing, one per record.
pub trait Gate {
    /// A record of `txn` was appended to the journal as number `seq`.
    fn appended(&mut self, seq: u64, txn: TxnId);

    /// An effect the engine emitted after every record appended so far: returned when it may go out now,
    /// else held.
    fn effect(&mut self, effect: Action) -> Option<Action>;

    /// An answer that repeats `txn`'s (see [`Action::AnswerNow`]): returned when every record of `txn`
    /// is durable, else held until they are.
    fn repeat(&mut self, txn: TxnId, answer: Action) -> Option<Action>;

    /// Every record up to `seq` is durable: the effects that waited for them, in order, go to `released`.
    fn durable(&mut self, seq: u64, released: &mut Vec<Action>);

    /// Cluster mode: the commit that is about to be reported durable lost the claims of `txns`, so
    /// their provisional forwards (see `claims.rs`) never go out. Called before [`Gate::durable`] for
    /// that commit, while those forwards are still held behind its records.
    fn withdraw(&mut self, txns: &[TxnId]);

    /// Effects waiting for the journal.
    fn held(&self) -> usize;

    /// Takes one of the engine's actions in order: a record goes to `append` (which returns its sequence
    /// number); an effect is returned when it may go out now. These are never held: a claim, a lookup
    /// or a batch's read (cluster mode), which the shell hands to the journal to go with the records
    /// before it, a plea (cluster mode), which the shell keeps at once, and an answer that needs no
    /// new record durable.
    fn admit(&mut self, action: Action, append: impl FnOnce(Record) -> u64) -> Option<Action>
    where
        Self: Sized,
    {
        match action {
            Action::Journal(record) => {
                let txn = record.txn;
                let seq = append(record);
                self.appended(seq, txn);
                None
            }
            Action::AnswerNow {
                repeats: Some(txn), ..
            } => self.repeat(txn, action),
            Action::Claim(_)
            | Action::Lookup(_)
            | Action::ReadBatch(_)
            | Action::Plead(_)
            | Action::AnswerNow { .. } => Some(action),
            Action::Withdraw(txn) => {
                self.withdraw(&[txn]);
                None
            }
            effect => self.effect(effect),
        }
    }
}

/// The shipped [`Gate`].
#[derive(Debug, Default)]
pub struct Outbox {
    /// Effects with the sequence number that must be durable before each.
    held: VecDeque<(u64, Action)>,
    /// The last record appended, and the last one known durable.
    appended: u64,
    durable: u64,
    /// The last record of each transaction that has one not durable yet.
    pending: FastMap<TxnId, u64>,
}

impl Outbox {
    /// A gate for a journal whose records are durable once appended (memory or no journal): nothing is
    /// ever held.
    pub fn durable_on_append() -> Outbox {
        Outbox {
            durable: u64::MAX,
            ..Outbox::default()
        }
    }
}

impl Gate for Outbox {
    fn appended(&mut self, seq: u64, txn: TxnId) {
        self.appended = seq;
        if seq > self.durable {
            self.pending.insert(txn, seq);
        }
    }

    fn effect(&mut self, effect: Action) -> Option<Action> {
        // Behind a held effect, even one whose record is durable by now: effects leave in order.
        if self.held.is_empty() && self.appended <= self.durable {
            return Some(effect);
        }
        self.held.push_back((self.appended, effect));
        None
    }

    fn repeat(&mut self, txn: TxnId, answer: Action) -> Option<Action> {
        match self.pending.get(&txn) {
            Some(&needs) if needs > self.durable => {
                self.held.push_back((needs, answer));
                None
            }
            _ => Some(answer),
        }
    }

    fn durable(&mut self, seq: u64, released: &mut Vec<Action>) {
        self.durable = self.durable.max(seq);
        let durable = self.durable;
        self.pending.retain(|_, &mut last| last > durable);
        while let Some(&(needs, _)) = self.held.front()
            && needs <= self.durable
        {
            if let Some((_, effect)) = self.held.pop_front() {
                released.push(effect);
            }
        }
    }

    fn withdraw(&mut self, txns: &[TxnId]) {
        if txns.is_empty() {
            return;
        }
        self.held.retain(|(_, effect)| match effect {
            Action::Send { txn: Some(t), .. } => !txns.contains(t),
            _ => true,
        });
    }

    fn held(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::event::{LinkId, TxnId};
    use crate::journal::Step;

    fn record() -> Action {
        Action::Journal(Record {
            txn: TxnId(1),
            at: UNIX_EPOCH,
            step: Step::TimedOut,
        })
    }

    fn close(n: u32) -> Action {
        Action::CloseLink(LinkId(n))
    }

    fn link(a: &Action) -> u32 {
        match a {
            Action::CloseLink(l) => l.0,
            other => panic!("not an effect of this test: {other:?}"),
        }
    }

    /// A journal that numbers the records appended to it.
    fn journal() -> impl FnMut(Record) -> u64 {
        let mut seq = 0;
        move |_| {
            seq += 1;
            seq
        }
    }

    #[test]
    fn an_effect_waits_for_every_record_before_it_and_effects_leave_in_order() {
        let mut gate = Outbox::default();
        let mut append = journal();
        assert!(
            gate.admit(close(0), &mut append).is_some(),
            "nothing to wait for"
        );
        assert!(gate.admit(record(), &mut append).is_none());
        assert!(
            gate.admit(close(1), &mut append).is_none(),
            "record 1 not durable"
        );
        assert!(gate.admit(record(), &mut append).is_none());
        assert!(gate.admit(close(2), &mut append).is_none());
        assert_eq!(gate.held(), 2);
        let mut released = Vec::new();
        gate.durable(1, &mut released);
        assert_eq!(released.iter().map(link).collect::<Vec<_>>(), [1]);
        // Record 2 durable: effect 2 goes, and a new effect with nothing new before it goes at once.
        released.clear();
        gate.durable(2, &mut released);
        assert_eq!(released.iter().map(link).collect::<Vec<_>>(), [2]);
        assert!(gate.admit(close(3), &mut append).is_some());
        assert_eq!(gate.held(), 0);
    }

    #[test]
    fn an_answer_that_needs_no_record_passes_held_effects() {
        let mut gate = Outbox::default();
        let mut append = journal();
        assert!(gate.admit(record(), &mut append).is_none());
        assert!(gate.admit(close(0), &mut append).is_none());
        let spec = dialects::builtin("iso87ascii").unwrap();
        let msg = iso8583::Message::new(spec, iso8583::Mti::new(*b"0210").unwrap());
        let now = Action::AnswerNow {
            conn: crate::event::ConnId(1),
            msg,
            repeats: None,
        };
        assert!(gate.admit(now, &mut append).is_some());
        assert_eq!(gate.held(), 1, "the held effect still waits");
    }

    #[test]
    fn a_repeated_answer_waits_for_its_own_transactions_records_only() {
        let mut gate = Outbox::default();
        let mut append = journal();
        let spec = dialects::builtin("iso87ascii").unwrap();
        let repeat = |txn| Action::AnswerNow {
            conn: crate::event::ConnId(1),
            msg: iso8583::Message::new(spec, iso8583::Mti::new(*b"0210").unwrap()),
            repeats: Some(TxnId(txn)),
        };
        let of = |txn| {
            Action::Journal(Record {
                txn: TxnId(txn),
                at: UNIX_EPOCH,
                step: Step::TimedOut,
            })
        };
        assert!(gate.admit(of(1), &mut append).is_none());
        let mut released = Vec::new();
        gate.durable(1, &mut released);
        // Transaction 2's records are not durable (a commit the outage holds); 1's are.
        assert!(gate.admit(of(2), &mut append).is_none());
        assert!(gate.admit(close(0), &mut append).is_none());
        assert!(gate.admit(repeat(1), &mut append).is_some(), "1 is durable");
        assert!(gate.admit(repeat(2), &mut append).is_none(), "2 is not");
        assert!(
            gate.admit(repeat(3), &mut append).is_some(),
            "3 has no record"
        );
        gate.durable(2, &mut released);
        assert_eq!(
            released.len(),
            2,
            "the close, then 2's repeat: {released:?}"
        );
    }

    #[test]
    fn a_withdrawn_forward_never_leaves_and_the_rest_still_do() {
        let spec = dialects::builtin("iso87ascii").unwrap();
        let send = |txn: u64| Action::Send {
            link: LinkId(0),
            txn: Some(TxnId(txn)),
            msg: iso8583::Message::new(spec, iso8583::Mti::new(*b"0200").unwrap()),
        };
        let sent = |a: &Action| match a {
            Action::Send { txn: Some(t), .. } => t.0,
            other => panic!("not a forward: {other:?}"),
        };
        let mut gate = Outbox::default();
        let mut append = journal();
        assert!(gate.admit(record(), &mut append).is_none());
        for txn in [1, 2, 3] {
            assert!(gate.admit(send(txn), &mut append).is_none());
        }
        gate.withdraw(&[TxnId(2)]);
        // The engine's own withdrawal goes through the gate, like every action.
        assert!(
            gate.admit(Action::Withdraw(TxnId(3)), &mut append)
                .is_none()
        );
        let mut released = Vec::new();
        gate.durable(1, &mut released);
        assert_eq!(released.iter().map(sent).collect::<Vec<_>>(), [1]);
        assert_eq!(gate.held(), 0);
    }

    #[test]
    fn a_journal_durable_on_append_holds_nothing() {
        let mut gate = Outbox::durable_on_append();
        let mut append = journal();
        assert!(gate.admit(record(), &mut append).is_none());
        assert!(gate.admit(close(0), &mut append).is_some());
    }
}
