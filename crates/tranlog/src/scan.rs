//! Reading the journal back: every segment in order, every record checked.
//!
//! A record that fails its checksum at the very end of the last segment, with nothing valid after it, is
//! a torn write from a crash: recovery cuts it off (it was never durable, so nothing acted on it). Zeros
//! to the end of a segment are what the writer wrote ahead of its records: the segment ends there,
//! cleanly. Any other bad record is corruption in the middle: recovery stops and names the segment and
//! offset, unless told to skip (see [`OnCorrupt`]).

use std::path::{Path, PathBuf};

use engine::Record;

use crate::Error;
use crate::frame::{self, FRAME_HEADER, SEGMENT_HEADER};
use crate::segment::{self, Segment};

/// What to do with a corrupt record in the middle of the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnCorrupt {
    /// Refuse to go on: the switch does not start until an operator looks (`acquiro tranlog verify`).
    /// A lost record could be the forward of a request that needs a reversal.
    #[default]
    Stop,
    /// Report it, skip to the next valid record and go on.
    Skip,
}

/// Where a record starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub segment: PathBuf,
    pub offset: u64,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at offset {}", self.segment.display(), self.offset)
    }
}

/// A problem found in the middle of the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub at: Position,
    pub what: String,
}

/// What a scan found.
#[derive(Debug, Default)]
pub struct Scanned {
    pub records: u64,
    pub segments: Vec<Segment>,
    /// The sequence number of the last valid record (0 if none).
    pub last_seq: u64,
    pub(crate) last_crc: u32,
    /// Where a torn tail began (cut off when repairing).
    pub torn: Option<Position>,
    /// Corrupt records skipped, sequence gaps and chain breaks.
    pub problems: Vec<Problem>,
}

impl Scanned {
    /// The checksum of the last valid record, which the next one chains to.
    pub fn last_crc(&self) -> u32 {
        self.last_crc
    }
}

/// How to scan.
#[derive(Debug, Clone, Copy)]
pub struct Mode {
    /// Cut a torn tail off (recovery); verification only reports it.
    pub repair: bool,
    pub on_corrupt: OnCorrupt,
}

/// Reads every record in `dir`, oldest first, passing each to `each` with its position.
pub fn scan(
    dir: &Path,
    mode: Mode,
    mut each: impl FnMut(&Position, Record),
) -> Result<Scanned, Error> {
    // Held while the scan repairs: a repair cuts what another writer may be appending. (Two processes
    // that both scan before either writes cut the same torn tail; the second writer is refused.)
    let _held = mode.repair.then(|| crate::lock::acquire(dir)).transpose()?;
    let paths = segment::list(dir)?;
    let mut found = Scanned::default();
    for (i, path) in paths.iter().enumerate() {
        let last = i + 1 == paths.len();
        let bytes = std::fs::read(path)?;
        let Some(first_seq) = frame::parse_segment_header(&bytes) else {
            if last && bytes.len() < SEGMENT_HEADER {
                // Created, then the crash came before its header was durable.
                if mode.repair {
                    std::fs::remove_file(path)?;
                }
                found.torn = Some(Position {
                    segment: path.clone(),
                    offset: 0,
                });
                continue;
            }
            return Err(Error::NotASegment(path.clone()));
        };
        let mut seg = Segment {
            path: path.clone(),
            first_seq,
            bytes: bytes.len() as u64,
            max_txn: 0,
            last_at: None,
        };
        let mut offset = SEGMENT_HEADER;
        while offset < bytes.len() {
            let at = Position {
                segment: path.clone(),
                offset: offset as u64,
            };
            let frame = match frame::decode(&bytes[offset..]) {
                Ok(frame) => frame,
                // Written ahead by the writer and not reached: the segment's records end here.
                Err(_) if bytes[offset..].iter().all(|&b| b == 0) => {
                    if mode.repair {
                        cut(path, offset as u64)?;
                    }
                    seg.bytes = offset as u64;
                    break;
                }
                Err(bad) => {
                    let next = resync(&bytes, offset + 1, found.last_seq);
                    match next {
                        None if last => {
                            if mode.repair {
                                cut(path, offset as u64)?;
                                seg.bytes = offset as u64;
                            }
                            found.torn = Some(at);
                            break;
                        }
                        _ => {
                            corrupt(&mut found, mode, at, bad.to_string())?;
                            offset = next.unwrap_or(bytes.len());
                            continue;
                        }
                    }
                }
            };
            offset += frame.size();
            let record = match frame.record() {
                Ok(record) => record,
                Err(error) => {
                    corrupt(&mut found, mode, at, format!("unreadable record: {error}"))?;
                    continue;
                }
            };
            if found.records > 0 && frame.seq != found.last_seq + 1 {
                let what = format!("sequence jumps from {} to {}", found.last_seq, frame.seq);
                found.problems.push(Problem {
                    at: at.clone(),
                    what,
                });
            } else if found.records > 0 && frame.prev != found.last_crc {
                let what = "chain broken: the previous record is not the one this one follows";
                found.problems.push(Problem {
                    at: at.clone(),
                    what: what.into(),
                });
            }
            found.records += 1;
            found.last_seq = frame.seq;
            found.last_crc = frame.crc;
            seg.max_txn = seg.max_txn.max(record.txn.0);
            seg.last_at = Some(record.at);
            each(&at, record);
        }
        found.segments.push(seg);
    }
    Ok(found)
}

fn corrupt(found: &mut Scanned, mode: Mode, at: Position, what: String) -> Result<(), Error> {
    match mode.on_corrupt {
        OnCorrupt::Stop => Err(Error::Corrupt { at, what }),
        OnCorrupt::Skip => {
            tracing::error!(%at, what, "corrupt journal record skipped");
            found.problems.push(Problem { at, what });
            Ok(())
        }
    }
}

/// The offset of the next valid record after a bad one, if any: one whose sequence number follows
/// `last_seq` (checked before the checksum, so that a scan through garbage stays cheap).
pub(crate) fn resync(bytes: &[u8], from: usize, last_seq: u64) -> Option<usize> {
    (from..bytes.len().saturating_sub(FRAME_HEADER)).find(|&p| {
        let seq = u64::from_le_bytes(bytes[p + 12..p + 20].try_into().unwrap_or_default());
        seq > last_seq && seq - last_seq < 1 << 20 && frame::decode(&bytes[p..]).is_ok()
    })
}

/// Cuts a segment at `len` and makes that durable.
fn cut(path: &Path, len: u64) -> std::io::Result<()> {
    let file = std::fs::OpenOptions::new().write(true).open(path)?;
    file.set_len(len)?;
    file.sync_all()
}
