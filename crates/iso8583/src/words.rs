//! Field data checked and read eight bytes at a time: each check turns a little-endian 8-byte word into
//! a verdict per byte (its high bit or high nibble set where the byte is bad), so a field of digits, hex
//! or track data costs a few instructions a word instead of a branch a byte. Property tests hold each to
//! the byte-by-byte rule it stands for.

use crate::spec::Filler;

pub(crate) const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH_BITS: u64 = ONES * 0x80;
const HIGH_NIBBLES: u64 = ONES * 0xF0;
const LOW_NIBBLES: u64 = ONES * 0x0F;

/// Non-zero if a byte of `x` is not a digit, `zeros` being the digit `0` in every byte. Digits XOR `0`
/// are 0–9 with a zero high nibble (ASCII `0x30`–`0x39`, EBCDIC `0xF0`–`0xF9`); adding 6 pushes 10–15
/// into the high nibble. No carry crosses bytes unless the high nibble was already non-zero.
pub(crate) fn digits_bad(x: u64, zeros: u64) -> u64 {
    let y = x ^ zeros;
    (y | y.wrapping_add(ONES * 6)) & HIGH_NIBBLES
}

/// `0x80` in each byte of `x` from `lo` to `hi` (both at most `0x7F`), `0x00` elsewhere. Exact: neither
/// sum carries out of its byte.
fn bytes_within(x: u64, lo: u8, hi: u8) -> u64 {
    let low7 = x & !HIGH_BITS;
    let below_hi = ONES * (0x80 + u64::from(hi)) - low7;
    let above_lo = low7 + ONES * (0x80 - u64::from(lo));
    below_hi & above_lo & !x & HIGH_BITS
}

/// Non-zero if a byte of `x` is not a hex digit (`0`–`9`, `A`–`F`, `a`–`f`). Setting bit 5 turns
/// `A`–`F` into `a`–`f` and nothing else into them; digits are checked as they are.
fn hex_bad(x: u64) -> u64 {
    !(bytes_within(x, b'0', b'9') | bytes_within(x | (ONES * 0x20), b'a', b'f')) & HIGH_BITS
}

/// The value of eight ASCII hex digits (either case), or `None` if a byte is not one. Each byte's
/// value is its low nibble, plus 9 for a letter (bit 6 set); the nibbles, first digit the most
/// significant, are then paired, the pairs paired and the fours paired.
#[inline]
pub(crate) fn hex8_value(text: [u8; 8]) -> Option<u32> {
    let x = u64::from_le_bytes(text);
    if hex_bad(x) != 0 {
        return None;
    }
    let nibbles = ((x & LOW_NIBBLES) + ((x >> 6) & ONES) * 9).swap_bytes();
    let pairs = ((nibbles >> 4) | nibbles) & 0x00FF_00FF_00FF_00FF;
    let fours = ((pairs >> 8) | pairs) & 0x0000_FFFF_0000_FFFF;
    Some(((fours >> 16) | fours) as u32)
}

/// Whether every byte of `text` is an ASCII digit, eight at a time.
#[inline]
pub(crate) fn all_digits(text: &[u8]) -> bool {
    let zeros = ONES * u64::from(b'0');
    all_words(text, |x| digits_bad(x, zeros), u8::is_ascii_digit)
}

/// Whether every byte of `text` is an ASCII digit or a track-data separator (`=`, `D`), eight at a
/// time, as decode checks them.
#[inline]
pub(crate) fn all_track(text: &[u8]) -> bool {
    let zeros = ONES * u64::from(b'0');
    all_words(
        text,
        |x| track_bad(x, zeros, [ONES * u64::from(b'='), ONES * u64::from(b'D')]),
        |b| b.is_ascii_digit() || *b == b'=' || *b == b'D',
    )
}

/// Whether `bad` finds nothing in `text`'s whole words and `ok` takes each byte after them.
#[inline(always)]
fn all_words(text: &[u8], bad: impl Fn(u64) -> u64, ok: impl Fn(&u8) -> bool) -> bool {
    let mut words = text.chunks_exact(8);
    let mut found = 0;
    for word in &mut words {
        found |= bad(u64::from_le_bytes(word.try_into().expect("8 bytes")));
    }
    found == 0 && words.remainder().iter().all(ok)
}

/// Non-zero if a byte of `x` is neither a digit nor one of the two `separators` (each repeated in
/// every byte): separators count as zeros. Most words of track data are all digits (track 2 has one
/// `=` in 37 characters), and those take the digits' check alone.
#[inline(always)]
pub(crate) fn track_bad(x: u64, zeros: u64, [equals, d]: [u64; 2]) -> u64 {
    if digits_bad(x, zeros) == 0 {
        return 0;
    }
    let separators = bytes_equal(x, equals) | bytes_equal(x, d);
    digits_bad((x & !separators) | (zeros & separators), zeros)
}

/// The ASCII digits `buf[start..end]` (at most 19, so that any fits) as a number, eight at a time:
/// each word is checked and its digits are paired, the pairs paired, and the fours paired (three
/// multiplications, not eight). The digits before the last whole words (a STAN's six, an amount's
/// first four) are read as one word too: the eight bytes of `buf` that end with them, whatever comes
/// before them there (the bitmap, another field) replaced by zeros; one by one only when `buf` has
/// fewer than eight bytes up to there. Checking and reading share one pass; a bad byte makes the sum
/// garbage, hence the wrapping arithmetic, and the result `None`. `CHECK` false skips the check, for
/// digits that were checked when they entered a message (a typed read of an `n` field).
#[inline(always)]
pub(crate) fn digits_value<const CHECK: bool>(buf: &[u8], start: usize, end: usize) -> Option<u64> {
    let len = end.checked_sub(start)?;
    if len == 0 || len > 19 || end > buf.len() {
        return None;
    }
    let zeros = ONES * u64::from(b'0');
    let head_end = start + len % 8;
    let (mut value, mut bad) = (0u64, 0u64);
    if head_end > start {
        match head_end.checked_sub(8) {
            Some(from) => {
                let word: [u8; 8] = buf[from..head_end].try_into().expect("8 bytes");
                let before = 8 * (8 - (head_end - start)) as u32;
                let low = (1u64 << before) - 1;
                let x = (u64::from_le_bytes(word) & !low) | (zeros & low);
                bad |= digits_bad(x, zeros);
                value = eight_digits(x);
            }
            None => {
                for &d in &buf[start..head_end] {
                    let digit = d.wrapping_sub(b'0');
                    bad |= u64::from(digit > 9);
                    value = value.wrapping_mul(10).wrapping_add(u64::from(digit));
                }
            }
        }
    }
    for word in buf[head_end..end].as_chunks::<8>().0 {
        let x = u64::from_le_bytes(*word);
        bad |= digits_bad(x, zeros);
        value = value
            .wrapping_mul(100_000_000)
            .wrapping_add(eight_digits(x));
    }
    (!CHECK || bad == 0).then_some(value)
}

/// The value of `digits` packed digits (1 to 19) at the start of `wire`; `None` if a nibble is not a
/// digit. See [`packed_each`].
#[inline]
pub(crate) fn packed_value(wire: &[u8], digits: usize, left: bool) -> Option<u64> {
    if digits == 0 || digits > 19 {
        return None;
    }
    let mut value = 0u64;
    packed_each(wire, digits, left, |d| {
        value = value.wrapping_mul(10).wrapping_add(u64::from(d))
    })
    .then_some(value)
}

/// Hands each of the first `digits` packed digits of `wire` to `each`, in order, two a byte (not a
/// nibble at a time); an odd count has its filler nibble first (`left`) or last, which is skipped.
/// Whether there were that many and every one was a digit (0–9).
#[inline]
pub(crate) fn packed_each(
    wire: &[u8],
    digits: usize,
    left: bool,
    mut each: impl FnMut(u8),
) -> bool {
    let Some(bytes) = wire.get(..digits.div_ceil(2)) else {
        return false;
    };
    let mut bad = false;
    let mut digit = |d: u8| {
        bad |= d > 9;
        each(d);
    };
    let odd = digits % 2 == 1;
    let whole = match (odd, bytes) {
        (true, [first, rest @ ..]) if left => {
            digit(first & 0xF);
            rest
        }
        (true, [rest @ .., _]) => rest,
        _ => bytes,
    };
    for &b in whole {
        digit(b >> 4);
        digit(b & 0xF);
    }
    if let (true, false, Some(last)) = (odd, left, bytes.last()) {
        digit(last >> 4);
    }
    !bad
}

/// The value of eight ASCII digits loaded little-endian (the first digit in the lowest byte).
#[inline]
fn eight_digits(x: u64) -> u64 {
    let mut v = x & LOW_NIBBLES;
    v = (v.wrapping_mul(10) + (v >> 8)) & 0x00FF_00FF_00FF_00FF;
    v = (v.wrapping_mul(100) + (v >> 16)) & 0x0000_FFFF_0000_FFFF;
    (v.wrapping_mul(10_000) + (v >> 32)) & 0xFFFF_FFFF
}

/// `0xFF` in each byte where `x` and `y` agree, `0x00` elsewhere (exact: no borrow between bytes).
fn bytes_equal(x: u64, y: u64) -> u64 {
    let t = x ^ y;
    let zero = !((t & !HIGH_BITS).wrapping_add(!HIGH_BITS) | t) & HIGH_BITS;
    (zero >> 7) * 0xFF
}

/// Non-zero if a nibble of `x` is above 9.
pub(crate) fn packed_bad(x: u64) -> u64 {
    let over_9 = |n: u64| (n + ONES * 6) & HIGH_NIBBLES;
    over_9(x & LOW_NIBBLES) | over_9((x >> 4) & LOW_NIBBLES)
}

/// Non-zero if a nibble of `x` is above 9 and not the separator D. A word of digits alone (most of
/// track data) takes the digits' check alone.
pub(crate) fn packed_track_bad(x: u64) -> u64 {
    if packed_bad(x) == 0 {
        return 0;
    }
    let separators = ONES * 0x0D;
    let bad = |n: u64| {
        let over_9 = (n + ONES * 6) & HIGH_NIBBLES;
        // A nibble equal to D: (n ^ D) is zero, and adding 0x7F leaves bit 7 clear.
        let is_d = !((n ^ separators) + ONES * 0x7F) & HIGH_BITS;
        over_9 & !(is_d >> 3) & (ONES * 0x10)
    };
    bad(x & LOW_NIBBLES) | bad((x >> 4) & LOW_NIBBLES)
}

/// Packed digits in `buf[start..end]`; an odd count has its filler nibble first or last.
#[inline]
pub(crate) fn packed_ok(
    buf: &[u8],
    start: usize,
    end: usize,
    filler: Filler,
    digits: usize,
    bad: impl Fn(u64) -> u64,
) -> bool {
    if digits.is_multiple_of(2) {
        return words_ok(buf, start, end, bad);
    }
    if filler.is_left() {
        let first = buf[start];
        first >> 4 == filler.nibble()
            && bad(u64::from(first & 0xF)) == 0
            && words_ok(buf, start + 1, end, bad)
    } else {
        let last = buf[end - 1];
        last & 0xF == filler.nibble()
            && bad(u64::from(last >> 4)) == 0
            && words_ok(buf, start, end - 1, bad)
    }
}

/// Whether `buf[start..end]` is all hex digits: by faster-hex's SIMD check where the data is long
/// enough for it to pay (EMV data in DE55 is a few hundred digits), eight at a time below that. Out of
/// decode's field loop, as the text track check is (`layout::scan`).
#[inline(never)]
pub(crate) fn hex_ok(buf: &[u8], start: usize, end: usize) -> bool {
    if end - start >= 32 {
        return faster_hex::hex_check(&buf[start..end]);
    }
    words_ok(buf, start, end, hex_bad)
}

/// Whether `bad` finds nothing in `buf[start..end]`, read as little-endian 8-byte words. A short
/// field is read as the word that ends where it ends, and the verdicts on the bytes before it are
/// shifted out; a long one as words from its start plus that last word (overlaps are read twice).
/// `bad` must flag a byte in its own high nibble. A field ends at least 10 bytes in (after MTI and
/// bitmap), so the last word always fits; were it not to, the precise path decides.
pub(crate) fn words_ok(buf: &[u8], start: usize, end: usize, bad: impl Fn(u64) -> u64) -> bool {
    let word = |at: usize| u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"));
    let len = end - start;
    if len == 0 {
        return true;
    }
    if end < 8 {
        return false;
    }
    let last = bad(word(end - 8));
    if len <= 8 {
        return last >> (8 * (8 - len)) == 0;
    }
    let mut found = last;
    let mut at = start;
    while at + 8 < end {
        found |= bad(word(at));
        at += 8;
    }
    found == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::FieldType;
    use proptest::strategy::Strategy as _;

    const ASCII_ZEROS: u64 = ONES * b'0' as u64;

    fn ascii_bad(x: u64) -> u64 {
        digits_bad(x, ASCII_ZEROS)
    }

    #[test]
    fn words_find_the_one_bad_byte_wherever_it_is() {
        for len in 1..=20 {
            for bad_at in 0..len {
                let mut buf = vec![b'X'; 10];
                let start = buf.len();
                buf.extend(std::iter::repeat_n(b'7', len));
                buf.push(b'X');
                let end = start + len;
                assert!(words_ok(&buf, start, end, ascii_bad), "len {len}");
                for byte in [b'/', b':', b'A', 0x00, 0xFF, 0xB5] {
                    buf[start + bad_at] = byte;
                    assert!(!words_ok(&buf, start, end, ascii_bad));
                }
                buf[start + bad_at] = b'7';
            }
        }
    }

    /// Each byte value in each position of a word, judged as the byte-at-a-time checks judge it.
    #[test]
    fn every_byte_is_judged_as_the_byte_check_judges_it() {
        let ebcdic_zeros = ONES * 0xF0;
        let is_nibble_ok = |n: u8, track: bool| n <= 9 || (track && n == 0xD);
        for at in 0..8 {
            let put = |fill: u64, b: u8| fill & !(0xFF << (8 * at)) | u64::from(b) << (8 * at);
            for b in 0..=255u8 {
                assert_eq!(ascii_bad(put(ASCII_ZEROS, b)) == 0, b.is_ascii_digit());
                let ebcdic = (0xF0..=0xF9).contains(&b);
                assert_eq!(digits_bad(put(ebcdic_zeros, b), ebcdic_zeros) == 0, ebcdic);
                let equal = bytes_equal(put(0, b), ONES * u64::from(b'='));
                assert_eq!(
                    equal,
                    if b == b'=' { 0xFF << (8 * at) } else { 0 },
                    "{b:#04x}"
                );
                for track in [false, true] {
                    let bad = if track { packed_track_bad } else { packed_bad };
                    let ok = is_nibble_ok(b >> 4, track) && is_nibble_ok(b & 0xF, track);
                    assert_eq!(bad(put(0, b)) == 0, ok, "bcd {b:#04x} track {track}");
                }
            }
        }
    }

    #[test]
    fn hex_digits_are_judged_byte_by_byte() {
        for at in 0..8 {
            let put =
                |b: u8| (ONES * u64::from(b'0')) & !(0xFF << (8 * at)) | u64::from(b) << (8 * at);
            for b in 0..=255u8 {
                assert_eq!(
                    hex_bad(put(b)) == 0,
                    b.is_ascii_hexdigit(),
                    "{b:#04x} at {at}"
                );
            }
        }
    }

    proptest::proptest! {
        /// Digits read eight at a time are what `str::parse` reads of digits; anything else is no
        /// number, a leading `+` too (which `str::parse` takes, and a numeric field does not hold).
        #[test]
        fn digits_read_as_parse_reads_them(
            text in "[0-9]{0,20}|[0-9]{0,9}[^0-9][0-9]{0,9}",
            before in proptest::collection::vec(proptest::num::u8::ANY, 0..12),
        ) {
            let digits = text.bytes().all(|b| b.is_ascii_digit());
            let expected = (digits && text.len() <= 19).then(|| text.parse::<u64>().ok()).flatten();
            proptest::prop_assert_eq!(digits_value::<true>(text.as_bytes(), 0, text.len()), expected);
            // Whatever bytes come before the digits in their buffer changes nothing.
            let buf = [&before[..], text.as_bytes()].concat();
            proptest::prop_assert_eq!(digits_value::<true>(&buf, before.len(), buf.len()), expected);
            proptest::prop_assert_eq!(all_digits(text.as_bytes()), digits);
        }
    }

    proptest::proptest! {
        /// Packed digits read a byte at a time are what reading them a nibble at a time gives, the
        /// filler nibble of an odd count skipped on either side.
        #[test]
        fn packed_read_as_nibble_by_nibble(
            wire in proptest::collection::vec(
                proptest::prop_oneof![
                    8 => (0u8..=9, 0u8..=9).prop_map(|(h, l)| h << 4 | l),
                    1 => proptest::num::u8::ANY,
                ],
                0..12,
            ),
            digits in 0usize..=21,
            left: bool,
        ) {
            let nibbles: Vec<u8> = wire.iter().flat_map(|b| [b >> 4, b & 0xF]).collect();
            let skip = usize::from(digits % 2 == 1 && left);
            let expected = nibbles
                .get(skip..skip + digits)
                .filter(|n| (1..=19).contains(&n.len()) && n.iter().all(|&d| d <= 9))
                .map(|n| n.iter().fold(0u64, |v, &d| v * 10 + u64::from(d)));
            proptest::prop_assert_eq!(packed_value(&wire, digits, left), expected);
        }
    }

    proptest::proptest! {
        /// Eight hex digits read at once are what `u32::from_str_radix` reads; anything else is no
        /// number (a leading `+` too, which `from_str_radix` takes).
        #[test]
        fn hex_read_as_from_str_radix_reads_it(
            text in proptest::collection::vec(
                proptest::prop_oneof![
                    16 => proptest::sample::select(&b"0123456789abcdefABCDEF"[..]),
                    1 => proptest::num::u8::ANY,
                ],
                8,
            ),
        ) {
            let digits = text.iter().all(u8::is_ascii_hexdigit);
            let expected = std::str::from_utf8(&text)
                .ok()
                .filter(|_| digits)
                .and_then(|t| u32::from_str_radix(t, 16).ok());
            proptest::prop_assert_eq!(hex8_value(text.try_into().expect("8 bytes")), expected);
        }
    }

    proptest::proptest! {
        /// Track data checked eight at a time is what the field type's byte-by-byte rule allows.
        #[test]
        fn track_checked_in_words_as_byte_by_byte(
            data in proptest::collection::vec(
                proptest::prop_oneof![
                    8 => proptest::sample::select(&b"0123456789=D"[..]),
                    1 => proptest::num::u8::ANY,
                ],
                0..50,
            ),
        ) {
            let expected = data.iter().enumerate().all(|(i, &b)| FieldType::Z.allows(i, b));
            proptest::prop_assert_eq!(all_track(&data), expected);
        }
    }

    proptest::proptest! {
        /// Hex digits checked many or eight at a time are what a byte-by-byte check finds, at every
        /// length and wherever a bad byte is (with fewer than eight bytes up to the field's end, the
        /// fast path vouches for nothing and leaves it to the precise one).
        #[test]
        fn hex_checked_in_words_as_byte_by_byte(
            data in proptest::collection::vec(
                proptest::prop_oneof![
                    8 => proptest::sample::select(&b"0123456789abcdefABCDEF"[..]),
                    1 => proptest::num::u8::ANY,
                ],
                0..80,
            ),
            before in 0usize..9,
        ) {
            let buf = [&vec![b'0'; before][..], &data].concat();
            let expected = data.iter().all(u8::is_ascii_hexdigit);
            let fast = hex_ok(&buf, before, buf.len());
            proptest::prop_assert!(!fast || expected, "vouched for a bad byte");
            if buf.len() >= 8 {
                proptest::prop_assert_eq!(fast, expected);
            }
        }
    }
}
