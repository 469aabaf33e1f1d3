//! The registry of accepted pieces and what it finds (issue 13 item 4): every verified
//! indicium recorded by (device, signing key, license, piece count) with its registers,
//! postage, date, codes and a digest of its signed bytes. The checks are written once,
//! here, over [`RegistryTx`]; the stores ([`crate::sqlite`], [`crate::postgres`]) only
//! answer its questions inside one transaction.
//!
//! - The same signed bytes again: a **duplicate** copy (the same label used twice). The
//!   digest covers the signed bytes, not the signature: ECDSA signatures are malleable
//!   ((r, s) and (r, n − s) both verify), so a copy with the other signature is the same
//!   piece, not another one.
//! - The same (device, key, license, piece) with other content: a **conflict** — only a PSD
//!   whose state was rolled back or cloned issues one piece count twice.
//! - A piece whose AR does not rise from its neighbours' (AR(p) − postage(p) must be at
//!   least the AR of any earlier piece): **ar_not_rising**, an edited or restored register.
//! - Against the last audit the meter server accepted for the set: a piece counted after
//!   it but dated more than a day before it is **dated_before_audit** (a clock turned
//!   back); a piece counted before it with a higher AR than it reported is
//!   **ar_above_audit** (the device reported less than it had used).
//! - **Reconciliation** against what the back office credited the set (the meter's
//!   baseline + refill messages issued): the highest AR above it is **unpaid_postage** (the
//!   amount is the difference); AR + DR above it, **registers_exceed_credit** (value the
//!   device holds that nobody paid for, before it is even spent).

use sha2::{Digest, Sha256};

use openpsd_core::psd::indicium::IndiciumData;
use openpsd_protocol::post::{Finding, LastAudit, LicenseSeen};
use openpsd_service_kit::db::{from_sql_int, now_secs, to_sql_int};
use openpsd_service_kit::error::ApiError;

/// One series of pieces: a device's license under one signing key (a device personalized
/// again starts a new series).
#[derive(Clone, Copy, Debug)]
pub struct Series<'a> {
    /// Device ID, 16 upper-case hex.
    pub device: &'a str,
    /// The signing key's ID, 8 lower-case hex.
    pub key: &'a str,
    /// License number.
    pub license: u32,
}

/// A piece's stored columns besides its key.
#[derive(Clone, Debug)]
pub struct PieceRow {
    /// Ascending register, descending register, postage (minor units, checked to fit i64).
    pub ar: i64,
    /// Descending register.
    pub dr: i64,
    /// Postage of the piece.
    pub postage: i64,
    /// Days since 2000-01-01.
    pub mailed_on: u32,
    /// Origin postal code.
    pub origin: String,
    /// Destination postal code.
    pub destination: String,
    /// SHA-256 of the signed bytes.
    pub digest: [u8; 32],
    /// Unix seconds of first sight.
    pub first_seen: i64,
}

/// A finding to record.
#[derive(Clone, Debug)]
pub struct NewFinding<'a> {
    /// Device ID.
    pub device: &'a str,
    /// License.
    pub license: u32,
    /// The piece it names.
    pub piece: u32,
    /// Kind (`conflict`, `ar_not_rising`, …).
    pub kind: &'a str,
    /// What it means, for people.
    pub message: &'a str,
    /// Amount involved, minor units.
    pub amount: Option<i64>,
    /// The indicium (hex) that raised it.
    pub evidence: Option<&'a str>,
}

/// A stored finding not yet reported: (id, license, kind, message).
pub type Unreported = (i64, u32, String, String);

/// Per license of a device: (license, pieces, highest piece, highest AR, extra copies).
pub type LicenseRow = (u32, i64, u32, i64, i64);

/// Per device that mailed under one license: (device, pieces, highest piece, highest AR,
/// extra copies, findings on the license).
pub type LicenseDeviceRow = (String, i64, u32, i64, i64, i64);

/// A `findings` row: kind, license, piece, message, amount, found at, reported.
pub type FindingRow = (String, u32, u32, String, Option<i64>, i64, i64);

/// What inserting a piece found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inserted {
    /// The (series, piece) was stored already, with this digest; nothing was inserted.
    Existing(Vec<u8>),
    /// Inserted; its stored neighbours in the series.
    New {
        /// The nearest piece below: (piece, AR).
        before: Option<(u32, i64)>,
        /// The nearest piece above: (piece, AR, postage).
        after: Option<(u32, i64, i64)>,
    },
}

/// What the registry asks of its store, inside one transaction. Every method maps its
/// store's errors into `500 internal` at `step` of the caller.
pub trait RegistryTx {
    /// Holds the devices' locks to the end of the transaction, so that two post office
    /// instances never interleave their checks of one device. Callers take every device of
    /// a batch at once, before recording (taken in sorted order, two batches cannot
    /// deadlock); a store with one writer has nothing to do.
    fn lock(&mut self, devices: &[&str]) -> Result<(), ApiError>;
    /// Inserts the piece unless its (series, piece) is stored (whatever its date); answers
    /// the stored digest when it is, and the new piece's neighbours when it is not. One
    /// round trip on a server.
    fn insert_piece(
        &mut self,
        s: &Series<'_>,
        piece: u32,
        row: &PieceRow,
    ) -> Result<Inserted, ApiError>;
    /// Counts one more copy of a stored piece.
    fn add_copy(&mut self, s: &Series<'_>, piece: u32) -> Result<(), ApiError>;
    /// The piece with the highest AR (the highest piece among equals): (piece, AR).
    fn top_ar(&mut self, s: &Series<'_>) -> Result<Option<(u32, i64)>, ApiError>;
    /// The piece with the highest AR + DR: (piece, AR + DR).
    fn top_held(&mut self, s: &Series<'_>) -> Result<Option<(u32, i64)>, ApiError>;
    /// The lowest piece above `counted` dated before day `day`: (piece, its day).
    fn dated_before(
        &mut self,
        s: &Series<'_>,
        counted: u32,
        day: u32,
    ) -> Result<Option<(u32, u32)>, ApiError>;
    /// The highest piece at or below `counted`, if its AR is above `ar`: (piece, AR). (The
    /// highest piece holds the highest AR of a series whose AR rises; one whose AR does
    /// not has an `ar_not_rising` finding already.)
    fn ar_above(
        &mut self,
        s: &Series<'_>,
        counted: u32,
        ar: i64,
    ) -> Result<Option<(u32, i64)>, ApiError>;
    /// Records a finding unless the same kind on the same piece is stored; whether it is
    /// new.
    fn insert_finding(&mut self, f: &NewFinding<'_>, found_at: i64) -> Result<bool, ApiError>;
    /// The device's findings not yet reported, oldest first.
    fn unreported(&mut self, device: &str) -> Result<Vec<Unreported>, ApiError>;
    /// Up to `limit` devices with findings not yet reported.
    fn unreported_devices(&mut self, limit: u32) -> Result<Vec<String>, ApiError>;
    /// Marks a finding reported: 1 the meter has it, 2 the meter refused it for good.
    fn mark_reported(&mut self, id: i64, outcome: i64) -> Result<(), ApiError>;
    /// The device's pieces per license.
    fn licenses(&mut self, device: &str) -> Result<Vec<LicenseRow>, ApiError>;
    /// The device's findings, oldest first.
    fn findings(&mut self, device: &str) -> Result<Vec<FindingRow>, ApiError>;
    /// Every device that mailed under `license`, by device ID (seed 003, claim 6).
    fn license_devices(&mut self, license: u32) -> Result<Vec<LicenseDeviceRow>, ApiError>;
}

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

/// Records a finding once; returns whether it is new.
fn find(tx: &mut dyn RegistryTx, f: &NewFinding<'_>) -> Result<bool, ApiError> {
    let new = tx.insert_finding(f, now_secs())?;
    if new {
        tracing::warn!(
            device = f.device,
            license = f.license,
            piece = f.piece,
            kind = f.kind,
            message = f.message,
            "post office finding"
        );
    }
    Ok(new)
}

/// A piece whose (series, piece) is stored: the same digest is a duplicate copy, another
/// a conflict.
fn existing(
    tx: &mut dyn RegistryTx,
    s: &Series<'_>,
    piece: u32,
    old: &[u8],
    new: &[u8; 32],
    evidence: &str,
) -> Result<Recorded, ApiError> {
    if old == new.as_slice() {
        tx.add_copy(s, piece)?;
        return Ok(Recorded::Duplicate);
    }
    let message = format!(
        "piece {piece} of license {} seen twice with different content: the PSD's state \
         was rolled back or cloned",
        s.license
    );
    find(
        tx,
        &NewFinding {
            device: s.device,
            license: s.license,
            piece,
            kind: "conflict",
            message: &message,
            amount: None,
            evidence: Some(evidence),
        },
    )?;
    Ok(Recorded::Conflict(message))
}

/// Records a batch of verified pieces, each (data, signed bytes, the whole indicium in hex
/// as evidence), after taking the locks of all their devices.
pub fn record_batch(
    tx: &mut dyn RegistryTx,
    items: &[(IndiciumData, Vec<u8>, String)],
    step: &str,
) -> Result<Vec<Recorded>, ApiError> {
    let devices: std::collections::BTreeSet<String> = items
        .iter()
        .map(|(d, _, _)| hex::encode_upper(d.device.0))
        .collect();
    let devices: Vec<&str> = devices.iter().map(String::as_str).collect();
    tx.lock(&devices)?;
    items
        .iter()
        .map(|(d, signed, evidence)| record(tx, d, signed, evidence, step))
        .collect()
}

/// Records one verified piece (its signed bytes `signed`, the whole indicium in hex as
/// evidence).
pub fn record(
    tx: &mut dyn RegistryTx,
    d: &IndiciumData,
    signed: &[u8],
    evidence: &str,
    step: &str,
) -> Result<Recorded, ApiError> {
    let device = hex::encode_upper(d.device.0);
    let key = hex::encode(d.key_id.0);
    let s = Series {
        device: &device,
        key: &key,
        license: d.license.0,
    };
    let piece = d.pieces.0;
    let row = PieceRow {
        ar: to_sql_int(d.ar.0, step)?,
        dr: to_sql_int(d.dr.0, step)?,
        postage: to_sql_int(d.postage.0, step)?,
        mailed_on: d.date.day_number(),
        origin: d.origin.to_string(),
        destination: d.destination.to_string(),
        digest: digest(signed),
        first_seen: now_secs(),
    };
    let (before, after) = match tx.insert_piece(&s, piece, &row)? {
        Inserted::New { before, after } => (before, after),
        Inserted::Existing(old) => return existing(tx, &s, piece, &old, &row.digest, evidence),
    };
    // AR must rise with the piece count: AR(p) - postage(p) >= AR(q) for every q < p.
    // Checking the neighbours is enough: pieces already recorded were checked against
    // theirs.
    let (ar, postage) = (row.ar, row.postage);
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
            &NewFinding {
                device: &device,
                license: s.license,
                piece,
                kind: "ar_not_rising",
                message: &message,
                amount: None,
                evidence: Some(evidence),
            },
        )?;
        return Ok(Recorded::Anomaly(message));
    }
    Ok(Recorded::New)
}

/// Days of slack for a piece dated before the audit: the PSD dates by its host's local day
/// (a day behind UTC at worst) and may date a piece up to `MAX_DAYS_BEHIND` before its
/// own today; the meter's day is UTC.
pub const AUDIT_DATE_SLACK_DAYS: u32 = openpsd_core::psd::MAX_DAYS_BEHIND + 1;

/// Compares a series with the last audit the meter accepted for its set: a piece counted
/// after the audit but dated before it, and a piece counted before it with more postage
/// used than the audit said. Returns the pieces a new finding names.
pub fn check_against_audit(
    tx: &mut dyn RegistryTx,
    s: &Series<'_>,
    audit: &LastAudit,
    step: &str,
) -> Result<Vec<u32>, ApiError> {
    let mut named = Vec::new();
    let limit = audit.day.saturating_sub(AUDIT_DATE_SLACK_DAYS);
    if let Some((piece, day)) = tx.dated_before(s, audit.pieces, limit)? {
        let message = format!(
            "piece {piece} was counted after the audit the meter accepted at piece {} (day {}) \
             but is dated day {day}: the device's clock was turned back",
            audit.pieces, audit.day
        );
        if find(
            tx,
            &NewFinding {
                device: s.device,
                license: s.license,
                piece,
                kind: "dated_before_audit",
                message: &message,
                amount: None,
                evidence: None,
            },
        )? {
            named.push(piece);
        }
    }
    let audit_ar = to_sql_int(audit.ar, step)?;
    if let Some((piece, ar)) = tx.ar_above(s, audit.pieces, audit_ar)? {
        let over = from_sql_int(ar, step)?.saturating_sub(audit.ar);
        let message = format!(
            "piece {piece} shows postage used (AR) {ar}, but the audit the meter accepted at \
             piece {} reported AR {}: {over} used and not reported",
            audit.pieces, audit.ar
        );
        if find(
            tx,
            &NewFinding {
                device: s.device,
                license: s.license,
                piece,
                kind: "ar_above_audit",
                message: &message,
                amount: Some(to_sql_int(over, step)?),
                evidence: None,
            },
        )? {
            named.push(piece);
        }
    }
    Ok(named)
}

/// Reconciles a series against the value credited to its set: raises `unpaid_postage`
/// (highest AR above the credit) or `registers_exceed_credit` (AR + DR above it). Returns
/// the pieces a new finding names.
pub fn reconcile(
    tx: &mut dyn RegistryTx,
    s: &Series<'_>,
    credited: u64,
    step: &str,
) -> Result<Vec<u32>, ApiError> {
    let mut named = Vec::new();
    if let Some((piece, ar)) = tx.top_ar(s)? {
        let ar = from_sql_int(ar, step)?;
        if ar > credited {
            let unpaid = ar - credited;
            let message = format!(
                "piece {piece} shows postage used (AR) {ar} but the back office credited {credited} \
                 to the set: {unpaid} of postage nobody paid for"
            );
            if find(
                tx,
                &NewFinding {
                    device: s.device,
                    license: s.license,
                    piece,
                    kind: "unpaid_postage",
                    message: &message,
                    amount: Some(to_sql_int(unpaid, step)?),
                    evidence: None,
                },
            )? {
                named.push(piece);
            }
            return Ok(named);
        }
    }
    if let Some((piece, total)) = tx.top_held(s)? {
        let total = from_sql_int(total, step)?;
        if total > credited {
            let excess = total - credited;
            let message = format!(
                "piece {piece} shows AR + DR {total} but the back office credited {credited} to \
                 the set: the device holds {excess} nobody paid for"
            );
            if find(
                tx,
                &NewFinding {
                    device: s.device,
                    license: s.license,
                    piece,
                    kind: "registers_exceed_credit",
                    message: &message,
                    amount: Some(to_sql_int(excess, step)?),
                    evidence: None,
                },
            )? {
                named.push(piece);
            }
        }
    }
    Ok(named)
}

/// Against the AR a retired set had when the device gave it up (and was refunded its DR):
/// a piece above it is postage used after the refund — a PSD rolled back or cloned from
/// before the retirement, or a forged receipt. The amount is the excess.
pub fn check_after_retirement(
    tx: &mut dyn RegistryTx,
    s: &Series<'_>,
    retired_ar: u64,
    step: &str,
) -> Result<Vec<u32>, ApiError> {
    let mut named = Vec::new();
    if let Some((piece, ar)) = tx.top_ar(s)? {
        let ar = from_sql_int(ar, step)?;
        if ar > retired_ar {
            let excess = ar - retired_ar;
            let message = format!(
                "piece {piece} shows AR {ar}, but the device retired the set at AR {retired_ar} \
                 and was refunded the rest: {excess} of postage used after the refund"
            );
            if find(
                tx,
                &NewFinding {
                    device: s.device,
                    license: s.license,
                    piece,
                    kind: "used_after_retirement",
                    message: &message,
                    amount: Some(to_sql_int(excess, step)?),
                    evidence: None,
                },
            )? {
                named.push(piece);
            }
        }
    }
    Ok(named)
}

/// What the registry holds of a device: per license, the extra copies, and its findings.
pub fn report(
    tx: &mut dyn RegistryTx,
    device: &str,
    step: &str,
) -> Result<(Vec<LicenseSeen>, u64, Vec<Finding>), ApiError> {
    let mut duplicates = 0u64;
    let rows = tx.licenses(device)?;
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
    let raw = tx.findings(device)?;
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
