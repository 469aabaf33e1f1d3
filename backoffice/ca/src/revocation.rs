//! A PSD's own revocation (seed 004, Fig. 6): the PSD signs a request (REVOCATION REQUEST)
//! with its device key, the meter relays it with the customer's account, and the CA
//!
//! 1. checks the device signature with the key the KMS registered (as for attestations),
//!    and that the request names a certificate the CA issued for that device's key of that
//!    generation, to that account, whose DER hashes as the request says (else `409`);
//! 2. revokes it at once, in the same transaction as the order (CRL and OCSP say revoked
//!    from the commit on: the operator's revocation path, `mark_revoked`);
//! 3. answers the order REVOKE KEY applies, signed with the CA key the PSD holds as a trust
//!    anchor, numbered per device (1, 2, ...; the PSD applies rising numbers only).
//!
//! The same certificate asked again answers the same order (a host that lost the answer
//! asks again; the order is stored). The PSD's confirmation is recorded by
//! `POST /v1/revocations/confirmations` (step 622): checked with the device key, matched
//! with its order; the same confirmation again answers the same record.
//!
//! **Forced revocation**: a certificate the CA revokes without the PSD's request (the
//! operator's or the meter's `POST /v1/certificates/{serial}/revoke`) gets its order all the
//! same, in the revocation's own transaction ([`force_order`]: the same layout, the next
//! counter of the device, the reason by its RFC 5280 name or `unspecified`), marked
//! **forced**: only these make the meter refuse refills; the PSD's own requests never do,
//! nor orders stored before the marker existed. Every order neither confirmed nor closed is
//! pending: `GET /v1/devices/{device_id}/revocation-orders` (the meter) lists them and
//! records when each was first handed over (the meter's grace period counts from then);
//! the meter hands them to the host at the device's next refill or inspection
//! (`docs/certmeter.md` § Forced revocation).
//!
//! **Closing** an order without a confirmation: the CA closes one itself when its own
//! evidence shows the revoked key is gone (a later key certified in the same slot, from the
//! PSD's device-signed attestation); the operator closes any other
//! (`POST /v1/certificates/{serial}/revocation-order/close`). The PSD's refusals (`9A41`,
//! `9A44`) are not signed, so a host's word that the PSD refused closes nothing.
//!
//! The challenge in the request is the host's: the CA does not issue challenges yet, so a
//! captured request can be replayed — which only asks again for the revocation it asked
//! for, and answers the stored order (`docs/ca.md`).

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::Json;
use openpsd_core::crypto::IndiciumKey;
use openpsd_core::psd::certmeter::revoke::{
    Outcome, Reason, RevocationConfirmation, RevocationOrder, RevocationRequest, CONFIRMATION_LEN,
    REQUEST_LEN,
};
use openpsd_core::types::DeviceId;
use openpsd_protocol::ca::{
    code, PendingRevocation, PendingRevocations, RevocationConfirmationBody, RevocationOrderAnswer,
    RevocationOrderClosing, RevocationOrderView, RevocationRecord, RevocationRequestBody,
};
use openpsd_service_kit::codec;
use openpsd_service_kit::db::now_secs;
use openpsd_service_kit::error::{ApiError, StorageContext};
use rusqlite::{params, OptionalExtension};
use sha2::Digest as _;

use super::{err, mark_revoked, row, Ca, Row, COLUMNS};

/// A stored order: serial, slot, the signed order, the confirmation and its time.
type StoredOrder = (String, u8, Vec<u8>, Option<Vec<u8>>, Option<i64>);

const STEP_REQUEST: &str = "ca_revocation_request";
const STEP_CONFIRM: &str = "ca_revocation_confirm";
const STEP_PENDING: &str = "ca_revocation_pending";
const STEP_CLOSE: &str = "ca_revocation_close";

impl Ca {
    /// The CA key as the core's signing key (orders are signed with it).
    pub(super) fn order_key(&self, step: &str) -> Result<IndiciumKey, ApiError> {
        IndiciumKey::from_bytes(self.key.to_bytes().as_slice())
            .ok_or_else(|| ApiError::internal(step, "the CA key is not a P-256 scalar"))
    }
}

/// The next order number of device `dev` (1, 2, ...), inside the caller's transaction.
fn next_counter(tx: &rusqlite::Transaction<'_>, dev: &str, step: &str) -> Result<u32, ApiError> {
    let last: u32 = tx
        .query_row(
            "SELECT COALESCE(MAX(counter), 0) FROM revocation_orders WHERE device_id = ?1",
            [dev],
            |q| q.get(0),
        )
        .storage(step)?;
    last.checked_add(1).ok_or_else(|| {
        err(
            StatusCode::CONFLICT,
            code::REVOCATION_CONFLICT,
            step,
            format!("device {dev} has no order numbers left"),
        )
    })
}

/// Forced revocation: the order for certificate `found`, which the CA is revoking in
/// transaction `tx` without the PSD's request (`reason`: the operator's text; an RFC 5280
/// name becomes the order's reason, anything else `unspecified`). Stored pending with the
/// device's next counter; a certificate that has an order already keeps it. Answers the
/// new order's counter.
pub(super) fn force_order(
    tx: &rusqlite::Transaction<'_>,
    found: &Row,
    reason: &str,
    ca_key: &IndiciumKey,
    step: &str,
) -> Result<Option<u32>, ApiError> {
    let serial = &found.view.serial;
    let has: Option<u32> = tx
        .query_row(
            "SELECT counter FROM revocation_orders WHERE serial = ?1",
            [serial],
            |q| q.get(0),
        )
        .optional()
        .storage(step)?;
    if has.is_some() {
        return Ok(None);
    }
    let dev = &found.view.device_id;
    let device = hex::decode(dev)
        .ok()
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .ok_or_else(|| ApiError::internal(step, format!("stored device ID {dev} is not 16 hex")))?;
    let counter = next_counter(tx, dev, step)?;
    let order = RevocationOrder {
        device: DeviceId(device),
        slot: found.view.slot,
        certificate_hash: sha2::Sha256::digest(&found.certificate).into(),
        reason: Reason::from_name(reason.trim()).unwrap_or(Reason::Unspecified),
        counter,
    }
    .sign(ca_key);
    tx.execute(
        "INSERT INTO revocation_orders (device_id, counter, serial, slot, ord, created_at, forced)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1)",
        params![dev, counter, serial, found.view.slot, order, now_secs()],
    )
    .storage(step)?;
    Ok(Some(counter))
}

/// The certificates of the device's pending orders whose slot holds a later key: the CA
/// certified a key of a higher generation in the same slot, from the PSD's device-signed
/// attestation. GENERATE KEY takes a slot only when it is free or retired (its scalar
/// erased), so the revoked key is gone from the PSD: nothing is left for the order to do.
const SLOT_REUSED: &str = "
    SELECT o.counter, o.slot, MIN(n.generation)
    FROM revocation_orders o
    JOIN certificates c ON c.serial = o.serial
    JOIN certificates n ON n.device_id = c.device_id AND n.slot = c.slot
                        AND n.generation > c.generation
    WHERE o.device_id = ?1 AND o.confirmation IS NULL AND o.closed_at IS NULL
    GROUP BY o.counter, o.slot";

/// `GET /v1/devices/{device_id}/revocation-orders` (meter): the device's orders neither
/// confirmed nor closed, by rising counter (the order REVOKE KEY must apply them in). In
/// one transaction first: an order whose slot holds a later attested key is closed (by
/// `ca`, [`SLOT_REUSED`]), and every order handed to the meter for the first time gets
/// its hand-over time (the meter's grace period counts from it).
pub(super) async fn pending(
    State(ca): State<Ca>,
    UrlPath(device_id): UrlPath<String>,
) -> Result<Json<PendingRevocations>, ApiError> {
    let step = STEP_PENDING;
    let dev = codec::device_hex(&codec::device_id(&device_id, step)?);
    let dev2 = dev.clone();
    let ca_pk = ca.public_key();
    let orders = ca
        .db
        .run(step, move |c| {
            let tx = c.transaction().storage(step)?;
            let now = now_secs();
            let reused = {
                let mut stmt = tx.prepare(SLOT_REUSED).storage(step)?;
                let found = stmt
                    .query_map([&dev2], |q| {
                        Ok((q.get::<_, u32>(0)?, q.get::<_, u8>(1)?, q.get::<_, u32>(2)?))
                    })
                    .storage(step)?
                    .collect::<Result<Vec<_>, _>>()
                    .storage(step)?;
                found
            };
            for (counter, slot, generation) in &reused {
                tx.execute(
                    "UPDATE revocation_orders SET closed_at = ?3, closed_by = 'ca',
                     close_reason = ?4 WHERE device_id = ?1 AND counter = ?2",
                    params![
                        dev2,
                        counter,
                        now,
                        format!(
                            "slot {slot} holds a later key (generation {generation}, attested \
                             by the PSD): the revoked key is erased"
                        )
                    ],
                )
                .storage(step)?;
                tracing::warn!(
                    device = %dev2,
                    counter,
                    slot,
                    generation,
                    "revocation order closed: its slot holds a later attested key"
                );
            }
            tx.execute(
                "UPDATE revocation_orders SET handed_at = ?2
                 WHERE device_id = ?1 AND confirmation IS NULL AND closed_at IS NULL
                   AND handed_at IS NULL",
                params![dev2, now],
            )
            .storage(step)?;
            let rows = {
                let mut stmt = tx
                    .prepare(
                        "SELECT counter, serial, slot, ord, created_at, forced, handed_at
                         FROM revocation_orders
                         WHERE device_id = ?1 AND confirmation IS NULL AND closed_at IS NULL
                         ORDER BY counter",
                    )
                    .storage(step)?;
                let found = stmt
                    .query_map([&dev2], |q| {
                        Ok((
                            q.get::<_, u32>(0)?,
                            q.get::<_, String>(1)?,
                            q.get::<_, u8>(2)?,
                            q.get::<_, Vec<u8>>(3)?,
                            q.get::<_, i64>(4)?,
                            q.get::<_, bool>(5)?,
                            q.get::<_, Option<i64>>(6)?,
                        ))
                    })
                    .storage(step)?
                    .collect::<Result<Vec<_>, _>>()
                    .storage(step)?;
                found
            };
            tx.commit().storage(step)?;
            rows.into_iter()
                .map(
                    |(counter, serial, slot, ord, created_at, forced, handed_at)| {
                        // The reason the order carries (the PSD's, or the operator's by name).
                        let o = RevocationOrder::open(&ord, &ca_pk).map_err(|_| {
                            ApiError::internal(step, "a stored order does not open")
                        })?;
                        Ok(PendingRevocation {
                            counter,
                            serial,
                            slot,
                            reason: o.reason.name().to_owned(),
                            order: hex::encode(ord),
                            created_at: u64::try_from(created_at).unwrap_or(0),
                            refills_refused_from: None,
                            forced,
                            handed_over_at: handed_at.and_then(|t| u64::try_from(t).ok()),
                        })
                    },
                )
                .collect::<Result<Vec<_>, ApiError>>()
        })
        .await?;
    Ok(Json(PendingRevocations {
        device_id: dev,
        orders,
    }))
}

/// `POST /v1/certificates/{serial}/revocation-order/close` (operator): withdraws the
/// certificate's order without the PSD's confirmation — one the PSD cannot apply (an
/// older counter than one it applied, a slot that no longer or never held the
/// certificate) or need not. It stops being pending (and blocking refills); the
/// certificate stays revoked for relying parties. Closing a closed order answers it as it
/// is (the first reason kept); a confirmed one is `409 revocation_confirmed`; none for the
/// serial, `404`. A confirmation that comes later is still recorded.
pub(super) async fn close(
    State(ca): State<Ca>,
    UrlPath(serial): UrlPath<String>,
    body: Bytes,
) -> Result<Json<RevocationOrderView>, ApiError> {
    let step = STEP_CLOSE;
    let serial = hex::encode(codec::hex_vec("serial", &serial, 20, step)?);
    let req: RevocationOrderClosing = codec::json(&body, step)?;
    super::check_reason(&req.reason, step)?;
    let view = ca
        .db
        .run(step, move |c| {
            let tx = c.transaction().storage(step)?;
            let found = order_view(&tx, &serial, step)?.ok_or_else(|| {
                err(
                    StatusCode::NOT_FOUND,
                    code::UNKNOWN_CERTIFICATE,
                    step,
                    format!("no revocation order for certificate {serial}"),
                )
            })?;
            if found.confirmed_at.is_some() {
                return Err(err(
                    StatusCode::CONFLICT,
                    code::REVOCATION_CONFIRMED,
                    step,
                    format!(
                        "revocation order {} of device {} is confirmed by the PSD: nothing to \
                         close",
                        found.counter, found.device_id
                    ),
                ));
            }
            if found.closed_at.is_some() {
                return Ok((found, false));
            }
            tx.execute(
                "UPDATE revocation_orders SET closed_at = ?2, closed_by = 'operator',
                 close_reason = ?3 WHERE serial = ?1",
                params![serial, now_secs(), req.reason],
            )
            .storage(step)?;
            let closed = order_view(&tx, &serial, step)?
                .ok_or_else(|| ApiError::internal(step, "the order vanished"))?;
            tx.commit().storage(step)?;
            Ok((closed, true))
        })
        .await?;
    let (view, now) = view;
    if now {
        tracing::warn!(
            device = %view.device_id,
            counter = view.counter,
            serial = %view.serial,
            reason = view.close_reason.as_deref().unwrap_or(""),
            "revocation order closed by the operator"
        );
    }
    Ok(Json(view))
}

/// The order of certificate `serial`, if it has one.
fn order_view(
    tx: &rusqlite::Transaction<'_>,
    serial: &str,
    step: &str,
) -> Result<Option<RevocationOrderView>, ApiError> {
    let at = |t: Option<i64>| t.and_then(|t| u64::try_from(t).ok());
    tx.query_row(
        "SELECT device_id, counter, serial, slot, forced, created_at, handed_at, confirmed_at,
                closed_at, closed_by, close_reason
         FROM revocation_orders WHERE serial = ?1",
        [serial],
        |q| {
            Ok(RevocationOrderView {
                device_id: q.get(0)?,
                counter: q.get(1)?,
                serial: q.get(2)?,
                slot: q.get(3)?,
                forced: q.get(4)?,
                created_at: at(Some(q.get(5)?)).unwrap_or(0),
                handed_over_at: at(q.get(6)?),
                confirmed_at: at(q.get(7)?),
                closed_at: at(q.get(8)?),
                closed_by: q.get(9)?,
                close_reason: q.get(10)?,
            })
        },
    )
    .optional()
    .storage(step)
}

/// `POST /v1/revocations` (meter).
pub(super) async fn request(
    State(ca): State<Ca>,
    body: Bytes,
) -> Result<Json<RevocationOrderAnswer>, ApiError> {
    let step = STEP_REQUEST;
    let req: RevocationRequestBody = codec::json(&body, step)?;
    codec::ident("account_id", &req.account_id, step)?;
    let bytes = codec::hex_vec("request", &req.request, REQUEST_LEN, step)?;
    let invalid = |m: String| {
        err(
            StatusCode::UNPROCESSABLE_ENTITY,
            code::REVOCATION_INVALID,
            step,
            m,
        )
    };
    let claimed = RevocationRequest::decode_unverified(&bytes)
        .map_err(|_| invalid("the request is not a REVOCATION REQUEST answer".to_owned()))?;
    let device_id = codec::device_hex(&claimed.device);
    let device_pk = ca.device_key(&device_id, step).await?;
    let r = RevocationRequest::open(&bytes, &device_pk).map_err(|_| {
        invalid(format!(
            "the request's signature does not verify with the key registered for device \
             {device_id}"
        ))
    })?;
    let ca_key = ca.order_key(step)?;
    let account = req.account_id.clone();
    let (dev, reason) = (device_id.clone(), r.reason.name());
    let (order, counter, view) = ca
        .db
        .run(step, move |c| {
            let tx = c.transaction().storage(step)?;
            let conflict =
                |m: String| err(StatusCode::CONFLICT, code::REVOCATION_CONFLICT, step, m);
            let sql = format!(
                "SELECT {COLUMNS} FROM certificates WHERE device_id = ?1 AND generation = ?2"
            );
            let found = tx
                .query_row(&sql, params![dev, r.generation], row)
                .optional()
                .storage(step)?
                .ok_or_else(|| {
                    err(
                        StatusCode::NOT_FOUND,
                        code::UNKNOWN_CERTIFICATE,
                        step,
                        format!(
                            "no certificate for device {dev}'s key of generation {}",
                            r.generation
                        ),
                    )
                })?;
            let public_key: String = tx
                .query_row(
                    "SELECT public_key FROM certificates WHERE serial = ?1",
                    [&found.view.serial],
                    |q| q.get(0),
                )
                .storage(step)?;
            if public_key != hex::encode(r.public_key)
                || found.view.slot != r.slot
                || sha2::Sha256::digest(&found.certificate).as_slice() != r.certificate_hash
            {
                return Err(conflict(format!(
                    "the request names another key, slot or certificate than the CA issued \
                     for device {dev}'s generation {} (serial {})",
                    r.generation, found.view.serial
                )));
            }
            if found.view.account_id != account {
                return Err(conflict(format!(
                    "certificate {} belongs to another account",
                    found.view.serial
                )));
            }
            // Asked again: the stored order.
            if let Some((order, counter)) = tx
                .query_row(
                    "SELECT ord, counter FROM revocation_orders WHERE serial = ?1",
                    [&found.view.serial],
                    |q| Ok((q.get::<_, Vec<u8>>(0)?, q.get::<_, u32>(1)?)),
                )
                .optional()
                .storage(step)?
            {
                return Ok((order, counter, found.view));
            }
            let counter = next_counter(&tx, &dev, step)?;
            let order = RevocationOrder {
                device: r.device,
                slot: r.slot,
                certificate_hash: r.certificate_hash,
                reason: r.reason,
                counter,
            }
            .sign(&ca_key);
            if found.view.revoked_at.is_none() {
                mark_revoked(&tx, &found.view.serial, reason, step)?;
            }
            tx.execute(
                "INSERT INTO revocation_orders (device_id, counter, serial, slot, ord, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![dev, counter, found.view.serial, r.slot, order, now_secs()],
            )
            .storage(step)?;
            let sql = format!("SELECT {COLUMNS} FROM certificates WHERE serial = ?1");
            let updated = tx
                .query_row(&sql, [&found.view.serial], row)
                .storage(step)?;
            tx.commit().storage(step)?;
            Ok((order, counter, updated.view))
        })
        .await?;
    tracing::warn!(
        device = %device_id,
        serial = %view.serial,
        counter,
        "certificate revoked at the PSD's request; order issued"
    );
    Ok(Json(RevocationOrderAnswer {
        order: hex::encode(order),
        counter,
        certificate: view,
    }))
}

/// `POST /v1/revocations/confirmations` (meter): the PSD's confirmation (step 622).
pub(super) async fn confirm(
    State(ca): State<Ca>,
    body: Bytes,
) -> Result<Json<RevocationRecord>, ApiError> {
    let step = STEP_CONFIRM;
    let req: RevocationConfirmationBody = codec::json(&body, step)?;
    let bytes = codec::hex_vec("confirmation", &req.confirmation, CONFIRMATION_LEN, step)?;
    let invalid = |m: String| {
        err(
            StatusCode::UNPROCESSABLE_ENTITY,
            code::REVOCATION_INVALID,
            step,
            m,
        )
    };
    let claimed = RevocationConfirmation::decode_unverified(&bytes)
        .map_err(|_| invalid("the confirmation is not a REVOKE KEY answer".to_owned()))?;
    let device_id = codec::device_hex(&claimed.device);
    let device_pk = ca.device_key(&device_id, step).await?;
    let c = RevocationConfirmation::open(&bytes, &device_pk).map_err(|_| {
        invalid(format!(
            "the confirmation's signature does not verify with the key registered for device \
             {device_id}"
        ))
    })?;
    let dev = device_id.clone();
    let ca_pk = ca.public_key();
    let record = ca
        .db
        .run(step, move |conn| {
            let tx = conn.transaction().storage(step)?;
            let conflict =
                |m: String| err(StatusCode::CONFLICT, code::REVOCATION_CONFLICT, step, m);
            let found: Option<StoredOrder> = tx
                .query_row(
                    "SELECT serial, slot, ord, confirmation, confirmed_at FROM revocation_orders
                     WHERE device_id = ?1 AND counter = ?2",
                    params![dev, c.counter],
                    |q| Ok((q.get(0)?, q.get(1)?, q.get(2)?, q.get(3)?, q.get(4)?)),
                )
                .optional()
                .storage(step)?;
            let Some((serial, slot, order, stored, at)) = found else {
                return Err(err(
                    StatusCode::NOT_FOUND,
                    code::UNKNOWN_CERTIFICATE,
                    step,
                    format!("no revocation order {} for device {dev}", c.counter),
                ));
            };
            let o = RevocationOrder::open(&order, &ca_pk)
                .map_err(|_| ApiError::internal(step, "a stored order does not open"))?;
            if slot != c.slot || o.slot != c.slot || o.certificate_hash != c.certificate_hash {
                return Err(conflict(format!(
                    "the confirmation does not match order {} of device {dev}",
                    c.counter
                )));
            }
            let confirmed_at = match (stored, at) {
                (Some(s), Some(at)) if s == bytes => at,
                (Some(_), _) => {
                    return Err(conflict(format!(
                        "order {} of device {dev} was confirmed with other bytes",
                        c.counter
                    )))
                }
                _ => {
                    let t = now_secs();
                    tx.execute(
                        "UPDATE revocation_orders SET confirmation = ?3, confirmed_at = ?4
                         WHERE device_id = ?1 AND counter = ?2",
                        params![dev, c.counter, bytes, t],
                    )
                    .storage(step)?;
                    t
                }
            };
            tx.commit().storage(step)?;
            Ok(RevocationRecord {
                device_id: dev,
                counter: c.counter,
                serial,
                confirmed_at: u64::try_from(confirmed_at).ok(),
                outcome: Some(
                    match c.outcome {
                        Outcome::Paid => "paid",
                        Outcome::Due => "due",
                    }
                    .to_owned(),
                ),
                fee: Some(c.fee.0),
            })
        })
        .await?;
    tracing::info!(
        device = %device_id,
        counter = record.counter,
        serial = %record.serial,
        "revocation confirmed by the PSD"
    );
    Ok(Json(record))
}
