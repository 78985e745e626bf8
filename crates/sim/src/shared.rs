//! Connections shared by several terminals, as a terminal concentrator or a payment gateway puts many
//! terminals on a few links: each link carries many requests at once, and an answer finds its terminal
//! by DE41, message class and STAN. A link that drops fails every request waiting on it (each terminal
//! then acts as on a lost connection: retransmit or reverse) and is opened again by the next request.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use iso8583::{Class, Message, Spec};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::Framed;
use wire::{Frame, FrameCodec};

use crate::outcome::Progress;
use crate::terminals::Waited;

/// Terminal ID, class and STAN of a request, which its answer echoes.
type Key = (Vec<u8>, Class, u32);

type Waiters = Arc<Mutex<HashMap<Key, oneshot::Sender<Message>>>>;

/// One link, opened on first use and again after it drops.
#[derive(Debug)]
pub(crate) struct Shared {
    addr: SocketAddr,
    spec: &'static Spec,
    codec: FrameCodec,
    link: tokio::sync::Mutex<Option<Link>>,
}

#[derive(Debug)]
struct Link {
    frames: mpsc::UnboundedSender<Frame>,
    waiters: Waiters,
    closed: Arc<AtomicBool>,
}

impl Shared {
    pub(crate) fn new(addr: SocketAddr, spec: &'static Spec, codec: FrameCodec) -> Shared {
        Shared {
            addr,
            spec,
            codec,
            link: tokio::sync::Mutex::new(None),
        }
    }

    /// Sends `msg` of terminal `terminal` and waits up to `timeout` for its answer.
    pub(crate) async fn exchange(
        &self,
        msg: &Message,
        terminal: &[u8],
        stan: u32,
        timeout: Duration,
        progress: &Progress,
    ) -> Waited {
        let key = (terminal.to_vec(), msg.mti().class(), stan);
        let (answer, waiting) = oneshot::channel();
        let (frames, waiters) = {
            let mut link = self.link.lock().await;
            if link
                .as_ref()
                .is_none_or(|l| l.closed.load(Ordering::Acquire))
            {
                match TcpStream::connect(self.addr).await {
                    Ok(stream) => {
                        let _ = stream.set_nodelay(true);
                        Progress::bump(&progress.connects);
                        *link = Some(self.open(stream));
                    }
                    Err(error) => {
                        tracing::debug!(%error, "cannot reach the switch");
                        drop(link);
                        tokio::time::sleep(timeout.min(Duration::from_secs(1))).await;
                        return Waited::Closed;
                    }
                }
            }
            let link = link.as_ref().expect("opened above");
            (link.frames.clone(), link.waiters.clone())
        };
        waiters
            .lock()
            .expect("never poisoned")
            .insert(key.clone(), answer);
        let frame = Frame {
            tpdu: None,
            message: msg.to_bytes(),
        };
        if frames.send(frame).is_err() {
            return Waited::Closed;
        }
        match tokio::time::timeout(timeout, waiting).await {
            Ok(Ok(answer)) => Waited::Answer(answer),
            // The link dropped: its reader let go of every waiter.
            Ok(Err(_)) => Waited::Closed,
            Err(_) => {
                waiters.lock().expect("never poisoned").remove(&key);
                Waited::TimedOut
            }
        }
    }

    /// Starts the writer (frames coalesced into one flush while more are queued) and the reader (each
    /// answer to its waiter; anything unmatched, a late answer, is dropped).
    fn open(&self, stream: TcpStream) -> Link {
        let (mut sink, mut stream) = Framed::new(stream, self.codec).split();
        let (frames, mut queued) = mpsc::unbounded_channel::<Frame>();
        let waiters = Waiters::default();
        let closed = Arc::new(AtomicBool::new(false));
        tokio::spawn(async move {
            while let Some(frame) = queued.recv().await {
                let mut sent = sink.feed(frame).await;
                while let (Ok(()), Ok(frame)) = (&sent, queued.try_recv()) {
                    sent = sink.feed(frame).await;
                }
                if sent.is_err() || sink.flush().await.is_err() {
                    break;
                }
            }
        });
        let (spec, reader_waiters, reader_closed) = (self.spec, waiters.clone(), closed.clone());
        tokio::spawn(async move {
            while let Some(Ok(frame)) = stream.next().await {
                let Ok(answer) = Message::decode(spec, frame.message) else {
                    continue;
                };
                let (Some(terminal), Some(stan)) = (answer.terminal_id(), answer.stan()) else {
                    continue;
                };
                if answer.mti().is_request() {
                    continue;
                }
                let key = (terminal.to_vec(), answer.mti().class(), stan);
                let waiter = reader_waiters.lock().expect("never poisoned").remove(&key);
                if let Some(waiter) = waiter {
                    let _ = waiter.send(answer);
                }
            }
            reader_closed.store(true, Ordering::Release);
            reader_waiters.lock().expect("never poisoned").clear();
        });
        Link {
            frames,
            waiters,
            closed,
        }
    }
}
