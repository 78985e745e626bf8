//! The frames of a connection carrying messages: the wire decoder as it is, and an encoder that writes a
//! message straight into the frame buffer (`FrameCodec::encode_with`), so no message is encoded into a
//! buffer of its own and then copied.

use bytes::BytesMut;
use iso8583::Message;
use tokio_util::codec::{Decoder, Encoder};
use wire::{Frame, FrameCodec, Tpdu};

#[derive(Debug, Clone, Copy)]
pub(crate) struct MessageCodec(pub(crate) FrameCodec);

/// A message to write, and the TPDU it goes out with.
#[derive(Debug)]
pub(crate) struct Outgoing(pub(crate) Option<Tpdu>, pub(crate) Message);

impl Decoder for MessageCodec {
    type Item = Frame;
    type Error = wire::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, wire::Error> {
        self.0.decode(src)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, wire::Error> {
        self.0.decode_eof(src)
    }
}

impl Encoder<Outgoing> for MessageCodec {
    type Error = wire::Error;

    fn encode(
        &mut self,
        Outgoing(tpdu, msg): Outgoing,
        dst: &mut BytesMut,
    ) -> Result<(), wire::Error> {
        self.0.encode_with(tpdu, dst, |dst| msg.encode(dst))
    }
}
