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

use std::path::Path;

use openpsd_core::client::purse_apdu;
use openpsd_core::client::transfer::{purse_info, Side, TransferError};
use openpsd_core::client::Link;
use openpsd_core::purse::personal::{certificate_body, PurseInfo};
use openpsd_core::purse::purchase::{PurchaseRecord, PurchaseRequest};
use openpsd_core::purse::state::LogKind;
use openpsd_core::types::{Amount, CardId, Date, SchemeId, TerminalId};
use openpsd_core::{crypto, Status};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};

use openpsd_core::client::{exchange, PurseClient};

use crate::purse::explain;

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

use openpsd_sqlite::now_secs;

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
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
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

    /// Checks a purse's certificate and scheme against this terminal's issuer.
    fn accept_card(&self, info: &PurseInfo) -> Result<()> {
        if info.scheme != self.info.scheme {
            return Err(TerminalError::OtherScheme {
                card: info.card,
                scheme: info.scheme,
            });
        }
        if !info.certified_by(&self.info.issuer_public_key) {
            return Err(TerminalError::NotCertified(info.card));
        }
        Ok(())
    }

    /// The open attempt (a PURCHASE sent whose record is not kept yet), if any.
    fn open_attempt(&self) -> Result<Option<Attempt>> {
        self
            .conn
            .query_row(
                "SELECT counter, card_id, amount, date, card_purchases FROM attempts WHERE state = 'sent'
                 ORDER BY counter LIMIT 1",
                [],
                |r| {
                    Ok((
                        r.get::<_, u32>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, u32>(4)?,
                    ))
                },
            )
            .optional()?
            .map(|(counter, card, amount, date, card_purchases)| -> Result<Attempt> {
                Ok(Attempt {
                    counter,
                    card,
                    amount: Amount(from_sql(amount)?),
                    date: date
                        .parse()
                        .map_err(|_| TerminalError::Db("attempt date".into()))?,
                    card_purchases,
                })
            })
            .transpose()
    }

    fn set_attempt(&self, counter: u32, state: &str, note: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE attempts SET state = ?2, note = ?3 WHERE counter = ?1",
            params![counter, state, note],
        )?;
        Ok(())
    }

    /// Drops the open attempt (its reply was lost and the card is gone). Returns its
    /// counter, amount and card, if there was one.
    pub fn void_open_attempt(&mut self) -> Result<Option<(u32, String, Amount)>> {
        let Some(a) = self.open_attempt()? else {
            return Ok(None);
        };
        self.set_attempt(a.counter, "void", "voided by the operator")?;
        Ok(Some((a.counter, a.card, a.amount)))
    }

    /// Reserves the next counter with its attempt, committed before anything is sent.
    fn reserve(&mut self, card: CardId, amount: Amount, date: Date, purchases: u32) -> Result<u32> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let last: u32 = tx.query_row("SELECT last_counter FROM terminal", [], |r| r.get(0))?;
        let counter = last
            .checked_add(1)
            .ok_or_else(|| TerminalError::Invalid("the terminal counter is exhausted".into()))?;
        tx.execute("UPDATE terminal SET last_counter = ?1", params![counter])?;
        tx.execute(
            "INSERT INTO attempts (counter, card_id, amount, date, card_purchases, state, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, 'sent', ?6)",
            params![
                counter,
                card_hex(card),
                sql_int(amount.0)?,
                date.to_string(),
                purchases,
                now_secs()
            ],
        )?;
        tx.commit()?;
        self.info.last_counter = counter;
        Ok(counter)
    }

    /// Takes `amount` from the purse on `purse`: reads and checks the card, VERIFY PIN,
    /// reserves a counter, PURCHASE (re-sent with the same counter if the reply is lost),
    /// checks the signed record, and keeps it in the open batch.
    pub fn pay(
        &mut self,
        purse: &mut dyn Link,
        amount: Amount,
        date: Date,
        pin: &[u8],
    ) -> Result<Payment> {
        if amount == Amount::ZERO {
            return Err(TerminalError::Invalid(
                "the amount must be more than zero".into(),
            ));
        }
        sql_int(amount.0)?;
        let info = purse_info(purse)?.ok_or(TerminalError::BlankPurse)?;
        self.accept_card(&info)?;

        // A purchase whose reply was lost: finish it if this is its card and amount.
        let mut resume = None;
        if let Some(a) = self.open_attempt()? {
            if a.card != card_hex(info.card) || a.amount != amount {
                return Err(TerminalError::Unfinished {
                    counter: a.counter,
                    card: a.card,
                    amount: a.amount,
                });
            }
            match self.attempt_fate(purse, &info, &a)? {
                Fate::Resend => resume = Some(a),
                Fate::NeverMade => {
                    self.set_attempt(a.counter, "void", "the card never made it")?;
                }
                Fate::LostRecord(number) => {
                    let note = format!(
                        "the card paid it (its purchase {number}) but the record was lost and the card no longer holds it"
                    );
                    self.set_attempt(a.counter, "void", &note)?;
                    return Err(TerminalError::BadRecord(format!(
                        "purchase counter {}: {note}; settle it outside the batch",
                        a.counter
                    )));
                }
            }
        }

        exchange(purse, Side::Purse, "SELECT", &purse_apdu::select())?;
        exchange(purse, Side::Purse, "VERIFY", &purse_apdu::verify(pin))?;
        let (counter, date, resumed) = match &resume {
            Some(a) => (a.counter, a.date, true),
            None => (
                self.reserve(info.card, amount, date, info.purchases)?,
                date,
                false,
            ),
        };
        let req = PurchaseRequest {
            terminal: self.info.id,
            terminal_counter: counter,
            amount,
            date,
        };
        let apdu = purse_apdu::purchase(&req);
        let mut tries = 0;
        let mut lost = false;
        let bytes = loop {
            let result = if lost {
                // The card may have been reset meanwhile: select and verify again, then
                // the same request (same counter, same date).
                exchange(purse, Side::Purse, "SELECT", &purse_apdu::select())
                    .and_then(|_| exchange(purse, Side::Purse, "VERIFY", &purse_apdu::verify(pin)))
                    .and_then(|_| exchange(purse, Side::Purse, "PURCHASE", &apdu))
            } else {
                exchange(purse, Side::Purse, "PURCHASE", &apdu)
            };
            match result {
                Ok(b) => break b,
                Err(TransferError::Link(_, why)) => {
                    if tries >= self.retries {
                        return Err(TerminalError::ReplyLost { counter, why });
                    }
                    tries += 1;
                    lost = true;
                }
                Err(e) if lost || e.status() == Some(Status::MemoryFailure) => {
                    // The card may or may not have paid: the attempt stays open.
                    return Err(TerminalError::ReplyLost {
                        counter,
                        why: explain(&e),
                    });
                }
                Err(e) => {
                    // The card refused: it changed nothing, and the counter is spent.
                    self.set_attempt(counter, "void", &explain(&e))?;
                    return Err(e.into());
                }
            }
        };
        let rec = match self.check_record(&bytes, &info.public_key, Some(&req)) {
            Ok(r) => r,
            Err(e) => {
                self.set_attempt(counter, "void", &e.to_string())?;
                return Err(e);
            }
        };
        let mut payment = self.append(
            &rec,
            &bytes,
            &info.public_key,
            info.certificate.as_ref().map_or(&[][..], |c| &c[..]),
        )?;
        payment.resumed = resumed;
        Ok(payment)
    }

    /// What became of an open attempt, judged from the card's counters and log.
    fn attempt_fate(&self, purse: &mut dyn Link, info: &PurseInfo, a: &Attempt) -> Result<Fate> {
        if info.purchases == a.card_purchases {
            // The card has not paid anything since: sending it now is the purchase itself.
            return Ok(Fate::Resend);
        }
        let status = PurseClient::new(&mut *purse).status()?;
        let ours = |e: &&openpsd_core::purse::state::LogEntry| {
            e.kind == LogKind::Purchase
                && e.counterpart == self.info.id.0
                && e.amount == a.amount
                && e.number > a.card_purchases
        };
        let last = status
            .log
            .0
            .iter()
            .rev()
            .find(|e| e.kind == LogKind::Purchase);
        if info.purchases == a.card_purchases + 1 && last.as_ref().is_some_and(ours) {
            // Its last purchase is ours: the card answers the same request with its record.
            return Ok(Fate::Resend);
        }
        match status.log.0.iter().find(ours) {
            Some(e) => Ok(Fate::LostRecord(e.number)),
            None => Ok(Fate::NeverMade),
        }
    }

    /// Verifies a signed record under the card's key and, for a purchase just made, that
    /// it echoes the request.
    fn check_record(
        &self,
        bytes: &[u8],
        public_key: &[u8],
        req: Option<&PurchaseRequest>,
    ) -> Result<PurchaseRecord> {
        let rec = PurchaseRecord::verify(bytes, public_key).ok_or_else(|| {
            TerminalError::BadRecord("the signature does not verify under the card's key".into())
        })?;
        if rec.terminal != self.info.id {
            return Err(TerminalError::BadRecord(format!(
                "made for terminal {}, this is {}",
                rec.terminal, self.info.id
            )));
        }
        if rec.scheme != self.info.scheme {
            return Err(TerminalError::BadRecord("made in another scheme".into()));
        }
        if let Some(req) = req {
            if rec.terminal_counter != req.terminal_counter
                || rec.amount != req.amount
                || rec.date != req.date
            {
                return Err(TerminalError::BadRecord(format!(
                    "it says counter {} amount {} date {}, the terminal asked counter {} amount {} date {}",
                    rec.terminal_counter, rec.amount, rec.date, req.terminal_counter, req.amount, req.date
                )));
            }
        }
        Ok(rec)
    }

    /// Keeps a verified record in the open batch, in one transaction; a record already
    /// kept (same card and card purchase number, or same terminal counter) is refused.
    fn append(
        &mut self,
        rec: &PurchaseRecord,
        bytes: &[u8],
        public_key: &[u8],
        certificate: &[u8],
    ) -> Result<Payment> {
        let card = card_hex(rec.card);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let dup: Option<(u32, String, u32, i64)> = tx
            .query_row(
                "SELECT p.terminal_counter, p.card_id, p.card_number, p.batch FROM purchases p
                 WHERE (p.card_id = ?1 AND p.card_number = ?2) OR p.terminal_counter = ?3 LIMIT 1",
                params![card, rec.number, rec.terminal_counter],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        if let Some((counter, dcard, number, batch)) = dup {
            return Err(TerminalError::Replayed(format!(
                "card {card} purchase {} (terminal counter {}) is already in batch {batch} as card {dcard} purchase {number}, terminal counter {counter}",
                rec.number, rec.terminal_counter
            )));
        }
        let batch: i64 = match tx
            .query_row("SELECT seq FROM batches WHERE closed_at IS NULL", [], |r| {
                r.get(0)
            })
            .optional()?
        {
            Some(b) => b,
            None => {
                tx.execute(
                    "INSERT INTO batches (seq, opened_at) VALUES
                     ((SELECT coalesce(max(seq), 0) + 1 FROM batches), ?1)",
                    params![now_secs()],
                )?;
                tx.query_row("SELECT seq FROM batches WHERE closed_at IS NULL", [], |r| {
                    r.get(0)
                })?
            }
        };
        tx.execute(
            "INSERT INTO purchases (batch, card_id, card_number, terminal_counter, amount, balance_after,
                                    date, record, card_public_key, certificate, recorded_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                batch,
                card,
                rec.number,
                rec.terminal_counter,
                sql_int(rec.amount.0)?,
                sql_int(rec.balance.0)?,
                rec.date.to_string(),
                bytes,
                public_key,
                certificate,
                now_secs()
            ],
        )?;
        tx.execute(
            "UPDATE attempts SET state = 'recorded' WHERE counter = ?1",
            params![rec.terminal_counter],
        )?;
        tx.commit()?;
        Ok(Payment {
            batch,
            card_id: card,
            card_number: rec.number,
            terminal_counter: rec.terminal_counter,
            amount: rec.amount.0,
            balance_after: rec.balance.0,
            date: rec.date.to_string(),
            resumed: false,
            record: hex::encode(bytes),
            public_key: hex::encode(public_key),
            certificate: hex::encode(certificate),
        })
    }

    /// Imports a signed record (as `openpsd pay --json` prints it, or as another copy of
    /// this terminal's data holds it): checks the card's certificate, the signature, that
    /// it was made for this terminal with a counter this terminal issued, and keeps it —
    /// unless it is in the terminal already (a replay).
    pub fn import(&mut self, record: &RecordExport) -> Result<Payment> {
        let bytes = hex::decode(record.record.trim())
            .map_err(|_| TerminalError::Invalid("record: not hex".into()))?;
        let public_key: [u8; crypto::PUBLIC_KEY_LEN] = hex::decode(record.public_key.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| TerminalError::Invalid("public_key: 130 hex digits".into()))?;
        let certificate = hex::decode(record.certificate.trim())
            .map_err(|_| TerminalError::Invalid("certificate: not hex".into()))?;
        let (rec, _) = PurchaseRecord::decode(&bytes)
            .map_err(|_| TerminalError::BadRecord("not a purchase record".into()))?;
        let certified = crypto::verify_signature(
            &self.info.issuer_public_key,
            &certificate_body(rec.card, rec.scheme, &public_key),
            &certificate,
        );
        if !certified {
            return Err(TerminalError::NotCertified(rec.card));
        }
        let rec = self.check_record(&bytes, &public_key, None)?;
        if rec.terminal_counter == 0 || rec.terminal_counter > self.info.last_counter {
            return Err(TerminalError::BadRecord(format!(
                "terminal counter {} was never issued by this terminal (last {})",
                rec.terminal_counter, self.info.last_counter
            )));
        }
        self.append(&rec, &bytes, &public_key, &certificate)
    }

    /// The totals of batch `seq`, or of the open (else the last) batch.
    pub fn batch(&self, seq: Option<i64>) -> Result<BatchSummary> {
        let seq: Option<(i64, Option<i64>)> = match seq {
            Some(s) => self
                .conn
                .query_row(
                    "SELECT seq, closed_at FROM batches WHERE seq = ?1",
                    params![s],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?
                .map(Some)
                .ok_or_else(|| TerminalError::Invalid(format!("no batch {s}")))?,
            None => self
                .conn
                .query_row(
                    "SELECT seq, closed_at FROM batches ORDER BY closed_at IS NULL DESC, seq DESC LIMIT 1",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?,
        };
        let Some((seq, closed_at)) = seq else {
            return Ok(BatchSummary {
                seq: 1,
                closed_at: None,
                count: 0,
                total: 0,
                per_card: Vec::new(),
            });
        };
        let mut stmt = self.conn.prepare(
            "SELECT card_id, count(*), sum(amount) FROM purchases WHERE batch = ?1
             GROUP BY card_id ORDER BY card_id",
        )?;
        let rows = stmt.query_map(params![seq], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
        let mut per_card = Vec::new();
        let (mut count, mut total) = (0u64, 0u64);
        for row in rows {
            let (card_id, n, sum) = row?;
            let (n, sum) = (from_sql(n)?, from_sql(sum)?);
            count += n;
            total = total
                .checked_add(sum)
                .ok_or_else(|| TerminalError::Db("batch total overflows".into()))?;
            per_card.push(CardTotal {
                card_id,
                count: n,
                total: sum,
            });
        }
        Ok(BatchSummary {
            seq,
            closed_at,
            count,
            total,
            per_card,
        })
    }

    /// Closes (marks submitted) the open batch; the next purchase opens the next one.
    pub fn close_batch(&mut self) -> Result<BatchSummary> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let seq: Option<i64> = tx
            .query_row("SELECT seq FROM batches WHERE closed_at IS NULL", [], |r| {
                r.get(0)
            })
            .optional()?;
        let seq = seq.ok_or_else(|| {
            TerminalError::Invalid("no open batch: nothing to submit since the last close".into())
        })?;
        tx.execute(
            "UPDATE batches SET closed_at = ?2 WHERE seq = ?1",
            params![seq, now_secs()],
        )?;
        tx.commit()?;
        self.batch(Some(seq))
    }
}

/// A signed purchase record with the card's certified key, as exported and imported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordExport {
    /// The signed record, hex.
    pub record: String,
    /// The card's purchase public key, hex.
    pub public_key: String,
    /// The issuer's certificate on it, hex.
    pub certificate: String,
}

struct Attempt {
    counter: u32,
    card: String,
    amount: Amount,
    date: Date,
    card_purchases: u32,
}

enum Fate {
    /// Send the attempt's request (again).
    Resend,
    /// The card never made it: drop it.
    NeverMade,
    /// The card made it (its purchase number) but no longer holds the record.
    LostRecord(u32),
}
