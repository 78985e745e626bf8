//! End to end on one node: a real `acquiro serve` journaling to disk, an issuer that approves in part
//! and refuses some reversals and advices, and terminals sending the whole life cycle and settling their
//! batches (some miscounting, so that their batch is uploaded); then the settlement report and its
//! reconciliation with the issuer, as `acquiro settlement` gives them.

mod support;

use std::time::Duration;

use support::process::serve;
use support::settlement::{idle, lifecycle_rules, quick_repeats, reconciles};
use wire::{FrameCodec, LengthHeader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_merchant_is_owed_what_the_issuer_settled() {
    let spec = dialects::builtin("iso87ascii").unwrap();
    let codec = FrameCodec::new(LengthHeader::Binary2);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = sim::IssuerSim::start(listener, spec, codec, lifecycle_rules());
    let journal = tempfile::tempdir().unwrap();
    let dir = journal.path().to_str().unwrap();
    let repeats = tempfile::tempdir().unwrap();
    let config = quick_repeats(repeats.path());
    let flags = [
        "--journal-dir",
        dir,
        "--response-timeout",
        "1s",
        "--config",
        &config,
    ];
    let switch = serve(&issuer.addr.to_string(), &flags).await;

    let mut load = sim::Load::new(switch.addr, spec, codec);
    load.terminals = 8;
    load.count = Some(400);
    load.duration = Duration::from_secs(60);
    load.timeout = Duration::from_secs(2);
    load.lifecycle = true;
    load.miscount_share = 0.5;
    let progress = std::sync::Arc::new(sim::Progress::default());
    let run = sim::terminals::run(load, progress.clone()).await;
    idle(switch.admin).await;

    let told = sim::reconcile(&run.outcomes, &issuer.ledger());
    assert!(told.holds(), "{:?}", told.mismatches);
    let p = |c| sim::Progress::get(c);
    assert!(p(&progress.advices) > 0 && p(&progress.adjustments) > 0);
    assert_eq!(
        p(&progress.settled) + p(&progress.uploaded),
        8,
        "every terminal settled"
    );
    reconciles(&["--journal-dir", dir], &issuer, 8);
}
