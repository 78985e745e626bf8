//! Terminals sharing connections (`Load::connections`): many requests in flight on each connection, every
//! answer back to the terminal that asked, and the books as they would be with a connection each.

use std::sync::Arc;
use std::time::Duration;

use sim::{IssuerSim, Load, Progress, Rules, Told};
use tokio::net::TcpListener;
use wire::{FrameCodec, LengthHeader};

/// `terminals` terminals on `connections` shared connections (`None`: one each) straight to the issuer
/// simulator, 40 transactions each; returns the connections opened and the run.
async fn run(terminals: usize, connections: Option<usize>) -> (u64, sim::Run, IssuerSim) {
    let spec = dialects::builtin("iso87ascii").expect("built-in");
    let codec = FrameCodec::new(LengthHeader::Binary2);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let issuer = IssuerSim::start(listener, spec, codec, Rules::default());
    let mut load = Load::new(issuer.addr, spec, codec);
    load.terminals = terminals;
    load.connections = connections;
    load.count = Some(40 * terminals as u64);
    load.duration = Duration::from_secs(60);
    load.timeout = Duration::from_secs(10);
    let progress = Arc::new(Progress::default());
    let run = sim::terminals::run(load, progress.clone()).await;
    (Progress::get(&progress.connects), run, issuer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminals_on_shared_connections_get_their_own_answers() {
    let (connects, run, issuer) = run(32, Some(2)).await;
    assert_eq!(connects, 2, "32 terminals on 2 connections");
    assert_eq!(run.outcomes.len(), 32 * 40);
    assert!(run.outcomes.iter().all(|o| o.told == Told::Approved));
    let books = sim::reconcile(&run.outcomes, &issuer.ledger());
    assert!(books.holds(), "{:?}", books.mismatches);
    assert_eq!((books.checked, books.double_debits), (32 * 40, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_sharing_each_terminal_has_its_own_connection() {
    let (connects, run, _) = run(8, None).await;
    assert_eq!(connects, 8);
    assert_eq!(run.outcomes.len(), 8 * 40);
}
