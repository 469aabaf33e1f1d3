//! Cancel and expiry of outstanding refills (`docs/refill.md` § Cancel, expiry).
//!
//! A hold is released only once its refill provably can never apply:
//! - its message never left the meter (the refill is `awaiting_audit`, or its audit was
//!   accepted but `message_issued` was never committed — a message leaves only after that
//!   commit): released at once on cancel, or when [`crate::UNISSUED_TTL`] has passed;
//! - its message left: the owner's cancel makes a **void** — a zero-amount combination with
//!   the same precondition (device, set, control sum, refill count) and its own ID, signed
//!   by the RC and signed by the KMS. The PSD applies at most one of the two; the hold stays
//!   until an audit shows which (`calls.rs`): the refill's ID, applied; the void's (or any
//!   other consumption of the refill count), released.

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use openpsd_core::psd::refill::REFILL_MESSAGE_LEN;
use rusqlite::params;

use openpsd_protocol::{Outcome, RefillMessage, RefillState, RefillView, SignedCombination};
use openpsd_service_kit::access::Customer;
use openpsd_service_kit::codec;
use openpsd_service_kit::db::now_secs;
use openpsd_service_kit::error::{ApiError, StorageContext};
use openpsd_service_kit::failpoint;

use crate::refill::load_refill;
use crate::store::{commit_refill, RefillRow};
use crate::{Meter, STEP_CANCEL};

impl Meter {
    /// Releases a refill whose message never left (caller holds the device's lock): the
    /// RC's hold, if it made one, then the refill row. Idempotent.
    pub(crate) async fn release_unissued(
        &self,
        r: &RefillRow,
        step: &'static str,
    ) -> Result<RefillRow, ApiError> {
        let id = r.view.client_txn_id.clone();
        let mut combination_id = r.view.combination_id.clone();
        if let (Some((control_sum, refills)), Some(license), None) =
            (r.binding, r.license, &combination_id)
        {
            // The audit was accepted: the RC may hold the amount (a crash after its answer).
            // Repeating the hold request returns that hold; a client error means none.
            let hold = r.hold_request(license, control_sum, refills);
            match self
                .rc
                .post::<_, SignedCombination>("/v1/combinations", &hold, step)
                .await
            {
                Ok(sc) => combination_id = Some(sc.combination.combination_id),
                Err(e) if e.status.is_client_error() => {}
                Err(e) => return Err(e),
            }
        }
        if let Some(c) = combination_id.as_deref() {
            self.rc_settle(c, Outcome::Released, step).await?;
        }
        let row = self
            .db
            .run(step, move |c| {
                let tx = c.transaction().storage(step)?;
                tx.execute(
                    "UPDATE refills SET state = 'released',
                            combination_id = COALESCE(combination_id, ?2), updated_at = ?3
                     WHERE client_txn_id = ?1 AND state IN ('awaiting_audit', 'audit_accepted')",
                    params![id, combination_id, now_secs()],
                )
                .storage(step)?;
                commit_refill(tx, &id, step)
            })
            .await?;
        tracing::info!(client_txn_id = %row.view.client_txn_id, "refill released before its message left");
        Ok(row)
    }

    /// Has `r` (not issued) outlived the time-to-live?
    pub(crate) async fn expired(
        &self,
        r: &RefillRow,
        step: &'static str,
    ) -> Result<bool, ApiError> {
        if r.view.state != RefillState::AwaitingAudit {
            return Ok(false);
        }
        let id = r.view.client_txn_id.clone();
        let created: i64 = self
            .db
            .run(step, move |c| {
                c.query_row(
                    "SELECT created_at FROM refills WHERE client_txn_id = ?1",
                    [&id],
                    |row| row.get(0),
                )
                .storage(step)
            })
            .await?;
        let ttl = i64::try_from(self.unissued_ttl.as_secs()).unwrap_or(i64::MAX);
        // `created_at` holds whole seconds: strictly later, so a refill lives at least its
        // whole time-to-live. With `<=` one made at the end of a second expired up to a
        // second early: with settle.rs's 1 s, milliseconds after it was made (a flaky test).
        Ok(created.saturating_add(ttl) < now_secs())
    }

    /// Releases the device's outstanding refill if its message never left and its
    /// time-to-live has passed (checked when the device's owner asks for another refill).
    pub(crate) async fn expire_unissued(
        &self,
        device: &str,
        step: &'static str,
    ) -> Result<(), ApiError> {
        let _guard = self.lock(device).await;
        let d = device.to_owned();
        let ids: Vec<String> = self
            .db
            .run(step, move |c| {
                let mut stmt = c
                    .prepare(
                        "SELECT client_txn_id FROM refills
                         WHERE device_id = ?1 AND state IN ('awaiting_audit', 'audit_accepted')",
                    )
                    .storage(step)?;
                let ids = stmt
                    .query_map([&d], |r| r.get(0))
                    .storage(step)?
                    .collect::<Result<Vec<String>, _>>()
                    .storage(step)?;
                Ok(ids)
            })
            .await?;
        for id in ids {
            let r = load_refill(self, &id, step, None).await?;
            if self.expired(&r, step).await? {
                tracing::info!(client_txn_id = %id, "refill expired before its message left");
                self.release_unissued(&r, step).await?;
            }
        }
        Ok(())
    }

    /// Makes (or returns) the void of an issued refill: RC-signed, KMS-signed, recorded
    /// with a fresh confirm nonce before it is answered.
    async fn issue_void(&self, r: &RefillRow, step: &'static str) -> Result<RefillRow, ApiError> {
        let (Some(comb), Some((control_sum, refills)), Some(license)) =
            (r.view.combination_id.clone(), r.binding, r.license)
        else {
            return Err(ApiError::internal(
                step,
                "issued refill without its combination",
            ));
        };
        let void: SignedCombination = self
            .rc
            .post(
                &format!("/v1/combinations/{comb}/void"),
                &serde_json::json!({}),
                step,
            )
            .await?;
        let v = &void.combination;
        if v.device_id.to_ascii_uppercase() != r.view.device_id
            || v.license != license
            || v.amount != 0
            || v.control_sum != control_sum
            || v.refills != refills
            || v.combination_id == comb
        {
            return Err(ApiError::internal(
                step,
                "the RC answered a void for something else",
            ));
        }
        let sealed: RefillMessage = self.kms.post("/v1/refill-messages", &void, step).await?;
        let body = v.to_core(step)?.body();
        match hex::decode(&sealed.refill_message) {
            Ok(m) if m.len() == REFILL_MESSAGE_LEN && m.starts_with(&body) => {}
            _ => return Err(ApiError::unavailable(step, "the KMS signed something else")),
        }
        let confirm_nonce = hex::encode(codec::random_array::<16>());
        let id = r.view.client_txn_id.clone();
        let void2 = void.clone();
        let row = self
            .db
            .run(step, move |c| {
                let tx = c.transaction().storage(step)?;
                tx.execute(
                    "UPDATE refills SET void_combination_id = ?2, void_signature = ?3,
                            void_message = ?4, confirm_nonce = ?5, updated_at = ?6
                     WHERE client_txn_id = ?1 AND state = 'message_issued'
                       AND void_message IS NULL",
                    params![
                        id,
                        void2.combination.combination_id,
                        void2.signature,
                        sealed.refill_message,
                        confirm_nonce,
                        now_secs()
                    ],
                )
                .storage(step)?;
                commit_refill(tx, &id, step)
            })
            .await?;
        tracing::info!(
            client_txn_id = %row.view.client_txn_id,
            void = %void.combination.combination_id,
            "void issued"
        );
        Ok(row)
    }
}

/// `POST /v1/refills/{client_txn_id}/cancel` (the device's owner).
///
/// - not issued yet: released at once → `released`;
/// - issued: → `voiding` with `void_message` and a new `confirm_nonce`; the host applies the
///   void (REFILL), audits with the nonce and confirms (`POST .../confirm`), which settles
///   the hold `released` if the void applied, `applied` if the refill won the race;
/// - `voiding`, `released`, `refused`: answered as they are; `completed`: `409 wrong_state`.
pub(crate) async fn cancel(
    State(meter): State<Meter>,
    Extension(customer): Extension<Customer>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<RefillView>, ApiError> {
    let step = STEP_CANCEL;
    let first = load_refill(&meter, &id, step, Some(&customer)).await?;
    let _guard = meter.lock(&first.view.device_id).await;
    let r = load_refill(&meter, &id, step, Some(&customer)).await?;
    let row = match r.view.state {
        RefillState::Completed => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                openpsd_protocol::ErrorCode::WrongState,
                step,
                format!("refill '{id}' was applied to the device already; nothing to cancel"),
            ))
        }
        RefillState::Released | RefillState::Refused | RefillState::Voiding => r,
        RefillState::AwaitingAudit | RefillState::AuditAccepted => {
            meter.release_unissued(&r, step).await?
        }
        RefillState::MessageIssued => meter.issue_void(&r, step).await?,
    };
    failpoint::pause("meter_cancel_before_reply").await;
    Ok(Json(row.view))
}
