//! The postal authority (seed 003, WO 99/48053 Fig. 4 step 65; `docs/licenses.md` § Back
//! office): grants licenses as X.509 v3 certificates that stock `openssl verify` accepts,
//! and publishes its CA certificate and a CRL.
//!
//! A grant is made only for a request that **both** an authorized manufacturer forwarded
//! (its signature over `"openpsd license forward v1" ‖ SHA-256(request) ‖ device public
//! key`, checked against the `manufacturers` table; the caller must also hold the vendor's
//! TLS identity) **and** the device signed (proof of possession of the new license key and
//! the device key's signature, `LicenseRequest::verify`). The certificate's tbsCertificate
//! comes from core's template (`grant::tbs_certificate`), the one the card rebuilds, signed
//! with the PA's key (`pa-signing.key`, made at first start, 0600); its public half and the
//! CA subject are what PSDs are personalized with.
//!
//! Policy: an existing license keeps its origin; license 0 gets the next free number; one
//! license may be granted to several devices (claim 6), at most
//! [`Config::max_devices_per_license`]; the same (license, device) a second time with
//! another request is refused while the first grant stands. The same request again (by
//! its SHA-256) answers the same certificate. The PA cannot make a license the card
//! installs alone: the card also needs the vendor's countersignature.

pub mod ca;
mod desk;

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, Method, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use der::{Decode as _, Encode as _};
use openpsd_core::crypto::{self, IndiciumKey, PUBLIC_KEY_LEN, SIGNATURE_LEN};
use openpsd_core::psd::license::grant::{self, CardFields, GrantFields};
use openpsd_core::psd::license::request::LicenseRequest;
use openpsd_core::types::{Date, LicenseId, PostalCode};
use openpsd_protocol::license::{
    code, forward_message, GrantFieldsJson, GrantList, GrantRequest, GrantResponse,
    GrantRevocation, GrantView, LicenseHolder, PaPublicKey,
};
use openpsd_service_kit::access::{RateLimit, Routes, Who};
use openpsd_service_kit::codec::{self, OsRandom};
use openpsd_service_kit::db::{now_secs, Db};
use openpsd_service_kit::error::{ApiError, StorageContext};
use openpsd_service_kit::failpoint;
use openpsd_service_kit::tls::Role;
use rusqlite::{params, Connection, OptionalExtension};
use x509_cert::Certificate;

/// The PA's signing key file (hex P-256 scalar, 0600) in its data directory.
pub const SIGNING_KEY_FILE: &str = "pa-signing.key";
/// Its public half (SEC1 uncompressed, hex).
pub const PUBLIC_KEY_FILE: &str = "pa-public.key";
/// The CA certificate, PEM (also `GET /v1/ca`).
pub const CA_FILE: &str = "pa-ca.pem";
/// File name of the PA's subject name (DER, hex) in its data directory: with
/// [`PUBLIC_KEY_FILE`], PERSONALIZE's postal authority block (`card-sim personalize
/// --postal-authority DIR`).
pub const SUBJECT_FILE: &str = "pa-subject.hex";
/// Database file name.
pub const DB_FILE: &str = "pa.sqlite";
/// Most devices one license is granted to, by default.
pub const MAX_DEVICES_PER_LICENSE: u32 = 64;
/// Longest revocation reason, in characters.
const MAX_REASON_CHARS: usize = 200;
/// Longest request accepted (a request is ~240 bytes).
const MAX_REQUEST_LEN: usize = 1024;
/// The CA certificate's lifetime in days (it must outlive every license it signs).
const CA_DAYS: u32 = 30 * 366;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS manufacturers (
    public_key  TEXT PRIMARY KEY,           -- the vendor key, SEC1 hex (what PSDs carry)
    added_at    INTEGER NOT NULL,
    retired_at  INTEGER                     -- no longer authorized
);
CREATE TABLE IF NOT EXISTS licenses (
    license     INTEGER PRIMARY KEY,
    origin      TEXT NOT NULL,
    account     TEXT,                       -- the owner, once known (not set by a grant)
    created_at  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS grants (
    serial         TEXT PRIMARY KEY,        -- hex magnitude
    license        INTEGER NOT NULL REFERENCES licenses(license),
    device_id      TEXT NOT NULL,           -- 16 upper-case hex
    key_id         TEXT NOT NULL,           -- SKI: RFC 7093 SHA-256/160 of the license key
    origin         TEXT NOT NULL,
    not_before     TEXT NOT NULL,           -- YYYY-MM-DD
    not_after      TEXT NOT NULL,
    certificate    BLOB NOT NULL,           -- DER
    pa_signature   TEXT NOT NULL,           -- r||s hex
    request_digest TEXT NOT NULL UNIQUE,    -- SHA-256 of the request: the same request again
    vendor_key     TEXT NOT NULL,           -- the manufacturer that forwarded it
    granted_at     INTEGER NOT NULL,
    revoked_at     INTEGER,
    reason         TEXT
);
CREATE INDEX IF NOT EXISTS grants_by_license ON grants(license, device_id);
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
";

const STEP_GRANT: &str = "pa_grant";
const STEP_REVOKE: &str = "pa_revoke";
const STEP_LIST: &str = "pa_list";
const STEP_CRL: &str = "pa_crl";

/// How the PA is set up.
#[derive(Clone, Debug)]
pub struct Config {
    /// Data directory: `pa.sqlite`, `pa-signing.key`, `pa-public.key`, `pa-ca.pem`.
    pub data: PathBuf,
    /// Manufacturers' public keys to authorize (added to the table at start; kept).
    pub vendor_public_keys: Vec<[u8; PUBLIC_KEY_LEN]>,
    /// A grant's validity: today to today + this many days.
    pub validity_days: u32,
    /// Fixed first and last dates of mailing instead (tests, a planned campaign).
    pub fixed_validity: Option<(Date, Date)>,
    /// Most devices one license is granted to at once.
    pub max_devices_per_license: u32,
    /// A CRL's nextUpdate, in days after its thisUpdate.
    pub crl_days: u32,
}

impl Config {
    /// The defaults: 365 days of validity, 64 devices per license, a CRL every 7 days.
    pub fn new(data: PathBuf) -> Self {
        Self {
            data,
            vendor_public_keys: Vec::new(),
            validity_days: 365,
            fixed_validity: None,
            max_devices_per_license: MAX_DEVICES_PER_LICENSE,
            crl_days: 7,
        }
    }
}

/// The PA's shared state.
#[derive(Clone)]
pub struct Pa {
    db: Db,
    key: Arc<IndiciumKey>,
    ca_key: Arc<p256::ecdsa::SigningKey>,
    ca: Arc<Certificate>,
    ca_pem: Arc<String>,
    subject: Arc<Vec<u8>>,
    config: Arc<Config>,
}

pub(crate) fn err(
    status: StatusCode,
    code: &str,
    step: &str,
    message: impl Into<String>,
) -> ApiError {
    ApiError {
        status,
        code: code.to_owned(),
        step: step.to_owned(),
        message: message.into(),
    }
}

fn today() -> Date {
    codec::today_utc()
}

impl Pa {
    /// Opens the data directory: the database, the signing key (made on first start;
    /// refused when missing or replaced once the CA certificate was made with it), the CA
    /// certificate (made on first start, kept in the database, written to `pa-ca.pem`),
    /// and the manufacturers of `config`.
    pub fn open(config: &Config) -> anyhow::Result<Self> {
        openpsd_service_kit::keys::private_dir(&config.data)?;
        let db_path = config.data.join(DB_FILE);
        let db = Db::open(&db_path, SCHEMA)?;
        let conn = openpsd_service_kit::db::open_connection(&db_path)?;
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
                "{} holds the CA certificate of public key {pk} (PSDs are personalized with it)",
                db_path.display()
            )
        });
        openpsd_service_kit::keys::ensure_key_kept_for(&key_path, depends.as_deref())?;
        let scalar = openpsd_service_kit::keys::load_or_create(
            &key_path,
            || IndiciumKey::generate(&mut OsRandom).secret_bytes(),
            |b| IndiciumKey::from_bytes(b).is_some(),
        )?;
        let key = IndiciumKey::from_bytes(scalar.as_ref())
            .ok_or_else(|| anyhow::anyhow!("{}: not a P-256 scalar", key_path.display()))?;
        let ca_key = p256::ecdsa::SigningKey::from_slice(scalar.as_ref())
            .map_err(|_| anyhow::anyhow!("{}: not a P-256 scalar", key_path.display()))?;
        let public = key.public_key();
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
                let t = today();
                let from = Date::from_unix_days(
                    u64::from(t.day_number()) + openpsd_core::calendar::UNIX_DAYS_AT_EPOCH_2000 - 1,
                )
                .unwrap_or(t);
                let to = t
                    .plus_days(CA_DAYS)
                    .ok_or_else(|| anyhow::anyhow!("CA validity past the calendar"))?;
                let cert = ca::ca_certificate(&ca_key, &public, from, to)?;
                conn.execute(
                    "INSERT INTO ca (id, public_key, certificate, created_at) VALUES (1, ?1, ?2, ?3)",
                    params![public_hex, cert.to_der()?, now_secs()],
                )?;
                tracing::info!("made the postal authority's CA certificate");
                cert
            }
        };
        let subject = ca::subject_der(&ca)?;
        anyhow::ensure!(
            grant::pa_subject_ok(&subject),
            "the PA subject does not fit the license template"
        );
        for vk in &config.vendor_public_keys {
            anyhow::ensure!(
                crypto::is_valid_public_key(vk),
                "a manufacturer key is not a P-256 point"
            );
            conn.execute(
                "INSERT OR IGNORE INTO manufacturers (public_key, added_at) VALUES (?1, ?2)",
                params![hex::encode(vk), now_secs()],
            )?;
        }
        let vendors: i64 = conn.query_row(
            "SELECT COUNT(*) FROM manufacturers WHERE retired_at IS NULL",
            [],
            |r| r.get(0),
        )?;
        if vendors == 0 {
            tracing::warn!("no manufacturer is authorized: every grant will be refused");
        }
        drop(conn);
        let ca_pem = ca::pem("CERTIFICATE", &ca.to_der()?)?;
        openpsd_service_kit::keys::write_public(&config.data.join(CA_FILE), &ca_pem)?;
        openpsd_service_kit::keys::write_public(
            &config.data.join(PUBLIC_KEY_FILE),
            &format!("{public_hex}\n"),
        )?;
        openpsd_service_kit::keys::write_public(
            &config.data.join(SUBJECT_FILE),
            &format!("{}\n", hex::encode(&subject)),
        )?;
        tracing::info!(
            "postal authority key {} (public key {public_hex}), {vendors} manufacturer(s)",
            key_path.display()
        );
        Ok(Self {
            db,
            key: Arc::new(key),
            ca_key: Arc::new(ca_key),
            ca: Arc::new(ca),
            ca_pem: Arc::new(ca_pem),
            subject: Arc::new(subject),
            config: Arc::new(config.clone()),
        })
    }

    /// The PA's public key (SEC1 uncompressed).
    pub fn public_key(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.key.public_key()
    }

    /// The PA's subject name, DER, as in its CA certificate.
    pub fn subject(&self) -> &[u8] {
        &self.subject
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The HTTP API and who may call each route: only the vendor asks for grants; the
    /// operator revokes them, and the meter server the grant of a set its device retired; the operator and the post office list them; any identity of
    /// the back office reads the CA certificate, the public key and the CRL.
    pub fn routes() -> Routes<Pa> {
        const VENDOR: &[Who] = &[Who::Role(Role::Vendor)];
        const READERS: &[Who] = &[Who::Role(Role::Operator), Who::Role(Role::Post)];
        // The meter revokes the grant of a set its device retired (and refunded).
        const REVOKERS: &[Who] = &[Who::Role(Role::Operator), Who::Role(Role::Meter)];
        const OPERATOR: &[Who] = &[Who::Role(Role::Operator)];
        Routes::new()
            .route(Method::POST, "/v1/grants", post(grant), VENDOR)
            .route(Method::GET, "/v1/grants", get(list), READERS)
            .route(Method::POST, "/v1/licenses", post(desk::allocate), OPERATOR)
            .route(
                Method::GET,
                "/v1/licenses/{license}",
                get(desk::get_holder),
                REVOKERS,
            )
            .route(
                Method::POST,
                "/v1/grants/{serial}/revoke",
                post(revoke),
                REVOKERS,
            )
            .route(Method::GET, "/v1/crl", get(crl), &[Who::AnyRole])
            .route(Method::GET, "/v1/ca", get(ca_cert), &[Who::AnyRole])
            .route(
                Method::GET,
                "/v1/public-key",
                get(public_key),
                &[Who::AnyRole],
            )
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

    /// The validity of a grant made today.
    fn validity(&self) -> Result<(Date, Date), ApiError> {
        if let Some(v) = self.config.fixed_validity {
            return Ok(v);
        }
        let t = today();
        let to = t
            .plus_days(self.config.validity_days)
            .ok_or_else(|| ApiError::internal(STEP_GRANT, "validity past the calendar"))?;
        Ok((t, to))
    }
}

/// A grant as stored.
struct GrantRow {
    view: GrantView,
    certificate: Vec<u8>,
    pa_signature: String,
}

const GRANT_COLUMNS: &str = "serial, license, device_id, key_id, origin, not_before, not_after, \
     revoked_at, reason, certificate, pa_signature";

fn grant_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<GrantRow> {
    let revoked: Option<i64> = r.get(7)?;
    let certificate: Vec<u8> = r.get(9)?;
    let public_key = grant::certificate_public_key(&certificate).map(hex::encode);
    Ok(GrantRow {
        view: GrantView {
            serial: r.get(0)?,
            license: r.get(1)?,
            device_id: r.get(2)?,
            key_id: r.get(3)?,
            origin: r.get(4)?,
            not_before: r.get(5)?,
            not_after: r.get(6)?,
            public_key,
            revoked_at: revoked.and_then(|v| u64::try_from(v).ok()),
            reason: r.get(8)?,
        },
        certificate,
        pa_signature: r.get(10)?,
    })
}

fn response_of(row: &GrantRow, step: &str) -> Result<GrantResponse, ApiError> {
    let v = &row.view;
    Ok(GrantResponse {
        certificate: ca::pem("CERTIFICATE", &row.certificate)
            .map_err(|e| ApiError::internal(step, format!("PEM: {e}")))?,
        fields: GrantFieldsJson {
            serial: v.serial.clone(),
            not_before: v.not_before.clone(),
            not_after: v.not_after.clone(),
            license: v.license,
            origin: v.origin.clone(),
        },
        pa_signature: row.pa_signature.clone(),
    })
}

/// A random serial: 16 octets, the first in 0x01..=0x7F (positive, no padding octet).
fn new_serial() -> Vec<u8> {
    let mut s = codec::random_array::<16>().to_vec();
    s[0] = s[0] % 0x7F + 1;
    s
}

/// Whether `vendor_public_key` (one of the authorized ones) signed the forward.
fn authorized_vendor(
    c: &Connection,
    message: &[u8],
    signature: &[u8; SIGNATURE_LEN],
    step: &str,
) -> Result<Option<String>, ApiError> {
    let mut stmt = c
        .prepare("SELECT public_key FROM manufacturers WHERE retired_at IS NULL")
        .storage(step)?;
    let keys: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .storage(step)?
        .collect::<Result<_, _>>()
        .storage(step)?;
    Ok(keys
        .into_iter()
        .find(|k| hex::decode(k).is_ok_and(|pk| crypto::verify_signature(&pk, message, signature))))
}

async fn grant(State(pa): State<Pa>, body: Bytes) -> Result<Json<GrantResponse>, ApiError> {
    let step = STEP_GRANT;
    let req: GrantRequest = codec::json(&body, step)?;
    let bytes = codec::hex_vec("request", &req.request, MAX_REQUEST_LEN, step)?;
    if let Some(a) = &req.account {
        codec::ident("account", a, step)?;
    }
    let account = req.account.clone();
    let device_pk: [u8; PUBLIC_KEY_LEN] =
        codec::hex_array("device_public_key", &req.device_public_key, step)?;
    let forward_sig: [u8; SIGNATURE_LEN] =
        codec::hex_array("forward_signature", &req.forward_signature, step)?;
    let request = LicenseRequest::decode(&bytes).map_err(|_| {
        err(
            StatusCode::UNPROCESSABLE_ENTITY,
            code::REQUEST_INVALID,
            step,
            "the license request does not decode",
        )
    })?;
    let digest = crypto::sha256(&bytes);
    let (not_before, not_after) = pa.validity()?;
    let max_devices = pa.config.max_devices_per_license;
    let pa2 = pa.clone();
    let row = pa
        .db
        .run(step, move |c| {
            let message = forward_message(&digest, &device_pk);
            let Some(vendor) = authorized_vendor(c, &message, &forward_sig, step)? else {
                return Err(err(
                    StatusCode::FORBIDDEN,
                    code::FORWARD_INVALID,
                    step,
                    "the forward signature does not verify under any authorized manufacturer's key",
                ));
            };
            request.verify(&device_pk).map_err(|e| {
                err(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    code::REQUEST_INVALID,
                    step,
                    e.to_string(),
                )
            })?;
            let tx = c.transaction().storage(step)?;
            let digest_hex = hex::encode(digest);
            let sql = format!("SELECT {GRANT_COLUMNS} FROM grants WHERE request_digest = ?1");
            if let Some(row) = tx
                .query_row(&sql, [&digest_hex], grant_row)
                .optional()
                .storage(step)?
            {
                return Ok(row);
            }
            let body = &request.body;
            let device_id = codec::device_hex(&body.device);
            let origin = String::from_utf8_lossy(body.origin.as_bytes()).into_owned();
            let license = if body.license.0 == 0 {
                desk::next_license(&tx, step)?
            } else {
                body.license.0
            };
            match desk::holder(&tx, license, step)? {
                Some(h) if h.origin != origin => {
                    return Err(err(
                        StatusCode::CONFLICT,
                        code::LICENSE_REFUSED,
                        step,
                        format!(
                            "license {license} has origin {:?}, not {origin:?}",
                            h.origin
                        ),
                    ))
                }
                // Held by an account: its devices only, whoever passed the order on.
                Some(LicenseHolder {
                    account: Some(a), ..
                }) if account.as_deref() != Some(a.as_str()) => {
                    // 409, a policy refusal like `license_refused`: a 403 between services
                    // means "not your identity" and is passed on as unavailable.
                    return Err(err(
                        StatusCode::CONFLICT,
                        code::LICENSE_NOT_YOURS,
                        step,
                        format!("license {license} is held by another account than the order's"),
                    ));
                }
                Some(_) => {}
                None => {
                    tx.execute(
                        "INSERT INTO licenses (license, origin, account, created_at)
                         VALUES (?1, ?2, ?3, ?4)",
                        params![license, origin, account, now_secs()],
                    )
                    .storage(step)?;
                }
            }
            let standing: i64 = tx
                .query_row(
                    "SELECT COUNT(*) FROM grants
                     WHERE license = ?1 AND device_id = ?2 AND revoked_at IS NULL",
                    params![license, device_id],
                    |r| r.get(0),
                )
                .storage(step)?;
            if standing > 0 {
                return Err(err(
                    StatusCode::CONFLICT,
                    code::LICENSE_REFUSED,
                    step,
                    format!(
                        "license {license} is granted to device {device_id} already (another \
                         request); revoke that grant first"
                    ),
                ));
            }
            let devices: i64 = tx
                .query_row(
                    "SELECT COUNT(DISTINCT device_id) FROM grants
                     WHERE license = ?1 AND revoked_at IS NULL",
                    [license],
                    |r| r.get(0),
                )
                .storage(step)?;
            if devices >= i64::from(max_devices) {
                return Err(err(
                    StatusCode::CONFLICT,
                    code::LICENSE_REFUSED,
                    step,
                    format!("license {license} is granted to {devices} devices, the most allowed"),
                ));
            }
            let fields = GrantFields {
                serial: new_serial(),
                not_before,
                not_after,
                license: LicenseId(license),
                origin: body.origin,
            };
            let pa_public = pa2.key.public_key();
            let card = CardFields {
                pa_subject: &pa2.subject,
                pa_public_key: &pa_public,
                device: body.device,
                license_public_key: &body.license_public_key,
                nonce: &body.nonce,
            };
            let tbs = grant::tbs_certificate(&fields, &card)
                .map_err(|e| ApiError::internal(step, format!("template: {e:?}")))?;
            let signature = pa2.key.sign(&tbs);
            let cert = grant::certificate(&tbs, &signature);
            let serial_hex = hex::encode(&fields.serial);
            tx.execute(
                "INSERT INTO grants (serial, license, device_id, key_id, origin, not_before,
                     not_after, certificate, pa_signature, request_digest, vendor_key, granted_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                params![
                    serial_hex,
                    license,
                    device_id,
                    hex::encode(grant::certificate_key_id(&body.license_public_key)),
                    origin,
                    not_before.to_string(),
                    not_after.to_string(),
                    cert,
                    hex::encode(signature),
                    digest_hex,
                    vendor,
                    now_secs(),
                ],
            )
            .storage(step)?;
            let row = tx.query_row(&sql, [&digest_hex], grant_row).storage(step)?;
            tx.commit().storage(step)?;
            tracing::info!(license, device = %device_id, serial = %serial_hex, "license granted");
            Ok(row)
        })
        .await?;
    // The grant is committed (or was found by its request); the vendor has not heard yet.
    failpoint::pause("pa_grant_before_reply").await;
    Ok(Json(response_of(&row, step)?))
}

async fn revoke(
    State(pa): State<Pa>,
    UrlPath(serial): UrlPath<String>,
    body: Bytes,
) -> Result<Json<GrantView>, ApiError> {
    let step = STEP_REVOKE;
    let serial = hex::encode(codec::hex_vec("serial", &serial, 20, step)?);
    let req: GrantRevocation = codec::json(&body, step)?;
    let chars = req.reason.chars().count();
    if !(1..=MAX_REASON_CHARS).contains(&chars)
        || req.reason.trim().is_empty()
        || req.reason.chars().any(char::is_control)
    {
        return Err(ApiError::bad_request(
            step,
            format!("reason: 1 to {MAX_REASON_CHARS} characters, not blank, no control characters"),
        ));
    }
    let view = pa
        .db
        .run(step, move |c| {
            let tx = c.transaction().storage(step)?;
            let sql = format!("SELECT {GRANT_COLUMNS} FROM grants WHERE serial = ?1");
            let unknown = || {
                err(
                    StatusCode::NOT_FOUND,
                    code::UNKNOWN_GRANT,
                    step,
                    format!("no grant with serial {serial}"),
                )
            };
            let row = tx
                .query_row(&sql, [&serial], grant_row)
                .optional()
                .storage(step)?
                .ok_or_else(unknown)?;
            if row.view.revoked_at.is_some() {
                return Ok(row.view);
            }
            tx.execute(
                "UPDATE grants SET revoked_at = ?2, reason = ?3 WHERE serial = ?1",
                params![serial, now_secs(), req.reason],
            )
            .storage(step)?;
            tx.execute("UPDATE crl SET stale = 1", []).storage(step)?;
            let row = tx.query_row(&sql, [&serial], grant_row).storage(step)?;
            tx.commit().storage(step)?;
            tracing::warn!(serial = %row.view.serial, license = row.view.license, "grant revoked");
            Ok(row.view)
        })
        .await?;
    Ok(Json(view))
}

/// `GET /v1/grants` filters.
#[derive(serde::Deserialize)]
struct ListQuery {
    license: Option<u32>,
    device: Option<String>,
}

async fn list(
    State(pa): State<Pa>,
    Query(q): Query<ListQuery>,
) -> Result<Json<GrantList>, ApiError> {
    let step = STEP_LIST;
    let device = match &q.device {
        Some(d) => Some(codec::device_hex(&codec::device_id(d, step)?)),
        None => None,
    };
    let grants = pa
        .db
        .run(step, move |c| {
            let sql = format!(
                "SELECT {GRANT_COLUMNS} FROM grants
                 WHERE (?1 IS NULL OR license = ?1) AND (?2 IS NULL OR device_id = ?2)
                 ORDER BY granted_at, rowid LIMIT 10000"
            );
            let mut stmt = c.prepare(&sql).storage(step)?;
            let rows = stmt
                .query_map(params![q.license, device], grant_row)
                .storage(step)?
                .map(|r| r.map(|g| g.view))
                .collect::<Result<Vec<_>, _>>()
                .storage(step)?;
            Ok(rows)
        })
        .await?;
    Ok(Json(GrantList { grants }))
}

async fn crl(State(pa): State<Pa>) -> Result<impl IntoResponse, ApiError> {
    let step = STEP_CRL;
    let refresh = u64::from(pa.config.crl_days.max(1)) * 86_400 / 2;
    let next = u64::from(pa.config.crl_days.max(1)) * 86_400;
    let der = pa
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
            let now = u64::try_from(now_secs()).unwrap_or(0);
            if let Some((_, Some(der), issued, 0)) = &last {
                if now < u64::try_from(*issued).unwrap_or(0).saturating_add(refresh) {
                    return Ok(der.clone());
                }
            }
            let number = last.as_ref().map_or(0, |l| l.0) + 1;
            let mut stmt = tx
                .prepare("SELECT serial, revoked_at FROM grants WHERE revoked_at IS NOT NULL ORDER BY revoked_at")
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
            let der = ca::crl(&pa.ca, &pa.ca_key, number_u, now, now + next, &revoked)
                .map_err(|e| ApiError::internal(step, format!("CRL: {e}")))?;
            tx.execute(
                "INSERT INTO crl (id, number, der, issued_at, stale) VALUES (1, ?1, ?2, ?3, 0)
                 ON CONFLICT(id) DO UPDATE SET number = ?1, der = ?2, issued_at = ?3, stale = 0",
                params![number, der, now_secs()],
            )
            .storage(step)?;
            tx.commit().storage(step)?;
            Ok(der)
        })
        .await?;
    Ok(([(header::CONTENT_TYPE, "application/pkix-crl")], der))
}

async fn ca_cert(State(pa): State<Pa>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        pa.ca_pem.as_str().to_owned(),
    )
}

async fn public_key(State(pa): State<Pa>) -> Json<PaPublicKey> {
    Json(PaPublicKey {
        public_key: hex::encode(pa.key.public_key()),
        subject: hex::encode(pa.subject.as_slice()),
    })
}

/// Reads a P-256 public key file (SEC1 hex), as the vendor writes `vendor-public.key`.
pub fn read_public_key(path: &std::path::Path) -> anyhow::Result<[u8; PUBLIC_KEY_LEN]> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
    let mut key = [0u8; PUBLIC_KEY_LEN];
    hex::decode_to_slice(text.trim(), &mut key).map_err(|_| {
        anyhow::anyhow!(
            "{}: expected 130 hex digits (SEC1 uncompressed)",
            path.display()
        )
    })?;
    anyhow::ensure!(
        crypto::is_valid_public_key(&key),
        "{}: not a P-256 point",
        path.display()
    );
    Ok(key)
}

/// Whether `origin` is a postal code a license can carry (helper for the CLI).
pub fn origin_ok(origin: &str) -> bool {
    PostalCode::new(origin.as_bytes()).is_some()
}
