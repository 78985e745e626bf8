//! The cluster store on a real PostgreSQL (a throw-away server from Debian's binaries; SKIPPED without
//! one, required in CI).

use std::time::{Duration, UNIX_EPOCH};

use cluster::throwaway::Server;
use cluster::{Claim, Error, Joined, Purpose, SCHEMA_VERSION, Store};
use engine::{LinkId, Original, Record, Step, TxnId};
use iso8583::{Mti, ResponseCode};
use tokio::task::JoinHandle;

mod support;
use support::{KEY, LEASE, now, received, rt};

/// Node `node`'s store, joined with the usual lease.
async fn joined(pg: &Server, node: &str) -> Store {
    support::joined(pg, node, LEASE).await
}

/// Who holds `claim`'s key, as `store` reads it.
async fn holder_of(store: &Store, claim: &Claim) -> (String, TxnId) {
    let holder = store.holder(claim).await.unwrap().expect("held");
    (holder.node.to_string(), holder.txn)
}

/// The first column of `sql`'s rows, numbers.
async fn numbers(client: &tokio_postgres::Client, sql: &str) -> Vec<i64> {
    let rows = client.query(sql, &[]).await.unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

fn claim(txn: u64, stan: u32, fingerprint: u64) -> Claim {
    Claim {
        txn: TxnId(txn),
        terminal: "T0000001".into(),
        merchant: "M00000000000001".into(),
        stan,
        date: 1202,
        reversal: false,
        fingerprint,
        replacing: None,
    }
}

#[test]
fn a_restart_under_the_same_name_reads_its_records_back_and_fences_the_old_process() {
    let Some(pg) = Server::start("store::restart") else {
        return;
    };
    // Each restart below comes while the process before is still connected, as a paused one is: it
    // waits for that one's lease to lapse (see `Store::join`), a second here.
    let brief = Duration::from_secs(1);
    rt().block_on(async {
        let first = Store::join(&pg.url(), "a", brief, &KEY).await.unwrap();
        assert_eq!((first.records.len(), first.last_seq), (0, 0));
        let told = Record {
            txn: TxnId(1),
            at: now(),
            step: Step::Told {
                rc: ResponseCode::APPROVED,
            },
        };
        let batch = [(1, received(1, 11)), (2, told.clone())];
        let done = first
            .store
            .commit(&batch, &[claim(1, 11, 42)], &[])
            .await
            .unwrap();
        assert!(done.lost.is_empty());

        let second = Store::join(&pg.url(), "a", brief, &KEY).await.unwrap();
        assert_eq!(second.store.epoch(), first.store.epoch() + 1);
        assert_eq!(second.records, vec![batch[0].1.clone(), told]);
        assert_eq!((second.last_seq, second.last_txn), (2, Some(TxnId(1))));

        // The first process lost its epoch: it commits nothing more and cannot renew.
        let late = first.store.commit(&[(3, received(2, 12))], &[], &[]).await;
        assert!(matches!(late, Err(Error::Fenced { .. })), "{late:?}");
        assert!(
            first
                .store
                .renew(LEASE, 0, 0, TxnId(0))
                .await
                .unwrap_err()
                .is_fenced()
        );
        let third = Store::join(&pg.url(), "a", LEASE, &KEY).await.unwrap();
        assert_eq!(third.last_seq, 2, "nothing of the fenced commit was kept");
        second.store.renew(LEASE, 0, 0, TxnId(0)).await.unwrap_err();
        third.store.renew(LEASE, 0, 0, TxnId(0)).await.unwrap();
    });
}

#[test]
fn a_key_is_claimed_once_across_nodes_and_the_loser_learns_who_holds_it() {
    let Some(pg) = Server::start("store::claims") else {
        return;
    };
    rt().block_on(async {
        let a = joined(&pg, "a").await;
        let b = joined(&pg, "b").await;
        let first = received(1, 21);
        let won = a
            .commit(&[(1, first.clone())], &[claim(1, 21, 42)], &[])
            .await
            .unwrap();
        assert!(won.lost.is_empty());
        // b's retransmit of the same key, and a new key beside it in the same batch.
        let batch = [(1, received(1, 21)), (2, received(2, 22))];
        let claims = [claim(1, 21, 42), claim(2, 22, 43)];
        let lost = b.commit(&batch, &claims, &[]).await.unwrap().lost;
        assert_eq!(lost, vec![TxnId(1)]);
        let holder = b.holder(&claims[0]).await.unwrap().expect("held");
        assert_eq!((holder.node.as_str(), holder.txn), ("a", TxnId(1)));
        assert_eq!(holder.fingerprint, 42);
        assert_eq!(holder.records, vec![first]);
        assert!(!holder.fenced, "a is live: its transaction may still move");
    });
}

/// A lookup's holder comes with every node's records of the other transactions at the key's terminal
/// and STAN (where else the terminal asked, and what it heard there), whether the evidence copy has
/// indexed them yet or not; not the holder's own, nor another STAN's.
#[test]
fn a_lookup_returns_the_other_attempts_of_the_key_on_every_node() {
    let Some(pg) = Server::start("store::attempts") else {
        return;
    };
    rt().block_on(async {
        let (a, b) = (joined(&pg, "a").await, joined(&pg, "b").await);
        a.commit(&[(1, received(1, 21))], &[claim(1, 21, 42)], &[])
            .await
            .unwrap();
        // b's attempt of the same request loses its claim and is replayed a's answer.
        let replayed = Record {
            txn: TxnId(1),
            at: now(),
            step: Step::Replayed {
                rc: ResponseCode::APPROVED,
            },
        };
        let attempt = received(1, 21);
        let batch = [(1, attempt.clone()), (2, replayed.clone())];
        b.commit(&batch, &[claim(1, 21, 42)], &[]).await.unwrap();
        // Another request of the same terminal.
        b.commit(&[(3, received(2, 22))], &[claim(2, 22, 43)], &[])
            .await
            .unwrap();

        let want = vec![("b", attempt), ("b", replayed)];
        for indexed in [false, true] {
            if indexed {
                a.index_evidence(1_000).await.unwrap();
            }
            let held = a.looked_up(&claim(9, 21, 0)).await.unwrap().expect("held");
            assert_eq!((held.node.as_str(), held.txn), ("a", TxnId(1)));
            let others: Vec<(&str, Record)> = (held.others.iter())
                .map(|(node, r)| (node.as_str(), r.clone()))
                .collect();
            assert_eq!(others, want, "indexed: {indexed}");
        }
        // A lost claim's holder does not need them.
        let holder = b.holder(&claim(9, 21, 0)).await.unwrap().expect("held");
        assert!(holder.others.is_empty());
    });
}

/// A key whose holder ended without being forwarded is taken over from that holder only: a second
/// taker, which still names the first holder, loses it.
#[test]
fn a_key_is_taken_over_only_from_the_holder_the_taker_names() {
    let Some(pg) = Server::start("store::take") else {
        return;
    };
    rt().block_on(async {
        let a = joined(&pg, "a").await;
        let b = joined(&pg, "b").await;
        let done = a
            .commit(&[(1, received(1, 41))], &[claim(1, 41, 42)], &[])
            .await;
        assert!(done.unwrap().lost.is_empty());
        let replacing = |txn, holder: &str, held| Claim {
            replacing: Some((holder.into(), TxnId(held))),
            ..claim(txn, 41, 42)
        };
        // b takes a's key over, beside a new key of its own in the same batch: both won.
        let batch = [(1, received(7, 41)), (2, received(8, 42))];
        let claims = [replacing(7, "a", 1), claim(8, 42, 43)];
        assert!(
            b.commit(&batch, &claims, &[])
                .await
                .unwrap()
                .lost
                .is_empty()
        );
        assert_eq!(holder_of(&a, &claims[0]).await, ("b".into(), TxnId(7)));
        // a, still naming its own transaction as the holder, loses it.
        let late = a
            .commit(&[(2, received(9, 41))], &[replacing(9, "a", 1)], &[])
            .await;
        assert_eq!(late.unwrap().lost, [TxnId(9)]);
        assert_eq!(holder_of(&a, &claims[0]).await, ("b".into(), TxnId(7)));
    });
}

/// A key another node claims while this node's commit is on its way: the commit's plain insert waits
/// for that node's transaction, fails once it commits, and the batch's claims go the careful way: the
/// key is lost, the other new key of the batch still won.
#[test]
fn a_key_claimed_by_another_node_meanwhile_is_lost_and_the_rest_of_the_batch_won() {
    let Some(pg) = Server::start("store::race") else {
        return;
    };
    rt().block_on(async {
        let (b, a_commit, watch) = b_beside_an_open_commit_of_a(&pg, 51).await;
        let batch = [(1, received(7, 51)), (2, received(8, 52))];
        let claims = [claim(7, 51, 42), claim(8, 52, 43)];
        let (committed, ()) = tokio::join!(b.commit(&batch, &claims, &[]), async {
            // Once b's commit waits for a's transaction, a's commits.
            until_a_session_waits_on_a_lock(&watch).await;
            a_commit.batch_execute("COMMIT").await.unwrap();
        });
        assert_eq!(committed.unwrap().lost, [TxnId(7)]);
        assert_eq!(holder_of(&b, &claims[0]).await, ("a".into(), TxnId(1)));
        assert_eq!(holder_of(&b, &claims[1]).await, ("b".into(), TxnId(8)));
    });
}

/// Node a's insert of its claim of key `stan` (the helpers' terminal, merchant and day), as its
/// commit makes it.
fn a_claims(stan: u32, txn: u64, fingerprint: u64) -> String {
    format!(
        "INSERT INTO claims (terminal, merchant, stan, day, reversal, node, txn, fingerprint, at)
             VALUES ('T0000001', 'M00000000000001', {stan}, 1202, false, 'a', {txn}, {fingerprint}, now())"
    )
}

/// Nodes a and b joined; a commit of node a open, holding key `stan` (transaction 1, fingerprint
/// 42); and a connection to watch the database with. Returns b, a's commit and the watcher.
async fn b_beside_an_open_commit_of_a(
    pg: &Server,
    stan: u32,
) -> (Store, tokio_postgres::Client, tokio_postgres::Client) {
    joined(pg, "a").await;
    let b = joined(pg, "b").await;
    let a_commit = cluster::connect(&pg.url()).await.unwrap();
    let first = format!("BEGIN; {}", a_claims(stan, 1, 42));
    a_commit.batch_execute(&first).await.unwrap();
    let watch = cluster::connect(&pg.url()).await.unwrap();
    (b, a_commit, watch)
}

/// Returns once the database's sessions matching `condition` (on `pg_stat_activity`) number `wanted`;
/// fails after 30 s.
async fn until_sessions(watch: &tokio_postgres::Client, condition: &str, wanted: fn(i64) -> bool) {
    let count = format!("SELECT count(*) FROM pg_stat_activity WHERE {condition}");
    let sessions = async {
        while !wanted(numbers(watch, &count).await[0]) {
            tokio::task::yield_now().await;
        }
    };
    let waited = tokio::time::timeout(Duration::from_secs(30), sessions).await;
    assert!(
        waited.is_ok(),
        "never the sessions wanted where {condition}"
    );
}

/// Returns once some session of the database waits for a lock.
async fn until_a_session_waits_on_a_lock(watch: &tokio_postgres::Client) {
    until_sessions(watch, "wait_event_type = 'Lock'", |n| n > 0).await;
}

/// Two nodes whose batches claim the same two keys: each commit inserts its claims in the order of
/// their key, so a commit waits for the other's first key before it holds its second, and the two
/// never wait for each other (a deadlock, which PostgreSQL breaks after a second by failing one).
#[test]
fn two_commits_claiming_the_same_keys_never_deadlock() {
    let Some(pg) = Server::start("store::order") else {
        return;
    };
    rt().block_on(async {
        let (b, a_commit, watch) = b_beside_an_open_commit_of_a(&pg, 61).await;
        // b's batch names key 62 before key 61.
        let batch = [(1, received(8, 62)), (2, received(7, 61))];
        let claims = [claim(8, 62, 43), claim(7, 61, 42)];
        let (committed, ()) = tokio::join!(b.commit(&batch, &claims, &[]), async {
            // b waits for key 61; a's commit goes on to key 62, which b must not hold yet.
            until_a_session_waits_on_a_lock(&watch).await;
            let second = format!("{}; COMMIT", a_claims(62, 2, 43));
            a_commit.batch_execute(&second).await.unwrap();
        });
        let mut lost = committed.unwrap().lost;
        lost.sort();
        assert_eq!(lost, [TxnId(7), TxnId(8)]);
        assert_eq!(holder_of(&b, &claims[0]).await, ("a".into(), TxnId(2)));
        assert_eq!(holder_of(&b, &claims[1]).await, ("a".into(), TxnId(1)));
    });
}

fn forwarded(txn: u64, stan: u32) -> Record {
    Record {
        txn: TxnId(txn),
        at: now(),
        step: Step::Forwarded {
            issuer: "visa".into(),
            link: LinkId(0),
            upstream_stan: stan,
            original: Original {
                mti: Mti::new(*b"0200").unwrap(),
                fields: vec![(37, format!("{stan:012}").into())],
            },
        },
    }
}

/// A forward committed with its transaction's claim is provisional: it is kept if the claim is won;
/// if it is lost, a `Withdrawn` record takes its place and number (the sequence stays whole, and the
/// forward's RRN finds nothing of it).
#[test]
fn a_provisional_forward_stands_only_if_its_claim_is_won() {
    let Some(pg) = Server::start("store::provisional") else {
        return;
    };
    rt().block_on(async {
        let a = Store::join(&pg.url(), "a", LEASE, &KEY).await.unwrap();
        let b = Store::join(&pg.url(), "b", LEASE, &KEY).await.unwrap();
        let first = [(1, received(1, 31)), (2, forwarded(1, 31))];
        let done = a.store.commit(&first, &[claim(1, 31, 42)], &[]).await;
        assert!(done.unwrap().lost.is_empty());
        // b: a retransmit of a's key and a new key, each forwarded provisionally.
        let batch = [
            (1, received(7, 31)),
            (2, forwarded(7, 31)),
            (3, received(8, 32)),
            (4, forwarded(8, 32)),
        ];
        let claims = [claim(7, 31, 42), claim(8, 32, 43)];
        let lost = b.store.commit(&batch, &claims, &[]).await.unwrap().lost;
        assert_eq!(lost, vec![TxnId(7)]);

        let of = |node: &'static str, txn: u64| {
            let store = &b.store;
            async move { store.records_of(node, TxnId(txn)).await.unwrap() }
        };
        let withdrawn = Record {
            step: Step::Withdrawn,
            ..batch[1].1.clone()
        };
        assert_eq!(of("b", 7).await, vec![batch[0].1.clone(), withdrawn]);
        assert_eq!(
            of("b", 8).await,
            vec![batch[2].1.clone(), batch[3].1.clone()]
        );
        assert_eq!(
            of("a", 1).await,
            vec![first[0].1.clone(), first[1].1.clone()]
        );

        let client = cluster::connect(&pg.url()).await.unwrap();
        let verified = cluster::evidence::verify(&client).await.unwrap();
        assert!(verified.problems.is_empty(), "{:?}", verified.problems);
        let named = cluster::evidence::Named {
            rrn: Some(format!("{:012}", 31)),
            ..Default::default()
        };
        let found = cluster::evidence::timelines(&client, &named).await.unwrap();
        let nodes: Vec<&str> = found.iter().map(|(node, _)| node.as_str()).collect();
        assert_eq!(
            nodes,
            ["a", "a"],
            "the withdrawn forward is no evidence of b's"
        );
    });
}

/// The evidence disputes search by is copied to its indexes behind the commits (schema version 4): a
/// search finds a transaction before the copy reaches it (in the rows past the node's mark) and after
/// (in the indexed copy alone), and the copy moves in steps of at most `most` rows a node.
#[test]
fn a_search_finds_a_transaction_before_and_after_its_evidence_is_indexed() {
    let Some(pg) = Server::start("store::evidence") else {
        return;
    };
    rt().block_on(async {
        let a = joined(&pg, "a").await;
        let purchase = [(1, received(1, 31)), (2, forwarded(1, 31))];
        a.commit(&purchase, &[claim(1, 31, 42)], &[]).await.unwrap();
        let later = received(2, 32);
        a.commit(&[(3, later.clone())], &[claim(2, 32, 43)], &[])
            .await
            .unwrap();
        let client = cluster::connect(&pg.url()).await.unwrap();
        let count = |sql: &'static str| {
            let client = &client;
            async move { client.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
        };
        let by_rrn = cluster::evidence::Named {
            rrn: Some(format!("{:012}", 31)),
            ..Default::default()
        };
        let by_terminal = cluster::evidence::Named {
            terminal: Some(("T0000001".into(), 32)),
            ..Default::default()
        };
        let search = |named: &cluster::evidence::Named| {
            let (client, named) = (&client, named.clone());
            async move {
                let found = cluster::evidence::timelines(client, &named).await.unwrap();
                found.into_iter().map(|(_, r)| r).collect::<Vec<_>>()
            }
        };
        let first = vec![purchase[0].1.clone(), purchase[1].1.clone()];
        let second = vec![later];

        assert_eq!(count("SELECT count(*) FROM evidence").await, 0);
        assert_eq!(search(&by_rrn).await, first, "found past the mark");
        assert_eq!(search(&by_terminal).await, second);

        assert_eq!(a.index_evidence(1).await.unwrap(), 1, "one row at most");
        assert_eq!(count("SELECT count(*) FROM evidence").await, 1);
        assert_eq!(search(&by_rrn).await, first, "found in the copy");
        assert_eq!(search(&by_terminal).await, second, "found past the mark");
        let searchable = || {
            let client = &client;
            async move { cluster::status(client).await.unwrap()[0].indexed_seq }
        };
        assert_eq!(
            searchable().await,
            2,
            "a's first row, keyed by its record 2"
        );
        assert_eq!(a.index_evidence(100).await.unwrap(), 1);
        assert_eq!(a.index_evidence(100).await.unwrap(), 0, "nothing left");
        assert_eq!(searchable().await, 3);
        let verified = cluster::evidence::verify(&client).await.unwrap();
        assert!(verified.problems.is_empty(), "{:?}", verified.problems);

        // The journal's own columns are no longer what is searched: the copy alone finds both.
        client
            .batch_execute(
                "UPDATE records SET terminal = NULL, stan = NULL, last4 = NULL, rrn = NULL",
            )
            .await
            .unwrap();
        assert_eq!(search(&by_rrn).await, first);
        assert_eq!(search(&by_terminal).await, second);
        // ... and verify sees the copy and the journal disagree.
        let verified = cluster::evidence::verify(&client).await.unwrap();
        assert_eq!(verified.problems.len(), 1, "{:?}", verified.problems);
        assert!(
            verified.problems[0].contains("2 row(s) more than"),
            "{:?}",
            verified.problems
        );
    });
}

#[test]
fn a_newer_schema_and_a_different_card_key_are_refused_by_name() {
    let Some(pg) = Server::start("store::refusals") else {
        return;
    };
    rt().block_on(async {
        Store::join(&pg.url(), "a", LEASE, &KEY).await.unwrap();
        let other = Store::join(&pg.url(), "b", LEASE, &[8; 16])
            .await
            .unwrap_err();
        assert!(matches!(other, Error::CardKeyMismatch { .. }), "{other}");
        assert!(other.to_string().contains("card_key"), "{other}");

        let client = cluster::connect(&pg.url()).await.unwrap();
        client
            .execute(
                "INSERT INTO acquiro_schema (version) VALUES ($1)",
                &[&(SCHEMA_VERSION + 1)],
            )
            .await
            .unwrap();
        let newer = Store::join(&pg.url(), "a", LEASE, &KEY).await.unwrap_err();
        let said = newer.to_string();
        assert!(matches!(newer, Error::SchemaTooNew { .. }), "{said}");
        assert!(
            said.contains(&format!("version {}", SCHEMA_VERSION + 1)),
            "{said}"
        );
        assert!(said.contains(&format!("({SCHEMA_VERSION})")), "{said}");
    });
}

#[test]
fn retention_drops_whole_days_past_it_and_keeps_the_rest() {
    let Some(pg) = Server::start("store::retention") else {
        return;
    };
    rt().block_on(async {
        let a = joined(&pg, "a").await;
        let client = cluster::connect(&pg.url()).await.unwrap();
        client
            .batch_execute(
                "CREATE TABLE records_20200101 PARTITION OF records
                     FOR VALUES FROM ('2020-01-01') TO ('2020-01-02');
                 CREATE TABLE evidence_20200101 PARTITION OF evidence
                     FOR VALUES FROM ('2020-01-01') TO ('2020-01-02')",
            )
            .await
            .unwrap();
        let mut old = received(1, 31);
        old.at = UNIX_EPOCH + Duration::from_secs(1_577_880_000); // 2020-01-01T12:00Z
        let batch = [(1, old), (2, received(2, 32))];
        a.commit(&batch, &[claim(1, 31, 41), claim(2, 32, 42)], &[])
            .await
            .unwrap();
        // A claim is stamped with its commit's time: the first one made old, as if claimed then.
        client
            .execute(
                "UPDATE claims SET at = '2020-01-01T12:00:00Z' WHERE txn = 1",
                &[],
            )
            .await
            .unwrap();

        let month = Duration::from_secs(30 * 24 * 3600);
        assert_eq!(a.index_evidence(100).await.unwrap(), 2);
        let dropped = a.maintain(Some(month)).await.unwrap();
        assert_eq!(dropped, ["evidence_20200101", "records_20200101"]);
        let searched: i64 = client
            .query_one("SELECT count(*) FROM evidence", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(searched, 1, "today's evidence stays");
        let left = numbers(&client, "SELECT seq FROM records ORDER BY seq").await;
        assert_eq!(left, [2], "today's record stays");
        let claimed = numbers(&client, "SELECT txn FROM claims").await;
        assert_eq!(claimed, [2], "the old claim goes, today's stays");
        let today: bool = client
            .query_one(
                "SELECT to_regclass('records_' || to_char(current_date, 'YYYYMMDD')) IS NOT NULL",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(today, "today's partition was made ahead at join");
        assert!(a.maintain(Some(month)).await.unwrap().is_empty());
    });
}

#[test]
fn a_restart_reads_back_only_what_recovery_still_needs() {
    let Some(pg) = Server::start("store::needed") else {
        return;
    };
    rt().block_on(async {
        let a = joined(&pg, "a").await;
        let batch: Vec<_> = (1..=3).map(|t| (t, received(t, t as u32))).collect();
        a.commit(&batch, &[], &[]).await.unwrap();
        // Transactions 1 and 2 are finished for good: only 3 on is needed.
        a.renew(LEASE, 1, 0, TxnId(3)).await.unwrap();
        // Restarted: the process before has ended (one still connected would be waited for).
        drop(a);
        let again = Store::join(&pg.url(), "a", LEASE, &KEY).await.unwrap();
        let txns: Vec<TxnId> = again.records.iter().map(|r| r.txn).collect();
        assert_eq!(txns, [TxnId(3)]);
        assert_eq!((again.last_seq, again.last_txn), (3, Some(TxnId(3))));
        // Nothing needed at all: the next restart reads nothing back.
        again.store.renew(LEASE, 0, 0, TxnId(4)).await.unwrap();
        drop(again);
        let last = Store::join(&pg.url(), "a", LEASE, &KEY).await.unwrap();
        assert!(last.records.is_empty());
    });
}

#[test]
fn every_lapsed_node_is_taken_over_in_turn_not_only_the_first_by_name() {
    let Some(pg) = Server::start("store::takeover") else {
        return;
    };
    rt().block_on(async {
        // A lease of nothing has lapsed by the next statement.
        let lapsed = Duration::ZERO;
        for (name, stan) in [("a", 31), ("b", 32)] {
            let joined = Store::join(&pg.url(), name, lapsed, &KEY).await.unwrap();
            let record = [(1, received(1, stan))];
            joined.store.commit(&record, &[], &[]).await.unwrap();
        }
        let mut c = joined(&pg, "c").await;
        let mut taken = Vec::new();
        while let Some(t) = c.take_over(LEASE).await.unwrap() {
            assert_eq!(t.records.len(), 1, "{t:?}");
            taken.push(t.node.clone());
            // The work is c's once its own records of it commit, handing it on.
            let adopted = [(taken.len() as u64, received(taken.len() as u64, 40))];
            c.commit(&adopted, &[], &[(t.node, t.through)])
                .await
                .unwrap();
            assert!(taken.len() <= 2, "taken over again: {taken:?}");
        }
        assert_eq!(
            taken,
            ["a", "b"],
            "a finished takeover hid the next lapsed node"
        );
        // c's commits handed both on: neither is still being taken over.
        let nodes = cluster::status(&cluster::connect(&pg.url()).await.unwrap())
            .await
            .unwrap();
        let handed: Vec<_> = (nodes.iter().filter(|n| n.node != "c"))
            .map(|n| (n.node.as_str(), n.retired_seq, n.taking_over))
            .collect();
        assert_eq!(handed, [("a", 1, false), ("b", 1, false)]);
    });
}

/// A node stopped in the middle of a takeover (paused, or its connection gone dark), holding the
/// lapsed node's row locked, holds no other node up for longer than the takeover's `idle`: the
/// database ends its transaction, and another node takes the work over.
#[test]
fn a_takeover_stopped_half_way_is_ended_by_the_database_and_another_node_takes_the_work() {
    let Some(pg) = Server::start("store::takeover_stopped") else {
        return;
    };
    rt().block_on(async {
        let lapsed = Store::join(&pg.url(), "a", Duration::ZERO, &KEY)
            .await
            .unwrap();
        (lapsed.store.commit(&[(1, received(1, 51))], &[], &[]).await).unwrap();
        let (mut b, mut c) = (joined(&pg, "b").await, joined(&pg, "c").await);
        let watch = cluster::connect(&pg.url()).await.unwrap();

        // b's takeover runs until its statement that marks a taken waits behind this lock (it holds
        // a's row by then); it is not run further, as if b froze there.
        let mut lock = cluster::connect(&pg.url()).await.unwrap();
        let held = lock.transaction().await.unwrap();
        held.batch_execute("LOCK TABLE nodes IN SHARE MODE")
            .await
            .unwrap();
        let idle = Duration::from_millis(500);
        let mut b_takes = std::pin::pin!(b.take_over(idle));
        tokio::select! {
            taken = &mut b_takes => panic!("b's takeover went by the lock: {taken:?}"),
            () = until_a_session_waits_on_a_lock(&watch) => {}
        }
        held.rollback().await.unwrap();
        // b's session then sits idle in its transaction, a's row locked, until the database ends it.
        let idle_in_transaction = "state = 'idle in transaction'";
        until_sessions(&watch, idle_in_transaction, |n| n == 1).await;
        assert_eq!(c.take_over(idle).await.unwrap().map(|t| t.node), None);
        until_sessions(&watch, idle_in_transaction, |n| n == 0).await;
        let taken = c.take_over(idle).await.unwrap().expect("a's work");
        assert_eq!((taken.node.as_str(), taken.records.len()), ("a", 1));
        // b, woken, finds its takeover ended.
        assert!(b_takes.await.is_err());
    });
}

/// The records of a batch are stored a row per transaction (schema version 3), so a batch's rows
/// interleave; every reader gives them back in the order of their numbers: recovery, a transaction's
/// records, the export, and the check that a node's sequence is whole.
#[test]
fn interleaved_transactions_of_one_batch_read_back_in_order_everywhere() {
    let Some(pg) = Server::start("store::interleaved") else {
        return;
    };
    rt().block_on(async {
        let mut a = joined(&pg, "a").await;
        let batch = [
            (1, received(1, 41)),
            (2, received(2, 42)),
            (3, forwarded(1, 41)),
            (4, received(3, 43)),
            (5, forwarded(2, 42)),
        ];
        let claims = [claim(1, 41, 1), claim(2, 42, 2), claim(3, 43, 3)];
        assert!(
            a.commit(&batch, &claims, &[])
                .await
                .unwrap()
                .lost
                .is_empty()
        );
        let client = cluster::connect(&pg.url()).await.unwrap();
        let rows: i64 = client
            .query_one("SELECT count(*) FROM records", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(rows, 3, "a row per transaction");
        let record = |i: usize| batch[i].1.clone();

        assert_eq!(
            a.records_of("a", TxnId(2)).await.unwrap(),
            [record(1), record(4)]
        );
        // After a lost connection: the batch is found committed, and one never sent is not.
        assert!(a.settle(0, &batch, &claims).await.unwrap().is_some());
        let unsent = [(6, received(4, 44))];
        assert!(a.settle(5, &unsent, &[]).await.unwrap().is_none());

        let mut exported = Vec::new();
        cluster::evidence::export(&client, None, None, |_, r| {
            exported.push(r);
            Ok(())
        })
        .await
        .unwrap();
        let all: Vec<Record> = (0..5).map(record).collect();
        assert_eq!(exported, all);
        let verified = cluster::evidence::verify(&client).await.unwrap();
        assert!(verified.problems.is_empty(), "{:?}", verified.problems);
        assert_eq!(verified.records, 5);

        // Recovery from transaction 2 on starts at its first record, inside transaction 1's row.
        a.renew(LEASE, 2, 0, TxnId(2)).await.unwrap();
        drop(a);
        let again = Store::join(&pg.url(), "a", LEASE, &KEY).await.unwrap();
        assert_eq!(again.records, all[1..]);
        assert_eq!((again.last_seq, again.last_txn), (5, Some(TxnId(3))));
    });
}

/// A commit on a primary whose synchronous standby is away waits for it. If the primary crashes then,
/// its recovery makes the batch visible, though the standby never had it: settling must not take it
/// as durable before the standby has it, or a failover would lose it with what the terminals were told.
#[test]
fn a_batch_is_settled_as_in_only_once_the_synchronous_standby_has_it() {
    let Some((primary, standby)) = Server::start_pair("store::settled_on_the_standby") else {
        return;
    };
    rt().block_on(async {
        let url = Server::url_of_primary(&[&primary, &standby]);
        let mut a = Store::join(&url, "a", LEASE, &KEY).await.unwrap().store;
        standby.kill();
        let batch = [(1, received(1, 61))];
        let wait = Duration::from_millis(500);
        let waited = tokio::time::timeout(wait, a.commit(&batch, &[], &[])).await;
        assert!(waited.is_err(), "committed without its standby");
        primary.kill();
        primary.start_again();

        // The primary's recovery made the batch visible; the standby has not got it.
        a.reconnect(&url).await.unwrap();
        let settled = tokio::time::timeout(wait, a.settle(0, &batch, &[])).await;
        assert!(
            settled.is_err(),
            "settled as in without the standby: {settled:?}"
        );
        standby.start_again();
        a.reconnect(&url).await.unwrap();
        assert!(a.settle(0, &batch, &[]).await.unwrap().is_some());

        // What was settled as in survives the loss of the primary.
        primary.kill();
        standby.promote();
        let again = Store::join(&standby.url(), "a", LEASE, &KEY).await.unwrap();
        assert_eq!(again.last_seq, 1);
    });
}

/// A commit held by a connection gone dark can reach the database after the node, counting it lost,
/// has settled it on another connection (`switch`'s writer, under `cluster.timeout`): whichever of the
/// two copies lands second fails on the records' key, and settling finds the batch in.
#[test]
fn a_batch_committed_twice_stands_once_whichever_copy_lands_first() {
    let Some(pg) = Server::start("store::committed_twice") else {
        return;
    };
    rt().block_on(async {
        let mut a = joined(&pg, "a").await;
        // The connection the first copy was held on.
        let held = a.twin(&pg.url(), Purpose::Commits).await.unwrap();

        // Settled as not in, committed again, then the held copy lands: refused.
        let first = [(1, received(1, 41)), (2, forwarded(1, 41))];
        let claims = [claim(1, 41, 1)];
        assert!(a.settle(0, &first, &claims).await.unwrap().is_none());
        assert_eq!(a.commit(&first, &claims, &[]).await.unwrap().lost, []);
        let late = held.commit(&first, &claims, &[]).await.unwrap_err();
        assert!(!late.is_fenced(), "{late}");
        assert!(late.to_string().contains("duplicate key"), "{late}");

        // The held copy lands first: the node's repeat is refused, and settling finds the batch in.
        let second = [(3, received(2, 42)), (4, forwarded(2, 42))];
        let claims = [claim(2, 42, 2)];
        assert_eq!(held.commit(&second, &claims, &[]).await.unwrap().lost, []);
        let repeat = a.commit(&second, &claims, &[]).await.unwrap_err();
        assert!(repeat.to_string().contains("duplicate key"), "{repeat}");
        assert!(a.settle(2, &second, &claims).await.unwrap().is_some());

        // Each record once, each forward as sent (neither replaced by its stand-in).
        let client = cluster::connect(&pg.url()).await.unwrap();
        let verified = cluster::evidence::verify(&client).await.unwrap();
        assert!(verified.problems.is_empty(), "{:?}", verified.problems);
        assert_eq!(verified.records, 4);
        assert_eq!(
            a.records_of("a", TxnId(2)).await.unwrap(),
            [second[0].1.clone(), second[1].1.clone()]
        );
    });
}

/// `cluster status` counts a node's connections by their names, which PostgreSQL cuts to 63 bytes of
/// printable ASCII: a node named longer, or in other characters, still has all four found.
#[test]
fn the_connections_of_a_node_with_a_long_or_non_ascii_name_are_all_found() {
    let Some(pg) = Server::start("store::connections_named") else {
        return;
    };
    rt().block_on(async {
        let names = [format!("zürich-{}", "x".repeat(56)), "節點-1".to_string()];
        let mut held = Vec::new();
        for node in &names {
            let store = joined(&pg, node).await;
            for purpose in Purpose::ALL.into_iter().filter(|p| *p != Purpose::Commits) {
                held.push(store.twin(&pg.url(), purpose).await.unwrap());
            }
            held.push(store);
        }
        let nodes = cluster::status(&cluster::connect(&pg.url()).await.unwrap())
            .await
            .unwrap();
        let found: Vec<_> = (nodes.iter())
            .map(|n| (n.node.as_str(), n.connections))
            .collect();
        assert_eq!(found, [(names[0].as_str(), 4), (names[1].as_str(), 4)]);
    });
}

/// Two processes started under one name at the same moment both find it free. The database lets one
/// join and not the other over it (its lease live, its connections there): the other waits, and is
/// refused once the first renews, rather than fencing it.
#[test]
fn of_two_namesakes_started_at_once_one_joins_and_the_other_is_refused() {
    let Some(pg) = Server::start("store::namesakes_at_once") else {
        return;
    };
    rt().block_on(async {
        // The schema and the day's partitions made: the two stop only where the test holds them.
        let _other = joined(&pg, "other").await;
        // With the nodes table held, both pass the check for a live namesake and wait to join.
        let mut holder = cluster::connect(&pg.url()).await.unwrap();
        let hold = holder.transaction().await.unwrap();
        hold.batch_execute("LOCK TABLE nodes IN EXCLUSIVE MODE")
            .await
            .unwrap();
        let start = || {
            let url = pg.url();
            tokio::spawn(async move { Store::join(&url, "x", LEASE, &KEY).await })
        };
        let (mut first, mut second) = (start(), start());
        let watcher = cluster::connect(&pg.url()).await.unwrap();
        let waiting = "SELECT count(*) FROM pg_stat_activity
                       WHERE application_name = 'acquiro x commits' AND wait_event_type = 'Lock'";
        while watcher
            .query_one(waiting, &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
            < 2
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        hold.commit().await.unwrap();

        let (winner, loser) = tokio::select! {
            joined = &mut first => (joined.unwrap().unwrap(), second),
            joined = &mut second => (joined.unwrap().unwrap(), first),
        };
        assert_eq!(winner.store.epoch(), 1);
        refused_while_alive(&winner.store, loser).await;
    });
}

/// Renews `live`'s lease, as its lease task would, until `joining` ends; `joining` must have been
/// refused as a namesake, and `live` must still hold its lease.
async fn refused_while_alive(live: &Store, mut joining: JoinHandle<Result<Joined, Error>>) {
    let refused = loop {
        tokio::select! {
            ended = &mut joining => break ended.unwrap(),
            () = tokio::time::sleep(Duration::from_millis(100)) => {
                live.renew(LEASE, 0, 0, TxnId(0)).await.unwrap();
            }
        }
    };
    let error = refused.unwrap_err();
    assert!(matches!(error, Error::NameInUse { .. }), "{error}");
    live.renew(LEASE, 0, 0, TxnId(0)).await.unwrap();
}

/// A connection string that names its own `application_name` does not hide a node's connections: a
/// second process under a live node's name, with the same connection string, is still refused.
#[test]
fn a_namesake_is_refused_when_the_connection_string_names_an_application() {
    let Some(pg) = Server::start("store::namesake_application_name") else {
        return;
    };
    rt().block_on(async {
        let url = format!("{} application_name=payments", pg.url());
        let first = Store::join(&url, "x", LEASE, &KEY).await.unwrap();
        let watcher = cluster::connect(&url).await.unwrap();
        let names: Vec<String> = (watcher.query(
            "SELECT application_name FROM pg_stat_activity WHERE pid <> pg_backend_pid()
             AND application_name <> '' ORDER BY 1",
            &[],
        ))
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
        assert_eq!(names, ["acquiro x commits"]);
        // A command's connection keeps the name it is given.
        let own: String = (watcher.query_one("SELECT current_setting('application_name')", &[]))
            .await
            .unwrap()
            .get(0);
        assert_eq!(own, "payments");
        let second = tokio::spawn(async move { Store::join(&url, "x", LEASE, &KEY).await });
        refused_while_alive(&first.store, second).await;
    });
}

/// A database that went back in time (an asynchronous standby promoted without the last commits) is
/// found when the node settles on it after its connection was lost: it holds fewer of the node's
/// records than were committed, and the node may commit nothing more there.
#[test]
fn a_database_that_lost_acknowledged_commits_is_found_when_settling() {
    let Some((primary, standby)) = Server::start_asynchronous_pair("store::went_back") else {
        return;
    };
    rt().block_on(async {
        let url = Server::url_of_primary(&[&primary, &standby]);
        let mut a = Store::join(&url, "a", LEASE, &KEY).await.unwrap().store;
        a.commit(&[(1, received(1, 51))], &[claim(1, 51, 1)], &[])
            .await
            .unwrap();
        standby.until_replayed(&primary);
        standby.kill();
        // Acknowledged by the primary alone.
        a.commit(&[(2, received(2, 52))], &[claim(2, 52, 2)], &[])
            .await
            .unwrap();
        let third = [(3, received(3, 53))];
        assert!(a.settle(2, &third, &[]).await.unwrap().is_none());

        primary.kill();
        standby.start_again();
        standby.promote();
        a.reconnect(&url).await.unwrap();
        let error = a.settle(2, &third, &[]).await.unwrap_err();
        assert!(
            matches!(
                error,
                Error::WentBack {
                    acknowledged: 2,
                    holds: 1,
                    ..
                }
            ),
            "{error}"
        );
    });
}

/// A node whose records retention dropped, every one (idle for longer than `retain`), numbers on past
/// them when it joins again, whether its lease renewals or the evidence copy last saw how far it got:
/// numbers used again would sit below the marks recovery, the takeovers and the evidence copy read
/// from, and its new records would be missed by them.
#[test]
fn a_node_joining_after_retention_dropped_all_its_records_numbers_on_past_them() {
    let Some(pg) = Server::start("store::numbered_on") else {
        return;
    };
    rt().block_on(async {
        let b = joined(&pg, "b").await;
        b.commit(&[(1, received(1, 71)), (2, received(2, 72))], &[], &[])
            .await
            .unwrap();
        assert_eq!(b.index_evidence(100).await.unwrap(), 2, "b's copied");
        let a = joined(&pg, "a").await;
        a.commit(&[(1, received(1, 61)), (2, received(2, 62))], &[], &[])
            .await
            .unwrap();
        // Nothing needed any more: recovery would start after record 2.
        a.renew(LEASE, 0, 0, TxnId(3)).await.unwrap();
        drop((a, b));
        // As retention drops whole days.
        let client = cluster::connect(&pg.url()).await.unwrap();
        client.execute("DELETE FROM records", &[]).await.unwrap();

        for node in ["a", "b"] {
            let again = Store::join(&pg.url(), node, LEASE, &KEY).await.unwrap();
            assert_eq!(again.last_seq, 2, "node {node}");
        }
    });
}

/// Each node numbers its upstream messages within a block of STANs of its own: the one it held, when
/// it joins again; a block no node ever held before one a lapsed node holds; and a lapsed node's once
/// every other is held by a live one, the lapsed node fenced with it (woken, it would number with it
/// beside the newcomer). With every block held by a live node, a join is refused, saying so.
#[test]
fn every_live_node_numbers_its_stans_in_a_block_of_its_own() {
    let Some(pg) = Server::start("store::stan_blocks") else {
        return;
    };
    rt().block_on(async {
        let join = |node: &'static str| {
            let url = pg.url();
            async move { Store::join(&url, node, LEASE, &KEY).await }
        };
        let a = join("a").await.unwrap();
        assert_eq!(a.stan_block, 0);
        assert_eq!(join("b").await.unwrap().stan_block, 1);
        drop(a);
        let a = join("a").await.unwrap();
        assert_eq!(a.stan_block, 0, "its own again");

        // a's lease lapses: a newcomer takes a block never held first.
        let client = cluster::connect(&pg.url()).await.unwrap();
        let lapse = "UPDATE nodes SET lease_until = now() - interval '1 second' WHERE node = 'a'";
        client.execute(lapse, &[]).await.unwrap();
        let mut live = Vec::new();
        for node in ["c", "d", "e", "f", "g", "h", "i", "j"] {
            live.push(join(node).await.unwrap());
        }
        let blocks: Vec<u32> = live.iter().map(|j| j.stan_block).collect();
        assert_eq!(blocks, [2, 3, 4, 5, 6, 7, 8, 9]);
        // Then a's: a is fenced.
        let k = join("k").await.unwrap();
        assert_eq!(k.stan_block, 0);
        let renewal = a.store.renew(LEASE, 0, 0, TxnId(1)).await.unwrap_err();
        assert!(renewal.is_fenced(), "{renewal}");
        // Every block held by a live node.
        let refused = join("l").await.unwrap_err();
        assert!(
            matches!(refused, Error::NoStanBlock { blocks: 10 }),
            "{refused}"
        );
    });
}
