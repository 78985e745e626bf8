//! `acquiro serve` and `acquiro config check`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use switch::{File, IssuerFile, ListenerFile, Secret};

#[derive(Args)]
pub(crate) struct ServeArgs {
    /// Configuration file (TOML); the options below override it, and work without it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Terminal listener address (replaces the first listener's).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Host of the default issuer, host:port; repeat for several hosts (replaces its hosts).
    #[arg(long = "upstream")]
    upstreams: Vec<String>,
    /// Admin endpoint address.
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    /// Dialect of every terminal listener.
    #[arg(long)]
    terminal_spec: Option<String>,
    /// Dialect of the default issuer.
    #[arg(long)]
    host_spec: Option<String>,
    /// Length header on terminal listeners and the default issuer's links.
    #[arg(long)]
    header: Option<String>,
    /// Terminals send a 5-byte TPDU after the length header.
    #[arg(long)]
    tpdu: bool,
    /// How long the default issuer has to answer, e.g. 5s or 800ms.
    #[arg(long, value_parser = humantime::parse_duration)]
    response_timeout: Option<Duration>,
    /// How long in-flight requests get to finish after SIGTERM before they time out and are reversed
    /// (grace_period), e.g. 10s.
    #[arg(long, value_parser = humantime::parse_duration)]
    grace_period: Option<Duration>,
    /// Directory of the durable journal (journal.dir); without one the journal is in memory only.
    #[arg(long)]
    journal_dir: Option<PathBuf>,
    /// Cluster mode: this node's name (cluster.node), unique and stable.
    #[arg(long, requires = "database")]
    node: Option<String>,
    /// Cluster mode: the PostgreSQL connection string (cluster.database; also ACQUIRO_DATABASE_URL).
    #[arg(long)]
    database: Option<String>,
    /// Cluster mode: a node not heard from for this long is taken over (cluster.lease), e.g. 5s.
    #[arg(long, value_parser = humantime::parse_duration)]
    lease: Option<Duration>,
    /// Cluster mode: where the node keeps the reversals it admits in terminals' names until they
    /// commit (cluster.pleas_file), so that a node killed while the database is away makes them when
    /// it starts again.
    #[arg(long)]
    pleas_file: Option<PathBuf>,
    /// Cluster mode: how long after a 91 a terminal may still retransmit the request or take an
    /// answer to it (cluster.terminal_patience), e.g. 120s: the reversal in its name waits that long.
    #[arg(long, value_parser = humantime::parse_duration)]
    terminal_patience: Option<Duration>,
}

#[derive(Args)]
pub(crate) struct CheckArgs {
    /// The configuration file to check.
    file: PathBuf,
}

/// Applies the command-line overrides to `file`.
fn apply(args: &ServeArgs, mut file: File) -> File {
    let wants_listener = args.listen.is_some() || args.terminal_spec.is_some();
    if file.listeners.is_empty() && wants_listener {
        file.listeners.push(ListenerFile::default());
    }
    if let Some(addr) = args.listen {
        file.listeners[0].address = addr;
    }
    for l in &mut file.listeners {
        if let Some(spec) = &args.terminal_spec {
            l.dialect.clone_from(spec);
        }
        if let Some(header) = &args.header {
            l.header.clone_from(header);
        }
        l.tpdu |= args.tpdu;
    }
    if file.issuers.is_empty() && !args.upstreams.is_empty() {
        file.issuers.push(IssuerFile::default());
    }
    let default = file
        .default_issuer
        .as_ref()
        .and_then(|name| file.issuers.iter().position(|i| &i.name == name))
        .unwrap_or(0);
    if let Some(issuer) = file.issuers.get_mut(default) {
        if !args.upstreams.is_empty() {
            issuer.hosts.clone_from(&args.upstreams);
        }
        if let Some(spec) = &args.host_spec {
            issuer.dialect.clone_from(spec);
        }
        if let Some(header) = &args.header {
            issuer.header.clone_from(header);
        }
        if let Some(t) = args.response_timeout {
            issuer.response_timeout = t;
        }
    }
    if let Some(grace) = args.grace_period {
        file.grace_period = grace;
    }
    if args.journal_dir.is_some() {
        file.journal.dir.clone_from(&args.journal_dir);
    }
    if args.admin_listen.is_some() {
        file.admin_listen = args.admin_listen;
    }
    if args.node.is_some() || (file.cluster.is_some() && args.database.is_some()) {
        let cluster = file.cluster.get_or_insert_with(Default::default);
        if args.node.is_some() {
            cluster.node.clone_from(&args.node);
        }
        if let Some(database) = &args.database {
            cluster.database = Some(Secret(database.clone()));
        }
        if let Some(lease) = args.lease {
            cluster.lease = lease;
        }
        if args.pleas_file.is_some() {
            cluster.pleas_file.clone_from(&args.pleas_file);
        }
        if let Some(patience) = args.terminal_patience {
            cluster.terminal_patience = patience;
        }
    }
    file
}

/// The runtime, with `workers` worker threads if configured; else `TOKIO_WORKER_THREADS` if set
/// (tokio reads it); else one fewer than the cores, at least one. The journal's writer thread works
/// beside the workers, and the kernel's network processing with them: with a worker on every core,
/// a 2-core machine spent up to a fifth more CPU a transaction for the same throughput (README,
/// "Worker threads").
fn runtime(workers: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    let workers = workers.or_else(|| {
        std::env::var_os("TOKIO_WORKER_THREADS").is_none().then(|| {
            std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1))
        })
    });
    if let Some(n) = workers {
        builder.worker_threads(n);
    }
    builder.enable_all().build()
}

pub(crate) fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let file = match &args.config {
        Some(path) => File::read(path)?,
        None => File::default(),
    };
    let mut settings = apply(&args, file)
        .check()
        .context("configuration (give --listen and --upstream, or --config FILE)")?;
    let runtime = runtime(settings.workers)?;
    tracing::info!(workers = runtime.metrics().num_workers(), "runtime started");
    runtime.block_on(async {
        let (journal, recovery) = switch::open_journal(&mut settings).await?;
        let running = switch::start(settings, journal, recovery).await?;
        tokio::select! {
            signal = stop_signal() => {
                signal?;
                tracing::info!("signal received: no new requests; draining");
                running.shutdown();
            }
            () = running.shutdown_requested() => {}
        }
        let fenced = running.fenced();
        running.stopped().await;
        if fenced {
            tracing::error!("stopped: fenced (exit 3); start it again to rejoin");
            return Ok(ExitCode::from(3));
        }
        tracing::info!("stopped");
        Ok(ExitCode::SUCCESS)
    })
}

/// SIGINT or SIGTERM.
pub(crate) async fn stop_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await
}

pub(crate) fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let settings = File::read(&args.file)?.check()?;
    outln!(
        "{}: ok ({} listener(s), {} issuer(s), {} link(s), {} route(s))",
        args.file.display(),
        settings.listeners.len(),
        settings.engine.issuers.len(),
        settings.links.len(),
        settings.engine.routes.len()
    )?;
    Ok(ExitCode::SUCCESS)
}
