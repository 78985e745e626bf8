//! What `acquiro cluster status` shows: the database (its version, schema and synchronous standbys),
//! and every node (its lease, what it has in flight and to reverse, any takeover of its work, and how
//! far its records and their indexed evidence go).

use std::time::SystemTime;

use tokio_postgres::Client;

use crate::Error;
use crate::store;

/// A node as `acquiro cluster status` shows it.
#[derive(Debug, Clone)]
pub struct NodeStatus {
    pub node: String,
    pub epoch: i64,
    pub lease_until: SystemTime,
    pub lease_live: bool,
    pub in_flight: i32,
    pub reversals: i32,
    pub taken_by: Option<String>,
    /// A takeover of its work is under way (the taker's records of it are not committed yet).
    pub taking_over: bool,
    pub retired_seq: i64,
    pub last_seq: i64,
    /// The node's rows up to this one are in the indexed evidence copy (see `evidence`).
    pub indexed_seq: i64,
    /// How many of its connections ([`crate::Purpose::ALL`]) the database holds now, found by their names in
    /// `pg_stat_activity`: a node whose lease lapsed with its connections still there is paused or cut
    /// off rather than gone.
    pub connections: usize,
    /// The STANs it numbers its upstream messages with (schema version 7; none before its first join
    /// there, or once a newcomer took its block after its lease lapsed).
    pub stans: Option<engine::Stans>,
}

/// Every node, for `acquiro cluster status`.
pub async fn status(client: &Client) -> Result<Vec<NodeStatus>, Error> {
    let named =
        "SELECT application_name FROM pg_stat_activity WHERE application_name LIKE 'acquiro %'";
    let connected: Vec<String> = client
        .query(named, &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let rows = client
        .query(
            "SELECT n.node, n.epoch, n.lease_until, n.lease_until > now(), n.in_flight, n.reversals,
                    n.taken_by, n.retired_seq,
                    coalesce((SELECT max(seq) FROM records r WHERE r.node = n.node), 0),
                    n.retired_seq < n.taken_through,
                    coalesce((SELECT seq FROM evidence_marks m WHERE m.node = n.node), 0),
                    -- Read by name from the row: a database not yet migrated to version 7 has none.
                    (to_jsonb(n) ->> 'stan_block')::integer
             FROM nodes n ORDER BY n.node",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| NodeStatus {
            connections: (store::names_of(r.get(0)).iter())
                .filter(|name| connected.contains(name))
                .count(),
            node: r.get(0),
            epoch: r.get(1),
            lease_until: r.get(2),
            lease_live: r.get(3),
            in_flight: r.get(4),
            reversals: r.get(5),
            taken_by: r.get(6),
            retired_seq: r.get(7),
            last_seq: r.get(8),
            taking_over: r.get(9),
            indexed_seq: r.get(10),
            stans: (r.get::<_, Option<i32>>(11)).map(|b| engine::Stans::block(b as u32)),
        })
        .collect())
}

/// The database itself, as `acquiro cluster status` shows it above the nodes.
#[derive(Debug, Clone)]
pub struct DatabaseStatus {
    pub server_version: String,
    /// The schema version its migrations reached.
    pub schema_version: i32,
    /// `synchronous_standby_names`: empty when a commit waits for no standby, so that a lost primary
    /// can take its last commits (and what terminals were told of them) with it.
    pub synchronous_standby_names: String,
    /// Standbys streaming as synchronous ones now (`pg_stat_replication`).
    pub synchronous_standbys: i64,
    /// Standbys whose state this role may not read (it lacks `pg_monitor`).
    pub standbys_unreadable: i64,
    /// Pleas nodes left as they ended, or held by a node that lapsed, not settled yet (schema version
    /// 9; none before it). Not those a live node holds while it waits out its terminals' patience.
    pub pleas: i64,
}

/// What keeps a commit through the loss of the primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standbys {
    /// `synchronous_standby_names` is empty: a lost primary may take its last commits with it.
    NoneConfigured,
    /// One is configured and none streams: every commit waits.
    NotStreaming,
    /// The role may not read the standbys' state (it lacks `pg_monitor`).
    Unreadable,
    /// This many stream as synchronous standbys.
    Streaming(i64),
}

impl DatabaseStatus {
    pub fn standbys(&self) -> Standbys {
        match (
            self.synchronous_standby_names.is_empty(),
            self.synchronous_standbys,
        ) {
            (true, _) => Standbys::NoneConfigured,
            (false, 0) if self.standbys_unreadable > 0 => Standbys::Unreadable,
            (false, 0) => Standbys::NotStreaming,
            (false, n) => Standbys::Streaming(n),
        }
    }
}

/// The database's version, schema, synchronous standbys and pleas, for `acquiro cluster status`.
pub async fn database(client: &Client) -> Result<DatabaseStatus, Error> {
    let row = client
        .query_one(
            "SELECT current_setting('server_version'),
                    (SELECT coalesce(max(version), 0) FROM acquiro_schema),
                    current_setting('synchronous_standby_names'),
                    (SELECT count(*) FROM pg_stat_replication WHERE sync_state IN ('sync', 'quorum')),
                    (SELECT count(*) FROM pg_stat_replication WHERE sync_state IS NULL)",
            &[],
        )
        .await?;
    let schema_version: i32 = row.get(1);
    // A database not yet migrated to version 9 (its nodes of the previous release still running) has
    // no table to count.
    let pleas = match schema_version {
        9.. => client
            .query_one(
                "SELECT count(*) FROM pleas p WHERE NOT EXISTS (
                     SELECT 1 FROM nodes n WHERE n.node = p.left_by AND p.taken_by = p.left_by
                         AND n.epoch = p.taken_epoch AND n.lease_until > now())",
                &[],
            )
            .await?
            .get(0),
        _ => 0,
    };
    Ok(DatabaseStatus {
        server_version: row.get(0),
        schema_version,
        synchronous_standby_names: row.get(2),
        synchronous_standbys: row.get(3),
        standbys_unreadable: row.get(4),
        pleas,
    })
}
