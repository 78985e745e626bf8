//! BER-TLV as carried in DE55 (EMV data): multi-byte tags, short and long length forms.
//!
//! Parsing keeps each item's original tag and length bytes, so a list re-encodes byte for byte, unknown
//! and proprietary tags included. Values are borrowed from the field; nothing is copied.

use bytes::BufMut;

use crate::error::{Error, Location, Reason};

/// One TLV item, borrowed from its buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tlv<'a> {
    /// The tag's bytes (1 to 4).
    pub tag: &'a [u8],
    /// The length octets as received (short form, or 0x81–0x84 followed by the length).
    pub length: &'a [u8],
    pub value: &'a [u8],
}

impl Tlv<'_> {
    /// True for a constructed item (a template holding more TLV items).
    pub fn is_constructed(&self) -> bool {
        self.tag.first().is_some_and(|t| t & 0x20 != 0)
    }

    /// Appends the item exactly as it was received.
    pub fn encode(&self, out: &mut impl BufMut) {
        out.put_slice(self.tag);
        out.put_slice(self.length);
        out.put_slice(self.value);
    }
}

/// Parses a whole TLV list. `field` names the field in errors; offsets are relative to `data`.
pub fn parse(field: u8, data: &[u8]) -> Result<Vec<Tlv<'_>>, Error> {
    let mut items = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        // EMV Book 3 tolerates 0x00 padding between items, but DE55 never carries it in practice; it is
        // reported rather than skipped so that a re-encode can never silently differ from what came in.
        if data[pos] == 0x00 || data[pos] == 0xFF {
            return Err(err(
                field,
                pos,
                Reason::Invalid("padding byte where a tag was expected"),
            ));
        }
        let (item, next) = parse_one(field, data, pos)?;
        items.push(item);
        pos = next;
    }
    Ok(items)
}

fn parse_one(field: u8, data: &[u8], start: usize) -> Result<(Tlv<'_>, usize), Error> {
    let mut pos = start;
    // Tag: low five bits all set means more tag bytes follow, each with bit 8 set except the last.
    let first = data[pos];
    pos += 1;
    if first & 0x1F == 0x1F {
        loop {
            let b = *data
                .get(pos)
                .ok_or_else(|| truncated(field, pos, 1, data))?;
            pos += 1;
            if b & 0x80 == 0 {
                break;
            }
            if pos - start >= 4 {
                return Err(err(
                    field,
                    start,
                    Reason::Invalid("tag longer than 4 bytes"),
                ));
            }
        }
    }
    let tag = &data[start..pos];
    let len_start = pos;
    let l0 = *data
        .get(pos)
        .ok_or_else(|| truncated(field, pos, 1, data))?;
    pos += 1;
    let len = if l0 < 0x80 {
        usize::from(l0)
    } else {
        let n = usize::from(l0 & 0x7F);
        if n == 0 || n > 4 {
            return Err(err(field, len_start, Reason::BadLengthPrefix));
        }
        let bytes = data
            .get(pos..pos + n)
            .ok_or_else(|| truncated(field, pos, n, data))?;
        pos += n;
        bytes
            .iter()
            .fold(0usize, |acc, &b| acc << 8 | usize::from(b))
    };
    let length = &data[len_start..pos];
    let value = data
        .get(pos..pos.saturating_add(len))
        .ok_or_else(|| truncated(field, pos, len, data))?;
    Ok((Tlv { tag, length, value }, pos + len))
}

/// Appends a list of items.
pub fn encode(items: &[Tlv<'_>], out: &mut impl BufMut) {
    items.iter().for_each(|item| item.encode(out));
}

fn truncated(field: u8, pos: usize, need: usize, data: &[u8]) -> Error {
    err(
        field,
        pos,
        Reason::Truncated {
            need,
            have: data.len().saturating_sub(pos),
        },
    )
}

fn err(field: u8, offset: usize, reason: Reason) -> Error {
    Error::Decode {
        at: Location::Field(field),
        offset,
        reason,
    }
}
