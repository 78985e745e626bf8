//! The tokio shell of acquiro: terminal listeners, upstream links, the driver that owns the engine and its
//! timers, configuration and graceful shutdown. It moves bytes and fires timers; the `engine` crate
//! decides.

mod admin;
mod codec;
mod config;
mod driver;
mod journal;
mod licence;
mod link;
mod listen;
mod metrics;
mod pleas_file;
mod recorder;
mod slots;
mod status;
mod terminal;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use engine::Engine;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{
    CARD_KEY_ENV, ClusterFile, ClusterSettings, ConfigError, DATABASE_ENV, DEFAULT_DIALECT,
    DEFAULT_HEADER, File, IdempotencyFile, IssuerFile, JournalFile, JournalSettings, Link,
    Listener, ListenerFile, NODE_ENV, ReversalsFile, RouteFile, Secret, Settings,
};
pub use journal::{Fault, Journal, MemoryJournal, OpenError, Progress, Report, open_journal};
pub use licence::Licensed;
pub use listen::listen;
pub use metrics::Metrics;
use pleas_file::PleasFile;
pub use status::{LinkStatus, Status};
pub use tls::{Acceptor, Connector, IssuerTlsFile, ListenerTlsFile};

/// Events waiting for the driver; when full, connections and links wait (backpressure).
const INPUT_QUEUE: usize = 4096;
/// Messages waiting for one link's socket.
const LINK_QUEUE: usize = 1024;
/// How long connections get to write their last answers after the driver stopped.
const FLUSH: std::time::Duration = std::time::Duration::from_secs(2);

/// A started switch.
#[derive(Debug)]
pub struct Running {
    /// The bound address of each listener, in configuration order (useful with port 0).
    pub listeners: Vec<SocketAddr>,
    /// The bound address of the admin endpoint, if one was configured.
    pub admin: Option<SocketAddr>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    driver: JoinHandle<()>,
    status: watch::Receiver<Status>,
    /// Terminal connections, awaited at shutdown so that the last answers are written.
    connections: TaskTracker,
    /// Issuer links, awaited at shutdown so that the last reversals are written.
    links: TaskTracker,
    /// Cancelled once the driver has ended: links that are not connected stop trying.
    links_stopped: CancellationToken,
}

impl Running {
    /// Stops accepting and reading requests; in-flight requests get the grace period to finish.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Waits until every issuer has a signed-on link.
    pub async fn ready(&self) {
        self.wait_status(|s| s.issuers_down().is_empty()).await;
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Waits until the status satisfies `done`.
    pub async fn wait_status(&self, done: impl FnMut(&Status) -> bool) {
        let _ = self.status.clone().wait_for(done).await;
    }

    /// Whether it stopped because it was fenced (cluster mode): it must be started again.
    pub fn fenced(&self) -> bool {
        self.status.borrow().fenced
    }

    /// Stops when a shutdown was asked for or the node was fenced.
    pub async fn shutdown_requested(&self) {
        self.shutdown.cancelled().await
    }

    /// Waits until the switch has drained, or has timed out and reversed what the grace period cut off.
    pub async fn stopped(self) {
        let _ = self.driver.await;
        self.links_stopped.cancel();
        self.connections.close();
        self.links.close();
        // Connections and links end once their queued messages are written; a peer that does not read
        // them cannot hold the process up for long.
        let written = async { tokio::join!(self.connections.wait(), self.links.wait()) };
        if tokio::time::timeout(FLUSH, written).await.is_err() {
            tracing::warn!("answers or reversals still unwritten at exit");
        }
    }
}

/// Runs the driver; if it panics (a bug: no input makes it), the process stops at once with exit code
/// 70, so that its supervisor starts it again and it recovers from the journal, rather than staying up
/// with nobody deciding and every connection waiting.
async fn supervised(driver: driver::Driver) {
    if let Err(error) = tokio::spawn(driver.run()).await
        && error.is_panic()
    {
        tracing::error!(
            "the engine's task panicked: the process stops, to recover from the journal when started again"
        );
        std::process::exit(70);
    }
}

/// Binds every listener and the admin endpoint, starts the links and the driver. Fails only if an
/// address cannot be bound.
/// `recovery` holds what the journal read back at opening (empty for a new or in-memory journal): the
/// engine rebuilds its state from it before the first connection is read.
pub async fn start(
    settings: Settings,
    journal: Box<dyn Journal>,
    recovery: engine::Recovery,
) -> std::io::Result<Running> {
    let shutdown = CancellationToken::new();
    let longest_timeout = settings
        .engine
        .issuers
        .iter()
        .map(|i| i.response_timeout)
        .max();
    let metrics = Arc::new(Metrics::new(longest_timeout.unwrap_or_default()));
    let (inputs, inputs_rx) = mpsc::channel(INPUT_QUEUE);
    let mut engine = Engine::new(settings.engine.clone());
    let mut recovered = Vec::new();
    // Cluster mode: the pleas this node held when it last stopped, taken on again (see `pleas_file`).
    let (pleas_file, pleas_left) = match settings
        .cluster
        .as_ref()
        .and_then(|c| c.pleas_file.as_ref())
    {
        Some(path) => {
            let (file, pleas) = PleasFile::open(path).map_err(std::io::Error::other)?;
            if !pleas.is_empty() {
                tracing::warn!(
                    pleas = pleas.len(),
                    file = %path.display(),
                    "taking on again the reversals this node admitted in terminals' names before it stopped"
                );
            }
            (Some(file), pleas)
        }
        None => (None, Vec::new()),
    };
    let started = std::time::Instant::now();
    let found = engine.recover(driver::now(), recovery, &mut recovered);
    if found.records > 0 {
        tracing::info!(
            records = found.records,
            transactions = found.transactions,
            in_doubt = found.in_doubt,
            reversals_resumed = found.reversals,
            idempotency_entries = found.idempotency_entries,
            took = ?started.elapsed(),
            "recovered from the journal"
        );
    }
    let mut bound = Vec::new();
    for l in &settings.listeners {
        // Room for every terminal the listener takes to be connecting at once.
        let listener = listen(l.address, l.max_connections)?;
        let addr = listener.local_addr()?;
        tracing::info!(%addr, dialect = l.spec.name(), header = %l.codec.header(), max_connections = l.max_connections, "listening for terminals");
        bound.push((listener, Arc::new(l.clone())));
    }
    let mut link_txs = Vec::new();
    let mut links = Vec::new();
    let link_tasks = TaskTracker::new();
    let links_stopped = CancellationToken::new();
    for ((id, issuer), link) in engine.links().zip(&settings.links) {
        debug_assert_eq!(issuer, link.issuer);
        let (tx, rx) = mpsc::channel(LINK_QUEUE);
        link_txs.push(tx);
        links.push(LinkStatus {
            issuer: link.issuer.clone(),
            host: link.host.clone(),
            up: false,
        });
        tracing::info!(?id, issuer, host = %link.host, dialect = link.spec.name(), header = %link.codec.header(), "issuer link");
        link_tasks.spawn(link::run(
            id,
            link.clone(),
            rx,
            inputs.clone(),
            metrics.clone(),
            journal.licensed(),
            links_stopped.clone(),
        ));
    }
    let listeners = bound
        .iter()
        .map(|(l, _)| l.local_addr())
        .collect::<std::io::Result<_>>()?;
    let next_conn = Arc::new(AtomicU64::new(1));
    let connections = TaskTracker::new();
    for (listener, l) in bound {
        tokio::spawn(terminal::accept_loop(
            listener,
            l,
            inputs.clone(),
            shutdown.clone(),
            next_conn.clone(),
            connections.clone(),
            metrics.clone(),
        ));
    }
    let (status, status_rx) = watch::channel(Status {
        links,
        draining: false,
        journal_failed: None,
        lease_failed: None,
        fenced: false,
    });
    let admin = match settings.admin_listen {
        Some(addr) => {
            let listener = TcpListener::bind(addr).await?;
            let addr = listener.local_addr()?;
            tracing::info!(%addr, "admin endpoint: /metrics /healthz /readyz");
            tokio::spawn(admin::serve(listener, metrics.clone(), status_rx.clone()));
            Some(addr)
        }
        None => None,
    };
    let driver = driver::Driver {
        recorder: recorder::Recorder::new(metrics.clone(), &settings.links),
        engine,
        inputs: inputs_rx,
        links: link_txs,
        journal,
        shutdown: shutdown.clone(),
        grace: settings.grace_period,
        status,
        recovered,
        conns: Default::default(),
        outbox: Default::default(),
        released: Vec::new(),
        journal_dead: false,
        pleas: pleas_left.iter().cloned().collect(),
        pleas_file,
        pleas_left,
    };
    Ok(Running {
        listeners,
        admin,
        metrics,
        shutdown,
        driver: tokio::spawn(supervised(driver)),
        status: status_rx,
        connections,
        links: link_tasks,
        links_stopped,
    })
}
