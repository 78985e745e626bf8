//! A terminal: one connection that sends requests and reads answers.

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use iso8583::{Message, Spec};
use sim::Purchase;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;
use wire::{Frame, FrameCodec, Tpdu};

pub const PAN: &str = "4761739001010010";

pub struct Terminal {
    pub framed: Framed<TcpStream, FrameCodec>,
    pub spec: &'static Spec,
    pub tpdu: Option<Tpdu>,
    pub tid: String,
}

impl Terminal {
    pub async fn connect(
        addr: SocketAddr,
        spec: &'static Spec,
        codec: FrameCodec,
        tid: &str,
    ) -> Terminal {
        Terminal {
            framed: Framed::new(TcpStream::connect(addr).await.unwrap(), codec),
            spec,
            tpdu: None,
            tid: tid.into(),
        }
    }

    /// A purchase of `amount` with `stan` from this terminal (a unique RRN per STAN).
    pub fn purchase(&self, stan: u32, amount: u64) -> Message {
        Purchase {
            pan: PAN.into(),
            amount,
            stan,
            rrn: format!("{stan:012}"),
            terminal: self.tid.clone(),
            ..Purchase::example()
        }
        .message(self.spec)
        .unwrap()
    }

    pub async fn send(&mut self, msg: &Message) {
        self.send_raw(msg.to_bytes()).await;
    }

    pub async fn send_raw(&mut self, message: bytes::Bytes) {
        self.framed
            .send(Frame {
                tpdu: self.tpdu,
                message,
            })
            .await
            .unwrap();
    }

    /// The next answer; panics if the connection closes first.
    pub async fn answer(&mut self) -> Message {
        let frame = super::within("an answer", self.framed.next())
            .await
            .expect("connection open")
            .unwrap();
        if let Some(sent) = self.tpdu {
            assert_eq!(
                frame.tpdu,
                Some(sent.response()),
                "TPDU swapped on the answer"
            );
        }
        Message::decode(self.spec, frame.message).unwrap()
    }

    pub async fn exchange(&mut self, msg: &Message) -> Message {
        self.send(msg).await;
        self.answer().await
    }

    /// True when the switch closed the connection (no frame comes).
    pub async fn closed(&mut self) -> bool {
        matches!(
            super::within("close", self.framed.next()).await,
            None | Some(Err(_))
        )
    }
}

pub fn text(m: &Message, n: u8) -> String {
    m.get(n)
        .map(|f| f.unmasked().to_string())
        .unwrap_or_default()
}
