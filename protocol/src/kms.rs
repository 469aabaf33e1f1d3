//! The KMS's messages (`docs/refill.md` § KMS): device registration, audit verification,
//! sealing a signed combination into a refill message, audit receipts.

use openpsd_core::psd::audit::AuditData;
use openpsd_core::psd::refill::RefillCombination;
use openpsd_core::types::{Amount, LicenseId, RefillCount};
use serde::{Deserialize, Serialize};

use crate::codec::{self, BadField};

/// `POST /v1/devices`: what personalization writes (card-sim's secrets file).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeviceRegistration {
    /// Device ID, 16 hex.
    pub device_id: String,
    /// K1, 32 hex.
    pub k1: String,
    /// Indicium key ID, 8 hex.
    pub key_id: String,
    /// Indicium public key, SEC1 uncompressed, 130 hex.
    pub public_key: String,
    /// License number and origin postal code of each register set, in set order.
    pub licenses: Vec<(u32, String)>,
}

/// A registered device's public data (`POST /v1/devices`, `GET /v1/devices/{id}`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Device ID, 16 upper-case hex.
    pub device_id: String,
    /// Indicium key ID.
    pub key_id: String,
    /// Indicium public key.
    pub public_key: String,
    /// Licenses in set order.
    pub licenses: Vec<(u32, String)>,
}

/// A body carrying one audit message.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditBody {
    /// The AUDIT response data, hex.
    pub audit: String,
}

/// `POST /v1/audits/verify` answer: the audit's contents, MAC checked under K1.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct VerifiedAudit {
    /// Device ID.
    pub device_id: String,
    /// License.
    pub license: u32,
    /// Register set index.
    pub set: u8,
    /// Ascending register.
    pub ar: u64,
    /// Descending register.
    pub dr: u64,
    /// Control sum.
    pub control_sum: u64,
    /// Piece count.
    pub pieces: u32,
    /// Refill count.
    pub refills: u32,
    /// Part of AR moved out to purse cards (seed 002 transfers).
    #[serde(default)]
    pub transferred: u64,
    /// Debited for a transfer to a purse not yet acknowledged (AR + DR + pending is the
    /// control sum).
    #[serde(default)]
    pub pending: u64,
    /// Last combination applied to the set, 16 hex (zeros if none).
    pub last_combination_id: String,
    /// The nonce the audit answers, 32 hex.
    pub nonce: String,
}

impl From<&AuditData> for VerifiedAudit {
    fn from(a: &AuditData) -> Self {
        Self {
            device_id: codec::device_hex(&a.device),
            license: a.license.0,
            set: a.set.0,
            ar: a.ar.0,
            dr: a.dr.0,
            control_sum: a.control_sum.0,
            pieces: a.pieces.0,
            refills: a.refills.0,
            transferred: a.transferred.0,
            pending: a.pending.0,
            last_combination_id: hex::encode(a.last_combination),
            nonce: hex::encode(a.nonce),
        }
    }
}

/// A refill combination as JSON: what the recharging center decides and signs.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Combination {
    /// Device ID.
    pub device_id: String,
    /// License (register set) it credits.
    pub license: u32,
    /// Amount credited, minor units.
    pub amount: u64,
    /// The audited control sum it is bound to.
    pub control_sum: u64,
    /// The audited refill count it is bound to.
    pub refills: u32,
    /// The recharging center's ID for it, 16 hex.
    pub combination_id: String,
}

impl Combination {
    /// The core type, whose `body()` are the bytes the RC signs and the KMS MACs.
    pub fn to_core(&self, step: &str) -> Result<RefillCombination, BadField> {
        Ok(RefillCombination {
            device: codec::device_id(&self.device_id, step)?,
            license: LicenseId(self.license),
            amount: Amount(self.amount),
            control_sum: Amount(self.control_sum),
            refills: RefillCount(self.refills),
            combination_id: codec::hex_array("combination_id", &self.combination_id, step)?,
        })
    }

    /// From the core type.
    pub fn from_core(c: &RefillCombination) -> Self {
        Self {
            device_id: codec::device_hex(&c.device),
            license: c.license.0,
            amount: c.amount.0,
            control_sum: c.control_sum.0,
            refills: c.refills.0,
            combination_id: hex::encode(c.combination_id),
        }
    }
}

/// A combination with the recharging center's signature (`POST /v1/combinations` answer,
/// `POST /v1/refill-messages` body).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SignedCombination {
    /// The combination.
    pub combination: Combination,
    /// ECDSA P-256 / SHA-256 over `RefillCombination::body()`, r‖s hex.
    pub signature: String,
}

/// `POST /v1/refill-messages` answer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RefillMessage {
    /// The sealed refill message for REFILL, hex.
    pub refill_message: String,
}

/// `POST /v1/receipts` body.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReceiptRequest {
    /// The accepted audit, hex.
    pub audit: String,
    /// The date the back office accepted it, `YYYY-MM-DD`.
    pub accepted_on: String,
}

/// `POST /v1/receipts` answer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReceiptResponse {
    /// The receipt for RECEIPT, hex.
    pub receipt: String,
}
