//! A merchant terminal (seed 002 Fig. 2 and 5, CEPS-style): takes payment from a purse card
//! and keeps the signed purchase records in a batch that can be totalled and closed.
//!
//! The terminal holds no secret: its ID, its counter, and the scheme issuer's public key,
//! with which it checks each card's certificate on its purchase key, and with that key each
//! signed purchase record. Everything lives in one SQLite file (WAL, `synchronous=FULL`:
//! a commit is on disk before the call that made it returns). `docs/terminal.md` has the
//! schema and the rules; in short:
//!
//! * the terminal counter is reserved — persisted, incremented — *before* the PURCHASE is
//!   sent, with an `attempts` row naming card, amount and date, so a counter is never used
//!   for two different purchases, even across a crash;
//! * a record is kept only if its signature verifies under the card's certified key and it
//!   echoes this terminal, the reserved counter, the amount and the date;
//! * a record already in the terminal — same card ID and card purchase number, or same
//!   terminal counter — is refused as a replay and not added;
//! * a lost reply is retried with the same counter (and date): the card answers the same
//!   request with the same record, debited once. A `pay` whose reply stayed lost leaves its
//!   attempt open; paying the same amount with the same card again finishes it.
//!
//! A library of its own (`openpsd-terminal`), apart from the mailer's CLI: it talks to the
//! purse through core's client layer and to its file through `openpsd-sqlite`; the
//! `openpsd pay`, `batch` and `terminal` commands call it. `pay.rs` takes a payment,
//! `batch.rs` keeps and totals the records, `refusal.rs` says a card's refusal in words.

use std::path::Path;

use openpsd_core::client::transfer::TransferError;
use openpsd_core::crypto;
use openpsd_core::types::{Amount, CardId, SchemeId, TerminalId};
use openpsd_sqlite::now_secs;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};

mod batch;
mod pay;
mod refusal;

pub use batch::RecordExport;
pub use refusal::explain;

/// The terminal database's schema (idempotent).
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS terminal (
    singleton         INTEGER PRIMARY KEY CHECK (singleton = 1),
    terminal_id       TEXT    NOT NULL,
    scheme            INTEGER NOT NULL,
    issuer_public_key TEXT    NOT NULL,
    last_counter      INTEGER NOT NULL,
    created_at        INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS batches (
    seq       INTEGER PRIMARY KEY,
    opened_at INTEGER NOT NULL,
    closed_at INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS one_open_batch ON batches ((closed_at IS NULL))
    WHERE closed_at IS NULL;
CREATE TABLE IF NOT EXISTS attempts (
    counter        INTEGER PRIMARY KEY,
    card_id        TEXT    NOT NULL,
    amount         INTEGER NOT NULL,
    date           TEXT    NOT NULL,
    card_purchases INTEGER NOT NULL,
    state          TEXT    NOT NULL CHECK (state IN ('sent', 'recorded', 'void')),
    note           TEXT,
    created_at     INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS purchases (
    id               INTEGER PRIMARY KEY,
    batch            INTEGER NOT NULL REFERENCES batches (seq),
    card_id          TEXT    NOT NULL,
    card_number      INTEGER NOT NULL,
    terminal_counter INTEGER NOT NULL UNIQUE,
    amount           INTEGER NOT NULL,
    balance_after    INTEGER NOT NULL,
    date             TEXT    NOT NULL,
    record           BLOB    NOT NULL,
    card_public_key  BLOB    NOT NULL,
    certificate      BLOB    NOT NULL,
    recorded_at      INTEGER NOT NULL,
    UNIQUE (card_id, card_number)
);
";

/// Why the terminal refused or failed.
#[derive(Debug)]
pub enum TerminalError {
    /// The database failed (nothing the failed transaction wrote was kept).
    Db(String),
    /// The terminal database has not been initialized (`openpsd terminal init`).
    NotInitialized,
    /// The card or the link to it refused or failed.
    Card(TransferError),
    /// The purse is blank.
    BlankPurse,
    /// The card's purchase key is not certified by this terminal's issuer.
    NotCertified(CardId),
    /// The card belongs to another scheme.
    OtherScheme {
        /// The card.
        card: CardId,
        /// Its scheme.
        scheme: SchemeId,
    },
    /// The signed record does not verify or does not echo the request.
    BadRecord(String),
    /// The record is in the terminal already.
    Replayed(String),
    /// The PURCHASE's reply was lost and retries did not get it; the attempt stays open.
    ReplyLost {
        /// The reserved terminal counter.
        counter: u32,
        /// Why the link failed.
        why: String,
    },
    /// An earlier purchase's reply was lost, with another card or amount.
    Unfinished {
        /// Its terminal counter.
        counter: u32,
        /// Its card.
        card: String,
        /// Its amount.
        amount: Amount,
    },
    /// Bad input (the message says which).
    Invalid(String),
}

impl std::fmt::Display for TerminalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TerminalError::Db(e) => write!(f, "terminal database: {e}"),
            TerminalError::NotInitialized => {
                write!(f, "the terminal database is not initialized (openpsd terminal init)")
            }
            TerminalError::Card(e) => f.write_str(&explain(e)),
            TerminalError::BlankPurse => write!(f, "the purse is blank (not personalized)"),
            TerminalError::NotCertified(c) => write!(
                f,
                "card {c}: its purchase key is not certified by this terminal's scheme issuer; not accepted"
            ),
            TerminalError::OtherScheme { card, scheme } => write!(
                f,
                "card {card} belongs to scheme {}, not this terminal's; not accepted",
                scheme.0
            ),
            TerminalError::BadRecord(why) => write!(f, "purchase record refused: {why}"),
            TerminalError::Replayed(why) => write!(f, "replayed purchase refused: {why}"),
            TerminalError::ReplyLost { counter, why } => write!(
                f,
                "the card's reply to purchase counter {counter} was lost ({why}); pay the same amount with the same card again to finish it (the card returns the same record, debited once)"
            ),
            TerminalError::Unfinished {
                counter,
                card,
                amount,
            } => write!(
                f,
                "the terminal has an unfinished purchase (counter {counter}, card {card}, amount {amount}) whose reply was lost: present that card and pay {amount} again to finish it, or drop it with `openpsd terminal void`"
            ),
            TerminalError::Invalid(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for TerminalError {}

impl From<rusqlite::Error> for TerminalError {
    fn from(e: rusqlite::Error) -> Self {
        TerminalError::Db(e.to_string())
    }
}

impl From<TransferError> for TerminalError {
    fn from(e: TransferError) -> Self {
        TerminalError::Card(e)
    }
}

type Result<T> = std::result::Result<T, TerminalError>;

/// A purchase the terminal kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    /// The batch it went into.
    pub batch: i64,
    /// The card.
    pub card_id: String,
    /// The card's purchase number.
    pub card_number: u32,
    /// The terminal counter.
    pub terminal_counter: u32,
    /// Amount, minor units.
    pub amount: u64,
    /// The card's balance after, minor units.
    pub balance_after: u64,
    /// Date of the purchase.
    pub date: String,
    /// Whether this finished an earlier purchase whose reply was lost.
    pub resumed: bool,
    /// The signed record, hex.
    pub record: String,
    /// The card's purchase public key, hex.
    pub public_key: String,
    /// The issuer's certificate on it, hex.
    pub certificate: String,
}

/// A batch's totals.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchSummary {
    /// Sequence number.
    pub seq: i64,
    /// Closed (submitted) at, seconds since 1970; `None` while open.
    pub closed_at: Option<i64>,
    /// Purchases.
    pub count: u64,
    /// Their sum, minor units.
    pub total: u64,
    /// Per card: card ID, purchases, sum.
    pub per_card: Vec<CardTotal>,
}

/// One card's share of a batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardTotal {
    /// Card ID, hex.
    pub card_id: String,
    /// Purchases.
    pub count: u64,
    /// Their sum, minor units.
    pub total: u64,
}

/// The terminal's fixed data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TerminalInfo {
    /// Terminal ID.
    pub id: TerminalId,
    /// Scheme.
    pub scheme: SchemeId,
    /// The issuer's public key.
    pub issuer_public_key: [u8; crypto::PUBLIC_KEY_LEN],
    /// The last terminal counter reserved.
    pub last_counter: u32,
}

/// A merchant terminal on its database.
pub struct Terminal {
    conn: Connection,
    info: TerminalInfo,
    /// Re-sends of a PURCHASE whose reply was lost, within one `pay`.
    pub retries: u32,
}

fn sql_int(v: u64) -> Result<i64> {
    openpsd_sqlite::to_sql_int(v)
        .ok_or_else(|| TerminalError::Invalid("amount above the storable range".into()))
}

fn from_sql(v: i64) -> Result<u64> {
    openpsd_sqlite::from_sql_int(v)
        .ok_or_else(|| TerminalError::Db("negative value in the database".into()))
}

/// The terminal's database, opened as every openpsd database is (`openpsd-sqlite`: WAL,
/// `synchronous=FULL`, foreign keys, busy timeout), with its schema applied.
fn open_db(path: &Path) -> Result<Connection> {
    openpsd_sqlite::open(path, SCHEMA).map_err(|e| TerminalError::Db(e.to_string()))
}

fn card_hex(card: CardId) -> String {
    hex::encode_upper(card.0)
}

impl Terminal {
    /// Creates the terminal database at `path` (which must not hold a terminal yet).
    pub fn init(
        path: &Path,
        id: TerminalId,
        scheme: SchemeId,
        issuer_public_key: [u8; crypto::PUBLIC_KEY_LEN],
    ) -> Result<Terminal> {
        if !crypto::is_valid_public_key(&issuer_public_key) {
            return Err(TerminalError::Invalid(
                "the issuer public key is not a P-256 point".into(),
            ));
        }
        let mut conn = open_db(path)?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let exists: bool = tx.query_row("SELECT count(*) > 0 FROM terminal", [], |r| r.get(0))?;
        if exists {
            return Err(TerminalError::Invalid(format!(
                "{} holds a terminal already; not changing it",
                path.display()
            )));
        }
        tx.execute(
            "INSERT INTO terminal (singleton, terminal_id, scheme, issuer_public_key, last_counter, created_at)
             VALUES (1, ?1, ?2, ?3, 0, ?4)",
            params![
                hex::encode_upper(id.0),
                scheme.0,
                hex::encode(issuer_public_key),
                now_secs()
            ],
        )?;
        tx.commit()?;
        Terminal::open(path)
    }

    /// Opens an initialized terminal database.
    pub fn open(path: &Path) -> Result<Terminal> {
        if !path.exists() {
            return Err(TerminalError::Invalid(format!(
                "{}: no terminal database (openpsd terminal init)",
                path.display()
            )));
        }
        let conn = open_db(path)?;
        let row: Option<(String, u32, String, u32)> = conn
            .query_row(
                "SELECT terminal_id, scheme, issuer_public_key, last_counter FROM terminal",
                [],
                |r| r.try_into(),
            )
            .optional()?;
        let (id, scheme, key, last_counter) = row.ok_or(TerminalError::NotInitialized)?;
        let bad = |what: &str| TerminalError::Db(format!("terminal row: {what}"));
        let id = hex::decode(&id)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad("terminal_id"))?;
        let issuer_public_key = hex::decode(&key)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad("issuer_public_key"))?;
        Ok(Terminal {
            conn,
            info: TerminalInfo {
                id: TerminalId(id),
                scheme: SchemeId(scheme),
                issuer_public_key,
                last_counter,
            },
            retries: 2,
        })
    }

    /// The terminal's fixed data.
    pub fn info(&self) -> &TerminalInfo {
        &self.info
    }
}
