//! Alarms and quarantine: a verified audit that disagrees with the ledger — a first audit
//! off its baseline, a control sum that is not the last accepted plus the refills applied
//! since, a combination the meter released or never issued, a refill count jump, a hold the
//! recharging center will not debit for value the card shows — is never a log line only.
//! It is logged at error level, counted (`GET /v1/alarms`), and quarantines the device:
//! refills and inspections are refused (`409 device_quarantined`) until an operator
//! resolves it with a note (`POST /v1/devices/{id}/resolve`), which is recorded.

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::Json;
use rusqlite::{params, OptionalExtension};

use openpsd_protocol::{Alarm, Alarms, MeterDevice, Resolve};
use openpsd_service_kit::codec;
use openpsd_service_kit::db::{from_sql_int, now_secs, to_sql_int};
use openpsd_service_kit::error::{ApiError, StorageContext};

use crate::registry::read_device;
use crate::store::{read_last, read_outstanding, record_audit};
use crate::{Meter, STEP_ALARM};

/// What raised an alarm (`Alarm::kind`).
#[derive(Clone, Copy, Debug)]
pub(crate) enum AlarmKind {
    /// The first audit of a set does not show its registered baseline.
    Baseline,
    /// An audit does not follow from the last accepted one and the refills applied since.
    History,
    /// The card applied a combination whose hold was released.
    ReleasedApplied,
    /// The recharging center refused to debit a hold the card shows applied.
    SettleRefused,
    /// The post office found the device's indicia inconsistent (a conflict, registers
    /// beyond its credit, postage nobody paid for).
    PostOffice,
}

impl AlarmKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            AlarmKind::Baseline => "baseline",
            AlarmKind::History => "history",
            AlarmKind::ReleasedApplied => "released_applied",
            AlarmKind::SettleRefused => "settle_refused",
            AlarmKind::PostOffice => "post_office",
        }
    }
}

impl Meter {
    /// Records an alarm and quarantines the device, in one commit. Errors storing it are
    /// returned (the caller answers them instead: the audit is refused either way).
    pub(crate) async fn raise_alarm(
        &self,
        device: &str,
        set: u8,
        license: Option<u32>,
        kind: AlarmKind,
        message: &str,
        audit: Option<&str>,
    ) -> Result<(), ApiError> {
        tracing::error!(
            device,
            set,
            license,
            kind = kind.as_str(),
            message,
            "ALARM: the device's audit disagrees with the ledger; device quarantined"
        );
        let (d, m, a) = (
            device.to_owned(),
            message.to_owned(),
            audit.map(str::to_owned),
        );
        self.db
            .run(STEP_ALARM, move |c| {
                let tx = c.transaction().storage(STEP_ALARM)?;
                tx.execute(
                    "INSERT INTO alarms (device_id, set_index, license, kind, message, audit,
                                         raised_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        d,
                        i64::from(set),
                        license.map(i64::from),
                        kind.as_str(),
                        m,
                        a,
                        now_secs()
                    ],
                )
                .storage(STEP_ALARM)?;
                tx.execute(
                    "UPDATE registrations SET quarantined = 1 WHERE device_id = ?1",
                    [&d],
                )
                .storage(STEP_ALARM)?;
                tx.commit().storage(STEP_ALARM)
            })
            .await
    }

    /// Raises the alarm, then answers `err` (or the storage error, if it could not be kept).
    pub(crate) async fn alarm(
        &self,
        device: &str,
        set: u8,
        license: Option<u32>,
        kind: AlarmKind,
        audit: Option<&str>,
        err: ApiError,
    ) -> ApiError {
        match self
            .raise_alarm(device, set, license, kind, &err.message, audit)
            .await
        {
            Ok(()) => ApiError {
                message: format!("{}; device quarantined (alarm raised)", err.message),
                ..err
            },
            Err(e) => e,
        }
    }
}

/// `GET /v1/alarms` (operator): the counters and every alarm, newest first.
pub(crate) async fn list_alarms(State(meter): State<Meter>) -> Result<Json<Alarms>, ApiError> {
    let step = STEP_ALARM;
    let alarms = meter
        .db
        .run(step, move |c| {
            let mut stmt = c
                .prepare(
                    "SELECT alarm_id, device_id, set_index, kind, message, raised_at, resolved_at,
                            note
                     FROM alarms ORDER BY alarm_id DESC",
                )
                .storage(step)?;
            type Raw = (
                i64,
                String,
                i64,
                String,
                String,
                i64,
                Option<i64>,
                Option<String>,
            );
            let raw: Vec<Raw> = stmt
                .query_map([], |r| r.try_into())
                .storage(step)?
                .collect::<Result<_, _>>()
                .storage(step)?;
            raw.into_iter()
                .map(
                    |(id, device_id, set, kind, message, raised, resolved, note)| {
                        Ok(Alarm {
                            alarm_id: from_sql_int(id, step)?,
                            device_id,
                            set: u8::try_from(set)
                                .map_err(|_| ApiError::internal(step, "alarm set out of range"))?,
                            kind,
                            message,
                            raised_at: from_sql_int(raised, step)?,
                            resolved_at: resolved.map(|r| from_sql_int(r, step)).transpose()?,
                            note,
                        })
                    },
                )
                .collect::<Result<Vec<_>, ApiError>>()
        })
        .await?;
    Ok(Json(Alarms {
        raised: alarms.len() as u64,
        open: alarms.iter().filter(|a| a.resolved_at.is_none()).count() as u64,
        alarms,
    }))
}

/// `POST /v1/devices/{device_id}/resolve` (operator): records the note on every open alarm
/// of the device and lifts its quarantine. With `accept_audit`, the audit of the latest
/// open alarm becomes its set's last accepted audit and the difference to the ledger is
/// written off into the set's baseline (refused while a refill of the device is bound to
/// an audit: settle or cancel it first, with the device lifted without `accept_audit`).
pub(crate) async fn resolve(
    State(meter): State<Meter>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> Result<Json<MeterDevice>, ApiError> {
    let step = STEP_ALARM;
    let req: Resolve = codec::json(&body, step)?;
    let note = req.note.trim().to_owned();
    if note.is_empty() || note.len() > 1000 {
        return Err(ApiError::bad_request(
            step,
            "a resolution needs a note of 1 to 1000 bytes",
        ));
    }
    let device = codec::device_hex(&codec::device_id(&id, step)?);
    meter.registered(&device, None, step).await?;
    let _guard = meter.lock(&device).await;
    let d = device.clone();
    let latest: Option<(i64, Option<String>)> = meter
        .db
        .run(step, move |c| {
            c.query_row(
                "SELECT set_index, audit FROM alarms WHERE device_id = ?1 AND resolved_at IS NULL
                 ORDER BY alarm_id DESC LIMIT 1",
                [&d],
                |r| r.try_into(),
            )
            .optional()
            .storage(step)
        })
        .await?;
    let Some((_, alarm_audit)) = latest else {
        return Err(ApiError::wrong_state(
            step,
            format!("device {device} has no open alarm"),
        ));
    };
    let accepted = if req.accept_audit {
        let Some(hex) = alarm_audit else {
            return Err(ApiError::wrong_state(
                step,
                "the latest alarm was not raised by an audit; resolve without accept_audit",
            ));
        };
        let audit = meter.verify(&hex, step).await?;
        if audit.device_id != device {
            return Err(ApiError::internal(step, "alarm audit of another device"));
        }
        Some(audit)
    } else {
        None
    };
    let d = device.clone();
    let dev = meter
        .db
        .run(step, move |c| {
            let tx = c.transaction().storage(step)?;
            let now = now_secs();
            if let Some(a) = &accepted {
                if read_outstanding(&tx, &d, step)?
                    .iter()
                    .any(|o| o.binding.is_some())
                {
                    return Err(ApiError::wrong_state(
                        step,
                        "a refill of this device is bound to an audit; resolve without \
                         accept_audit, settle or cancel it, then resolve again",
                    ));
                }
                write_off(&tx, a, step)?;
                record_audit(&tx, a, "resolve", "operator", &[], step)?;
            }
            tx.execute(
                "UPDATE alarms SET resolved_at = ?2, note = ?3
                 WHERE device_id = ?1 AND resolved_at IS NULL",
                params![d, now, note],
            )
            .storage(step)?;
            tx.execute(
                "UPDATE registrations SET quarantined = 0 WHERE device_id = ?1",
                [&d],
            )
            .storage(step)?;
            let dev = read_device(&tx, &d, step)?
                .ok_or_else(|| ApiError::internal(step, "registration vanished"))?;
            tx.commit().storage(step)?;
            Ok(dev)
        })
        .await?;
    tracing::warn!(device = %device, accepted = req.accept_audit, "alarms resolved by an operator");
    Ok(Json(dev))
}

/// Moves the set's baseline by what the accepted audit differs from the ledger's
/// expectation (the last accepted audit, or the baseline itself before any), so that
/// control sum - baseline = refills applied stays true.
fn write_off(
    tx: &rusqlite::Transaction<'_>,
    a: &crate::history::Audited,
    step: &str,
) -> Result<(), ApiError> {
    // Per license (the set may have moved slot); a set a license added has a zero
    // baseline until written off.
    let (b_cs, b_r): (i64, i64) = tx
        .query_row(
            "SELECT control_sum, refills FROM license_baselines
             WHERE device_id = ?1 AND license = ?2",
            params![a.device_id, i64::from(a.license)],
            |r| r.try_into(),
        )
        .optional()
        .storage(step)?
        .unwrap_or((0, 0));
    let (from_cs, from_r) = match read_last(tx, &a.device_id, a.license, step)? {
        Some(l) => (i128::from(l.control_sum), i128::from(l.refills)),
        None => (i128::from(b_cs), i128::from(b_r)),
    };
    let cs = i128::from(b_cs) + i128::from(a.control_sum) - from_cs;
    let refills = i128::from(b_r) + i128::from(a.refills) - from_r;
    let refuse = || {
        ApiError::wrong_state(
            step,
            "the card shows less than the ledger applied to it; it cannot be accepted as it is",
        )
    };
    let cs = u64::try_from(cs).map_err(|_| refuse())?;
    let refills = u32::try_from(refills).map_err(|_| refuse())?;
    tx.execute(
        "INSERT OR REPLACE INTO license_baselines (device_id, license, control_sum, refills)
         VALUES (?1, ?2, ?3, ?4)",
        params![
            a.device_id,
            i64::from(a.license),
            to_sql_int(cs, step)?,
            i64::from(refills)
        ],
    )
    .storage(step)?;
    Ok(())
}
