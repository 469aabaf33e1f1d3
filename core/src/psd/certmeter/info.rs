//! GET DATA `00 05`: the certificate meter's public state, for hosts and auditors: the
//! rate tables and trust anchors held (signed, so anyone can check them), the key slots
//! with their certificates, the counters, and each register set's fees.
//!
//! Layout (`docs/apdu.md` § GET DATA):
//!
//! ```text
//! 01 | generation u32 | postmarks u32 | last postmark time u64 | fees due u64 |
//! n tables × (len u16 ‖ signed table) | n anchors × signed anchor |
//! n slots × (slot 1 | state 1 | purpose 1 | generation u32 | public key 65 | fee paid u64 |
//!            certificate len u16 ‖ DER) |
//! n sets × (set 1 | fees u64 | services u32)
//! ```
//! (each list preceded by its count, one byte).

use alloc::vec::Vec;

use crate::crypto::PUBLIC_KEY_LEN;
use crate::types::{Amount, PieceCount};
use crate::wire::{Malformed, Reader, Writer};

use super::anchor::{Anchor, ANCHOR_LEN};
use super::attestation::Purpose;
use super::rates::RateTable;
use super::state::{CertMeterState, SlotState};

/// Layout version.
const INFO_VERSION: u8 = 1;

/// A key slot as GET DATA shows it (never the scalar).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotView {
    /// Slot number.
    pub slot: u8,
    /// State.
    pub state: SlotState,
    /// Purpose.
    pub purpose: Purpose,
    /// Generation counter of the key.
    pub generation: u32,
    /// The public key.
    pub public_key: [u8; PUBLIC_KEY_LEN],
    /// The certificate fee paid at install.
    pub fee_paid: Amount,
    /// The certificate (empty while pending).
    pub certificate: Vec<u8>,
}

/// The certificate meter's public state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertMeterInfo {
    /// Keys generated.
    pub generation: u32,
    /// Postmarks issued.
    pub postmarks: u32,
    /// Time of the last postmark (Unix seconds; 0 before the first).
    pub last_time: u64,
    /// Fees owed.
    pub fees_due: Amount,
    /// Rate tables held: decoded, and signed bytes.
    pub tables: Vec<(RateTable, Vec<u8>)>,
    /// Trust anchors held.
    pub anchors: Vec<(Anchor, Vec<u8>)>,
    /// Key slots in use.
    pub slots: Vec<SlotView>,
    /// Per register set: fees paid and services charged.
    pub sets: Vec<(u8, Amount, PieceCount)>,
}

impl CertMeterInfo {
    /// The public view of `state` and the sets' fee registers.
    pub fn of(state: &CertMeterState, sets: Vec<(u8, Amount, PieceCount)>) -> CertMeterInfo {
        CertMeterInfo {
            generation: state.generation,
            postmarks: state.postmarks,
            last_time: state.last_time,
            fees_due: state.fees_due,
            tables: state.tables.clone(),
            anchors: state.anchors.clone(),
            slots: state
                .slots
                .iter()
                .enumerate()
                .filter_map(|(i, s)| {
                    let s = s.as_ref()?;
                    Some(SlotView {
                        slot: u8::try_from(i).ok()?,
                        state: s.state,
                        purpose: s.purpose,
                        generation: s.generation,
                        public_key: s.public_key,
                        fee_paid: s.fee_paid,
                        certificate: s.certificate.clone(),
                    })
                })
                .collect(),
            sets,
        }
    }

    /// The active slot of `purpose`, if any.
    pub fn active(&self, purpose: Purpose) -> Option<&SlotView> {
        self.slots
            .iter()
            .find(|s| s.purpose == purpose && s.state == SlotState::Active)
    }

    /// The GET DATA bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(512);
        w.put_u8(INFO_VERSION);
        w.put_u32(self.generation);
        w.put_u32(self.postmarks);
        w.put_u64(self.last_time);
        w.put_u64(self.fees_due.0);
        // why: the lists are bounded by the state's limits (2 tables, 2 anchors, 4 slots,
        // 4 sets) and a certificate by MAX_CERTIFICATE_LEN.
        #[allow(clippy::cast_possible_truncation)]
        {
            w.put_u8(self.tables.len() as u8);
            for (_, b) in &self.tables {
                w.put_u16(b.len() as u16);
                w.extend_from_slice(b);
            }
            w.put_u8(self.anchors.len() as u8);
            for (_, b) in &self.anchors {
                w.extend_from_slice(b);
            }
            w.put_u8(self.slots.len() as u8);
            for s in &self.slots {
                w.put_u8(s.slot);
                w.put_u8(s.state as u8);
                w.put_u8(s.purpose.code());
                w.put_u32(s.generation);
                w.extend_from_slice(&s.public_key);
                w.put_u64(s.fee_paid.0);
                w.put_u16(s.certificate.len() as u16);
                w.extend_from_slice(&s.certificate);
            }
            w.put_u8(self.sets.len() as u8);
            for (set, fees, services) in &self.sets {
                w.put_u8(*set);
                w.put_u64(fees.0);
                w.put_u32(services.0);
            }
        }
        w
    }

    /// Parses the GET DATA bytes.
    pub fn decode(bytes: &[u8]) -> Result<CertMeterInfo, Malformed> {
        let mut r = Reader::new(bytes);
        if r.u8()? != INFO_VERSION {
            return Err(Malformed::Value);
        }
        let mut info = CertMeterInfo {
            generation: r.u32()?,
            postmarks: r.u32()?,
            last_time: r.u64()?,
            fees_due: Amount(r.u64()?),
            tables: Vec::new(),
            anchors: Vec::new(),
            slots: Vec::new(),
            sets: Vec::new(),
        };
        for _ in 0..r.u8()? {
            let n = usize::from(r.u16()?);
            let b = r.take(n)?.to_vec();
            info.tables.push((RateTable::decode_unverified(&b)?, b));
        }
        for _ in 0..r.u8()? {
            let b = r.take(ANCHOR_LEN)?.to_vec();
            info.anchors.push((Anchor::decode_unverified(&b)?, b));
        }
        for _ in 0..r.u8()? {
            let slot = r.u8()?;
            let state = match r.u8()? {
                1 => SlotState::Pending,
                2 => SlotState::Active,
                3 => SlotState::Retired,
                _ => return Err(Malformed::Value),
            };
            let purpose = Purpose::from_code(r.u8()?).ok_or(Malformed::Value)?;
            let generation = r.u32()?;
            let public_key = r.array()?;
            let fee_paid = Amount(r.u64()?);
            let n = usize::from(r.u16()?);
            info.slots.push(SlotView {
                slot,
                state,
                purpose,
                generation,
                public_key,
                fee_paid,
                certificate: r.take(n)?.to_vec(),
            });
        }
        for _ in 0..r.u8()? {
            info.sets
                .push((r.u8()?, Amount(r.u64()?), PieceCount(r.u32()?)));
        }
        r.finish()?;
        Ok(info)
    }
}

#[cfg(feature = "certmeter")]
impl crate::psd::PsdApplet {
    /// GET DATA (80 CA 00 05).
    pub(in crate::psd) fn certmeter_info(&self, reply: &mut Vec<u8>) {
        let sets = self
            .persistent
            .sets
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let s = s.as_ref()?;
                Some((u8::try_from(i).ok()?, s.fees, s.services))
            })
            .collect();
        reply.extend_from_slice(&CertMeterInfo::of(&self.persistent.certmeter, sets).encode());
    }
}
