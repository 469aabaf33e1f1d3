//! Adding funds (seed 001: the data center recharges the meter through the recharging
//! center; seed 000's remote refill): the mailer's deposit at the recharging center pays,
//! the KMS signs the refill message exactly as for a PSD, the box applies it (REFILL).
//!
//! Each refill is a row moving through `requested → held → sealed → applied → settled` (or
//! `released`), each step committed before the next is asked, each call idempotent:
//! 1. the row binds the record's refill count and control sum (the combination is made for
//!    them; one refill in progress per meter, so they cannot move under it);
//! 2. the recharging center holds the amount on the mailer's account and signs the
//!    combination (its request ID is the row's, so a retry is the same hold);
//! 3. the KMS seals it (the same combination gives the same message);
//! 4. the box applies it, with an intent and RESUME like every box command;
//! 5. the recharging center settles the hold as applied (or releases it when the box
//!    refused the message: nothing was credited).
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
use openpsd_service_kit::error::{ApiError, StorageContext};
use rusqlite::{params, OptionalExtension};

use crate::boxhost::Refused;
use crate::indicia::{mailer_bytes, meter_row, run_box, Intent};
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

type RowTuple = (
    String,
    String,
    i64,
    u32,
    i64,
    String,
    Option<String>,
    Option<Vec<u8>>,
    Option<i64>,
);

fn row_of(t: RowTuple, step: &str) -> Result<Row, ApiError> {
    Ok(Row {
        mailer: t.0,
        txn: t.1,
        amount: from_sql_int(t.2, step)?,
        bound_refills: t.3,
        bound_sum: from_sql_int(t.4, step)?,
        state: t.5,
        combination: t.6,
        message: t.7,
        balance: t.8.map(|b| from_sql_int(b, step)).transpose()?,
    })
}

const COLUMNS: &str =
    "mailer_id, client_txn_id, amount, bound_refills, bound_sum, state, combination, message, balance";

async fn set_state(
    dc: &Datacenter,
    r: &Row,
    state: &str,
    extra: Option<(&str, rusqlite::types::Value)>,
) -> Result<(), ApiError> {
    let (m, t, s) = (r.mailer.clone(), r.txn.clone(), state.to_owned());
    let extra = extra.map(|(c, v)| (c.to_owned(), v));
    dc.db
        .run(STEP, move |c| {
            match extra {
                Some((col, v)) => c.execute(
                    &format!("UPDATE refills SET state = ?3, {col} = ?4 WHERE mailer_id = ?1 AND client_txn_id = ?2"),
                    params![m, t, s, v],
                ),
                None => c.execute(
                    "UPDATE refills SET state = ?3 WHERE mailer_id = ?1 AND client_txn_id = ?2",
                    params![m, t, s],
                ),
            }
            .storage(STEP)
            .map(drop)
        })
        .await
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
            request_id: format!("vm:{}:{}", &r.mailer[..16], r.txn),
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
        let sealed: RefillMessage = dc.kms.post("/v1/refill-messages", s, STEP).await?;
        let msg = hex::decode(&sealed.refill_message)
            .ok()
            .filter(|m| m.len() == REFILL_MESSAGE_LEN)
            .ok_or_else(|| {
                ApiError::unavailable(
                    STEP,
                    "the KMS answered something else than a refill message",
                )
            })?;
        set_state(dc, &r, "sealed", Some(("message", msg.clone().into()))).await?;
        r.state = "sealed".into();
        r.message = Some(msg);
    }
    if r.state == "sealed" {
        let msg = r
            .message
            .clone()
            .ok_or_else(|| ApiError::internal(STEP, "sealed without its message"))?;
        let (dc2, r2) = (dc.clone(), r.clone());
        let applied: Result<u64, Refused> = dc
            .db
            .run(STEP, move |c| {
                let (_, slot, _) = meter_row(c, &r2.mailer, STEP)?;
                let (shard, idx) = locate(slot, dc2.info.depth);
                crate::indicia::finish_intents(&dc2, c, Some(shard))?;
                let (_, _, record) = meter_row(c, &r2.mailer, STEP)?;
                let rec =
                    MeterRecord::decode(&record).map_err(|_| crate::indicia::unparsable(STEP))?;
                if rec.refills.0 > r2.bound_refills {
                    // Applied already (the box committed it; RESUME or an earlier call
                    // stored the answer): one refill in progress per meter, so it was this.
                    return Ok(Ok(rec.dr.0));
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
                    client_txn: None,
                    digest: None,
                    postage: None,
                };
                match run_box(&dc2, c, intent, STEP) {
                    Ok(done) => Ok(Ok(done.record.dr.0)),
                    Err(e) if e.code == openpsd_protocol::datacenter::code::BOX_REFUSED => {
                        // The box refused the message itself (stale, above the limit):
                        // nothing was credited.
                        Ok(Err(Refused(0x6985)))
                    }
                    Err(e) => Err(e),
                }
            })
            .await?;
        match applied {
            Ok(balance) => {
                set_state(
                    dc,
                    &r,
                    "applied",
                    Some(("balance", to_sql_int(balance, STEP)?.into())),
                )
                .await?;
                r.state = "applied".into();
                r.balance = Some(balance);
            }
            Err(_) => {
                let id = combination_id
                    .clone()
                    .ok_or_else(|| ApiError::internal(STEP, "no combination"))?;
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
                set_state(dc, &r, "released", None).await?;
                r.state = "released".into();
                return Ok(r);
            }
        }
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

/// Finishes every refill left unfinished (of `mailer`, or everyone's).
pub(crate) async fn finish_refills(dc: &Datacenter, mailer: Option<&str>) -> Result<(), ApiError> {
    let m = mailer.map(str::to_owned);
    let rows: Vec<Row> = dc
        .db
        .run(STEP, move |c| {
            let mut q = c
                .prepare(&format!(
                    "SELECT {COLUMNS} FROM refills WHERE state IN ('requested', 'held', 'sealed', 'applied')
                     AND (?1 IS NULL OR mailer_id = ?1)"
                ))
                .storage(STEP)?;
            let it = q.query_map([m], |r| r.try_into()).storage(STEP)?;
            let mut v = Vec::new();
            for t in it {
                v.push(row_of(t.storage(STEP)?, STEP)?);
            }
            Ok(v)
        })
        .await?;
    for r in rows {
        drive(dc, r).await?;
    }
    Ok(())
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
    let (m, t, amount) = (who.id.clone(), txn.clone(), order.amount);
    let existing: Option<Row> = dc
        .db
        .run(STEP, move |c| {
            c.query_row(
                &format!(
                    "SELECT {COLUMNS} FROM refills WHERE mailer_id = ?1 AND client_txn_id = ?2"
                ),
                params![m, t],
                |r| r.try_into(),
            )
            .optional()
            .storage(STEP)?
            .map(|t| row_of(t, STEP))
            .transpose()
        })
        .await?;
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
            finish_refills(&dc, Some(&who.id)).await?;
            let (m, t) = (who.id.clone(), txn.clone());
            dc.db
                .run(STEP, move |c| {
                    let tx = c.transaction().storage(STEP)?;
                    let (_, _, record) = meter_row(&tx, &m, STEP)?;
                    let rec = MeterRecord::decode(&record).map_err(|_| crate::indicia::unparsable(STEP))?;
                    tx.execute(
                        "INSERT INTO refills (mailer_id, client_txn_id, amount, bound_refills, bound_sum, state, created_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, 'requested', ?6)",
                        params![m, t, to_sql_int(amount, STEP)?, rec.refills.0, to_sql_int(rec.control_sum.0, STEP)?, now_secs()],
                    )
                    .storage(STEP)?;
                    tx.commit().storage(STEP)?;
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
