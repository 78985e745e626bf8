//! The task that owns the engine: it feeds it events from terminal connections, links and timers, and
//! carries out its actions. It only moves messages and fires timers; every decision is the engine's.

use std::collections::HashMap;
use std::time::Duration;

use engine::{Action, ConnId, Engine, Event, LinkId, Now, TimerId};
use futures_util::StreamExt;
use iso8583::Message;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::time::{DelayQueue, delay_queue};

use crate::journal::Journal;
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

pub(crate) struct Driver {
    pub(crate) engine: Engine,
    pub(crate) recorder: Recorder,
    pub(crate) inputs: mpsc::Receiver<Input>,
    pub(crate) links: Vec<mpsc::Sender<LinkCmd>>,
    pub(crate) journal: Box<dyn Journal>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) grace: Duration,
    pub(crate) status: watch::Sender<Status>,
}

impl Driver {
    pub(crate) async fn run(mut self) {
        let mut conns: HashMap<ConnId, mpsc::Sender<Message>> = HashMap::new();
        let mut timers: DelayQueue<TimerId> = DelayQueue::new();
        let mut armed: HashMap<TimerId, delay_queue::Key> = HashMap::new();
        let mut out = Vec::new();
        let shutdown = self.shutdown.clone();
        let mut draining = false;
        let drain_deadline = tokio::time::sleep(Duration::MAX / 4);
        tokio::pin!(drain_deadline);
        loop {
            let event = tokio::select! {
                input = self.inputs.recv() => match input {
                    Some(Input::Event(event)) => event,
                    Some(Input::Opened { conn, answers }) => {
                        conns.insert(conn, answers);
                        continue;
                    }
                    None => break,
                },
                Some(expired) = timers.next() => {
                    let id = expired.into_inner();
                    armed.remove(&id);
                    Event::Timer(id)
                }
                _ = shutdown.cancelled(), if !draining => {
                    draining = true;
                    self.status.send_modify(|s| s.draining = true);
                    tracing::info!(in_flight = self.engine.in_flight(), grace = ?self.grace, "draining");
                    drain_deadline.as_mut().reset(tokio::time::Instant::now() + self.grace);
                    if self.engine.in_flight() == 0 {
                        break;
                    }
                    continue;
                }
                _ = &mut drain_deadline, if draining => {
                    tracing::warn!(in_flight = self.engine.in_flight(), "grace period over with requests in flight");
                    break;
                }
            };
            if let Event::ConnClosed(conn) = &event {
                conns.remove(conn);
            }
            self.engine.handle(Now::system(), event, &mut out);
            for action in out.drain(..) {
                match action {
                    Action::Journal(record) => {
                        self.journal.append(&record);
                        self.recorder.observe(&record);
                    }
                    Action::Send { link, msg } => self.send(link, LinkCmd::Send(msg)),
                    Action::Answer { conn, msg } => {
                        // A full queue means the terminal is not reading; its answer is dropped, as if
                        // the connection had closed (a retransmit gets it replayed).
                        if let Some(tx) = conns.get(&conn)
                            && let Err(error) = tx.try_send(msg)
                        {
                            tracing::warn!(?conn, %error, "answer not delivered");
                        }
                    }
                    Action::Arm { id, at } => {
                        let at = tokio::time::Instant::from_std(at);
                        match armed.get(&id) {
                            Some(key) => timers.reset_at(key, at),
                            None => {
                                armed.insert(id, timers.insert_at(id, at));
                            }
                        }
                    }
                    Action::Cancel(id) => {
                        if let Some(key) = armed.remove(&id) {
                            timers.remove(&key);
                        }
                    }
                    Action::CloseLink(link) => self.send(link, LinkCmd::Close),
                }
            }
            self.recorder.sync(&mut self.engine);
            let (engine, recorder) = (&self.engine, &self.recorder);
            self.status.send_if_modified(|s| {
                let mut changed = false;
                for (i, link) in s.links.iter_mut().enumerate() {
                    let up = engine.link_ready(LinkId(i as u32));
                    if link.up != up {
                        link.up = up;
                        recorder.link_up(i, up);
                        changed = true;
                    }
                }
                changed
            });
            if draining && self.engine.in_flight() == 0 {
                break;
            }
        }
        let stats = self.engine.stats();
        tracing::info!(
            forwarded = stats.forwarded,
            pending_reversals = self.engine.pending_reversals(),
            "engine stopped"
        );
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
