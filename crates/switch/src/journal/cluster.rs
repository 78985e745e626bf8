//! The journal on PostgreSQL: cluster mode. Records and claims appended during a burst of events go to
//! a writer task; it commits everything that arrived while its last commit was out as one transaction
//! (group commit: one statement, one round trip, fenced by the node's epoch), then reports it durable
//! and answers the claims. A second task renews the node's lease on its own connection, and a third
//! copies the evidence disputes search by to its indexes, behind the commits, on a third.
//!
//! The database going away is not a failure: the writer says the journal is unwritable (new requests
//! are refused at once), reconnects with backoff, finds out whether the commit in flight went through,
//! and goes on with everything that waited. Only the fence ends it: a node that lost its epoch can make
//! nothing durable again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster::{Purpose, Store};
use engine::{Claim, Holder, Record, Recovery, Stans, TxnId};
use tokio::sync::{mpsc, watch};

use super::{Fault, Journal, Progress, Report};
use crate::config::ClusterSettings;

/// How often partitions are made ahead and days past retention dropped.
const MAINTAIN_EVERY: Duration = Duration::from_secs(3600);
/// How often the evidence disputes search by is copied to its indexes, behind the commits (schema
/// version 4), and how many rows of a node at most each time: a search reads the rows past the copy
/// without an index, so the copy stays a fraction of a second behind.
const INDEX_EVERY: Duration = Duration::from_millis(100);
const INDEX_MOST: i32 = 50_000;
/// The bound on the database's bulk work, off every transaction's path (an evidence copy, the
/// partitions' upkeep): long, since a backlog takes time, but finite, since a connection that stopped
/// answering would hold the task for good. Either is one transaction: cut, it is done again later.
const BULK_TIMEOUT: Duration = Duration::from_secs(60);
/// The first wait before connecting again; doubled up to [`MAX_BACKOFF`].
const BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// What one commit carries.
#[derive(Debug, Default)]
struct Batch {
    records: Vec<(u64, Record)>,
    claims: Vec<Claim>,
    /// Keys to look up once the batch is committed.
    lookups: Vec<Claim>,
    /// Nodes whose work these records carry on, with the last record of theirs handed on.
    retire: Vec<(String, u64)>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.records.is_empty()
            && self.claims.is_empty()
            && self.lookups.is_empty()
            && self.retire.is_empty()
    }

    fn extend(&mut self, more: Batch) {
        self.records.extend(more.records);
        self.claims.extend(more.claims);
        self.lookups.extend(more.lookups);
        self.retire.extend(more.retire);
    }
}

#[derive(Debug)]
pub(super) struct ClusterJournal {
    next_seq: u64,
    pending: Batch,
    writer: mpsc::UnboundedSender<Batch>,
    reports: Option<mpsc::UnboundedReceiver<Report>>,
    progress: Arc<watch::Sender<Progress>>,
}

impl ClusterJournal {
    /// Joins the cluster as `settings.node` and reads back what recovery needs, with the STANs the
    /// node numbers its upstream messages with.
    pub(super) async fn open(
        settings: &ClusterSettings,
    ) -> Result<(ClusterJournal, Recovery, Stans), cluster::Error> {
        let started = Instant::now();
        let joined = Store::join(
            &settings.database,
            &settings.node,
            settings.lease,
            &settings.card_key,
        )
        .await?;
        let mut recovery = Recovery::default();
        if let Some(last) = joined.last_txn {
            recovery.numbered_after(last);
        }
        let records = joined.records.len();
        for record in joined.records {
            recovery.add(record);
        }
        let stans = Stans::block(joined.stan_block);
        tracing::info!(node = settings.node, epoch = joined.store.epoch(), records, last_seq = joined.last_seq, %stans, took = ?started.elapsed(), "journal read back from the database");
        let (store, url) = (&joined.store, &settings.database);
        let lease = store.twin(url, Purpose::Lease).await?;
        let taker = store.twin(url, Purpose::Upkeep).await?;
        let copier = store.twin(url, Purpose::Evidence).await?;
        let (writer, batches) = mpsc::unbounded_channel();
        let (reports_tx, reports) = mpsc::unbounded_channel();
        let progress = Arc::new(watch::Sender::new(Progress {
            oldest_needed: TxnId(0),
            in_flight: 0,
            reversals: 0,
        }));
        tokio::spawn(write(
            joined.store,
            joined.last_seq,
            settings.clone(),
            batches,
            reports_tx.clone(),
        ));
        tokio::spawn(copy_evidence(
            copier,
            settings.database.clone(),
            reports_tx.clone(),
        ));
        tokio::spawn(upkeep(taker, settings.clone(), reports_tx.clone()));
        tokio::spawn(keep_lease(
            lease,
            settings.clone(),
            progress.subscribe(),
            reports_tx,
        ));
        let journal = ClusterJournal {
            next_seq: joined.last_seq + 1,
            pending: Batch::default(),
            writer,
            reports: Some(reports),
            progress,
        };
        Ok((journal, recovery, stans))
    }
}

impl Journal for ClusterJournal {
    fn append(&mut self, record: Record) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.pending.records.push((seq, record));
        seq
    }

    fn claim(&mut self, claim: Claim) {
        self.pending.claims.push(claim);
    }

    fn look_up(&mut self, key: Claim) {
        self.pending.lookups.push(key);
    }

    fn retire(&mut self, node: String, through: u64) {
        self.pending.retire.push((node, through));
    }

    fn flush(&mut self) {
        if !self.pending.is_empty() {
            // The writer ends only with the process (or fenced, when nothing matters any more).
            let _ = self.writer.send(std::mem::take(&mut self.pending));
        }
    }

    fn reports(&mut self) -> Option<mpsc::UnboundedReceiver<Report>> {
        self.reports.take()
    }

    fn progress(&mut self, progress: Progress) {
        self.progress.send_replace(progress);
    }

    fn close(mut self: Box<Self>) {
        self.flush();
    }
}

/// The writer task: group commits, in order, until the journal is dropped or the node is fenced.
/// `acknowledged` is the node's last record made durable (at the start, the last the database holds).
async fn write(
    mut store: Store,
    mut acknowledged: u64,
    settings: ClusterSettings,
    mut batches: mpsc::UnboundedReceiver<Batch>,
    reports: mpsc::UnboundedSender<Report>,
) {
    let limit = settings.timeout;
    while let Some(mut batch) = batches.recv().await {
        // Everything that came while the last commit was out goes in this one.
        while let Ok(more) = batches.try_recv() {
            batch.extend(more);
        }
        let started = Instant::now();
        let Some(lost) = commit(&mut store, &settings, acknowledged, &batch, &reports).await else {
            return;
        };
        if let Some((last_seq, _)) = batch.records.last() {
            acknowledged = *last_seq;
        }
        // Who holds each lost key is read before the commit is reported durable: a provisional forward
        // must be withdrawn before the gate would let it out, and only where the claim is really lost
        // (after a lost connection, `lost` names every claim of the batch, its own among them).
        let answers = claimed(&store, limit, &batch.claims, &lost).await;
        // Lost for good (not found to be this node's own, whether its holder could be read or not),
        // where the batch carried the transaction's forward: a claim asked again while its holder
        // finishes has no forward to withdraw.
        let withdrawn: Vec<TxnId> = (lost.iter().copied())
            .filter(|txn| !answers.iter().any(|(t, h)| t == txn && h.is_none()))
            .filter(|txn| {
                (batch.records.iter())
                    .any(|(_, r)| r.txn == *txn && engine::provisional(r, &batch.claims))
            })
            .collect();
        if !withdrawn.is_empty() {
            let _ = reports.send(Report::Withdrawn(withdrawn));
        }
        // The claims' answers before the durable mark, which lets the provisional forwards out: the
        // engine must know a forward's claim won before the forward leaves, or a terminal's reversal
        // arriving in between finds it still provisional and withdraws a forward already sent (the
        // issuer's approval then stands, unreversed).
        if !answers.is_empty() {
            let _ = reports.send(Report::Claimed(answers));
        }
        if let Some((last_seq, _)) = batch.records.last() {
            let _ = reports.send(Report::Durable(tranlog::Batch {
                last_seq: *last_seq,
                records: batch.records.len(),
                bytes: 0,
                sync: Some(started.elapsed()),
            }));
        }
        if !batch.lookups.is_empty() {
            let _ = reports.send(Report::Claimed(
                looked_up(&store, limit, &batch.lookups).await,
            ));
        }
    }
}

/// Commits `batch`, through any number of lost connections; the claims it lost, or `None` once the node
/// is fenced, or finds the database went back past `acknowledged` (reported as the fence: the node may
/// commit nothing more on it).
///
/// A commit that failed with an error rather than silence may have lost its connection alone (its
/// backend ended, a proxy between restarted): the connection is made again and the commit settled at
/// once, and only if that fails too is the database reported unavailable, so that a lost connection
/// refuses no request while the database answers (they wait for the commit meanwhile). Silence is
/// reported at once: the database may be gone, and requests would wait one more `cluster.timeout`.
async fn commit(
    store: &mut Store,
    settings: &ClusterSettings,
    acknowledged: u64,
    batch: &Batch,
    reports: &mpsc::UnboundedSender<Report>,
) -> Option<Vec<TxnId>> {
    let (url, limit) = (&settings.database, settings.timeout);
    let mut backoff = BACKOFF;
    let mut down = false;
    // One quiet try a batch: a commit that fails again once settled is reported.
    let mut quiet = true;
    let unavailable = |error: cluster::Error, down: &mut bool| {
        if !std::mem::replace(down, true) {
            tracing::error!(%error, "database unavailable: new requests are refused until it is back");
            let fault = Fault::Unavailable(Arc::new(error));
            let _ = reports.send(Report::Unwritable(Some(fault)));
        }
    };
    loop {
        let committed = store.commit(&batch.records, &batch.claims, &batch.retire);
        let error = match bounded(limit, committed).await {
            Ok(done) => break finish(down, reports, done.lost),
            Err(e) => e,
        };
        if error.is_fenced() {
            tracing::error!(%error, "fenced: this node's work belongs to another node now; nothing more is made durable");
            let _ = reports.send(Report::Fenced(Fault::Database(Arc::new(error))));
            return None;
        }
        if down || matches!(error, cluster::Error::NoAnswer(_)) || !std::mem::take(&mut quiet) {
            unavailable(error, &mut down);
        } else {
            tracing::warn!(%error, "commit failed; connecting again to settle it at once");
        }
        // The commit may have gone through before the connection broke: find out before repeating it.
        loop {
            if down {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            let settled = match reconnect(store, url, limit, reports).await {
                Ok(()) => {
                    bounded(
                        limit,
                        store.settle(acknowledged, &batch.records, &batch.claims),
                    )
                    .await
                }
                Err(error) => Err(error),
            };
            match settled {
                Ok(Some(done)) => return finish(down, reports, done.lost),
                Ok(None) => break,
                Err(error @ cluster::Error::WentBack { .. }) => {
                    tracing::error!(%error, "this node stops: started again, it goes on from what the database holds; reconcile the transactions after the last it holds with the issuers");
                    let _ = reports.send(Report::Fenced(Fault::Database(Arc::new(error))));
                    return None;
                }
                Err(error) => unavailable(error, &mut down),
            }
        }
    }
}

fn finish(
    down: bool,
    reports: &mpsc::UnboundedSender<Report>,
    lost: Vec<TxnId>,
) -> Option<Vec<TxnId>> {
    if down {
        tracing::info!("database back: records are made durable again");
        let _ = reports.send(Report::Unwritable(None));
    }
    Some(lost)
}

/// Each claim's answer: won, or who holds the key. A holder that cannot be read now goes unanswered,
/// and its request is refused when its claim times out.
async fn claimed(
    store: &Store,
    limit: Duration,
    claims: &[Claim],
    lost: &[TxnId],
) -> Vec<(TxnId, Option<Holder>)> {
    let is_lost = |claim: &&Claim| lost.contains(&claim.txn);
    let mut holders = looked_up(store, limit, claims.iter().filter(is_lost)).await;
    let mut answers = Vec::with_capacity(claims.len());
    for claim in claims {
        if !is_lost(&claim) {
            answers.push((claim.txn, None));
            continue;
        }
        let Some(i) = holders.iter().position(|(txn, _)| *txn == claim.txn) else {
            continue;
        };
        match holders.swap_remove(i).1 {
            // Its own claim, from a commit whose outcome was lost with the connection: won.
            Some(h) if h.node == store.node() && h.txn == claim.txn => {
                answers.push((claim.txn, None))
            }
            Some(holder) => answers.push((claim.txn, Some(holder))),
            None => tracing::error!(?claim.txn, "a lost claim has no holder"),
        }
    }
    answers
}

/// Who holds each key looked up. One that cannot be read now goes unanswered: its request is refused
/// when it times out.
async fn looked_up(
    store: &Store,
    limit: Duration,
    keys: impl IntoIterator<Item = &Claim>,
) -> Vec<(TxnId, Option<Holder>)> {
    let mut answers = Vec::new();
    for key in keys {
        match bounded(limit, store.holder(key)).await {
            Ok(holder) => answers.push((key.txn, holder)),
            Err(error) => {
                tracing::warn!(?key.txn, %error, "holder of a key not read");
                // The others would wait as long each, on the same connection.
                if matches!(error, cluster::Error::NoAnswer(_)) {
                    break;
                }
            }
        }
    }
    answers
}

/// Copies the evidence disputes search by to its indexes behind the commits (schema version 4), every
/// [`INDEX_EVERY`], until the journal is dropped. On a connection of its own: a long copy (a backlog
/// after an outage, rows of many nodes) must never hold up a lease renewal.
async fn copy_evidence(mut store: Store, url: String, reports: mpsc::UnboundedSender<Report>) {
    let mut every = tokio::time::interval(INDEX_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = reports.closed() => return,
        }
        if let Err(error) = bounded(BULK_TIMEOUT, store.index_evidence(INDEX_MOST)).await {
            // While the database is away the writer and the lease say so; a search still finds what
            // is not copied yet, more slowly.
            tracing::debug!(%error, "evidence not copied to its indexes; connecting again");
            let _ = reconnect(&mut store, &url, BULK_TIMEOUT, &reports).await;
        }
    }
}

/// Renews the lease a third of its length before it would lapse, until the journal is dropped; a
/// renewal refused by the fence is reported as the journal's failure, and one that fails otherwise as
/// the lease's (readiness fails until a renewal goes through). After a failure the connection is made
/// again, and if that works the lease is renewed at once rather than a third of the lease later.
/// A renewal that failed with an error rather than silence, after one that went through, may be its
/// connection's alone (its backend ended, a proxy between restarted): it is reported only if the
/// connection cannot be made again or the renewal at once fails too, so that a lost connection does
/// not fail readiness while the database answers. Silence is reported at once: the database may be
/// gone, and waiting for a reconnection would hide it for one more `cluster.timeout`. Nothing else runs
/// on the lease's connection, so that nothing slow holds up a renewal.
async fn keep_lease(
    mut store: Store,
    settings: ClusterSettings,
    progress: watch::Receiver<Progress>,
    reports: mpsc::UnboundedSender<Report>,
) {
    let mut every = tokio::time::interval(settings.lease / 3);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Whether the last renewal failed and was reported: every failure reported is counted, and the
    // first success after one is reported too.
    let mut unrenewed = false;
    // The next renewal goes at once, not at the next tick: after a failure and a new connection. Never
    // twice in a row, so that a renewal that fails on a working connection goes at the lease's pace.
    let mut again = false;
    loop {
        let at_once = std::mem::take(&mut again);
        if !at_once {
            tokio::select! {
                _ = every.tick() => {}
                () = reports.closed() => return,
            }
        }
        let p = *progress.borrow();
        let renewal = store.renew(settings.lease, p.in_flight, p.reversals, p.oldest_needed);
        match bounded(settings.timeout, renewal).await {
            Ok(()) => {
                if std::mem::take(&mut unrenewed) {
                    let _ = reports.send(Report::LeaseUnrenewed(None));
                } else if at_once {
                    tracing::info!("lease renewed on a new connection");
                }
            }
            Err(error) if error.is_fenced() => {
                tracing::error!(%error, "lease lost");
                let _ = reports.send(Report::Fenced(Fault::Database(Arc::new(error))));
                return;
            }
            Err(error) => {
                // Once a failure is reported, the next ones are too: the connection is down with
                // the database, not alone.
                let connection_only =
                    !at_once && !unrenewed && !matches!(error, cluster::Error::NoAnswer(_));
                let fault = Fault::Database(Arc::new(error));
                let unrenewed_with = |fault: Fault| {
                    tracing::warn!(error = %fault, "lease not renewed; connecting again");
                    let _ = reports.send(Report::LeaseUnrenewed(Some(fault)));
                };
                if connection_only {
                    tracing::warn!(error = %fault, "lease renewal failed; connecting again to renew at once");
                } else {
                    unrenewed = true;
                    unrenewed_with(fault.clone());
                }
                let reconnected =
                    reconnect(&mut store, &settings.database, settings.timeout, &reports);
                match reconnected.await {
                    Ok(()) => again = !at_once,
                    Err(_) if connection_only => {
                        unrenewed = true;
                        unrenewed_with(fault);
                    }
                    Err(_) => {}
                }
            }
        }
    }
}

/// Takes over the work of any node whose lease lapsed and reads the database's synchronous standbys,
/// every third of the lease, and maintains the partitions between, until the journal is dropped. On
/// a connection of its own, off the lease's: a takeover is not bounded here (cut after it has marked
/// the node taken, while it reads that node's records, it would leave the work marked as this live
/// node's and in nobody's hands), and either, held by a connection gone dark, must not hold up a
/// renewal (which would have this node taken over in turn); it holds up only this task. The database
/// ends a takeover's transaction left idle for `cluster.timeout` (see `Store::take_over`), so a
/// takeover held in the dark holds no other node up.
async fn upkeep(
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
        // Read beside the takeovers (an SRE's gauge: whether a synchronous standby keeps what the
        // nodes commit); the lease's renewal reports a database that does not answer.
        if let Ok(database) = bounded(settings.timeout, store.database()).await {
            let _ = reports.send(Report::Standbys(database.standbys()));
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
            }
        }
    }
}

/// Makes `store`'s connection again (within `limit`), and reports it once made: a connection lost
/// alone is made again without failing readiness, so the count is what shows it to an SRE.
async fn reconnect(
    store: &mut Store,
    url: &str,
    limit: Duration,
    reports: &mpsc::UnboundedSender<Report>,
) -> Result<(), cluster::Error> {
    bounded(limit, store.reconnect(url)).await?;
    let _ = reports.send(Report::Reconnected(store.purpose()));
    Ok(())
}

/// `call`, or [`cluster::Error::NoAnswer`] once the database has not answered it within `limit`: a
/// connection that stopped answering (the database's host gone, a network partition, a failover whose
/// old address went dark) fails no other way until the kernel gives up on it, a quarter of an hour
/// later. The caller treats it as any lost connection: it connects again, and a commit is settled
/// before it is repeated (a commit that reaches the database late meets the copy made since, and one
/// of the two fails on the records' key).
async fn bounded<T>(
    limit: Duration,
    call: impl Future<Output = Result<T, cluster::Error>>,
) -> Result<T, cluster::Error> {
    tokio::time::timeout(limit, call)
        .await
        .unwrap_or(Err(cluster::Error::NoAnswer(limit)))
}

#[cfg(test)]
mod tests {
    use cluster::throwaway::Server;
    use engine::Claim;

    use super::*;

    fn key(txn: u64, stan: u32) -> Claim {
        Claim {
            txn: TxnId(txn),
            terminal: "T0000001".into(),
            merchant: "M00000000000001".into(),
            stan,
            date: 1207,
            reversal: false,
            fingerprint: 42,
            replacing: None,
        }
    }

    /// Holders are looked up one after another on one connection: once one goes unanswered, the rest
    /// are not asked (each would wait as long, behind it). The database is kept from answering by a
    /// lock on the claims; the clock is paused, so each unanswered lookup moves it by the limit.
    #[tokio::test]
    async fn holder_lookups_stop_at_the_first_left_unanswered() {
        let Some(pg) = Server::start("journal::lookups") else {
            return;
        };
        let store = Store::join(&pg.url(), "a", Duration::from_secs(5), &[7; 16])
            .await
            .unwrap()
            .store;
        let mut lock = cluster::connect(&pg.url()).await.unwrap();
        let held = lock.transaction().await.unwrap();
        held.batch_execute("LOCK TABLE claims IN ACCESS EXCLUSIVE MODE")
            .await
            .unwrap();

        tokio::time::pause();
        let limit = Duration::from_secs(2);
        let keys = [key(1, 1), key(2, 2), key(3, 3)];
        let start = tokio::time::Instant::now();
        let answers = looked_up(&store, limit, &keys).await;
        let waited = start.elapsed();
        tokio::time::resume();

        assert!(answers.is_empty(), "{answers:?}");
        // One limit (to the timer wheel's millisecond); three, had each key been asked.
        assert!(
            waited >= limit && waited < 2 * limit,
            "waited {waited:?}: lookups went on after the first went unanswered"
        );
        held.rollback().await.unwrap();
    }
}
