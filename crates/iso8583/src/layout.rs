//! The per-field hot paths: each field's layout reduced, once per dialect, to the few bytes the decode
//! and encode loops need, and decode's scan of a field, whose data checks take whole 8-byte words
//! (`words`) instead of single bytes.
//!
//! A field this path cannot vouch for (a check it does not know, or data that fails one) goes to
//! [`crate::value::decode`], the precise path, which finds out exactly what is wrong and where. The fast
//! path only ever says "valid" of data the precise path would also accept.

use bytes::BufMut;

use crate::charset::from_latin1;
use crate::spec::{Encoding, FieldSpec, FieldType, Filler};
use crate::value::{Span, read_prefix};
use crate::words::{
    ONES, digits_bad, hex_ok, packed_bad, packed_ok, packed_track_bad, track_bad, words_ok,
};

/// What decoding or encoding one field needs: `Copy`, 12 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Layout {
    /// Exact length of a fixed field, maximum of a variable one, in length units.
    max: u16,
    /// Bytes of data of a fixed field.
    fixed_wire_len: u16,
    /// Bytes of the length prefix; 0 for fixed fields.
    prefix: u8,
    length_encoding: Encoding,
    /// 1 for packed digits (two a byte), 0 for a byte a unit.
    packed: u8,
    check: Check,
    filler: Filler,
    /// `0`, `=` and `D` in the field's character set (ASCII or EBCDIC), for text digits and track data.
    zero: u8,
    separators: [u8; 2],
}

/// The word-at-a-time check that covers a field's data, if one does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Check {
    /// Any byte is valid: raw binary, `an` and `ans` text.
    Nothing,
    /// `n` text: every byte a digit.
    Digits,
    /// `z` text: digits and the separators `=` and `D`.
    Track,
    /// Packed `n`: every nibble 0–9, and the filler nibble of an odd count where the filler says.
    Packed,
    /// Packed `z`: nibbles 0–9 and the separator D, the filler as for `n`.
    PackedTrack,
    /// Binary data as hex text: an even count of hex digits, either case.
    Hex,
    /// Anything else (`x+n`, a field the dialect does not have): the precise path decides.
    Precise,
}

impl Layout {
    /// A field the dialect does not describe.
    pub(crate) const ABSENT: Layout = Layout {
        max: 0,
        fixed_wire_len: 0,
        prefix: 0,
        length_encoding: Encoding::Binary,
        packed: 0,
        check: Check::Precise,
        filler: Filler::Left0,
        zero: b'0',
        separators: [b'=', b'D'],
    };

    pub(crate) fn of(fs: &FieldSpec) -> Layout {
        let check = match (fs.encoding, fs.kind) {
            (Encoding::Binary, _)
            | (Encoding::Ascii | Encoding::Ebcdic, FieldType::An | FieldType::Ans) => {
                Check::Nothing
            }
            (Encoding::Ascii | Encoding::Ebcdic, FieldType::N) => Check::Digits,
            (Encoding::Ascii | Encoding::Ebcdic, FieldType::Z) => Check::Track,
            (Encoding::Bcd, FieldType::N) => Check::Packed,
            (Encoding::Bcd, FieldType::Z) => Check::PackedTrack,
            (Encoding::Hex, _) => Check::Hex,
            _ => Check::Precise,
        };
        let text = |c| from_latin1(fs.encoding == Encoding::Ebcdic, c);
        Layout {
            max: fs.max,
            fixed_wire_len: fs.wire_len(usize::from(fs.max)) as u16,
            prefix: fs.prefix_len() as u8,
            length_encoding: fs.length_encoding,
            packed: u8::from(fs.encoding == Encoding::Bcd),
            check,
            filler: fs.filler,
            zero: text(b'0'),
            separators: [text(b'='), text(b'D')],
        }
    }

    /// Bytes of the length prefix on the wire; 0 for a fixed field.
    #[inline(always)]
    pub(crate) fn prefix_len(&self) -> usize {
        usize::from(self.prefix)
    }

    /// Whether the field's data is ASCII digits, every one checked on decode and on `set`.
    #[inline]
    pub(crate) fn ascii_digits(&self) -> bool {
        self.check == Check::Digits && self.zero == b'0'
    }

    /// Writes the length prefix for a value of `len` units (nothing for a fixed field). The prefix's
    /// size and encoding say it all: LL takes one byte in binary and BCD, two as text, and so on.
    #[inline]
    pub(crate) fn write_prefix(&self, len: usize, out: &mut impl BufMut) {
        // Each size a copy of its own: a copy of a size known only at run time is a call to `memcpy`,
        // whose narrow stores stall the wider loads that read them next. A fixed field writes nothing.
        match self.prefix {
            0 => {}
            1 => out.put_u8(self.prefix_bytes(len)[3]),
            2 => out.put_slice(&self.prefix_bytes(len)[2..]),
            3 => out.put_slice(&self.prefix_bytes(len)[1..]),
            _ => out.put_slice(&self.prefix_bytes(len)),
        }
    }

    /// The length prefix for a value of `len` units, in the last [`Layout::prefix_len`] bytes of four.
    #[inline(always)]
    pub(crate) fn prefix_bytes(&self, len: usize) -> [u8; 4] {
        let pair = |v: usize| ((v / 10) as u8) << 4 | (v % 10) as u8;
        match self.length_encoding {
            Encoding::Binary => (len as u32).to_be_bytes(),
            Encoding::Bcd => [0, 0, pair(len / 100 % 100), pair(len % 100)],
            // Constant divisors: the compiler turns them into multiplications.
            encoding => [len / 1000 % 10, len / 100 % 10, len / 10 % 10, len % 10]
                .map(|d| from_latin1(encoding == Encoding::Ebcdic, b'0' + d as u8)),
        }
    }
}

/// Reads field data at `pos`: its span if the prefix, the bounds and the data are all valid, else
/// `None` (the precise path then says why).
#[inline]
pub(crate) fn scan(layout: &Layout, buf: &[u8], pos: usize) -> Option<Span> {
    let prefix = usize::from(layout.prefix);
    let start = pos + prefix;
    let (len, wire_len) = if prefix == 0 {
        (usize::from(layout.max), usize::from(layout.fixed_wire_len))
    } else {
        let len = read_prefix(layout.length_encoding, buf.get(pos..start)?)
            .filter(|&len| len <= usize::from(layout.max))?;
        // Wrong for `x+n` only, whose check is left to the precise path anyway.
        (len, (len + usize::from(layout.packed)) >> layout.packed)
    };
    let end = start + wire_len;
    if end > buf.len() {
        return None;
    }
    let ok = match layout.check {
        Check::Nothing => true,
        Check::Digits => {
            let zeros = ONES * u64::from(layout.zero);
            words_ok(buf, start, end, |x| digits_bad(x, zeros))
        }
        Check::Packed => packed_ok(buf, start, end, layout.filler, len, packed_bad),
        Check::PackedTrack => packed_ok(buf, start, end, layout.filler, len, packed_track_bad),
        Check::Track => track_ok(layout, buf, start, end),
        Check::Hex => len.is_multiple_of(2) && hex_ok(buf, start, end),
        Check::Precise => false,
    };
    ok.then_some(Span {
        start,
        wire_len,
        len,
    })
}

/// Text track data, out of line (as the hex check is): a decode loop that inlined them kept less in
/// registers for the fields that need neither (packed track data inline measured faster in both dialects).
#[inline(never)]
fn track_ok(layout: &Layout, buf: &[u8], start: usize, end: usize) -> bool {
    let zeros = ONES * u64::from(layout.zero);
    let separators = layout.separators.map(|c| ONES * u64::from(c));
    words_ok(buf, start, end, |x| track_bad(x, zeros, separators))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layout_is_small() {
        assert_eq!(size_of::<Layout>(), 12);
    }

    static LAYOUTS: std::sync::LazyLock<Vec<FieldSpec>> = std::sync::LazyLock::new(layouts);

    /// Every field layout a dialect may describe.
    fn layouts() -> Vec<FieldSpec> {
        use crate::spec::{LengthKind, Spec};
        let mut all = Vec::new();
        for kind in [
            FieldType::N,
            FieldType::Z,
            FieldType::An,
            FieldType::B,
            FieldType::Xn,
        ] {
            for encoding in [
                Encoding::Ascii,
                Encoding::Ebcdic,
                Encoding::Bcd,
                Encoding::Binary,
                Encoding::Hex,
            ] {
                for length in [LengthKind::Fixed, LengthKind::Ll, LengthKind::Lll] {
                    for length_encoding in [
                        Encoding::Ascii,
                        Encoding::Ebcdic,
                        Encoding::Bcd,
                        Encoding::Binary,
                    ] {
                        for filler in [Filler::Left0, Filler::LeftF, Filler::Right0, Filler::RightF]
                        {
                            for max in [3, 8, 9, 19] {
                                let fs = FieldSpec {
                                    name: String::new(),
                                    kind,
                                    length,
                                    max,
                                    encoding,
                                    length_encoding,
                                    filler,
                                    pad: None,
                                    sensitivity: Default::default(),
                                    subfields: Vec::new(),
                                };
                                let one = [(2, fs.clone())];
                                if Spec::new(
                                    "t",
                                    Encoding::Ascii,
                                    crate::BitmapEncoding::Binary,
                                    false,
                                    one,
                                )
                                .is_ok()
                                {
                                    all.push(fs);
                                }
                            }
                        }
                    }
                }
            }
        }
        all
    }

    /// Bytes that are often valid somewhere (digits in each charset, packed digits, separators,
    /// fillers), and their neighbours.
    fn wire_byte() -> impl proptest::strategy::Strategy<Value = u8> {
        use proptest::prelude::*;
        prop_oneof![
            4 => b'0'..=b'9',
            4 => 0xF0u8..=0xF9,
            4 => (0u8..=9, 0u8..=9).prop_map(|(h, l)| h << 4 | l),
            1 => Just(b'='), 1 => Just(b'D'), 1 => Just(0x7E), 1 => Just(0xC4),
            1 => Just(0xD0), 1 => Just(0x0D), 1 => Just(0x3F), 1 => Just(0xF),
            2 => proptest::sample::select(&[b'/', b':', b'<', b'>', b'C', b'E', 0xEF, 0xFA, 0x7D, 0xC5, 0xE0, 0x1D][..]),
            2 => any::<u8>(),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(20_000))]

        /// The fast path never accepts what the precise path rejects, and finds the same span.
        #[test]
        fn the_fast_path_agrees_with_the_precise_one(
            index in 0usize..10_000,
            len in 0usize..=12,
            data in proptest::collection::vec(wire_byte(), 0..=24),
            prefix in proptest::collection::vec(wire_byte(), 0..=2),
        ) {
            let fs = &LAYOUTS[index % LAYOUTS.len()];
            // A plausible length prefix in front, so that variable fields get past it now and then.
            let mut buf = vec![0xAA; 10];
            let digits = format!("{len:0width$}", width = fs.length.digits() as usize);
            match fs.length_encoding {
                _ if fs.length == crate::spec::LengthKind::Fixed => {}
                Encoding::Ascii => buf.extend(digits.bytes()),
                Encoding::Ebcdic => buf.extend(digits.bytes().map(|c| c + 0xC0)),
                Encoding::Bcd => buf.extend(digits.as_bytes().chunks(2).map(|p| match p {
                    [h, l] => (h - b'0') << 4 | (l - b'0'),
                    [l] => l - b'0',
                    _ => unreachable!(),
                })),
                _ => buf.extend(&prefix),
            }
            buf.extend(&data);
            let fast = scan(&Layout::of(fs), &buf, 10);
            let precise = crate::value::decode(fs, 2, &buf, 10);
            if let Some(span) = fast {
                let precise = precise.expect("the precise path accepts what the fast one does");
                proptest::prop_assert_eq!((span.start, span.len, span.wire_len), (precise.start, precise.len, precise.wire_len));
            }
        }
    }
}
