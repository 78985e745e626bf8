//! Where journal records go. The engine emits them; the driver appends each one and holds back every
//! message that follows it (to an issuer or a terminal) until the journal reports it durable: a forward
//! is on disk before it leaves, and a terminal is told nothing the journal could forget.

//!
//! Two durable journals: on disk in single-node mode (`disk.rs`), and on PostgreSQL in cluster mode
//! (`cluster.rs`), which also claims idempotency keys and holds the node's lease.

mod cluster;
mod disk;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use engine::{Claim, Holder, OpenBatch, Plea, Record, Recovery, TxnId};
use tokio::sync::{mpsc, oneshot, watch};

/// What a durable journal reports, in order.
#[derive(Debug)]
pub enum Report {
    /// Cluster mode: the commit reported durable next lost the claims of these transactions, so their
    /// provisional forwards never go out (see `engine::withdrawn`).
    Withdrawn(Vec<TxnId>),
    Durable(tranlog::Batch),
    /// The stores' answers to claims, after the batch that carried them is durable: `None` when the
    /// key is the transaction's.
    Claimed(Vec<(TxnId, Option<Holder>)>),
    /// Cluster mode: a terminal's batch read for its settlement message (see `engine::OpenBatch`):
    /// every node's records of it, or `None` if the database could not be read.
    BatchRead {
        txn: TxnId,
        records: Option<Vec<(String, Record)>>,
    },
    /// Cluster mode: pleas other nodes left in the database, taken on by this node (see
    /// `engine::Plea`).
    Pleas(Vec<Plea>),
    /// Whether records can be made durable now; `Some` says why they cannot (it may pass).
    Unwritable(Option<Fault>),
    /// Cluster mode: whether the last renewal of the lease failed, and why (it may pass). A node that
    /// cannot renew it is taken over once it lapses, so it is not ready for new terminals, even
    /// before a commit of its own finds the database gone.
    LeaseUnrenewed(Option<Fault>),
    /// Cluster mode: this node took over a lapsed node's work (its records up to `through`); it is this
    /// node's once the engine's records of it commit with [`Journal::retire`].
    TakeOver {
        node: String,
        through: u64,
        records: Vec<Record>,
    },
    /// Cluster mode: the database as last read: what keeps a commit through the loss of its primary,
    /// and the pleas waiting.
    Database(::cluster::DatabaseStatus),
    /// Cluster mode: one of the node's database connections was lost and made again.
    Reconnected(::cluster::Purpose),
    /// The journal cannot write any more: nothing after this becomes durable.
    Failed(Fault),
    /// Cluster mode: the node lost its epoch (another node took its work over, or the same name joined
    /// elsewhere). Nothing after this becomes durable; the process ends, so that its supervisor starts
    /// it again and it joins anew.
    Fenced(Fault),
}

/// Why records cannot be made durable, as the disk or the database said it. Shared: the status keeps
/// it for readiness while the log has it too.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Fault {
    /// The journal's disk: its writer stopped.
    #[error("{0}")]
    Disk(Arc<std::io::Error>),
    /// Cluster mode: the database did not take a commit (it may pass).
    #[error("database unavailable: {0}")]
    Unavailable(Arc<::cluster::Error>),
    /// Cluster mode: what the database answered otherwise (a lease not renewed, the node fenced).
    #[error("{0}")]
    Database(Arc<::cluster::Error>),
}

/// What the driver tells the journal every second.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Transactions from this one on may still be needed by recovery (retention keeps them).
    pub oldest_needed: TxnId,
    pub in_flight: usize,
    pub reversals: usize,
}

/// Why a journal could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Disk(#[from] tranlog::Error),
    #[error("cluster: {0}")]
    Cluster(#[from] ::cluster::Error),
}

pub trait Journal: Send + 'static {
    /// Appends a record; returns its sequence number. It may wait in memory until [`Journal::flush`].
    fn append(&mut self, record: Record) -> u64;
    /// Hands what was appended since the last flush to the disk: once per burst of events, so that
    /// the writer thread is woken once for all of their records.
    fn flush(&mut self) {}
    /// The journal's reports, taken once. `None`: a record is durable as soon as it is appended.
    fn reports(&mut self) -> Option<mpsc::UnboundedReceiver<Report>> {
        None
    }
    /// The links' leave to write upstream: in cluster mode, while the node's lease holds by its own
    /// clock.
    fn licensed(&self) -> crate::licence::Licensed {
        crate::licence::Licensed::default()
    }
    /// Cluster mode: claims a key, committed with the records appended before it.
    fn claim(&mut self, claim: Claim) {
        tracing::error!(?claim.txn, "a key was claimed, but this journal has no shared store");
    }
    /// Cluster mode: asks who holds a key, after the records appended before it are committed.
    fn look_up(&mut self, key: Claim) {
        tracing::error!(?key.txn, "a key was looked up, but this journal has no shared store");
    }
    /// Cluster mode: reads a terminal's open batch as every node recorded it, after the records
    /// appended before it are committed.
    fn read_batch(&mut self, batch: OpenBatch) {
        tracing::error!(?batch.txn, "a batch was to be read, but this journal has no shared store");
    }
    /// Cluster mode: the records appended since the last flush carry on node `node`'s work up to its
    /// record `through`; the same commit hands that work on.
    fn retire(&mut self, node: String, through: u64) {
        tracing::error!(
            node,
            through,
            "work handed on, but this journal has no shared store"
        );
    }
    /// Cluster mode: these pleas' reversals have their outcomes durable; the database's copies, if
    /// they were left there, go.
    fn settle_pleas(&mut self, pleas: Vec<Plea>) {
        tracing::error!(
            pleas = pleas.len(),
            "pleas settled, but this journal has no shared store"
        );
    }
    /// Cluster mode: holds this node's pleas in the database as its own, so that another node takes
    /// them on if this one lapses.
    fn hold_pleas(&mut self, pleas: Vec<Plea>) {
        tracing::error!(
            pleas = pleas.len(),
            "pleas held, but this journal has no shared store"
        );
    }
    /// Cluster mode: leaves pleas in the database for the other nodes (this node is ending); the
    /// answer says whether they are there.
    fn leave_pleas(&mut self, pleas: Vec<Plea>) -> oneshot::Receiver<bool> {
        tracing::error!(
            pleas = pleas.len(),
            "pleas to leave, but this journal has no shared store"
        );
        oneshot::channel().1
    }
    fn progress(&mut self, _progress: Progress) {}
    /// Writes out what is queued and stops.
    fn close(self: Box<Self>) {}
}

/// Keeps the most recent records in memory (for tests and for runs without a journal directory). It is
/// not durable: a crash forgets in-flight requests and queued reversals.
#[derive(Debug, Clone)]
pub struct MemoryJournal {
    records: Arc<Mutex<VecDeque<Record>>>,
    capacity: usize,
    /// Bumped on every append, so that a reader can wait for a record instead of polling.
    appended: Arc<watch::Sender<u64>>,
}

impl MemoryJournal {
    pub fn new(capacity: usize) -> MemoryJournal {
        MemoryJournal {
            records: Arc::default(),
            capacity: capacity.max(1),
            appended: Arc::new(watch::Sender::new(0)),
        }
    }

    /// Waits until the records kept satisfy `done`.
    pub async fn wait_for(&self, mut done: impl FnMut(&[Record]) -> bool) {
        let mut changes = self.appended.subscribe();
        loop {
            let records = self.records();
            if done(&records) {
                return;
            }
            if changes.changed().await.is_err() {
                return;
            }
        }
    }

    /// A copy of the records kept, oldest first.
    pub fn records(&self) -> Vec<Record> {
        self.lock().iter().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Record>> {
        // A panic while holding the lock cannot leave a VecDeque half-updated in a harmful way.
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Journal for MemoryJournal {
    fn append(&mut self, record: Record) -> u64 {
        let mut records = self.lock();
        if records.len() == self.capacity {
            records.pop_front();
        }
        records.push_back(record);
        drop(records);
        let mut seq = 0;
        self.appended.send_modify(|n| {
            *n += 1;
            seq = *n;
        });
        seq
    }
}

/// The journal `settings` ask for: on PostgreSQL in cluster mode (joined under the node's name), else on
/// disk in its directory (read back first; the card key it keeps is put into the engine's settings), else
/// in memory.
pub async fn open_journal(
    settings: &mut crate::Settings,
) -> Result<(Box<dyn Journal>, Recovery), OpenError> {
    if let Some(cluster) = settings.cluster.clone() {
        let (journal, recovery, stans) = cluster::ClusterJournal::open(&cluster).await?;
        settings.engine.card_key = cluster.card_key;
        settings.engine.shared_store = true;
        settings.engine.terminal_patience = cluster.terminal_patience;
        settings.engine.stans = stans;
        return Ok((Box::new(journal), recovery));
    }
    let Some(dir) = settings.journal.dir.clone() else {
        tracing::warn!(
            "no journal directory: the journal is in memory, and a crash forgets in-flight requests and pending reversals"
        );
        return Ok((Box::new(MemoryJournal::new(100_000)), Recovery::default()));
    };
    let started = std::time::Instant::now();
    let opened = disk::DiskJournal::open(&settings.journal, &dir)?;
    let s = &opened.scanned;
    tracing::info!(
        dir = %dir.display(),
        segments = s.segments.len(),
        records = s.records,
        last_seq = s.last_seq,
        took = ?started.elapsed(),
        "journal read back"
    );
    if let Some(at) = &s.torn {
        tracing::warn!(%at, "torn record at the end of the journal cut off (a crash during a write)");
    }
    for p in &s.problems {
        tracing::error!(at = %p.at, what = p.what, "journal problem");
    }
    settings.engine.card_key = opened.card_key;
    Ok((Box::new(opened.journal), opened.recovery))
}
