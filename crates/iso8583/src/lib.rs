//! A spec-driven, zero-copy ISO 8583 codec.
//!
//! - [`Spec`] describes a dialect (the `dialects` crate loads them from TOML);
//! - [`Message::decode`] reads a whole message from `Bytes` without copying field data;
//! - [`Message::set`] and friends build messages, [`Message::encode`] writes them, and
//!   [`Message::translate`] moves a message between dialects;
//! - `Display`/`Debug` of messages and fields mask card numbers and redact secrets.
//!
//! The crate does no I/O and has no runtime: framing lives in the `wire` crate.

mod accessors;
mod charset;
mod error;
mod field;
mod header;
mod layout;
mod message;
mod spec;
pub mod tlv;
mod types;
mod value;
mod words;

pub use error::{Error, Location, Reason};
pub use field::{Field, Unmasked};
pub use message::Message;
pub use spec::{
    BitmapEncoding, Encoding, FieldSpec, FieldType, Filler, LengthKind, MAX_FIELD, Pad,
    Sensitivity, Spec, Subfield, TotalsLayout,
};
pub use types::{Class, Mti, OriginalData, Pan, ResponseCode};
pub use value::LogicalBytes;

/// Fields a response usually echoes from its request.
pub const ECHO_FIELDS: &[u8] = &[2, 3, 4, 7, 11, 12, 13, 22, 25, 32, 37, 41, 42, 49];
