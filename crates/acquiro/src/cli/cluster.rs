//! `acquiro cluster status`: the database (whether a synchronous standby keeps what it commits), the
//! nodes on it, their leases, what each holds, and any takeover under way.

use std::process::ExitCode;
use std::time::SystemTime;

use clap::{Args, Subcommand};
use cluster::Standbys;

#[derive(Debug, Subcommand)]
pub(crate) enum ClusterCommand {
    /// Every node: its epoch and lease, what it has in flight and in its reversal queue (as its last
    /// renewal said), its last record, how far its records are copied to the search indexes, how many
    /// of its database connections are there, and who took its work over.
    Status(StatusArgs),
}

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// The database every node writes to (cluster.database; also ACQUIRO_DATABASE_URL).
    #[arg(long, env = "ACQUIRO_DATABASE_URL")]
    database: String,
}

pub(crate) fn run(command: ClusterCommand) -> anyhow::Result<ExitCode> {
    let ClusterCommand::Status(args) = command;
    let (database, nodes) = super::tranlog::with_database(&args.database, async |client| {
        Ok((
            cluster::database(client).await?,
            cluster::status(client).await?,
        ))
    })?;
    println!(
        "database: PostgreSQL {}, schema version {}; {}",
        database.server_version,
        database.schema_version,
        standbys(&database)
    );
    println!(
        "{:<16} {:>6}  {:<22} {:>9} {:>9} {:>10} {:>10} {:>10} {:>9}  taken over by",
        "node",
        "epoch",
        "lease",
        "in flight",
        "reversals",
        "last seq",
        "searchable",
        "handed on",
        "connected"
    );
    let now = SystemTime::now();
    for n in &nodes {
        let lease = match (n.lease_live, n.lease_until.duration_since(now)) {
            (true, Ok(left)) => format!("live, {}ms left", left.as_millis()),
            (true, Err(_)) => "live".into(),
            (false, _) => {
                let ago = now.duration_since(n.lease_until).unwrap_or_default();
                format!("LAPSED {}s ago", ago.as_secs())
            }
        };
        let taken = match (&n.taken_by, n.taking_over) {
            (Some(by), true) => format!("{by} (TAKEOVER UNDER WAY)"),
            (Some(by), false) => by.clone(),
            (None, _) => "-".into(),
        };
        println!(
            "{:<16} {:>6}  {:<22} {:>9} {:>9} {:>10} {:>10} {:>10} {:>9}  {taken}",
            n.node,
            n.epoch,
            lease,
            n.in_flight,
            n.reversals,
            n.last_seq,
            n.indexed_seq,
            n.retired_seq,
            format!("{} of {}", n.connections, cluster::Purpose::ALL.len())
        );
    }
    Ok(ExitCode::SUCCESS)
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
