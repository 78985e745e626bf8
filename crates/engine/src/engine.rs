//! The engine's state and its event dispatch. It is made of owned parts, each with its own methods:
//! `links` (upstream links, what is outstanding on each, STANs), `saf` (reversals and advices owed),
//! `idempotency` (the duplicate table), `books` (the terminals' open batches) and `timers`. The rules
//! that use them live beside it: `admission` (every terminal message's key and duplicates), `terminal`
//! (what terminals send), `upstream` (what issuers send, links, timeouts), `reversal`, `advice`, `owed`
//! (the store-and-forward attempts both share) and `settlement`.

use std::time::Instant;

use iso8583::{Message, ResponseCode};

use crate::FastMap;
use crate::books::Books;
use crate::claims::{Claim, Claims};
use crate::config::Config;
use crate::event::{Action, ConnId, Event, LinkId, Now, TimerId, TxnId};
use crate::idempotency::{Key, Table};
use crate::journal::{Record, Step};
use crate::links::{Links, PendingKey};
use crate::reversal::Reversible;
use crate::routes::Routes;
use crate::saf::{Kind, Saf};
use crate::settlement::Reads;
use crate::stats::Stats;
use crate::store_reversals::Plea;
use crate::timers::Timers;

/// A terminal's request admitted as a transaction: forwarded (held in its [`Txn`]), waiting for the
/// store (cluster mode), queued (an advice), or refused.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) key: Key,
    /// As the terminal sent it (terminal dialect): answers are built from it.
    pub(crate) msg: Message,
    /// Terminal connections to answer: the request's own and those of retransmits that joined it
    /// (none for a reversal the switch admits in a terminal's name).
    pub(crate) waiters: Vec<ConnId>,
}

impl Request {
    /// Connection `conn` closed: it is no longer answered. Whether it was waiting for this request.
    pub(crate) fn left(&mut self, conn: ConnId) -> bool {
        let waited = self.waiters.contains(&conn);
        self.waiters.retain(|&c| c != conn);
        waited
    }
}

/// A request forwarded to an issuer and not yet answered or timed out.
#[derive(Debug)]
pub(crate) struct Txn {
    pub(crate) req: Request,
    /// As the issuer got it (issuer dialect): a reversal is built from it.
    pub(crate) forwarded: Message,
    pub(crate) issuer: usize,
    pub(crate) pending: PendingKey,
    /// The terminal reversed it while in flight: an approval is reversed as soon as it arrives.
    pub(crate) reverse_on_answer: bool,
    /// Cluster mode: forwarded in the same commit as this claim of its key, and provisional until the
    /// store answers it (see `claims.rs`).
    pub(crate) claim: Option<Claim>,
}

/// See the crate documentation.
#[derive(Debug)]
pub struct Engine {
    pub(crate) config: Config,
    pub(crate) routes: Routes,
    pub(crate) idempotency: Table<Reversible>,
    pub(crate) txns: FastMap<TxnId, Txn>,
    pub(crate) links: Links,
    pub(crate) saf: Saf,
    pub(crate) claims: Claims,
    /// The terminals' open batches, fed with every record this engine writes or recovers (not in
    /// cluster mode, where a settlement reads its batch from the shared store).
    pub(crate) books: Books,
    /// Cluster mode: settlement messages waiting for their batch from the store.
    pub(crate) reads: Reads,
    /// Whether the journal can make records durable (see [`Event::JournalWritable`]).
    pub(crate) journal_writable: bool,
    /// Cluster mode: the reversals this engine admitted in terminals' names, not settled yet.
    pub(crate) pleas: FastMap<TxnId, Plea>,
    timers: Timers,
    next_txn: u64,
    pub(crate) stats: Stats,
}

impl Engine {
    pub fn new(config: Config) -> Engine {
        let links = Links::new(
            config
                .issuers
                .iter()
                .enumerate()
                .flat_map(|(i, issuer)| std::iter::repeat_n(i, issuer.links)),
            config.stans,
        );
        Engine {
            routes: Routes::new(&config.routes, config.default_route),
            idempotency: Table::new(config.idempotency.window, config.idempotency.max_entries),
            txns: FastMap::default(),
            links,
            saf: Saf::default(),
            claims: Claims::default(),
            books: {
                let mut books = Books::open_batches();
                books.limit(config.idempotency.max_entries);
                books
            },
            reads: Reads::default(),
            journal_writable: true,
            pleas: FastMap::default(),
            timers: Timers::default(),
            next_txn: 0,
            stats: Stats::default(),
            config,
        }
    }

    /// Every link with the name of its issuer, in the order [`Config::issuers`] lists them.
    pub fn links(&self) -> impl Iterator<Item = (LinkId, &str)> {
        self.links
            .iter()
            .map(|(id, issuer)| (id, self.config.issuers[issuer].name.as_str()))
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Requests forwarded and awaiting their answer, or waiting for their claim (cluster mode).
    pub fn in_flight(&self) -> usize {
        self.txns.len() + self.claims.len() + self.reads.len()
    }

    /// What a shutdown waits for: what is in flight, but the reversals in terminals' names still
    /// waiting for the store (most of them out the terminal's patience), which the shell leaves in the
    /// store as it stops, for another node to take on at once (see [`Action::Plead`]).
    pub fn owed_before_stopping(&self) -> usize {
        let pleas = self.pleas.keys().filter(|&&txn| self.claims.waits(txn));
        self.in_flight() - pleas.count()
    }

    /// Reversals queued and not yet acknowledged or expired.
    pub fn pending_reversals(&self) -> usize {
        self.saf.len(Kind::Reversal)
    }

    /// Advices accepted from terminals and not yet acknowledged by their issuer or expired.
    pub fn pending_advices(&self) -> usize {
        self.saf.len(Kind::Advice)
    }

    /// When the oldest pending advice was queued.
    pub fn oldest_advice(&mut self) -> Option<Instant> {
        self.saf.oldest(Kind::Advice)
    }

    /// When the oldest pending reversal was queued.
    pub fn oldest_reversal(&mut self) -> Option<Instant> {
        self.saf.oldest(Kind::Reversal)
    }

    /// The oldest transaction a restart would still need from the journal: in flight, being reversed, or
    /// inside the idempotency window. Older ones are finished for good.
    pub fn oldest_needed(&self) -> TxnId {
        let oldest = self.txns.keys().min().copied().into_iter();
        let oldest = oldest.chain(self.saf.lowest_txn());
        let oldest = oldest.chain(self.claims.lowest_txn()).min();
        match (oldest, self.idempotency.oldest()) {
            (Some(a), Some(b)) => a.min(b),
            (Some(t), None) | (None, Some(t)) => t,
            (None, None) => TxnId(self.next_txn + 1),
        }
    }

    /// Keys in the idempotency window.
    pub fn idempotency_entries(&self) -> usize {
        self.idempotency.len()
    }

    /// Whether an issuer has at least one signed-on link.
    pub fn issuer_ready(&self, issuer: &str) -> bool {
        let index = self.config.issuers.iter().position(|i| i.name == issuer);
        index.is_some_and(|i| self.links.issuer_ready(i))
    }

    /// Whether a link is signed on and carries traffic. Cheap enough to ask after every event.
    pub fn link_ready(&self, link: LinkId) -> bool {
        self.links.is_ready(link)
    }

    /// The earliest deadline of the engine's timers: the shell calls [`Engine::handle_timeout`] when it
    /// has passed. Asked again after every event, since an event may arm or cancel timers.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    /// Fires every timer due at `now`, in deadline order.
    pub fn handle_timeout(&mut self, now: Now, out: &mut Vec<Action>) {
        let start = out.len();
        self.fire_due(now, out);
        self.book(&out[start..]);
    }

    /// Adds the records among `actions` to the books.
    pub(crate) fn book(&mut self, actions: &[Action]) {
        if self.config.shared_store {
            return;
        }
        for action in actions {
            if let Action::Journal(record) = action {
                self.books.add("", record);
            }
        }
        self.stats.batch_evictions = self.books.evicted();
    }

    fn fire_due(&mut self, now: Now, out: &mut Vec<Action>) {
        while let Some((due, id)) = self.timers.pop_due(now.mono) {
            match id {
                TimerId::Response(txn) => {
                    let _txn = span(txn);
                    self.on_timeout(now, txn, out)
                }
                TimerId::Saf(txn) => {
                    let _txn = span(txn);
                    self.send_owed(now, txn, out)
                }
                TimerId::Link(link) => self.on_link_timer(now, link, out),
                TimerId::Claim(txn) => self.on_claim_timer(now, due, txn, out),
            }
        }
    }

    /// When timer `id` is due, if it is armed.
    pub fn timer(&self, id: TimerId) -> Option<Instant> {
        self.timers.deadline(id)
    }

    pub(crate) fn arm(&mut self, id: TimerId, at: Instant) {
        self.timers.arm(id, at);
    }

    pub(crate) fn cancel(&mut self, id: TimerId) {
        self.timers.cancel(id);
    }

    /// Handles one event at `now`, appending what the shell must do to `out`.
    pub fn handle(&mut self, now: Now, event: Event, out: &mut Vec<Action>) {
        let start = out.len();
        self.dispatch(now, event, out);
        self.book(&out[start..]);
    }

    fn dispatch(&mut self, now: Now, event: Event, out: &mut Vec<Action>) {
        match event {
            Event::Request { conn, msg } => self.on_request(now, conn, msg, out),
            Event::Response { link, msg } => self.on_upstream(now, link, msg, out),
            Event::LinkUp(link) => self.on_link_up(now, link, out),
            Event::LinkDown(link) => self.on_link_down(link),
            Event::GraceOver => {
                let mut refused = self.give_up_claims(now, out);
                // Not timed out as the rest: a provisional forward has not left, and will not now.
                refused.extend(self.withdraw_provisional(now, out));
                // The node is ending: a reversal admitted for these refusals could not be looked up
                // any more, so they are pleas for the other nodes (see `reverse_unknowing`).
                self.plead_for(now, refused, out);
                self.give_up_reads(now, out);
                self.on_grace_over(now, out)
            }
            Event::Claimed { txn, holder } => self.on_claimed(now, txn, holder, out),
            Event::BatchRead { txn, records } => self.on_batch_read(now, txn, records, out),
            Event::Plea(plea) => self.on_plea(now, plea, out),
            Event::JournalWritable(writable) => {
                self.journal_writable = writable;
                // Nothing waiting for a claim was forwarded, nor will a provisional forward be:
                // refused now rather than at its deadline.
                if !writable {
                    let mut refused = self.withdraw_provisional(now, out);
                    refused.extend(self.give_up_claims(now, out));
                    self.reverse_unknowing(now, refused, out);
                }
            }
            Event::ConnClosed(conn) => {
                let mut waited: Vec<TxnId> = self.claims.closed(conn);
                waited.extend(self.reads.closed(conn));
                waited.extend(
                    (self.txns.iter_mut())
                        .filter_map(|(&id, txn)| txn.req.left(conn).then_some(id)),
                );
                // In transaction order, not the hash map's: the same events give the same records.
                waited.sort_unstable();
                for id in waited {
                    Self::journal(now, id, Step::Disconnected, out);
                }
            }
        }
    }

    /// Numbers new transactions after `last` (the highest the journal holds).
    pub(crate) fn resume_numbering(&mut self, last: TxnId) {
        self.next_txn = self.next_txn.max(last.0);
    }

    pub(crate) fn new_txn(&mut self) -> TxnId {
        self.next_txn += 1;
        TxnId(self.next_txn)
    }

    /// Whether `request` to `issuer` may leave money standing there (see [`Policy::moves_money`]).
    ///
    /// [`Policy::moves_money`]: crate::Policy::moves_money
    pub(crate) fn moves_money(&self, issuer: usize, request: &Message) -> bool {
        let processing = crate::fields::processing(request);
        self.config.issuers[issuer].policy.moves_money(processing)
    }

    pub(crate) fn journal(now: Now, txn: TxnId, step: Step, out: &mut Vec<Action>) {
        out.push(Action::Journal(Record {
            txn,
            at: now.wall,
            step,
        }));
    }

    /// Tells each waiter `answer` and records it; with no waiter left, records that it was undeliverable.
    /// Returns whether anyone was told.
    pub(crate) fn tell(
        &mut self,
        now: Now,
        txn: TxnId,
        waiters: &[ConnId],
        answer: &Message,
        out: &mut Vec<Action>,
    ) -> bool {
        let rc = answer.response_code().unwrap_or(ResponseCode::SYSTEM_ERROR);
        if waiters.is_empty() {
            self.stats.undeliverable += 1;
            Self::journal(now, txn, Step::Undeliverable { rc }, out);
            return false;
        }
        // Recorded first: the answers wait until the record is durable, so a restart never reverses a
        // purchase a terminal was told was approved.
        Self::journal(now, txn, Step::Told { rc }, out);
        for &conn in waiters {
            out.push(Action::Answer {
                conn,
                txn: Some(txn),
                msg: answer.clone(),
            });
        }
        true
    }
}

/// Enters the span of one transaction: every log line inside it carries the transaction's id, the id
/// its journal records hold (`acquiro tranlog show` prints it).
pub(crate) fn span(txn: TxnId) -> tracing::span::EnteredSpan {
    tracing::info_span!("txn", id = txn.0).entered()
}
