//! Framing over fragmented streams, limits, keep-alives, TPDU handling, and every header kind.

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder, FramedRead, FramedWrite};
use wire::{Error, Frame, FrameCodec, LengthHeader, Tpdu, ZeroLength};

fn frame(message: &'static [u8]) -> Frame {
    Frame {
        tpdu: None,
        message: Bytes::from_static(message),
    }
}

#[tokio::test]
async fn frames_split_across_reads() {
    // Two frames delivered in awkward pieces: half a header, header + part of a body, the rest + next.
    let stream = tokio_test::io::Builder::new()
        .read(&[0x00])
        .read(&[0x05, b'h', b'e'])
        .read(&[b'l', b'l', b'o', 0x00, 0x00, 0x00])
        .read(&[0x03, b'a', b'b', b'c'])
        .build();
    let mut frames = FramedRead::new(stream, FrameCodec::new(LengthHeader::Binary2));
    assert_eq!(frames.next().await.unwrap().unwrap(), frame(b"hello"));
    // The empty frame between them is a keep-alive and is skipped.
    assert_eq!(frames.next().await.unwrap().unwrap(), frame(b"abc"));
    assert!(frames.next().await.is_none());
}

#[tokio::test]
async fn close_inside_a_frame_is_an_error() {
    let stream = tokio_test::io::Builder::new()
        .read(&[0x00, 0x09, b'p', b'a', b'r'])
        .build();
    let mut frames = FramedRead::new(stream, FrameCodec::new(LengthHeader::Binary2));
    match frames.next().await.unwrap() {
        Err(Error::Truncated { need: 11, have: 5 }) => {}
        other => panic!("expected truncated, got {other:?}"),
    }
}

#[test]
fn oversized_length_is_refused_before_reserving() {
    let mut codec = FrameCodec::new(LengthHeader::Binary4).with_max_frame(1024);
    let mut buf = BytesMut::from(&[0x7F, 0xFF, 0xFF, 0xFF, 0x00][..]);
    let before = buf.capacity();
    match codec.decode(&mut buf) {
        Err(Error::TooLong {
            len: 0x7FFF_FFFF,
            max: 1024,
        }) => {}
        other => panic!("expected too long, got {other:?}"),
    }
    assert_eq!(
        buf.capacity(),
        before,
        "no memory reserved for a hostile length"
    );
}

#[test]
fn partial_frame_reserves_what_it_needs() {
    let mut codec = FrameCodec::new(LengthHeader::Binary2);
    let mut buf = BytesMut::from(&[0x01, 0x00, 0xAA][..]);
    assert!(codec.decode(&mut buf).unwrap().is_none());
    assert!(buf.capacity() >= 258);
}

#[test]
fn zero_length_policy() {
    let mut reject = FrameCodec::new(LengthHeader::Ascii4).with_zero_length(ZeroLength::Reject);
    assert!(matches!(
        reject.decode(&mut BytesMut::from(&b"0000"[..])),
        Err(Error::ZeroLength)
    ));
    let mut ignore = FrameCodec::new(LengthHeader::Ascii4);
    let mut buf = BytesMut::from(&b"00000000"[..]);
    assert!(ignore.decode(&mut buf).unwrap().is_none());
    assert!(buf.is_empty());
    assert_eq!(ignore.keepalives(), 2, "each keep-alive is counted");
}

#[test]
fn bad_headers_and_tpdus() {
    let mut ascii = FrameCodec::new(LengthHeader::Ascii4);
    assert!(matches!(
        ascii.decode(&mut BytesMut::from(&b"00x1abc"[..])),
        Err(Error::BadHeader(_))
    ));
    let mut bcd = FrameCodec::new(LengthHeader::Bcd2);
    assert!(matches!(
        bcd.decode(&mut BytesMut::from(&[0x0A, 0x01, 0][..])),
        Err(Error::BadHeader(_))
    ));
    let mut tpdu = FrameCodec::new(LengthHeader::Binary2).with_tpdu(true);
    let mut buf = BytesMut::from(&[0x00, 0x06, 0x61, 0, 1, 0, 2, b'x'][..]);
    assert!(matches!(tpdu.decode(&mut buf), Err(Error::BadTpdu(0x61))));
    let mut buf = BytesMut::from(&[0x00, 0x03, 0x60, 0, 1][..]);
    assert!(matches!(
        tpdu.decode(&mut buf),
        Err(Error::ShortTpdu { len: 3 })
    ));
}

#[tokio::test]
async fn tpdu_is_read_and_swapped_for_the_answer() {
    let request = [
        0x00, 0x09, 0x60, 0x00, 0x03, 0x80, 0x00, b'0', b'8', b'0', b'0',
    ];
    let stream = tokio_test::io::Builder::new().read(&request).build();
    let codec = FrameCodec::new(LengthHeader::Binary2).with_tpdu(true);
    let got = FramedRead::new(stream, codec)
        .next()
        .await
        .unwrap()
        .unwrap();
    let tpdu = got.tpdu.unwrap();
    assert_eq!(tpdu.to_bytes(), [0x60, 0x00, 0x03, 0x80, 0x00]);
    assert_eq!(&got.message[..], b"0800");

    let answer = [
        0x00, 0x09, 0x60, 0x80, 0x00, 0x00, 0x03, b'0', b'8', b'1', b'0',
    ];
    let sink = tokio_test::io::Builder::new().write(&answer).build();
    let mut out = FramedWrite::new(sink, codec);
    out.send(Frame {
        tpdu: Some(tpdu.response()),
        message: Bytes::from_static(b"0810"),
    })
    .await
    .unwrap();
    assert_eq!("6000038000".parse::<Tpdu>().unwrap(), tpdu);
}

#[test]
fn encoder_refuses_what_the_header_cannot_say() {
    let mut codec = FrameCodec::new(LengthHeader::Ascii2);
    let mut buf = BytesMut::new();
    let err = codec
        .encode(
            Frame {
                tpdu: None,
                message: Bytes::from(vec![b'x'; 100]),
            },
            &mut buf,
        )
        .unwrap_err();
    assert!(matches!(err, Error::TooLong { len: 100, max: 99 }), "{err}");
    assert!(buf.is_empty(), "nothing half-written");
}

#[test]
fn header_names_parse_back() {
    for h in LengthHeader::ALL {
        assert_eq!(h.to_string().parse::<LengthHeader>().unwrap(), h);
    }
    assert!("binary3".parse::<LengthHeader>().is_err());
}

fn streamed_headers() -> impl Strategy<Value = LengthHeader> {
    proptest::sample::select(LengthHeader::ALL[1..].to_vec())
}

proptest! {
    /// Any run of frames, encoded with any header (and TPDU or not), read back from any split of the
    /// byte stream, gives the same frames.
    #[test]
    fn encode_then_decode_in_pieces(
        header in streamed_headers(),
        with_tpdu in any::<bool>(),
        bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..90), 1..6),
        cut in any::<usize>(),
    ) {
        let mut codec = FrameCodec::new(header).with_tpdu(with_tpdu);
        let tpdu = with_tpdu.then_some(Tpdu { id: 0x60, destination: [0, 3], source: [0x80, 0] });
        let frames: Vec<Frame> = bodies.into_iter().map(|b| Frame { tpdu, message: Bytes::from(b) }).collect();
        let mut wire = BytesMut::new();
        for f in &frames {
            codec.encode(f.clone(), &mut wire).unwrap();
        }
        let cut = cut % wire.len();
        let mut buf = BytesMut::from(&wire[..cut]);
        let mut got = Vec::new();
        while let Some(f) = codec.decode(&mut buf).unwrap() { got.push(f); }
        buf.extend_from_slice(&wire[cut..]);
        while let Some(f) = codec.decode_eof(&mut buf).unwrap() { got.push(f); }
        prop_assert_eq!(got, frames);
    }

    #[test]
    fn decode_never_panics(header in streamed_headers(), tpdu in any::<bool>(), bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut codec = FrameCodec::new(header).with_tpdu(tpdu);
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = codec.decode(&mut buf) {}
        let _ = codec.decode_eof(&mut buf);
    }
}
