//! `acquiro sim issuer`, `acquiro sim terminals` and `acquiro sim reconcile`: the simulators as separate
//! processes, for runs against a real `acquiro serve`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use sim::{IssuerSim, Ledger, Load, Outcome, Progress, Rules, reconcile};
use wire::{FrameCodec, LengthHeader};

/// Connections the simulators' listeners queue before accepting them: a load of hundreds of terminals
/// connects at once, straight to the issuer simulator or through the relay (see `switch::listen`).
const SIM_BACKLOG: usize = 4096;

#[derive(Subcommand)]
pub(crate) enum SimCommand {
    /// An issuer host: answers by rules (approve-all without them) and keeps a ledger of net debits.
    Issuer(IssuerArgs),
    /// POS terminals that buy, retransmit, reverse and reconnect like real ones; prints a report.
    Terminals(TerminalsArgs),
    /// Checks terminal outcomes against an issuer ledger; exits 1 on any mismatch.
    Reconcile(ReconcileArgs),
    /// Copies bytes between each terminal connection and one of its own to the issuer, parsing nothing:
    /// the benchmark's reference for the cost of a hop.
    Relay(RelayArgs),
}

#[derive(Args)]
pub(crate) struct RelayArgs {
    #[arg(long, default_value = "127.0.0.1:8583")]
    listen: SocketAddr,
    /// The issuer's address.
    #[arg(long, default_value = "127.0.0.1:9583")]
    upstream: SocketAddr,
}

#[derive(Args)]
struct Wire {
    /// Dialect: a built-in name or a .toml file.
    #[arg(long, default_value = "iso87ascii")]
    dialect: String,
    /// Length header: none, binary2, binary2-inclusive, binary4, ascii2, ascii4, bcd2.
    #[arg(long, default_value = "binary2")]
    header: LengthHeader,
}

impl Wire {
    fn open(&self) -> anyhow::Result<(&'static iso8583::Spec, FrameCodec)> {
        let spec =
            dialects::load(&self.dialect).with_context(|| format!("dialect {}", self.dialect))?;
        Ok((spec, FrameCodec::new(self.header)))
    }
}

#[derive(Args)]
pub(crate) struct IssuerArgs {
    #[arg(long, default_value = "127.0.0.1:9583")]
    listen: SocketAddr,
    #[command(flatten)]
    wire: Wire,
    /// Rules file (TOML, see the README); without it every request is approved.
    #[arg(long)]
    rules: Option<PathBuf>,
    /// Where the ledger is written (JSON) when the simulator stops on SIGINT/SIGTERM.
    #[arg(long)]
    ledger: Option<PathBuf>,
    /// Where the issuer's settlement is written (CSV `rrn,amount`, for `acquiro settlement
    /// reconcile`) when the simulator stops.
    #[arg(long)]
    settlement: Option<PathBuf>,
}

#[derive(Args)]
pub(crate) struct TerminalsArgs {
    /// The switch's terminal listener.
    #[arg(long, default_value = "127.0.0.1:8583")]
    connect: SocketAddr,
    #[command(flatten)]
    wire: Wire,
    #[arg(long, default_value_t = 10)]
    terminals: usize,
    /// Transactions per second over all terminals; without it each terminal goes as fast as answers come.
    #[arg(long)]
    rate: Option<f64>,
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Stop after this many transactions (or at the end of --duration).
    #[arg(long)]
    count: Option<u64>,
    /// How long a terminal waits for an answer.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// The chance of retransmitting the same request after a timeout (else the terminal reverses).
    #[arg(long, default_value_t = 0.5)]
    retransmit_share: f64,
    /// The share of 0100 authorizations; the rest are 0200 purchases.
    #[arg(long, default_value_t = 0.2)]
    authorization_share: f64,
    /// Every message of the life cycle (refunds, inquiries, completions, partial reversals, offline
    /// sales) and a settlement per terminal at the end, a share of them miscounting on purpose.
    #[arg(long)]
    lifecycle: bool,
    /// With --lifecycle: the share of terminals whose settlement counts one debit too many.
    #[arg(long, default_value_t = 0.2)]
    miscount_share: f64,
    /// Terminals share this many connections, many requests in flight on each, as behind a terminal
    /// concentrator (answers are matched by terminal ID and STAN); without it each has its own.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    connections: Option<u64>,
    /// Write what each terminal was told, one JSON object per line.
    #[arg(long)]
    outcomes: Option<PathBuf>,
}

#[derive(Args)]
pub(crate) struct ReconcileArgs {
    /// The outcomes file of `sim terminals`.
    #[arg(long)]
    outcomes: PathBuf,
    /// The ledger file of `sim issuer`.
    #[arg(long)]
    ledger: PathBuf,
}

pub(crate) fn run(command: SimCommand) -> anyhow::Result<ExitCode> {
    match command {
        SimCommand::Reconcile(args) => reconcile_files(&args),
        SimCommand::Issuer(args) => runtime()?.block_on(issuer(args)),
        SimCommand::Terminals(args) => runtime()?.block_on(terminals(args)),
        SimCommand::Relay(args) => runtime()?.block_on(relay(args)),
    }
}

async fn relay(args: RelayArgs) -> anyhow::Result<ExitCode> {
    let listener = switch::listen(args.listen, SIM_BACKLOG)
        .with_context(|| format!("listening on {}", args.listen))?;
    tracing::info!(addr = %listener.local_addr()?, upstream = %args.upstream, "relay listening");
    tokio::select! {
        () = sim::relay::relay(listener, args.upstream) => {}
        stopped = super::serve::stop_signal() => stopped?,
    }
    Ok(ExitCode::SUCCESS)
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Runtime::new()
}

async fn issuer(args: IssuerArgs) -> anyhow::Result<ExitCode> {
    let (spec, codec) = args.wire.open()?;
    let rules = match &args.rules {
        Some(path) => Rules::parse(
            &std::fs::read_to_string(path).with_context(|| path.display().to_string())?,
        )?,
        None => Rules::default(),
    };
    let listener = switch::listen(args.listen, SIM_BACKLOG)
        .with_context(|| format!("listening on {}", args.listen))?;
    let sim = IssuerSim::start(listener, spec, codec, rules);
    tracing::info!(addr = %sim.addr, "issuer simulator listening");
    super::serve::stop_signal().await?;
    let ledger = sim.ledger();
    let net: i64 = ledger.accounts.values().map(sim::Account::net).sum();
    tracing::info!(
        transactions = ledger.accounts.len(),
        net,
        "issuer simulator stopped"
    );
    if let Some(path) = &args.ledger {
        std::fs::write(path, serde_json::to_vec(&ledger)?)
            .with_context(|| path.display().to_string())?;
    }
    if let Some(path) = &args.settlement {
        std::fs::write(path, ledger.settlement_file())
            .with_context(|| path.display().to_string())?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn terminals(args: TerminalsArgs) -> anyhow::Result<ExitCode> {
    let (spec, codec) = args.wire.open()?;
    let mut load = Load::new(args.connect, spec, codec);
    load.terminals = args.terminals;
    load.rate = args.rate;
    load.duration = args.duration;
    load.count = args.count;
    load.timeout = args.timeout;
    load.retransmit_share = args.retransmit_share;
    load.authorization_share = args.authorization_share;
    load.lifecycle = args.lifecycle;
    load.miscount_share = args.miscount_share;
    load.connections = args.connections.map(|n| n as usize);
    let progress = Arc::new(Progress::default());
    let run = tokio::spawn(sim::terminals::run(load, progress.clone()));
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    while !run.is_finished() {
        tick.tick().await;
        eprintln!(
            "sent {}  approved {}  declined {}  timeouts {}  retransmits {}  reversals {}  advices {}  partial reversals {}  settled {}  after upload {}",
            Progress::get(&progress.sent),
            Progress::get(&progress.approved),
            Progress::get(&progress.declined),
            Progress::get(&progress.timeouts),
            Progress::get(&progress.retransmits),
            Progress::get(&progress.reversals),
            Progress::get(&progress.advices),
            Progress::get(&progress.adjustments),
            Progress::get(&progress.settled),
            Progress::get(&progress.uploaded),
        );
    }
    let run = run.await?;
    out!("{}", run.summary())?;
    if let Some(path) = &args.outcomes {
        let mut out = std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| path.display().to_string())?,
        );
        for o in &run.outcomes {
            serde_json::to_writer(&mut out, o)?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
    }
    Ok(ExitCode::SUCCESS)
}

fn reconcile_files(args: &ReconcileArgs) -> anyhow::Result<ExitCode> {
    let read = |p: &Path| std::fs::read_to_string(p).with_context(|| p.display().to_string());
    let ledger: Ledger = serde_json::from_str(&read(&args.ledger)?).context("the ledger")?;
    let outcomes = read(&args.outcomes)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<Vec<Outcome>, _>>()
        .context("the outcomes")?;
    let verdict = reconcile(&outcomes, &ledger);
    for m in &verdict.mismatches {
        outln!("{}", serde_json::to_string(m)?)?;
    }
    outln!(
        "{} transactions, {} mismatches, {} charged twice",
        verdict.checked,
        verdict.mismatches.len(),
        verdict.double_debits
    )?;
    Ok(if verdict.holds() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
