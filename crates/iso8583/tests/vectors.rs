//! Known byte vectors for each encoding, the builder, typed accessors, DE90, tertiary bitmaps and masking.

mod support;

use bytes::Bytes;
use iso8583::{ECHO_FIELDS, Message, Mti, OriginalData, ResponseCode};
use support::dialect;

const PAN: &str = "4761739001010010";
const TRACK2: &str = "4761739001010010=2512";

fn purchase(spec: &str) -> Message {
    let mut m = Message::new(dialect(spec), Mti::FINANCIAL);
    m.set(2, PAN).unwrap();
    m.set(3, "000000").unwrap();
    m.set_number(4, 1000).unwrap();
    m.set_number(11, 123).unwrap();
    m.set(22, "051").unwrap();
    m.set(35, TRACK2).unwrap();
    m.set(41, "TERM0001").unwrap();
    m.set(49, "840").unwrap();
    m
}

#[test]
fn bcd_purchase_matches_hand_packed_bytes() {
    let expected = concat!(
        "0200",             // MTI, BCD
        "7020040020808000", // fields 2 3 4 11 22 35 41 49
        "16",
        "4761739001010010", // DE2: BCD length counts digits
        "000000",           // DE3
        "000000001000",     // DE4
        "000123",           // DE11
        "0051",             // DE22: three digits, left 0 filler
        "21",
        "4761739001010010D2512F", // DE35: '=' packs as D, odd length right F filler
        "5445524D30303031",       // DE41 ASCII
        "383430",                 // DE49 ASCII
    );
    let wire = purchase("iso87bcd").to_bytes();
    assert_eq!(hex::encode_upper(&wire), expected);
    let back = Message::decode(dialect("iso87bcd"), wire).unwrap();
    assert_eq!(back.get(35).unwrap().unmasked().to_string(), TRACK2);
    assert_eq!(back.get(22).unwrap().unmasked().to_string(), "051");
}

#[test]
fn ascii_and_ebcdic_vectors() {
    let ascii = purchase("iso87ascii").to_bytes();
    assert!(ascii.starts_with(b"0200"));
    assert_eq!(&ascii[4..12], &hex::decode("7020040020808000").unwrap()[..]);
    assert_eq!(&ascii[12..14], b"16");

    let ebcdic = purchase("iso87ebcdic").to_bytes();
    assert_eq!(&ebcdic[..4], &[0xF0, 0xF2, 0xF0, 0xF0]);
    // "16" then the PAN in EBCDIC digits.
    assert_eq!(&ebcdic[12..16], &[0xF1, 0xF6, 0xF4, 0xF7]);
    // DE41 "TERM0001": T=E3 E=C5 R=D9 M=D4.
    let de41 = Message::decode(dialect("iso87ebcdic"), ebcdic.clone()).unwrap();
    assert_eq!(
        de41.get(41).unwrap().wire(),
        &[0xE3, 0xC5, 0xD9, 0xD4, 0xF0, 0xF0, 0xF0, 0xF1]
    );
    assert_eq!(de41.terminal_id().unwrap().to_string(), "TERM0001");

    let hexmap = purchase("iso87ascii-hexbitmap").to_bytes();
    assert_eq!(&hexmap[..20], b"02007020040020808000");

    // Binary fields: raw bytes in iso87ascii, hex digits (length counting digits) in the hex dialect.
    let mut emv = Message::new(dialect("iso87ascii"), Mti::AUTHORIZATION);
    emv.set(55, [0x9F, 0x27, 0x01, 0x80]).unwrap();
    let as_hex = emv
        .translate(dialect("iso87ascii-hexbitmap"))
        .unwrap()
        .to_bytes();
    assert_eq!(&as_hex[20..], b"0089F270180");
    let back = Message::decode(dialect("iso87ascii-hexbitmap"), as_hex).unwrap();
    assert_eq!(back.get(55).unwrap().to_vec(), [0x9F, 0x27, 0x01, 0x80]);
}

#[test]
fn secondary_bitmap_is_derived_from_fields() {
    let mut m = Message::new(dialect("iso87ascii"), Mti::NETWORK);
    m.set_number(7, 1121093000)
        .unwrap()
        .set_number(11, 1)
        .unwrap()
        .set(70, "301")
        .unwrap();
    let wire = m.to_bytes();
    // Bit 1 set (secondary present), 7 and 11; secondary: bit 70.
    assert_eq!(
        hex::encode_upper(&wire[4..20]),
        "82200000000000000400000000000000"
    );
    assert!(m.remove(70));
    assert_eq!(
        m.to_bytes()[4],
        0x02,
        "no secondary bitmap once field 70 is gone"
    );
}

#[test]
fn typed_accessors() {
    let msg = Message::decode(dialect("iso87bcd"), purchase("iso87bcd").to_bytes()).unwrap();
    assert_eq!(msg.mti(), Mti::FINANCIAL);
    assert_eq!(msg.pan().unwrap().expose(), PAN.as_bytes());
    assert_eq!(msg.pan().unwrap().to_string(), "476173…0010");
    assert_eq!(msg.processing_code(), Some(0));
    assert_eq!(msg.amount(), Some(1000));
    assert_eq!(msg.stan(), Some(123));
    assert_eq!(msg.currency(), Some(840));
    assert_eq!(msg.terminal_id().unwrap().as_str(), Some("TERM0001"));
    assert!(msg.rrn().is_none());
}

#[test]
fn response_echoes_fields_and_keeps_slices() {
    let req = Message::decode(dialect("iso87ascii"), purchase("iso87ascii").to_bytes()).unwrap();
    let mut rsp = req.response(ECHO_FIELDS).unwrap();
    rsp.set(38, "A1B2C3").unwrap().set(39, "00").unwrap();
    assert_eq!(rsp.mti().as_str(), "0210");
    assert_eq!(rsp.response_code(), Some(ResponseCode::APPROVED));
    assert_eq!(rsp.stan(), Some(123));
    assert!(rsp.get(35).is_none(), "track data is not echoed");
    let decoded = Message::decode(rsp.spec(), rsp.to_bytes()).unwrap();
    assert_eq!(decoded, rsp);
    assert_eq!(Mti::REVERSAL_REPEAT.response().unwrap().as_str(), "0410");
    assert!(
        rsp.response(ECHO_FIELDS).is_err(),
        "a response has no response"
    );
}

#[test]
fn fixed_fields_pad_and_reject() {
    let mut m = Message::new(dialect("iso87ascii"), Mti::FINANCIAL);
    m.set(41, "T1").unwrap();
    assert_eq!(m.get(41).unwrap().as_str(), Some("T1      "));
    m.set(4, "42").unwrap();
    assert_eq!(m.amount(), Some(42));
    assert!(
        m.set(4, "1234567890123").is_err(),
        "longer than the fixed length"
    );
    assert!(m.set(3, "00A000").is_err(), "letters in an n field");
    assert!(m.set(2, "1".repeat(20)).is_err(), "PAN over 19 digits");
    assert!(m.set(52, [0u8; 4]).is_err(), "binary fields are not padded");
}

#[test]
fn original_data_elements() {
    let original = OriginalData {
        mti: Mti::FINANCIAL,
        stan: 123,
        transmission: 1121093000,
        acquirer: 12345,
        forwarding: 0,
    };
    for name in ["iso87ascii", "iso87bcd", "iso87ebcdic"] {
        let mut m = Message::new(dialect(name), Mti::REVERSAL);
        m.set(90, original.to_digits()).unwrap();
        let back = Message::decode(m.spec(), m.to_bytes()).unwrap();
        assert_eq!(back.original_data(), Some(original));
        let de90 = back.get(90).unwrap();
        let stan: Vec<u8> = de90.subfield(1).unwrap().collect();
        assert_eq!(stan, b"000123");
        assert_eq!(
            de90.spec().subfields[3].name,
            "original acquiring institution"
        );
    }
}

#[test]
fn tertiary_bitmap_carries_fields_129_to_192() {
    let spec = support::custom(
        true,
        r#"
        3 = { name = "Processing code", type = "n", max = 6 }
        66 = { name = "Settlement code", type = "n", max = 1 }
        130 = { name = "Private", type = "ans", length = "LL", max = 20 }
        "#,
    );
    let mut m = Message::new(spec, Mti::FINANCIAL);
    m.set(3, "000000")
        .unwrap()
        .set(66, "1")
        .unwrap()
        .set(130, "hello")
        .unwrap();
    let wire = m.to_bytes();
    let expected = [
        &b"0200"[..],
        &hex::decode("A000000000000000").unwrap(), // bits 1 and 3
        &hex::decode("C000000000000000").unwrap(), // bits 65 (tertiary) and 66
        &hex::decode("4000000000000000").unwrap(), // tertiary: bit 130, right after the secondary
        b"000000",                                 // DE3
        b"1",                                      // DE66
        b"05hello",                                // DE130
    ]
    .concat();
    assert_eq!(wire, Bytes::from(expected));
    let back = Message::decode(spec, wire).unwrap();
    assert_eq!(back, m);
    assert_eq!(back.get(130).unwrap().as_str(), Some("hello"));
}

#[test]
fn display_and_debug_mask_card_data() {
    let mut m = purchase("iso87ascii");
    m.set(52, [0x12, 0x34, 0x56, 0x78, 0x9A, 0xBC, 0xDE, 0xF0])
        .unwrap();
    m.set(45, "B4761739001010010^DOE/JOHN^2512101").unwrap();
    m.set(55, hex::decode("9F2608AABBCCDDEEFF0011").unwrap())
        .unwrap();
    let shown = format!("{m} {m:?} {:?} {}", m.pan().unwrap(), m.get(2).unwrap());
    for secret in [
        PAN,
        "4761739001010010=2512",
        "123456789ABCDEF0",
        "DOE/JOHN",
        "9F2608",
        "AABBCCDD",
    ] {
        assert!(!shown.contains(secret), "{secret} leaked in {shown}");
    }
    assert!(shown.contains("476173…0010"));
    assert!(
        shown.contains("35=[redacted]")
            && shown.contains("52=[redacted]")
            && shown.contains("55=[redacted]")
    );
    assert!(
        shown.contains("41=TERM0001"),
        "clear fields stay readable: {shown}"
    );
}
