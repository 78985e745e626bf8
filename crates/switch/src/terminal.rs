//! Terminal listeners and connections: accept (within the connection cap), decode, hand requests to the
//! driver, write answers back. A connection that sends something unreadable gets RC 30 when an answer can
//! be formed, otherwise it alone is closed. A connection over the listener's cap is closed at once, so
//! the terminal learns it (and can try another switch) instead of waiting in the backlog.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use engine::{ConnId, Event};
use futures_util::{SinkExt, StreamExt};
use iso8583::{Message, ResponseCode};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wire::Tpdu;

use crate::codec::{MessageCodec, Outgoing};
use crate::config::Listener;
use crate::driver::Input;
use crate::metrics::Metrics;

/// Answers queued for one connection; a terminal that stops reading has its answers dropped.
const ANSWER_QUEUE: usize = 64;

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
            let reason = serve(conn, stream, &settings, &inputs, &shutdown, &metrics).await;
            tracing::debug!(?conn, %peer, reason, "terminal connection closed");
            let _ = inputs.send(Input::Event(Event::ConnClosed(conn))).await;
            metrics.terminal_connections.dec();
            drop(permit);
        });
    }
}

/// Carries one terminal connection until it ends; returns why.
async fn serve(
    conn: ConnId,
    stream: TcpStream,
    settings: &Listener,
    inputs: &mpsc::Sender<Input>,
    shutdown: &CancellationToken,
    metrics: &Metrics,
) -> &'static str {
    let (answers, mut queued) = mpsc::channel(ANSWER_QUEUE);
    if inputs.send(Input::Opened { conn, answers }).await.is_err() {
        return "switch stopping";
    }
    let mut framed = Framed::new(stream, MessageCodec(settings.codec));
    // Answers carry the TPDU of the terminal's last request, with its addresses swapped.
    let mut tpdu: Option<Tpdu> = None;
    let mut reading = true;
    loop {
        tokio::select! {
            frame = framed.next(), if reading => match frame {
                Some(Ok(frame)) => {
                    tpdu = frame.tpdu.map(Tpdu::response);
                    match Message::decode(&settings.spec, frame.message.clone()) {
                        Ok(msg) => {
                            if inputs.send(Input::Event(Event::Request { conn, msg })).await.is_err() {
                                return "switch stopping";
                            }
                        }
                        Err(error) => {
                            tracing::warn!(?conn, %error, "undecodable terminal message");
                            metrics.decode_errors.with_label_values(&["terminal", error.reason().label()]).inc();
                            let Some(answer) = format_error(settings, &frame.message) else {
                                return "undecodable message";
                            };
                            if framed.send(Outgoing(tpdu, answer)).await.is_err() {
                                return "write failed";
                            }
                        }
                    }
                }
                Some(Err(error)) => {
                    tracing::warn!(?conn, %error, "terminal framing error; closing");
                    metrics.decode_errors.with_label_values(&["terminal", error.label()]).inc();
                    return error.label();
                }
                None => return "closed by the terminal",
            },
            answer = queued.recv() => match answer {
                Some(answer) => {
                    if framed.send(Outgoing(tpdu, answer)).await.is_err() {
                        return "write failed";
                    }
                }
                // The driver stopped: every answer it queued has been written.
                None => return "switch stopped",
            },
            // Draining: no new requests, but answers still go out.
            _ = shutdown.cancelled(), if reading => reading = false,
        }
    }
}

/// RC 30 for a request whose MTI can be read; `None` when not even that.
fn format_error(settings: &Listener, frame: &[u8]) -> Option<Message> {
    let mti = Message::peek_mti(&settings.spec, frame).ok()?.response()?;
    let mut answer = Message::new(settings.spec.clone(), mti);
    answer.set(39, ResponseCode::FORMAT_ERROR.0).ok()?;
    Some(answer)
}
