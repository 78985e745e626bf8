//! Values the switch writes into messages: transmission time, RRN, and the key fields it reads.

use std::time::SystemTime;

use iso8583::{Error, Message, ResponseCode};
use time::OffsetDateTime;

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
    fn dates_are_utc() {
        // 2026-11-21 09:30:05 UTC, day 325 of the year.
        let wall = UNIX_EPOCH + Duration::from_secs(1_795_253_405);
        assert_eq!(transmission_time(wall), 1121_093005);
        assert_eq!(day(wall), 1121);
        assert_eq!(rrn(wall, 1_000_123), "632509000123");
    }
}
