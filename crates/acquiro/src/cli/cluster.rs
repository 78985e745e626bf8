//! `acquiro cluster status`: the nodes on one database, their leases, what each holds, and any
//! takeover under way.

use std::process::ExitCode;
use std::time::SystemTime;

use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub(crate) enum ClusterCommand {
    /// Every node: its epoch and lease, what it has in flight and in its reversal queue (as its last
    /// renewal said), its last record, how far its records are copied to the search indexes, and who
    /// took its work over.
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
    let nodes = super::tranlog::with_database(&args.database, async |client| {
        Ok(cluster::status(client).await?)
    })?;
    println!(
        "{:<16} {:>6}  {:<22} {:>9} {:>9} {:>10} {:>10} {:>10}  taken over by",
        "node", "epoch", "lease", "in flight", "reversals", "last seq", "searchable", "handed on"
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
            "{:<16} {:>6}  {:<22} {:>9} {:>9} {:>10} {:>10} {:>10}  {taken}",
            n.node,
            n.epoch,
            lease,
            n.in_flight,
            n.reversals,
            n.last_seq,
            n.indexed_seq,
            n.retired_seq
        );
    }
    Ok(ExitCode::SUCCESS)
}
