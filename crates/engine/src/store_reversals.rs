//! Reversals the shared store decides (cluster mode): a terminal's reversal of an original this node
//! does not hold in memory, looked up in the store and reversed from the holder's records; and the
//! switch's own reversal, admitted in the terminal's name, of a request it refused RC 91 before the
//! store said whose its key is.

use std::collections::BTreeMap;
use std::time::{Instant, SystemTime};

use iso8583::{Message, Mti};
use serde::{Deserialize, Serialize};

use crate::claims::{Claim, Holder, Purpose};
use crate::engine::{Engine, Request};
use crate::event::{Action, ConnId, Now, TimerId, TxnId};
use crate::idempotency::{Key, Lookup, State, fingerprint};
use crate::journal::{Received, Record, Step};
use crate::recovery::Trail;

/// A reversal the switch admitted in a terminal's name (see [`Engine::reverse_unknowing`]), named by
/// the key of the request it undoes. No terminal repeats it, and until its outcome is durable only
/// this node's memory holds it: so the shell keeps each plea from [`Action::Plead`] to
/// [`Action::PleaSettled`], and a node that ends in between (fenced, or at the end of a shutdown)
/// leaves the pleas it holds in the store, where another node takes each one ([`Event::Plea`]) and
/// reverses whatever holds the key, as this node would have.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Plea {
    pub terminal: String,
    pub merchant: String,
    pub stan: u32,
    /// MMDD, as the request was keyed.
    pub date: u16,
    /// When the terminal was told 91: what holds the key then is reversed, not a transaction received
    /// after it (a retransmit the terminal sent because the 91 never reached it, whose own answer is
    /// what the terminal hears).
    pub refused_at: SystemTime,
}

impl Engine {
    /// A terminal's reversal whose original is not in this node's memory: the store is asked who holds
    /// each key the original may have (`originals`: its STAN and date), and the holder's records decide
    /// what is reversed. The reversal is answered once that is known.
    pub(crate) fn look_up_original(
        &mut self,
        now: Now,
        txn: TxnId,
        req: Request,
        originals: [(u32, u16); 2],
        out: &mut Vec<Action>,
    ) {
        self.look_up_original_at(now, now.mono, txn, req, originals, out);
    }

    /// [`Engine::look_up_original`], with the store asked first `at` (now, or later).
    fn look_up_original_at(
        &mut self,
        now: Now,
        at: Instant,
        txn: TxnId,
        req: Request,
        originals: [(u32, u16); 2],
        out: &mut Vec<Action>,
    ) {
        let received = self.received(&req.msg, &req.key, 0);
        let mut lookups: Vec<Claim> = Vec::new();
        for (stan, date) in originals {
            let claim = Claim {
                stan,
                date,
                reversal: false,
                ..Claim::of(txn, &received)
            };
            if !lookups.contains(&claim) {
                lookups.push(claim);
            }
        }
        lookups.reverse();
        let Some(first) = lookups.pop() else {
            return;
        };
        let purpose = Purpose::Reverse { lookups };
        if at > now.mono {
            return self.wait_for_store_until(at, txn, purpose, req, first);
        }
        out.push(Action::Lookup(first.clone()));
        self.wait_for_store(now, txn, purpose, req, first);
    }

    /// `refused` was told RC 91 before the store said whose its key is: the store was unreachable, or
    /// did not answer in time. Another node may hold that key with an approval it made durable and
    /// could not deliver (its terminal gave up waiting and retransmitted here), and this 91 may be the
    /// terminal's last word on it: so whatever holds the key is reversed, as the terminal's own
    /// reversal would have it, under a reversal the switch admits for the terminal, unless the
    /// terminal is heard of the key again. The 91 itself may be lost on its way (the connection drops
    /// as it is written), and the terminal then asks again, here or on another node, and hears what
    /// that node answers. So the store is asked only once the terminal's patience is over
    /// ([`crate::Config::terminal_patience`]), and its records decide: never this node's memory, which
    /// knows neither the other nodes' answers nor its own records' times. A reversal is never given up
    /// for a slow store. An advice told 91 is repeated by its terminal until it is accepted: nothing to
    /// undo.
    pub(crate) fn reverse_unknowing(
        &mut self,
        now: Now,
        refused: impl IntoIterator<Item = Message>,
        out: &mut Vec<Action>,
    ) {
        for request in to_undo(self.config.shared_store, refused) {
            self.reverse_unknowing_one(now, request, out);
        }
    }

    /// The same refusals as [`Engine::reverse_unknowing`]'s, when the node is ending (a shutdown's
    /// grace period is over): the reversals are not admitted here, where nothing more would be looked
    /// up, but left as pleas for the other nodes to make.
    pub(crate) fn plead_for(
        &mut self,
        now: Now,
        refused: impl IntoIterator<Item = Message>,
        out: &mut Vec<Action>,
    ) {
        for request in to_undo(self.config.shared_store, refused) {
            if let Some((_, _, plea)) = self.plea_of(now, request) {
                out.push(Action::Plead(plea));
            }
        }
    }

    /// A refused request's reversal in its terminal's name: its key, the message, and its plea.
    fn plea_of(&self, now: Now, mut reversal: Message) -> Option<(Key, Message, Plea)> {
        reversal.set_mti(Mti::REVERSAL);
        let key = self.key(now, &reversal)?;
        let text = |n| reversal.get(n).map(crate::fields::text).unwrap_or_default();
        let plea = Plea {
            terminal: text(41).into(),
            merchant: text(42).into(),
            stan: key.stan,
            date: key.date,
            refused_at: now.wall,
        };
        Some((key, reversal, plea))
    }

    fn reverse_unknowing_one(&mut self, now: Now, request: Message, out: &mut Vec<Action>) {
        let Some((key, reversal, plea)) = self.plea_of(now, request) else {
            return;
        };
        if self.reverse_for_terminal(now, key, reversal, plea, out) {
            tracing::warn!(
                "told 91 before the store said whose the key is: whatever holds it is reversed"
            );
            self.stats.refused_unknowing += 1;
        }
    }

    /// A [`Plea`] another node left in the store: this node reverses whatever holds its key, as that
    /// node would have. A plea whose key this node acts on already is settled as soon as what this
    /// node recorded of it is durable (its terminal's own reversal, another node's plea for the same
    /// key), or held on if it is the very plea this node waits with (taken before).
    pub(crate) fn on_plea(&mut self, now: Now, plea: Plea, out: &mut Vec<Action>) {
        let keyed =
            (self.carrier(&plea)).and_then(|reversal| Some((self.key(now, &reversal)?, reversal)));
        let taken = keyed.is_some_and(|(key, reversal)| {
            self.reverse_for_terminal(now, key, reversal, plea.clone(), out)
        });
        // Settled, it would be deleted from the store, where this node holds it while it waits.
        if !taken && self.pleas.values().any(|p| *p == plea) {
            return out.push(Action::Plead(plea));
        }
        if taken {
            tracing::warn!(
                terminal = plea.terminal,
                stan = plea.stan,
                "a reversal another node admitted in a terminal's name is taken on: whatever holds the key is reversed"
            );
            self.stats.pleas_taken += 1;
        } else {
            out.push(Action::PleaSettled(plea));
        }
    }

    /// A terminal's own reversal under the key of one the switch admitted in its name, still waiting
    /// for the store: the terminal says itself what it wants, so the plea is dropped (the terminal
    /// repeats its reversal until it is answered, and an approval it heard after the 91 is reversed
    /// too) and the store is asked now. Whether there was one: `conn` then waits for its answer.
    pub(crate) fn plea_overtaken(
        &mut self,
        now: Now,
        key: &Key,
        conn: ConnId,
        out: &mut Vec<Action>,
    ) -> bool {
        let Some(txn) = self.plea_waiting(key) else {
            return false;
        };
        if !self.claims.join(txn, conn) {
            return false;
        }
        if let Some(plea) = self.pleas.remove(&txn) {
            out.push(Action::PleaSettled(plea));
        }
        self.stats.duplicates_joined += 1;
        Self::journal(now, txn, Step::Joined, out);
        self.arm(TimerId::Claim(txn), now.mono);
        true
    }

    /// The reversal in a terminal's name under `key` still waiting for the store, if there is one.
    fn plea_waiting(&self, key: &Key) -> Option<TxnId> {
        let in_flight = |state: &mut State<_>, _| match state {
            State::InFlight(txn) => Some(*txn),
            State::Done(_) => None,
        };
        let txn = self.idempotency.with(key, in_flight).flatten()?;
        self.pleas.contains_key(&txn).then_some(txn)
    }

    /// Another 91 under the key of the plea `txn` waits with (a retransmit refused too, here or on
    /// another node): the later one is the terminal's last word, so the plea takes its time, and
    /// waits out the terminal's patience from it unless the store was asked already.
    fn refused_again(&mut self, now: Now, txn: TxnId, plea: &Plea, out: &mut Vec<Action>) {
        let Some(waiting) = self.pleas.get_mut(&txn) else {
            return;
        };
        if plea.refused_at <= waiting.refused_at {
            return;
        }
        // Settled, the earlier one leaves the store's copy alone: it holds the later 91.
        out.push(Action::PleaSettled(waiting.clone()));
        waiting.refused_at = plea.refused_at;
        out.push(Action::Plead(waiting.clone()));
        let patience = self.patience_left(now, plea);
        if self.claims.put_off(txn, now.mono, now.mono + patience) {
            self.arm(TimerId::Claim(txn), now.mono + patience);
        }
    }

    /// How long `plea`'s terminal may still ask again (see [`crate::Config::terminal_patience`]).
    fn patience_left(&self, now: Now, plea: &Plea) -> std::time::Duration {
        (plea.refused_at + self.config.terminal_patience)
            .duration_since(now.wall)
            .unwrap_or_default()
    }

    /// A message that carries a plea's key, in the dialect of the first issuer (any dialect keys a
    /// message by the same fields). It stands for the terminal's reversal in the records, and is never
    /// sent: no terminal waits for its answer, and the issuer gets a reversal rebuilt from the
    /// holder's records. `None` without an issuer: there is nothing to reverse anywhere.
    fn carrier(&self, plea: &Plea) -> Option<Message> {
        let mut msg = Message::new(self.config.issuers.first()?.spec, Mti::REVERSAL);
        let fields = [
            (11, format!("{:06}", plea.stan)),
            (13, format!("{:04}", plea.date)),
            (41, plea.terminal.clone()),
            (42, plea.merchant.clone()),
        ];
        for (n, value) in fields {
            msg.set(n, &value).ok()?;
        }
        Some(msg)
    }

    /// Admits `reversal`, the switch's in a terminal's name, unless one under its key is acting on it
    /// already; its plea is the shell's to keep until the reversal is settled ([`Action::Plead`]).
    /// Whether it was admitted. The store is asked about the key once the terminal's patience after
    /// the 91 is over (see [`Engine::reverse_unknowing`]), and [`Engine::reverse_held`] decides.
    fn reverse_for_terminal(
        &mut self,
        now: Now,
        key: Key,
        reversal: Message,
        plea: Plea,
        out: &mut Vec<Action>,
    ) -> bool {
        if let Some(waiting) = self.plea_waiting(&key) {
            self.refused_again(now, waiting, &plea, out);
            return false;
        }
        let txn = self.new_txn();
        let _txn = crate::engine::span(txn);
        let fingerprint = fingerprint(&reversal, &self.config.card_key);
        // A reversal of the terminal's own under the same key is acting on it already.
        if !matches!(
            self.idempotency.check(key, fingerprint, txn, now.mono),
            Ok(Lookup::New)
        ) {
            return false;
        }
        let patience = self.patience_left(now, &plea);
        out.push(Action::Plead(plea.clone()));
        self.pleas.insert(txn, plea);
        let req = Request {
            key,
            msg: reversal,
            waiters: Vec::new(),
        };
        let received = self.received(&req.msg, &key, fingerprint);
        Self::journal(now, txn, Step::Received(received), out);
        let (at, original) = (now.mono + patience, [(key.stan, key.date); 2]);
        self.look_up_original_at(now, at, txn, req, original, out);
        true
    }

    /// A terminal's reversal of `holder`'s transaction (another node's, or this node's from before a
    /// restart): if the issuer may hold a debit for it, its recorded request is reversed, as this
    /// transaction's, after a copy of the holder's forward record so that a restart resumes it.
    pub(crate) fn reverse_held(
        &mut self,
        now: Now,
        txn: TxnId,
        holder: Option<Holder>,
        reversal: &Message,
        out: &mut Vec<Action>,
    ) {
        let Some(holder) = holder else {
            return;
        };
        // The switch's own reversal in a terminal's name undoes what the terminal's last word, that
        // 91, left standing: nothing, if the terminal was heard of the key after it.
        if let Some(plea) = self.pleas.get(&txn)
            && heard_after(plea, &holder)
        {
            return tracing::info!(
                holder = ?holder.txn,
                "the terminal heard of the key after it was told 91: nothing to reverse"
            );
        }
        let forward = holder
            .records
            .iter()
            .find(|r| matches!(r.step, Step::Forwarded { .. }))
            .cloned();
        let trail = Trail::of(holder.records);
        let stands = trail.may_be_debited(&self.config) && !trail.reversing();
        let (Some(mut forward), Some((_, amended)), true) = (forward, trail.forward(), stands)
        else {
            return;
        };
        let Step::Forwarded {
            issuer, original, ..
        } = &mut forward.step
        else {
            return;
        };
        // The copy names what stands at the issuer (the amount of a partial approval), so that a
        // restart of this node reverses the same.
        *original = amended.clone();
        let Some(index) = self.config.issuers.iter().position(|i| i.name == *issuer) else {
            return tracing::error!(
                issuer = issuer.as_str(),
                "issuer no longer configured; needs manual action"
            );
        };
        let rebuilt = self.recorded_original(original, index);
        let adopted = Step::Adopted {
            node: holder.node,
            txn: holder.txn,
        };
        Self::journal(now, txn, adopted, out);
        out.push(Action::Journal(Record { txn, ..forward }));
        match rebuilt {
            Ok(msg) => self.queue_terminal_reversal(now, txn, msg, index, reversal, out),
            Err(error) => {
                tracing::error!(%error, "recorded request cannot be rebuilt for its reversal; needs manual action")
            }
        }
    }
}

/// Whether the terminal of `plea` was heard of `holder`'s key after it was told 91: an attempt of the
/// request received after it (the terminal never took the 91, and asked again; what that attempt gets
/// is what it hears), whether it was a transaction of its own, joined one in flight, or was replayed
/// an approval, in the holder's records or another attempt's on any node. An answer told after the 91
/// to an attempt received before it proves nothing: its connection may be long gone (a node paused
/// with the issuer's answer waiting, say).
fn heard_after(plea: &Plea, holder: &Holder) -> bool {
    let after_the_91 = |r: &Record| {
        r.at > plea.refused_at
            && match &r.step {
                Step::Received(_) | Step::Joined => true,
                Step::Replayed { rc } => rc.is_approval(),
                _ => false,
            }
    };
    let own: Vec<&Record> = holder.records.iter().collect();
    let Some(request) = received_in(&own) else {
        return false;
    };
    // The same request: its terminal, merchant, STAN and date, and its message class (not the
    // switch's reversal in the terminal's name, which has them all but the class).
    let same = |r: &Received| {
        (r.terminal == request.terminal && r.merchant == request.merchant)
            && (r.stan, r.date) == (request.stan, request.date)
            && r.mti.class() == request.mti.class()
    };
    let mut attempts: BTreeMap<(&str, TxnId), Vec<&Record>> = BTreeMap::new();
    for (node, record) in &holder.others {
        let attempt = attempts.entry((node.as_str(), record.txn)).or_default();
        attempt.push(record);
    }
    attempts.insert((holder.node.as_str(), holder.txn), own);
    (attempts.values())
        .filter(|records| received_in(records).is_some_and(same))
        .any(|records| records.iter().any(|r| after_the_91(r)))
}

/// The request an attempt's records were received with.
fn received_in<'a>(records: &[&'a Record]) -> Option<&'a Received> {
    records.iter().find_map(|r| match &r.step {
        Step::Received(received) => Some(received),
        _ => None,
    })
}

/// Of `refused`, those a reversal in the terminal's name is for: requests (an advice told 91 is
/// repeated by its terminal until it is accepted), and only where a shared store may hold their keys
/// elsewhere.
pub(crate) fn to_undo(
    shared_store: bool,
    refused: impl IntoIterator<Item = Message>,
) -> impl Iterator<Item = Message> {
    (refused.into_iter()).filter(move |r| shared_store && r.mti().function() != 2)
}
