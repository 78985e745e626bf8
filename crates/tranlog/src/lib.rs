//! The durable transaction journal of acquiro.
//!
//! Append-only segment files of checksummed, chained records (the layout is in `frame.rs`), written by one
//! thread with group commit ([`Writer`]), read back in order at every start ([`scan()`]) and queried for
//! dispute evidence through per-segment indexes ([`lookup()`]). Records are the engine's [`engine::Record`]s: they never hold a card number in
//! clear, a PIN block, track data or EMV data.

mod frame;
mod index;
mod query;
mod scan;
mod segment;
mod writer;

use std::path::PathBuf;

pub use index::Key;
pub use query::{Query, lookup, verify_indexes};
pub use scan::{Mode, OnCorrupt, Position, Problem, Scanned, scan};
pub use segment::Segment;
pub use writer::{Batch, Options, Sync, Writer};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("journal i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0} is not a journal segment (bad header)")]
    NotASegment(PathBuf),
    #[error("corrupt journal record in {at}: {what}")]
    Corrupt { at: Position, what: String },
}
