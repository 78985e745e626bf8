//! The task that owns the engine: it feeds it events from terminal connections, links and its timers,
//! and carries out its actions. It only moves messages and fires timers; every decision is the engine's.
//!
//! Write-ahead: effects pass the engine's [`Outbox`], so a message to an issuer or a terminal waits until
//! every journal record before it is durable, while the engine goes on with the next events. Timers are
//! the engine's too: the driver keeps one sleep, until the engine's next deadline.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use engine::{Action, ConnId, Engine, Event, Gate, LinkId, Now, Outbox, Plea};
use iso8583::{Class, Message};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::journal::{Fault, Journal, Progress, Report};
use crate::link::LinkCmd;
use crate::pleas_file::PleasFile;
use crate::recorder::Recorder;
use crate::status::Status;

/// What connection tasks and links tell the driver.
#[derive(Debug)]
pub(crate) enum Input {
    Event(Event),
    /// A terminal connection opened; what it is owed goes to `replies`.
    Opened {
        conn: ConnId,
        replies: mpsc::Sender<Reply>,
    },
}

/// What a terminal connection gets for each message it passed on: exactly one of these (the engine's
/// answer contract), so that its count of messages awaiting a reply stays exact.
#[derive(Debug)]
pub(crate) enum Reply {
    Answer(Message),
    /// No answer is owed (the message was a response, or cannot be answered in its dialect).
    Nothing,
}

/// The time now, on both clocks. The monotonic one is tokio's, so that tests with paused time drive
/// the engine's timers too.
pub(crate) fn now() -> Now {
    Now {
        mono: Instant::now().into_std(),
        wall: SystemTime::now(),
    }
}

/// How often the journal learns which transactions recovery may still need (and, in cluster mode, what
/// the node holds, for its lease).
const KEEP_EVERY: Duration = Duration::from_secs(1);
/// Inputs handled in one turn, at most, before the journal and the metrics catch up.
const BURST: usize = 64;
/// How long, after the grace period, the journal gets to make the last records durable so that the
/// answers and reversals they cover go out.
const LAST_SYNC: Duration = Duration::from_secs(2);
/// How long a node that ends waits for its pleas to be left in the database (a connection lost with
/// the database made again, then the insert).
const LEAVE_PLEAS: Duration = Duration::from_secs(25);
/// A deadline no timer reaches: the sleep of an engine with no timer armed.
const NEVER: Duration = Duration::from_secs(365 * 24 * 3600);

/// Where a shutdown stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Running,
    /// In-flight requests may still finish until the grace period ends.
    Draining,
    /// The grace period ended: what was in flight has timed out; its answers and reversals wait only
    /// for the journal.
    CutOff,
}

pub(crate) struct Driver {
    pub(crate) engine: Engine,
    pub(crate) recorder: Recorder,
    pub(crate) inputs: mpsc::Receiver<Input>,
    pub(crate) links: Vec<mpsc::Sender<LinkCmd>>,
    pub(crate) journal: Box<dyn Journal>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) grace: Duration,
    pub(crate) status: watch::Sender<Status>,
    /// What recovery decided, carried out before the first event.
    pub(crate) recovered: Vec<Action>,
    /// Where each open terminal connection's replies go.
    pub(crate) conns: HashMap<ConnId, mpsc::Sender<Reply>>,
    /// The write-ahead gate.
    pub(crate) outbox: Outbox,
    /// Effects the gate released, reused between reports.
    pub(crate) released: Vec<Action>,
    /// The journal failed for good (its disk, or the node fenced): nothing it holds back will be
    /// released, so a shutdown has nothing to wait for.
    pub(crate) journal_dead: bool,
    /// Cluster mode: the reversals the engine admitted in terminals' names whose outcomes are not
    /// durable yet; left in the database for the other nodes if this one ends first.
    pub(crate) pleas: HashSet<Plea>,
    /// Cluster mode, `cluster.pleas_file`: where `pleas` are kept on the node's disk.
    pub(crate) pleas_file: Option<PleasFile>,
    /// The pleas the file held when the node started: taken on before the first event.
    pub(crate) pleas_left: Vec<Plea>,
}

impl Driver {
    pub(crate) async fn run(mut self) {
        let mut reports = self.journal.reports();
        let durable_journal = reports.is_some();
        if !durable_journal {
            self.outbox = Outbox::durable_on_append();
        }
        let mut out = std::mem::take(&mut self.recovered);
        self.carry_out(&mut out);
        for plea in std::mem::take(&mut self.pleas_left) {
            self.on_event(Event::Plea(plea), &mut out);
        }
        self.journal.flush();
        let shutdown = self.shutdown.clone();
        let mut stop = Stop::Running;
        let deadline = tokio::time::sleep(NEVER);
        tokio::pin!(deadline);
        let timer = tokio::time::sleep(NEVER);
        tokio::pin!(timer);
        let mut armed = None;
        let mut keep = tokio::time::interval(KEEP_EVERY);
        loop {
            // The one sleep follows the engine's earliest deadline, re-armed only when it moved.
            let next = self.engine.poll_timeout();
            if next != armed {
                armed = next;
                let at = next.map_or_else(|| Instant::now() + NEVER, Instant::from_std);
                timer.as_mut().reset(at);
            }
            tokio::select! {
                input = self.inputs.recv() => match input {
                    Some(input) => self.on_input(input, &mut out),
                    None => break,
                },
                () = &mut timer, if armed.is_some() => {
                    armed = None;
                    self.engine.handle_timeout(now(), &mut out);
                    self.publish_links();
                    self.carry_out(&mut out);
                }
                // What a report leads to (answers released, claims settled, refusals, a takeover) is
                // flushed and counted below, like any other turn.
                Some(report) = next_report(&mut reports) => self.on_report(report, &mut out),
                _ = keep.tick(), if durable_journal => {
                    self.journal.progress(Progress {
                        oldest_needed: self.engine.oldest_needed(),
                        in_flight: self.engine.in_flight(),
                        reversals: self.engine.pending_reversals(),
                    });
                    continue;
                }
                _ = shutdown.cancelled(), if stop == Stop::Running => {
                    stop = Stop::Draining;
                    self.status.send_modify(|s| s.draining = true);
                    tracing::info!(in_flight = self.engine.in_flight(), grace = ?self.grace, "draining");
                    deadline.as_mut().reset(Instant::now() + self.grace);
                    if self.drained() {
                        break;
                    }
                    continue;
                }
                _ = &mut deadline, if stop != Stop::Running => {
                    if stop == Stop::CutOff {
                        tracing::error!(held = self.outbox.held(), "the journal did not make the last records durable: their answers and reversals were not sent");
                        break;
                    }
                    stop = Stop::CutOff;
                    tracing::warn!(in_flight = self.engine.in_flight(), "grace period over: requests in flight time out and are reversed");
                    deadline.as_mut().reset(Instant::now() + LAST_SYNC);
                    self.on_event(Event::GraceOver, &mut out);
                }
            };
            // What else is already waiting is handled with it: the journal's writer is woken and the
            // metrics are brought up to date once for the whole burst.
            for _ in 0..BURST {
                match self.inputs.try_recv() {
                    Ok(input) => self.on_input(input, &mut out),
                    Err(_) => break,
                }
            }
            self.journal.flush();
            self.recorder.sync(&mut self.engine);
            if stop != Stop::Running && self.drained() {
                break;
            }
        }
        let stats = self.engine.stats();
        tracing::info!(
            forwarded = stats.forwarded,
            pending_reversals = self.engine.pending_reversals(),
            held = self.outbox.held(),
            "engine stopped"
        );
        self.leave_pleas().await;
        self.journal.close();
    }

    /// Cluster mode: the reversals admitted in terminals' names whose outcomes are not durable are
    /// left in the database, where another node takes them on (see `engine::Plea`). Without that,
    /// nothing would remember them: the terminals they are for were told 91 and repeat nothing.
    async fn leave_pleas(&mut self) {
        if self.pleas.is_empty() {
            return;
        }
        let pleas: Vec<Plea> = self.pleas.iter().cloned().collect();
        let left = self.journal.leave_pleas(pleas.clone());
        let left = tokio::time::timeout(LEAVE_PLEAS, left).await;
        if left.is_ok_and(|left| left.unwrap_or(false)) {
            self.pleas.clear();
            self.keep_pleas();
            return tracing::warn!(
                pleas = pleas.len(),
                "reversals admitted in terminals' names and not settled are left for the other nodes"
            );
        }
        if self.pleas_file.is_some() {
            return tracing::warn!(
                pleas = pleas.len(),
                "reversals admitted in terminals' names could not be left for the other nodes: the pleas file keeps them, and this node takes them on again when it starts"
            );
        }
        for plea in pleas {
            tracing::error!(
                terminal = plea.terminal,
                merchant = plea.merchant,
                stan = plea.stan,
                date = plea.date,
                "a reversal admitted in a terminal's name could not be left for the other nodes: whatever holds this key needs manual action"
            );
        }
    }

    fn on_input(&mut self, input: Input, out: &mut Vec<Action>) {
        match input {
            Input::Event(event) => self.on_event(event, out),
            Input::Opened { conn, replies } => {
                self.conns.insert(conn, replies);
            }
        }
    }

    fn on_event(&mut self, event: Event, out: &mut Vec<Action>) {
        if let Event::ConnClosed(conn) = &event {
            self.conns.remove(conn);
        }
        // Only these can sign a link on or off (besides its timers); an answer to a purchase or a
        // reversal never does, so the per-answer path takes no status lock.
        let link = match &event {
            Event::Response { link, msg } if msg.mti().class() == Class::NETWORK => Some(*link),
            Event::LinkUp(link) | Event::LinkDown(link) => Some(*link),
            _ => None,
        };
        self.engine.handle(now(), event, out);
        // Published before the event's effects go out: once a request has been forwarded on a link,
        // readiness already says the link is up.
        if let Some(link) = link {
            self.publish_link(link);
        }
        self.carry_out(out);
    }

    /// Publishes every link's state (after timers, which may have taken any of them down).
    fn publish_links(&self) {
        for link in 0..self.links.len() {
            self.publish_link(LinkId(link as u32));
        }
    }

    /// Tells status and metrics whether `link` is signed on, when that changed.
    fn publish_link(&self, link: LinkId) {
        let (up, i, recorder) = (
            self.engine.link_ready(link),
            link.0 as usize,
            &self.recorder,
        );
        self.status.send_if_modified(|s| match s.links.get_mut(i) {
            Some(l) if l.up != up => {
                l.up = up;
                recorder.link_up(i, up);
                true
            }
            _ => false,
        });
    }

    /// Whether a shutdown has nothing more to wait for: nothing in flight but reversals in terminals'
    /// names waiting for the store (left there for the other nodes as the node stops) and nothing
    /// held back, or a journal that will make nothing durable again (an answer or reversal held back
    /// stays so).
    fn drained(&self) -> bool {
        self.journal_dead || (self.engine.owed_before_stopping() == 0 && self.outbox.held() == 0)
    }

    /// Keeps the pleas in the pleas file, if there is one: synced before the effects that follow.
    fn keep_pleas(&self) {
        if let Some(file) = &self.pleas_file
            && let Err(error) = file.keep(&self.pleas)
        {
            tracing::error!(%error, pleas = self.pleas.len(), "pleas not kept on disk: a kill of this node before their reversals commit would lose them");
        }
    }

    /// Journals records (and claims) and carries out the effects the gate lets through. New pleas are
    /// kept on disk first: the refusals they are for are told among these effects.
    fn carry_out(&mut self, out: &mut Vec<Action>) {
        // Only with a pleas file: the pass over the burst's actions is off the path otherwise.
        if self.pleas_file.is_some() {
            let before = self.pleas.len();
            for action in out.iter() {
                if let Action::Plead(plea) = action {
                    self.pleas.insert(plea.clone());
                }
            }
            if self.pleas.len() > before {
                self.keep_pleas();
            }
        }
        for action in out.drain(..) {
            let (journal, recorder) = (&mut self.journal, &mut self.recorder);
            let effect = self.outbox.admit(action, |record| {
                recorder.observe(&record);
                journal.append(record)
            });
            if let Some(effect) = effect {
                self.effect(effect);
            }
        }
    }

    fn on_report(&mut self, report: Report, out: &mut Vec<Action>) {
        match report {
            Report::Withdrawn(txns) => {
                self.recorder.withdrawn(&txns);
                self.outbox.withdraw(&txns);
            }
            Report::Durable(batch) => {
                self.recorder.metrics().journal_batch(&batch);
                let mut released = std::mem::take(&mut self.released);
                self.outbox.durable(batch.last_seq, &mut released);
                for effect in released.drain(..) {
                    self.effect(effect);
                }
                self.released = released;
            }
            Report::Claimed(answers) => {
                for (txn, holder) in answers {
                    self.on_event(Event::Claimed { txn, holder }, out);
                }
            }
            Report::BatchRead { txn, records } => {
                self.on_event(Event::BatchRead { txn, records }, out)
            }
            Report::TakeOver {
                node,
                through,
                records,
            } => {
                self.recorder.metrics().took_over();
                let found = self.engine.adopt(now(), &node, records, out);
                tracing::warn!(
                    node,
                    through,
                    transactions = found.transactions,
                    in_doubt = found.in_doubt,
                    reversals_resumed = found.reversals,
                    "took over the work of a node whose lease lapsed"
                );
                self.carry_out(out);
                self.journal.retire(node, through);
            }
            Report::Unwritable(why) => {
                if why.is_some() {
                    self.recorder.metrics().journal_failed();
                }
                let writable = why.is_none();
                self.on_event(Event::JournalWritable(writable), out);
                self.status.send_modify(|s| s.journal_failed = why);
                if writable {
                    tracing::info!("journal writable again: new requests are taken");
                }
            }
            Report::LeaseUnrenewed(why) => {
                if why.is_some() {
                    self.recorder.metrics().lease_failed();
                } else if self.status.borrow().lease_failed.is_some() {
                    tracing::info!("lease renewed again");
                }
                self.status.send_modify(|s| s.lease_failed = why);
            }
            Report::Pleas(pleas) => {
                for plea in pleas {
                    self.on_event(Event::Plea(plea), out);
                }
            }
            Report::Database(database) => {
                self.recorder.metrics().database(&database);
                // Held again each turn: one admitted while the database was away is not there yet.
                if !self.pleas.is_empty() {
                    self.journal
                        .hold_pleas(self.pleas.iter().cloned().collect());
                }
            }
            Report::Reconnected(purpose) => self.recorder.metrics().reconnected(purpose.as_str()),
            // It tells nobody anything more, not even 91 to the requests still waiting for their
            // claims: its connections may be stale (it was paused, most often, and a balancer shut
            // them meanwhile), and the node that took its work over answers the terminals'
            // retransmits from the records. A 91 told now would admit a reversal in the terminal's
            // name for an answer its terminal may never hear, reversing an approval it heard
            // elsewhere.
            Report::Fenced(error) => {
                tracing::error!(%error, held = self.outbox.held(), "fenced: this node stops; started again, it joins anew and resumes what was not taken over");
                self.status.send_modify(|s| s.fenced = true);
                self.shutdown.cancel();
                self.journal_failed(error);
            }
            Report::Failed(error) => {
                tracing::error!(%error, held = self.outbox.held(), "journal failed: nothing more is forwarded or answered");
                self.journal_failed(error);
                self.on_event(Event::JournalWritable(false), out);
            }
        }
    }

    /// The journal will make nothing durable again: nothing it holds back is released.
    fn journal_failed(&mut self, error: Fault) {
        self.journal_dead = true;
        self.recorder.metrics().journal_failed();
        self.status.send_modify(|s| s.journal_failed = Some(error));
    }

    /// Sends a message to an issuer or a terminal, or closes a link; the moment it leaves is what the
    /// latency metrics measure.
    fn effect(&mut self, effect: Action) {
        match effect {
            Action::Send { link, txn, msg } => {
                self.recorder.sent(txn);
                self.send(link, LinkCmd::Send(msg));
            }
            Action::CloseLink(link) => self.send(link, LinkCmd::Close),
            Action::Answer { conn, txn, msg } => {
                self.recorder.answered(txn);
                self.reply(conn, Reply::Answer(msg));
            }
            Action::AnswerNow { conn, msg, .. } => {
                self.recorder.answered_now(&msg);
                self.reply(conn, Reply::Answer(msg));
            }
            Action::NoAnswer { conn, why } => {
                self.recorder.unanswered(why);
                self.reply(conn, Reply::Nothing);
            }
            // Committed with the records before it.
            Action::Claim(claim) => self.journal.claim(claim),
            Action::Lookup(key) => self.journal.look_up(key),
            Action::ReadBatch(batch) => self.journal.read_batch(batch),
            // With a pleas file, kept already, before the effects it came with (see `carry_out`).
            Action::Plead(plea) => {
                self.pleas.insert(plea.clone());
                self.journal.hold_pleas(vec![plea]);
            }
            Action::PleaSettled(plea) => {
                self.pleas.remove(&plea);
                self.keep_pleas();
                self.journal.settle_pleas(vec![plea]);
            }
            // The gate keeps records, and takes withdrawals.
            Action::Journal(_) | Action::Withdraw(_) => {}
        }
    }

    fn reply(&self, conn: ConnId, reply: Reply) {
        // The connection's queue has room for a reply to everything it passed on; a full one means the
        // task is gone and the reply is dropped, as if the connection had closed (a retransmit gets it
        // replayed).
        if let Some(tx) = self.conns.get(&conn)
            && let Err(error) = tx.try_send(reply)
        {
            tracing::warn!(?conn, %error, "answer not delivered");
        }
    }

    fn send(&self, link: LinkId, cmd: LinkCmd) {
        // A link that cannot take the message drops it: the request times out and is reversed.
        if let Some(tx) = self.links.get(link.0 as usize)
            && let Err(error) = tx.try_send(cmd)
        {
            tracing::warn!(?link, %error, "message for the issuer not sent");
        }
    }
}

/// The next report of a journal that sends them; never, for one that does not.
async fn next_report(reports: &mut Option<mpsc::UnboundedReceiver<Report>>) -> Option<Report> {
    match reports {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
