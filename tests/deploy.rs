//! deploy/ against the switch: its configurations pass `config check`, its dashboard and alerts use only
//! metrics of the contract (specs/metrics.md) and cover what an operator watches, and a real Prometheus
//! server scrapes a running switch and loads the alert rules.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use support::issuer::Issuer;
use support::process::{Switch, serve};
use support::terminal::{Terminal, text};
use support::{http_get, within};
use wire::{FrameCodec, LengthHeader};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every `acquiro_…` metric name in `text` (histogram series named by their metric).
fn metrics_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("acquiro_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        rest = &tail[end..];
        if rest.starts_with(':') {
            continue; // a recording rule's name (level:metric:operations)
        }
        let name = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        names.insert(name.to_string());
    }
    names
}

#[test]
fn dashboards_and_alerts_use_only_metrics_of_the_contract() {
    let contract = metrics_in(&read("specs/metrics.md"));
    let dashboard = read("deploy/grafana/dashboards/acquiro.json");
    let json: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let panels = json["panels"].as_array().unwrap();
    let exprs: String = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap())
        .map(|t| t["expr"].as_str().unwrap().to_string() + "\n")
        .collect();
    for (file, used) in [
        ("dashboard", metrics_in(&exprs)),
        ("alerts", metrics_in(&read("deploy/prometheus/alerts.yml"))),
    ] {
        let unknown: Vec<_> = used.difference(&contract).collect();
        assert!(
            unknown.is_empty(),
            "{file} uses metrics not in specs/metrics.md: {unknown:?}"
        );
    }
    // What the operator watches: approval rate and RC mix, latency per issuer, timeouts, SAF depth and
    // age, duplicates, links, connections, the journal.
    for needed in [
        "acquiro_responses_total",
        "acquiro_upstream_latency_seconds",
        "acquiro_request_duration_seconds",
        "acquiro_timeouts_total",
        "acquiro_saf_depth",
        "acquiro_saf_oldest_age_seconds",
        "acquiro_duplicates_total",
        "acquiro_link_up",
        "acquiro_terminal_connections",
        "acquiro_journal_sync_seconds",
    ] {
        assert!(
            metrics_in(&exprs).contains(needed),
            "no panel shows {needed}"
        );
    }
}

#[test]
fn every_configuration_in_deploy_passes_config_check() {
    let dir = tempfile::tempdir().unwrap();
    // The Kubernetes ConfigMaps carry the file indented under `acquiro.toml: |`.
    let mut files = vec![
        repo("deploy/acquiro.toml"),
        repo("deploy/compose/acquiro.toml"),
    ];
    for (i, map) in [
        "deploy/k8s/configmap.yaml",
        "deploy/k8s/cluster/configmap.yaml",
    ]
    .iter()
    .enumerate()
    {
        let embedded: String = read(map)
            .split("acquiro.toml: |\n")
            .nth(1)
            .unwrap()
            .lines()
            .map(|l| l.strip_prefix("    ").unwrap_or(l).to_string() + "\n")
            .collect();
        let from_configmap = dir.path().join(format!("configmap{i}.toml"));
        std::fs::write(&from_configmap, embedded).unwrap();
        files.push(from_configmap);
    }
    for file in files {
        // What a cluster node takes from its environment (deploy/compose.yaml, deploy/k8s/cluster).
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_acquiro"))
            .args(["config", "check"])
            .arg(&file)
            .env("ACQUIRO_NODE", "a")
            .env("ACQUIRO_DATABASE_URL", "postgres://acquiro@db/acquiro")
            .env("ACQUIRO_CARD_KEY", "00112233445566778899aabbccddeeff")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Asks Prometheus's API `path` until `answer` finds what it waits for. Polled: Prometheus scrapes and
/// evaluates on its own clock and signals neither.
async fn poll<T>(
    web: std::net::SocketAddr,
    path: &str,
    answer: impl Fn(&serde_json::Value) -> Option<T>,
) -> T {
    within(path, async {
        loop {
            if tokio::net::TcpStream::connect(web).await.is_ok() {
                let (_, body) = http_get(web, path).await;
                if let Some(found) = serde_json::from_str(&body).ok().and_then(|j| answer(&j)) {
                    return found;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
}

/// A free local port (bound, then released for the server to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn a_real_prometheus_scrapes_the_switch_and_loads_the_alert_rules() {
    if std::process::Command::new("prometheus")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("ACQUIRO_REQUIRE_PROMTOOL").is_none(),
            "prometheus is required (Debian package prometheus)"
        );
        eprintln!("SKIPPED: prometheus not installed (Debian package prometheus)");
        return;
    }
    let spec = dialects::builtin("iso87ascii").unwrap();
    let issuer = Issuer::start(spec, Duration::from_secs(60)).await;
    let upstream = issuer.addr.to_string();
    // The log is kept open: the switch writes to it.
    let Switch {
        mut child,
        log: _log,
        addr,
        admin,
    } = serve(&upstream, &[]).await;
    let codec = FrameCodec::new(LengthHeader::Binary2);
    let mut t = Terminal::connect(addr, spec, codec, "TERM0001").await;
    assert_eq!(text(&t.exchange(&t.purchase(1, 100)).await, 39), "00");

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             rule_files: [{}]\n\
             scrape_configs:\n  - job_name: acquiro\n    static_configs: [{{targets: ['{admin}']}}]\n",
            repo("deploy/prometheus/alerts.yml").display()
        ),
    )
    .unwrap();
    let web = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut prometheus = tokio::process::Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let requests = poll(web, "/api/v1/query?query=acquiro_requests_total", |json| {
        json["data"]["result"]
            .as_array()
            .filter(|r| !r.is_empty())
            .cloned()
    })
    .await;
    assert_eq!(requests[0]["metric"]["mti"], "0200", "{requests:?}");
    assert_eq!(requests[0]["value"][1], "1", "{requests:?}");

    // Every rule of deploy/prometheus/alerts.yml loaded and evaluated without error.
    let groups = poll(web, "/api/v1/rules", |json| {
        let groups = json["data"]["groups"].as_array()?;
        let evaluated = groups
            .iter()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .all(|r| r["health"] != "unknown");
        evaluated.then(|| groups.clone())
    })
    .await;
    let rules: Vec<_> = groups
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    let file = read("deploy/prometheus/alerts.yml");
    let declared = file.matches("- record:").count() + file.matches("- alert:").count();
    assert_eq!(rules.len(), declared);
    for rule in rules {
        assert_eq!(rule["health"], "ok", "{rule}");
    }
    prometheus.start_kill().unwrap();
    child.start_kill().unwrap();
}
