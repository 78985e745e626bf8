//! Work on the database off every transaction's path: takeovers of lapsed nodes, the pleas nodes leave
//! each other, the standbys' state, the partitions, the evidence copied to its indexes, and terminals'
//! batches read for their settlements.

use std::time::{Duration, SystemTime};

use cluster::Store;
use engine::{OpenBatch, Plea};
use tokio::sync::{mpsc, oneshot};

use super::{bounded, reconnect};
use crate::config::ClusterSettings;
use crate::journal::Report;

/// The bound on the database's bulk work, off every transaction's path (an evidence copy, the
/// partitions' upkeep): long, since a backlog takes time, but finite, since a connection that stopped
/// answering would hold the task for good. Either is one transaction: cut, it is done again later.
const BULK_TIMEOUT: Duration = Duration::from_secs(60);

/// How often partitions are made ahead and days past retention dropped.
const MAINTAIN_EVERY: Duration = Duration::from_secs(3600);
/// How often the evidence disputes search by is copied to its indexes, behind the commits (schema
/// version 4), and how many rows of a node at most each time: a search reads the rows past the copy
/// without an index, so the copy stays a fraction of a second behind.
const INDEX_EVERY: Duration = Duration::from_millis(100);
const INDEX_MOST: i32 = 50_000;

/// How long a settlement message's read of its terminal's batch may take: its terminal waits for the
/// answer (typically 30 to 60 s), and a read cut short is refused with 91, which the terminal retries.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How many pleas a node takes on at each turn of its upkeep.
const PLEAS_AT_ONCE: i64 = 64;

/// What the task on the evidence's connection does besides the copy: what the writer hands on once a
/// commit is done, and the pleas the driver settles or leaves.
#[derive(Debug)]
pub(super) enum Behind {
    /// A settlement message's batch to read (the records before it are committed).
    Read(OpenBatch),
    /// Terminals whose batch the commit closed, and when: the bound of their batches' reads moves.
    Closed(Vec<(String, String, SystemTime)>),
    /// Pleas whose reversals' outcomes are durable: deleted, if they were left in the database (a plea
    /// not deleted is taken on again later, and found settled).
    Settled(Vec<Plea>),
    /// Pleas this node holds, to hold in the database as its own (free for the others once it lapses).
    Hold(Vec<Plea>),
    /// Pleas to leave for the other nodes, and whether they were left. Not behind the fence: this task
    /// goes on when the node is fenced.
    Leave(Vec<Plea>, oneshot::Sender<bool>),
}

/// On the evidence's connection, until the journal is dropped: copies the evidence disputes search by
/// to its indexes behind the commits (schema version 4), every [`INDEX_EVERY`], and does what commits
/// hand on ([`Behind`]), first. Off the writer's connection: a settlement's read (its terminal's whole
/// batch) must not hold up the commits; and off the lease's, for a long copy (a backlog after an
/// outage, rows of many nodes) must never hold up a renewal.
pub(super) async fn behind_commits(
    mut store: Store,
    url: String,
    mut work: mpsc::UnboundedReceiver<Behind>,
    reports: mpsc::UnboundedSender<Report>,
) {
    let mut every = tokio::time::interval(INDEX_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let done = tokio::select! {
            biased;
            Some(behind) = work.recv() => serve(&mut store, &url, behind, &reports).await,
            _ = every.tick() => bounded(BULK_TIMEOUT, store.index_evidence(INDEX_MOST)).await.map(drop),
            () = reports.closed() => return,
        };
        if let Err(error) = done {
            // While the database is away the writer and the lease say so; a search still finds what
            // is not copied yet, more slowly, and a terminal refused its batch asks again.
            tracing::debug!(%error, "work behind the commits not done; connecting again");
            let _ = reconnect(&mut store, &url, BULK_TIMEOUT, &reports).await;
        }
    }
}

/// Reads a batch and reports it (`None` if it could not be read), moves terminals' bounds (a bound
/// not moved stays older, which reads more and folds to the same batch), or settles or leaves pleas.
async fn serve(
    store: &mut Store,
    url: &str,
    behind: Behind,
    reports: &mpsc::UnboundedSender<Report>,
) -> Result<(), cluster::Error> {
    match behind {
        Behind::Read(batch) => {
            let read = bounded(READ_TIMEOUT, store.batch(&batch.terminal, &batch.merchant)).await;
            let (records, failed) = match read {
                Ok(records) => (Some(records), Ok(())),
                Err(error) => {
                    tracing::warn!(%error, txn = ?batch.txn, "a terminal's batch could not be read for its settlement");
                    (None, Err(error))
                }
            };
            let _ = reports.send(Report::BatchRead {
                txn: batch.txn,
                records,
            });
            failed
        }
        Behind::Closed(closed) => bounded(READ_TIMEOUT, store.batches_closed(&closed)).await,
        Behind::Settled(pleas) => bounded(READ_TIMEOUT, store.settle_pleas(&pleas)).await,
        Behind::Hold(pleas) => bounded(READ_TIMEOUT, store.hold_pleas(&pleas)).await,
        // The node is ending, perhaps just after the database came back: a connection lost meanwhile
        // is made again, once, before the pleas are given up.
        Behind::Leave(pleas, left) => {
            let mut done = bounded(READ_TIMEOUT, store.plead(&pleas)).await;
            if done.is_err() && reconnect(store, url, READ_TIMEOUT, reports).await.is_ok() {
                done = bounded(READ_TIMEOUT, store.plead(&pleas)).await;
            }
            let _ = left.send(done.is_ok());
            done
        }
    }
}

/// Takes over the work of any node whose lease lapsed, takes on the pleas nodes left, and reads the
/// database's synchronous standbys, every third of the lease, and maintains the partitions between,
/// until the journal is dropped. On a connection of its own, off the lease's: a takeover is not
/// bounded here (cut after it has marked the node taken, while it reads that node's records, it would
/// leave the work marked as this live node's and in nobody's hands), and either, held by a connection
/// gone dark, must not hold up a renewal (which would have this node taken over in turn); it holds up
/// only this task. The database ends a takeover's transaction left idle for `cluster.timeout` (see
/// `Store::take_over`), so a takeover held in the dark holds no other node up.
pub(super) async fn upkeep(
    mut store: Store,
    settings: ClusterSettings,
    reports: mpsc::UnboundedSender<Report>,
) {
    let mut every = tokio::time::interval(settings.lease / 3);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut maintain = tokio::time::interval(MAINTAIN_EVERY);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = maintain.tick() => {
                match bounded(BULK_TIMEOUT, store.maintain(settings.retain)).await {
                    Ok(dropped) if !dropped.is_empty() => tracing::info!(?dropped, "journal days past retention dropped"),
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "journal partitions not maintained"),
                }
                continue;
            }
            () = reports.closed() => return,
        }
        // Read beside the takeovers (an SRE's gauges: whether a synchronous standby keeps what the
        // nodes commit, and the pleas waiting); the lease's renewal reports a database that does not
        // answer.
        if let Ok(database) = bounded(settings.timeout, store.database()).await {
            let _ = reports.send(Report::Database(database));
        }
        match store.take_over(settings.timeout).await {
            Ok(None) => {}
            Ok(Some(t)) => {
                let _ = reports.send(Report::TakeOver {
                    node: t.node,
                    through: t.through,
                    records: t.records,
                });
            }
            // The lease's renewal finds the fence too, and reports it.
            Err(error) if error.is_fenced() => return,
            Err(error) => {
                tracing::warn!(%error, "lapsed nodes not checked for takeover; connecting again");
                let _ = reconnect(&mut store, &settings.database, settings.timeout, &reports).await;
                continue;
            }
        }
        match bounded(settings.timeout, store.take_pleas(PLEAS_AT_ONCE)).await {
            Ok(pleas) if !pleas.is_empty() => {
                tracing::warn!(
                    pleas = pleas.len(),
                    "taking on reversals other nodes admitted in terminals' names and left"
                );
                let _ = reports.send(Report::Pleas(pleas));
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "pleas left by other nodes not read"),
        }
    }
}
