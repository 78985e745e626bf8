use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error("database: {0}")]
    Db(#[from] tokio_postgres::Error),
    /// The node's epoch is no longer current: another node took its work over, or it joined again
    /// elsewhere. It may commit nothing more.
    #[error("node {node} is fenced: epoch {epoch} is no longer current")]
    Fenced { node: String, epoch: i64 },
    #[error(
        "the database's schema is version {found}, newer than this release knows ({known}): upgrade acquiro"
    )]
    SchemaTooNew { found: i32, known: i32 },
    #[error(
        "the card key differs from the cluster's (check {ours} here, {theirs} in the database): every node needs the same journal.card_key (or ACQUIRO_CARD_KEY)"
    )]
    CardKeyMismatch { ours: String, theirs: String },
    #[error("record {seq} of node {node} does not decode: {why}")]
    Corrupt { node: String, seq: i64, why: String },
}

impl Error {
    /// Whether the error is the fence (not a lost connection or another failure that may pass).
    pub fn is_fenced(&self) -> bool {
        match self {
            Error::Fenced { .. } => true,
            Error::Db(e) => e.code().is_some_and(|c| c.code() == "AQ001"),
            _ => false,
        }
    }
}
