//! The creditor's messages (seed 004 Figs. 7-9, `docs/creditor.md`): an operator grants a
//! customer account a credit limit; the customer's PSD generates a payment key and attests
//! it; the customer asks the meter for a line, which relays it to the **creditor** with the
//! account and username of its session; the creditor answers the line of credit
//! certificate LOAD CREDIT LINE installs. A merchant presents the payment certificates PAY
//! made to the creditor, which settles each (line, counter) once and in order.

use serde::{Deserialize, Serialize};

/// Error codes of the creditor (beyond [`crate::ErrorCode`]).
pub mod code {
    /// The attestation does not decode or its signatures do not verify, or it is not a
    /// payment key's (422).
    pub const ATTESTATION_INVALID: &str = "attestation_invalid";
    /// The account has no limit, or its lines so far and the amount asked are above it
    /// (409).
    pub const OVER_LIMIT: &str = "over_limit";
    /// The same request ID came with another request, or the key has a line for another
    /// account (409).
    pub const LINE_CONFLICT: &str = "line_conflict";
    /// Not a payment certificate, not signed by the line's key, not drawn on a line of this
    /// creditor, or the line is expired (422).
    pub const PAYMENT_INVALID: &str = "payment_invalid";
    /// Presented by another merchant than the one it names (403).
    pub const OTHER_MERCHANT: &str = "other_merchant";
    /// An earlier payment of the line is not settled yet (409): present in counter order.
    pub const OUT_OF_ORDER: &str = "out_of_order";
    /// The payment is dated at or after the operator revoked its line (409): not settled.
    pub const LINE_REVOKED: &str = "line_revoked";
    /// Its remaining does not add up to the line less the amounts settled (over the line,
    /// a payment altered or missing), or another payment has its counter (409).
    pub const INCONSISTENT: &str = "inconsistent";
}

/// `POST /v1/limits` (operator): the most an account may be made to owe: the amounts of
/// every line it was ever granted (`docs/creditor.md` § The limit).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LimitRequest {
    /// The customer's account (the recharging center's account ID, as the meter's session).
    pub account_id: String,
    /// The limit in minor units (0 withdraws it: no new line).
    pub limit: u64,
    /// ISO 4217 code (three upper-case letters).
    pub currency: String,
}

/// An account's limit (the answer to `POST /v1/limits`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LimitView {
    /// The account.
    pub account_id: String,
    /// Its limit.
    pub limit: u64,
    /// Its currency.
    pub currency: String,
    /// Unix seconds of the grant.
    pub granted_at: i64,
}

/// `POST /v1/credit-lines` at the meter (customer → meter).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct MeterLineRequest {
    /// The customer's ID for this request (16 hex): the same again answers the same line.
    pub request_id: String,
    /// The device (16 hex) the attestation comes from: one of the customer's.
    pub device_id: String,
    /// GENERATE KEY's answer for a payment key (purpose 4), hex.
    pub attestation: String,
    /// The line asked for, minor units (at most the account's limit).
    pub amount: u64,
}

/// `POST /v1/lines` at the creditor (meter → creditor).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LineRequest {
    /// The customer's request ID (16 hex).
    pub request_id: String,
    /// The payment key's attestation, hex.
    pub attestation: String,
    /// The line asked for.
    pub amount: u64,
    /// The account of the customer who owns the device (the meter's session).
    pub account_id: String,
    /// That customer's username: the certificate's common name.
    pub username: String,
}

/// The answer to a line request (creditor and meter alike).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LineAnswer {
    /// The line of credit certificate, DER, hex (LOAD CREDIT LINE's data).
    pub certificate: String,
    /// The line's number (rises per account).
    pub number: u32,
    /// The amount granted.
    pub amount: u64,
    /// Its currency.
    pub currency: String,
    /// SHA-256 of the certificate, hex: what payment certificates name as their line.
    pub line_hash: String,
    /// The creditor's certificate, DER, hex (the PSD's `Creditor` anchor names its key).
    pub creditor_certificate: String,
}

/// `POST /v1/lines/revoke` (operator): a line revoked (payments dated from then on are not
/// settled).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RevokeLineRequest {
    /// SHA-256 of the line certificate, hex (a payment certificate's line, a settlement
    /// record's `line_hash`).
    pub line_hash: String,
}

/// A revoked line (the answer to `POST /v1/lines/revoke`; revoked again, the same answer).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RevokedLine {
    /// The line.
    pub line_hash: String,
    /// Its account.
    pub account_id: String,
    /// Its number.
    pub number: u32,
    /// Unix seconds of the (first) revocation: payments dated from then on are refused.
    pub revoked_at: i64,
}

/// `POST /v1/settlements` (merchant): one payment certificate.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SettlementRequest {
    /// The payment certificate PAY made, DER, hex.
    pub payment: String,
}

/// A settled payment (the answer to `POST /v1/settlements`; the same presentment again
/// answers the same record).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Settlement {
    /// SHA-256 of the line certificate, hex.
    pub line_hash: String,
    /// The payment's counter on the line.
    pub counter: u32,
    /// The merchant paid.
    pub merchant: String,
    /// The merchant's order.
    pub order: String,
    /// The amount settled.
    pub amount: u64,
    /// The currency.
    pub currency: String,
    /// The line less every amount settled on it up to and including this one.
    pub remaining: u64,
    /// The device that paid, 16 upper-case hex.
    pub device_id: String,
    /// The account the line belongs to.
    pub account_id: String,
    /// SHA-256 of the payment certificate, hex.
    pub payment_hash: String,
    /// Unix seconds of the settlement.
    pub settled_at: i64,
    /// The creditor's ECDSA P-256/SHA-256 signature (`r ‖ s`, hex) over
    /// [`Settlement::signed_bytes`]: a receipt the merchant can show.
    pub signature: String,
}

impl Settlement {
    /// What the creditor signs: `openpsd settlement v1` and the fields, one per line
    /// (`line_hash counter merchant order amount currency remaining device_id account_id
    /// payment_hash settled_at`), LF-terminated.
    pub fn signed_bytes(&self) -> Vec<u8> {
        format!(
            "openpsd settlement v1\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n",
            self.line_hash,
            self.counter,
            self.merchant,
            self.order,
            self.amount,
            self.currency,
            self.remaining,
            self.device_id,
            self.account_id,
            self.payment_hash,
            self.settled_at
        )
        .into_bytes()
    }
}
