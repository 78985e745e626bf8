//! Terminal listeners and connections: accept (within the connection cap), decode, hand requests to the
//! driver, write answers back. A connection that sends something unreadable gets RC 30 when an answer can
//! be formed, otherwise it alone is closed. At the listener's cap the connection idle longest gives way
//! to the new one (see `slots`); when every connection has requests in flight, the new one is closed at
//! once, so the terminal learns it (and can try another switch) instead of waiting in the backlog.
//!
//! Per connection: at most `max_in_flight` messages await their replies (beyond it the connection is not
//! read, so TCP pushes back on the terminal and no answer can ever be dropped for want of queue space);
//! a connection idle for `idle_timeout` with nothing in flight, stuck inside a frame for `read_timeout`,
//! or without a complete frame within `first_frame_timeout` of connecting, is closed. Only answered
//! requests and keep-alives count as activity: a connection that sends only response messages gets no
//! reply to them and is closed as idle.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use engine::{ConnId, Event};
use futures_util::{SinkExt, StreamExt};
use iso8583::{Message, ResponseCode};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::codec::Framed;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wire::Tpdu;

use crate::codec::{MessageCodec, Outgoing};
use crate::config::Listener;
use crate::driver::{Input, Reply};
use crate::metrics::{LOCAL, Metrics};
use crate::slots::{Slot, Slots};
use crate::tls::Stream;

pub(crate) async fn accept_loop(
    listener: TcpListener,
    settings: Arc<Listener>,
    inputs: mpsc::Sender<Input>,
    shutdown: CancellationToken,
    next_conn: Arc<AtomicU64>,
    tasks: TaskTracker,
    metrics: Arc<Metrics>,
) {
    let slots = Slots::new(settings.max_connections);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.cancelled() => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(error) => {
                // Usually out of file descriptors: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let conn = ConnId(next_conn.fetch_add(1, Ordering::Relaxed));
        let Some((held, evicted)) = slots.take(conn).await else {
            metrics.terminal_refused.inc();
            tracing::warn!(%peer, max_connections = settings.max_connections, "connection refused: listener at its cap, every connection busy");
            continue;
        };
        if evicted {
            metrics.terminal_evicted.inc();
            tracing::info!(%peer, "listener at its cap: the connection idle longest gave way");
        }
        let _ = stream.set_nodelay(true);
        tracing::debug!(?conn, %peer, "terminal connected");
        metrics.terminal_connections.inc();
        let (settings, inputs, shutdown, metrics) = (
            settings.clone(),
            inputs.clone(),
            shutdown.clone(),
            metrics.clone(),
        );
        tasks.spawn(async move {
            let reason = match handshake(stream, &settings).await {
                Ok(stream) => {
                    let connection = Connection {
                        conn,
                        settings: &settings,
                        inputs: &inputs,
                        shutdown: &shutdown,
                        metrics: &metrics,
                        slot: &held.slot,
                    };
                    connection.serve(stream).await
                }
                Err(reason) => reason,
            };
            tracing::debug!(?conn, %peer, reason, "terminal connection closed");
            metrics.terminal_closed.with_label_values(&[reason]).inc();
            let _ = inputs.send(Input::Event(Event::ConnClosed(conn))).await;
            metrics.terminal_connections.dec();
            drop(held);
        });
    }
}

/// The connection as the listener speaks it: TLS after a handshake bounded by the read timeout (garbage
/// or a stalled handshake closes it), or the plain stream.
async fn handshake(stream: TcpStream, settings: &Listener) -> Result<Stream, &'static str> {
    let Some(tls) = &settings.tls else {
        return Ok(Either::Left(stream));
    };
    match tokio::time::timeout(settings.read_timeout, tls.accept(stream)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(error)) => {
            tracing::warn!(%error, "terminal TLS handshake failed");
            Err("tls_handshake")
        }
        Err(_) => {
            tracing::warn!("terminal TLS handshake not done within the read timeout");
            Err("tls_handshake")
        }
    }
}

/// One terminal connection's surroundings.
struct Connection<'a> {
    conn: ConnId,
    settings: &'a Listener,
    /// The driver's input queue.
    inputs: &'a mpsc::Sender<Input>,
    /// Cancelled when the switch drains: no new requests are read.
    shutdown: &'a CancellationToken,
    metrics: &'a Metrics,
    /// What the listener sees of this connection, to pick one to evict at its cap.
    slot: &'a Slot,
}

impl Connection<'_> {
    /// Carries the connection until it ends; returns why.
    async fn serve(self, stream: Stream) -> &'static str {
        let Connection {
            conn,
            settings,
            inputs,
            shutdown,
            metrics,
            slot,
        } = self;
        // Room for the reply to every message in flight: the driver's queueing never fails.
        let (replies, mut queued) = mpsc::channel(settings.max_in_flight);
        if inputs.send(Input::Opened { conn, replies }).await.is_err() {
            return "switch_stopping";
        }
        let mut framed = Framed::new(stream, MessageCodec(settings.codec));
        // Answers carry the TPDU of the terminal's last request, with its addresses swapped.
        let mut tpdu: Option<Tpdu> = None;
        let mut reading = true;
        // Messages passed to the engine and not yet replied to: exact, since the engine replies to each
        // exactly once (an answer or "nothing").
        let mut in_flight = 0;
        let mut quiet = Quiet::new(settings, slot);
        let check = tokio::time::sleep(quiet.first_check());
        tokio::pin!(check);
        // Made once, not on every turn of the loop: each one made registers with (and each one dropped
        // leaves) its notifier's list of waiters, under its lock.
        let evicted = slot.evicted();
        tokio::pin!(evicted);
        let draining = shutdown.cancelled();
        tokio::pin!(draining);
        loop {
            let read = reading && in_flight < settings.max_in_flight;
            tokio::select! {
                frame = framed.next(), if read => match frame {
                    Some(Ok(frame)) => {
                        quiet.frame(framed.codec().0.keepalives(), metrics);
                        tpdu = frame.tpdu.map(Tpdu::response);
                        match Message::decode(settings.spec, frame.message.clone()) {
                            Ok(msg) => {
                                in_flight += 1;
                                slot.set_in_flight(in_flight);
                                if in_flight == settings.max_in_flight {
                                    metrics.terminal_throttled.inc();
                                }
                                if inputs.send(Input::Event(Event::Request { conn, msg })).await.is_err() {
                                    return "switch_stopping";
                                }
                            }
                            Err(error) => {
                                tracing::warn!(?conn, %error, "undecodable terminal message");
                                metrics.decode_errors.with_label_values(&["terminal", error.reason().label()]).inc();
                                let Some(answer) = format_error(settings, &frame.message) else {
                                    return "undecodable";
                                };
                                metrics.responses.with_label_values(&["unknown", "30", LOCAL]).inc();
                                if framed.send(Outgoing(tpdu, answer)).await.is_err() {
                                    return "write_failed";
                                }
                            }
                        }
                    }
                    Some(Err(error)) => {
                        tracing::warn!(?conn, %error, "terminal framing error; closing");
                        metrics.decode_errors.with_label_values(&["terminal", error.label()]).inc();
                        return error.label();
                    }
                    None => return "closed_by_terminal",
                },
                reply = queued.recv() => {
                    // The driver stopped: every answer it queued has been written.
                    let Some(mut reply) = reply else {
                        return "switch_stopped";
                    };
                    // Every reply already queued goes out in the same write: with many requests in
                    // flight on one connection, one system call instead of one an answer.
                    let mut answered = false;
                    loop {
                        in_flight = in_flight.saturating_sub(1);
                        if let Reply::Answer(answer) = reply {
                            answered = true;
                            if framed.feed(Outgoing(tpdu, answer)).await.is_err() {
                                return "write_failed";
                            }
                        }
                        match queued.try_recv() {
                            Ok(next) => reply = next,
                            Err(_) => break,
                        }
                    }
                    slot.set_in_flight(in_flight);
                    if answered {
                        quiet.answered();
                        if framed.flush().await.is_err() {
                            return "write_failed";
                        }
                    }
                    if !reading && in_flight == 0 {
                        return "draining";
                    }
                }
                () = &mut check => {
                    // Bytes left unread while the connection is throttled or draining are not a slow frame.
                    let buffered = read && !framed.read_buffer().is_empty();
                    match quiet.check(buffered, framed.codec().0.keepalives(), in_flight, metrics) {
                        Ok(next) => check.as_mut().reset(next),
                        Err(reason) => {
                            tracing::info!(?conn, reason, "terminal connection quiet too long; closing");
                            return reason;
                        }
                    }
                }
                // The listener needs the slot for a new terminal; this one gives way only if nothing
                // of it is in flight (it may have sent a request since it was picked).
                () = &mut evicted, if in_flight == 0 => {
                    if slot.give_up() {
                        return "evicted";
                    }
                    evicted.set(slot.evicted());
                }
                // Draining: no new requests, but answers still go out; a connection with nothing
                // in flight is closed at once (and any other after its last answer), so that its
                // terminal reconnects to another node rather than wait, unread, for the grace period.
                () = &mut draining, if reading => {
                    reading = false;
                    if in_flight == 0 {
                        return "draining";
                    }
                }
            }
        }
    }
}

/// When a connection has been quiet too long: idle with nothing in flight, stopped inside a frame, or
/// never sent a complete frame. Checked at intervals of at most `read_timeout`, so a frame started just
/// after a check is cut off between one and two read timeouts after its first byte.
struct Quiet<'a> {
    idle: Duration,
    read: Duration,
    /// The last answer or keep-alive (or the connection's start).
    last_active: Instant,
    keepalives: u64,
    /// The first check that found part of a frame buffered.
    partial_since: Option<Instant>,
    /// Until the first complete frame: when the connection is closed without one.
    first_frame_due: Option<Instant>,
    slot: &'a Slot,
}

impl<'a> Quiet<'a> {
    fn new(settings: &Listener, slot: &'a Slot) -> Quiet<'a> {
        let now = Instant::now();
        Quiet {
            idle: settings.idle_timeout,
            read: settings.read_timeout,
            last_active: now,
            keepalives: 0,
            partial_since: None,
            first_frame_due: Some(now + settings.first_frame_timeout),
            slot,
        }
    }

    /// When to check first.
    fn first_check(&self) -> Duration {
        self.read.min(self.idle).min(
            self.first_frame_due
                .map_or(Duration::MAX, |due| due - self.last_active),
        )
    }

    /// A complete frame arrived (after `keepalives` keep-alives in all).
    fn frame(&mut self, keepalives: u64, metrics: &Metrics) {
        self.keepalives(keepalives, metrics);
        self.partial_since = None;
        self.first_frame_due = None;
    }

    /// An answer went out.
    fn answered(&mut self) {
        self.last_active = Instant::now();
        self.slot.active();
    }

    /// Counts keep-alives not yet counted; they show the connection is alive.
    fn keepalives(&mut self, keepalives: u64, metrics: &Metrics) {
        if keepalives > self.keepalives {
            metrics
                .terminal_keepalives
                .inc_by(keepalives - self.keepalives);
            self.keepalives = keepalives;
            self.first_frame_due = None;
            self.answered();
        }
    }

    /// The reason to close now, or when to check again.
    fn check(
        &mut self,
        buffered: bool,
        keepalives: u64,
        in_flight: usize,
        metrics: &Metrics,
    ) -> Result<Instant, &'static str> {
        self.keepalives(keepalives, metrics);
        let now = Instant::now();
        if !buffered {
            self.partial_since = None;
        }
        let idle_at = self.last_active + self.idle;
        let next = match self.partial_since {
            Some(since) if now >= since + self.read => return Err("read_timeout"),
            Some(since) => since + self.read,
            None if buffered => {
                self.partial_since = Some(now);
                now + self.read
            }
            None if in_flight == 0 && now >= idle_at => return Err("idle"),
            None if idle_at > now => idle_at.min(now + self.read),
            None => now + self.read,
        };
        match self.first_frame_due {
            Some(due) if now >= due => Err("first_frame_timeout"),
            Some(due) => Ok(next.min(due)),
            None => Ok(next),
        }
    }
}

/// RC 30 for a request whose MTI can be read; `None` when not even that.
fn format_error(settings: &Listener, frame: &[u8]) -> Option<Message> {
    let mti = Message::peek_mti(settings.spec, frame).ok()?.response()?;
    let mut answer = Message::new(settings.spec, mti);
    answer.set(39, ResponseCode::FORMAT_ERROR.0).ok()?;
    Some(answer)
}
