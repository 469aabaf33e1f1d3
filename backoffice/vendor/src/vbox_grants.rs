//! Grants for the virtual meter (seed 001; `docs/virtual-meter.md` §4 and §9): the vendor
//! signs the grant that lets one data center's box create one meter at one slot.
//!
//! `POST /v1/vbox/grants` (the data center only). Two records of one meter ID would both
//! start at refill count 0 and control sum 0, so one refill message for that meter would
//! credit each: a duplicate grant mints value. The vendor therefore keeps **one grant per
//! meter ID and one per (box, slot)**, in one table with both as unique keys, checked and
//! recorded in one transaction: the same request again answers the same grant (RFC 6979:
//! the same bytes), any other request naming a granted meter ID or slot is
//! `409 grant_conflict`. The limits are capped by the vendor ([`MAX_GRANT_DR`],
//! [`MAX_GRANT_POSTAGE`]). The license and origin are the data center's word: no postal
//! authority grant stands behind a virtual meter's license yet (docs/virtual-meter.md §8).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use openpsd_core::types::{Amount, LicenseId, PostalCode};
use openpsd_core::vbox::meter::MeterGrant;
use openpsd_protocol::datacenter::{code, GrantAnswer, GrantRequest};
use openpsd_service_kit::codec;
use openpsd_service_kit::db::now_secs;
use openpsd_service_kit::error::{ApiError, StorageContext};
use rusqlite::{params, OptionalExtension};
use sha2::Digest as _;

use crate::Vendor;

const STEP: &str = "vendor_vbox_grant";
/// The most a virtual meter may hold (100,000.00): the vendor's cap, whatever a data center
/// asks for.
const MAX_GRANT_DR: u64 = 10_000_000;
/// The largest postage per piece it grants (1,000.00).
const MAX_GRANT_POSTAGE: u64 = 100_000;

/// The table the vendor's schema gets.
pub(crate) const SCHEMA: &str = "
-- One grant per meter ID and per (box, slot): a second would mint value (module doc).
CREATE TABLE IF NOT EXISTS vbox_grants (
    meter_id       TEXT PRIMARY KEY,        -- 16 upper-case hex
    box_id         TEXT NOT NULL,
    slot           INTEGER NOT NULL,
    request_digest TEXT NOT NULL,           -- SHA-256 of the grant's fields
    grant_hex      TEXT NOT NULL,
    granted_at     INTEGER NOT NULL,
    UNIQUE (box_id, slot)
);
";

fn grant_fields(req: &GrantRequest) -> Result<MeterGrant, ApiError> {
    let bad = |m: &str| ApiError::bad_request(STEP, m);
    let box_id = codec::device_id(&req.box_id, STEP)?;
    let meter = codec::device_id(&req.meter_id, STEP)?;
    let mailer = codec::hex_array::<16>("mailer_id", &req.mailer_id, STEP)?;
    let origin = PostalCode::new(req.origin.as_bytes())
        .ok_or_else(|| bad("origin: 1 to 9 ASCII digits or capitals"))?;
    if req.max_postage == 0 || req.max_dr == 0 || req.max_postage > req.max_dr {
        return Err(bad("limits: 0 < max_postage <= max_dr"));
    }
    if req.max_dr > MAX_GRANT_DR || req.max_postage > MAX_GRANT_POSTAGE {
        return Err(bad(&format!(
            "limits: max_dr at most {MAX_GRANT_DR}, max_postage at most {MAX_GRANT_POSTAGE}"
        )));
    }
    if req.license == 0 {
        return Err(bad("license: not 0"));
    }
    Ok(MeterGrant {
        box_id,
        meter,
        slot: req.slot,
        mailer,
        license: LicenseId(req.license),
        origin,
        max_postage: Amount(req.max_postage),
        max_dr: Amount(req.max_dr),
    })
}

/// `POST /v1/vbox/grants`.
pub(crate) async fn grant(
    State(v): State<Vendor>,
    body: Bytes,
) -> Result<Json<GrantAnswer>, ApiError> {
    let req: GrantRequest = codec::json(&body, STEP)?;
    let g = grant_fields(&req)?;
    let fields = g.encode();
    let digest = hex::encode(sha2::Sha256::digest(&fields));
    let meter = codec::device_hex(&g.meter);
    let box_id = codec::device_hex(&g.box_id);
    let signed = hex::encode(g.sign(&v.key));
    let slot = i64::from(g.slot);
    let answer = v
        .db
        .run(STEP, move |c| {
            let tx = c.transaction().storage(STEP)?;
            let by_meter: Option<(String, String)> = tx
                .query_row(
                    "SELECT request_digest, grant_hex FROM vbox_grants WHERE meter_id = ?1",
                    [&meter],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .storage(STEP)?;
            match by_meter {
                Some((d, hex)) if d == digest => return Ok(hex),
                Some(_) => {
                    return Err(conflict(&format!(
                        "meter {meter} was granted before, for another box, slot or mailer"
                    )))
                }
                None => {}
            }
            let by_slot: Option<String> = tx
                .query_row(
                    "SELECT meter_id FROM vbox_grants WHERE box_id = ?1 AND slot = ?2",
                    params![box_id, slot],
                    |r| r.get(0),
                )
                .optional()
                .storage(STEP)?;
            if let Some(other) = by_slot {
                return Err(conflict(&format!(
                    "slot {slot} of box {box_id} was granted to meter {other}"
                )));
            }
            tx.execute(
                "INSERT INTO vbox_grants (meter_id, box_id, slot, request_digest, grant_hex, granted_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![meter, box_id, slot, digest, signed, now_secs()],
            )
            .storage(STEP)?;
            tx.commit().storage(STEP)?;
            tracing::info!(meter = %meter, box_id = %box_id, slot, "virtual meter granted");
            Ok(signed)
        })
        .await?;
    Ok(Json(GrantAnswer { grant: answer }))
}

fn conflict(message: &str) -> ApiError {
    ApiError::coded(StatusCode::CONFLICT, code::GRANT_CONFLICT, STEP, message)
}
