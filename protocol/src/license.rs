//! The license back office's messages (seed 003 Fig. 4 steps 63-66, `docs/licenses.md` §
//! Back office): the meter server asks the **vendor** (the manufacturer) for a license; the
//! vendor checks the PSD's request and forwards it to the **postal authority**, which grants
//! an X.509 certificate; the vendor checks the grant against the request and countersigns it.
//!
//! The forward is signed by the vendor key over [`forward_message`]: the request's SHA-256
//! and the device public key the vendor vouches for (the request names only the device ID;
//! the PA has no device registry of its own, so the vendor's signature is what binds the
//! device key the PA checks the request with).

use openpsd_core::crypto::{PUBLIC_KEY_LEN, SIGNATURE_LEN};
use openpsd_core::psd::license::grant::GrantFields;
use openpsd_core::types::{LicenseId, PostalCode};
use serde::{Deserialize, Serialize};

use crate::codec::{self, BadField};

/// Label of the vendor's forward signature.
pub const FORWARD_LABEL: &[u8] = b"openpsd license forward v1";

/// Error codes of the license services (beyond [`crate::ErrorCode`]).
pub mod code {
    /// The vendor's forward signature does not verify under an authorized vendor key, or
    /// names another request (403).
    pub const FORWARD_INVALID: &str = "forward_invalid";
    /// The request's proof of possession or device signature fails, or it does not
    /// decode (422).
    pub const REQUEST_INVALID: &str = "request_invalid";
    /// The postal authority's policy refuses the license (409).
    pub const LICENSE_REFUSED: &str = "license_refused";
    /// The license is held by another account than the order's (409: a policy refusal,
    /// passed on by the vendor and the meter).
    pub const LICENSE_NOT_YOURS: &str = "license_not_yours";
    /// No such license (404).
    pub const UNKNOWN_LICENSE: &str = "unknown_license";
    /// No grant with this serial (404).
    pub const UNKNOWN_GRANT: &str = "unknown_grant";
    /// The PA's answer does not match the request, or its signature fails (502).
    pub const GRANT_INVALID: &str = "grant_invalid";
}

/// What the vendor signs to forward a request: [`FORWARD_LABEL`] ‖ SHA-256(request bytes) ‖
/// the device's public key (SEC1 uncompressed, 65 bytes).
pub fn forward_message(
    request_digest: &[u8; 32],
    device_public_key: &[u8; PUBLIC_KEY_LEN],
) -> Vec<u8> {
    let mut m = Vec::with_capacity(FORWARD_LABEL.len() + 32 + PUBLIC_KEY_LEN);
    m.extend_from_slice(FORWARD_LABEL);
    m.extend_from_slice(request_digest);
    m.extend_from_slice(device_public_key);
    m
}

/// `POST /v1/grants` (vendor → PA).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct GrantRequest {
    /// The PSD's license request (`LicenseRequest::encode`), hex.
    pub request: String,
    /// The device's public key the vendor vouches for (SEC1 uncompressed, 130 hex).
    pub device_public_key: String,
    /// The vendor's `r‖s` over [`forward_message`], 128 hex.
    pub forward_signature: String,
    /// The customer account the order came from (the meter's), passed on by the vendor:
    /// a license the PA's desk allocated to an account, or first granted to one, is granted
    /// to that account's devices only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
}

/// The certificate fields the host sends the card (LICENSE INSTALL), as JSON.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct GrantFieldsJson {
    /// Certificate serial, hex (its magnitude, no leading zero octet).
    pub serial: String,
    /// First date of mailing, `YYYY-MM-DD`.
    pub not_before: String,
    /// Last date of mailing, `YYYY-MM-DD`.
    pub not_after: String,
    /// The license number.
    pub license: u32,
    /// The origin postal code.
    pub origin: String,
}

impl GrantFieldsJson {
    /// From core's fields.
    pub fn from_fields(f: &GrantFields) -> Self {
        Self {
            serial: hex::encode(&f.serial),
            not_before: f.not_before.to_string(),
            not_after: f.not_after.to_string(),
            license: f.license.0,
            origin: String::from_utf8_lossy(f.origin.as_bytes()).into_owned(),
        }
    }

    /// To core's fields (`400` at `step` when a field is malformed).
    pub fn to_fields(&self, step: &str) -> Result<GrantFields, BadField> {
        let serial = codec::hex_vec("serial", &self.serial, 20, step)?;
        if !openpsd_core::psd::license::grant::serial_ok(&serial) {
            return Err(BadField::new(
                step,
                "serial: 1 to 20 octets, no leading zero",
            ));
        }
        Ok(GrantFields {
            serial,
            not_before: codec::date("not_before", &self.not_before, step)?,
            not_after: codec::date("not_after", &self.not_after, step)?,
            license: LicenseId(self.license),
            origin: PostalCode::new(self.origin.as_bytes())
                .ok_or_else(|| BadField::new(step, "origin: 1 to 10 of A-Z 0-9 space -"))?,
        })
    }
}

/// `POST /v1/grants` answer: the license certificate and what the host and card need of it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct GrantResponse {
    /// The certificate, PEM.
    pub certificate: String,
    /// Its fields.
    pub fields: GrantFieldsJson,
    /// The PA's `r‖s` over the tbsCertificate, 128 hex.
    pub pa_signature: String,
}

/// `POST /v1/grants/{serial}/revoke` body (operator).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct GrantRevocation {
    /// Why, 1 to 200 characters.
    pub reason: String,
}

/// A grant as the PA lists it (`GET /v1/grants?license=N`, revoke's answer).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct GrantView {
    /// Certificate serial, hex.
    pub serial: String,
    /// The license.
    pub license: u32,
    /// The device, 16 upper-case hex.
    pub device_id: String,
    /// The license key's ID (RFC 7093 SHA-256/160 of the key, hex: the certificate's SKI).
    pub key_id: String,
    /// Its origin.
    pub origin: String,
    /// First date of mailing.
    pub not_before: String,
    /// Last date of mailing.
    pub not_after: String,
    /// The license key the certificate certifies, SEC1 uncompressed hex: what verifies the
    /// indicia of the set (the post office looks it up by device and key ID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// When revoked (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<u64>,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `GET /v1/grants` answer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct GrantList {
    /// The grants, oldest first.
    pub grants: Vec<GrantView>,
}

/// `POST /v1/licenses` at the meter server (host → meter, the customer who owns the
/// device): idempotent by `client_txn_id`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct MeterLicenseOrder {
    /// The customer's ID for this order (a retry sends the same).
    pub client_txn_id: String,
    /// The PSD, 16 hex.
    pub device_id: String,
    /// The PSD's LICENSE REQUEST answer, hex.
    pub request: String,
}

/// `POST /v1/licenses` (meter → vendor).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LicenseOrder {
    /// The PSD's LICENSE REQUEST answer, hex.
    pub request: String,
    /// The customer account the meter took the order from (passed on to the PA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
}

/// `POST /v1/licenses` at the PA (its desk, `backoffice pa grant`): a license number
/// allocated to a customer account before any of its devices asks; `GET
/// /v1/licenses/{license}` answers the same shape.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LicenseHolder {
    /// The license number.
    pub license: u32,
    /// Its origin postal code.
    pub origin: String,
    /// The account holding it (absent for a license first granted without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// Devices holding a standing (unrevoked) grant of it.
    #[serde(default)]
    pub devices: u32,
}

/// `POST /v1/licenses` answer: LICENSE INSTALL's command data and the certificate.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LicenseGrant {
    /// LICENSE INSTALL's data (`Install::encode`), hex.
    pub install: String,
    /// The PA's certificate, PEM (for verifiers; the card never reads it).
    pub certificate: String,
    /// Its fields.
    pub fields: GrantFieldsJson,
    /// The PA's `r‖s`, hex.
    pub pa_signature: String,
    /// The vendor's countersignature `r‖s`, hex.
    pub countersignature: String,
}

/// A public key answer (`GET /v1/public-key` of the vendor).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct VendorPublicKey {
    /// SEC1 uncompressed, 130 hex: what PSDs are personalized with as `vendor_public_key`.
    pub public_key: String,
}

/// Decodes a 64-byte `r‖s` field.
pub fn signature(field: &str, text: &str, step: &str) -> Result<[u8; SIGNATURE_LEN], BadField> {
    codec::hex_array(field, text, step)
}

/// `GET /v1/public-key` answer of the postal authority: what PSDs are personalized with.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PaPublicKey {
    /// The PA's public key, SEC1 uncompressed, 130 hex.
    pub public_key: String,
    /// The PA's subject name, full DER as in its CA certificate, hex (the issuer of every
    /// license certificate).
    pub subject: String,
}

/// `POST /v1/licenses/retirements` at the meter server (the device's owner): a RETIRE SET
/// receipt, for the refund of the retired set's DR to the owner's deposit. Idempotent by
/// (device, epoch): the same receipt again answers the same [`Retirement`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RetirementRequest {
    /// The device, 16 hex.
    pub device_id: String,
    /// The receipt (`openpsd_core::psd::license::retire::Receipt::encode`), hex.
    pub receipt: String,
    /// The exported file, hex, when the host still has it: the set's last registers
    /// (AR, piece count), which the post office then holds every later piece against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob: Option<String>,
}

/// What the meter server booked for a retired set.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Retirement {
    /// The device.
    pub device_id: String,
    /// The set's license.
    pub license: u32,
    /// The export epoch retired.
    pub epoch: u64,
    /// The DR refunded to the account's deposit, minor units.
    pub refunded: u64,
    /// The account refunded (the device's owner).
    pub account_id: String,
    /// The set's AR when it left the device: any later piece of (device, license) above
    /// it is postage used after the refund.
    pub final_ar: u64,
    /// The postal authority's grant revoked with it (serial, hex), for a set added by a
    /// license.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_grant: Option<String>,
    /// Unix seconds.
    pub retired_at: u64,
}
