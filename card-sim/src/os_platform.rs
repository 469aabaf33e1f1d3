//! The platform a simulated card runs on: the operating system's random generator and the
//! system clock's date (UTC).

use std::time::{SystemTime, UNIX_EPOCH};

use openpsd_core::platform::Platform;
use openpsd_core::types::Date;

/// Randomness from the OS, today's date from the system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct OsPlatform;

impl Platform for OsPlatform {
    fn fill_random(&mut self, buf: &mut [u8]) {
        // A card without entropy must not make keys: better to stop the simulator.
        #[allow(clippy::expect_used)]
        getrandom::fill(buf).expect("the operating system's random generator failed");
    }

    fn today(&self) -> Option<Date> {
        let secs = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
        date_from_unix_days(secs / 86_400)
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
}
