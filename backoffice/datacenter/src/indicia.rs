//! The meter's commands through the box (seed 001 Fig. 4): CREATE METER at sign-up, ISSUE
//! INDICIUM for `POST /v1/indicia`, the intent before each and RESUME after a crash, and the
//! mailer's views (meter, history).
//!
//! Idempotence: an indicium is kept by (mailer, client transaction ID) with the request's
//! digest. The same request again answers the stored indicium (a double click, a retry, a
//! reprint: free); another request under the same ID is `409 box_refused`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use openpsd_core::psd::indicium::IndiciumRequest;
use openpsd_core::types::{Amount, PostalCode, RateCategory, TransactionId};
use openpsd_core::vbox::batch::{batch_data, batch_requests, BatchReply, MAX_BATCH};
use openpsd_core::vbox::ins;
use openpsd_core::vbox::issue::{issue_data, IssueReply};
use openpsd_core::vbox::login::LoginRecord;
use openpsd_core::vbox::meter::create_meter_data;
use openpsd_core::vbox::record::MeterRecord;
use openpsd_core::vbox::txn::{self, TransactionRecord};
use openpsd_protocol::datacenter::{
    code, History, HistoryEntry, IndiciumBatch, IndiciumBatchIssued, IndiciumIssued, IndiciumOrder,
    MeterView,
};
use openpsd_service_kit::access::Customer;
use openpsd_service_kit::codec;
use openpsd_service_kit::db::{from_sql_int, now_secs, to_sql_int};
use openpsd_service_kit::error::ApiError;
use sha2::{Digest as _, Sha256};

use crate::boxhost::{Refused, LOST};
use crate::sql::{args, Conn, Sql};
use crate::store::{self, locate};
use crate::Datacenter;

const STEP_ISSUE: &str = "datacenter_issue";
const STEP_BATCH: &str = "datacenter_issue_batch";
const STEP_CREATE: &str = "datacenter_create";
const STEP_VIEW: &str = "datacenter_view";
const STEP_RESUME: &str = "datacenter_resume";

/// A box command about to be sent: what the database keeps until its answer is committed.
pub(crate) struct Intent {
    pub(crate) shard: u16,
    pub(crate) ins: u8,
    pub(crate) data: Vec<u8>,
    pub(crate) mailer: Option<String>,
    pub(crate) client_txn: Option<String>,
    pub(crate) digest: Option<String>,
    pub(crate) postage: Option<u64>,
}

/// What a box refusal of `intent` means to the caller. The record refusals are alarms: the
/// database holds a record the box did not make last (edited, restored, moved, swapped);
/// the alarm names the shard and the mailer the command was for.
fn refusal(r: Refused, intent: &Intent, step: &str) -> ApiError {
    match r.0 {
        0x9A60..=0x9A63 => {
            tracing::error!(
                status = %r.meaning(),
                step,
                shard = intent.shard,
                mailer = intent.mailer.as_deref().unwrap_or("-"),
                "ALARM: the box refused a meter record"
            );
            ApiError::coded(
                StatusCode::CONFLICT,
                code::RECORD_REFUSED,
                step,
                format!("the box refused the meter record: {}", r.meaning()),
            )
        }
        0x9A01 => ApiError::coded(
            StatusCode::CONFLICT,
            code::INSUFFICIENT_FUNDS,
            step,
            "the meter's balance does not cover the postage",
        ),
        _ => ApiError::coded(
            StatusCode::CONFLICT,
            code::BOX_REFUSED,
            step,
            format!("the box refused: {}", r.meaning()),
        ),
    }
}

/// Records `intent`, sends it, and commits the answer (or drops the intent on a refusal).
pub(crate) fn run_box(
    dc: &Datacenter,
    c: &mut Conn<'_>,
    intent: Intent,
    step: &str,
) -> Result<Committed, ApiError> {
    c.exec(
        step,
        "INSERT INTO intents (shard, ins, data, mailer_id, client_txn_id, request_digest, postage)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        args![
            intent.shard,
            intent.ins,
            &intent.data,
            intent.mailer.clone(),
            intent.client_txn.clone(),
            intent.digest.clone(),
            intent.postage.map(|p| to_sql_int(p, step)).transpose()?
        ],
    )?;
    // The intent is committed; the box has seen nothing: RESUME answers 9A64, and the
    // command is carried out then (`finish_intents`).
    openpsd_service_kit::failpoint::pause_blocking("datacenter_before_box");
    let answer = dc.boxh.send(intent.ins, 0, &intent.data);
    match answer {
        Ok(a) => {
            // The box has committed; the database has not: the crash RESUME heals.
            openpsd_service_kit::failpoint::pause_blocking("datacenter_after_box");
            commit_answer(dc, c, &intent, &a, step)
        }
        // No answer from the box (the link lost, its thread gone: `LOST`), its internal
        // error (`6Fxx`), or its memory failed under the command (`6581`): whether it
        // committed is not known, so the intent stays for RESUME and the caller retries.
        Err(r) if outcome_unknown(r) => Err(ApiError::unavailable(
            step,
            format!("the secure box did not answer ({}); retry", r.meaning()),
        )),
        Err(r) => {
            c.exec(
                step,
                "DELETE FROM intents WHERE shard = ?1",
                args![intent.shard],
            )?;
            Err(refusal(r, &intent, step))
        }
    }
}

/// Whether the box's answer `r` leaves open whether it committed the command: no answer
/// ([`LOST`]: the link lost, the box's thread or process gone), the box's internal error
/// (`6Fxx`), or a memory failure during its commit (`6581`: the write's outcome is unknown
/// until the box re-reads its memory). Such a command's intent is kept; RESUME settles it.
/// Every other status word is the box's refusal, nothing committed.
fn outcome_unknown(r: Refused) -> bool {
    r == LOST || r.0 & 0xFF00 == 0x6F00 || r.0 == 0x6581
}

/// What one committed box answer left.
pub(crate) struct Committed {
    pub(crate) record: MeterRecord,
    pub(crate) indicium: Vec<u8>,
    /// ISSUE BATCH: each piece's indicium and the balance after it, in the requests' order.
    pub(crate) pieces: Vec<(Vec<u8>, u64)>,
}

/// Commits a box answer in one transaction: the record, its Merkle path (whose new root must
/// be the box's), the transaction record (signature checked), the indicium; drops the intent.
fn commit_answer(
    dc: &Datacenter,
    c: &mut Conn<'_>,
    intent: &Intent,
    answer: &[u8],
    step: &str,
) -> Result<Committed, ApiError> {
    if intent.ins == ins::ISSUE_BATCH {
        return commit_batch(dc, c, intent, answer, step);
    }
    let internal = |m: &str| ApiError::internal(step, m.to_owned());
    let reply =
        IssueReply::decode(answer).map_err(|_| internal("the box's answer does not parse"))?;
    let t = TransactionRecord::verify(&reply.transaction, &dc.info.txn_key)
        .map_err(|_| internal("the box's transaction record does not verify"))?;
    let rec = MeterRecord::decode(&reply.record)
        .map_err(|_| internal("the box's record does not parse"))?;
    let meter = codec::device_hex(&rec.meter);
    let (shard, idx) = locate(rec.slot, dc.info.depth);
    let mut tx = c.transaction(step)?;
    if t.kind == txn::KIND_CREATE {
        let mailer = intent
            .mailer
            .clone()
            .ok_or_else(|| internal("CREATE METER without its mailer"))?;
        let n = usize::from(dc.info.depth) * 32;
        let proof = intent
            .data
            .get(intent.data.len().saturating_sub(n)..)
            .ok_or_else(|| internal("CREATE METER without its proof"))?;
        tx.exec(
            step,
            "INSERT INTO meters (meter_id, mailer_id, slot, record, created_record, create_proof)
             VALUES (?1, ?2, ?3, ?4, ?4, ?5)",
            args![&meter, mailer, rec.slot, &reply.record, proof],
        )?;
    } else {
        let n = tx.exec(
            step,
            "UPDATE meters SET record = ?2 WHERE slot = ?1",
            args![rec.slot, &reply.record],
        )?;
        if n != 1 {
            return Err(internal(
                "the box answered for a slot the database has no meter at",
            ));
        }
    }
    let root = store::set_leaf(
        &mut tx,
        shard,
        idx,
        &reply.record,
        dc.info.depth,
        &dc.empty,
        step,
    )?;
    if root != reply.root {
        tracing::error!(shard, "ALARM: the database's new root is not the box's");
        return Err(internal(
            "the database's tree disagrees with the box's new root",
        ));
    }
    tx.exec(
        step,
        "INSERT INTO txns (shard, sequence, meter_id, kind, record) VALUES (?1, ?2, ?3, ?4, ?5)",
        args![
            t.shard,
            to_sql_int(t.sequence, step)?,
            &meter,
            t.kind,
            &reply.transaction
        ],
    )?;
    if !reply.indicium.is_empty() {
        let (Some(m), Some(id), Some(d), Some(p)) = (
            &intent.mailer,
            &intent.client_txn,
            &intent.digest,
            intent.postage,
        ) else {
            return Err(internal("an indicium without its order"));
        };
        tx.exec(
            step,
            "INSERT INTO indicia (mailer_id, client_txn_id, request_digest, postage, indicium, balance, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            args![m, id, d, to_sql_int(p, step)?, &reply.indicium, to_sql_int(rec.dr.0, step)?, now_secs()],
        )?;
    }
    if t.kind == txn::KIND_REFILL {
        // The refill row moves on with the credit, in the same transaction: a later look at
        // the row never has to guess whether the box applied it. A zero refill is the void
        // of a message the box refused (refill.rs).
        let (Some(m), Some(id)) = (&intent.mailer, &intent.client_txn) else {
            return Err(internal("a refill without its row"));
        };
        let (to, from) = if t.amount.0 == 0 {
            ("voided", "voiding")
        } else {
            ("applied", "sealed")
        };
        let n = tx.exec(
            step,
            "UPDATE refills SET state = ?3, balance = ?4
             WHERE mailer_id = ?1 AND client_txn_id = ?2 AND state = ?5",
            args![m, id, to, to_sql_int(rec.dr.0, step)?, from],
        )?;
        if n != 1 {
            return Err(internal(
                "the box applied a refill whose row is not waiting for it",
            ));
        }
    }
    drop_intent(&mut tx, intent, step)?;
    tx.commit(step)?;
    Ok(Committed {
        record: rec,
        indicium: reply.indicium,
        pieces: Vec::new(),
    })
}

/// The digest an order is kept under (a retry must match it to get its indicium back).
fn order_digest(id: &str, postage: u64, rate: u16, destination: &str) -> String {
    hex::encode(Sha256::digest(format!(
        "{}|{}|{}|{}",
        id.to_ascii_lowercase(),
        postage,
        rate,
        destination
    )))
}

/// Commits an ISSUE BATCH answer in one transaction: the meter's last record and its path
/// (the new root must be the box's), each piece's transaction record (signature checked)
/// and indicium, booked under the order its request came from; drops the intent. The
/// orders are read back from the command's data, so RESUME after a crash books them too.
fn commit_batch(
    dc: &Datacenter,
    c: &mut Conn<'_>,
    intent: &Intent,
    answer: &[u8],
    step: &str,
) -> Result<Committed, ApiError> {
    let internal = |m: &str| ApiError::internal(step, m.to_owned());
    let reply =
        BatchReply::decode(answer).map_err(|_| internal("the box's answer does not parse"))?;
    let requests = batch_requests(&intent.data, dc.info.depth)
        .ok_or_else(|| internal("a batch intent whose data does not parse"))?;
    if requests.len() != reply.pieces.len() {
        return Err(internal("the box answered another number of pieces"));
    }
    let mailer = intent
        .mailer
        .clone()
        .ok_or_else(|| internal("a batch without its mailer"))?;
    let rec = MeterRecord::decode(&reply.record)
        .map_err(|_| internal("the box's record does not parse"))?;
    let meter = codec::device_hex(&rec.meter);
    let (shard, idx) = locate(rec.slot, dc.info.depth);
    let mut tx = c.transaction(step)?;
    let n = tx.exec(
        step,
        "UPDATE meters SET record = ?2 WHERE slot = ?1 AND mailer_id = ?3",
        args![rec.slot, &reply.record, &mailer],
    )?;
    if n != 1 {
        return Err(internal(
            "the box answered for a slot the database has no such meter at",
        ));
    }
    let root = store::set_leaf(
        &mut tx,
        shard,
        idx,
        &reply.record,
        dc.info.depth,
        &dc.empty,
        step,
    )?;
    if root != reply.root {
        tracing::error!(shard, "ALARM: the database's new root is not the box's");
        return Err(internal(
            "the database's tree disagrees with the box's new root",
        ));
    }
    let mut pieces = Vec::with_capacity(requests.len());
    for (piece, req) in reply.pieces.iter().zip(&requests) {
        let t = TransactionRecord::verify(&piece.transaction, &dc.info.txn_key)
            .map_err(|_| internal("the box's transaction record does not verify"))?;
        if t.kind != txn::KIND_ISSUE || t.meter != rec.meter || t.amount != req.postage {
            return Err(internal(
                "a batch piece's transaction record is not its own",
            ));
        }
        tx.exec(
            step,
            "INSERT INTO txns (shard, sequence, meter_id, kind, record) VALUES (?1, ?2, ?3, ?4, ?5)",
            args![
                t.shard,
                to_sql_int(t.sequence, step)?,
                &meter,
                t.kind,
                &piece.transaction
            ],
        )?;
        let id = hex::encode(req.transaction.0);
        let destination = String::from_utf8_lossy(req.destination.as_bytes());
        tx.exec(
            step,
            "INSERT INTO indicia (mailer_id, client_txn_id, request_digest, postage, indicium, balance, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            args![
                &mailer,
                &id,
                order_digest(&id, req.postage.0, req.rate.0, &destination),
                to_sql_int(req.postage.0, step)?,
                &piece.indicium,
                to_sql_int(t.dr.0, step)?,
                now_secs()
            ],
        )?;
        pieces.push((piece.indicium.clone(), t.dr.0));
    }
    drop_intent(&mut tx, intent, step)?;
    tx.commit(step)?;
    Ok(Committed {
        record: rec,
        indicium: Vec::new(),
        pieces,
    })
}

/// Drops `intent` with its answer's commit: it must still be there, so an answer is
/// committed once, by the server whose intent it is or by the one that finished it.
fn drop_intent(tx: &mut impl Sql, intent: &Intent, step: &str) -> Result<(), ApiError> {
    let n = tx.exec(
        step,
        "DELETE FROM intents WHERE shard = ?1 AND data = ?2",
        args![intent.shard, &intent.data],
    )?;
    if n != 1 {
        return Err(ApiError::unavailable(
            step,
            format!(
                "shard {}'s command was finished by another server meanwhile; retry",
                intent.shard
            ),
        ));
    }
    Ok(())
}

/// Takes `shard`'s lock ([`crate::locks`]) for the rest of the caller's `Db::run` closure,
/// then finishes the intent a crash (or another server's) left on it: every box command of
/// a shard starts here.
pub(crate) fn claim_shard(dc: &Datacenter, c: &mut Conn<'_>, shard: u16) -> Result<(), ApiError> {
    crate::locks::lock_shard(c, shard, STEP_RESUME)?;
    finish_intents(dc, c, shard)
}

/// Finishes the intent left on `shard` (by a crash, a lost link, or a server that lost its
/// database connection): RESUME answers the committed command's bytes again, which are
/// committed now. `9A64` means the box has not committed it: it is **carried out now**
/// ([`carry_out`]), so a committed intent always ends as the box's answer or the box's
/// refusal, never as a guess. Only a refusal drops it, with nothing charged.
pub(crate) fn finish_intents(
    dc: &Datacenter,
    c: &mut Conn<'_>,
    shard: u16,
) -> Result<(), ApiError> {
    let step = STEP_RESUME;
    let Some(r) = c.opt(
        step,
        "SELECT shard, ins, data, mailer_id, client_txn_id, request_digest, postage
         FROM intents WHERE shard = ?1",
        args![shard],
    )?
    else {
        return Ok(());
    };
    let intent = Intent {
        shard: r.num(0)?,
        ins: r.num(1)?,
        data: r.blob(2)?,
        mailer: r.opt_text(3)?,
        client_txn: r.opt_text(4)?,
        digest: r.opt_text(5)?,
        postage: r.opt_int(6)?.map(|p| from_sql_int(p, step)).transpose()?,
    };
    let answer = match dc.boxh.resume(intent.ins, &intent.data) {
        Err(Refused(0x9A64)) => carry_out(dc, &intent),
        other => other,
    };
    match answer {
        Ok(a) => {
            commit_answer(dc, c, &intent, &a, step)?;
            tracing::info!(shard, "finished a box command left uncommitted");
            Ok(())
        }
        // No answer (the box's link lost, its process down, its memory failing): the
        // intent stays for the next try.
        Err(r) if outcome_unknown(r) => Err(ApiError::unavailable(
            step,
            format!(
                "finishing shard {shard}'s command: the secure box did not answer ({}); retry",
                r.meaning()
            ),
        )),
        Err(r) => {
            // The box refused the command itself (a record alarm is logged by `refusal`):
            // nothing was committed, nothing charged.
            let e = refusal(r, &intent, step);
            c.exec(step, "DELETE FROM intents WHERE shard = ?1", args![shard])?;
            tracing::warn!(shard, refusal = %e.message, "dropped a box command the box refused");
            Ok(())
        }
    }
}

/// Sends an intent's command the box has not committed (RESUME said `9A64`). Why not drop
/// it, as a single server could: the server that wrote it may only have lost its database
/// connection (and its shard lock with it) while its command is still on its way to the
/// box. Dropped, that late command could commit after the next holder moved on, leaving the
/// box ahead of a database with no intent to heal it. Carried out, the command commits at
/// most once, whichever copy arrives first: the other finds the shard moved (a stale
/// record, `9A61`), so on a record refusal RESUME is asked once more, and answers the
/// copy that won. No fencing token or box-side state is needed for that.
fn carry_out(dc: &Datacenter, intent: &Intent) -> Result<Vec<u8>, Refused> {
    match dc.boxh.send(intent.ins, 0, &intent.data) {
        Err(r) if (0x9A60..=0x9A63).contains(&r.0) => {
            match dc.boxh.resume(intent.ins, &intent.data) {
                Ok(a) => Ok(a),
                Err(Refused(0x9A64)) => Err(r),
                Err(other) => Err(other),
            }
        }
        other => other,
    }
}

pub(crate) fn mailer_bytes(id: &str, step: &str) -> Result<[u8; 16], ApiError> {
    Ok(codec::hex_array::<16>("mailer_id", id, step)?)
}

/// CREATE METER for `mailer` at `slot` with the vendor's `grant`.
pub(crate) async fn create_meter(
    dc: &Datacenter,
    mailer: &str,
    slot: u32,
    grant: Vec<u8>,
) -> Result<(), ApiError> {
    let step = STEP_CREATE;
    let (dc2, m) = (dc.clone(), mailer.to_owned());
    dc.db
        .run(step, move |c| {
            let (shard, idx) = locate(slot, dc2.info.depth);
            claim_shard(&dc2, c, shard)?;
            if c.opt(step, "SELECT 1 FROM meters WHERE mailer_id = ?1", args![&m])?
                .is_some()
            {
                return Ok(());
            }
            let proof = store::proof(c, shard, idx, dc2.info.depth, &dc2.empty, step)?;
            let intent = Intent {
                shard,
                ins: ins::CREATE_METER,
                data: create_meter_data(&grant, &proof),
                mailer: Some(m),
                client_txn: None,
                digest: None,
                postage: None,
            };
            run_box(&dc2, c, intent, step).map(drop)
        })
        .await
}

/// The mailer's meter row: meter ID, slot, record.
pub(crate) fn meter_row(
    c: &mut impl Sql,
    mailer: &str,
    step: &str,
) -> Result<(String, u32, Vec<u8>), ApiError> {
    c.opt(
        step,
        "SELECT meter_id, slot, record FROM meters WHERE mailer_id = ?1",
        args![mailer],
    )?
    .map(|r| Ok::<_, ApiError>((r.text(0)?, r.num(1)?, r.blob(2)?)))
    .transpose()?
    .ok_or_else(|| {
        ApiError::coded(
            StatusCode::CONFLICT,
            "wrong_state",
            step,
            "the meter is not created yet: log in again",
        )
    })
}

fn view(meter: String, rec: &MeterRecord) -> MeterView {
    MeterView {
        meter_id: meter,
        slot: rec.slot,
        balance: rec.dr.0,
        used: rec.ar.0,
        pieces: rec.pieces.0,
        refills: rec.refills.0,
        max_postage: rec.max_postage.0,
        license: rec.license.0,
        origin: String::from_utf8_lossy(rec.origin.as_bytes()).into_owned(),
        public_key: hex::encode(rec.public_key),
    }
}

/// A stored record that does not even parse was edited (the box only writes well-formed
/// ones): the same alarm as a record the box refuses.
pub(crate) fn unparsable(step: &str) -> ApiError {
    tracing::error!(step, "ALARM: a stored meter record does not parse");
    ApiError::coded(
        StatusCode::CONFLICT,
        code::RECORD_REFUSED,
        step,
        "the stored meter record does not parse: it was edited",
    )
}

/// `GET /v1/meter`.
pub(crate) async fn meter(
    State(dc): State<Datacenter>,
    Extension(who): Extension<Customer>,
) -> Result<Json<MeterView>, ApiError> {
    let step = STEP_VIEW;
    dc.ensure_meter(&who.id).await?;
    if let Err(e) = crate::refill::finish_refills(&dc, Some(&who.id)).await {
        tracing::warn!(error = %e.message, "the meter is shown; an unfinished refill waits");
    }
    let (meter, _, record) = dc
        .db
        .run(step, move |c| meter_row(c, &who.id, step))
        .await?;
    let rec = MeterRecord::decode(&record).map_err(|_| unparsable(step))?;
    Ok(Json(view(meter, &rec)))
}

/// `POST /v1/indicia`.
pub(crate) async fn issue(
    State(dc): State<Datacenter>,
    Extension(who): Extension<Customer>,
    body: Bytes,
) -> Result<Json<IndiciumIssued>, ApiError> {
    let step = STEP_ISSUE;
    let order: IndiciumOrder = codec::json(&body, step)?;
    let txn_id = codec::hex_array::<8>("client_txn_id", &order.client_txn_id, step)?;
    let destination = PostalCode::new(order.destination.as_bytes()).ok_or_else(|| {
        ApiError::bad_request(step, "destination: 1 to 9 ASCII digits or capitals")
    })?;
    if order.postage == 0 || order.postage > i64::MAX as u64 {
        return Err(ApiError::amount_invalid(step, "postage: a positive amount"));
    }
    let digest = order_digest(
        &order.client_txn_id,
        order.postage,
        order.rate.into(),
        &order.destination,
    );
    let mailer = mailer_bytes(&who.id, step)?;
    dc.ensure_in_service(&who.id, step).await?;
    let today = codec::today_utc();
    let dc2 = dc.clone();
    let out = dc
        .db
        .run(step, move |c| {
            let (_, slot, _) = meter_row(c, &who.id, step)?;
            let (shard, idx) = locate(slot, dc2.info.depth);
            claim_shard(&dc2, c, shard)?;
            let id = order.client_txn_id.to_ascii_lowercase();
            let stored = c
                .opt(
                    step,
                    "SELECT request_digest, postage, indicium, balance FROM indicia
                     WHERE mailer_id = ?1 AND client_txn_id = ?2",
                    args![&who.id, &id],
                )?
                .map(|r| Ok::<_, ApiError>((r.text(0)?, r.int(1)?, r.blob(2)?, r.int(3)?)))
                .transpose()?;
            if let Some((d, postage, indicium, balance)) = stored {
                if d != digest {
                    return Err(ApiError::coded(
                        StatusCode::CONFLICT,
                        code::BOX_REFUSED,
                        step,
                        "another indicium was issued under this client_txn_id",
                    ));
                }
                return Ok(IndiciumIssued {
                    client_txn_id: id,
                    indicium: hex::encode(indicium),
                    postage: from_sql_int(postage, step)?,
                    balance: from_sql_int(balance, step)?,
                    reprint: true,
                });
            }
            let (_, _, record) = meter_row(c, &who.id, step)?;
            let rec = MeterRecord::decode(&record).map_err(|_| unparsable(step))?;
            let proof = store::proof(c, shard, idx, dc2.info.depth, &dc2.empty, step)?;
            let request = IndiciumRequest {
                transaction: TransactionId(txn_id),
                postage: Amount(order.postage),
                date: today,
                rate: RateCategory(order.rate.into()),
                origin: rec.origin,
                destination,
            };
            let intent = Intent {
                shard,
                ins: ins::ISSUE_INDICIUM,
                data: issue_data(slot, &mailer, &record, &proof, &request),
                mailer: Some(who.id.clone()),
                client_txn: Some(id.clone()),
                digest: Some(digest),
                postage: Some(order.postage),
            };
            let done = run_box(&dc2, c, intent, step)?;
            Ok(IndiciumIssued {
                client_txn_id: id,
                indicium: hex::encode(&done.indicium),
                postage: order.postage,
                balance: done.record.dr.0,
                reprint: false,
            })
        })
        .await?;
    tracing::info!(client_txn_id = %out.client_txn_id, postage = out.postage, reprint = out.reprint, "indicium");
    Ok(Json(out))
}

/// One order of a batch, checked.
struct Order {
    id: String,
    txn: [u8; 8],
    postage: u64,
    rate: u8,
    destination: PostalCode,
    digest: String,
}

/// `POST /v1/indicia/batch`: up to [`MAX_BATCH`] orders in one box command (ISSUE BATCH),
/// one intent, one database commit. Orders already issued under their ID with the same
/// request are answered from the database (reprints, free); one issued under its ID for
/// another request refuses the whole batch before anything is sent to the box.
pub(crate) async fn issue_batch(
    State(dc): State<Datacenter>,
    Extension(who): Extension<Customer>,
    body: Bytes,
) -> Result<Json<IndiciumBatchIssued>, ApiError> {
    let step = STEP_BATCH;
    let batch: IndiciumBatch = codec::json(&body, step)?;
    if batch.orders.is_empty() || batch.orders.len() > MAX_BATCH {
        return Err(ApiError::bad_request(
            step,
            format!("orders: 1 to {MAX_BATCH}"),
        ));
    }
    let mut orders: Vec<Order> = Vec::with_capacity(batch.orders.len());
    for o in &batch.orders {
        let txn = codec::hex_array::<8>("client_txn_id", &o.client_txn_id, step)?;
        let destination = PostalCode::new(o.destination.as_bytes()).ok_or_else(|| {
            ApiError::bad_request(step, "destination: 1 to 9 ASCII digits or capitals")
        })?;
        if o.postage == 0 || o.postage > i64::MAX as u64 {
            return Err(ApiError::amount_invalid(step, "postage: a positive amount"));
        }
        let id = o.client_txn_id.to_ascii_lowercase();
        if orders.iter().any(|p| p.id == id) {
            return Err(ApiError::bad_request(
                step,
                format!("client_txn_id {id} is twice in the batch"),
            ));
        }
        orders.push(Order {
            digest: order_digest(&id, o.postage, o.rate.into(), &o.destination),
            id,
            txn,
            postage: o.postage,
            rate: o.rate,
            destination,
        });
    }
    let mailer = mailer_bytes(&who.id, step)?;
    dc.ensure_in_service(&who.id, step).await?;
    let today = codec::today_utc();
    let dc2 = dc.clone();
    let out = dc
        .db
        .run(step, move |c| {
            let (_, slot, _) = meter_row(c, &who.id, step)?;
            let (shard, idx) = locate(slot, dc2.info.depth);
            claim_shard(&dc2, c, shard)?;
            // Every order's ID looked up before anything is sent: a conflict refuses all.
            let mut answers: Vec<Option<IndiciumIssued>> = Vec::with_capacity(orders.len());
            for o in &orders {
                let stored = c
                    .opt(
                        step,
                        "SELECT request_digest, postage, indicium, balance FROM indicia
                         WHERE mailer_id = ?1 AND client_txn_id = ?2",
                        args![&who.id, &o.id],
                    )?
                    .map(|r| Ok::<_, ApiError>((r.text(0)?, r.int(1)?, r.blob(2)?, r.int(3)?)))
                    .transpose()?;
                answers.push(match stored {
                    Some((d, _, _, _)) if d != o.digest => {
                        return Err(ApiError::coded(
                            StatusCode::CONFLICT,
                            code::BOX_REFUSED,
                            step,
                            format!(
                            "another indicium was issued under client_txn_id {}: nothing issued",
                            o.id
                        ),
                        ))
                    }
                    Some((_, postage, indicium, balance)) => Some(IndiciumIssued {
                        client_txn_id: o.id.clone(),
                        indicium: hex::encode(indicium),
                        postage: from_sql_int(postage, step)?,
                        balance: from_sql_int(balance, step)?,
                        reprint: true,
                    }),
                    None => None,
                });
            }
            let new: Vec<&Order> = orders
                .iter()
                .zip(&answers)
                .filter(|(_, a)| a.is_none())
                .map(|(o, _)| o)
                .collect();
            if !new.is_empty() {
                let (_, _, record) = meter_row(c, &who.id, step)?;
                let rec = MeterRecord::decode(&record).map_err(|_| unparsable(step))?;
                let proof = store::proof(c, shard, idx, dc2.info.depth, &dc2.empty, step)?;
                let requests: Vec<IndiciumRequest> = new
                    .iter()
                    .map(|o| IndiciumRequest {
                        transaction: TransactionId(o.txn),
                        postage: Amount(o.postage),
                        date: today,
                        rate: RateCategory(o.rate.into()),
                        origin: rec.origin,
                        destination: o.destination,
                    })
                    .collect();
                let intent = Intent {
                    shard,
                    ins: ins::ISSUE_BATCH,
                    data: batch_data(slot, &mailer, &record, &proof, &requests),
                    mailer: Some(who.id.clone()),
                    client_txn: None,
                    digest: None,
                    postage: None,
                };
                let done = run_box(&dc2, c, intent, step)?;
                if done.pieces.len() != new.len() {
                    return Err(ApiError::internal(step, "the batch's pieces went missing"));
                }
                let mut pieces = done.pieces.into_iter();
                for (o, a) in orders.iter().zip(answers.iter_mut()) {
                    if a.is_none() {
                        let (indicium, balance) = pieces
                            .next()
                            .ok_or_else(|| ApiError::internal(step, "a piece went missing"))?;
                        *a = Some(IndiciumIssued {
                            client_txn_id: o.id.clone(),
                            indicium: hex::encode(indicium),
                            postage: o.postage,
                            balance,
                            reprint: false,
                        });
                    }
                }
            }
            Ok(IndiciumBatchIssued {
                indicia: answers.into_iter().flatten().collect(),
            })
        })
        .await?;
    let fresh = out.indicia.iter().filter(|i| !i.reprint).count();
    tracing::info!(orders = out.indicia.len(), issued = fresh, "indicia batch");
    Ok(Json(out))
}

fn kind_name(kind: u8) -> &'static str {
    match kind {
        txn::KIND_CREATE => "create",
        txn::KIND_ISSUE => "issue",
        txn::KIND_REFILL => "refill",
        _ => "reprint",
    }
}

/// `GET /v1/history`: the meter's transaction records, each signed by the box.
pub(crate) async fn history(
    State(dc): State<Datacenter>,
    Extension(who): Extension<Customer>,
) -> Result<Json<History>, ApiError> {
    let step = STEP_VIEW;
    let key = dc.info.txn_key;
    let mailer = mailer_bytes(&who.id, step)?;
    let (records, login_rows): (Vec<Vec<u8>>, Vec<Vec<u8>>) = dc
        .db
        .run(step, move |c| {
            let (meter, _, _) = meter_row(c, &who.id, step)?;
            let records = c
                .rows(
                    step,
                    "SELECT record FROM txns WHERE meter_id = ?1 ORDER BY shard, sequence",
                    args![meter],
                )?
                .iter()
                .map(|r| r.blob(0))
                .collect::<Result<Vec<_>, _>>()?;
            let shown = i64::try_from(openpsd_protocol::datacenter::LOGINS_SHOWN).unwrap_or(20);
            let mut logins = c
                .rows(
                    step,
                    "SELECT record FROM logins WHERE mailer_id = ?1 ORDER BY sequence DESC LIMIT ?2",
                    args![&who.id, shown],
                )?
                .iter()
                .map(|r| r.blob(0))
                .collect::<Result<Vec<_>, _>>()?;
            logins.reverse();
            Ok((records, logins))
        })
        .await?;
    let mut entries = Vec::with_capacity(records.len());
    for r in records {
        let t = TransactionRecord::verify(&r, &key)
            .map_err(|_| ApiError::internal(step, "a stored transaction record does not verify"))?;
        entries.push(HistoryEntry {
            kind: kind_name(t.kind).to_owned(),
            sequence: t.sequence,
            amount: t.amount.0,
            used: t.ar.0,
            balance: t.dr.0,
            pieces: t.pieces.0,
            record: hex::encode(&r),
        });
    }
    let mut logins = Vec::with_capacity(login_rows.len());
    for r in login_rows {
        let l = LoginRecord::verify(&r, &key)
            .ok()
            .filter(|l| l.mailer == mailer)
            .ok_or_else(|| {
                ApiError::internal(
                    step,
                    "a stored log-in record does not verify as this mailer's",
                )
            })?;
        logins.push(openpsd_protocol::datacenter::LoginEntry {
            sequence: l.sequence,
            at: l.time,
            record: hex::encode(&r),
        });
    }
    Ok(Json(History {
        box_key: hex::encode(key),
        entries,
        logins,
    }))
}

/// `GET /v1/meters/{meter_id}/credit` (the post office): what the meter was credited, as the
/// box signed it (the sum of its refill transaction records), for the post office's
/// reconciliation of the pieces it scans. `404 unknown_device` for a meter this data center
/// does not keep.
pub(crate) async fn credit(
    State(dc): State<Datacenter>,
    axum::extract::Path(meter): axum::extract::Path<String>,
) -> Result<Json<openpsd_protocol::post::DeviceCredit>, ApiError> {
    let step = STEP_VIEW;
    let id = codec::device_hex(&codec::device_id(&meter, step)?);
    let key = dc.info.txn_key;
    let (id2, found) = (id.clone(), id.clone());
    let rows: Option<(Vec<u8>, Vec<Vec<u8>>)> = dc
        .db
        .run(step, move |c| {
            let Some(record) = c
                .opt(
                    step,
                    "SELECT record FROM meters WHERE meter_id = ?1",
                    args![&id2],
                )?
                .map(|r| r.blob(0))
                .transpose()?
            else {
                return Ok(None);
            };
            let txns = c
                .rows(
                    step,
                    "SELECT record FROM txns WHERE meter_id = ?1 AND kind = ?2",
                    args![&id2, txn::KIND_REFILL],
                )?
                .iter()
                .map(|r| r.blob(0))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Some((record, txns)))
        })
        .await?;
    let (record, txns) = rows.ok_or_else(|| ApiError::unknown_device(step, &found))?;
    let rec = MeterRecord::decode(&record).map_err(|_| unparsable(step))?;
    let mut credited = 0u64;
    for t in txns {
        let t = TransactionRecord::verify(&t, &key)
            .map_err(|_| ApiError::internal(step, "a stored transaction record does not verify"))?;
        credited = credited
            .checked_add(t.amount.0)
            .ok_or_else(|| ApiError::internal(step, "credit overflow"))?;
    }
    Ok(Json(openpsd_protocol::post::DeviceCredit {
        device_id: id,
        sets: vec![openpsd_protocol::post::SetCredit {
            set: 0,
            license: rec.license.0,
            credited,
            last_audit: None,
            retired_ar: None,
        }],
    }))
}
