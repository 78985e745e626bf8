//! The codec's one error type.
//!
//! Every decode error says *where* (MTI, a bitmap, or a field number), at which byte offset of the message,
//! and *what* was wrong, so that an operator reading a log line can find the byte in a hex dump. A partial
//! frame is not an error here: framing (the `wire` crate) hands the codec whole messages only.

use std::fmt;

/// The part of a message an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Location {
    Mti,
    /// The primary (1), secondary (2) or tertiary (3) bitmap.
    Bitmap(u8),
    Field(u8),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Mti => f.write_str("MTI"),
            Location::Bitmap(1) => f.write_str("primary bitmap"),
            Location::Bitmap(2) => f.write_str("secondary bitmap"),
            Location::Bitmap(_) => f.write_str("tertiary bitmap"),
            Location::Field(n) => write!(f, "field {n}"),
        }
    }
}

/// What was wrong. Byte values are shown in hex; data values never appear, so a reason is safe to log
/// whatever field it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reason {
    #[error("truncated: {need} bytes needed, {have} left")]
    Truncated { need: usize, have: usize },
    #[error("length {len} over the maximum {max}")]
    TooLong { len: usize, max: usize },
    #[error("length {len} where exactly {expected} is required")]
    WrongLength { len: usize, expected: usize },
    #[error("byte 0x{byte:02X} is not allowed in a field of type {kind}")]
    BadChar { byte: u8, kind: &'static str },
    #[error("bad BCD nibble 0x{nibble:X}")]
    BadNibble { nibble: u8 },
    #[error("bad length prefix")]
    BadLengthPrefix,
    #[error("bad hex digit 0x{byte:02X}")]
    BadHex { byte: u8 },
    #[error("bit is set but the spec has no such field")]
    NoSpec,
    #[error("{count} trailing bytes after the last field")]
    TrailingBytes { count: usize },
    #[error("message does not fit the largest supported size")]
    MessageTooLarge,
    #[error("{0}")]
    Invalid(&'static str),
}

/// A codec error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The bytes are not a valid message of the dialect.
    #[error("{at} at byte {offset}: {reason}")]
    Decode {
        at: Location,
        offset: usize,
        reason: Reason,
    },
    /// A value cannot be represented in the dialect (building or translating a message).
    #[error("{at}: {reason}")]
    Encode { at: Location, reason: Reason },
    /// A dialect description is inconsistent.
    #[error("spec {spec}, {at}: {reason}")]
    Spec {
        spec: String,
        at: Location,
        reason: Reason,
    },
}

impl Error {
    /// The field (or MTI/bitmap) the error is about.
    pub fn location(&self) -> Location {
        match self {
            Error::Decode { at, .. } | Error::Encode { at, .. } | Error::Spec { at, .. } => *at,
        }
    }

    /// The reason alone, e.g. for a metrics label.
    pub fn reason(&self) -> &Reason {
        match self {
            Error::Decode { reason, .. }
            | Error::Encode { reason, .. }
            | Error::Spec { reason, .. } => reason,
        }
    }

    /// True when the error came from bytes received on the wire: the answer is a format error (RC 30).
    pub fn is_format_error(&self) -> bool {
        matches!(self, Error::Decode { .. })
    }
}

impl Reason {
    /// A short, fixed label for metrics (`reason` label): low cardinality by construction.
    pub fn label(&self) -> &'static str {
        match self {
            Reason::Truncated { .. } => "truncated",
            Reason::TooLong { .. } => "too_long",
            Reason::WrongLength { .. } => "wrong_length",
            Reason::BadChar { .. } => "bad_char",
            Reason::BadNibble { .. } => "bad_bcd",
            Reason::BadLengthPrefix => "bad_length_prefix",
            Reason::BadHex { .. } => "bad_hex",
            Reason::NoSpec => "no_spec",
            Reason::TrailingBytes { .. } => "trailing_bytes",
            Reason::MessageTooLarge => "too_large",
            Reason::Invalid(_) => "invalid",
        }
    }
}
