//! The journal on PostgreSQL: cluster mode. Records and claims appended during a burst of events go to
//! a writer task; it commits everything that arrived while its last commit was out as one transaction
//! (group commit: one statement, one round trip, fenced by the node's epoch), then reports it durable
//! and answers the claims. A second task renews the node's lease on its own connection; a third takes
//! over lapsed nodes, takes on the pleas they left and keeps the partitions, and a fourth copies the
//! evidence disputes search by to its indexes behind the commits, reads terminals' batches for their
//! settlements and settles or leaves pleas, each on a connection of its own too.
//!
//! The database going away is not a failure: the writer says the journal is unwritable (new requests
//! are refused at once), reconnects with backoff, finds out whether the commit in flight went through,
//! and goes on with everything that waited. Only the fence ends it: a node that lost its epoch can make
//! nothing durable again.
//!
//! Each task is a module of its own: `writer` (the group commits), `lease` (the renewals) and
//! `upkeep` (takeovers, partitions and the evidence copy); what they share is here.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster::{Purpose, Store};
use engine::{Claim, Licence, OpenBatch, Plea, Record, Recovery, Stans, TxnId};
use tokio::sync::{mpsc, oneshot, watch};

use super::{Journal, Progress, Report};
use crate::config::ClusterSettings;
use crate::licence::Licensed;

mod lease;
mod upkeep;
mod writer;

/// What one commit carries.
#[derive(Debug, Default)]
struct Batch {
    records: Vec<(u64, Record)>,
    claims: Vec<Claim>,
    /// Keys to look up once the batch is committed.
    lookups: Vec<Claim>,
    /// Nodes whose work these records carry on, with the last record of theirs handed on.
    retire: Vec<(String, u64)>,
    /// Terminals' batches to read once the batch is committed.
    reads: Vec<OpenBatch>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.records.is_empty()
            && self.claims.is_empty()
            && self.lookups.is_empty()
            && self.retire.is_empty()
            && self.reads.is_empty()
    }

    fn extend(&mut self, more: Batch) {
        self.records.extend(more.records);
        self.claims.extend(more.claims);
        self.lookups.extend(more.lookups);
        self.retire.extend(more.retire);
        self.reads.extend(more.reads);
    }
}

#[derive(Debug)]
pub(super) struct ClusterJournal {
    next_seq: u64,
    pending: Batch,
    writer: mpsc::UnboundedSender<Batch>,
    /// To the task on the evidence's connection: pleas to settle or to leave.
    behind: mpsc::UnboundedSender<upkeep::Behind>,
    reports: Option<mpsc::UnboundedReceiver<Report>>,
    progress: Arc<watch::Sender<Progress>>,
    licensed: Licensed,
}

impl ClusterJournal {
    /// Joins the cluster as `settings.node` and reads back what recovery needs, with the STANs the
    /// node numbers its upstream messages with.
    pub(super) async fn open(
        settings: &ClusterSettings,
    ) -> Result<(ClusterJournal, Recovery, Stans), cluster::Error> {
        let started = Instant::now();
        // The lease starts when the database takes the join, no earlier than this.
        let join_sent = tokio::time::Instant::now().into_std();
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
        let (behind, work) = mpsc::unbounded_channel();
        let (reports_tx, reports) = mpsc::unbounded_channel();
        let progress = Arc::new(watch::Sender::new(Progress {
            oldest_needed: TxnId(0),
            in_flight: 0,
            reversals: 0,
        }));
        tokio::spawn(writer::write(
            joined.store,
            joined.last_seq,
            settings.clone(),
            batches,
            behind.clone(),
            reports_tx.clone(),
        ));
        tokio::spawn(upkeep::behind_commits(
            copier,
            settings.database.clone(),
            work,
            reports_tx.clone(),
        ));
        tokio::spawn(upkeep::upkeep(taker, settings.clone(), reports_tx.clone()));
        let (renewals, licensed) =
            Licensed::leased(Licence::from_renewal(join_sent, settings.lease));
        tokio::spawn(lease::keep_lease(
            lease,
            settings.clone(),
            progress.subscribe(),
            renewals,
            reports_tx,
        ));
        let journal = ClusterJournal {
            next_seq: joined.last_seq + 1,
            pending: Batch::default(),
            writer,
            behind,
            reports: Some(reports),
            progress,
            licensed,
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

    fn read_batch(&mut self, batch: OpenBatch) {
        self.pending.reads.push(batch);
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

    fn licensed(&self) -> Licensed {
        self.licensed.clone()
    }

    fn progress(&mut self, progress: Progress) {
        self.progress.send_replace(progress);
    }

    fn settle_pleas(&mut self, pleas: Vec<Plea>) {
        // The task ends only with the process.
        let _ = self.behind.send(upkeep::Behind::Settled(pleas));
    }

    fn hold_pleas(&mut self, pleas: Vec<Plea>) {
        // Not held yet (the database is away): held at the next turn of the upkeep.
        let _ = self.behind.send(upkeep::Behind::Hold(pleas));
    }

    fn leave_pleas(&mut self, pleas: Vec<Plea>) -> oneshot::Receiver<bool> {
        let (left, answer) = oneshot::channel();
        let _ = self.behind.send(upkeep::Behind::Leave(pleas, left));
        answer
    }

    fn close(mut self: Box<Self>) {
        self.flush();
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
///
/// A process stopped (paused, starved) while it waited has not seen the database go quiet: its answer
/// may be waiting unread. Counted lost, a commit would have the node refuse what it holds with 91, to
/// connections that may have closed meanwhile. So the wait is taken in slices of [`SLICE`], and a
/// slice that ends much later than asked ([`engine::STALLED`]) says the process was stopped: a limit
/// then found passed gives the call its limit once more. (A limit found passed by moments says
/// nothing: a process stopped for most of the limit resumes just after it.)
async fn bounded<T>(
    limit: Duration,
    call: impl Future<Output = Result<T, cluster::Error>>,
) -> Result<T, cluster::Error> {
    let mut call = std::pin::pin!(call);
    let mut deadline = tokio::time::Instant::now() + limit;
    let (mut stopped, mut again) = (false, true);
    loop {
        let slice = (tokio::time::Instant::now() + SLICE).min(deadline);
        if let Ok(answer) = tokio::time::timeout_at(slice, &mut call).await {
            return answer;
        }
        stopped |= slice.elapsed() > engine::STALLED;
        if slice < deadline {
            continue;
        }
        if !(stopped && std::mem::take(&mut again)) {
            return Err(cluster::Error::NoAnswer(limit));
        }
        tracing::warn!(
            "this process was stopped during a database call: the call gets its limit once more"
        );
        deadline = tokio::time::Instant::now() + limit;
    }
}

/// How often a database call's wait checks whether this process was stopped meanwhile.
const SLICE: Duration = Duration::from_millis(100);

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_secs(2);

    /// A call under [`LIMIT`], spawned: what answers it, and its task.
    fn call() -> (
        oneshot::Sender<()>,
        tokio::task::JoinHandle<Result<(), cluster::Error>>,
    ) {
        let (answer, answered) = oneshot::channel::<()>();
        let call = async move { answered.await.map_err(|_| cluster::Error::NoAnswer(LIMIT)) };
        (answer, tokio::spawn(bounded(LIMIT, call)))
    }

    /// Stopped for most of the limit, the process resumes moments after it: the call gets its
    /// limit once more all the same.
    #[tokio::test(start_paused = true)]
    async fn a_call_the_process_was_stopped_during_gets_its_limit_once_more() {
        let (answer, waiting) = call();
        for _ in 0..2 {
            tokio::task::yield_now().await;
            tokio::time::advance(SLICE).await;
        }
        tokio::task::yield_now().await;
        // Stopped from here to moments past the limit.
        tokio::time::advance(LIMIT - 2 * SLICE + Duration::from_millis(50)).await;
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "counted lost");
        answer.send(()).unwrap();
        assert!(waiting.await.unwrap().is_ok());
    }

    /// A process stopped past a call's limit finds it passed long ago as it resumes: the answer that
    /// came meanwhile is taken, not counted lost. A call that stays silent is lost one limit later.
    #[tokio::test(start_paused = true)]
    async fn a_limit_found_passed_long_after_gives_the_call_its_limit_once_more() {
        let limit = LIMIT;
        let (answer, waiting) = call();
        tokio::task::yield_now().await;
        tokio::time::advance(limit + Duration::from_secs(1)).await;
        // It resumes before the answer is read (the connection's own task has not run yet).
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "counted lost");
        answer.send(()).unwrap();
        assert!(waiting.await.unwrap().is_ok());

        let silent = tokio::spawn(bounded(limit, std::future::pending::<Result<(), _>>()));
        tokio::task::yield_now().await;
        tokio::time::advance(limit + Duration::from_secs(1)).await;
        assert!(!silent.is_finished());
        tokio::time::advance(limit).await;
        assert!(matches!(
            silent.await.unwrap(),
            Err(cluster::Error::NoAnswer(_))
        ));
    }
}
