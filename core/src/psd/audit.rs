//! The audit message (seed 000, step 215): the PSD's registers and the meter server's
//! nonce, signed with the PSD's device key (seed 000's "first secret key", a private key
//! generated inside) so the key management system can check them with the public key
//! registered at personalization, and hold no secret of the device.
//!
//! Layout (`docs/apdu.md` § AUDIT):
//!
//! ```text
//! tag A1 | version 3 | device ID 8 | license 4 | set 1 | AR 8 | DR 8 | control sum 8 |
//! piece count 4 | refill count 4 | transferred 8 | pending 8 | last combination ID 8 |
//! nonce 16 ‖ ECDSA P-256 signature r ‖ s 64 over "openpsd audit v3" ‖ everything before
//! ```
//!
//! Version 4 adds the certificate meter's registers (seed 004) after `pending`: fees 8 |
//! services 4 | fees due 8, and is signed over "openpsd audit v4" ‖ everything before. A
//! set that never paid a fee on a device that owes none is audited as version 3, so
//! devices that do not use the certificate meter keep their bytes.
//!
//! Version 5 adds, after the version 4 fields, the newest rate table version the PSD holds
//! (u32; seed 004, step 257), signed over "openpsd audit v5" ‖ everything before: the meter
//! refuses a refill or inspection of a PSD that holds a table older than the one in effect,
//! so a host cannot keep cheaper fees by never loading a newer table. It is made only by a
//! PSD holding a rate table; one holding none is audited as version 3 or 4, as before.
//!
//! Version 2 audits (CMAC under K1) are no longer made or accepted.

use alloc::vec::Vec;

use crate::crypto::{self, IndiciumKey, SIGNATURE_LEN};
use crate::status::Status;
use crate::types::{Amount, DeviceId, LicenseId, PieceCount, RefillCount, RegisterSetIndex};
use crate::wire::{Malformed, Reader, Writer};

/// First byte of an audit message.
pub const AUDIT_TAG: u8 = 0xA1;
/// What the device key signs before a version 3 audit body (domain separation from
/// indicia).
pub const AUDIT_LABEL: &[u8] = b"openpsd audit v3";
/// What it signs before a version 4 body.
pub const AUDIT_LABEL_V4: &[u8] = b"openpsd audit v4";
/// What it signs before a version 5 body.
pub const AUDIT_LABEL_V5: &[u8] = b"openpsd audit v5";
/// Length of the server's nonce.
pub const NONCE_LEN: usize = 16;

/// Layout version of the audit body (3: signed by the device key; 2 was MACed under K1).
const AUDIT_VERSION: u8 = 3;
/// With the certificate meter's registers.
const AUDIT_VERSION_FEES: u8 = 4;
/// With the registers and the newest rate table held.
const AUDIT_VERSION_RATES: u8 = 5;

/// What an audit reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuditData {
    /// The device.
    pub device: DeviceId,
    /// The register set's license.
    pub license: LicenseId,
    /// The register set's slot.
    pub set: RegisterSetIndex,
    /// Ascending register.
    pub ar: Amount,
    /// Descending register.
    pub dr: Amount,
    /// Control sum.
    pub control_sum: Amount,
    /// Piece count.
    pub pieces: PieceCount,
    /// Refill count.
    pub refills: RefillCount,
    /// The part of AR moved out to purse cards (seed 002 transfers, completed).
    pub transferred: Amount,
    /// Value debited for a transfer to a purse not yet acknowledged (AR + DR + pending is
    /// the control sum).
    pub pending: Amount,
    /// The combination ID of the last refill applied to the set (zeros if none): tells the
    /// back office which refill message became value.
    pub last_combination: [u8; 8],
    /// The meter server's nonce, echoed so the audit is fresh.
    pub nonce: [u8; NONCE_LEN],
    /// The part of AR paid as certificate-meter fees.
    pub fees: Amount,
    /// Paid services charged to the set.
    pub services: PieceCount,
    /// Fees the device owes (a revocation the DR could not pay), device-wide.
    pub fees_due: Amount,
    /// The newest rate table version the PSD holds, device-wide (0: none).
    pub rate_table: u32,
}

impl AuditData {
    /// Whether the audit needs version 4 (any certificate-meter register non-zero).
    fn has_fees(&self) -> bool {
        self.fees != Amount::ZERO || self.services != PieceCount(0) || self.fees_due != Amount::ZERO
    }

    /// The oldest layout version that holds this audit (one encoding per audit).
    fn version(&self) -> u8 {
        if self.rate_table != 0 {
            AUDIT_VERSION_RATES
        } else if self.has_fees() {
            AUDIT_VERSION_FEES
        } else {
            AUDIT_VERSION
        }
    }

    /// The label the body of this version is signed under.
    fn label(&self) -> &'static [u8] {
        label_of(self.version())
    }

    fn body(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(100);
        w.put_u8(AUDIT_TAG);
        let version = self.version();
        w.put_u8(version);
        w.extend_from_slice(&self.device.0);
        w.put_u32(self.license.0);
        w.put_u8(self.set.0);
        w.put_u64(self.ar.0);
        w.put_u64(self.dr.0);
        w.put_u64(self.control_sum.0);
        w.put_u32(self.pieces.0);
        w.put_u32(self.refills.0);
        w.put_u64(self.transferred.0);
        w.put_u64(self.pending.0);
        if version >= AUDIT_VERSION_FEES {
            w.put_u64(self.fees.0);
            w.put_u32(self.services.0);
            w.put_u64(self.fees_due.0);
        }
        if version >= AUDIT_VERSION_RATES {
            w.put_u32(self.rate_table);
        }
        w.extend_from_slice(&self.last_combination);
        w.extend_from_slice(&self.nonce);
        w
    }

    /// The audit message: body ‖ signature by the device key.
    pub fn sign(&self, key: &IndiciumKey) -> Vec<u8> {
        let mut msg = self.body();
        let sig = key.sign_labelled(self.label(), &msg);
        msg.extend_from_slice(&sig);
        msg
    }

    /// Decodes an audit message without checking its signature (for display, and to find
    /// whose public key checks it).
    pub fn decode_unverified(msg: &[u8]) -> Result<AuditData, Malformed> {
        let split = msg
            .len()
            .checked_sub(SIGNATURE_LEN)
            .ok_or(Malformed::Length)?;
        let mut r = Reader::new(&msg[..split]);
        if r.u8()? != AUDIT_TAG {
            return Err(Malformed::Value);
        }
        let version = r.u8()?;
        if !matches!(
            version,
            AUDIT_VERSION | AUDIT_VERSION_FEES | AUDIT_VERSION_RATES
        ) {
            return Err(Malformed::Value);
        }
        let mut data = AuditData {
            device: DeviceId(r.array()?),
            license: LicenseId(r.u32()?),
            set: RegisterSetIndex(r.u8()?),
            ar: Amount(r.u64()?),
            dr: Amount(r.u64()?),
            control_sum: Amount(r.u64()?),
            pieces: PieceCount(r.u32()?),
            refills: RefillCount(r.u32()?),
            transferred: Amount(r.u64()?),
            pending: Amount(r.u64()?),
            last_combination: [0; 8],
            nonce: [0; NONCE_LEN],
            fees: Amount::ZERO,
            services: PieceCount(0),
            fees_due: Amount::ZERO,
            rate_table: 0,
        };
        if version >= AUDIT_VERSION_FEES {
            data.fees = Amount(r.u64()?);
            data.services = PieceCount(r.u32()?);
            data.fees_due = Amount(r.u64()?);
        }
        if version >= AUDIT_VERSION_RATES {
            data.rate_table = r.u32()?;
        }
        // One encoding per audit: the oldest version that holds it.
        if data.version() != version {
            return Err(Malformed::Value);
        }
        data.last_combination = r.array()?;
        data.nonce = r.array()?;
        r.finish()?;
        Ok(data)
    }

    /// What the device signed (the label ‖ the body) and the signature, for a verifier of
    /// its own (the KMS verifies with `ring`); `None` if shorter than a signature.
    pub fn signed_parts(msg: &[u8]) -> Option<(Vec<u8>, &[u8])> {
        let split = msg.len().checked_sub(SIGNATURE_LEN)?;
        let (body, sig) = msg.split_at(split);
        let label = label_of(*body.get(1)?);
        Some(([label, body].concat(), sig))
    }

    /// Decodes an audit message and checks its signature with the device's public key
    /// (the KMS's step 230). `None` if malformed or the signature is wrong.
    pub fn open(msg: &[u8], device_public_key: &[u8]) -> Option<AuditData> {
        let data = Self::decode_unverified(msg).ok()?;
        let split = msg.len().checked_sub(SIGNATURE_LEN)?;
        let (body, sig) = msg.split_at(split);
        crypto::verify_labelled(device_public_key, data.label(), body, sig).then_some(data)
    }
}

/// The label a body of layout `version` is signed under (an unknown version gets version
/// 3's, and fails to decode anyway).
fn label_of(version: u8) -> &'static [u8] {
    match version {
        AUDIT_VERSION_RATES => AUDIT_LABEL_V5,
        AUDIT_VERSION_FEES => AUDIT_LABEL_V4,
        _ => AUDIT_LABEL,
    }
}

impl super::PsdApplet {
    /// AUDIT (80 50 00 set): the set's registers and the server's nonce, signed with the
    /// device key. The nonce is remembered (volatile) for the RECEIPT that may follow.
    /// `9A16` on a PSD of the retired K1 suite: nothing could accept its audit.
    pub(super) fn audit(
        &mut self,
        i: usize,
        data: &[u8],
        reply: &mut Vec<u8>,
    ) -> Result<(), Status> {
        let device = self.device()?;
        device.kms_public_key()?;
        let nonce: [u8; NONCE_LEN] = data.try_into().map_err(|_| Status::WrongLength)?;
        let s = self.persistent.set(i)?;
        let audit = AuditData {
            device: device.id,
            license: s.license,
            // `i` came from P2 (a byte) through `set_index`: the conversion cannot fail.
            set: RegisterSetIndex(u8::try_from(i).map_err(|_| Status::Internal)?),
            ar: s.ar,
            dr: s.dr,
            control_sum: s.control_sum,
            pieces: s.pieces,
            refills: s.refills,
            transferred: s.transferred,
            pending: s.pending,
            last_combination: s.last_combination,
            nonce,
            fees: s.fees,
            services: s.services,
            fees_due: self.persistent.certmeter.fees_due,
            rate_table: self
                .persistent
                .certmeter
                .tables
                .iter()
                .map(|(t, _)| t.version)
                .max()
                .unwrap_or(0),
        };
        reply.extend_from_slice(&audit.sign(&device.key));
        self.volatile.last_audit_nonce = Some(nonce);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> IndiciumKey {
        IndiciumKey::from_bytes(&[9; 32]).unwrap()
    }

    fn plain() -> AuditData {
        AuditData {
            device: DeviceId([1; 8]),
            license: LicenseId(7),
            set: RegisterSetIndex(0),
            ar: Amount(500),
            dr: Amount(1_500),
            control_sum: Amount(2_000),
            pieces: PieceCount(3),
            refills: RefillCount(1),
            transferred: Amount(0),
            pending: Amount(0),
            last_combination: [2; 8],
            nonce: [3; NONCE_LEN],
            fees: Amount::ZERO,
            services: PieceCount(0),
            fees_due: Amount::ZERO,
            rate_table: 0,
        }
    }

    /// Each audit has one encoding, the oldest version that holds it; each decodes to
    /// itself and verifies under its own label only.
    #[test]
    fn versions_3_4_5_one_encoding_each() {
        let pk = key().public_key();
        let v3 = plain();
        let v4 = AuditData {
            fees: Amount(40),
            services: PieceCount(2),
            ..v3
        };
        let v5 = AuditData {
            rate_table: 2,
            ..v3
        };
        let v5_fees = AuditData {
            rate_table: 3,
            ..v4
        };
        for (a, version) in [(v3, 3), (v4, 4), (v5, 5), (v5_fees, 5)] {
            let msg = a.sign(&key());
            assert_eq!(msg[1], version);
            assert_eq!(AuditData::open(&msg, &pk), Some(a));
            // Another label over the same body does not verify: the version is signed.
            let (signed, sig) = AuditData::signed_parts(&msg).unwrap();
            assert!(signed.starts_with(label_of(version)));
            for other in [3u8, 4, 5].into_iter().filter(|v| *v != version) {
                let body = &msg[..msg.len() - SIGNATURE_LEN];
                assert!(!crypto::verify_labelled(&pk, label_of(other), body, sig));
            }
        }
    }

    /// A version 5 body whose rate table is 0, or a version 4 body with no fee, is not
    /// canonical: refused even when signed.
    #[test]
    fn non_canonical_versions_refused() {
        let pk = key().public_key();
        // Version 5 layout with rate table 0: made by hand, signed under the v5 label.
        let v4 = AuditData {
            fees: Amount(40),
            services: PieceCount(2),
            ..plain()
        };
        let mut body = v4.body();
        body[1] = AUDIT_VERSION_RATES;
        let cut = body.len() - 8 - NONCE_LEN;
        body.splice(cut..cut, 0u32.to_be_bytes());
        let mut msg = body.clone();
        msg.extend_from_slice(&key().sign_labelled(AUDIT_LABEL_V5, &body));
        assert!(AuditData::decode_unverified(&msg).is_err());
        assert!(AuditData::open(&msg, &pk).is_none());
        // The same with rate table 1 is a valid version 5 audit: only the rule refused it.
        let mut body1 = body.clone();
        body1[cut..cut + 4].copy_from_slice(&1u32.to_be_bytes());
        let mut msg1 = body1.clone();
        msg1.extend_from_slice(&key().sign_labelled(AUDIT_LABEL_V5, &body1));
        let read = AuditData::open(&msg1, &pk).expect("a real version 5 audit");
        assert_eq!(read.rate_table, 1);
        assert_eq!(read.sign(&key())[..body1.len()], body1[..]);
        // Version 4 with every fee register zero.
        let mut body = plain().body();
        body[1] = AUDIT_VERSION_FEES;
        let cut = body.len() - 8 - NONCE_LEN;
        body.splice(cut..cut, [0u8; 20]);
        let mut msg = body.clone();
        msg.extend_from_slice(&key().sign_labelled(AUDIT_LABEL_V4, &body));
        assert!(AuditData::decode_unverified(&msg).is_err());
        // Truncations of a version 5 audit never decode (and never panic).
        let full = AuditData {
            rate_table: 1,
            ..v4
        }
        .sign(&key());
        assert_eq!(full[1], AUDIT_VERSION_RATES);
        for n in 0..full.len() {
            assert!(AuditData::decode_unverified(&full[..n]).is_err());
        }
    }
}
