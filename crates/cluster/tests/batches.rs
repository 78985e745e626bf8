//! A terminal's batch read for its settlement, on a real PostgreSQL (a throw-away server from Debian's
//! binaries; SKIPPED without one, required in CI): every node's records of the terminal since its last
//! close, whether copied to the evidence's indexes yet or not.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cluster::Store;
use cluster::throwaway::Server;
use engine::{Received, Record, Step, Totals, TxnId};
use iso8583::Mti;

const KEY: [u8; 16] = [7; 16];
const LEASE: Duration = Duration::from_secs(5);
const MERCHANT: &str = "M00000000000001";

/// `minutes` before now, to the microsecond a record keeps.
fn ago(minutes: u64) -> SystemTime {
    let us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    UNIX_EPOCH + Duration::from_micros(us - minutes * 60_000_000)
}

fn record(txn: u64, at: SystemTime, step: Step) -> Record {
    Record {
        txn: TxnId(txn),
        at,
        step,
    }
}

/// A request of `terminal` (`mti`) received `minutes` ago.
fn received(txn: u64, minutes: u64, terminal: &str, mti: &[u8; 4]) -> Record {
    let step = Step::Received(Received {
        mti: Mti::new(*mti).unwrap(),
        card: None,
        amount: Some(1000),
        currency: Some(978),
        terminal: terminal.into(),
        merchant: MERCHANT.into(),
        stan: txn as u32,
        date: 1202,
        fingerprint: txn,
    });
    record(txn, ago(minutes), step)
}

async fn joined(pg: &Server, node: &str) -> Store {
    Store::join(&pg.url(), node, LEASE, &KEY)
        .await
        .unwrap()
        .store
}

/// Which transactions a read of T1's batch returns, record by record.
async fn read(store: &Store) -> Vec<(String, u64)> {
    let records = store.batch("T1", MERCHANT).await.unwrap();
    (records.into_iter())
        .map(|(node, r)| (node, r.txn.0))
        .collect()
}

#[test]
fn a_terminals_batch_is_read_from_every_node_since_its_last_close() {
    let Some(pg) = Server::start("batches::read") else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (a, b) = (joined(&pg, "a").await, joined(&pg, "b").await);
        // On a: a purchase of T1 ten minutes ago, then its settlement five minutes ago, which closed
        // the batch; another terminal's purchase; copied to the evidence's indexes.
        let closed_at = ago(5);
        let settled = [
            (1, received(1, 10, "T1", b"0200")),
            (2, received(2, 5, "T1", b"0500")),
            (
                3,
                record(
                    2,
                    closed_at,
                    Step::BatchClosed {
                        terminal: "T1".into(),
                        merchant: MERCHANT.into(),
                        totals: Totals::default(),
                        uploaded: false,
                        discrepancies: 0,
                    },
                ),
            ),
            (4, received(3, 4, "T2", b"0200")),
        ];
        a.commit(&settled, &[], &[]).await.unwrap();
        a.index_evidence(100).await.unwrap();
        // On b, past the copy: T1's next purchase three minutes ago.
        b.commit(&[(1, received(1, 3, "T1", b"0200"))], &[], &[])
            .await
            .unwrap();
        // Before the close is known, the whole history: both nodes', oldest first.
        let everything = [("a", 1), ("a", 2), ("a", 2), ("b", 1)].map(|(n, t)| (n.to_owned(), t));
        assert_eq!(read(&a).await, everything);
        // Once it is, from a minute before it: the closing request's records, and what came after.
        a.batches_closed(&[("T1".into(), MERCHANT.into(), closed_at)])
            .await
            .unwrap();
        assert_eq!(read(&b).await, everything[1..]);
        // An older close does not move the bound back.
        a.batches_closed(&[("T1".into(), MERCHANT.into(), ago(20))])
            .await
            .unwrap();
        assert_eq!(read(&a).await, everything[1..]);
    });
}
