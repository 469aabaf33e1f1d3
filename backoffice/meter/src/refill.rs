//! The refill flow (steps 200-305 on the server side): request, audit, confirm, status.

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use openpsd_core::psd::refill::REFILL_MESSAGE_LEN;
use rusqlite::{params, OptionalExtension};

use openpsd_protocol::{AuditBody, RefillMessage, RefillRequest, RefillView, SignedCombination};
use openpsd_protocol::{ErrorCode, Outcome};
use openpsd_service_kit::access::Customer;
use openpsd_service_kit::codec;
use openpsd_service_kit::db::{now_secs, to_sql_int};
use openpsd_service_kit::error::{ApiError, StorageContext};
use openpsd_service_kit::failpoint;

use crate::store::{commit_refill, read_refill, record_audit, RefillRow};
use crate::{Meter, OUTSTANDING, STEP_AUDIT, STEP_CONFIRM, STEP_REQUEST};

/// Loads a refill (of `owner`'s, when a customer asks), or answers `404 unknown_refill` —
/// also for a refill of another customer's, so transaction IDs cannot be probed.
pub(crate) async fn load_refill(
    meter: &Meter,
    id: &str,
    step: &'static str,
    owner: Option<&Customer>,
) -> Result<RefillRow, ApiError> {
    let id2 = id.to_owned();
    meter
        .db
        .run(step, move |c| read_refill(c, &id2, step))
        .await?
        .filter(|r| owner.is_none_or(|o| r.view.account_id == o.account_id))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::UnknownRefill,
                step,
                format!("no refill with client transaction ID '{id}'"),
            )
        })
}

/// `POST /v1/refills` (steps 200-210).
pub(crate) async fn request_refill(
    State(meter): State<Meter>,
    Extension(customer): Extension<Customer>,
    body: Bytes,
) -> Result<Json<RefillView>, ApiError> {
    let step = STEP_REQUEST;
    let req: RefillRequest = codec::json(&body, step)?;
    codec::ident("client_txn_id", &req.client_txn_id, step)?;
    if let Some(a) = &req.account_id {
        codec::ident("account_id", a, step)?;
    }
    let device_id = codec::device_hex(&codec::device_id(&req.device_id, step)?);
    if let Some(a) = req
        .account_id
        .as_deref()
        .filter(|a| *a != customer.account_id)
    {
        // Another customer's account: not found, as if it did not exist.
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::UnknownAccount,
            step,
            format!("no account '{a}' of yours"),
        ));
    }
    if req.amount == 0 || i64::try_from(req.amount).is_err() {
        return Err(ApiError::amount_invalid(
            step,
            "a refill is 1 to 2^63-1 minor units",
        ));
    }
    // Only a registered device, paid by its owner: another account is answered like an
    // unknown device (404), so device IDs cannot be probed.
    let owner = meter
        .serving(&device_id, Some(&customer.account_id), step)
        .await?
        .account_id;
    let same = |v: &RefillView| {
        v.device_id == device_id
            && v.set == req.set
            && v.account_id == owner
            && v.amount == req.amount
    };
    let reused = || {
        ApiError::wrong_state(
            step,
            format!(
                "client transaction ID '{}' was used for another refill",
                req.client_txn_id
            ),
        )
    };
    // Idempotent: the same transaction ID is the same refill, in whatever state it is.
    let id = req.client_txn_id.clone();
    if let Some(r) = meter
        .db
        .run(step, move |c| read_refill(c, &id, step))
        .await?
    {
        return if same(&r.view) {
            Ok(Json(r.view))
        } else {
            Err(reused())
        };
    }
    meter.check_slot(&device_id, req.set, step).await?;
    // Forced revocation: no new refill while an order is overdue (revocations.rs).
    meter.refuse_if_revocation_overdue(&device_id, step).await?;
    // Another outstanding refill blocks the device, unless its message never left and its
    // time is up: then it is released and the request tried once more.
    let row = match insert_refill(&meter, &req, &device_id, &owner).await {
        Err(e) if e.code == ErrorCode::RefillOutstanding.as_str() => {
            meter.expire_unissued(&device_id, step).await?;
            insert_refill(&meter, &req, &device_id, &owner).await?
        }
        r => r?,
    };
    if !same(&row.view) {
        return Err(reused());
    }
    tracing::info!(client_txn_id = %req.client_txn_id, device = %device_id, amount = req.amount, "refill requested");
    Ok(Json(row.view))
}

/// Inserts the refill `req` as `awaiting_audit` with a fresh nonce, unless another refill
/// of the device is outstanding (`409 refill_outstanding`); the same transaction ID gives
/// the refill as it is.
async fn insert_refill(
    meter: &Meter,
    req: &RefillRequest,
    device_id: &str,
    owner: &str,
) -> Result<RefillRow, ApiError> {
    let step = STEP_REQUEST;
    let nonce = hex::encode(codec::random_array::<16>());
    let (dev, r2, owner2) = (device_id.to_owned(), req.clone(), owner.to_owned());
    meter
        .db
        .run(step, move |c| {
            let tx = c.transaction().storage(step)?;
            // Checked again inside the transaction: a concurrent request may have won.
            if let Some(r) = read_refill(&tx, &r2.client_txn_id, step)? {
                return Ok(r);
            }
            let other: Option<String> = tx
                .query_row(
                    &format!("SELECT client_txn_id FROM refills WHERE device_id = ?1 AND state IN {OUTSTANDING}"),
                    [&dev],
                    |r| r.get(0),
                )
                .optional()
                .storage(step)?;
            if let Some(other) = other {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    ErrorCode::RefillOutstanding,
                    step,
                    format!("refill '{other}' is outstanding for device {dev}; finish or cancel it first"),
                ));
            }
            let now = now_secs();
            tx.execute(
                "INSERT INTO refills (client_txn_id, device_id, set_index, account_id, amount, state,
                                      nonce, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'awaiting_audit', ?6, ?7, ?7)",
                params![r2.client_txn_id, dev, i64::from(r2.set), owner2, to_sql_int(r2.amount, step)?, nonce, now],
            )
            .storage(step)?;
            commit_refill(tx, &r2.client_txn_id, step)
        })
        .await
}

/// `GET /v1/refills/{client_txn_id}`.
pub(crate) async fn get_refill(
    State(meter): State<Meter>,
    Extension(customer): Extension<Customer>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<RefillView>, ApiError> {
    Ok(Json(
        load_refill(&meter, &id, STEP_REQUEST, Some(&customer))
            .await?
            .view,
    ))
}

/// `POST /v1/refills/{client_txn_id}/audit` (steps 220-285).
pub(crate) async fn refill_audit(
    State(meter): State<Meter>,
    Extension(customer): Extension<Customer>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> Result<Json<RefillView>, ApiError> {
    let step = STEP_AUDIT;
    let req: AuditBody = codec::json(&body, step)?;
    let first = load_refill(&meter, &id, step, Some(&customer)).await?;
    let _guard = meter.lock(&first.view.device_id).await;
    // Re-read under the lock: another call for this refill may have moved it on.
    let mut r = load_refill(&meter, &id, step, Some(&customer)).await?;
    match r.view.state.as_str() {
        "refused" => {
            return Err(r
                .stored_error()
                .unwrap_or_else(|| ApiError::wrong_state(step, "refused")))
        }
        "message_issued" | "voiding" | "completed" | "released" => return Ok(Json(r.view)),
        _ => {}
    }
    if meter.expired(&r, step).await? {
        // Its time-to-live passed before a message was made: released, never issued.
        return Ok(Json(meter.release_unissued(&r, step).await?.view));
    }

    if r.binding.is_none() {
        // Steps 225-250: verify, check against history, accept.
        let audit = match meter.verify(&req.audit, step).await {
            Ok(a) => a,
            // The KMS serves the device no more (revoked, or of the retired K1 suite):
            // final for this refill, nothing is held yet; the device is free again.
            Err(e) if kms_refuses_device(&e) => return Err(meter.refuse(&id, None, e, step).await),
            Err(e) => return Err(e),
        };
        let mut j = meter
            .judge(step, &r.view.device_id, r.view.set, &audit, &r.view.nonce)
            .await?;
        // Seed 004, step 257: the fees the PSD charges are the table in effect's.
        meter.refuse_if_rate_table_stale(&audit, step).await?;
        meter.settle(&mut j.settlements, &audit, step).await?;
        let (id2, a2) = (id.clone(), audit.clone());
        r = meter
            .db
            .run(step, move |c| {
                let tx = c.transaction().storage(step)?;
                record_audit(&tx, &a2, "refill", &id2, &j.settlements, step)?;
                tx.execute(
                    "UPDATE refills SET state = 'audit_accepted', audit = ?2, license = ?3,
                            bound_control_sum = ?4, bound_refills = ?5, updated_at = ?6
                     WHERE client_txn_id = ?1 AND state = 'awaiting_audit'",
                    params![
                        id2,
                        a2.hex,
                        i64::from(a2.license),
                        to_sql_int(a2.control_sum, step)?,
                        i64::from(a2.refills),
                        now_secs()
                    ],
                )
                .storage(step)?;
                commit_refill(tx, &id2, step)
            })
            .await?;
        tracing::info!(client_txn_id = %id, "audit accepted");
        failpoint::pause("meter_audit_after_accept").await;
    }

    let (Some((control_sum, refills)), Some(license), Some(audit_hex)) =
        (r.binding, r.license, r.audit.clone())
    else {
        return Err(ApiError::internal(
            step,
            "accepted refill without its audit",
        ));
    };
    // Steps 260-265: the RC holds the amount and signs the combination (idempotent).
    let hold = r.hold_request(license, control_sum, refills);
    let signed: SignedCombination = match meter.rc.post("/v1/combinations", &hold, step).await {
        Ok(s) => s,
        Err(e) if e.status.is_client_error() => {
            // The RC decided no (deposit, account, amount): final for this transaction ID,
            // nothing is held. The host starts a new refill once that is fixed.
            return Err(meter.refuse(&id, None, e, step).await);
        }
        Err(e) => return Err(e),
    };
    let c = &signed.combination;
    if c.device_id.to_ascii_uppercase() != hold.device_id
        || c.license != license
        || c.amount != hold.amount
        || c.control_sum != control_sum
        || c.refills != refills
    {
        return Err(ApiError::internal(
            step,
            "the RC answered a combination for something else",
        ));
    }
    failpoint::pause("meter_audit_after_hold").await;

    // Steps 270-280: the KMS signs it (only because the RC signed it) and receipts the
    // audit. A KMS that serves the device no more (revoked, or of the retired K1 suite,
    // since the audit was accepted) makes the refill final: its message never left, so the
    // hold is released and the refill refused with the KMS's answer.
    let comb_id = signed.combination.combination_id.clone();
    let sealed: RefillMessage = match meter.kms.post("/v1/refill-messages", &signed, step).await {
        Ok(m) => m,
        Err(e) if kms_refuses_device(&e) => {
            return Err(meter.refuse(&id, Some(&comb_id), e, step).await)
        }
        Err(e) => return Err(e),
    };
    let body = c.to_core(step)?.body();
    match hex::decode(&sealed.refill_message) {
        Ok(m) if m.len() == REFILL_MESSAGE_LEN && m.starts_with(&body) => {}
        _ => return Err(ApiError::unavailable(step, "the KMS signed something else")),
    }
    let receipt = match meter.receipt(&audit_hex, step).await {
        Ok(r) => r,
        Err(e) if kms_refuses_device(&e) => {
            return Err(meter.refuse(&id, Some(&comb_id), e, step).await)
        }
        Err(e) => return Err(e),
    };
    let confirm_nonce = hex::encode(codec::random_array::<16>());
    let (id2, signed2) = (id.clone(), signed.clone());
    let r = meter
        .db
        .run(step, move |c| {
            let tx = c.transaction().storage(step)?;
            tx.execute(
                "UPDATE refills SET state = 'message_issued', combination_id = ?2, signature = ?3,
                        refill_message = ?4, receipt = ?5, confirm_nonce = ?6, updated_at = ?7
                 WHERE client_txn_id = ?1 AND state = 'audit_accepted'",
                params![
                    id2,
                    signed2.combination.combination_id,
                    signed2.signature,
                    sealed.refill_message,
                    receipt,
                    confirm_nonce,
                    now_secs()
                ],
            )
            .storage(step)?;
            commit_refill(tx, &id2, step)
        })
        .await?;
    tracing::info!(client_txn_id = %id, combination = %signed.combination.combination_id, "refill message issued");
    failpoint::pause("meter_audit_before_reply").await;
    Ok(Json(r.view))
}

/// Whether `e` is the KMS refusing the device itself — `410 device_revoked` (its issuer
/// revoked it) or `409 legacy_refill_suite` (personalized for the retired K1 suite) — rather
/// than this one request: nothing will be verified or signed for the device again.
pub(crate) fn kms_refuses_device(e: &ApiError) -> bool {
    e.code == ErrorCode::DeviceRevoked.as_str() || e.code == ErrorCode::LegacyRefillSuite.as_str()
}

impl Meter {
    /// Ends refill `id`, whose message never left, as `refused` with `err` (final for its
    /// transaction ID; the device is free for another): the RC's hold of `combination`, if
    /// it made one, is released first (idempotent, so a crash in between is finished by the
    /// retry). Answers `err`, or what failed on the way.
    async fn refuse(
        &self,
        id: &str,
        combination: Option<&str>,
        err: ApiError,
        step: &'static str,
    ) -> ApiError {
        if let Some(c) = combination {
            if let Err(e) = self.rc_settle(c, Outcome::Released, step).await {
                return e;
            }
        }
        let (id2, e2, comb) = (id.to_owned(), err.clone(), combination.map(str::to_owned));
        let stored = self
            .db
            .run(step, move |c| {
                c.execute(
                    "UPDATE refills SET state = 'refused', error_status = ?2, error_code = ?3,
                            error_step = ?4, error_message = ?5, updated_at = ?6,
                            combination_id = COALESCE(combination_id, ?7)
                     WHERE client_txn_id = ?1 AND state IN ('awaiting_audit', 'audit_accepted')",
                    params![
                        id2,
                        i64::from(e2.status.as_u16()),
                        e2.code,
                        e2.step,
                        e2.message,
                        now_secs(),
                        comb
                    ],
                )
                .storage(step)
                .map(drop)
            })
            .await;
        match stored {
            Ok(()) => {
                tracing::info!(client_txn_id = %id, code = %err.code, "refill refused");
                err
            }
            Err(e) => e,
        }
    }
}

/// `POST /v1/refills/{client_txn_id}/confirm`: the audit after REFILL settles the hold.
pub(crate) async fn confirm(
    State(meter): State<Meter>,
    Extension(customer): Extension<Customer>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> Result<Json<RefillView>, ApiError> {
    let step = STEP_CONFIRM;
    let req: AuditBody = codec::json(&body, step)?;
    let first = load_refill(&meter, &id, step, Some(&customer)).await?;
    let _guard = meter.lock(&first.view.device_id).await;
    let r = load_refill(&meter, &id, step, Some(&customer)).await?;
    match r.view.state.as_str() {
        "completed" | "released" => return Ok(Json(r.view)),
        "refused" => {
            return Err(r
                .stored_error()
                .unwrap_or_else(|| ApiError::wrong_state(step, "refused")))
        }
        "message_issued" | "voiding" => {}
        _ => {
            return Err(ApiError::wrong_state(
                step,
                "no refill message was issued for this refill yet; post its audit first",
            ))
        }
    }
    let Some(confirm_nonce) = r.view.confirm_nonce.clone() else {
        return Err(ApiError::internal(
            step,
            "issued refill without a confirm nonce",
        ));
    };
    let audit = meter.verify(&req.audit, step).await?;
    // The set may have moved slot since the message was issued (EXPORT, IMPORT): the
    // message still applies to it wherever it is, so the confirmation is of the refill's
    // license in whatever slot the audit shows (history is per license).
    let set = if r.license == Some(audit.license) {
        audit.set
    } else {
        r.view.set
    };
    let mut j = meter
        .judge(step, &r.view.device_id, set, &audit, &confirm_nonce)
        .await?;
    // Settle at the RC first (idempotent), then commit: a crash in between leaves the
    // refill issued, and the retry (or any later audit) settles it the same way.
    meter.settle(&mut j.settlements, &audit, step).await?;
    failpoint::pause("meter_confirm_after_settle").await;
    let (id2, a2) = (id.clone(), audit.clone());
    let r = meter
        .db
        .run(step, move |c| {
            let tx = c.transaction().storage(step)?;
            record_audit(&tx, &a2, "confirm", &id2, &j.settlements, step)?;
            tx.execute(
                "UPDATE refills SET confirm_audit = ?2, updated_at = ?3 WHERE client_txn_id = ?1",
                params![id2, a2.hex, now_secs()],
            )
            .storage(step)?;
            commit_refill(tx, &id2, step)
        })
        .await?;
    if r.view.state == "message_issued" || r.view.state == "voiding" {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::NotApplied,
            step,
            "the audit does not show the refill (or its void) applied; apply the message, then confirm with a fresh audit",
        ));
    }
    Ok(Json(r.view))
}
