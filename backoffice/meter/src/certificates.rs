//! `POST /v1/certificates` (seed 004 Fig. 5 steps 512-516): a customer's PSD generated a key
//! and attested it (GENERATE KEY); the customer hands the attestation to the meter server,
//! which passes it to the certificate authority with **the customer's own account and
//! username** from the session, and hands back the certificate for INSTALL KEY
//! CERTIFICATE.
//!
//! The meter adds who is asking, as for refills and licenses: only the owner of the device
//! (another's device is `404`, so IDs cannot be probed), and not a quarantined device. The
//! request carries no subject at all: the CA builds it from the account fields the meter
//! fills here, so neither the device nor the customer can name the certificate anything
//! (step 514). The meter stores nothing: the CA is idempotent by the attestation (the same
//! one again answers the same certificate), so a host that lost the answer asks again.

use crate::Meter;
use axum::body::Bytes;
use axum::extract::State;
use axum::{Extension, Json};
use openpsd_core::psd::certmeter::attestation::{KeyAttestation, ATTESTATION_LEN};
use openpsd_protocol::ca::{CertificateAnswer, CertificateRequest, MeterCertificateRequest};
use openpsd_service_kit::access::Customer;
use openpsd_service_kit::codec;
use openpsd_service_kit::error::{ApiError, StorageContext};

const STEP: &str = "certificate";

/// `POST /v1/certificates` (customer).
pub(crate) async fn request(
    State(meter): State<Meter>,
    Extension(customer): Extension<Customer>,
    body: Bytes,
) -> Result<Json<CertificateAnswer>, ApiError> {
    let req: MeterCertificateRequest = codec::json(&body, STEP)?;
    let (device_id, bytes, attestation) = attested(&req.device_id, &req.attestation, STEP)?;
    let ca = meter.ca.clone().ok_or_else(|| {
        ApiError::unavailable(
            STEP,
            "this meter server has no certificate authority configured (--ca)",
        )
    })?;
    let username = owner_username(&meter, &customer, &device_id, STEP).await?;
    let answer: CertificateAnswer = ca
        .post(
            "/v1/certificates",
            &CertificateRequest {
                attestation: hex::encode(&bytes),
                account_id: customer.account_id.clone(),
                username,
            },
            STEP,
        )
        .await?;
    tracing::info!(
        device = %device_id,
        serial = %answer.serial,
        purpose = attestation.purpose.name(),
        "key certificate issued"
    );
    Ok(Json(answer))
}

/// A relayed key request's device (hex) and attestation, decoded only to see which device
/// it names (the issuer checks the signatures with the key the KMS registered): `400` if
/// it is not a GENERATE KEY answer or names another device than `device_id`. Shared with
/// `credit_lines.rs`.
pub(crate) fn attested(
    device_id: &str,
    attestation_hex: &str,
    step: &'static str,
) -> Result<(String, Vec<u8>, KeyAttestation), ApiError> {
    let device = codec::device_id(device_id, step)?;
    let bytes = codec::hex_vec("attestation", attestation_hex, ATTESTATION_LEN, step)?;
    let attestation = KeyAttestation::decode_unverified(&bytes)
        .map_err(|_| ApiError::bad_request(step, "attestation: not a GENERATE KEY answer"))?;
    if attestation.device != device {
        return Err(ApiError::bad_request(
            step,
            "attestation: made by another device than device_id",
        ));
    }
    Ok((codec::device_hex(&device), bytes, attestation))
}

/// The customer's username, once the device is theirs and served (`404` for another's
/// device, `409 device_quarantined`): the subject the issuer writes comes from it, never from the
/// request.
pub(crate) async fn owner_username(
    meter: &Meter,
    customer: &Customer,
    device_id: &str,
    step: &'static str,
) -> Result<String, ApiError> {
    meter
        .serving(device_id, Some(&customer.account_id), step)
        .await?;
    let id = customer.id.clone();
    meter
        .db
        .run(step, move |c| {
            c.query_row(
                "SELECT username FROM customers WHERE customer_id = ?1",
                [id],
                |r| r.get::<_, String>(0),
            )
            .storage(step)
        })
        .await
}
