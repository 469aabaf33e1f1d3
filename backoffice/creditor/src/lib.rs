//! The creditor (seed 004, EP 0 762 692 Figs. 7-9; `docs/creditor.md`): grants lines of
//! credit as X.509 certificates on PSDs' payment keys, and settles the payment
//! certificates PSDs sign for merchants.
//!
//! Limits (`POST /v1/limits`, operator): the most a customer account may be made to owe.
//! A line is granted only if the amounts of every line the account was ever granted (any
//! device; current, superseded or expired: each can still be drawn or presented, and
//! nothing is repaid) plus the new one stay within it, checked in the transaction that
//! records the line.
//!
//! Lines (Fig. 8 steps 802-812; `POST /v1/lines`, the meter only, relaying its customer):
//! the request carries the payment key's attestation (GENERATE KEY, purpose 4) and the
//! account and username the meter authenticated. The creditor reads the device at the KMS,
//! checks the attestation's two signatures exactly as the CA does for key certificates,
//! checks the account's limit and issues the line of credit certificate: subject from the
//! account (never from the request), the line's number rising per account. Idempotent by
//! (account, request ID): the same request again answers the same certificate, another
//! request under the same ID is `409`.
//!
//! Settlement (Fig. 9, presentment; `POST /v1/settlements`, merchants only): the merchant
//! is the one its client certificate names and must be the payment's. The line must be one
//! this creditor issued, the signature its payment key's, the payment's time within the
//! line's validity; then the line's settlement book ([`SettlementBook`], stored per line)
//! accepts each counter once and in order, and the remaining each payment states must be
//! the line less every amount settled. The answer is a settlement record the creditor
//! signs; the same presentment again answers the same record.
//!
//! Keys: the creditor's P-256 key is `creditor-signing.key` in its data directory (hex,
//! 0600, made at first start, as the CA's), refused when missing or replaced once the
//! database holds the creditor certificate made with it. The vendor vouches for its public
//! key (`creditor-public.key`) with a trust anchor of kind `creditor`.

pub mod x509;

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, Method, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use der::{Decode as _, Encode as _};
use openpsd_core::crypto::{IndiciumKey, PUBLIC_KEY_LEN};
use openpsd_core::psd::certmeter::attestation::{KeyAttestation, Purpose, ATTESTATION_LEN};
use openpsd_core::psd::certmeter::credit::{
    CreditLine, PaymentCertificate, PaymentInfo, SettleRefusal, SettlementBook,
};
use openpsd_core::types::Amount;
use openpsd_protocol::creditor::{
    code, LimitRequest, LimitView, LineAnswer, LineRequest, RevokeLineRequest, RevokedLine,
    Settlement, SettlementRequest,
};
use openpsd_protocol::ErrorCode;
use openpsd_service_kit::access::{Peer, RateLimit, Routes, Who};
use openpsd_service_kit::codec::{self, OsRandom};
use openpsd_service_kit::db::{from_sql_int, now_secs, to_sql_int, Db};
use openpsd_service_kit::error::{ApiError, StorageContext};
use openpsd_service_kit::failpoint;
use openpsd_service_kit::pki::Pki;
use openpsd_service_kit::tls::{client_config, Role};
use openpsd_service_kit::upstream::Upstream;
use rusqlite::{params, OptionalExtension};
use sha2::Digest as _;
use x509_cert::Certificate;

/// The creditor's signing key file (hex P-256 scalar, 0600) in its data directory.
pub const SIGNING_KEY_FILE: &str = "creditor-signing.key";
/// Its public half (SEC1 uncompressed, hex): what a vendor-signed trust anchor (kind 02,
/// creditor) carries to the PSDs.
pub const PUBLIC_KEY_FILE: &str = "creditor-public.key";
/// The creditor's certificate, PEM (also `GET /v1/creditor/certificate.pem`).
pub const CERT_FILE: &str = "creditor.pem";
/// Database file name.
pub const DB_FILE: &str = "creditor.sqlite";
/// The creditor certificate's lifetime in seconds (30 years: it outlives every line).
const CERT_SECONDS: u64 = 30 * 366 * 86_400;

const STEP_LIMIT: &str = "creditor_limit";
const STEP_LINE: &str = "creditor_line";
const STEP_SETTLE: &str = "creditor_settle";
const STEP_REVOKE: &str = "creditor_revoke";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS creditor (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    public_key  TEXT NOT NULL,
    certificate BLOB NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS limits (
    account_id  TEXT PRIMARY KEY,
    amount      INTEGER NOT NULL CHECK (amount >= 0),
    currency    TEXT NOT NULL,
    granted_at  INTEGER NOT NULL
);
-- One row per line issued: its settlement book is (settled, drawn).
CREATE TABLE IF NOT EXISTS lines (
    line_hash      TEXT PRIMARY KEY,          -- SHA-256 of the certificate, hex
    account_id     TEXT NOT NULL,
    number         INTEGER NOT NULL,
    request_id     TEXT NOT NULL,
    request_digest TEXT NOT NULL,             -- SHA-256 of attestation ‖ amount
    device_id      TEXT NOT NULL,
    public_key     TEXT NOT NULL,             -- the payment key, SEC1 hex
    amount         INTEGER NOT NULL CHECK (amount > 0),
    currency       TEXT NOT NULL,
    not_before     INTEGER NOT NULL,
    not_after      INTEGER NOT NULL,
    certificate    BLOB NOT NULL,
    issued_at      INTEGER NOT NULL,
    superseded     INTEGER NOT NULL DEFAULT 0, -- 1: a newer line for the same device
    settled        INTEGER NOT NULL DEFAULT 0, -- the last counter settled
    drawn          INTEGER NOT NULL DEFAULT 0 CHECK (drawn >= 0 AND drawn <= amount),
    revoked_at     INTEGER,                   -- the operator's revocation (unix seconds)
    UNIQUE (account_id, number),
    UNIQUE (account_id, request_id)
);
CREATE TABLE IF NOT EXISTS settlements (
    line_hash     TEXT NOT NULL REFERENCES lines (line_hash),
    counter       INTEGER NOT NULL,
    payment_hash  TEXT NOT NULL UNIQUE,
    merchant      TEXT NOT NULL,
    amount        INTEGER NOT NULL,
    remaining     INTEGER NOT NULL,
    record        TEXT NOT NULL,              -- the signed Settlement, JSON
    settled_at    INTEGER NOT NULL,
    PRIMARY KEY (line_hash, counter)
);
";

/// `lines` columns added after the first stored format (`add_missing_columns`).
const LINE_COLUMNS: &[(&str, &str)] = &[("revoked_at", "INTEGER")];

/// How the creditor is set up.
#[derive(Clone, Debug)]
pub struct Config {
    /// Data directory: `creditor.sqlite`, `creditor-signing.key`, `creditor.pem`.
    pub data: PathBuf,
    /// The KMS's base URL (device keys, to check attestations).
    pub kms_url: String,
    /// The back office's PKI (the creditor's client certificate for the KMS).
    pub pki: Pki,
    /// A line's validity in days from its issuance.
    pub validity_days: u32,
}

/// The creditor's shared state.
#[derive(Clone)]
pub struct Creditor {
    db: Db,
    kms: Upstream,
    key: Arc<p256::ecdsa::SigningKey>,
    signer: Arc<IndiciumKey>,
    public: [u8; PUBLIC_KEY_LEN],
    cert: Arc<Certificate>,
    cert_der: Arc<Vec<u8>>,
    cert_pem: Arc<String>,
    config: Arc<Config>,
}

fn err(status: StatusCode, code: &str, step: &str, message: impl Into<String>) -> ApiError {
    ApiError {
        status,
        code: code.to_owned(),
        step: step.to_owned(),
        message: message.into(),
    }
}

fn now() -> u64 {
    u64::try_from(now_secs()).unwrap_or(0)
}

impl Creditor {
    /// Opens the data directory: the database, the signing key (made on first start;
    /// refused when missing or replaced once the creditor certificate was made with it) and
    /// the creditor certificate (made on first start, kept in the database, written to
    /// `creditor.pem`).
    pub fn open(config: &Config) -> anyhow::Result<Self> {
        openpsd_service_kit::keys::private_dir(&config.data)?;
        let db_path = config.data.join(DB_FILE);
        let db = Db::open(&db_path, SCHEMA)?;
        let conn = openpsd_service_kit::db::open_connection(&db_path)?;
        openpsd_service_kit::db::add_missing_columns(&conn, "lines", LINE_COLUMNS)?;
        let recorded: Option<(String, Vec<u8>)> = conn
            .query_row(
                "SELECT public_key, certificate FROM creditor WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let key_path = config.data.join(SIGNING_KEY_FILE);
        let depends = recorded.as_ref().map(|(pk, _)| {
            format!(
                "{} holds the creditor certificate of public key {pk} (every line it issued \
                 chains to it)",
                db_path.display()
            )
        });
        openpsd_service_kit::keys::ensure_key_kept_for(&key_path, depends.as_deref())?;
        let scalar = openpsd_service_kit::keys::load_or_create(
            &key_path,
            || IndiciumKey::generate(&mut OsRandom).secret_bytes(),
            |b| IndiciumKey::from_bytes(b).is_some(),
        )?;
        let key = p256::ecdsa::SigningKey::from_slice(scalar.as_ref())
            .map_err(|_| anyhow::anyhow!("{}: not a P-256 scalar", key_path.display()))?;
        let signer = IndiciumKey::from_bytes(scalar.as_ref())
            .ok_or_else(|| anyhow::anyhow!("{}: not a P-256 scalar", key_path.display()))?;
        let public = signer.public_key();
        let public_hex = hex::encode(public);
        let cert = match recorded {
            Some((pk, _)) if pk != public_hex => anyhow::bail!(
                "{} holds another key than the one {} was made with (public key {pk}, this \
                 file's {public_hex}). Restore the right key file. Refusing to start.",
                key_path.display(),
                db_path.display()
            ),
            Some((_, der)) => Certificate::from_der(&der)?,
            None => {
                let t = now();
                let cert = x509::creditor_certificate(
                    &key,
                    &public,
                    t.saturating_sub(86_400),
                    t + CERT_SECONDS,
                )?;
                conn.execute(
                    "INSERT INTO creditor (id, public_key, certificate, created_at)
                     VALUES (1, ?1, ?2, ?3)",
                    params![public_hex, cert.to_der()?, now_secs()],
                )?;
                tracing::info!("made the creditor's certificate");
                cert
            }
        };
        drop(conn);
        let cert_der = cert.to_der()?;
        let cert_pem = x509::pem("CERTIFICATE", &cert_der)?;
        openpsd_service_kit::keys::write_public(&config.data.join(CERT_FILE), &cert_pem)?;
        openpsd_service_kit::keys::write_public(
            &config.data.join(PUBLIC_KEY_FILE),
            &format!("{public_hex}\n"),
        )?;
        let tls = client_config(&config.pki, Some(Role::Creditor))?;
        tracing::info!(
            "creditor key {} (public key {public_hex})",
            key_path.display()
        );
        Ok(Self {
            db,
            kms: Upstream::new("KMS", &config.kms_url, Role::Kms, tls)?,
            key: Arc::new(key),
            signer: Arc::new(signer),
            public,
            cert: Arc::new(cert),
            cert_der: Arc::new(cert_der),
            cert_pem: Arc::new(cert_pem),
            config: Arc::new(config.clone()),
        })
    }

    /// The creditor's public key (SEC1 uncompressed): what the `Creditor` anchor names.
    pub fn public_key(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.public
    }

    /// The creditor certificate, PEM.
    pub fn certificate_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The routes: limits are the operator's, line requests the meter's (for its
    /// customers), presentments the merchants'; any identity of the back office reads the
    /// creditor certificate.
    pub fn routes() -> Routes<Creditor> {
        const OPERATOR: &[Who] = &[Who::Role(Role::Operator)];
        const METER: &[Who] = &[Who::Role(Role::Meter)];
        const MERCHANT: &[Who] = &[Who::Role(Role::Merchant)];
        const ANY_ROLE: &[Who] = &[Who::AnyRole];
        Routes::new()
            .route(Method::POST, "/v1/limits", post(set_limit), OPERATOR)
            .route(Method::POST, "/v1/lines", post(issue_line), METER)
            .route(
                Method::POST,
                "/v1/lines/revoke",
                post(revoke_line),
                OPERATOR,
            )
            .route(Method::POST, "/v1/settlements", post(settle), MERCHANT)
            .route(
                Method::GET,
                "/v1/creditor/certificate",
                get(certificate_der),
                ANY_ROLE,
            )
            .route(
                Method::GET,
                "/v1/creditor/certificate.pem",
                get(certificate_pem),
                ANY_ROLE,
            )
            .route(Method::GET, "/health", get(|| async { "ok" }), ANY_ROLE)
    }

    /// The router, `limit` per caller.
    pub fn router(self, limit: &RateLimit) -> Router {
        Self::routes().into_router(limit).with_state(self)
    }

    /// The device's public key from the KMS ([`Upstream::device_key`]).
    async fn device_key(&self, id: &str, step: &str) -> Result<[u8; PUBLIC_KEY_LEN], ApiError> {
        self.kms.device_key(id, step).await
    }
}

fn currency_ok(c: &str) -> bool {
    c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase())
}

/// A username as the meter accepts it at sign-up: 3 to 64 of a-z 0-9 . _ @ -.
fn username_ok(name: &str) -> bool {
    (3..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._@-".contains(&b))
}

/// `POST /v1/limits` (operator): sets an account's limit (0: no new line).
async fn set_limit(State(cr): State<Creditor>, body: Bytes) -> Result<Json<LimitView>, ApiError> {
    let step = STEP_LIMIT;
    let req: LimitRequest = codec::json(&body, step)?;
    codec::ident("account_id", &req.account_id, step)?;
    if !currency_ok(&req.currency) {
        return Err(ApiError::bad_request(
            step,
            "currency: three upper-case letters",
        ));
    }
    let amount = i64::try_from(req.limit)
        .map_err(|_| ApiError::amount_invalid(step, "limit above the storable range"))?;
    let at = now_secs();
    let view = LimitView {
        account_id: req.account_id.clone(),
        limit: req.limit,
        currency: req.currency.clone(),
        granted_at: at,
    };
    cr.db
        .run(step, move |c| {
            c.execute(
                "INSERT INTO limits (account_id, amount, currency, granted_at)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(account_id) DO UPDATE SET amount = ?2, currency = ?3,
                     granted_at = ?4",
                params![req.account_id, amount, req.currency, at],
            )
            .storage(step)?;
            Ok(())
        })
        .await?;
    tracing::info!(account = %view.account_id, limit = view.limit, "credit limit set");
    Ok(Json(view))
}

/// What the first read of a line request found.
enum Found {
    /// The same request was answered before: this certificate.
    Replay(LineAnswer),
    /// A new line: its number and currency.
    New { number: u32, currency: String },
}

fn answer_of(cr: &Creditor, cert: &[u8], number: u32, amount: u64, currency: &str) -> LineAnswer {
    LineAnswer {
        certificate: hex::encode(cert),
        number,
        amount,
        currency: currency.to_owned(),
        line_hash: hex::encode(sha2::Sha256::digest(cert)),
        creditor_certificate: hex::encode(cr.cert_der.as_slice()),
    }
}

/// The account's exposure: everything it can still be made to owe, in the limit's
/// currency. For every line ever granted to it (every device; current, superseded or
/// expired): what was settled on it (nothing is repaid: repayment is not built) plus the
/// undrawn remainder of a line that can still be drawn. Every line can: the PSD draws on a
/// superseded line until the host loads the newer one, and a payment dated inside the
/// line's validity is settled whenever it is presented (no presentment deadline), so an
/// expired line's payments may still come. Settled + undrawn is then the line's amount
/// (`drawn ≤ amount` is a `CHECK`): the exposure is the sum of the amounts of every line
/// the account was granted. A line in another currency than the limit's (a limit re-granted
/// in another currency) is refused rather than summed (`409 over_limit`).
fn exposure(
    tx: &rusqlite::Connection,
    account: &str,
    currency: &str,
    step: &str,
) -> Result<u64, ApiError> {
    let mut stmt = tx
        .prepare_cached("SELECT amount, drawn, currency FROM lines WHERE account_id = ?1")
        .storage(step)?;
    let rows = stmt
        .query_map([account], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .storage(step)?;
    let mut total: u64 = 0;
    for row in rows {
        let (amount, drawn, cur) = row.storage(step)?;
        let (amount, drawn) = (from_sql_int(amount, step)?, from_sql_int(drawn, step)?);
        if cur != currency {
            return Err(err(
                StatusCode::CONFLICT,
                code::OVER_LIMIT,
                step,
                format!(
                    "account {account} holds lines in {cur}, its limit is in {currency}: \
                    limits across currencies are not built"
                ),
            ));
        }
        // Settled on it, plus what can still be drawn (every line can, see above).
        let undrawn = amount
            .checked_sub(drawn)
            .ok_or_else(|| ApiError::internal(step, "a line drawn over its amount"))?;
        total = drawn
            .checked_add(undrawn)
            .and_then(|owed| total.checked_add(owed))
            .ok_or_else(|| ApiError::internal(step, "the account's exposure overflows"))?;
    }
    Ok(total)
}

/// Inside the transaction that records the line: the account's limit must cover its
/// exposure ([`exposure`]) plus the new line's `amount` (`409 over_limit` otherwise, also
/// when the limit was lowered below the exposure). Answers the limit's currency.
fn within_limit(
    tx: &rusqlite::Connection,
    account: &str,
    amount: u64,
    step: &str,
) -> Result<String, ApiError> {
    let limit: Option<(i64, String)> = tx
        .query_row(
            "SELECT amount, currency FROM limits WHERE account_id = ?1",
            [account],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .storage(step)?;
    let Some((limit, currency)) = limit else {
        return Err(err(
            StatusCode::CONFLICT,
            code::OVER_LIMIT,
            step,
            format!("account {account} has no credit limit"),
        ));
    };
    let limit = from_sql_int(limit, step)?;
    let owed = exposure(tx, account, &currency, step)?;
    let total = owed
        .checked_add(amount)
        .ok_or_else(|| ApiError::amount_invalid(step, "amount too large"))?;
    if total > limit {
        return Err(err(
            StatusCode::CONFLICT,
            code::OVER_LIMIT,
            step,
            format!(
                "account {account}: a line of {amount} with the {owed} its lines can still \
                make it owe (settled, or drawable) is above its limit of {limit}"
            ),
        ));
    }
    Ok(currency)
}

/// Inside a transaction: the replay of `(account, request_id)` if any (`409` when it asked
/// something else), else the checks of a new line (limit, key of another account) and its
/// number.
#[allow(clippy::too_many_arguments)]
fn check_line(
    tx: &rusqlite::Transaction<'_>,
    cr: &Creditor,
    account: &str,
    request_id: &str,
    digest: &str,
    key_hex: &str,
    amount: u64,
    step: &str,
) -> Result<Found, ApiError> {
    let old: Option<(String, i64, i64, String, Vec<u8>)> = tx
        .query_row(
            "SELECT request_digest, number, amount, currency, certificate FROM lines
             WHERE account_id = ?1 AND request_id = ?2",
            params![account, request_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .optional()
        .storage(step)?;
    if let Some((d, number, amount, currency, cert)) = old {
        if d != digest {
            return Err(err(
                StatusCode::CONFLICT,
                code::LINE_CONFLICT,
                step,
                format!("request {request_id} was a line for another key or amount"),
            ));
        }
        let number = u32::try_from(number).map_err(|_| ApiError::internal(step, "number"))?;
        let amount = from_sql_int(amount, step)?;
        return Ok(Found::Replay(answer_of(
            cr, &cert, number, amount, &currency,
        )));
    }
    let other: Option<String> = tx
        .query_row(
            "SELECT account_id FROM lines WHERE public_key = ?1 AND account_id != ?2 LIMIT 1",
            params![key_hex, account],
            |r| r.get(0),
        )
        .optional()
        .storage(step)?;
    if other.is_some() {
        return Err(err(
            StatusCode::CONFLICT,
            code::LINE_CONFLICT,
            step,
            "this payment key holds a line of another account",
        ));
    }
    let currency = within_limit(tx, account, amount, step)?;
    let last: Option<i64> = tx
        .query_row(
            "SELECT MAX(number) FROM lines WHERE account_id = ?1",
            [account],
            |r| r.get(0),
        )
        .storage(step)?;
    let number = u32::try_from(last.unwrap_or(0))
        .ok()
        .and_then(|n| n.checked_add(1))
        .ok_or_else(|| ApiError::internal(step, "line numbers exhausted"))?;
    Ok(Found::New { number, currency })
}

/// `POST /v1/lines` (meter): a line of credit certificate on an attested payment key.
async fn issue_line(State(cr): State<Creditor>, body: Bytes) -> Result<Json<LineAnswer>, ApiError> {
    let step = STEP_LINE;
    let req: LineRequest = codec::json(&body, step)?;
    let bytes = codec::hex_vec("attestation", &req.attestation, ATTESTATION_LEN, step)?;
    codec::hex_array::<8>("request_id", &req.request_id, step)?;
    let request_id = req.request_id.to_ascii_lowercase();
    codec::ident("account_id", &req.account_id, step)?;
    if !username_ok(&req.username) {
        return Err(ApiError::bad_request(
            step,
            "username: 3 to 64 of a-z 0-9 . _ @ -",
        ));
    }
    if req.amount == 0 || i64::try_from(req.amount).is_err() {
        return Err(ApiError::amount_invalid(
            step,
            "amount: 1 up to the storable range",
        ));
    }
    let invalid = |m: String| {
        err(
            StatusCode::UNPROCESSABLE_ENTITY,
            code::ATTESTATION_INVALID,
            step,
            m,
        )
    };
    let claimed = KeyAttestation::decode_unverified(&bytes)
        .map_err(|_| invalid("the attestation does not decode".to_owned()))?;
    let device_id = codec::device_hex(&claimed.device);
    let device_pk = cr.device_key(&device_id, step).await?;
    let att = KeyAttestation::open(&bytes, &device_pk).map_err(|_| {
        invalid(format!(
            "the attestation's signatures do not verify (the key registered for device \
             {device_id}, and the new key's proof of possession)"
        ))
    })?;
    if att.purpose != Purpose::Payment {
        return Err(invalid(format!(
            "a line is granted on a payment key, not a {} key",
            att.purpose.name()
        )));
    }
    let mut h = sha2::Sha256::new();
    h.update(&bytes);
    h.update(req.amount.to_be_bytes());
    let digest = hex::encode(h.finalize());
    let key_hex = hex::encode(att.public_key);
    let subject = x509::customer_name(&req.username, &device_id, &req.account_id)
        .map_err(|e| ApiError::bad_request(step, format!("subject: {e}")))?;

    // First read: a replay answers at once; otherwise the number and currency to sign.
    let (c2, acc, rid, dig, kh) = (
        cr.clone(),
        req.account_id.clone(),
        request_id.clone(),
        digest.clone(),
        key_hex.clone(),
    );
    let amount = req.amount;
    let found = cr
        .db
        .run(step, move |c| {
            let tx = c.transaction().storage(step)?;
            check_line(&tx, &c2, &acc, &rid, &dig, &kh, amount, step)
        })
        .await?;
    let (number, currency) = match found {
        Found::Replay(a) => return Ok(Json(a)),
        Found::New { number, currency } => (number, currency),
    };
    let issued_at = now();
    let not_after = issued_at + u64::from(cr.config.validity_days.max(1)) * 86_400;
    // Valid from the start of the issuing UTC day: settlement and LOAD CREDIT LINE count
    // the line's days, but the PSD also checks the payment key's certificate slot to the
    // second, and a PSD whose clock is a little behind the creditor's would refuse to pay
    // on a line issued "in its future" (the CA backdates key certificates for the same
    // reason).
    let not_before = issued_at / 86_400 * 86_400;
    let mut serial = codec::random_array::<16>().to_vec();
    serial[0] = serial[0] % 0x7F + 1;
    let mut cur = [0u8; 3];
    cur.copy_from_slice(currency.as_bytes());
    let cert = x509::line_certificate(
        &cr.cert,
        &cr.public,
        &cr.key,
        x509::Line {
            subject,
            serial: &serial,
            not_before,
            not_after,
            public_key: &att.public_key,
            line: CreditLine {
                number,
                amount: Amount(amount),
                currency: cur,
            },
        },
    )
    .and_then(|c| Ok(c.to_der()?))
    .map_err(|e| ApiError::internal(step, format!("certificate: {e}")))?;
    // Signed, nothing stored yet.
    failpoint::pause("creditor_issue_before_commit").await;
    let line_hash = hex::encode(sha2::Sha256::digest(&cert));
    let c2 = cr.clone();
    let acc = req.account_id.clone();
    let answer = cr
        .db
        .run(step, move |c| {
            let tx = c.transaction().storage(step)?;
            // Again inside the writing transaction: a request that raced this one.
            match check_line(&tx, &c2, &acc, &request_id, &digest, &key_hex, amount, step)? {
                Found::Replay(a) => return Ok(a),
                Found::New {
                    number: n,
                    currency: cu,
                } if n == number && cu == currency => {}
                Found::New { .. } => {
                    return Err(err(
                        StatusCode::CONFLICT,
                        code::LINE_CONFLICT,
                        step,
                        "another line was issued to this account meanwhile; ask again",
                    ))
                }
            }
            tx.execute(
                "UPDATE lines SET superseded = 1 WHERE account_id = ?1 AND device_id = ?2",
                params![acc, device_id],
            )
            .storage(step)?;
            tx.execute(
                "INSERT INTO lines (line_hash, account_id, number, request_id, request_digest,
                     device_id, public_key, amount, currency, not_before, not_after,
                     certificate, issued_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                params![
                    line_hash,
                    acc,
                    number,
                    request_id,
                    digest,
                    device_id,
                    key_hex,
                    to_sql_int(amount, step)?,
                    currency,
                    to_sql_int(not_before, step)?,
                    to_sql_int(not_after, step)?,
                    cert,
                    now_secs(),
                ],
            )
            .storage(step)?;
            tx.commit().storage(step)?;
            Ok(answer_of(&c2, &cert, number, amount, &currency))
        })
        .await?;
    // Committed (or found); the meter has not heard.
    failpoint::pause("creditor_issue_after_commit").await;
    tracing::info!(
        account = %req.account_id,
        number = answer.number,
        amount = answer.amount,
        line = %answer.line_hash,
        "line of credit issued"
    );
    Ok(Json(answer))
}

/// A line as settlement reads it.
struct LineRow {
    account_id: String,
    public_key: [u8; PUBLIC_KEY_LEN],
    line: CreditLine,
    not_before: u64,
    not_after: u64,
    settled: u32,
    drawn: u64,
    /// When the operator revoked it: payments dated from then on are refused.
    revoked_at: Option<i64>,
}

/// A `lines` row as read: account, key, number, amount, currency, not_before, not_after,
/// settled, drawn, revoked_at.
type LineColumns = (
    String,
    String,
    i64,
    i64,
    String,
    i64,
    i64,
    i64,
    i64,
    Option<i64>,
);

fn read_line(
    c: &rusqlite::Connection,
    line_hash: &str,
    step: &str,
) -> Result<Option<LineRow>, ApiError> {
    let row: Option<LineColumns> = c
        .query_row(
            "SELECT account_id, public_key, number, amount, currency, not_before, not_after,
                 settled, drawn, revoked_at FROM lines WHERE line_hash = ?1",
            [line_hash],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                    r.get(9)?,
                ))
            },
        )
        .optional()
        .storage(step)?;
    let Some((account_id, pk, number, amount, currency, nb, na, settled, drawn, revoked_at)) = row
    else {
        return Ok(None);
    };
    let bad = || ApiError::internal(step, "a stored line does not read back");
    let mut public_key = [0u8; PUBLIC_KEY_LEN];
    hex::decode_to_slice(&pk, &mut public_key).map_err(|_| bad())?;
    let currency: [u8; 3] = currency.as_bytes().try_into().map_err(|_| bad())?;
    Ok(Some(LineRow {
        account_id,
        public_key,
        line: CreditLine {
            number: u32::try_from(number).map_err(|_| bad())?,
            amount: Amount(from_sql_int(amount, step)?),
            currency,
        },
        not_before: from_sql_int(nb, step)?,
        not_after: from_sql_int(na, step)?,
        settled: u32::try_from(settled).map_err(|_| bad())?,
        drawn: from_sql_int(drawn, step)?,
        revoked_at,
    }))
}

/// A payment dated at or after its line's revocation is refused (`409 line_revoked`); one
/// dated before is settled: the merchant delivered while the line was good.
fn revoked_check(revoked_at: Option<i64>, time: u64, step: &str) -> Result<(), ApiError> {
    match revoked_at {
        Some(at) if time >= u64::try_from(at).unwrap_or(0) => Err(err(
            StatusCode::CONFLICT,
            code::LINE_REVOKED,
            step,
            format!("the line was revoked at {at}, before this payment was made"),
        )),
        _ => Ok(()),
    }
}

/// `POST /v1/lines/revoke` (operator): revokes a line. Payments dated from now on are not
/// settled; earlier ones still are, and the line still counts its whole amount against the
/// account's limit (`docs/creditor.md` § Revoking a line). Revoked again: the same answer.
async fn revoke_line(
    State(cr): State<Creditor>,
    body: Bytes,
) -> Result<Json<RevokedLine>, ApiError> {
    let step = STEP_REVOKE;
    let req: RevokeLineRequest = codec::json(&body, step)?;
    codec::hex_array::<32>("line_hash", &req.line_hash, step)?;
    let line_hash = req.line_hash.to_ascii_lowercase();
    let at = now_secs();
    let view = cr
        .db
        .run(step, move |c| {
            let tx = c.transaction().storage(step)?;
            let row: Option<(String, i64, Option<i64>)> = tx
                .query_row(
                    "SELECT account_id, number, revoked_at FROM lines WHERE line_hash = ?1",
                    [&line_hash],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
                .storage(step)?;
            let Some((account_id, number, revoked)) = row else {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    ErrorCode::NotFound,
                    step,
                    "no line of this creditor has this hash",
                ));
            };
            let revoked_at = match revoked {
                Some(r) => r,
                None => {
                    tx.execute(
                        "UPDATE lines SET revoked_at = ?2 WHERE line_hash = ?1",
                        params![line_hash, at],
                    )
                    .storage(step)?;
                    tx.commit().storage(step)?;
                    at
                }
            };
            Ok(RevokedLine {
                line_hash,
                account_id,
                number: u32::try_from(number)
                    .map_err(|_| ApiError::internal(step, "a stored line number"))?,
                revoked_at,
            })
        })
        .await?;
    tracing::info!(line = %view.line_hash, at = view.revoked_at, "line of credit revoked");
    Ok(Json(view))
}

/// `POST /v1/settlements` (merchant): one payment certificate presented.
async fn settle(
    State(cr): State<Creditor>,
    Extension(peer): Extension<Peer>,
    body: Bytes,
) -> Result<Json<Settlement>, ApiError> {
    let step = STEP_SETTLE;
    let req: SettlementRequest = codec::json(&body, step)?;
    let Some(merchant) = peer.merchant.clone() else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            step,
            "the client certificate names no merchant (issue one with `backoffice init \
             --merchant ID`)",
        ));
    };
    let bytes = hex::decode(&req.payment)
        .map_err(|_| ApiError::bad_request(step, "payment: hex of a payment certificate"))?;
    if bytes.len() > 1024 {
        return Err(ApiError::bad_request(step, "payment: over 1024 bytes"));
    }
    let invalid = |m: &str| {
        err(
            StatusCode::UNPROCESSABLE_ENTITY,
            code::PAYMENT_INVALID,
            step,
            m,
        )
    };
    let cert = PaymentCertificate::from_der(&bytes)
        .map_err(|_| invalid("not a payment certificate (DER)"))?;
    let claimed = PaymentInfo::from_der(&cert.info_der)
        .map_err(|_| invalid("the PaymentInfo does not decode"))?;
    let line_hash = hex::encode(claimed.line);
    let lh = line_hash.clone();
    let line = cr
        .db
        .run(step, move |c| read_line(c, &lh, step))
        .await?
        .ok_or_else(|| invalid("drawn on a line this creditor did not issue"))?;
    let info = cert
        .verify(&line.public_key)
        .ok_or_else(|| invalid("not signed by the line's payment key"))?;
    if info.merchant != merchant.as_bytes() {
        return Err(err(
            StatusCode::FORBIDDEN,
            code::OTHER_MERCHANT,
            step,
            format!(
                "the payment names merchant {:?}, not {merchant}",
                String::from_utf8_lossy(&info.merchant)
            ),
        ));
    }
    // The PSD checks the line's dates by day (UTC): a payment on its last day is in date.
    let first = line.not_before / 86_400 * 86_400;
    let end = (line.not_after / 86_400 + 1) * 86_400;
    if info.time < first || info.time >= end {
        return Err(invalid("the payment is dated outside the line's validity"));
    }
    revoked_check(line.revoked_at, info.time, step)?;
    let payment_hash = hex::encode(sha2::Sha256::digest(&bytes));
    let mut record = Settlement {
        line_hash: line_hash.clone(),
        counter: info.counter,
        merchant: merchant.clone(),
        order: String::from_utf8_lossy(&info.order).into_owned(),
        amount: info.amount.0,
        currency: String::from_utf8_lossy(&info.currency).into_owned(),
        remaining: info.remaining.0,
        device_id: codec::device_hex(&info.device),
        account_id: line.account_id.clone(),
        payment_hash: payment_hash.clone(),
        settled_at: now_secs(),
        signature: String::new(),
    };
    record.signature = hex::encode(cr.signer.sign(&record.signed_bytes()));
    let json = serde_json::to_string(&record)
        .map_err(|e| ApiError::internal(step, format!("record: {e}")))?;
    // Checked and signed, nothing stored yet.
    failpoint::pause("creditor_settle_before_commit").await;
    let line_row = (line.public_key, line.line);
    let settled = cr
        .db
        .run(step, move |c| {
            let tx = c.transaction().storage(step)?;
            let counter = i64::from(info.counter);
            let old: Option<(String, String)> = tx
                .query_row(
                    "SELECT payment_hash, record FROM settlements
                     WHERE line_hash = ?1 AND counter = ?2",
                    params![line_hash, counter],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .storage(step)?;
            if let Some((hash, rec)) = old {
                if hash == payment_hash {
                    // The same presentment again: the same record.
                    return serde_json::from_str::<Settlement>(&rec)
                        .map_err(|e| ApiError::internal(step, format!("stored record: {e}")));
                }
                return Err(err(
                    StatusCode::CONFLICT,
                    code::INCONSISTENT,
                    step,
                    format!(
                        "payment {} of this line was settled already, as another payment",
                        info.counter
                    ),
                ));
            }
            let now_line = read_line(&tx, &line_hash, step)?
                .ok_or_else(|| ApiError::internal(step, "the line vanished"))?;
            // Revoked since the first read.
            revoked_check(now_line.revoked_at, info.time, step)?;
            let mut book = SettlementBook {
                line_hash: info.line,
                payment_key: line_row.0,
                line: line_row.1,
                settled: now_line.settled,
                drawn: Amount(now_line.drawn),
            };
            let booked = book.settle(&bytes, merchant.as_bytes()).map_err(|r| {
                let (status, c, m) = match r {
                    SettleRefusal::OutOfOrder => (
                        StatusCode::CONFLICT,
                        code::OUT_OF_ORDER,
                        format!(
                            "payment {} presented before payment {} of this line: present \
                             them in order (refused, not held)",
                            info.counter,
                            book.settled.saturating_add(1)
                        ),
                    ),
                    SettleRefusal::Inconsistent => (
                        StatusCode::CONFLICT,
                        code::INCONSISTENT,
                        format!(
                            "its remaining {} is not the line {} less the {} settled and its \
                             amount {} (over the line, or a payment altered)",
                            info.remaining.0, book.line.amount.0, book.drawn.0, info.amount.0
                        ),
                    ),
                    SettleRefusal::AlreadySettled => (
                        StatusCode::CONFLICT,
                        code::INCONSISTENT,
                        "this counter was settled already".to_owned(),
                    ),
                    SettleRefusal::OtherMerchant => (
                        StatusCode::FORBIDDEN,
                        code::OTHER_MERCHANT,
                        "presented by another merchant".to_owned(),
                    ),
                    SettleRefusal::Unauthentic | SettleRefusal::OtherLine => (
                        StatusCode::UNPROCESSABLE_ENTITY,
                        code::PAYMENT_INVALID,
                        "not a payment of this line".to_owned(),
                    ),
                };
                err(status, c, step, m)
            })?;
            tx.execute(
                "UPDATE lines SET settled = ?2, drawn = ?3 WHERE line_hash = ?1",
                params![
                    line_hash,
                    i64::from(book.settled),
                    to_sql_int(book.drawn.0, step)?
                ],
            )
            .storage(step)?;
            tx.execute(
                "INSERT INTO settlements (line_hash, counter, payment_hash, merchant, amount,
                     remaining, record, settled_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    line_hash,
                    i64::from(booked.counter),
                    payment_hash,
                    merchant,
                    to_sql_int(booked.amount.0, step)?,
                    to_sql_int(booked.remaining.0, step)?,
                    json,
                    record.settled_at,
                ],
            )
            .storage(step)?;
            tx.commit().storage(step)?;
            Ok(record)
        })
        .await?;
    // Committed (or found); the merchant has not heard.
    failpoint::pause("creditor_settle_after_commit").await;
    tracing::info!(
        line = %settled.line_hash,
        counter = settled.counter,
        amount = settled.amount,
        merchant = %settled.merchant,
        "payment settled"
    );
    Ok(Json(settled))
}

async fn certificate_der(State(cr): State<Creditor>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/pkix-cert")],
        cr.cert_der.as_slice().to_vec(),
    )
}

async fn certificate_pem(State(cr): State<Creditor>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        cr.cert_pem.as_str().to_owned(),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use proptest::prelude::*;

    const ACCOUNT: &str = "acct";

    fn db() -> rusqlite::Connection {
        let c = rusqlite::Connection::open_in_memory().unwrap();
        c.execute_batch(SCHEMA).unwrap();
        c
    }

    fn set_limit(c: &rusqlite::Connection, limit: u64, currency: &str) {
        c.execute(
            "INSERT INTO limits (account_id, amount, currency, granted_at) VALUES (?1, ?2, ?3, 0)
             ON CONFLICT(account_id) DO UPDATE SET amount = ?2, currency = ?3",
            params![ACCOUNT, i64::try_from(limit).unwrap(), currency],
        )
        .unwrap();
    }

    /// What `issue_line` writes once the check passed: the device's earlier lines
    /// superseded, the new line.
    fn record(c: &rusqlite::Connection, number: u32, device: u8, amount: u64, currency: &str) {
        c.execute(
            "UPDATE lines SET superseded = 1 WHERE account_id = ?1 AND device_id = ?2",
            params![ACCOUNT, device.to_string()],
        )
        .unwrap();
        c.execute(
            "INSERT INTO lines (line_hash, account_id, number, request_id, request_digest,
                 device_id, public_key, amount, currency, not_before, not_after, certificate,
                 issued_at)
             VALUES (?1, ?2, ?3, ?1, '', ?4, '', ?5, ?6, 0, 0, x'', 0)",
            params![
                format!("line{number}"),
                ACCOUNT,
                number,
                device.to_string(),
                i64::try_from(amount).unwrap(),
                currency
            ],
        )
        .unwrap();
    }

    fn draw(c: &rusqlite::Connection, number: u32, drawn: u64) {
        c.execute(
            "UPDATE lines SET drawn = ?2 WHERE line_hash = ?1",
            params![format!("line{number}"), i64::try_from(drawn).unwrap()],
        )
        .unwrap();
    }

    fn refusal(r: Result<String, ApiError>) -> (StatusCode, String) {
        let e = r.unwrap_err();
        (e.status, e.code)
    }

    #[test]
    fn a_spent_line_superseded_still_counts() {
        let c = db();
        assert_eq!(
            refusal(within_limit(&c, ACCOUNT, 1, "t")),
            (StatusCode::CONFLICT, code::OVER_LIMIT.to_owned())
        );
        set_limit(&c, 1_000, "EUR");
        assert_eq!(within_limit(&c, ACCOUNT, 1_000, "t").unwrap(), "EUR");
        record(&c, 1, 0, 1_000, "EUR");
        draw(&c, 1, 1_000);
        // The same device again, line 1 spent and superseded by the new one: refused.
        assert_eq!(
            refusal(within_limit(&c, ACCOUNT, 1, "t")),
            (StatusCode::CONFLICT, code::OVER_LIMIT.to_owned())
        );
        // Raised: the rest only.
        set_limit(&c, 1_500, "EUR");
        assert!(within_limit(&c, ACCOUNT, 501, "t").is_err());
        assert!(within_limit(&c, ACCOUNT, 500, "t").is_ok());
        // Lowered below the exposure: nothing.
        set_limit(&c, 900, "EUR");
        assert!(within_limit(&c, ACCOUNT, 1, "t").is_err());
    }

    #[test]
    fn a_database_made_before_revocation_gets_the_column() {
        let c = rusqlite::Connection::open_in_memory().unwrap();
        let old = SCHEMA.replace(
            "    revoked_at     INTEGER,                   -- the operator's revocation (unix seconds)\n",
            "",
        );
        assert_ne!(old, SCHEMA);
        c.execute_batch(&old).unwrap();
        record(&c, 1, 0, 10, "EUR");
        c.execute(
            "UPDATE lines SET public_key = ?1",
            [hex::encode([4u8; PUBLIC_KEY_LEN])],
        )
        .unwrap();
        openpsd_service_kit::db::add_missing_columns(&c, "lines", LINE_COLUMNS).unwrap();
        c.execute_batch(SCHEMA).unwrap();
        let line = read_line(&c, "line1", "t").unwrap().unwrap();
        assert_eq!((line.revoked_at, line.drawn), (None, 0));
    }

    #[test]
    fn a_limit_in_another_currency_than_the_lines_grants_nothing() {
        let c = db();
        set_limit(&c, 1_000, "EUR");
        record(&c, 1, 0, 10, "EUR");
        set_limit(&c, 1_000_000, "USD");
        assert_eq!(
            refusal(within_limit(&c, ACCOUNT, 1, "t")),
            (StatusCode::CONFLICT, code::OVER_LIMIT.to_owned())
        );
    }

    #[derive(Clone, Debug)]
    enum Op {
        Limit(u64),
        Grant { device: u8, amount: u64 },
        Settle { line: usize, amount: u64 },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u64..3_000).prop_map(Op::Limit),
            (0u8..3, 1u64..1_200).prop_map(|(device, amount)| Op::Grant { device, amount }),
            (0usize..16, 1u64..1_200).prop_map(|(line, amount)| Op::Settle { line, amount }),
        ]
    }

    proptest! {
        /// Whatever the order of limits, grants on any device (superseding) and
        /// settlements on any line (superseded ones included): a line is granted exactly
        /// when the amounts of every line so far plus it fit the limit in effect, and the
        /// account never owes (Σ settled) more than the highest limit it was ever given.
        #[test]
        fn the_limit_bounds_what_the_account_owes(ops in proptest::collection::vec(op(), 1..40)) {
            let c = db();
            let mut limit: Option<u64> = None;
            let mut highest = 0u64;
            let mut lines: Vec<(u64, u64)> = Vec::new(); // (amount, drawn)
            for op in ops {
                match op {
                    Op::Limit(l) => {
                        set_limit(&c, l, "EUR");
                        limit = Some(l);
                        highest = highest.max(l);
                    }
                    Op::Grant { device, amount } => {
                        let granted: u64 = lines.iter().map(|l| l.0).sum();
                        let expect = limit.is_some_and(|l| granted + amount <= l);
                        let got = within_limit(&c, ACCOUNT, amount, "t");
                        prop_assert_eq!(got.is_ok(), expect, "{:?}", got.err());
                        if expect {
                            let number = u32::try_from(lines.len() + 1).unwrap();
                            record(&c, number, device, amount, "EUR");
                            lines.push((amount, 0));
                        }
                    }
                    Op::Settle { line, amount } => {
                        if let Some(l) = lines.get_mut(line) {
                            l.1 = (l.1 + amount).min(l.0);
                            draw(&c, u32::try_from(line + 1).unwrap(), l.1);
                        }
                    }
                }
                let owed: u64 = lines.iter().map(|l| l.1).sum();
                prop_assert!(owed <= highest);
                let exp = exposure(&c, ACCOUNT, "EUR", "t").unwrap();
                prop_assert_eq!(exp, lines.iter().map(|l| l.0).sum::<u64>());
            }
        }
    }
}
