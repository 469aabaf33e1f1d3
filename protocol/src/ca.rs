//! The certificate authority's messages (seed 004 Fig. 5 steps 510-518, Fig. 6 step 604;
//! `docs/ca.md`): a customer's PSD generates a key and attests it (`KeyAttestation`), the
//! customer hands the attestation to the meter server, and the meter asks the **CA** to
//! certify the key with the subject of the customer's account. Revocation is published at
//! once in the CA's CRL and OCSP responder.
//!
//! The subject is never part of a request the device or the customer writes: the meter
//! fills `account_id` and `username` from the session that asked, and the CA builds the
//! subject from them alone.

use serde::{Deserialize, Serialize};

/// Error codes of the certificate authority (beyond [`crate::ErrorCode`]).
pub mod code {
    /// The attestation does not decode, or one of its signatures (the device key's, the
    /// new key's) does not verify (422).
    pub const ATTESTATION_INVALID: &str = "attestation_invalid";
    /// A certificate was issued for another key of the same (device, generation), or the
    /// same attestation comes from another account (409).
    pub const CERTIFICATE_CONFLICT: &str = "certificate_conflict";
    /// The purpose has no profile yet (agent CA, payment) (422).
    pub const PURPOSE_NOT_ISSUED: &str = "purpose_not_issued";
    /// No certificate with this serial (404).
    pub const UNKNOWN_CERTIFICATE: &str = "unknown_certificate";
}

/// `POST /v1/certificates` at the meter (customer → meter).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct MeterCertificateRequest {
    /// The device (16 hex) the attestation comes from: one of the customer's.
    pub device_id: String,
    /// GENERATE KEY's answer, the key attestation (209 bytes), hex.
    pub attestation: String,
}

/// `POST /v1/certificates` at the CA (meter → CA).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CertificateRequest {
    /// The key attestation, hex.
    pub attestation: String,
    /// The account of the customer who owns the device (the meter's session).
    pub account_id: String,
    /// That customer's username: the certificate's common name.
    pub username: String,
}

/// The answer to `POST /v1/certificates` (CA and meter alike).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CertificateAnswer {
    /// The certificate, DER, hex (INSTALL KEY CERTIFICATE's data).
    pub certificate: String,
    /// Its serial number (the INTEGER's magnitude), lower-case hex.
    pub serial: String,
    /// The CA's certificate, DER, hex.
    pub ca_certificate: String,
}

/// `POST /v1/certificates/{serial}/revoke` body.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CertificateRevocation {
    /// Why, 1 to 200 characters.
    pub reason: String,
}

/// A certificate as the CA keeps it (the revocation's answer).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CertificateView {
    /// Serial, lower-case hex.
    pub serial: String,
    /// The device whose key it certifies, 16 upper-case hex.
    pub device_id: String,
    /// The key slot in the device.
    pub slot: u8,
    /// `postmark`, `sign`, ...
    pub purpose: String,
    /// The device's key-generation counter of that key.
    pub generation: u32,
    /// The owner's account.
    pub account_id: String,
    /// When it was issued (Unix seconds).
    pub issued_at: u64,
    /// When it was revoked (Unix seconds), if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<u64>,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}
