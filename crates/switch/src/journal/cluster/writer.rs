//! The writer task: the node's records and claims, committed in batches, through lost connections.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster::Store;
use engine::{Claim, Holder, Record, Step, TxnId};
use tokio::sync::mpsc;

use super::upkeep::Behind;
use super::{Batch, bounded, reconnect};
use crate::config::ClusterSettings;
use crate::journal::{Fault, Report};

/// The first wait before connecting again; doubled up to [`MAX_BACKOFF`].
const BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The writer task: group commits, in order, until the journal is dropped or the node is fenced.
/// `acknowledged` is the node's last record made durable (at the start, the last the database holds).
/// What must wait for a commit but not hold up the next (a batch's read, a close's bound) goes
/// `behind` it, to the evidence's connection.
pub(super) async fn write(
    mut store: Store,
    mut acknowledged: u64,
    settings: ClusterSettings,
    mut batches: mpsc::UnboundedReceiver<Batch>,
    behind: mpsc::UnboundedSender<Behind>,
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
                looked_up(&store, limit, &batch.lookups, Asked::Lookup).await,
            ));
        }
        let closed = closes(&batch.records);
        if !closed.is_empty() {
            let _ = behind.send(Behind::Closed(closed));
        }
        for read in batch.reads {
            let _ = behind.send(Behind::Read(read));
        }
    }
}

/// The terminals' batches `records` close: terminal, merchant, and when.
fn closes(records: &[(u64, Record)]) -> Vec<(String, String, std::time::SystemTime)> {
    (records.iter())
        .filter_map(|(_, r)| match &r.step {
            Step::BatchClosed {
                terminal, merchant, ..
            } => Some((terminal.to_string(), merchant.to_string(), r.at)),
            _ => None,
        })
        .collect()
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
    let lost = claims.iter().filter(is_lost);
    let mut holders = looked_up(store, limit, lost, Asked::LostClaim).await;
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

/// Why a key's holder is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    /// A claim was lost to it: the holder's records decide what the request gets.
    LostClaim,
    /// A reversal looks it up: the other attempts of the same request count too (see
    /// `engine::Holder`).
    Lookup,
}

/// Who holds each key looked up. One that cannot be read now goes unanswered: its request is refused
/// when it times out.
async fn looked_up(
    store: &Store,
    limit: Duration,
    keys: impl IntoIterator<Item = &Claim>,
    asked: Asked,
) -> Vec<(TxnId, Option<Holder>)> {
    let mut answers = Vec::new();
    for key in keys {
        let read = async {
            match asked {
                Asked::LostClaim => store.holder(key).await,
                Asked::Lookup => store.looked_up(key).await,
            }
        };
        match bounded(limit, read).await {
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
        let answers = looked_up(&store, limit, &keys, Asked::Lookup).await;
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
