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
    /// The customer account paying: the device's owner (`POST /v1/devices`). Optional:
    /// absent, the owner pays; present, it must be the owner, or the device is unknown
    /// (404), so a stranger cannot probe which devices exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
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
    /// `awaiting_audit`, `message_issued`, `voiding`, `completed`, `released` or `refused`.
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
    /// Nonce for the AUDIT after REFILL that confirms it (after a cancel: the AUDIT after
    /// the void).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirm_nonce: Option<String>,
    /// The void (`voiding`): a refill message of amount zero with the same precondition as
    /// `refill_message`, for REFILL; whichever of the two the PSD applies first wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub void_message: Option<String>,
    /// The void's combination ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub void_combination_id: Option<String>,
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

/// One register set's values at registration: what personalization (zeros) or the
/// issuer's funding put on it. The first audit of the set must show exactly these.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Baseline {
    /// Control sum.
    pub control_sum: u64,
    /// Refill count.
    pub refills: u32,
}

/// `POST /v1/devices` at the meter (the operator's): the device, its owner and its
/// baselines.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct MeterRegistration {
    /// Device ID (registered with the KMS first).
    pub device_id: String,
    /// The recharging center account that owns it and pays its refills.
    pub account_id: String,
    /// One per register set, in set order; empty: every set starts at zero.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub baselines: Vec<Baseline>,
}

/// A registered device as the meter has it (`POST` / `GET /v1/devices/{id}`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct MeterDevice {
    /// Device ID.
    pub device_id: String,
    /// Owner account.
    pub account_id: String,
    /// Baselines, one per register set: the registration's values plus what an operator
    /// wrote off when resolving an alarm.
    pub baselines: Vec<Baseline>,
    /// Refused refills and inspections until an operator resolves its alarm.
    pub quarantined: bool,
}

/// An alarm: a verified audit that disagrees with the ledger.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Alarm {
    /// Its number.
    pub alarm_id: u64,
    /// Device.
    pub device_id: String,
    /// Register set.
    pub set: u8,
    /// What disagreed (`baseline`, `history`, `released_applied`, `settle_refused`).
    pub kind: String,
    /// Details.
    pub message: String,
    /// When (Unix seconds).
    pub raised_at: u64,
    /// When an operator resolved it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<u64>,
    /// The operator's note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// `GET /v1/alarms`: the counter and the alarms, newest first.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Alarms {
    /// Alarms ever raised.
    pub raised: u64,
    /// Alarms not resolved yet.
    pub open: u64,
    /// The alarms.
    pub alarms: Vec<Alarm>,
}

/// `POST /v1/devices/{id}/resolve` (the operator's): lifts the quarantine.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Resolve {
    /// Why, recorded with every open alarm of the device.
    pub note: String,
    /// Accept the audit that raised the (last) alarm as the set's state: the difference
    /// between its control sum and the ledger is written off into the baseline. Without
    /// it the quarantine is lifted and the next audit is checked as before.
    #[serde(default)]
    pub accept_audit: bool,
}
