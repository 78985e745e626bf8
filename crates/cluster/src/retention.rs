//! Retention: the journal is partitioned by day (the `at` of each row, its first record's), and whole
//! days are dropped; the copy of the journal's evidence columns that disputes search (`evidence`) is
//! partitioned the same way, and its days go with the journal's.
//!
//! Partitions are made ahead (today and the next two days) by whichever node gets there first; a
//! record whose day has no partition (a copy of an old record, say) lands in the default one, which
//! is never dropped. A day is dropped once it is older than the retention, which the configuration
//! check keeps longer than anything recovery may need (the idempotency window and a reversal's
//! expiry): a transaction that old is finished for good. Its claims go with it.

use std::time::{Duration, SystemTime};

use tokio_postgres::Client;

use crate::Error;

/// Makes today's and the next two days' partitions; drops the days older than `retain`, if given.
/// Returns the partitions dropped.
pub async fn maintain(client: &Client, retain: Option<Duration>) -> Result<Vec<String>, Error> {
    // One node at a time: two CREATEs of the same partition would collide.
    client
        .batch_execute(
            "DO $$
             DECLARE d date; t text;
             BEGIN
                 PERFORM pg_advisory_xact_lock(8584);
                 FOR d IN SELECT generate_series(current_date, current_date + 2, '1 day')::date LOOP
                     FOREACH t IN ARRAY ARRAY['records', 'evidence'] LOOP
                         IF to_regclass(t || '_' || to_char(d, 'YYYYMMDD')) IS NULL THEN
                             EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                                            t || '_' || to_char(d, 'YYYYMMDD'), t, d, d + 1);
                         END IF;
                     END LOOP;
                 END LOOP;
             END $$",
        )
        .await?;
    let Some(retain) = retain else {
        return Ok(Vec::new());
    };
    let before = SystemTime::now() - retain;
    let rows = client
        .query(
            "SELECT c.relname FROM pg_inherits i
                 JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
             WHERE (p.relname = 'records' AND c.relname ~ '^records_[0-9]{8}$'
                    OR p.relname = 'evidence' AND c.relname ~ '^evidence_[0-9]{8}$')
               AND to_date(right(c.relname, 8), 'YYYYMMDD') + 1 <= $1::timestamptz::date
             ORDER BY c.relname",
            &[&before],
        )
        .await?;
    let mut dropped = Vec::new();
    for row in rows {
        let name: String = row.get(0);
        client
            .batch_execute(&format!("DROP TABLE IF EXISTS \"{name}\""))
            .await?;
        dropped.push(name);
    }
    client
        .execute("DELETE FROM claims WHERE at < $1", &[&before])
        .await?;
    Ok(dropped)
}
