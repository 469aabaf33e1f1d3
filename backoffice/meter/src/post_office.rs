//! What the meter server tells the post office and hears from it (issue 13): the value the
//! back office credited to each register set of a device — its registered baseline control
//! sum plus every refill whose message left (applied or not yet), the most the device may
//! ever have counted as postage — and the post office's findings, which raise a
//! `post_office` alarm and quarantine the device (no refill, no receipt) until an operator
//! resolves it.

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::Json;
use rusqlite::OptionalExtension;

use openpsd_protocol::post::LastAudit;
use openpsd_protocol::{DeviceCredit, PostFinding, SetCredit};
use openpsd_service_kit::codec;
use openpsd_service_kit::db::from_sql_int;
use openpsd_service_kit::error::{ApiError, StorageContext};

use crate::alarms::AlarmKind;
use crate::Meter;

const STEP_CREDIT: &str = "meter_credit";
const STEP_FINDING: &str = "meter_post_finding";

/// Reads the sets' credit: baselines (with what operators wrote off) + refill messages
/// that left the meter and were not voided.
fn read_credit(
    c: &rusqlite::Connection,
    device: &str,
    step: &str,
) -> Result<Option<Vec<SetCredit>>, ApiError> {
    let licenses: Option<String> = c
        .query_row(
            "SELECT licenses FROM devices WHERE device_id = ?1",
            [device],
            |r| r.get(0),
        )
        .optional()
        .storage(step)?;
    let registered: Option<i64> = c
        .query_row(
            "SELECT 1 FROM registrations WHERE device_id = ?1",
            [device],
            |r| r.get(0),
        )
        .optional()
        .storage(step)?;
    let (Some(licenses), Some(_)) = (licenses, registered) else {
        return Ok(None);
    };
    let licenses: Vec<(u32, String)> = serde_json::from_str(&licenses)
        .map_err(|e| ApiError::internal(step, format!("stored licenses: {e}")))?;
    let mut stmt = c
        .prepare_cached(
            "SELECT b.set_index, b.control_sum + COALESCE((
                 SELECT SUM(amount) FROM refills r
                 WHERE r.device_id = b.device_id AND r.set_index = b.set_index
                   AND r.state IN ('message_issued', 'completed')), 0)
             FROM baselines b WHERE b.device_id = ?1 ORDER BY b.set_index",
        )
        .storage(step)?;
    let rows: Vec<(i64, i64)> = stmt
        .query_map([device], |r| r.try_into())
        .storage(step)?
        .collect::<Result<_, _>>()
        .storage(step)?;
    // The day an audit was made is bounded below by the day its nonce was issued (the
    // device answered that nonce): not the day the meter accepted it, which for an audit an
    // operator accepted resolving an alarm, or a late confirmation, can be weeks later.
    let mut last = c
        .prepare_cached(
            "SELECT la.pieces, la.ar,
                    (SELECT MIN(t) FROM (
                         SELECT created_at AS t FROM inspections
                         WHERE device_id = la.device_id AND nonce = la.nonce
                         UNION ALL
                         SELECT created_at FROM refills
                         WHERE device_id = la.device_id
                           AND (nonce = la.nonce OR confirm_nonce = la.nonce)))
             FROM last_audits la
             WHERE la.device_id = ?1 AND la.set_index = ?2 AND la.license = ?3",
        )
        .storage(step)?;
    let mut sets = Vec::with_capacity(rows.len());
    for (set, credited) in rows {
        let set = u8::try_from(set).map_err(|_| ApiError::internal(step, "set index"))?;
        let license = licenses
            .get(usize::from(set))
            .map(|l| l.0)
            .ok_or_else(|| ApiError::internal(step, "a baseline for a set the device lacks"))?;
        let audit: Option<(u32, i64, Option<i64>)> = last
            .query_row(rusqlite::params![device, set, license], |r| r.try_into())
            .optional()
            .storage(step)?;
        let last_audit = audit
            .map(|(pieces, ar, nonce_at)| -> Result<LastAudit, ApiError> {
                // No nonce on record: day 0 turns the date check off.
                let day = match nonce_at {
                    Some(t) => openpsd_core::types::Date::from_unix_seconds(from_sql_int(t, step)?)
                        .map_or(0, openpsd_core::types::Date::day_number),
                    None => 0,
                };
                Ok(LastAudit {
                    pieces,
                    ar: from_sql_int(ar, step)?,
                    day,
                })
            })
            .transpose()?;
        sets.push(SetCredit {
            set,
            license,
            credited: from_sql_int(credited, step)?,
            last_audit,
        });
    }
    Ok(Some(sets))
}

/// `GET /v1/devices/{id}/credit` (the post office, the operator).
pub(crate) async fn credit(
    State(meter): State<Meter>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<DeviceCredit>, ApiError> {
    let step = STEP_CREDIT;
    let device = codec::device_hex(&codec::device_id(&id, step)?);
    let d = device.clone();
    let sets = meter
        .db
        .run(step, move |c| read_credit(c, &d, step))
        .await?
        .ok_or_else(|| ApiError::unknown_device(step, &device))?;
    Ok(Json(DeviceCredit {
        device_id: device,
        sets,
    }))
}

/// `POST /v1/devices/{id}/findings` (the post office): a `post_office` alarm on the
/// license's set; the device is quarantined until an operator resolves it.
pub(crate) async fn finding(
    State(meter): State<Meter>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let step = STEP_FINDING;
    let device = codec::device_hex(&codec::device_id(&id, step)?);
    let f: PostFinding = codec::json(&body, step)?;
    let clean = |t: &str| !t.chars().any(char::is_control);
    if f.kind.is_empty() || f.kind.len() > 40 || f.message.len() > 1000 {
        return Err(ApiError::bad_request(
            step,
            "kind: 1 to 40 characters; message: at most 1000",
        ));
    }
    if !clean(&f.kind) || !clean(&f.message) {
        return Err(ApiError::bad_request(step, "no control characters"));
    }
    let d = device.clone();
    let sets = meter
        .db
        .run(step, move |c| read_credit(c, &d, step))
        .await?
        .ok_or_else(|| ApiError::unknown_device(step, &device))?;
    let set = sets
        .iter()
        .find(|s| s.license == f.license)
        .map(|s| s.set)
        .ok_or_else(|| {
            ApiError::bad_request(step, format!("license {} is not the device's", f.license))
        })?;
    let message = format!("post office: {}: {}", f.kind, f.message);
    // The same finding again (a retry after a lost answer) raises no second alarm, and
    // does not quarantine again a device an operator has since resolved.
    let (d, m) = (device.clone(), message.clone());
    let known: Option<i64> = meter
        .db
        .run(step, move |c| {
            c.query_row(
                "SELECT 1 FROM alarms WHERE device_id = ?1 AND kind = ?2 AND message = ?3",
                rusqlite::params![d, AlarmKind::PostOffice.as_str(), m],
                |r| r.get(0),
            )
            .optional()
            .storage(step)
        })
        .await?;
    if known.is_none() {
        meter
            .raise_alarm(&device, set, AlarmKind::PostOffice, &message, None)
            .await?;
    }
    Ok(Json(
        serde_json::json!({ "device_id": device, "quarantined": true }),
    ))
}
