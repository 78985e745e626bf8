//! [`Message`]: decode from a frame without copying, build, encode, translate between dialects.

use std::fmt;

use bytes::{BufMut, Bytes};

use crate::error::{Error, Location, Reason};
use crate::field::Field;
use crate::header::{mti_len, read_bitmap, read_mti, write_bitmap, write_mti};
use crate::layout;
use crate::spec::{Likeness, Spec};
use crate::types::Mti;
use crate::value::{self, Span};

/// Fields a switch typically sets on a message it derives from another (a response, a translation).
const EXTRA_FIELDS: usize = 4;

/// First capacities of a message's own buffer and field table, for the fields set on it: a whole
/// purchase built field by field fits without growing either (each growth is a copy and a `realloc`).
const OWNED_START: usize = 1024;
const SLOTS_START: usize = 32;

/// Bit for field 1 (and 65, 129) within a bitmap word: fields are numbered from the most significant bit.
const FIRST_BIT: u64 = 1 << 63;

/// Where a field's wire bytes lie: the buffer that holds them (the frame, or the message's own), their
/// start and their end in it.
pub(crate) type Located<'a> = (&'a [u8], usize, usize);

/// Where a field's wire bytes are: in the received frame, or in the message's own buffer (set by a
/// builder or a translation). Kept small and `Copy` so that decode is a push of 12 bytes per field.
#[derive(Debug, Clone, Copy)]
struct Slot {
    number: u8,
    /// [`OWNED`] and [`DIGITS`]: one byte, so that a slot stays 12 bytes (16 made decoding 22 fields
    /// 10 % slower).
    flags: u8,
    len: u16,
    start: u32,
    wire_len: u32,
}

/// [`Slot::flags`]: the field's bytes are in the message's own buffer, not the frame.
const OWNED: u8 = 1;
/// [`Slot::flags`]: the field is ASCII digits in its dialect (`Layout::ascii_digits`), known here so
/// that a typed read finds it without going through the dialect's tables.
const DIGITS: u8 = 2;

impl Slot {
    #[inline(always)]
    fn flags(owned: bool, digits: bool) -> u8 {
        (u8::from(owned) * OWNED) | (u8::from(digits) * DIGITS)
    }

    #[inline(always)]
    fn owned(&self) -> bool {
        self.flags & OWNED != 0
    }

    #[inline(always)]
    fn digits(&self) -> bool {
        self.flags & DIGITS != 0
    }
}

/// An ISO 8583 message bound to its dialect.
///
/// A decoded message borrows nothing and copies nothing: it keeps the frame (`Bytes`, reference counted)
/// and a table of where each field lies in it. Fields set afterwards live in a side buffer. Values are
/// checked against the dialect when they enter (decode or `set`), so encoding cannot fail.
#[derive(Clone)]
pub struct Message {
    spec: &'static Spec,
    mti: Mti,
    /// Which data fields are present, in bitmap order (bit 63 of word 0 is field 1). Bitmap fields
    /// themselves (1, and 65 in a dialect with a tertiary bitmap) are never set here: encode derives them.
    present: [u64; 3],
    /// Present fields in ascending order; the rank of a field in `present` is its index here.
    slots: Vec<Slot>,
    frame: Bytes,
    owned: Vec<u8>,
    /// `owned` is the message's body as it goes on the wire: every present field, in order, each after
    /// its length prefix. So it stays while a builder sets new fields in ascending order, as builders
    /// do, and `encode` then copies it whole (one copy, not a prefix and a copy per field). Anything
    /// else (a decoded, derived or translated message, a field replaced, removed or set out of order)
    /// clears it for good, and fields are written one by one.
    wire_body: bool,
}

impl Message {
    /// An empty message of `spec`'s dialect.
    pub fn new(spec: &'static Spec, mti: Mti) -> Message {
        Message {
            spec,
            mti,
            present: [0; 3],
            slots: Vec::new(),
            frame: Bytes::new(),
            owned: Vec::new(),
            wire_body: true,
        }
    }

    /// Decodes one whole message. Fields stay slices of `frame`; the only allocation is the field table.
    pub fn decode(spec: &'static Spec, frame: Bytes) -> Result<Message, Error> {
        let buf = &frame[..];
        if u32::try_from(buf.len()).is_err() {
            return Err(Error::Decode {
                at: Location::Mti,
                offset: 0,
                reason: Reason::MessageTooLarge,
            });
        }
        let mti = read_mti(spec.mti_encoding(), buf)?;
        let mut pos = mti_len(spec.mti_encoding());
        let mut words = [0u64; 3];
        words[0] = read_bitmap(spec.bitmap_encoding(), buf, &mut pos, 1)?;
        if words[0] & FIRST_BIT != 0 {
            words[1] = read_bitmap(spec.bitmap_encoding(), buf, &mut pos, 2)?;
        }
        // Bit 1 announces the secondary bitmap; with a tertiary bitmap, bit 65 announces it and it follows
        // the secondary one directly (ISO 8583:2003 and pyiso8583 place all bitmaps up front).
        words[0] &= !FIRST_BIT;
        if spec.has_tertiary_bitmap() && words[1] & FIRST_BIT != 0 {
            words[1] &= !FIRST_BIT;
            words[2] = read_bitmap(spec.bitmap_encoding(), buf, &mut pos, 3)?;
        }
        let fields: u32 = words.iter().map(|w| w.count_ones()).sum();
        let mut slots = Vec::with_capacity(fields as usize);
        for (word, &bits) in words.iter().enumerate() {
            // Field 1 is the most significant bit: reversed, the lowest set bit is the next field.
            let mut bits = bits.reverse_bits();
            while bits != 0 {
                let number = (word as u32 * 64 + bits.trailing_zeros() + 1) as u8;
                bits &= bits - 1;
                let layout = spec.layout(number);
                let span = match layout::scan(layout, buf, pos) {
                    Some(span) => span,
                    None => decode_precisely(spec, number, buf, pos)?,
                };
                slots.push(Slot {
                    number,
                    flags: Slot::flags(false, layout.ascii_digits()),
                    len: span.len as u16,
                    start: span.start as u32,
                    wire_len: span.wire_len as u32,
                });
                pos = span.start + span.wire_len;
            }
        }
        if pos != buf.len() {
            let last = slots
                .last()
                .map_or(Location::Bitmap(1), |s| Location::Field(s.number));
            return Err(Error::Decode {
                at: last,
                offset: pos,
                reason: Reason::TrailingBytes {
                    count: buf.len() - pos,
                },
            });
        }
        Ok(Message {
            spec,
            mti,
            present: words,
            slots,
            frame,
            owned: Vec::new(),
            wire_body: false,
        })
    }

    /// Reads only the MTI of a frame: enough to answer a message that does not decode.
    pub fn peek_mti(spec: &Spec, frame: &[u8]) -> Result<Mti, Error> {
        read_mti(spec.mti_encoding(), frame)
    }

    /// Appends the message's wire form (MTI, bitmaps, fields; no length header) to `out`.
    pub fn encode(&self, out: &mut impl BufMut) {
        write_mti(self.spec.mti_encoding(), self.mti, out);
        let tertiary = self.present[2] != 0;
        let secondary = self.present[1] != 0 || tertiary;
        let bitmap = self.spec.bitmap_encoding();
        write_bitmap(
            bitmap,
            self.present[0] | if secondary { FIRST_BIT } else { 0 },
            out,
        );
        if secondary {
            write_bitmap(
                bitmap,
                self.present[1] | if tertiary { FIRST_BIT } else { 0 },
                out,
            );
        }
        if tertiary {
            write_bitmap(bitmap, self.present[2], out);
        }
        if self.wire_body {
            out.put_slice(&self.owned);
            return;
        }
        for slot in &self.slots {
            self.spec
                .layout(slot.number)
                .write_prefix(usize::from(slot.len), out);
            out.put_slice(self.data(slot));
        }
    }

    /// Encodes into a new `Bytes`.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = bytes::BytesMut::with_capacity(self.frame.len().max(self.owned.len() + 64));
        self.encode(&mut out);
        out.freeze()
    }

    pub fn spec(&self) -> &'static Spec {
        self.spec
    }

    pub fn mti(&self) -> Mti {
        self.mti
    }

    pub fn set_mti(&mut self, mti: Mti) -> &mut Self {
        self.mti = mti;
        self
    }

    #[inline]
    pub fn has(&self, number: u8) -> bool {
        bit(&self.present, number).is_some_and(|(w, mask)| self.present[w] & mask != 0)
    }

    /// Field `number`, if present.
    #[inline]
    pub fn get(&self, number: u8) -> Option<Field<'_>> {
        self.slot(number).map(|slot| self.view(slot))
    }

    /// Field `number`, if present: where its wire bytes lie (a buffer, start and end) when the dialect
    /// makes them ASCII digits (an `n` field in ASCII, whose digits were checked when they entered),
    /// which a typed read takes as they are; else the field.
    #[inline(always)]
    pub(crate) fn digits_or_field(&self, number: u8) -> Option<Result<Located<'_>, Field<'_>>> {
        let slot = self.slot(number)?;
        Some(match slot.digits() {
            true => Ok(self.source(slot)),
            false => Err(self.view(slot)),
        })
    }

    /// Present fields in ascending order.
    pub fn fields(&self) -> impl Iterator<Item = Field<'_>> {
        self.slots.iter().map(|s| self.view(s))
    }

    /// A present field's wire bytes as `Bytes`: a slice of the frame (no copy) when it came from one.
    pub fn field_bytes(&self, number: u8) -> Option<Bytes> {
        let slot = self.slot(number)?;
        let range = slot.start as usize..(slot.start + slot.wire_len) as usize;
        Some(if slot.owned() {
            Bytes::copy_from_slice(&self.owned[range])
        } else {
            self.frame.slice(range)
        })
    }

    /// Sets field `number` from its logical value (ASCII digits, text, or raw bytes for `b` fields). Short
    /// values of fixed fields are padded as the dialect says; anything else that does not fit is an error.
    pub fn set(&mut self, number: u8, value: impl AsRef<[u8]>) -> Result<&mut Self, Error> {
        let fs = self.spec.field(number).ok_or(Error::Encode {
            at: Location::Field(number),
            reason: Reason::NoSpec,
        })?;
        // Room for the few fields usually set on one message: one allocation, not one per doubling.
        if self.owned.capacity() == 0 {
            self.owned.reserve(OWNED_START);
        }
        if self.slots.capacity() == 0 {
            self.slots.reserve(SLOTS_START);
        }
        let layout = self.spec.layout(number);
        // Appended after the last field: the body stays in wire form, with room for the prefix.
        self.wire_body &= self.slots.last().is_none_or(|last| last.number < number);
        let prefix_at = self.owned.len();
        if self.wire_body {
            // Room for the prefix, written once the length is known. Each size a copy of its own: a
            // `resize` by a length known only at run time is a call to `memset`.
            match layout.prefix_len() {
                0 => {}
                1 => self.owned.push(0),
                2 => self.owned.extend_from_slice(&[0; 2]),
                3 => self.owned.extend_from_slice(&[0; 3]),
                _ => self.owned.extend_from_slice(&[0; 4]),
            }
        }
        let start = self.owned.len();
        let len = match value::encode(fs, number, value.as_ref(), &mut self.owned) {
            Ok(len) => len,
            Err(e) => {
                self.owned.truncate(prefix_at);
                return Err(e);
            }
        };
        let (Ok(start32), Ok(wire_len)) = (
            u32::try_from(start),
            u32::try_from(self.owned.len() - start),
        ) else {
            self.owned.truncate(prefix_at);
            return Err(Error::Encode {
                at: Location::Field(number),
                reason: Reason::MessageTooLarge,
            });
        };
        // A fixed field has no prefix: no call (most fields of a purchase are fixed).
        if self.wire_body && prefix_at < start {
            layout.write_prefix(len, &mut &mut self.owned[prefix_at..start]);
        }
        self.put_slot(Slot {
            number,
            flags: Slot::flags(true, layout.ascii_digits()),
            len: len as u16,
            start: start32,
            wire_len,
        });
        Ok(self)
    }

    /// Sets a numeric field from an integer. A fixed field is zero-filled by the dialect's padding, as
    /// with [`Message::set`].
    pub fn set_number(&mut self, number: u8, value: u64) -> Result<&mut Self, Error> {
        let mut digits = [b'0'; 20];
        let mut v = value;
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.set(number, &digits[i..])
    }

    /// Removes field `number`; returns whether it was present.
    pub fn remove(&mut self, number: u8) -> bool {
        if !self.has(number) {
            return false;
        }
        let rank = self.rank(number);
        self.slots.remove(rank);
        self.wire_body = false;
        if let Some((w, mask)) = bit(&self.present, number) {
            self.present[w] &= !mask;
        }
        true
    }

    /// A response to this request: the response MTI and a copy of the `echo` fields that are present.
    /// Copies of received fields keep pointing into the same frame.
    pub fn response(&self, echo: &[u8]) -> Result<Message, Error> {
        let mti = self.mti.response().ok_or(Error::Encode {
            at: Location::Mti,
            reason: Reason::Invalid("a response cannot be answered"),
        })?;
        let mut out = Message::new(self.spec, mti);
        out.frame = self.frame.clone();
        out.wire_body = false;
        // Room for the echoed fields and the few a response then sets (RC, auth code, RRN): one
        // allocation instead of one per doubling.
        out.slots.reserve(echo.len() + EXTRA_FIELDS);
        // Echoed fields from this message's own buffer are copied; the response's own fields follow.
        if !self.owned.is_empty() {
            out.owned.reserve(OWNED_START);
        }
        for &number in echo {
            if let Some(&slot) = self.slot(number) {
                let slot = out.adopt(self, slot);
                out.put_slot(slot);
            }
        }
        Ok(out)
    }

    /// The same message in another dialect, without going through `String`. A field laid out alike in
    /// both dialects keeps its bytes (still a slice of the received frame); one of the same type and
    /// length in another encoding is re-encoded unchecked, having been checked when it came in; any
    /// other is checked against the target dialect as [`Message::set`] would.
    pub fn translate(&self, to: &'static Spec) -> Result<Message, Error> {
        if std::ptr::eq(self.spec, to) || *self.spec == *to {
            return Ok(self.clone());
        }
        let mut out = Message::new(to, self.mti);
        out.frame = self.frame.clone();
        out.wire_body = false;
        out.present = self.present;
        out.slots.reserve(self.slots.len() + EXTRA_FIELDS);
        // Room for the whole message, plus the few fields a switch sets after translating it: one
        // allocation instead of one per doubling.
        out.owned.reserve(self.frame.len() + self.owned.len() + 64);
        let mut scratch = Vec::new();
        for slot in &self.slots {
            let number = slot.number;
            let (from, into) = (self.view(slot), to.field(number));
            let into = into.ok_or(Error::Encode {
                at: Location::Field(number),
                reason: Reason::NoSpec,
            })?;
            let start = out.owned.len();
            let len = match from.spec().likeness(into) {
                Likeness::Same => {
                    let mut slot = out.adopt(self, *slot);
                    slot.flags = Slot::flags(slot.owned(), to.layout(number).ascii_digits());
                    out.slots.push(slot);
                    continue;
                }
                Likeness::Reencode => {
                    value::reencode(&from, into, &mut out.owned);
                    usize::from(slot.len)
                }
                Likeness::Different => {
                    scratch.clear();
                    scratch.extend(from.bytes());
                    value::encode(into, number, &scratch, &mut out.owned)?
                }
            };
            out.slots.push(Slot {
                number,
                flags: Slot::flags(true, to.layout(number).ascii_digits()),
                len: len as u16,
                start: start as u32,
                wire_len: (out.owned.len() - start) as u32,
            });
        }
        Ok(out)
    }

    /// `slot` of `from`, a message that shares this one's frame, as a slot of this one: data from the
    /// frame stays where it is, data from `from`'s own buffer is copied into this one's.
    fn adopt(&mut self, from: &Message, mut slot: Slot) -> Slot {
        if slot.owned() {
            let data = from.data(&slot);
            slot.start = self.owned.len() as u32;
            self.owned.extend_from_slice(data);
        }
        slot
    }

    // Inlined: called, it read the slot back from the stack in one load over the smaller stores that
    // had just built it, which the processor cannot forward (a third of `set` went in that stall).
    #[inline(always)]
    fn put_slot(&mut self, slot: Slot) {
        let Some((w, mask)) = bit(&self.present, slot.number) else {
            return;
        };
        if self.present[w] & mask != 0 {
            let rank = self.rank_at(w, mask);
            self.slots[rank] = slot;
            return;
        }
        self.present[w] |= mask;
        // A builder sets fields in ascending order, as a message lists them: appended, no count.
        match self.slots.last() {
            Some(last) if last.number > slot.number => {
                let rank = self.rank_at(w, mask);
                self.slots.insert(rank, slot);
            }
            _ => self.slots.push(slot),
        }
    }

    /// Every typed read comes through here: one bitmap test and a population count, no search.
    #[inline]
    fn slot(&self, number: u8) -> Option<&Slot> {
        let (w, mask) = bit(&self.present, number)?;
        if self.present[w] & mask == 0 {
            return None;
        }
        self.slots.get(self.rank_at(w, mask))
    }

    /// Number of present fields below `number`: its index in `slots`.
    fn rank(&self, number: u8) -> usize {
        match bit(&self.present, number) {
            Some((w, mask)) => self.rank_at(w, mask),
            None => self.slots.len(),
        }
    }

    /// Number of present fields before the one at word `w`, bit `mask`.
    #[inline]
    fn rank_at(&self, w: usize, mask: u64) -> usize {
        let before = match w {
            0 => 0,
            1 => self.present[0].count_ones(),
            _ => self.present[0].count_ones() + self.present[1].count_ones(),
        };
        // Bits above `mask` in the word are lower field numbers.
        let above = self.present[w] & !(mask | (mask - 1));
        (before + above.count_ones()) as usize
    }

    #[inline]
    fn data(&self, slot: &Slot) -> &[u8] {
        let (buf, start, end) = self.source(slot);
        &buf[start..end]
    }

    /// The buffer a field's wire bytes are in (the frame, or the message's own), and where.
    #[inline]
    fn source(&self, slot: &Slot) -> Located<'_> {
        let (start, end) = (slot.start as usize, (slot.start + slot.wire_len) as usize);
        match slot.owned() {
            true => (&self.owned, start, end),
            false => (&self.frame, start, end),
        }
    }

    #[inline]
    fn view(&self, slot: &Slot) -> Field<'_> {
        let fs = self
            .spec
            .field(slot.number)
            .expect("slots exist only for fields of the spec");
        Field::new(slot.number, fs, self.data(slot), usize::from(slot.len))
    }
}

/// A field the fast path could not vouch for: rare, so kept out of the decode loop's registers.
#[cold]
#[inline(never)]
fn decode_precisely(spec: &Spec, number: u8, buf: &[u8], pos: usize) -> Result<Span, Error> {
    let fs = spec.field(number).ok_or(Error::Decode {
        at: Location::Field(number),
        offset: pos,
        reason: Reason::NoSpec,
    })?;
    value::decode(fs, number, buf, pos)
}

/// Word index and mask of field `number`, if it is in range.
fn bit(words: &[u64; 3], number: u8) -> Option<(usize, u64)> {
    let i = usize::from(number).checked_sub(1)?;
    (i / 64 < words.len()).then(|| (i / 64, FIRST_BIT >> (i % 64)))
}

impl PartialEq for Message {
    /// Same dialect, MTI and field values, wherever the bytes are kept.
    fn eq(&self, other: &Message) -> bool {
        (std::ptr::eq(self.spec, other.spec) || self.spec == other.spec)
            && self.mti == other.mti
            && self.present == other.present
            && self
                .slots
                .iter()
                .zip(&other.slots)
                .all(|(a, b)| a.len == b.len && self.data(a) == other.data(b))
    }
}

impl Eq for Message {}

/// Masked: PANs as first6…last4, secrets redacted (see [`Field`]).
impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        map.entry(&"spec", &self.spec.name())
            .entry(&"mti", &self.mti.as_str());
        for field in self.fields() {
            map.entry(&field.number(), &field);
        }
        map.finish()
    }
}

/// One line, masked: `0200 2=476173…0010 3=000000 …`.
impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.mti)?;
        self.fields()
            .try_for_each(|field| write!(f, " {}={}", field.number(), field))
    }
}
