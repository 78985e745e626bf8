//! Dispute queries: every record of the transactions a key names, found through the segment indexes
//! (see `index.rs`) and read with positioned reads, each record checked against its checksum.

use std::collections::BTreeSet;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use engine::Record;

use crate::frame::{self, FRAME_HEADER, MAX_PAYLOAD, SEGMENT_HEADER};
use crate::index::{Index, Key};
use crate::scan::{Position, Problem};
use crate::{Error, segment};

/// Transactions named by any of `keys`; `Last4` keys only among segments with records in
/// `from..to` (the caller checks each transaction's own time).
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub keys: Vec<Key>,
    pub from: Option<SystemTime>,
    pub to: Option<SystemTime>,
}

struct Indexed {
    path: PathBuf,
    file: File,
    index: Index,
}

/// Every record of every transaction the query may name, grouped by transaction in journal order.
/// Candidates, not answers: a key hash can collide, so the caller keeps the transactions whose own
/// records match. Closed segments without a current index get one written (when the directory allows);
/// the segment being written is searched for the keys' text, and only records holding it are decoded.
pub fn lookup(dir: &Path, query: &Query) -> Result<Vec<Record>, Error> {
    let segments = open(dir, &query.keys)?;
    let mut txns = BTreeSet::new();
    for key in &query.keys {
        for s in &segments {
            let in_range = query.to.is_none_or(|to| s.index.earliest < to)
                && query.from.is_none_or(|from| s.index.latest >= from);
            if matches!(key, Key::Last4(_)) && !in_range {
                continue;
            }
            txns.extend(s.index.txns_named(key)?);
        }
    }
    let mut records = Vec::new();
    for txn in txns {
        for s in &segments {
            for offset in s.index.offsets_of(txn)? {
                records.push(read(s, offset)?);
            }
        }
    }
    Ok(records)
}

/// Every segment with its index, oldest first (the one being written, with `keys` only).
fn open(dir: &Path, keys: &[Key]) -> Result<Vec<Indexed>, Error> {
    let paths = segment::list(dir)?;
    let mut segments = Vec::with_capacity(paths.len());
    for (i, path) in paths.iter().enumerate() {
        let closed = i + 1 < paths.len();
        let opened = File::open(path).and_then(|file| Ok((file.metadata()?.len(), file)));
        let (len, file) = match opened {
            Ok(opened) => opened,
            // Deleted by retention since the listing.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e.into()),
        };
        if !closed && len < SEGMENT_HEADER as u64 {
            continue; // created, and its header never written: a crash the next start cleans up
        }
        let index = if closed {
            Index::load(path, len)?
        } else {
            Index::partial(path, keys)?
        };
        segments.push(Indexed {
            path: path.clone(),
            file,
            index,
        });
    }
    Ok(segments)
}

/// The record at `offset`, checked.
fn read(s: &Indexed, offset: u64) -> Result<Record, Error> {
    let corrupt = |what: String| Error::Corrupt {
        at: Position {
            segment: s.path.clone(),
            offset,
        },
        what,
    };
    let mut header = [0u8; FRAME_HEADER];
    s.file.read_exact_at(&mut header, offset)?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if len > MAX_PAYLOAD {
        return Err(corrupt(frame::Bad::Length(len as u32).to_string()));
    }
    let mut bytes = vec![0u8; FRAME_HEADER + len];
    s.file.read_exact_at(&mut bytes, offset)?;
    let frame = frame::decode(&bytes).map_err(|bad| corrupt(bad.to_string()))?;
    frame
        .record()
        .map_err(|e| corrupt(format!("unreadable record: {e}")))
}

/// Index files that do not match their closed segment.
pub fn verify_indexes(dir: &Path) -> Result<Vec<Problem>, Error> {
    let paths = segment::list(dir)?;
    let mut problems = Vec::new();
    // The last segment is still being written and has no index file.
    for path in &paths[..paths.len().saturating_sub(1)] {
        let Ok(on_disk) = std::fs::read(crate::index::path(path)) else {
            continue; // not indexed yet
        };
        if crate::index::build(path)? != on_disk {
            problems.push(Problem {
                at: Position {
                    segment: crate::index::path(path),
                    offset: 0,
                },
                what: "index does not match its segment: delete it and the next query rebuilds it"
                    .into(),
            });
        }
    }
    Ok(problems)
}
