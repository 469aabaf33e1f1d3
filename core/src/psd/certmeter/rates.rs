//! The rate table (seed 004, step 257): what each paid service of the certificate meter
//! costs, signed by the vendor so the PSD (and anyone reading its GET DATA) can check it
//! came from the manufacturer and not from the holder.
//!
//! Layout (`docs/apdu.md` § LOAD RATE TABLE):
//!
//! ```text
//! tag D1 | version 01 | table version u32 | effective date 4 | n 1 (1..=16) |
//! n × (service 1, fee u64) ‖ ECDSA P-256 signature r ‖ s 64 by the vendor key over
//! "openpsd rate table v1" ‖ everything before
//! ```
//!
//! Services are listed in strictly ascending order, so one table has one encoding. The PSD
//! keeps the table in effect and those published for later dates (up to four tables), and
//! charges a service on date D from the highest-version table whose effective date is not
//! after D, as postage meters switch rate tables on their effective date.

use alloc::vec::Vec;

use crate::crypto::{self, IndiciumKey, SIGNATURE_LEN};
use crate::types::{Amount, Date};
use crate::wire::{Malformed, OpenError, Reader, Writer};

/// First byte of a rate table.
pub const RATE_TABLE_TAG: u8 = 0xD1;
/// Layout version.
const RATE_TABLE_VERSION: u8 = 1;
/// What the vendor signs before the body.
pub const RATE_TABLE_LABEL: &[u8] = b"openpsd rate table v1";
/// Most entries a table may hold.
pub const MAX_RATES: usize = 16;

/// A paid service of the certificate meter: its code in a rate table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Service {
    /// A cryptographic postmark (Fig. 3).
    Postmark = 1,
    /// A paid validation of a postmark (Fig. 4).
    Validation = 2,
    /// A key generated inside and its certificate installed (Fig. 5).
    Certificate = 3,
    /// A signature with a signing key.
    Signature = 4,
    /// A certificate revoked (Fig. 6).
    Revocation = 5,
    /// A certificate issued by the PSD's agent CA (Fig. 3A).
    AgentCertificate = 6,
    /// A line of credit loaded (Figs. 7-8).
    CreditLine = 7,
    /// A payment certificate drawn on the line (Fig. 9).
    Payment = 8,
}

impl Service {
    /// Every service, by code.
    pub const ALL: [Service; 8] = [
        Service::Postmark,
        Service::Validation,
        Service::Certificate,
        Service::Signature,
        Service::Revocation,
        Service::AgentCertificate,
        Service::CreditLine,
        Service::Payment,
    ];

    /// The service of `code`, if any.
    pub fn from_code(code: u8) -> Option<Service> {
        Service::ALL.into_iter().find(|s| s.code() == code)
    }

    /// Its code.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Its name, as the CLI and the docs say it.
    pub fn name(self) -> &'static str {
        match self {
            Service::Postmark => "postmark",
            Service::Validation => "validation",
            Service::Certificate => "certificate",
            Service::Signature => "signature",
            Service::Revocation => "revocation",
            Service::AgentCertificate => "agent certificate",
            Service::CreditLine => "credit line",
            Service::Payment => "payment",
        }
    }
}

/// A rate table's content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateTable {
    /// Rises with every table the vendor publishes; a PSD never loads an older one.
    pub version: u32,
    /// First date of mailing the table applies to.
    pub effective: Date,
    /// Fee per service, services ascending.
    pub fees: Vec<(Service, Amount)>,
}

impl RateTable {
    fn body(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(12 + 9 * self.fees.len());
        w.put_u8(RATE_TABLE_TAG);
        w.put_u8(RATE_TABLE_VERSION);
        w.put_u32(self.version);
        self.effective.write(&mut w);
        // why: `sign` refuses more than MAX_RATES entries, so the count fits a byte.
        #[allow(clippy::cast_possible_truncation)]
        w.put_u8(self.fees.len() as u8);
        for (s, fee) in &self.fees {
            w.put_u8(s.code());
            w.put_u64(fee.0);
        }
        w
    }

    /// Whether the entries are 1 to [`MAX_RATES`], services strictly ascending.
    fn well_formed(&self) -> bool {
        (1..=MAX_RATES).contains(&self.fees.len()) && self.fees.windows(2).all(|p| p[0].0 < p[1].0)
    }

    /// The signed table (the vendor's side); `None` if the entries are not 1 to 16 with
    /// services strictly ascending.
    pub fn sign(&self, vendor: &IndiciumKey) -> Option<Vec<u8>> {
        if !self.well_formed() {
            return None;
        }
        let mut msg = self.body();
        let sig = vendor.sign_labelled(RATE_TABLE_LABEL, &msg);
        msg.extend_from_slice(&sig);
        Some(msg)
    }

    /// Decodes a signed table without checking its signature (for display).
    pub fn decode_unverified(msg: &[u8]) -> Result<RateTable, Malformed> {
        let split = msg
            .len()
            .checked_sub(SIGNATURE_LEN)
            .ok_or(Malformed::Length)?;
        let mut r = Reader::new(&msg[..split]);
        if r.u8()? != RATE_TABLE_TAG || r.u8()? != RATE_TABLE_VERSION {
            return Err(Malformed::Value);
        }
        let version = r.u32()?;
        let effective = Date::read(&mut r)?;
        let n = usize::from(r.u8()?);
        let mut fees = Vec::with_capacity(n.min(MAX_RATES));
        for _ in 0..n {
            let s = Service::from_code(r.u8()?).ok_or(Malformed::Value)?;
            fees.push((s, Amount(r.u64()?)));
        }
        r.finish()?;
        let table = RateTable {
            version,
            effective,
            fees,
        };
        if !table.well_formed() {
            return Err(Malformed::Value);
        }
        Ok(table)
    }

    /// Checks the vendor's signature, then decodes.
    pub fn open(msg: &[u8], vendor_public_key: &[u8]) -> Result<RateTable, OpenError> {
        let split = msg
            .len()
            .checked_sub(SIGNATURE_LEN)
            .ok_or(Malformed::Length)?;
        let (body, sig) = msg.split_at(split);
        if !crypto::verify_labelled(vendor_public_key, RATE_TABLE_LABEL, body, sig) {
            return Err(OpenError::Unauthentic);
        }
        Ok(Self::decode_unverified(msg)?)
    }

    /// The fee of `service`, if the table lists it.
    pub fn fee(&self, service: Service) -> Option<Amount> {
        self.fees
            .iter()
            .find(|(s, _)| *s == service)
            .map(|(_, f)| *f)
    }
}

/// Of the tables held (each with its signed bytes), the one in effect on `date`: the
/// highest version whose effective date is not after it.
pub fn in_effect(tables: &[(RateTable, Vec<u8>)], date: Date) -> Option<&RateTable> {
    tables
        .iter()
        .map(|(t, _)| t)
        .filter(|t| t.effective <= date)
        .max_by_key(|t| t.version)
}

#[cfg(feature = "certmeter")]
impl crate::psd::PsdApplet {
    /// LOAD RATE TABLE (80 70 00 00): a vendor-signed table whose version is the next after
    /// every table held (any version on a PSD holding none). The PSD keeps it with every held table that can still be in effect
    /// (the one in effect today, and later ones a newer table does not replace from their
    /// date), at most four (`6A84` beyond). The same table again answers its version and
    /// writes nothing.
    /// Reply: the table's version (u32).
    pub(in crate::psd) fn load_rate_table(
        &mut self,
        ctx: &mut crate::card::Ctx<'_>,
        data: &[u8],
        reply: &mut Vec<u8>,
    ) -> Result<(), crate::status::Status> {
        use crate::status::Status;
        let device = self.device()?;
        let table = RateTable::open(data, &device.vendor_public_key)?;
        let cm = &self.persistent.certmeter;
        if cm.tables.iter().any(|(_, b)| b.as_slice() == data) {
            reply.put_u32(table.version);
            return Ok(());
        }
        if cm.tables.iter().any(|(t, _)| t.version >= table.version) {
            return Err(Status::NotNewer);
        }
        // The vendor numbers its tables one after the other: a PSD holding tables takes the
        // next only, so a host cannot skip a dearer table by loading a later-dated one (the
        // meter checks the newest held against the one in effect, docs/rates.md).
        let newest = cm.tables.iter().map(|(t, _)| t.version).max();
        if newest.is_some_and(|n| n.checked_add(1) != Some(table.version)) {
            return Err(Status::ConditionsNotSatisfied);
        }
        let mut next = cm.clone();
        next.tables.push((table.clone(), data.to_vec()));
        // Drop every table that can never be in effect again: one a newer table replaces
        // from its own effective date or from today (whichever is later) on.
        let today = ctx.platform.today();
        let held: Vec<(u32, Date)> = next
            .tables
            .iter()
            .map(|(t, _)| (t.version, t.effective))
            .collect();
        next.tables.retain(|(t, _)| {
            let from = today.map_or(t.effective, |d| d.max(t.effective));
            !held.iter().any(|(v, eff)| *v > t.version && *eff <= from)
        });
        if next.tables.len() > super::state::MAX_TABLES {
            return Err(Status::NotEnoughMemory);
        }
        let mut txn = crate::store::Transaction::begin(ctx.store);
        txn.write(crate::records::psd::CERTMETER, next.encode());
        txn.commit()?;
        self.persistent.certmeter = next;
        reply.put_u32(table.version);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vendor() -> IndiciumKey {
        IndiciumKey::from_bytes(&[7; 32]).unwrap()
    }

    fn table(version: u32, day: u8) -> RateTable {
        RateTable {
            version,
            effective: Date::new(2026, 12, day).unwrap(),
            fees: alloc::vec![
                (Service::Postmark, Amount(10)),
                (Service::Certificate, Amount(500)),
            ],
        }
    }

    #[test]
    fn a_signed_table_opens_under_the_vendor_key_only() {
        let t = table(3, 1);
        let msg = t.sign(&vendor()).unwrap();
        assert_eq!(RateTable::open(&msg, &vendor().public_key()), Ok(t.clone()));
        let other = IndiciumKey::from_bytes(&[8; 32]).unwrap();
        assert_eq!(
            RateTable::open(&msg, &other.public_key()),
            Err(OpenError::Unauthentic)
        );
        let mut bad = msg.clone();
        bad[7] ^= 1;
        assert_eq!(
            RateTable::open(&bad, &vendor().public_key()),
            Err(OpenError::Unauthentic)
        );
        assert_eq!(t.fee(Service::Postmark), Some(Amount(10)));
        assert_eq!(t.fee(Service::Payment), None);
    }

    #[test]
    fn entries_must_ascend_and_fit() {
        let mut t = table(1, 1);
        t.fees.reverse();
        assert!(t.sign(&vendor()).is_none());
        t.fees.clear();
        assert!(t.sign(&vendor()).is_none());
    }

    #[test]
    fn the_table_in_effect_is_the_newest_already_effective() {
        let a = table(1, 1);
        let b = table(2, 10);
        let held = [
            (a.clone(), a.sign(&vendor()).unwrap()),
            (b.clone(), b.sign(&vendor()).unwrap()),
        ];
        let on = |d| in_effect(&held, Date::new(2026, 12, d).unwrap()).map(|t| t.version);
        assert_eq!(on(5), Some(1));
        assert_eq!(on(10), Some(2));
        assert_eq!(in_effect(&held, Date::new(2026, 11, 30).unwrap()), None);
    }

    #[test]
    fn no_byte_string_panics_the_decoder() {
        let msg = table(1, 1).sign(&vendor()).unwrap();
        for n in 0..msg.len() {
            let _ = RateTable::decode_unverified(&msg[..n]);
            let mut m = msg.clone();
            m[n] = m[n].wrapping_add(1);
            let _ = RateTable::decode_unverified(&m);
        }
    }
}
