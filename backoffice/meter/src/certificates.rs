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
    let device = codec::device_id(&req.device_id, STEP)?;
    let device_id = codec::device_hex(&device);
    let bytes = codec::hex_vec("attestation", &req.attestation, ATTESTATION_LEN, STEP)?;
    // Only decoded here, to see which device it names: the CA checks the signatures with
    // the key the KMS registered.
    let attestation = KeyAttestation::decode_unverified(&bytes)
        .map_err(|_| ApiError::bad_request(STEP, "attestation: not a GENERATE KEY answer"))?;
    if attestation.device != device {
        return Err(ApiError::bad_request(
            STEP,
            "attestation: made by another device than device_id",
        ));
    }
    let ca = meter.ca.clone().ok_or_else(|| {
        ApiError::unavailable(
            STEP,
            "this meter server has no certificate authority configured (--ca)",
        )
    })?;
    meter
        .serving(&device_id, Some(&customer.account_id), STEP)
        .await?;
    let id = customer.id.clone();
    let username = meter
        .db
        .run(STEP, move |c| {
            c.query_row(
                "SELECT username FROM customers WHERE customer_id = ?1",
                [id],
                |r| r.get::<_, String>(0),
            )
            .storage(STEP)
        })
        .await?;
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
