//! The meter's SQL readers and writers: the last accepted audit, the outstanding refill,
//! known combinations, recording an accepted audit, refill and inspection rows.

use axum::http::StatusCode;
use rusqlite::{params, Connection, OptionalExtension, Transaction};

use openpsd_protocol::RefillState;
use openpsd_protocol::{Baseline, HoldRequest, InspectionView, Outcome, RefillView};
use openpsd_service_kit::db::{from_sql_int, now_secs, to_sql_int};
use openpsd_service_kit::error::{ApiError, ErrorDetail, StorageContext};

use crate::history::{Audited, Known, Last, Outstanding, Settlement};
use crate::OUTSTANDING;

/// The last accepted audit of the device's set that holds `license`, in whatever slot.
pub(crate) fn read_last(
    c: &Connection,
    device: &str,
    license: u32,
    step: &str,
) -> Result<Option<Last>, ApiError> {
    type Row = (i64, i64, i64, i64, i64, i64, String, i64, i64);
    let row: Option<Row> = c
        .query_row(
            "SELECT license, ar, dr, control_sum, pieces, refills, last_combination_id, fees,
                    services
             FROM license_audits WHERE device_id = ?1 AND license = ?2",
            params![device, i64::from(license)],
            |r| r.try_into(),
        )
        .optional()
        .storage(step)?;
    let bad = || ApiError::internal(step, "last audit row out of range");
    row.map(
        |(license, ar, dr, cs, pieces, refills, comb, fees, services)| {
            Ok(Last {
                fees: from_sql_int(fees, step)?,
                services: u32::try_from(services).map_err(|_| bad())?,
                license: u32::try_from(license).map_err(|_| bad())?,
                ar: from_sql_int(ar, step)?,
                dr: from_sql_int(dr, step)?,
                control_sum: from_sql_int(cs, step)?,
                pieces: u32::try_from(pieces).map_err(|_| bad())?,
                refills: u32::try_from(refills).map_err(|_| bad())?,
                last_combination_id: comb,
            })
        },
    )
    .transpose()
}

/// The baseline of the device's set that holds `license` (registered, or zero for a set a
/// license added once its first audit was accepted; plus write-offs).
pub(crate) fn read_baseline(
    c: &Connection,
    device: &str,
    license: u32,
    step: &str,
) -> Result<Option<Baseline>, ApiError> {
    let row: Option<(i64, i64)> = c
        .query_row(
            "SELECT control_sum, refills FROM license_baselines
             WHERE device_id = ?1 AND license = ?2",
            params![device, i64::from(license)],
            |r| r.try_into(),
        )
        .optional()
        .storage(step)?;
    row.map(|(cs, refills)| {
        Ok(Baseline {
            control_sum: from_sql_int(cs, step)?,
            refills: u32::try_from(refills)
                .map_err(|_| ApiError::internal(step, "baseline out of range"))?,
        })
    })
    .transpose()
}

pub(crate) fn read_outstanding(
    c: &Connection,
    device: &str,
    step: &str,
) -> Result<Vec<Outstanding>, ApiError> {
    let mut stmt = c
        .prepare(&format!(
            "SELECT client_txn_id, account_id, amount, license, bound_control_sum,
                    bound_refills, combination_id, void_combination_id
             FROM refills WHERE device_id = ?1 AND state IN {OUTSTANDING}"
        ))
        .storage(step)?;
    type Raw = (
        String,
        String,
        i64,
        Option<i64>,
        Option<i64>,
        Option<i64>,
        Option<String>,
        Option<String>,
    );
    let rows: Vec<Raw> = stmt
        .query_map([device], |r| r.try_into())
        .storage(step)?
        .collect::<Result<_, _>>()
        .storage(step)?;
    let bad = || ApiError::internal(step, "refill row out of range");
    rows.into_iter()
        .map(|(id, account, amount, license, cs, refills, comb, void)| {
            let binding = match (cs, refills) {
                (Some(cs), Some(r)) => Some((
                    from_sql_int(cs, step)?,
                    u32::try_from(r).map_err(|_| bad())?,
                )),
                _ => None,
            };
            Ok(Outstanding {
                client_txn_id: id,
                device_id: device.to_owned(),
                account_id: account,
                amount: from_sql_int(amount, step)?,
                license: license.map(u32::try_from).transpose().map_err(|_| bad())?,
                binding,
                combination_id: comb,
                void_combination_id: void,
            })
        })
        .collect()
}

/// A combination this meter issued (a refill's, or the void of one): a void credits zero.
pub(crate) fn read_known_combination(
    c: &Connection,
    id: &str,
    step: &str,
) -> Result<Option<Known>, ApiError> {
    let row: Option<(String, String, i64, i64, i64, i64, String)> = c
        .query_row(
            "SELECT client_txn_id, device_id, license,
                    CASE WHEN combination_id = ?1 THEN amount ELSE 0 END,
                    bound_control_sum, bound_refills,
                    CASE WHEN combination_id = ?1 THEN state ELSE 'void' END
             FROM refills WHERE combination_id = ?1 OR void_combination_id = ?1",
            [id],
            |r| r.try_into(),
        )
        .optional()
        .storage(step)?;
    let bad = || ApiError::internal(step, "refill row out of range");
    row.map(|(txn, device, license, amount, cs, refills, state)| {
        Ok(Known {
            client_txn_id: Some(txn),
            device_id: device,
            license: u32::try_from(license).map_err(|_| bad())?,
            amount: from_sql_int(amount, step)?,
            control_sum: from_sql_int(cs, step)?,
            refills: u32::try_from(refills).map_err(|_| bad())?,
            rc_state: None,
            // A refused refill's hold, if the RC made one, was released (its message never
            // left).
            released: state == "released" || state == "refused",
        })
    })
    .transpose()
}

/// Records an accepted audit (new `license_audits` row, log) and the settlements it made,
/// inside the caller's transaction.
pub(crate) fn record_audit(
    tx: &Transaction<'_>,
    audit: &Audited,
    purpose: &str,
    reference: &str,
    settlements: &[Settlement],
    step: &str,
) -> Result<(), ApiError> {
    let now = now_secs();
    // A set a license added starts empty: its baseline is zero (a registered set has its
    // row since registration, so this changes nothing for it).
    tx.execute(
        "INSERT OR IGNORE INTO license_baselines (device_id, license, control_sum, refills)
         VALUES (?1, ?2, 0, 0)",
        params![audit.device_id, i64::from(audit.license)],
    )
    .storage(step)?;
    tx.execute(
        "INSERT OR REPLACE INTO license_audits
         (device_id, set_index, license, ar, dr, control_sum, pieces, refills,
          last_combination_id, nonce, audit, accepted_at, fees, services)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        params![
            audit.device_id,
            i64::from(audit.set),
            i64::from(audit.license),
            to_sql_int(audit.ar, step)?,
            to_sql_int(audit.dr, step)?,
            to_sql_int(audit.control_sum, step)?,
            i64::from(audit.pieces),
            i64::from(audit.refills),
            audit.last_combination_id,
            audit.nonce,
            audit.hex,
            now,
            to_sql_int(audit.fees, step)?,
            i64::from(audit.services)
        ],
    )
    .storage(step)?;
    tx.execute(
        "INSERT INTO audit_log (device_id, set_index, purpose, reference, audit, accepted_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            audit.device_id,
            i64::from(audit.set),
            purpose,
            reference,
            audit.hex,
            now
        ],
    )
    .storage(step)?;
    for s in settlements {
        match s {
            Settlement::Own {
                client_txn_id,
                combination_id,
                outcome,
                ..
            } => {
                let state = match outcome {
                    Outcome::Applied => "completed",
                    Outcome::Released => "released",
                };
                tx.execute(
                    "UPDATE refills SET state = ?2, combination_id = COALESCE(combination_id, ?3),
                            updated_at = ?4
                     WHERE client_txn_id = ?1",
                    params![client_txn_id, state, combination_id, now],
                )
                .storage(step)?;
                tracing::info!(client_txn_id = %client_txn_id, state, "refill settled");
            }
            Settlement::Foreign { combination_id } => {
                tx.execute(
                    "INSERT OR IGNORE INTO foreign_settlements (combination_id, device_id, outcome, settled_at)
                     VALUES (?1, ?2, 'applied', ?3)",
                    params![combination_id, audit.device_id, now],
                )
                .storage(step)?;
            }
        }
    }
    Ok(())
}

/// The licenses the meter obtained for the device through `POST /v1/licenses` (granted
/// orders), in order of grant.
pub(crate) fn read_granted(c: &Connection, device: &str, step: &str) -> Result<Vec<u32>, ApiError> {
    let mut stmt = c
        .prepare_cached(
            "SELECT json_extract(grant_json, '$.fields.license') FROM license_orders
             WHERE device_id = ?1 AND grant_json IS NOT NULL ORDER BY created_at, client_txn_id",
        )
        .storage(step)?;
    let raw: Vec<Option<i64>> = stmt
        .query_map([device], |r| r.get(0))
        .storage(step)?
        .collect::<Result<_, _>>()
        .storage(step)?;
    raw.into_iter()
        .map(|l| {
            l.and_then(|l| u32::try_from(l).ok())
                .ok_or_else(|| ApiError::internal(step, "stored grant without a license"))
        })
        .collect()
}

// ------------------------------------------------------------------------------ refills

/// A refill row.
#[derive(Clone, Debug)]
pub(crate) struct RefillRow {
    pub(crate) view: RefillView,
    pub(crate) audit: Option<String>,
    pub(crate) license: Option<u32>,
    pub(crate) binding: Option<(u64, u32)>,
    pub(crate) error_status: Option<u16>,
}

impl RefillRow {
    /// The hold request at the RC for this refill, bound to its audited set (steps
    /// 260-265): the same request ID every time, so repeating it returns the same hold.
    pub(crate) fn hold_request(&self, license: u32, control_sum: u64, refills: u32) -> HoldRequest {
        HoldRequest {
            request_id: crate::history::request_id(&self.view.device_id, &self.view.client_txn_id),
            account_id: self.view.account_id.clone(),
            device_id: self.view.device_id.clone(),
            license,
            amount: self.view.amount,
            control_sum,
            refills,
        }
    }

    pub(crate) fn stored_error(&self) -> Option<ApiError> {
        let e = self.view.error.as_ref()?;
        Some(ApiError {
            status: StatusCode::from_u16(self.error_status.unwrap_or(409))
                .unwrap_or(StatusCode::CONFLICT),
            code: e.code.clone(),
            step: e.step.clone(),
            message: e.message.clone(),
        })
    }
}

/// Reads the refill `id` back inside `tx`, then commits: what the caller answers is what
/// is on disk.
pub(crate) fn commit_refill(
    tx: Transaction<'_>,
    id: &str,
    step: &str,
) -> Result<RefillRow, ApiError> {
    let row =
        read_refill(&tx, id, step)?.ok_or_else(|| ApiError::internal(step, "refill vanished"))?;
    tx.commit().storage(step)?;
    Ok(row)
}

pub(crate) fn read_refill(
    c: &Connection,
    id: &str,
    step: &str,
) -> Result<Option<RefillRow>, ApiError> {
    let mut stmt = c
        .prepare_cached(
            "SELECT client_txn_id, device_id, set_index, account_id, amount, state, nonce,
                    combination_id, refill_message, receipt, confirm_nonce,
                    error_status, error_code, error_step, error_message,
                    audit, license, bound_control_sum, bound_refills,
                    void_combination_id, void_message
             FROM refills WHERE client_txn_id = ?1",
        )
        .storage(step)?;
    let row = stmt
        .query_row([id], |r| {
            Ok((
                (
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, String>(6)?,
                ),
                (
                    r.get::<_, Option<String>>(7)?,
                    r.get::<_, Option<String>>(8)?,
                    r.get::<_, Option<String>>(9)?,
                    r.get::<_, Option<String>>(10)?,
                ),
                (
                    r.get::<_, Option<i64>>(11)?,
                    r.get::<_, Option<String>>(12)?,
                    r.get::<_, Option<String>>(13)?,
                    r.get::<_, Option<String>>(14)?,
                ),
                (
                    r.get::<_, Option<String>>(15)?,
                    r.get::<_, Option<i64>>(16)?,
                    r.get::<_, Option<i64>>(17)?,
                    r.get::<_, Option<i64>>(18)?,
                ),
                (
                    r.get::<_, Option<String>>(19)?,
                    r.get::<_, Option<String>>(20)?,
                ),
            ))
        })
        .optional()
        .storage(step)?;
    let Some((
        (txn, device, set, account, amount, state, nonce),
        (comb, message, receipt, confirm_nonce),
        (err_status, err_code, err_step, err_message),
        (audit, license, cs, refills),
        (void_id, void_message),
    )) = row
    else {
        return Ok(None);
    };
    let bad = || ApiError::internal(step, "refill row out of range");
    let error = match (err_code, err_step, err_message) {
        (Some(code), Some(step), Some(message)) => Some(ErrorDetail {
            code,
            step,
            message,
        }),
        _ => None,
    };
    let binding = match (cs, refills) {
        (Some(cs), Some(r)) => Some((
            from_sql_int(cs, step)?,
            u32::try_from(r).map_err(|_| bad())?,
        )),
        _ => None,
    };
    Ok(Some(RefillRow {
        view: RefillView {
            client_txn_id: txn,
            device_id: device,
            set: u8::try_from(set).map_err(|_| bad())?,
            account_id: account,
            amount: from_sql_int(amount, step)?,
            // Internally an accepted audit waits for its combination; for the host the next
            // step is the same (post the audit again), so it still reads awaiting_audit.
            // A cancelled refill whose message had left stays issued in the database until
            // an audit settles it; for the host it is voiding (apply the void, confirm).
            state: match state.parse::<RefillState>().map_err(|_| bad())? {
                RefillState::AuditAccepted => RefillState::AwaitingAudit,
                RefillState::MessageIssued if void_message.is_some() => RefillState::Voiding,
                s => s,
            },
            nonce,
            combination_id: comb,
            refill_message: message,
            receipt,
            confirm_nonce,
            void_message,
            void_combination_id: void_id,
            error,
        },
        audit,
        license: license.map(u32::try_from).transpose().map_err(|_| bad())?,
        binding,
        error_status: err_status.and_then(|s| u16::try_from(s).ok()),
    }))
}

pub(crate) fn read_inspection(
    c: &Connection,
    id: &str,
    step: &str,
) -> Result<Option<InspectionView>, ApiError> {
    let row: Option<(String, i64, String, Option<String>)> = c
        .query_row(
            "SELECT device_id, set_index, nonce, receipt FROM inspections WHERE inspection_id = ?1",
            [id],
            |r| r.try_into(),
        )
        .optional()
        .storage(step)?;
    row.map(|(device_id, set, nonce, receipt)| {
        Ok(InspectionView {
            inspection_id: id.to_owned(),
            device_id,
            set: u8::try_from(set).map_err(|_| ApiError::internal(step, "set out of range"))?,
            nonce,
            receipt,
        })
    })
    .transpose()
}
