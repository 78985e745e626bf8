//! Length headers in front of each frame.

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// The kinds of length header seen on ISO 8583 links.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LengthHeader {
    /// No header: only for single messages given whole (the `decode` command), never on a stream.
    None,
    /// 2 bytes, big-endian, counting the bytes after the header. The most common.
    Binary2,
    /// 2 bytes, big-endian, counting the header itself too.
    Binary2Inclusive,
    /// 4 bytes, big-endian.
    Binary4,
    /// 2 ASCII digits.
    Ascii2,
    /// 4 ASCII digits.
    Ascii4,
    /// 2 bytes of packed BCD (4 digits).
    Bcd2,
}

impl LengthHeader {
    pub const ALL: [LengthHeader; 7] = [
        LengthHeader::None,
        LengthHeader::Binary2,
        LengthHeader::Binary2Inclusive,
        LengthHeader::Binary4,
        LengthHeader::Ascii2,
        LengthHeader::Ascii4,
        LengthHeader::Bcd2,
    ];

    /// Bytes of the header.
    pub fn size(self) -> usize {
        match self {
            LengthHeader::None => 0,
            LengthHeader::Ascii2
            | LengthHeader::Binary2
            | LengthHeader::Binary2Inclusive
            | LengthHeader::Bcd2 => 2,
            LengthHeader::Binary4 | LengthHeader::Ascii4 => 4,
        }
    }

    /// The longest frame body the header can express.
    pub fn max_len(self) -> usize {
        match self {
            LengthHeader::None => usize::MAX,
            LengthHeader::Binary2 => 0xFFFF,
            LengthHeader::Binary2Inclusive => 0xFFFF - 2,
            LengthHeader::Binary4 => u32::MAX as usize,
            LengthHeader::Ascii2 => 99,
            LengthHeader::Ascii4 | LengthHeader::Bcd2 => 9999,
        }
    }

    /// The body length a header declares. `bytes` is exactly `size()` long.
    pub(crate) fn read(self, bytes: &[u8]) -> Result<usize, Error> {
        let bad = || Error::BadHeader(bytes.to_vec());
        match self {
            LengthHeader::None => Ok(bytes.len()),
            LengthHeader::Binary2 | LengthHeader::Binary4 => Ok(be(bytes)),
            LengthHeader::Binary2Inclusive => be(bytes).checked_sub(2).ok_or_else(bad),
            LengthHeader::Ascii2 | LengthHeader::Ascii4 => {
                bytes.iter().try_fold(0usize, |acc, &b| {
                    b.is_ascii_digit()
                        .then(|| acc * 10 + usize::from(b - b'0'))
                        .ok_or_else(bad)
                })
            }
            LengthHeader::Bcd2 => bytes.iter().try_fold(0usize, |acc, &b| {
                let (hi, lo) = (b >> 4, b & 0xF);
                (hi <= 9 && lo <= 9)
                    .then(|| acc * 100 + usize::from(hi * 10 + lo))
                    .ok_or_else(bad)
            }),
        }
    }

    /// Fills `out` (exactly `size()` bytes) with the header for a body of `len` bytes.
    pub(crate) fn write(self, len: usize, out: &mut [u8]) -> Result<(), Error> {
        if len > self.max_len() {
            return Err(Error::Unrepresentable { len, header: self });
        }
        match self {
            LengthHeader::None => {}
            LengthHeader::Binary2 => out.copy_from_slice(&(len as u16).to_be_bytes()),
            LengthHeader::Binary2Inclusive => out.copy_from_slice(&(len as u16 + 2).to_be_bytes()),
            LengthHeader::Binary4 => out.copy_from_slice(&(len as u32).to_be_bytes()),
            LengthHeader::Ascii2 | LengthHeader::Ascii4 => {
                let mut v = len;
                for b in out.iter_mut().rev() {
                    *b = b'0' + (v % 10) as u8;
                    v /= 10;
                }
            }
            LengthHeader::Bcd2 => {
                out[0] = ((len / 1000 % 10) << 4 | (len / 100 % 10)) as u8;
                out[1] = ((len / 10 % 10) << 4 | (len % 10)) as u8;
            }
        }
        Ok(())
    }
}

fn be(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .fold(0usize, |acc, &b| acc << 8 | usize::from(b))
}

impl FromStr for LengthHeader {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|h| h.to_string() == s)
            .ok_or_else(|| {
                let names: Vec<String> = Self::ALL.iter().map(ToString::to_string).collect();
                format!("unknown header {s:?}; one of {}", names.join(", "))
            })
    }
}

impl fmt::Display for LengthHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LengthHeader::None => "none",
            LengthHeader::Binary2 => "binary2",
            LengthHeader::Binary2Inclusive => "binary2-inclusive",
            LengthHeader::Binary4 => "binary4",
            LengthHeader::Ascii2 => "ascii2",
            LengthHeader::Ascii4 => "ascii4",
            LengthHeader::Bcd2 => "bcd2",
        })
    }
}
