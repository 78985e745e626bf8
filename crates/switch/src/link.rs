//! One upstream link: connect (with backoff and jitter), tell the driver it is up, carry frames both ways,
//! tell the driver when it drops, and reconnect.

use std::sync::Arc;
use std::time::Duration;

use engine::{Event, Licence, LinkId};
use futures_util::{SinkExt, StreamExt};
use iso8583::Message;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::Framed;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;

use crate::codec::{MessageCodec, Outgoing};
use crate::config::Link;
use crate::driver::Input;
use crate::licence::Licensed;
use crate::metrics::Metrics;
use crate::tls::Stream;

/// How long a TLS handshake with an issuer may take.
const TLS_HANDSHAKE: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub(crate) enum LinkCmd {
    Send(Message),
    /// Drop the connection (failed sign-on or echo); it reconnects.
    Close,
}

/// Reconnect delays: doubling from 100 ms to 30 s, each with up to half again of random jitter, so that
/// the many links to a host that came back do not all reconnect in the same instant.
#[derive(Debug)]
struct Backoff(Duration);

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(30);

    fn new() -> Backoff {
        Backoff(Self::FIRST)
    }

    /// The delay before the next attempt.
    fn next(&mut self) -> Duration {
        let base = self.0;
        self.0 = (base * 2).min(Self::MAX);
        base + Duration::from_millis(fastrand::u64(0..=base.as_millis() as u64 / 2))
    }
}

/// Runs until the driver goes away, or, while not connected, until `stopped` (the driver has ended, so
/// there is nothing left to write), or once `licensed` never will be again.
pub(crate) async fn run(
    id: LinkId,
    link: Link,
    mut cmds: mpsc::Receiver<LinkCmd>,
    inputs: mpsc::Sender<Input>,
    metrics: Arc<Metrics>,
    mut licensed: Licensed,
    stopped: CancellationToken,
) {
    let connect_failures = metrics
        .link_connect_failures
        .with_label_values(&Metrics::link_labels(id, &link));
    let mut backoff = Backoff::new();
    while !cmds.is_closed() {
        let stream = match stopped.run_until_cancelled(connect(&link)).await {
            None => return,
            Some(Ok(stream)) => stream,
            Some(Err(error)) => {
                connect_failures.inc();
                let delay = backoff.next();
                tracing::warn!(?id, issuer = %link.issuer, host = %link.host, %error, ?delay, "link connect failed");
                if stopped
                    .run_until_cancelled(tokio::time::sleep(delay))
                    .await
                    .is_none()
                {
                    return;
                }
                continue;
            }
        };
        backoff = Backoff::new();
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
            &metrics,
            &mut licensed,
        )
        .await;
        tracing::warn!(?id, issuer = %link.issuer, host = %link.host, reason, "link down");
        if reason == UNLICENSED {
            return;
        }
        if inputs
            .send(Input::Event(Event::LinkDown(id)))
            .await
            .is_err()
        {
            return;
        }
    }
}

/// A TCP connection to the link's host, over TLS when the issuer is configured for it.
async fn connect(link: &Link) -> std::io::Result<Stream> {
    let stream = TcpStream::connect(&link.host).await?;
    let _ = stream.set_nodelay(true);
    let Some(tls) = &link.tls else {
        return Ok(Either::Left(stream));
    };
    tokio::time::timeout(TLS_HANDSHAKE, tls.connect(stream))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out"))?
}

/// Why a link ends for good in cluster mode: the node's lease ran out by its own clock and will not be
/// renewed (the node was fenced, or it is stopping). The node that takes its work over sends what it
/// owes; anything this one wrote now could reach the issuer after that node's reversals.
const UNLICENSED: &str = "the node's lease ran out: nothing more is written upstream";

/// Moves frames until the connection ends; returns why.
async fn carry(
    id: LinkId,
    link: &Link,
    mut framed: Framed<Stream, MessageCodec>,
    cmds: &mut mpsc::Receiver<LinkCmd>,
    inputs: &mpsc::Sender<Input>,
    metrics: &Metrics,
    licensed: &mut Licensed,
) -> &'static str {
    loop {
        tokio::select! {
            frame = framed.next() => match frame {
                Some(Ok(frame)) => match Message::decode(link.spec, frame.message) {
                    Ok(msg) => {
                        if inputs.send(Input::Event(Event::Response { link: id, msg })).await.is_err() {
                            write_queued(link, &mut framed, cmds, licensed).await;
                            return "switch stopping";
                        }
                    }
                    Err(error) => {
                        tracing::warn!(?id, %error, "undecodable message from the issuer; dropped");
                        metrics.decode_errors.with_label_values(&["issuer", error.reason().label()]).inc();
                    }
                },
                Some(Err(error)) => {
                    tracing::warn!(?id, %error, "framing error from the issuer");
                    metrics.decode_errors.with_label_values(&["issuer", error.label()]).inc();
                    return error.label();
                }
                None => return "closed by the issuer",
            },
            cmd = cmds.recv() => match cmd {
                Some(LinkCmd::Send(msg)) => {
                    match write_batch(link, &mut framed, msg, cmds, licensed).await {
                        Ok(Batch::Written) => {}
                        Ok(Batch::Close) => return "closed by the switch",
                        Ok(Batch::Unlicensed) => return UNLICENSED,
                        Err(error) => {
                            tracing::warn!(?id, %error, "write to the issuer failed");
                            return "write failed";
                        }
                    }
                }
                Some(LinkCmd::Close) => return "closed by the switch",
                None => return "switch stopping",
            },
        }
    }
}

/// How a batch of writes ended.
enum Batch {
    Written,
    /// The driver asked to close the link after these messages.
    Close,
    /// Nothing was written, and nothing more will be: see [`UNLICENSED`].
    Unlicensed,
}

/// Writes `first` and every message already queued behind it, then flushes once: under load, many
/// requests share one write call instead of one each. A message that needs the node's leave to write
/// upstream (see [`engine::Licence`]) waits for it, after those before it are flushed: after a pause,
/// until the lease is renewed.
async fn write_batch(
    link: &Link,
    framed: &mut Framed<Stream, MessageCodec>,
    first: Message,
    cmds: &mut mpsc::Receiver<LinkCmd>,
    licensed: &mut Licensed,
) -> Result<Batch, wire::Error> {
    // Asked once a batch: its messages are all at hand, so it is written within moments of asking.
    let mut asked = false;
    let mut next = Some(first);
    let mut end = Batch::Written;
    while let Some(msg) = next.take() {
        if !asked && Licence::needed_for(msg.mti()) {
            asked = true;
            if !licensed.holds() {
                framed.flush().await?;
                if !licensed.wait().await {
                    return Ok(Batch::Unlicensed);
                }
            }
        }
        framed.feed(Outgoing(link.tpdu, msg)).await?;
        match cmds.try_recv() {
            Ok(LinkCmd::Send(msg)) => next = Some(msg),
            Ok(LinkCmd::Close) => end = Batch::Close,
            Err(_) => {}
        }
    }
    framed.flush().await?;
    Ok(end)
}

/// Writes what the driver queued before it stopped: the reversals of requests cut off by the end of a
/// shutdown's grace period are among them.
async fn write_queued(
    link: &Link,
    framed: &mut Framed<Stream, MessageCodec>,
    cmds: &mut mpsc::Receiver<LinkCmd>,
    licensed: &mut Licensed,
) {
    if let Ok(LinkCmd::Send(first)) = cmds.try_recv() {
        let _ = write_batch(link, framed, first, cmds, licensed).await;
    }
}

#[cfg(test)]
mod tests {
    use iso8583::Mti;
    use tokio::net::TcpListener;
    use wire::{FrameCodec, LengthHeader};

    use super::*;

    const LEASE: Duration = Duration::from_secs(5);

    /// A link to a listening issuer with a licence that ran out, connected; the issuer's side, the
    /// link's commands and the lease task's end of the licence.
    async fn unlicensed_link() -> (
        Framed<TcpStream, MessageCodec>,
        mpsc::Sender<LinkCmd>,
        tokio::sync::watch::Sender<Licence>,
    ) {
        let issuer = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let link = Link {
            issuer: "issuer".into(),
            host: issuer.local_addr().expect("its address").to_string(),
            spec: dialects::load("iso87ascii").expect("a built-in dialect"),
            codec: FrameCodec::new(LengthHeader::Binary2),
            tpdu: None,
            tls: None,
        };
        let ran_out = std::time::Instant::now()
            .checked_sub(LEASE)
            .expect("an uptime of a lease");
        let (renewals, licensed) = Licensed::leased(Licence::from_renewal(ran_out, LEASE));
        let (cmds, rx) = mpsc::channel(8);
        let (inputs, mut events) = mpsc::channel(8);
        let codec = MessageCodec(link.codec);
        tokio::spawn(run(
            LinkId(0),
            link,
            rx,
            inputs,
            Arc::new(Metrics::new(LEASE)),
            licensed,
            CancellationToken::new(),
        ));
        let (socket, _) = issuer.accept().await.expect("the link connects");
        let up = events.recv().await;
        assert!(matches!(up, Some(Input::Event(Event::LinkUp(_)))), "{up:?}");
        // The events go on coming (the link down at its end): nobody needs them.
        tokio::spawn(async move { while events.recv().await.is_some() {} });
        (Framed::new(socket, codec), cmds, renewals)
    }

    async fn send(cmds: &mpsc::Sender<LinkCmd>, mti: &[u8; 4]) {
        let spec = dialects::load("iso87ascii").expect("a built-in dialect");
        let msg = Message::new(spec, Mti::new(*mti).expect("an MTI"));
        cmds.send(LinkCmd::Send(msg))
            .await
            .expect("the link takes it");
    }

    async fn received(issuer: &mut Framed<TcpStream, MessageCodec>) -> Option<String> {
        let frame = issuer.next().await?.expect("a frame");
        Some(String::from_utf8_lossy(&frame.message[..4]).into_owned())
    }

    #[tokio::test]
    async fn past_its_licence_a_link_writes_a_request_only_once_the_lease_is_renewed() {
        let (mut issuer, cmds, renewals) = unlicensed_link().await;
        send(&cmds, b"0400").await;
        send(&cmds, b"0200").await;
        assert_eq!(
            received(&mut issuer).await.as_deref(),
            Some("0400"),
            "a reversal goes at once"
        );
        renewals.send_replace(Licence::from_renewal(std::time::Instant::now(), LEASE));
        assert_eq!(received(&mut issuer).await.as_deref(), Some("0200"));
    }

    #[tokio::test]
    async fn a_request_past_the_licence_of_a_lease_that_will_not_be_renewed_is_never_written() {
        let (mut issuer, cmds, renewals) = unlicensed_link().await;
        send(&cmds, b"0400").await;
        send(&cmds, b"0200").await;
        assert_eq!(received(&mut issuer).await.as_deref(), Some("0400"));
        drop(renewals);
        assert_eq!(
            received(&mut issuer).await,
            None,
            "the link ends without writing the request"
        );
    }

    #[test]
    fn reconnect_delays_double_with_jitter_up_to_a_cap() {
        let mut backoff = Backoff::new();
        let mut base = Backoff::FIRST;
        for _ in 0..12 {
            let delay = backoff.next();
            assert!(
                delay >= base && delay <= base + base / 2,
                "{delay:?} for {base:?}"
            );
            base = (base * 2).min(Backoff::MAX);
        }
        assert_eq!(base, Backoff::MAX, "the cap is reached");
        let delays: Vec<Duration> = (0..20).map(|_| backoff.next()).collect();
        assert!(delays.iter().any(|d| *d != delays[0]), "jittered");
    }
}
