//! Recharging center (seed 000, steps 260-265): customer accounts with a deposit ledger
//! (available, held, debited), and the refill combinations it decides on. It holds the
//! amount of every combination it makes and signs the combination (ECDSA P-256) so the
//! KMS signs refill messages only for what it authorized; it holds no key a PSD accepts
//! a refill message under, so it cannot make one itself.
//!
//! Money never appears or vanishes here: every change moves an amount between an
//! account's columns inside one transaction, and the table's CHECK keeps
//! `deposited = available + held + debited` true at every commit. Holds are idempotent by
//! request ID, settlements by combination ID.

use axum::http::Method;
use openpsd_service_kit::access::{Peer, RateLimit, Routes, Who};
use openpsd_service_kit::tls::Role;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use openpsd_core::crypto::IndiciumKey;
use openpsd_core::psd::refill::RefillCombination;
use openpsd_core::types::{Amount, LicenseId, RefillCount};
use rusqlite::{params, Connection, OptionalExtension, Transaction};

use openpsd_protocol::{
    Account, Combination, CombinationRecord, Deposit, HoldRequest, Ledger, NewAccount, Outcome,
    Settle, Settled, SignedCombination,
};
use openpsd_protocol::{ErrorCode, HoldState};
use openpsd_service_kit::codec::{self, OsRandom};
use openpsd_service_kit::db::{from_sql_int, now_secs, to_sql_int, Db};
use openpsd_service_kit::error::{ApiError, StorageContext};
use openpsd_service_kit::failpoint;

/// Signing key file name in the RC data directory.
pub const SIGNING_KEY_FILE: &str = "recharge-signing.key";
/// Public key file the RC writes next to it (SEC1 hex), for `--recharge-public-key`.
pub const PUBLIC_KEY_FILE: &str = "recharge-public.key";
/// Database file name.
pub const DB_FILE: &str = "recharge.sqlite";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS accounts (
    account_id TEXT PRIMARY KEY,
    available  INTEGER NOT NULL CHECK (available >= 0),
    held       INTEGER NOT NULL CHECK (held >= 0),
    debited    INTEGER NOT NULL CHECK (debited >= 0),
    deposited  INTEGER NOT NULL CHECK (deposited >= 0),
    created_at INTEGER NOT NULL,
    CHECK (deposited = available + held + debited)
);
CREATE TABLE IF NOT EXISTS deposits (
    reference  TEXT PRIMARY KEY,            -- a payment is booked once
    account_id TEXT NOT NULL REFERENCES accounts(account_id),
    amount     INTEGER NOT NULL CHECK (amount > 0),
    created_at INTEGER NOT NULL
);
-- Value given back from a device (a retired register set's DR, seed 003): booked once per
-- reference; it moves from debited back to available.
CREATE TABLE IF NOT EXISTS refunds (
    reference  TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(account_id),
    amount     INTEGER NOT NULL CHECK (amount > 0),
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS combinations (
    combination_id TEXT PRIMARY KEY,        -- 16 hex, never all zeros
    request_id     TEXT NOT NULL UNIQUE,    -- the same request is the same hold
    account_id     TEXT NOT NULL REFERENCES accounts(account_id),
    device_id      TEXT NOT NULL,
    license        INTEGER NOT NULL,
    amount         INTEGER NOT NULL CHECK (amount > 0),
    control_sum    INTEGER NOT NULL,
    refills        INTEGER NOT NULL,
    signature      TEXT NOT NULL,
    state          TEXT NOT NULL CHECK (state IN ('held', 'applied', 'released')),
    created_at     INTEGER NOT NULL,
    settled_at     INTEGER,
    void_combination_id TEXT,               -- the void signed for it (amount 0, same precondition)
    void_signature      TEXT
);
CREATE INDEX IF NOT EXISTS combinations_by_state ON combinations(state);
";

const STEP_ACCOUNT: &str = "rc_account";
const STEP_DEPOSIT: &str = "rc_deposit";
const STEP_REFUND: &str = "rc_refund";
const STEP_COMBINATION: &str = "rc_combination";
const STEP_SETTLE: &str = "rc_settle";
const STEP_LEDGER: &str = "rc_ledger";
const STEP_VOID: &str = "rc_void";

/// Columns added after the first stored format (`add_missing_columns`).
const VOID_COLUMNS: &[(&str, &str)] =
    &[("void_combination_id", "TEXT"), ("void_signature", "TEXT")];

/// Columns `accounts` got with the virtual meter: which service opened the account.
const ACCOUNT_COLUMNS: &[(&str, &str)] = &[("opened_by", "TEXT NOT NULL DEFAULT 'meter'")];

/// The side of the back office a caller holds and settles for: the data center (virtual
/// meters, seed 001) or the meter server (PSDs). Each holds, settles and voids only on
/// accounts it opened, so neither can spend the other's customers' deposits; an operator
/// reads every account.
fn side(peer: &Peer) -> &'static str {
    if peer.role == Some(Role::Datacenter) {
        "datacenter"
    } else {
        "meter"
    }
}

/// Whether `peer` may act on an account `opened_by` that side.
fn owns(peer: &Peer, opened_by: &str) -> bool {
    peer.role == Some(Role::Operator) || side(peer) == opened_by
}

fn opened_by(c: &Connection, id: &str, step: &str) -> Result<Option<String>, ApiError> {
    c.query_row(
        "SELECT opened_by FROM accounts WHERE account_id = ?1",
        [id],
        |r| r.get(0),
    )
    .optional()
    .storage(step)
}

/// The account `id` if `peer` may act on it; `404` otherwise, as for an unknown one (IDs
/// cannot be probed).
fn account_for(c: &Connection, peer: &Peer, id: &str, step: &str) -> Result<Account, ApiError> {
    match opened_by(c, id, step)? {
        Some(o) if owns(peer, &o) => {}
        _ => return Err(unknown_account(step, id)),
    }
    read_account(c, id, step)?.ok_or_else(|| unknown_account(step, id))
}

/// The recharging center's shared state.
#[derive(Clone)]
pub struct Recharge {
    db: Db,
    key: Arc<IndiciumKey>,
}

impl Recharge {
    /// Opens the data directory, making the signing key on first start and (re)writing
    /// its public key file.
    pub fn open(data: &Path) -> anyhow::Result<Self> {
        openpsd_service_kit::keys::private_dir(data)?;
        openpsd_service_kit::keys::ensure_key_kept(
            &data.join(SIGNING_KEY_FILE),
            &data.join(DB_FILE),
        )?;
        let scalar = openpsd_service_kit::keys::load_or_create(
            &data.join(SIGNING_KEY_FILE),
            || IndiciumKey::generate(&mut OsRandom).secret_bytes(),
            |b| IndiciumKey::from_bytes(b).is_some(),
        )?;
        let key = IndiciumKey::from_bytes(scalar.as_ref())
            .ok_or_else(|| anyhow::anyhow!("{SIGNING_KEY_FILE}: not a P-256 scalar"))?;
        openpsd_service_kit::keys::write_public(
            &data.join(PUBLIC_KEY_FILE),
            &format!("{}\n", hex::encode(key.public_key())),
        )?;
        let db = Db::open(&data.join(DB_FILE), SCHEMA)?;
        // Databases from before voids: the two columns added, and their index.
        let conn = openpsd_service_kit::db::open_connection(&data.join(DB_FILE))?;
        openpsd_service_kit::db::add_missing_columns(&conn, "combinations", VOID_COLUMNS)?;
        openpsd_service_kit::db::add_missing_columns(&conn, "accounts", ACCOUNT_COLUMNS)?;
        conn.execute_batch(
            "CREATE UNIQUE INDEX IF NOT EXISTS combinations_void ON combinations(void_combination_id)",
        )?;
        Ok(Self {
            db,
            key: Arc::new(key),
        })
    }

    /// The public key the KMS verifies combinations with.
    pub fn public_key(&self) -> [u8; 65] {
        self.key.public_key()
    }

    /// Where the public key file of the RC in `data` is.
    pub fn public_key_path(data: &Path) -> PathBuf {
        data.join(PUBLIC_KEY_FILE)
    }

    /// The HTTP API and who may call each route: accounts are opened by the meter (a
    /// customer signing up) or an operator; deposits come only from an operator (the
    /// payments desk); combinations are held and settled, and refunds of retired sets
    /// booked, only by the meter server (`docs/security.md`).
    pub fn routes() -> Routes<Recharge> {
        const METER: &[Who] = &[Who::Role(Role::Meter)];
        // Holds and settlements: the meter server for PSDs, the data center for virtual
        // meters, each on the accounts it opened only (`side`).
        const SPENDERS: &[Who] = &[Who::Role(Role::Meter), Who::Role(Role::Datacenter)];
        const OPERATOR: &[Who] = &[Who::Role(Role::Operator)];
        const BOTH: &[Who] = &[
            Who::Role(Role::Meter),
            Who::Role(Role::Operator),
            Who::Role(Role::Datacenter),
        ];
        Routes::new()
            .route(Method::POST, "/v1/accounts", post(create_account), BOTH)
            .route(
                Method::GET,
                "/v1/accounts/{account_id}",
                get(get_account),
                BOTH,
            )
            .route(
                Method::POST,
                "/v1/accounts/{account_id}/deposits",
                post(deposit),
                OPERATOR,
            )
            .route(
                Method::POST,
                "/v1/accounts/{account_id}/refunds",
                post(refund),
                METER,
            )
            .route(Method::POST, "/v1/combinations", post(hold), SPENDERS)
            .route(
                Method::GET,
                "/v1/combinations/{combination_id}",
                get(get_combination),
                BOTH,
            )
            .route(
                Method::POST,
                "/v1/combinations/{combination_id}/settle",
                post(settle),
                SPENDERS,
            )
            .route(
                Method::POST,
                "/v1/combinations/{combination_id}/void",
                post(void),
                SPENDERS,
            )
            .route(Method::GET, "/v1/ledger", get(ledger), OPERATOR)
            .route(
                Method::GET,
                "/health",
                get(|| async { "ok" }),
                &[Who::AnyRole],
            )
    }

    /// The router, `limit` per caller.
    pub fn router(self, limit: &RateLimit) -> Router {
        Self::routes().into_router(limit).with_state(self)
    }
}

fn unknown_account(step: &str, id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::UnknownAccount,
        step,
        format!("no account '{id}'"),
    )
}

fn read_account(c: &Connection, id: &str, step: &str) -> Result<Option<Account>, ApiError> {
    let row: Option<(i64, i64, i64, i64)> = c
        .query_row(
            "SELECT available, held, debited, deposited FROM accounts WHERE account_id = ?1",
            [id],
            |r| r.try_into(),
        )
        .optional()
        .storage(step)?;
    row.map(|(a, h, d, dep)| {
        Ok(Account {
            account_id: id.to_owned(),
            available: from_sql_int(a, step)?,
            held: from_sql_int(h, step)?,
            debited: from_sql_int(d, step)?,
            deposited: from_sql_int(dep, step)?,
        })
    })
    .transpose()
}

/// `POST /v1/accounts`: `201` new, `200` exists already.
async fn create_account(
    State(rc): State<Recharge>,
    Extension(peer): Extension<Peer>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let step = STEP_ACCOUNT;
    let req: NewAccount = codec::json(&body, step)?;
    codec::ident("account_id", &req.account_id, step)?;
    let (created, account) = rc
        .db
        .run(step, move |c| {
            let tx = c.transaction().storage(step)?;
            let n = tx
                .execute(
                    "INSERT OR IGNORE INTO accounts
                     (account_id, available, held, debited, deposited, created_at, opened_by)
                     VALUES (?1, 0, 0, 0, 0, ?2, ?3)",
                    params![req.account_id, now_secs(), side(&peer)],
                )
                .storage(step)?;
            if !opened_by(&tx, &req.account_id, step)?.is_some_and(|o| owns(&peer, &o)) {
                return Err(ApiError::wrong_state(
                    step,
                    format!("account '{}' belongs to another service", req.account_id),
                ));
            }
            let account = read_account(&tx, &req.account_id, step)?
                .ok_or_else(|| ApiError::internal(step, "account vanished"))?;
            tx.commit().storage(step)?;
            Ok((n == 1, account))
        })
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(account)))
}

/// `GET /v1/accounts/{id}`.
async fn get_account(
    State(rc): State<Recharge>,
    Extension(peer): Extension<Peer>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<Account>, ApiError> {
    let step = STEP_ACCOUNT;
    let account = rc
        .db
        .run(step, move |c| account_for(c, &peer, &id, step))
        .await?;
    Ok(Json(account))
}

/// `POST /v1/accounts/{id}/deposits`: credits `available`, once per reference.
async fn deposit(
    State(rc): State<Recharge>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let step = STEP_DEPOSIT;
    let req: Deposit = codec::json(&body, step)?;
    codec::ident("reference", &req.reference, step)?;
    if req.amount == 0 || i64::try_from(req.amount).is_err() {
        return Err(ApiError::amount_invalid(
            step,
            "a deposit is 1 to 2^63-1 minor units",
        ));
    }
    let (created, account) = rc
        .db
        .run(step, move |c| {
            let tx = c.transaction().storage(step)?;
            let existing: Option<(String, i64)> = tx
                .query_row(
                    "SELECT account_id, amount FROM deposits WHERE reference = ?1",
                    [&req.reference],
                    |r| r.try_into(),
                )
                .optional()
                .storage(step)?;
            if let Some((acc, amount)) = existing {
                if acc != id || from_sql_int(amount, step)? != req.amount {
                    return Err(ApiError::wrong_state(
                        step,
                        format!("deposit reference '{}' was booked with other data", req.reference),
                    ));
                }
                let account = read_account(&tx, &id, step)?
                    .ok_or_else(|| unknown_account(step, &id))?;
                return Ok((false, account));
            }
            let account = read_account(&tx, &id, step)?.ok_or_else(|| unknown_account(step, &id))?;
            let (available, deposited) = match (
                account.available.checked_add(req.amount),
                account.deposited.checked_add(req.amount),
            ) {
                (Some(a), Some(d)) if i64::try_from(d).is_ok() => (a, d),
                _ => return Err(ApiError::amount_invalid(step, "the account would overflow")),
            };
            tx.execute(
                "INSERT INTO deposits (reference, account_id, amount, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![req.reference, id, to_sql_int(req.amount, step)?, now_secs()],
            )
            .storage(step)?;
            tx.execute(
                "UPDATE accounts SET available = ?2, deposited = ?3 WHERE account_id = ?1",
                params![id, to_sql_int(available, step)?, to_sql_int(deposited, step)?],
            )
            .storage(step)?;
            let account = read_account(&tx, &id, step)?
                .ok_or_else(|| ApiError::internal(step, "account vanished"))?;
            tx.commit().storage(step)?;
            Ok((true, account))
        })
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(account)))
}

/// `POST /v1/accounts/{id}/refunds` (the meter server's): value a device gave back (a
/// retired register set's DR) returns from `debited` to `available`, booked once per
/// reference (`201`; the same again `200`; other data under the reference `409`). It never
/// refunds more than the account has had debited (`409`): a refund can only undo refills.
async fn refund(
    State(rc): State<Recharge>,
    Extension(peer): Extension<Peer>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let step = STEP_REFUND;
    let req: Deposit = codec::json(&body, step)?;
    codec::ident("reference", &req.reference, step)?;
    if req.amount == 0 || i64::try_from(req.amount).is_err() {
        return Err(ApiError::amount_invalid(
            step,
            "a refund is 1 to 2^63-1 minor units",
        ));
    }
    let (created, account) = rc
        .db
        .run(step, move |c| {
            let tx = c.transaction().storage(step)?;
            let existing: Option<(String, i64)> = tx
                .query_row(
                    "SELECT account_id, amount FROM refunds WHERE reference = ?1",
                    [&req.reference],
                    |r| r.try_into(),
                )
                .optional()
                .storage(step)?;
            // Only on an account of the caller's side: the meter server never refunds
            // into a mailer's deposit what the data center's box was credited.
            let account = account_for(&tx, &peer, &id, step)?;
            if let Some((acc, amount)) = existing {
                if acc != id || from_sql_int(amount, step)? != req.amount {
                    return Err(ApiError::wrong_state(
                        step,
                        format!("refund reference '{}' was booked with other data", req.reference),
                    ));
                }
                return Ok((false, account));
            }
            let (Some(debited), Some(available)) = (
                account.debited.checked_sub(req.amount),
                account.available.checked_add(req.amount),
            ) else {
                return Err(ApiError::wrong_state(
                    step,
                    format!(
                        "a refund of {} is more than account {id} has had debited ({})",
                        req.amount, account.debited
                    ),
                ));
            };
            tx.execute(
                "INSERT INTO refunds (reference, account_id, amount, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![req.reference, id, to_sql_int(req.amount, step)?, now_secs()],
            )
            .storage(step)?;
            tx.execute(
                "UPDATE accounts SET available = ?2, debited = ?3 WHERE account_id = ?1",
                params![id, to_sql_int(available, step)?, to_sql_int(debited, step)?],
            )
            .storage(step)?;
            let account = read_account(&tx, &id, step)?
                .ok_or_else(|| ApiError::internal(step, "account vanished"))?;
            tx.commit().storage(step)?;
            Ok((true, account))
        })
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(account)))
}

/// A stored combination row.
struct Row {
    combination: Combination,
    signature: String,
    state: HoldState,
    request_id: String,
    account_id: String,
    void: Option<(String, String)>,
}

fn read_combination(
    c: &Connection,
    where_clause: &str,
    key: &str,
    step: &str,
) -> Result<Option<Row>, ApiError> {
    let sql = format!(
        "SELECT combination_id, request_id, account_id, device_id, license, amount, control_sum,
                refills, signature, state, void_combination_id, void_signature
         FROM combinations WHERE {where_clause} = ?1"
    );
    type Raw = (
        String,
        String,
        String,
        String,
        i64,
        i64,
        i64,
        i64,
        String,
        String,
        Option<String>,
        Option<String>,
    );
    let raw: Option<Raw> = c
        .query_row(&sql, [key], |r| r.try_into())
        .optional()
        .storage(step)?;
    let Some((
        id,
        request_id,
        account_id,
        device_id,
        license,
        amount,
        cs,
        refills,
        sig,
        state,
        void_id,
        void_sig,
    )) = raw
    else {
        return Ok(None);
    };
    let bad = || ApiError::internal(step, "combination row out of range");
    Ok(Some(Row {
        combination: Combination {
            device_id,
            license: u32::try_from(license).map_err(|_| bad())?,
            amount: from_sql_int(amount, step)?,
            control_sum: from_sql_int(cs, step)?,
            refills: u32::try_from(refills).map_err(|_| bad())?,
            combination_id: id,
        },
        signature: sig,
        state: state.parse().map_err(|_| bad())?,
        request_id,
        account_id,
        void: void_id.zip(void_sig),
    }))
}

/// `POST /v1/combinations` (steps 260-265): hold the amount, make and sign the
/// combination bound to the audited state. The same request ID returns the same hold
/// while it is held; once settled, `409 wrong_state`.
async fn hold(
    State(rc): State<Recharge>,
    Extension(peer): Extension<Peer>,
    body: Bytes,
) -> Result<Json<SignedCombination>, ApiError> {
    let step = STEP_COMBINATION;
    let req: HoldRequest = codec::json(&body, step)?;
    codec::ident("request_id", &req.request_id, step)?;
    codec::ident("account_id", &req.account_id, step)?;
    let device = codec::device_id(&req.device_id, step)?;
    if req.amount == 0 || i64::try_from(req.amount).is_err() {
        return Err(ApiError::amount_invalid(
            step,
            "amount must be 1 to 2^63-1 minor units",
        ));
    }
    // A combination the PSD could never apply (its control sum would overflow) is refused
    // rather than held.
    if i64::try_from(req.control_sum).is_err()
        || req
            .control_sum
            .checked_add(req.amount)
            .and_then(|s| i64::try_from(s).ok())
            .is_none()
    {
        return Err(ApiError::amount_invalid(
            step,
            "control sum + amount out of range",
        ));
    }
    let key = Arc::clone(&rc.key);
    let signed = rc
        .db
        .run(step, move |c| {
            let tx = c.transaction().storage(step)?;
            if let Some(row) = read_combination(&tx, "request_id", &req.request_id, step)? {
                account_for(&tx, &peer, &row.account_id, step)?;
                let same = row.account_id == req.account_id
                    && row.combination.device_id == codec::device_hex(&device)
                    && row.combination.license == req.license
                    && row.combination.amount == req.amount
                    && row.combination.control_sum == req.control_sum
                    && row.combination.refills == req.refills;
                if !same {
                    return Err(ApiError::wrong_state(
                        step,
                        format!(
                            "request ID '{}' was used for another combination",
                            req.request_id
                        ),
                    ));
                }
                // A settled hold is never handed out again: a meter that released it (a
                // cancel whose answer it lost) and then asked again must not get it signed
                // into a refill message while no money is held for it any more.
                if row.state != "held" {
                    return Err(ApiError::wrong_state(
                        step,
                        format!(
                            "the hold of request ID '{}' (combination {}) is {} already",
                            req.request_id, row.combination.combination_id, row.state
                        ),
                    ));
                }
                return Ok(SignedCombination {
                    combination: row.combination,
                    signature: row.signature,
                });
            }
            let account = account_for(&tx, &peer, &req.account_id, step)?;
            let available = account.available.checked_sub(req.amount).ok_or_else(|| {
                ApiError::new(
                    StatusCode::PAYMENT_REQUIRED,
                    ErrorCode::InsufficientDeposit,
                    step,
                    format!(
                        "account '{}' has {} available, the refill needs {}",
                        req.account_id, account.available, req.amount
                    ),
                )
            })?;
            let held = account
                .held
                .checked_add(req.amount)
                .ok_or_else(|| ApiError::internal(step, "held would overflow"))?;
            let combination = RefillCombination {
                device,
                license: LicenseId(req.license),
                amount: Amount(req.amount),
                control_sum: Amount(req.control_sum),
                refills: RefillCount(req.refills),
                combination_id: fresh_combination_id(&tx, step)?,
            };
            let signature = hex::encode(key.sign(&combination.body()));
            let json = Combination::from_core(&combination);
            tx.execute(
                "UPDATE accounts SET available = ?2, held = ?3 WHERE account_id = ?1",
                params![
                    req.account_id,
                    to_sql_int(available, step)?,
                    to_sql_int(held, step)?
                ],
            )
            .storage(step)?;
            tx.execute(
                "INSERT INTO combinations
                 (combination_id, request_id, account_id, device_id, license, amount, control_sum,
                  refills, signature, state, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'held', ?10)",
                params![
                    json.combination_id,
                    req.request_id,
                    req.account_id,
                    json.device_id,
                    i64::from(req.license),
                    to_sql_int(req.amount, step)?,
                    to_sql_int(req.control_sum, step)?,
                    i64::from(req.refills),
                    signature,
                    now_secs()
                ],
            )
            .storage(step)?;
            tx.commit().storage(step)?;
            tracing::info!(combination = %json.combination_id, amount = req.amount, "hold");
            Ok(SignedCombination {
                combination: json,
                signature,
            })
        })
        .await?;
    failpoint::pause("rc_hold_before_reply").await;
    Ok(Json(signed))
}

/// A random combination ID, unused so far and never all zeros (zeros mean "no refill
/// yet" in an audit).
fn fresh_combination_id(tx: &Transaction<'_>, step: &str) -> Result<[u8; 8], ApiError> {
    for _ in 0..16 {
        let id: [u8; 8] = codec::random_array();
        if id == [0; 8] {
            continue;
        }
        let used: bool = tx
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM combinations
                                WHERE combination_id = ?1 OR void_combination_id = ?1)",
                [hex::encode(id)],
                |r| r.get(0),
            )
            .storage(step)?;
        if !used {
            return Ok(id);
        }
    }
    Err(ApiError::internal(step, "no fresh combination ID"))
}

fn unknown_combination(step: &str, id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::UnknownCombination,
        step,
        format!("no combination {id}"),
    )
}

/// Whether `peer` may act on a combination held on `account` (else it answers as unknown).
fn combination_owned(
    c: &Connection,
    peer: &Peer,
    account: &str,
    id: &str,
    step: &str,
) -> Result<(), ApiError> {
    match opened_by(c, account, step)? {
        Some(o) if owns(peer, &o) => Ok(()),
        _ => Err(unknown_combination(step, id)),
    }
}

/// `GET /v1/combinations/{id}`: what the RC made, for the meter's audit check.
async fn get_combination(
    State(rc): State<Recharge>,
    Extension(peer): Extension<Peer>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<CombinationRecord>, ApiError> {
    let step = STEP_COMBINATION;
    let id = hex::encode(codec::hex_array::<8>("combination_id", &id, step)?);
    let row = rc
        .db
        .run(step, move |c| {
            let row = read_combination(c, "combination_id", &id, step)?
                .ok_or_else(|| unknown_combination(step, &id))?;
            combination_owned(c, &peer, &row.account_id, &id, step)?;
            Ok(row)
        })
        .await?;
    Ok(Json(CombinationRecord {
        combination: row.combination,
        signature: row.signature,
        state: row.state,
        request_id: row.request_id,
        account_id: row.account_id,
        void_combination_id: row.void.map(|(id, _)| id),
    }))
}

/// `POST /v1/combinations/{id}/void`: signs the void of a held combination — amount zero,
/// the same device, license, control sum and refill count, its own combination ID — so the
/// KMS can sign it and the PSD can apply it instead of the original (`docs/refill.md`
/// § Cancel). The same void every time; none for a settled hold (nothing left to cancel).
/// Nothing moves in the ledger: the hold stays until an audit shows which of the two applied.
async fn void(
    State(rc): State<Recharge>,
    Extension(peer): Extension<Peer>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<SignedCombination>, ApiError> {
    let step = STEP_VOID;
    let id = hex::encode(codec::hex_array::<8>("combination_id", &id, step)?);
    let key = Arc::clone(&rc.key);
    let signed = rc
        .db
        .run(step, move |c| {
            let tx = c.transaction().storage(step)?;
            let row = read_combination(&tx, "combination_id", &id, step)?
                .ok_or_else(|| unknown_combination(step, &id))?;
            combination_owned(&tx, &peer, &row.account_id, &id, step)?;
            let original = row
                .combination
                .to_core(step)
                .map_err(|e| ApiError::internal(step, e.to_string()))?;
            if let Some((void_id, signature)) = row.void {
                let void_id: [u8; 8] = codec::hex_array("void_combination_id", &void_id, step)
                    .map_err(|_| ApiError::internal(step, "stored void ID"))?;
                return Ok(SignedCombination {
                    combination: Combination::from_core(&RefillCombination {
                        amount: Amount::ZERO,
                        combination_id: void_id,
                        ..original
                    }),
                    signature,
                });
            }
            if row.state != HoldState::Held {
                return Err(ApiError::wrong_state(
                    step,
                    format!("combination {id} is {} already; nothing to void", row.state),
                ));
            }
            let void = RefillCombination {
                amount: Amount::ZERO,
                combination_id: fresh_combination_id(&tx, step)?,
                ..original
            };
            let signature = hex::encode(key.sign(&void.body()));
            let json = Combination::from_core(&void);
            tx.execute(
                "UPDATE combinations SET void_combination_id = ?2, void_signature = ?3
                 WHERE combination_id = ?1",
                params![id, json.combination_id, signature],
            )
            .storage(step)?;
            tx.commit().storage(step)?;
            tracing::info!(combination = %id, void = %json.combination_id, "void signed");
            Ok(SignedCombination {
                combination: json,
                signature,
            })
        })
        .await?;
    failpoint::pause("rc_void_before_reply").await;
    Ok(Json(signed))
}

/// `POST /v1/combinations/{id}/settle`: debit (applied) or release the hold, once.
async fn settle(
    State(rc): State<Recharge>,
    Extension(peer): Extension<Peer>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> Result<Json<Settled>, ApiError> {
    let step = STEP_SETTLE;
    let id = hex::encode(codec::hex_array::<8>("combination_id", &id, step)?);
    let req: Settle = codec::json(&body, step)?;
    let outcome = req.outcome;
    let settled = rc
        .db
        .run(step, move |c| {
            let tx = c.transaction().storage(step)?;
            let row = read_combination(&tx, "combination_id", &id, step)?
                .ok_or_else(|| unknown_combination(step, &id))?;
            combination_owned(&tx, &peer, &row.account_id, &id, step)?;
            if row.state == outcome.as_str() {
                return Ok(Settled {
                    combination_id: id,
                    state: row.state,
                });
            }
            if row.state != "held" {
                return Err(ApiError::wrong_state(
                    step,
                    format!("combination {id} is {} already", row.state),
                ));
            }
            let account = read_account(&tx, &row.account_id, step)?
                .ok_or_else(|| ApiError::internal(step, "the hold's account vanished"))?;
            let amount = row.combination.amount;
            let held = account
                .held
                .checked_sub(amount)
                .ok_or_else(|| ApiError::internal(step, "held below a hold's amount"))?;
            let overflow = || ApiError::internal(step, "account overflow");
            let (column, value) = match outcome {
                Outcome::Applied => (
                    "debited",
                    account.debited.checked_add(amount).ok_or_else(overflow)?,
                ),
                Outcome::Released => (
                    "available",
                    account.available.checked_add(amount).ok_or_else(overflow)?,
                ),
            };
            tx.execute(
                &format!("UPDATE accounts SET held = ?2, {column} = ?3 WHERE account_id = ?1"),
                params![
                    row.account_id,
                    to_sql_int(held, step)?,
                    to_sql_int(value, step)?
                ],
            )
            .storage(step)?;
            tx.execute(
                "UPDATE combinations SET state = ?2, settled_at = ?3 WHERE combination_id = ?1",
                params![id, outcome.as_str(), now_secs()],
            )
            .storage(step)?;
            tx.commit().storage(step)?;
            tracing::info!(combination = %id, outcome = outcome.as_str(), amount, "settled");
            Ok(Settled {
                combination_id: id,
                state: outcome.into(),
            })
        })
        .await?;
    failpoint::pause("rc_settle_before_reply").await;
    Ok(Json(settled))
}

/// `GET /v1/ledger`.
async fn ledger(State(rc): State<Recharge>) -> Result<Json<Ledger>, ApiError> {
    let step = STEP_LEDGER;
    let ledger = rc
        .db
        .run(step, move |c| {
            // One read transaction, so the two queries see the same commit.
            let tx = c.transaction().storage(step)?;
            let (n, a, h, d, dep): (i64, i64, i64, i64, i64) = tx
                .query_row(
                    "SELECT COUNT(*), COALESCE(SUM(available), 0), COALESCE(SUM(held), 0),
                            COALESCE(SUM(debited), 0), COALESCE(SUM(deposited), 0)
                     FROM accounts",
                    [],
                    |r| r.try_into(),
                )
                .storage(step)?;
            let (held_n, applied_n, applied_amount, released_n): (i64, i64, i64, i64) = tx
                .query_row(
                    "SELECT COALESCE(SUM(state = 'held'), 0), COALESCE(SUM(state = 'applied'), 0),
                            COALESCE(SUM(CASE WHEN state = 'applied' THEN amount ELSE 0 END), 0),
                            COALESCE(SUM(state = 'released'), 0)
                     FROM combinations",
                    [],
                    |r| r.try_into(),
                )
                .storage(step)?;
            Ok(Ledger {
                accounts: from_sql_int(n, step)?,
                available: from_sql_int(a, step)?,
                held: from_sql_int(h, step)?,
                debited: from_sql_int(d, step)?,
                deposited: from_sql_int(dep, step)?,
                combinations_held: from_sql_int(held_n, step)?,
                combinations_applied: from_sql_int(applied_n, step)?,
                applied_amount: from_sql_int(applied_amount, step)?,
                combinations_released: from_sql_int(released_n, step)?,
            })
        })
        .await?;
    Ok(Json(ledger))
}
