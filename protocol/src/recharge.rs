//! The recharging center's messages (`docs/refill.md` § Recharging center): accounts,
//! deposits, holds that become signed combinations, settlement, the ledger.

use serde::{Deserialize, Serialize};

use crate::kms::Combination;
use crate::state::{HoldState, Outcome};

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
    pub state: HoldState,
    /// The request that made it.
    pub request_id: String,
    /// The account charged.
    pub account_id: String,
    /// The void the RC signed for it, if the meter asked for one (`POST .../void`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub void_combination_id: Option<String>,
}

/// `POST /v1/combinations/{id}/settle` body and answer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Settle {
    /// `applied` (debit the hold) or `released` (back to available).
    pub outcome: Outcome,
}

/// `POST /v1/combinations/{id}/settle` answer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Settled {
    /// The combination.
    pub combination_id: String,
    /// `applied` or `released`.
    pub state: HoldState,
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
