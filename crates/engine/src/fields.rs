//! Values the switch writes into messages: transmission time, RRN, and the key fields it reads.

use std::time::{Duration, SystemTime};

use compact_str::{CompactString, ToCompactString};
use iso8583::{Error, Field, FieldType, Message, ResponseCode, Sensitivity};
use time::OffsetDateTime;

/// A field as text for the records: what its display shows (masked as its sensitivity says), taken
/// straight from the wire bytes when those are that text already (a clear ASCII field), without a
/// formatting pass.
pub(crate) fn text(field: Field<'_>) -> CompactString {
    let clear = field.spec().sensitivity == Sensitivity::Clear && field.spec().kind != FieldType::B;
    match field.as_str() {
        Some(text) if clear => CompactString::from(text),
        _ => field.to_compact_string(),
    }
}

/// DE7 for `wall`: MMDDhhmmss in UTC.
pub(crate) fn transmission_time(wall: SystemTime) -> u64 {
    let t = OffsetDateTime::from(wall);
    let mmdd = u64::from(u8::from(t.month())) * 100 + u64::from(t.day());
    mmdd * 1_000_000
        + u64::from(t.hour()) * 10_000
        + u64::from(t.minute()) * 100
        + u64::from(t.second())
}

/// The day `wall` falls on, MMDD (UTC): the transaction date when a request carries none.
pub(crate) fn day(wall: SystemTime) -> u16 {
    (transmission_time(wall) / 1_000_000) as u16
}

/// A retrieval reference number, `YDDDhhNNNNNN`: last digit of the year, day of the year, hour, and a
/// six-digit sequence (the upstream STAN, unique per link for the day's traffic).
pub(crate) fn rrn(wall: SystemTime, seq: u32) -> String {
    let t = OffsetDateTime::from(wall);
    format!(
        "{}{:03}{:02}{:06}",
        t.year().rem_euclid(10),
        t.ordinal(),
        t.hour(),
        seq % 1_000_000
    )
}

/// The UTC time of day at which the business date turns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cutover(Duration);

impl std::str::FromStr for Cutover {
    type Err = String;

    /// `HH:MM`, 00:00 to 23:59.
    fn from_str(s: &str) -> Result<Cutover, String> {
        let bad = || format!("{s:?} is not a time of day HH:MM");
        let (h, m) = s.split_once(':').ok_or_else(bad)?;
        let (h, m): (u64, u64) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
        if h > 23 || m > 59 || s.len() != 5 {
            return Err(bad());
        }
        Ok(Cutover(Duration::from_secs(h * 3600 + m * 60)))
    }
}

impl Cutover {
    /// The business date `wall` belongs to: its UTC date, or the next one at or after the cutover.
    pub fn business_date(self, wall: SystemTime) -> time::Date {
        let day = Duration::from_secs(24 * 3600);
        let shift = (day - self.0.min(day)).as_secs() % day.as_secs();
        (OffsetDateTime::from(wall) + Duration::from_secs(shift)).date()
    }
}

/// DE15, the settlement date MMDD, of `wall`'s business date.
pub(crate) fn settlement_date(wall: SystemTime, cutover: Cutover) -> u64 {
    let date = cutover.business_date(wall);
    u64::from(u8::from(date.month())) * 100 + u64::from(date.day())
}

/// The first two digits of DE3, the processing code: what kind of transaction it is, in any dialect.
pub(crate) fn processing(msg: &Message) -> Option<[u8; 2]> {
    let mut digits = msg.get(3)?.bytes();
    Some([digits.next()?, digits.next()?])
}

/// Sets DE39.
pub(crate) fn set_rc(msg: &mut Message, rc: ResponseCode) -> Result<(), Error> {
    msg.set(39, rc.0).map(drop)
}

/// Copies field `n` from `from` (any dialect) when it is present there.
pub(crate) fn copy(to: &mut Message, from: &Message, n: u8) -> Result<(), Error> {
    match from.get(n) {
        Some(f) => to.set(n, f.to_vec()).map(drop),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn record_text_is_what_the_display_shows() {
        let spec = dialects::builtin("iso87ascii").expect("built-in");
        let mut msg = Message::new(spec, iso8583::Mti::FINANCIAL);
        msg.set(2, "4761739001010010").expect("PAN");
        msg.set(41, "TERM0001").expect("TID");
        msg.set(52, [0x12, 0x34, 0x56, 0x78, 0x9A, 0xBC, 0xDE, 0xF0])
            .expect("PIN block");
        for n in [2, 41, 52] {
            let field = msg.get(n).expect("set above");
            assert_eq!(text(field), field.to_compact_string(), "field {n}");
        }
        assert_eq!(text(msg.get(2).expect("PAN")), "476173…0010");
        assert_eq!(text(msg.get(41).expect("TID")), "TERM0001");
    }

    #[test]
    fn the_business_date_turns_at_the_cutover() {
        // 2026-11-21 09:30:05 UTC.
        let wall = UNIX_EPOCH + Duration::from_secs(1_795_253_405);
        let date = |cutover: &str| {
            let cutover: Cutover = cutover.parse().unwrap();
            let d = cutover.business_date(wall);
            (u8::from(d.month()), d.day())
        };
        assert_eq!(date("00:00"), (11, 21));
        assert_eq!(date("09:30"), (11, 22), "at the cutover: the next day");
        assert_eq!(date("09:31"), (11, 21));
        assert_eq!(date("22:00"), (11, 21));
        assert!("24:00".parse::<Cutover>().is_err());
        assert!("9:30".parse::<Cutover>().is_err());
    }

    #[test]
    fn dates_are_utc() {
        // 2026-11-21 09:30:05 UTC, day 325 of the year.
        let wall = UNIX_EPOCH + Duration::from_secs(1_795_253_405);
        assert_eq!(transmission_time(wall), 1121_093005);
        assert_eq!(day(wall), 1121);
        assert_eq!(rrn(wall, 1_000_123), "632509000123");
    }
}
