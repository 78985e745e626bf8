//! Segment files: `<first seq, 20 digits>.seg` in the journal directory, in order of their names.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// A segment and what the journal knows of its records.
#[derive(Debug, Clone)]
pub struct Segment {
    pub path: PathBuf,
    pub first_seq: u64,
    pub bytes: u64,
    /// The highest transaction id among its records: retention may delete the segment once every
    /// transaction up to it is finished and out of the idempotency window.
    pub max_txn: u64,
    /// The time of its last record.
    pub last_at: Option<SystemTime>,
}

pub(crate) fn path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.seg"))
}

/// The segment files in `dir`, oldest first (an absent directory has none).
pub(crate) fn list(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut paths = Vec::new();
    for entry in entries {
        let path = entry?.path();
        let numbered = path
            .file_stem()
            .and_then(|s| s.to_str())
            .is_some_and(|s| s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit()));
        if numbered && path.extension().is_some_and(|e| e == "seg") {
            paths.push(path);
        }
    }
    paths.sort();
    Ok(paths)
}

/// Makes a directory entry (a new or deleted segment) durable.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}
