//! Counters of what the engine decided, for metrics and tests.

/// Running totals since the engine started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub requests: u64,
    pub forwarded: u64,
    pub answered: u64,
    /// Refused locally with RC 30 (format error).
    pub format_errors: u64,
    /// No issuer link up (RC 91 without forwarding) or no route (RC 92).
    pub unavailable: u64,
    pub timeouts: u64,
    pub late_answers: u64,
    /// Answers for requests nobody is waiting for any more (no terminal connection left).
    pub undeliverable: u64,
    /// Issuer messages that matched nothing in flight.
    pub unmatched: u64,
    pub duplicates_joined: u64,
    pub duplicates_replayed: u64,
    pub duplicates_rejected: u64,
    /// Cluster mode: requests told RC 91 before the store said whose their key is, whose key's holder
    /// is then reversed (see `Engine::reverse_unknowing`).
    pub refused_unknowing: u64,
    /// Cluster mode: pleas other nodes left in the store, taken on (see `engine::Plea`).
    pub pleas_taken: u64,
    /// Idempotency keys dropped before their window ended because the table was full.
    pub idempotency_evictions: u64,
    /// Transactions of open batches dropped because the switch's record of them was full (a terminal
    /// that does not settle): that terminal's next settlement is out of balance.
    pub batch_evictions: u64,
    pub reversals: Owed,
    pub advices: Owed,
    pub sign_on_failures: u64,
    pub echo_failures: u64,
}

/// What the store-and-forward queue did with one kind of what it owes issuers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Owed {
    pub queued: u64,
    /// First attempts.
    pub sent: u64,
    pub repeated: u64,
    pub acknowledged: u64,
    /// Never acknowledged before expiry: manual action.
    pub expired: u64,
}
