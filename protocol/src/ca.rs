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
    /// A revocation request or confirmation does not decode or its device signature does
    /// not verify (422).
    pub const REVOCATION_INVALID: &str = "revocation_invalid";
    /// A revocation request names a certificate the CA did not issue to that account and
    /// key, or a confirmation does not match its order (409: a policy refusal, which the
    /// meter passes on).
    pub const REVOCATION_CONFLICT: &str = "revocation_conflict";
    /// The meter refuses a refill: a revocation order the CA forced on the device (an
    /// operator's revocation) is older than the grace period and not confirmed yet (409).
    pub const REVOCATION_OVERDUE: &str = "revocation_overdue";
    /// An operator asked to close a revocation order the PSD has confirmed already: there
    /// is nothing to close (409).
    pub const REVOCATION_CONFIRMED: &str = "revocation_confirmed";
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

/// `POST /v1/revocations` at the meter (customer → meter, seed 004 Fig. 6 step 604).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct MeterRevocationRequest {
    /// The device (16 hex): one of the customer's.
    pub device_id: String,
    /// REVOCATION REQUEST's answer (194 bytes), hex.
    pub request: String,
}

/// `POST /v1/revocations` at the CA (meter → CA).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RevocationRequestBody {
    /// The device-signed revocation request, hex.
    pub request: String,
    /// The account of the customer who owns the device (the meter's session): it must be
    /// the certificate's.
    pub account_id: String,
}

/// The answer to `POST /v1/revocations` (CA and meter alike): the certificate is revoked
/// (CRL and OCSP), and the order carries it to the PSD (REVOKE KEY).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RevocationOrderAnswer {
    /// The CA-signed order (112 bytes), hex: REVOKE KEY's data.
    pub order: String,
    /// Its number for the device (1, 2, ...).
    pub counter: u32,
    /// The revoked certificate.
    pub certificate: CertificateView,
}

/// `POST /v1/revocations/confirmations` at the meter (customer → meter, step 622).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct MeterRevocationConfirmation {
    /// The device (16 hex): one of the customer's.
    pub device_id: String,
    /// REVOKE KEY's answer (121 bytes), hex.
    pub confirmation: String,
}

/// `POST /v1/revocations/confirmations` at the CA (meter → CA).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RevocationConfirmationBody {
    /// The device-signed confirmation, hex.
    pub confirmation: String,
}

/// A revocation order as the CA keeps it (the confirmation's answer).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RevocationRecord {
    /// The device, 16 upper-case hex.
    pub device_id: String,
    /// The order's number.
    pub counter: u32,
    /// The revoked certificate's serial.
    pub serial: String,
    /// When the PSD's confirmation was recorded (Unix seconds), if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmed_at: Option<u64>,
    /// `paid` or `due`, from the confirmation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// The Revocation fee the PSD charged or owes (minor units).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fee: Option<u64>,
}

/// A revocation order the PSD has not confirmed yet (forced revocation: the CA revoked the
/// certificate without the PSD's request), as the CA keeps it and the meter hands it out.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PendingRevocation {
    /// The order's number for the device (REVOKE KEY applies rising numbers only).
    pub counter: u32,
    /// The revoked certificate's serial (hex).
    pub serial: String,
    /// The key slot it certified.
    pub slot: u8,
    /// The revocation's reason (RFC 5280 name).
    pub reason: String,
    /// The signed order REVOKE KEY takes (hex).
    pub order: String,
    /// When the CA issued it (seconds since 1970, the CA's clock).
    pub created_at: u64,
    /// From when the meter refuses refills while it stays unconfirmed (`handed_over_at` +
    /// the meter's grace period); `None` from the CA itself, and for an order the PSD asked
    /// for (`forced` false), which never blocks refills.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refills_refused_from: Option<u64>,
    /// True for an order the CA forced (an operator's revocation, without the PSD's
    /// request): only these block refills. False for one the PSD asked for itself, and for
    /// every order stored before the marker existed. (Added field: older readers ignore it.)
    #[serde(default)]
    pub forced: bool,
    /// When the CA first handed the order to the meter (seconds since 1970, the CA's
    /// clock): the grace period counts from here, not from `created_at`. (Added field.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handed_over_at: Option<u64>,
}

/// `POST /v1/certificates/{serial}/revocation-order/close` at the CA (operator): withdraw
/// the certificate's pending order (the PSD cannot apply it, or need not).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RevocationOrderClosing {
    /// Why (1 to 200 characters, no control characters), kept with the order.
    pub reason: String,
}

/// A revocation order's record at the CA: what closing one answers.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RevocationOrderView {
    /// The device (16 hex).
    pub device_id: String,
    /// The order's number for the device.
    pub counter: u32,
    /// The revoked certificate's serial (hex).
    pub serial: String,
    /// The key slot it certified.
    pub slot: u8,
    /// Forced by the CA (true) or asked for by the PSD (false).
    pub forced: bool,
    /// When the CA issued it.
    pub created_at: u64,
    /// When the CA first handed it to the meter, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handed_over_at: Option<u64>,
    /// When the PSD's confirmation was recorded, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmed_at: Option<u64>,
    /// When it was closed without a confirmation, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<u64>,
    /// Who closed it: `operator`, or `ca` (the CA's own evidence: the slot holds a later
    /// attested key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_by: Option<String>,
    /// Why it was closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_reason: Option<String>,
}

/// `GET /v1/devices/{device_id}/revocation-orders` at the CA (meter) and
/// `GET /v1/devices/{device_id}/revocations` at the meter (the device's owner): the
/// device's unconfirmed orders, by rising counter.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PendingRevocations {
    /// The device (16 hex).
    pub device_id: String,
    /// Its unconfirmed orders, oldest (lowest counter) first.
    pub orders: Vec<PendingRevocation>,
}
