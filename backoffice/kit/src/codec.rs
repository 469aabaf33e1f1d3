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

/// Days since 1970-01-01 to a calendar date (`openpsd_core::calendar`). Dates outside
/// what [`Date`] holds clamp to its range ends.
fn civil_from_days(days: u64) -> Date {
    Date::from_unix_days(days).unwrap_or(
        if days < openpsd_core::calendar::UNIX_DAYS_AT_EPOCH_2000 {
            Date {
                year: 2000,
                month: 1,
                day: 1,
            }
        } else {
            Date {
                year: 9999,
                month: 12,
                day: 31,
            }
        },
    )
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
