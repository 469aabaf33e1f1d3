//! The batch: records imported from elsewhere, totals, closing the batch.

use openpsd_core::crypto;
use openpsd_core::purse::personal::certificate_body;
use openpsd_core::purse::purchase::PurchaseRecord;
use rusqlite::{params, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};

use crate::{from_sql, BatchSummary, CardTotal, Payment, Result, Terminal, TerminalError};
use openpsd_sqlite::now_secs;

impl Terminal {
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
                    |r| r.try_into(),
                )
                .optional()?
                .map(Some)
                .ok_or_else(|| TerminalError::Invalid(format!("no batch {s}")))?,
            None => self
                .conn
                .query_row(
                    "SELECT seq, closed_at FROM batches ORDER BY closed_at IS NULL DESC, seq DESC LIMIT 1",
                    [],
                    |r| r.try_into(),
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
