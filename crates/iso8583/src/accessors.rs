//! Typed accessors for the fields a switch reads on every message.
//!
//! Each returns `None` when the field is absent (or, for numbers, not all digits: a dialect may declare a
//! field `an` that a switch reads as a number).

use crate::field::Field;
use crate::message::Message;
use crate::types::{OriginalData, Pan, ResponseCode};

impl Message {
    /// DE2, primary account number.
    #[inline(always)]
    pub fn pan(&self) -> Option<Pan<'_>> {
        match self.digits_or_field(2)? {
            Ok((buf, start, end)) => Pan::of_digits(&buf[start..end]),
            Err(field) => Pan::from_field(field),
        }
    }

    /// DE3, processing code (transaction type, from-account, to-account).
    #[inline]
    pub fn processing_code(&self) -> Option<u32> {
        self.number(3).map(|v| v as u32)
    }

    /// DE4, transaction amount in minor units.
    #[inline(always)]
    pub fn amount(&self) -> Option<u64> {
        self.number(4)
    }

    /// DE7, transmission date and time, MMDDhhmmss (UTC).
    #[inline]
    pub fn transmission_time(&self) -> Option<u64> {
        self.number(7)
    }

    /// DE11, system trace audit number.
    #[inline(always)]
    pub fn stan(&self) -> Option<u32> {
        self.number(11).map(|v| v as u32)
    }

    /// DE12, local transaction time, hhmmss.
    #[inline]
    pub fn local_time(&self) -> Option<u32> {
        self.number(12).map(|v| v as u32)
    }

    /// DE13, local transaction date, MMDD.
    #[inline]
    pub fn local_date(&self) -> Option<u16> {
        self.number(13).map(|v| v as u16)
    }

    /// DE37, retrieval reference number.
    #[inline]
    pub fn rrn(&self) -> Option<Field<'_>> {
        self.get(37)
    }

    /// DE38, authorization identification response.
    #[inline]
    pub fn auth_code(&self) -> Option<Field<'_>> {
        self.get(38)
    }

    /// DE39, response code.
    #[inline]
    pub fn response_code(&self) -> Option<ResponseCode> {
        let mut it = self.get(39)?.bytes();
        match (it.next(), it.next(), it.next()) {
            (Some(a), Some(b), None) => Some(ResponseCode([a, b])),
            _ => None,
        }
    }

    /// DE41, card acceptor terminal identification.
    #[inline]
    pub fn terminal_id(&self) -> Option<Field<'_>> {
        self.get(41)
    }

    /// DE42, card acceptor identification code (merchant id).
    #[inline]
    pub fn merchant_id(&self) -> Option<Field<'_>> {
        self.get(42)
    }

    /// DE49, transaction currency code (ISO 4217 numeric).
    #[inline]
    pub fn currency(&self) -> Option<u16> {
        self.number(49).map(|v| v as u16)
    }

    /// DE90, original data elements.
    #[inline]
    pub fn original_data(&self) -> Option<OriginalData> {
        OriginalData::parse(self.get(90)?.bytes())
    }

    /// Any field read as a number.
    #[inline(always)]
    pub fn number(&self, field: u8) -> Option<u64> {
        match self.digits_or_field(field)? {
            // Digits of an `n` field, checked when they entered the message.
            Ok((buf, start, end)) => crate::words::digits_value::<false>(buf, start, end),
            Err(field) => number_of(field),
        }
    }
}

/// A number in any other layout (BCD, EBCDIC, `an`): out of line, so that the ASCII digits' path
/// stays small enough to inline.
#[cold]
#[inline(never)]
fn number_of(field: Field<'_>) -> Option<u64> {
    field.to_u64()
}
