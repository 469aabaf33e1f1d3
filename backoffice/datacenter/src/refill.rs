//! Adding funds (seed 001: the data center recharges the meter through the recharging
//! center; seed 000's remote refill): the mailer's deposit at the recharging center pays,
//! the KMS signs the refill message exactly as for a PSD, the box applies it (REFILL).
//!
//! Each refill is a row moving through `requested → held → sealed → applied → settled` (or
//! `sealed → voiding → voided → releasing → released`, `releasing → released`, `refused`),
//! each step committed before the next is asked, each call idempotent:
//! 1. the row binds the record's refill count and control sum (the combination is made for
//!    them; one refill in progress per meter, so they cannot move under it);
//! 2. the recharging center holds the amount on the mailer's account and signs the
//!    combination (its request ID is the row's, so a retry is the same hold);
//! 3. the KMS seals it (the same combination gives the same message);
//! 4. the box applies it, with an intent and RESUME like every box command;
//! 5. the recharging center settles the hold as applied.
//!
//! When the box refuses the message itself (above the meter's limit) its counters do not
//! move, so the message would still apply later: it is voided first (the recharging center
//! signs a zero refill on the same counters, the KMS seals it, the box applies it and the
//! counters move on), then the hold is released. When the counters moved past the message
//! (stale) or the KMS will not seal (a revoked meter), the hold is released at once:
//! nothing can be credited from it.
//!
//! A crash anywhere leaves the row at its last committed step; the mailer's next request
//! (any refill, `GET /v1/meter`) and every start finish it ([`finish_refills`]), so a hold
//! never stays open and no message is applied twice (the box refuses a replay, `9A12`).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use openpsd_core::psd::refill::REFILL_MESSAGE_LEN;
use openpsd_core::vbox::ins;
use openpsd_core::vbox::record::MeterRecord;
use openpsd_protocol::datacenter::{DepositView, RefillDone, RefillOrder};
use openpsd_protocol::kms::{RefillMessage, SignedCombination};
use openpsd_protocol::recharge::{Account, HoldRequest, NewAccount, Settle, Settled};
use openpsd_protocol::state::Outcome;
use openpsd_service_kit::access::Customer;
use openpsd_service_kit::codec;
use openpsd_service_kit::db::{from_sql_int, now_secs, to_sql_int};
use openpsd_service_kit::error::ApiError;

use crate::indicia::{mailer_bytes, meter_row, run_box, Intent};
use crate::sql::{args, Sql, Val};
use crate::store::{self, locate};
use crate::Datacenter;

const STEP: &str = "datacenter_refill";

/// The recharging-center account of `mailer`.
pub(crate) fn account_id(mailer: &str) -> String {
    format!("vm-{mailer}")
}

/// Opens the mailer's account at the recharging center (idempotent).
pub(crate) async fn open_account(dc: &Datacenter, mailer: &str) -> Result<(), ApiError> {
    let _: Account = dc
        .rc
        .post(
            "/v1/accounts",
            &NewAccount {
                account_id: account_id(mailer),
            },
            STEP,
        )
        .await?;
    Ok(())
}

/// A refill row.
#[derive(Clone)]
struct Row {
    mailer: String,
    txn: String,
    amount: u64,
    bound_refills: u32,
    bound_sum: u64,
    state: String,
    combination: Option<String>,
    message: Option<Vec<u8>>,
    balance: Option<u64>,
}

fn row_of(r: &crate::sql::Row, step: &str) -> Result<Row, ApiError> {
    Ok(Row {
        mailer: r.text(0)?,
        txn: r.text(1)?,
        amount: from_sql_int(r.int(2)?, step)?,
        bound_refills: r.num(3)?,
        bound_sum: from_sql_int(r.int(4)?, step)?,
        state: r.text(5)?,
        combination: r.opt_text(6)?,
        message: r.opt_blob(7)?,
        balance: r.opt_int(8)?.map(|b| from_sql_int(b, step)).transpose()?,
    })
}

const COLUMNS: &str =
    "mailer_id, client_txn_id, amount, bound_refills, bound_sum, state, combination, message, balance";

/// Moves row `r` from the state it was read in (`r.state`) to `state`, writing `extra` with
/// it. A compare-and-set: a row that moved on meanwhile (which the per-mailer refill lock
/// should make impossible: another process on the same database, or a crashed instance's
/// last step) is not overwritten, and the caller gets `503 service_unavailable`. Not
/// `409 wrong_state`, which tells a client its refill was refused for good: here the row
/// moved on, and the same request again reads it where it is and carries on.
async fn set_state(
    dc: &Datacenter,
    r: &Row,
    state: &str,
    extra: Option<(&str, Val)>,
) -> Result<(), ApiError> {
    let (m, t, s, was) = (
        r.mailer.clone(),
        r.txn.clone(),
        state.to_owned(),
        r.state.clone(),
    );
    let extra = extra.map(|(c, v)| (c.to_owned(), v));
    let changed = dc
        .db
        .run(STEP, move |c| match extra {
            Some((col, v)) => c.exec(
                STEP,
                &format!(
                    "UPDATE refills SET state = ?3, {col} = ?5 \
                     WHERE mailer_id = ?1 AND client_txn_id = ?2 AND state = ?4"
                ),
                args![m, t, s, was, v],
            ),
            None => c.exec(
                STEP,
                "UPDATE refills SET state = ?3 \
                 WHERE mailer_id = ?1 AND client_txn_id = ?2 AND state = ?4",
                args![m, t, s, was],
            ),
        })
        .await?;
    if changed != 1 {
        return Err(ApiError::unavailable(
            STEP,
            format!(
                "refill '{}' moved on from {} while this request made it {state}: \
                 send the same request again",
                r.txn, r.state
            ),
        ));
    }
    Ok(())
}

/// Moves refill `r` on to its end: settled (credited and paid) or released (nothing
/// credited, the hold given back). Answers the row at its end.
async fn drive(dc: &Datacenter, mut r: Row) -> Result<Row, ApiError> {
    let (meter, _, _) = {
        let m = r.mailer.clone();
        dc.db.run(STEP, move |c| meter_row(c, &m, STEP)).await?
    };
    if r.state == "requested" {
        let hold = HoldRequest {
            request_id: format!("vm:{}:{}", r.mailer.get(..16).unwrap_or(&r.mailer), r.txn),
            account_id: account_id(&r.mailer),
            device_id: meter.clone(),
            license: dc.config.license,
            amount: r.amount,
            control_sum: r.bound_sum,
            refills: r.bound_refills,
        };
        let signed: SignedCombination = match dc.rc.post("/v1/combinations", &hold, STEP).await {
            Ok(s) => s,
            Err(e) if e.status.is_client_error() => {
                // The RC said no (deposit, account): final, nothing is held.
                set_state(dc, &r, "refused", None).await?;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let json =
            serde_json::to_string(&signed).map_err(|e| ApiError::internal(STEP, e.to_string()))?;
        set_state(dc, &r, "held", Some(("combination", json.clone().into()))).await?;
        r.state = "held".into();
        r.combination = Some(json);
    }
    let signed: Option<SignedCombination> = r
        .combination
        .as_deref()
        .map(serde_json::from_str)
        .transpose()
        .map_err(|e| ApiError::internal(STEP, e.to_string()))?;
    let combination_id = signed
        .as_ref()
        .map(|s| s.combination.combination_id.clone());
    if r.state == "held" {
        let s = signed
            .as_ref()
            .ok_or_else(|| ApiError::internal(STEP, "held without its combination"))?;
        let sealed: RefillMessage = match dc.kms.post("/v1/refill-messages", s, STEP).await {
            Ok(m) => m,
            Err(e) if e.status.is_client_error() => {
                // The KMS will not seal for this meter (revoked, unknown): nothing was
                // sealed, so the hold goes back and the refill ends.
                let id = combination_id.clone();
                release(dc, r, id.as_deref()).await?;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let msg = message_bytes(&sealed)?;
        set_state(dc, &r, "sealed", Some(("message", msg.clone().into()))).await?;
        r.state = "sealed".into();
        r.message = Some(msg);
    }
    if r.state == "sealed" {
        let msg = r
            .message
            .clone()
            .ok_or_else(|| ApiError::internal(STEP, "sealed without its message"))?;
        match apply(dc, &r, msg, "applied").await? {
            Applied::Done(balance) => {
                r.state = "applied".into();
                r.balance = Some(balance);
            }
            // The counters moved past the message: it can never apply; the hold goes back.
            Applied::Stale => return release(dc, r, combination_id.as_deref()).await,
            // The box refused the message itself (above the meter's limit, ...): the
            // counters did not move, so the message would apply later (once the balance
            // is lower). It is voided first: a zero refill on the same counters, which the
            // box applies and which moves them on for good. `apply` moved the row to
            // `voiding` under the shard's lock.
            Applied::Refused => {
                r.state = "voiding".into();
            }
        }
    }
    if r.state == "voiding" {
        let id = combination_id
            .clone()
            .ok_or_else(|| ApiError::internal(STEP, "no combination"))?;
        let void: SignedCombination = dc
            .rc
            .post(
                &format!("/v1/combinations/{id}/void"),
                &serde_json::json!({}),
                STEP,
            )
            .await?;
        let sealed: RefillMessage = dc.kms.post("/v1/refill-messages", &void, STEP).await?;
        let msg = message_bytes(&sealed)?;
        // Applied or refused (a device or license the record does not have: the original
        // can never apply either) or stale (moved past): in each case nothing can be
        // credited from this combination any more.
        if let Applied::Done(_) = apply(dc, &r, msg, "voided").await? {
            // The void's commit moved the row on (crate::indicia).
            r.state = "voided".into();
        }
        openpsd_service_kit::failpoint::pause("datacenter_refill_after_void").await;
        return release(dc, r, Some(&id)).await;
    }
    // A crash after the void's commit and before the release, or within the release: the
    // hold is still open at the recharging center and nothing can be credited from it.
    if r.state == "voided" || r.state == "releasing" {
        let id = combination_id
            .clone()
            .ok_or_else(|| ApiError::internal(STEP, "no combination"))?;
        return release(dc, r, Some(&id)).await;
    }
    if r.state == "applied" {
        let id = combination_id.ok_or_else(|| ApiError::internal(STEP, "no combination"))?;
        let _: Settled = dc
            .rc
            .post(
                &format!("/v1/combinations/{id}/settle"),
                &Settle {
                    outcome: Outcome::Applied,
                },
                STEP,
            )
            .await?;
        set_state(dc, &r, "settled", None).await?;
        r.state = "settled".into();
        tracing::info!(mailer = %r.mailer, client_txn_id = %r.txn, amount = r.amount, "virtual meter refilled");
    }
    Ok(r)
}

/// The bytes of a refill message the KMS sealed.
fn message_bytes(sealed: &RefillMessage) -> Result<Vec<u8>, ApiError> {
    hex::decode(&sealed.refill_message)
        .ok()
        .filter(|m| m.len() == REFILL_MESSAGE_LEN)
        .ok_or_else(|| {
            ApiError::unavailable(
                STEP,
                "the KMS answered something else than a refill message",
            )
        })
}

/// What the box did with a refill message.
enum Applied {
    /// Credited (or, for a void, counted): the balance after it.
    Done(u64),
    /// The record's counters are past the ones the message was made for.
    Stale,
    /// The box refused it for another reason (nothing credited, counters unmoved).
    Refused,
}

/// Has the box apply refill message `msg` of row `r` (REFILL, with an intent; RESUME of a
/// crash first). The box's answer is committed with the row moved to `done_state` in one
/// transaction ([`crate::indicia`]), so a later call sees it in the row, never guesses.
///
/// Under the shard's lock the row must still be where the message belongs (`sealed` for
/// the message, `voiding` for its void), and a refusal of the message moves it on to
/// `voiding` there too. So every move out of those states that races a box command is
/// serialized with it: two function servers driving one refill (a client's retry that
/// reached another server) cannot have the box credit a message whose row another server
/// already moved on, an answer the database would then refuse to commit, leaving the
/// shard's intent unfinishable. The loser answers 503 and the retry reads the row anew.
async fn apply(
    dc: &Datacenter,
    r: &Row,
    msg: Vec<u8>,
    done_state: &'static str,
) -> Result<Applied, ApiError> {
    let (dc2, r2) = (dc.clone(), r.clone());
    dc.db
        .run(STEP, move |c| {
            let (_, slot, _) = meter_row(c, &r2.mailer, STEP)?;
            let (shard, idx) = locate(slot, dc2.info.depth);
            crate::indicia::claim_shard(&dc2, c, shard)?;
            let (_, _, record) = meter_row(c, &r2.mailer, STEP)?;
            let rec = MeterRecord::decode(&record).map_err(|_| crate::indicia::unparsable(STEP))?;
            let state = c
                .one(
                    STEP,
                    "SELECT state FROM refills WHERE mailer_id = ?1 AND client_txn_id = ?2",
                    args![&r2.mailer, &r2.txn],
                )?
                .text(0)?;
            if state == done_state {
                return Ok(Applied::Done(rec.dr.0));
            }
            let from = if done_state == "voided" {
                "voiding"
            } else {
                "sealed"
            };
            if state != from {
                return Err(ApiError::unavailable(
                    STEP,
                    format!(
                        "refill '{}' moved on to {state} meanwhile (another server): \
                         send the same request again",
                        r2.txn
                    ),
                ));
            }
            if rec.refills.0 != r2.bound_refills || rec.control_sum.0 != r2.bound_sum {
                return Ok(Applied::Stale);
            }
            let proof = store::proof(c, shard, idx, dc2.info.depth, &dc2.empty, STEP)?;
            let mut data = slot.to_be_bytes().to_vec();
            data.extend_from_slice(&mailer_bytes(&r2.mailer, STEP)?);
            data.extend_from_slice(
                &u16::try_from(record.len())
                    .map_err(|_| ApiError::internal(STEP, "record length"))?
                    .to_be_bytes(),
            );
            data.extend_from_slice(&record);
            data.extend_from_slice(&proof);
            data.extend_from_slice(&msg);
            let intent = Intent {
                shard,
                ins: ins::REFILL,
                data,
                mailer: Some(r2.mailer.clone()),
                client_txn: Some(r2.txn.clone()),
                digest: None,
                postage: None,
            };
            match run_box(&dc2, c, intent, STEP) {
                Ok(done) => Ok(Applied::Done(done.record.dr.0)),
                Err(e) if e.code == openpsd_protocol::datacenter::code::BOX_REFUSED => {
                    if from == "sealed" {
                        let n = c.exec(
                            STEP,
                            "UPDATE refills SET state = 'voiding'
                             WHERE mailer_id = ?1 AND client_txn_id = ?2 AND state = 'sealed'",
                            args![&r2.mailer, &r2.txn],
                        )?;
                        if n != 1 {
                            return Err(ApiError::internal(
                                STEP,
                                "a sealed refill moved on under its shard's lock",
                            ));
                        }
                    }
                    Ok(Applied::Refused)
                }
                Err(e) => Err(e),
            }
        })
        .await
}

/// Gives the hold of `combination` (if one was made) back to the deposit and ends the row
/// as `released`. The row moves to `releasing` first (compare-and-set), and only the server
/// that moved it asks the recharging center: a server that released the hold while another
/// still drove the row on (sealed, then applied by the box) would leave a meter credited
/// from a hold given back, whose `applied` settlement the recharging center then refuses.
/// A crash between the two leaves the row `releasing`, which the next drive finishes.
async fn release(dc: &Datacenter, mut r: Row, combination: Option<&str>) -> Result<Row, ApiError> {
    if let Some(id) = combination {
        if r.state != "releasing" {
            set_state(dc, &r, "releasing", None).await?;
            r.state = "releasing".into();
        }
        let _: Settled = dc
            .rc
            .post(
                &format!("/v1/combinations/{id}/settle"),
                &Settle {
                    outcome: Outcome::Released,
                },
                STEP,
            )
            .await?;
    }
    set_state(dc, &r, "released", None).await?;
    r.state = "released".into();
    tracing::info!(mailer = %r.mailer, client_txn_id = %r.txn, "refill released: nothing credited");
    Ok(r)
}

/// Finishes every refill left unfinished (of `mailer`, or everyone's).
pub(crate) async fn finish_refills(dc: &Datacenter, mailer: Option<&str>) -> Result<(), ApiError> {
    finish(dc, mailer, true).await
}

/// The refills of `mailer` (or everyone's) not ended yet: (mailer, transaction ID).
async fn unfinished(
    dc: &Datacenter,
    mailer: Option<&str>,
) -> Result<Vec<(String, String)>, ApiError> {
    let m = mailer.map(str::to_owned);
    dc.db
        .run(STEP, move |c| {
            const UNDER_WAY: &str = "SELECT mailer_id, client_txn_id FROM refills
                 WHERE state IN ('requested', 'held', 'sealed', 'voiding', 'voided', 'releasing', 'applied')";
            // Two statements rather than `?1 IS NULL`, whose parameter PostgreSQL cannot type.
            let rows = match m {
                None => c.rows(STEP, UNDER_WAY, args![])?,
                Some(m) => c.rows(STEP, &format!("{UNDER_WAY} AND mailer_id = ?1"), args![m])?,
            };
            rows.iter()
                .map(|r| Ok::<_, ApiError>((r.text(0)?, r.text(1)?)))
                .collect()
        })
        .await
}

/// Refill (mailer, txn) as stored now.
async fn load(dc: &Datacenter, mailer: &str, txn: &str) -> Result<Option<Row>, ApiError> {
    let (m, t) = (mailer.to_owned(), txn.to_owned());
    dc.db
        .run(STEP, move |c| {
            c.opt(
                STEP,
                &format!(
                    "SELECT {COLUMNS} FROM refills WHERE mailer_id = ?1 AND client_txn_id = ?2"
                ),
                args![m, t],
            )?
            .map(|r| row_of(&r, STEP))
            .transpose()
        })
        .await
}

/// Drives every unfinished refill (of `mailer`, or everyone's), each under its mailer's
/// refill lock unless the caller holds it (`lock` false). One that cannot end now (a
/// service down) does not hold up the others; the first error is answered.
async fn finish(dc: &Datacenter, mailer: Option<&str>, lock: bool) -> Result<(), ApiError> {
    let mut first = None;
    for (m, t) in unfinished(dc, mailer).await? {
        let _guard = if lock {
            Some(dc.refill_lock(&m).await)
        } else {
            None
        };
        // Read again under the lock: another call may have ended it meanwhile.
        let result = match load(dc, &m, &t).await {
            Ok(Some(r)) if !matches!(r.state.as_str(), "settled" | "released" | "refused") => {
                drive(dc, r).await.map(drop)
            }
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::warn!(error = %e.message, "a refill could not be finished yet");
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

/// `POST /v1/refills`.
pub(crate) async fn refill(
    State(dc): State<Datacenter>,
    Extension(who): Extension<Customer>,
    body: Bytes,
) -> Result<Json<RefillDone>, ApiError> {
    let order: RefillOrder = codec::json(&body, STEP)?;
    codec::hex_array::<8>("client_txn_id", &order.client_txn_id, STEP)?;
    if order.amount == 0 || i64::try_from(order.amount).is_err() {
        return Err(ApiError::amount_invalid(STEP, "amount: a positive amount"));
    }
    dc.ensure_meter(&who.id).await?;
    // The KMS seals refills only for a meter it registered.
    dc.register_meter(&who.id).await?;
    let txn = order.client_txn_id.to_ascii_lowercase();
    let amount = order.amount;
    // One drive of this mailer's refills at a time: two calls moving one row at once would
    // each see the other's step as a surprise.
    let _guard = dc.refill_lock(&who.id).await;
    let existing = load(&dc, &who.id, &txn).await?;
    let row = match existing {
        Some(r) if r.amount != amount => {
            return Err(ApiError::coded(
                StatusCode::CONFLICT,
                "wrong_state",
                STEP,
                "another refill was made under this client_txn_id",
            ))
        }
        Some(r) => r,
        None => {
            // Anything of this mailer's still under way ends first: one refill in progress
            // per meter, so the record's counters are the ones the new one binds.
            finish(&dc, Some(&who.id), false).await?;
            let (m, t) = (who.id.clone(), txn.clone());
            dc.db
                .run(STEP, move |c| {
                    let mut tx = c.transaction(STEP)?;
                    // Checked again here (one connection, and across data centers the
                    // mailer's lock: this check and the insert are atomic): the same
                    // request racing itself is one row; another refill of this meter under
                    // way is refused, so the counters it bound cannot move under it.
                    tx.xact_lock(crate::locks::mailer_key(&m), STEP)?;
                    if let Some(row) = tx.opt(
                        STEP,
                        &format!(
                            "SELECT {COLUMNS} FROM refills WHERE mailer_id = ?1 AND client_txn_id = ?2"
                        ),
                        args![&m, &t],
                    )? {
                        return row_of(&row, STEP);
                    }
                    let busy = tx
                        .opt(
                            STEP,
                            "SELECT client_txn_id FROM refills WHERE mailer_id = ?1
                             AND state IN ('requested', 'held', 'sealed', 'voiding')",
                            args![&m],
                        )?
                        .map(|r| r.text(0))
                        .transpose()?;
                    if let Some(other) = busy {
                        return Err(ApiError::coded(
                            StatusCode::CONFLICT,
                            "wrong_state",
                            STEP,
                            format!("refill {other} of this meter is under way: retry it, or this one in a moment"),
                        ));
                    }
                    let (_, _, record) = meter_row(&mut tx, &m, STEP)?;
                    let rec = MeterRecord::decode(&record).map_err(|_| crate::indicia::unparsable(STEP))?;
                    tx.exec(
                        STEP,
                        "INSERT INTO refills (mailer_id, client_txn_id, amount, bound_refills, bound_sum, state, created_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, 'requested', ?6)",
                        args![&m, &t, to_sql_int(amount, STEP)?, rec.refills.0, to_sql_int(rec.control_sum.0, STEP)?, now_secs()],
                    )?;
                    tx.commit(STEP)?;
                    Ok(Row {
                        mailer: m,
                        txn: t,
                        amount,
                        bound_refills: rec.refills.0,
                        bound_sum: rec.control_sum.0,
                        state: "requested".into(),
                        combination: None,
                        message: None,
                        balance: None,
                    })
                })
                .await?
        }
    };
    let r = drive(&dc, row).await?;
    match r.state.as_str() {
        "settled" => Ok(Json(RefillDone {
            client_txn_id: r.txn,
            amount: r.amount,
            balance: r.balance.unwrap_or_default(),
            combination_id: r
                .combination
                .as_deref()
                .and_then(|j| serde_json::from_str::<SignedCombination>(j).ok())
                .map(|s| s.combination.combination_id)
                .unwrap_or_default(),
        })),
        "released" => Err(ApiError::coded(StatusCode::CONFLICT,
            openpsd_protocol::datacenter::code::BOX_REFUSED,
            STEP,
            "the box refused the refill message; the hold on the deposit was released, nothing was charged",
        )),
        _ => Err(ApiError::coded(StatusCode::CONFLICT, "wrong_state", STEP, "this refill was refused (see the deposit)")),
    }
}

/// `GET /v1/deposit`.
pub(crate) async fn deposit(
    State(dc): State<Datacenter>,
    Extension(who): Extension<Customer>,
) -> Result<Json<DepositView>, ApiError> {
    let a: Account = dc
        .rc
        .get(&format!("/v1/accounts/{}", account_id(&who.id)), STEP)
        .await?;
    Ok(Json(DepositView {
        account_id: a.account_id,
        available: a.available,
        held: a.held,
        debited: a.debited,
    }))
}
