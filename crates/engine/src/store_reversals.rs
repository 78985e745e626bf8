//! Reversals the shared store decides (cluster mode): a terminal's reversal of an original this node
//! does not hold in memory, looked up in the store and reversed from the holder's records; and the
//! switch's own reversal, admitted in the terminal's name, of a request it refused RC 91 before the
//! store said whose its key is.

use iso8583::{Message, Mti};

use crate::claims::{Claim, Holder, Purpose};
use crate::engine::{Engine, Request};
use crate::event::{Action, Now, TxnId};
use crate::idempotency::{Lookup, fingerprint};
use crate::journal::{Record, Step};
use crate::recovery::Trail;

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
        if !self.config.shared_store {
            return;
        }
        for request in refused {
            if request.mti().function() != 2 {
                self.reverse_unknowing_one(now, request, out);
            }
        }
    }

    fn reverse_unknowing_one(&mut self, now: Now, mut reversal: Message, out: &mut Vec<Action>) {
        reversal.set_mti(Mti::REVERSAL);
        let Some(key) = self.key(now, &reversal) else {
            return;
        };
        let txn = self.new_txn();
        let _txn = crate::engine::span(txn);
        let fingerprint = fingerprint(&reversal, &self.config.card_key);
        // A reversal of the terminal's own under the same key is acting on it already.
        if !matches!(
            self.idempotency.check(key, fingerprint, txn, now.mono),
            Ok(Lookup::New)
        ) {
            return;
        }
        tracing::warn!(
            "told 91 before the store said whose the key is: whatever holds it is reversed"
        );
        self.stats.refused_unknowing += 1;
        let req = Request {
            key,
            msg: reversal,
            waiters: Vec::new(),
        };
        self.act_on_reversal(now, txn, req, fingerprint, out);
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
