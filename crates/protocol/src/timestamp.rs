//! Wall-clock timestamps as they appear on the wire.
//!
//! Every message carries `timestamp`, an RFC 3339 UTC string with exactly six fractional
//! digits (`2026-01-19T10:30:45.123456Z`), as the systems tidewire replaces sent them.
//! The protocol crate has no clock: drivers read the time and hand a [`Timestamp`] in.
//! Inside, a timestamp is microseconds since the Unix epoch, so it compares and
//! subtracts cheaply (latency measurements do exactly that).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::OffsetDateTime;

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

const WIRE_FORMAT: &[time::format_description::BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");

/// Years outside 0..=9999 cannot be written in RFC 3339.
const MIN_MICROS: i64 = -62_167_219_200_000_000; // 0000-01-01T00:00:00Z
const MAX_MICROS: i64 = 253_402_300_799_999_999; // 9999-12-31T23:59:59.999999Z

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
        let error = || TimestampError { input: input.chars().take(64).collect() };
        let parsed = OffsetDateTime::parse(input, &Rfc3339).map_err(|_| error())?;
        let micros = parsed.unix_timestamp_nanos().div_euclid(1000);
        let micros = i64::try_from(micros).map_err(|_| error())?;
        if !(MIN_MICROS..=MAX_MICROS).contains(&micros) {
            return Err(error());
        }
        Ok(Timestamp { micros })
    }

    /// The wire form: `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
    pub fn to_rfc3339(self) -> String {
        let nanos = i128::from(self.micros) * 1000;
        // In range by construction; the fallback only guards against a time crate change.
        OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .ok()
            .and_then(|t| t.format(WIRE_FORMAT).ok())
            .unwrap_or_else(|| "1970-01-01T00:00:00.000000Z".to_owned())
    }

    /// The calendar parts (year, month, day, hour, minute, second) in UTC, for ids
    /// and file names derived from a time.
    pub fn civil(self) -> (i32, u8, u8, u8, u8, u8) {
        let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.micros) * 1000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        (t.year(), t.month() as u8, t.day(), t.hour(), t.minute(), t.second())
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
    fn extremes_format() {
        assert_eq!(Timestamp::from_unix_micros(i64::MIN).to_rfc3339(), "0000-01-01T00:00:00.000000Z");
        assert_eq!(Timestamp::from_unix_micros(i64::MAX).to_rfc3339(), "9999-12-31T23:59:59.999999Z");
        assert_eq!(Timestamp::from_unix_micros(-1).to_rfc3339(), "1969-12-31T23:59:59.999999Z");
    }
}
