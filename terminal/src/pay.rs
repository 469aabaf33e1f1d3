//! Taking a payment: the card accepted, the terminal counter reserved before PURCHASE, the
//! signed record checked and appended; an unfinished attempt judged from the card's log.

use openpsd_core::client::purse_apdu;
use openpsd_core::client::transfer::{purse_info, Side, TransferError};
use openpsd_core::client::Link;
use openpsd_core::purse::personal::PurseInfo;
use openpsd_core::purse::purchase::{PurchaseRecord, PurchaseRequest};
use openpsd_core::purse::state::LogKind;
use openpsd_core::types::{Amount, CardId, Date};
use openpsd_core::Status;
use rusqlite::{params, OptionalExtension, TransactionBehavior};

use openpsd_core::client::{exchange, PurseClient};

use crate::refusal::explain;
use crate::{card_hex, from_sql, sql_int, Payment, Result, Terminal, TerminalError};
use openpsd_sqlite::now_secs;

impl Terminal {
    /// Checks a purse's certificate and scheme against this terminal's issuer.
    pub(crate) fn accept_card(&self, info: &PurseInfo) -> Result<()> {
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
    pub(crate) fn open_attempt(&self) -> Result<Option<Attempt>> {
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

    pub(crate) fn set_attempt(&self, counter: u32, state: &str, note: &str) -> Result<()> {
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
    pub(crate) fn reserve(
        &mut self,
        card: CardId,
        amount: Amount,
        date: Date,
        purchases: u32,
    ) -> Result<u32> {
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
    pub(crate) fn attempt_fate(
        &self,
        purse: &mut dyn Link,
        info: &PurseInfo,
        a: &Attempt,
    ) -> Result<Fate> {
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
    pub(crate) fn check_record(
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
    pub(crate) fn append(
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
                |r| r.try_into(),
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
}

pub(crate) struct Attempt {
    counter: u32,
    card: String,
    amount: Amount,
    date: Date,
    card_purchases: u32,
}

pub(crate) enum Fate {
    /// Send the attempt's request (again).
    Resend,
    /// The card never made it: drop it.
    NeverMade,
    /// The card made it (its purchase number) but no longer holds the record.
    LostRecord(u32),
}
