//! Customers of the meter server (`docs/security.md` § Customers): signing up, logging in
//! for a short-lived session token, API keys for machines, and who one is.
//!
//! Every other meter route takes the token or key as `Authorization: Bearer …`; the demo
//! room keeps a browser's token in an HttpOnly cookie instead and adds the header itself.

use serde::{Deserialize, Serialize};

use crate::recharge::Account;

/// `POST /v1/customers` (sign up) and `POST /v1/sessions` (log in) body.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Credentials {
    /// 3 to 64 of `a-z 0-9 . _ @ -`.
    pub username: String,
    /// At least 10 characters (at most 1,024).
    pub password: String,
}

/// A customer: who signed up, and the recharging-center account that pays their refills.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CustomerView {
    /// The customer's ID.
    pub customer_id: String,
    /// The name they log in with.
    pub username: String,
    /// Their deposit account.
    pub account_id: String,
}

/// `POST /v1/sessions` answer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Session {
    /// The bearer token (shown once; the meter keeps only its hash).
    pub token: String,
    /// When it stops working (Unix seconds).
    pub expires_at: i64,
    /// Whose it is.
    pub customer: CustomerView,
}

/// `POST /v1/api-keys` body.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct NewApiKey {
    /// What the key is for (a name the customer chooses).
    pub label: String,
}

/// `POST /v1/api-keys` answer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApiKey {
    /// The key's ID (for revoking it).
    pub key_id: String,
    /// The key itself (shown once; the meter keeps only its hash).
    pub key: String,
    /// Its label.
    pub label: String,
}

/// `GET /v1/me` answer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Me {
    /// The customer.
    pub customer: CustomerView,
    /// Their account's balances.
    pub account: Account,
}
