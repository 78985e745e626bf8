//! Raw bytes through the frame decoder, fed in two pieces, with every header kind and TPDU setting.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;
use wire::{FrameCodec, LengthHeader, ZeroLength};

fuzz_target!(|data: &[u8]| {
    let Some((&control, stream)) = data.split_first() else { return };
    let streamed = &LengthHeader::ALL[1..];
    let header = streamed[usize::from(control & 0x7) % streamed.len()];
    let zero = if control & 0x10 != 0 { ZeroLength::Reject } else { ZeroLength::Ignore };
    let mut codec = FrameCodec::new(header).with_tpdu(control & 0x08 != 0).with_max_frame(512).with_zero_length(zero);
    let cut = usize::from(control >> 5) * stream.len() / 8;
    let mut buf = BytesMut::from(&stream[..cut]);
    loop {
        match codec.decode(&mut buf) {
            Ok(Some(frame)) => assert!(frame.message.len() <= 512),
            Ok(None) => break,
            Err(_) => return,
        }
    }
    buf.extend_from_slice(&stream[cut..]);
    while let Ok(Some(frame)) = codec.decode_eof(&mut buf) {
        assert!(frame.message.len() <= 512);
    }
});
