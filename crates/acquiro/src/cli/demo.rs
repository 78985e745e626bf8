//! `acquiro demo`: the switch, an issuer simulator that declines, drops and answers late, and terminals
//! that retransmit and reverse, all in this process; live figures while it runs, then the reconciliation
//! of what every terminal was told against the issuer's books.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use sim::{IssuerSim, Load, Progress, Rules, reconcile};
use switch::{File, MemoryJournal, Metrics};
use tokio::net::TcpListener;
use wire::{FrameCodec, LengthHeader};

const SWITCH: &str = include_str!("../../demo/switch.toml");
const ISSUER: &str = include_str!("../../demo/issuer.toml");
/// How long the switch gets, after the terminals stop, to settle every reversal.
const SETTLE: Duration = Duration::from_secs(30);

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// How long the terminals send traffic.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Terminals (one connection each, one transaction at a time).
    #[arg(long, default_value_t = 40)]
    terminals: usize,
    /// Transactions per second over all terminals.
    #[arg(long, default_value_t = 400.0)]
    rate: f64,
    /// Where the switch serves /metrics, /healthz and /readyz (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:9090")]
    admin_listen: SocketAddr,
}

pub(crate) fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    tokio::runtime::Runtime::new()?.block_on(run(args))
}

async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let spec = dialects::builtin("iso87ascii").context("the built-in iso87ascii dialect")?;
    let codec = FrameCodec::new(LengthHeader::Binary2);
    let rules = Rules::parse(ISSUER)?;
    let issuer = IssuerSim::start(TcpListener::bind("127.0.0.1:0").await?, spec, codec, rules);

    let mut file = File::parse("demo", SWITCH)?;
    file.issuers[0].hosts = vec![issuer.addr.to_string()];
    file.admin_listen = Some(args.admin_listen);
    let switch = switch::start(
        file.check()?,
        Box::new(MemoryJournal::new(1000)),
        Default::default(),
    )
    .await
    .with_context(|| {
        format!(
            "starting the switch (is {} free? --admin-listen changes it)",
            args.admin_listen
        )
    })?;
    switch.ready().await;
    let admin = switch.admin.expect("the demo configures an admin endpoint");
    println!(
        "acquiro demo: {} terminals, {} transactions/s for {:?}",
        args.terminals, args.rate, args.duration
    );
    println!(
        "  switch on {}, issuer simulator on {}",
        switch.listeners[0], issuer.addr
    );
    println!("  metrics on http://{admin}/metrics\n");

    let mut load = Load::new(switch.listeners[0], spec, codec);
    load.terminals = args.terminals;
    load.rate = Some(args.rate);
    load.duration = args.duration;
    load.timeout = Duration::from_millis(600);
    let progress = Arc::new(Progress::default());
    let run = tokio::spawn(sim::terminals::run(load, progress.clone()));
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last_sent = 0;
    while !run.is_finished() {
        tick.tick().await;
        let sent = Progress::get(&progress.sent);
        println!(
            "{}",
            live(started, sent - last_sent, &progress, switch.metrics())
        );
        last_sent = sent;
    }
    let run = run.await?;

    // Terminals are done; every reversal the switch queued must be acknowledged before the books close.
    let settle = Instant::now();
    let m = switch.metrics();
    while (m.total("acquiro_saf_depth", &[]) > 0.0 || m.total("acquiro_in_flight", &[]) > 0.0)
        && settle.elapsed() < SETTLE
    {
        tick.tick().await;
    }
    let verdict = reconcile(&run.outcomes, &issuer.ledger());
    println!("\n{}", run.summary());
    println!("{}", switch_summary(m));
    for mismatch in &verdict.mismatches {
        println!("MISMATCH {mismatch:?}");
    }
    println!(
        "reconciliation: {} transactions, {} mismatches, {} charged twice: {}",
        verdict.checked,
        verdict.mismatches.len(),
        verdict.double_debits,
        if verdict.holds() {
            "every approval debited exactly once, everything else net zero"
        } else {
            "FAILED"
        }
    );
    switch.shutdown();
    switch.stopped().await;
    Ok(if verdict.holds() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// One line of live figures.
fn live(started: Instant, sent: u64, p: &Progress, m: &Metrics) -> String {
    let duplicates = m.total("acquiro_duplicates_total", &[]);
    let reversals = |outcome| m.total("acquiro_reversals_total", &[("outcome", outcome)]);
    format!(
        "{:>4.0}s  {sent:>5} requests/s  approved {:>6}  declined {:>5}  duplicates caught {:>4}  timeouts {:>4}  reversals sent {:>4} acked {:>4}",
        started.elapsed().as_secs_f64(),
        Progress::get(&p.approved),
        Progress::get(&p.declined),
        duplicates,
        m.total("acquiro_timeouts_total", &[]),
        reversals("sent"),
        reversals("acknowledged"),
    )
}

fn switch_summary(m: &Metrics) -> String {
    let by = |name, label, value| m.total(name, &[(label, value)]);
    format!(
        "switch       duplicates joined {} replayed {} rejected {}  timeouts {}  late answers {}  reversals queued {} acknowledged {} expired {}",
        by("acquiro_duplicates_total", "outcome", "joined"),
        by("acquiro_duplicates_total", "outcome", "replayed"),
        by("acquiro_duplicates_total", "outcome", "rejected"),
        m.total("acquiro_timeouts_total", &[]),
        m.total("acquiro_late_answers_total", &[]),
        by("acquiro_reversals_total", "outcome", "queued"),
        by("acquiro_reversals_total", "outcome", "acknowledged"),
        by("acquiro_reversals_total", "outcome", "expired"),
    )
}
