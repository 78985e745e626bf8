//! Two processes under one node name (configured alike by mistake) would fence each other in turn: each
//! join raises the epoch, the other exits fenced, its supervisor starts it again, and so on, each time
//! cutting the other's terminals. A joining process therefore tells a live namesake from a predecessor
//! going away, by the namesake's connections and whether it renews its lease.

use std::time::Duration;

use tokio_postgres::Client;

use crate::Error;

/// How often the namesake's lease is read while it may be going away.
const POLL: Duration = Duration::from_millis(100);

/// Returns once no other process holds `node`'s name, or [`Error::NameInUse`] once one shows it is
/// alive. A holder counts while its lease is live and one of its connections (named as `node`'s, see
/// `names`; the first, for commits, from the start of its own join) is in `pg_stat_activity`. A
/// predecessor killed or stopped closes its connections within moments; one paused or cut off stops
/// renewing, and its lease lapses (joining then fences it). A holder that renews its lease
/// meanwhile is alive. A node's connections take their names whatever the connection string says, so
/// that none hides them. A session's `application_name` is shown to every role, its address only to
/// the same role (or `pg_read_all_stats`).
pub(super) async fn refuse_a_live_namesake(client: &Client, node: &str) -> Result<(), Error> {
    let names = super::names::of(node);
    let mut first_seen: Option<i64> = None;
    loop {
        let row = client
            .query_opt(
                "SELECT (extract(epoch FROM n.lease_until) * 1000)::bigint,
                        CASE WHEN a.client_port = -1 THEN 'a Unix socket'
                             ELSE coalesce(host(a.client_addr), 'an address hidden from this role') END
                 FROM nodes n
                 JOIN pg_stat_activity a ON a.application_name = ANY ($2) AND a.pid <> pg_backend_pid()
                 WHERE n.node = $1 AND n.lease_until > now()
                 LIMIT 1",
                &[&node, &names],
            )
            .await?;
        let Some(row) = row else {
            return Ok(());
        };
        let (until, from): (i64, String) = (row.get(0), row.get(1));
        match first_seen {
            None => {
                tracing::info!(
                    node,
                    from,
                    "waiting for the process last under this name to go away or its lease to lapse"
                );
                first_seen = Some(until);
            }
            Some(first) if until > first => {
                return Err(Error::NameInUse {
                    node: node.to_owned(),
                    from,
                });
            }
            Some(_) => {}
        }
        tokio::time::sleep(POLL).await;
    }
}
