//! The dialect model: how each data element is laid out on the wire.
//!
//! A [`Spec`] is plain data. The `dialects` crate builds one from a TOML file; nothing in the codec knows a
//! particular dialect, so a new dialect is a new file, not new code. [`Spec::new`] checks the description
//! once, so that decode and encode can trust it on the hot path.

use crate::error::{Error, Location, Reason};
use crate::layout::Layout;

/// The highest field number: with a tertiary bitmap fields run to 192.
pub const MAX_FIELD: u8 = 192;

/// ISO 8583 data element types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldType {
    /// Digits only.
    N,
    /// Letters and digits (not validated beyond the character set: hosts disagree on what `an` allows).
    An,
    /// Any character.
    Ans,
    /// Raw bytes.
    B,
    /// Track data: digits, `=` (or `D`) separators.
    Z,
    /// `x+n`: a `C`/`D` sign then digits (amount fields 28–31, 97).
    Xn,
}

impl FieldType {
    pub fn name(self) -> &'static str {
        match self {
            FieldType::N => "n",
            FieldType::An => "an",
            FieldType::Ans => "ans",
            FieldType::B => "b",
            FieldType::Z => "z",
            FieldType::Xn => "x+n",
        }
    }

    /// Whether a logical (Latin-1) byte may appear at position `i` of a value of this type.
    pub(crate) fn allows(self, i: usize, byte: u8) -> bool {
        match self {
            FieldType::N => byte.is_ascii_digit(),
            FieldType::Z => byte.is_ascii_digit() || byte == b'=' || byte == b'D',
            FieldType::Xn if i == 0 => byte == b'C' || byte == b'D',
            FieldType::Xn => byte.is_ascii_digit(),
            FieldType::An | FieldType::Ans | FieldType::B => true,
        }
    }
}

/// How data (or a length prefix, or the MTI) is represented in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    Ascii,
    /// EBCDIC, code page 037.
    Ebcdic,
    /// Packed BCD, two digits a byte.
    Bcd,
    /// Raw bytes (data), or a big-endian unsigned integer (a length prefix).
    Binary,
    /// Binary data as uppercase ASCII hex, two characters a byte; lengths count hex digits.
    Hex,
}

/// Fixed length or a variable length with an `LL`, `LLL` or `LLLL` prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LengthKind {
    Fixed,
    Ll,
    Lll,
    Llll,
}

impl LengthKind {
    /// Decimal digits of the length prefix (0 for fixed).
    pub fn digits(self) -> u32 {
        match self {
            LengthKind::Fixed => 0,
            LengthKind::Ll => 2,
            LengthKind::Lll => 3,
            LengthKind::Llll => 4,
        }
    }
}

/// Where the filler nibble goes when an odd number of digits is packed as BCD, and its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Filler {
    Left0,
    LeftF,
    Right0,
    RightF,
}

impl Filler {
    pub(crate) fn is_left(self) -> bool {
        matches!(self, Filler::Left0 | Filler::LeftF)
    }

    pub(crate) fn nibble(self) -> u8 {
        match self {
            Filler::Left0 | Filler::Right0 => 0x0,
            Filler::LeftF | Filler::RightF => 0xF,
        }
    }
}

/// Padding a builder applies to a short value of a fixed-length field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pad {
    pub left: bool,
    pub byte: u8,
}

/// How a field may be shown. Enforced by `Display`/`Debug` of messages and fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Sensitivity {
    #[default]
    Clear,
    /// A card number: shown as first six and last four digits only.
    Pan,
    /// PIN block, track data, CVV, EMV data: never shown.
    Secret,
}

/// A fixed-width part of a composite field (DE90).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Subfield {
    pub name: String,
    pub len: u16,
}

/// The layout of one data element.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FieldSpec {
    pub name: String,
    pub kind: FieldType,
    pub length: LengthKind,
    /// Maximum (or, for fixed fields, exact) length in the units the length prefix counts: digits for
    /// BCD data, hex digits for hex data, bytes otherwise.
    pub max: u16,
    pub encoding: Encoding,
    /// Encoding of the length prefix; ignored for fixed fields.
    pub length_encoding: Encoding,
    /// Odd-length BCD filler; ignored unless `encoding` is BCD.
    pub filler: Filler,
    /// Padding for short values of fixed-length fields given to a builder; `None` means exact length only.
    pub pad: Option<Pad>,
    pub sensitivity: Sensitivity,
    /// Composite layout, e.g. DE90; empty for ordinary fields.
    pub subfields: Vec<Subfield>,
}

impl FieldSpec {
    /// Length units for a logical value of `bytes` bytes (a hex digit is half a byte).
    #[inline]
    pub(crate) fn units(&self, bytes: usize) -> usize {
        if self.encoding == Encoding::Hex {
            bytes * 2
        } else {
            bytes
        }
    }

    /// Bytes on the wire for a value of `len` length units.
    #[inline]
    pub fn wire_len(&self, len: usize) -> usize {
        match (self.encoding, self.kind) {
            // x+n packed: the sign is one plain byte, the digits are BCD.
            (Encoding::Bcd, FieldType::Xn) if len > 0 => 1 + (len - 1).div_ceil(2),
            (Encoding::Bcd, _) => len.div_ceil(2),
            _ => len,
        }
    }

    /// Bytes of the length prefix.
    #[inline]
    pub fn prefix_len(&self) -> usize {
        let digits = self.length.digits() as usize;
        match (self.length, self.length_encoding) {
            (LengthKind::Fixed, _) => 0,
            (_, Encoding::Ascii | Encoding::Ebcdic) => digits,
            (_, Encoding::Bcd) => digits.div_ceil(2),
            (LengthKind::Ll, Encoding::Binary) => 1,
            (_, Encoding::Binary) => 2,
            (_, Encoding::Hex) => digits,
        }
    }

    /// How a value of this field carries over to `other`, the same field in another dialect.
    pub(crate) fn likeness(&self, other: &FieldSpec) -> Likeness {
        let shape = (self.kind, self.length, self.max) == (other.kind, other.length, other.max);
        let hex = self.encoding == Encoding::Hex || other.encoding == Encoding::Hex;
        if !shape || hex {
            Likeness::Different
        } else if self.encoding == other.encoding
            && (self.encoding != Encoding::Bcd || self.filler == other.filler)
        {
            Likeness::Same
        } else {
            Likeness::Reencode
        }
    }

    fn check(&self, spec: &str, number: u8) -> Result<(), Error> {
        let fail = |reason: &'static str| Error::Spec {
            spec: spec.to_owned(),
            at: Location::Field(number),
            reason: Reason::Invalid(reason),
        };
        if self.max == 0 {
            return Err(fail("max length must be at least 1"));
        }
        let prefix_limit = match (self.length, self.length_encoding) {
            (LengthKind::Fixed, _) => u64::MAX,
            (LengthKind::Ll, Encoding::Binary) => 255,
            (_, Encoding::Binary) => 65_535,
            (kind, _) => 10u64.pow(kind.digits()) - 1,
        };
        if u64::from(self.max) > prefix_limit {
            return Err(fail("max length does not fit the length prefix"));
        }
        if self.length_encoding == Encoding::Hex {
            return Err(fail("a length prefix cannot be hex"));
        }
        match (self.kind, self.encoding) {
            (FieldType::B, Encoding::Hex)
                if self.length == LengthKind::Fixed && self.max % 2 == 1 =>
            {
                return Err(fail("a fixed hex field needs an even number of digits"));
            }
            (FieldType::B, Encoding::Binary | Encoding::Hex) => {}
            (FieldType::B, _) | (_, Encoding::Binary | Encoding::Hex) => {
                return Err(fail(
                    "type b needs binary or hex encoding, which hold only type b",
                ));
            }
            (FieldType::An | FieldType::Ans, Encoding::Bcd) => {
                return Err(fail("BCD encoding holds only n, z and x+n fields"));
            }
            (FieldType::Xn, _) if self.max < 2 => {
                return Err(fail("an x+n field needs a sign and a digit"));
            }
            _ => {}
        }
        if !self.subfields.is_empty() {
            let total: u32 = self.subfields.iter().map(|s| u32::from(s.len)).sum();
            if self.length != LengthKind::Fixed || total != u32::from(self.max) {
                return Err(fail("subfields must fill a fixed-length field exactly"));
            }
        }
        Ok(())
    }
}

/// See [`FieldSpec::likeness`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Likeness {
    /// Same bytes on the wire (length prefixes aside, which encode writes).
    Same,
    /// Same type and length: every value of one is valid in the other, in another encoding.
    Reencode,
    /// Values must be checked against the other.
    Different,
}

/// Representation of the bitmaps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BitmapEncoding {
    /// 8 raw bytes per bitmap.
    Binary,
    /// 16 uppercase ASCII hex characters per bitmap (lowercase accepted on decode).
    Hex,
}

/// Where a dialect's terminals carry their batch totals in a settlement request (0500) when not in
/// the ISO 8583:1987 fields (DE74, DE76, DE86, DE88): one field, and each total's place in its value
/// (offset and length, in characters, of a run of digits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TotalsLayout {
    pub field: u8,
    pub credits: (usize, usize),
    pub debits: (usize, usize),
    pub credit_amount: (usize, usize),
    pub debit_amount: (usize, usize),
}

/// A dialect: MTI and bitmap representation plus the layout of every field.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Spec {
    name: String,
    mti: Encoding,
    bitmap: BitmapEncoding,
    tertiary: bool,
    totals: Option<TotalsLayout>,
    /// Indexed by field number; `fields[0]` and `fields[1]` (the secondary bitmap) are always `None`.
    fields: Vec<Option<FieldSpec>>,
    /// `fields` reduced to what the decode loop reads, in the same places; indexed by any `u8`, so the
    /// loop needs no bounds check.
    layouts: Box<[Layout; 256]>,
}

impl Spec {
    /// Checks and builds a dialect. With `tertiary`, bit 65 announces a third bitmap (right after the
    /// secondary one) and fields 129–192 may be described; without it, field 65 is an ordinary field.
    pub fn new(
        name: impl Into<String>,
        mti: Encoding,
        bitmap: BitmapEncoding,
        tertiary: bool,
        fields: impl IntoIterator<Item = (u8, FieldSpec)>,
    ) -> Result<Spec, Error> {
        let name = name.into();
        let invalid = |at, reason| Error::Spec {
            spec: name.clone(),
            at,
            reason: Reason::Invalid(reason),
        };
        if matches!(mti, Encoding::Binary | Encoding::Hex) {
            return Err(invalid(Location::Mti, "the MTI cannot be binary"));
        }
        let last = if tertiary { MAX_FIELD } else { 128 };
        let mut table = vec![None; usize::from(MAX_FIELD) + 1];
        for (number, field) in fields {
            let at = Location::Field(number);
            if number < 2 || number > last {
                return Err(invalid(
                    at,
                    "field number out of range for this bitmap layout",
                ));
            }
            if tertiary && number == 65 {
                return Err(invalid(
                    at,
                    "field 65 is the tertiary bitmap in this dialect",
                ));
            }
            field.check(&name, number)?;
            if table[usize::from(number)].replace(field).is_some() {
                return Err(invalid(at, "field described twice"));
            }
        }
        let mut layouts = Box::new([Layout::ABSENT; 256]);
        for (layout, field) in layouts.iter_mut().zip(&table) {
            *layout = field.as_ref().map_or(Layout::ABSENT, Layout::of);
        }
        Ok(Spec {
            name,
            mti,
            bitmap,
            tertiary,
            totals: None,
            layouts,
            fields: table,
        })
    }

    /// This dialect with its terminals' settlement totals carried as `layout` says, in a field it
    /// describes.
    pub fn with_totals(mut self, layout: TotalsLayout) -> Result<Spec, Error> {
        if self.field(layout.field).is_none() {
            return Err(Error::Spec {
                spec: self.name.clone(),
                at: Location::Field(layout.field),
                reason: Reason::Invalid(
                    "settlement totals in a field the dialect does not describe",
                ),
            });
        }
        self.totals = Some(layout);
        Ok(self)
    }

    /// Where settlement totals are, when not in DE74, DE76, DE86 and DE88.
    pub fn totals(&self) -> Option<TotalsLayout> {
        self.totals
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn mti_encoding(&self) -> Encoding {
        self.mti
    }

    pub fn bitmap_encoding(&self) -> BitmapEncoding {
        self.bitmap
    }

    /// Whether bit 65 announces a tertiary bitmap.
    pub fn has_tertiary_bitmap(&self) -> bool {
        self.tertiary
    }

    /// The layout of field `number`, if the dialect has one.
    #[inline]
    pub fn field(&self, number: u8) -> Option<&FieldSpec> {
        self.fields
            .get(usize::from(number))
            .and_then(Option::as_ref)
    }

    /// What decoding field `number` needs ([`Layout::ABSENT`] if the dialect has no such field).
    #[inline]
    pub(crate) fn layout(&self, number: u8) -> &Layout {
        &self.layouts[usize::from(number)]
    }

    /// Every described field, in number order.
    pub fn fields(&self) -> impl Iterator<Item = (u8, &FieldSpec)> {
        self.fields
            .iter()
            .enumerate()
            .filter_map(|(n, f)| Some((n as u8, f.as_ref()?)))
    }
}
