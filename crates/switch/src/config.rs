//! The switch's configuration: a TOML file (every key optional, unknown keys refused) and the checks that
//! turn it into settings the listeners, links and engine can trust.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use iso8583::Spec;
use serde::Deserialize;
use wire::{FrameCodec, LengthHeader, Tpdu, ZeroLength};

use crate::tls::{Acceptor, Connector, IssuerTlsFile, ListenerTlsFile};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{key}: {reason}")]
    Invalid { key: String, reason: String },
}

fn invalid(key: impl Into<String>, reason: impl ToString) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.to_string(),
    }
}

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
    pub reversals: ReversalsFile,
    pub journal: JournalFile,
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
    pub card_key: Option<String>,
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
            (Some(hex), _) => Some(parse_key("journal.card_key", hex)?),
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

/// A key for a switch whose journal does not outlive it.
fn random_key() -> [u8; 16] {
    std::array::from_fn(|_| fastrand::u8(..))
}

fn parse_key(key: &str, hex: &str) -> Result<[u8; 16], ConfigError> {
    let mut out = [0u8; 16];
    hex::decode_to_slice(hex.trim(), &mut out)
        .map_err(|_| invalid(key, "must be 32 hex digits"))?;
    Ok(out)
}

/// The journal's checked settings.
#[derive(Debug, Clone)]
pub struct JournalSettings {
    pub dir: Option<PathBuf>,
    pub options: tranlog::Options,
    pub on_corrupt: tranlog::OnCorrupt,
    /// As configured; see [`crate::open_journal`] for where it comes from otherwise.
    pub card_key: Option<[u8; 16]>,
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
            reversals: ReversalsFile::default(),
            journal: JournalFile::default(),
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

impl File {
    pub fn read(path: &Path) -> Result<File, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        File::parse(&path.display().to_string(), &text)
    }

    pub fn parse(origin: &str, text: &str) -> Result<File, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_owned(),
            message: e.to_string(),
        })
    }
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
            issuers.push(engine::Issuer {
                name: f.name.clone(),
                spec,
                links: f.hosts.len() * per_host,
                response_timeout: f.response_timeout,
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
            },
            admin_listen: self.admin_listen,
            grace_period: self.grace_period,
            journal,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
        acquirer_id = "12345"
        grace_period = "5s"
        default_issuer = "visa"
        [[listeners]]
        address = "127.0.0.1:0"
        dialect = "iso87bcd"
        header = "binary2"
        tpdu = true
        [[issuers]]
        name = "visa"
        hosts = ["127.0.0.1:9583", "127.0.0.1:9584"]
        connections_per_host = 2
        response_timeout = "3s"
        [[issuers]]
        name = "mc"
        hosts = ["127.0.0.1:9585"]
        [[routes]]
        prefix = "51"
        issuer = "mc"
        [idempotency]
        window = "1h"
        max_entries = 1000
        [reversals]
        backoff = "2s"
        max_attempts = 10
        expiry = "1d"
    "#;

    #[test]
    fn a_full_file_checks() {
        let s = File::parse("t", FULL).unwrap().check().unwrap();
        assert_eq!(s.links.len(), 5);
        assert_eq!(s.engine.issuers[0].links, 4);
        assert_eq!(s.engine.issuers[0].response_timeout, Duration::from_secs(3));
        assert_eq!(s.engine.routes, [("51".to_string(), 1)]);
        assert_eq!(s.engine.default_route, Some(0));
        assert_eq!(s.listeners[0].spec.name(), "iso87bcd");
        assert_eq!(s.engine.reversal.expiry, Duration::from_secs(86400));
    }

    fn error(text: &str) -> String {
        match File::parse("t", text).and_then(|f| f.check()) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn errors_name_the_key_and_the_reason() {
        let cases = [
            ("bogus = 1", "unknown field `bogus`"),
            ("[idempotency]\nwindow = \"soon\"", "window"),
            (
                &FULL.replace("iso87bcd", "iso99"),
                "listeners[0].dialect: unknown dialect",
            ),
            (
                &FULL.replace("header = \"binary2\"", "header = \"binary3\""),
                "listeners[0].header: unknown header",
            ),
            (
                &FULL.replace("issuer = \"mc\"", "issuer = \"amex\""),
                "routes[0].issuer: no issuer named \"amex\"",
            ),
            (
                &FULL.replace("prefix = \"51\"", "prefix = \"5x\""),
                "routes[0].prefix: must be digits",
            ),
            (
                &FULL.replace("connections_per_host = 2", "connections_per_host = 0"),
                "issuers[0].connections_per_host: must be at least 1",
            ),
            (
                &FULL.replace("max_attempts = 10", "max_attempts = 0"),
                "reversals.max_attempts",
            ),
            (
                &FULL.replace("acquirer_id = \"12345\"", "acquirer_id = \"ACQ\""),
                "acquirer_id: must be",
            ),
            (
                &FULL.replace("name = \"mc\"", "name = \"visa\""),
                "issuers[1].name: must be present and unique",
            ),
            (
                &FULL.replace("[[listeners]]", "[[listener]]"),
                "unknown field `listener`",
            ),
        ];
        for (text, expected) in cases {
            let e = error(text);
            assert!(e.contains(expected), "{e:?} should contain {expected:?}");
        }
    }
}
