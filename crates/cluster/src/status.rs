//! Every node as `acquiro cluster status` shows it: its lease, what it has in flight and to reverse,
//! any takeover of its work, and how far its records and their indexed evidence go.

use std::time::SystemTime;

use tokio_postgres::Client;

use crate::Error;

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
}

/// Every node, for `acquiro cluster status`.
pub async fn status(client: &Client) -> Result<Vec<NodeStatus>, Error> {
    let rows = client
        .query(
            "SELECT n.node, n.epoch, n.lease_until, n.lease_until > now(), n.in_flight, n.reversals,
                    n.taken_by, n.retired_seq,
                    coalesce((SELECT max(seq) FROM records r WHERE r.node = n.node), 0),
                    n.retired_seq < n.taken_through,
                    coalesce((SELECT seq FROM evidence_marks m WHERE m.node = n.node), 0)
             FROM nodes n ORDER BY n.node",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| NodeStatus {
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
        })
        .collect())
}
