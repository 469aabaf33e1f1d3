//! The inspection flow: a plain audit whose receipt renews the PSD's inspection.

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use rusqlite::params;

use openpsd_protocol::ErrorCode;
use openpsd_protocol::{AuditBody, InspectionRequest, InspectionView};
use openpsd_service_kit::access::Customer;
use openpsd_service_kit::codec;
use openpsd_service_kit::db::now_secs;
use openpsd_service_kit::error::{ApiError, StorageContext};

use crate::store::{read_inspection, record_audit};
use crate::{Meter, STEP_INSPECTION};

/// Loads an inspection of a device `owner` owns, or answers `404 unknown_inspection` —
/// also for another customer's.
pub(crate) async fn load_inspection(
    meter: &Meter,
    id: &str,
    step: &'static str,
    owner: &Customer,
) -> Result<InspectionView, ApiError> {
    let id2 = id.to_owned();
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::UnknownInspection,
            step,
            format!("no inspection '{id}'"),
        )
    };
    let v = meter
        .db
        .run(step, move |c| read_inspection(c, &id2, step))
        .await?
        .ok_or_else(not_found)?;
    meter
        .registered(&v.device_id, Some(&owner.account_id), step)
        .await
        .map_err(|_| not_found())?;
    Ok(v)
}

/// `POST /v1/inspections`: a nonce for a plain audit.
pub(crate) async fn new_inspection(
    State(meter): State<Meter>,
    Extension(customer): Extension<Customer>,
    body: Bytes,
) -> Result<Json<InspectionView>, ApiError> {
    let step = STEP_INSPECTION;
    let req: InspectionRequest = codec::json(&body, step)?;
    let device_id = codec::device_hex(&codec::device_id(&req.device_id, step)?);
    // Only the owner's device: another customer's is not found.
    meter
        .serving(&device_id, Some(&customer.account_id), step)
        .await?;
    meter.check_slot(&device_id, req.set, step).await?;
    let view = InspectionView {
        inspection_id: hex::encode(codec::random_array::<16>()),
        device_id,
        set: req.set,
        nonce: hex::encode(codec::random_array::<16>()),
        receipt: None,
    };
    let v2 = view.clone();
    meter
        .db
        .run(step, move |c| {
            c.execute(
                "INSERT INTO inspections (inspection_id, device_id, set_index, nonce, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    v2.inspection_id,
                    v2.device_id,
                    i64::from(v2.set),
                    v2.nonce,
                    now_secs()
                ],
            )
            .storage(step)
            .map(drop)
        })
        .await?;
    Ok(Json(view))
}

/// `GET /v1/inspections/{id}`.
pub(crate) async fn get_inspection(
    State(meter): State<Meter>,
    Extension(customer): Extension<Customer>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<InspectionView>, ApiError> {
    Ok(Json(
        load_inspection(&meter, &id, STEP_INSPECTION, &customer).await?,
    ))
}

/// `POST /v1/inspections/{id}/audit`: checks the audit like any other, settles what it
/// shows, and answers the receipt that renews the PSD's inspection.
pub(crate) async fn inspection_audit(
    State(meter): State<Meter>,
    Extension(customer): Extension<Customer>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> Result<Json<InspectionView>, ApiError> {
    let step = STEP_INSPECTION;
    let req: AuditBody = codec::json(&body, step)?;
    let first = load_inspection(&meter, &id, step, &customer).await?;
    let _guard = meter.lock(&first.device_id).await;
    let v = load_inspection(&meter, &id, step, &customer).await?;
    if v.receipt.is_some() {
        return Ok(Json(v));
    }
    let audit = meter.verify(&req.audit, step).await?;
    let mut j = meter
        .judge(step, &v.device_id, v.set, &audit, &v.nonce)
        .await?;
    // Seed 004, step 257: the fees the PSD charges are the table in effect's.
    meter.refuse_if_rate_table_stale(&audit, step).await?;
    meter.settle(&mut j.settlements, &audit, step).await?;
    let receipt = meter.receipt(&audit.hex, step).await?;
    let id2 = id.clone();
    let v = meter
        .db
        .run(step, move |c| {
            let tx = c.transaction().storage(step)?;
            record_audit(&tx, &audit, "inspection", &id2, &j.settlements, step)?;
            tx.execute(
                "UPDATE inspections SET audit = ?2, receipt = ?3, accepted_at = ?4 WHERE inspection_id = ?1",
                params![id2, audit.hex, receipt, now_secs()],
            )
            .storage(step)?;
            let v = read_inspection(&tx, &id2, step)?.ok_or_else(|| ApiError::internal(step, "inspection vanished"))?;
            tx.commit().storage(step)?;
            Ok(v)
        })
        .await?;
    Ok(Json(v))
}
