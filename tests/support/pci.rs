//! What a card carries that the switch must never keep (PCI DSS: the card number only as BIN and last
//! four; no track data, PIN block or EMV data), and a search for it in whatever the switch wrote.

use iso8583::Message;

use super::terminal::PAN;

/// EMV data as a chip card's request carries it in DE55 (an application cryptogram, tag 9F26).
pub const EMV: &[u8] = &[
    0x9F, 0x26, 0x08, 0xC0, 0xFF, 0xEE, 0x0D, 0xDB, 0xA1, 0x1E, 0xD5,
];
/// The PIN block every simulated purchase carries in DE52 (`sim::Purchase::message`).
pub const PIN_BLOCK: &[u8] = &[0x12, 0x34, 0x56, 0x78, 0x9A, 0xBC, 0xDE, 0xF0];

/// `msg` as a chip card sends it: with [`EMV`] in DE55 (besides its track 2 and PIN block).
pub fn chip(mut msg: Message) -> Message {
    msg.set(55, EMV).unwrap();
    msg
}

/// Which of the card's secrets `written` holds, in any form a file or a dump would show them: the
/// bytes themselves, and as hex in either case (`pg_dump` writes `bytea` so), of the bytes and of
/// their hex as text (an ASCII dialect sends binary fields so). The card number is looked for as
/// digits and packed two a byte (BCD); its track 2 begins with it.
pub fn card_data_in(written: &[u8]) -> Vec<&'static str> {
    let pan_bcd = hex::decode(PAN).unwrap();
    let secrets: [(&str, &[u8]); 4] = [
        ("the card number", PAN.as_bytes()),
        ("the card number in BCD", &pan_bcd),
        ("the PIN block", PIN_BLOCK),
        ("the EMV data", EMV),
    ];
    secrets
        .into_iter()
        .filter(|(_, secret)| forms(secret).iter().any(|f| contains(written, f)))
        .map(|(name, _)| name)
        .collect()
}

fn forms(secret: &[u8]) -> Vec<Vec<u8>> {
    let lower = hex::encode(secret);
    let upper = hex::encode_upper(secret);
    vec![
        secret.to_vec(),
        hex::encode(&upper).into_bytes(),
        hex::encode(&lower).into_bytes(),
        lower.into_bytes(),
        upper.into_bytes(),
    ]
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
