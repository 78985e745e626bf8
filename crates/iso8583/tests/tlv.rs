//! DE55 as BER-TLV: multi-byte tags, long-form lengths, unknown tags, exact re-encoding.

use iso8583::{Location, Reason, tlv};

#[test]
fn emv_list_roundtrips_byte_for_byte() {
    let data = hex::decode(concat!(
        "9F2608A1B2C3D4E5F60718", // ARQC, two-byte tag
        "9F2701",
        "80",       // CID
        "82021980", // AIP, one-byte tag
        "DF8F0103",
        "010203", // three-byte proprietary tag
        "9F1081",
        "03",
        "AABBCC", // long-form length with a short value (kept as sent)
        "70",
        "8200",
        "02",
        "5A00", // constructed, two-byte long form
    ))
    .unwrap();
    let items = tlv::parse(55, &data).unwrap();
    let tags: Vec<String> = items.iter().map(|t| hex::encode_upper(t.tag)).collect();
    assert_eq!(tags, ["9F26", "9F27", "82", "DF8F01", "9F10", "70"]);
    assert_eq!(
        items[0].value,
        &hex::decode("A1B2C3D4E5F60718").unwrap()[..]
    );
    assert_eq!(items[4].length, &[0x81, 0x03]);
    assert!(items[5].is_constructed());
    assert_eq!(tlv::parse(55, items[5].value).unwrap()[0].tag, &[0x5A]);
    let mut out = Vec::new();
    tlv::encode(&items, &mut out);
    assert_eq!(out, data);
}

#[test]
fn broken_lists_are_errors_with_offsets() {
    let cases: [(&str, usize, Reason); 4] = [
        ("9F2608A1B2", 3, Reason::Truncated { need: 8, have: 2 }),
        ("9F", 1, Reason::Truncated { need: 1, have: 0 }),
        ("9F2685", 2, Reason::BadLengthPrefix),
        ("82820100", 4, Reason::Truncated { need: 256, have: 0 }),
    ];
    for (hex_in, offset, reason) in cases {
        let err = tlv::parse(55, &hex::decode(hex_in).unwrap()).unwrap_err();
        assert_eq!(
            err,
            iso8583::Error::Decode {
                at: Location::Field(55),
                offset,
                reason
            },
            "{hex_in}"
        );
    }
}
