//! Virtual meters at the KMS (seed 001; `docs/virtual-meter.md` §9): which data-center boxes
//! the KMS trusts, and the meters they created, registered as devices whose key is the
//! meter's indicium key, so the post office verifies their indicia and the KMS seals their
//! refills exactly as a PSD's.
//!
//! The data center cannot register a device of its choosing: `POST /v1/vbox/meters` needs the
//! box-signed CREATE transaction record, and the record's leaf with the given siblings must
//! hash to that record's root after. Only the record the box created at that slot does (a
//! second preimage of SHA-256 aside), so the public key registered is the one the box derived
//! and keeps wrapped. The boxes themselves are registered by an operator
//! (`POST /v1/vbox/boxes`). A meter ID is registered once: a second box (or slot) claiming it
//! is refused, so one refill message can never credit two records of one meter.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use openpsd_core::crypto;
use openpsd_core::vbox::merkle::{self, parse_siblings};
use openpsd_core::vbox::record::MeterRecord;
use openpsd_core::vbox::txn::{self, TransactionRecord};
use openpsd_protocol::datacenter::{BoxRegistration, MeterRegistration};
use openpsd_protocol::kms::DeviceInfo;
use openpsd_protocol::ErrorCode;
use openpsd_service_kit::codec;
use openpsd_service_kit::db::now_secs;
use openpsd_service_kit::error::{ApiError, StorageContext};
use rusqlite::{params, OptionalExtension};

use crate::{read_row, Kms, SUITE_ECDSA};

const STEP_BOX: &str = "kms_vbox_box";
const STEP_METER: &str = "kms_vbox_meter";

/// The tables the KMS schema gets.
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS vbox_boxes (
    box_id        TEXT PRIMARY KEY,
    txn_key       TEXT NOT NULL,
    depth         INTEGER NOT NULL,
    registered_at INTEGER NOT NULL
);
-- The devices that are virtual meters, and the box that created each.
CREATE TABLE IF NOT EXISTS vbox_meters (
    meter_id      TEXT PRIMARY KEY REFERENCES devices(device_id),
    box_id        TEXT NOT NULL REFERENCES vbox_boxes(box_id),
    slot          INTEGER NOT NULL,
    UNIQUE (box_id, slot)
);
";

fn conflict(step: &str, message: String) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        ErrorCode::DeviceConflict,
        step,
        message,
    )
}

/// `POST /v1/vbox/boxes` (operator).
pub(crate) async fn register_box(
    State(kms): State<Kms>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let step = STEP_BOX;
    let req: BoxRegistration = codec::json(&body, step)?;
    let id = codec::device_hex(&codec::device_id(&req.box_id, step)?);
    let key = codec::hex_array::<65>("txn_key", &req.txn_key, step)?;
    if !crypto::is_valid_public_key(&key) {
        return Err(ApiError::bad_request(step, "txn_key: not a P-256 point"));
    }
    if req.depth == 0 || req.depth > merkle::MAX_DEPTH {
        return Err(ApiError::bad_request(step, "depth: 1 to 24"));
    }
    let (key_hex, depth) = (hex::encode(key), req.depth);
    let answer = BoxRegistration {
        box_id: id.clone(),
        txn_key: key_hex.clone(),
        depth,
    };
    let created = kms
        .db
        .run(step, move |c| {
            let tx = c.transaction().storage(step)?;
            let have: Option<(String, u8)> = tx
                .query_row(
                    "SELECT txn_key, depth FROM vbox_boxes WHERE box_id = ?1",
                    [&id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .storage(step)?;
            match have {
                Some(h) if h == (key_hex.clone(), depth) => Ok(false),
                Some(_) => Err(conflict(step, format!("box {id} is registered with another key"))),
                None => {
                    tx.execute(
                        "INSERT INTO vbox_boxes (box_id, txn_key, depth, registered_at) VALUES (?1, ?2, ?3, ?4)",
                        params![id, key_hex, depth, now_secs()],
                    )
                    .storage(step)?;
                    tx.commit().storage(step)?;
                    tracing::info!(box_id = %id, "virtual meter box registered");
                    Ok(true)
                }
            }
        })
        .await?;
    Ok((
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        Json(answer),
    ))
}

/// `POST /v1/vbox/meters` (the data center).
pub(crate) async fn register_meter(
    State(kms): State<Kms>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let step = STEP_METER;
    let req: MeterRegistration = codec::json(&body, step)?;
    let record = codec::hex_vec("record", &req.record, 1024, step)?;
    let proof = codec::hex_vec(
        "proof",
        &req.proof,
        32 * usize::from(merkle::MAX_DEPTH),
        step,
    )?;
    let transaction = codec::hex_vec("transaction", &req.transaction, txn::TXN_RECORD_LEN, step)?;
    let bad = |m: &str| ApiError::bad_request(step, m);
    let box_id = transaction
        .get(..8)
        .map(|b| {
            codec::device_hex(&openpsd_core::types::DeviceId(
                b.try_into().unwrap_or([0; 8]),
            ))
        })
        .ok_or_else(|| bad("transaction: too short"))?;
    let b2 = box_id.clone();
    let known: Option<(String, u8)> = kms
        .db
        .run(step, move |c| {
            c.query_row(
                "SELECT txn_key, depth FROM vbox_boxes WHERE box_id = ?1",
                [&b2],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .storage(step)
        })
        .await?;
    let (key_hex, depth) =
        known.ok_or_else(|| bad("the transaction record names a box the KMS does not know"))?;
    let key = hex::decode(key_hex).map_err(|_| ApiError::internal(step, "stored box key"))?;
    let t = TransactionRecord::verify(&transaction, &key)
        .map_err(|_| bad("the transaction record is not the box's"))?;
    let rec = MeterRecord::decode(&record).map_err(|_| bad("record: not a meter record"))?;
    let siblings =
        parse_siblings(&proof, depth).ok_or_else(|| bad("proof: not depth × 32 bytes"))?;
    let index = rec.slot & ((1u32 << depth) - 1);
    if t.kind != txn::KIND_CREATE
        || t.meter != rec.meter
        || t.slot != rec.slot
        || u32::from(t.shard) != rec.slot >> depth
        || merkle::root_from(&merkle::leaf_hash(&record), index, &siblings) != t.root_after
    {
        return Err(bad(
            "the record is not the one the box created at that slot",
        ));
    }
    let device = codec::device_hex(&rec.meter);
    let info = DeviceInfo {
        device_id: device.clone(),
        key_id: hex::encode(crypto::key_id(&rec.public_key).0),
        public_key: hex::encode(rec.public_key),
        licenses: vec![(
            rec.license.0,
            String::from_utf8_lossy(rec.origin.as_bytes()).into_owned(),
        )],
        revoked_at: None,
        reason: None,
    };
    let licenses = serde_json::to_string(&info.licenses)
        .map_err(|e| ApiError::internal(step, e.to_string()))?;
    let (i2, slot) = (info.clone(), rec.slot);
    let created = kms
        .db
        .run(step, move |c| {
            let tx = c.transaction().storage(step)?;
            if let Some(row) = read_row(&tx, &device, step)? {
                let ours: Option<(String, u32)> = tx
                    .query_row(
                        "SELECT box_id, slot FROM vbox_meters WHERE meter_id = ?1",
                        [&device],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()
                    .storage(step)?;
                return if ours == Some((box_id.clone(), slot))
                    && row.info.public_key == i2.public_key
                {
                    Ok(false)
                } else {
                    Err(conflict(
                        step,
                        format!("device {device} is registered already"),
                    ))
                };
            }
            tx.execute(
                "INSERT INTO devices (device_id, key_id, public_key, licenses, registered_at, suite)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![device, i2.key_id, i2.public_key, licenses, now_secs(), SUITE_ECDSA],
            )
            .storage(step)?;
            tx.execute(
                "INSERT INTO vbox_meters (meter_id, box_id, slot) VALUES (?1, ?2, ?3)",
                params![device, box_id, slot],
            )
            .map_err(|_| {
                conflict(
                    step,
                    format!("slot {slot} of box {box_id} has a meter registered"),
                )
            })?;
            tx.commit().storage(step)?;
            tracing::info!(meter = %device, box_id = %box_id, slot, "virtual meter registered");
            Ok(true)
        })
        .await?;
    Ok((
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        Json(info),
    ))
}

/// Whether `device` is a virtual meter (the data center seals refills for those only).
pub(crate) fn is_vbox_meter(
    c: &rusqlite::Connection,
    device: &str,
    step: &str,
) -> Result<bool, ApiError> {
    Ok(c.query_row(
        "SELECT 1 FROM vbox_meters WHERE meter_id = ?1",
        [device],
        |_| Ok(()),
    )
    .optional()
    .storage(step)?
    .is_some())
}
