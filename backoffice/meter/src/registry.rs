//! Devices registered at the meter (the operator's `POST /v1/devices`): the account that
//! owns a device and pays its refills, and each register set's baseline — the control sum
//! and refill count personalization (or the issuer's funding) left on it, which the set's
//! first audit must show. The meter serves no device that is not registered, and answers a
//! request naming another account exactly as for an unknown device, so IDs cannot be probed.

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use rusqlite::{params, Connection, OptionalExtension};

use openpsd_protocol::{Baseline, ErrorCode, MeterDevice, MeterRegistration};
use openpsd_service_kit::access::Customer;
use openpsd_service_kit::codec;
use openpsd_service_kit::db::{from_sql_int, now_secs, to_sql_int};
use openpsd_service_kit::error::{ApiError, StorageContext};

use crate::{Meter, STEP_REGISTER};

/// `409 device_quarantined`.
pub(crate) fn quarantined(step: &str, device: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        ErrorCode::DeviceQuarantined,
        step,
        format!(
            "device {device} is quarantined: its audits disagreed with the ledger; an operator \
             must resolve the alarm (GET /v1/alarms) before it is served again"
        ),
    )
}

/// The device as registered, or `None`.
pub(crate) fn read_device(
    c: &Connection,
    device: &str,
    step: &str,
) -> Result<Option<MeterDevice>, ApiError> {
    let row: Option<(String, i64)> = c
        .query_row(
            "SELECT account_id, quarantined FROM registrations WHERE device_id = ?1",
            [device],
            |r| r.try_into(),
        )
        .optional()
        .storage(step)?;
    let Some((account_id, quarantined)) = row else {
        return Ok(None);
    };
    let mut stmt = c
        .prepare_cached(
            // Per registered set, its license's baseline (with write-offs).
            "SELECT COALESCE(lb.control_sum, b.control_sum), COALESCE(lb.refills, b.refills)
             FROM baselines b
             LEFT JOIN devices d ON d.device_id = b.device_id
             LEFT JOIN license_baselines lb ON lb.device_id = b.device_id
                 AND lb.license = json_extract(d.licenses, '$[' || b.set_index || '][0]')
             WHERE b.device_id = ?1 ORDER BY b.set_index",
        )
        .storage(step)?;
    let raw: Vec<(i64, i64)> = stmt
        .query_map([device], |r| r.try_into())
        .storage(step)?
        .collect::<Result<_, _>>()
        .storage(step)?;
    let baselines = raw
        .into_iter()
        .map(|(cs, refills)| {
            Ok(Baseline {
                control_sum: from_sql_int(cs, step)?,
                refills: u32::try_from(refills)
                    .map_err(|_| ApiError::internal(step, "baseline out of range"))?,
            })
        })
        .collect::<Result<_, ApiError>>()?;
    Ok(Some(MeterDevice {
        device_id: device.to_owned(),
        account_id,
        baselines,
        quarantined: quarantined != 0,
    }))
}

impl Meter {
    /// The registered device `device` for a caller naming `account` (if it names one):
    /// `404 unknown_device` when it is not registered or belongs to another account.
    pub(crate) async fn registered(
        &self,
        device: &str,
        account: Option<&str>,
        step: &'static str,
    ) -> Result<MeterDevice, ApiError> {
        let d = device.to_owned();
        let found = self.db.run(step, move |c| read_device(c, &d, step)).await?;
        match found {
            Some(dev) if account.is_none_or(|a| a == dev.account_id) => Ok(dev),
            _ => Err(ApiError::unknown_device(step, device)),
        }
    }

    /// [`Meter::registered`], and refused while quarantined.
    pub(crate) async fn serving(
        &self,
        device: &str,
        account: Option<&str>,
        step: &'static str,
    ) -> Result<MeterDevice, ApiError> {
        let dev = self.registered(device, account, step).await?;
        if dev.quarantined {
            return Err(quarantined(step, device));
        }
        Ok(dev)
    }
}

/// `POST /v1/devices` (operator): registers a device the KMS knows, with its owner and
/// baselines. `201` new, `200` the same again, `409 device_conflict` for other values.
pub(crate) async fn register(
    State(meter): State<Meter>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let step = STEP_REGISTER;
    let mut req: MeterRegistration = codec::json(&body, step)?;
    codec::ident("account_id", &req.account_id, step)?;
    let device = codec::device_hex(&codec::device_id(&req.device_id, step)?);
    let licenses = meter.licenses(&device, step).await?;
    if req.baselines.is_empty() {
        req.baselines = vec![
            Baseline {
                control_sum: 0,
                refills: 0
            };
            licenses.len()
        ];
    }
    if req.baselines.len() != licenses.len() {
        return Err(ApiError::bad_request(
            step,
            format!(
                "device {device} has {} register sets, the registration gives {} baselines",
                licenses.len(),
                req.baselines.len()
            ),
        ));
    }
    for b in &req.baselines {
        to_sql_int(b.control_sum, step)
            .map_err(|_| ApiError::bad_request(step, "baseline control sum out of range"))?;
    }
    let wanted = MeterDevice {
        device_id: device.clone(),
        account_id: req.account_id,
        baselines: req.baselines,
        quarantined: false,
    };
    let w2 = wanted.clone();
    let (created, dev) = meter
        .db
        .run(step, move |c| {
            let tx = c.transaction().storage(step)?;
            if let Some(have) = read_device(&tx, &w2.device_id, step)? {
                if have.account_id != w2.account_id || have.baselines != w2.baselines {
                    return Err(ApiError::new(
                        StatusCode::CONFLICT,
                        ErrorCode::DeviceConflict,
                        step,
                        format!(
                            "device {} is registered already with another owner or baseline",
                            w2.device_id
                        ),
                    ));
                }
                return Ok((false, have));
            }
            let now = now_secs();
            tx.execute(
                "INSERT INTO registrations (device_id, account_id, quarantined, registered_at)
                 VALUES (?1, ?2, 0, ?3)",
                params![w2.device_id, w2.account_id, now],
            )
            .storage(step)?;
            // Per slot as given (what `GET /v1/devices` shows), and per license — the
            // license the KMS registered for that set — which is what audits are checked
            // against wherever the set moves (`license_baselines`).
            for ((i, b), (license, _)) in w2.baselines.iter().enumerate().zip(&licenses) {
                tx.execute(
                    "INSERT OR REPLACE INTO license_baselines (device_id, license, control_sum, refills)
                     VALUES (?1, ?2, ?3, ?4)",
                    params![
                        w2.device_id,
                        i64::from(*license),
                        to_sql_int(b.control_sum, step)?,
                        i64::from(b.refills)
                    ],
                )
                .storage(step)?;
                tx.execute(
                    "INSERT INTO baselines (device_id, set_index, control_sum, refills)
                     VALUES (?1, ?2, ?3, ?4)",
                    params![
                        w2.device_id,
                        i64::try_from(i).map_err(|_| ApiError::internal(step, "set index"))?,
                        to_sql_int(b.control_sum, step)?,
                        i64::from(b.refills)
                    ],
                )
                .storage(step)?;
            }
            tx.commit().storage(step)?;
            Ok((true, w2))
        })
        .await?;
    if created {
        tracing::info!(device = %dev.device_id, account = %dev.account_id, "device registered");
    }
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(dev)))
}

/// `GET /v1/devices/{device_id}` (operator, owner): registration, baselines, quarantine.
pub(crate) async fn get_device(
    State(meter): State<Meter>,
    customer: Option<Extension<Customer>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<MeterDevice>, ApiError> {
    let step = STEP_REGISTER;
    let device = codec::device_hex(&codec::device_id(&id, step)?);
    // A customer sees only their own devices (another's is not found); the operator all.
    let owner = customer.as_ref().map(|c| c.account_id.as_str());
    Ok(Json(meter.registered(&device, owner, step).await?))
}
