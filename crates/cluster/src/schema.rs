//! The schema is created and migrated by the switch itself on start. Each migration is a numbered SQL
//! file embedded in the binary and applied once, in order, in one transaction with its version row; a
//! database migrated by a newer release is refused, naming both versions. A released migration is never
//! edited: a change is a new file (the schema is a contract, like the journal's format).

use tokio_postgres::Client;

use crate::Error;

/// Every migration, oldest first: (version, SQL).
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("../migrations/0001_cluster.sql")),
    (
        2,
        include_str!("../migrations/0002_provisional_forwards.sql"),
    ),
    (
        3,
        include_str!("../migrations/0003_rows_per_transaction.sql"),
    ),
    (4, include_str!("../migrations/0004_evidence_behind.sql")),
    (5, include_str!("../migrations/0005_claims_by_day.sql")),
    (
        6,
        include_str!("../migrations/0006_claims_by_time_brin.sql"),
    ),
    (7, include_str!("../migrations/0007_stan_blocks.sql")),
    (8, include_str!("../migrations/0008_batch_closes.sql")),
    (9, include_str!("../migrations/0009_pleas.sql")),
];

/// The schema version this release writes.
pub const SCHEMA_VERSION: i32 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// Brings the database's schema up to [`SCHEMA_VERSION`]; returns the version it found (0: empty).
/// Nodes starting together take turns (an advisory lock), so each migration runs once.
pub async fn migrate(client: &mut Client) -> Result<i32, Error> {
    let tx = client.transaction().await?;
    // Any constant will do: it only has to be the same for every node.
    tx.execute("SELECT pg_advisory_xact_lock(8583)", &[])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS acquiro_schema (
             version integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await?;
    let found: i32 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM acquiro_schema", &[])
        .await?
        .get(0);
    if found > SCHEMA_VERSION {
        return Err(Error::SchemaTooNew {
            found,
            known: SCHEMA_VERSION,
        });
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > found) {
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO acquiro_schema (version) VALUES ($1)",
            &[version],
        )
        .await?;
        tracing::info!(version, "database schema migrated");
    }
    tx.commit().await?;
    Ok(found)
}
