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
//!
//! **Forced revocation** (`GET /v1/devices/{device_id}/revocations`, the owner): the orders
//! the CA issued without the PSD's request (an operator revoked the certificate: `forced`)
//! and every other order the PSD has neither confirmed nor had closed, fetched from the CA
//! at each call (the meter keeps none; the CA records each order's first hand-over). The
//! host calls it before a refill and an inspection, applies them (REVOKE KEY) and posts the
//! confirmations as above. A refill is refused (`409 revocation_overdue`) while a *forced*
//! order has been pending longer than the meter's grace period ([`REVOCATION_GRACE`] unless
//! configured) since its first hand-over; the PSD's own requests never block. A CA that
//! cannot be asked does not stop refills (the certificate is revoked for relying parties at
//! the CA already: the gate only hurries the PSD), it is logged.

use crate::Meter;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use openpsd_core::psd::certmeter::revoke::{
    RevocationConfirmation, RevocationRequest, CONFIRMATION_LEN, REQUEST_LEN,
};
use openpsd_protocol::ca::{
    code, MeterRevocationConfirmation, MeterRevocationRequest, PendingRevocations,
    RevocationConfirmationBody, RevocationOrderAnswer, RevocationRecord, RevocationRequestBody,
};
use openpsd_service_kit::access::Customer;
use openpsd_service_kit::codec;
use openpsd_service_kit::db::now_secs;
use openpsd_service_kit::error::ApiError;
use openpsd_service_kit::upstream::Upstream;

const STEP: &str = "revocation";
const STEP_PENDING: &str = "revocation_pending";

/// How long a pending revocation order may stay unconfirmed before the meter refuses the
/// device's refills (7 days; `backoffice --role meter --revocation-grace-days`).
pub const REVOCATION_GRACE: std::time::Duration = std::time::Duration::from_secs(7 * 86_400);

impl Meter {
    /// The device's pending orders at the CA, each with the time refills are refused from;
    /// none when this meter has no CA.
    async fn pending_orders(
        &self,
        device_id: &str,
        step: &'static str,
    ) -> Result<PendingRevocations, ApiError> {
        let Some(ca) = self.ca.as_ref() else {
            return Ok(PendingRevocations {
                device_id: device_id.to_owned(),
                orders: Vec::new(),
            });
        };
        let mut p: PendingRevocations = ca
            .get(&format!("/v1/devices/{device_id}/revocation-orders"), step)
            .await?;
        if p.device_id != device_id {
            return Err(ApiError::unavailable(
                step,
                "the certificate authority answered for another device",
            ));
        }
        let grace = self.revocation_grace.as_secs();
        for o in &mut p.orders {
            // Only an order the CA forced blocks refills, from its first hand-over on.
            o.refills_refused_from = o.forced.then(|| {
                o.handed_over_at
                    .unwrap_or(o.created_at)
                    .saturating_add(grace)
            });
        }
        Ok(p)
    }

    /// Refuses a refill of `device_id` (`409 revocation_overdue`) while an order the CA
    /// forced has stayed pending (neither confirmed nor closed) longer than the grace
    /// period since it was first handed to the meter. Orders the PSD asked for never block.
    /// A CA that cannot be asked lets it pass (logged).
    pub(crate) async fn refuse_if_revocation_overdue(
        &self,
        device_id: &str,
        step: &'static str,
    ) -> Result<(), ApiError> {
        let p = match self.pending_orders(device_id, step).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(
                    device = %device_id,
                    error = %e,
                    "pending revocation orders not checked: the certificate authority did not answer"
                );
                return Ok(());
            }
        };
        let now = u64::try_from(now_secs()).unwrap_or(0);
        let Some(o) = p
            .orders
            .iter()
            .find(|o| o.refills_refused_from.is_some_and(|t| now >= t))
        else {
            return Ok(());
        };
        tracing::warn!(
            device = %device_id,
            counter = o.counter,
            serial = %o.serial,
            "refill refused: revocation order overdue"
        );
        Err(ApiError {
            status: StatusCode::CONFLICT,
            code: code::REVOCATION_OVERDUE.to_owned(),
            step: step.to_owned(),
            message: format!(
                "revocation order {} (certificate {}, slot {}) was handed over more than {} \
                 s ago and is still unconfirmed: apply it (REVOKE KEY; GET \
                 /v1/devices/{device_id}/revocations, `openpsd refill` does it) and post the \
                 confirmation first; if the PSD cannot apply it, ask the operator to close it",
                o.counter,
                o.serial,
                o.slot,
                self.revocation_grace.as_secs()
            ),
        })
    }
}

/// `GET /v1/devices/{device_id}/revocations` (customer, the device's owner; quarantined or
/// not): the orders to apply before a refill or an inspection.
pub(crate) async fn pending(
    State(meter): State<Meter>,
    Extension(customer): Extension<Customer>,
    UrlPath(device_id): UrlPath<String>,
) -> Result<Json<PendingRevocations>, ApiError> {
    let step = STEP_PENDING;
    let device_id = codec::device_hex(&codec::device_id(&device_id, step)?);
    meter
        .registered(&device_id, Some(&customer.account_id), step)
        .await?;
    Ok(Json(meter.pending_orders(&device_id, step).await?))
}

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
