//! Taking over the work of a node whose lease lapsed, and waiting while another node does.

use std::time::Duration;

use engine::Record;
use tokio_postgres::Client;

use super::{Store, in_order_after};
use crate::Error;

/// A lapsed node's work, taken over: its records after what earlier takeovers handed on, up to
/// `through`.
#[derive(Debug)]
pub struct Takeover {
    pub node: String,
    pub through: u64,
    pub records: Vec<Record>,
}

/// Waits while a live node is taking `node`'s work over, so that the node and its taker never act on
/// the same work.
pub(super) async fn wait_for_takeover(client: &Client, node: &str) -> Result<(), Error> {
    loop {
        let taker: Option<String> = client
            .query_opt(
                "SELECT y.taken_by FROM nodes y JOIN nodes t ON t.node = y.taken_by
                 WHERE y.node = $1 AND y.retired_seq < y.taken_through
                   AND t.lease_until > now() AND t.epoch = y.taken_epoch",
                &[&node],
            )
            .await?
            .map(|r| r.get(0));
        let Some(taker) = taker else {
            return Ok(());
        };
        tracing::info!(
            node,
            taker,
            "waiting for the takeover of this node's work to end"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

impl Store {
    /// Takes over the work of one node whose lease lapsed, if there is one no live node is taking over
    /// already: its epoch is raised in the same transaction (it is fenced: nothing more of it commits),
    /// then its records after what earlier takeovers handed on are read. The work is this node's once
    /// its own records of it commit with `retire` naming the node (see [`Store::commit`]); if this node
    /// dies first, the takeover lapses with it and another node (or the node itself) does it again.
    ///
    /// The transaction holds the lapsed node's row locked from the statement that picks it to the
    /// commit, and other nodes pass a locked row by. If this node stops between two of its statements
    /// (paused, or its connection gone dark) for longer than `idle`, the database ends the transaction
    /// and closes the session, so that another node takes the work over; otherwise the lock would stay
    /// until TCP gave up on the connection, hours later for a frozen host.
    pub async fn take_over(&mut self, idle: Duration) -> Result<Option<Takeover>, Error> {
        let tx = self.client.transaction().await?;
        tx.batch_execute(&format!(
            "SET LOCAL idle_in_transaction_session_timeout = {}",
            idle.as_millis().max(1)
        ))
        .await?;
        let me = tx
            .query_opt(
                "SELECT lease_until > now() FROM nodes WHERE node = $1 AND epoch = $2",
                &[&self.node, &self.epoch],
            )
            .await?;
        match me.map(|r| r.get::<_, bool>(0)) {
            None => {
                drop(tx);
                return Err(self.fenced());
            }
            // A node whose own lease lapsed takes nothing over: it may be the one taken over next.
            Some(false) => return Ok(None),
            Some(true) => {}
        }
        // SKIP LOCKED: a node committing now holds its row; it is looked at again next time. Only a
        // node with records not yet handed on: one whose work is all another's would come first by
        // name every time and hide the lapsed nodes after it.
        let Some(row) = tx
            .query_opt(
                "SELECT y.node, y.retired_seq, greatest(y.retired_seq, y.needed_seq - 1)
                 FROM nodes y LEFT JOIN nodes t ON t.node = y.taken_by
                 WHERE y.node <> $1 AND y.lease_until < now()
                   AND EXISTS (SELECT 1 FROM records r WHERE r.node = y.node AND r.seq > y.retired_seq)
                   AND (y.taken_by IS NULL OR y.retired_seq >= y.taken_through
                        OR t.lease_until < now() OR t.epoch <> y.taken_epoch)
                 ORDER BY y.node LIMIT 1
                 FOR UPDATE OF y SKIP LOCKED",
                &[&self.node],
            )
            .await?
        else {
            return Ok(None);
        };
        let (node, retired, after): (String, i64, i64) = (row.get(0), row.get(1), row.get(2));
        // Read after the lock, in a statement of its own: every commit of the node is in, and no more
        // can come (a commit of it waits for this transaction, then finds its epoch gone).
        let last: i64 = tx
            .query_one(
                "SELECT coalesce(max(seq), 0) FROM records WHERE node = $1",
                &[&node],
            )
            .await?
            .get(0);
        if last <= retired {
            return Ok(None);
        }
        tx.execute(
            "UPDATE nodes SET epoch = epoch + 1, taken_by = $2, taken_epoch = $3, taken_at = now(),
                              taken_through = $4
             WHERE node = $1",
            &[&node, &self.node, &self.epoch, &last],
        )
        .await?;
        tx.commit().await?;
        let rows = self
            .client
            .query(
                "SELECT seq, first, body FROM records WHERE node = $1 AND seq > $2 AND seq <= $3",
                &[&node, &after, &last],
            )
            .await?;
        let records = in_order_after(&node, &rows, after)?;
        tracing::warn!(
            node,
            records = records.len(),
            through = last,
            "taking over a node whose lease lapsed"
        );
        Ok(Some(Takeover {
            node,
            through: last as u64,
            records,
        }))
    }
}
