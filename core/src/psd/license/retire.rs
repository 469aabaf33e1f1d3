//! RETIRE SET (`80 4C P1 00`, data: an export's epoch): an exported register set is given
//! up for good, so the back office can refund its DR — the write-off of a lost file, and
//! the withdrawal of a replaced PSD's set (seed 003, C11: "the old one audited, withdrawn,
//! refunded").
//!
//! - P1 `00` **retire**: an *outstanding* export's entry becomes *retired* in one commit,
//!   after which no copy of its file can ever be imported (`9A33`), and the PSD answers a
//!   [`Receipt`] signed by the device key: device, epoch, license, control sum, DR and the
//!   file's digest. Asking again answers the same bytes (RFC 6979), so a lost answer is
//!   never a lost refund.
//! - P1 `01` **forget** (once the back office booked the receipt): the retired entry
//!   leaves the table, freeing its place. Forgetting an entry that is not there answers
//!   `9000` (a retried forget); one that is not retired, `6985`; the last entry of a PSD
//!   with no set and no postal authority (it could never hold a set again), `6985`.
//!
//! A set to withdraw is exported first (EXPORT SET prepare and commit), then retired: the
//! PSD's own table is what proves the value is out, whether or not the file still exists.
//! Value: the entry's control sum moves from "outstanding" to "retired" and stays counted
//! by the PSD until the back office refunds the DR (`docs/licenses.md` § Where the value
//! is).

use alloc::vec::Vec;

use crate::crypto::{self, IndiciumKey, SIGNATURE_LEN};
use crate::types::{Amount, DeviceId, LicenseId};
use crate::wire::{Malformed, Reader, Writer};

use super::DIGEST_LEN;

/// The receipt's first bytes.
pub const RECEIPT_TAG: &[u8] = b"openpsd retired set v1";
/// Label of the device key's signature over the receipt.
pub const RECEIPT_SIGNATURE_LABEL: &[u8] = b"openpsd retired set signature v1";

/// RETIRE SET's answer: what the PSD gave up, signed by the device key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// The device.
    pub device: DeviceId,
    /// The export epoch retired.
    pub epoch: u64,
    /// The set's license.
    pub license: LicenseId,
    /// Its control sum (AR + DR) when it was exported.
    pub control_sum: Amount,
    /// Its DR: what the back office refunds.
    pub dr: Amount,
    /// The first bytes of the exported file's SHA-256.
    pub digest: [u8; DIGEST_LEN],
    /// The device key's signature over everything before it.
    pub signature: [u8; SIGNATURE_LEN],
}

impl Receipt {
    /// Length of the encoding.
    pub const LEN: usize = RECEIPT_TAG.len() + 8 + 8 + 4 + 8 + 8 + DIGEST_LEN + SIGNATURE_LEN;

    fn signed_bytes(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(Self::LEN);
        w.extend_from_slice(RECEIPT_TAG);
        w.extend_from_slice(&self.device.0);
        w.put_u64(self.epoch);
        w.put_u32(self.license.0);
        w.put_u64(self.control_sum.0);
        w.put_u64(self.dr.0);
        w.extend_from_slice(&self.digest);
        w
    }

    /// Signs the fields with the device key (deterministic: the same receipt again).
    pub fn signed(mut self, device_key: &IndiciumKey) -> Receipt {
        self.signature = device_key.sign_labelled(RECEIPT_SIGNATURE_LABEL, &self.signed_bytes());
        self
    }

    /// `tag ‖ device ‖ epoch ‖ license ‖ control sum ‖ DR ‖ digest ‖ signature`.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = self.signed_bytes();
        w.extend_from_slice(&self.signature);
        w
    }

    /// Parses a receipt (no check of the signature).
    pub fn decode(bytes: &[u8]) -> Result<Receipt, Malformed> {
        let mut r = Reader::new(bytes);
        if r.take(RECEIPT_TAG.len())? != RECEIPT_TAG {
            return Err(Malformed::Value);
        }
        let receipt = Receipt {
            device: DeviceId(r.array()?),
            epoch: r.u64()?,
            license: LicenseId(r.u32()?),
            control_sum: Amount(r.u64()?),
            dr: Amount(r.u64()?),
            digest: r.array()?,
            signature: r.array()?,
        };
        r.finish()?;
        if receipt.dr > receipt.control_sum {
            return Err(Malformed::Value);
        }
        Ok(receipt)
    }

    /// Whether the device key (SEC1) signed it.
    pub fn verify(&self, device_public_key: &[u8]) -> bool {
        crypto::verify_labelled(
            device_public_key,
            RECEIPT_SIGNATURE_LABEL,
            &self.signed_bytes(),
            &self.signature,
        )
    }
}

#[cfg(feature = "licenses")]
impl crate::psd::PsdApplet {
    /// RETIRE SET (80 4C P1 00): P1 `00` retire, `01` forget; data: the epoch.
    pub(in crate::psd) fn retire_set(
        &mut self,
        ctx: &mut crate::card::Ctx<'_>,
        forget: bool,
        data: &[u8],
        reply: &mut Vec<u8>,
    ) -> Result<(), crate::status::Status> {
        use super::ExportState;
        use crate::records::psd as rec;
        use crate::status::Status;

        let epoch = u64::from_be_bytes(data.try_into().map_err(|_| Status::WrongLength)?);
        let p = &self.persistent;
        let device = p.device()?;
        let licenses = &p.licenses;
        let found = licenses.exports.iter().position(|e| e.epoch == epoch);
        if forget {
            let Some(k) = found else {
                return Ok(()); // forgotten already
            };
            if licenses.exports[k].state != ExportState::Retired {
                return Err(Status::ConditionsNotSatisfied);
            }
            // A PSD without a set, an entry or a postal authority could never hold a set
            // again (and would not open: its state reads as corrupt): its last entry stays.
            let empty_after = licenses.exports.len() == 1 && p.sets.iter().all(Option::is_none);
            if empty_after && device.postal_authority.is_none() {
                return Err(Status::ConditionsNotSatisfied);
            }
            let mut next = licenses.clone();
            next.exports.remove(k);
            let mut txn = crate::store::Transaction::begin(ctx.store);
            txn.write(rec::LICENSES, next.encode().to_vec());
            txn.commit()?;
            self.persistent.licenses = next;
            return Ok(());
        }
        let Some(k) = found else {
            return Err(Status::ExportNotOutstanding);
        };
        let entry = licenses.exports[k];
        // Signed before the commit (deterministic: the same bytes as after it), so the
        // key is not held across the store's borrow.
        let receipt = Receipt {
            device: device.id,
            epoch,
            license: entry.license,
            control_sum: entry.control_sum,
            dr: entry.dr,
            digest: entry.digest,
            signature: [0; SIGNATURE_LEN],
        }
        .signed(&device.key)
        .encode();
        match entry.state {
            // The set is still resident (frozen): commit or cancel the export first.
            ExportState::Preparing => return Err(Status::ConditionsNotSatisfied),
            ExportState::Retired => {}
            ExportState::Outstanding => {
                let mut next = licenses.clone();
                next.exports[k].state = ExportState::Retired;
                let mut txn = crate::store::Transaction::begin(ctx.store);
                txn.write(rec::LICENSES, next.encode().to_vec());
                txn.commit()?;
                self.persistent.licenses = next;
            }
        }
        reply.extend_from_slice(&receipt);
        Ok(())
    }
}
