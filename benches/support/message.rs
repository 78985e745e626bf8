//! A realistic 0200 purchase (22 fields, EMV data in DE55), for the codec and engine benches.

use iso8583::{Message, Mti, Spec};

/// EMV data as a chip card returns it for an ARQC: 16 common tags, 139 bytes.
const EMV: &str = concat!(
    "9F2608A1B2C3D4E5F60718",
    "9F2701809F100706011203A0B8009F37041A2B3C4D",
    "9F3602012C950500800080009A032611219C01005F2A020840820219809F1A020840",
    "9F03060000000000009F02060000000025009F3303E0F8C89F34034203009F350122",
    "9F1E0831323334353637388407A0000000031010",
);

pub(crate) fn purchase(spec: &'static Spec) -> Message {
    let mut m = Message::new(spec, Mti::FINANCIAL);
    let fields: [(u8, &str); 19] = [
        (2, "4761739001010010"),
        (3, "000000"),
        (4, "000000002500"),
        (7, "1121093000"),
        (11, "000123"),
        (12, "093000"),
        (13, "1121"),
        (14, "2512"),
        (18, "5411"),
        (22, "051"),
        (23, "001"),
        (25, "00"),
        (32, "12345678901"),
        (35, "4761739001010010=25122011758928889"),
        (37, "632512000123"),
        (41, "TERM0001"),
        (42, "MERCHANT0000001"),
        (43, "ACQUIRO TEST SHOP       LONDON       GB"),
        (49, "840"),
    ];
    for (n, v) in fields {
        m.set(n, v).expect("valid purchase field");
    }
    m.set(52, [0x12, 0x34, 0x56, 0x78, 0x9A, 0xBC, 0xDE, 0xF0])
        .expect("PIN block");
    m.set(55, hex::decode(EMV).expect("hex")).expect("EMV data");
    m.set(62, "INV000123").expect("private data");
    m
}
