//! The manufacturer (seed 003, WO 99/48053 Fig. 4 steps 63, 64 and 66; `docs/licenses.md`
//! § Back office): the party whose key every PSD carries as `vendor_public_key`.
//!
//! `POST /v1/licenses` (the meter server) takes a PSD's license request and:
//! 1. looks the device up at the KMS (`GET /v1/devices/{id}`): known and not revoked;
//! 2. checks both of the request's signatures with the registered device key
//!    (`LicenseRequest::verify`);
//! 3. records it by (device, request counter): the same request again answers the same
//!    install data; another request under a used counter is refused;
//! 4. forwards it to the postal authority (`POST /v1/grants`) with the device key, signed
//!    `"openpsd license forward v1" ‖ SHA-256(request) ‖ device key`;
//! 5. rebuilds the certificate's tbsCertificate from the PA's fields, the request's key,
//!    nonce and device and the PA's subject and key (read from `pa-ca.pem`), checks the PA's
//!    signature and that the certificate is exactly that TBS so signed, and that license
//!    and origin are the ones asked for;
//! 6. countersigns `grant::countersign_message` and answers LICENSE INSTALL's data.
//!
//! The vendor cannot add a license alone: the card checks the PA's signature over the
//! certificate it rebuilds, under the PA key it was personalized with.
//!
//! The same key signs the certificate meter's rate tables and trust anchors (seed 004,
//! [`rates`]; `docs/rates.md`), which operators publish here and the meter server pushes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use der::{DecodePem as _, Encode as _};
use openpsd_core::crypto::{self, IndiciumKey, PUBLIC_KEY_LEN, SIGNATURE_LEN};
use openpsd_core::psd::license::grant::{self, CardFields, GrantFields};
use openpsd_core::psd::license::install::Install;
use openpsd_core::psd::license::request::LicenseRequest;
use openpsd_core::types::DeviceId;
use openpsd_protocol::license::{
    code, forward_message, GrantFieldsJson, GrantRequest, GrantResponse, LicenseGrant,
    LicenseOrder, VendorPublicKey,
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

pub mod rates;
mod vbox_grants;

/// The vendor's signing key file (hex P-256 scalar, 0600) in its data directory.
pub const SIGNING_KEY_FILE: &str = "vendor-signing.key";
/// Its public half (SEC1 uncompressed, hex): what PSDs are personalized with.
pub const PUBLIC_KEY_FILE: &str = "vendor-public.key";
/// Database file name.
pub const DB_FILE: &str = "vendor.sqlite";
/// Longest request accepted.
const MAX_REQUEST_LEN: usize = 1024;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS requests (
    device_id        TEXT NOT NULL,          -- 16 upper-case hex
    counter          INTEGER NOT NULL,       -- the PSD's request counter
    request_digest   TEXT NOT NULL,          -- SHA-256 of the request
    received_at      INTEGER NOT NULL,
    answer           TEXT,                   -- the LicenseGrant JSON, once countersigned
    PRIMARY KEY (device_id, counter)
);
-- The public half of the key this database was first served with (PSDs carry it).
CREATE TABLE IF NOT EXISTS signing_key (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    public_key TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
";

const STEP_LICENSE: &str = "vendor_license";
const STEP_CHECK: &str = "vendor_check_grant";

/// How the vendor is set up.
#[derive(Clone, Debug)]
pub struct Config {
    /// Data directory: `vendor.sqlite`, `vendor-signing.key`, `vendor-public.key`.
    pub data: PathBuf,
    /// The KMS's base URL (device registry).
    pub kms_url: String,
    /// The postal authority's base URL.
    pub pa_url: String,
    /// The PA's CA certificate (`pa-ca.pem`): its subject and key.
    pub pa_ca: PathBuf,
    /// The back office's PKI (the vendor's own certificate).
    pub pki: Pki,
}

/// The PA as the vendor knows it: what the card holds too.
#[derive(Clone, Debug)]
struct PaIdentity {
    subject: Vec<u8>,
    public_key: [u8; PUBLIC_KEY_LEN],
}

/// The vendor's shared state.
#[derive(Clone)]
pub struct Vendor {
    db: Db,
    key: Arc<IndiciumKey>,
    pa: Arc<PaIdentity>,
    kms: Upstream,
    pa_up: Upstream,
}

fn err(status: StatusCode, code: &str, step: &str, message: impl Into<String>) -> ApiError {
    ApiError {
        status,
        code: code.to_owned(),
        step: step.to_owned(),
        message: message.into(),
    }
}

/// The subject DER and the public key of a PA CA certificate (PEM).
pub fn read_pa_ca(path: &Path) -> anyhow::Result<(Vec<u8>, [u8; PUBLIC_KEY_LEN])> {
    let pem =
        std::fs::read(path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
    let cert = x509_cert::Certificate::from_pem(&pem)
        .map_err(|e| anyhow::anyhow!("{}: not a PEM certificate: {e}", path.display()))?;
    let tbs = cert.tbs_certificate();
    let subject = tbs.subject().to_der()?;
    let key: [u8; PUBLIC_KEY_LEN] = tbs
        .subject_public_key_info()
        .subject_public_key
        .raw_bytes()
        .try_into()
        .map_err(|_| anyhow::anyhow!("{}: not a P-256 key", path.display()))?;
    anyhow::ensure!(
        crypto::is_valid_public_key(&key),
        "{}: not a P-256 key",
        path.display()
    );
    anyhow::ensure!(
        grant::pa_subject_ok(&subject),
        "{}: the subject does not fit the license template",
        path.display()
    );
    Ok((subject, key))
}

/// Opens the vendor's key alone (made on first start), for a PA or a personalization
/// station that needs its public half before the vendor serves: the public key.
pub fn open_key(data: &Path) -> anyhow::Result<[u8; PUBLIC_KEY_LEN]> {
    Ok(load_key(data)?.public_key())
}

fn load_key(data: &Path) -> anyhow::Result<IndiciumKey> {
    openpsd_service_kit::keys::private_dir(data)?;
    let key_path = data.join(SIGNING_KEY_FILE);
    let db_path = data.join(DB_FILE);
    let depends = db_path.exists().then(|| {
        format!(
            "{} exists (PSDs are personalized with this key's public half)",
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
    openpsd_service_kit::keys::write_public(
        &data.join(PUBLIC_KEY_FILE),
        &format!("{}\n", hex::encode(key.public_key())),
    )?;
    Ok(key)
}

impl Vendor {
    /// Opens the data directory (database and key, made on first start; another key than
    /// the one the database was served with is refused) and reads the PA's CA certificate.
    pub fn open(config: &Config) -> anyhow::Result<Self> {
        let key = load_key(&config.data)?;
        let (subject, public_key) = read_pa_ca(&config.pa_ca).map_err(|e| {
            anyhow::anyhow!(
                "{e:#}. The vendor's public key is in {} already: give it to the postal \
                 authority (--vendor-public-key), start it, then pass its pa-ca.pem here",
                config.data.join(PUBLIC_KEY_FILE).display()
            )
        })?;
        let db_path = config.data.join(DB_FILE);
        let db = Db::open(
            &db_path,
            &format!("{SCHEMA}{}{}", rates::SCHEMA, vbox_grants::SCHEMA),
        )?;
        let conn = openpsd_service_kit::db::open_connection(&db_path)?;
        let public_hex = hex::encode(key.public_key());
        let recorded: Option<String> = conn
            .query_row("SELECT public_key FROM signing_key WHERE id = 1", [], |r| {
                r.get(0)
            })
            .optional()?;
        match recorded {
            Some(pk) if pk != public_hex => anyhow::bail!(
                "{} holds another key than the one {} was served with (public key {pk}); \
                 restore the right key file. Refusing to start.",
                config.data.join(SIGNING_KEY_FILE).display(),
                db_path.display()
            ),
            Some(_) => {}
            None => {
                conn.execute(
                    "INSERT INTO signing_key (id, public_key, created_at) VALUES (1, ?1, ?2)",
                    params![public_hex, now_secs()],
                )?;
            }
        }
        drop(conn);
        let tls = client_config(&config.pki, Some(Role::Vendor))?;
        tracing::info!("vendor key (public key {public_hex})");
        Ok(Self {
            db,
            key: Arc::new(key),
            pa: Arc::new(PaIdentity {
                subject,
                public_key,
            }),
            kms: Upstream::new("KMS", &config.kms_url, Role::Kms, tls.clone())?,
            pa_up: Upstream::new("postal authority", &config.pa_url, Role::Pa, tls)?,
        })
    }

    /// The vendor's public key (SEC1 uncompressed).
    pub fn public_key(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.key.public_key()
    }

    /// The HTTP API and who may call each route: only the meter server orders licenses;
    /// only an operator publishes rate tables and trust anchors, which the meter (to push
    /// them) and operators read; any identity of the back office reads the public key.
    pub fn routes() -> Routes<Vendor> {
        const METER: &[Who] = &[Who::Role(Role::Meter)];
        const OPERATOR: &[Who] = &[Who::Role(Role::Operator)];
        const METER_OR_OPERATOR: &[Who] = &[Who::Role(Role::Meter), Who::Role(Role::Operator)];
        Routes::new()
            .route(Method::POST, "/v1/licenses", post(license), METER)
            .route(
                Method::POST,
                "/v1/vbox/grants",
                post(vbox_grants::grant),
                &[Who::Role(Role::Datacenter)],
            )
            .route(Method::POST, "/v1/rates", post(rates::publish), OPERATOR)
            .route(
                Method::GET,
                "/v1/rates",
                get(rates::list_rates),
                METER_OR_OPERATOR,
            )
            .route(Method::POST, "/v1/anchors", post(rates::trust), OPERATOR)
            .route(
                Method::GET,
                "/v1/anchors",
                get(rates::list_anchors),
                METER_OR_OPERATOR,
            )
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
}

async fn public_key(State(v): State<Vendor>) -> Json<VendorPublicKey> {
    Json(VendorPublicKey {
        public_key: hex::encode(v.key.public_key()),
    })
}

/// The device's public key from the KMS: `404 unknown_device`, `410 device_revoked`.
async fn device_key(
    v: &Vendor,
    device: DeviceId,
    step: &str,
) -> Result<[u8; PUBLIC_KEY_LEN], ApiError> {
    v.kms.device_key(&codec::device_hex(&device), step).await
}

/// Checks the PA's answer against the request and makes LICENSE INSTALL's data.
fn check_grant(
    v: &Vendor,
    request: &LicenseRequest,
    answer: &GrantResponse,
) -> Result<LicenseGrant, ApiError> {
    let step = STEP_CHECK;
    let bad = |m: &str| {
        err(
            StatusCode::BAD_GATEWAY,
            code::GRANT_INVALID,
            step,
            format!("the postal authority's grant {m}"),
        )
    };
    let fields: GrantFields = answer
        .fields
        .to_fields(step)
        .map_err(|e| bad(&format!("has malformed fields ({})", e.message)))?;
    let body = &request.body;
    if body.license.0 != 0 && fields.license != body.license {
        return Err(bad("names another license than the one asked for"));
    }
    if fields.license.0 == 0 {
        return Err(bad("names license 0"));
    }
    if fields.origin != body.origin {
        return Err(bad("names another origin than the one asked for"));
    }
    let pa_signature: [u8; SIGNATURE_LEN] =
        codec::hex_array("pa_signature", &answer.pa_signature, step)
            .map_err(|_| bad("has a malformed signature"))?;
    let card = CardFields {
        pa_subject: &v.pa.subject,
        pa_public_key: &v.pa.public_key,
        device: body.device,
        license_public_key: &body.license_public_key,
        nonce: &body.nonce,
    };
    let tbs =
        grant::tbs_certificate(&fields, &card).map_err(|_| bad("does not fit the template"))?;
    if !crypto::verify_signature(&v.pa.public_key, &tbs, &pa_signature) {
        return Err(bad(
            "signature does not verify over the certificate rebuilt from the request",
        ));
    }
    let cert_der = pem_der(&answer.certificate).ok_or_else(|| bad("certificate is not PEM"))?;
    if cert_der != grant::certificate(&tbs, &pa_signature) {
        return Err(bad(
            "certificate is not the one its fields and signature make",
        ));
    }
    let countersignature = v
        .key
        .sign(&grant::countersign_message(&tbs, body.device, &body.nonce));
    let install = Install {
        request: body.counter,
        fields: fields.clone(),
        pa_signature,
        countersignature,
    };
    Ok(LicenseGrant {
        install: hex::encode(install.encode()),
        certificate: answer.certificate.clone(),
        fields: GrantFieldsJson::from_fields(&fields),
        pa_signature: answer.pa_signature.clone(),
        countersignature: hex::encode(countersignature),
    })
}

/// The DER inside one PEM `CERTIFICATE`.
fn pem_der(pem: &str) -> Option<Vec<u8>> {
    let (label, der) = der::pem::decode_vec(pem.as_bytes()).ok()?;
    (label == "CERTIFICATE").then_some(der)
}

async fn license(State(v): State<Vendor>, body: Bytes) -> Result<Json<LicenseGrant>, ApiError> {
    let step = STEP_LICENSE;
    let order: LicenseOrder = codec::json(&body, step)?;
    let bytes = codec::hex_vec("request", &order.request, MAX_REQUEST_LEN, step)?;
    let request = LicenseRequest::decode(&bytes).map_err(|_| {
        err(
            StatusCode::UNPROCESSABLE_ENTITY,
            code::REQUEST_INVALID,
            step,
            "the license request does not decode",
        )
    })?;
    let digest = crypto::sha256(&bytes);
    let digest_hex = hex::encode(digest);
    let device_id = codec::device_hex(&request.body.device);
    let counter = request.body.counter;

    // The same request again: the stored answer. Another one under this counter: refused.
    let (id2, d2) = (device_id.clone(), digest_hex.clone());
    let stored: Option<(String, Option<String>)> =
        v.db.run(step, move |c| {
            c.query_row(
                "SELECT request_digest, answer FROM requests WHERE device_id = ?1 AND counter = ?2",
                params![id2, counter],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .storage(step)
        })
        .await?;
    match &stored {
        Some((d, _)) if *d != d2 => {
            return Err(ApiError::wrong_state(
                step,
                format!("device {device_id} used request counter {counter} for another request"),
            ))
        }
        Some((_, Some(answer))) => {
            let g: LicenseGrant = serde_json::from_str(answer)
                .map_err(|e| ApiError::internal(step, format!("stored answer: {e}")))?;
            return Ok(Json(g));
        }
        _ => {}
    }

    let device_pk = device_key(&v, request.body.device, step).await?;
    request.verify(&device_pk).map_err(|e| {
        err(
            StatusCode::UNPROCESSABLE_ENTITY,
            code::REQUEST_INVALID,
            step,
            e.to_string(),
        )
    })?;
    if stored.is_none() {
        let (id2, d2) = (device_id.clone(), digest_hex.clone());
        let inserted = v
            .db
            .run(step, move |c| {
                c.execute(
                    "INSERT OR IGNORE INTO requests (device_id, counter, request_digest, received_at)
                     VALUES (?1, ?2, ?3, ?4)",
                    params![id2, counter, d2, now_secs()],
                )
                .storage(step)
            })
            .await?;
        if inserted == 0 {
            // Another call recorded this counter meanwhile; its digest decides.
            let (id2, d2) = (device_id.clone(), digest_hex.clone());
            let same: bool = v
                .db
                .run(step, move |c| {
                    c.query_row(
                        "SELECT request_digest = ?3 FROM requests WHERE device_id = ?1 AND counter = ?2",
                        params![id2, counter, d2],
                        |r| r.get(0),
                    )
                    .storage(step)
                })
                .await?;
            if !same {
                return Err(ApiError::wrong_state(
                    step,
                    format!(
                        "device {device_id} used request counter {counter} for another request"
                    ),
                ));
            }
        }
    }

    // The request is recorded under its counter; the PA has not been asked yet.
    failpoint::pause("vendor_license_after_record").await;
    let forward_signature = v.key.sign(&forward_message(&digest, &device_pk));
    let answer: GrantResponse = v
        .pa_up
        .post(
            "/v1/grants",
            &GrantRequest {
                request: order.request.to_ascii_lowercase(),
                device_public_key: hex::encode(device_pk),
                forward_signature: hex::encode(forward_signature),
                account: order.account_id.clone(),
            },
            step,
        )
        .await?;
    // The PA granted (and stored its grant); nothing is countersigned or stored here yet.
    failpoint::pause("vendor_license_after_grant").await;
    let grant = check_grant(&v, &request, &answer)?;
    let json = serde_json::to_string(&grant)
        .map_err(|e| ApiError::internal(step, format!("answer: {e}")))?;
    v.db
        .run(step, move |c| {
            c.execute(
                "UPDATE requests SET answer = ?3 WHERE device_id = ?1 AND counter = ?2 AND answer IS NULL",
                params![device_id, counter, json],
            )
            .storage(step)
        })
        .await?;
    // The countersigned answer is stored; the meter has not heard yet.
    failpoint::pause("vendor_license_before_reply").await;
    tracing::info!(license = grant.fields.license, "license countersigned");
    Ok(Json(grant))
}
