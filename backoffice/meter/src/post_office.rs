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
    // Per license (seed 003): a set keeps its credit when it moves slot, and a set a
    // license added is listed once its first audit was accepted (its baseline row, zero).
    // `set` is the slot it was last audited in, else its registration order.
    let mut stmt = c
        .prepare_cached(
            "SELECT b.license, b.control_sum + COALESCE((
                 SELECT SUM(amount) FROM refills r
                 WHERE r.device_id = b.device_id AND r.license = b.license
                   AND r.state IN ('message_issued', 'completed')), 0),
                 (SELECT set_index FROM license_audits la
                  WHERE la.device_id = b.device_id AND la.license = b.license)
             FROM license_baselines b WHERE b.device_id = ?1",
        )
        .storage(step)?;
    let rows: Vec<(i64, i64, Option<i64>)> = stmt
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
             FROM license_audits la
             WHERE la.device_id = ?1 AND la.license = ?2",
        )
        .storage(step)?;
    let mut retired = c
        .prepare_cached(
            "SELECT MIN(final_ar) FROM retirements WHERE device_id = ?1 AND license = ?2
             HAVING COUNT(*) > 0",
        )
        .storage(step)?;
    let bad = || ApiError::internal(step, "credit row out of range");
    let mut sets = Vec::with_capacity(rows.len());
    for (license, credited, slot) in rows {
        let license = u32::try_from(license).map_err(|_| bad())?;
        let registered = licenses.iter().position(|l| l.0 == license);
        let set = match (slot, registered) {
            (Some(s), _) => u8::try_from(s).map_err(|_| bad())?,
            (None, Some(i)) => u8::try_from(i).map_err(|_| bad())?,
            (None, None) => continue, // a granted set is listed from its first audit
        };
        let audit: Option<(u32, i64, Option<i64>)> = last
            .query_row(rusqlite::params![device, license], |r| r.try_into())
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
        sets.push((
            registered.unwrap_or(usize::MAX),
            SetCredit {
                set,
                license,
                credited: from_sql_int(credited, step)?,
                last_audit,
                retired_ar: retired
                    .query_row(rusqlite::params![device, license], |r| r.get::<_, i64>(0))
                    .optional()
                    .storage(step)?
                    .map(|v| from_sql_int(v, step))
                    .transpose()?,
            },
        ));
    }
    // Registered sets in registration order, then the sets licenses added.
    sets.sort_by_key(|(order, s)| (*order, s.license));
    let sets: Vec<SetCredit> = sets.into_iter().map(|(_, s)| s).collect();
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
            .raise_alarm(
                &device,
                set,
                Some(f.license),
                AlarmKind::PostOffice,
                &message,
                None,
            )
            .await?;
    }
    Ok(Json(
        serde_json::json!({ "device_id": device, "quarantined": true }),
    ))
}
