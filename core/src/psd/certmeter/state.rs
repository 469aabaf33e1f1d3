//! The certificate meter's persistent state (record `CERTMETER`, absent until the first
//! rate table, anchor or key): the rate tables and trust anchors held, the key slots, the
//! device-wide counters, and the last paid service's output so a retry returns the same
//! bytes, charged once.
//!
//! Record layout, version 1:
//!
//! ```text
//! 01 | generation u32 | postmark counter u32 | last postmark time u64 | fees due u64 |
//! tables n × (len u16 ‖ signed table) | anchors n × (signed anchor) |
//! slots n × (state 1 | purpose 1 | generation u32 | public key 65 | scalar 32 (active or
//!            pending only) | fee paid u64 | validity: 00, or 01 ‖ first day 4 ‖ last day 4 |
//!            certificate len u16 ‖ DER) |
//! last service: 00 | 01 ‖ txn 8 ‖ service 1 ‖ set 1 ‖ output len u16 ‖ output
//! ```
//! (each list is preceded by its count, one byte).
//!
//! Version 2 (revocation, seed 004 Fig. 6) is version 1 with `02` first and, at the end:
//!
//! ```text
//! last order counter u32 | last revocation: 00 | 01 ‖ SHA-256 of the order 32 ‖
//!                          confirmation (revoke.rs, fixed length)
//! ```
//!
//! Version 3 is version 2 with `03` first and each slot's validity in seconds: `00`, or
//! `01 ‖ notBefore u64 ‖ notAfter u64` (Unix seconds, the certificate's own), so no service
//! is sold in the hours of a first or last day the certificate does not cover. Versions 1
//! and 2 kept days; read, a day is taken whole (from 00:00:00 to 23:59:59 UTC), as those
//! PSDs sold services.
//!
//! The oldest version that holds the state is written (version 1 until the first
//! revocation, version 3 once a slot's validity is not whole days), so records of PSDs that
//! made no such change keep their bytes; all three are read, and a record written in a
//! newer version than its state needs is refused (one encoding per state).

use alloc::vec::Vec;

use crate::crypto::{self, IndiciumKey, PUBLIC_KEY_LEN};
use crate::store::StoreError;
use crate::types::{Amount, TransactionId};
use crate::wire::{Malformed, Reader, Writer};

use super::anchor::{Anchor, AnchorKind, ANCHOR_LEN};
use super::attestation::Purpose;
use super::rates::{RateTable, Service};

/// Record layout version before revocation.
const STATE_VERSION_1: u8 = 1;
/// Record layout version with the revocation order counter and confirmation.
const STATE_VERSION_2: u8 = 2;
/// Record layout version with validity in seconds.
const STATE_VERSION_3: u8 = 3;
/// Seconds of a day.
const DAY: u64 = 86_400;
/// Key slots a PSD has.
pub const MAX_KEY_SLOTS: usize = 4;
/// Rate tables a PSD keeps: the one in effect and up to three published for later dates.
pub const MAX_TABLES: usize = 4;
/// Longest certificate a slot holds.
pub const MAX_CERTIFICATE_LEN: usize = 1024;

/// Where a key slot is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotState {
    /// Generated inside, attested, waiting for its certificate.
    Pending = 1,
    /// Certified and paid for: the key signs for its purpose.
    Active = 2,
    /// Replaced by a newer key of its purpose, or revoked: the scalar is gone, the public
    /// key and the certificate stay for the record.
    Retired = 3,
}

/// One key slot.
#[derive(Clone, Debug)]
pub struct KeySlot {
    /// Its state.
    pub state: SlotState,
    /// What the key may be used for.
    pub purpose: Purpose,
    /// The generation counter when it was made (its attestation names it).
    pub generation: u32,
    /// The public key.
    pub public_key: [u8; PUBLIC_KEY_LEN],
    /// The private key, while pending or active; erased (in the same commit) on retirement.
    pub key: Option<IndiciumKey>,
    /// The certificate (DER), once installed.
    pub certificate: Vec<u8>,
    /// The certificate fee paid when it was installed.
    pub fee_paid: Amount,
    /// The certificate's notBefore and notAfter, Unix seconds (set at install): the key
    /// signs nothing outside them, so no fee is taken for an output no verifier would
    /// accept.
    pub valid: Option<(u64, u64)>,
}

impl KeySlot {
    /// SHA-256 of the certificate (the postmark's signingCertificateV2 names it).
    pub fn certificate_hash(&self) -> [u8; 32] {
        crypto::sha256(&self.certificate)
    }

    /// Whether the certificate covers `now` (Unix seconds).
    pub fn covers(&self, now: u64) -> bool {
        self.valid
            .is_some_and(|(from, to)| from <= now && now <= to)
    }
}

/// A validity as versions 1 and 2 kept it, whole days: `None` if it is not whole days.
fn whole_days(valid: (u64, u64)) -> Option<(crate::types::Date, crate::types::Date)> {
    let (from, to) = valid;
    let to_end = to.checked_add(1)?;
    if from % DAY != 0 || to_end % DAY != 0 || to_end <= from {
        return None;
    }
    Some((
        crate::types::Date::from_unix_seconds(from)?,
        crate::types::Date::from_unix_seconds(to)?,
    ))
}

/// A validity of whole days as Unix seconds, from the first day's start to the last's end.
fn from_days(from: crate::types::Date, to: crate::types::Date) -> Result<(u64, u64), Malformed> {
    let start = |d: crate::types::Date| {
        (u64::from(d.day_number()) + crate::calendar::UNIX_DAYS_AT_EPOCH_2000) * DAY
    };
    if to < from {
        return Err(Malformed::Value);
    }
    Ok((start(from), start(to) + DAY - 1))
}

/// The last paid service: what a retry with the same transaction ID gets again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastService {
    /// The host's transaction ID.
    pub transaction: TransactionId,
    /// Which service.
    pub service: Service,
    /// The register set charged.
    pub set: u8,
    /// The reply (a postmark: the compact postmark, signature included).
    pub output: Vec<u8>,
}

/// The last revocation order applied and the PSD's confirmation of it: what the same order
/// again gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastRevocation {
    /// SHA-256 of the signed order.
    pub order: [u8; 32],
    /// The signed confirmation (REVOKE KEY's reply).
    pub confirmation: Vec<u8>,
}

/// The certificate meter's state.
#[derive(Clone, Debug, Default)]
pub struct CertMeterState {
    /// Keys generated so far (each attestation names its number).
    pub generation: u32,
    /// Postmarks issued so far (the serial number's counter).
    pub postmarks: u32,
    /// The time of the last postmark (Unix seconds): postmark time never goes back.
    pub last_time: u64,
    /// Fees owed (a revocation the DR could not pay); paid services wait while non-zero.
    pub fees_due: Amount,
    /// The rate tables held, decoded, with their signed bytes.
    pub tables: Vec<(RateTable, Vec<u8>)>,
    /// The trust anchors held, one per kind, with their signed bytes.
    pub anchors: Vec<(Anchor, Vec<u8>)>,
    /// The key slots in use (index = slot number).
    pub slots: Vec<Option<KeySlot>>,
    /// The last paid service.
    pub last: Option<LastService>,
    /// The counter of the last revocation order applied (0: none): only higher ones apply.
    pub orders: u32,
    /// The last revocation order applied and its confirmation.
    pub last_revocation: Option<LastRevocation>,
}

impl CertMeterState {
    /// The stored last service if `transaction` names it: a retry, answered with the stored
    /// output once the caller has checked that the request is the same. The same ID for
    /// another service or another register set is `TransactionIdReused`; `None`: a new
    /// transaction.
    #[cfg(feature = "certmeter")]
    pub(crate) fn retry(
        &self,
        transaction: &TransactionId,
        service: Service,
        set: u8,
    ) -> Result<Option<&LastService>, crate::status::Status> {
        match self.last.as_ref().filter(|l| &l.transaction == transaction) {
            None => Ok(None),
            Some(l) if l.service == service && l.set == set => Ok(Some(l)),
            Some(_) => Err(crate::status::Status::TransactionIdReused),
        }
    }

    /// Loads the record (`None`: nothing yet).
    #[cfg(feature = "certmeter")]
    pub fn load(bytes: Option<Vec<u8>>) -> Result<CertMeterState, StoreError> {
        match bytes {
            None => Ok(CertMeterState::default()),
            Some(b) => {
                Self::decode(&b).map_err(|_| StoreError::Corrupt("certificate meter record"))
            }
        }
    }

    /// Loads what a PSD without the certificate meter's commands needs of the record: the
    /// fees due, which its audits report. It never writes the record, so the rest stays as
    /// it is. Why not the whole decode: the browser's module is built without the feature
    /// and the decoders (tables, anchors, slots) cost it ~2 KB gzip of its size budget.
    #[cfg(not(feature = "certmeter"))]
    pub fn load(bytes: Option<Vec<u8>>) -> Result<CertMeterState, StoreError> {
        let Some(b) = bytes else {
            return Ok(CertMeterState::default());
        };
        let mut r = Reader::new(&b);
        let fees_due = (|| {
            if !matches!(r.u8()?, STATE_VERSION_1 | STATE_VERSION_2 | STATE_VERSION_3) {
                return Err(Malformed::Value);
            }
            // All versions begin alike: generation u32, postmarks u32, last time u64, then
            // the fees due.
            r.take(16)?;
            r.u64()
        })()
        .map_err(|_| StoreError::Corrupt("certificate meter record"))?;
        Ok(CertMeterState {
            fees_due: Amount(fees_due),
            ..Default::default()
        })
    }

    /// The anchor of `kind`, if one was loaded.
    pub fn anchor(&self, kind: AnchorKind) -> Option<&Anchor> {
        self.anchors.iter().map(|(a, _)| a).find(|a| a.kind == kind)
    }

    /// The active key of `purpose`: its slot number and the slot. `9A45` if the newest key
    /// of the purpose was retired (revoked) and none is active, `9A43` if there is none.
    pub fn active(&self, purpose: Purpose) -> Result<(usize, &KeySlot), crate::status::Status> {
        let mut retired = false;
        for (i, s) in self.slots.iter().enumerate() {
            let Some(s) = s else { continue };
            if s.purpose != purpose {
                continue;
            }
            match s.state {
                SlotState::Active => return Ok((i, s)),
                SlotState::Retired => retired = true,
                SlotState::Pending => {}
            }
        }
        Err(if retired {
            crate::status::Status::KeyRevoked
        } else {
            crate::status::Status::NoKeyForPurpose
        })
    }

    /// The fee of `service` on `date` and the version of the table that sets it: `9A42`
    /// while fees are due, `9A40` if no table in effect prices the service.
    pub fn fee(
        &self,
        service: Service,
        date: crate::types::Date,
    ) -> Result<(Amount, u32), crate::status::Status> {
        if self.fees_due != Amount::ZERO {
            return Err(crate::status::Status::FeesDue);
        }
        let table =
            super::rates::in_effect(&self.tables, date).ok_or(crate::status::Status::NoRate)?;
        let fee = table.fee(service).ok_or(crate::status::Status::NoRate)?;
        Ok((fee, table.version))
    }

    /// The oldest record version that holds this state.
    fn version(&self) -> u8 {
        let seconds = self
            .slots
            .iter()
            .flatten()
            .filter_map(|s| s.valid)
            .any(|v| whole_days(v).is_none());
        if seconds {
            STATE_VERSION_3
        } else if self.orders != 0 || self.last_revocation.is_some() {
            STATE_VERSION_2
        } else {
            STATE_VERSION_1
        }
    }

    /// The record's bytes, in the oldest version that holds the state.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(256);
        let version = self.version();
        w.put_u8(version);
        w.put_u32(self.generation);
        w.put_u32(self.postmarks);
        w.put_u64(self.last_time);
        w.put_u64(self.fees_due.0);
        // why: at most MAX_TABLES / one per kind / MAX_KEY_SLOTS, kept so by the handlers.
        #[allow(clippy::cast_possible_truncation)]
        {
            w.put_u8(self.tables.len() as u8);
            for (_, bytes) in &self.tables {
                w.put_u16(bytes.len() as u16);
                w.extend_from_slice(bytes);
            }
            w.put_u8(self.anchors.len() as u8);
            for (_, bytes) in &self.anchors {
                w.extend_from_slice(bytes);
            }
            w.put_u8(self.slots.len() as u8);
            for slot in &self.slots {
                match slot {
                    None => w.put_u8(0),
                    Some(s) => {
                        w.put_u8(s.state as u8);
                        w.put_u8(s.purpose.code());
                        w.put_u32(s.generation);
                        w.extend_from_slice(&s.public_key);
                        if let Some(k) = &s.key {
                            w.extend_from_slice(k.secret_bytes().as_ref());
                        }
                        w.put_u64(s.fee_paid.0);
                        match s.valid {
                            None => w.put_u8(0),
                            Some((from, to)) if version == STATE_VERSION_3 => {
                                w.put_u8(1);
                                w.put_u64(from);
                                w.put_u64(to);
                            }
                            Some(valid) => match whole_days(valid) {
                                Some((from, to)) => {
                                    w.put_u8(1);
                                    from.write(&mut w);
                                    to.write(&mut w);
                                }
                                // Not reached: a validity of part days makes the version 3.
                                None => w.put_u8(0),
                            },
                        }
                        w.put_u16(s.certificate.len() as u16);
                        w.extend_from_slice(&s.certificate);
                    }
                }
            }
            match &self.last {
                None => w.put_u8(0),
                Some(l) => {
                    w.put_u8(1);
                    w.extend_from_slice(&l.transaction.0);
                    w.put_u8(l.service.code());
                    w.put_u8(l.set);
                    w.put_u16(l.output.len() as u16);
                    w.extend_from_slice(&l.output);
                }
            }
        }
        if version != STATE_VERSION_1 {
            w.put_u32(self.orders);
            match &self.last_revocation {
                None => w.put_u8(0),
                Some(l) => {
                    w.put_u8(1);
                    w.extend_from_slice(&l.order);
                    w.extend_from_slice(&l.confirmation);
                }
            }
        }
        w
    }

    /// Parses the record; anything that does not fit the layout is an error.
    pub fn decode(bytes: &[u8]) -> Result<CertMeterState, Malformed> {
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if !matches!(version, STATE_VERSION_1 | STATE_VERSION_2 | STATE_VERSION_3) {
            return Err(Malformed::Value);
        }
        let mut st = CertMeterState {
            generation: r.u32()?,
            postmarks: r.u32()?,
            last_time: r.u64()?,
            fees_due: Amount(r.u64()?),
            ..Default::default()
        };
        let n = usize::from(r.u8()?);
        if n > MAX_TABLES {
            return Err(Malformed::Value);
        }
        for _ in 0..n {
            let len = usize::from(r.u16()?);
            let bytes = r.take(len)?.to_vec();
            st.tables
                .push((RateTable::decode_unverified(&bytes)?, bytes));
        }
        let n = usize::from(r.u8()?);
        if n > 2 {
            return Err(Malformed::Value);
        }
        for _ in 0..n {
            let bytes = r.take(ANCHOR_LEN)?.to_vec();
            st.anchors.push((Anchor::decode_unverified(&bytes)?, bytes));
        }
        let n = usize::from(r.u8()?);
        if n > MAX_KEY_SLOTS {
            return Err(Malformed::Value);
        }
        for _ in 0..n {
            let state = match r.u8()? {
                0 => {
                    st.slots.push(None);
                    continue;
                }
                1 => SlotState::Pending,
                2 => SlotState::Active,
                3 => SlotState::Retired,
                _ => return Err(Malformed::Value),
            };
            let purpose = Purpose::from_code(r.u8()?).ok_or(Malformed::Value)?;
            let generation = r.u32()?;
            let public_key: [u8; PUBLIC_KEY_LEN] = r.array()?;
            let key = match state {
                SlotState::Retired => None,
                _ => {
                    let k = IndiciumKey::from_bytes(r.take(32)?).ok_or(Malformed::Value)?;
                    if k.public_key() != public_key {
                        return Err(Malformed::Value);
                    }
                    Some(k)
                }
            };
            let fee_paid = Amount(r.u64()?);
            let valid = match (r.u8()?, version) {
                (0, _) => None,
                (1, STATE_VERSION_3) => {
                    let (from, to) = (r.u64()?, r.u64()?);
                    if to < from {
                        return Err(Malformed::Value);
                    }
                    Some((from, to))
                }
                (1, _) => Some(from_days(
                    crate::types::Date::read(&mut r)?,
                    crate::types::Date::read(&mut r)?,
                )?),
                _ => return Err(Malformed::Value),
            };
            let len = usize::from(r.u16()?);
            let certificate = r.take(len)?.to_vec();
            st.slots.push(Some(KeySlot {
                state,
                purpose,
                generation,
                public_key,
                key,
                certificate,
                fee_paid,
                valid,
            }));
        }
        st.last = match r.u8()? {
            0 => None,
            1 => {
                let transaction = TransactionId(r.array()?);
                let service = Service::from_code(r.u8()?).ok_or(Malformed::Value)?;
                let set = r.u8()?;
                let len = usize::from(r.u16()?);
                Some(LastService {
                    transaction,
                    service,
                    set,
                    output: r.take(len)?.to_vec(),
                })
            }
            _ => return Err(Malformed::Value),
        };
        if version != STATE_VERSION_1 {
            st.orders = r.u32()?;
            st.last_revocation = match r.u8()? {
                0 => None,
                1 => Some(LastRevocation {
                    order: r.array()?,
                    confirmation: r.take(super::revoke::CONFIRMATION_LEN)?.to_vec(),
                }),
                _ => return Err(Malformed::Value),
            };
        }
        r.finish()?;
        // One encoding: a state is written in the oldest version that holds it.
        if st.version() != version {
            return Err(Malformed::Value);
        }
        Ok(st)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Date;

    /// Without the feature only the fees due are read (the audit reports them); the same
    /// record, decoded whole with the feature, agrees.
    #[test]
    fn the_fees_due_load_with_or_without_the_feature() {
        let state = CertMeterState {
            generation: 3,
            postmarks: 9,
            last_time: 1_795_255_200,
            fees_due: Amount(250),
            ..Default::default()
        };
        let loaded = CertMeterState::load(Some(state.encode())).unwrap();
        assert_eq!(loaded.fees_due, Amount(250));
        let mut other_version = state.encode();
        other_version[0] = 0x7F;
        assert!(CertMeterState::load(Some(other_version)).is_err());
        let short = state.encode()[..20].to_vec();
        assert!(CertMeterState::load(Some(short)).is_err());
        assert_eq!(CertMeterState::load(None).unwrap().fees_due, Amount::ZERO);
    }

    #[test]
    fn the_record_round_trips_and_a_retired_slot_holds_no_scalar() {
        let vendor = IndiciumKey::from_bytes(&[7; 32]).unwrap();
        let table = RateTable {
            version: 1,
            effective: Date::new(2026, 1, 1).unwrap(),
            fees: alloc::vec![(Service::Postmark, Amount(10))],
        };
        let key = IndiciumKey::from_bytes(&[9; 32]).unwrap();
        let anchor = Anchor {
            kind: AnchorKind::CertificateCa,
            version: 1,
            public_key: key.public_key(),
        };
        let st = CertMeterState {
            generation: 2,
            postmarks: 5,
            last_time: 1_800_000_000,
            fees_due: Amount(0),
            tables: alloc::vec![(table.clone(), table.sign(&vendor).unwrap())],
            anchors: alloc::vec![(anchor, anchor.sign(&vendor))],
            slots: alloc::vec![
                Some(KeySlot {
                    state: SlotState::Active,
                    purpose: Purpose::Postmark,
                    generation: 2,
                    public_key: key.public_key(),
                    key: Some(key.clone()),
                    certificate: alloc::vec![0x30, 0],
                    fee_paid: Amount(500),
                    valid: Some(
                        from_days(
                            Date::new(2026, 1, 1).unwrap(),
                            Date::new(2027, 1, 1).unwrap(),
                        )
                        .unwrap()
                    ),
                }),
                None,
                Some(KeySlot {
                    state: SlotState::Retired,
                    purpose: Purpose::Postmark,
                    generation: 1,
                    public_key: vendor.public_key(),
                    key: None,
                    certificate: alloc::vec![0x30, 1, 2],
                    fee_paid: Amount(0),
                    valid: None,
                }),
            ],
            last: Some(LastService {
                transaction: TransactionId([1; 8]),
                service: Service::Postmark,
                set: 0,
                output: alloc::vec![1, 2, 3],
            }),
            orders: 0,
            last_revocation: None,
        };
        // Nothing revoked: version 1, the bytes a PSD before revocation wrote.
        let v1 = st.encode();
        assert_eq!(v1[0], 1);
        assert_eq!(CertMeterState::decode(&v1).unwrap().encode(), v1);
        // The same state as version 2 is not canonical: refused.
        let mut v2 = v1.clone();
        v2[0] = 2;
        v2.extend_from_slice(&[0, 0, 0, 0, 0]);
        assert!(CertMeterState::decode(&v2).is_err());
        let st = CertMeterState {
            orders: 3,
            last_revocation: Some(LastRevocation {
                order: [4; 32],
                confirmation: alloc::vec![0xE3; super::super::revoke::CONFIRMATION_LEN],
            }),
            ..st
        };
        let bytes = st.encode();
        assert_eq!(bytes[0], 2);
        let back = CertMeterState::decode(&bytes).unwrap();
        assert_eq!(back.encode(), bytes);
        assert_eq!(back.orders, 3);
        assert_eq!(back.last_revocation, st.last_revocation);
        assert!(back.slots[2].as_ref().unwrap().key.is_none());
        let secret = vendor.secret_bytes();
        assert!(!bytes.windows(32).any(|w| w == secret.as_ref()));
        for n in 0..bytes.len() {
            let _ = CertMeterState::decode(&bytes[..n]);
        }

        // A certificate valid from 10:00:00 to 09:59:59: version 3, to the second.
        let mut seconds = back.clone();
        let from = 1_795_255_200 + 10 * 3_600;
        if let Some(slot) = seconds.slots[0].as_mut() {
            slot.valid = Some((from, from + 365 * DAY - 1));
        }
        let v3 = seconds.encode();
        assert_eq!(v3[0], 3);
        let back3 = CertMeterState::decode(&v3).unwrap();
        assert_eq!(back3.encode(), v3);
        let slot = back3.slots[0].as_ref().unwrap();
        assert_eq!(slot.valid, Some((from, from + 365 * DAY - 1)));
        assert!(!slot.covers(from - 1) && slot.covers(from));
        assert!(slot.covers(from + 365 * DAY - 1) && !slot.covers(from + 365 * DAY));
        // Version 3 for a state of whole days is not canonical: refused. The record below
        // is real version 3 layout (validity in seconds) whose only validity happens to be
        // whole days, so only the canonical rule can refuse it.
        let mut whole = back.clone();
        whole.slots.truncate(2);
        let field = |(f, t): (u64, u64)| {
            let mut b = alloc::vec![1u8];
            b.extend_from_slice(&f.to_be_bytes());
            b.extend_from_slice(&t.to_be_bytes());
            b
        };
        let at = v3
            .windows(17)
            .position(|w| w == field((from, from + 365 * DAY - 1)))
            .unwrap();
        let days = from_days(
            Date::new(2026, 1, 1).unwrap(),
            Date::new(2026, 6, 30).unwrap(),
        )
        .unwrap();
        let mut forged = v3.clone();
        forged[at..at + 17].copy_from_slice(&field(days));
        assert_eq!(forged[0], 3);
        assert!(CertMeterState::decode(&forged).is_err());
        // One second short of whole days, the same layout reads: the layout is sound.
        let mut near = v3.clone();
        near[at..at + 17].copy_from_slice(&field((days.0, days.1 - 1)));
        let read = CertMeterState::decode(&near).unwrap();
        assert_eq!(
            read.slots[0].as_ref().unwrap().valid,
            Some((days.0, days.1 - 1))
        );
        assert_eq!(read.encode(), near);
        // A version 1 record's days are read whole: the first day from 00:00:00, the last
        // to 23:59:59.
        let old = CertMeterState::decode(&v1).unwrap();
        let (f, t) = old.slots[0].as_ref().unwrap().valid.unwrap();
        assert_eq!((f % DAY, (t + 1) % DAY), (0, 0));
        assert_eq!(
            whole_days((f, t)),
            Some((
                Date::new(2026, 1, 1).unwrap(),
                Date::new(2027, 1, 1).unwrap()
            ))
        );
        assert!(whole.encode()[0] == 2);
        for n in 0..v3.len() {
            let _ = CertMeterState::decode(&v3[..n]);
        }
    }
}
