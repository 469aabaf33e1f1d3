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
                Date::from_unix_seconds(secs)
            }
            Clock::Fixed(d) => Some(d),
            Clock::None => None,
        }
    }

    /// The system time; a fixed date is noon UTC of that day (reproducible scripts), so
    /// its postmarks all carry the same time and never go back.
    fn now(&self) -> Option<u64> {
        match self.clock {
            Clock::System => Some(SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs()),
            Clock::Fixed(d) => Some(
                u64::from(d.day_number())
                    .checked_add(UNIX_DAYS_2000)?
                    .checked_mul(86_400)?
                    .checked_add(43_200)?,
            ),
            Clock::None => None,
        }
    }
}

/// Days from 1970-01-01 to 2000-01-01 ([`Date::day_number`] counts from the latter).
const UNIX_DAYS_2000: u64 = 10_957;

#[cfg(test)]
mod tests {
    use super::*;

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
