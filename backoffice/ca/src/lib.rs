//! The certificate authority (seed 004, EP 0 762 692 Fig. 5 steps 510-518 and Fig. 6 step
//! 604; `docs/ca.md`): certifies keys that customers' PSDs generated, and publishes their
//! revocation at once in a CRL and an OCSP responder that stock OpenSSL reads.
//!
//! Issuance (`POST /v1/certificates`, the meter server only): the request carries the PSD's
//! key attestation and the account the meter authenticated. The CA reads the device at the
//! KMS (unknown or revoked: refused), checks the attestation's two signatures — the device
//! key's (the one the KMS registered) and the new key's own, the proof of possession — and
//! issues a certificate by the profile of the attestation's purpose. The subject comes
//! from the account fields the meter filled from its session (CN = username, serialNumber =
//! device ID, O = "openpsd customer <account>"), never from the device, so a device or a
//! customer cannot name itself anything (Fig. 5 step 514). One certificate per (device,
//! generation): the same attestation again answers the same certificate (a meter that lost
//! the answer asks again), another one for the same generation is `409`.
//!
//! Revocation (`POST /v1/certificates/{serial}/revoke`, meter or operator) is committed
//! before the answer and marks the cached CRL stale, so the next CRL and every OCSP answer
//! after it say revoked. A PSD's own revocation (Fig. 6, `POST /v1/revocations` and
//! `/v1/revocations/confirmations`, the meter only) does the same and answers the signed
//! order REVOKE KEY applies (`revocation.rs`). A revocation without the PSD's request gets
//! its order too, pending until the PSD confirms it (forced revocation: `GET
//! /v1/devices/{device_id}/revocation-orders`, the meter only).
//!
//! Keys: the CA's P-256 key is `ca-signing.key` in its data directory (hex, 0600, made at
//! first start, exactly as the postal authority's), refused when missing or replaced once
//! the database holds the CA certificate made with it.
//!
//! The CA certificate, the CRL and OCSP are public ([`Ca::public_routes`]): stock tools and
//! relying parties fetch them over plain HTTP, without the back office's client
//! certificates (see `docs/ca.md` § Why a second listener).

pub mod ocsp;
mod revocation;
pub mod x509;

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, Method, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use der::{Decode as _, Encode as _};
use openpsd_core::crypto::{IndiciumKey, PUBLIC_KEY_LEN};
use openpsd_core::psd::certmeter::attestation::{KeyAttestation, Purpose, ATTESTATION_LEN};
use openpsd_protocol::ca::{
    code, CertificateAnswer, CertificateRequest, CertificateRevocation, CertificateView,
};
use openpsd_service_kit::access::{RateLimit, Routes, Who};
use openpsd_service_kit::codec::{self, OsRandom};
use openpsd_service_kit::db::{now_secs, Db};
use openpsd_service_kit::error::{ApiError, StorageContext};
use openpsd_service_kit::failpoint;
use openpsd_service_kit::pki::Pki;
use openpsd_service_kit::tls::{client_config, Role};
use openpsd_service_kit::upstream::Upstream;
use rusqlite::{params, OptionalExtension};
use sha2::Digest as _;
use x509_cert::Certificate;

/// How long before issuance a device certificate is valid from (seconds).
pub const CLOCK_SKEW_SECS: u64 = 3_600;

/// The CA's signing key file (hex P-256 scalar, 0600) in its data directory.
pub const SIGNING_KEY_FILE: &str = "ca-signing.key";
/// Its public half (SEC1 uncompressed, hex): what a vendor-signed trust anchor (kind 01,
/// certificate CA) carries to the PSDs.
pub const PUBLIC_KEY_FILE: &str = "ca-public.key";
/// The CA certificate, PEM (also `GET /v1/ca/certificate.pem`).
pub const CA_FILE: &str = "ca.pem";
/// Database file name.
pub const DB_FILE: &str = "ca.sqlite";
/// The CA certificate's lifetime in seconds (30 years: it outlives every certificate).
const CA_SECONDS: u64 = 30 * 366 * 86_400;
/// A CRL's and an OCSP answer's nextUpdate, after their thisUpdate.
const NEXT_UPDATE: u64 = 86_400;
/// Longest revocation reason, in characters.
const MAX_REASON_CHARS: usize = 200;

const STEP_ISSUE: &str = "ca_issue";
const STEP_REVOKE: &str = "ca_revoke";
const STEP_CRL: &str = "ca_crl";
const STEP_OCSP: &str = "ca_ocsp";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS certificates (
    serial        TEXT PRIMARY KEY,          -- hex magnitude, lower case
    device_id     TEXT NOT NULL,             -- 16 upper-case hex
    slot          INTEGER NOT NULL,
    purpose       TEXT NOT NULL,             -- postmark, sign
    generation    INTEGER NOT NULL,
    public_key    TEXT NOT NULL,             -- SEC1 hex
    account_id    TEXT NOT NULL,
    username      TEXT NOT NULL,
    attestation   TEXT NOT NULL UNIQUE,      -- SHA-256 of the attestation: the same again
    certificate   BLOB NOT NULL,             -- DER
    issued_at     INTEGER NOT NULL,
    revoked_at    INTEGER,
    reason        TEXT,
    UNIQUE (device_id, generation)           -- one certificate per generated key
);
-- The CA this database was first served with, and the latest CRL.
CREATE TABLE IF NOT EXISTS ca (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    public_key  TEXT NOT NULL,
    certificate BLOB NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS crl (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    number      INTEGER NOT NULL,           -- the last CRL number issued
    der         BLOB,
    issued_at   INTEGER NOT NULL,
    stale       INTEGER NOT NULL            -- 1: a revocation since
);
-- Revocation orders (seed 004 Fig. 6): one per certificate a PSD asked to revoke, numbered
-- per device; the PSD's confirmation once recorded (step 622). The columns after
-- confirmed_at came later (ORDER_COLUMNS_ADDED: an older database gets them at start).
CREATE TABLE IF NOT EXISTS revocation_orders (
    device_id     TEXT NOT NULL,
    counter       INTEGER NOT NULL,
    serial        TEXT NOT NULL UNIQUE REFERENCES certificates (serial),
    slot          INTEGER NOT NULL,
    ord           BLOB NOT NULL,             -- the signed order
    created_at    INTEGER NOT NULL,
    confirmation  BLOB,                      -- the PSD's signed confirmation
    confirmed_at  INTEGER,
    forced        INTEGER NOT NULL DEFAULT 0, -- 1: the CA forced it (blocks refills)
    handed_at     INTEGER,                   -- first handed to the meter (the grace's start)
    closed_at     INTEGER,                   -- closed without a confirmation
    closed_by     TEXT,                      -- operator, ca
    close_reason  TEXT,
    PRIMARY KEY (device_id, counter)
);
";

/// The columns `revocation_orders` gained after its first release: a database made before
/// gets them at start, its orders not forced (the PSDs asked for them) and never handed over.
const ORDER_COLUMNS_ADDED: &[(&str, &str)] = &[
    ("forced", "INTEGER NOT NULL DEFAULT 0"),
    ("handed_at", "INTEGER"),
    ("closed_at", "INTEGER"),
    ("closed_by", "TEXT"),
    ("close_reason", "TEXT"),
];

/// How the CA is set up.
#[derive(Clone, Debug)]
pub struct Config {
    /// Data directory: `ca.sqlite`, `ca-signing.key`, `ca.pem`.
    pub data: PathBuf,
    /// The KMS's base URL (device keys and their revocation).
    pub kms_url: String,
    /// The back office's PKI (the CA's client certificate for the KMS).
    pub pki: Pki,
    /// The base URL of the public listener (`http://127.0.0.1:8707`): every certificate
    /// names `<it>/v1/ca/crl.der` and `<it>/ocsp`.
    pub public_url: String,
    /// A certificate's validity in days from its issuance.
    pub validity_days: u32,
}

/// The CA's shared state.
#[derive(Clone)]
pub struct Ca {
    db: Db,
    kms: Upstream,
    key: Arc<p256::ecdsa::SigningKey>,
    ca: Arc<Certificate>,
    ca_der: Arc<Vec<u8>>,
    ca_pem: Arc<String>,
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

impl Ca {
    /// Opens the data directory: the database, the signing key (made on first start;
    /// refused when missing or replaced once the CA certificate was made with it) and the
    /// CA certificate (made on first start, kept in the database, written to `ca.pem`).
    pub fn open(config: &Config) -> anyhow::Result<Self> {
        openpsd_service_kit::keys::private_dir(&config.data)?;
        let base = reqwest_free_url(&config.public_url)?;
        let db_path = config.data.join(DB_FILE);
        let db = Db::open(&db_path, SCHEMA)?;
        let conn = openpsd_service_kit::db::open_connection(&db_path)?;
        openpsd_service_kit::db::add_missing_columns(
            &conn,
            "revocation_orders",
            ORDER_COLUMNS_ADDED,
        )?;
        let recorded: Option<(String, Vec<u8>)> = conn
            .query_row(
                "SELECT public_key, certificate FROM ca WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let key_path = config.data.join(SIGNING_KEY_FILE);
        let depends = recorded.as_ref().map(|(pk, _)| {
            format!(
                "{} holds the CA certificate of public key {pk} (every certificate it issued \
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
        let public: [u8; PUBLIC_KEY_LEN] = IndiciumKey::from_bytes(scalar.as_ref())
            .ok_or_else(|| anyhow::anyhow!("{}: not a P-256 scalar", key_path.display()))?
            .public_key();
        let public_hex = hex::encode(public);
        let ca = match recorded {
            Some((pk, _)) if pk != public_hex => anyhow::bail!(
                "{} holds another key than the one {} was made with (public key {pk}, this \
                 file's {public_hex}). Restore the right key file. Refusing to start.",
                key_path.display(),
                db_path.display()
            ),
            Some((_, der)) => Certificate::from_der(&der)?,
            None => {
                // From a day back, so a relying party whose clock is a little behind
                // accepts certificates issued at once.
                let t = now();
                let cert =
                    x509::ca_certificate(&key, &public, t.saturating_sub(86_400), t + CA_SECONDS)?;
                conn.execute(
                    "INSERT INTO ca (id, public_key, certificate, created_at) VALUES (1, ?1, ?2, ?3)",
                    params![public_hex, cert.to_der()?, now_secs()],
                )?;
                tracing::info!("made the certificate authority's CA certificate");
                cert
            }
        };
        drop(conn);
        let ca_der = ca.to_der()?;
        let ca_pem = x509::pem("CERTIFICATE", &ca_der)?;
        openpsd_service_kit::keys::write_public(&config.data.join(CA_FILE), &ca_pem)?;
        openpsd_service_kit::keys::write_public(
            &config.data.join(PUBLIC_KEY_FILE),
            &format!("{public_hex}\n"),
        )?;
        let tls = client_config(&config.pki, Some(Role::Ca))?;
        let mut config = config.clone();
        config.public_url = base;
        tracing::info!(
            "certificate authority key {} (public key {public_hex}), public URL {}",
            key_path.display(),
            config.public_url
        );
        Ok(Self {
            db,
            kms: Upstream::new("KMS", &config.kms_url, Role::Kms, tls)?,
            key: Arc::new(key),
            ca: Arc::new(ca),
            ca_der: Arc::new(ca_der),
            ca_pem: Arc::new(ca_pem),
            config: Arc::new(config),
        })
    }

    /// The CA's public key (SEC1 uncompressed), as in its certificate.
    pub fn public_key(&self) -> Vec<u8> {
        self.ca
            .tbs_certificate()
            .subject_public_key_info()
            .subject_public_key
            .raw_bytes()
            .to_vec()
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The routes on the CA's mutual-TLS listener: only the meter asks for certificates
    /// (for its customers' devices); the meter and the operator revoke them; any identity
    /// of the back office reads the public objects too.
    pub fn routes() -> Routes<Ca> {
        const METER: &[Who] = &[Who::Role(Role::Meter)];
        const OPERATOR: &[Who] = &[Who::Role(Role::Operator)];
        const REVOKERS: &[Who] = &[Who::Role(Role::Meter), Who::Role(Role::Operator)];
        const ANY_ROLE: &[Who] = &[Who::AnyRole];
        Routes::new()
            .route(Method::POST, "/v1/certificates", post(issue), METER)
            .route(
                Method::POST,
                "/v1/certificates/{serial}/revoke",
                post(revoke),
                REVOKERS,
            )
            .route(
                Method::GET,
                "/v1/ca/certificate",
                get(ca_certificate),
                ANY_ROLE,
            )
            .route(
                Method::GET,
                "/v1/ca/certificate.pem",
                get(ca_certificate_pem),
                ANY_ROLE,
            )
            .route(Method::GET, "/v1/ca/crl.der", get(crl), ANY_ROLE)
            .route(Method::POST, "/ocsp", post(ocsp_answer), ANY_ROLE)
            .route(Method::GET, "/health", get(|| async { "ok" }), ANY_ROLE)
            .route(
                Method::POST,
                "/v1/revocations",
                post(revocation::request),
                METER,
            )
            .route(
                Method::POST,
                "/v1/revocations/confirmations",
                post(revocation::confirm),
                METER,
            )
            .route(
                Method::GET,
                "/v1/devices/{device_id}/revocation-orders",
                get(revocation::pending),
                METER,
            )
            .route(
                Method::POST,
                "/v1/certificates/{serial}/revocation-order/close",
                post(revocation::close),
                OPERATOR,
            )
    }

    /// The routes of the public listener (plain HTTP, loopback): the CA certificate, the
    /// CRL and OCSP, for anyone. Relying parties (`openssl verify -crl_download`, `openssl
    /// ocsp -url`, browsers) cannot present a back-office certificate, and the URLs in
    /// every certificate point here.
    pub fn public_routes() -> Routes<Ca> {
        const ANYONE: &[Who] = &[Who::Anyone];
        Routes::new()
            .route(
                Method::GET,
                "/v1/ca/certificate",
                get(ca_certificate),
                ANYONE,
            )
            .route(
                Method::GET,
                "/v1/ca/certificate.pem",
                get(ca_certificate_pem),
                ANYONE,
            )
            .route(Method::GET, "/v1/ca/crl.der", get(crl), ANYONE)
            .route(Method::POST, "/ocsp", post(ocsp_answer), ANYONE)
            .route(Method::GET, "/health", get(|| async { "ok" }), ANYONE)
    }

    /// The mutual-TLS router, `limit` per caller.
    pub fn router(self, limit: &RateLimit) -> Router {
        Self::routes().into_router(limit).with_state(self)
    }

    /// The public router, `limit` per address.
    pub fn public_router(self, limit: &RateLimit) -> Router {
        Self::public_routes().into_router(limit).with_state(self)
    }

    /// The device's public key from the KMS ([`Upstream::device_key`]).
    async fn device_key(&self, id: &str, step: &str) -> Result<[u8; PUBLIC_KEY_LEN], ApiError> {
        self.kms.device_key(id, step).await
    }
}

/// The public URL without a trailing slash; only `http(s)://` URLs.
fn reqwest_free_url(url: &str) -> anyhow::Result<String> {
    let u = url.trim_end_matches('/');
    anyhow::ensure!(
        (u.starts_with("http://") || u.starts_with("https://"))
            && u.is_ascii()
            && !u
                .chars()
                .any(|c| c.is_ascii_whitespace() || c.is_ascii_control()),
        "public URL {url:?}: expected http://HOST:PORT"
    );
    Ok(u.to_owned())
}

/// A username as the meter accepts it at sign-up: 3 to 64 of a-z 0-9 . _ @ -.
fn username_ok(name: &str) -> bool {
    (3..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._@-".contains(&b))
}

/// A random serial: 16 octets, the first in 0x01..=0x7F (positive, no padding octet).
fn new_serial() -> Vec<u8> {
    let mut s = codec::random_array::<16>().to_vec();
    s[0] = s[0] % 0x7F + 1;
    s
}

/// A stored certificate's row, for the answer and the view.
struct Row {
    view: CertificateView,
    certificate: Vec<u8>,
    attestation: String,
}

const COLUMNS: &str = "serial, device_id, slot, purpose, generation, account_id, issued_at, \
     revoked_at, reason, certificate, attestation";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    let revoked: Option<i64> = r.get(7)?;
    let issued: i64 = r.get(6)?;
    Ok(Row {
        view: CertificateView {
            serial: r.get(0)?,
            device_id: r.get(1)?,
            slot: r.get(2)?,
            purpose: r.get(3)?,
            generation: r.get(4)?,
            account_id: r.get(5)?,
            issued_at: u64::try_from(issued).unwrap_or(0),
            revoked_at: revoked.and_then(|v| u64::try_from(v).ok()),
            reason: r.get(8)?,
        },
        certificate: r.get(9)?,
        attestation: r.get(10)?,
    })
}

/// `POST /v1/certificates` (meter).
async fn issue(State(ca): State<Ca>, body: Bytes) -> Result<Json<CertificateAnswer>, ApiError> {
    let step = STEP_ISSUE;
    let req: CertificateRequest = codec::json(&body, step)?;
    let bytes = codec::hex_vec("attestation", &req.attestation, ATTESTATION_LEN, step)?;
    codec::ident("account_id", &req.account_id, step)?;
    if !username_ok(&req.username) {
        return Err(ApiError::bad_request(
            step,
            "username: 3 to 64 of a-z 0-9 . _ @ -",
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
    let device_pk = ca.device_key(&device_id, step).await?;
    let att = KeyAttestation::open(&bytes, &device_pk).map_err(|_| {
        invalid(format!(
            "the attestation's signatures do not verify (the key registered for device \
             {device_id}, and the new key's proof of possession)"
        ))
    })?;
    if !matches!(
        att.purpose,
        Purpose::Postmark | Purpose::Sign | Purpose::AgentCa
    ) {
        return Err(err(
            StatusCode::UNPROCESSABLE_ENTITY,
            code::PURPOSE_NOT_ISSUED,
            step,
            format!(
                "certificates for {} keys are not issued yet",
                att.purpose.name()
            ),
        ));
    }
    let digest = hex::encode(sha2::Sha256::digest(&bytes));
    // The subject from the account the meter authenticated, nothing from the device.
    let subject = x509::customer_name(&req.username, &device_id, &req.account_id)
        .map_err(|e| ApiError::bad_request(step, format!("subject: {e}")))?;
    // An agent CA's name constraints come from the account too (docs/ca.md § Agent CA).
    let permitted = (att.purpose == Purpose::AgentCa)
        .then(|| x509::customer_subtree(&req.account_id))
        .transpose()
        .map_err(|e| ApiError::bad_request(step, format!("name constraints: {e}")))?;
    let issued_at = now();
    let days = u64::from(ca.config.validity_days.max(1));
    let serial = new_serial();
    // Signed before the transaction, so the database is not held while signing; a replay
    // found inside discards it.
    let cert = x509::issue(
        &ca.ca,
        &ca.key,
        x509::Leaf {
            purpose: att.purpose,
            subject,
            serial: &serial,
            // Valid from an hour before issuance, as public CAs backdate: a PSD's clock is
            // its host's, and one a little behind the CA's must still use the key it was
            // just given (a postmark before notBefore is refused, `9A44`).
            not_before: issued_at.saturating_sub(CLOCK_SKEW_SECS),
            not_after: issued_at + days * 86_400,
            public_key: &att.public_key,
            crl_url: &format!("{}/v1/ca/crl.der", ca.config.public_url),
            ocsp_url: &format!("{}/ocsp", ca.config.public_url),
            permitted,
        },
    )
    .and_then(|c| Ok(c.to_der()?))
    .map_err(|e| ApiError::internal(step, format!("certificate: {e}")))?;
    let serial_hex = hex::encode(&serial);
    let (dev, account, username) = (
        device_id.clone(),
        req.account_id.clone(),
        req.username.clone(),
    );
    // Signed, nothing stored yet (the transaction below not begun).
    failpoint::pause("ca_issue_before_commit").await;
    let row = ca
        .db
        .run(step, move |c| {
            let tx = c.transaction().storage(step)?;
            let sql = format!(
                "SELECT {COLUMNS} FROM certificates WHERE device_id = ?1 AND generation = ?2"
            );
            if let Some(old) = tx
                .query_row(&sql, params![dev, att.generation], row)
                .optional()
                .storage(step)?
            {
                if old.attestation == digest && old.view.account_id == account {
                    return Ok(old);
                }
                return Err(err(
                    StatusCode::CONFLICT,
                    code::CERTIFICATE_CONFLICT,
                    step,
                    format!(
                        "device {dev} has a certificate for its key generation {} already \
                         (serial {}), for another attestation or account",
                        att.generation, old.view.serial
                    ),
                ));
            }
            tx.execute(
                "INSERT INTO certificates (serial, device_id, slot, purpose, generation,
                     public_key, account_id, username, attestation, certificate, issued_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    serial_hex,
                    dev,
                    att.slot,
                    att.purpose.name(),
                    att.generation,
                    hex::encode(att.public_key),
                    account,
                    username,
                    digest,
                    cert,
                    now_secs(),
                ],
            )
            .storage(step)?;
            let sql = format!("SELECT {COLUMNS} FROM certificates WHERE serial = ?1");
            let new = tx.query_row(&sql, [&serial_hex], row).storage(step)?;
            tx.commit().storage(step)?;
            Ok(new)
        })
        .await?;
    // The certificate is committed (or was found by its attestation); the meter has not heard.
    failpoint::pause("ca_issue_after_commit").await;
    tracing::info!(
        device = %row.view.device_id,
        serial = %row.view.serial,
        purpose = %row.view.purpose,
        generation = row.view.generation,
        "certificate issued"
    );
    Ok(Json(CertificateAnswer {
        certificate: hex::encode(&row.certificate),
        serial: row.view.serial,
        ca_certificate: hex::encode(ca.ca_der.as_slice()),
    }))
}

/// A revocation's (or an order's closing) reason: 1 to [`MAX_REASON_CHARS`] characters,
/// not blank, no control characters (else `400`).
fn check_reason(reason: &str, step: &str) -> Result<(), ApiError> {
    let chars = reason.chars().count();
    if !(1..=MAX_REASON_CHARS).contains(&chars)
        || reason.trim().is_empty()
        || reason.chars().any(char::is_control)
    {
        return Err(ApiError::bad_request(
            step,
            format!("reason: 1 to {MAX_REASON_CHARS} characters, not blank, no control characters"),
        ));
    }
    Ok(())
}

/// `POST /v1/certificates/{serial}/revoke` (meter, operator): revoked at once; a second
/// revocation answers the first.
async fn revoke(
    State(ca): State<Ca>,
    UrlPath(serial): UrlPath<String>,
    body: Bytes,
) -> Result<Json<CertificateView>, ApiError> {
    let step = STEP_REVOKE;
    let serial = hex::encode(codec::hex_vec("serial", &serial, 20, step)?);
    let req: CertificateRevocation = codec::json(&body, step)?;
    check_reason(&req.reason, step)?;
    let ca_key = ca.order_key(step)?;
    let (view, forced) = ca
        .db
        .run(step, move |c| {
            let tx = c.transaction().storage(step)?;
            let sql = format!("SELECT {COLUMNS} FROM certificates WHERE serial = ?1");
            let found = tx
                .query_row(&sql, [&serial], row)
                .optional()
                .storage(step)?
                .ok_or_else(|| {
                    err(
                        StatusCode::NOT_FOUND,
                        code::UNKNOWN_CERTIFICATE,
                        step,
                        format!("no certificate with serial {serial}"),
                    )
                })?;
            if found.view.revoked_at.is_some() {
                return Ok((found.view, None));
            }
            mark_revoked(&tx, &serial, &req.reason, step)?;
            // Forced revocation: the PSD gets the order at its next contact.
            let forced = revocation::force_order(&tx, &found, &req.reason, &ca_key, step)?;
            let updated = tx.query_row(&sql, [&serial], row).storage(step)?;
            tx.commit().storage(step)?;
            Ok((updated.view, forced))
        })
        .await?;
    // The revocation is committed (or was found); the caller has not heard.
    failpoint::pause("ca_revoke_after_commit").await;
    tracing::warn!(
        serial = %view.serial,
        device = %view.device_id,
        order = ?forced,
        "certificate revoked"
    );
    Ok(Json(view))
}

/// Marks `serial` revoked now for `reason` and the cached CRL stale, inside the caller's
/// transaction: the next CRL and every OCSP answer after the commit say revoked. Shared by
/// the operator's revocation and the PSD's (`revocation.rs`).
fn mark_revoked(
    tx: &rusqlite::Transaction<'_>,
    serial: &str,
    reason: &str,
    step: &str,
) -> Result<(), ApiError> {
    tx.execute(
        "UPDATE certificates SET revoked_at = ?2, reason = ?3 WHERE serial = ?1",
        params![serial, now_secs(), reason],
    )
    .storage(step)?;
    tx.execute("UPDATE crl SET stale = 1", []).storage(step)?;
    Ok(())
}

/// `GET /v1/ca/crl.der`: the cached CRL while no revocation came since and it is younger
/// than half its validity; otherwise a new one, numbered one higher.
async fn crl(State(ca): State<Ca>) -> Result<impl IntoResponse, ApiError> {
    let step = STEP_CRL;
    let der = ca
        .db
        .run(step, move |c| {
            let tx = c.transaction().storage(step)?;
            let last: Option<(i64, Option<Vec<u8>>, i64, i64)> = tx
                .query_row(
                    "SELECT number, der, issued_at, stale FROM crl WHERE id = 1",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()
                .storage(step)?;
            let t = now();
            if let Some((_, Some(der), issued, 0)) = &last {
                if t < u64::try_from(*issued)
                    .unwrap_or(0)
                    .saturating_add(NEXT_UPDATE / 2)
                {
                    return Ok(der.clone());
                }
            }
            let number = last.as_ref().map_or(0, |l| l.0) + 1;
            let mut stmt = tx
                .prepare(
                    "SELECT serial, revoked_at FROM certificates WHERE revoked_at IS NOT NULL
                     ORDER BY revoked_at, serial",
                )
                .storage(step)?;
            let revoked = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .storage(step)?
                .collect::<Result<Vec<_>, _>>()
                .storage(step)?;
            drop(stmt);
            let revoked: Vec<(Vec<u8>, u64)> = revoked
                .into_iter()
                .filter_map(|(s, at)| Some((hex::decode(s).ok()?, u64::try_from(at).ok()?)))
                .collect();
            let number_u = u64::try_from(number).unwrap_or(1);
            let der = x509::crl(&ca.ca, &ca.key, number_u, t, t + NEXT_UPDATE, &revoked)
                .map_err(|e| ApiError::internal(step, format!("CRL: {e}")))?;
            tx.execute(
                "INSERT INTO crl (id, number, der, issued_at, stale) VALUES (1, ?1, ?2, ?3, 0)
                 ON CONFLICT(id) DO UPDATE SET number = ?1, der = ?2, issued_at = ?3, stale = 0",
                params![number, der, now_secs()],
            )
            .storage(step)?;
            tx.commit().storage(step)?;
            tracing::info!(number, entries = revoked.len(), "CRL issued");
            Ok(der)
        })
        .await?;
    Ok(([(header::CONTENT_TYPE, "application/pkix-crl")], der))
}

/// `POST /ocsp` (RFC 6960 over HTTP, Appendix A): a DER `OCSPRequest` in, a DER
/// `OCSPResponse` out, always `200` (a malformed request gets `malformedRequest`).
async fn ocsp_answer(State(ca): State<Ca>, body: Bytes) -> impl IntoResponse {
    let step = STEP_OCSP;
    let ct = [(header::CONTENT_TYPE, "application/ocsp-response")];
    let Some(parsed) = ocsp::parse(&body) else {
        tracing::info!("OCSP: malformed request ({} bytes)", body.len());
        return (ct, ocsp::refusal(ocsp::ResponseStatus::MalformedRequest));
    };
    let issuer = ocsp::Issuer {
        certificate: &ca.ca,
        key: &ca.key,
    };
    let serials: Vec<Option<String>> = parsed
        .ids
        .iter()
        .map(|id| ocsp::serial_of(&issuer, id).map(hex::encode))
        .collect();
    let looked_up = ca
        .db
        .run(step, move |c| {
            let mut out = Vec::with_capacity(serials.len());
            for s in serials {
                let Some(s) = s else {
                    out.push(ocsp::Status::Unknown);
                    continue;
                };
                let revoked: Option<Option<i64>> = c
                    .query_row(
                        "SELECT revoked_at FROM certificates WHERE serial = ?1",
                        [&s],
                        |r| r.get(0),
                    )
                    .optional()
                    .storage(step)?;
                out.push(match revoked {
                    None => ocsp::Status::Unknown,
                    Some(None) => ocsp::Status::Good,
                    Some(Some(at)) => ocsp::Status::Revoked(u64::try_from(at).unwrap_or(0)),
                });
            }
            Ok(out)
        })
        .await;
    let statuses = match looked_up {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("OCSP: {e}");
            return (ct, ocsp::refusal(ocsp::ResponseStatus::InternalError));
        }
    };
    match ocsp::respond(&issuer, parsed, &statuses, now(), NEXT_UPDATE) {
        Ok(der) => (ct, der),
        Err(e) => {
            tracing::warn!("OCSP: signing the response: {e}");
            (ct, ocsp::refusal(ocsp::ResponseStatus::InternalError))
        }
    }
}

async fn ca_certificate(State(ca): State<Ca>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/pkix-cert")],
        ca.ca_der.as_slice().to_vec(),
    )
}

async fn ca_certificate_pem(State(ca): State<Ca>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        ca.ca_pem.as_str().to_owned(),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A database made before the forced marker: its `revocation_orders` lacks the later
    /// columns. Opening it as [`Ca::open`] does (the schema, then the missing columns) keeps
    /// its orders, none of them forced, handed over or closed.
    #[test]
    fn an_old_database_gets_the_order_columns_and_its_orders_are_not_forced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        {
            let old = rusqlite::Connection::open(&path).unwrap();
            old.execute_batch(
                "CREATE TABLE revocation_orders (
                    device_id TEXT NOT NULL, counter INTEGER NOT NULL,
                    serial TEXT NOT NULL UNIQUE, slot INTEGER NOT NULL, ord BLOB NOT NULL,
                    created_at INTEGER NOT NULL, confirmation BLOB, confirmed_at INTEGER,
                    PRIMARY KEY (device_id, counter));
                 INSERT INTO revocation_orders VALUES ('0011223344556677', 1, '0a', 0, x'00', 5,
                    NULL, NULL);",
            )
            .unwrap();
        }
        let conn = openpsd_service_kit::db::open_connection(&path).unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        openpsd_service_kit::db::add_missing_columns(
            &conn,
            "revocation_orders",
            ORDER_COLUMNS_ADDED,
        )
        .unwrap();
        // Twice is harmless (every start runs it).
        openpsd_service_kit::db::add_missing_columns(
            &conn,
            "revocation_orders",
            ORDER_COLUMNS_ADDED,
        )
        .unwrap();
        let row: (String, bool, Option<i64>, Option<i64>) = conn
            .query_row(
                "SELECT serial, forced, handed_at, closed_at FROM revocation_orders",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
        assert_eq!(row, ("0a".to_owned(), false, None, None));
    }
}
