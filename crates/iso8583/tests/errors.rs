//! Every class of bad input is reported with the field, the byte offset and the reason.

mod support;

use bytes::Bytes;
use iso8583::{Error, Location, Message, Reason};
use proptest::prelude::*;
use support::dialect;

fn decode(spec: &str, bytes: Vec<u8>) -> Error {
    Message::decode(dialect(spec), Bytes::from(bytes)).expect_err("must not decode")
}

/// MTI + a primary bitmap with the given fields + raw field bytes, in the ASCII dialect.
fn ascii(fields: &[u8], body: &[u8]) -> Vec<u8> {
    let bitmap = fields.iter().fold(0u64, |acc, n| acc | 1 << (64 - n));
    [&b"0200"[..], &bitmap.to_be_bytes(), body].concat()
}

fn at(err: &Error) -> (Location, usize, Reason) {
    match err {
        Error::Decode { at, offset, reason } => (*at, *offset, reason.clone()),
        other => panic!("not a decode error: {other}"),
    }
}

#[test]
fn llvar_length_over_max() {
    let err = decode(
        "iso87ascii",
        ascii(&[2], &[&b"20"[..], &[b'4'; 20]].concat()),
    );
    assert_eq!(
        at(&err),
        (Location::Field(2), 12, Reason::TooLong { len: 20, max: 19 })
    );
    assert_eq!(
        err.to_string(),
        "field 2 at byte 12: length 20 over the maximum 19"
    );
    assert!(err.is_format_error());
}

#[test]
fn non_digit_in_numeric_field() {
    let err = decode("iso87ascii", ascii(&[3], b"00A000"));
    assert_eq!(
        at(&err),
        (
            Location::Field(3),
            14,
            Reason::BadChar {
                byte: b'A',
                kind: "n"
            }
        )
    );
}

#[test]
fn bitmap_bit_without_spec() {
    let spec = support::custom(
        false,
        r#"3 = { name = "Processing code", type = "n", max = 6 }"#,
    );
    let err =
        Message::decode(spec, Bytes::from(ascii(&[3, 4], b"000000000000001000"))).unwrap_err();
    assert_eq!(at(&err), (Location::Field(4), 18, Reason::NoSpec));
}

#[test]
fn truncated_field_mti_and_bitmap() {
    let err = decode("iso87ascii", ascii(&[4], b"00000"));
    assert_eq!(
        at(&err),
        (
            Location::Field(4),
            12,
            Reason::Truncated { need: 12, have: 5 }
        )
    );
    let err = decode("iso87ascii", b"02".to_vec());
    assert_eq!(
        at(&err),
        (Location::Mti, 0, Reason::Truncated { need: 4, have: 2 })
    );
    let err = decode("iso87ascii", b"0200\x80\0\0".to_vec());
    assert_eq!(
        at(&err),
        (
            Location::Bitmap(1),
            4,
            Reason::Truncated { need: 8, have: 3 }
        )
    );
    // Bit 1 promises a secondary bitmap that is not there.
    let err = decode(
        "iso87ascii",
        [&b"0200"[..], &[0x80, 0, 0, 0, 0, 0, 0, 0]].concat(),
    );
    assert_eq!(at(&err).0, Location::Bitmap(2));
}

#[test]
fn trailing_bytes() {
    let err = decode("iso87ascii", ascii(&[3], b"000000XY"));
    assert_eq!(
        at(&err),
        (Location::Field(3), 18, Reason::TrailingBytes { count: 2 })
    );
}

#[test]
fn bad_bcd_nibble_and_filler() {
    // BCD MTI 0200, bitmap with field 3, DE3 = 00 0A 00.
    let mut bytes = vec![0x02, 0x00, 0x20, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x0A, 0x00];
    let err = decode("iso87bcd", bytes.clone());
    assert_eq!(
        at(&err),
        (Location::Field(3), 11, Reason::BadNibble { nibble: 0xA })
    );
    // DE22 "051" must carry a left 0 filler: 0x10 0x51 is not "051".
    bytes = vec![0x02, 0x00, 0x00, 0x00, 0x04, 0, 0, 0, 0, 0, 0x10, 0x51];
    let err = decode("iso87bcd", bytes);
    assert_eq!(
        at(&err),
        (Location::Field(22), 10, Reason::BadNibble { nibble: 0x1 })
    );
    // BCD MTI with a letter nibble.
    let err = decode("iso87bcd", vec![0x0B, 0x00, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(
        at(&err),
        (Location::Mti, 0, Reason::BadNibble { nibble: 0xB })
    );
}

#[test]
fn bad_length_prefix_and_hex_bitmap() {
    let err = decode("iso87ascii", ascii(&[2], b"1A4761739001"));
    assert_eq!(at(&err), (Location::Field(2), 12, Reason::BadLengthPrefix));
    let err = decode("iso87ascii-hexbitmap", b"02002000000000G00000".to_vec());
    assert_eq!(
        at(&err),
        (Location::Bitmap(1), 14, Reason::BadHex { byte: b'G' })
    );
}

#[test]
fn non_digit_mti() {
    let err = decode("iso87ascii", b"02X0\0\0\0\0\0\0\0\0".to_vec());
    assert_eq!(
        at(&err),
        (
            Location::Mti,
            2,
            Reason::BadChar {
                byte: b'X',
                kind: "n"
            }
        )
    );
    assert_eq!(err.reason().label(), "bad_char");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// `set` takes a value exactly when every byte is one its type allows, names the first that is
    /// not, and leaves a message it refused as it was. Whatever the message holds before the value
    /// (nothing, or fields whose bytes make up a short value's word) changes none of that.
    #[test]
    fn set_takes_exactly_the_allowed_bytes_and_a_refusal_changes_nothing(
        before in proptest::sample::subsequence(&[2u8, 3][..], 0..=2),
        (number, track, value) in prop_oneof![
            // (field, is track data, length): n fixed, n variable, z variable.
            Just((4u8, false, 12usize..=12)),
            Just((11, false, 6..=6)),
            Just((32, false, 1..=11)),
            Just((35, true, 1..=37)),
        ]
        .prop_flat_map(|(n, track, len)| {
            let byte = prop_oneof![
                12 => proptest::sample::select(&b"0123456789"[..]),
                1 => proptest::sample::select(&b"=D/:d"[..]),
                1 => any::<u8>(),
            ];
            (
                Just(n),
                Just(track),
                proptest::collection::vec(byte, len),
            )
        }),
    ) {
        let mut msg = Message::new(dialect("iso87ascii"), iso8583::Mti::FINANCIAL);
        for n in before {
            msg.set(n, if n == 2 { "4761739001010010" } else { "000000" }).unwrap();
        }
        let was = msg.to_bytes();
        let allowed = |b: &u8| b.is_ascii_digit() || (track && (*b == b'=' || *b == b'D'));
        let first_bad = value.iter().find(|b| !allowed(b)).copied();
        match (msg.set(number, &value), first_bad) {
            (Ok(_), None) => {
                prop_assert_eq!(msg.get(number).map(|f| f.to_vec()), Some(value));
            }
            (Err(Error::Encode { at, reason: Reason::BadChar { byte, .. } }), Some(bad)) => {
                prop_assert_eq!((at, byte), (Location::Field(number), bad));
                prop_assert_eq!(msg.to_bytes(), was);
            }
            (got, expected) => prop_assert!(false, "{got:?} for first bad byte {expected:?}"),
        }
    }
}
