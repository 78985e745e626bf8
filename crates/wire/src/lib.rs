//! Framing for ISO 8583 over TCP: a length header, an optional TPDU, then the message.
//!
//! [`FrameCodec`] is a tokio-util `Decoder`/`Encoder`. It checks the declared length against the
//! configured maximum *before* reserving any buffer (a hostile header cannot make us allocate), waits for
//! partial frames without error, and treats zero-length frames (keep-alives) as configured.

mod header;
mod tpdu;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

pub use header::LengthHeader;
pub use tpdu::Tpdu;

/// A framing error. Any of these ends the connection it happened on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("declared frame length {len} over the limit {max}")]
    TooLong { len: usize, max: usize },
    #[error("frame of {len} bytes cannot be expressed in a {header} header")]
    Unrepresentable { len: usize, header: LengthHeader },
    #[error("zero-length frame")]
    ZeroLength,
    #[error("length header is not a number: {0:02X?}")]
    BadHeader(Vec<u8>),
    #[error("frame of {len} bytes is shorter than the 5-byte TPDU")]
    ShortTpdu { len: usize },
    #[error("TPDU id 0x{0:02X} is not 0x60 or 0x68")]
    BadTpdu(u8),
    #[error("connection closed inside a frame: {have} of {need} bytes")]
    Truncated { need: usize, have: usize },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Error {
    /// A short, fixed label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Error::TooLong { .. } => "frame_too_long",
            Error::Unrepresentable { .. } => "frame_unrepresentable",
            Error::ZeroLength => "zero_length",
            Error::BadHeader(_) => "bad_length_header",
            Error::ShortTpdu { .. } | Error::BadTpdu(_) => "bad_tpdu",
            Error::Truncated { .. } => "truncated_frame",
            Error::Io(_) => "io",
        }
    }
}

/// What to do with a frame whose header says zero bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ZeroLength {
    /// Skip it: some terminals and hosts send empty frames as keep-alives.
    #[default]
    Ignore,
    Reject,
}

/// One frame: the TPDU (when the link uses one) and the message bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub tpdu: Option<Tpdu>,
    pub message: Bytes,
}

/// Length-header (+ TPDU) framing.
#[derive(Debug, Clone, Copy)]
pub struct FrameCodec {
    header: LengthHeader,
    tpdu: bool,
    max_frame: usize,
    zero_length: ZeroLength,
    /// Zero-length frames ignored so far: the connection's owner sees keep-alives through it.
    keepalives: u64,
}

/// A generous default: the longest ISO 8583:1987 message in practice is a few kilobytes.
pub const DEFAULT_MAX_FRAME: usize = 8192;

impl FrameCodec {
    pub fn new(header: LengthHeader) -> Self {
        let max_frame = DEFAULT_MAX_FRAME.min(header.max_len());
        FrameCodec {
            header,
            tpdu: false,
            max_frame,
            zero_length: ZeroLength::default(),
            keepalives: 0,
        }
    }

    /// Expect (and write) a 5-byte TPDU after the length header.
    pub fn with_tpdu(mut self, tpdu: bool) -> Self {
        self.tpdu = tpdu;
        self
    }

    /// The largest frame accepted, not counting the length header. Capped by what the header can express.
    pub fn with_max_frame(mut self, max: usize) -> Self {
        self.max_frame = max.min(self.header.max_len());
        self
    }

    pub fn with_zero_length(mut self, zero_length: ZeroLength) -> Self {
        self.zero_length = zero_length;
        self
    }

    pub fn header(&self) -> LengthHeader {
        self.header
    }

    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// How many zero-length frames this codec has ignored.
    pub fn keepalives(&self) -> u64 {
        self.keepalives
    }

    /// Writes one frame whose message is produced by `write` straight into `dst`: the header is reserved
    /// first and filled in afterwards, so an encoded message is never copied.
    pub fn encode_with(
        &self,
        tpdu: Option<Tpdu>,
        dst: &mut BytesMut,
        write: impl FnOnce(&mut BytesMut),
    ) -> Result<(), Error> {
        let start = dst.len();
        let header_len = self.header.size();
        dst.put_bytes(0, header_len);
        if self.tpdu {
            dst.put_slice(&tpdu.unwrap_or_default().to_bytes());
        }
        write(dst);
        let len = dst.len() - start - header_len;
        let result = if len > self.max_frame {
            Err(Error::TooLong {
                len,
                max: self.max_frame,
            })
        } else {
            self.header.write(len, &mut dst[start..start + header_len])
        };
        if result.is_err() {
            dst.truncate(start);
        }
        result
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, Error> {
        loop {
            let header_len = self.header.size();
            if src.len() < header_len || src.is_empty() {
                return Ok(None);
            }
            // Without a header the whole buffer is one message (single frames given whole, never a stream).
            let len = if self.header == LengthHeader::None {
                src.len()
            } else {
                self.header.read(&src[..header_len])?
            };
            if len > self.max_frame {
                return Err(Error::TooLong {
                    len,
                    max: self.max_frame,
                });
            }
            if len == 0 {
                match self.zero_length {
                    ZeroLength::Ignore => {
                        self.keepalives += 1;
                        src.advance(header_len);
                        continue;
                    }
                    ZeroLength::Reject => return Err(Error::ZeroLength),
                }
            }
            if src.len() < header_len + len {
                // Bounded by max_frame above, so reserving is safe.
                src.reserve(header_len + len - src.len());
                return Ok(None);
            }
            src.advance(header_len);
            let mut body = src.split_to(len).freeze();
            let tpdu = if self.tpdu {
                if body.len() < Tpdu::LEN {
                    return Err(Error::ShortTpdu { len: body.len() });
                }
                let tpdu = Tpdu::parse(&body[..Tpdu::LEN])?;
                body.advance(Tpdu::LEN);
                Some(tpdu)
            } else {
                None
            };
            return Ok(Some(Frame {
                tpdu,
                message: body,
            }));
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, Error> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => {
                let header_len = self.header.size();
                let need = if src.len() < header_len {
                    header_len
                } else {
                    header_len + self.header.read(&src[..header_len])?
                };
                Err(Error::Truncated {
                    need,
                    have: src.len(),
                })
            }
        }
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = Error;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), Error> {
        self.encode_with(frame.tpdu, dst, |dst| dst.put_slice(&frame.message))
    }
}
