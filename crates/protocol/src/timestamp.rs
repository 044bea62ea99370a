//! Wall-clock timestamps as they appear on the wire.
//!
//! Every message carries `timestamp`, an RFC 3339 UTC string with exactly six fractional
//! digits (`2026-01-19T10:30:45.123456Z`), as the systems tidewire replaces sent them.
//! The protocol crate has no clock: drivers read the time and hand a [`Timestamp`] in.
//! Inside, a timestamp is microseconds since the Unix epoch, so it compares and
//! subtracts cheaply (latency measurements do exactly that).

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A UTC instant with microsecond precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(type = "string"))]
pub struct Timestamp {
    micros: i64,
}

/// A string that is not an RFC 3339 timestamp (or is out of range).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid timestamp {input:?}: expected RFC 3339 like 2026-01-19T10:30:45.123456Z")]
pub struct TimestampError {
    input: String,
}

/// Years outside 0..=9999 cannot be written in RFC 3339.
const MIN_MICROS: i64 = -62_167_219_200_000_000; // 0000-01-01T00:00:00Z
const MAX_MICROS: i64 = 253_402_300_799_999_999; // 9999-12-31T23:59:59.999999Z
const MICROS_PER_DAY: i64 = 86_400_000_000;

// The calendar arithmetic is written out (days from civil dates and back, after Howard
// Hinnant's algorithms) rather than taken from a date library: it is small, exact for
// the proleptic Gregorian calendar, and keeps the browser client's wasm lean.

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The proleptic Gregorian date of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

/// A cursor over ASCII digits and separators.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn digits(&mut self, count: usize) -> Option<i64> {
        let slice = self.bytes.get(self.at..self.at + count)?;
        let mut value = 0i64;
        for &b in slice {
            if !b.is_ascii_digit() {
                return None;
            }
            value = value * 10 + i64::from(b - b'0');
        }
        self.at += count;
        Some(value)
    }

    fn expect(&mut self, accepted: &[u8]) -> Option<()> {
        let b = *self.bytes.get(self.at)?;
        if accepted.contains(&b) {
            self.at += 1;
            Some(())
        } else {
            None
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }
}

fn parse_rfc3339(input: &str) -> Option<i64> {
    let mut c = Cursor { bytes: input.as_bytes(), at: 0 };
    let year = c.digits(4)?;
    c.expect(b"-")?;
    let month = c.digits(2)?;
    c.expect(b"-")?;
    let day = c.digits(2)?;
    c.expect(b"Tt ")?;
    let hour = c.digits(2)?;
    c.expect(b":")?;
    let minute = c.digits(2)?;
    c.expect(b":")?;
    let second = c.digits(2)?;
    let mut micros = 0;
    if c.peek() == Some(b'.') {
        c.at += 1;
        let mut digits = 0;
        while let Some(b) = c.peek().filter(u8::is_ascii_digit) {
            if digits < 6 {
                micros = micros * 10 + i64::from(b - b'0');
            }
            digits += 1;
            c.at += 1;
        }
        if digits == 0 {
            return None;
        }
        for _ in digits..6 {
            micros *= 10;
        }
    }
    let offset_minutes = match c.peek()? {
        b'Z' | b'z' => {
            c.at += 1;
            0
        }
        sign @ (b'+' | b'-') => {
            c.at += 1;
            let hours = c.digits(2)?;
            c.expect(b":")?;
            let minutes = c.digits(2)?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            let total = hours * 60 + minutes;
            if sign == b'-' { -total } else { total }
        }
        _ => return None,
    };
    // A leap second (60) is accepted and counted as the next second's start.
    let valid = (1..=12).contains(&month)
        && (1..=days_in_month(year, month)).contains(&day)
        && hour <= 23
        && minute <= 59
        && second <= 60;
    if !valid || c.at != input.len() {
        return None;
    }
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset_minutes * 60;
    seconds.checked_mul(1_000_000)?.checked_add(micros)
}

impl Timestamp {
    /// The Unix epoch.
    pub const UNIX_EPOCH: Timestamp = Timestamp { micros: 0 };

    /// From microseconds since the Unix epoch, clamped to the years RFC 3339 can write.
    pub const fn from_unix_micros(micros: i64) -> Timestamp {
        let micros = if micros < MIN_MICROS {
            MIN_MICROS
        } else if micros > MAX_MICROS {
            MAX_MICROS
        } else {
            micros
        };
        Timestamp { micros }
    }

    /// From milliseconds since the Unix epoch (what `Date.now()` gives in a browser).
    pub fn from_unix_millis(millis: f64) -> Timestamp {
        Timestamp::from_unix_micros((millis * 1000.0) as i64)
    }

    /// Microseconds since the Unix epoch.
    pub const fn unix_micros(self) -> i64 {
        self.micros
    }

    /// Parses any RFC 3339 timestamp; sub-microsecond digits are truncated.
    pub fn parse(input: &str) -> Result<Timestamp, TimestampError> {
        match parse_rfc3339(input) {
            Some(micros) if (MIN_MICROS..=MAX_MICROS).contains(&micros) => Ok(Timestamp { micros }),
            _ => Err(TimestampError { input: input.chars().take(64).collect() }),
        }
    }

    /// The wire form: `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
    pub fn to_rfc3339(self) -> String {
        let (year, month, day, hour, minute, second) = self.civil();
        let micros = self.micros.rem_euclid(1_000_000);
        format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{micros:06}Z")
    }

    /// The calendar parts (year, month, day, hour, minute, second) in UTC, for ids
    /// and file names derived from a time.
    pub fn civil(self) -> (i32, u8, u8, u8, u8, u8) {
        let days = self.micros.div_euclid(MICROS_PER_DAY);
        let of_day = self.micros.rem_euclid(MICROS_PER_DAY) / 1_000_000;
        let (year, month, day) = civil_from_days(days);
        (year as i32, month as u8, day as u8, (of_day / 3600) as u8, (of_day / 60 % 60) as u8, (of_day % 60) as u8)
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(deserializer)?;
        Timestamp::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_timestamp_round_trips_exactly() {
        let ts = Timestamp::parse("2026-01-19T10:30:45.123456Z").unwrap();
        assert_eq!(ts.to_rfc3339(), "2026-01-19T10:30:45.123456Z");
        assert_eq!(ts.civil(), (2026, 1, 19, 10, 30, 45));
    }

    #[test]
    fn other_rfc3339_forms_are_accepted_and_normalized() {
        let ts = Timestamp::parse("2024-01-14T12:00:00+02:00").unwrap();
        assert_eq!(ts.to_rfc3339(), "2024-01-14T10:00:00.000000Z");
        let ts = Timestamp::parse("2024-01-15T10:30:00.000123456Z").unwrap();
        assert_eq!(ts.to_rfc3339(), "2024-01-15T10:30:00.000123Z");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in ["", "yesterday", "2026-13-01T00:00:00Z", "2026-01-19 10:30:45", "99999-01-01T00:00:00Z"] {
            assert!(Timestamp::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn calendar_arithmetic_matches_known_dates() {
        for (text, micros) in [
            ("1970-01-01T00:00:00.000000Z", 0),
            ("2000-02-29T12:00:00.000000Z", 951_825_600_000_000),
            ("2024-12-31T23:59:59.999999Z", 1_735_689_599_999_999),
            ("1900-03-01T00:00:00.000000Z", -2_203_891_200_000_000),
        ] {
            assert_eq!(Timestamp::parse(text).unwrap().unix_micros(), micros, "{text}");
            assert_eq!(Timestamp::from_unix_micros(micros).to_rfc3339(), text);
        }
        assert!(Timestamp::parse("2023-02-29T00:00:00Z").is_err(), "not a leap year");
        assert!(Timestamp::parse("2026-01-19T10:30:45.Z").is_err(), "empty fraction");
        assert!(Timestamp::parse("2026-01-19T10:30:45Z ").is_err(), "trailing text");
        assert!(Timestamp::parse("2026-01-19T10:30:45+24:00").is_err(), "bad offset");
    }

    #[test]
    fn every_day_of_four_centuries_round_trips() {
        let start = Timestamp::parse("1900-01-01T00:00:00Z").unwrap().unix_micros();
        for day in 0..(146_097 + 366) {
            let micros = start + day * MICROS_PER_DAY + 45_296_789_012;
            let ts = Timestamp::from_unix_micros(micros);
            assert_eq!(Timestamp::parse(&ts.to_rfc3339()).unwrap(), ts);
        }
    }

    #[test]
    fn extremes_format() {
        assert_eq!(Timestamp::from_unix_micros(i64::MIN).to_rfc3339(), "0000-01-01T00:00:00.000000Z");
        assert_eq!(Timestamp::from_unix_micros(i64::MAX).to_rfc3339(), "9999-12-31T23:59:59.999999Z");
        assert_eq!(Timestamp::from_unix_micros(-1).to_rfc3339(), "1969-12-31T23:59:59.999999Z");
    }
}
