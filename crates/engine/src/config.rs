//! The engine's settings. The switch builds them from its TOML configuration.

use std::time::Duration;

use iso8583::Spec;

#[derive(Debug, Clone)]
pub struct Config {
    pub issuers: Vec<Issuer>,
    /// BIN prefix (digits) → index into `issuers`. The longest matching prefix wins.
    pub routes: Vec<(String, usize)>,
    /// Issuer for cards no prefix matches; without one they get RC 92 (no routing to the issuer).
    pub default_route: Option<usize>,
    pub idempotency: Idempotency,
    pub reversal: Reversal,
    /// DE32, acquiring institution id, set on every forwarded request.
    pub acquirer_id: String,
    /// An idle link sends an echo (0800, DE70=301) after this long without traffic.
    pub echo_interval: Duration,
    /// Key of the keyed hashes of card numbers: the journal's card hash and the duplicate fingerprint.
    /// It must stay the same across restarts for recovery to recognise retransmits.
    pub card_key: [u8; 16],
    /// Cluster mode: a new request's key is claimed in the store every node shares before it is
    /// forwarded (see `claims.rs`).
    pub shared_keys: bool,
}

#[derive(Debug, Clone)]
pub struct Issuer {
    pub name: String,
    pub spec: &'static Spec,
    /// Upstream connections (hosts × connections per host); the engine numbers them in issuer order.
    pub links: usize,
    pub response_timeout: Duration,
    /// Answers to a reversal that mean "try again": it stays queued and is repeated. Any other answer
    /// ends it (approved, or the issuer holds nothing to reverse).
    pub retry_codes: Vec<iso8583::ResponseCode>,
}

impl Issuer {
    /// The default acknowledgement policy: issuer unavailable (91) and system error (96) are retried.
    pub const RETRY_CODES: [iso8583::ResponseCode; 2] = [
        iso8583::ResponseCode::ISSUER_UNAVAILABLE,
        iso8583::ResponseCode::SYSTEM_ERROR,
    ];
}

#[derive(Debug, Clone, Copy)]
pub struct Idempotency {
    /// How long a completed request's answer is kept for replay.
    pub window: Duration,
    /// The most keys kept; the oldest completed ones go first.
    pub max_entries: usize,
}

#[derive(Debug, Clone, Copy)]
pub struct Reversal {
    /// Wait before the first repeat; doubled each attempt up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// Attempts (the 0400 and its 0401 repeats) before giving up.
    pub max_attempts: u32,
    /// Age after which an unacknowledged reversal is given up and reported for manual action.
    pub expiry: Duration,
}

impl Default for Idempotency {
    fn default() -> Self {
        Idempotency {
            window: Duration::from_secs(24 * 3600),
            max_entries: 1_000_000,
        }
    }
}

impl Default for Reversal {
    fn default() -> Self {
        Reversal {
            backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(300),
            max_attempts: 100,
            expiry: Duration::from_secs(24 * 3600),
        }
    }
}
