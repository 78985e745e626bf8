//! Per-segment indexes, so that finding one disputed transaction in a journal of millions of records
//! reads a few kilobytes instead of every segment.
//!
//! A closed segment `<first seq>.seg` gets `<first seq>.idx` beside it:
//!
//! ```text
//! header (64 bytes): "ACQX" | version u16 | 0 u16 | segment length u64 | keys u64 | txns u64
//!                    | earliest record µs u64 | latest record µs u64 | crc32c of the above u32 | 0
//! keys:  (key hash u64, txn u64) sorted   -- which transactions an RRN, terminal + STAN or last4 names
//! txns:  (txn u64, offset u64)   sorted   -- where each record of a transaction starts in the segment
//! ```
//!
//! all little-endian. A query binary-searches both tables with positioned reads. An index is derived
//! data: it is written to a temporary file and renamed, never synced; one that is missing, stale (its
//! segment length differs) or has a bad header is rebuilt from the segment. Key hashes can collide, so
//! a query returns candidates that the caller checks against the records themselves.

use std::fs::File;
use std::hash::Hasher;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use engine::{Record, Step, TxnId};
use memchr::memmem::Finder;
use siphasher::sip::SipHasher13;

use crate::Error;
use crate::frame::{self, SEGMENT_HEADER};

const MAGIC: &[u8; 4] = b"ACQX";
const VERSION: u16 = 1;
const HEADER: usize = 64;
const ENTRY: usize = 16;

/// What a dispute names a transaction by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    /// Retrieval reference number (DE37) of the forwarded request.
    Rrn(String),
    /// Terminal id (DE41) and STAN (DE11) of the terminal's request.
    Terminal { terminal: String, stan: u32 },
    /// Last four digits of the card.
    Last4(String),
}

impl Key {
    fn hash(&self) -> u64 {
        match self {
            Key::Rrn(rrn) => hash(RRN, rrn, None),
            Key::Terminal { terminal, stan } => hash(TERMINAL, terminal, Some(*stan)),
            Key::Last4(last4) => hash(LAST4, last4, None),
        }
    }

    /// The text a record holding this key has among its bytes.
    fn text(&self) -> &[u8] {
        match self {
            Key::Rrn(text) | Key::Terminal { terminal: text, .. } | Key::Last4(text) => {
                text.as_bytes()
            }
        }
    }
}

const RRN: u8 = 1;
const TERMINAL: u8 = 2;
const LAST4: u8 = 3;

/// A key's hash in the index, from its kind and text (and a terminal key's STAN).
fn hash(kind: u8, text: &str, stan: Option<u32>) -> u64 {
    // Fixed keys: the hash only spreads lookups, it protects nothing (last4 is stored in clear).
    let mut h = SipHasher13::new();
    h.write_u8(kind);
    h.write(text.as_bytes());
    if let Some(stan) = stan {
        h.write_u8(0xff);
        h.write_u32(stan);
    }
    h.finish()
}

/// The hashes of the keys a record names its transaction by.
fn key_hashes(record: &Record, mut each: impl FnMut(u64)) {
    match &record.step {
        Step::Received(r) => {
            each(hash(TERMINAL, &r.terminal, Some(r.stan)));
            if let Some(card) = &r.card {
                each(hash(LAST4, &card.last4, None));
            }
        }
        Step::Forwarded { original, .. }
        | Step::AdviceQueued {
            advice: original, ..
        } => {
            if let Some(rrn) = original.rrn() {
                each(hash(RRN, rrn, None));
            }
        }
        _ => {}
    }
}

/// The entries of one segment's index, gathered record by record: by the writer as it writes (so that
/// a closed segment is not read again to be indexed), or from a segment's bytes.
#[derive(Debug)]
pub(crate) struct Entries {
    keys: Vec<(u64, u64)>,
    txns: Vec<(u64, u64)>,
    earliest: u64,
    latest: u64,
}

impl Default for Entries {
    fn default() -> Self {
        Entries {
            keys: Vec::new(),
            txns: Vec::new(),
            earliest: u64::MAX,
            latest: 0,
        }
    }
}

impl Entries {
    /// The record that starts at `offset` in the segment.
    pub(crate) fn add(&mut self, record: &Record, offset: u64) {
        self.place(record.txn.0, engine::stored_micros(record.at), offset);
        self.name(record);
    }

    /// A record of `txn`, written at `at` (µs), starts at `offset`.
    fn place(&mut self, txn: u64, at: u64, offset: u64) {
        self.txns.push((txn, offset));
        self.earliest = self.earliest.min(at);
        self.latest = self.latest.max(at);
    }

    /// The keys `record` names its transaction by.
    fn name(&mut self, record: &Record) {
        key_hashes(record, |h| self.keys.push((h, record.txn.0)));
    }

    /// The index file's bytes, for a segment of `segment_len` bytes.
    pub(crate) fn finish(mut self, segment_len: u64) -> Vec<u8> {
        self.keys.sort_unstable();
        self.keys.dedup();
        self.txns.sort_unstable();
        let mut out = Vec::with_capacity(HEADER + (self.keys.len() + self.txns.len()) * ENTRY);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&[0; 2]);
        for word in [
            segment_len,
            self.keys.len() as u64,
            self.txns.len() as u64,
            self.earliest,
            self.latest,
        ] {
            out.extend_from_slice(&word.to_le_bytes());
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out.resize(HEADER, 0);
        for (a, b) in self.keys.into_iter().chain(self.txns) {
            out.extend_from_slice(&a.to_le_bytes());
            out.extend_from_slice(&b.to_le_bytes());
        }
        out
    }
}

pub(crate) fn path(segment: &Path) -> PathBuf {
    segment.with_extension("idx")
}

/// Builds the index of the segment at `segment` from its records; returns the index file's bytes.
/// Bad records are skipped (the scan reports them); the index covers every valid one.
pub(crate) fn build(segment: &Path) -> Result<Vec<u8>, Error> {
    build_with(segment, None)
}

/// The index of the segment being written, with the key entries of `keys` only. A record is decoded
/// only when its bytes hold one of the keys' text (a key's text is stored verbatim), so a query reads
/// that segment once and decodes a few of its records instead of all.
pub(crate) fn build_for(segment: &Path, keys: &[Key]) -> Result<Vec<u8>, Error> {
    let needles: Vec<Finder> = keys
        .iter()
        .map(|k| Finder::new(k.text()).into_owned())
        .collect();
    build_with(segment, Some(&needles))
}

/// What every record starts with (see [`Record`]): read without decoding the rest.
type Head = (TxnId, u64);

fn build_with(segment: &Path, needles: Option<&[Finder]>) -> Result<Vec<u8>, Error> {
    let bytes = std::fs::read(segment)?;
    let first_seq = frame::parse_segment_header(&bytes)
        .ok_or_else(|| Error::NotASegment(segment.to_path_buf()))?;
    let mut entries = Entries::default();
    let mut last_seq = first_seq.saturating_sub(1);
    let mut offset = SEGMENT_HEADER;
    while offset < bytes.len() {
        let Ok(frame) = frame::decode(&bytes[offset..]) else {
            match crate::scan::resync(&bytes, offset + 1, last_seq) {
                Some(next) => offset = next,
                None => break,
            }
            continue;
        };
        if let Ok(((txn, at), _)) = postcard::take_from_bytes::<Head>(frame.payload) {
            entries.place(txn.0, at, offset as u64);
            let named = needles.is_none_or(|n| n.iter().any(|n| n.find(frame.payload).is_some()));
            if named && let Ok(record) = frame.record() {
                entries.name(&record);
            }
        }
        last_seq = frame.seq;
        offset += frame.size();
    }
    Ok(entries.finish(bytes.len() as u64))
}

/// Writes an index file next to its segment: to a temporary name, then renamed into place, so a
/// reader sees a whole index or none.
pub(crate) fn write(segment: &Path, index: &[u8]) -> std::io::Result<()> {
    let target = path(segment);
    let tmp = target.with_extension(format!("idx.{}.tmp", std::process::id()));
    // In pieces: one write of a whole index (about 5 MB for a full segment) cost the kernel 1 to
    // 47 ms of CPU on a virtual machine, pieces of 64 KiB about 1 ms every time.
    let mut file = File::create(&tmp)?;
    for piece in index.chunks(64 << 10) {
        file.write_all(piece)?;
    }
    drop(file);
    std::fs::rename(&tmp, &target).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Where an index's bytes are: its file, or memory for a segment without a usable one.
#[derive(Debug)]
enum Source {
    File(File),
    Memory(Vec<u8>),
}

impl Source {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        match self {
            Source::File(file) => file.read_exact_at(buf, offset),
            Source::Memory(bytes) => {
                let slice = usize::try_from(offset)
                    .ok()
                    .and_then(|o| bytes.get(o..o + buf.len()))
                    .ok_or(std::io::ErrorKind::UnexpectedEof)?;
                buf.copy_from_slice(slice);
                Ok(())
            }
        }
    }
}

/// An opened index.
#[derive(Debug)]
pub(crate) struct Index {
    source: Source,
    segment_len: u64,
    keys: u64,
    txns: u64,
    pub(crate) earliest: SystemTime,
    pub(crate) latest: SystemTime,
}

impl Index {
    /// The index of the closed `segment` whose length is `segment_len`: its file if that is whole and
    /// current, else built from the segment and written (a reader without write access to the
    /// directory still gets its answer).
    pub(crate) fn load(segment: &Path, segment_len: u64) -> Result<Index, Error> {
        if let Ok(file) = File::open(path(segment))
            && let Some(index) = Index::parse(Source::File(file))?
            && index.segment_len == segment_len
        {
            return Ok(index);
        }
        let bytes = build(segment)?;
        if let Err(error) = write(segment, &bytes) {
            tracing::warn!(segment = %segment.display(), %error, "journal index not written");
        }
        Index::memory(segment, bytes)
    }

    /// The index of the segment being written, for `keys` only (see [`build_for`]).
    pub(crate) fn partial(segment: &Path, keys: &[Key]) -> Result<Index, Error> {
        Index::memory(segment, build_for(segment, keys)?)
    }

    fn memory(segment: &Path, bytes: Vec<u8>) -> Result<Index, Error> {
        Index::parse(Source::Memory(bytes))?
            .ok_or_else(|| Error::NotASegment(segment.to_path_buf()))
    }

    /// `None` when the header is not an index header or the size does not match it.
    fn parse(source: Source) -> std::io::Result<Option<Index>> {
        let len = match &source {
            Source::File(file) => file.metadata()?.len(),
            Source::Memory(bytes) => bytes.len() as u64,
        };
        let mut h = [0u8; HEADER];
        if len < HEADER as u64 || source.read_at(&mut h, 0).is_err() {
            return Ok(None);
        }
        let word =
            |i: usize| u64::from_le_bytes(h[8 + 8 * i..16 + 8 * i].try_into().unwrap_or_default());
        let crc = u32::from_le_bytes(h[48..52].try_into().unwrap_or_default());
        let whole = &h[..4] == MAGIC
            && u16::from_le_bytes([h[4], h[5]]) == VERSION
            && crc32c::crc32c(&h[..48]) == crc;
        let (keys, txns) = (word(1), word(2));
        let size = keys
            .checked_add(txns)
            .and_then(|n| n.checked_mul(ENTRY as u64))
            .and_then(|n| n.checked_add(HEADER as u64));
        if !whole || size != Some(len) {
            return Ok(None);
        }
        let at = |us| UNIX_EPOCH + std::time::Duration::from_micros(us);
        Ok(Some(Index {
            source,
            segment_len: word(0),
            keys,
            txns,
            earliest: at(word(3)),
            latest: at(word(4)),
        }))
    }

    /// Transactions `key` may name (a hash collision adds one the caller's check drops).
    pub(crate) fn txns_named(&self, key: &Key) -> std::io::Result<Vec<u64>> {
        self.matching(HEADER as u64, self.keys, key.hash())
    }

    /// Where each record of `txn` in the segment starts, in order.
    pub(crate) fn offsets_of(&self, txn: u64) -> std::io::Result<Vec<u64>> {
        let base = HEADER as u64 + self.keys * ENTRY as u64;
        self.matching(base, self.txns, txn)
    }

    /// The second halves of the entries whose first half is `wanted`, in a sorted table.
    fn matching(&self, base: u64, len: u64, wanted: u64) -> std::io::Result<Vec<u64>> {
        let entry = |i: u64| -> std::io::Result<(u64, u64)> {
            let mut e = [0u8; ENTRY];
            self.source.read_at(&mut e, base + i * ENTRY as u64)?;
            let half =
                |r: std::ops::Range<usize>| u64::from_le_bytes(e[r].try_into().unwrap_or_default());
            Ok((half(0..8), half(8..16)))
        };
        let (mut lo, mut hi) = (0, len);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if entry(mid)?.0 < wanted {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let mut found = Vec::new();
        for i in lo..len {
            let (first, second) = entry(i)?;
            if first != wanted {
                break;
            }
            found.push(second);
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_record_starts_with_its_head() {
        let record = Record {
            txn: TxnId(300),
            at: UNIX_EPOCH + Duration::from_micros(1_795_000_000_123_456),
            step: Step::TimedOut,
        };
        let bytes = postcard::to_stdvec(&record).unwrap();
        let ((txn, at), _) = postcard::take_from_bytes::<Head>(&bytes).unwrap();
        assert_eq!((txn, at), (record.txn, 1_795_000_000_123_456));
    }
}
