//! The bytes on disk. A segment is a 16-byte header and then records, each framed as
//!
//! ```text
//! len u32 | crc u32 | prev u32 | seq u64 | payload (len bytes, postcard)
//! ```
//!
//! all little-endian. `crc` is CRC-32C over `prev`, `seq` and the payload; `prev` is the previous
//! record's `crc` (across segments), so records form a chain: a record lost, reordered or spliced in
//! breaks it. `seq` numbers records from 1 without gaps. Zeros may follow a segment's last record, to
//! the end of the file: the writer writes them ahead of its records (see `writer`), and every reader
//! takes them as the segment's end. (A release from before them reads them as a torn tail, and cuts
//! them off, when they end the last segment; a closed segment has them only after a crash that came
//! before its cut to size reached the disk.)

use engine::Record;

pub(crate) const MAGIC: &[u8; 4] = b"ACQJ";
pub(crate) const VERSION: u16 = 1;
pub(crate) const SEGMENT_HEADER: usize = 16;
pub(crate) const FRAME_HEADER: usize = 20;
/// Far above any record (the largest hold a few hundred bytes): a length beyond it is corruption.
pub(crate) const MAX_PAYLOAD: usize = 64 * 1024;

/// The header of a segment whose first record is `first_seq`.
pub fn segment_header(first_seq: u64) -> [u8; SEGMENT_HEADER] {
    let mut h = [0u8; SEGMENT_HEADER];
    h[..4].copy_from_slice(MAGIC);
    h[4..6].copy_from_slice(&VERSION.to_le_bytes());
    h[8..].copy_from_slice(&first_seq.to_le_bytes());
    h
}

/// The first sequence number a segment header names, if it is one of ours.
pub(crate) fn parse_segment_header(bytes: &[u8]) -> Option<u64> {
    let h = bytes.get(..SEGMENT_HEADER)?;
    if &h[..4] != MAGIC || u16::from_le_bytes([h[4], h[5]]) != VERSION {
        return None;
    }
    Some(u64::from_le_bytes(h[8..].try_into().ok()?))
}

/// Appends record `seq` after the record whose checksum is `prev`; returns its checksum.
pub(crate) fn encode(
    record: &Record,
    seq: u64,
    prev: u32,
    out: &mut Vec<u8>,
) -> Result<u32, postcard::Error> {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER]);
    let out = postcard::to_io(record, out)?;
    let len = (out.len() - start - FRAME_HEADER) as u32;
    out[start + 8..start + 12].copy_from_slice(&prev.to_le_bytes());
    out[start + 12..start + 20].copy_from_slice(&seq.to_le_bytes());
    let crc = crc32c::crc32c(&out[start + 8..]);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(crc)
}

/// One framed record read back.
#[derive(Debug)]
pub(crate) struct Frame<'a> {
    pub(crate) crc: u32,
    pub(crate) prev: u32,
    pub(crate) seq: u64,
    pub(crate) payload: &'a [u8],
}

impl Frame<'_> {
    /// Bytes the frame takes.
    pub(crate) fn size(&self) -> usize {
        FRAME_HEADER + self.payload.len()
    }

    pub(crate) fn record(&self) -> Result<Record, postcard::Error> {
        postcard::from_bytes(self.payload)
    }
}

/// Why bytes are not a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bad {
    /// The bytes end inside the frame.
    Truncated,
    Length(u32),
    Checksum,
}

impl std::fmt::Display for Bad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bad::Truncated => f.write_str("record cut short"),
            Bad::Length(len) => write!(f, "impossible length {len}"),
            Bad::Checksum => f.write_str("checksum mismatch"),
        }
    }
}

/// The frame at the start of `bytes`, checked against its checksum.
pub(crate) fn decode(bytes: &[u8]) -> Result<Frame<'_>, Bad> {
    let header = bytes.get(..FRAME_HEADER).ok_or(Bad::Truncated)?;
    let word = |i: usize| u32::from_le_bytes(header[i..i + 4].try_into().unwrap_or_default());
    let (len, crc, prev) = (word(0), word(4), word(8));
    if len as usize > MAX_PAYLOAD {
        return Err(Bad::Length(len));
    }
    let end = FRAME_HEADER + len as usize;
    let body = bytes.get(8..end).ok_or(Bad::Truncated)?;
    if crc32c::crc32c(body) != crc {
        return Err(Bad::Checksum);
    }
    Ok(Frame {
        crc,
        prev,
        seq: u64::from_le_bytes(header[12..20].try_into().unwrap_or_default()),
        payload: &bytes[FRAME_HEADER..end],
    })
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use engine::{Step, TxnId};

    use super::*;

    fn record() -> Record {
        Record {
            txn: TxnId(3),
            at: UNIX_EPOCH,
            step: Step::TimedOut,
        }
    }

    #[test]
    fn a_frame_reads_back_and_any_flipped_bit_is_caught() {
        let mut out = Vec::new();
        let crc = encode(&record(), 7, 99, &mut out).unwrap();
        let frame = decode(&out).unwrap();
        assert_eq!((frame.crc, frame.prev, frame.seq), (crc, 99, 7));
        assert_eq!(frame.size(), out.len());
        assert_eq!(frame.record().unwrap(), record());
        for i in 4..out.len() {
            for bit in 0..8 {
                let mut bad = out.clone();
                bad[i] ^= 1 << bit;
                assert!(decode(&bad).is_err(), "byte {i} bit {bit}");
            }
        }
        assert_eq!(decode(&out[..out.len() - 1]).unwrap_err(), Bad::Truncated);
    }

    #[test]
    fn segment_headers_name_their_first_record() {
        assert_eq!(parse_segment_header(&segment_header(42)), Some(42));
        assert_eq!(parse_segment_header(b"not a segment at all"), None);
    }
}
