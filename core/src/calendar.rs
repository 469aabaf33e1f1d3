//! Civil dates from a Unix time, for hosts that read a clock (core itself reads none): the
//! card simulator's platform, the `openpsd` CLI and the back office all turn the system
//! time into a [`Date`] here, in one place.

use crate::types::Date;

/// Day 0 of [`Date::day_number`] (2000-01-01) as a day count since 1970-01-01.
pub const UNIX_DAYS_AT_EPOCH_2000: u64 = 10_957;

impl Date {
    /// The civil (proleptic Gregorian) date of a day count since 1970-01-01 (H. Hinnant's
    /// `civil_from_days`); `None` before 2000 or past the year 65535.
    pub fn from_unix_days(days: u64) -> Option<Date> {
        let z = i64::try_from(days).ok()?.checked_add(719_468)?;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = u8::try_from(doy - (153 * mp + 2) / 5 + 1).ok()?;
        let month = u8::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).ok()?;
        let year = yoe + era * 400 + i64::from(month <= 2);
        Date::new(u16::try_from(year).ok()?, month, day)
    }

    /// The UTC date of a Unix time in seconds.
    pub fn from_unix_seconds(secs: u64) -> Option<Date> {
        Date::from_unix_days(secs / 86_400)
    }

    /// The date `days` after this one (`None` past the calendar's end).
    pub fn plus_days(self, days: u32) -> Option<Date> {
        let n = u64::from(self.day_number()).checked_add(u64::from(days))?;
        Date::from_unix_days(n + UNIX_DAYS_AT_EPOCH_2000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_days_to_dates() {
        assert_eq!(Date::from_unix_days(10_957), Date::new(2000, 1, 1));
        assert_eq!(Date::from_unix_days(11_016), Date::new(2000, 2, 29));
        assert_eq!(Date::from_unix_days(20_413), Date::new(2025, 11, 21));
        assert_eq!(
            Date::from_unix_days(0),
            None,
            "1970 is before the PSD's epoch"
        );
        assert_eq!(Date::from_unix_days(u64::MAX), None);
        assert_eq!(
            Date::from_unix_seconds(20_413 * 86_400 + 86_399),
            Date::new(2025, 11, 21)
        );
    }

    #[test]
    fn day_numbers_round_trip() {
        for d in (10_957..10_957 + 3_000).step_by(17) {
            let date = Date::from_unix_days(d).unwrap();
            assert_eq!(u64::from(date.day_number()), d - 10_957, "{date}");
        }
        let d = Date::new(2026, 2, 27).unwrap();
        assert_eq!(d.plus_days(2), Date::new(2026, 3, 1));
    }
}
