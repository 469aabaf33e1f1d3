//! The audit receipt: the back office's word that it accepted an audit on a date, signed
//! by the key management system's key (the one that signs refill messages). It renews the PSD's inspection — real meters stop
//! printing when they have not reached the data center for too long (a notice after ~21
//! days, blocked at 28).
//!
//! Layout (`docs/apdu.md` § RECEIPT):
//!
//! ```text
//! tag C1 | version 2 | device ID 8 | audit nonce 16 | date accepted 4 ‖ ECDSA P-256
//! signature r ‖ s 64 over "openpsd receipt v2" ‖ everything before
//! ```

use alloc::vec::Vec;

use super::state::Counters;
use super::MAX_DAYS_BEHIND;
use crate::card::Ctx;
use crate::crypto::{self, IndiciumKey, SIGNATURE_LEN};
use crate::records::psd as rec;
use crate::status::Status;
use crate::store::Transaction;
use crate::types::{Date, DeviceId};
use crate::wire::{Malformed, OpenError, Reader, Writer};

/// First byte of a receipt.
pub const RECEIPT_TAG: u8 = 0xC1;
/// Layout version (2: signed by the KMS; 1 was MACed under K1).
const RECEIPT_VERSION: u8 = 2;
/// What the KMS signs before the body.
const RECEIPT_LABEL: &[u8] = b"openpsd receipt v2";
/// Length of a signed receipt.
pub const RECEIPT_LEN: usize = 30 + SIGNATURE_LEN;

/// An accepted audit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// The audited device.
    pub device: DeviceId,
    /// The nonce of the audit accepted.
    pub nonce: [u8; 16],
    /// When the back office accepted it.
    pub accepted_on: Date,
}

impl Receipt {
    fn body(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(RECEIPT_LEN);
        w.put_u8(RECEIPT_TAG);
        w.put_u8(RECEIPT_VERSION);
        w.extend_from_slice(&self.device.0);
        w.extend_from_slice(&self.nonce);
        self.accepted_on.write(&mut w);
        w
    }

    /// The receipt message: body ‖ the KMS's signature.
    pub fn sign(&self, kms: &IndiciumKey) -> Vec<u8> {
        let mut msg = self.body();
        let sig = kms.sign_labelled(RECEIPT_LABEL, &msg);
        msg.extend_from_slice(&sig);
        msg
    }

    /// Checks the KMS's signature and decodes.
    pub fn open(msg: &[u8], kms_public_key: &[u8]) -> Result<Receipt, OpenError> {
        if msg.len() != RECEIPT_LEN {
            return Err(Malformed::Length.into());
        }
        let (body, sig) = msg.split_at(RECEIPT_LEN - SIGNATURE_LEN);
        if !crypto::verify_labelled(kms_public_key, RECEIPT_LABEL, body, sig) {
            return Err(OpenError::Unauthentic);
        }
        let mut r = Reader::new(body);
        if r.u8()? != RECEIPT_TAG || r.u8()? != RECEIPT_VERSION {
            return Err(Malformed::Value.into());
        }
        let receipt = Receipt {
            device: DeviceId(r.array()?),
            nonce: r.array()?,
            accepted_on: Date::read(&mut r)?,
        };
        r.finish()?;
        Ok(receipt)
    }
}

impl super::PsdApplet {
    /// RECEIPT (80 54 00 00): the back office accepted this session's last audit; the
    /// inspection date moves on (never back).
    pub(super) fn receipt(
        &mut self,
        ctx: &mut Ctx<'_>,
        data: &[u8],
        reply: &mut Vec<u8>,
    ) -> Result<(), Status> {
        let device = self.device()?;
        let r = Receipt::open(data, device.kms_public_key()?)?;
        if r.device != device.id {
            return Err(Status::WrongDevice);
        }
        // Only the audit this session produced last: an old receipt cannot renew anything.
        let fresh = self
            .volatile
            .last_audit_nonce
            .is_some_and(|n| bool::from(subtle::ConstantTimeEq::ct_eq(&n[..], &r.nonce[..])));
        if !fresh {
            return Err(Status::ReceiptForOtherAudit);
        }
        // A receipt dated ahead of the device's clock would stretch the inspection window.
        if let Some(today) = ctx.platform.today() {
            if r.accepted_on.day_number() > today.day_number().saturating_add(MAX_DAYS_BEHIND) {
                return Err(Status::WrongData);
            }
        }
        let old = self.persistent.counters;
        let counters = Counters {
            last_inspection: old.last_inspection.max(Some(r.accepted_on)),
            ..old
        };
        if counters != old {
            let mut txn = Transaction::begin(ctx.store);
            txn.write(rec::COUNTERS, counters.encode());
            txn.commit()?;
            self.persistent.counters = counters;
        }
        self.volatile.last_audit_nonce = None;
        if let Some(d) = self.persistent.counters.last_inspection {
            d.write(reply);
        }
        Ok(())
    }
}
