//! The registry of accepted pieces and what it finds (issue 13 item 4): every verified
//! indicium recorded by (device, license, piece count) with its registers, postage, date,
//! codes and a digest of its signed bytes.
//!
//! - The same signed bytes again: a **duplicate** copy (the same label used twice). The
//!   digest covers the signed bytes, not the signature: ECDSA signatures are malleable
//!   ((r, s) and (r, n − s) both verify), so a copy with the other signature is the same
//!   piece, not another one.
//! - The same (device, license, piece) with other content: a **conflict** — only a PSD
//!   whose state was rolled back or cloned issues one piece count twice.
//! - A piece whose AR does not rise from its neighbours' (AR(p) − postage(p) must be at
//!   least the AR of any earlier piece): **ar_not_rising**, an edited or restored register.
//! - **Reconciliation** against what the back office credited the set (the meter's
//!   baseline + refill messages issued): the highest AR above it is **unpaid_postage** (the
//!   amount is the difference); AR + DR above it, **registers_exceed_credit** (value the
//!   device holds that nobody paid for, before it is even spent).
//!
//! Everything runs in one SQLite transaction per scanned batch.

use rusqlite::{params, Connection, OptionalExtension, Transaction};
use sha2::{Digest, Sha256};

use openpsd_core::psd::indicium::IndiciumData;
use openpsd_protocol::post::{Finding, LicenseSeen};
use openpsd_service_kit::db::{from_sql_int, now_secs, to_sql_int};
use openpsd_service_kit::error::{ApiError, StorageContext};

/// The registry's tables.
pub const SCHEMA: &str = "
-- Every distinct piece seen, by (device, license, piece count).
CREATE TABLE IF NOT EXISTS pieces (
    device_id   TEXT NOT NULL,              -- 16 upper-case hex
    key_id      TEXT NOT NULL,              -- the device key that signed it (8 hex): a device
                                            -- personalized again starts a new series
    license     INTEGER NOT NULL,
    piece       INTEGER NOT NULL,
    ar          INTEGER NOT NULL,
    dr          INTEGER NOT NULL,
    postage     INTEGER NOT NULL,
    mailed_on   INTEGER NOT NULL,           -- days since 2000-01-01
    origin      TEXT NOT NULL,
    destination TEXT NOT NULL,
    digest      BLOB NOT NULL,              -- SHA-256 of the signed bytes
    copies      INTEGER NOT NULL DEFAULT 1, -- times scanned
    first_seen  INTEGER NOT NULL,
    PRIMARY KEY (device_id, key_id, license, piece)
) WITHOUT ROWID;
-- What the registry found; reported: 0 not yet told, 1 the meter server has it (device
-- quarantined), 2 the meter refused it for good (a device it does not serve).
CREATE TABLE IF NOT EXISTS findings (
    finding_id INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id  TEXT NOT NULL,
    license    INTEGER NOT NULL,
    piece      INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    message    TEXT NOT NULL,
    amount     INTEGER,
    evidence   TEXT,                        -- the indicium (hex) that raised it
    found_at   INTEGER NOT NULL,
    reported   INTEGER NOT NULL DEFAULT 0,
    UNIQUE (device_id, license, piece, kind)
);
";

/// What recording one piece gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// First sight; consistent with the device's other pieces.
    New,
    /// First sight, recorded, but a finding was raised on it.
    Anomaly(String),
    /// The same piece again.
    Duplicate,
    /// The same piece count with other content.
    Conflict(String),
}

fn digest(signed: &[u8]) -> [u8; 32] {
    Sha256::digest(signed).into()
}

/// Records a finding once (the same kind on the same piece is not repeated); returns
/// whether it is new.
#[allow(clippy::too_many_arguments)] // why: one row's columns, named at the call site
fn find(
    tx: &Transaction<'_>,
    device: &str,
    license: u32,
    piece: u32,
    kind: &str,
    message: &str,
    amount: Option<u64>,
    evidence: Option<&str>,
    step: &str,
) -> Result<bool, ApiError> {
    let amount = amount.map(|a| to_sql_int(a, step)).transpose()?;
    let n = tx
        .execute(
            "INSERT OR IGNORE INTO findings
                 (device_id, license, piece, kind, message, amount, evidence, found_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                device,
                license,
                piece,
                kind,
                message,
                amount,
                evidence,
                now_secs()
            ],
        )
        .storage(step)?;
    if n > 0 {
        tracing::warn!(device, license, piece, kind, message, "post office finding");
    }
    Ok(n > 0)
}

/// Records one verified piece (its signed bytes `signed`, the whole indicium in hex as
/// evidence) in `tx`.
pub fn record(
    tx: &Transaction<'_>,
    d: &IndiciumData,
    signed: &[u8],
    evidence: &str,
    step: &str,
) -> Result<Recorded, ApiError> {
    let device = hex::encode_upper(d.device.0);
    let key = hex::encode(d.key_id.0);
    let (license, piece) = (d.license.0, d.pieces.0);
    let dig = digest(signed);
    let existing: Option<Vec<u8>> = tx
        .query_row(
            "SELECT digest FROM pieces
             WHERE device_id = ?1 AND key_id = ?4 AND license = ?2 AND piece = ?3",
            params![device, license, piece, key],
            |r| r.get(0),
        )
        .optional()
        .storage(step)?;
    if let Some(old) = existing {
        if old == dig {
            tx.execute(
                "UPDATE pieces SET copies = copies + 1
                 WHERE device_id = ?1 AND key_id = ?4 AND license = ?2 AND piece = ?3",
                params![device, license, piece, key],
            )
            .storage(step)?;
            return Ok(Recorded::Duplicate);
        }
        let message = format!(
            "piece {piece} of license {license} seen twice with different content: the \
             PSD's state was rolled back or cloned"
        );
        find(
            tx,
            &device,
            license,
            piece,
            "conflict",
            &message,
            None,
            Some(evidence),
            step,
        )?;
        return Ok(Recorded::Conflict(message));
    }
    let (ar, dr, postage) = (
        to_sql_int(d.ar.0, step)?,
        to_sql_int(d.dr.0, step)?,
        to_sql_int(d.postage.0, step)?,
    );
    tx.execute(
        "INSERT INTO pieces (device_id, key_id, license, piece, ar, dr, postage, mailed_on,
                             origin, destination, digest, first_seen)
         VALUES (?1, ?12, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            device,
            license,
            piece,
            ar,
            dr,
            postage,
            d.date.day_number(),
            d.origin.to_string(),
            d.destination.to_string(),
            dig.as_slice(),
            now_secs(),
            key
        ],
    )
    .storage(step)?;
    // AR must rise with the piece count: AR(p) - postage(p) >= AR(q) for every q < p.
    // Checking the neighbours is enough: pieces already recorded were checked against
    // theirs.
    let before: Option<(u32, i64)> = tx
        .query_row(
            "SELECT piece, ar FROM pieces
             WHERE device_id = ?1 AND key_id = ?4 AND license = ?2 AND piece < ?3
             ORDER BY piece DESC LIMIT 1",
            params![device, license, piece, key],
            |r| r.try_into(),
        )
        .optional()
        .storage(step)?;
    let after: Option<(u32, i64, i64)> = tx
        .query_row(
            "SELECT piece, ar, postage FROM pieces
             WHERE device_id = ?1 AND key_id = ?4 AND license = ?2 AND piece > ?3
             ORDER BY piece ASC LIMIT 1",
            params![device, license, piece, key],
            |r| r.try_into(),
        )
        .optional()
        .storage(step)?;
    let mut anomaly = None;
    // A piece's own postage is part of its AR, and counts start at 1: without this, the
    // lowest piece of a series would be checked against nothing.
    if piece == 0 || ar < postage {
        anomaly = Some(format!(
            "piece {piece} shows AR {} below its own postage {}: no device counts so",
            d.ar, d.postage
        ));
    }
    if let Some((q, ar_q)) = before {
        if ar - postage < ar_q {
            anomaly = Some(format!(
                "piece {piece} shows AR {} after postage {}, below piece {q}'s AR {}: the \
                 ascending register went back",
                d.ar, d.postage, ar_q
            ));
        }
    }
    if let Some((q, ar_q, postage_q)) = after {
        if ar_q - postage_q < ar {
            anomaly = Some(format!(
                "piece {piece} shows AR {}, above the later piece {q}'s AR {ar_q} before its \
                 postage {postage_q}: the ascending register went back",
                d.ar
            ));
        }
    }
    if let Some(message) = anomaly {
        find(
            tx,
            &device,
            license,
            piece,
            "ar_not_rising",
            &message,
            None,
            Some(evidence),
            step,
        )?;
        return Ok(Recorded::Anomaly(message));
    }
    Ok(Recorded::New)
}

/// Reconciles one license of a device against the value credited to its set: raises
/// `unpaid_postage` (highest AR above the credit) or `registers_exceed_credit` (AR + DR
/// above it). Returns the pieces a new finding names.
pub fn reconcile(
    tx: &Transaction<'_>,
    device: &str,
    key: &str,
    license: u32,
    credited: u64,
    step: &str,
) -> Result<Vec<u32>, ApiError> {
    let mut named = Vec::new();
    let top: Option<(u32, i64, i64)> = tx
        .query_row(
            "SELECT piece, ar, dr FROM pieces WHERE device_id = ?1 AND key_id = ?3 AND license = ?2
             ORDER BY ar DESC, piece DESC LIMIT 1",
            params![device, license, key],
            |r| r.try_into(),
        )
        .optional()
        .storage(step)?;
    if let Some((piece, ar, _)) = top {
        let ar = from_sql_int(ar, step)?;
        if ar > credited {
            let unpaid = ar - credited;
            let message = format!(
                "piece {piece} shows postage used (AR) {ar} but the back office credited {credited} \
                 to the set: {unpaid} of postage nobody paid for"
            );
            if find(
                tx,
                device,
                license,
                piece,
                "unpaid_postage",
                &message,
                Some(unpaid),
                None,
                step,
            )? {
                named.push(piece);
            }
            return Ok(named);
        }
    }
    let held: Option<(u32, i64)> = tx
        .query_row(
            "SELECT piece, ar + dr FROM pieces WHERE device_id = ?1 AND key_id = ?3 AND license = ?2
             ORDER BY ar + dr DESC, piece DESC LIMIT 1",
            params![device, license, key],
            |r| r.try_into(),
        )
        .optional()
        .storage(step)?;
    if let Some((piece, total)) = held {
        let total = from_sql_int(total, step)?;
        if total > credited {
            let excess = total - credited;
            let message = format!(
                "piece {piece} shows AR + DR {total} but the back office credited {credited} to \
                 the set: the device holds {excess} nobody paid for"
            );
            if find(
                tx,
                device,
                license,
                piece,
                "registers_exceed_credit",
                &message,
                Some(excess),
                None,
                step,
            )? {
                named.push(piece);
            }
        }
    }
    Ok(named)
}

/// Findings of a device not yet reported to the meter: (id, license, kind, message).
pub fn unreported(
    c: &Connection,
    device: &str,
    step: &str,
) -> Result<Vec<(i64, u32, String, String)>, ApiError> {
    let mut stmt = c
        .prepare_cached(
            "SELECT finding_id, license, kind, message FROM findings
             WHERE device_id = ?1 AND reported = 0 ORDER BY finding_id",
        )
        .storage(step)?;
    let rows = stmt
        .query_map([device], |r| r.try_into())
        .storage(step)?
        .collect::<Result<_, _>>()
        .storage(step)?;
    Ok(rows)
}

/// A `findings` row: kind, license, piece, message, amount, found at, reported.
type FindingRow = (String, u32, u32, String, Option<i64>, i64, i64);

/// What the registry holds of a device: per license, and its findings.
pub fn report(
    c: &Connection,
    device: &str,
    step: &str,
) -> Result<(Vec<LicenseSeen>, u64, Vec<Finding>), ApiError> {
    let mut stmt = c
        .prepare_cached(
            "SELECT license, COUNT(*), MAX(piece), MAX(ar), SUM(copies - 1) FROM pieces
             WHERE device_id = ?1 GROUP BY license ORDER BY license",
        )
        .storage(step)?;
    let rows: Vec<(u32, i64, u32, i64, i64)> = stmt
        .query_map([device], |r| r.try_into())
        .storage(step)?
        .collect::<Result<_, _>>()
        .storage(step)?;
    let mut duplicates = 0u64;
    let mut licenses = Vec::with_capacity(rows.len());
    for (license, pieces, highest_piece, highest_ar, dups) in rows {
        duplicates = duplicates.saturating_add(from_sql_int(dups, step)?);
        licenses.push(LicenseSeen {
            license,
            pieces: from_sql_int(pieces, step)?,
            highest_piece,
            highest_ar: from_sql_int(highest_ar, step)?,
            credited: None,
        });
    }
    let mut stmt = c
        .prepare_cached(
            "SELECT kind, license, piece, message, amount, found_at, reported FROM findings
             WHERE device_id = ?1 ORDER BY finding_id",
        )
        .storage(step)?;
    let raw: Vec<FindingRow> = stmt
        .query_map([device], |r| r.try_into())
        .storage(step)?
        .collect::<Result<_, _>>()
        .storage(step)?;
    let mut findings = Vec::with_capacity(raw.len());
    for (kind, license, piece, message, amount, found_at, reported) in raw {
        findings.push(Finding {
            kind,
            license,
            piece,
            message,
            amount: amount.map(|a| from_sql_int(a, step)).transpose()?,
            found_at: from_sql_int(found_at, step)?,
            reported: reported == 1,
        });
    }
    Ok((licenses, duplicates, findings))
}
