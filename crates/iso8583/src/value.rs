//! One field's bytes: length prefixes, validation of wire data, packing logical values, and reading them
//! back.
//!
//! A *logical* value is what a person means by the field: ASCII digits for an `n` field, Latin-1 text, raw
//! bytes for `b`. The *wire* value is that in the dialect's encoding. Messages keep wire bytes (zero copy)
//! and convert only when asked, one byte at a time, without building strings.

use std::iter::{Chain, Copied, RepeatN};

use crate::charset::{
    EBCDIC_TO_LATIN1, HEX_DIGITS, LATIN1_TO_EBCDIC, hex_value, nibbles, to_latin1,
};
use crate::error::{Error, Location, Reason};
use crate::field::Field;
use crate::spec::{Encoding, FieldSpec, FieldType, LengthKind};

/// Where a field's data sits in its buffer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Span {
    pub(crate) start: usize,
    pub(crate) wire_len: usize,
    /// Length in logical units (what the length prefix counts).
    pub(crate) len: usize,
}

/// Reads and checks field `number` starting at `pos`: the length prefix, the bounds and every byte of data.
#[inline]
pub(crate) fn decode(fs: &FieldSpec, number: u8, buf: &[u8], pos: usize) -> Result<Span, Error> {
    let err = |offset, reason| Error::Decode {
        at: Location::Field(number),
        offset,
        reason,
    };
    let prefix = fs.prefix_len();
    let have = buf.len() - pos;
    if have < prefix {
        return Err(err(pos, Reason::Truncated { need: prefix, have }));
    }
    let len = if fs.length == LengthKind::Fixed {
        usize::from(fs.max)
    } else {
        let len = read_prefix(fs.length_encoding, &buf[pos..pos + prefix])
            .ok_or_else(|| err(pos, Reason::BadLengthPrefix))?;
        if len > usize::from(fs.max) {
            return Err(err(
                pos,
                Reason::TooLong {
                    len,
                    max: usize::from(fs.max),
                },
            ));
        }
        len
    };
    let start = pos + prefix;
    let wire_len = fs.wire_len(len);
    if buf.len() - start < wire_len {
        return Err(err(
            start,
            Reason::Truncated {
                need: wire_len,
                have: buf.len() - start,
            },
        ));
    }
    validate(fs, &buf[start..start + wire_len], len)
        .map_err(|(i, reason)| err(start + i, reason))?;
    Ok(Span {
        start,
        wire_len,
        len,
    })
}

#[inline]
pub(crate) fn read_prefix(encoding: Encoding, bytes: &[u8]) -> Option<usize> {
    let mut len = 0usize;
    match encoding {
        Encoding::Binary => bytes.iter().for_each(|&b| len = len << 8 | usize::from(b)),
        Encoding::Bcd => {
            for &b in bytes {
                let (hi, lo) = (b >> 4, b & 0xF);
                if hi > 9 || lo > 9 {
                    return None;
                }
                len = len * 100 + usize::from(hi * 10 + lo);
            }
        }
        Encoding::Ascii | Encoding::Ebcdic | Encoding::Hex => {
            for &b in bytes {
                let c = to_latin1(encoding == Encoding::Ebcdic, b);
                if !c.is_ascii_digit() {
                    return None;
                }
                len = len * 10 + usize::from(c - b'0');
            }
        }
    }
    Some(len)
}

/// Checks wire data byte by byte; on failure returns the offset within `wire` and the reason. Decode
/// comes here only for what its word-at-a-time checks ([`crate::layout`]) could not vouch for.
fn validate(fs: &FieldSpec, wire: &[u8], len: usize) -> Result<(), (usize, Reason)> {
    let kind = fs.kind;
    let bad = |i: usize, byte: u8| {
        (
            i,
            Reason::BadChar {
                byte,
                kind: kind.name(),
            },
        )
    };
    match fs.encoding {
        Encoding::Binary => Ok(()),
        Encoding::Hex => match wire.iter().position(|b| !b.is_ascii_hexdigit()) {
            Some(i) => Err((i, Reason::BadHex { byte: wire[i] })),
            None if len % 2 == 1 => Err((0, Reason::Invalid("odd number of hex digits"))),
            None => Ok(()),
        },
        Encoding::Ascii => match wire.iter().enumerate().find(|&(i, &b)| !kind.allows(i, b)) {
            Some((i, &b)) => Err(bad(i, b)),
            None => Ok(()),
        },
        Encoding::Ebcdic => {
            match wire
                .iter()
                .enumerate()
                .find(|&(i, &b)| !kind.allows(i, EBCDIC_TO_LATIN1[usize::from(b)]))
            {
                Some((i, &b)) => Err(bad(i, b)),
                None => Ok(()),
            }
        }
        Encoding::Bcd => {
            let (skip, digits) = if kind == FieldType::Xn {
                match wire.first() {
                    None => return Ok(()),
                    Some(&sign) if !kind.allows(0, sign) => return Err(bad(0, sign)),
                    Some(_) => (1, len - 1),
                }
            } else {
                (0, len)
            };
            let filler = filler_position(fs, digits);
            for (n, nibble) in nibbles(&wire[skip..]).enumerate() {
                let ok = if Some(n) == filler {
                    nibble == fs.filler.nibble()
                } else {
                    nibble <= 9 || (kind == FieldType::Z && nibble == 0xD)
                };
                if !ok {
                    return Err((skip + n / 2, Reason::BadNibble { nibble }));
                }
            }
            Ok(())
        }
    }
}

/// Index of the filler nibble when `digits` is odd.
fn filler_position(fs: &FieldSpec, digits: usize) -> Option<usize> {
    match (digits % 2 == 1, fs.filler.is_left()) {
        (false, _) => None,
        (true, true) => Some(0),
        (true, false) => Some(digits),
    }
}

/// A logical value with a fixed field's padding applied.
type Padded<'a> = Chain<Chain<RepeatN<u8>, Copied<std::slice::Iter<'a, u8>>>, RepeatN<u8>>;

/// `value` with `short` pad bytes, on the side the dialect pads.
fn padded<'a>(fs: &FieldSpec, value: &'a [u8], short: usize) -> Padded<'a> {
    let pad = fs.pad.unwrap_or(crate::spec::Pad {
        left: true,
        byte: 0,
    });
    let (left, right) = if pad.left { (short, 0) } else { (0, short) };
    std::iter::repeat_n(pad.byte, left)
        .chain(value.iter().copied())
        .chain(std::iter::repeat_n(pad.byte, right))
}

/// Checks a logical value against the field's layout and appends its wire form to `out`. Returns the
/// length in logical units. On error nothing is appended.
#[inline(always)]
pub(crate) fn encode(
    fs: &FieldSpec,
    number: u8,
    value: &[u8],
    out: &mut Vec<u8>,
) -> Result<usize, Error> {
    let err = |reason| Error::Encode {
        at: Location::Field(number),
        reason,
    };
    let max = usize::from(fs.max);
    let short = match (fs.length, fs.pad) {
        (LengthKind::Fixed, Some(_)) => max.saturating_sub(value.len()),
        _ => 0,
    };
    let len = fs.units(value.len() + short);
    if fs.length == LengthKind::Fixed && len != max {
        return Err(err(Reason::WrongLength { len, expected: max }));
    }
    if len > max {
        return Err(err(Reason::TooLong { len, max }));
    }
    let bad_char = |byte| {
        err(Reason::BadChar {
            byte,
            kind: fs.kind.name(),
        })
    };
    if short == 0 {
        // Nothing to pad, as with almost every value a switch sets: checked and copied as a slice.
        if let Some(byte) = disallowed(fs.kind, value) {
            return Err(bad_char(byte));
        }
        match fs.encoding {
            Encoding::Ascii | Encoding::Binary => out.extend_from_slice(value),
            Encoding::Hex => {
                // Two digits a byte, written in place (SIMD for EMV data's hundreds).
                let start = out.len();
                out.resize(start + 2 * value.len(), 0);
                faster_hex::hex_encode_upper(value, &mut out[start..])
                    .expect("room for two digits a byte");
            }
            _ => write(fs, value.iter().copied(), len, out),
        }
        return Ok(len);
    }
    let chars = padded(fs, value, short);
    if let Some((_, byte)) = chars
        .clone()
        .enumerate()
        .find(|&(i, b)| !fs.kind.allows(i, b))
    {
        return Err(bad_char(byte));
    }
    write(fs, chars, len, out);
    Ok(len)
}

/// The first byte of `value` that a field of `kind` does not allow, if any. Inlined into `set` for
/// the word-at-a-time checks; finding the bad byte is out of line.
#[inline(always)]
fn disallowed(kind: FieldType, value: &[u8]) -> Option<u8> {
    match kind {
        FieldType::An | FieldType::Ans | FieldType::B => None,
        FieldType::N if crate::words::all_digits(value) => None,
        FieldType::Z if crate::words::all_track(value) => None,
        _ => first_disallowed(kind, value),
    }
}

#[cold]
#[inline(never)]
fn first_disallowed(kind: FieldType, value: &[u8]) -> Option<u8> {
    value
        .iter()
        .enumerate()
        .find(|&(i, &b)| !kind.allows(i, b))
        .map(|(_, &b)| b)
}

/// Appends the wire form of a logical value already known to fit the field: `len` units.
pub(crate) fn write(
    fs: &FieldSpec,
    chars: impl Iterator<Item = u8>,
    len: usize,
    out: &mut Vec<u8>,
) {
    out.reserve(fs.wire_len(len));
    match fs.encoding {
        Encoding::Ascii | Encoding::Binary => out.extend(chars),
        Encoding::Ebcdic => out.extend(chars.map(|c| LATIN1_TO_EBCDIC[usize::from(c)])),
        Encoding::Bcd => pack_bcd(fs, chars, len, out),
        Encoding::Hex => chars.for_each(|b| out.extend_from_slice(&HEX_DIGITS[usize::from(b)])),
    }
}

fn pack_bcd(fs: &FieldSpec, mut chars: impl Iterator<Item = u8>, len: usize, out: &mut Vec<u8>) {
    let digits = if fs.kind == FieldType::Xn {
        // The sign of an x+n field stays one plain byte.
        out.extend(chars.next());
        len.saturating_sub(1)
    } else {
        len
    };
    let mut nibble = || match chars.next().unwrap_or(b'0') {
        c @ b'0'..=b'9' => c - b'0',
        _ => 0xD, // the track-data separator, `=` or `D`
    };
    let (odd, filler) = (digits % 2 == 1, fs.filler.nibble());
    if odd && fs.filler.is_left() {
        out.push(filler << 4 | nibble());
    }
    for _ in 0..digits / 2 {
        let high = nibble();
        out.push(high << 4 | nibble());
    }
    if odd && !fs.filler.is_left() {
        out.push(nibble() << 4 | filler);
    }
}

/// Appends `field`'s value in `into`'s encoding, unchecked: for a field of the same type and length
/// (see [`FieldSpec::likeness`](crate::spec::FieldSpec)), whose value was checked when it came in.
#[inline]
pub(crate) fn reencode(field: &Field<'_>, into: &FieldSpec, out: &mut Vec<u8>) {
    let from = field.spec();
    if from.encoding == Encoding::Bcd
        && from.kind != FieldType::Xn
        && into.encoding == Encoding::Ascii
    {
        // Packed digits to text, as every request from a BCD terminal needs.
        unpack_bcd(from, field.wire(), field.len(), out);
    } else {
        write(into, field.bytes(), field.len(), out);
    }
}

/// Packed digits (`n` or `z`, not `x+n`) as ASCII text: what [`LogicalBytes`] yields, a byte at a time
/// rather than a nibble. Its own walk, not [`crate::words::packed_each`]'s: it checks nothing (the
/// field was checked when it came in) and writes whole pairs, and through `packed_each` a purchase
/// from a BCD terminal took 2 515 or 3 042 instructions here instead of 2 057 (callgrind,
/// `engine_tail`).
fn unpack_bcd(fs: &FieldSpec, wire: &[u8], len: usize, out: &mut Vec<u8>) {
    let text = |n: u8| if n <= 9 { b'0' + n } else { b'=' };
    let start = out.len();
    // An odd count filled on the left: the first byte gives only its low digit.
    let pairs = match wire.split_first() {
        Some((&first, rest)) if len % 2 == 1 && fs.filler.is_left() => {
            out.push(text(first & 0xF));
            rest
        }
        _ => wire,
    };
    // Room made once, then two digits written a byte: no capacity check per digit.
    let at = out.len();
    out.resize(at + pairs.len() * 2, 0);
    for (digits, &b) in out[at..].chunks_exact_mut(2).zip(pairs) {
        digits[0] = text(b >> 4);
        digits[1] = text(b & 0xF);
    }
    out.truncate(start + len);
}

/// The logical bytes of a wire value, produced lazily.
#[derive(Debug, Clone)]
pub struct LogicalBytes<'a> {
    inner: Inner<'a>,
}

#[derive(Debug, Clone)]
enum Inner<'a> {
    Plain(std::slice::Iter<'a, u8>),
    Ebcdic(std::slice::Iter<'a, u8>),
    Hex(std::slice::ChunksExact<'a, u8>),
    Bcd {
        sign: Option<u8>,
        bytes: &'a [u8],
        next: usize,
        end: usize,
    },
}

impl<'a> LogicalBytes<'a> {
    pub(crate) fn new(fs: &FieldSpec, wire: &'a [u8], len: usize) -> Self {
        let inner = match fs.encoding {
            Encoding::Ascii | Encoding::Binary => Inner::Plain(wire.iter()),
            Encoding::Ebcdic => Inner::Ebcdic(wire.iter()),
            Encoding::Hex => Inner::Hex(wire.chunks_exact(2)),
            Encoding::Bcd => {
                let (sign, bytes, digits) = match (fs.kind, wire.split_first()) {
                    (FieldType::Xn, Some((&sign, rest))) => {
                        (Some(sign), rest, len.saturating_sub(1))
                    }
                    _ => (None, wire, len),
                };
                let start = usize::from(digits % 2 == 1 && fs.filler.is_left());
                Inner::Bcd {
                    sign,
                    bytes,
                    next: start,
                    end: start + digits,
                }
            }
        };
        LogicalBytes { inner }
    }
}

impl Iterator for LogicalBytes<'_> {
    type Item = u8;

    #[inline(always)]
    fn next(&mut self) -> Option<u8> {
        match &mut self.inner {
            Inner::Plain(it) => it.next().copied(),
            Inner::Ebcdic(it) => it.next().map(|&b| EBCDIC_TO_LATIN1[usize::from(b)]),
            Inner::Hex(it) => it
                .next()
                .map(|pair| hex_value(pair[0]) << 4 | hex_value(pair[1])),
            Inner::Bcd {
                sign,
                bytes,
                next,
                end,
            } => {
                if let Some(s) = sign.take() {
                    return Some(s);
                }
                if *next >= *end {
                    return None;
                }
                let byte = bytes[*next / 2];
                let nibble = if *next % 2 == 0 {
                    byte >> 4
                } else {
                    byte & 0xF
                };
                *next += 1;
                Some(if nibble <= 9 { b'0' + nibble } else { b'=' })
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = match &self.inner {
            Inner::Plain(it) | Inner::Ebcdic(it) => it.len(),
            Inner::Hex(it) => it.len(),
            Inner::Bcd {
                sign, next, end, ..
            } => end - next + usize::from(sign.is_some()),
        };
        (n, Some(n))
    }
}

impl ExactSizeIterator for LogicalBytes<'_> {}
