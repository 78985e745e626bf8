//! A borrowed view of one field of a message, and the masking that every display of a field goes through.

use std::fmt::{self, Write as _};

use crate::spec::{Encoding, FieldSpec, FieldType, Sensitivity};
use crate::value::LogicalBytes;

/// One field of a [`Message`](crate::Message): its layout and its wire bytes, borrowed from the message.
///
/// `Display` and `Debug` honour the field's sensitivity: a PAN shows as first six and last four digits, a
/// secret (PIN block, track data, EMV data) as `[redacted]`. [`Field::unmasked`] is the one explicit way
/// around that.
#[derive(Clone, Copy)]
pub struct Field<'a> {
    number: u8,
    spec: &'a FieldSpec,
    wire: &'a [u8],
    len: usize,
}

impl<'a> Field<'a> {
    #[inline]
    pub(crate) fn new(number: u8, spec: &'a FieldSpec, wire: &'a [u8], len: usize) -> Self {
        Field {
            number,
            spec,
            wire,
            len,
        }
    }

    pub fn number(&self) -> u8 {
        self.number
    }

    pub fn spec(&self) -> &'a FieldSpec {
        self.spec
    }

    /// The data as it is on the wire, without the length prefix.
    pub fn wire(&self) -> &'a [u8] {
        self.wire
    }

    /// Length in the units the length prefix counts (digits for BCD, hex digits for hex, else bytes).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The logical value, byte by byte (ASCII digits for numeric fields, raw bytes for binary ones).
    pub fn bytes(&self) -> LogicalBytes<'a> {
        LogicalBytes::new(self.spec, self.wire, self.len)
    }

    /// The logical value in a new vector (binary data decoded from hex where the dialect carries hex).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.bytes().len());
        out.extend(self.bytes());
        out
    }

    /// The value as `&str` without copying, when the wire bytes are the logical value in ASCII.
    pub fn as_str(&self) -> Option<&'a str> {
        let plain = self.spec.encoding == Encoding::Ascii && self.wire.is_ascii();
        plain.then(|| std::str::from_utf8(self.wire).ok()).flatten()
    }

    /// The value as a number, when it is made of at most 19 digits.
    #[inline]
    pub fn to_u64(&self) -> Option<u64> {
        if self.spec.encoding == Encoding::Ascii {
            // The wire bytes are the digits: read them eight at a time.
            return crate::words::digits_value::<true>(self.wire, 0, self.wire.len());
        }
        if let Some(left) = self.packed_digits() {
            // Two digits a byte (not a nibble at a time through `bytes`).
            return crate::words::packed_value(self.wire, self.len, left);
        }
        if self.len > 19 || self.len == 0 {
            return None;
        }
        self.bytes().try_fold(0u64, |acc, c| {
            c.is_ascii_digit().then(|| acc * 10 + u64::from(c - b'0'))
        })
    }

    /// For packed (BCD) digits, an `n` field: whether the filler nibble of an odd count comes first.
    /// Such a field's digits are read two a byte ([`crate::words::packed_each`]).
    pub(crate) fn packed_digits(&self) -> Option<bool> {
        (self.spec.encoding == Encoding::Bcd && self.spec.kind == FieldType::N)
            .then(|| self.spec.filler.is_left())
    }

    /// Whether the logical value equals `other`.
    pub fn eq_bytes(&self, other: &[u8]) -> bool {
        self.len == other.len() && self.bytes().eq(other.iter().copied())
    }

    /// Subfield `index` of a composite field (DE90), as logical bytes.
    pub fn subfield(
        &self,
        index: usize,
    ) -> Option<std::iter::Take<std::iter::Skip<LogicalBytes<'a>>>> {
        let sub = self.spec.subfields.get(index)?;
        let skip: usize = self.spec.subfields[..index]
            .iter()
            .map(|s| usize::from(s.len))
            .sum();
        Some(self.bytes().skip(skip).take(usize::from(sub.len)))
    }

    /// The value in clear, for test data and for the journal's explicit needs: bypasses masking.
    pub fn unmasked(&self) -> Unmasked<'a> {
        Unmasked(*self)
    }

    fn write_clear(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.spec.kind == FieldType::B {
            self.bytes().try_for_each(|b| write!(f, "{b:02X}"))
        } else {
            self.bytes().try_for_each(|b| f.write_char(char::from(b)))
        }
    }
}

impl fmt::Display for Field<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.spec.sensitivity {
            Sensitivity::Clear => self.write_clear(f),
            Sensitivity::Pan => write_masked_pan(self.bytes(), f),
            Sensitivity::Secret => f.write_str("[redacted]"),
        }
    }
}

impl fmt::Debug for Field<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.spec.sensitivity {
            Sensitivity::Clear if self.spec.kind != FieldType::B => write!(f, "\"{self}\""),
            _ => fmt::Display::fmt(self, f),
        }
    }
}

/// A field shown in clear; see [`Field::unmasked`].
#[derive(Clone, Copy)]
pub struct Unmasked<'a>(Field<'a>);

impl fmt::Display for Unmasked<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.write_clear(f)
    }
}

impl fmt::Debug for Unmasked<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Unmasked({})", self.0.number)
    }
}

/// Writes a card number as PCI DSS allows it to be shown: at most the first six and the last four digits,
/// and never so many that fewer than three stay hidden.
pub(crate) fn write_masked_pan(
    digits: impl ExactSizeIterator<Item = u8>,
    f: &mut fmt::Formatter<'_>,
) -> fmt::Result {
    let n = digits.len();
    let (head, tail) = match n {
        13.. => (6, 4),
        8..=12 => (0, 4),
        _ => (0, 0),
    };
    for (i, d) in digits.enumerate() {
        if i < head || i >= n - tail {
            f.write_char(char::from(d))?;
        } else if i == head {
            f.write_char('…')?;
        }
    }
    Ok(())
}
