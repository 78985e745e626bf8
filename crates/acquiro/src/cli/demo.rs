//! `acquiro demo`: the switch, an issuer simulator that declines, drops, answers late, approves in part
//! and refuses some reversals and advices, and terminals that send the whole life cycle (refunds,
//! inquiries, completions, partial reversals, offline sales), retransmit and reverse, then settle their
//! batches — all in this process; live figures while it runs, then two reconciliations: what every
//! terminal was told against the issuer's books, and the merchants' settlement against the issuer's.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use engine::Books;
use sim::{IssuerSim, Load, Progress, Rules, reconcile};
use switch::{File, MemoryJournal, Metrics};
use tokio::net::TcpListener;
use wire::{FrameCodec, LengthHeader};

const SWITCH: &str = include_str!("../../demo/switch.toml");
const ISSUER: &str = include_str!("../../demo/issuer.toml");
/// How long the switch gets, after the terminals stop, to settle every reversal.
const SETTLE: Duration = Duration::from_secs(30);

#[derive(Args)]
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
    // In memory, and kept whole: the settlement is folded from it at the end.
    let journal = MemoryJournal::new(10_000_000);
    let switch = switch::start(file.check()?, Box::new(journal.clone()), Default::default())
        .await
        .with_context(|| {
            format!(
                "starting the switch (is {} free? --admin-listen changes it)",
                args.admin_listen
            )
        })?;
    switch.ready().await;
    let admin = switch.admin.expect("the demo configures an admin endpoint");
    outln!(
        "acquiro demo: {} terminals, {} transactions/s for {:?}",
        args.terminals,
        args.rate,
        args.duration
    )?;
    outln!(
        "  switch on {}, issuer simulator on {}",
        switch.listeners[0],
        issuer.addr
    )?;
    outln!("  metrics on http://{admin}/metrics\n")?;

    let mut load = Load::new(switch.listeners[0], spec, codec);
    load.terminals = args.terminals;
    load.rate = Some(args.rate);
    load.duration = args.duration;
    load.timeout = Duration::from_millis(600);
    load.lifecycle = true;
    let progress = Arc::new(Progress::default());
    let run = tokio::spawn(sim::terminals::run(load, progress.clone()));
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last_sent = 0;
    while !run.is_finished() {
        tick.tick().await;
        let sent = Progress::get(&progress.sent);
        outln!(
            "{}",
            live(started, sent - last_sent, &progress, switch.metrics())
        )?;
        last_sent = sent;
    }
    let run = run.await?;

    // Terminals are done; every reversal the switch queued must be acknowledged before the books close.
    let settle = Instant::now();
    let m = switch.metrics();
    let owed = |m: &Metrics| {
        [
            "acquiro_saf_depth",
            "acquiro_advice_queue_depth",
            "acquiro_in_flight",
        ]
        .iter()
        .any(|name| m.total(name, &[]) > 0.0)
    };
    while owed(m) && settle.elapsed() < SETTLE {
        tick.tick().await;
    }
    let verdict = reconcile(&run.outcomes, &issuer.ledger());
    outln!("\n{}", run.summary())?;
    outln!("{}", switch_summary(m))?;
    for mismatch in &verdict.mismatches {
        outln!("MISMATCH {mismatch:?}")?;
    }
    outln!(
        "reconciliation: {} transactions, {} mismatches, {} charged twice: {}",
        verdict.checked,
        verdict.mismatches.len(),
        verdict.double_debits,
        if verdict.holds() {
            "every approval debited exactly once, everything else net zero"
        } else {
            "FAILED"
        }
    )?;
    // The merchants' settlement, folded from the journal as `acquiro settlement` does, against what the
    // issuer settled.
    let mut books = Books::default();
    for record in journal.records() {
        books.add("", &record);
    }
    let settled = books.settled();
    let ours = engine::net_by_rrn(&settled);
    let differences = sim::settlement::differences(&ours, &issuer.ledger().settlement());
    for d in &differences {
        outln!("DIFFERENCE {d:?}")?;
    }
    let owed: i64 = ours.values().sum();
    outln!(
        "settlement: {} financial transactions, {} owed to merchants (minor units), {} batches closed, {} differences with the issuer: {}",
        ours.len(),
        owed,
        books.closed().len(),
        differences.len(),
        if differences.is_empty() {
            "every merchant credited what the issuer debited"
        } else {
            "FAILED"
        }
    )?;
    switch.shutdown();
    switch.stopped().await;
    Ok(if verdict.holds() && differences.is_empty() {
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
        "{:>4.0}s  {sent:>5} requests/s  approved {:>6}  declined {:>5}  duplicates caught {:>4}  timeouts {:>4}  reversals sent {:>4} acked {:>4}  advices {:>4}  partial reversals {:>4}",
        started.elapsed().as_secs_f64(),
        Progress::get(&p.approved),
        Progress::get(&p.declined),
        duplicates,
        m.total("acquiro_timeouts_total", &[]),
        reversals("sent"),
        reversals("acknowledged"),
        Progress::get(&p.advices),
        Progress::get(&p.adjustments),
    )
}

fn switch_summary(m: &Metrics) -> String {
    let by = |name, label, value| m.total(name, &[(label, value)]);
    format!(
        "switch       duplicates joined {} replayed {} rejected {}  timeouts {}  late answers {}  reversals queued {} refused {} acknowledged {} expired {}\n\
         switch       advices queued {} refused {} acknowledged {} expired {}  settlements in balance {} out of balance {} closed after upload {} (discrepancies {})",
        by("acquiro_duplicates_total", "outcome", "joined"),
        by("acquiro_duplicates_total", "outcome", "replayed"),
        by("acquiro_duplicates_total", "outcome", "rejected"),
        m.total("acquiro_timeouts_total", &[]),
        m.total("acquiro_late_answers_total", &[]),
        by("acquiro_reversals_total", "outcome", "queued"),
        by("acquiro_reversals_total", "outcome", "refused"),
        by("acquiro_reversals_total", "outcome", "acknowledged"),
        by("acquiro_reversals_total", "outcome", "expired"),
        by("acquiro_advices_total", "outcome", "queued"),
        by("acquiro_advices_total", "outcome", "refused"),
        by("acquiro_advices_total", "outcome", "acknowledged"),
        by("acquiro_advices_total", "outcome", "expired"),
        by("acquiro_settlements_total", "outcome", "in_balance"),
        by("acquiro_settlements_total", "outcome", "out_of_balance"),
        by(
            "acquiro_settlements_total",
            "outcome",
            "closed_after_upload"
        ),
        m.total("acquiro_settlement_discrepancies_total", &[]),
    )
}
