//! One upstream link: connect (with backoff and jitter), tell the driver it is up, carry frames both ways,
//! tell the driver when it drops, and reconnect.

use std::time::Duration;

use engine::{Event, LinkId};
use futures_util::{SinkExt, StreamExt};
use iso8583::Message;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::Framed;

use crate::codec::{MessageCodec, Outgoing};
use crate::config::Link;
use crate::driver::Input;

#[derive(Debug)]
pub(crate) enum LinkCmd {
    Send(Message),
    /// Drop the connection (failed sign-on or echo); it reconnects.
    Close,
}

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Runs until the driver goes away.
pub(crate) async fn run(
    id: LinkId,
    link: Link,
    mut cmds: mpsc::Receiver<LinkCmd>,
    inputs: mpsc::Sender<Input>,
) {
    let mut backoff = FIRST_BACKOFF;
    while !cmds.is_closed() {
        let stream = match TcpStream::connect(&link.host).await {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(?id, issuer = %link.issuer, host = %link.host, %error, ?backoff, "link connect failed");
                // Jitter spreads the reconnects of many links to one host that came back.
                let jitter =
                    Duration::from_millis(fastrand::u64(0..=backoff.as_millis() as u64 / 2));
                tokio::time::sleep(backoff + jitter).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = FIRST_BACKOFF;
        let _ = stream.set_nodelay(true);
        // Whatever was queued for the previous connection is stale: those requests time out and are
        // reversed by the engine.
        while cmds.try_recv().is_ok() {}
        tracing::info!(?id, issuer = %link.issuer, host = %link.host, "link connected");
        if inputs.send(Input::Event(Event::LinkUp(id))).await.is_err() {
            return;
        }
        let reason = carry(
            id,
            &link,
            Framed::new(stream, MessageCodec(link.codec)),
            &mut cmds,
            &inputs,
        )
        .await;
        tracing::warn!(?id, issuer = %link.issuer, host = %link.host, reason, "link down");
        if inputs
            .send(Input::Event(Event::LinkDown(id)))
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Moves frames until the connection ends; returns why.
async fn carry(
    id: LinkId,
    link: &Link,
    mut framed: Framed<TcpStream, MessageCodec>,
    cmds: &mut mpsc::Receiver<LinkCmd>,
    inputs: &mpsc::Sender<Input>,
) -> &'static str {
    loop {
        tokio::select! {
            frame = framed.next() => match frame {
                Some(Ok(frame)) => match Message::decode(&link.spec, frame.message) {
                    Ok(msg) => {
                        if inputs.send(Input::Event(Event::Response { link: id, msg })).await.is_err() {
                            return "switch stopping";
                        }
                    }
                    Err(error) => tracing::warn!(?id, %error, "undecodable message from the issuer; dropped"),
                },
                Some(Err(error)) => {
                    tracing::warn!(?id, %error, "framing error from the issuer");
                    return error.label();
                }
                None => return "closed by the issuer",
            },
            cmd = cmds.recv() => match cmd {
                Some(LinkCmd::Send(msg)) => {
                    if let Err(error) = framed.send(Outgoing(link.tpdu, msg)).await {
                        tracing::warn!(?id, %error, "write to the issuer failed");
                        return "write failed";
                    }
                }
                Some(LinkCmd::Close) => return "closed by the switch",
                None => return "switch stopping",
            },
        }
    }
}
