//! Reversals the shared store decides (cluster mode): a terminal's reversal of an original this node
//! does not hold in memory, looked up in the store and reversed from the holder's records; and the
//! switch's own reversal, admitted in the terminal's name, of a request it refused RC 91 before the
//! store said whose its key is.

use std::time::SystemTime;

use iso8583::{Message, Mti};
use serde::{Deserialize, Serialize};

use crate::claims::{Claim, Holder, Purpose};
use crate::engine::{Engine, Request};
use crate::event::{Action, Now, TxnId};
use crate::idempotency::{Key, Lookup, fingerprint};
use crate::journal::{Record, Step};
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
        out.push(Action::Lookup(first.clone()));
        let purpose = Purpose::Reverse { lookups };
        self.wait_for_store(now, txn, purpose, req, first);
    }

    /// `refused` was told RC 91 before the store said whose its key is: the store was unreachable, or
    /// did not answer in time. Another node may hold that key with an approval it made durable and
    /// could not deliver (its terminal gave up waiting and retransmitted here), and this 91 is now the
    /// terminal's last word on it: so whatever holds the key is reversed, as the terminal's own
    /// reversal would have it, under a reversal the switch admits for the terminal. Its lookup waits
    /// in the journal's next commit for the store, and a reversal is never given up for a slow store.
    /// An advice told 91 is repeated by its terminal until it is accepted: nothing to undo.
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
        if self.reverse_for_terminal(now, key, reversal, plea, false, out) {
            tracing::warn!(
                "told 91 before the store said whose the key is: whatever holds it is reversed"
            );
            self.stats.refused_unknowing += 1;
        }
    }

    /// A [`Plea`] another node left in the store: this node reverses whatever holds its key, as that
    /// node would have. A plea whose key this node acts on already (its terminal's own reversal, or
    /// the same plea taken before) is settled as soon as what this node recorded of it is durable.
    pub(crate) fn on_plea(&mut self, now: Now, plea: Plea, out: &mut Vec<Action>) {
        let keyed =
            (self.carrier(&plea)).and_then(|reversal| Some((self.key(now, &reversal)?, reversal)));
        let taken = keyed.is_some_and(|(key, reversal)| {
            self.reverse_for_terminal(now, key, reversal, plea.clone(), true, out)
        });
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
    /// Whether it was admitted. A plea taken on from another node (`taken_on`) is decided by the
    /// store's records, never this node's memory: what this node holds under the key may be a later
    /// attempt, and only the records tell when each was received.
    fn reverse_for_terminal(
        &mut self,
        now: Now,
        key: Key,
        reversal: Message,
        plea: Plea,
        taken_on: bool,
        out: &mut Vec<Action>,
    ) -> bool {
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
        out.push(Action::Plead(plea.clone()));
        self.pleas.insert(txn, plea);
        let req = Request {
            key,
            msg: reversal,
            waiters: Vec::new(),
        };
        if taken_on {
            let received = self.received(&req.msg, &key, fingerprint);
            Self::journal(now, txn, Step::Received(received), out);
            self.look_up_original(now, txn, req, [(key.stan, key.date); 2], out);
        } else {
            self.act_on_reversal(now, txn, req, fingerprint, out);
        }
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
        // 91, left standing: not an attempt received after it, nor an approval told or replayed to
        // the terminal after it (it asked again, elsewhere, and heard that instead).
        if let Some(plea) = self.pleas.get(&txn) {
            let after_the_91 = |r: &Record| {
                r.at > plea.refused_at
                    && match &r.step {
                        Step::Received(_) => true,
                        Step::Told { rc } | Step::Replayed { rc } => rc.is_approval(),
                        _ => false,
                    }
            };
            if holder.records.iter().any(after_the_91) {
                return tracing::info!(
                    holder = ?holder.txn,
                    "the terminal heard of the key after it was told 91: nothing to reverse"
                );
            }
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

/// Of `refused`, those a reversal in the terminal's name is for: requests (an advice told 91 is
/// repeated by its terminal until it is accepted), and only where a shared store may hold their keys
/// elsewhere.
fn to_undo(
    shared_store: bool,
    refused: impl IntoIterator<Item = Message>,
) -> impl Iterator<Item = Message> {
    (refused.into_iter()).filter(move |r| shared_store && r.mti().function() != 2)
}
