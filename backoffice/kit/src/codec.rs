//! The OS random source and the system clock's date, and (re-exported) the protocol's
//! parsers for the JSON edge: a [`BadField`] they return becomes `400 bad_request`.

use openpsd_core::platform::Platform;
use openpsd_core::types::Date;

pub use openpsd_protocol::codec::*;

/// Fills `buf` from the OS random source. Without one the service cannot make keys or
/// nonces at all, so failing loudly is the only safe answer.
pub fn random_bytes(buf: &mut [u8]) {
    #[allow(clippy::expect_used)]
    getrandom::fill(buf).expect("the OS random source failed");
}

/// `N` random bytes.
pub fn random_array<const N: usize>() -> [u8; N] {
    let mut a = [0u8; N];
    random_bytes(&mut a);
    a
}

/// The OS random source as a core [`Platform`] (for generating ECDSA keys with core's
/// rejection sampling). It has no trusted clock.
pub struct OsRandom;

impl Platform for OsRandom {
    fn fill_random(&mut self, buf: &mut [u8]) {
        random_bytes(buf);
    }
    fn today(&self) -> Option<Date> {
        None
    }
}

/// Today's date in UTC from the system clock: the date the back office accepts an audit.
pub fn today_utc() -> Date {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    civil_from_days(secs / 86_400)
}

/// Days since 1970-01-01 to a calendar date (H. Hinnant's algorithm). Dates outside what
/// [`Date`] holds clamp to its range ends.
fn civil_from_days(days: u64) -> Date {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    let clamp = Date {
        year: 2000,
        month: 1,
        day: 1,
    };
    match (u16::try_from(year), u8::try_from(month), u8::try_from(day)) {
        (Ok(y), Ok(m), Ok(d)) => Date::new(y, m, d).unwrap_or(if y < 2000 {
            clamp
        } else {
            Date {
                year: 9999,
                month: 12,
                day: 31,
            }
        }),
        _ => clamp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0).year, 2000); // 1970 clamps to the first Date
        let d = civil_from_days(20_778); // 2026-11-21
        assert_eq!((d.year, d.month, d.day), (2026, 11, 21));
        let d = civil_from_days(19_782); // 2024-02-29
        assert_eq!((d.year, d.month, d.day), (2024, 2, 29));
    }
}
