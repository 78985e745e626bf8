//! The checks that turn a configuration file into settings: each value checked, errors naming the key
//! and the reason.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use iso8583::Spec;
use wire::{FrameCodec, LengthHeader, Tpdu, ZeroLength};

use super::file::{CARD_KEY_ENV, ClusterFile, DATABASE_ENV, File, JournalFile, NODE_ENV};
use super::{ConfigError, invalid};
use crate::tls::{Acceptor, Connector};

/// The journal's checked settings.
#[derive(Debug, Clone)]
pub struct JournalSettings {
    pub dir: Option<PathBuf>,
    pub options: tranlog::Options,
    pub on_corrupt: tranlog::OnCorrupt,
    /// As configured; see [`crate::open_journal`] for where it comes from otherwise.
    pub card_key: Option<engine::CardKey>,
}

impl JournalFile {
    fn check(&self) -> Result<JournalSettings, ConfigError> {
        let sync = match self.sync.as_str() {
            "always" => tranlog::Sync::Always,
            "batch" => tranlog::Sync::Batch,
            "none" => tranlog::Sync::None,
            _ => return Err(invalid("journal.sync", "must be always, batch or none")),
        };
        let on_corrupt = match self.on_corrupt.as_str() {
            "stop" => tranlog::OnCorrupt::Stop,
            "skip" => tranlog::OnCorrupt::Skip,
            _ => return Err(invalid("journal.on_corrupt", "must be stop or skip")),
        };
        if self.segment_bytes < 4096 {
            return Err(invalid("journal.segment_bytes", "must be at least 4096"));
        }
        let from_env = std::env::var(CARD_KEY_ENV).ok();
        let card_key = match (&self.card_key, from_env) {
            (Some(hex), _) => Some(parse_key("journal.card_key", &hex.0)?),
            (None, Some(hex)) => Some(parse_key(CARD_KEY_ENV, &hex)?),
            (None, None) => None,
        };
        Ok(JournalSettings {
            dir: self.dir.clone(),
            options: tranlog::Options {
                sync,
                batch_window: self.batch_window,
                segment_bytes: self.segment_bytes,
                retain_age: self.retain_age,
                retain_bytes: self.retain_bytes,
            },
            on_corrupt,
            card_key,
        })
    }
}

/// Cluster mode's checked settings.
#[derive(Clone)]
pub struct ClusterSettings {
    pub node: String,
    /// The connection string: it may hold a password, so `Debug` does not show it.
    pub database: String,
    pub lease: Duration,
    /// Records older than this are dropped by day.
    pub retain: Option<Duration>,
    /// A database call on the path of a transaction or of the lease unanswered for this long: the
    /// connection counts as lost.
    pub timeout: Duration,
    /// The same on every node (the database refuses a node whose key differs).
    pub card_key: engine::CardKey,
    /// Where the node keeps the pleas it holds (see `pleas_file.rs`).
    pub pleas_file: Option<std::path::PathBuf>,
    pub terminal_patience: Duration,
}

impl std::fmt::Debug for ClusterSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSettings")
            .field("node", &self.node)
            .field("database", &"[not shown: it may hold a password]")
            .field("lease", &self.lease)
            .field("retain", &self.retain)
            .field("timeout", &self.timeout)
            .field("card_key", &self.card_key)
            .field("pleas_file", &self.pleas_file)
            .field("terminal_patience", &self.terminal_patience)
            .finish()
    }
}

impl ClusterFile {
    /// `needed`: how long recovery may need a record (the idempotency window, a reversal's expiry).
    fn check(
        &self,
        card_key: Option<engine::CardKey>,
        needed: Duration,
    ) -> Result<ClusterSettings, ConfigError> {
        let node = self.node.clone().or_else(|| std::env::var(NODE_ENV).ok());
        let node = match node {
            Some(n) if !n.is_empty() && n.len() <= 64 => n,
            _ => {
                let reason = format!("required (or {NODE_ENV}, or --node): 1 to 64 characters");
                return Err(invalid("cluster.node", reason));
            }
        };
        let database = self
            .database
            .as_ref()
            .map(|d| d.0.clone())
            .or_else(|| std::env::var(DATABASE_ENV).ok());
        let Some(database) = database else {
            return Err(invalid(
                "cluster.database",
                format!("required (or {DATABASE_ENV}, or --database)"),
            ));
        };
        // Its TLS settings and files, here rather than at the first connection.
        if let Err(e) = cluster::check_connection_string(&database) {
            return Err(invalid("cluster.database", e.to_string()));
        }
        let Some(card_key) = card_key else {
            return Err(invalid(
                "journal.card_key",
                format!("cluster mode needs the key every node shares (or {CARD_KEY_ENV})"),
            ));
        };
        // A day is dropped whole: one more day, so that no record still needed is in it.
        if let Some(retain) = self.retain
            && retain < needed + Duration::from_secs(24 * 3600)
        {
            let reason = format!(
                "must be at least a day longer than the idempotency window and the reversal expiry ({}s)",
                needed.as_secs()
            );
            return Err(invalid("cluster.retain", reason));
        }
        if let Some(file) = &self.pleas_file {
            let dir = file.parent().filter(|d| !d.as_os_str().is_empty());
            if !dir.unwrap_or(std::path::Path::new(".")).is_dir() {
                let reason = format!("{}: its directory does not exist", file.display());
                return Err(invalid("cluster.pleas_file", reason));
            }
        }
        Ok(ClusterSettings {
            node,
            database,
            lease: nonzero("cluster.lease".into(), self.lease)?,
            retain: self.retain,
            timeout: nonzero("cluster.timeout".into(), self.timeout)?,
            card_key,
            pleas_file: self.pleas_file.clone(),
            terminal_patience: self.terminal_patience,
        })
    }
}

/// A key for a switch whose journal does not outlive it.
fn random_key() -> engine::CardKey {
    engine::CardKey(std::array::from_fn(|_| fastrand::u8(..)))
}

fn parse_key(key: &str, hex: &str) -> Result<engine::CardKey, ConfigError> {
    let mut out = [0u8; 16];
    hex::decode_to_slice(hex.trim(), &mut out)
        .map_err(|_| invalid(key, "must be 32 hex digits"))?;
    Ok(engine::CardKey(out))
}

/// A checked configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listeners: Vec<Listener>,
    pub links: Vec<Link>,
    pub engine: engine::Config,
    pub admin_listen: Option<SocketAddr>,
    pub grace_period: Duration,
    pub journal: JournalSettings,
    /// Cluster mode: the journal is on PostgreSQL instead.
    pub cluster: Option<ClusterSettings>,
    /// Worker threads of the runtime, if configured.
    pub workers: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct Listener {
    pub address: SocketAddr,
    pub spec: &'static Spec,
    pub codec: FrameCodec,
    pub max_connections: usize,
    pub max_in_flight: usize,
    pub idle_timeout: Duration,
    pub read_timeout: Duration,
    pub first_frame_timeout: Duration,
    pub tls: Option<Acceptor>,
}

/// One upstream connection, in the engine's link order.
#[derive(Debug, Clone)]
pub struct Link {
    pub issuer: String,
    pub host: String,
    pub spec: &'static Spec,
    pub codec: FrameCodec,
    pub tpdu: Option<Tpdu>,
    pub tls: Option<Connector>,
}

fn dialect(key: String, name: &str) -> Result<&'static Spec, ConfigError> {
    dialects::load(name).map_err(|e| invalid(key, e))
}

fn header(key: String, name: &str) -> Result<LengthHeader, ConfigError> {
    name.parse().map_err(|e: String| invalid(key, e))
}

fn nonzero(key: String, value: Duration) -> Result<Duration, ConfigError> {
    if value.is_zero() {
        return Err(invalid(key, "must be more than zero"));
    }
    Ok(value)
}

fn positive(key: String, value: usize) -> Result<usize, ConfigError> {
    if value == 0 {
        return Err(invalid(key, "must be at least 1"));
    }
    Ok(value)
}

impl File {
    /// Checks every value; errors name the key and the reason.
    pub fn check(&self) -> Result<Settings, ConfigError> {
        if self.listeners.is_empty() {
            return Err(invalid("listeners", "at least one listener is needed"));
        }
        if self.issuers.is_empty() {
            return Err(invalid("issuers", "at least one issuer is needed"));
        }
        if self.acquirer_id.is_empty()
            || self.acquirer_id.len() > 11
            || !self.acquirer_id.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(invalid("acquirer_id", "must be 1 to 11 digits"));
        }
        let listeners = self
            .listeners
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let key = |k: &str| format!("listeners[{i}].{k}");
                let zero_length = match l.zero_length.as_str() {
                    "ignore" => ZeroLength::Ignore,
                    "reject" => ZeroLength::Reject,
                    _ => return Err(invalid(key("zero_length"), "must be ignore or reject")),
                };
                let codec = FrameCodec::new(header(key("header"), &l.header)?)
                    .with_tpdu(l.tpdu)
                    .with_max_frame(positive(key("max_frame"), l.max_frame)?)
                    .with_zero_length(zero_length);
                Ok(Listener {
                    address: l.address,
                    spec: dialect(key("dialect"), &l.dialect)?,
                    codec,
                    max_connections: positive(key("max_connections"), l.max_connections)?,
                    max_in_flight: positive(key("max_in_flight"), l.max_in_flight)?,
                    idle_timeout: nonzero(key("idle_timeout"), l.idle_timeout)?,
                    read_timeout: nonzero(key("read_timeout"), l.read_timeout)?,
                    first_frame_timeout: nonzero(
                        key("first_frame_timeout"),
                        l.first_frame_timeout,
                    )?,
                    tls: l
                        .tls
                        .as_ref()
                        .map(|t| t.check().map_err(|e| invalid(key("tls"), e)))
                        .transpose()?,
                })
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        let mut issuers = Vec::new();
        let mut links = Vec::new();
        for (i, f) in self.issuers.iter().enumerate() {
            let key = |k: &str| format!("issuers[{i}].{k}");
            if f.name.is_empty() || self.issuers[..i].iter().any(|o| o.name == f.name) {
                return Err(invalid(key("name"), "must be present and unique"));
            }
            if f.hosts.is_empty() {
                return Err(invalid(key("hosts"), "at least one host is needed"));
            }
            nonzero(key("response_timeout"), f.response_timeout)?;
            let spec = dialect(key("dialect"), &f.dialect)?;
            let tpdu = f
                .tpdu
                .as_deref()
                .map(|t| t.parse::<Tpdu>().map_err(|e| invalid(key("tpdu"), e)))
                .transpose()?;
            let codec =
                FrameCodec::new(header(key("header"), &f.header)?).with_tpdu(tpdu.is_some());
            let per_host = positive(key("connections_per_host"), f.connections_per_host)?;
            for host in &f.hosts {
                let tls = f
                    .tls
                    .as_ref()
                    .map(|t| t.check(host).map_err(|e| invalid(key("tls"), e)))
                    .transpose()?;
                for _ in 0..per_host {
                    links.push(Link {
                        issuer: f.name.clone(),
                        host: host.clone(),
                        spec,
                        codec,
                        tpdu,
                        tls: tls.clone(),
                    });
                }
            }
            let two = |name: &str, codes: &[String], ok: fn(&u8) -> bool, what: &str| {
                codes
                    .iter()
                    .map(|code| match code.as_bytes() {
                        &[a, b] if ok(&a) && ok(&b) => Ok([a, b]),
                        _ => Err(invalid(key(name), format!("{code:?} is not {what}"))),
                    })
                    .collect::<Result<Vec<_>, _>>()
            };
            let policy = engine::Policy {
                retry_codes: two(
                    "retry_codes",
                    &f.retry_codes,
                    u8::is_ascii_alphanumeric,
                    "a two-character response code",
                )?
                .into_iter()
                .map(iso8583::ResponseCode)
                .collect(),
                inquiry_codes: two(
                    "inquiry_codes",
                    &f.inquiry_codes,
                    u8::is_ascii_digit,
                    "the two digits of a processing code",
                )?,
            };
            issuers.push(engine::Issuer {
                name: f.name.clone(),
                spec,
                links: f.hosts.len() * per_host,
                response_timeout: f.response_timeout,
                policy,
            });
        }
        let issuer_index = |key: String, name: &str| {
            self.issuers
                .iter()
                .position(|i| i.name == name)
                .ok_or_else(|| invalid(key, format!("no issuer named {name:?}")))
        };
        let routes = self
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| {
                if r.prefix.is_empty() || !r.prefix.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(invalid(format!("routes[{i}].prefix"), "must be digits"));
                }
                Ok((
                    r.prefix.clone(),
                    issuer_index(format!("routes[{i}].issuer"), &r.issuer)?,
                ))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // With one issuer and no routes, every card goes to it.
        let default_route = match (&self.default_issuer, self.issuers.len(), routes.is_empty()) {
            (Some(name), _, _) => Some(issuer_index("default_issuer".into(), name)?),
            (None, 1, true) => Some(0),
            (None, _, _) => None,
        };
        let r = &self.reversals;
        if r.max_attempts == 0 {
            return Err(invalid("reversals.max_attempts", "must be at least 1"));
        }
        nonzero("reversals.backoff".into(), r.backoff)?;
        let journal = self.journal.check()?;
        let cluster = self
            .cluster
            .as_ref()
            .map(|c| {
                let needed = self.idempotency.window.max(self.reversals.expiry);
                c.check(journal.card_key, needed)
            })
            .transpose()?;
        Ok(Settings {
            listeners,
            links,
            engine: engine::Config {
                issuers,
                routes,
                default_route,
                idempotency: engine::Idempotency {
                    window: self.idempotency.window,
                    max_entries: positive(
                        "idempotency.max_entries".into(),
                        self.idempotency.max_entries,
                    )?,
                },
                reversal: engine::Reversal {
                    backoff: r.backoff,
                    max_backoff: r.max_backoff.max(r.backoff),
                    max_attempts: r.max_attempts,
                    expiry: r.expiry,
                },
                acquirer_id: self.acquirer_id.clone(),
                echo_interval: self.echo_interval,
                // Replaced when the journal is opened (the key must outlive the process).
                card_key: journal.card_key.unwrap_or_else(random_key),
                shared_store: false,
                // Cluster mode's, set when the journal is opened.
                terminal_patience: Duration::ZERO,
                cutover: self
                    .settlement
                    .cutover
                    .parse()
                    .map_err(|e: String| invalid("settlement.cutover".to_string(), e))?,
                // A cluster node's own block, given when it joins.
                stans: engine::Stans::ALL,
            },
            admin_listen: self.admin_listen,
            grace_period: self.grace_period,
            journal,
            cluster,
            workers: self
                .workers
                .map(|n| positive("workers".into(), n))
                .transpose()?,
        })
    }
}
