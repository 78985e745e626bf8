//! The sans-IO transaction engine of acquiro.
//!
//! [`Engine::handle`] takes one [`Event`] and the time, and appends the [`Action`]s the shell must carry
//! out, in order; [`Engine::poll_timeout`] and [`Engine::handle_timeout`] run its timers. It owns every
//! decision — duplicates, routing, upstream STANs, matching, timeouts, reversals — and no socket, task or
//! clock, so tests and simulations drive it directly. Its effects leave through the one write-ahead gate,
//! [`Outbox`], which the switch and the simulation both run.
//!
//! The invariant it keeps: for every transaction, the issuer's net debit equals what the terminal was
//! told. An approval nobody could be told of, and every request whose answer did not come in time, is
//! reversed until the issuer acknowledges it.

mod admission;
mod advice;
mod books;
mod claims;
mod config;
mod engine;
mod event;
mod fields;
mod fifo;
mod idempotency;
mod journal;
mod licence;
mod links;
mod outbox;
mod owed;
mod places;
mod recovery;
mod reversal;
mod routes;
mod saf;
mod settlement;
mod stats;
mod store_reversals;
mod terminal;
mod timers;
mod upstream;

/// A map keyed by what the switch itself makes (transaction ids, timers, its own STANs): no peer chooses
/// these keys, so a fast hasher serves, where a map keyed by wire values keeps std's keyed SipHash.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// A [`FastMap`] for state that grows with traffic (the books): it moves its entries to a larger table
/// a few on each insert instead of all at once, so that no message waits for a million of them
/// (`benches/engine_tail.rs` measures it).
pub(crate) type GrowingMap<K, V> = griddle::HashMap<K, V, foldhash::fast::RandomState>;
pub(crate) type GrowingSet<T> = griddle::HashSet<T, foldhash::fast::RandomState>;

pub use books::{Batch, Books, Closed, Place, Settled, Totals, net_by_rrn, totals};
pub use claims::{Claim, Holder, STALLED, provisional, withdrawn};
pub use config::{CardKey, Config, Idempotency, Issuer, Policy, Reversal, Stans};
pub use engine::Engine;
pub use event::{Action, ConnId, Event, LinkId, Now, TimerId, TxnId, Unanswered};
pub use fields::Cutover;
pub use journal::{Card, Original, Received, Record, Step, stored_micros};
pub use licence::Licence;
pub use outbox::{Gate, Outbox};
pub use recovery::{Recovered, Recovery};
pub use settlement::OpenBatch;
pub use stats::{Owed, Stats};
pub use store_reversals::Plea;
