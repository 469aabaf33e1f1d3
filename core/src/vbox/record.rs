//! The meter record: one mailer's logical meter, kept by the data center's database and
//! trusted only when its MAC and its Merkle path both hold (docs/virtual-meter.md §2).
//!
//! Layout (version 1, big-endian, MAC last):
//!
//! ```text
//! kind 01 | version 01 | meter ID 8 | slot 4 | mailer ID 16 | license 4 | origin 1+n |
//! AR 8 | DR 8 | control sum 8 | pieces 4 | refills 4 | update counter 8 |
//! last: flag 1 [txn 8 | DR then 8 | indicium digest 32] | last date: flag 1 [date 4] |
//! max postage 8 | max DR 8 | public key 65 | wrapped key 48 | status 1 ‖ CMAC 16
//! ```
//!
//! The CMAC is AES-256-CMAC under the box's `K_rec` over every byte before it. The slot is
//! inside, so a record moved to another slot is refused even before its path is checked.

use alloc::vec::Vec;

use crate::crypto::{MAC_LEN, PUBLIC_KEY_LEN};
use crate::types::{
    Amount, Date, DeviceId, LicenseId, PieceCount, PostalCode, RefillCount, TransactionId,
};
use crate::wire::{Malformed, Reader, Writer};

use super::keys::{Cmac256, WRAPPED_KEY_LEN};

/// First byte of a meter record.
pub const KIND_METER: u8 = 0x01;
/// Layout version written today.
pub const METER_RECORD_VERSION: u8 = 1;
/// Length of a mailer ID.
pub const MAILER_ID_LEN: usize = 16;
/// Status byte: the meter prints.
pub const STATUS_ACTIVE: u8 = 0;
/// Status byte: the meter is suspended (no command sets it yet; a record carrying it is
/// refused by ISSUE INDICIUM).
pub const STATUS_SUSPENDED: u8 = 1;
/// Shortest and longest encoded record (origin of 1 and of 10 characters, no optional
/// field / both optional fields), MAC included.
pub const MIN_LEN: usize =
    2 + 8 + 4 + 16 + 4 + 2 + 8 * 3 + 4 + 4 + 8 + 1 + 1 + 8 + 8 + 65 + 48 + 1 + 16;
/// See [`MIN_LEN`].
pub const MAX_LEN: usize = MIN_LEN + 9 + 48 + 4;

/// The last indicium a meter issued: the client's transaction ID and the SHA-256 of the
/// signed indicium bytes (a retry with the same ID gets the same indicium, free).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LastIndicium {
    /// Client transaction ID.
    pub transaction: TransactionId,
    /// DR the indicium shows (a refill since raises the record's DR, not the indicium's;
    /// AR and the piece count only move with the next indicium, which replaces this).
    pub dr: Amount,
    /// SHA-256 of the indicium's signed bytes (without the signature).
    pub digest: [u8; 32],
}

/// A meter record's fields (without the MAC).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeterRecord {
    /// The meter ID: the indicium's device ID.
    pub meter: DeviceId,
    /// The slot the record lives at (shard = slot >> depth).
    pub slot: u32,
    /// The mailer who owns the meter.
    pub mailer: [u8; MAILER_ID_LEN],
    /// The postal license.
    pub license: LicenseId,
    /// Origin postal code of the license.
    pub origin: PostalCode,
    /// Ascending register: postage used.
    pub ar: Amount,
    /// Descending register: postage available.
    pub dr: Amount,
    /// AR + DR: all value ever credited.
    pub control_sum: Amount,
    /// Pieces printed.
    pub pieces: PieceCount,
    /// Refills applied.
    pub refills: RefillCount,
    /// The seed's update counter: +1 at every change of the record.
    pub update_counter: u64,
    /// The last indicium issued, if any.
    pub last: Option<LastIndicium>,
    /// The last date of mailing used, if any (dates never go back).
    pub last_date: Option<Date>,
    /// Per-piece limit.
    pub max_postage: Amount,
    /// Most the descending register may hold.
    pub max_dr: Amount,
    /// The meter's indicium public key (SEC1 uncompressed).
    pub public_key: [u8; PUBLIC_KEY_LEN],
    /// Its private key, sealed under the meter's wrap key.
    pub wrapped_key: [u8; WRAPPED_KEY_LEN],
    /// [`STATUS_ACTIVE`] or [`STATUS_SUSPENDED`].
    pub status: u8,
}

impl MeterRecord {
    /// The fields' bytes, without the MAC.
    pub fn encode_body(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(MAX_LEN);
        w.put_u8(KIND_METER);
        w.put_u8(METER_RECORD_VERSION);
        w.extend_from_slice(&self.meter.0);
        w.put_u32(self.slot);
        w.extend_from_slice(&self.mailer);
        w.put_u32(self.license.0);
        self.origin.write(&mut w);
        w.put_u64(self.ar.0);
        w.put_u64(self.dr.0);
        w.put_u64(self.control_sum.0);
        w.put_u32(self.pieces.0);
        w.put_u32(self.refills.0);
        w.put_u64(self.update_counter);
        match &self.last {
            None => w.put_u8(0),
            Some(l) => {
                w.put_u8(1);
                w.extend_from_slice(&l.transaction.0);
                w.put_u64(l.dr.0);
                w.extend_from_slice(&l.digest);
            }
        }
        match self.last_date {
            None => w.put_u8(0),
            Some(d) => {
                w.put_u8(1);
                d.write(&mut w);
            }
        }
        w.put_u64(self.max_postage.0);
        w.put_u64(self.max_dr.0);
        w.extend_from_slice(&self.public_key);
        w.extend_from_slice(&self.wrapped_key);
        w.put_u8(self.status);
        w
    }

    /// The record as stored: fields ‖ CMAC(K_rec).
    pub fn seal(&self, k_rec: &Cmac256) -> Vec<u8> {
        let mut w = self.encode_body();
        let tag = k_rec.mac(&[&w]);
        w.extend_from_slice(&tag);
        w
    }

    /// Parses the fields of a record without checking its MAC (the host's view; the box
    /// uses [`MeterRecord::open`]). Never panics.
    pub fn decode(bytes: &[u8]) -> Result<Self, Malformed> {
        let split = bytes.len().checked_sub(MAC_LEN).ok_or(Malformed::Length)?;
        Self::decode_body(&bytes[..split])
    }

    fn decode_body(body: &[u8]) -> Result<Self, Malformed> {
        let mut r = Reader::new(body);
        if r.u8()? != KIND_METER || r.u8()? != METER_RECORD_VERSION {
            return Err(Malformed::Value);
        }
        let meter = DeviceId(r.array()?);
        let slot = r.u32()?;
        let mailer = r.array()?;
        let license = LicenseId(r.u32()?);
        let origin = PostalCode::read(&mut r)?;
        let ar = Amount(r.u64()?);
        let dr = Amount(r.u64()?);
        let control_sum = Amount(r.u64()?);
        let pieces = PieceCount(r.u32()?);
        let refills = RefillCount(r.u32()?);
        let update_counter = r.u64()?;
        let last = match r.u8()? {
            0 => None,
            1 => Some(LastIndicium {
                transaction: TransactionId(r.array()?),
                dr: Amount(r.u64()?),
                digest: r.array()?,
            }),
            _ => return Err(Malformed::Value),
        };
        let last_date = match r.u8()? {
            0 => None,
            1 => Some(Date::read(&mut r)?),
            _ => return Err(Malformed::Value),
        };
        let rec = MeterRecord {
            meter,
            slot,
            mailer,
            license,
            origin,
            ar,
            dr,
            control_sum,
            pieces,
            refills,
            update_counter,
            last,
            last_date,
            max_postage: Amount(r.u64()?),
            max_dr: Amount(r.u64()?),
            public_key: r.array()?,
            wrapped_key: r.array()?,
            status: r.u8()?,
        };
        r.finish()?;
        if rec.status > STATUS_SUSPENDED || rec.ar.checked_add(rec.dr) != Some(rec.control_sum) {
            return Err(Malformed::Value);
        }
        Ok(rec)
    }

    /// Checks the MAC under `k_rec`, then parses. `Err(None)`: the MAC does not hold (or
    /// the bytes are too short to carry one): nothing in them may be believed.
    /// `Err(Some(_))`: the MAC holds but the layout does not (a box bug, never a host's).
    pub fn open(bytes: &[u8], k_rec: &Cmac256) -> Result<Self, Option<Malformed>> {
        let split = bytes.len().checked_sub(MAC_LEN).ok_or(None)?;
        let (body, tag) = bytes.split_at(split);
        if !k_rec.verify(&[body], tag) {
            return Err(None);
        }
        Self::decode_body(body).map_err(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn sample() -> MeterRecord {
        MeterRecord {
            meter: DeviceId(*b"VM000001"),
            slot: 5,
            mailer: [7; 16],
            license: LicenseId(4711),
            origin: PostalCode::new(b"10115").unwrap(),
            ar: Amount(100),
            dr: Amount(900),
            control_sum: Amount(1000),
            pieces: PieceCount(1),
            refills: RefillCount(1),
            update_counter: 3,
            last: Some(LastIndicium {
                transaction: TransactionId([1; 8]),
                dr: Amount(900),
                digest: [2; 32],
            }),
            last_date: Date::new(2026, 11, 30),
            max_postage: Amount(10_000),
            max_dr: Amount(1_000_000),
            public_key: [4; 65],
            wrapped_key: [5; 48],
            status: STATUS_ACTIVE,
        }
    }

    #[test]
    fn round_trip_and_lengths() {
        let k = Cmac256::new([1; 32]);
        let rec = sample();
        let sealed = rec.seal(&k);
        assert_eq!(MeterRecord::open(&sealed, &k).unwrap(), rec);
        assert_eq!(MeterRecord::decode(&sealed).unwrap(), rec);
        assert_eq!(sealed.len(), MAX_LEN - 5, "origin of 5, not 10");
        let short = MeterRecord {
            origin: PostalCode::new(b"1").unwrap(),
            last: None,
            last_date: None,
            ..rec
        };
        assert_eq!(short.seal(&k).len(), MIN_LEN);
        assert_eq!(
            MeterRecord::open(&short.seal(&Cmac256::new([2; 32])), &k),
            Err(None)
        );
    }

    proptest! {
        /// Any byte string: no panic; a flipped bit of a sealed record breaks its MAC.
        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400), at in any::<usize>(), bit in 0u8..8) {
            let k = Cmac256::new([1; 32]);
            let _ = MeterRecord::decode(&bytes);
            let _ = MeterRecord::open(&bytes, &k);
            let mut sealed = sample().seal(&k);
            let i = at % sealed.len();
            sealed[i] ^= 1 << bit;
            prop_assert_eq!(MeterRecord::open(&sealed, &k), Err(None));
            // Truncated or extended: refused.
            let good = sample().seal(&k);
            prop_assert!(MeterRecord::open(&good[..i], &k).is_err());
        }
    }
}
