//! `POST /v1/credit-lines` (seed 004 Fig. 8 steps 802-810): a customer's PSD generated a
//! payment key and attested it (GENERATE KEY, purpose 4); the customer asks the meter for
//! a line of credit on it, and the meter passes the request to the creditor with **the
//! customer's own account and username** from the session, and hands back the line of
//! credit certificate for LOAD CREDIT LINE (step 812).
//!
//! As for key certificates (`certificates.rs`): only the owner of the device (another's
//! device is `404`), not a quarantined device; the request carries no subject, and the
//! meter stores nothing: the creditor is idempotent by (account, request ID).

use crate::certificates::{attested, owner_username};
use crate::Meter;
use axum::body::Bytes;
use axum::extract::State;
use axum::{Extension, Json};
use openpsd_protocol::creditor::{LineAnswer, LineRequest, MeterLineRequest};
use openpsd_service_kit::access::Customer;
use openpsd_service_kit::codec;
use openpsd_service_kit::error::ApiError;

const STEP: &str = "credit_line";

/// `POST /v1/credit-lines` (customer).
pub(crate) async fn request(
    State(meter): State<Meter>,
    Extension(customer): Extension<Customer>,
    body: Bytes,
) -> Result<Json<LineAnswer>, ApiError> {
    let req: MeterLineRequest = codec::json(&body, STEP)?;
    codec::hex_array::<8>("request_id", &req.request_id, STEP)?;
    let (device_id, bytes, _) = attested(&req.device_id, &req.attestation, STEP)?;
    let creditor = meter.creditor.clone().ok_or_else(|| {
        ApiError::unavailable(
            STEP,
            "this meter server has no creditor configured (--creditor)",
        )
    })?;
    let username = owner_username(&meter, &customer, &device_id, STEP).await?;
    let answer: LineAnswer = creditor
        .post(
            "/v1/lines",
            &LineRequest {
                request_id: req.request_id.to_ascii_lowercase(),
                attestation: hex::encode(&bytes),
                amount: req.amount,
                account_id: customer.account_id.clone(),
                username,
            },
            STEP,
        )
        .await?;
    tracing::info!(
        device = %device_id,
        number = answer.number,
        amount = answer.amount,
        "line of credit issued"
    );
    Ok(Json(answer))
}
