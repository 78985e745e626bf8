//! Cluster mode's real nodes for the end-to-end tests: `acquiro serve --node` on a throw-away
//! PostgreSQL, and what the tests send them.

use std::net::SocketAddr;

use cluster::throwaway::Server;
use iso8583::{Message, Spec};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixStream};
use tokio::sync::watch;
use wire::{FrameCodec, LengthHeader};

use super::issuer::Issuer;
use super::process::{Switch, serve_with};
use super::terminal::Terminal;
use super::within;

pub const CARD_KEY: &str = "00112233445566778899aabbccddeeff";

/// Node `name` on `pg`, forwarding to `issuer`.
pub async fn node(pg: &Server, name: &str, issuer: &Issuer) -> Switch {
    // Nothing times out by itself here: what is held stays in flight until the test lets it go.
    node_with(pg, name, issuer, &["--response-timeout", "1h"]).await
}

pub async fn node_with(pg: &Server, name: &str, issuer: &Issuer, more: &[&str]) -> Switch {
    node_at(&pg.url(), name, issuer, more).await
}

/// Node `name` on the database at `url`.
pub async fn node_at(url: &str, name: &str, issuer: &Issuer, more: &[&str]) -> Switch {
    let mut extra = vec!["--node", name, "--database", url];
    extra.extend(more);
    serve_with(
        &issuer.addr.to_string(),
        &extra,
        &[("ACQUIRO_CARD_KEY", CARD_KEY)],
    )
    .await
}

pub fn spec() -> &'static Spec {
    dialects::builtin("iso87ascii").unwrap()
}

pub async fn terminal(s: &Switch, tid: &str) -> Terminal {
    Terminal::connect(s.addr, spec(), FrameCodec::new(LengthHeader::Binary2), tid).await
}

pub async fn purchase(s: &Switch, tid: &str, stan: u32, amount: u64) -> Message {
    let mut t = terminal(s, tid).await;
    t.exchange(&t.purchase(stan, amount)).await
}

/// A purchase (amount 555) sent on `node` that `issuer` holds unanswered until released.
pub async fn held_on(node: &Switch, issuer: &Issuer, tid: &str, stan: u32) -> Terminal {
    held_at(node.addr, issuer, tid, stan).await
}

/// The same, sent to `addr` (a node, or a balancer in front of nodes).
pub async fn held_at(addr: SocketAddr, issuer: &Issuer, tid: &str, stan: u32) -> Terminal {
    let codec = FrameCodec::new(LengthHeader::Binary2);
    let mut t = Terminal::connect(addr, spec(), codec, tid).await;
    t.send(&t.purchase(stan, 555)).await;
    within(
        "the held purchase at the issuer",
        issuer.wait_for(|r| r.iter().any(|m| m.amount() == Some(555))),
    )
    .await;
    t
}

pub fn forwards(issuer: &Issuer) -> usize {
    issuer.of_class(2).len()
}

/// `acquiro <args>` to its end; its output, which it must end on success.
pub fn acquiro(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_acquiro"))
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// A way over TCP to a throw-away server that can go dark: while dark it holds whatever either side
/// sends, closing nothing (a database host lost, a network partition); once lit again it lets through
/// what it held, late.
pub struct Dark {
    port: u16,
    dark: watch::Sender<bool>,
}

impl Dark {
    pub async fn start(pg: &Server) -> Dark {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let socket = pg.dir().join(format!(".s.PGSQL.{}", pg.port()));
        let (dark, lit) = watch::channel(false);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let Ok(unix) = UnixStream::connect(&socket).await else {
                    continue;
                };
                let ((tcp_in, tcp_out), (pg_in, pg_out)) = (tcp.into_split(), unix.into_split());
                tokio::spawn(pass(tcp_in, pg_out, lit.clone()));
                tokio::spawn(pass(pg_in, tcp_out, lit.clone()));
            }
        });
        Dark { port, dark }
    }

    pub fn url(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        )
    }

    pub fn go_dark(&self, dark: bool) {
        self.dark.send_replace(dark);
    }
}

/// `from` to `to`, each piece held while the way is dark.
async fn pass(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    mut dark: watch::Receiver<bool>,
) {
    let mut piece = vec![0; 64 * 1024];
    while let Ok(n @ 1..) = from.read(&mut piece).await {
        if dark.wait_for(|dark| !dark).await.is_err() || to.write_all(&piece[..n]).await.is_err() {
            return;
        }
    }
}

/// `node`'s line in the output of `acquiro cluster status`.
pub fn node_line(status: &str, node: &str) -> String {
    let found = status.lines().find(|l| l.starts_with(&format!("{node} ")));
    found.expect("the node listed").to_owned()
}
