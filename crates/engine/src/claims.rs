//! Cluster mode: a new request's idempotency key is claimed in the store every node shares before the
//! request is forwarded; the claim is committed with the request's first record. The in-memory table
//! still answers this node's own retransmits. A claim lost to another transaction turns the request into
//! a replay of that transaction's answer, a wait for it, or RC 94 when the holder's request differs; it
//! is never forwarded twice. The wait lasts as long as the holder is in flight on a node not fenced
//! (its own response timer ends it, its restart reverses it, or its node is taken over); RC 91 comes at
//! the deadline only for a claim the store has not answered and for a holder that moves no money, since
//! a 91 while the holder may still make an approval durable would contradict it. A terminal's reversal
//! is never refused for a slow store.
//!
//! The holder's state is read from its records, folded as recovery folds them, so a replay from another
//! node gives what a replay on the holder's node would.
//!
//! A request this node can route now does not wait for its claim: it is forwarded in the same commit,
//! provisionally, so that a purchase waits for two commits (claim with forward, then answer), not
//! three. The store keeps that forward only if the commit wins the claim, and [`withdrawn`] is what it
//! keeps otherwise; the write-ahead gate withdraws the held message ([`crate::Gate::withdraw`]), so a
//! forward whose key is another transaction's never leaves. The engine then takes the transaction
//! back and goes on as a request that waited for its claim. An advice, or a request that would be
//! refused, still waits: what its terminal is told must not come before the store says whose the key
//! is. For the same reason a provisional forward is not timed out before its claim is settled, and a
//! terminal's reversal of it withdraws it and is acted on as a reversal of whatever holds the key.
//!
//! The reversals the store decides (an original another node holds, and the switch's own after a 91
//! told without the store's word) are in `store_reversals.rs`.

use std::time::{Duration, Instant};

use compact_str::CompactString;
use iso8583::{Message, ResponseCode};

use crate::FastMap;
use crate::engine::{Engine, Request};
use crate::event::{Action, ConnId, Now, TimerId, TxnId};
use crate::idempotency::Done;
use crate::journal::{Received, Record, Step};
use crate::recovery::Trail;
use crate::store_reversals::to_undo;

/// How often a request whose key another node holds in flight asks again about it.
const POLL: Duration = Duration::from_millis(100);

/// How late a deadline may be found passed before the process counts itself stopped meanwhile
/// (paused, starved): far beyond a loaded node's scheduling delays, well within a pause that outlasts
/// a lease. A claim's timer (`on_claim_timer`) and the cluster journal's database calls go by it.
pub const STALLED: Duration = Duration::from_millis(500);

/// An idempotency key to claim, and the claim's owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub txn: TxnId,
    pub terminal: CompactString,
    pub merchant: CompactString,
    pub stan: u32,
    /// MMDD.
    pub date: u16,
    pub reversal: bool,
    pub fingerprint: u64,
    /// Take the key over from this transaction (node, txn), which ended without being forwarded; lost
    /// if it is no longer that transaction's.
    pub replacing: Option<(CompactString, TxnId)>,
}

impl Claim {
    pub(crate) fn of(txn: TxnId, r: &Received) -> Claim {
        Claim {
            txn,
            terminal: r.terminal.clone(),
            merchant: r.merchant.clone(),
            stan: r.stan,
            date: r.date,
            reversal: r.mti.class() == iso8583::Class::REVERSAL,
            fingerprint: r.fingerprint,
            replacing: None,
        }
    }
}

/// What the store keeps in place of `record`, committed with `claims`, when the claim of its
/// transaction is lost: a forward recorded in the same commit as its transaction's claim is the
/// provisional one (a request otherwise forwards only once its claim was won, in a later commit), and
/// gives way to [`Step::Withdrawn`]. `None`: the record stands whatever the claims.
pub fn withdrawn(record: &Record, claims: &[Claim]) -> Option<Record> {
    provisional(record, claims).then(|| Record {
        txn: record.txn,
        at: record.at,
        step: Step::Withdrawn,
    })
}

/// Whether `record`, committed with `claims`, is a provisional forward: one that [`withdrawn`] replaces
/// when its transaction's claim is lost.
pub fn provisional(record: &Record, claims: &[Claim]) -> bool {
    matches!(record.step, Step::Forwarded { .. }) && claims.iter().any(|c| c.txn == record.txn)
}

/// Who holds a key, and what that transaction's records say.
#[derive(Debug, Clone)]
pub struct Holder {
    pub node: CompactString,
    pub txn: TxnId,
    pub fingerprint: u64,
    /// The holder's records of the transaction, oldest first.
    pub records: Vec<Record>,
    /// The holder can write nothing more for it (its node's work was taken over, or it is this node's
    /// own from before a restart): what the records say is final.
    pub fenced: bool,
    /// A lookup's answer only (empty for a lost claim): every node's records of the other transactions
    /// at the key's terminal and STAN, each with its node, by transaction and oldest first. The other
    /// attempts of the same request are among them: where else its terminal asked for the key, and
    /// what it heard there.
    pub others: Vec<(CompactString, Record)>,
}

/// What a request waits for the store for.
#[derive(Debug)]
pub(crate) enum Purpose {
    /// Its claim: a new request forwarded once won.
    Forward,
    /// The original a terminal's reversal names, held by another node: one lookup per candidate key,
    /// answered in turn (the first holder found is the original).
    Reverse { lookups: Vec<Claim> },
}

/// A request waiting for the store.
#[derive(Debug)]
struct Claiming {
    purpose: Purpose,
    req: Request,
    claim: Claim,
    /// When the request is answered RC 91 if its claim is still not settled, unless `held`.
    deadline: Instant,
    /// The store's last answer: another node's transaction holds the key, in flight, may still move
    /// money, and that node is not fenced. Such a request waits past its deadline: the holder's own
    /// response timer settles it, its restart reverses it, or its node is taken over, whichever comes
    /// first. A 91 before then could contradict an approval the holder is still making durable (a slow
    /// commit of that node).
    held: bool,
    /// Its timer was found late once (see `on_claim_timer`): the next time it gives up.
    stalled: bool,
}

impl Claiming {
    /// Whether the request is answered 91 now rather than asking the store again: past its deadline,
    /// unless its key is `held` in flight elsewhere, or it is a terminal's reversal, which is never
    /// refused for a slow store (its terminal may stop repeating it, and whatever it takes back would
    /// stand).
    fn gives_up(&self, now: Now) -> bool {
        let reversal = matches!(self.purpose, Purpose::Reverse { .. });
        now.mono >= self.deadline && !self.held && !reversal
    }

    /// When to ask the store again about a key held in flight: after [`POLL`], and at the deadline at
    /// the latest until it has passed.
    fn next_ask(&self, now: Now) -> Instant {
        let poll = now.mono + POLL;
        if now.mono < self.deadline {
            poll.min(self.deadline)
        } else {
            poll
        }
    }
}

/// Requests waiting for their claims.
#[derive(Debug, Default)]
pub(crate) struct Claims {
    waiting: FastMap<TxnId, Claiming>,
}

impl Claims {
    /// A retransmit joins `txn` if it waits for its claim.
    pub(crate) fn join(&mut self, txn: TxnId, conn: ConnId) -> bool {
        self.waiting
            .get_mut(&txn)
            .map(|c| c.req.waiters.push(conn))
            .is_some()
    }

    /// Asks the store about `txn`'s key no sooner than `at`, if it was not asked yet (a reversal in a
    /// terminal's name asks first at its deadline). Whether it was put off.
    pub(crate) fn put_off(&mut self, txn: TxnId, now: Instant, at: Instant) -> bool {
        match self.waiting.get_mut(&txn) {
            Some(c) if now < c.deadline && c.deadline < at => {
                c.deadline = at;
                true
            }
            _ => false,
        }
    }

    /// Forgets `conn` as a waiter; returns the transactions it waited for.
    pub(crate) fn closed(&mut self, conn: ConnId) -> Vec<TxnId> {
        (self.waiting.iter_mut())
            .filter_map(|(&txn, c)| c.req.left(conn).then_some(txn))
            .collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Whether `txn` waits for the store.
    pub(crate) fn waits(&self, txn: TxnId) -> bool {
        self.waiting.contains_key(&txn)
    }

    pub(crate) fn lowest_txn(&self) -> Option<TxnId> {
        self.waiting.keys().min().copied()
    }

    /// Requests waiting for their claims to be forwarded (not reversals looking up their originals),
    /// in transaction order.
    fn forwards(&self) -> Vec<TxnId> {
        let mut txns: Vec<TxnId> = (self.waiting.iter())
            .filter(|(_, c)| matches!(c.purpose, Purpose::Forward))
            .map(|(&txn, _)| txn)
            .collect();
        txns.sort_unstable();
        txns
    }
}

/// What the holder's records say a retransmit gets.
enum Verdict {
    /// What its terminal was told (RC 91 when it was forwarded and will never be told: it is being
    /// reversed, or nobody was left to tell).
    Replay(ResponseCode),
    /// Still in flight on a live node.
    Wait,
    /// It ended without being forwarded: the key may be taken over.
    Take,
}

fn verdict(trail: &Trail, fenced: bool) -> Verdict {
    match trail.told() {
        Some(rc) => Verdict::Replay(rc),
        // An advice is accepted once queued: the holder (or its taker) owes it to the issuer.
        None if trail.advice_queued() => Verdict::Replay(ResponseCode::APPROVED),
        None if trail.forwarded() && (fenced || trail.undeliverable || trail.reversing()) => {
            Verdict::Replay(ResponseCode::ISSUER_UNAVAILABLE)
        }
        None if trail.rejected || (fenced && !trail.forwarded()) => Verdict::Take,
        None => Verdict::Wait,
    }
}

impl Engine {
    /// Records a new request and claims its key. A request that can be routed now is forwarded
    /// provisionally in the same commit (see the module documentation); any other waits for the claim.
    pub(crate) fn claim_first(
        &mut self,
        now: Now,
        txn: TxnId,
        req: Request,
        received: Received,
        out: &mut Vec<Action>,
    ) {
        let claim = Claim::of(txn, &received);
        Self::journal(now, txn, Step::Received(received), out);
        out.push(Action::Claim(claim.clone()));
        // A request (not an advice) with a route and a link up to it.
        let request = req.msg.mti().function() != 2;
        let route = req.msg.pan().and_then(|pan| self.route(pan.expose()).ok());
        if let (true, Some(route)) = (request, route) {
            self.forward(now, txn, req, route, out);
            if let Some(t) = self.txns.get_mut(&txn) {
                t.claim = Some(claim);
            }
            return;
        }
        self.wait_for_store(now, txn, Purpose::Forward, req, claim);
    }

    /// The provisional forward of `txn` lost its claim: it never left (the gate withdrew it, the store
    /// kept `Withdrawn`), so the engine takes it back and `txn` waits for the store as a request that
    /// was never forwarded.
    fn take_back(&mut self, now: Now, txn: TxnId) {
        let Some(claim) = self.txns.get_mut(&txn).and_then(|t| t.claim.take()) else {
            return;
        };
        let Some(t) = self.txns.remove(&txn) else {
            return;
        };
        self.cancel(TimerId::Response(txn));
        self.links.request_answered(t.pending);
        self.links.release(t.pending);
        self.stats.forwarded = self.stats.forwarded.saturating_sub(1);
        self.wait_for_store(now, txn, Purpose::Forward, t.req, claim);
    }

    /// `txn` waits for the store's answer about `claim` (asked already), until the longest issuer
    /// timeout has passed.
    pub(crate) fn wait_for_store(
        &mut self,
        now: Now,
        txn: TxnId,
        purpose: Purpose,
        req: Request,
        claim: Claim,
    ) {
        let deadline = now.mono + self.claim_timeout();
        self.wait_for_store_until(deadline, txn, purpose, req, claim);
    }

    /// `txn` waits for the store's answer about `claim` until `deadline`; the claim timer asks it then
    /// if it was not asked already.
    pub(crate) fn wait_for_store_until(
        &mut self,
        deadline: Instant,
        txn: TxnId,
        purpose: Purpose,
        req: Request,
        claim: Claim,
    ) {
        self.arm(TimerId::Claim(txn), deadline);
        let waiting = Claiming {
            purpose,
            req,
            claim,
            deadline,
            held: false,
            stalled: false,
        };
        self.claims.waiting.insert(txn, waiting);
    }

    /// The longest an issuer may take: a claim is given up after as long.
    fn claim_timeout(&self) -> Duration {
        let timeouts = self.config.issuers.iter().map(|i| i.response_timeout);
        timeouts.max().unwrap_or(Duration::from_secs(1))
    }

    pub(crate) fn on_claimed(
        &mut self,
        now: Now,
        txn: TxnId,
        holder: Option<Holder>,
        out: &mut Vec<Action>,
    ) {
        if let Some(t) = self.txns.get_mut(&txn)
            && t.claim.is_some()
        {
            // Won: the provisional forward went out with the commit.
            if holder.is_none() {
                t.claim = None;
                return;
            }
            self.take_back(now, txn);
        }
        // Gone: given up before the store answered. Its key stays claimed by a transaction that ended
        // without being forwarded, which a later claim takes over.
        let Some(mut c) = self.claims.waiting.remove(&txn) else {
            return;
        };
        let _span = crate::engine::span(txn);
        if let Purpose::Reverse { lookups } = &mut c.purpose {
            return match (holder, lookups.pop()) {
                (None, Some(next)) => {
                    out.push(Action::Lookup(next.clone()));
                    c.claim = next;
                    self.claims.waiting.insert(txn, c);
                }
                (holder, _) => {
                    self.cancel(TimerId::Claim(txn));
                    self.reverse_held(now, txn, holder, &c.req.msg, out);
                    self.reversal_acted_on(now, txn, c.req, out);
                }
            };
        }
        let Some(holder) = holder else {
            self.cancel(TimerId::Claim(txn));
            return self.proceed(now, txn, c.req, out);
        };
        let held = Step::HeldElsewhere {
            node: holder.node.clone(),
            txn: holder.txn,
        };
        if holder.fingerprint != c.claim.fingerprint {
            self.stats.duplicates_rejected += 1;
            self.cancel(TimerId::Claim(txn));
            Self::journal(now, txn, held, out);
            self.idempotency.release(&c.req.key, txn);
            return self.refuse(
                now,
                txn,
                &c.req.waiters,
                &c.req.msg,
                ResponseCode::DUPLICATE,
                out,
            );
        }
        let trail = Trail::of(holder.records);
        match verdict(&trail, holder.fenced) {
            Verdict::Replay(rc) => {
                self.stats.duplicates_replayed += 1;
                self.cancel(TimerId::Claim(txn));
                let answer = trail.answer(holder.txn, rc);
                Self::journal(now, txn, held, out);
                Self::journal(now, txn, Step::Replayed { rc }, out);
                for &conn in &c.req.waiters {
                    let msg = self.replay(answer.clone(), &c.req.msg);
                    out.push(Action::Answer {
                        conn,
                        txn: Some(txn),
                        msg,
                    });
                }
                // An approval that stands may still be reversed by its terminal, here: the holder's
                // records know what to reverse, so the store is asked again (see `look_up_original`).
                if rc.is_approval() {
                    return self.idempotency.release(&c.req.key, txn);
                }
                let done = Done {
                    txn,
                    answer,
                    approved: None,
                };
                self.idempotency.complete(&c.req.key, done);
            }
            Verdict::Take => {
                c.held = false;
                c.claim.replacing = Some((holder.node, holder.txn));
                out.push(Action::Claim(c.claim.clone()));
                self.claims.waiting.insert(txn, c);
            }
            Verdict::Wait => {
                // A forward that cannot move money (a balance inquiry) may never settle where it is
                // held (a restart leaves nothing to reverse), and a 91 cannot contradict it.
                c.held = trail.forward().is_none() || trail.may_be_debited(&self.config);
                self.arm(TimerId::Claim(txn), c.next_ask(now));
                self.claims.waiting.insert(txn, c);
            }
        }
    }

    /// Time to ask again about a key held in flight elsewhere, or to give up.
    pub(crate) fn on_claim_timer(
        &mut self,
        now: Now,
        due: Instant,
        txn: TxnId,
        out: &mut Vec<Action>,
    ) {
        let Some(c) = self.claims.waiting.get_mut(&txn) else {
            return;
        };
        if !c.gives_up(now) {
            c.claim.replacing = None;
            // While the journal cannot write, the question asked last still waits in its commit:
            // asked again each poll, a long outage would pile up one more a poll for every reversal
            // waiting (the switch's own, for each request refused meanwhile, among them).
            if self.journal_writable {
                out.push(match c.purpose {
                    Purpose::Forward => Action::Claim(c.claim.clone()),
                    Purpose::Reverse { .. } => Action::Lookup(c.claim.clone()),
                });
            }
            // The store's answer re-arms the poll; failing one, the deadline, or past it the next poll.
            let at = if now.mono < c.deadline {
                c.deadline
            } else {
                now.mono + POLL
            };
            return self.arm(TimerId::Claim(txn), at);
        }
        // A timer this late means the node was stopped (paused, starved): what it knows of its
        // connections is stale (a balancer may have shut them meanwhile, and their terminals been
        // told what stands on another node), and a 91 told to a terminal gone would be undone in its
        // name. So it gives up a moment later, once the closes that came meanwhile are read: a 91
        // nobody hears needs no reversal.
        let late = now.mono.saturating_duration_since(due);
        if late > STALLED && !c.stalled {
            tracing::warn!(
                ?late,
                "this node was stopped past a claim's deadline: given up once its connections are read"
            );
            c.stalled = true;
            return self.arm(TimerId::Claim(txn), now.mono + POLL);
        }
        let refused = self.give_up_claim(now, txn, out);
        self.reverse_unknowing(now, refused, out);
    }

    /// Answers RC 91 to a request whose claim did not settle in time (or at the end of a shutdown's
    /// grace period, or when its terminal reversed it first). Gives the request back when the 91 was
    /// told to someone, without the store's word on its key (see [`Engine::reverse_unknowing`]): a
    /// request whose every connection has closed is told nothing, and its terminal's last word is
    /// whatever it got elsewhere.
    pub(crate) fn give_up_claim(
        &mut self,
        now: Now,
        txn: TxnId,
        out: &mut Vec<Action>,
    ) -> Option<Message> {
        let c = self.claims.waiting.remove(&txn)?;
        self.cancel(TimerId::Claim(txn));
        let told = (!c.req.waiters.is_empty()).then_some(c.req.msg.clone());
        // Undone in the terminal's name (see `reverse_unknowing`), the 91 is this key's answer here: a
        // retransmit sent before it reached the terminal (it waits behind its record) is answered the
        // same 91, after it, and never forwarded, so the terminal hears one answer under its STAN.
        let kept = to_undo(self.config.shared_store, told.clone())
            .next()
            .is_some();
        self.unavailable(now, txn, &c.req, kept, out);
        told
    }

    /// Refuses `req` with RC 91. Its key goes, so that the terminal's retry is admitted anew (what it
    /// waited for from the store, its claim or its batch, did not come), unless `kept`: then the 91 is
    /// the key's answer, replayed to its retransmits.
    pub(crate) fn unavailable(
        &mut self,
        now: Now,
        txn: TxnId,
        req: &Request,
        kept: bool,
        out: &mut Vec<Action>,
    ) {
        self.stats.unavailable += 1;
        let rc = ResponseCode::ISSUER_UNAVAILABLE;
        if kept {
            self.keep_refusal(txn, &req.key, rc);
        } else {
            self.idempotency.release(&req.key, txn);
        }
        self.refuse(now, txn, &req.waiters, &req.msg, rc, out);
    }

    /// The journal cannot write, or a shutdown's grace period is over: every forward still provisional
    /// is withdrawn. Gives back the requests refused.
    pub(crate) fn withdraw_provisional(&mut self, now: Now, out: &mut Vec<Action>) -> Vec<Message> {
        let mut txns: Vec<TxnId> = (self.txns.iter())
            .filter(|(_, t)| t.claim.is_some())
            .map(|(&txn, _)| txn)
            .collect();
        // In transaction order, not the hash map's: the same events give the same records.
        txns.sort_unstable();
        (txns.into_iter())
            .filter_map(|txn| self.withdraw(now, txn, out))
            .collect()
    }

    /// A request forwarded provisionally, or still waiting for its claim, will not be forwarded: a
    /// provisional forward is withdrawn (the gate still holds it behind its claim's commit, which may
    /// land later; the `Withdrawn` record after it says it never left), and the request is refused as
    /// one waiting for its claim is (and given back, as [`Engine::give_up_claim`] does).
    pub(crate) fn withdraw(
        &mut self,
        now: Now,
        txn: TxnId,
        out: &mut Vec<Action>,
    ) -> Option<Message> {
        if self.txns.get(&txn).is_some_and(|t| t.claim.is_some()) {
            Self::journal(now, txn, Step::Withdrawn, out);
            out.push(Action::Withdraw(txn));
            self.take_back(now, txn);
        }
        self.give_up_claim(now, txn, out)
    }

    /// Every request still waiting for its claim is given up. A reversal waiting for the store is
    /// not: it is never refused for a slow store, and the switch's own would be lost (nobody repeats
    /// it).
    /// Gives back the requests refused.
    pub(crate) fn give_up_claims(&mut self, now: Now, out: &mut Vec<Action>) -> Vec<Message> {
        let txns = self.claims.forwards();
        (txns.into_iter())
            .filter_map(|txn| self.give_up_claim(now, txn, out))
            .collect()
    }
}
