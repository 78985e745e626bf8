//! The settlement of a real run, checked as an acquirer would: `acquiro settlement` on the journal (or
//! the database), and `acquiro settlement reconcile` against the issuer simulator's own settlement.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use super::{http_get, within};

/// An issuer that approves some requests in part and refuses some reversals and advices with 96.
pub fn lifecycle_rules() -> sim::Rules {
    sim::Rules::parse("refuse_share = 0.05\n[[rules]]\nshare = 0.1\naction = \"partial\"\n")
        .unwrap()
}

/// A configuration file in `dir` that repeats refused advices and reversals from 100 ms, for a switch
/// in front of the issuer of [`lifecycle_rules`]: at the default schedule (5 s, doubling) one refused
/// three times in a row is repeated 35 s later, past what [`idle`] waits. Its path, for `--config`.
pub fn quick_repeats(dir: &std::path::Path) -> String {
    let path = dir.join("repeats.toml");
    std::fs::write(
        &path,
        "[reversals]\nbackoff = \"100ms\"\nmax_backoff = \"1s\"\n",
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

/// Waits until the switch at `admin` has nothing in flight and owes issuers nothing: what the books
/// are read after.
pub async fn idle(admin: SocketAddr) {
    within("the switch idle", async {
        loop {
            let (_, m) = http_get(admin, "/metrics").await;
            let idle = [
                "acquiro_in_flight 0",
                "acquiro_saf_depth 0",
                "acquiro_advice_queue_depth 0",
            ]
            .iter()
            .all(|l| m.lines().any(|x| x == *l));
            if idle {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

/// `acquiro settlement …` with `args`: its exit status and standard output.
fn settlement(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_acquiro"))
        .arg("settlement")
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code().is_some_and(|c| c <= 1),
        "settlement {args:?}: {stderr}"
    );
    (out.status.success(), String::from_utf8(out.stdout).unwrap())
}

/// The report on `source` (`--journal-dir DIR` or `--database URL`) owes the merchants, in all, what
/// the issuer settled, and names `terminals` terminals, each of whose batches closed; the reconciliation
/// with the issuer's file finds no difference; and one the issuer settled that the switch never saw is
/// found as such.
pub fn reconciles(source: &[&str], issuer: &sim::IssuerSim, terminals: usize) {
    let ledger = issuer.ledger();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("issuer.csv");
    std::fs::write(&file, ledger.settlement_file()).unwrap();
    let (ok, report) = settlement(source);
    assert!(ok, "{report}");
    let rows: Vec<Vec<&str>> = report
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    let owed: i64 = rows.iter().map(|r| r[8].parse::<i64>().unwrap()).sum();
    assert_eq!(owed, ledger.settlement().values().sum::<i64>(), "{report}");
    assert_eq!(rows.len(), terminals, "{report}");
    assert!(
        rows.iter().all(|r| r[9] != "open"),
        "every batch closed: {report}"
    );
    // The same as JSON; and a business date with no transactions has no rows.
    let mut json = vec!["--format", "json"];
    json.extend(source);
    let (_, text) = settlement(&json);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(rows.len(), terminals, "{text}");
    assert!(
        rows.iter()
            .all(|r| r["net"].is_i64() && r["terminal"].is_string()),
        "{text}"
    );
    let mut other_day = vec!["--date", "2000-01-01"];
    other_day.extend(source);
    assert_eq!(
        settlement(&other_day).1.lines().count(),
        1,
        "the header only"
    );
    let file = file.to_str().unwrap();
    let mut args = vec!["reconcile", "--issuer-file", file];
    args.extend(source);
    let (ok, differences) = settlement(&args);
    assert!(ok, "{differences}");
    assert_eq!(
        differences.lines().count(),
        1,
        "the header only: {differences}"
    );
    // An RRN the issuer settled and the merchants' settlement lacks: the merchant would not be paid.
    std::fs::write(
        file,
        format!("{}999999999999,1000\n", ledger.settlement_file()),
    )
    .unwrap();
    let (ok, differences) = settlement(&args);
    assert!(!ok, "exit 1 on a difference");
    assert!(
        differences.contains("999999999999,not_in_settlement,,1000"),
        "{differences}"
    );
}
