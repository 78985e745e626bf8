//! Structured input: arbitrary field numbers and values given to the builder. Whatever it accepts must
//! encode and decode back to the same message.
#![no_main]

use arbitrary::Arbitrary;
use iso8583::{Message, Mti};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    dialect: u8,
    mti: [u8; 4],
    fields: Vec<(u8, Vec<u8>)>,
}

const DIALECTS: [&str; 4] = ["iso87ascii", "iso87ascii-hexbitmap", "iso87bcd", "iso87ebcdic"];

fuzz_target!(|input: Input| {
    let spec = dialects::builtin(DIALECTS[usize::from(input.dialect) % DIALECTS.len()]).expect("built-in");
    let Ok(mti) = Mti::new(input.mti) else { return };
    let mut msg = Message::new(spec, mti);
    for (n, value) in &input.fields {
        let _ = msg.set(*n, value);
    }
    let back = Message::decode(&spec, msg.to_bytes()).expect("a built message decodes");
    assert_eq!(back, msg);
});
