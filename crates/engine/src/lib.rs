//! The sans-IO transaction engine of acquiro.
//!
//! [`Engine::handle`] takes one [`Event`] and the time, and appends the [`Action`]s the shell must carry
//! out, in order. It owns every decision — duplicates, routing, upstream STANs, matching, timeouts,
//! reversals — and no socket, task or clock, so tests and simulations drive it directly.
//!
//! The invariant it keeps: for every transaction, the issuer's net debit equals what the terminal was
//! told. An approval nobody could be told of, and every request whose answer did not come in time, is
//! reversed until the issuer acknowledges it.

mod config;
mod engine;
mod event;
mod fields;
mod idempotency;
mod journal;
mod links;
mod recovery;
mod routes;
mod saf;
mod stats;
mod terminal;
mod upstream;

pub use config::{Config, Idempotency, Issuer, Reversal};
pub use engine::Engine;
pub use event::{Action, ConnId, Event, LinkId, Now, TimerId, TxnId};
pub use journal::{Card, Original, Received, Record, Step};
pub use recovery::{Recovered, Recovery};
pub use stats::Stats;
