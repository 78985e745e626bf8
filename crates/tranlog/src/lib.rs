//! The durable transaction journal of acquiro.
//!
//! Append-only segment files of checksummed, chained records (the layout is in `frame.rs`), written by one
//! thread with group commit ([`Writer`]), read back in order at every start ([`scan()`]) and queried for
//! dispute evidence through per-segment indexes ([`lookup()`]). Records are the engine's [`engine::Record`]s: they never hold a card number in
//! clear, a PIN block, track data or EMV data.

mod frame;
mod index;
mod lock;
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

/// The bytes of the format, for whatever writes a journal without a [`Writer`] (the engine's simulation
/// keeps its disk in memory): the same encoding the writer uses, read back by [`scan()`].
pub mod format {
    use std::path::{Path, PathBuf};

    use engine::Record;

    pub use crate::frame::segment_header;

    /// Where the segment whose first record is `first_seq` lives in `dir`.
    pub fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
        crate::segment::path(dir, first_seq)
    }

    /// Appends record `seq`, chained after the record whose checksum is `prev`; returns its checksum.
    pub fn encode(
        record: &Record,
        seq: u64,
        prev: u32,
        out: &mut Vec<u8>,
    ) -> Result<u32, crate::Error> {
        crate::frame::encode(record, seq, prev, out)
            .map_err(|e| crate::Error::Io(std::io::Error::other(e)))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("journal i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0} is not a journal segment (bad header)")]
    NotASegment(PathBuf),
    #[error("corrupt journal record in {at}: {what}")]
    Corrupt { at: Position, what: String },
    /// Another process repairs or writes this journal (see `lock.rs`).
    #[error(
        "journal directory {} is in use by another process (pid {holder}): one switch per journal directory",
        dir.display()
    )]
    InUse { dir: PathBuf, holder: String },
}
