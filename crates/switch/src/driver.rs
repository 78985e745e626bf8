//! The task that owns the engine: it feeds it events from terminal connections, links and timers, and
//! carries out its actions. It only moves messages and fires timers; every decision is the engine's.
//!
//! Write-ahead: a message to an issuer or a terminal waits until every journal record before it is
//! durable. Effects are held in order, so the journal's group commit delays them by at most a batch
//! while the engine goes on with the next events.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use engine::{Action, ConnId, Engine, Event, LinkId, Now, TimerId};
use futures_util::StreamExt;
use iso8583::Message;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::time::{DelayQueue, delay_queue};

use crate::journal::{Journal, Report};
use crate::link::LinkCmd;
use crate::metrics::Recorder;
use crate::status::Status;

/// What connection tasks and links tell the driver.
#[derive(Debug)]
pub(crate) enum Input {
    Event(Event),
    /// A terminal connection opened; answers for it go to `answers`.
    Opened {
        conn: ConnId,
        answers: mpsc::Sender<Message>,
    },
}

/// How often the journal learns which transactions recovery may still need.
const KEEP_EVERY: Duration = Duration::from_secs(1);
/// Inputs handled in one turn, at most, before the journal and the metrics catch up.
const BURST: usize = 64;
/// How long, after the grace period, the journal gets to make the last records durable so that the
/// answers and reversals they cover go out.
const LAST_SYNC: Duration = Duration::from_secs(2);

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
    pub(crate) shell: Shell,
}

/// The driver's side of the actions: connections, timers and effects waiting for the journal.
#[derive(Default)]
pub(crate) struct Shell {
    conns: HashMap<ConnId, mpsc::Sender<Message>>,
    timers: DelayQueue<TimerId>,
    armed: HashMap<TimerId, delay_queue::Key>,
    /// Effects waiting for the journal, with the sequence number that must be durable first.
    held: VecDeque<(u64, Action)>,
    /// The last record appended and the last one durable.
    appended: u64,
    durable: u64,
}

impl Driver {
    pub(crate) async fn run(mut self) {
        let mut reports = self.journal.reports();
        let durable_journal = reports.is_some();
        if !durable_journal {
            self.shell.durable = u64::MAX;
        }
        let mut out = std::mem::take(&mut self.recovered);
        self.carry_out(&mut out);
        self.journal.flush();
        let shutdown = self.shutdown.clone();
        let mut stop = Stop::Running;
        let deadline = tokio::time::sleep(Duration::MAX / 4);
        tokio::pin!(deadline);
        let mut keep = tokio::time::interval(KEEP_EVERY);
        loop {
            let event = tokio::select! {
                input = self.inputs.recv() => match input {
                    Some(Input::Event(event)) => event,
                    Some(Input::Opened { conn, answers }) => {
                        self.shell.conns.insert(conn, answers);
                        continue;
                    }
                    None => break,
                },
                Some(expired) = self.shell.timers.next() => {
                    let id = expired.into_inner();
                    self.shell.armed.remove(&id);
                    Event::Timer(id)
                }
                Some(report) = next_report(&mut reports) => {
                    self.on_report(report);
                    if stop != Stop::Running && self.drained() {
                        break;
                    }
                    continue;
                }
                _ = keep.tick(), if durable_journal => {
                    self.journal.keep_from(self.engine.oldest_needed());
                    continue;
                }
                _ = shutdown.cancelled(), if stop == Stop::Running => {
                    stop = Stop::Draining;
                    self.status.send_modify(|s| s.draining = true);
                    tracing::info!(in_flight = self.engine.in_flight(), grace = ?self.grace, "draining");
                    deadline.as_mut().reset(tokio::time::Instant::now() + self.grace);
                    if self.drained() {
                        break;
                    }
                    continue;
                }
                _ = &mut deadline, if stop != Stop::Running => {
                    if stop == Stop::CutOff {
                        tracing::error!(held = self.shell.held.len(), "the journal did not make the last records durable: their answers and reversals were not sent");
                        break;
                    }
                    stop = Stop::CutOff;
                    tracing::warn!(in_flight = self.engine.in_flight(), "grace period over: requests in flight time out and are reversed");
                    deadline.as_mut().reset(tokio::time::Instant::now() + LAST_SYNC);
                    Event::GraceOver
                }
            };
            self.on_event(event, &mut out);
            // What else is already waiting is handled with it: the journal's writer is woken and the
            // metrics are brought up to date once for the whole burst.
            for _ in 0..BURST {
                match self.inputs.try_recv() {
                    Ok(Input::Event(event)) => self.on_event(event, &mut out),
                    Ok(Input::Opened { conn, answers }) => {
                        self.shell.conns.insert(conn, answers);
                    }
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
            held = self.shell.held.len(),
            "engine stopped"
        );
        self.journal.close();
    }

    fn on_event(&mut self, event: Event, out: &mut Vec<Action>) {
        if let Event::ConnClosed(conn) = &event {
            self.shell.conns.remove(conn);
        }
        // Only these can sign a link on or off; an answer to a purchase or a reversal never does, so
        // the per-answer path takes no status lock.
        let link = match &event {
            Event::Response { link, msg } if msg.mti().class() == 8 => Some(*link),
            Event::LinkUp(link) | Event::LinkDown(link) | Event::Timer(TimerId::Link(link)) => {
                Some(*link)
            }
            _ => None,
        };
        self.engine.handle(Now::system(), event, out);
        // Published before the event's effects go out: once a request has been forwarded on a link,
        // readiness already says the link is up.
        if let Some(link) = link {
            self.publish_link(link);
        }
        self.carry_out(out);
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

    /// Nothing in flight and nothing waiting for the journal.
    fn drained(&self) -> bool {
        self.engine.in_flight() == 0 && self.shell.held.is_empty()
    }

    /// Journals records and carries out or holds the effects that follow them.
    fn carry_out(&mut self, out: &mut Vec<Action>) {
        for action in out.drain(..) {
            match action {
                Action::Journal(record) => {
                    self.recorder.observe(&record);
                    self.shell.appended = self.journal.append(record);
                }
                Action::Arm { id, at } => {
                    let (timers, at) = (&mut self.shell.timers, tokio::time::Instant::from_std(at));
                    match self.shell.armed.get(&id) {
                        Some(key) => timers.reset_at(key, at),
                        None => {
                            self.shell.armed.insert(id, timers.insert_at(id, at));
                        }
                    }
                }
                Action::Cancel(id) => {
                    if let Some(key) = self.shell.armed.remove(&id) {
                        self.shell.timers.remove(&key);
                    }
                }
                effect => {
                    let shell = &mut self.shell;
                    if shell.held.is_empty() && shell.appended <= shell.durable {
                        self.effect(effect);
                    } else {
                        shell.held.push_back((shell.appended, effect));
                    }
                }
            }
        }
    }

    fn on_report(&mut self, report: Report) {
        match report {
            Report::Durable(batch) => {
                self.recorder.metrics().journal_batch(&batch);
                self.shell.durable = batch.last_seq;
                while let Some((seq, _)) = self.shell.held.front()
                    && *seq <= self.shell.durable
                {
                    if let Some((_, effect)) = self.shell.held.pop_front() {
                        self.effect(effect);
                    }
                }
            }
            Report::Failed(error) => {
                tracing::error!(%error, held = self.shell.held.len(), "journal failed: nothing more is forwarded or answered");
                self.recorder.metrics().journal_failed();
                self.status.send_modify(|s| s.journal_failed = Some(error));
            }
        }
    }

    /// Sends a message to an issuer or a terminal, or closes a link.
    fn effect(&self, effect: Action) {
        match effect {
            Action::Send { link, msg } => self.send(link, LinkCmd::Send(msg)),
            Action::CloseLink(link) => self.send(link, LinkCmd::Close),
            Action::Answer { conn, msg } => {
                // A full queue means the terminal is not reading; its answer is dropped, as if the
                // connection had closed (a retransmit gets it replayed).
                if let Some(tx) = self.shell.conns.get(&conn)
                    && let Err(error) = tx.try_send(msg)
                {
                    tracing::warn!(?conn, %error, "answer not delivered");
                }
            }
            Action::Journal(_) | Action::Arm { .. } | Action::Cancel(_) => {}
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
