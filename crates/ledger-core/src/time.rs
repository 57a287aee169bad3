//! Time as the ledger sees it: milliseconds since the Unix epoch, and a clock
//! that callers inject so tests can move time by hand.
//!
//! The ledger never reads the system clock inside a decision: every operation
//! takes `now` from its caller. That keeps rate windows and retention testable
//! without sleeping, and keeps every process's idea of "now" explicit.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A point in time, in whole milliseconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(i64);

/// Why a string could not be read as an RFC 3339 timestamp.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an RFC 3339 timestamp: {excerpt:?} ({problem})")]
pub struct TimestampError {
    excerpt: String,
    problem: &'static str,
}

impl Timestamp {
    /// The Unix epoch.
    pub const EPOCH: Timestamp = Timestamp(0);

    /// Wraps a count of milliseconds since the epoch.
    pub const fn from_unix_millis(millis: i64) -> Self {
        Self(millis)
    }

    /// Milliseconds since the epoch.
    pub const fn as_unix_millis(self) -> i64 {
        self.0
    }

    /// A system time, to the millisecond; one before the epoch is the
    /// epoch.
    pub fn from_system_time(at: std::time::SystemTime) -> Self {
        let millis = at
            .duration_since(std::time::UNIX_EPOCH)
            .map(duration_millis)
            .unwrap_or(0);
        Self(millis)
    }

    /// This instant as a system time; one before the epoch is the epoch.
    pub fn to_system_time(self) -> std::time::SystemTime {
        std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(self.0).unwrap_or(0))
    }

    /// This instant moved forward by `d`, saturating at the far future.
    pub fn saturating_add(self, d: Duration) -> Self {
        Self(self.0.saturating_add(duration_millis(d)))
    }

    /// This instant moved back by `d`, saturating at the far past.
    pub fn saturating_sub(self, d: Duration) -> Self {
        Self(self.0.saturating_sub(duration_millis(d)))
    }

    /// How long after `earlier` this instant is; zero when it is not later.
    pub fn duration_since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }

    /// Parses RFC 3339 (`2026-11-28T23:37:01.324491+05:30`, `…Z`). A value
    /// without an offset (Python's naive `isoformat()`) is read as UTC, since
    /// that is what the reference system wrote. Fractions finer than a
    /// millisecond are truncated.
    pub fn parse_rfc3339(text: &str) -> Result<Self, TimestampError> {
        parse_rfc3339(text).map_err(|problem| TimestampError {
            excerpt: text.chars().take(40).collect(),
            problem,
        })
    }
}

fn duration_millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC with milliseconds: `2026-11-28T18:02:28.015Z`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.div_euclid(1000);
        let millis = self.0.rem_euclid(1000);
        let days = secs.div_euclid(86_400);
        let of_day = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
            of_day / 3600,
            (of_day / 60) % 60,
            of_day % 60
        )
    }
}

// Howard Hinnant's `civil_from_days` / `days_from_civil`: exact for the whole
// proleptic Gregorian calendar, and small enough not to need a date crate.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn parse_rfc3339(text: &str) -> Result<Timestamp, &'static str> {
    let b = text.trim().as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Result<i64, &'static str> {
        let part = b.get(range).ok_or("too short")?;
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return Err("expected digits");
        }
        Ok(part
            .iter()
            .fold(0i64, |acc, c| acc * 10 + i64::from(c - b'0')))
    };
    if b.len() < 19 {
        return Err("too short");
    }
    let year = digits(0..4)?;
    let month = digits(5..7)?;
    let day = digits(8..10)?;
    let hour = digits(11..13)?;
    let minute = digits(14..16)?;
    let second = digits(17..19)?;
    let byte = |i: usize| b.get(i).copied();
    if byte(4) != Some(b'-')
        || byte(7) != Some(b'-')
        || !matches!(byte(10), Some(b'T' | b't' | b' '))
    {
        return Err("expected YYYY-MM-DDTHH:MM:SS");
    }
    if byte(13) != Some(b':') || byte(16) != Some(b':') {
        return Err("expected HH:MM:SS");
    }
    if !(1..=12).contains(&month) || day < 1 || hour > 23 || minute > 59 || second > 60 {
        return Err("a field is out of range");
    }
    let days_in_month = match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if day > days_in_month {
        return Err("day is out of range for the month");
    }
    let mut at = 19;
    let mut millis = 0i64;
    if b.get(at) == Some(&b'.') {
        at += 1;
        let start = at;
        while b.get(at).is_some_and(u8::is_ascii_digit) {
            at += 1;
        }
        if at == start {
            return Err("empty fraction");
        }
        // Milliseconds: the first three digits, finer ones truncated.
        for (c, scale) in b
            .iter()
            .skip(start)
            .take((at - start).min(3))
            .zip([100, 10, 1])
        {
            millis += i64::from(c - b'0') * scale;
        }
    }
    let offset_secs = match b.get(at) {
        None => 0,
        Some(b'Z' | b'z') if at + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if b.len() == at + 6 && byte(at + 3) == Some(b':') => {
            let h = digits(at + 1..at + 3)?;
            let m = digits(at + 4..at + 6)?;
            if h > 23 || m > 59 {
                return Err("offset is out of range");
            }
            let s = h * 3600 + m * 60;
            if *sign == b'+' { s } else { -s }
        }
        Some(_) => return Err("unexpected characters after the time"),
    };
    let days = days_from_civil(year, month as u32, day as u32);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second.min(59) - offset_secs;
    Ok(Timestamp(secs * 1000 + millis))
}

/// Where "now" comes from. Operations take `now` explicitly; a clock is for
/// the places that cannot be handed one, such as a guard finishing on drop.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_system_time(std::time::SystemTime::now())
    }
}

/// A clock that only moves when told to; clones share the same time.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: Timestamp) -> Self {
        Self(Arc::new(AtomicI64::new(start.0)))
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        self.0.fetch_add(duration_millis(d), Ordering::SeqCst);
    }

    /// Sets the clock to `at`.
    pub fn set(&self, at: Timestamp) {
        self.0.store(at.0, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_times_convert_to_the_millisecond_and_never_before_the_epoch() {
        let at = std::time::UNIX_EPOCH + Duration::from_micros(1_764_000_000_123_456);
        let stamp = Timestamp::from_system_time(at);
        assert_eq!(stamp.as_unix_millis(), 1_764_000_000_123);
        assert_eq!(
            stamp.to_system_time(),
            std::time::UNIX_EPOCH + Duration::from_millis(1_764_000_000_123)
        );
        let before = std::time::UNIX_EPOCH - Duration::from_secs(5);
        assert_eq!(Timestamp::from_system_time(before), Timestamp::EPOCH);
        assert_eq!(
            Timestamp::from_unix_millis(-5).to_system_time(),
            std::time::UNIX_EPOCH
        );
    }

    #[test]
    fn formats_and_parses_round_trip() {
        let t = Timestamp::parse_rfc3339("2026-11-28T18:02:28.015451Z").unwrap();
        assert_eq!(t.to_string(), "2026-11-28T18:02:28.015Z");
        assert_eq!(Timestamp::parse_rfc3339(&t.to_string()).unwrap(), t);
        assert_eq!(Timestamp::EPOCH.to_string(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            Timestamp::from_unix_millis(-1).to_string(),
            "1969-12-31T23:59:59.999Z"
        );
    }

    #[test]
    fn offsets_are_applied() {
        let utc = Timestamp::parse_rfc3339("2026-11-28T18:07:01.324Z").unwrap();
        let kolkata = Timestamp::parse_rfc3339("2026-11-28T23:37:01.324491+05:30").unwrap();
        let west = Timestamp::parse_rfc3339("2026-11-28T13:07:01.324-05:00").unwrap();
        assert_eq!(utc, kolkata);
        assert_eq!(utc, west);
    }

    #[test]
    fn naive_values_are_utc() {
        let naive = Timestamp::parse_rfc3339("2026-05-20T09:15:02.118204").unwrap();
        let z = Timestamp::parse_rfc3339("2026-05-20T09:15:02.118Z").unwrap();
        assert_eq!(naive, z);
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "yesterday",
            "2026-13-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "2026-01-01T00:00:00+5",
            "2026-01-01T00:00:00Zjunk",
            "2026-01-01X00:00:00Z",
        ] {
            assert!(
                Timestamp::parse_rfc3339(bad).is_err(),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(Timestamp::from_unix_millis(1000));
        let shared = clock.clone();
        assert_eq!(clock.now().as_unix_millis(), 1000);
        shared.advance(Duration::from_secs(2));
        assert_eq!(clock.now().as_unix_millis(), 3000);
    }

    #[test]
    fn arithmetic_saturates() {
        let t = Timestamp::from_unix_millis(i64::MAX - 1);
        assert_eq!(
            t.saturating_add(Duration::from_secs(10)).as_unix_millis(),
            i64::MAX
        );
        let a = Timestamp::from_unix_millis(5000);
        assert_eq!(
            a.duration_since(Timestamp::from_unix_millis(6000)),
            Duration::ZERO
        );
    }
}
