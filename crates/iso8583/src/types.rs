//! Typed values of the fields a switch reads: MTI, PAN, response code, original data elements (DE90).

use std::fmt;

use crate::error::{Error, Location, Reason};
use crate::field::{Field, write_masked_pan};
use crate::spec::Encoding;

/// A message type indicator: four ASCII digits (version, class, function, origin).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mti([u8; 4]);

impl Mti {
    pub const AUTHORIZATION: Mti = Mti(*b"0100");
    pub const FINANCIAL: Mti = Mti(*b"0200");
    pub const REVERSAL: Mti = Mti(*b"0400");
    pub const REVERSAL_REPEAT: Mti = Mti(*b"0401");
    pub const REVERSAL_ADVICE: Mti = Mti(*b"0420");
    pub const NETWORK: Mti = Mti(*b"0800");

    /// An MTI from four ASCII digits.
    pub fn new(digits: [u8; 4]) -> Result<Mti, Error> {
        match digits.iter().find(|b| !b.is_ascii_digit()) {
            Some(&byte) => Err(Error::Encode {
                at: Location::Mti,
                reason: Reason::BadChar { byte, kind: "n" },
            }),
            None => Ok(Mti(digits)),
        }
    }

    pub(crate) fn from_digits_unchecked(digits: [u8; 4]) -> Mti {
        Mti(digits)
    }

    pub fn digits(&self) -> [u8; 4] {
        self.0
    }

    pub fn as_str(&self) -> &str {
        // Always four ASCII digits by construction.
        std::str::from_utf8(&self.0).unwrap_or("????")
    }

    /// Message class (second digit).
    pub fn class(&self) -> Class {
        Class(self.0[1] - b'0')
    }

    /// Message function (third digit): 0 request, 1 response, 2 advice, 3 advice response.
    pub fn function(&self) -> u8 {
        self.0[2] - b'0'
    }

    /// True for requests and advices, which expect an answer.
    pub fn is_request(&self) -> bool {
        self.function().is_multiple_of(2)
    }

    /// The answer's MTI (0200 → 0210, 0401 → 0410, 0420 → 0430); `None` for an answer itself.
    pub fn response(&self) -> Option<Mti> {
        let mut d = self.0;
        if !self.is_request() {
            return None;
        }
        d[2] += 1;
        // A repeat (origin 1) is answered like the first attempt.
        if d[3] == b'1' {
            d[3] = b'0';
        }
        Some(Mti(d))
    }
}

impl fmt::Display for Mti {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Mti {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mti({self})")
    }
}

/// The class of a message (the MTI's second digit): what kind of exchange it belongs to. A type rather than
/// a digit, so that a rule reads `Class::REVERSAL` and a table key cannot mix it up with a STAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Class(u8);

impl Class {
    pub const AUTHORIZATION: Class = Class(1);
    pub const FINANCIAL: Class = Class(2);
    pub const FILE_ACTION: Class = Class(3);
    pub const REVERSAL: Class = Class(4);
    pub const RECONCILIATION: Class = Class(5);
    pub const ADMINISTRATIVE: Class = Class(6);
    pub const FEE_COLLECTION: Class = Class(7);
    pub const NETWORK: Class = Class(8);

    /// The digit, 0–9.
    pub fn digit(self) -> u8 {
        self.0
    }
}

/// A card number, read from a message. It cannot be printed in clear: `Display` and `Debug` show first
/// six and last four.
///
/// Its digits are the message's own when the wire carries them as ASCII (no copy: a copy into a
/// fixed array cost more than the rest of a typed read, see `benches/codec_peer.rs`), unpacked only
/// from other encodings (BCD, EBCDIC).
#[derive(Clone, Copy)]
pub struct Pan<'a>(Digits<'a>);

#[derive(Clone, Copy)]
enum Digits<'a> {
    Wire(&'a [u8]),
    Unpacked { digits: [u8; 19], len: u8 },
}

impl<'a> Pan<'a> {
    /// A PAN from its ASCII digits (at most 19).
    pub fn new(digits: &'a [u8]) -> Option<Pan<'a>> {
        if !crate::words::all_digits(digits) {
            return None;
        }
        Pan::of_digits(digits)
    }

    /// A PAN from bytes known to be digits; `None` past 19.
    #[inline(always)]
    pub(crate) fn of_digits(digits: &'a [u8]) -> Option<Pan<'a>> {
        (digits.len() <= 19).then_some(Pan(Digits::Wire(digits)))
    }

    pub(crate) fn from_field(field: Field<'a>) -> Option<Pan<'a>> {
        if field.spec().encoding == Encoding::Ascii {
            return Pan::new(field.wire());
        }
        let mut digits = [0u8; 19];
        let len = field.len();
        if len > digits.len() {
            return None;
        }
        let valid = if let Some(left) = field.packed_digits() {
            let mut slots = digits.iter_mut();
            crate::words::packed_each(field.wire(), len, left, |d| {
                if let Some(slot) = slots.next() {
                    *slot = b'0' + d;
                }
            })
        } else {
            digits
                .iter_mut()
                .zip(field.bytes())
                .for_each(|(slot, d)| *slot = d);
            crate::words::all_digits(&digits[..len])
        };
        if !valid {
            return None;
        }
        Some(Pan(Digits::Unpacked {
            digits,
            len: len as u8,
        }))
    }

    /// The digits in clear. Only for routing, hashing and the issuer link; never for logs.
    #[inline]
    pub fn expose(&self) -> &[u8] {
        match &self.0 {
            Digits::Wire(digits) => digits,
            Digits::Unpacked { digits, len } => &digits[..usize::from(*len)],
        }
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.expose().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first `n` digits (the BIN/IIN for routing), or fewer if the PAN is shorter.
    pub fn prefix(&self, n: usize) -> &[u8] {
        &self.expose()[..n.min(self.len())]
    }

    /// The last four digits.
    pub fn last4(&self) -> &[u8] {
        &self.expose()[self.len().saturating_sub(4)..]
    }
}

impl PartialEq for Pan<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

impl Eq for Pan<'_> {}

impl std::hash::Hash for Pan<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.expose().hash(state);
    }
}

impl fmt::Display for Pan<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_masked_pan(self.expose().iter().copied(), f)
    }
}

impl fmt::Debug for Pan<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pan({self})")
    }
}

/// DE39, two characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResponseCode(pub [u8; 2]);

impl ResponseCode {
    pub const APPROVED: ResponseCode = ResponseCode(*b"00");
    /// Approved for part of the amount requested: the answer's DE4 is what was approved.
    pub const PARTIAL: ResponseCode = ResponseCode(*b"10");
    pub const FORMAT_ERROR: ResponseCode = ResponseCode(*b"30");
    pub const ISSUER_UNAVAILABLE: ResponseCode = ResponseCode(*b"91");
    pub const DUPLICATE: ResponseCode = ResponseCode(*b"94");
    pub const SYSTEM_ERROR: ResponseCode = ResponseCode(*b"96");

    /// Approved, including partial and VIP approvals (00, 08, 10, 11).
    pub fn is_approval(&self) -> bool {
        matches!(&self.0, b"00" | b"08" | b"10" | b"11")
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}

impl fmt::Display for ResponseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0
            .iter()
            .try_for_each(|&b| fmt::Write::write_char(f, char::from(b)))
    }
}

impl fmt::Debug for ResponseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ResponseCode({self})")
    }
}

/// DE90, original data elements: what a reversal or advice refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OriginalData {
    pub mti: Mti,
    pub stan: u32,
    /// DE7 of the original, MMDDhhmmss.
    pub transmission: u64,
    /// Acquiring institution id (DE32), right-justified, zero-filled to 11 digits.
    pub acquirer: u64,
    /// Forwarding institution id (DE33), likewise.
    pub forwarding: u64,
}

impl OriginalData {
    /// The 42 ASCII digits of the field.
    pub fn to_digits(&self) -> [u8; 42] {
        let mut out = [b'0'; 42];
        out[..4].copy_from_slice(&self.mti.0);
        let parts = [
            (4, 6, u64::from(self.stan)),
            (10, 10, self.transmission),
            (20, 11, self.acquirer),
            (31, 11, self.forwarding),
        ];
        for (start, width, mut value) in parts {
            for slot in out[start..start + width].iter_mut().rev() {
                *slot = b'0' + (value % 10) as u8;
                value /= 10;
            }
        }
        out
    }

    pub(crate) fn parse(digits: impl Iterator<Item = u8>) -> Option<OriginalData> {
        let mut d = [0u8; 42];
        let mut n = 0;
        for (slot, c) in d.iter_mut().zip(digits) {
            if !c.is_ascii_digit() {
                return None;
            }
            *slot = c;
            n += 1;
        }
        if n != 42 {
            return None;
        }
        let num = |r: std::ops::Range<usize>| {
            d[r].iter()
                .fold(0u64, |acc, c| acc * 10 + u64::from(c - b'0'))
        };
        Some(OriginalData {
            mti: Mti([d[0], d[1], d[2], d[3]]),
            stan: num(4..10) as u32,
            transmission: num(10..20),
            acquirer: num(20..31),
            forwarding: num(31..42),
        })
    }
}
