//! The real `acquiro serve` process: flags without a config file, a real SIGTERM, `config check`.

mod support;

use std::process::Stdio;
use std::time::Duration;

use support::issuer::Issuer;
use support::terminal::{Terminal, text};
use support::{http_get, within};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, Command};
use wire::{FrameCodec, LengthHeader};

/// Reads log lines until one contains `needle`; returns it.
async fn line_with(lines: &mut Lines<BufReader<ChildStderr>>, needle: &str) -> String {
    within(needle, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains(needle) {
                return line;
            }
        }
        panic!("log ended before {needle:?}");
    })
    .await
}

fn spawn(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_acquiro"))
        .args(args)
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn serve_with_flags_only_then_sigterm_drains_and_exits_zero() {
    let spec = dialects::builtin("iso87ascii").unwrap();
    let issuer = Issuer::start(spec.clone(), Duration::from_secs(60)).await;
    let upstream = issuer.addr.to_string();
    let mut child = spawn(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &upstream,
        "--admin-listen",
        "127.0.0.1:0",
        "--response-timeout",
        "5s",
    ]);
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr_in = |line: String| -> std::net::SocketAddr {
        let addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("addr="));
        addr.expect("the address is logged").parse().unwrap()
    };
    let addr = addr_in(line_with(&mut lines, "listening for terminals").await);
    let admin = addr_in(line_with(&mut lines, "admin endpoint").await);
    line_with(&mut lines, "link signed on").await;
    assert_eq!(http_get(admin, "/readyz").await.0, 200);

    let codec = FrameCodec::new(LengthHeader::Binary2);
    let mut t = Terminal::connect(addr, spec, codec, "TERM0001").await;
    t.send(&t.purchase(1, 555)).await;
    within(
        "forward",
        issuer.wait_for(|r| r.iter().any(|m| m.mti().class() == 2)),
    )
    .await;

    let pid = child.id().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    line_with(&mut lines, "draining").await;
    let (code, body) = http_get(admin, "/readyz").await;
    assert_eq!(code, 503, "not ready while draining");
    assert!(body.contains("listeners: FAILED (draining)"), "{body}");
    issuer.release();
    let answer = t.answer().await;
    assert_eq!(
        text(&answer, 39),
        "00",
        "the in-flight purchase finished during the grace period"
    );
    let status = within("exit", child.wait()).await.unwrap();
    assert!(status.success(), "exit status {status}");
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
