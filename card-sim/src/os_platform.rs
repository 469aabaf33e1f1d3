//! The platform a simulated card runs on: the operating system's random generator and a
//! clock — the system's date (UTC), a fixed date (reproducible scripts), or none.

use std::time::{SystemTime, UNIX_EPOCH};

use openpsd_core::platform::Platform;
use openpsd_core::types::Date;

/// Where the card's idea of today comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Clock {
    /// The system clock's date in UTC.
    #[default]
    System,
    /// Always this date (for scripts whose indicia carry fixed dates).
    Fixed(Date),
    /// No clock: the card checks dates only against the last one it used.
    None,
}

impl std::str::FromStr for Clock {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "system" => Ok(Clock::System),
            "none" => Ok(Clock::None),
            date => parse_date(date).map(Clock::Fixed),
        }
    }
}

/// Parses `YYYY-MM-DD`.
pub fn parse_date(s: &str) -> Result<Date, String> {
    s.parse()
        .map_err(|_| format!("'{s}': expected system, none or a date YYYY-MM-DD (2000 or later)"))
}

/// Randomness from the OS, today's date from a [`Clock`].
#[derive(Clone, Copy, Debug, Default)]
pub struct OsPlatform {
    /// The clock.
    pub clock: Clock,
}

impl OsPlatform {
    /// A platform with the given clock.
    pub fn new(clock: Clock) -> Self {
        Self { clock }
    }
}

impl Platform for OsPlatform {
    fn fill_random(&mut self, buf: &mut [u8]) {
        // A card without entropy must not make keys: better to stop the simulator.
        #[allow(clippy::expect_used)]
        getrandom::fill(buf).expect("the operating system's random generator failed");
    }

    fn today(&self) -> Option<Date> {
        match self.clock {
            Clock::System => {
                let secs = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
                date_from_unix_days(secs / 86_400)
            }
            Clock::Fixed(d) => Some(d),
            Clock::None => None,
        }
    }
}

/// The civil (proleptic Gregorian) date of a day count since 1970-01-01
/// (H. Hinnant's `civil_from_days`).
pub fn date_from_unix_days(days: u64) -> Option<Date> {
    let z = i64::try_from(days).ok()? + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = yoe + era * 400 + i64::from(month <= 2);
    Date::new(u16::try_from(year).ok()?, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_days_to_dates() {
        assert_eq!(date_from_unix_days(10_957), Date::new(2000, 1, 1));
        assert_eq!(date_from_unix_days(11_016), Date::new(2000, 2, 29));
        assert_eq!(date_from_unix_days(20_413), Date::new(2025, 11, 21));
        assert_eq!(
            date_from_unix_days(0),
            None,
            "1970 is before the PSD's epoch"
        );
    }

    #[test]
    fn day_numbers_round_trip() {
        for d in (10_957..10_957 + 3_000).step_by(17) {
            let date = date_from_unix_days(d).unwrap();
            assert_eq!(u64::from(date.day_number()), d - 10_957, "{date}");
        }
    }

    #[test]
    fn clocks_parse() {
        assert_eq!("none".parse::<Clock>(), Ok(Clock::None));
        assert_eq!(
            "2026-11-21".parse::<Clock>(),
            Ok(Clock::Fixed(Date::new(2026, 11, 21).unwrap()))
        );
        for bad in ["2026-13-01", "26-1-1", "tomorrow", "2026-11", "1999-12-31"] {
            assert!(bad.parse::<Clock>().is_err(), "{bad}");
        }
    }
}
