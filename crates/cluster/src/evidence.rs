//! The journal in the database as evidence, across every node: timelines by RRN, terminal and STAN, or
//! card last four (each an index), every record for export, and a check of every record and sequence.

use std::collections::BTreeMap;
use std::time::SystemTime;

use engine::Record;
use futures_util::TryStreamExt;
use tokio_postgres::Client;

use crate::{Error, row};

/// What a dispute names: any of these.
#[derive(Debug, Clone, Default)]
pub struct Named {
    pub rrn: Option<String>,
    pub terminal: Option<(String, u32)>,
    /// Last four digits, within `from..to`.
    pub last4: Option<String>,
    pub from: Option<SystemTime>,
    pub to: Option<SystemTime>,
}

/// The evidence columns of every node's rows past its mark in `evidence`, as a query's `tail`: a
/// search reads the indexed copy up to each mark and these as they are (the same snapshot: nothing is
/// counted twice or missed while the marks move). A node without a mark has copied nothing.
const TAIL: &str = "tail AS (
    SELECT r.* FROM nodes n LEFT JOIN evidence_marks m USING (node)
        CROSS JOIN LATERAL (SELECT r.node, r.txn, r.at, r.terminal, r.stan, r.last4, r.rrn
                            FROM records r WHERE r.node = n.node AND r.seq > coalesce(m.seq, 0)) r)";

/// Every record of every transaction `named` names (candidates: the caller keeps the transactions
/// whose own records match), grouped by node and transaction, oldest first.
pub async fn timelines(client: &Client, named: &Named) -> Result<Vec<(String, Record)>, Error> {
    let (terminal, stan) = match &named.terminal {
        Some((t, s)) => (Some(t.as_str()), Some(*s as i32)),
        None => (None, None),
    };
    let rows = client
        .query(
            &format!(
                "WITH {TAIL}, hit AS (
                 SELECT node, txn FROM evidence WHERE rrn = $1
                 UNION SELECT node, txn FROM evidence WHERE terminal = $2 AND stan = $3
                 UNION SELECT node, txn FROM evidence
                     WHERE last4 = $4 AND at >= coalesce($5::timestamptz, '-infinity') AND at < coalesce($6::timestamptz, 'infinity')
                 UNION SELECT node, txn FROM tail
                     WHERE rrn = $1 OR (terminal = $2 AND stan = $3)
                        OR (last4 = $4 AND at >= coalesce($5::timestamptz, '-infinity') AND at < coalesce($6::timestamptz, 'infinity')))
             SELECT r.node, r.seq, r.first, r.body FROM records r JOIN hit USING (node, txn)
             ORDER BY r.node, r.txn, r.seq"
            ),
            &[
                &named.rrn,
                &terminal,
                &stan,
                &named.last4,
                &named.from,
                &named.to,
            ],
        )
        .await?;
    // A transaction's rows are one per batch, and batches do not interleave: in key order, their
    // records are in order.
    decoded(&rows)
}

/// The records of every node's transactions at `terminal` since its batch at `merchant` last closed
/// (a minute before, so that the closing request's own records come too), each with its node, row by
/// row in the order they were recorded: a settlement message folds them into the terminal's open
/// batch. A terminal with no close recorded (its first settlement, or the first since schema version
/// 8) is read back [`UNCLOSED`]: its whole history could take longer than the terminal waits.
/// Transactions of the same terminal id at another merchant come too (the evidence has no merchant);
/// the fold keeps each batch apart.
pub async fn batch(
    client: &Client,
    terminal: &str,
    merchant: &str,
) -> Result<Vec<(String, Record)>, Error> {
    let rows = client
        .query(
            &format!(
                "WITH since AS (
                 SELECT coalesce((SELECT at - interval '1 minute' FROM batch_closes
                                  WHERE terminal = $1 AND merchant = $2), now() - $3::text::interval) AS at
             ), {TAIL}, hit AS (
                 SELECT node, txn FROM evidence WHERE terminal = $1 AND at >= (SELECT at FROM since)
                 UNION SELECT node, txn FROM tail WHERE terminal = $1 AND at >= (SELECT at FROM since))
             -- A transaction's rows are no older than its first: the days before are not read (the
             -- bound, a value the plan gets at its start, prunes the partitions).
             SELECT r.node, r.seq, r.first, r.body FROM records r JOIN hit USING (node, txn)
             WHERE r.at >= (SELECT at FROM since)
             ORDER BY r.at, r.node, r.seq"
            ),
            &[&terminal, &merchant, &UNCLOSED],
        )
        .await?;
    decoded(&rows)
}

/// Every record of every node's transactions at `terminal` with STAN `stan` received since `since`
/// (all of them without), each with its node, by node and transaction, oldest first.
pub async fn at_stan(
    client: &Client,
    terminal: &str,
    stan: u32,
    since: Option<SystemTime>,
) -> Result<Vec<(String, Record)>, Error> {
    let rows = client
        .query(
            &format!(
                "WITH {TAIL}, hit AS (
                 SELECT node, txn FROM evidence
                     WHERE terminal = $1 AND stan = $2 AND at >= coalesce($3::timestamptz, '-infinity')
                 UNION SELECT node, txn FROM tail
                     WHERE terminal = $1 AND stan = $2 AND at >= coalesce($3::timestamptz, '-infinity'))
             SELECT r.node, r.seq, r.first, r.body FROM records r JOIN hit USING (node, txn)
             WHERE r.at >= coalesce($3::timestamptz, '-infinity')
             ORDER BY r.node, r.txn, r.seq"
            ),
            &[&terminal, &(stan as i32), &since],
        )
        .await?;
    decoded(&rows)
}

/// The records of `rows` (`node, seq, first, body`), with their nodes, row by row.
fn decoded(rows: &[tokio_postgres::Row]) -> Result<Vec<(String, Record)>, Error> {
    let mut found = Vec::new();
    for r in rows {
        let node: String = r.get(0);
        for (_, record) in row::decode(&node, r.get(1), r.get(2), r.get(3))? {
            found.push((node.clone(), record));
        }
    }
    Ok(found)
}

/// How far back [`batch`] reads a terminal with no close recorded: a batch left open longer than this
/// is found out of balance, and closes after its upload with what is older counted as discrepancies.
pub const UNCLOSED: &str = "30 days";

/// Moves each terminal's last close (`terminal`, `merchant`, when) forward, once the records that
/// closed its batch are committed: the bound [`batch`] reads from.
pub async fn batches_closed(
    client: &Client,
    closed: &[(String, String, SystemTime)],
) -> Result<(), Error> {
    for (terminal, merchant, at) in closed {
        client
            .execute(
                "INSERT INTO batch_closes (terminal, merchant, at) VALUES ($1, $2, $3)
                 ON CONFLICT (terminal, merchant) DO UPDATE SET at = greatest(batch_closes.at, excluded.at)",
                &[terminal, merchant, at],
            )
            .await?;
    }
    Ok(())
}

/// Every record in `from..to` (by the time of its row's first record), by node and sequence.
pub async fn export(
    client: &Client,
    from: Option<SystemTime>,
    to: Option<SystemTime>,
    mut each: impl FnMut(&str, Record) -> std::io::Result<()>,
) -> Result<(), ExportError> {
    // The rows of a batch interleave (one per transaction): taken by their first record, every record
    // before the next row's first is complete and goes out.
    let rows = client
        .query_raw(
            "SELECT node, seq, first, body FROM records
             WHERE at >= coalesce($1::timestamptz, '-infinity') AND at < coalesce($2::timestamptz, 'infinity')
             ORDER BY node, coalesce(first, seq)",
            [&from as &(dyn tokio_postgres::types::ToSql + Sync), &to],
        )
        .await
        .map_err(Error::from)?;
    futures_util::pin_mut!(rows);
    let mut node = String::new();
    let mut waiting: BTreeMap<u64, Record> = BTreeMap::new();
    while let Some(r) = rows.try_next().await.map_err(Error::from)? {
        let (seq, first): (i64, Option<i64>) = (r.get(1), r.get(2));
        if r.get::<_, &str>(0) != node {
            for record in std::mem::take(&mut waiting).into_values() {
                each(&node, record)?;
            }
            node = r.get(0);
        }
        let later = waiting.split_off(&(first.unwrap_or(seq) as u64));
        for record in std::mem::replace(&mut waiting, later).into_values() {
            each(&node, record)?;
        }
        waiting.extend(row::decode(&node, seq, first, r.get(3))?);
    }
    for record in waiting.into_values() {
        each(&node, record)?;
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] Error),
    #[error(transparent)]
    Write(#[from] std::io::Error),
}

/// What [`verify`] found.
#[derive(Debug, Default)]
pub struct Verified {
    pub nodes: usize,
    pub records: u64,
    pub problems: Vec<String>,
}

/// Every record decodes; each node's sequence has no gap; the indexed evidence is whole up to each
/// node's mark; every claim names a received request.
pub async fn verify(client: &Client) -> Result<Verified, Error> {
    let mut found = Verified::default();
    let nodes = client
        .query(
            "SELECT node, min(coalesce(first, seq)), max(seq) FROM records GROUP BY node ORDER BY node",
            &[],
        )
        .await?;
    found.nodes = nodes.len();
    for n in &nodes {
        let (node, min, max): (String, i64, i64) = (n.get(0), n.get(1), n.get(2));
        let rows = client
            .query_raw(
                "SELECT seq, first, body FROM records WHERE node = $1",
                [&node as &(dyn tokio_postgres::types::ToSql + Sync)],
            )
            .await?;
        futures_util::pin_mut!(rows);
        let mut count = 0;
        while let Some(r) = rows.try_next().await? {
            match row::decode(&node, r.get(0), r.get(1), r.get(2)) {
                Ok(records) => count += records.len() as i64,
                Err(problem) => found.problems.push(problem.to_string()),
            }
        }
        found.records += count as u64;
        // Retention drops whole days from the start: what is left must run without a gap (rows
        // hold records in order, numbered apart, so a count that fills the range leaves none).
        if max - min + 1 != count {
            found.problems.push(format!(
                "node {node}: {} record(s) missing between {min} and {max}",
                max - min + 1 - count
            ));
        }
    }
    let orphans: i64 = client
        .query_one(
            "SELECT count(*) FROM claims c WHERE NOT EXISTS
                 (SELECT 1 FROM records r WHERE r.node = c.node AND r.txn = c.txn)",
            &[],
        )
        .await?
        .get(0);
    // Up to each node's mark, one row of `evidence` for each of its rows with something to search by.
    let unindexed = client
        .query(
            "SELECT m.node,
                    (SELECT count(*) FROM records r WHERE r.node = m.node AND r.seq <= m.seq
                        AND (r.terminal IS NOT NULL OR r.last4 IS NOT NULL OR r.rrn IS NOT NULL))
                    - (SELECT count(*) FROM evidence e WHERE e.node = m.node)
             FROM evidence_marks m ORDER BY m.node",
            &[],
        )
        .await?;
    for r in &unindexed {
        let (node, missing): (String, i64) = (r.get(0), r.get(1));
        let gap = match missing {
            0 => continue,
            1.. => format!("{missing} row(s) short of"),
            _ => format!("{} row(s) more than", -missing),
        };
        found.problems.push(format!(
            "node {node}: the evidence searched by RRN, terminal and card holds {gap} its journal"
        ));
    }
    if orphans > 0 {
        found
            .problems
            .push(format!("{orphans} claim(s) name no recorded transaction"));
    }
    Ok(found)
}
