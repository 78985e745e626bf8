//! The engine's settings. The switch builds them from its TOML configuration.

use std::time::Duration;

use iso8583::{ResponseCode, Spec};

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
    pub card_key: CardKey,
    /// Cluster mode: the engine is one of several sharing a store. A new request's key is claimed there
    /// before it is forwarded (see `claims.rs`), and a terminal's settlement reads its batch from there,
    /// as every node recorded it (see `settlement.rs`).
    pub shared_store: bool,
    /// Cluster mode: how long after it was told RC 91 a terminal may still send the same request again,
    /// or take an answer to it (its retransmits, each after its own timeout). The switch's reversal in
    /// a terminal's name (see `store_reversals.rs`) waits this long before the store's records decide
    /// it: a terminal heard from again meanwhile, on any node, did not take that 91.
    pub terminal_patience: Duration,
    /// When the business date turns: DE15 (settlement date) is set from it when a request lacks one.
    pub cutover: crate::Cutover,
    /// The STANs (DE11) this switch numbers its upstream messages with, on every link.
    pub stans: Stans,
}

/// The STANs a switch numbers its upstream messages with: all of them (000001–999999) for a single
/// switch, a block of its own for each node of a cluster, so that two nodes never send one issuer the
/// same STAN in the same second of DE7 under the same DE32: an issuer that matches a reversal by DE90
/// (original STAN, DE7, DE32) alone would apply one node's reversal to the other's purchase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stans {
    pub first: u32,
    pub last: u32,
}

impl Stans {
    /// Every STAN, for a single switch.
    pub const ALL: Stans = Stans {
        first: 1,
        last: 999_999,
    };
    /// How many blocks the STANs are cut into for a cluster's nodes: the most nodes live at once.
    pub const BLOCKS: u32 = 10;
    const BLOCK: u32 = 100_000;

    /// Block `n` (0–9) of a cluster's: STANs `n`00000 to `n`99999, less 000000.
    pub fn block(n: u32) -> Stans {
        assert!(n < Stans::BLOCKS, "STAN block {n}");
        Stans {
            first: (n * Stans::BLOCK).max(1),
            last: n * Stans::BLOCK + Stans::BLOCK - 1,
        }
    }

    /// The STAN after `stan`, back to the first after the last (and the first for 0, none yet).
    pub(crate) fn after(self, stan: u32) -> u32 {
        if stan < self.first || stan >= self.last {
            self.first
        } else {
            stan + 1
        }
    }

    pub(crate) fn len(self) -> u32 {
        self.last - self.first + 1
    }
}

impl Default for Stans {
    fn default() -> Self {
        Stans::ALL
    }
}

/// `100000-199999`: as the node's log and `acquiro cluster status` show a block.
impl std::fmt::Display for Stans {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:06}-{:06}", self.first, self.last)
    }
}

/// The key of the card's keyed hashes. Key material: `Debug` never shows it, so that settings printed
/// for a diagnosis cannot leak it; the bytes are read through `Deref`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CardKey(pub [u8; 16]);

impl std::fmt::Debug for CardKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CardKey([redacted])")
    }
}

impl std::ops::Deref for CardKey {
    type Target = [u8; 16];

    fn deref(&self) -> &[u8; 16] {
        &self.0
    }
}

#[derive(Debug, Clone)]
pub struct Issuer {
    pub name: String,
    pub spec: &'static Spec,
    /// Upstream connections (hosts × connections per host); the engine numbers them in issuer order.
    pub links: usize,
    pub response_timeout: Duration,
    pub policy: Policy,
}

/// What an issuer's codes mean, where issuers differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Answers to a reversal that mean "try again": it stays queued and is repeated. Any other answer
    /// ends it (approved, or the issuer holds nothing to reverse).
    pub retry_codes: Vec<ResponseCode>,
    /// Processing codes (the first two digits of DE3) that move no money, such as a balance inquiry:
    /// nothing stands at the issuer after one, so it is never reversed. Every other code moves money
    /// (a debit, or a credit such as a refund) and is reversed when its outcome is in doubt.
    pub inquiry_codes: Vec<[u8; 2]>,
}

impl Policy {
    /// The default acknowledgement policy: issuer unavailable (91) and system error (96) are retried.
    pub const RETRY_CODES: [ResponseCode; 2] =
        [ResponseCode::ISSUER_UNAVAILABLE, ResponseCode::SYSTEM_ERROR];
    /// Balance inquiry (30) and its ISO 8583:1987 variant (31).
    pub const INQUIRY_CODES: [[u8; 2]; 2] = [*b"30", *b"31"];

    /// Whether a request whose processing code (DE3) starts with `processing` may leave money
    /// standing at the issuer. A request without a readable code is taken to move money: reversing it
    /// is safe.
    pub fn moves_money(&self, processing: Option<[u8; 2]>) -> bool {
        !processing.is_some_and(|code| self.inquiry_codes.contains(&code))
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            retry_codes: Policy::RETRY_CODES.to_vec(),
            inquiry_codes: Policy::INQUIRY_CODES.to_vec(),
        }
    }
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
