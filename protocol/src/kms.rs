//! The KMS's messages (`docs/refill.md` § KMS): device registration and revocation, the
//! KMS's public key, audit verification, signing a combination the recharging center
//! signed into a refill message, audit receipts.
//!
//! The refill suite is asymmetric: the KMS holds no secret of any device. It checks audits
//! with the device's registered public key and signs refill messages and receipts with its
//! own key, whose public half every PSD gets at personalization.

use openpsd_core::psd::audit::AuditData;
use openpsd_core::psd::refill::RefillCombination;
use openpsd_core::types::{Amount, LicenseId, RefillCount};
use serde::{Deserialize, Serialize};

use crate::codec::{self, BadField};

/// `POST /v1/devices`: what personalization writes (card-sim's secrets file). No secret: a
/// body that still carries `k1` (any value, even `null`), as personalization wrote it
/// before the asymmetric refill suite, does not deserialize ([`K1_REFUSED`]), so the KMS
/// answers `400 bad_request` and never stores it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(try_from = "RegistrationWire")]
pub struct DeviceRegistration {
    /// Device ID, 16 hex.
    pub device_id: String,
    /// Indicium key ID, 8 hex.
    pub key_id: String,
    /// Indicium public key, SEC1 uncompressed, 130 hex: the key the device signs its
    /// audits with.
    pub public_key: String,
    /// License number and origin postal code of each register set, in set order.
    pub licenses: Vec<(u32, String)>,
}

/// Why a registration carrying `k1` is refused.
pub const K1_REFUSED: &str = "k1: K1 is no longer accepted: the refill suite is asymmetric \
     and the KMS keeps no device secret. Register the device's public key only; a PSD \
     personalized with K1 must be personalized again";

/// [`DeviceRegistration`] as it comes in, noting whether `k1` was there.
#[derive(Deserialize)]
struct RegistrationWire {
    device_id: String,
    key_id: String,
    public_key: String,
    licenses: Vec<(u32, String)>,
    #[serde(default)]
    k1: Present,
}

/// Whether a field was present, whatever its value (its value is dropped unread).
#[derive(Default)]
struct Present(bool);

impl<'de> Deserialize<'de> for Present {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d).map(|_| Present(true))
    }
}

impl TryFrom<RegistrationWire> for DeviceRegistration {
    type Error = &'static str;

    fn try_from(w: RegistrationWire) -> Result<Self, Self::Error> {
        if w.k1.0 {
            return Err(K1_REFUSED);
        }
        Ok(Self {
            device_id: w.device_id,
            key_id: w.key_id,
            public_key: w.public_key,
            licenses: w.licenses,
        })
    }
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
    /// When the issuer revoked the device (Unix seconds); absent while it is in service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<u64>,
    /// Why, as the issuer wrote it; absent while the device is in service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `POST /v1/devices/{device_id}/revoke` body (the operator's, as the issuer).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Revocation {
    /// Why, 1 to 200 characters (kept and shown in the device's public data).
    pub reason: String,
}

/// `GET /v1/public-key` answer: the key the KMS signs refill messages and receipts with,
/// which personalization writes into every PSD.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct KmsPublicKey {
    /// SEC1 uncompressed P-256 point, 130 hex.
    pub public_key: String,
    /// Its key ID (`openpsd_core::crypto::key_id`), 8 hex.
    pub key_id: String,
}

/// A body carrying one audit message.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditBody {
    /// The AUDIT response data, hex.
    pub audit: String,
}

/// `POST /v1/audits/verify` answer: the audit's contents, its signature checked with the
/// device's registered public key.
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
    /// The part of AR paid as certificate-meter fees (seed 004; 0 in a version 3 audit).
    #[serde(default)]
    pub fees: u64,
    /// Paid services charged to the set.
    #[serde(default)]
    pub services: u32,
    /// Fees the device owes, device-wide.
    #[serde(default)]
    pub fees_due: u64,
    /// The newest rate table version the PSD holds (0: none; a version 5 audit).
    #[serde(default)]
    pub rate_table: u32,
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
            fees: a.fees.0,
            services: a.services.0,
            fees_due: a.fees_due.0,
            rate_table: a.rate_table,
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
    /// The core type, whose `body()` are the bytes the RC signs and the KMS signs again
    /// for the device.
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
    /// The refill message for REFILL (the combination and the KMS's signature), hex.
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
    /// The receipt for RECEIPT (signed by the KMS), hex.
    pub receipt: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registration_with_k1_does_not_deserialize() {
        let ok = r#"{"device_id": "d", "key_id": "k", "public_key": "p", "licenses": []}"#;
        let r: DeviceRegistration = serde_json::from_str(ok).expect("no k1");
        assert_eq!(serde_json::to_value(&r).expect("json").get("k1"), None);
        for k1 in [r#""00112233445566778899aabbccddeeff""#, "null", "{}"] {
            let body = format!(
                r#"{{"device_id": "d", "k1": {k1}, "key_id": "k", "public_key": "p", "licenses": []}}"#
            );
            let e = serde_json::from_str::<DeviceRegistration>(&body).expect_err(k1);
            assert!(e.to_string().starts_with(K1_REFUSED), "{e}");
        }
    }
}
