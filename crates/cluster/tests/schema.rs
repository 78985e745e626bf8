//! The database is a contract: a database written at each schema version (`fixtures/schema-vN.sql`, a
//! `pg_dump` of two nodes' records, claims and leases: version 1 by release 0.1.0, version 2 with a
//! provisional forward withdrawn, version 3 with a row per transaction and batch, version 4 with the
//! evidence of one node copied to its indexes and the other's not yet, version 5 with the claims keyed
//! by day first, version 6 with their index by time a BRIN index, version 7 with each node's block of
//! STANs, version 8 with a terminal's last close, version 9 with a plea a node left) must be read by
//! every later release, migrated in place by its embedded migrations, and then take that release's
//! commits.

use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use cluster::throwaway::Server;
use cluster::{Claim, SCHEMA_VERSION, Store};
use engine::{Card, LinkId, Original, Received, Record, Step, TxnId};
use iso8583::{Mti, ResponseCode};

const KEY: [u8; 16] = [7; 16];

fn fixture(version: i32) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/schema-v{version}.sql"))
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// What node `a` wrote: a purchase approved, told, and a second one in doubt.
fn records() -> Vec<Record> {
    let at = |s| UNIX_EPOCH + Duration::from_micros(1_795_000_000_000_000 + s * 1_000);
    let received = |stan| {
        Step::Received(Received {
            mti: Mti::new(*b"0200").unwrap(),
            card: Some(Card {
                bin: "476173".into(),
                last4: "0010".into(),
                hash: "c53d963bbc438d9e97f7377affb5b244".into(),
            }),
            amount: Some(2500),
            currency: Some(978),
            terminal: "TERM0001".into(),
            merchant: "MERCHANT0000001".into(),
            stan,
            date: 1202,
            fingerprint: 5096209527224162671,
        })
    };
    let forwarded = |stan: u32| Step::Forwarded {
        issuer: "visa".into(),
        link: LinkId(0),
        upstream_stan: stan + 100,
        original: Original {
            mti: Mti::new(*b"0200").unwrap(),
            fields: vec![
                (11, format!("{:06}", stan + 100).into()),
                (37, format!("{stan:012}").into()),
            ],
        },
    };
    let steps = [
        (1, received(1)),
        (1, forwarded(1)),
        (
            1,
            Step::Answered {
                rc: ResponseCode::APPROVED,
                auth_code: Some("A1B2C3".into()),
            },
        ),
        (
            1,
            Step::Told {
                rc: ResponseCode::APPROVED,
            },
        ),
        (2, received(2)),
        (2, forwarded(2)),
    ];
    steps
        .into_iter()
        .enumerate()
        .map(|(i, (txn, step))| Record {
            txn: TxnId(txn),
            at: at(i as u64),
            step,
        })
        .collect()
}

fn claim(txn: u64, stan: u32) -> Claim {
    Claim {
        txn: TxnId(txn),
        terminal: "TERM0001".into(),
        merchant: "MERCHANT0000001".into(),
        stan,
        date: 1202,
        reversal: false,
        fingerprint: 5096209527224162671,
        replacing: None,
    }
}

/// Who holds the key of STAN `stan`.
async fn holder_of(store: &Store, stan: u32) -> (String, TxnId) {
    let holder = store
        .holder(&claim(9, stan))
        .await
        .unwrap()
        .expect("claimed");
    (holder.node.to_string(), holder.txn)
}

#[test]
fn the_database_release_0_1_0_wrote_is_read_back_whole() {
    let Some(pg) = Server::start("schema::v1") else {
        return;
    };
    pg.load(&fixture(1));
    rt().block_on(async {
        let joined = Store::join(&pg.url(), "a", Duration::from_secs(5), &KEY)
            .await
            .expect("this release joins a version 1 database");
        assert_eq!(joined.records, records());
        assert_eq!((joined.last_seq, joined.last_txn), (6, Some(TxnId(2))));
        assert_eq!(holder_of(&joined.store, 1).await, ("a".into(), TxnId(1)));
        // b's lease and record are there too.
        let nodes = cluster::status(&cluster::connect(&pg.url()).await.unwrap())
            .await
            .unwrap();
        let names: Vec<&str> = nodes.iter().map(|n| n.node.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        // Migrated, it takes this release's commits: a retransmit of txn 1's key, forwarded
        // provisionally, loses its claim and its forward gives way to `Withdrawn`.
        let at = UNIX_EPOCH + Duration::from_secs(1_795_000_100);
        let record = |step| Record {
            txn: TxnId(3),
            at,
            step,
        };
        let (first, forward) = (&records()[0], &records()[1]);
        let batch = [
            (7, record(first.step.clone())),
            (8, record(forward.step.clone())),
        ];
        let done = joined.store.commit(&batch, &[claim(3, 1)], &[]).await;
        assert_eq!(done.unwrap().lost, [TxnId(3)]);
        let kept = joined.store.records_of("a", TxnId(3)).await.unwrap();
        assert_eq!(kept, [batch[0].1.clone(), record(Step::Withdrawn)]);
        // A node of release 0.1.0 still running through a rolling upgrade commits with the version 1
        // function, which the migration kept: here b, one more copy of its record.
        let client = cluster::connect(&pg.url()).await.unwrap();
        let committed: i64 = client
            .query_one(
                "SELECT count(*) FROM acquiro_commit('b', (SELECT epoch FROM nodes WHERE node = 'b'),
                     '{2}', '{2}', ARRAY[now()], ARRAY[(SELECT body FROM records WHERE node = 'b')],
                     '{NULL}', '{NULL}', '{NULL}', '{NULL}', '{NULL}',
                     '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}')",
                &[],
            )
            .await
            .expect("the version 1 commit still works")
            .get(0);
        assert_eq!(committed, 0, "no claim lost");
        let b: i64 = client
            .query_one("SELECT count(*) FROM records WHERE node = 'b'", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(b, 2);
    });
}

/// b's retransmit of a's purchase 1, forwarded provisionally at version 2: its claim lost, its forward
/// withdrawn.
fn retransmit_on_b() -> [(u64, Record); 2] {
    let all = records();
    let on_b = |r: &Record| Record {
        txn: TxnId(5),
        at: UNIX_EPOCH + Duration::from_secs(1_795_000_200),
        step: r.step.clone(),
    };
    [(2, on_b(&all[0])), (3, on_b(&all[1]))]
}

/// Node a's records, and b's retransmit with its forward withdrawn, read back from the fixture of
/// `version`; every node's sequence whole.
fn read_back_whole(version: i32) {
    let Some(pg) = Server::start(&format!("schema::v{version}")) else {
        return;
    };
    pg.load(&fixture(version));
    rt().block_on(async {
        let joined = Store::join(&pg.url(), "a", Duration::from_secs(5), &KEY)
            .await
            .unwrap_or_else(|e| panic!("this release joins a version {version} database: {e}"));
        assert_eq!(joined.records, records());
        // Its own block (version 7), or the first when the database had none.
        assert_eq!(joined.stan_block, 0);
        let [(_, received), (_, forward)] = retransmit_on_b();
        let withdrawn = Record {
            step: Step::Withdrawn,
            ..forward
        };
        let b = joined.store.records_of("b", TxnId(5)).await.unwrap();
        assert_eq!(b, [received, withdrawn]);
        // The claims kept their keys: a's purchase 1 still holds its own.
        assert_eq!(holder_of(&joined.store, 1).await, ("a".into(), TxnId(1)));
        let client = cluster::connect(&pg.url()).await.unwrap();
        // Keyed by day and STAN first (version 5).
        let key: String = client
            .query_one("SELECT pg_get_indexdef('claims_pkey'::regclass)", &[])
            .await
            .unwrap()
            .get(0);
        assert!(
            key.ends_with("(day, stan, terminal, merchant, reversal)"),
            "{key}"
        );
        let verified = cluster::evidence::verify(&client).await.unwrap();
        assert!(verified.problems.is_empty(), "{:?}", verified.problems);
        assert_eq!(verified.records, 9);
        // Searched by RRN and by terminal and STAN, whether its evidence is indexed or not.
        let search = |named: cluster::evidence::Named| {
            let client = &client;
            async move {
                let found = cluster::evidence::timelines(client, &named).await.unwrap();
                found
                    .into_iter()
                    .map(|(node, r)| (node, r.txn))
                    .collect::<Vec<_>>()
            }
        };
        let rrn = cluster::evidence::Named {
            rrn: Some(format!("{:012}", 1)),
            ..Default::default()
        };
        assert_eq!(search(rrn).await, vec![("a".to_owned(), TxnId(1)); 4]);
        let terminal = cluster::evidence::Named {
            terminal: Some(("TERM0001".into(), 1)),
            ..Default::default()
        };
        let mut both = vec![("a".to_owned(), TxnId(1)); 4];
        both.extend(vec![("b".to_owned(), TxnId(5)); 2]);
        assert_eq!(search(terminal).await, both);
        // A settlement's read of the terminal's batch finds every node's transactions of it.
        let batch = joined.store.batch("TERM0001", "MERCHANT0000001").await;
        let mut read: Vec<(String, TxnId)> = (batch.unwrap().into_iter())
            .map(|(node, r)| (node, r.txn))
            .collect();
        read.sort();
        read.dedup();
        let each = [("a", 1), ("a", 2), ("b", 2), ("b", 5)];
        assert_eq!(read, each.map(|(n, t)| (n.to_owned(), TxnId(t))));
        // Where a terminal's batch last closed (version 8).
        let closes = client
            .query("SELECT terminal FROM batch_closes", &[])
            .await
            .unwrap();
        let closes: Vec<String> = closes.iter().map(|r| r.get(0)).collect();
        assert_eq!(closes.len(), usize::from(version >= 8), "{closes:?}");
        // A plea a node left (version 9), taken on by the node that joined.
        let pleas = joined.store.take_pleas(64).await.unwrap();
        let left = (version >= 9).then(plea);
        assert_eq!(pleas, Vec::from_iter(left));
    });
}

/// The plea the fixture of version 9 holds.
fn plea() -> engine::Plea {
    engine::Plea {
        terminal: "TERM0009".into(),
        merchant: "MERCHANT0000001".into(),
        stan: 9,
        date: 1202,
        refused_at: UNIX_EPOCH + Duration::from_secs(1_795_000_400),
    }
}

#[test]
fn the_database_schema_version_2_wrote_is_read_back_whole() {
    read_back_whole(2);
}

#[test]
fn the_database_schema_version_3_wrote_is_read_back_whole() {
    read_back_whole(3);
}

#[test]
fn the_database_schema_version_4_wrote_is_read_back_whole() {
    read_back_whole(4);
}

#[test]
fn the_database_schema_version_5_wrote_is_read_back_whole() {
    read_back_whole(5);
}

#[test]
fn the_database_schema_version_6_wrote_is_read_back_whole() {
    read_back_whole(6);
}

#[test]
fn the_database_schema_version_7_wrote_is_read_back_whole() {
    read_back_whole(7);
}

#[test]
fn the_database_schema_version_8_wrote_is_read_back_whole() {
    read_back_whole(8);
}

#[test]
fn the_database_schema_version_9_wrote_is_read_back_whole() {
    read_back_whole(9);
}

/// `acquiro cluster status` of this release reads a database not migrated yet (its nodes of the
/// previous release still running): the STAN blocks of version 7 show as none, then as given once a
/// node of this release joins.
#[test]
fn the_status_reads_a_database_of_version_6_before_its_migration() {
    let Some(pg) = Server::start("schema::status_v6") else {
        return;
    };
    pg.load(&fixture(6));
    rt().block_on(async {
        let client = cluster::connect(&pg.url()).await.unwrap();
        let nodes = cluster::status(&client).await.expect("read at version 6");
        let blocks: Vec<_> = nodes.iter().map(|n| (n.node.as_str(), n.stans)).collect();
        assert_eq!(blocks, [("a", None), ("b", None)]);
        Store::join(&pg.url(), "a", Duration::from_secs(5), &KEY)
            .await
            .unwrap();
        let nodes = cluster::status(&client).await.unwrap();
        assert_eq!(nodes[0].stans, Some(engine::Stans::block(0)));
    });
}

/// Writes the fixture of this release's schema version; run by hand, once, by the release that defines
/// that version: `cargo test -p cluster --test schema -- --ignored write_fixture`. It refuses to
/// overwrite.
#[test]
#[ignore]
fn write_fixture() {
    let path = fixture(SCHEMA_VERSION);
    assert!(
        !path.exists(),
        "{} exists: a fixture is never rewritten",
        path.display()
    );
    let pg = Server::start("schema::write_fixture").expect("a PostgreSQL server");
    rt().block_on(async {
        let a = Store::join(&pg.url(), "a", Duration::from_secs(5), &KEY)
            .await
            .unwrap();
        let numbered: Vec<(u64, Record)> = records()
            .into_iter()
            .enumerate()
            .map(|(i, r)| (i as u64 + 1, r))
            .collect();
        a.store
            .commit(&numbered, &[claim(1, 1), claim(2, 2)], &[])
            .await
            .unwrap();
        // a's evidence copied to its indexes, b's not yet (version 4).
        a.store.index_evidence(100).await.unwrap();
        let b = Store::join(&pg.url(), "b", Duration::from_secs(5), &KEY)
            .await
            .unwrap();
        b.store
            .commit(&[(1, records()[4].clone())], &[], &[])
            .await
            .unwrap();
        let lost = b
            .store
            .commit(&retransmit_on_b(), &[claim(5, 1)], &[])
            .await;
        assert_eq!(lost.unwrap().lost, [TxnId(5)]);
        // Another terminal's batch closed (version 8).
        let closed = UNIX_EPOCH + Duration::from_secs(1_795_000_300);
        let close = ("TERM0009".into(), "MERCHANT0000001".into(), closed);
        a.store.batches_closed(&[close]).await.unwrap();
        // A plea left by a node that ended (version 9).
        a.store.plead(&[plea()]).await.unwrap();
    });
    pg.dump(&path);
}
