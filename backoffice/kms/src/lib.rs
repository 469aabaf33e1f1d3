//! Key management system (seed 000, steps 225-240 and 270-280). It registers devices from
//! the personalization output (their public keys), verifies audits with the device's
//! registered public key, signs refill combinations into refill messages — only
//! combinations the recharging center signed — and signs audit receipts. It never sees
//! customer money.
//!
//! The refill suite is asymmetric (issue 12 item 3): the KMS holds **no secret of any
//! device**. Its one secret is its own P-256 signing key (`kms-signing.key`), whose public
//! half (`kms-public.key`, `GET /v1/public-key`) personalization writes into every PSD; the
//! PSD accepts a refill message or a receipt only under that signature. Each refill message
//! signed is logged with the RC's signature, so every message that ever left the KMS can be
//! traced to the combination the RC authorized. The issuer (an operator) can revoke a
//! device: its audits, refill messages and receipts are then refused (`410 device_revoked`).
//!
//! A database of the retired K1 suite (a `k1_wrapped` column) is migrated at start: the
//! column is dropped, its devices are kept as `k1-retired` and refused
//! (`409 legacy_refill_suite`) until they are personalized and registered again.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use openpsd_core::crypto::{self, IndiciumKey};
use openpsd_core::psd::audit::{AuditData, AUDIT_TAG};
use openpsd_core::psd::device::MAX_REGISTER_SETS;
use openpsd_core::psd::receipt::Receipt;
use openpsd_core::types::{DeviceId, PostalCode};
use rusqlite::{params, Connection, OptionalExtension};

use openpsd_protocol::ErrorCode;
use openpsd_protocol::{
    AuditBody, DeviceInfo, DeviceRegistration, KmsPublicKey, ReceiptRequest, ReceiptResponse,
    RefillMessage, Revocation, SignedCombination, VerifiedAudit,
};
use openpsd_service_kit::access::{Peer, RateLimit, Routes, Who};
use openpsd_service_kit::codec::{self, OsRandom};
use openpsd_service_kit::db::{now_secs, to_sql_int, Db};
use openpsd_service_kit::error::{ApiError, StorageContext};
use openpsd_service_kit::failpoint;
use openpsd_service_kit::tls::Role;

#[cfg(test)]
mod tests;
mod vbox;

/// The KMS's signing key file (hex P-256 scalar, 0600) in its data directory, unless
/// [`Config::signing_key`] puts it elsewhere.
pub const SIGNING_KEY_FILE: &str = "kms-signing.key";
/// Its public half (SEC1 uncompressed, 130 hex, readable), written beside the signing key
/// for personalization stations working offline.
pub const PUBLIC_KEY_FILE: &str = "kms-public.key";
/// The master key of the retired K1 suite. No longer read; the KMS says at start that it
/// may be deleted.
pub const RETIRED_MASTER_KEY_FILE: &str = "kms-master.key";
/// Database file name.
pub const DB_FILE: &str = "kms.sqlite";

/// `devices.suite` of a device registered with its public key (audits signed by it).
const SUITE_ECDSA: &str = "ecdsa";
/// `devices.suite` of a device registered under the retired K1 suite (migrated rows).
const SUITE_K1_RETIRED: &str = "k1-retired";

/// Length of a version-2 audit (the retired suite: an 87-byte body ‖ AES-CMAC 16).
const K1_AUDIT_LEN: usize = 87 + 16;
/// Layout version of those audits.
const K1_AUDIT_VERSION: u8 = 2;

/// Longest revocation reason, in characters.
const MAX_REASON_CHARS: usize = 200;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS devices (
    device_id      TEXT PRIMARY KEY,         -- 16 upper-case hex
    key_id         TEXT NOT NULL,
    public_key     TEXT NOT NULL,            -- the device key its audits are signed with
    licenses       TEXT NOT NULL,            -- JSON [[license, origin], ...] in set order
    registered_at  INTEGER NOT NULL,
    suite          TEXT NOT NULL DEFAULT 'ecdsa', -- 'k1-retired': migrated from the K1 suite
    revoked_at     INTEGER,                  -- set once by the issuer; never cleared
    revoked_reason TEXT
);
CREATE TABLE IF NOT EXISTS refill_messages (
    combination_id TEXT PRIMARY KEY,         -- one message per RC combination
    device_id      TEXT NOT NULL REFERENCES devices(device_id),
    license        INTEGER NOT NULL,
    amount         INTEGER NOT NULL,
    control_sum    INTEGER NOT NULL,
    refills        INTEGER NOT NULL,
    signature      TEXT NOT NULL,            -- the RC's, as received
    sealed_at      INTEGER NOT NULL
);
-- The public half of the signing key this database was first served with: devices were
-- personalized with it, so another key (or none) is refused at start.
CREATE TABLE IF NOT EXISTS signing_key (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    public_key TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
";

/// Columns `devices` got after the K1 suite.
const DEVICE_COLUMNS: &[(&str, &str)] = &[
    ("suite", "TEXT NOT NULL DEFAULT 'ecdsa'"),
    ("revoked_at", "INTEGER"),
    ("revoked_reason", "TEXT"),
];

// Steps (the `step` of an error).
const STEP_REGISTER: &str = "kms_register";
const STEP_VERIFY: &str = "kms_verify_audit";
const STEP_SEAL: &str = "kms_seal";
const STEP_RECEIPT: &str = "kms_receipt";
const STEP_DEVICE: &str = "kms_device";
const STEP_REVOKE: &str = "kms_revoke";

/// How the KMS is set up.
#[derive(Clone, Debug)]
pub struct Config {
    /// Data directory: `kms.sqlite` (and `kms-signing.key`, `kms-public.key` unless
    /// `signing_key` says where).
    pub data: PathBuf,
    /// The recharging center's public key (SEC1 uncompressed).
    pub recharge_public_key: [u8; 65],
    /// The signing key file, when it lives outside the data directory (another disk, a
    /// secrets mount), so that a copy of the data directory alone signs nothing.
    pub signing_key: Option<PathBuf>,
}

impl Config {
    /// Where the signing key is: `signing_key`, or `kms-signing.key` in the data directory.
    pub fn signing_key_path(&self) -> PathBuf {
        self.signing_key
            .clone()
            .unwrap_or_else(|| self.data.join(SIGNING_KEY_FILE))
    }

    /// Where the public key file is: `kms-public.key` beside the signing key.
    pub fn public_key_path(&self) -> PathBuf {
        self.signing_key_path().with_file_name(PUBLIC_KEY_FILE)
    }
}

/// The KMS's shared state.
#[derive(Clone)]
pub struct Kms {
    db: Db,
    key: Arc<IndiciumKey>,
    rc_public_key: [u8; 65],
}

/// Reads a public key file: SEC1 hex (as the recharging center writes
/// `recharge-public.key` and the KMS `kms-public.key`), whitespace ignored.
pub fn read_public_key(path: &Path) -> anyhow::Result<[u8; 65]> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
    let mut key = [0u8; 65];
    hex::decode_to_slice(text.trim(), &mut key).map_err(|_| {
        anyhow::anyhow!(
            "{}: expected an uncompressed SEC1 P-256 point (130 hex digits)",
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

/// The KMS's public key as `config`'s KMS wrote it (`kms-public.key` beside its signing
/// key), for a personalization station or the demo room that did not start the KMS.
pub fn read_kms_public_key(config: &Config) -> anyhow::Result<[u8; 65]> {
    read_public_key(&config.public_key_path())
}

impl Kms {
    /// Opens the data directory: the database (migrating one of the K1 suite), then the
    /// signing key, made on first start. Refused when the key is missing or another one
    /// while the database depends on it (it was served with it, or devices are registered
    /// under the asymmetric suite): every PSD personalized with its public half would be
    /// stranded by a new key.
    pub fn open(config: &Config) -> anyhow::Result<Self> {
        openpsd_service_kit::keys::private_dir(&config.data)?;
        anyhow::ensure!(
            crypto::is_valid_public_key(&config.recharge_public_key),
            "the recharging center's public key is not a P-256 point"
        );
        let db_path = config.data.join(DB_FILE);
        let db = Db::open(&db_path, &format!("{SCHEMA}{}", vbox::SCHEMA))?;
        let mut conn = openpsd_service_kit::db::open_connection(&db_path)?;
        retire_k1(&mut conn)?;

        let recorded: Option<String> = conn
            .query_row("SELECT public_key FROM signing_key WHERE id = 1", [], |r| {
                r.get(0)
            })
            .optional()?;
        let devices: i64 = conn.query_row(
            "SELECT COUNT(*) FROM devices WHERE suite = ?1",
            [SUITE_ECDSA],
            |r| r.get(0),
        )?;
        let key_path = config.signing_key_path();
        let depends = match (&recorded, devices) {
            (_, n) if n > 0 => Some(format!(
                "{} has {n} device(s) registered whose PSDs hold its public half",
                db_path.display()
            )),
            (Some(pk), _) => Some(format!(
                "{} was served with it (public key {pk}; PSDs personalized offline may hold it)",
                db_path.display()
            )),
            (None, _) => None,
        };
        openpsd_service_kit::keys::ensure_key_kept_for(&key_path, depends.as_deref())?;
        let scalar = openpsd_service_kit::keys::load_or_create(
            &key_path,
            || IndiciumKey::generate(&mut OsRandom).secret_bytes(),
            |b| IndiciumKey::from_bytes(b).is_some(),
        )?;
        let key = IndiciumKey::from_bytes(scalar.as_ref())
            .ok_or_else(|| anyhow::anyhow!("{}: not a P-256 scalar", key_path.display()))?;
        let public_hex = hex::encode(key.public_key());
        match recorded {
            Some(pk) if pk != public_hex => anyhow::bail!(
                "{} holds another key than the one {} was served with (public key {pk}, this \
                 file's {public_hex}): every PSD personalized since holds the other one. \
                 Restore the right key file. Refusing to start.",
                key_path.display(),
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
        write_public_key(&config.public_key_path(), &public_hex);

        let old_master = config.data.join(RETIRED_MASTER_KEY_FILE);
        if old_master.exists() {
            tracing::warn!(
                "{} is no longer read: the KMS keeps no K1 (the refill suite is asymmetric). \
                 It only opens the K1s in backups of {DB_FILE} from before the migration; \
                 delete it once those need not be read",
                old_master.display()
            );
        }
        tracing::info!(
            key_id = %hex::encode(key.key_id().0),
            "KMS signing key {} (public key {public_hex})",
            key_path.display()
        );
        Ok(Self {
            db,
            key: Arc::new(key),
            rc_public_key: config.recharge_public_key,
        })
    }

    /// The public key refill messages and receipts are signed with (SEC1 uncompressed):
    /// what personalization writes into every PSD.
    pub fn public_key(&self) -> [u8; 65] {
        self.key.public_key()
    }

    /// The HTTP API and who may call each route: the issuer (an operator) registers and
    /// revokes devices; only the meter server has audits verified, refill messages signed
    /// and receipts made; any service may read the KMS's public key (`docs/security.md`).
    pub fn routes() -> Routes<Kms> {
        const METER: &[Who] = &[Who::Role(Role::Meter)];
        const OPERATOR: &[Who] = &[Who::Role(Role::Operator)];
        // The post office reads device keys and their revocation to verify indicia; the
        // vendor, to check a PSD's license request (seed 003); the certificate authority
        // and the creditor, to check a PSD's key attestation (seed 004); the data center,
        // that a virtual meter is not revoked before it prints (seed 001).
        const READERS: &[Who] = &[
            Who::Role(Role::Meter),
            Who::Role(Role::Datacenter),
            Who::Role(Role::Operator),
            Who::Role(Role::Post),
            Who::Role(Role::Vendor),
            Who::Role(Role::Ca),
            Who::Role(Role::Creditor),
        ];
        Routes::new()
            .route(Method::POST, "/v1/devices", post(register), OPERATOR)
            .route(Method::GET, "/v1/devices/{device_id}", get(device), READERS)
            .route(
                Method::POST,
                "/v1/devices/{device_id}/revoke",
                post(revoke),
                OPERATOR,
            )
            .route(
                Method::GET,
                "/v1/public-key",
                get(public_key),
                &[Who::AnyRole],
            )
            .route(Method::POST, "/v1/audits/verify", post(verify_audit), METER)
            .route(
                Method::POST,
                "/v1/refill-messages",
                post(seal),
                &[Who::Role(Role::Meter), Who::Role(Role::Datacenter)],
            )
            .route(
                Method::POST,
                "/v1/vbox/boxes",
                post(vbox::register_box),
                OPERATOR,
            )
            .route(
                Method::POST,
                "/v1/vbox/meters",
                post(vbox::register_meter),
                &[Who::Role(Role::Datacenter)],
            )
            .route(Method::POST, "/v1/receipts", post(receipt), METER)
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

    /// A registered device as stored, or `404 unknown_device`.
    async fn device_row(&self, device: DeviceId, step: &'static str) -> Result<Row, ApiError> {
        let id = codec::device_hex(&device);
        let id2 = id.clone();
        self.db
            .run(step, move |c| read_row(c, &id2, step))
            .await?
            .ok_or_else(|| ApiError::unknown_device(step, &id))
    }

    /// The public key of a device the KMS serves: `404 unknown_device`, `410
    /// device_revoked`, `409 legacy_refill_suite` otherwise.
    async fn serving_key(
        &self,
        device: DeviceId,
        step: &'static str,
    ) -> Result<[u8; 65], ApiError> {
        let row = self.device_row(device, step).await?;
        row.serving(step)?;
        codec::hex_array::<65>("public_key", &row.info.public_key, step)
            .map_err(|_| ApiError::internal(step, "stored public key is not 65 bytes of hex"))
    }

    /// Step 230: decodes an audit and checks its signature with the device's public key.
    async fn open_audit(&self, hex_audit: &str, step: &'static str) -> Result<AuditData, ApiError> {
        let bytes = codec::hex_vec("audit", hex_audit, 256, step)?;
        let malformed = |message: &str| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::AuditMalformed,
                step,
                message,
            )
        };
        let claimed = match AuditData::decode_unverified(&bytes) {
            Ok(a) => a,
            Err(_) => {
                // An audit of the retired suite (an old PSD or host): say so, for its device.
                if let Some(device) = k1_audit_device(&bytes) {
                    self.serving_key(device, step).await?;
                    return Err(malformed(
                        "a version-2 audit (MACed under K1): the K1 refill suite is retired; \
                         the PSD must be personalized again",
                    ));
                }
                return Err(malformed("the audit bytes do not decode"));
            }
        };
        let public_key = self.serving_key(claimed.device, step).await?;
        // The same check as `AuditData::open`, with ring: ~6x the verifications per second
        // of core's portable p256 on a server (backoffice/post/src/verify.rs measures both).
        let verified = AuditData::signed_parts(&bytes).is_some_and(|(signed, sig)| {
            ring::signature::UnparsedPublicKey::new(
                &ring::signature::ECDSA_P256_SHA256_FIXED,
                &public_key[..],
            )
            .verify(&signed, sig)
            .is_ok()
        });
        if !verified {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::AuditSignatureInvalid,
                step,
                "the audit's signature does not verify under the device's registered public key",
            ));
        }
        Ok(claimed)
    }
}

/// The device a version-2 (K1 suite) audit names, if `bytes` have that shape.
fn k1_audit_device(bytes: &[u8]) -> Option<DeviceId> {
    if bytes.len() != K1_AUDIT_LEN || bytes.first() != Some(&AUDIT_TAG) {
        return None;
    }
    if bytes.get(1) != Some(&K1_AUDIT_VERSION) {
        return None;
    }
    Some(DeviceId(bytes.get(2..10)?.try_into().ok()?))
}

/// Writes `kms-public.key` unless it holds this key already. A directory the KMS cannot
/// write (a read-only secrets mount) is not fatal: the key is also served at
/// `GET /v1/public-key` and logged.
fn write_public_key(path: &Path, public_hex: &str) {
    match std::fs::read_to_string(path) {
        Ok(text) if text.trim() == public_hex => return,
        Ok(_) => tracing::warn!(
            "{} held another public key; replacing it with this KMS's",
            path.display()
        ),
        Err(_) => {}
    }
    if let Err(e) = openpsd_service_kit::keys::write_public(path, &format!("{public_hex}\n")) {
        tracing::warn!(
            "could not write {}: {e:#}; personalization stations must take the KMS public key \
             from GET /v1/public-key ({public_hex})",
            path.display()
        );
    }
}

/// Migrates a database of the K1 suite, in one transaction: the K1 column dropped, its
/// devices kept as `k1-retired`; then the file rewritten (`VACUUM`, with `secure_delete`)
/// and the WAL emptied so no wrapped K1 stays in a free page. Adds the columns newer than
/// the K1 suite to any database. Returns how many devices were retired.
fn retire_k1(conn: &mut Connection) -> anyhow::Result<usize> {
    let have: Vec<String> = conn
        .prepare("PRAGMA table_info(devices)")?
        .query_map([], |r| r.get::<_, String>(1))?
        .collect::<Result<_, _>>()?;
    let has_k1 = have.iter().any(|c| c == "k1_wrapped");
    conn.execute_batch("PRAGMA secure_delete = ON")?;
    let tx = conn.transaction()?;
    openpsd_service_kit::db::add_missing_columns(&tx, "devices", DEVICE_COLUMNS)?;
    let mut retired = 0;
    if has_k1 {
        retired = tx.execute("UPDATE devices SET suite = ?1", [SUITE_K1_RETIRED])?;
        tx.execute_batch("ALTER TABLE devices DROP COLUMN k1_wrapped")?;
    }
    tx.commit()?;
    if has_k1 {
        conn.execute_batch("VACUUM")?;
        let busy: i64 = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
        if busy != 0 {
            tracing::warn!("the WAL could not be emptied after the K1 migration; it will be at the next checkpoint");
        }
        tracing::warn!(
            devices = retired,
            "K1 suite retired: the wrapped K1s are deleted from {DB_FILE}; {retired} device(s) \
             registered under it are refused (409 legacy_refill_suite) until personalized and \
             registered again"
        );
    }
    Ok(retired)
}

/// A `devices` row.
struct Row {
    info: DeviceInfo,
    suite: String,
    /// `licenses` as stored (JSON), to compare registrations.
    licenses_json: String,
}

impl Row {
    /// Refuses a device the KMS no longer serves.
    fn serving(&self, step: &str) -> Result<(), ApiError> {
        let id = &self.info.device_id;
        if let Some(at) = self.info.revoked_at {
            return Err(ApiError::new(
                StatusCode::GONE,
                ErrorCode::DeviceRevoked,
                step,
                format!(
                    "device {id} was revoked by its issuer (at {at}: {})",
                    self.info.reason.as_deref().unwrap_or("")
                ),
            ));
        }
        if self.suite != SUITE_ECDSA {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::LegacyRefillSuite,
                step,
                format!(
                    "device {id} was personalized for the retired K1 suite; personalize the \
                     device again (and register its new public key)"
                ),
            ));
        }
        Ok(())
    }
}

fn read_row(c: &Connection, id: &str, step: &str) -> Result<Option<Row>, ApiError> {
    type Raw = (String, String, String, String, Option<i64>, Option<String>);
    let raw: Option<Raw> = c
        .query_row(
            "SELECT key_id, public_key, licenses, suite, revoked_at, revoked_reason
             FROM devices WHERE device_id = ?1",
            [id],
            |r| r.try_into(),
        )
        .optional()
        .storage(step)?;
    let Some((key_id, public_key, licenses_json, suite, revoked_at, reason)) = raw else {
        return Ok(None);
    };
    let licenses = serde_json::from_str(&licenses_json)
        .map_err(|e| ApiError::internal(step, format!("stored licenses: {e}")))?;
    let revoked_at = revoked_at
        .map(|t| openpsd_service_kit::db::from_sql_int(t, step))
        .transpose()?;
    Ok(Some(Row {
        info: DeviceInfo {
            device_id: id.to_owned(),
            key_id,
            public_key,
            licenses,
            revoked_at,
            reason,
        },
        suite,
        licenses_json,
    }))
}

/// Validated registration fields.
struct Registration {
    licenses: String,
    info: DeviceInfo,
}

fn validate_registration(r: &DeviceRegistration) -> Result<Registration, ApiError> {
    let step = STEP_REGISTER;
    let device = codec::device_id(&r.device_id, step)?;
    let public_key = codec::hex_array::<65>("public_key", &r.public_key, step)?;
    if !crypto::is_valid_public_key(&public_key) {
        return Err(ApiError::bad_request(step, "public_key: not a P-256 point"));
    }
    let key_id = codec::hex_array::<4>("key_id", &r.key_id, step)?;
    if crypto::key_id(&public_key).0 != key_id {
        return Err(ApiError::bad_request(
            step,
            "key_id is not the public key's identifier",
        ));
    }
    if r.licenses.is_empty() || r.licenses.len() > MAX_REGISTER_SETS {
        return Err(ApiError::bad_request(
            step,
            format!("licenses: 1 to {MAX_REGISTER_SETS} register sets"),
        ));
    }
    for (_, origin) in &r.licenses {
        if PostalCode::new(origin.as_bytes()).is_none() {
            return Err(ApiError::bad_request(
                step,
                format!("licenses: '{origin}' is not a postal code"),
            ));
        }
    }
    let licenses = serde_json::to_string(&r.licenses)
        .map_err(|e| ApiError::internal(step, format!("licenses: {e}")))?;
    Ok(Registration {
        licenses,
        info: DeviceInfo {
            device_id: codec::device_hex(&device),
            key_id: hex::encode(key_id),
            public_key: hex::encode(public_key),
            licenses: r.licenses.clone(),
            revoked_at: None,
            reason: None,
        },
    })
}

/// `POST /v1/devices`: `201` new (or a device of the retired K1 suite registered again
/// with its new key), `200` the same registration again, `409` otherwise; `400` for a
/// body that still carries K1.
async fn register(State(kms): State<Kms>, body: Bytes) -> Result<impl IntoResponse, ApiError> {
    let step = STEP_REGISTER;
    // A body still carrying K1 does not deserialize (`DeviceRegistration`): refused 400,
    // its value neither stored nor echoed.
    let req: DeviceRegistration = codec::json(&body, step)?;
    let reg = validate_registration(&req)?;
    let info = reg.info.clone();
    let (created, info) = kms
        .db
        .run(step, move |c| {
            let tx = c.transaction().storage(step)?;
            let id = &info.device_id;
            let existing = read_row(&tx, id, step)?;
            let now = now_secs();
            match existing {
                Some(row) if row.info.revoked_at.is_some() && row.suite != SUITE_ECDSA => {
                    Err(ApiError::new(
                        StatusCode::GONE,
                        ErrorCode::DeviceRevoked,
                        step,
                        format!("device {id} was revoked by its issuer; it is not registered again"),
                    ))
                }
                Some(row) if row.suite != SUITE_ECDSA => {
                    // Personalized again after the K1 suite: its new public key replaces
                    // the retired registration (the issuer's call; the meter keeps its
                    // history).
                    tx.execute(
                        "UPDATE devices SET key_id = ?2, public_key = ?3, licenses = ?4,
                                suite = ?5, registered_at = ?6
                         WHERE device_id = ?1",
                        params![id, info.key_id, info.public_key, reg.licenses, SUITE_ECDSA, now],
                    )
                    .storage(step)?;
                    tx.commit().storage(step)?;
                    tracing::warn!(device = %id, "device of the retired K1 suite registered again with its new public key");
                    Ok((true, info))
                }
                Some(row) => {
                    if row.info.key_id == info.key_id
                        && row.info.public_key == info.public_key
                        && row.licenses_json == reg.licenses
                    {
                        Ok((false, row.info))
                    } else {
                        Err(ApiError::new(
                            StatusCode::CONFLICT,
                            ErrorCode::DeviceConflict,
                            step,
                            format!("device {id} is registered already with other keys or licenses"),
                        ))
                    }
                }
                None => {
                    tx.execute(
                        "INSERT INTO devices (device_id, key_id, public_key, licenses, registered_at, suite)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                        params![id, info.key_id, info.public_key, reg.licenses, now, SUITE_ECDSA],
                    )
                    .storage(step)?;
                    tx.commit().storage(step)?;
                    tracing::info!(device = %id, "device registered");
                    Ok((true, info))
                }
            }
        })
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(info)))
}

/// `GET /v1/devices/{id}`: a registered device's public data, and whether it is revoked.
async fn device(
    State(kms): State<Kms>,
    UrlPath(device_id): UrlPath<String>,
) -> Result<Json<DeviceInfo>, ApiError> {
    let step = STEP_DEVICE;
    let device = codec::device_id(&device_id, step)?;
    Ok(Json(kms.device_row(device, step).await?.info))
}

/// `POST /v1/devices/{id}/revoke` (the issuer): from now on the device's audits are not
/// verified and no refill message or receipt is made for it (`410 device_revoked`).
/// Idempotent: a second call answers the first revocation (its time and reason).
async fn revoke(
    State(kms): State<Kms>,
    UrlPath(device_id): UrlPath<String>,
    body: Bytes,
) -> Result<Json<DeviceInfo>, ApiError> {
    let step = STEP_REVOKE;
    let device = codec::device_id(&device_id, step)?;
    let req: Revocation = codec::json(&body, step)?;
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
    let id = codec::device_hex(&device);
    let (newly, info) = kms
        .db
        .run(step, move |c| {
            let tx = c.transaction().storage(step)?;
            let row =
                read_row(&tx, &id, step)?.ok_or_else(|| ApiError::unknown_device(step, &id))?;
            if row.info.revoked_at.is_some() {
                return Ok((false, row.info));
            }
            tx.execute(
                "UPDATE devices SET revoked_at = ?2, revoked_reason = ?3
                 WHERE device_id = ?1 AND revoked_at IS NULL",
                params![id, now_secs(), req.reason],
            )
            .storage(step)?;
            let row = read_row(&tx, &id, step)?
                .ok_or_else(|| ApiError::internal(step, "revoked device vanished"))?;
            tx.commit().storage(step)?;
            Ok((true, row.info))
        })
        .await?;
    if newly {
        tracing::warn!(device = %info.device_id, reason = info.reason.as_deref().unwrap_or(""), "device revoked by its issuer");
    }
    Ok(Json(info))
}

/// `GET /v1/public-key`: the key refill messages and receipts are signed with.
async fn public_key(State(kms): State<Kms>) -> Json<KmsPublicKey> {
    Json(KmsPublicKey {
        public_key: hex::encode(kms.key.public_key()),
        key_id: hex::encode(kms.key.key_id().0),
    })
}

/// `POST /v1/audits/verify` (steps 225-240).
async fn verify_audit(
    State(kms): State<Kms>,
    body: Bytes,
) -> Result<Json<VerifiedAudit>, ApiError> {
    let req: AuditBody = codec::json(&body, STEP_VERIFY)?;
    let audit = kms.open_audit(&req.audit, STEP_VERIFY).await?;
    Ok(Json(VerifiedAudit::from(&audit)))
}

/// `POST /v1/refill-messages` (steps 270-280): signs a combination the RC signed (a
/// refill, or a void of amount zero) into the refill message the device accepts.
async fn seal(
    State(kms): State<Kms>,
    Extension(peer): Extension<Peer>,
    body: Bytes,
) -> Result<Json<RefillMessage>, ApiError> {
    let step = STEP_SEAL;
    let req: SignedCombination = codec::json(&body, step)?;
    let c = req.combination.to_core(step)?;
    let signature =
        codec::hex_array::<{ crypto::SIGNATURE_LEN }>("signature", &req.signature, step)
            .map_err(|_| not_authorized("the signature is not 64 bytes of hex (r‖s)"))?;
    // Seed 000's "single point of compromise" guard: the KMS signs only what the RC
    // decided.
    if !crypto::verify_signature(&kms.rc_public_key, &c.body(), &signature) {
        return Err(not_authorized(
            "the combination's signature does not verify under the recharging center's key",
        ));
    }
    // An amount of zero is a void (the RC signs one only for a refill it holds, with the
    // same precondition: `docs/refill.md` § Cancel); signed like any refill message.
    if c.amount.0 > i64::MAX as u64 || c.control_sum.0 > i64::MAX as u64 {
        return Err(ApiError::amount_invalid(
            step,
            "amount or control sum out of range",
        ));
    }
    kms.serving_key(c.device, step).await?;
    // RFC 6979: the same combination always gives the same message.
    let message = c.sign(&kms.key);

    let device = codec::device_hex(&c.device);
    let comb_id = hex::encode(c.combination_id);
    let sig_hex = hex::encode(signature);
    let (license, amount, control_sum, refills) = (
        i64::from(c.license.0),
        to_sql_int(c.amount.0, step)?,
        to_sql_int(c.control_sum.0, step)?,
        i64::from(c.refills.0),
    );
    kms.db
        .run(step, move |conn| {
            let tx = conn.transaction().storage(step)?;
            // Again inside the transaction that logs the message: a revocation committed
            // since the check above must not see a message leave after it. (The issuer's
            // revoke is a write on this database, so it is either before this or after
            // the message was logged.)
            read_row(&tx, &device, step)?
                .ok_or_else(|| ApiError::unknown_device(step, &device))?
                .serving(step)?;
            // The data center's refills are for the virtual meters its boxes created only.
            if peer.role == Some(Role::Datacenter) && !vbox::is_vbox_meter(&tx, &device, step)? {
                return Err(ApiError::unknown_device(step, &device));
            }
            let existing: Option<(String, i64, i64, i64, i64)> = tx
                .query_row(
                    "SELECT device_id, license, amount, control_sum, refills
                     FROM refill_messages WHERE combination_id = ?1",
                    [&comb_id],
                    |r| r.try_into(),
                )
                .optional()
                .storage(step)?;
            match existing {
                // The same combination again (a retry): the same message, logged once.
                Some(row) if row == (device.clone(), license, amount, control_sum, refills) => {
                    return Ok(())
                }
                Some(_) => {
                    return Err(not_authorized(
                        "this combination ID was signed already for other data",
                    ))
                }
                None => {}
            }
            tx.execute(
                "INSERT INTO refill_messages
                 (combination_id, device_id, license, amount, control_sum, refills, signature, sealed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![comb_id, device, license, amount, control_sum, refills, sig_hex, now_secs()],
            )
            .storage(step)?;
            tx.commit().storage(step)
        })
        .await?;
    failpoint::pause("kms_seal_before_reply").await;
    Ok(Json(RefillMessage {
        refill_message: hex::encode(message),
    }))
}

fn not_authorized(message: &str) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        ErrorCode::CombinationNotAuthorized,
        STEP_SEAL,
        message,
    )
}

/// `POST /v1/receipts`: the back office's acceptance of an audit, signed for the PSD.
async fn receipt(State(kms): State<Kms>, body: Bytes) -> Result<Json<ReceiptResponse>, ApiError> {
    let step = STEP_RECEIPT;
    let req: ReceiptRequest = codec::json(&body, step)?;
    let accepted_on = codec::date("accepted_on", &req.accepted_on, step)?;
    let audit = kms.open_audit(&req.audit, step).await?;
    let r = Receipt {
        device: audit.device,
        nonce: audit.nonce,
        accepted_on,
    };
    Ok(Json(ReceiptResponse {
        receipt: hex::encode(r.sign(&kms.key)),
    }))
}
