//! The head of a message on the wire: its MTI and its bitmaps, in each dialect's encoding.

use bytes::BufMut;

use crate::charset::{HEX_DIGITS, from_latin1, nibbles, to_latin1};
use crate::error::{Error, Location, Reason};
use crate::spec::{BitmapEncoding, Encoding};
use crate::types::Mti;
use crate::words::hex8_value;

pub(crate) fn mti_len(encoding: Encoding) -> usize {
    if encoding == Encoding::Bcd { 2 } else { 4 }
}

pub(crate) fn read_mti(encoding: Encoding, buf: &[u8]) -> Result<Mti, Error> {
    let need = mti_len(encoding);
    let err = |offset, reason| Error::Decode {
        at: Location::Mti,
        offset,
        reason,
    };
    if buf.len() < need {
        return Err(err(
            0,
            Reason::Truncated {
                need,
                have: buf.len(),
            },
        ));
    }
    let mut digits = [0u8; 4];
    match encoding {
        Encoding::Bcd => {
            for (i, nibble) in nibbles(&buf[..2]).enumerate() {
                if nibble > 9 {
                    return Err(err(i / 2, Reason::BadNibble { nibble }));
                }
                digits[i] = b'0' + nibble;
            }
        }
        _ => {
            for (i, &b) in buf[..4].iter().enumerate() {
                let c = to_latin1(encoding == Encoding::Ebcdic, b);
                if !c.is_ascii_digit() {
                    return Err(err(i, Reason::BadChar { byte: b, kind: "n" }));
                }
                digits[i] = c;
            }
        }
    }
    Ok(Mti::from_digits_unchecked(digits))
}

pub(crate) fn write_mti(encoding: Encoding, mti: Mti, out: &mut impl BufMut) {
    let d = mti.digits();
    match encoding {
        Encoding::Bcd => {
            out.put_u8((d[0] - b'0') << 4 | (d[1] - b'0'));
            out.put_u8((d[2] - b'0') << 4 | (d[3] - b'0'));
        }
        _ => d
            .iter()
            .for_each(|&c| out.put_u8(from_latin1(encoding == Encoding::Ebcdic, c))),
    }
}

pub(crate) fn read_bitmap(
    encoding: BitmapEncoding,
    buf: &[u8],
    pos: &mut usize,
    which: u8,
) -> Result<u64, Error> {
    let at = Location::Bitmap(which);
    let need = if encoding == BitmapEncoding::Hex {
        16
    } else {
        8
    };
    let have = buf.len() - *pos;
    if have < need {
        return Err(Error::Decode {
            at,
            offset: *pos,
            reason: Reason::Truncated { need, have },
        });
    }
    let bytes = &buf[*pos..*pos + need];
    let word = match encoding {
        BitmapEncoding::Binary => u64::from_be_bytes(bytes.try_into().expect("8 bytes")),
        BitmapEncoding::Hex => {
            let half = |at: usize| hex8_value(bytes[at..at + 8].try_into().expect("8 bytes"));
            match (half(0), half(8)) {
                (Some(high), Some(low)) => u64::from(high) << 32 | u64::from(low),
                // The word check is exact (its tests hold it to `is_ascii_hexdigit`): a byte is bad.
                _ => {
                    let i = bytes
                        .iter()
                        .position(|b| !b.is_ascii_hexdigit())
                        .unwrap_or_default();
                    let reason = Reason::BadHex { byte: bytes[i] };
                    return Err(Error::Decode {
                        at,
                        offset: *pos + i,
                        reason,
                    });
                }
            }
        }
    };
    *pos += need;
    Ok(word)
}

pub(crate) fn write_bitmap(encoding: BitmapEncoding, word: u64, out: &mut impl BufMut) {
    match encoding {
        BitmapEncoding::Binary => out.put_u64(word),
        BitmapEncoding::Hex => word
            .to_be_bytes()
            .iter()
            .for_each(|&b| out.put_slice(&HEX_DIGITS[usize::from(b)])),
    }
}
