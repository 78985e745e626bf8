//! BER-TLV lists: whatever parses re-encodes to exactly the same bytes.
#![no_main]

use iso8583::tlv;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(items) = tlv::parse(55, data) {
        let mut out = Vec::new();
        tlv::encode(&items, &mut out);
        assert_eq!(out, data);
    }
});
