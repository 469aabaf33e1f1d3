//! Meter server (seed 000 Fig. 4): the only service the host talks to. It runs a refill
//! step by step — nonce, audit verified by the KMS, audit checked against the last one it
//! accepted for the device (step 250), combination and hold from the recharging center,
//! refill message and receipt from the KMS, confirmation by a fresh audit — and settles
//! the hold with exactly what the device's audits show. It holds neither K1 nor money.
//!
//! Crash safety: every state change is one SQLite transaction committed before the reply,
//! and every call to another service is idempotent (holds by request ID, settlements by
//! combination ID, sealing and receipts are deterministic MACs). So the order is always
//! "external calls first, then commit": a crash between the two leaves the refill in the
//! state before, and the host's retry with the same `client_txn_id` repeats the calls and
//! gets the same answers. A refill message leaves the meter only after the commit that
//! records it, so a message the meter has no record of was never delivered.
//!
//! Concurrency: one outstanding refill per device (a partial unique index enforces it),
//! and everything that reads and then moves a device's audit history holds that device's
//! lock across its calls to the KMS and the RC, so two audits of one device never race.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use openpsd_core::psd::refill::REFILL_MESSAGE_LEN;
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use tokio::sync::OwnedMutexGuard;

use crate::codec;
use crate::db::{from_sql_int, now_secs, to_sql_int, Db};
use crate::error::{ApiError, ErrorDetail, StorageContext};
use crate::failpoint;
use crate::upstream::Upstream;
use openpsd_protocol::{
    AuditBody, CombinationRecord, DeviceInfo, HoldRequest, InspectionRequest, InspectionView,
    Outcome, ReceiptRequest, ReceiptResponse, RefillMessage, RefillRequest, RefillView, Settle,
    Settled, SignedCombination, VerifiedAudit,
};
use openpsd_protocol::{ErrorCode, HoldState, RefillState};

/// Database file name.
pub const DB_FILE: &str = "meter.sqlite";

const SCHEMA: &str = "
-- Registered devices' licenses (from the KMS's public data), to check set and license.
CREATE TABLE IF NOT EXISTS devices (
    device_id  TEXT PRIMARY KEY,
    licenses   TEXT NOT NULL,               -- JSON [[license, origin], ...]
    fetched_at INTEGER NOT NULL
);
-- The last audit accepted per device and register set: what step 250 checks against.
CREATE TABLE IF NOT EXISTS last_audits (
    device_id           TEXT NOT NULL,
    set_index           INTEGER NOT NULL,
    license             INTEGER NOT NULL,
    ar                  INTEGER NOT NULL,
    dr                  INTEGER NOT NULL,
    control_sum         INTEGER NOT NULL,
    pieces              INTEGER NOT NULL,
    refills             INTEGER NOT NULL,
    last_combination_id TEXT NOT NULL,
    nonce               TEXT NOT NULL,
    audit               TEXT NOT NULL,
    accepted_at         INTEGER NOT NULL,
    PRIMARY KEY (device_id, set_index)
);
-- Every audit accepted, for the record.
CREATE TABLE IF NOT EXISTS audit_log (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id   TEXT NOT NULL,
    set_index   INTEGER NOT NULL,
    purpose     TEXT NOT NULL,              -- refill, confirm, inspection
    reference   TEXT NOT NULL,              -- client_txn_id or inspection_id
    audit       TEXT NOT NULL,
    accepted_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS refills (
    client_txn_id     TEXT PRIMARY KEY,
    device_id         TEXT NOT NULL,
    set_index         INTEGER NOT NULL,
    account_id        TEXT NOT NULL,
    amount            INTEGER NOT NULL CHECK (amount > 0),
    state             TEXT NOT NULL CHECK (state IN ('awaiting_audit', 'audit_accepted',
                          'message_issued', 'completed', 'released', 'refused')),
    nonce             TEXT NOT NULL,
    audit             TEXT,                 -- the accepted audit the combination is bound to
    license           INTEGER,
    bound_control_sum INTEGER,
    bound_refills     INTEGER,
    combination_id    TEXT UNIQUE,
    signature         TEXT,
    refill_message    TEXT,
    receipt           TEXT,
    confirm_nonce     TEXT,
    confirm_audit     TEXT,
    error_status      INTEGER,
    error_code        TEXT,
    error_step        TEXT,
    error_message     TEXT,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
);
-- At most one outstanding refill per device, whatever races.
CREATE UNIQUE INDEX IF NOT EXISTS one_outstanding_refill ON refills(device_id)
    WHERE state IN ('awaiting_audit', 'audit_accepted', 'message_issued');
CREATE TABLE IF NOT EXISTS inspections (
    inspection_id TEXT PRIMARY KEY,
    device_id     TEXT NOT NULL,
    set_index     INTEGER NOT NULL,
    nonce         TEXT NOT NULL,
    audit         TEXT,
    receipt       TEXT,
    created_at    INTEGER NOT NULL,
    accepted_at   INTEGER
);
-- Combinations the RC made outside this meter's refills that an audit showed applied.
CREATE TABLE IF NOT EXISTS foreign_settlements (
    combination_id TEXT PRIMARY KEY,
    device_id      TEXT NOT NULL,
    outcome        TEXT NOT NULL,
    settled_at     INTEGER NOT NULL
);
";

const STEP_REQUEST: &str = "meter_request";
const STEP_AUDIT: &str = "meter_audit";
const STEP_CHECK: &str = "meter_check_audit";
const STEP_CONFIRM: &str = "meter_confirm";
const STEP_INSPECTION: &str = "meter_inspection";

/// States in which a refill is outstanding (blocks another refill of the device).
const OUTSTANDING: &str = "('awaiting_audit', 'audit_accepted', 'message_issued')";

/// How the meter server is set up.
#[derive(Clone, Debug)]
pub struct Config {
    /// Data directory: `meter.sqlite`.
    pub data: PathBuf,
    /// KMS base URL.
    pub kms_url: String,
    /// Recharging center base URL.
    pub recharge_url: String,
}

/// The meter server's shared state.
#[derive(Clone)]
pub struct Meter {
    db: Db,
    kms: Upstream,
    rc: Upstream,
    locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl Meter {
    /// Opens the data directory.
    pub fn open(config: &Config) -> anyhow::Result<Self> {
        crate::keys::private_dir(&config.data)?;
        let db = Db::open(&config.data.join(DB_FILE), SCHEMA)?;
        Ok(Self {
            db,
            kms: Upstream::new("KMS", &config.kms_url)?,
            rc: Upstream::new("recharging center", &config.recharge_url)?,
            locks: Arc::default(),
        })
    }

    /// The HTTP API (the host's).
    pub fn router(self) -> Router {
        Router::new()
            .route("/v1/refills", post(request_refill))
            .route("/v1/refills/{client_txn_id}", get(get_refill))
            .route("/v1/refills/{client_txn_id}/audit", post(refill_audit))
            .route("/v1/refills/{client_txn_id}/confirm", post(confirm))
            .route("/v1/inspections", post(new_inspection))
            .route("/v1/inspections/{inspection_id}", get(get_inspection))
            .route(
                "/v1/inspections/{inspection_id}/audit",
                post(inspection_audit),
            )
            .route("/health", get(|| async { "ok" }))
            .fallback(crate::server::not_found)
            .with_state(self)
    }

    /// The device's lock, held across a read-check-call-commit sequence on its history.
    async fn lock(&self, device_id: &str) -> OwnedMutexGuard<()> {
        let m = {
            let mut map = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(map.entry(device_id.to_owned()).or_default())
        };
        m.lock_owned().await
    }

    /// The device's licenses, from the meter's cache or the KMS.
    async fn licenses(
        &self,
        device_id: &str,
        step: &'static str,
    ) -> Result<Vec<(u32, String)>, ApiError> {
        let id = device_id.to_owned();
        let cached: Option<String> = self
            .db
            .run(step, move |c| {
                c.query_row(
                    "SELECT licenses FROM devices WHERE device_id = ?1",
                    [&id],
                    |r| r.get(0),
                )
                .optional()
                .storage(step)
            })
            .await?;
        if let Some(json) = cached {
            return serde_json::from_str(&json)
                .map_err(|e| ApiError::internal(step, format!("cached licenses: {e}")));
        }
        let info: DeviceInfo = self
            .kms
            .get(&format!("/v1/devices/{device_id}"), step)
            .await?;
        let json = serde_json::to_string(&info.licenses)
            .map_err(|e| ApiError::internal(step, e.to_string()))?;
        let id = device_id.to_owned();
        self.db
            .run(step, move |c| {
                c.execute(
                    "INSERT OR REPLACE INTO devices (device_id, licenses, fetched_at) VALUES (?1, ?2, ?3)",
                    params![id, json, now_secs()],
                )
                .storage(step)
                .map(drop)
            })
            .await?;
        Ok(info.licenses)
    }

    /// Step 225-240: the KMS verifies the audit's MAC and decodes it.
    async fn verify(&self, audit_hex: &str, step: &str) -> Result<Audited, ApiError> {
        // Refuse what is not even hex here, so the KMS only sees well-formed requests.
        codec::hex_vec("audit", audit_hex, 256, step)?;
        let v: VerifiedAudit = self
            .kms
            .post(
                "/v1/audits/verify",
                &AuditBody {
                    audit: audit_hex.to_owned(),
                },
                step,
            )
            .await?;
        Audited::from_verified(v, audit_hex, step)
    }

    /// Step 250 and settlement: checks a verified audit against the device's history and
    /// works out which holds it settles. Nothing is written here.
    async fn judge(
        &self,
        step: &'static str,
        device_id: &str,
        set: u8,
        audit: &Audited,
        expected_nonce: &str,
    ) -> Result<Judgement, ApiError> {
        if audit.device_id != device_id || audit.set != set {
            return Err(ApiError::audit_inconsistent(
                STEP_CHECK,
                format!(
                    "the audit is of device {} set {}, the request is for device {device_id} set {set}",
                    audit.device_id, audit.set
                ),
            ));
        }
        if audit.nonce != expected_nonce {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::AuditNonceMismatch,
                STEP_CHECK,
                "the audit does not answer this request's nonce",
            ));
        }
        let licenses = self.licenses(device_id, step).await?;
        match licenses.get(usize::from(set)) {
            Some((l, _)) if *l == audit.license => {}
            _ => {
                return Err(ApiError::audit_inconsistent(
                    STEP_CHECK,
                    format!(
                        "license {} is not the one registered for set {set}",
                        audit.license
                    ),
                ))
            }
        }
        let (dev, last_comb) = (device_id.to_owned(), audit.last_combination_id.clone());
        let (last, outstanding, own) = self
            .db
            .run(step, move |c| {
                Ok((
                    read_last(c, &dev, set, step)?,
                    read_outstanding(c, &dev, step)?,
                    read_known_combination(c, &last_comb, step)?,
                ))
            })
            .await?;
        // A refill count one past the last accepted audit: the combination the audit names
        // must be one the back office made, bound to that audit's state.
        let applied = match &last {
            Some(l) if audit.refills == l.refills.saturating_add(1) => match own {
                Some(k) => Some(k),
                None => {
                    self.foreign_combination(&audit.last_combination_id, step)
                        .await?
                }
            },
            _ => None,
        };
        check_history(last.as_ref(), audit, applied.as_ref())
            .map_err(|m| ApiError::audit_inconsistent(STEP_CHECK, m))?;

        let mut settlements = Vec::new();
        for o in outstanding.iter().filter(|o| o.set == set) {
            let Some((bound_cs, bound_refills)) = o.binding else {
                continue; // no audit accepted yet: nothing bound, nothing held
            };
            let outcome = if audit.refills == bound_refills {
                // The refill count it is bound to is not consumed: the message may still
                // apply, so the hold stays (check_history made sure the control sum agrees).
                continue;
            } else if audit.refills == bound_refills.saturating_add(1)
                && o.combination_id.as_deref() == Some(audit.last_combination_id.as_str())
            {
                Outcome::Applied
            } else if audit.refills > bound_refills {
                // The refill count it was bound to is consumed: it can never apply.
                Outcome::Released
            } else {
                continue;
            };
            settlements.push(Settlement::Own {
                client_txn_id: o.client_txn_id.clone(),
                combination_id: o.combination_id.clone(),
                hold: o.hold_request(bound_cs, bound_refills),
                outcome,
            });
        }
        if let Some(k) = &applied {
            if k.client_txn_id.is_none() && k.rc_state == Some(HoldState::Held) {
                settlements.push(Settlement::Foreign {
                    combination_id: audit.last_combination_id.clone(),
                });
            } else if k.client_txn_id.is_none() && k.rc_state == Some(HoldState::Released) {
                tracing::error!(
                    device = device_id,
                    combination = %audit.last_combination_id,
                    "the device applied a combination the recharging center released"
                );
            }
        }
        Ok(Judgement { settlements })
    }

    /// A combination the meter did not make (e.g. made at the RC directly), from the RC.
    async fn foreign_combination(&self, id: &str, step: &str) -> Result<Option<Known>, ApiError> {
        match self
            .rc
            .get::<CombinationRecord>(&format!("/v1/combinations/{id}"), step)
            .await
        {
            Ok(r) => Ok(Some(Known {
                client_txn_id: None,
                device_id: r.combination.device_id.to_ascii_uppercase(),
                license: r.combination.license,
                amount: r.combination.amount,
                control_sum: r.combination.control_sum,
                refills: r.combination.refills,
                rc_state: Some(r.state),
            })),
            Err(e) if e.status == StatusCode::NOT_FOUND || e.status == StatusCode::BAD_REQUEST => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Carries out settlements at the RC (idempotent). Returns the combination ID of each
    /// own settlement that had none recorded (learned by repeating the hold request).
    async fn settle(&self, settlements: &mut [Settlement], step: &str) -> Result<(), ApiError> {
        for s in settlements.iter_mut() {
            match s {
                Settlement::Own {
                    combination_id,
                    hold,
                    outcome,
                    ..
                } => {
                    if combination_id.is_none() {
                        // The refill's audit was accepted but the meter never recorded a
                        // combination (a crash between the RC's answer and our commit). Repeating
                        // the hold request returns the hold if the RC made one.
                        match self
                            .rc
                            .post::<_, SignedCombination>("/v1/combinations", hold, step)
                            .await
                        {
                            Ok(sc) => *combination_id = Some(sc.combination.combination_id),
                            Err(e) if e.status.is_client_error() => continue, // nothing held
                            Err(e) => return Err(e),
                        }
                    }
                    if let Some(id) = combination_id.as_deref() {
                        self.rc_settle(id, *outcome, step).await?;
                    }
                }
                Settlement::Foreign { combination_id } => {
                    self.rc_settle(combination_id, Outcome::Applied, step)
                        .await?;
                }
            }
        }
        Ok(())
    }

    async fn rc_settle(&self, id: &str, outcome: Outcome, step: &str) -> Result<(), ApiError> {
        let _: Settled = self
            .rc
            .post(
                &format!("/v1/combinations/{id}/settle"),
                &Settle { outcome },
                step,
            )
            .await?;
        tracing::info!(combination = id, outcome = outcome.as_str(), "settled");
        Ok(())
    }

    /// A receipt from the KMS for an accepted audit, dated today.
    async fn receipt(&self, audit_hex: &str, step: &str) -> Result<String, ApiError> {
        let r: ReceiptResponse = self
            .kms
            .post(
                "/v1/receipts",
                &ReceiptRequest {
                    audit: audit_hex.to_owned(),
                    accepted_on: codec::today_utc().to_string(),
                },
                step,
            )
            .await?;
        Ok(r.receipt)
    }
}

// ------------------------------------------------------------------------ audit history

/// An audit as the KMS verified it.
#[derive(Clone, Debug)]
struct Audited {
    hex: String,
    device_id: String,
    license: u32,
    set: u8,
    ar: u64,
    dr: u64,
    control_sum: u64,
    pieces: u32,
    refills: u32,
    transferred: u64,
    pending: u64,
    last_combination_id: String,
    nonce: String,
}

impl Audited {
    fn from_verified(v: VerifiedAudit, hex: &str, step: &str) -> Result<Self, ApiError> {
        let bad =
            |what: &str| ApiError::unavailable(step, format!("the KMS answered a bad {what}"));
        let device = codec::device_id(&v.device_id, step).map_err(|_| bad("device ID"))?;
        let comb: [u8; 8] = codec::hex_array("last_combination_id", &v.last_combination_id, step)
            .map_err(|_| bad("combination ID"))?;
        let nonce: [u8; 16] =
            codec::hex_array("nonce", &v.nonce, step).map_err(|_| bad("nonce"))?;
        // Registers beyond SQLite's integers cannot be recorded; no real device has them.
        for x in [v.ar, v.dr, v.control_sum, v.transferred, v.pending] {
            if i64::try_from(x).is_err() {
                return Err(ApiError::audit_inconsistent(
                    STEP_CHECK,
                    "register out of range",
                ));
            }
        }
        Ok(Self {
            hex: hex.to_ascii_lowercase(),
            device_id: codec::device_hex(&device),
            license: v.license,
            set: v.set,
            ar: v.ar,
            dr: v.dr,
            control_sum: v.control_sum,
            pieces: v.pieces,
            refills: v.refills,
            transferred: v.transferred,
            pending: v.pending,
            last_combination_id: hex::encode(comb),
            nonce: hex::encode(nonce),
        })
    }
}

/// The last accepted audit of a device's set.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Last {
    license: u32,
    ar: u64,
    dr: u64,
    control_sum: u64,
    pieces: u32,
    refills: u32,
    last_combination_id: String,
}

/// A combination the back office made, as far as the audit check needs it.
#[derive(Clone, Debug)]
struct Known {
    /// The meter refill it belongs to (`None`: made at the RC outside this meter).
    client_txn_id: Option<String>,
    device_id: String,
    license: u32,
    amount: u64,
    control_sum: u64,
    refills: u32,
    /// The RC's hold state, for foreign combinations.
    rc_state: Option<HoldState>,
}

/// Step 250: is `a` what the device can show after `last`, given the combination its
/// audit names (`applied`, looked up when the refill count moved by one)?
fn check_history(last: Option<&Last>, a: &Audited, applied: Option<&Known>) -> Result<(), String> {
    let sum =
        a.ar.checked_add(a.dr)
            .and_then(|s| s.checked_add(a.pending));
    if sum != Some(a.control_sum) {
        return Err("AR + DR + pending is not the control sum".into());
    }
    if a.transferred > a.ar {
        return Err("more transferred to purses than AR holds".into());
    }
    // The first audit of a set is the baseline everything later is checked against.
    let Some(l) = last else { return Ok(()) };
    if a.license != l.license {
        return Err(format!("license {} after {}", a.license, l.license));
    }
    if a.ar < l.ar {
        return Err(format!("AR went down from {} to {}", l.ar, a.ar));
    }
    if a.pieces < l.pieces {
        return Err(format!(
            "piece count went down from {} to {}",
            l.pieces, a.pieces
        ));
    }
    if a.refills < l.refills {
        return Err(format!(
            "refill count went down from {} to {}",
            l.refills, a.refills
        ));
    }
    if a.refills == l.refills {
        if a.control_sum != l.control_sum || a.last_combination_id != l.last_combination_id {
            return Err(format!(
                "control sum {} without a refill since the last accepted audit ({})",
                a.control_sum, l.control_sum
            ));
        }
        return Ok(());
    }
    if a.refills != l.refills.saturating_add(1) {
        return Err(format!(
            "{} refills since the last accepted audit; at most one can be outstanding",
            a.refills - l.refills
        ));
    }
    let Some(k) = applied else {
        return Err(format!(
            "the refill applied ({}) is not one the back office made",
            a.last_combination_id
        ));
    };
    if k.device_id != a.device_id || k.license != a.license {
        return Err("the refill applied was made for another device or license".into());
    }
    if k.control_sum != l.control_sum || k.refills != l.refills {
        return Err(
            "the refill applied was bound to another state than the last accepted audit".into(),
        );
    }
    let expected = l
        .control_sum
        .checked_add(k.amount)
        .ok_or("control sum overflow")?;
    if a.control_sum != expected {
        return Err(format!(
            "control sum {} is not the last accepted {} plus the refill applied since ({})",
            a.control_sum, l.control_sum, k.amount
        ));
    }
    Ok(())
}

/// An outstanding refill of a device, as settlement needs it.
#[derive(Clone, Debug)]
struct Outstanding {
    client_txn_id: String,
    device_id: String,
    set: u8,
    account_id: String,
    amount: u64,
    license: Option<u32>,
    /// Control sum and refill count its combination is bound to (once its audit was accepted).
    binding: Option<(u64, u32)>,
    combination_id: Option<String>,
}

impl Outstanding {
    fn hold_request(&self, control_sum: u64, refills: u32) -> HoldRequest {
        HoldRequest {
            request_id: request_id(&self.device_id, &self.client_txn_id),
            account_id: self.account_id.clone(),
            device_id: self.device_id.clone(),
            license: self.license.unwrap_or_default(),
            amount: self.amount,
            control_sum,
            refills,
        }
    }
}

/// The RC request ID of a refill: its client transaction ID scoped by device.
fn request_id(device_id: &str, client_txn_id: &str) -> String {
    format!("{device_id}/{client_txn_id}")
}

/// What an accepted audit settles.
enum Settlement {
    /// One of this meter's refills.
    Own {
        client_txn_id: String,
        combination_id: Option<String>,
        hold: HoldRequest,
        outcome: Outcome,
    },
    /// A combination made at the RC outside this meter, shown applied.
    Foreign { combination_id: String },
}

struct Judgement {
    settlements: Vec<Settlement>,
}

fn read_last(c: &Connection, device: &str, set: u8, step: &str) -> Result<Option<Last>, ApiError> {
    let row: Option<(i64, i64, i64, i64, i64, i64, String)> = c
        .query_row(
            "SELECT license, ar, dr, control_sum, pieces, refills, last_combination_id
             FROM last_audits WHERE device_id = ?1 AND set_index = ?2",
            params![device, i64::from(set)],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            },
        )
        .optional()
        .storage(step)?;
    let bad = || ApiError::internal(step, "last audit row out of range");
    row.map(|(license, ar, dr, cs, pieces, refills, comb)| {
        Ok(Last {
            license: u32::try_from(license).map_err(|_| bad())?,
            ar: from_sql_int(ar, step)?,
            dr: from_sql_int(dr, step)?,
            control_sum: from_sql_int(cs, step)?,
            pieces: u32::try_from(pieces).map_err(|_| bad())?,
            refills: u32::try_from(refills).map_err(|_| bad())?,
            last_combination_id: comb,
        })
    })
    .transpose()
}

fn read_outstanding(
    c: &Connection,
    device: &str,
    step: &str,
) -> Result<Vec<Outstanding>, ApiError> {
    let mut stmt = c
        .prepare(&format!(
            "SELECT client_txn_id, set_index, account_id, amount, license, bound_control_sum,
                    bound_refills, combination_id
             FROM refills WHERE device_id = ?1 AND state IN {OUTSTANDING}"
        ))
        .storage(step)?;
    type Raw = (
        String,
        i64,
        String,
        i64,
        Option<i64>,
        Option<i64>,
        Option<i64>,
        Option<String>,
    );
    let rows: Vec<Raw> = stmt
        .query_map([device], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
            ))
        })
        .storage(step)?
        .collect::<Result<_, _>>()
        .storage(step)?;
    let bad = || ApiError::internal(step, "refill row out of range");
    rows.into_iter()
        .map(|(id, set, account, amount, license, cs, refills, comb)| {
            let binding = match (cs, refills) {
                (Some(cs), Some(r)) => Some((
                    from_sql_int(cs, step)?,
                    u32::try_from(r).map_err(|_| bad())?,
                )),
                _ => None,
            };
            Ok(Outstanding {
                client_txn_id: id,
                device_id: device.to_owned(),
                set: u8::try_from(set).map_err(|_| bad())?,
                account_id: account,
                amount: from_sql_int(amount, step)?,
                license: license.map(u32::try_from).transpose().map_err(|_| bad())?,
                binding,
                combination_id: comb,
            })
        })
        .collect()
}

fn read_known_combination(c: &Connection, id: &str, step: &str) -> Result<Option<Known>, ApiError> {
    let row: Option<(String, String, i64, i64, i64, i64)> = c
        .query_row(
            "SELECT client_txn_id, device_id, license, amount, bound_control_sum, bound_refills
             FROM refills WHERE combination_id = ?1",
            [id],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            },
        )
        .optional()
        .storage(step)?;
    let bad = || ApiError::internal(step, "refill row out of range");
    row.map(|(txn, device, license, amount, cs, refills)| {
        Ok(Known {
            client_txn_id: Some(txn),
            device_id: device,
            license: u32::try_from(license).map_err(|_| bad())?,
            amount: from_sql_int(amount, step)?,
            control_sum: from_sql_int(cs, step)?,
            refills: u32::try_from(refills).map_err(|_| bad())?,
            rc_state: None,
        })
    })
    .transpose()
}

/// Records an accepted audit (new `last_audits` row, log) and the settlements it made,
/// inside the caller's transaction.
fn record_audit(
    tx: &Transaction<'_>,
    audit: &Audited,
    purpose: &str,
    reference: &str,
    settlements: &[Settlement],
    step: &str,
) -> Result<(), ApiError> {
    let now = now_secs();
    tx.execute(
        "INSERT OR REPLACE INTO last_audits
         (device_id, set_index, license, ar, dr, control_sum, pieces, refills,
          last_combination_id, nonce, audit, accepted_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        params![
            audit.device_id,
            i64::from(audit.set),
            i64::from(audit.license),
            to_sql_int(audit.ar, step)?,
            to_sql_int(audit.dr, step)?,
            to_sql_int(audit.control_sum, step)?,
            i64::from(audit.pieces),
            i64::from(audit.refills),
            audit.last_combination_id,
            audit.nonce,
            audit.hex,
            now
        ],
    )
    .storage(step)?;
    tx.execute(
        "INSERT INTO audit_log (device_id, set_index, purpose, reference, audit, accepted_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            audit.device_id,
            i64::from(audit.set),
            purpose,
            reference,
            audit.hex,
            now
        ],
    )
    .storage(step)?;
    for s in settlements {
        match s {
            Settlement::Own {
                client_txn_id,
                combination_id,
                outcome,
                ..
            } => {
                let state = match outcome {
                    Outcome::Applied => "completed",
                    Outcome::Released => "released",
                };
                tx.execute(
                    "UPDATE refills SET state = ?2, combination_id = COALESCE(combination_id, ?3),
                            updated_at = ?4
                     WHERE client_txn_id = ?1",
                    params![client_txn_id, state, combination_id, now],
                )
                .storage(step)?;
                tracing::info!(client_txn_id = %client_txn_id, state, "refill settled");
            }
            Settlement::Foreign { combination_id } => {
                tx.execute(
                    "INSERT OR IGNORE INTO foreign_settlements (combination_id, device_id, outcome, settled_at)
                     VALUES (?1, ?2, 'applied', ?3)",
                    params![combination_id, audit.device_id, now],
                )
                .storage(step)?;
            }
        }
    }
    Ok(())
}

// ------------------------------------------------------------------------------ refills

/// A refill row.
#[derive(Clone, Debug)]
struct RefillRow {
    view: RefillView,
    audit: Option<String>,
    license: Option<u32>,
    binding: Option<(u64, u32)>,
    error_status: Option<u16>,
}

impl RefillRow {
    fn stored_error(&self) -> Option<ApiError> {
        let e = self.view.error.as_ref()?;
        Some(ApiError {
            status: StatusCode::from_u16(self.error_status.unwrap_or(409))
                .unwrap_or(StatusCode::CONFLICT),
            code: e.code.clone(),
            step: e.step.clone(),
            message: e.message.clone(),
        })
    }
}

fn read_refill(c: &Connection, id: &str, step: &str) -> Result<Option<RefillRow>, ApiError> {
    let mut stmt = c
        .prepare_cached(
            "SELECT client_txn_id, device_id, set_index, account_id, amount, state, nonce,
                    combination_id, refill_message, receipt, confirm_nonce,
                    error_status, error_code, error_step, error_message,
                    audit, license, bound_control_sum, bound_refills
             FROM refills WHERE client_txn_id = ?1",
        )
        .storage(step)?;
    let row = stmt
        .query_row([id], |r| {
            Ok((
                (
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, String>(6)?,
                ),
                (
                    r.get::<_, Option<String>>(7)?,
                    r.get::<_, Option<String>>(8)?,
                    r.get::<_, Option<String>>(9)?,
                    r.get::<_, Option<String>>(10)?,
                ),
                (
                    r.get::<_, Option<i64>>(11)?,
                    r.get::<_, Option<String>>(12)?,
                    r.get::<_, Option<String>>(13)?,
                    r.get::<_, Option<String>>(14)?,
                ),
                (
                    r.get::<_, Option<String>>(15)?,
                    r.get::<_, Option<i64>>(16)?,
                    r.get::<_, Option<i64>>(17)?,
                    r.get::<_, Option<i64>>(18)?,
                ),
            ))
        })
        .optional()
        .storage(step)?;
    let Some((
        (txn, device, set, account, amount, state, nonce),
        (comb, message, receipt, confirm_nonce),
        (err_status, err_code, err_step, err_message),
        (audit, license, cs, refills),
    )) = row
    else {
        return Ok(None);
    };
    let bad = || ApiError::internal(step, "refill row out of range");
    let error = match (err_code, err_step, err_message) {
        (Some(code), Some(step), Some(message)) => Some(ErrorDetail {
            code,
            step,
            message,
        }),
        _ => None,
    };
    let binding = match (cs, refills) {
        (Some(cs), Some(r)) => Some((
            from_sql_int(cs, step)?,
            u32::try_from(r).map_err(|_| bad())?,
        )),
        _ => None,
    };
    Ok(Some(RefillRow {
        view: RefillView {
            client_txn_id: txn,
            device_id: device,
            set: u8::try_from(set).map_err(|_| bad())?,
            account_id: account,
            amount: from_sql_int(amount, step)?,
            // Internally an accepted audit waits for its combination; for the host the next
            // step is the same (post the audit again), so it still reads awaiting_audit.
            state: match state.parse::<RefillState>().map_err(|_| bad())? {
                RefillState::AuditAccepted => RefillState::AwaitingAudit,
                s => s,
            },
            nonce,
            combination_id: comb,
            refill_message: message,
            receipt,
            confirm_nonce,
            error,
        },
        audit,
        license: license.map(u32::try_from).transpose().map_err(|_| bad())?,
        binding,
        error_status: err_status.and_then(|s| u16::try_from(s).ok()),
    }))
}

/// Loads a refill or answers `404 unknown_refill`.
async fn load_refill(meter: &Meter, id: &str, step: &'static str) -> Result<RefillRow, ApiError> {
    let id2 = id.to_owned();
    meter
        .db
        .run(step, move |c| read_refill(c, &id2, step))
        .await?
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
async fn request_refill(
    State(meter): State<Meter>,
    body: Bytes,
) -> Result<Json<RefillView>, ApiError> {
    let step = STEP_REQUEST;
    let req: RefillRequest = codec::json(&body, step)?;
    codec::ident("client_txn_id", &req.client_txn_id, step)?;
    codec::ident("account_id", &req.account_id, step)?;
    let device_id = codec::device_hex(&codec::device_id(&req.device_id, step)?);
    if req.amount == 0 || i64::try_from(req.amount).is_err() {
        return Err(ApiError::amount_invalid(
            step,
            "a refill is 1 to 2^63-1 minor units",
        ));
    }
    let same = |v: &RefillView| {
        v.device_id == device_id
            && v.set == req.set
            && v.account_id == req.account_id
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
    let licenses = meter.licenses(&device_id, step).await?;
    if usize::from(req.set) >= licenses.len() {
        return Err(ApiError::bad_request(
            step,
            format!("device {device_id} has {} register sets", licenses.len()),
        ));
    }
    let nonce = hex::encode(codec::random_array::<16>());
    let (dev, r2) = (device_id.clone(), req.clone());
    let row = meter
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
                    format!("refill '{other}' is outstanding for device {dev}; finish it first"),
                ));
            }
            let now = now_secs();
            tx.execute(
                "INSERT INTO refills (client_txn_id, device_id, set_index, account_id, amount, state,
                                      nonce, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'awaiting_audit', ?6, ?7, ?7)",
                params![r2.client_txn_id, dev, i64::from(r2.set), r2.account_id, to_sql_int(r2.amount, step)?, nonce, now],
            )
            .storage(step)?;
            let row = read_refill(&tx, &r2.client_txn_id, step)?
                .ok_or_else(|| ApiError::internal(step, "refill vanished"))?;
            tx.commit().storage(step)?;
            Ok(row)
        })
        .await?;
    if !same(&row.view) {
        return Err(reused());
    }
    tracing::info!(client_txn_id = %req.client_txn_id, device = %device_id, amount = req.amount, "refill requested");
    Ok(Json(row.view))
}

/// `GET /v1/refills/{client_txn_id}`.
async fn get_refill(
    State(meter): State<Meter>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<RefillView>, ApiError> {
    Ok(Json(load_refill(&meter, &id, STEP_REQUEST).await?.view))
}

/// `POST /v1/refills/{client_txn_id}/audit` (steps 220-285).
async fn refill_audit(
    State(meter): State<Meter>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> Result<Json<RefillView>, ApiError> {
    let step = STEP_AUDIT;
    let req: AuditBody = codec::json(&body, step)?;
    let first = load_refill(&meter, &id, step).await?;
    let _guard = meter.lock(&first.view.device_id).await;
    // Re-read under the lock: another call for this refill may have moved it on.
    let mut r = load_refill(&meter, &id, step).await?;
    match r.view.state.as_str() {
        "refused" => {
            return Err(r
                .stored_error()
                .unwrap_or_else(|| ApiError::wrong_state(step, "refused")))
        }
        "message_issued" | "completed" | "released" => return Ok(Json(r.view)),
        _ => {}
    }

    if r.binding.is_none() {
        // Steps 225-250: verify, check against history, accept.
        let audit = meter.verify(&req.audit, step).await?;
        let mut j = meter
            .judge(step, &r.view.device_id, r.view.set, &audit, &r.view.nonce)
            .await?;
        meter.settle(&mut j.settlements, step).await?;
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
                let r = read_refill(&tx, &id2, step)?
                    .ok_or_else(|| ApiError::internal(step, "refill vanished"))?;
                tx.commit().storage(step)?;
                Ok(r)
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
    let hold = HoldRequest {
        request_id: request_id(&r.view.device_id, &id),
        account_id: r.view.account_id.clone(),
        device_id: r.view.device_id.clone(),
        license,
        amount: r.view.amount,
        control_sum,
        refills,
    };
    let signed: SignedCombination = match meter.rc.post("/v1/combinations", &hold, step).await {
        Ok(s) => s,
        Err(e) if e.status.is_client_error() => {
            // The RC decided no (deposit, account, amount): final for this transaction ID,
            // nothing is held. The host starts a new refill once that is fixed.
            let (id2, e2) = (id.clone(), e.clone());
            meter
                .db
                .run(step, move |c| {
                    c.execute(
                        "UPDATE refills SET state = 'refused', error_status = ?2, error_code = ?3,
                                error_step = ?4, error_message = ?5, updated_at = ?6
                         WHERE client_txn_id = ?1 AND state = 'audit_accepted'",
                        params![
                            id2,
                            i64::from(e2.status.as_u16()),
                            e2.code,
                            e2.step,
                            e2.message,
                            now_secs()
                        ],
                    )
                    .storage(step)
                    .map(drop)
                })
                .await?;
            return Err(e);
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

    // Steps 270-280: the KMS seals it (only because the RC signed it) and receipts the audit.
    let sealed: RefillMessage = meter.kms.post("/v1/refill-messages", &signed, step).await?;
    let body = c.to_core(step)?.body();
    match hex::decode(&sealed.refill_message) {
        Ok(m) if m.len() == REFILL_MESSAGE_LEN && m.starts_with(&body) => {}
        _ => return Err(ApiError::unavailable(step, "the KMS sealed something else")),
    }
    let receipt = meter.receipt(&audit_hex, step).await?;
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
            let r = read_refill(&tx, &id2, step)?
                .ok_or_else(|| ApiError::internal(step, "refill vanished"))?;
            tx.commit().storage(step)?;
            Ok(r)
        })
        .await?;
    tracing::info!(client_txn_id = %id, combination = %signed.combination.combination_id, "refill message issued");
    failpoint::pause("meter_audit_before_reply").await;
    Ok(Json(r.view))
}

/// `POST /v1/refills/{client_txn_id}/confirm`: the audit after REFILL settles the hold.
async fn confirm(
    State(meter): State<Meter>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> Result<Json<RefillView>, ApiError> {
    let step = STEP_CONFIRM;
    let req: AuditBody = codec::json(&body, step)?;
    let first = load_refill(&meter, &id, step).await?;
    let _guard = meter.lock(&first.view.device_id).await;
    let r = load_refill(&meter, &id, step).await?;
    match r.view.state.as_str() {
        "completed" | "released" => return Ok(Json(r.view)),
        "refused" => {
            return Err(r
                .stored_error()
                .unwrap_or_else(|| ApiError::wrong_state(step, "refused")))
        }
        "message_issued" => {}
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
    let mut j = meter
        .judge(step, &r.view.device_id, r.view.set, &audit, &confirm_nonce)
        .await?;
    // Settle at the RC first (idempotent), then commit: a crash in between leaves the
    // refill issued, and the retry (or any later audit) settles it the same way.
    meter.settle(&mut j.settlements, step).await?;
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
            let r = read_refill(&tx, &id2, step)?
                .ok_or_else(|| ApiError::internal(step, "refill vanished"))?;
            tx.commit().storage(step)?;
            Ok(r)
        })
        .await?;
    if r.view.state == "message_issued" {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::NotApplied,
            step,
            "the audit does not show the refill applied; apply the refill message, then confirm with a fresh audit",
        ));
    }
    Ok(Json(r.view))
}

// -------------------------------------------------------------------------- inspections

fn read_inspection(
    c: &Connection,
    id: &str,
    step: &str,
) -> Result<Option<InspectionView>, ApiError> {
    let row: Option<(String, i64, String, Option<String>)> = c
        .query_row(
            "SELECT device_id, set_index, nonce, receipt FROM inspections WHERE inspection_id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()
        .storage(step)?;
    row.map(|(device_id, set, nonce, receipt)| {
        Ok(InspectionView {
            inspection_id: id.to_owned(),
            device_id,
            set: u8::try_from(set).map_err(|_| ApiError::internal(step, "set out of range"))?,
            nonce,
            receipt,
        })
    })
    .transpose()
}

async fn load_inspection(
    meter: &Meter,
    id: &str,
    step: &'static str,
) -> Result<InspectionView, ApiError> {
    let id2 = id.to_owned();
    meter
        .db
        .run(step, move |c| read_inspection(c, &id2, step))
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::UnknownInspection,
                step,
                format!("no inspection '{id}'"),
            )
        })
}

/// `POST /v1/inspections`: a nonce for a plain audit.
async fn new_inspection(
    State(meter): State<Meter>,
    body: Bytes,
) -> Result<Json<InspectionView>, ApiError> {
    let step = STEP_INSPECTION;
    let req: InspectionRequest = codec::json(&body, step)?;
    let device_id = codec::device_hex(&codec::device_id(&req.device_id, step)?);
    let licenses = meter.licenses(&device_id, step).await?;
    if usize::from(req.set) >= licenses.len() {
        return Err(ApiError::bad_request(
            step,
            format!("device {device_id} has {} register sets", licenses.len()),
        ));
    }
    let view = InspectionView {
        inspection_id: hex::encode(codec::random_array::<16>()),
        device_id,
        set: req.set,
        nonce: hex::encode(codec::random_array::<16>()),
        receipt: None,
    };
    let v2 = view.clone();
    meter
        .db
        .run(step, move |c| {
            c.execute(
                "INSERT INTO inspections (inspection_id, device_id, set_index, nonce, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    v2.inspection_id,
                    v2.device_id,
                    i64::from(v2.set),
                    v2.nonce,
                    now_secs()
                ],
            )
            .storage(step)
            .map(drop)
        })
        .await?;
    Ok(Json(view))
}

/// `GET /v1/inspections/{id}`.
async fn get_inspection(
    State(meter): State<Meter>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<InspectionView>, ApiError> {
    Ok(Json(load_inspection(&meter, &id, STEP_INSPECTION).await?))
}

/// `POST /v1/inspections/{id}/audit`: checks the audit like any other, settles what it
/// shows, and answers the receipt that renews the PSD's inspection.
async fn inspection_audit(
    State(meter): State<Meter>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> Result<Json<InspectionView>, ApiError> {
    let step = STEP_INSPECTION;
    let req: AuditBody = codec::json(&body, step)?;
    let first = load_inspection(&meter, &id, step).await?;
    let _guard = meter.lock(&first.device_id).await;
    let v = load_inspection(&meter, &id, step).await?;
    if v.receipt.is_some() {
        return Ok(Json(v));
    }
    let audit = meter.verify(&req.audit, step).await?;
    let mut j = meter
        .judge(step, &v.device_id, v.set, &audit, &v.nonce)
        .await?;
    meter.settle(&mut j.settlements, step).await?;
    let receipt = meter.receipt(&audit.hex, step).await?;
    let id2 = id.clone();
    let v = meter
        .db
        .run(step, move |c| {
            let tx = c.transaction().storage(step)?;
            record_audit(&tx, &audit, "inspection", &id2, &j.settlements, step)?;
            tx.execute(
                "UPDATE inspections SET audit = ?2, receipt = ?3, accepted_at = ?4 WHERE inspection_id = ?1",
                params![id2, audit.hex, receipt, now_secs()],
            )
            .storage(step)?;
            let v = read_inspection(&tx, &id2, step)?.ok_or_else(|| ApiError::internal(step, "inspection vanished"))?;
            tx.commit().storage(step)?;
            Ok(v)
        })
        .await?;
    Ok(Json(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audited(ar: u64, dr: u64, pieces: u32, refills: u32, comb: &str) -> Audited {
        Audited {
            hex: String::new(),
            device_id: "5053440000000001".into(),
            license: 4711,
            set: 0,
            ar,
            dr,
            control_sum: ar + dr,
            pieces,
            refills,
            transferred: 0,
            pending: 0,
            last_combination_id: comb.into(),
            nonce: "00".repeat(16),
        }
    }

    #[test]
    fn value_moved_to_a_purse_keeps_the_audit_history_consistent() {
        let comb = "00".repeat(8);
        let before = last(100, 900, 1, 1, &comb);
        // 50 pending for a purse: AR + DR + pending is still the control sum.
        let mut a = audited(100, 850, 1, 1, &comb);
        a.control_sum = 1000;
        a.pending = 50;
        assert_eq!(check_history(Some(&before), &a, None), Ok(()));
        // Completed: pending moved on to AR and counted as transferred.
        let mut done = audited(150, 850, 1, 1, &comb);
        done.transferred = 50;
        assert_eq!(check_history(Some(&before), &done, None), Ok(()));
        // Pending that does not add up, or more transferred than AR, is refused.
        a.pending = 60;
        assert!(check_history(Some(&before), &a, None).is_err());
        done.transferred = 151;
        assert!(check_history(Some(&before), &done, None).is_err());
    }

    fn last(ar: u64, dr: u64, pieces: u32, refills: u32, comb: &str) -> Last {
        Last {
            license: 4711,
            ar,
            dr,
            control_sum: ar + dr,
            pieces,
            refills,
            last_combination_id: comb.into(),
        }
    }

    const NONE: &str = "0000000000000000";
    const C1: &str = "0101010101010101";

    fn known(amount: u64, cs: u64, refills: u32) -> Known {
        Known {
            client_txn_id: Some("t".into()),
            device_id: "5053440000000001".into(),
            license: 4711,
            amount,
            control_sum: cs,
            refills,
            rc_state: None,
        }
    }

    #[test]
    fn history_checks() {
        let l = last(100, 400, 3, 1, NONE);
        // First audit: baseline.
        assert!(check_history(None, &audited(0, 0, 0, 0, NONE), None).is_ok());
        // Spending postage: AR up, DR down, same control sum.
        assert!(check_history(Some(&l), &audited(150, 350, 4, 1, NONE), None).is_ok());
        // Rolled back.
        assert!(check_history(Some(&l), &audited(50, 450, 2, 1, NONE), None).is_err());
        assert!(check_history(Some(&l), &audited(100, 400, 2, 1, NONE), None).is_err());
        // Control sum moved without a refill.
        assert!(check_history(Some(&l), &audited(100, 500, 3, 1, NONE), None).is_err());
        // One refill of 1000, known and bound to the last audit.
        let a = audited(100, 1400, 3, 2, C1);
        assert!(check_history(Some(&l), &a, Some(&known(1000, 500, 1))).is_ok());
        // Unknown, wrongly bound, wrong amount.
        assert!(check_history(Some(&l), &a, None).is_err());
        assert!(check_history(Some(&l), &a, Some(&known(1000, 400, 1))).is_err());
        assert!(check_history(Some(&l), &a, Some(&known(999, 500, 1))).is_err());
        // Two refills at once.
        assert!(check_history(
            Some(&l),
            &audited(100, 1400, 3, 3, C1),
            Some(&known(1000, 500, 1))
        )
        .is_err());
        // Inconsistent registers.
        let mut bad = audited(100, 400, 3, 1, NONE);
        bad.control_sum = 501;
        assert!(check_history(Some(&l), &bad, None).is_err());
    }
}
