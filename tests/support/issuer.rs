//! A test issuer host. What it does with a request depends on the amount (DE4):
//! - `…51` declines with RC 51;
//! - 777 never answers; 778 never answers the first reversal attempt for it (acknowledges the repeat);
//! - 888 answers after `late` (set it past the switch's timeout);
//! - 555 holds the answer until [`Issuer::release`];
//! - 999 closes the connection;
//! - anything else is approved with auth code A1B2C3.
//!
//! 0800 and 0400/0401 are always answered with RC 00 (except as above). Every message received is kept.
//! [`Issuer::stop`] takes the host down (listener and connections); [`Issuer::start_at`] brings one back.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use iso8583::{Message, Spec};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;
use wire::{Frame, FrameCodec, LengthHeader};

#[derive(Clone)]
pub struct Issuer {
    pub addr: SocketAddr,
    /// Each message with the number of the connection it came on.
    received: Arc<Mutex<Vec<(usize, Message)>>>,
    changed: Arc<watch::Sender<u64>>,
    released: Arc<watch::Sender<bool>>,
    pub connections: Arc<Mutex<usize>>,
    stopped: CancellationToken,
}

impl Issuer {
    pub async fn start(spec: &'static Spec, late: Duration) -> Issuer {
        Issuer::start_at("127.0.0.1:0".parse().unwrap(), spec, late).await
    }

    /// A host on `addr` (the address of one that was stopped, to bring it back).
    pub async fn start_at(addr: SocketAddr, spec: &'static Spec, late: Duration) -> Issuer {
        let listener = TcpListener::bind(addr).await.unwrap();
        let issuer = Issuer {
            addr: listener.local_addr().unwrap(),
            received: Arc::default(),
            changed: Arc::new(watch::Sender::new(0)),
            released: Arc::new(watch::Sender::new(false)),
            connections: Arc::default(),
            stopped: CancellationToken::new(),
        };
        let me = issuer.clone();
        tokio::spawn(async move {
            while let Some(Ok((stream, _))) =
                me.stopped.run_until_cancelled(listener.accept()).await
            {
                let conn = {
                    let mut n = me.connections.lock().unwrap();
                    *n += 1;
                    *n
                };
                let _ = stream.set_nodelay(true);
                tokio::spawn(me.clone().serve(conn, stream, spec, late));
            }
        });
        issuer
    }

    async fn serve(
        self,
        conn: usize,
        stream: tokio::net::TcpStream,
        spec: &'static Spec,
        late: Duration,
    ) {
        let codec = FrameCodec::new(LengthHeader::Binary2);
        let (read, write) = stream.into_split();
        let (mut stream, mut sink) = (FramedRead::new(read, codec), FramedWrite::new(write, codec));
        let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
        let stopped = self.stopped.clone();
        tokio::spawn(async move {
            while let Some(Some(m)) = stopped.run_until_cancelled(rx.recv()).await {
                let frame = Frame {
                    tpdu: None,
                    message: m.to_bytes(),
                };
                if sink.send(frame).await.is_err() {
                    return;
                }
            }
        });
        while let Some(Some(Ok(frame))) = self.stopped.run_until_cancelled(stream.next()).await {
            let msg = Message::decode(spec, frame.message).unwrap();
            let amount = msg.amount().unwrap_or(0);
            let class = msg.mti().class().digit();
            let first_reversal_of_778 = class == 4 && amount == 778 && msg.mti().as_str() == "0400";
            self.record(conn, msg.clone());
            let mut answer = msg
                .response(&[2, 3, 4, 7, 11, 32, 37, 41, 42, 49, 70, 90])
                .unwrap();
            let rc = if amount % 100 == 51 && class != 4 {
                "51"
            } else {
                "00"
            };
            answer.set(39, rc).unwrap();
            if rc == "00" && matches!(class, 1 | 2) {
                answer.set(38, "A1B2C3").unwrap();
            }
            match (class, amount) {
                (1 | 2, 777 | 778) => {}
                _ if first_reversal_of_778 => {}
                (1 | 2, 999) => return,
                (1 | 2, 888) => {
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(late).await;
                        let _ = tx.send(answer);
                    });
                }
                (1 | 2, 555) => {
                    let (tx, mut released) = (tx.clone(), self.released.subscribe());
                    tokio::spawn(async move {
                        let _ = released.wait_for(|r| *r).await;
                        let _ = tx.send(answer);
                    });
                }
                _ => {
                    let _ = tx.send(answer);
                }
            }
        }
    }

    fn record(&self, conn: usize, msg: Message) {
        self.received.lock().unwrap().push((conn, msg));
        self.changed.send_modify(|n| *n += 1);
    }

    /// Takes the host down: it stops listening and closes every connection.
    pub fn stop(&self) {
        self.stopped.cancel();
    }

    /// Lets every held (555) answer go.
    pub fn release(&self) {
        self.released.send_replace(true);
    }

    pub fn received(&self) -> Vec<Message> {
        self.received_on().into_iter().map(|(_, m)| m).collect()
    }

    /// Received messages with their connection numbers.
    pub fn received_on(&self) -> Vec<(usize, Message)> {
        self.received.lock().unwrap().clone()
    }

    /// Received messages of MTI class `class`, excluding network management unless asked.
    pub fn of_class(&self, class: u8) -> Vec<Message> {
        self.received()
            .into_iter()
            .filter(|m| m.mti().class().digit() == class)
            .collect()
    }

    /// Waits until a reversal (MTI class 4) has come in.
    pub async fn until_reversed(&self) {
        let reversed = self.wait_for(|r| r.iter().any(|m| m.mti().class().digit() == 4));
        super::within("a reversal at the issuer", reversed).await;
    }

    /// Waits until the messages received satisfy `done`.
    pub async fn wait_for(&self, mut done: impl FnMut(&[Message]) -> bool) {
        let mut changes = self.changed.subscribe();
        loop {
            if done(&self.received()) {
                return;
            }
            changes.changed().await.unwrap();
        }
    }
}
