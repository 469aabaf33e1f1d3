//! The meter server's messages (`docs/refill.md` § Meter server): the host's refill and
//! inspection calls.

use serde::{Deserialize, Serialize};

use crate::error::ErrorDetail;
use crate::state::RefillState;

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
    pub state: RefillState,
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
