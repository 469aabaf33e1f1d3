//! `POST /v1/licenses` (seed 003, Fig. 4 step 63's entry): a customer's PSD asks for a
//! license through the meter server, which passes the PSD's signed request to the
//! manufacturer (the `vendor` service; it forwards to the postal authority and countersigns
//! the grant) and hands back LICENSE INSTALL's data.
//!
//! The meter adds who is asking: only the customer who owns the device (another's device is
//! `404`, as for refills), and a quarantined device is refused. A request for a given
//! license number (not 0, "a new one") is passed on only if one of the customer's devices
//! holds that license already, held it until it retired the set, or the PA's desk
//! allocated it to the customer's account (`403 license_not_yours` otherwise): a second
//! PSD on the license (claim 6) or a replacement PSD. The order passes the account on, and
//! the PA refuses a license another account holds, whichever meter asks. It is idempotent by the
//! customer's `client_txn_id`: the same ID with the same request answers the stored grant
//! (a host that lost the answer runs again), with another request `409`. The vendor and the
//! PA are idempotent by the request too, so a meter that crashed between its call and its
//! store asks again and gets the same certificate.

use crate::Meter;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use openpsd_core::psd::license::request::LicenseRequest;
use openpsd_protocol::license::{LicenseGrant, LicenseOrder, MeterLicenseOrder};
use openpsd_protocol::ErrorCode;
use openpsd_service_kit::access::Customer;
use openpsd_service_kit::codec;
use openpsd_service_kit::db::now_secs;
use openpsd_service_kit::error::{ApiError, StorageContext};
use rusqlite::{params, OptionalExtension};

const STEP: &str = "license";

/// The table of license orders (one per client transaction).
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS license_orders (
    client_txn_id  TEXT PRIMARY KEY,
    account_id     TEXT NOT NULL,
    device_id      TEXT NOT NULL,
    request        TEXT NOT NULL,            -- the PSD's request, hex
    grant_json     TEXT,                     -- the vendor's answer, once received
    created_at     INTEGER NOT NULL
);
";

/// `GET /v1/licenses/{client_txn_id}`: the grant of one of the customer's orders, for a
/// host that resumes an order (`404` if it is not theirs or not granted yet).
pub(crate) async fn get_order(
    State(meter): State<Meter>,
    Extension(customer): Extension<Customer>,
    UrlPath(txn): UrlPath<String>,
) -> Result<Json<LicenseGrant>, ApiError> {
    codec::ident("client_txn_id", &txn, STEP)?;
    let (t, account) = (txn.clone(), customer.account_id.clone());
    let json: Option<String> = meter
        .db
        .run(STEP, move |c| {
            c.query_row(
                "SELECT grant_json FROM license_orders
                 WHERE client_txn_id = ?1 AND account_id = ?2 AND grant_json IS NOT NULL",
                params![t, account],
                |r| r.get(0),
            )
            .optional()
            .storage(STEP)
        })
        .await?;
    let json = json.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::UnknownLicenseOrder,
            STEP,
            format!("no granted license order '{txn}' of yours"),
        )
    })?;
    let grant = serde_json::from_str(&json)
        .map_err(|e| ApiError::internal(STEP, format!("stored grant: {e}")))?;
    Ok(Json(grant))
}

/// `POST /v1/licenses`.
pub(crate) async fn order_license(
    State(meter): State<Meter>,
    Extension(customer): Extension<Customer>,
    body: Bytes,
) -> Result<Json<LicenseGrant>, ApiError> {
    let req: MeterLicenseOrder = codec::json(&body, STEP)?;
    codec::ident("client_txn_id", &req.client_txn_id, STEP)?;
    let device = codec::device_id(&req.device_id, STEP)?;
    let device_id = codec::device_hex(&device);
    let bytes =
        hex::decode(&req.request).map_err(|_| ApiError::bad_request(STEP, "request: hex"))?;
    let request = LicenseRequest::decode(&bytes)
        .map_err(|_| ApiError::bad_request(STEP, "request: not a LICENSE REQUEST answer"))?;
    if request.body.device != device {
        return Err(ApiError::bad_request(
            STEP,
            "request: made by another device than device_id",
        ));
    }
    let vendor = meter.vendor.clone().ok_or_else(|| {
        ApiError::unavailable(
            STEP,
            "this meter server has no vendor configured (--vendor)",
        )
    })?;
    meter
        .serving(&device_id, Some(&customer.account_id), STEP)
        .await?;
    // A license number is asked for only by its holder (another PSD on the license, or a
    // replacement): the PA grants up to 64 devices a license and knows no customers, so
    // without this check anyone could mail under another customer's license and town.
    let asked = request.body.license.0;
    let (d, a) = (device_id.clone(), asked);
    if asked != 0
        && meter
            .db
            .run(STEP, move |c| crate::retire::is_retired(c, &d, a, STEP))
            .await?
    {
        return Err(ApiError::wrong_state(
            STEP,
            format!(
                "device {device_id} retired its set of license {asked} (refunded): ask for it on \
                 another of your devices, or for a new license"
            ),
        ));
    }
    if asked != 0
        && !meter
            .account_holds_license(&customer.account_id, asked, STEP)
            .await?
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::LicenseNotYours,
            STEP,
            format!(
                "license {asked} is held by none of your devices: ask for license 0 (a new \
                 license) or for one of yours"
            ),
        ));
    }
    let request_hex = hex::encode(&bytes);
    let (txn, account, dev, req_hex) = (
        req.client_txn_id.clone(),
        customer.account_id.clone(),
        device_id.clone(),
        request_hex.clone(),
    );
    let stored: Option<Option<String>> = meter
        .db
        .run(STEP, move |c| {
            let row: Option<(String, String, String, Option<String>)> = c
                .query_row(
                    "SELECT account_id, device_id, request, grant_json FROM license_orders
                     WHERE client_txn_id = ?1",
                    [&txn],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()
                .storage(STEP)?;
            match row {
                Some((a, d, q, g)) if a == account && d == dev && q == req_hex => Ok(Some(g)),
                Some(_) => Err(ApiError::wrong_state(
                    STEP,
                    format!("client_txn_id {txn} was used for another order"),
                )),
                None => {
                    c.execute(
                        "INSERT INTO license_orders
                         (client_txn_id, account_id, device_id, request, created_at)
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                        params![txn, account, dev, req_hex, now_secs()],
                    )
                    .storage(STEP)?;
                    Ok(None)
                }
            }
        })
        .await?;
    if let Some(Some(json)) = stored {
        let grant = serde_json::from_str(&json)
            .map_err(|e| ApiError::internal(STEP, format!("stored grant: {e}")))?;
        return Ok(Json(grant));
    }
    let grant: LicenseGrant = vendor
        .post(
            "/v1/licenses",
            &LicenseOrder {
                request: request_hex,
                account_id: Some(customer.account_id.clone()),
            },
            STEP,
        )
        .await?;
    let json = serde_json::to_string(&grant)
        .map_err(|e| ApiError::internal(STEP, format!("grant: {e}")))?;
    let txn = req.client_txn_id.clone();
    meter
        .db
        .run(STEP, move |c| {
            c.execute(
                "UPDATE license_orders SET grant_json = ?2 WHERE client_txn_id = ?1",
                params![txn, json],
            )
            .storage(STEP)
        })
        .await?;
    tracing::info!(device = %device_id, license = grant.fields.license, "license granted");
    Ok(Json(grant))
}
