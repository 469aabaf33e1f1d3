//! The JSON messages of the three services (`docs/refill.md`), shared by the servers, the
//! meter's calls to the KMS and the recharging center, and the tests. Byte strings travel
//! as hex, amounts as integer minor units.

use openpsd_core::psd::audit::AuditData;
use openpsd_core::psd::refill::RefillCombination;
use openpsd_core::types::{Amount, LicenseId, RefillCount};
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::{ApiError, ErrorDetail};

// ------------------------------------------------------------------------------- KMS

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
    pub fn to_core(&self, step: &str) -> Result<RefillCombination, ApiError> {
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

// ------------------------------------------------------------------- recharging center

/// `POST /v1/accounts` body.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct NewAccount {
    /// The customer's account ID.
    pub account_id: String,
}

/// An account's balances. Always `deposited = available + held + debited`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Account {
    /// Account ID.
    pub account_id: String,
    /// Deposit that can still be held for refills.
    pub available: u64,
    /// Held for refill combinations not settled yet.
    pub held: u64,
    /// Refills that became value in a PSD.
    pub debited: u64,
    /// Every deposit ever made.
    pub deposited: u64,
}

/// `POST /v1/accounts/{id}/deposits` body.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Deposit {
    /// Minor units.
    pub amount: u64,
    /// The payment's reference; a deposit is booked once per reference.
    pub reference: String,
}

/// `POST /v1/combinations` body (step 260).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct HoldRequest {
    /// Idempotency key: the same request ID is the same hold.
    pub request_id: String,
    /// The account to hold the amount on.
    pub account_id: String,
    /// Device ID.
    pub device_id: String,
    /// License of the audited register set.
    pub license: u32,
    /// Amount, minor units.
    pub amount: u64,
    /// Audited control sum.
    pub control_sum: u64,
    /// Audited refill count.
    pub refills: u32,
}

/// `GET /v1/combinations/{id}`: a combination the RC made, with its hold's state.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CombinationRecord {
    /// The combination.
    pub combination: Combination,
    /// Its signature.
    pub signature: String,
    /// `held`, `applied` or `released`.
    pub state: String,
    /// The request that made it.
    pub request_id: String,
    /// The account charged.
    pub account_id: String,
}

/// `POST /v1/combinations/{id}/settle` body and answer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Settle {
    /// `applied` (debit the hold) or `released` (back to available).
    pub outcome: Outcome,
}

/// How a hold ends.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The combination became value in the PSD: debit.
    Applied,
    /// It can no longer apply: the amount goes back to the deposit.
    Released,
}

impl Outcome {
    /// The state name stored and reported.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Released => "released",
        }
    }
}

/// `POST /v1/combinations/{id}/settle` answer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Settled {
    /// The combination.
    pub combination_id: String,
    /// `applied` or `released`.
    pub state: String,
}

/// `GET /v1/ledger`: totals over all accounts, for reconciliation.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Ledger {
    /// Number of accounts.
    pub accounts: u64,
    /// Sum of available.
    pub available: u64,
    /// Sum of held.
    pub held: u64,
    /// Sum of debited.
    pub debited: u64,
    /// Sum of deposited.
    pub deposited: u64,
    /// Combinations whose hold is open.
    pub combinations_held: u64,
    /// Combinations settled applied, and the sum of their amounts (= debited).
    pub combinations_applied: u64,
    /// Sum of the applied combinations' amounts.
    pub applied_amount: u64,
    /// Combinations released.
    pub combinations_released: u64,
}

// ------------------------------------------------------------------------ meter server

/// `POST /v1/refills` body (step 200).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RefillRequest {
    /// The host's idempotency key for this refill.
    pub client_txn_id: String,
    /// Device ID.
    pub device_id: String,
    /// Register set index.
    pub set: u8,
    /// The customer account paying.
    pub account_id: String,
    /// Amount, minor units.
    pub amount: u64,
}

/// A refill as the meter server has it: every field issued so far.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RefillView {
    /// The host's transaction ID.
    pub client_txn_id: String,
    /// Device ID.
    pub device_id: String,
    /// Register set index.
    pub set: u8,
    /// Account charged.
    pub account_id: String,
    /// Amount, minor units.
    pub amount: u64,
    /// `awaiting_audit`, `message_issued`, `completed`, `released` or `refused`.
    pub state: String,
    /// Nonce for the AUDIT that starts the refill, 32 hex.
    pub nonce: String,
    /// The combination's ID, once the recharging center made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub combination_id: Option<String>,
    /// The refill message for REFILL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refill_message: Option<String>,
    /// The receipt for RECEIPT (acceptance of the refill's audit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<String>,
    /// Nonce for the AUDIT after REFILL that confirms it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirm_nonce: Option<String>,
    /// Why a `refused` refill was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}

/// `POST /v1/inspections` body.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct InspectionRequest {
    /// Device ID.
    pub device_id: String,
    /// Register set to audit.
    pub set: u8,
}

/// An inspection (plain audit).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct InspectionView {
    /// Its ID, 32 hex.
    pub inspection_id: String,
    /// Device ID.
    pub device_id: String,
    /// Register set.
    pub set: u8,
    /// Nonce for the AUDIT.
    pub nonce: String,
    /// The receipt, once the audit was accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<String>,
}
