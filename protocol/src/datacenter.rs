//! The virtual meter's HTTP contract (seed 001, issue 16; `docs/virtual-meter.md` §9):
//! what a mailer's browser sends the data center (sign-up, log-in, the meter, indicia,
//! history) and what the data center asks the vendor (a grant to create a meter in its box).
//! Binary fields travel as lower-case hex; amounts in the currency's smallest unit.

use serde::{Deserialize, Serialize};

/// Error codes of the data center and the vendor's grant route (beside the shared
/// [`crate::ErrorCode`]s).
pub mod code {
    /// The vendor granted this meter ID, or this slot of this box, for something else (409).
    pub const GRANT_CONFLICT: &str = "grant_conflict";
    /// The box refused the meter record: its MAC, freshness, slot or owner does not hold
    /// (an alarm is logged; 409).
    pub const RECORD_REFUSED: &str = "record_refused";
    /// The meter's descending register does not cover the postage (409).
    pub const INSUFFICIENT_FUNDS: &str = "insufficient_funds";
    /// The box refused the request itself (limits, date, another request under this
    /// transaction ID; 409).
    pub const BOX_REFUSED: &str = "box_refused";
    /// The data center has no free slot left (503).
    pub const NO_SLOT: &str = "no_slot";
    /// Too many failed log-ins for this username: wait (429).
    pub const LOGIN_THROTTLED: &str = "login_throttled";
}

/// `POST /v1/vbox/grants` at the vendor (the data center only): a grant for one meter at one
/// slot of one box. The vendor keeps one grant per meter ID and one per (box, slot): the same
/// request again answers the same grant, any other under either is `409 grant_conflict`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantRequest {
    /// The box, 16 hex digits (its 8-byte ID).
    pub box_id: String,
    /// The meter ID, 16 hex digits.
    pub meter_id: String,
    /// The slot in the box's forest.
    pub slot: u32,
    /// The mailer who owns it, 32 hex digits.
    pub mailer_id: String,
    /// The postal license.
    pub license: u32,
    /// The origin postal code (ASCII digits).
    pub origin: String,
    /// Largest postage per piece.
    pub max_postage: u64,
    /// Largest descending register.
    pub max_dr: u64,
}

/// The vendor's answer: CREATE METER's signed grant, hex.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantAnswer {
    /// The grant's fields and the vendor's signature (`MeterGrant::sign`), hex.
    pub grant: String,
}

/// `POST /v1/mailers` (sign-up) and `POST /v1/sessions` (log-in).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailerCredentials {
    /// 3 to 64 of a-z 0-9 . _ @ -.
    pub username: String,
    /// 10 to 256 bytes.
    pub password: String,
}

/// A session: what log-in (and sign-up) answers. Send it as `Authorization: Bearer <token>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailerSession {
    /// `dcs_` and 64 hex digits; the data center keeps only its SHA-256.
    pub token: String,
    /// Unix seconds after which the token is refused.
    pub expires_at: i64,
    /// The mailer's ID, 32 hex digits.
    pub mailer_id: String,
}

/// `GET /v1/meter`: the mailer's meter as its record (checked by the box at the last
/// command) says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeterView {
    /// The meter ID (the indicia's device ID), 16 hex digits.
    pub meter_id: String,
    /// Its slot in the box's forest.
    pub slot: u32,
    /// Postage available (descending register).
    pub balance: u64,
    /// Postage used (ascending register).
    pub used: u64,
    /// Pieces printed.
    pub pieces: u32,
    /// Refills applied.
    pub refills: u32,
    /// Largest postage per piece.
    pub max_postage: u64,
    /// The postal license.
    pub license: u32,
    /// The origin postal code.
    pub origin: String,
    /// The meter's indicium key (SEC1 uncompressed, hex): what the post office verifies with.
    pub public_key: String,
}

/// `POST /v1/indicia`: one piece.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndiciumOrder {
    /// The client's transaction ID, 16 hex digits: the same ID again answers the same
    /// indicium, charged once (a double click, a retry, a reprint).
    pub client_txn_id: String,
    /// Postage.
    pub postage: u64,
    /// Rate category.
    pub rate: u8,
    /// Destination postal code.
    pub destination: String,
}

/// An indicium the box made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndiciumIssued {
    /// The client's transaction ID.
    pub client_txn_id: String,
    /// The signed indicium (`psd::indicium`, version 1), hex: what the label's DataMatrix holds.
    pub indicium: String,
    /// Postage.
    pub postage: u64,
    /// The balance after it.
    pub balance: u64,
    /// Whether this answer is a reprint of an indicium issued before (charged then, not now).
    pub reprint: bool,
}

/// `POST /v1/indicia/batch`: several pieces for the session's meter in one box command
/// (at most 16). Each order has its own client transaction ID: an order whose ID was issued
/// before with the same request is answered from the database (`reprint: true`), charged
/// then; an ID issued before for another request refuses the whole batch (409, nothing
/// charged); the others are issued together, charged once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndiciumBatch {
    /// The orders, in the order their indicia are made.
    pub orders: Vec<IndiciumOrder>,
}

/// The answer of `POST /v1/indicia/batch`: one indicium per order, in the orders' order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndiciumBatchIssued {
    /// The indicia.
    pub indicia: Vec<IndiciumIssued>,
}

/// One line of `GET /v1/history`: a transaction record the box signed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// `create`, `issue`, `refill` or `reprint`.
    pub kind: String,
    /// The shard's sequence number of the record.
    pub sequence: u64,
    /// The amount (postage, or refill).
    pub amount: u64,
    /// Ascending register after it.
    pub used: u64,
    /// Descending register after it.
    pub balance: u64,
    /// Pieces after it.
    pub pieces: u32,
    /// The transaction record the box signed, hex (`vbox::txn`): check it with the box's key.
    pub record: String,
}

/// One log-in of `GET /v1/history`: a log-in record the box signed (seed 001's transaction
/// box 42).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginEntry {
    /// The box's sequence of approved log-ins (over all mailers).
    pub sequence: u64,
    /// The data center's time of the log-in (Unix seconds), as the box signed it.
    pub at: u64,
    /// The log-in record the box signed, hex (`vbox::login`): check it with the box's key.
    pub record: String,
}

/// `GET /v1/history`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// The box's transaction key (SEC1 uncompressed, hex).
    pub box_key: String,
    /// Oldest first.
    pub entries: Vec<HistoryEntry>,
    /// The mailer's last log-ins the box signed (at most [`LOGINS_SHOWN`]), oldest first.
    /// Absent from a data center of before stop 40.
    #[serde(default)]
    pub logins: Vec<LoginEntry>,
}

/// How many of a mailer's log-ins `GET /v1/history` shows.
pub const LOGINS_SHOWN: usize = 20;

/// `POST /v1/vbox/boxes` at the KMS (an operator): a data center's box, whose transaction key
/// proves which meters it created.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoxRegistration {
    /// The box ID, 16 hex digits.
    pub box_id: String,
    /// Its transaction key (SEC1 uncompressed), 130 hex digits.
    pub txn_key: String,
    /// The depth of its shards' trees.
    pub depth: u8,
}

/// `POST /v1/vbox/meters` at the KMS (the data center): registers a meter the box created, as
/// a device whose key is the meter's indicium key (so the post office verifies its indicia
/// and the KMS seals its refills). The proof: the box-signed CREATE transaction record, whose
/// root after must be the root of `record`'s leaf with `proof`'s siblings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeterRegistration {
    /// The sealed meter record the CREATE METER answered, hex.
    pub record: String,
    /// Its leaf's siblings at that moment (depth × 32 bytes), hex.
    pub proof: String,
    /// The CREATE transaction record, hex.
    pub transaction: String,
}

/// `POST /v1/refills` at the data center: add `amount` to the meter from the mailer's deposit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefillOrder {
    /// The client's transaction ID, 16 hex digits: the same ID again is the same refill.
    pub client_txn_id: String,
    /// The amount.
    pub amount: u64,
}

/// A refill's outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefillDone {
    /// The client's transaction ID.
    pub client_txn_id: String,
    /// The amount credited.
    pub amount: u64,
    /// The balance after it.
    pub balance: u64,
    /// The recharging center's combination it applied.
    pub combination_id: String,
}

/// `GET /v1/deposit` at the data center: the mailer's deposit at the recharging center.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepositView {
    /// The recharging-center account (an operator books payments to it).
    pub account_id: String,
    /// Available for refills.
    pub available: u64,
    /// Held by refills in progress.
    pub held: u64,
    /// Moved into the meter.
    pub debited: u64,
}
