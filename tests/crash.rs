//! `kill -9` of the real `acquiro serve` with requests forwarded and unanswered, then a restart on the
//! same journal: every request in doubt is reversed at the issuer, the issuer's net debits equal what
//! the terminals were told, and retransmits after the restart are replayed, never forwarded again.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use iso8583::Message;
use support::issuer::Issuer;
use support::process::{Log, timeline_steps, tranlog};
use support::terminal::{Terminal, text};
use support::{http_get, within};
use wire::{FrameCodec, LengthHeader};

/// Starts the switch on `journal`, logging in `log_format`; returns it with its terminal and admin
/// addresses.
async fn serve(
    journal: &std::path::Path,
    issuer: &Issuer,
    log_format: &str,
) -> (
    tokio::process::Child,
    Log,
    std::net::SocketAddr,
    std::net::SocketAddr,
) {
    let extra = [
        // Nothing times out by itself: only the crash leaves requests without an outcome.
        "--response-timeout",
        "1h",
        "--journal-dir",
        journal.to_str().unwrap(),
        "--log-format",
        log_format,
    ];
    let s = support::process::serve(&issuer.addr.to_string(), &extra).await;
    (s.child, s.log, s.addr, s.admin)
}

/// Net debit per RRN at the issuer: each purchase it approved (answered or not: 555 is approved and
/// held) debits, and its first reversal credits.
fn net_debits(issuer: &Issuer) -> HashMap<String, i64> {
    let mut net: HashMap<String, i64> = HashMap::new();
    let mut reversed = std::collections::HashSet::new();
    for m in issuer.received() {
        let rrn = text(&m, 37);
        match m.mti().class().digit() {
            2 if m.amount().unwrap() % 100 != 51 => *net.entry(rrn).or_default() += 1,
            4 if reversed.insert(rrn.clone()) => *net.entry(rrn).or_default() -= 1,
            _ => {}
        }
    }
    net
}

/// A terminal's retransmit on a new connection: the answer's RC and auth code.
async fn retransmit(
    addr: std::net::SocketAddr,
    spec: &'static iso8583::Spec,
    tid: &str,
    stan: u32,
    amount: u64,
) -> (String, String) {
    let codec = FrameCodec::new(LengthHeader::Binary2);
    let mut t = Terminal::connect(addr, spec, codec, tid).await;
    let answer: Message = t.exchange(&t.purchase(stan, amount)).await;
    (text(&answer, 39), text(&answer, 38))
}

fn count(issuer: &Issuer, class: u8) -> usize {
    issuer.of_class(class).len()
}

#[tokio::test]
async fn kill_9_with_requests_in_flight_then_restart_reverses_them_and_replays_retransmits() {
    let spec = dialects::builtin("iso87ascii").unwrap();
    let issuer = Issuer::start(spec, Duration::from_secs(60)).await;
    let journal = tempfile::tempdir().unwrap();
    let codec = FrameCodec::new(LengthHeader::Binary2);
    let (mut child, _log, addr, _) = serve(journal.path(), &issuer, "human").await;

    let connect = |tid: &'static str| Terminal::connect(addr, spec, codec, tid);
    // Approved, declined, and three whose approvals the issuer holds back (555).
    let mut approved = connect("TERM0001").await;
    assert_eq!(
        text(&approved.exchange(&approved.purchase(1, 100)).await, 39),
        "00"
    );
    let mut declined = connect("TERM0002").await;
    assert_eq!(
        text(&declined.exchange(&declined.purchase(2, 151)).await, 39),
        "51"
    );
    let mut held = Vec::new();
    for (tid, stan) in [("TERM0003", 3), ("TERM0004", 4), ("TERM0005", 5)] {
        let mut t = connect(tid).await;
        t.send(&t.purchase(stan, 555)).await;
        held.push((t, stan));
    }
    within(
        "three held purchases at the issuer",
        issuer.wait_for(|r| r.iter().filter(|m| m.amount() == Some(555)).count() == 3),
    )
    .await;

    child.start_kill().unwrap();
    within("the switch killed", child.wait()).await.unwrap();
    // The issuer's held answers go nowhere now.
    issuer.release();
    assert_eq!(
        count(&issuer, 4),
        0,
        "nothing was reversed before the crash"
    );

    // The restart logs JSON: each line about a transaction names it by its journal id.
    let (mut child, mut log, addr, admin) = serve(journal.path(), &issuer, "json").await;
    // Logged before the listeners open.
    let line = log
        .seen("recovered from the journal")
        .expect("recovery logged");
    assert_eq!(json(line)["fields"]["in_doubt"], 3, "{line}");
    within(
        "three reversals",
        issuer.wait_for(|r| r.iter().filter(|m| m.mti().class().digit() == 4).count() == 3),
    )
    .await;
    let reversed: Vec<String> = issuer.of_class(4).iter().map(|m| text(m, 37)).collect();
    for (_, stan) in &held {
        assert!(reversed.contains(&format!("{stan:012}")), "{reversed:?}");
    }

    // Retransmits after the restart, on new connections: replayed, never forwarded again.
    let forwards = count(&issuer, 2);
    assert_eq!(
        retransmit(addr, spec, "TERM0001", 1, 100).await,
        ("00".into(), "A1B2C3".into())
    );
    assert_eq!(retransmit(addr, spec, "TERM0002", 2, 151).await.0, "51");
    for (tid, stan) in [("TERM0003", 3), ("TERM0004", 4), ("TERM0005", 5)] {
        assert_eq!(
            retransmit(addr, spec, tid, stan, 555).await.0,
            "91",
            "{tid}"
        );
    }
    assert_eq!(count(&issuer, 2), forwards, "no retransmit was forwarded");

    // What the terminals were told: approved for STAN 1 only. The issuer's net debits agree.
    let net = net_debits(&issuer);
    for stan in 1..=5 {
        let expected = i64::from(stan == 1);
        assert_eq!(
            net.get(&format!("{stan:012}")).copied().unwrap_or(0),
            expected,
            "stan {stan}"
        );
    }
    let mut acknowledged = Vec::new();
    for _ in 0..3 {
        let line = log.until("reversal acknowledged").await;
        let span = &json(&line)["span"];
        assert_eq!(span["name"], "txn", "{line}");
        acknowledged.push(span["id"].as_u64().expect("a transaction id"));
    }
    // Counted at recovery, before the listeners opened.
    let (_, metrics) = http_get(admin, "/metrics").await;
    assert!(metrics.contains("acquiro_in_doubt_total 3"), "{metrics}");
    child.start_kill().unwrap();
    within("the switch killed", child.wait()).await.unwrap();
    for line in log.all().await {
        json(&line);
        assert!(
            !line.contains(support::terminal::PAN),
            "card number in the log: {line}"
        );
    }

    // The evidence: the timeline of one in-doubt purchase across the crash, with no card number.
    let dir = journal.path().to_str().unwrap();
    let show = tranlog(&[
        "show",
        "--journal-dir",
        dir,
        "--terminal",
        "TERM0003",
        "--stan",
        "3",
    ]);
    assert!(show.status.success());
    let timeline = String::from_utf8(show.stdout).unwrap();
    let txn: u64 = timeline
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("transaction "))
        .and_then(|id| id.parse().ok())
        .expect("a transaction id");
    assert!(
        acknowledged.contains(&txn),
        "the log names transaction {txn} as the journal does: {acknowledged:?}"
    );
    assert_eq!(
        timeline_steps(&timeline),
        [
            "Received",
            "Forwarded",
            "InDoubt",
            "ReversalQueued",
            "ReversalSent",
            "ReversalAcknowledged",
            "Replayed"
        ],
        "{timeline}"
    );
    assert!(
        timeline.contains(r#""bin":"476173","last4":"0010""#),
        "{timeline}"
    );
    let by_rrn = tranlog(&["show", "--journal-dir", dir, "--rrn", "000000000003"]);
    assert_eq!(String::from_utf8(by_rrn.stdout).unwrap(), timeline);

    let verify = tranlog(&["verify", "--journal-dir", dir]);
    let said = String::from_utf8(verify.stdout).unwrap();
    assert!(verify.status.success(), "{said}");
    assert!(
        said.contains("every checksum, the chain of records and every index are intact"),
        "{said}"
    );
    let export = tranlog(&["export", "--journal-dir", dir, "--format", "jsonl"]);
    let lines = String::from_utf8(export.stdout).unwrap();
    let records = said
        .split(" record(s)")
        .next()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap();
    assert_eq!(lines.lines().count().to_string(), records);
    for text in [&timeline, &lines] {
        assert!(
            !text.contains(support::terminal::PAN),
            "no card number in the journal"
        );
    }
}

/// A JSON log line.
fn json(line: &str) -> serde_json::Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}
