//! Raw bytes into every dialect's decoder. Whatever decodes must display, translate and re-encode to a
//! message that decodes to itself.
#![no_main]

use bytes::Bytes;
use iso8583::Message;
use libfuzzer_sys::fuzz_target;

const DIALECTS: [&str; 4] = ["iso87ascii", "iso87ascii-hexbitmap", "iso87bcd", "iso87ebcdic"];

fuzz_target!(|data: &[u8]| {
    let Some((&which, frame)) = data.split_first() else { return };
    let spec = dialects::builtin(DIALECTS[usize::from(which) % DIALECTS.len()]).expect("built-in");
    let Ok(msg) = Message::decode(&spec, Bytes::copy_from_slice(frame)) else { return };
    let _ = format!("{msg} {msg:?}");
    let again = Message::decode(&spec, msg.to_bytes()).expect("an encoded message decodes");
    assert_eq!(again, msg);
    for other in DIALECTS {
        let _ = msg.translate(&dialects::builtin(other).expect("built-in"));
    }
});
