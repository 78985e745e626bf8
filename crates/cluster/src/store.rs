//! One node's view of the cluster: its connection, its lease under an epoch, its fenced commits, and
//! what it reads back of its own and other nodes' records.

use std::time::{Duration, SystemTime};

use engine::{Claim, Holder, Record, TxnId};
use siphasher::sip128::{Hasher128, SipHasher13};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_postgres::{Client, Connection, NoTls, Socket, Statement};

use crate::row::{self, Rows};
use crate::{Error, schema};

/// A node joined to the cluster under a new epoch.
#[derive(Debug)]
pub struct Store {
    client: Client,
    /// The batch commit, prepared once per connection: a commit is then one round trip, not two (a
    /// statement given as text is parsed and planned anew each time).
    commit: Statement,
    node: String,
    epoch: i64,
}

/// The statement [`Store::commit`] runs.
const COMMIT: &str = "SELECT * FROM acquiro_commit($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,
                                                   $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23,
                                                   $24)";

/// What joining found: the node's store, and its records for recovery.
#[derive(Debug)]
pub struct Joined {
    pub store: Store,
    /// This node's records after what a takeover handed on, oldest first.
    pub records: Vec<Record>,
    /// The sequence number of the node's last record (0: none).
    pub last_seq: u64,
    /// The highest transaction id the node ever used (its numbering resumes after it).
    pub last_txn: Option<TxnId>,
}

/// What a commit decided beyond making the batch durable.
#[derive(Debug, Default)]
pub struct Committed {
    /// Claims another node (or an earlier transaction) already held.
    pub lost: Vec<TxnId>,
}

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
async fn wait_for_takeover(client: &Client, node: &str) -> Result<(), Error> {
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

/// How long a connection may take to open, unless the connection string says (`connect_timeout`):
/// without a bound, a database host that went dark holds a connection attempt for minutes.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects, over TLS if `url` says so (see `tls`), with the connection driven on its own task.
pub async fn connect(url: &str) -> Result<Client, Error> {
    let (mut config, tls) = crate::tls::settings(url)?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    Ok(match tls {
        Some(tls) => drive(config.connect(tls).await?),
        None => drive(config.connect(NoTls).await?),
    })
}

/// Whether `url` can be connected with (its syntax, and its TLS settings and files), without
/// connecting.
pub fn check_connection_string(url: &str) -> Result<(), Error> {
    crate::tls::settings(url).map(drop)
}

fn drive<T>((client, connection): (Client, Connection<Socket, T>)) -> Client
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(%error, "database connection closed");
        }
    });
    client
}

/// A keyed hash of a fixed text: equal on two nodes exactly when their card keys are, and useless for
/// recovering the key.
pub fn card_key_check(key: &[u8; 16]) -> String {
    let mut h = SipHasher13::new_with_key(key);
    std::hash::Hasher::write(&mut h, b"acquiro card key check");
    hex::encode(h.finish128().as_bytes())
}

impl Store {
    /// Migrates the schema, checks the card key against the cluster's, and joins as `node` under a new
    /// epoch (fencing out any earlier process of the same name). Waits while a takeover of the node's work
    /// by a live node is under way, so that the two never act on the same work.
    pub async fn join(
        url: &str,
        node: &str,
        lease: Duration,
        card_key: &[u8; 16],
    ) -> Result<Joined, Error> {
        let mut client = connect(url).await?;
        schema::migrate(&mut client).await?;
        let ours = card_key_check(card_key);
        let theirs: String = client
            .query_one(
                "INSERT INTO cluster (card_key_check) VALUES ($1)
                 ON CONFLICT (only_one) DO UPDATE SET only_one = true
                 RETURNING card_key_check",
                &[&ours],
            )
            .await?
            .get(0);
        if theirs != ours {
            return Err(Error::CardKeyMismatch { ours, theirs });
        }
        // Before this node's first commit, so that its records have their day's partition.
        if let Err(error) = crate::retention::maintain(&client, None).await {
            tracing::warn!(%error, "journal partitions not made ahead");
        }
        wait_for_takeover(&client, node).await?;
        let lease_ms = lease.as_millis() as i64;
        let row = client
            .query_one(
                "INSERT INTO nodes (node, epoch, lease_until, joined_at)
                 VALUES ($1, 1, now() + $2::bigint * interval '1 millisecond', now())
                 ON CONFLICT (node) DO UPDATE
                     SET epoch = nodes.epoch + 1, lease_until = excluded.lease_until,
                         joined_at = excluded.joined_at
                 RETURNING epoch, greatest(retired_seq, needed_seq - 1)",
                &[&node, &lease_ms],
            )
            .await?;
        let (epoch, after): (i64, i64) = (row.get(0), row.get(1));
        let store = Store {
            commit: client.prepare(COMMIT).await?,
            client,
            node: node.to_owned(),
            epoch,
        };
        let records = store.records_after(node, after).await?;
        let row = store
            .client
            .query_one(
                "SELECT coalesce(max(seq), 0), max(txn) FROM records WHERE node = $1",
                &[&node],
            )
            .await?;
        let last_seq: i64 = row.get(0);
        let last_txn: Option<i64> = row.get(1);
        tracing::info!(node, epoch, records = records.len(), "joined the cluster");
        Ok(Joined {
            store,
            records,
            last_seq: last_seq as u64,
            last_txn: last_txn.map(|t| TxnId(t as u64)),
        })
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn epoch(&self) -> i64 {
        self.epoch
    }

    /// Makes a batch durable in one transaction behind the fence: its records (numbered by `seq`), its
    /// claims, and the work of nodes taken over that the records carry on (`retire`: each node's records
    /// up to that sequence number are handed on). Fails with [`Error::Fenced`] once the node's epoch is
    /// no longer current.
    pub async fn commit(
        &self,
        records: &[(u64, Record)],
        claims: &[Claim],
        retire: &[(String, u64)],
    ) -> Result<Committed, Error> {
        let mut rows = Rows::default();
        for (seq, record) in records {
            rows.push(*seq, record, claims);
        }
        rows.claims(claims);
        if rows.is_empty() && retire.is_empty() {
            return Ok(Committed::default());
        }
        let r_nodes: Vec<&str> = retire.iter().map(|(n, _)| n.as_str()).collect();
        let r_seqs: Vec<i64> = retire.iter().map(|(_, s)| *s as i64).collect();
        let c = &rows.claims;
        let lost = self
            .client
            .query(
                &self.commit,
                &[
                    &self.node,
                    &self.epoch,
                    &rows.seqs,
                    &rows.firsts,
                    &rows.txns,
                    &rows.ats,
                    &rows.bodies,
                    &rows.alts,
                    &rows.terminals,
                    &rows.stans,
                    &rows.days,
                    &rows.last4s,
                    &rows.rrns,
                    &c.txns,
                    &c.terminals,
                    &c.merchants,
                    &c.stans,
                    &c.days,
                    &c.reversals,
                    &c.fingerprints,
                    &c.old_nodes,
                    &c.old_txns,
                    &r_nodes,
                    &r_seqs,
                ],
            )
            .await
            .map_err(|e| self.fenced_or(e))?;
        Ok(Committed {
            lost: lost
                .iter()
                .map(|r| TxnId(r.get::<_, i64>(0) as u64))
                .collect(),
        })
    }

    /// Renews the lease for `lease` from now, reporting what the node holds, and that recovery needs
    /// none of its transactions before `oldest_needed`. Fails with [`Error::Fenced`] when the node lost
    /// its epoch.
    pub async fn renew(
        &self,
        lease: Duration,
        in_flight: usize,
        reversals: usize,
        oldest_needed: TxnId,
    ) -> Result<(), Error> {
        // A transaction's records all follow its first, and transactions are numbered in the order
        // they start: the first record of the oldest transaction needed bounds what recovery reads
        // (the first of its first row). With none committed yet, everything committed so far is
        // finished with.
        let updated = self
            .client
            .execute(
                "UPDATE nodes SET lease_until = now() + $3::bigint * interval '1 millisecond',
                                  in_flight = $4, reversals = $5,
                                  needed_seq = greatest(needed_seq, coalesce(
                                      (SELECT coalesce(first, seq) FROM records WHERE node = $1 AND txn >= $6
                                       ORDER BY txn, seq LIMIT 1),
                                      (SELECT coalesce(max(seq), 0) + 1 FROM records WHERE node = $1)))
                 WHERE node = $1 AND epoch = $2",
                &[
                    &self.node,
                    &self.epoch,
                    &(lease.as_millis() as i64),
                    &(in_flight as i32),
                    &(reversals as i32),
                    &(oldest_needed.0 as i64),
                ],
            )
            .await?;
        if updated == 0 {
            return Err(self.fenced());
        }
        Ok(())
    }

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

    /// Makes the coming days' partitions and drops the days older than `retain` (see `retention`).
    pub async fn maintain(&self, retain: Option<Duration>) -> Result<Vec<String>, Error> {
        crate::retention::maintain(&self.client, retain).await
    }

    /// Copies the evidence columns of up to `most` rows of each node past its mark into the indexed
    /// `evidence` (schema version 4), skipping nodes another node is copying; the rows read.
    pub async fn index_evidence(&self, most: i32) -> Result<i64, Error> {
        let row = self
            .client
            .query_one("SELECT acquiro_index_evidence($1)", &[&most])
            .await?;
        Ok(row.get(0))
    }

    /// Another connection for the same node and epoch (the lease is renewed on its own connection, so
    /// that a slow commit never delays it).
    pub async fn twin(&self, url: &str) -> Result<Store, Error> {
        let client = connect(url).await?;
        Ok(Store {
            commit: client.prepare(COMMIT).await?,
            client,
            node: self.node.clone(),
            epoch: self.epoch,
        })
    }

    /// Connects again after the connection failed.
    pub async fn reconnect(&mut self, url: &str) -> Result<(), Error> {
        let client = connect(url).await?;
        self.commit = client.prepare(COMMIT).await?;
        self.client = client;
        Ok(())
    }

    /// After a commit whose outcome was lost with the connection: what it decided if it went through,
    /// `None` if it did not (the batch is committed again). Every claim is reported lost and settles as
    /// won when its holder turns out to be itself.
    pub async fn settle(
        &self,
        records: &[(u64, Record)],
        claims: &[Claim],
    ) -> Result<Option<Committed>, Error> {
        // The batch's last record is the last of its row (a row is keyed by its last record).
        let committed = match records.last() {
            Some((seq, _)) => self
                .client
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM records WHERE node = $1 AND seq = $2)",
                    &[&self.node, &(*seq as i64)],
                )
                .await?
                .get(0),
            // Claims alone: committing them again is harmless.
            None => false,
        };
        Ok(committed.then(|| Committed {
            lost: claims.iter().map(|c| c.txn).collect(),
        }))
    }

    /// Who holds the key `claim` lost, with that transaction's records.
    pub async fn holder(&self, claim: &Claim) -> Result<Option<Holder>, Error> {
        let Some(row) = self
            .client
            .query_opt(
                "SELECT c.node, c.txn, c.fingerprint,
                        (SELECT coalesce(max(seq), 0) FROM records r
                          WHERE r.node = c.node AND r.txn = c.txn) <= n.retired_seq
                 FROM claims c JOIN nodes n ON n.node = c.node
                 WHERE c.terminal = $1 AND c.merchant = $2 AND c.stan = $3 AND c.day = $4
                   AND c.reversal = $5",
                &[
                    &claim.terminal.as_str(),
                    &claim.merchant.as_str(),
                    &(claim.stan as i32),
                    &(claim.date as i16),
                    &claim.reversal,
                ],
            )
            .await?
        else {
            return Ok(None);
        };
        let node: String = row.get(0);
        let txn = TxnId(row.get::<_, i64>(1) as u64);
        let records = self.records_of(&node, txn).await?;
        Ok(Some(Holder {
            // This node's own earlier transaction is final too: a live one would have been found in
            // memory, before any claim.
            fenced: row.get::<_, bool>(3) || node == self.node,
            fingerprint: row.get::<_, i64>(2) as u64,
            node: node.into(),
            txn,
            records,
        }))
    }

    /// Every record of one transaction of `node`, oldest first.
    pub async fn records_of(&self, node: &str, txn: TxnId) -> Result<Vec<Record>, Error> {
        let rows = self
            .client
            .query(
                "SELECT seq, first, body FROM records WHERE node = $1 AND txn = $2",
                &[&node, &(txn.0 as i64)],
            )
            .await?;
        in_order_after(node, &rows, 0)
    }

    /// `node`'s records after `seq`, oldest first.
    async fn records_after(&self, node: &str, seq: i64) -> Result<Vec<Record>, Error> {
        let rows = self
            .client
            .query(
                "SELECT seq, first, body FROM records WHERE node = $1 AND seq > $2",
                &[&node, &seq],
            )
            .await?;
        in_order_after(node, &rows, seq)
    }

    fn fenced(&self) -> Error {
        Error::Fenced {
            node: self.node.clone(),
            epoch: self.epoch,
        }
    }

    fn fenced_or(&self, error: tokio_postgres::Error) -> Error {
        let error = Error::Db(error);
        if error.is_fenced() {
            self.fenced()
        } else {
            error
        }
    }
}

/// The records numbered after `after` in `rows` (`seq, first, body` of `node`), in the order of their
/// numbers: the rows of one batch interleave (each holds one transaction's records), and a row keyed
/// past `after` may begin before it.
fn in_order_after(
    node: &str,
    rows: &[tokio_postgres::Row],
    after: i64,
) -> Result<Vec<Record>, Error> {
    let mut numbered = Vec::new();
    for r in rows {
        numbered.extend(row::decode(node, r.get(0), r.get(1), r.get(2))?);
    }
    numbered.retain(|(seq, _)| *seq as i64 > after);
    numbered.sort_unstable_by_key(|(seq, _)| *seq);
    Ok(numbered.into_iter().map(|(_, record)| record).collect())
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
