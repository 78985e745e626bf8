//! The real `acquiro` binary as a child process, and its log.

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, Command};

use super::within;

/// The process's log on stderr, every line kept for the checks at the end.
pub struct Log {
    lines: Lines<BufReader<ChildStderr>>,
    seen: Vec<String>,
}

impl Log {
    pub fn of(child: &mut Child) -> Log {
        let stderr = child.stderr.take().unwrap();
        Log {
            lines: BufReader::new(stderr).lines(),
            seen: Vec::new(),
        }
    }

    /// Reads lines until one contains `needle`; returns it.
    pub async fn until(&mut self, needle: &str) -> String {
        within(needle, async {
            while let Some(line) = self.lines.next_line().await.unwrap() {
                self.seen.push(line.clone());
                if line.contains(needle) {
                    return line;
                }
            }
            panic!("log ended before {needle:?}");
        })
        .await
    }

    /// A line read so far that contains `needle`.
    pub fn seen(&self, needle: &str) -> Option<&str> {
        self.seen
            .iter()
            .find(|l| l.contains(needle))
            .map(String::as_str)
    }

    /// Every line, to the end of the output.
    pub async fn all(mut self) -> Vec<String> {
        while let Some(line) = self.lines.next_line().await.unwrap() {
            self.seen.push(line);
        }
        self.seen
    }
}

/// `acquiro <args>` with its log on a pipe, killed if the test ends first.
pub fn spawn(args: &[&str]) -> Child {
    spawn_with(args, &[])
}

/// [`spawn`] with environment variables (RUST_LOG among them: a process under load whose log is not
/// read must log little, or it waits on the full pipe).
pub fn spawn_with(args: &[&str], env: &[(&str, &str)]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_acquiro"))
        .args(args)
        .stderr(Stdio::piped())
        // Everything the switch can log, for the check that no card data reaches it.
        .env("RUST_LOG", "debug")
        .envs(env.iter().copied())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// The address a log line names (`addr=…`, or `"addr"` among the fields of a JSON line).
pub fn addr_in(line: String) -> std::net::SocketAddr {
    let addr = match serde_json::from_str::<serde_json::Value>(&line) {
        Ok(json) => json["fields"]["addr"].as_str().map(str::to_string),
        Err(_) => line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("addr="))
            .map(str::to_string),
    };
    addr.expect("the address is logged").parse().unwrap()
}

/// A running `acquiro serve` with its log, its terminal listener and its admin endpoint.
pub struct Switch {
    pub child: Child,
    pub log: Log,
    pub addr: std::net::SocketAddr,
    pub admin: std::net::SocketAddr,
}

/// `acquiro serve` on local ports against the issuer at `upstream`, with `extra` flags; returns once
/// its listeners are open and a link is signed on.
pub async fn serve(upstream: &str, extra: &[&str]) -> Switch {
    serve_with(upstream, extra, &[]).await
}

/// [`serve`] with environment variables.
pub async fn serve_with(upstream: &str, extra: &[&str], env: &[(&str, &str)]) -> Switch {
    let mut args = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        upstream,
        "--admin-listen",
        "127.0.0.1:0",
    ];
    args.extend(extra);
    let mut child = spawn_with(&args, env);
    let mut log = Log::of(&mut child);
    let addr = addr_in(log.until("listening for terminals").await);
    let admin = addr_in(log.until("admin endpoint").await);
    log.until("link signed on").await;
    Switch {
        child,
        log,
        addr,
        admin,
    }
}

/// `acquiro tranlog <args>`, run to its end.
/// Sends SIGTERM to `child`: it drains (tokio's `start_kill` would send SIGKILL).
pub fn sigterm(child: &Child) {
    signal(child, "-TERM");
}

/// Sends `child` the signal `name` (`-STOP`: it stops in its tracks, as on a frozen host; `-CONT`).
pub fn signal(child: &Child, name: &str) {
    let pid = child.id().expect("still running").to_string();
    let status = std::process::Command::new("kill")
        .args([name, &pid])
        .status()
        .unwrap();
    assert!(status.success(), "kill {name}");
}

pub fn tranlog(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_acquiro"))
        .arg("tranlog")
        .args(args)
        .output()
        .unwrap()
}

/// The steps of one transaction's timeline as `acquiro tranlog show` prints it.
pub fn timeline_steps(timeline: &str) -> Vec<&str> {
    timeline
        .lines()
        .skip(1)
        .filter_map(|l| l.split('"').nth(1))
        .collect()
}
