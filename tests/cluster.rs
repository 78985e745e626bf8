//! Cluster mode with the real binary: `acquiro serve` nodes on one PostgreSQL (a throw-away server from
//! Debian's binaries; SKIPPED without one, required in CI by ACQUIRO_REQUIRE_POSTGRES).

mod support;

use std::time::Duration;

use cluster::SCHEMA_VERSION;
use cluster::throwaway::Server;
use support::cluster::*;
use support::issuer::Issuer;
use support::pci;
use support::process::{Log, Switch, serve_with, signal, sigterm, spawn_with};
use support::settlement::{idle, lifecycle_rules, quick_repeats, reconciles};
use support::terminal::text;
use support::{http_get, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wire::{FrameCodec, LengthHeader};

#[tokio::test]
async fn a_retransmit_on_another_node_is_replayed_or_waited_for_never_forwarded_twice() {
    let Some(pg) = Server::start("cluster::duplicates") else {
        return;
    };
    let issuer = Issuer::start(spec(), Duration::from_secs(60)).await;
    let a = node(&pg, "a", &issuer).await;
    let b = node(&pg, "b", &issuer).await;

    let first = purchase(&a, "TERM0001", 1, 100).await;
    assert_eq!(
        (text(&first, 39), text(&first, 38)),
        ("00".into(), "A1B2C3".into())
    );
    let again = purchase(&b, "TERM0001", 1, 100).await;
    for field in [39, 38, 37] {
        assert_eq!(text(&again, field), text(&first, field), "DE{field}");
    }
    assert_eq!(
        forwards(&issuer),
        1,
        "the retransmit on b was not forwarded"
    );
    let different = purchase(&b, "TERM0001", 1, 999).await;
    assert_eq!(text(&different, 39), "94");

    // In flight on a (the issuer holds 555): b's retransmit waits for a's outcome and answers it.
    let mut held = held_on(&a, &issuer, "TERM0002", 2).await;
    let mut retransmit = terminal(&b, "TERM0002").await;
    retransmit.send(&retransmit.purchase(2, 555)).await;
    // Released once b found the key held (its provisional forward withdrawn): b then asks again until
    // a's outcome is in, and those claims, with no forward, withdraw nothing.
    within("b's forward withdrawn", async {
        while withdrawn(&b).await < 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    issuer.release();
    let on_a = held.answer().await;
    let on_b = retransmit.answer().await;
    assert_eq!(text(&on_a, 39), "00");
    assert_eq!(text(&on_b, 39), "00");
    assert_eq!(text(&on_b, 38), text(&on_a, 38));
    assert_eq!(forwards(&issuer), 2, "one forward per purchase");
    // Each of b's three was forwarded provisionally with its claim, and withdrawn when it lost it.
    assert_eq!(withdrawn(&b).await, 3);
    assert_eq!(withdrawn(&a).await, 0);

    // Its log at `RUST_LOG=debug` holds no card number, and not the database client's lines that
    // print each commit's records.
    let Switch { mut child, log, .. } = b;
    child.start_kill().unwrap();
    for line in log.all().await {
        assert!(
            !line.contains(support::terminal::PAN) && !line.contains("with parameters"),
            "{line}"
        );
    }
}

/// What a node's `acquiro_forwards_withdrawn_total` says.
/// `node`'s /readyz says it is not ready, naming `why`.
async fn not_ready(node: &Switch, why: &str) {
    let (code, body) = http_get(node.admin, "/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains(why), "{body}");
}

/// Until `node`'s /readyz says ready (it is asked again: readiness has no signal to wait on).
async fn ready(node: &Switch) {
    within("ready", async {
        while http_get(node.admin, "/readyz").await.0 != 200 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

/// Until `node`'s gauge of synchronous standbys says `n` (it reads them every third of its lease).
async fn standbys_read(node: &Switch, n: i64) {
    gauge_reads(node, "acquiro_database_synchronous_standbys", n).await;
}

/// Until `node`'s `acquiro_pleas_waiting` reads `n`.
async fn pleas_waiting_read(node: &Switch, n: i64) {
    gauge_reads(node, "acquiro_pleas_waiting", n).await;
}

/// Until `node`'s gauge `name` reads `n`.
async fn gauge_reads(node: &Switch, name: &str, n: i64) {
    let line = format!("{name} {n}");
    within(&line, async {
        while !http_get(node.admin, "/metrics")
            .await
            .1
            .lines()
            .any(|l| l == line)
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

/// Until `node`'s connections to `pg`, by how each shows in `pg_stat_activity`, are its four: each says
/// whose it is and what it is for.
async fn connections_named(pg: &Server, node: &str) {
    let client = cluster::connect(&pg.url()).await.unwrap();
    let pattern = format!("acquiro {node} %");
    let wanted = ["commits", "evidence", "lease", "upkeep"].map(|p| format!("acquiro {node} {p}"));
    within("the node's four connections, named", async {
        loop {
            let rows = client
                .query(
                    "SELECT application_name FROM pg_stat_activity WHERE application_name LIKE $1
                     ORDER BY 1",
                    &[&pattern],
                )
                .await
                .unwrap();
            let names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
            if names == wanted {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

async fn withdrawn(n: &Switch) -> u64 {
    let (_, body) = http_get(n.admin, "/metrics").await;
    body.lines()
        .find_map(|l| l.strip_prefix("acquiro_forwards_withdrawn_total "))
        .and_then(|v| v.parse().ok())
        .expect("the metric")
}

#[tokio::test]
async fn with_the_database_down_new_requests_get_91_at_once_and_the_node_resumes_by_itself() {
    let Some(pg) = Server::start("cluster::database_down") else {
        return;
    };
    let issuer = Issuer::start(spec(), Duration::from_secs(60)).await;
    let mut a = node(&pg, "a", &issuer).await;
    assert_eq!(text(&purchase(&a, "TERM0001", 1, 100).await, 39), "00");
    connections_named(&pg, "a").await;

    pg.kill();
    // Idle, the node finds it out at its next lease renewal: not ready for terminals.
    a.log.until("lease not renewed").await;
    not_ready(&a, "journal: FAILED (lease not renewed").await;
    // The first request after the loss finds it out; every one after it is refused at once.
    assert_eq!(text(&purchase(&a, "TERM0002", 2, 100).await, 39), "91");
    a.log.until("database unavailable").await;
    assert_eq!(withdrawn(&a).await, 1, "its provisional forward withdrawn");
    assert_eq!(text(&purchase(&a, "TERM0003", 3, 100).await, 39), "91");
    not_ready(&a, "journal: FAILED (database unavailable").await;
    // Answers already committed are still replayed.
    assert_eq!(text(&purchase(&a, "TERM0001", 1, 100).await, 39), "00");
    assert_eq!(forwards(&issuer), 1);

    pg.start_again();
    a.log.until("journal writable again").await;
    // Ready once the lease is renewed as well; each connection made again is named as before.
    ready(&a).await;
    connections_named(&pg, "a").await;
    assert_eq!(text(&purchase(&a, "TERM0004", 4, 100).await, 39), "00");
    // A request refused while the database was down is a first attempt when it comes again.
    assert_eq!(text(&purchase(&a, "TERM0003", 3, 100).await, 39), "00");
    assert_eq!(forwards(&issuer), 3);
}

/// Each node numbers what it forwards within its own block of STANs: the issuer never gets the same
/// STAN from two nodes (within one second of DE7, an issuer matching a reversal by DE90 alone could not
/// tell their purchases apart).
#[tokio::test]
async fn two_nodes_forward_under_stans_of_blocks_of_their_own() {
    let Some(pg) = Server::start("cluster::stan_blocks") else {
        return;
    };
    let issuer = Issuer::start(spec(), Duration::from_secs(60)).await;
    let a = node(&pg, "a", &issuer).await;
    let b = node(&pg, "b", &issuer).await;
    assert_eq!(text(&purchase(&a, "TERM0001", 1, 100).await, 39), "00");
    assert_eq!(text(&purchase(&b, "TERM0002", 1, 100).await, 39), "00");
    // After each node's sign-on, which took the first of its block.
    let mut stans: Vec<(String, u32)> = (issuer.of_class(2).iter())
        .map(|m| (text(m, 41), text(m, 11).parse().unwrap()))
        .collect();
    stans.sort();
    assert_eq!(
        stans,
        [("TERM0001".into(), 2), ("TERM0002".into(), 100_001)],
        "a in block 0, b in block 1"
    );
    // What an SRE matching an issuer's log to a node reads.
    let status = acquiro(&["cluster", "status", "--database", &pg.url()]);
    assert!(
        node_line(&status, "a").contains(" 000001-099999 "),
        "{status}"
    );
    assert!(
        node_line(&status, "b").contains(" 100000-199999 "),
        "{status}"
    );
}

/// A terminal that connects for each transaction (behind a balancer) has its batch spread over the
/// nodes; it settles in balance on either, which reads the batch as every node recorded it. The same
/// settlement repeated on the other node (its answer lost) is told the same, and the batch closes once.
#[tokio::test]
async fn a_terminal_whose_purchases_went_through_both_nodes_settles_in_balance_on_either() {
    let Some(pg) = Server::start("cluster::settlement") else {
        return;
    };
    let issuer = Issuer::start(spec(), Duration::from_secs(60)).await;
    let a = node(&pg, "a", &issuer).await;
    let b = node(&pg, "b", &issuer).await;
    assert_eq!(text(&purchase(&a, "TERM0001", 1, 100).await, 39), "00");
    assert_eq!(text(&purchase(&b, "TERM0001", 2, 250).await, 39), "00");
    let like = sim::Purchase {
        terminal: "TERM0001".into(),
        ..sim::Purchase::example()
    };
    let settle = |stan, totals| sim::settlement(spec(), &like, stan, "920000", totals).unwrap();
    let first = settle(3, [0, 2, 0, 350]);
    let told = terminal(&a, "TERM0001").await.exchange(&first).await;
    assert_eq!(
        text(&told, 39),
        "00",
        "in balance with both nodes' purchases"
    );
    let again = terminal(&b, "TERM0001").await.exchange(&first).await;
    assert_eq!(text(&again, 39), "00", "the repeat on b told what a told");
    // Closed once, on a: the next batch holds only what came after.
    assert_eq!(text(&purchase(&b, "TERM0001", 4, 40).await, 39), "00");
    let next = terminal(&a, "TERM0001")
        .await
        .exchange(&settle(5, [0, 1, 0, 40]))
        .await;
    assert_eq!(text(&next, 39), "00");
}

/// A lease connection lost alone (its backend ended by an operator, a proxy in between restarted) is
/// made again and the lease renewed at once, not a third of the lease later, and readiness never hears
/// of it: the database answered all along.
#[tokio::test]
async fn a_lost_lease_connection_is_made_again_and_the_lease_renewed_at_once() {
    let Some(pg) = Server::start("cluster::lease_connection_lost") else {
        return;
    };
    let issuer = Issuer::start(spec(), Duration::from_secs(60)).await;
    // Renewals every 10 s: one at once is told from one at the lease's pace with room for a slow
    // machine.
    let mut a = node_with(&pg, "a", &issuer, &["--lease", "30s"]).await;
    connections_named(&pg, "a").await;
    end_backend(&pg, "acquiro a lease").await;
    a.log.until("lease renewal failed; connecting again").await;
    let failed = std::time::Instant::now();
    a.log.until("lease renewed on a new connection").await;
    // Renewed at the lease's pace instead, it would have taken 10 s.
    let took = failed.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "renewed again after {took:?}"
    );
    // Not reported: readiness failed at no point (a reported failure is counted before readiness
    // hears of it).
    assert!(a.log.seen("lease not renewed").is_none());
    // What shows it to an SRE instead: the reconnection's count.
    let lines = [
        "acquiro_lease_renewal_failures_total 0",
        r#"acquiro_database_reconnections_total{connection="lease"} 1"#,
    ];
    metrics_have(&a, &lines).await;
    ready(&a).await;
    connections_named(&pg, "a").await;
    assert_eq!(text(&purchase(&a, "TERM0001", 1, 100).await, 39), "00");
}

/// A commits connection lost alone (its backend ended by an operator, a proxy in between restarted)
/// is made again and the commit settled at once: the request that finds it out is answered, not
/// refused with 91, and the database is never reported unavailable.
#[tokio::test]
async fn a_lost_commits_connection_is_made_again_and_the_request_answered() {
    let Some(pg) = Server::start("cluster::commits_connection_lost") else {
        return;
    };
    let issuer = Issuer::start(spec(), Duration::from_secs(60)).await;
    let mut a = node(&pg, "a", &issuer).await;
    connections_named(&pg, "a").await;
    end_backend(&pg, "acquiro a commits").await;
    assert_eq!(text(&purchase(&a, "TERM0001", 1, 100).await, 39), "00");
    a.log
        .until("commit failed; connecting again to settle it at once")
        .await;
    assert!(a.log.seen("database unavailable").is_none());
    let lines = [
        "acquiro_journal_write_failures_total 0",
        r#"acquiro_database_reconnections_total{connection="commits"} 1"#,
    ];
    metrics_have(&a, &lines).await;
    connections_named(&pg, "a").await;
    assert_eq!(forwards(&issuer), 1);
}

/// Asserts that `node`'s /metrics has each of `lines` (a sample as the text format writes it).
async fn metrics_have(node: &Switch, lines: &[&str]) {
    let metrics = http_get(node.admin, "/metrics").await.1;
    for line in lines {
        assert!(metrics.contains(line), "{line} not in {metrics}");
    }
}

/// Ends the backend of the connection named `application` (as an operator's `pg_terminate_backend`
/// does), and returns once it is gone.
async fn end_backend(pg: &Server, application: &str) {
    let client = cluster::connect(&pg.url()).await.unwrap();
    let ended = client
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            &[&application],
        )
        .await
        .unwrap();
    assert_eq!(ended, 1, "{application}");
    within("the backend's end", async {
        loop {
            let left: i64 = (client.query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                &[&application],
            ))
            .await
            .unwrap()
            .get(0);
            if left == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// Nothing a card carries reaches the database: after a chip purchase approved and one timed out and
/// reversed (each with track 2 and a PIN block), a dump of the whole database holds the card only as
/// BIN and last four, and no track, PIN block or EMV data, as text or as bytes.
#[tokio::test]
async fn no_card_data_reaches_the_database() {
    let Some(pg) = Server::start("cluster::pci") else {
        return;
    };
    let issuer = Issuer::start(spec(), Duration::from_secs(60)).await;
    let a = node_with(&pg, "a", &issuer, &["--response-timeout", "300ms"]).await;
    let mut t = terminal(&a, "TERM0001").await;
    let approved = t.exchange(&pci::chip(t.purchase(1, 100))).await;
    assert_eq!(text(&approved, 39), "00");
    // The issuer holds 555: the terminal is told 91, and the issuer gets a reversal, written ahead.
    let mut held = held_on(&a, &issuer, "TERM0002", 2).await;
    assert_eq!(text(&held.answer().await, 39), "91");
    issuer.until_reversed().await;
    let client = cluster::connect(&pg.url()).await.unwrap();
    let carded: i64 = (client.query_one("SELECT count(*) FROM records WHERE last4 = '0010'", &[]))
        .await
        .unwrap()
        .get(0);
    assert!(carded >= 2, "the purchases' records are in the dump");
    let dump = pg.dir().join("pci.sql");
    pg.dump(&dump);
    let found = pci::card_data_in(&std::fs::read(&dump).unwrap());
    assert!(found.is_empty(), "in the database: {found:?}");
}

/// A second process started under a live node's name (two nodes configured alike) is refused, naming
/// the name, instead of fencing the first (whose restart would fence it in turn); the first goes on.
/// Under the name of a paused node, one waits for its lease to lapse, then joins and fences it.
#[tokio::test]
async fn a_second_process_under_a_live_nodes_name_is_refused_and_the_node_goes_on() {
    let Some(pg) = Server::start("cluster::namesake") else {
        return;
    };
    let issuer = Issuer::start(spec(), Duration::from_secs(60)).await;
    // Renewals every second.
    let mut a = node_with(&pg, "a", &issuer, &["--lease", "3s"]).await;
    connections_named(&pg, "a").await;
    let (url, upstream) = (pg.url(), issuer.addr.to_string());
    let mut twin = spawn_with(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--upstream",
            &upstream,
            "--node",
            "a",
            "--database",
            &url,
            "--lease",
            "3s",
        ],
        &[("ACQUIRO_CARD_KEY", CARD_KEY)],
    );
    let mut log = Log::of(&mut twin);
    let refused = log.until("running already").await;
    assert!(
        refused.contains("node a is running already") && refused.contains("a name of its own"),
        "{refused}"
    );
    let status = within("the second process's end", twin.wait())
        .await
        .unwrap();
    assert!(!status.success(), "{status}");
    // a keeps the epoch it joined with, and still commits.
    let client = cluster::connect(&url).await.unwrap();
    let epoch: i64 = (client
        .query_one("SELECT epoch FROM nodes WHERE node = 'a'", &[])
        .await)
        .unwrap()
        .get(0);
    assert_eq!(epoch, 1);
    assert_eq!(text(&purchase(&a, "TERM0001", 1, 100).await, 39), "00");

    // Paused (a frozen host), a renews nothing: a process under its name waits until a's lease has
    // lapsed, then joins and fences it; woken, a finds itself fenced and stops.
    signal(&a.child, "-STOP");
    let b = node_with(&pg, "a", &issuer, &["--lease", "3s"]).await;
    assert!(
        b.log
            .seen("waiting for the process last under this name")
            .is_some()
    );
    signal(&a.child, "-CONT");
    let status = within("the paused process's end", a.child.wait())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(3), "exit code of a fenced node");
    assert_eq!(text(&purchase(&b, "TERM0001", 2, 100).await, 39), "00");
}

#[tokio::test]
async fn a_database_that_stops_answering_is_counted_lost_and_the_node_resumes_when_it_answers() {
    let Some(pg) = Server::start("cluster::database_dark") else {
        return;
    };
    let issuer = Issuer::start(spec(), Duration::from_secs(60)).await;
    let dark = Dark::start(&pg).await;
    let mut a = node_at(&dark.url(), "a", &issuer, &["--response-timeout", "1h"]).await;
    assert_eq!(text(&purchase(&a, "TERM0001", 1, 100).await, 39), "00");

    dark.go_dark(true);
    // Idle, the node finds it out when a lease renewal goes unanswered: not ready for terminals.
    a.log.until("lease not renewed").await;
    not_ready(&a, "lease not renewed: database: no answer within 2s").await;
    let (_, metrics) = http_get(a.admin, "/metrics").await;
    let failures = (metrics.lines())
        .find_map(|l| l.strip_prefix("acquiro_lease_renewal_failures_total "))
        .and_then(|v| v.parse::<u64>().ok());
    assert!(failures.is_some_and(|n| n > 0), "{metrics}");
    // Its commit goes unanswered, not refused: the request is told 91 once the commit has waited
    // `cluster.timeout` (2 s), rather than held until the kernel gives up on the connection.
    assert_eq!(text(&purchase(&a, "TERM0002", 2, 100).await, 39), "91");
    a.log.until("no answer within 2s").await;
    assert_eq!(text(&purchase(&a, "TERM0003", 3, 100).await, 39), "91");
    not_ready(&a, "no answer within 2s").await;

    // Lit again, the commit held on the old connection reaches the database late, beside the node's
    // own settling of it on a new one: one of the two stands.
    dark.go_dark(false);
    a.log.until("journal writable again").await;
    ready(&a).await;
    assert_eq!(text(&purchase(&a, "TERM0004", 4, 100).await, 39), "00");
    assert_eq!(text(&purchase(&a, "TERM0003", 3, 100).await, 39), "00");
    // TERM0002's provisional forward never left; the others went once each.
    assert_eq!(withdrawn(&a).await, 1);
    assert_eq!(forwards(&issuer), 3);
    let verified = acquiro(&["tranlog", "verify", "--database", &pg.url()]);
    assert!(
        verified.contains("every node's sequence is whole"),
        "{verified}"
    );
}

#[tokio::test]
async fn a_failover_to_the_synchronous_standby_loses_nothing_told_and_the_node_resumes_on_it() {
    let Some((primary, standby)) = Server::start_pair("cluster::failover") else {
        return;
    };
    let issuer = Issuer::start(spec(), Duration::from_secs(60)).await;
    // Both servers in the node's connection string: it connects to whichever takes writes.
    let url = Server::url_of_primary(&[&primary, &standby]);
    let mut a = node_at(&url, "a", &issuer, &["--response-timeout", "1h"]).await;
    let first = purchase(&a, "TERM0001", 1, 100).await;
    assert_eq!(text(&first, 39), "00");
    // What an SRE sees: every commit waits for the standby.
    standbys_read(&a, 1).await;
    let status = acquiro(&["cluster", "status", "--database", &url]);
    assert!(
        status.contains(&format!(
            "schema version {SCHEMA_VERSION}; 1 synchronous standby(s) streaming"
        )),
        "{status}"
    );
    // Forwarded before the failover, answered after it.
    let mut held = held_on(&a, &issuer, "TERM0002", 2).await;

    primary.kill();
    assert_eq!(text(&purchase(&a, "TERM0003", 3, 100).await, 39), "91");
    a.log.until("database unavailable").await;
    not_ready(&a, "journal: FAILED").await;

    standby.promote();
    a.log.until("journal writable again").await;
    ready(&a).await;
    issuer.release();
    assert_eq!(text(&held.answer().await, 39), "00");
    assert_eq!(text(&purchase(&a, "TERM0004", 4, 100).await, 39), "00");

    // What the lost primary acknowledged is on the promoted standby: a node that never saw TERM0001's
    // purchase replays its answer from there, and does not forward it again.
    let b = node(&standby, "b", &issuer).await;
    let again = purchase(&b, "TERM0001", 1, 100).await;
    for field in [39, 38, 37] {
        assert_eq!(text(&again, field), text(&first, field), "DE{field}");
    }
    // TERM0001, TERM0002 and TERM0004 once each; TERM0003's provisional forward never left.
    assert_eq!(forwards(&issuer), 3);
    assert_eq!(withdrawn(&a).await, 1);
    let verified = acquiro(&["tranlog", "verify", "--database", &standby.url()]);
    assert!(
        verified.contains("every node's sequence is whole"),
        "{verified}"
    );
    // The promoted standby has no standby of its own, and says so.
    standbys_read(&a, 0).await;
    let status = acquiro(&["cluster", "status", "--database", &url]);
    assert!(
        status.contains("NO SYNCHRONOUS STANDBY: a lost primary"),
        "{status}"
    );
}

/// A failover to an asynchronous standby that lacks commits the node made (the deployment the README
/// warns against) is found when the node connects to it: it stops (exit 3), naming what the database
/// lost, instead of going on beside records that terminals were told of and the database no longer holds.
#[tokio::test]
async fn a_failover_that_lost_commits_stops_the_node_naming_it() {
    let Some((primary, standby)) = Server::start_asynchronous_pair("cluster::went_back") else {
        return;
    };
    let issuer = Issuer::start(spec(), Duration::from_secs(60)).await;
    let url = Server::url_of_primary(&[&primary, &standby]);
    // Stopping, it does not wait out its grace period: nothing it holds back can go out.
    let mut a = node_at(&url, "a", &issuer, &["--grace-period", "1h"]).await;
    assert_eq!(text(&purchase(&a, "TERM0001", 1, 100).await, 39), "00");
    standby.until_replayed(&primary);
    standby.kill();
    // Approved, on the primary's word alone.
    assert_eq!(text(&purchase(&a, "TERM0002", 2, 100).await, 39), "00");

    primary.kill();
    assert_eq!(text(&purchase(&a, "TERM0003", 3, 100).await, 39), "91");
    standby.start_again();
    standby.promote();
    let stopped = a.log.until("the database lost commits of node a").await;
    assert!(stopped.contains("this node stops"), "{stopped}");
    let status = within("the node's end", a.child.wait()).await.unwrap();
    assert_eq!(
        status.code(),
        Some(3),
        "exit code of a node that may commit nothing more"
    );
}

#[tokio::test]
async fn kill_9_then_a_restart_under_the_same_name_reverses_what_was_in_doubt() {
    let Some(pg) = Server::start("cluster::restart") else {
        return;
    };
    let issuer = Issuer::start(spec(), Duration::from_secs(60)).await;
    let mut a = node(&pg, "a", &issuer).await;
    let b = node(&pg, "b", &issuer).await;
    assert_eq!(text(&purchase(&a, "TERM0001", 1, 100).await, 39), "00");
    // Its connection stays open until the kill.
    let _held = held_on(&a, &issuer, "TERM0002", 2).await;
    a.child.start_kill().unwrap();
    within("node a killed", a.child.wait()).await.unwrap();
    issuer.release();

    let a = node(&pg, "a", &issuer).await;
    issuer.until_reversed().await;
    let reversal = &issuer.of_class(4)[0];
    assert_eq!(text(reversal, 37), format!("{:012}", 2));
    // Retransmits, on either node: what the terminal would have been told (91), and no new forward.
    assert_eq!(text(&purchase(&b, "TERM0002", 2, 555).await, 39), "91");
    assert_eq!(text(&purchase(&a, "TERM0001", 1, 100).await, 39), "00");
    assert_eq!(text(&purchase(&b, "TERM0001", 1, 100).await, 39), "00");
    assert_eq!(forwards(&issuer), 2);
}

#[tokio::test]
async fn a_paused_node_that_lost_its_lease_tells_nobody_approved_for_what_another_node_reversed() {
    let Some(pg) = Server::start("cluster::paused") else {
        return;
    };
    let flags = [
        "--lease",
        "1s",
        "--response-timeout",
        "1h",
        "--grace-period",
        "1s",
    ];
    let issuer = Issuer::start(spec(), Duration::from_secs(60)).await;
    let mut a = node_with(&pg, "a", &issuer, &flags).await;
    let _b = node_with(&pg, "b", &issuer, &flags).await;
    let mut held = held_on(&a, &issuer, "TERM0002", 2).await;
    // a stops in its tracks (a long GC pause, a frozen VM): its lease lapses and b takes its work over.
    signal(&a.child, "-STOP");
    issuer.until_reversed().await;
    // The issuer's approval reaches a, which wakes up: the commit that would write it ahead is
    // refused, or the lease's renewal finds the fence first, and a stops either way without waiting
    // out its grace period (nothing it holds back can go out).
    issuer.release();
    signal(&a.child, "-CONT");
    a.log.until("fenced: this node stops").await;
    // It stops by itself, for its supervisor to start it again (it then joins under a new epoch).
    let status = within("node a stopping", a.child.wait()).await.unwrap();
    assert_eq!(status.code(), Some(3), "exit code of a fenced node");
    assert!(
        held.closed().await,
        "the terminal was told nothing by the node that lost its lease"
    );
    assert_eq!(issuer.of_class(4).len(), 1);
}

/// A request refused with 91 while the database was away may be the retransmit of a purchase another
/// node approved, whose terminal heard nothing of it: the node that refused it admits a reversal in
/// the terminal's name (a plea). Fenced before that reversal's records commit, it leaves the plea in
/// the database as it stops, and the other node takes it on and reverses the approval.
#[tokio::test]
async fn a_node_fenced_holding_a_reversal_in_a_terminals_name_leaves_it_to_another_node() {
    let Some(pg) = Server::start("cluster::pleas") else {
        return;
    };
    let flags = [
        "--lease",
        "1s",
        "--grace-period",
        "1s",
        "--terminal-patience",
        "2s",
    ];
    let issuer = Issuer::start(spec(), Duration::from_secs(60)).await;
    let mut a = node_with(&pg, "a", &issuer, &flags).await;
    let mut b = node_with(&pg, "b", &issuer, &flags).await;
    // a has work of its own, so that b takes it over (and fences it) once its lease lapses.
    assert_eq!(text(&purchase(&a, "TERM0003", 3, 100).await, 39), "00");
    let approved = purchase(&b, "TERM0001", 1, 100).await;
    assert_eq!(text(&approved, 39), "00");
    pg.kill();
    assert_eq!(text(&purchase(&a, "TERM0001", 1, 100).await, 39), "91");
    a.log.until("whatever holds it is reversed").await;

    signal(&a.child, "-STOP");
    pg.start_again();
    b.log
        .until("took over the work of a node whose lease lapsed")
        .await;
    signal(&a.child, "-CONT");
    a.log.until("fenced: this node stops").await;
    a.log.until("left for the other nodes").await;
    let status = within("node a stopping", a.child.wait()).await.unwrap();
    assert_eq!(status.code(), Some(3), "exit code of a fenced node");

    b.log
        .until("taking on reversals other nodes admitted")
        .await;
    issuer.until_reversed().await;
    let reversals = issuer.of_class(4);
    assert_eq!(reversals.len(), 1);
    assert_eq!(text(&reversals[0], 37), text(&approved, 37));
    metrics_have(&b, &["acquiro_pleas_taken_total 1"]).await;
    // Every node reads the pleas waiting beside its takeovers (-1 until its first read).
    pleas_waiting_read(&b, 0).await;
    // Settled once the reversal's records are committed: `cluster status` shows none waiting.
    let client = cluster::connect(&pg.url()).await.unwrap();
    within("the plea settled", async {
        while cluster::database(&client).await.unwrap().pleas > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// A node stopping while a reversal in a terminal's name waits out the terminal's patience does not
/// wait out its grace period for it: it leaves the plea in the database, where another node takes it
/// on at once, and stops.
#[tokio::test]
async fn a_node_stopping_leaves_a_waiting_plea_to_the_others_without_waiting_out_its_grace_period()
{
    let Some(pg) = Server::start("cluster::pleas_at_stop") else {
        return;
    };
    let flags = ["--grace-period", "1h", "--terminal-patience", "1h"];
    let issuer = Issuer::start(spec(), Duration::from_secs(60)).await;
    let mut a = node_with(&pg, "a", &issuer, &flags).await;
    pg.kill();
    assert_eq!(text(&purchase(&a, "TERM0001", 1, 100).await, 39), "91");
    a.log.until("whatever holds it is reversed").await;
    pg.start_again();
    a.log.until("journal writable again").await;
    signal(&a.child, "-TERM");
    a.log.until("left for the other nodes").await;
    let status = within("node a stopping", a.child.wait()).await.unwrap();
    assert!(status.success(), "{status}");
    let client = cluster::connect(&pg.url()).await.unwrap();
    assert_eq!(cluster::database(&client).await.unwrap().pleas, 1);
}

/// The same refusal, but the node is killed while the database is still away, so that nothing could
/// be left there: with a pleas file, it takes its plea on again when it starts, and the approval is
/// reversed all the same.
#[tokio::test]
async fn a_node_killed_while_the_database_is_away_takes_its_pleas_on_again_when_it_starts() {
    let Some(pg) = Server::start("cluster::pleas_file") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pleas");
    let path = file.to_str().unwrap();
    let flags = [
        "--lease",
        "1s",
        "--terminal-patience",
        "2s",
        "--pleas-file",
        path,
    ];
    let issuer = Issuer::start(spec(), Duration::from_secs(60)).await;
    let mut a = node_with(&pg, "a", &issuer, &flags).await;
    let b = node_with(&pg, "b", &issuer, &flags[..4]).await;
    let approved = purchase(&b, "TERM0001", 1, 100).await;
    assert_eq!(text(&approved, 39), "00");
    pg.kill();
    assert_eq!(text(&purchase(&a, "TERM0001", 1, 100).await, 39), "91");
    a.log.until("whatever holds it is reversed").await;
    // Kept on disk before the 91 went out.
    assert!(
        std::fs::read_to_string(&file)
            .unwrap()
            .contains("\"stan\":1")
    );
    a.child.start_kill().unwrap();
    a.child.wait().await.unwrap();

    pg.start_again();
    let a = node_with(&pg, "a", &issuer, &flags).await;
    let taken = "taking on again the reversals this node admitted";
    assert!(a.log.seen(taken).is_some(), "logged as it started");
    issuer.until_reversed().await;
    let reversals = issuer.of_class(4);
    assert_eq!(reversals.len(), 1);
    assert_eq!(text(&reversals[0], 37), text(&approved, 37));
    within("the pleas file emptied", async {
        while !std::fs::read_to_string(&file)
            .unwrap()
            .contains("\"pleas\":[]")
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// A throw-away PostgreSQL and HAProxy's binary, or `None` (the test says SKIPPED) without either,
/// unless ACQUIRO_REQUIRE_POSTGRES or ACQUIRO_REQUIRE_HAPROXY is set.
fn postgres_and_haproxy(test: &str) -> Option<(Server, &'static str)> {
    let pg = Server::start(test)?;
    let path = "/usr/sbin/haproxy";
    if std::path::Path::new(path).exists() {
        return Some((pg, path));
    }
    assert!(
        std::env::var_os("ACQUIRO_REQUIRE_HAPROXY").is_none(),
        "{test}: ACQUIRO_REQUIRE_HAPROXY is set but HAProxy is not installed (Debian package haproxy)"
    );
    eprintln!("SKIPPED {test}: HAProxy not installed (Debian package haproxy)");
    None
}

/// HAProxy in TCP mode on a free port, to `nodes`, each checked through its /readyz; once it listens.
async fn balance(
    binary: &str,
    dir: &std::path::Path,
    nodes: &[&Switch],
) -> (tokio::process::Child, std::net::SocketAddr) {
    let front = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut cfg = format!(
        "global\n  stats socket {}\n\
         defaults\n  mode tcp\n  timeout connect 1s\n  timeout client 1h\n  timeout server 1h\n\
         frontend terminals\n  bind {front}\n  default_backend nodes\n\
         backend nodes\n  balance roundrobin\n  option httpchk GET /readyz\n  http-check disable-on-404\n\
         default-server inter 200ms fall 1 rise 1 on-marked-down shutdown-sessions\n",
        dir.join("haproxy.sock").display()
    );
    for (i, n) in nodes.iter().enumerate() {
        cfg += &format!(
            "  server node{i} {} check port {}\n",
            n.addr,
            n.admin.port()
        );
    }
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, cfg).unwrap();
    let child = tokio::process::Command::new(binary)
        .arg("-f")
        .arg(&path)
        .arg("-db")
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    within("HAProxy listening", async {
        while tokio::net::TcpStream::connect(front).await.is_err() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    (child, front)
}

/// Each server's state as HAProxy (started by [`balance`] in `dir`) has it: `UP`, `DOWN`, `NOLB` (the
/// check answered 404: no new connection, its sessions kept), in the order of `nodes`.
async fn states(dir: &std::path::Path) -> Vec<String> {
    let mut socket = tokio::net::UnixStream::connect(dir.join("haproxy.sock"))
        .await
        .unwrap();
    socket.write_all(b"show stat\n").await.unwrap();
    let mut csv = String::new();
    socket.read_to_string(&mut csv).await.unwrap();
    // The servers' rows of the backend; the 18th column is the state.
    (csv.lines())
        .filter(|l| l.starts_with("nodes,node"))
        .filter_map(|l| l.split(',').nth(17).map(str::to_owned))
        .collect()
}

/// A node drained behind HAProxy (SIGTERM) answers 404 on /readyz, which HAProxy takes as "drain": no
/// new terminal, and its sessions kept, so an answer still coming reaches its terminal. A 503 would
/// have HAProxy mark it down and cut the session, and the approval would be reversed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_drained_behind_haproxy_keeps_the_sessions_whose_answers_are_coming() {
    let Some((pg, binary)) = postgres_and_haproxy("cluster::drain") else {
        return;
    };
    let issuer = Issuer::start(spec(), Duration::from_secs(60)).await;
    let mut a = node(&pg, "a", &issuer).await;
    let dir = tempfile::tempdir().unwrap();
    let (_haproxy, front) = balance(binary, dir.path(), &[&a]).await;
    let mut t = held_at(front, &issuer, "TERM0001", 1).await;

    sigterm(&a.child);
    a.log.until("draining in_flight").await;
    within("HAProxy draining node a", async {
        while states(dir.path()).await != ["NOLB"] {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    issuer.release();
    assert_eq!(text(&t.answer().await, 39), "00");
    assert!(t.closed().await, "closed once its last answer is out");
    assert!(
        within("node a's exit", a.child.wait())
            .await
            .unwrap()
            .success()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_haproxy_a_node_killed_mid_load_loses_nothing_and_charges_nothing_twice() {
    let Some((pg, binary)) = postgres_and_haproxy("cluster::haproxy") else {
        return;
    };
    let codec = FrameCodec::new(LengthHeader::Binary2);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = sim::IssuerSim::start(listener, spec(), codec, lifecycle_rules());
    let dir = tempfile::tempdir().unwrap();
    let config = quick_repeats(dir.path());
    let flags = ["--lease", "1s", "--response-timeout", "1s"];
    let upstream = issuer.addr.to_string();
    let start = |name: &'static str| {
        let url = pg.url();
        let upstream = upstream.clone();
        let config = config.clone();
        async move {
            let mut extra = vec!["--node", name, "--database", &url, "--config", &config];
            extra.extend(flags);
            let env = [
                ("ACQUIRO_CARD_KEY", CARD_KEY),
                ("RUST_LOG", "warn,switch=info,engine=info"),
            ];
            serve_with(&upstream, &extra, &env).await
        }
    };
    let mut a = start("a").await;
    let b = start("b").await;
    let (_haproxy, front) = balance(binary, dir.path(), &[&a, &b]).await;

    let mut load = sim::Load::new(front, spec(), codec);
    load.terminals = 10;
    load.rate = Some(100.0);
    load.duration = Duration::from_secs(5);
    load.timeout = Duration::from_secs(2);
    load.lifecycle = true;
    let progress = std::sync::Arc::new(sim::Progress::default());
    let run = tokio::spawn(sim::terminals::run(load, progress.clone()));
    // Mid-load: once both nodes have answered some of it.
    within("a share of the load answered", async {
        while sim::Progress::get(&progress.approved) < 100 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    a.child.start_kill().unwrap();
    within("node a killed", a.child.wait()).await.unwrap();
    let run = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the load ends")
        .unwrap();
    // Everything b took over is finished before the books are read.
    idle(b.admin).await;
    let reconciliation = sim::reconcile(&run.outcomes, &issuer.ledger());
    assert!(
        reconciliation.holds(),
        "{} mismatches, {} charged twice: {:?}",
        reconciliation.mismatches.len(),
        reconciliation.double_debits,
        reconciliation.mismatches
    );
    assert!(
        run.outcomes.len() > 300,
        "{} transactions",
        run.outcomes.len()
    );
    assert!(
        sim::Progress::get(&progress.connects) > 10,
        "terminals reconnected through HAProxy"
    );
    // The merchants' settlement, read from both nodes' records, is the issuer's.
    reconciles(&["--database", &pg.url()], &issuer, 10);
}
