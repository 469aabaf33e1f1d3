//! Domain types: money, counters, identities, dates and postal codes.
//!
//! Each carries its meaning so a piece count can never be added to an amount, and each
//! arithmetic step that could overflow is `checked`.

use core::fmt;

use crate::wire::{Malformed, Reader, Writer};
use alloc::vec::Vec;

/// Money in minor currency units (cents). Registers and postage are `Amount`s.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Amount(pub u64);

impl Amount {
    /// Zero.
    pub const ZERO: Amount = Amount(0);
    /// `self + other`, or `None` on overflow.
    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        self.0.checked_add(other.0).map(Amount)
    }
    /// `self - other`, or `None` if `other` is larger.
    pub fn checked_sub(self, other: Amount) -> Option<Amount> {
        self.0.checked_sub(other.0).map(Amount)
    }
    /// Minor units.
    pub const fn minor(self) -> u64 {
        self.0
    }
}

/// Why text is not an amount.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AmountParseError;

impl fmt::Display for AmountParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an amount is currency units with at most two decimals, e.g. 25.00")
    }
}

impl core::error::Error for AmountParseError {}

impl core::str::FromStr for Amount {
    type Err = AmountParseError;

    /// Currency units with at most two decimals ("25", "25.5", "25.00"): minor units.
    fn from_str(text: &str) -> Result<Amount, AmountParseError> {
        let (units, cents) = match text.split_once('.') {
            Some((u, c)) if !c.is_empty() && c.len() <= 2 => (u, c),
            None => (text, "0"),
            _ => return Err(AmountParseError),
        };
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(units) || !digits(cents) {
            return Err(AmountParseError);
        }
        let cents: u64 = cents.parse().map_err(|_| AmountParseError)?;
        let cents = if text.split_once('.').is_some_and(|(_, c)| c.len() == 1) {
            cents * 10
        } else {
            cents
        };
        units
            .parse::<u64>()
            .ok()
            .and_then(|u| u.checked_mul(100))
            .and_then(|u| u.checked_add(cents))
            .map(Amount)
            .ok_or(AmountParseError)
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.0 / 100, self.0 % 100)
    }
}

/// Number of mail pieces franked on a register set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PieceCount(pub u32);

impl PieceCount {
    /// The next count, or `None` at the top (a stuck counter, never a wrapped one).
    pub fn checked_next(self) -> Option<PieceCount> {
        self.0.checked_add(1).map(PieceCount)
    }
}

/// Number of refills applied to a register set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RefillCount(pub u32);

impl RefillCount {
    /// The next count, or `None` at the top.
    pub fn checked_next(self) -> Option<RefillCount> {
        self.0.checked_add(1).map(RefillCount)
    }
}

/// The device's serial number, unique per PSD (8 bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceId(pub [u8; 8]);

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02X}"))
    }
}

/// A meter license number granted by the postal authority.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LicenseId(pub u32);

impl fmt::Display for LicenseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A purse card's serial number (8 bytes), unique within its scheme.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CardId(pub [u8; 8]);

impl fmt::Display for CardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02X}"))
    }
}

/// The value-transfer scheme a PSD and a purse card belong to: only devices of the same
/// scheme recognise each other (seed 002, Fig. 8 block 111).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SchemeId(pub u32);

/// A merchant terminal's identifier (8 bytes), named in every purchase the purse signs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TerminalId(pub [u8; 8]);

impl fmt::Display for TerminalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02X}"))
    }
}

/// A device's count of value transfers (the PSD counts transfers started, the purse
/// transfers credited); part of each device's personality, so it enters every session key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TransferCount(pub u32);

impl TransferCount {
    /// The next count, or `None` at the top (the transfer function then stays stuck).
    pub fn checked_next(self) -> Option<TransferCount> {
        self.0.checked_add(1).map(TransferCount)
    }
}

/// Which register set of the device (0-based slot; APDU P2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RegisterSetIndex(pub u8);

/// Identifies the indicium signing key: the first 4 bytes of SHA-256 of its SEC1 point.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct KeyId(pub [u8; 4]);

/// Rate category (service / product code) of a mail piece.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RateCategory(pub u16);

/// A host's identifier for one indicium request; a retry with the same ID returns the
/// same indicium instead of debiting twice.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TransactionId(pub [u8; 8]);

/// A calendar date of mailing. Encoded as year (2 bytes), month, day, so that byte order
/// is date order. Fields are public for reading; build dates with [`Date::new`] (or parse
/// them), which refuses impossible ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    /// Year, e.g. 2026.
    pub year: u16,
    /// Month 1-12.
    pub month: u8,
    /// Day 1-31 (as the month allows).
    pub day: u8,
}

impl Date {
    /// A valid Gregorian date between 2000-01-01 and 9999-12-31, or `None`.
    pub fn new(year: u16, month: u8, day: u8) -> Option<Date> {
        if !(2000..=9999).contains(&year) || !(1..=12).contains(&month) || day == 0 {
            return None;
        }
        let leap =
            (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400);
        let days = match month {
            2 if leap => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        (day <= days).then_some(Date { year, month, day })
    }

    /// Days since 2000-01-01 (for "how far ahead" checks).
    pub fn day_number(self) -> u32 {
        // Civil-from-days inverse (H. Hinnant's algorithm), shifted to 2000-01-01 = 0.
        // Saturating: a `Date` built field by field (not through `new`) must not panic.
        let y = u32::from(self.year).saturating_sub(u32::from(self.month <= 2));
        let era = y / 400;
        let yoe = y - era * 400;
        let m = u32::from(self.month);
        let mp = if m > 2 { m - 3 } else { m + 9 };
        let doy = ((153 * mp + 2) / 5 + u32::from(self.day)).saturating_sub(1);
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        (era * 146_097 + doe).saturating_sub(730_425)
    }

    /// Reads the 4-byte encoding, refusing impossible dates.
    pub fn read(r: &mut Reader<'_>) -> Result<Date, Malformed> {
        let year = r.u16()?;
        let month = r.u8()?;
        let day = r.u8()?;
        Date::new(year, month, day).ok_or(Malformed::Value)
    }

    /// Appends the 4-byte encoding.
    pub fn write(self, w: &mut Vec<u8>) {
        w.put_u16(self.year);
        w.put_u8(self.month);
        w.put_u8(self.day);
    }
}

impl core::str::FromStr for Date {
    type Err = Malformed;

    /// `YYYY-MM-DD`.
    fn from_str(s: &str) -> Result<Date, Malformed> {
        let mut parts = s.split('-');
        let mut next = || {
            parts
                .next()
                .and_then(|p| p.parse::<u16>().ok())
                .ok_or(Malformed::Value)
        };
        let (y, m, d) = (next()?, next()?, next()?);
        if parts.next().is_some() {
            return Err(Malformed::Value);
        }
        let narrow = |v: u16| u8::try_from(v).map_err(|_| Malformed::Value);
        Date::new(y, narrow(m)?, narrow(d)?).ok_or(Malformed::Value)
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// A postal code: 1 to 10 characters of `A-Z`, `0-9`, space or hyphen.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PostalCode {
    len: u8,
    bytes: [u8; PostalCode::MAX],
}

impl PostalCode {
    /// Longest postal code accepted.
    pub const MAX: usize = 10;

    /// A postal code from its characters, or `None` if empty, too long or not allowed.
    pub fn new(code: &[u8]) -> Option<PostalCode> {
        if code.is_empty() || code.len() > Self::MAX {
            return None;
        }
        if !code
            .iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == b' ' || *c == b'-')
        {
            return None;
        }
        let mut bytes = [0u8; Self::MAX];
        bytes[..code.len()].copy_from_slice(code);
        Some(PostalCode {
            // In range: the length was checked against MAX above.
            len: u8::try_from(code.len()).ok()?,
            bytes,
        })
    }

    /// The characters.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len).min(Self::MAX)]
    }

    /// Reads a length byte and the characters.
    pub fn read(r: &mut Reader<'_>) -> Result<PostalCode, Malformed> {
        PostalCode::new(r.short_bytes()?).ok_or(Malformed::Value)
    }

    /// Appends a length byte and the characters.
    pub fn write(&self, w: &mut Vec<u8>) {
        w.put_short_bytes(self.as_bytes());
    }
}

impl fmt::Display for PostalCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only ASCII is ever stored.
        self.as_bytes()
            .iter()
            .try_for_each(|&c| write!(f, "{}", c as char))
    }
}

impl fmt::Debug for PostalCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PostalCode({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_parse() {
        assert_eq!("25.00".parse(), Ok(Amount(2500)));
        assert_eq!("25.5".parse(), Ok(Amount(2550)));
        assert_eq!("7".parse(), Ok(Amount(700)));
        assert_eq!("0.05".parse(), Ok(Amount(5)));
        for bad in [
            "",
            "1.234",
            "-1",
            "1,00",
            ".5",
            "5.",
            "x",
            "184467440737095517",
        ] {
            assert!(bad.parse::<Amount>().is_err(), "{bad}");
        }
    }

    #[test]
    fn dates_parse() {
        assert_eq!(
            "2026-11-21".parse(),
            Ok(Date {
                year: 2026,
                month: 11,
                day: 21
            })
        );
        for bad in [
            "2026-13-01",
            "2026-02-30",
            "1999-12-31",
            "2026-11",
            "2026-11-21-1",
            "x",
        ] {
            assert!(bad.parse::<Date>().is_err(), "{bad}");
        }
    }
}
