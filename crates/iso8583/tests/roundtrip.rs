//! Property tests: every dialect round-trips random valid messages, translation keeps every value, and no
//! input makes decode panic.

mod support;

use std::collections::BTreeMap;

use bytes::Bytes;
use iso8583::{Encoding, FieldSpec, Message, Mti, Spec};
use proptest::prelude::*;
use support::{any_field, dialect, message, value};

const DIALECTS: [&str; 4] = [
    "iso87ascii",
    "iso87ascii-hexbitmap",
    "iso87bcd",
    "iso87ebcdic",
];

fn roundtrip(name: &str) -> impl Strategy<Value = Message> {
    message(dialect(name), any_field)
}

/// A field's capacity in logical bytes (a hex field's length counts two digits a byte).
fn max_bytes(fs: &FieldSpec) -> u16 {
    if fs.encoding == Encoding::Hex {
        fs.max / 2
    } else {
        fs.max
    }
}

fn translations() -> impl Strategy<Value = (Message, &'static Spec)> {
    (0..DIALECTS.len()).prop_flat_map(|via| {
        let (from, to) = (dialect("iso87ascii"), dialect(DIALECTS[via]));
        let same_layout = move |n: u8| match (from.field(n), to.field(n)) {
            (Some(a), Some(b)) => {
                (a.kind, a.length, max_bytes(a)) == (b.kind, b.length, max_bytes(b))
            }
            _ => false,
        };
        (message(from, same_layout), Just(to))
    })
}

/// An edit of a message being built: field `.0` set to `Some` value, or removed.
type Edit = (u8, Option<Vec<u8>>);

/// A builder's edits in any order, some of the same field more than once.
fn edits() -> impl Strategy<Value = (&'static Spec, Vec<Edit>)> {
    (0..DIALECTS.len()).prop_flat_map(|which| {
        let spec = dialect(DIALECTS[which]);
        let fields: Vec<(u8, &'static FieldSpec)> = spec.fields().filter(|(n, _)| *n > 1).collect();
        proptest::collection::vec(0..fields.len(), 0..30).prop_flat_map(move |picks| {
            let ops: Vec<_> = picks
                .into_iter()
                .map(|i| {
                    let (n, fs) = fields[i];
                    proptest::option::weighted(0.8, value(fs)).prop_map(move |v| (n, v))
                })
                .collect();
            (Just(spec), ops)
        })
    })
}

fn check_roundtrip(msg: &Message) -> Result<(), TestCaseError> {
    let wire = msg.to_bytes();
    let back = Message::decode(msg.spec(), wire.clone())
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&back, msg);
    // Re-encoding what was decoded gives the same bytes.
    prop_assert_eq!(back.to_bytes(), wire);
    check_typed_reads(&back)
}

/// The typed reads (each dialect's fast paths) agree with the field's logical value, read the slow way.
fn check_typed_reads(msg: &Message) -> Result<(), TestCaseError> {
    for field in msg.fields() {
        let value = field.to_vec();
        if field.spec().kind == iso8583::FieldType::N {
            let parsed = std::str::from_utf8(&value)
                .ok()
                .and_then(|t| t.parse::<u64>().ok());
            let expected = parsed.filter(|_| (1..=19).contains(&value.len()));
            prop_assert_eq!(
                msg.number(field.number()),
                expected,
                "field {}",
                field.number()
            );
        }
    }
    if let Some(pan) = msg.get(2).filter(|f| f.len() <= 19) {
        prop_assert_eq!(msg.pan().map(|p| p.expose().to_vec()), Some(pan.to_vec()));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn ascii_roundtrips(msg in roundtrip("iso87ascii")) { check_roundtrip(&msg)?; }

    #[test]
    fn hex_bitmap_roundtrips(msg in roundtrip("iso87ascii-hexbitmap")) { check_roundtrip(&msg)?; }

    #[test]
    fn bcd_roundtrips(msg in roundtrip("iso87bcd")) { check_roundtrip(&msg)?; }

    #[test]
    fn ebcdic_roundtrips(msg in roundtrip("iso87ebcdic")) { check_roundtrip(&msg)?; }

    /// Any dialect to any other and back: every logical value survives (for the fields both dialects lay
    /// out alike; iso87bcd follows jPOS where DE93 and DE96 are longer).
    #[test]
    fn translation_keeps_values((msg, other) in translations()) {
        let there = msg.translate(other).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let wire = there.to_bytes();
        let decoded = Message::decode(other, wire).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let back = decoded.translate(msg.spec()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(back, msg);
    }

    /// Whatever the order of the edits, the frame is the one of a message built from the final values
    /// alone, in ascending order (whose body is kept in wire form and copied whole), and it decodes back.
    #[test]
    fn edits_in_any_order_encode_as_the_final_values((spec, ops) in edits()) {
        let mut edited = Message::new(spec, Mti::FINANCIAL);
        let mut last = BTreeMap::new();
        for (n, v) in ops {
            match v {
                Some(v) => {
                    edited.set(n, &v).map_err(|e| TestCaseError::fail(e.to_string()))?;
                    last.insert(n, v);
                }
                None => {
                    edited.remove(n);
                    last.remove(&n);
                }
            }
        }
        let mut built = Message::new(spec, Mti::FINANCIAL);
        for (n, v) in &last {
            built.set(*n, v).map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        prop_assert_eq!(edited.to_bytes(), built.to_bytes());
        check_roundtrip(&edited)?;
        check_roundtrip(&built)?;
    }

    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600), which in 0..DIALECTS.len()) {
        let _ = Message::decode(dialect(DIALECTS[which]), Bytes::from(bytes));
    }

    /// Valid messages with bytes flipped: the nastier input, since it gets past the MTI and bitmap.
    #[test]
    fn corrupted_messages_never_panic(msg in roundtrip("iso87bcd"), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
        let mut wire = msg.to_bytes().to_vec();
        for (at, byte) in flips {
            let i = at % wire.len();
            wire[i] ^= byte;
        }
        let _ = Message::decode(msg.spec(), Bytes::from(wire));
    }
}
