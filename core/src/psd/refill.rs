//! The refill message (seed 000, steps 265-305): a refill combination bound to one device,
//! one register set, one amount and the audited control sum and refill count, signed by
//! the key management system's refill key (ECDSA P-256; the PSD holds its public half
//! from personalization). It can be applied once: applying it moves the refill
//! count on, so the same message is then a replay.
//!
//! A combination of amount zero is a **void**: the back office's cancel of a refill whose
//! message has left. It has the same precondition (control sum, refill count) as the refill
//! it cancels, so whichever the PSD applies first makes the other stale for ever; applying
//! it credits nothing, moves the refill count on and records its combination ID.
//!
//! Layout (`docs/apdu.md` § REFILL):
//!
//! ```text
//! tag B1 | version 2 | device ID 8 | license 4 | amount 8 | control sum 8 |
//! refill count 4 | combination ID 8 ‖ ECDSA P-256 signature r ‖ s 64 over
//! "openpsd refill v2" ‖ everything before
//! ```

use alloc::vec::Vec;

use crate::card::Ctx;
use crate::crypto::{self, IndiciumKey, SIGNATURE_LEN};
use crate::records::psd as rec;
use crate::status::Status;
use crate::store::Transaction;
use crate::types::{Amount, DeviceId, LicenseId, RefillCount};
use crate::wire::{Malformed, OpenError, Reader, Writer};

/// First byte of a refill message.
pub const REFILL_TAG: u8 = 0xB1;
/// Layout version (2: signed by the KMS; 1 was MACed under K1).
const REFILL_VERSION: u8 = 2;
/// What the KMS signs before the body.
const REFILL_LABEL: &[u8] = b"openpsd refill v2";
/// Length of a signed refill message.
pub const REFILL_MESSAGE_LEN: usize = 42 + SIGNATURE_LEN;

/// The refill combination (what the recharging center decides).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefillCombination {
    /// The device it is for.
    pub device: DeviceId,
    /// The license (register set) it credits.
    pub license: LicenseId,
    /// The amount credited to DR.
    pub amount: Amount,
    /// The control sum the audit showed; the refill applies only to a set that still has it.
    pub control_sum: Amount,
    /// The refill count the audit showed.
    pub refills: RefillCount,
    /// The recharging center's reference for this combination.
    pub combination_id: [u8; 8],
}

impl RefillCombination {
    /// The combination's canonical bytes: the refill message without its signature (what
    /// the recharging center signs and the KMS signs again for the device).
    pub fn body(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(REFILL_MESSAGE_LEN);
        w.put_u8(REFILL_TAG);
        w.put_u8(REFILL_VERSION);
        w.extend_from_slice(&self.device.0);
        w.put_u32(self.license.0);
        w.put_u64(self.amount.0);
        w.put_u64(self.control_sum.0);
        w.put_u32(self.refills.0);
        w.extend_from_slice(&self.combination_id);
        w
    }

    /// The refill message: combination ‖ the KMS's signature (step 275).
    pub fn sign(&self, kms: &IndiciumKey) -> Vec<u8> {
        let mut msg = self.body();
        let sig = kms.sign_labelled(REFILL_LABEL, &msg);
        msg.extend_from_slice(&sig);
        msg
    }

    /// Checks the KMS's signature (step 290) and decodes the combination.
    pub fn open(msg: &[u8], kms_public_key: &[u8]) -> Result<RefillCombination, OpenError> {
        if msg.len() != REFILL_MESSAGE_LEN {
            return Err(Malformed::Length.into());
        }
        let (body, sig) = msg.split_at(REFILL_MESSAGE_LEN - SIGNATURE_LEN);
        if !crypto::verify_labelled(kms_public_key, REFILL_LABEL, body, sig) {
            return Err(OpenError::Unauthentic);
        }
        Ok(Self::decode_body(body)?)
    }

    fn decode_body(body: &[u8]) -> Result<RefillCombination, Malformed> {
        let mut r = Reader::new(body);
        if r.u8()? != REFILL_TAG || r.u8()? != REFILL_VERSION {
            return Err(Malformed::Value);
        }
        let c = RefillCombination {
            device: DeviceId(r.array()?),
            license: LicenseId(r.u32()?),
            amount: Amount(r.u64()?),
            control_sum: Amount(r.u64()?),
            refills: RefillCount(r.u32()?),
            combination_id: r.array()?,
        };
        r.finish()?;
        Ok(c)
    }
}

impl super::PsdApplet {
    /// REFILL (80 52 00 set): opens the message (signature first), checks it is for this device,
    /// this set and its present state, and commits the credit before answering the new
    /// registers.
    pub(super) fn refill(
        &mut self,
        ctx: &mut Ctx<'_>,
        i: usize,
        data: &[u8],
        reply: &mut Vec<u8>,
    ) -> Result<(), Status> {
        let device = self.device()?;
        // Step 290: the KMS's signature first; nothing in an unauthenticated message counts.
        let c = RefillCombination::open(data, device.kms_public_key()?)?;
        // Step 300: the combination must be for this device, this set, and its present state.
        let set = self.persistent.set(i)?;
        if c.device != device.id {
            return Err(Status::WrongDevice);
        }
        if c.license != set.license {
            return Err(Status::RefillWrongLicense);
        }
        if c.refills < set.refills {
            return Err(Status::RefillReplayed);
        }
        if c.refills != set.refills || c.control_sum != set.control_sum {
            return Err(Status::RefillStale);
        }
        // Step 305: credit, committed before the host hears of it. An amount of zero is a
        // void (docs/refill.md § Cancel): it consumes the same precondition as the refill it
        // cancels, so at most one of the two ever applies, and records its own combination ID
        // so the next audit says which one did.
        let credited = if c.amount == Amount::ZERO {
            set.void(c.combination_id)?
        } else {
            set.credit(c.amount, device.max_dr, c.combination_id)?
        };
        // Fees due (a revocation DR could not pay, seed 004 Fig. 6) are settled from the
        // refilled DR in the same commit: DR → AR and the set's fee register, as if charged
        // then; the control sum does not move. A refill smaller than the fees due settles
        // what it can (all of DR) and the rest stays due. A void credits nothing and
        // settles nothing.
        let due = self.persistent.certmeter.fees_due;
        // Without the `certmeter` feature the record is only partly loaded (its fees due),
        // so such a build never rewrites it: it settles nothing, and the fees stay due for a
        // build that has the certificate meter.
        let settled = if c.amount == Amount::ZERO || !cfg!(feature = "certmeter") {
            Amount::ZERO
        } else {
            due.min(credited.dr)
        };
        let next = credited.settle_fees(settled)?;
        let mut txn = Transaction::begin(ctx.store);
        txn.write(rec::set(i), next.encode());
        let certmeter = if settled == Amount::ZERO {
            None
        } else {
            let mut cm = self.persistent.certmeter.clone();
            cm.fees_due = due.checked_sub(settled).ok_or(Status::Internal)?;
            txn.write(rec::CERTMETER, cm.encode());
            Some(cm)
        };
        txn.commit()?;
        next.readout().write(reply);
        self.persistent.put_set(i, next);
        if let Some(cm) = certmeter {
            self.persistent.certmeter = cm;
        }
        Ok(())
    }
}
