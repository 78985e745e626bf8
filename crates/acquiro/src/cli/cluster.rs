//! `acquiro cluster status`: the database (whether a synchronous standby keeps what it commits), the
//! nodes on it, their leases, what each holds, and any takeover under way.

use std::process::ExitCode;
use std::time::SystemTime;

use clap::{Args, Subcommand};
use cluster::Standbys;

#[derive(Subcommand)]
pub(crate) enum ClusterCommand {
    /// Every node: its epoch and lease, what it has in flight and in its reversal queue (as its last
    /// renewal said), its last record, how far its records are copied to the search indexes, how many
    /// of its database connections are there, and who took its work over.
    Status(StatusArgs),
}

#[derive(Args)]
pub(crate) struct StatusArgs {
    /// The database every node writes to (cluster.database; also ACQUIRO_DATABASE_URL).
    #[arg(long, env = "ACQUIRO_DATABASE_URL")]
    database: String,
    /// One JSON document instead of the table, for scripts: the same facts, with each lease's time
    /// left in milliseconds (negative once it lapsed).
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(command: ClusterCommand) -> anyhow::Result<ExitCode> {
    let ClusterCommand::Status(args) = command;
    let (database, nodes) = super::tranlog::with_database(&args.database, async |client| {
        Ok((
            cluster::database(client).await?,
            cluster::status(client).await?,
        ))
    })?;
    let now = SystemTime::now();
    if args.json {
        outln!("{}", as_json(&database, &nodes, now))?;
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "database: PostgreSQL {}, schema version {}; {}; {} plea(s) waiting",
        database.server_version,
        database.schema_version,
        standbys(&database),
        database.pleas
    )?;
    outln!(
        "{:<16} {:>6}  {:<22} {:>9} {:>9} {:>10} {:>10} {:>10} {:>9}  {:<13}  taken over by",
        "node",
        "epoch",
        "lease",
        "in flight",
        "reversals",
        "last seq",
        "searchable",
        "handed on",
        "connected",
        "stans"
    )?;
    for n in &nodes {
        let left = lease_left_ms(n, now);
        let lease = match (n.lease_live, left) {
            (true, 0..) => format!("live, {left}ms left"),
            (true, _) => "live".into(),
            (false, _) => format!("LAPSED {}s ago", (-left).max(0) / 1000),
        };
        let taken = match (&n.taken_by, n.taking_over) {
            (Some(by), true) => format!("{by} (TAKEOVER UNDER WAY)"),
            (Some(by), false) => by.clone(),
            (None, _) => "-".into(),
        };
        let stans = n.stans.map_or_else(|| "-".into(), |s| s.to_string());
        outln!(
            "{:<16} {:>6}  {:<22} {:>9} {:>9} {:>10} {:>10} {:>10} {:>9}  {stans:<13}  {taken}",
            n.node,
            n.epoch,
            lease,
            n.in_flight,
            n.reversals,
            n.last_seq,
            n.indexed_seq,
            n.retired_seq,
            format!("{} of {}", n.connections, cluster::Purpose::ALL.len())
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The time left on `n`'s lease by this machine's clock, in milliseconds; negative once it lapsed.
/// (Whether it is live is the database's word, by the database's clock.)
fn lease_left_ms(n: &cluster::NodeStatus, now: SystemTime) -> i64 {
    match n.lease_until.duration_since(now) {
        Ok(left) => left.as_millis() as i64,
        Err(ago) => -(ago.duration().as_millis() as i64),
    }
}

/// The status as one JSON document, for scripts.
fn as_json(
    database: &cluster::DatabaseStatus,
    nodes: &[cluster::NodeStatus],
    now: SystemTime,
) -> serde_json::Value {
    let standbys = match database.standbys() {
        Standbys::NoneConfigured => "none configured",
        Standbys::NotStreaming => "none streaming",
        Standbys::Unreadable => "not readable by this role",
        Standbys::Streaming(_) => "streaming",
    };
    let nodes: Vec<serde_json::Value> = (nodes.iter())
        .map(|n| {
            serde_json::json!({
                "node": n.node,
                "epoch": n.epoch,
                "lease_live": n.lease_live,
                "lease_left_ms": lease_left_ms(n, now),
                "in_flight": n.in_flight,
                "reversals": n.reversals,
                "last_seq": n.last_seq,
                "searchable_seq": n.indexed_seq,
                "handed_on_seq": n.retired_seq,
                "connections": n.connections,
                "taken_over_by": n.taken_by,
                "stans": n.stans.map(|s| serde_json::json!({"first": s.first, "last": s.last})),
                "takeover_under_way": n.taking_over,
            })
        })
        .collect();
    serde_json::json!({
        "database": {
            "server_version": database.server_version,
            "schema_version": database.schema_version,
            "synchronous_standby_names": database.synchronous_standby_names,
            "synchronous_standbys": standbys,
            "synchronous_standbys_streaming": database.synchronous_standbys,
            "pleas": database.pleas,
        },
        "nodes": nodes,
    })
}

/// Whether a commit the nodes were told of survives the loss of the primary: a commit waits for a
/// synchronous standby only when `synchronous_standby_names` names one, and goes through only while
/// one streams.
fn standbys(d: &cluster::DatabaseStatus) -> String {
    let names = &d.synchronous_standby_names;
    match d.standbys() {
        Standbys::NoneConfigured => {
            "NO SYNCHRONOUS STANDBY: a lost primary may take its last commits with it".into()
        }
        Standbys::NotStreaming => format!(
            "NO SYNCHRONOUS STANDBY STREAMING: commits wait for one (synchronous_standby_names = '{names}')"
        ),
        Standbys::Unreadable => format!(
            "synchronous standbys not readable by this role (grant it pg_monitor); synchronous_standby_names = '{names}'"
        ),
        Standbys::Streaming(n) => format!("{n} synchronous standby(s) streaming"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn database(names: &str, streaming: i64, unreadable: i64) -> cluster::DatabaseStatus {
        cluster::DatabaseStatus {
            server_version: "15.14".into(),
            schema_version: 6,
            synchronous_standby_names: names.into(),
            synchronous_standbys: streaming,
            standbys_unreadable: unreadable,
            pleas: 2,
        }
    }

    #[test]
    fn the_json_status_gives_each_nodes_lease_and_work() {
        let now = SystemTime::now();
        let node = |name: &str, until: SystemTime, live: bool, taken_by: Option<&str>| {
            cluster::NodeStatus {
                node: name.into(),
                epoch: 2,
                lease_until: until,
                lease_live: live,
                in_flight: 3,
                reversals: 1,
                taken_by: taken_by.map(Into::into),
                taking_over: false,
                retired_seq: 7,
                last_seq: 9,
                indexed_seq: 8,
                connections: 4,
                stans: live.then(|| engine::Stans::block(1)),
            }
        };
        let second = std::time::Duration::from_secs(1);
        let nodes = [
            node("a", now - 5 * second, false, Some("b")),
            node("b", now + 2 * second, true, None),
        ];
        let json = as_json(&database("*", 1, 0), &nodes, now);
        assert_eq!(json["database"]["synchronous_standbys"], "streaming");
        assert_eq!(json["database"]["schema_version"], 6);
        assert_eq!(json["database"]["pleas"], 2);
        let (a, b) = (&json["nodes"][0], &json["nodes"][1]);
        assert_eq!(
            (a["node"].as_str(), a["lease_live"].as_bool()),
            (Some("a"), Some(false))
        );
        assert_eq!(a["lease_left_ms"], -5000);
        assert_eq!(a["taken_over_by"], "b");
        assert_eq!(b["lease_left_ms"], 2000);
        assert!(b["taken_over_by"].is_null());
        assert!(a["stans"].is_null(), "its block taken");
        assert_eq!(
            b["stans"],
            serde_json::json!({"first": 100_000, "last": 199_999})
        );
        for (key, value) in [
            ("in_flight", 3),
            ("reversals", 1),
            ("last_seq", 9),
            ("searchable_seq", 8),
            ("handed_on_seq", 7),
            ("connections", 4),
        ] {
            assert_eq!(b[key], value, "{key}");
        }
    }

    #[test]
    fn a_missing_or_stalled_synchronous_standby_is_said_in_capitals() {
        assert!(standbys(&database("", 0, 0)).starts_with("NO SYNCHRONOUS STANDBY:"));
        assert!(standbys(&database("*", 0, 0)).starts_with("NO SYNCHRONOUS STANDBY STREAMING"));
        assert!(standbys(&database("*", 0, 1)).contains("grant it pg_monitor"));
        assert_eq!(
            standbys(&database("ANY 1 (s1, s2)", 2, 0)),
            "2 synchronous standby(s) streaming"
        );
    }
}
