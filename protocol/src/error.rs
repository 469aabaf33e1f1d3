//! Refusals on the wire: `{"error": {"code", "step", "message"}}` (`docs/refill.md`
//! § Errors) and the codes the services answer with.

use serde::{Deserialize, Serialize};

use crate::state::wire_enum;

/// The JSON body: `{"error": {"code", "step", "message"}}`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// Inside [`ErrorBody`]. `code` stays a string: a service passes on codes of the services
/// behind it unchanged, and a client must read codes newer than itself.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorDetail {
    /// Machine-readable code, one of [`ErrorCode`] today.
    pub code: String,
    /// The step that refused.
    pub step: String,
    /// Human-readable explanation.
    pub message: String,
}

wire_enum! {
    /// Every error code a service answers with (`docs/refill.md` § Errors).
    ErrorCode {
        /// Malformed JSON, hex or field (400).
        BadRequest = "bad_request",
        /// No such endpoint (404).
        NotFound = "not_found",
        /// No identity where the route needs one: no client certificate, no session token
        /// or API key, or an expired or unknown one (401).
        Unauthenticated = "unauthenticated",
        /// An identity the route does not allow (403).
        Forbidden = "forbidden",
        /// Too many requests from this caller; try again after `Retry-After` (429).
        RateLimited = "rate_limited",
        /// The device is not registered (404).
        UnknownDevice = "unknown_device",
        /// Registered already with other keys (409).
        DeviceConflict = "device_conflict",
        /// The call does not fit the object's state (409).
        WrongState = "wrong_state",
        /// Amount zero or out of range (400).
        AmountInvalid = "amount_invalid",
        /// The audit bytes do not decode (400).
        AuditMalformed = "audit_malformed",
        /// The audit's signature does not verify under the device's registered public key
        /// (422).
        AuditSignatureInvalid = "audit_signature_invalid",
        /// The audit answers another nonce (422).
        AuditNonceMismatch = "audit_nonce_mismatch",
        /// The audit does not follow from the last accepted one (422).
        AuditInconsistent = "audit_inconsistent",
        /// The combination is not the one the RC signed (403).
        CombinationNotAuthorized = "combination_not_authorized",
        /// The issuer revoked the device at the KMS: no audit of it is verified, no refill
        /// message or receipt made for it (410).
        DeviceRevoked = "device_revoked",
        /// The device was personalized for the retired K1 suite; personalize it again (409).
        LegacyRefillSuite = "legacy_refill_suite",
        /// No refill with this client transaction ID (404).
        UnknownRefill = "unknown_refill",
        /// The device's audits disagreed with the ledger; refused until an operator
        /// resolves the alarm (409).
        DeviceQuarantined = "device_quarantined",
        /// Another refill of the device is outstanding (409).
        RefillOutstanding = "refill_outstanding",
        /// The confirming audit does not show the refill applied (409).
        NotApplied = "not_applied",
        /// No such inspection (404).
        UnknownInspection = "unknown_inspection",
        /// No granted license order with this client transaction ID (404).
        UnknownLicenseOrder = "unknown_license_order",
        /// A license order names a license number none of the customer's devices holds
        /// (403): another customer's license cannot be asked for.
        LicenseNotYours = "license_not_yours",
        /// No such account (404).
        UnknownAccount = "unknown_account",
        /// The deposit available is less than the amount (402).
        InsufficientDeposit = "insufficient_deposit",
        /// No such combination (404).
        UnknownCombination = "unknown_combination",
        /// A purse card the demo room did not make (404).
        UnknownCard = "unknown_card",
        /// Another service could not be reached (503, or 502 from the demo room's proxy).
        ServiceUnavailable = "service_unavailable",
        /// The service's own storage or an invariant failed (500).
        Internal = "internal",
    }
}
