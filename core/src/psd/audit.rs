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
/// Length of the server's nonce.
pub const NONCE_LEN: usize = 16;

/// Layout version of the audit body (3: signed by the device key; 2 was MACed under K1).
const AUDIT_VERSION: u8 = 3;
/// With the certificate meter's registers.
const AUDIT_VERSION_FEES: u8 = 4;

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
}

impl AuditData {
    /// Whether the audit needs version 4 (any certificate-meter register non-zero).
    fn has_fees(&self) -> bool {
        self.fees != Amount::ZERO || self.services != PieceCount(0) || self.fees_due != Amount::ZERO
    }

    /// The label the body of this version is signed under.
    fn label(&self) -> &'static [u8] {
        if self.has_fees() {
            AUDIT_LABEL_V4
        } else {
            AUDIT_LABEL
        }
    }

    fn body(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(100);
        w.put_u8(AUDIT_TAG);
        w.put_u8(if self.has_fees() {
            AUDIT_VERSION_FEES
        } else {
            AUDIT_VERSION
        });
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
        if self.has_fees() {
            w.put_u64(self.fees.0);
            w.put_u32(self.services.0);
            w.put_u64(self.fees_due.0);
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
        if version != AUDIT_VERSION && version != AUDIT_VERSION_FEES {
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
        };
        if version == AUDIT_VERSION_FEES {
            data.fees = Amount(r.u64()?);
            data.services = PieceCount(r.u32()?);
            data.fees_due = Amount(r.u64()?);
            // One encoding per audit: version 4 only when a register needs it.
            if !data.has_fees() {
                return Err(Malformed::Value);
            }
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
        let label = match body.get(1) {
            Some(&AUDIT_VERSION_FEES) => AUDIT_LABEL_V4,
            _ => AUDIT_LABEL,
        };
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
        };
        reply.extend_from_slice(&audit.sign(&device.key));
        self.volatile.last_audit_nonce = Some(nonce);
        Ok(())
    }
}
