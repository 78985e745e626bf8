//! The real `acquiro serve` process: flags without a config file, metrics checked by promtool, no card
//! data in its logs or its journal's files, a real SIGTERM, `config check`.

mod support;

use std::process::Stdio;
use std::time::Duration;

use support::issuer::Issuer;
use support::pci;
use support::process::{Log, Switch, serve, sigterm, spawn, timeline_steps, tranlog};
use support::terminal::{Terminal, text};
use support::{http_get, within};
use wire::{FrameCodec, LengthHeader};

/// `promtool check metrics` on an exposition; `None` when promtool is not installed (and not required).
fn promtool_check(exposition: &str) -> Option<std::process::Output> {
    use std::io::Write;
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(_) if std::env::var_os("ACQUIRO_REQUIRE_PROMTOOL").is_none() => {
            eprintln!("SKIPPED: promtool not installed (Debian package prometheus)");
            return None;
        }
        Err(e) => panic!("promtool is required: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    Some(child.wait_with_output().unwrap())
}

#[tokio::test]
async fn serve_with_flags_only_then_sigterm_drains_and_exits_zero() {
    let spec = dialects::builtin("iso87ascii").unwrap();
    let issuer = Issuer::start(spec, Duration::from_secs(60)).await;
    let upstream = issuer.addr.to_string();
    let Switch {
        mut child,
        mut log,
        addr,
        admin,
    } = serve(&upstream, &["--response-timeout", "5s"]).await;

    let codec = FrameCodec::new(LengthHeader::Binary2);
    let mut t = Terminal::connect(addr, spec, codec, "TERM0001").await;
    t.send(&t.purchase(1, 555)).await;
    within(
        "forward",
        issuer.wait_for(|r| r.iter().any(|m| m.mti().class().digit() == 2)),
    )
    .await;

    // The forward went out after the sign-on was handled, so the switch reports ready by now.
    assert_eq!(http_get(admin, "/readyz").await.0, 200);
    let (code, metrics) = http_get(admin, "/metrics").await;
    assert_eq!(code, 200);
    if let Some(out) = promtool_check(&metrics) {
        let said = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && said.trim().is_empty(),
            "promtool: {said}"
        );
    }

    // A second terminal, with nothing in flight.
    let mut idle = Terminal::connect(
        addr,
        spec,
        FrameCodec::new(LengthHeader::Binary2),
        "TERM0002",
    )
    .await;
    sigterm(&child);
    // The driver's line (not the signal handler's): the switch is draining by then.
    log.until("draining in_flight").await;
    let (code, body) = http_get(admin, "/readyz").await;
    // 404: draining and nothing else (a balancer keeps its sessions, see the README).
    assert_eq!(code, 404, "not ready while draining");
    assert!(body.contains("listeners: FAILED (draining)"), "{body}");
    // The idle connection is closed at once, so that its terminal goes elsewhere, while the purchase
    // is still held at the issuer (its answer, below, is the issuer's, not a timeout's 91).
    assert!(idle.closed().await);
    let (_, metrics) = http_get(admin, "/metrics").await;
    assert!(
        metrics.contains(r#"acquiro_terminal_closed_total{reason="draining"} 1"#),
        "{metrics}"
    );
    issuer.release();
    let answer = t.answer().await;
    assert_eq!(
        text(&answer, 39),
        "00",
        "the in-flight purchase finished during the grace period"
    );
    // Its connection, too, is closed once its last answer is out.
    assert!(t.closed().await);
    let status = within("exit", child.wait()).await.unwrap();
    assert!(status.success(), "exit status {status}");
    let log = log.all().await;
    let request = t.purchase(1, 555);
    let track = text(&request, 35);
    for line in &log {
        assert!(
            !line.contains(support::terminal::PAN) && !line.contains(&track),
            "card data in the log: {line}"
        );
    }
}

/// Nothing a card carries reaches the journal's files: after a chip purchase approved and one timed
/// out and reversed (each with track 2 and a PIN block), every byte of the journal directory (segments
/// and their indexes) holds no card number, track, PIN block or EMV data, in any form.
#[tokio::test]
async fn no_card_data_reaches_the_journal_files() {
    let spec = dialects::builtin("iso87ascii").unwrap();
    let issuer = Issuer::start(spec, Duration::from_secs(60)).await;
    let journal = tempfile::tempdir().unwrap();
    let dir = journal.path().to_str().unwrap();
    let Switch {
        mut child, addr, ..
    } = serve(
        &issuer.addr.to_string(),
        &["--response-timeout", "300ms", "--journal-dir", dir],
    )
    .await;
    let codec = FrameCodec::new(LengthHeader::Binary2);
    let mut t = Terminal::connect(addr, spec, codec, "TERM0001").await;
    let approved = t.exchange(&pci::chip(t.purchase(1, 100))).await;
    assert_eq!(text(&approved, 39), "00");
    // 777: the issuer never answers; the terminal is told 91 and the issuer gets a reversal.
    assert_eq!(text(&t.exchange(&t.purchase(2, 777)).await, 39), "91");
    issuer.until_reversed().await;
    sigterm(&child);
    let status = within("exit", child.wait()).await.unwrap();
    assert!(status.success(), "exit status {status}");

    let show = tranlog(&[
        "show",
        "--journal-dir",
        dir,
        "--terminal",
        "TERM0001",
        "--stan",
        "2",
    ]);
    let timeline = String::from_utf8(show.stdout).unwrap();
    assert!(timeline.contains("ReversalSent"), "{timeline}");
    let mut files = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let found = pci::card_data_in(&std::fs::read(&path).unwrap());
        assert!(found.is_empty(), "in {}: {found:?}", path.display());
        files += 1;
    }
    assert!(files > 0);
}

/// A second switch started on a journal directory another one writes (a unit started twice, a copied
/// configuration) is refused, naming the process that holds it, before it reads or cuts anything; the
/// first goes on. Once the first has stopped, the directory is free again.
#[tokio::test]
async fn a_second_switch_on_the_same_journal_directory_is_refused() {
    let spec = dialects::builtin("iso87ascii").unwrap();
    let issuer = Issuer::start(spec, Duration::from_secs(60)).await;
    let upstream = issuer.addr.to_string();
    let journal = tempfile::tempdir().unwrap();
    let dir = journal.path().to_str().unwrap();
    let Switch {
        mut child, addr, ..
    } = serve(&upstream, &["--journal-dir", dir]).await;
    let pid = child.id().unwrap();
    let args = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &upstream,
        "--journal-dir",
        dir,
    ];
    let mut second = spawn(&args);
    let mut log = Log::of(&mut second);
    let refused = log.until("in use").await;
    assert!(
        refused.contains(&format!("in use by another process (pid {pid})")),
        "{refused}"
    );
    let status = within("the second switch's end", second.wait())
        .await
        .unwrap();
    assert!(!status.success(), "{status}");

    let codec = FrameCodec::new(LengthHeader::Binary2);
    let mut t = Terminal::connect(addr, spec, codec, "TERM0001").await;
    assert_eq!(text(&t.exchange(&t.purchase(1, 100)).await, 39), "00");
    sigterm(&child);
    assert!(within("exit", child.wait()).await.unwrap().success());
    let again = serve(&upstream, &["--journal-dir", dir]).await;
    let mut t = Terminal::connect(again.addr, spec, codec, "TERM0001").await;
    // The approval the first switch journaled is replayed, not forwarded again.
    assert_eq!(text(&t.exchange(&t.purchase(1, 100)).await, 39), "00");
    assert_eq!(issuer.of_class(2).len(), 1);
}

#[tokio::test]
async fn sigterm_times_out_and_reverses_what_the_grace_period_cuts_off() {
    let spec = dialects::builtin("iso87ascii").unwrap();
    let issuer = Issuer::start(spec, Duration::from_secs(60)).await;
    let journal = tempfile::tempdir().unwrap();
    let dir = journal.path().to_str().unwrap();
    let Switch {
        mut child,
        mut log,
        addr,
        ..
    } = serve(
        &issuer.addr.to_string(),
        &[
            "--response-timeout",
            "60s",
            "--grace-period",
            "1s",
            "--journal-dir",
            dir,
        ],
    )
    .await;
    let codec = FrameCodec::new(LengthHeader::Binary2);
    let mut t = Terminal::connect(addr, spec, codec, "TERM0001").await;
    // 777: the issuer never answers, so only the end of the grace period can finish it.
    t.send(&t.purchase(1, 777)).await;
    within(
        "forward",
        issuer.wait_for(|r| r.iter().any(|m| m.mti().class().digit() == 2)),
    )
    .await;
    sigterm(&child);

    let answer = t.answer().await;
    assert_eq!(text(&answer, 11), "000001");
    assert_eq!(
        text(&answer, 39),
        "91",
        "told it failed, so it must be reversed"
    );
    let forwarded = issuer
        .received()
        .into_iter()
        .find(|m| m.mti().class().digit() == 2)
        .unwrap();
    issuer.until_reversed().await;
    let reversal = issuer
        .received()
        .into_iter()
        .find(|m| m.mti().class().digit() == 4)
        .unwrap();
    assert_eq!(reversal.original_data().map(|o| o.stan), forwarded.stan());
    assert_eq!(text(&reversal, 4), text(&forwarded, 4));
    let status = within("exit", child.wait()).await.unwrap();
    assert!(status.success(), "exit status {status}");
    assert!(log.until("grace period over").await.contains("in_flight=1"));

    let show = tranlog(&[
        "show",
        "--journal-dir",
        dir,
        "--terminal",
        "TERM0001",
        "--stan",
        "1",
    ]);
    let timeline = String::from_utf8(show.stdout).unwrap();
    assert_eq!(
        timeline_steps(&timeline)[..6],
        [
            "Received",
            "Forwarded",
            "TimedOut",
            "Told",
            "ReversalQueued",
            "ReversalSent"
        ],
        "the journal holds the reversal, so a restart repeats it until acknowledged: {timeline}"
    );
}

#[tokio::test]
async fn the_runtime_has_the_workers_configured_else_one_fewer_than_the_cores() {
    let spec = dialects::builtin("iso87ascii").unwrap();
    let issuer = Issuer::start(spec, Duration::from_secs(60)).await;
    let upstream = issuer.addr.to_string();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("acquiro.toml");
    std::fs::write(&config, "workers = 3\n").unwrap();
    let workers = |switch: &Switch| {
        let line = switch.log.seen("runtime started").unwrap();
        line.split("workers=").nth(1).unwrap().trim().to_string()
    };
    let configured = serve(&upstream, &["--config", config.to_str().unwrap()]).await;
    assert_eq!(workers(&configured), "3");
    let default = serve(&upstream, &[]).await;
    let cores = std::thread::available_parallelism().unwrap().get();
    let expected =
        std::env::var("TOKIO_WORKER_THREADS").unwrap_or_else(|_| (cores - 1).max(1).to_string());
    assert_eq!(workers(&default), expected);
}

#[tokio::test]
async fn the_switch_goes_on_when_its_log_is_closed() {
    let spec = dialects::builtin("iso87ascii").unwrap();
    let issuer = Issuer::start(spec, Duration::from_secs(60)).await;
    let Switch {
        child: _child,
        log,
        addr,
        ..
    } = serve(&issuer.addr.to_string(), &[]).await;
    drop(log);
    let codec = FrameCodec::new(LengthHeader::Binary2);
    let mut t = Terminal::connect(addr, spec, codec, "TERM0001").await;
    // Each purchase logs (at debug) into the closed pipe.
    for stan in 1..=3 {
        assert_eq!(text(&t.exchange(&t.purchase(stan, 100)).await, 39), "00");
    }
}

#[tokio::test]
async fn config_check_names_the_key_and_the_reason() {
    let dir = std::env::temp_dir().join(format!("acquiro-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        "[[listeners]]\naddress = \"127.0.0.1:8583\"\n[[issuers]]\nname = \"visa\"\nhosts = [\"127.0.0.1:9583\"]\n",
    )
    .unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[[listeners]]\naddress = \"127.0.0.1:8583\"\n[[issuers]]\nname = \"visa\"\nhosts = [\"127.0.0.1:9583\"]\n[[routes]]\nprefix = \"4\"\nissuer = \"amex\"\n",
    )
    .unwrap();
    let run = |file: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_acquiro"))
            .args(["config", "check"])
            .arg(file)
            .output()
            .unwrap()
    };
    let ok = run(&good);
    assert!(ok.status.success());
    assert!(
        String::from_utf8_lossy(&ok.stdout).contains("ok (1 listener(s), 1 issuer(s), 1 link(s)")
    );
    let sample = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/acquiro.toml");
    assert!(
        run(&sample).status.success(),
        "the documented sample configuration checks"
    );
    let failed = run(&bad);
    assert!(!failed.status.success());
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        stderr.contains("routes[0].issuer: no issuer named \"amex\""),
        "{stderr}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}
