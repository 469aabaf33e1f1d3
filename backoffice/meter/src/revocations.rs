//! `POST /v1/revocations` and `/v1/revocations/confirmations` (seed 004 Fig. 6 steps
//! 604-622): a customer's PSD asks for one of its certified keys to be revoked (REVOCATION
//! REQUEST, device-signed); the meter passes the request to the certificate authority with
//! **the customer's own account**, and hands back the CA's signed order for REVOKE KEY;
//! then passes the PSD's signed confirmation to the CA, which records it.
//!
//! As for certificates (`certificates.rs`): only the owner of the device (another's device
//! is `404`) — a quarantined device too, for revoking a key only takes trust away — and the
//! meter stores nothing (the CA answers the
//! same order for the same certificate, and the same record for the same confirmation).
//! A revocation is never refused for money: the fee is the PSD's business (paid from DR or
//! owed until the next refill).

use crate::Meter;
use axum::body::Bytes;
use axum::extract::State;
use axum::{Extension, Json};
use openpsd_core::psd::certmeter::revoke::{
    RevocationConfirmation, RevocationRequest, CONFIRMATION_LEN, REQUEST_LEN,
};
use openpsd_protocol::ca::{
    MeterRevocationConfirmation, MeterRevocationRequest, RevocationConfirmationBody,
    RevocationOrderAnswer, RevocationRecord, RevocationRequestBody,
};
use openpsd_service_kit::access::Customer;
use openpsd_service_kit::codec;
use openpsd_service_kit::error::ApiError;
use openpsd_service_kit::upstream::Upstream;

const STEP: &str = "revocation";

fn ca_of(meter: &Meter) -> Result<Upstream, ApiError> {
    meter.ca.clone().ok_or_else(|| {
        ApiError::unavailable(
            STEP,
            "this meter server has no certificate authority configured (--ca)",
        )
    })
}

/// `POST /v1/revocations` (customer).
pub(crate) async fn request(
    State(meter): State<Meter>,
    Extension(customer): Extension<Customer>,
    body: Bytes,
) -> Result<Json<RevocationOrderAnswer>, ApiError> {
    let req: MeterRevocationRequest = codec::json(&body, STEP)?;
    let device = codec::device_id(&req.device_id, STEP)?;
    let device_id = codec::device_hex(&device);
    let bytes = codec::hex_vec("request", &req.request, REQUEST_LEN, STEP)?;
    // Decoded here only to see which device it names: the CA checks the signature.
    let r = RevocationRequest::decode_unverified(&bytes)
        .map_err(|_| ApiError::bad_request(STEP, "request: not a REVOCATION REQUEST answer"))?;
    if r.device != device {
        return Err(ApiError::bad_request(
            STEP,
            "request: made by another device than device_id",
        ));
    }
    let ca = ca_of(&meter)?;
    // Owned by the customer; quarantined or not (revoking a key only takes trust away).
    meter
        .registered(&device_id, Some(&customer.account_id), STEP)
        .await?;
    let answer: RevocationOrderAnswer = ca
        .post(
            "/v1/revocations",
            &RevocationRequestBody {
                request: hex::encode(&bytes),
                account_id: customer.account_id.clone(),
            },
            STEP,
        )
        .await?;
    tracing::warn!(
        device = %device_id,
        serial = %answer.certificate.serial,
        counter = answer.counter,
        "key certificate revoked at the customer's request"
    );
    Ok(Json(answer))
}

/// `POST /v1/revocations/confirmations` (customer).
pub(crate) async fn confirm(
    State(meter): State<Meter>,
    Extension(customer): Extension<Customer>,
    body: Bytes,
) -> Result<Json<RevocationRecord>, ApiError> {
    let req: MeterRevocationConfirmation = codec::json(&body, STEP)?;
    let device = codec::device_id(&req.device_id, STEP)?;
    let device_id = codec::device_hex(&device);
    let bytes = codec::hex_vec("confirmation", &req.confirmation, CONFIRMATION_LEN, STEP)?;
    let c = RevocationConfirmation::decode_unverified(&bytes)
        .map_err(|_| ApiError::bad_request(STEP, "confirmation: not a REVOKE KEY answer"))?;
    if c.device != device {
        return Err(ApiError::bad_request(
            STEP,
            "confirmation: made by another device than device_id",
        ));
    }
    let ca = ca_of(&meter)?;
    // Owned by the customer; a quarantined device may still confirm (it retired a key).
    meter
        .registered(&device_id, Some(&customer.account_id), STEP)
        .await?;
    let record: RevocationRecord = ca
        .post(
            "/v1/revocations/confirmations",
            &RevocationConfirmationBody {
                confirmation: hex::encode(&bytes),
            },
            STEP,
        )
        .await?;
    Ok(Json(record))
}
