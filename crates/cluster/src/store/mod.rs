//! One node's view of the cluster: its connection, its lease under an epoch, its fenced commits, and
//! what it reads back of its own and other nodes' records; `takeover`, the work of lapsed nodes;
//! `pleas`, the reversals in terminals' names nodes leave each other; `names`, how its connections
//! show in the database; `namesake`, another process under its name.

use std::time::{Duration, SystemTime};

use engine::{Claim, Holder, Record, TxnId};
use siphasher::sip128::{Hasher128, SipHasher13};
use tokio_postgres::{Client, Statement};

mod names;
mod namesake;
mod pleas;
mod takeover;

pub use names::Purpose;
use names::name;
pub(crate) use names::of as names_of;
use namesake::refuse_a_live_namesake;
pub use takeover::Takeover;
use takeover::wait_for_takeover;

use crate::connect::{connect_as, named_application};
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
    purpose: Purpose,
}

/// The last record node `$1` made, by what the database holds of it: its records, and the marks that
/// recovery (`needed_seq`), the takeovers (`retired_seq`) and the evidence copy read from. The marks
/// count too because retention may have dropped every record (a node idle for longer than `retain`):
/// numbers used again would sit below the marks, and the node's new records would be missed by them.
/// How long before the holder's first record another attempt of the same request may have been
/// received: a request that reached two nodes at once is held by the first to claim it, not always the
/// first to receive it.
const ATTEMPTS_BEFORE: Duration = Duration::from_secs(3600);

const LAST_SEQ: &str = "greatest((SELECT coalesce(max(seq), 0) FROM records WHERE node = $1),
                                 (SELECT greatest(retired_seq, needed_seq - 1) FROM nodes WHERE node = $1),
                                 (SELECT seq FROM evidence_marks WHERE node = $1))";

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
    /// The block of STANs the node numbers its upstream messages with (see [`engine::Stans::block`]).
    pub stan_block: u32,
}

/// What a commit decided beyond making the batch durable.
#[derive(Debug, Default)]
pub struct Committed {
    /// Claims another node (or an earlier transaction) already held.
    pub lost: Vec<TxnId>,
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
    /// epoch, fencing out an earlier process of the same name that is gone, paused or cut off; one that
    /// is alive is refused instead ([`Error::NameInUse`], see `namesake`). Waits while a takeover of the
    /// node's work by a live node is under way, so that the two never act on the same work.
    pub async fn join(
        url: &str,
        node: &str,
        lease: Duration,
        card_key: &[u8; 16],
    ) -> Result<Joined, Error> {
        if let Some(application) = named_application(url)? {
            tracing::warn!(
                application,
                "the connection string's application_name is not used for a node's connections: \
                 they are named `acquiro NODE PURPOSE`, by which a second process under this name is found"
            );
        }
        let mut client = connect_as(url, &name(node, Purpose::Commits)).await?;
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
        let lease_ms = lease.as_millis() as i64;
        let names = names::of(node);
        let row = loop {
            wait_for_takeover(&client, node).await?;
            // Not over a process of this name whose lease is live and whose connections are there
            // (one statement, so that of two started at once only one joins): the namesake check
            // then tells one going away from a live one, and refuses the latter. A takeover of this
            // node's work that its taker left unfinished (its lease lapsed before its records of the
            // work committed) is abandoned: this node does that work itself, and the taker's records
            // of it, should they commit later, retire none of it (a commit retires only the work of
            // nodes it is still the taker of).
            let joined = client
                .query_opt(
                    "INSERT INTO nodes (node, epoch, lease_until, joined_at)
                     VALUES ($1, 1, now() + $2::bigint * interval '1 millisecond', now())
                     ON CONFLICT (node) DO UPDATE
                         SET epoch = nodes.epoch + 1, lease_until = excluded.lease_until,
                             joined_at = excluded.joined_at,
                             taken_by = CASE WHEN nodes.retired_seq < nodes.taken_through
                                             THEN NULL ELSE nodes.taken_by END,
                             taken_through = least(nodes.taken_through, nodes.retired_seq)
                         WHERE nodes.lease_until <= now() OR NOT EXISTS (
                             SELECT 1 FROM pg_stat_activity
                             WHERE application_name = ANY ($3) AND pid <> pg_backend_pid())
                     RETURNING epoch, greatest(retired_seq, needed_seq - 1)",
                    &[&node, &lease_ms, &names],
                )
                .await?;
            if let Some(row) = joined {
                break row;
            }
            refuse_a_live_namesake(&client, node).await?;
        };
        let (epoch, after): (i64, i64) = (row.get(0), row.get(1));
        let stan_block = stan_block(&mut client, node).await?;
        let store = Store {
            commit: client.prepare(COMMIT).await?,
            client,
            node: node.to_owned(),
            epoch,
            purpose: Purpose::Commits,
        };
        let records = store.records_after(node, after).await?;
        let row = store
            .client
            .query_one(
                &format!("SELECT {LAST_SEQ}, (SELECT max(txn) FROM records WHERE node = $1)"),
                &[&node],
            )
            .await?;
        let last_seq: i64 = row.get(0);
        let last_txn: Option<i64> = row.get(1);
        tracing::info!(
            node,
            epoch,
            records = records.len(),
            stan_block,
            "joined the cluster"
        );
        Ok(Joined {
            store,
            records,
            last_seq: last_seq as u64,
            last_txn: last_txn.map(|t| TxnId(t as u64)),
            stan_block,
        })
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn epoch(&self) -> i64 {
        self.epoch
    }

    /// What this connection is for.
    pub fn purpose(&self) -> Purpose {
        self.purpose
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

    /// A terminal's open batch, as every node recorded it (see [`crate::evidence::batch`]).
    pub async fn batch(
        &self,
        terminal: &str,
        merchant: &str,
    ) -> Result<Vec<(String, Record)>, Error> {
        crate::evidence::batch(&self.client, terminal, merchant).await
    }

    /// Moves terminals' last closes forward (see [`crate::evidence::batches_closed`]).
    pub async fn batches_closed(
        &self,
        closed: &[(String, String, SystemTime)],
    ) -> Result<(), Error> {
        crate::evidence::batches_closed(&self.client, closed).await
    }

    /// The database's version, schema and synchronous standbys (see `status`).
    pub async fn database(&self) -> Result<crate::DatabaseStatus, Error> {
        crate::status::database(&self.client).await
    }

    /// Another connection for the same node and epoch, for `purpose` (the lease is renewed on its own
    /// connection, so that a slow commit never delays it).
    pub async fn twin(&self, url: &str, purpose: Purpose) -> Result<Store, Error> {
        let client = connect_as(url, &name(&self.node, purpose)).await?;
        Ok(Store {
            commit: client.prepare(COMMIT).await?,
            client,
            node: self.node.clone(),
            epoch: self.epoch,
            purpose,
        })
    }

    /// Connects again after the connection failed.
    pub async fn reconnect(&mut self, url: &str) -> Result<(), Error> {
        let client = connect_as(url, &name(&self.node, self.purpose)).await?;
        self.commit = client.prepare(COMMIT).await?;
        self.client = client;
        Ok(())
    }

    /// After a commit whose outcome was lost with the connection: what it decided if it went through,
    /// `None` if it did not (the batch is committed again). Every claim is reported lost and settles as
    /// won when its holder turns out to be itself.
    ///
    /// A batch found in is durable where its own commit would have been: on the synchronous standby
    /// too. A primary that crashed while its commit waited for the standby makes it visible again at
    /// its recovery, though the standby may not have it yet, and a failover then would lose it with
    /// what the terminals were told. So the lookup runs in a transaction that writes (its node's row,
    /// unchanged: a transaction that writes nothing commits without waiting), whose commit waits for
    /// the standby as any commit does, and the standby then has everything before it.
    ///
    /// `acknowledged` is the node's last record a commit made durable: a database whose records of
    /// the node end before it went back in time (an asynchronous standby promoted, a restore from a
    /// backup) and lost what terminals were told, and the node may commit nothing more on it
    /// ([`Error::WentBack`]). Where they end is read as a join reads it ([`LAST_SEQ`]), so a node whose
    /// records retention dropped is not taken for one.
    pub async fn settle(
        &mut self,
        acknowledged: u64,
        records: &[(u64, Record)],
        claims: &[Claim],
    ) -> Result<Option<Committed>, Error> {
        let tx = self.client.transaction().await?;
        tx.execute(
            "UPDATE nodes SET epoch = epoch WHERE node = $1",
            &[&self.node],
        )
        .await?;
        let holds: i64 = tx
            .query_one(&format!("SELECT {LAST_SEQ}"), &[&self.node])
            .await?
            .get(0);
        if holds < acknowledged as i64 {
            return Err(Error::WentBack {
                node: self.node.clone(),
                acknowledged,
                holds: holds.max(0) as u64,
            });
        }
        // The batch's last record is the last of its row (a row is keyed by its last record).
        let committed = match records.last() {
            Some((seq, _)) => tx
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM records WHERE node = $1 AND seq = $2)",
                    &[&self.node, &(*seq as i64)],
                )
                .await?
                .get(0),
            // Claims alone: committing them again is harmless.
            None => false,
        };
        tx.commit().await?;
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
            others: Vec::new(),
        }))
    }

    /// Who holds the key `claim` looks up, as [`Store::holder`] reads it, with the records of every
    /// other transaction at its terminal and STAN since an hour before the holder's first ([`Holder`]'s
    /// `others`: where else the terminal asked for the key, and what it heard there).
    pub async fn looked_up(&self, claim: &Claim) -> Result<Option<Holder>, Error> {
        let Some(mut holder) = self.holder(claim).await? else {
            return Ok(None);
        };
        let first = holder.records.first().map(|r| r.at);
        let since = first.and_then(|at| at.checked_sub(ATTEMPTS_BEFORE));
        let terminal = claim.terminal.as_str();
        let found = crate::evidence::at_stan(&self.client, terminal, claim.stan, since).await?;
        let (node, txn) = (holder.node.as_str(), holder.txn);
        holder.others = (found.into_iter())
            .filter(|(n, r)| (n.as_str(), r.txn) != (node, txn))
            .map(|(n, r)| (n.into(), r))
            .collect();
        Ok(Some(holder))
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

/// The block of STANs node `node` (joined: its lease live) numbers with: the one it holds, else the
/// lowest no node with a live lease holds, never held first. A lapsed node that held it gives it up and
/// is fenced (its epoch raised), so that, woken from a pause, it cannot number with it beside this one:
/// its renewal and commits fail, and it joins again for a block of its own.
async fn stan_block(client: &mut tokio_postgres::Client, node: &str) -> Result<u32, Error> {
    let tx = client.transaction().await?;
    // Two nodes joining at once must not both find the same block free.
    tx.execute("SELECT pg_advisory_xact_lock(8586)", &[])
        .await?;
    let held: Option<i16> = tx
        .query_one("SELECT stan_block FROM nodes WHERE node = $1", &[&node])
        .await?
        .get(0);
    let block = match held {
        Some(block) => block,
        None => {
            let free = tx
                .query_opt(
                    "SELECT b::smallint FROM generate_series(0, $1 - 1) b
                     WHERE NOT EXISTS (SELECT 1 FROM nodes n WHERE n.stan_block = b AND n.lease_until > now())
                     ORDER BY EXISTS (SELECT 1 FROM nodes n WHERE n.stan_block = b), b
                     LIMIT 1",
                    &[&(engine::Stans::BLOCKS as i32)],
                )
                .await?;
            let Some(block) = free.map(|row| row.get::<_, i16>(0)) else {
                return Err(Error::NoStanBlock {
                    blocks: engine::Stans::BLOCKS,
                });
            };
            tx.execute(
                "UPDATE nodes SET stan_block = NULL, epoch = epoch + 1 WHERE stan_block = $1",
                &[&block],
            )
            .await?;
            tx.execute(
                "UPDATE nodes SET stan_block = $2 WHERE node = $1",
                &[&node, &block],
            )
            .await?;
            block
        }
    };
    tx.commit().await?;
    Ok(block as u32)
}
