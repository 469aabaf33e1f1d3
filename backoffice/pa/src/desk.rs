//! The postal authority's desk for license numbers (`backoffice pa grant`): a license
//! allocated to a customer account before any of its devices asks, and who holds a
//! license.
//!
//! Seed 003 leaves it to the post who may print under a license; a license is the
//! customer's (its "town die"), not a device's. The PA keeps each license's holding
//! account: set by the desk (`POST /v1/licenses`), or by the first grant of a new number
//! (the account the meter took the order from, passed on by the vendor). A grant of a
//! license held by an account goes only to that account's devices (`409
//! license_not_yours`), whichever meter or vendor passes the order on. The meter asks
//! `GET /v1/licenses/{n}` before passing on an order for a license number its own records
//! do not show the customer holding. Account IDs are the back office's one namespace (the
//! recharging center's accounts).

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use openpsd_protocol::license::{code, LicenseHolder};
use openpsd_service_kit::codec;
use openpsd_service_kit::db::now_secs;
use openpsd_service_kit::error::{ApiError, StorageContext};
use rusqlite::{params, OptionalExtension};

use crate::{err, origin_ok, Pa};

const STEP_ALLOCATE: &str = "pa_allocate";
const STEP_HOLDER: &str = "pa_holder";

/// The next license number never used (a request or an allocation for license 0).
pub(crate) fn next_license(c: &rusqlite::Connection, step: &str) -> Result<u32, ApiError> {
    let next: i64 = c
        .query_row(
            "SELECT COALESCE(MAX(license), 0) + 1 FROM licenses",
            [],
            |r| r.get(0),
        )
        .storage(step)?;
    u32::try_from(next).map_err(|_| {
        err(
            StatusCode::CONFLICT,
            code::LICENSE_REFUSED,
            step,
            "no license number left",
        )
    })
}

/// The license's row and standing grants, if it exists.
pub(crate) fn holder(
    c: &rusqlite::Connection,
    license: u32,
    step: &str,
) -> Result<Option<LicenseHolder>, ApiError> {
    let row: Option<(String, Option<String>)> = c
        .query_row(
            "SELECT origin, account FROM licenses WHERE license = ?1",
            [license],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .storage(step)?;
    let Some((origin, account)) = row else {
        return Ok(None);
    };
    let devices: u32 = c
        .query_row(
            "SELECT COUNT(DISTINCT device_id) FROM grants WHERE license = ?1 AND revoked_at IS NULL",
            [license],
            |r| r.get(0),
        )
        .storage(step)?;
    Ok(Some(LicenseHolder {
        license,
        origin,
        account,
        devices,
    }))
}

/// `POST /v1/licenses` (operator): `{license (0: the next free number), origin, account}`
/// → `201` allocated, `200` the same again, `409 license_refused` if the license exists
/// with another origin or holder.
pub(crate) async fn allocate(
    State(pa): State<Pa>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let step = STEP_ALLOCATE;
    let req: LicenseHolder = codec::json(&body, step)?;
    let account = req
        .account
        .clone()
        .ok_or_else(|| ApiError::bad_request(step, "account: required"))?;
    codec::ident("account", &account, step)?;
    if !origin_ok(&req.origin) {
        return Err(ApiError::bad_request(
            step,
            "origin: 1 to 10 of A-Z 0-9 space -",
        ));
    }
    let (created, holder) = pa
        .db
        .run(step, move |c| {
            let tx = c.transaction().storage(step)?;
            let license = if req.license == 0 {
                next_license(&tx, step)?
            } else {
                req.license
            };
            if let Some(h) = holder(&tx, license, step)? {
                if h.origin == req.origin && h.account.as_deref() == Some(account.as_str()) {
                    return Ok((false, h));
                }
                return Err(err(
                    StatusCode::CONFLICT,
                    code::LICENSE_REFUSED,
                    step,
                    format!(
                        "license {license} exists with origin {:?} and holder {:?}",
                        h.origin, h.account
                    ),
                ));
            }
            tx.execute(
                "INSERT INTO licenses (license, origin, account, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![license, req.origin, account, now_secs()],
            )
            .storage(step)?;
            let h = holder(&tx, license, step)?
                .ok_or_else(|| ApiError::internal(step, "license vanished"))?;
            tx.commit().storage(step)?;
            Ok((true, h))
        })
        .await?;
    if created {
        tracing::info!(license = holder.license, account = ?holder.account, "license allocated");
    }
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(holder)))
}

/// `GET /v1/licenses/{license}` (operator, meter): who holds it (`404 unknown_license`).
pub(crate) async fn get_holder(
    State(pa): State<Pa>,
    UrlPath(license): UrlPath<String>,
) -> Result<Json<LicenseHolder>, ApiError> {
    let step = STEP_HOLDER;
    // Parsed here, not by the extractor: its refusal is plain text, not the error body.
    let license: u32 = license
        .parse()
        .map_err(|_| ApiError::bad_request(step, format!("license {license:?} is not a number")))?;
    pa.db
        .run(step, move |c| holder(c, license, step))
        .await?
        .map(Json)
        .ok_or_else(|| {
            err(
                StatusCode::NOT_FOUND,
                code::UNKNOWN_LICENSE,
                step,
                format!("no license {license}"),
            )
        })
}
