use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    /// With what the server or the connection said (tokio-postgres's own message is only its kind,
    /// "db error", with the reason in its source): an operator reads the reason in the log line.
    #[error("database: {}", with_causes(.0))]
    Db(tokio_postgres::Error),
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
    /// Another live process runs under this node's name: its lease is renewed on a connection named
    /// as this node's. Joining would fence it, and its restart this one, in turn.
    #[error(
        "node {node} is running already (its lease is renewed from {from}): every node needs a name of its own (cluster.node, or --node)"
    )]
    NameInUse { node: String, from: String },
    /// A call the database did not answer in time: the connection counts as lost (a connection that
    /// stopped answering fails no other way until the kernel gives up on it, many minutes later).
    #[error("database: no answer within {0:?}; the connection counts as lost")]
    NoAnswer(std::time::Duration),
    /// The connection string's TLS settings (see `tls`) cannot be used.
    #[error("database connection settings: {0}")]
    Settings(String),
    /// The TLS files the connection string names cannot be used.
    #[error("database connection settings: {0}")]
    Tls(#[from] tlsfiles::Error),
    /// The database holds fewer of the node's records than it committed: it went back in time (an
    /// asynchronous standby promoted, a restore from a backup), losing what terminals were told.
    #[error(
        "the database lost commits of node {node}: its records end at {holds}, but {acknowledged} was committed (an asynchronous standby promoted, or a restore from a backup?); terminals were told of transactions it no longer holds"
    )]
    WentBack {
        node: String,
        acknowledged: u64,
        holds: u64,
    },
    /// Every block of STANs is held by a node whose lease is live.
    #[error(
        "every block of STANs ({blocks}) is held by a live node: a cluster has at most {blocks} nodes live at once"
    )]
    NoStanBlock { blocks: u32 },
    #[error("record {seq} of node {node} does not decode: {why}")]
    Corrupt { node: String, seq: i64, why: String },
}

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Self {
        Error::Db(e)
    }
}

/// `e`, then each of its causes, after colons.
fn with_causes(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
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
