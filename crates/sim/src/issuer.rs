//! The issuer host simulator: answers 0100/0200 by [`Rules`], 0800 with 0810, 0400/0401 with 0410, and
//! keeps a [`Ledger`] of what it debited and credited.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use iso8583::{Message, Spec};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite};
use wire::{Frame, FrameCodec};

use crate::ledger::Ledger;
use crate::rules::{Action, Rules};

/// Fields an answer repeats from its request.
const ECHO: &[u8] = &[2, 3, 4, 7, 11, 12, 13, 32, 37, 41, 42, 49, 70, 90];
/// Answers queued for one connection's writer.
const QUEUE: usize = 4096;

#[derive(Debug, Clone)]
pub struct IssuerSim {
    pub addr: SocketAddr,
    ledger: Arc<Mutex<Ledger>>,
}

struct Shared {
    spec: &'static Spec,
    codec: FrameCodec,
    rules: Rules,
    ledger: Arc<Mutex<Ledger>>,
}

impl IssuerSim {
    /// Listens on `listener` until the runtime stops.
    pub fn start(
        listener: TcpListener,
        spec: &'static Spec,
        codec: FrameCodec,
        rules: Rules,
    ) -> IssuerSim {
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let sim = IssuerSim {
            addr: listener.local_addr().expect("a bound listener"),
            ledger: ledger.clone(),
        };
        let shared = Arc::new(Shared {
            spec,
            codec,
            rules,
            ledger,
        });
        tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        let _ = stream.set_nodelay(true);
                        tokio::spawn(serve(stream, shared.clone()));
                    }
                    Err(error) => {
                        tracing::warn!(%error, "issuer simulator: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        sim
    }

    /// A copy of the books.
    pub fn ledger(&self) -> Ledger {
        self.ledger
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

async fn serve(stream: TcpStream, shared: Arc<Shared>) {
    let (read, write) = stream.into_split();
    let mut frames = FramedRead::new(read, shared.codec);
    let mut sink = FramedWrite::new(write, shared.codec);
    let (answers, mut queued) = mpsc::channel::<(Option<wire::Tpdu>, Message)>(QUEUE);
    let writer = tokio::spawn(async move {
        let frame = |(tpdu, m): (Option<wire::Tpdu>, Message)| Frame {
            tpdu,
            message: m.to_bytes(),
        };
        // Answers already queued go out in one write with the first, as a busy host's would.
        while let Some(first) = queued.recv().await {
            if sink.feed(frame(first)).await.is_err() {
                return;
            }
            while let Ok(next) = queued.try_recv() {
                if sink.feed(frame(next)).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });
    while let Some(Ok(frame)) = frames.next().await {
        let tpdu = frame.tpdu.map(wire::Tpdu::response);
        let msg = match Message::decode(shared.spec, frame.message) {
            Ok(m) => m,
            Err(error) => {
                tracing::warn!(%error, "issuer simulator: undecodable request; closing");
                break;
            }
        };
        let (answer, delay) = match reply(&shared, &msg) {
            Reply::Send(answer, delay) => (answer, delay),
            Reply::Nothing => continue,
            Reply::Close => break,
        };
        if delay.is_zero() {
            if answers.send((tpdu, answer)).await.is_err() {
                break;
            }
        } else {
            let answers = answers.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = answers.send((tpdu, answer)).await;
            });
        }
    }
    drop(answers);
    // Delayed answers still pending keep the writer going until they are sent.
    let _ = writer.await;
}

enum Reply {
    /// This answer, after this delay.
    Send(Message, Duration),
    Nothing,
    Close,
}

/// What to do with `msg`; the books are updated when the decision is taken, before any delay.
fn reply(shared: &Shared, msg: &Message) -> Reply {
    let Ok(mut answer) = msg.response(ECHO) else {
        return Reply::Nothing;
    };
    let books = || shared.ledger.lock().unwrap_or_else(|e| e.into_inner());
    // A reversal or an advice is refused now and then (96), and not applied: the switch repeats it.
    let owed = |msg: &Message| {
        if fastrand::f64() < shared.rules.refuse_share {
            return "96".to_string();
        }
        books().book(msg, msg.amount().unwrap_or(0));
        "00".into()
    };
    let (rc, delay) = match (msg.mti().class().digit(), msg.mti().function()) {
        // An advice tells the issuer what the terminal already did: booked (once) and acknowledged.
        (1 | 2, 2) => (owed(msg), Duration::ZERO),
        (1 | 2, _) => {
            let decision = shared.rules.decide(msg);
            match decision.action {
                Action::Close => return Reply::Close,
                Action::Decline => {}
                Action::Partial => {
                    let half = msg.amount().unwrap_or(0) / 2;
                    books().book(msg, half);
                    let _ = answer.set_number(4, half);
                    let _ = answer.set(38, auth_code());
                }
                Action::Approve | Action::Drop => {
                    books().book(msg, msg.amount().unwrap_or(0));
                    if decision.action == Action::Drop {
                        return Reply::Nothing;
                    }
                    let _ = answer.set(38, auth_code());
                }
            }
            (decision.rc, decision.delay)
        }
        (4, _) => (owed(msg), Duration::ZERO),
        _ => ("00".into(), Duration::ZERO),
    };
    match answer.set(39, &rc) {
        Ok(_) => Reply::Send(answer, delay),
        Err(_) => Reply::Nothing,
    }
}

fn auth_code() -> String {
    format!("{:06}", fastrand::u32(0..1_000_000))
}
