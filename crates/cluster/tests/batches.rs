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
        // On a: a purchase of T1 a month and a day ago, one ten minutes ago, then its settlement five
        // minutes ago, which closed the batch; another terminal's purchase; copied to the evidence's
        // indexes.
        let closed_at = ago(5);
        a.commit(&[(1, received(9, 31 * 24 * 60, "T1", b"0200"))], &[], &[])
            .await
            .unwrap();
        let settled = [
            (2, received(1, 10, "T1", b"0200")),
            (3, received(2, 5, "T1", b"0500")),
            (
                4,
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
            (5, received(3, 4, "T2", b"0200")),
        ];
        a.commit(&settled, &[], &[]).await.unwrap();
        a.index_evidence(100).await.unwrap();
        // On b, past the copy: T1's next purchase three minutes ago.
        b.commit(&[(1, received(1, 3, "T1", b"0200"))], &[], &[])
            .await
            .unwrap();
        // Before the close is known, the last 30 days (`cluster::evidence::UNCLOSED`): both nodes',
        // oldest first.
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

/// How long a settlement's read takes for a terminal with a long batch: 10 000 purchases (two rows of
/// two records each) over two nodes, its evidence copied, read whole; then read from a close half-way.
/// A measure, not a check: `cargo test -p cluster --test batches -- --ignored --nocapture`.
#[test]
#[ignore]
fn a_long_batch_is_read_in() {
    let pg = Server::start("batches::long").expect("a PostgreSQL server");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let nodes = [joined(&pg, "a").await, joined(&pg, "b").await];
        let (purchases, per_commit) = (10_000u64, 500u64);
        let mut seqs = [0u64; 2];
        for first in (0..purchases).step_by(per_commit as usize) {
            let n = (first / per_commit % 2) as usize;
            let mut batch = Vec::new();
            for txn in first + 1..=first + per_commit {
                // Oldest first, a second apart, ending now.
                let minutes = (purchases - txn) / 60;
                let told = Step::Told {
                    rc: iso8583::ResponseCode(*b"00"),
                };
                for record in [
                    received(txn, minutes, "T1", b"0200"),
                    record(txn, ago(minutes), told),
                ] {
                    seqs[n] += 1;
                    batch.push((seqs[n], record));
                }
            }
            nodes[n].commit(&batch, &[], &[]).await.unwrap();
        }
        while nodes[0].index_evidence(50_000).await.unwrap() > 0 {}
        for (what, close) in [
            ("whole", None),
            ("from a close half-way", Some(purchases / 2 / 60)),
        ] {
            if let Some(minutes) = close {
                nodes[0]
                    .batches_closed(&[("T1".into(), MERCHANT.into(), ago(minutes))])
                    .await
                    .unwrap();
            }
            for _ in 0..3 {
                let started = std::time::Instant::now();
                let records = nodes[1].batch("T1", MERCHANT).await.unwrap();
                println!(
                    "{what}: {} records in {:?}",
                    records.len(),
                    started.elapsed()
                );
            }
        }
    });
}
