//! The configuration file as written: its keys, their meaning and their defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::tls::{IssuerTlsFile, ListenerTlsFile};

/// The file as written. Defaults make an empty file a working single-issuer switch on localhost.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct File {
    /// DE32 on every forwarded request.
    pub acquirer_id: String,
    /// Admin HTTP endpoint (health, and metrics).
    pub admin_listen: Option<SocketAddr>,
    /// How long in-flight requests may take to finish after SIGTERM/SIGINT.
    #[serde(with = "humantime_serde")]
    pub grace_period: Duration,
    /// An idle issuer link sends an echo test after this long.
    #[serde(with = "humantime_serde")]
    pub echo_interval: Duration,
    pub listeners: Vec<ListenerFile>,
    pub issuers: Vec<IssuerFile>,
    pub routes: Vec<RouteFile>,
    /// Issuer for cards that no route matches.
    pub default_issuer: Option<String>,
    pub idempotency: IdempotencyFile,
    pub settlement: SettlementFile,
    pub reversals: ReversalsFile,
    pub journal: JournalFile,
    /// Cluster mode: several nodes on one PostgreSQL (no `journal.dir` needed).
    pub cluster: Option<ClusterFile>,
    /// Worker threads of the runtime; none: `TOKIO_WORKER_THREADS` if set, else one fewer than the
    /// cores, at least one (see `acquiro serve`).
    pub workers: Option<usize>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterFile {
    /// Unique and stable per node: a restart under the same name resumes its work (also ACQUIRO_NODE).
    pub node: Option<String>,
    /// PostgreSQL connection string (also from ACQUIRO_DATABASE_URL).
    pub database: Option<Secret>,
    /// A node not heard from for this long is taken over.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// Days of records older than this are dropped (whole partitions); none: kept for ever.
    #[serde(with = "humantime_serde")]
    pub retain: Option<Duration>,
    /// How long a commit, a lease renewal or a lookup may go unanswered before the connection counts
    /// as lost.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Where the node keeps the pleas it holds, synced before the refusals they are for are told
    /// (see `pleas_file.rs`); none: in memory only.
    pub pleas_file: Option<PathBuf>,
    /// How long after it was told RC 91 a terminal may still retransmit the request or take an answer
    /// to it: the switch's reversal in its name waits this long (see `engine::Config`).
    #[serde(with = "humantime_serde")]
    pub terminal_patience: Duration,
}

/// A value that may be secret (a connection string with its password, the card key): read as text, and
/// never shown by `Debug`, so that a configuration printed whole leaves it out.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[not shown]")
    }
}

/// The environment variable that may hold the cluster's database URL.
pub const DATABASE_ENV: &str = "ACQUIRO_DATABASE_URL";
/// The environment variable that may hold the node's name (a Kubernetes pod's name, say).
pub const NODE_ENV: &str = "ACQUIRO_NODE";

impl Default for ClusterFile {
    fn default() -> Self {
        ClusterFile {
            node: None,
            database: None,
            lease: Duration::from_secs(5),
            retain: None,
            timeout: Duration::from_secs(2),
            pleas_file: None,
            terminal_patience: Duration::from_secs(120),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JournalFile {
    /// Where the journal's segments live. Without it the journal is kept in memory: not durable.
    pub dir: Option<PathBuf>,
    /// `always` (sync each record), `batch` (one sync per batch window) or `none` (no sync: survives a
    /// crash of the process, not of the machine).
    pub sync: String,
    #[serde(with = "humantime_serde")]
    pub batch_window: Duration,
    pub segment_bytes: u64,
    /// Delete closed segments older than this...
    #[serde(with = "humantime_serde")]
    pub retain_age: Option<Duration>,
    /// ...or beyond this many bytes in all; never one recovery still needs.
    pub retain_bytes: Option<u64>,
    /// A corrupt record in the middle: `stop` (refuse to start) or `skip` (report it and go on).
    pub on_corrupt: String,
    /// 32 hex digits: key of the card hashes (also from ACQUIRO_CARD_KEY). Without one, a key is made
    /// and kept in `card.key` in the journal directory.
    pub card_key: Option<Secret>,
}

/// The environment variable that may hold the card key.
pub const CARD_KEY_ENV: &str = "ACQUIRO_CARD_KEY";

impl Default for JournalFile {
    fn default() -> Self {
        let options = tranlog::Options::default();
        JournalFile {
            dir: None,
            sync: "batch".into(),
            batch_window: options.batch_window,
            segment_bytes: options.segment_bytes,
            retain_age: None,
            retain_bytes: None,
            on_corrupt: "stop".into(),
            card_key: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenerFile {
    pub address: SocketAddr,
    pub dialect: String,
    pub header: String,
    /// Terminals put a 5-byte TPDU after the length header.
    pub tpdu: bool,
    pub max_frame: usize,
    pub max_connections: usize,
    /// Requests of one connection awaiting their answers; beyond it the connection is not read.
    pub max_in_flight: usize,
    /// A connection with nothing in flight that sends nothing (not even a keep-alive) this long is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// A frame whose first bytes arrived must be complete within this (checked at this interval).
    #[serde(with = "humantime_serde")]
    pub read_timeout: Duration,
    /// A new connection must send a complete frame (a request or a keep-alive) within this.
    #[serde(with = "humantime_serde")]
    pub first_frame_timeout: Duration,
    /// Zero-length frames: `ignore` (keep-alives) or `reject` (close the connection).
    pub zero_length: String,
    /// Terminals connect over TLS when present.
    pub tls: Option<ListenerTlsFile>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IssuerFile {
    pub name: String,
    pub hosts: Vec<String>,
    pub dialect: String,
    pub header: String,
    /// TPDU sent to this issuer after the length header (10 hex digits), when its link uses one.
    pub tpdu: Option<String>,
    pub connections_per_host: usize,
    #[serde(with = "humantime_serde")]
    pub response_timeout: Duration,
    /// Answers to a reversal (DE39) that mean "try again" rather than "done".
    pub retry_codes: Vec<String>,
    /// Processing codes (the first two digits of DE3) that move no money and are never reversed.
    pub inquiry_codes: Vec<String>,
    /// Links connect over TLS when present.
    pub tls: Option<IssuerTlsFile>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    /// Leading digits of the card number.
    pub prefix: String,
    pub issuer: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SettlementFile {
    /// UTC time of day, `HH:MM`, at which the business date turns: a transaction at or after it
    /// belongs to the next day's settlement.
    pub cutover: String,
}

impl Default for SettlementFile {
    fn default() -> Self {
        SettlementFile {
            cutover: "00:00".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdempotencyFile {
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    pub max_entries: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReversalsFile {
    #[serde(with = "humantime_serde")]
    pub backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    pub max_attempts: u32,
    #[serde(with = "humantime_serde")]
    pub expiry: Duration,
}

pub const DEFAULT_DIALECT: &str = "iso87ascii";
pub const DEFAULT_HEADER: &str = "binary2";

impl Default for File {
    fn default() -> Self {
        File {
            acquirer_id: "00000000001".into(),
            admin_listen: None,
            grace_period: Duration::from_secs(10),
            echo_interval: Duration::from_secs(60),
            listeners: Vec::new(),
            issuers: Vec::new(),
            routes: Vec::new(),
            default_issuer: None,
            idempotency: IdempotencyFile::default(),
            settlement: SettlementFile::default(),
            reversals: ReversalsFile::default(),
            journal: JournalFile::default(),
            cluster: None,
            workers: None,
        }
    }
}

impl Default for ListenerFile {
    fn default() -> Self {
        ListenerFile {
            address: SocketAddr::from(([127, 0, 0, 1], 8583)),
            dialect: DEFAULT_DIALECT.into(),
            header: DEFAULT_HEADER.into(),
            tpdu: false,
            max_frame: wire::DEFAULT_MAX_FRAME,
            max_connections: 1000,
            max_in_flight: 16,
            idle_timeout: Duration::from_secs(300),
            read_timeout: Duration::from_secs(10),
            first_frame_timeout: Duration::from_secs(10),
            zero_length: "ignore".into(),
            tls: None,
        }
    }
}

impl Default for IssuerFile {
    fn default() -> Self {
        IssuerFile {
            name: "default".into(),
            hosts: Vec::new(),
            dialect: DEFAULT_DIALECT.into(),
            header: DEFAULT_HEADER.into(),
            tpdu: None,
            connections_per_host: 1,
            response_timeout: Duration::from_secs(5),
            retry_codes: engine::Policy::RETRY_CODES
                .iter()
                .map(ToString::to_string)
                .collect(),
            inquiry_codes: engine::Policy::INQUIRY_CODES
                .iter()
                .map(|code| String::from_utf8_lossy(code).into_owned())
                .collect(),
            tls: None,
        }
    }
}

impl Default for IdempotencyFile {
    fn default() -> Self {
        let d = engine::Idempotency::default();
        IdempotencyFile {
            window: d.window,
            max_entries: d.max_entries,
        }
    }
}

impl Default for ReversalsFile {
    fn default() -> Self {
        let d = engine::Reversal::default();
        ReversalsFile {
            backoff: d.backoff,
            max_backoff: d.max_backoff,
            max_attempts: d.max_attempts,
            expiry: d.expiry,
        }
    }
}
