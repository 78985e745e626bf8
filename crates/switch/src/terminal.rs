//! Terminal listeners and connections: accept (within the connection cap), decode, hand requests to the
//! driver, write answers back. A connection that sends something unreadable gets RC 30 when an answer can
//! be formed, otherwise it alone is closed. A connection over the listener's cap is closed at once, so
//! the terminal learns it (and can try another switch) instead of waiting in the backlog.
//!
//! Per connection: at most `max_in_flight` requests await their answers (beyond it the connection is not
//! read, so TCP pushes back on the terminal and no answer can ever be dropped for want of queue space);
//! a connection idle for `idle_timeout` with nothing in flight, or stuck inside a frame for
//! `read_timeout`, is closed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use engine::{ConnId, Event};
use futures_util::{SinkExt, StreamExt};
use iso8583::{Message, ResponseCode};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::codec::Framed;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wire::Tpdu;

use crate::codec::{MessageCodec, Outgoing};
use crate::config::Listener;
use crate::driver::Input;
use crate::metrics::Metrics;
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
    let permits = Arc::new(Semaphore::new(settings.max_connections));
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
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics.terminal_refused.inc();
            tracing::warn!(%peer, max_connections = settings.max_connections, "connection refused: listener at its cap");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn = ConnId(next_conn.fetch_add(1, Ordering::Relaxed));
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
                Ok(stream) => serve(conn, stream, &settings, &inputs, &shutdown, &metrics).await,
                Err(reason) => reason,
            };
            tracing::debug!(?conn, %peer, reason, "terminal connection closed");
            metrics.terminal_closed.with_label_values(&[reason]).inc();
            let _ = inputs.send(Input::Event(Event::ConnClosed(conn))).await;
            metrics.terminal_connections.dec();
            drop(permit);
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

/// Carries one terminal connection until it ends; returns why.
async fn serve(
    conn: ConnId,
    stream: Stream,
    settings: &Listener,
    inputs: &mpsc::Sender<Input>,
    shutdown: &CancellationToken,
    metrics: &Metrics,
) -> &'static str {
    // Room for the answer to every request in flight: the driver's queueing never fails.
    let (answers, mut queued) = mpsc::channel(settings.max_in_flight);
    if inputs.send(Input::Opened { conn, answers }).await.is_err() {
        return "switch_stopping";
    }
    let mut framed = Framed::new(stream, MessageCodec(settings.codec));
    // Answers carry the TPDU of the terminal's last request, with its addresses swapped.
    let mut tpdu: Option<Tpdu> = None;
    let mut reading = true;
    let mut in_flight = 0;
    let mut quiet = Quiet::new(settings);
    let check = tokio::time::sleep(settings.read_timeout.min(settings.idle_timeout));
    tokio::pin!(check);
    loop {
        let read = reading && in_flight < settings.max_in_flight;
        tokio::select! {
            frame = framed.next(), if read => match frame {
                Some(Ok(frame)) => {
                    quiet.frame(framed.codec().0.keepalives(), metrics);
                    tpdu = frame.tpdu.map(Tpdu::response);
                    match Message::decode(settings.spec, frame.message.clone()) {
                        Ok(msg) => {
                            // The engine answers every request once, and ignores anything else.
                            if msg.mti().is_request() {
                                in_flight += 1;
                                if in_flight == settings.max_in_flight {
                                    metrics.terminal_throttled.inc();
                                }
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
            answer = queued.recv() => match answer {
                Some(answer) => {
                    in_flight = in_flight.saturating_sub(1);
                    if framed.send(Outgoing(tpdu, answer)).await.is_err() {
                        return "write_failed";
                    }
                }
                // The driver stopped: every answer it queued has been written.
                None => return "switch_stopped",
            },
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
            // Draining: no new requests, but answers still go out.
            _ = shutdown.cancelled(), if reading => reading = false,
        }
    }
}

/// When a connection has been quiet too long: idle with nothing in flight, or stopped inside a frame.
/// Checked at intervals of at most `read_timeout`, so a frame started just after a check is cut off
/// between one and two read timeouts after its first byte.
struct Quiet {
    idle: Duration,
    read: Duration,
    /// The last complete frame or keep-alive.
    last_frame: Instant,
    keepalives: u64,
    /// The first check that found part of a frame buffered.
    partial_since: Option<Instant>,
}

impl Quiet {
    fn new(settings: &Listener) -> Quiet {
        Quiet {
            idle: settings.idle_timeout,
            read: settings.read_timeout,
            last_frame: Instant::now(),
            keepalives: 0,
            partial_since: None,
        }
    }

    /// A complete frame arrived (after `keepalives` keep-alives in all).
    fn frame(&mut self, keepalives: u64, metrics: &Metrics) {
        self.keepalives(keepalives, metrics);
        self.last_frame = Instant::now();
        self.partial_since = None;
    }

    /// Counts keep-alives not yet counted; they show the connection is alive.
    fn keepalives(&mut self, keepalives: u64, metrics: &Metrics) {
        if keepalives > self.keepalives {
            metrics
                .terminal_keepalives
                .inc_by(keepalives - self.keepalives);
            self.keepalives = keepalives;
            self.last_frame = Instant::now();
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
        let idle_at = self.last_frame + self.idle;
        match self.partial_since {
            Some(since) if now >= since + self.read => Err("read_timeout"),
            Some(since) => Ok(since + self.read),
            None if buffered => {
                self.partial_since = Some(now);
                Ok(now + self.read)
            }
            None if in_flight == 0 && now >= idle_at => Err("idle"),
            None if idle_at > now => Ok(idle_at.min(now + self.read)),
            None => Ok(now + self.read),
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
