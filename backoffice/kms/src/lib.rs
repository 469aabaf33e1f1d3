//! Key management system (seed 000, steps 225-240 and 270-280): the only service that
//! holds K1. It registers devices from the personalization output, verifies audit MACs,
//! seals refill combinations into refill messages — only combinations the recharging
//! center signed — and makes audit receipts. It never sees customer money.
//!
//! K1 is stored wrapped (AES-256 key wrap, RFC 3394) under a key derived from the master
//! key (`kms-master.key`) and the device ID, so the database alone does not give K1 away
//! and a wrapped K1 moved to another device's row does not unwrap there. Each refill message sealed
//! is logged with the RC's signature, so every message that ever left the KMS can be
//! traced to the combination the RC authorized.

use axum::http::Method;
use openpsd_service_kit::access::{RateLimit, Routes, Who};
use openpsd_service_kit::tls::Role;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aes_kw::KwAes256;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use openpsd_core::crypto::{self, MacKey, MAC_KEY_LEN};
use openpsd_core::psd::audit::AuditData;
use openpsd_core::psd::device::MAX_REGISTER_SETS;
use openpsd_core::psd::receipt::Receipt;
use openpsd_core::types::{DeviceId, PostalCode};
use rusqlite::{params, OptionalExtension};
use zeroize::Zeroizing;

use openpsd_protocol::ErrorCode;
use openpsd_protocol::{
    AuditBody, DeviceInfo, DeviceRegistration, ReceiptRequest, ReceiptResponse, RefillMessage,
    SignedCombination, VerifiedAudit,
};
use openpsd_service_kit::codec;
use openpsd_service_kit::db::{now_secs, to_sql_int, Db};
use openpsd_service_kit::error::{ApiError, StorageContext};
use openpsd_service_kit::failpoint;

/// Master key file name in the KMS data directory.
pub const MASTER_KEY_FILE: &str = "kms-master.key";
/// Database file name.
pub const DB_FILE: &str = "kms.sqlite";

/// Domain label of the per-device key-encryption key.
const KEK_LABEL: &[u8] = b"openpsd kms k1 wrap v2";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS devices (
    device_id     TEXT PRIMARY KEY,          -- 16 upper-case hex
    k1_wrapped    BLOB NOT NULL,             -- RFC 3394 AES-256 key wrap of K1 (24 bytes) under
                                             -- the device's KEK (see Kms::device_kek)
    key_id        TEXT NOT NULL,
    public_key    TEXT NOT NULL,
    licenses      TEXT NOT NULL,             -- JSON [[license, origin], ...] in set order
    registered_at INTEGER NOT NULL
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
";

// Steps (the `step` of an error).
const STEP_REGISTER: &str = "kms_register";
const STEP_VERIFY: &str = "kms_verify_audit";
const STEP_SEAL: &str = "kms_seal";
const STEP_RECEIPT: &str = "kms_receipt";
const STEP_DEVICE: &str = "kms_device";

/// How the KMS is set up.
#[derive(Clone, Debug)]
pub struct Config {
    /// Data directory: `kms.sqlite` (and `kms-master.key` unless `master_key` says where).
    pub data: PathBuf,
    /// The recharging center's public key (SEC1 uncompressed).
    pub recharge_public_key: [u8; 65],
    /// The master key file, when it lives outside the data directory (another disk, a
    /// secrets mount), so that a copy of the data directory alone unwraps no K1.
    pub master_key: Option<PathBuf>,
}

impl Config {
    /// Where the master key is: `master_key`, or `kms-master.key` in the data directory.
    pub fn master_key_path(&self) -> PathBuf {
        self.master_key
            .clone()
            .unwrap_or_else(|| self.data.join(MASTER_KEY_FILE))
    }
}

/// The KMS's shared state.
#[derive(Clone)]
pub struct Kms {
    db: Db,
    master: Arc<Zeroizing<[u8; 32]>>,
    rc_public_key: [u8; 65],
}

/// Reads a public key file: SEC1 hex (as the recharging center writes
/// `recharge-public.key`), whitespace ignored.
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

impl Kms {
    /// Opens the data directory, making the master key on first start.
    pub fn open(config: &Config) -> anyhow::Result<Self> {
        openpsd_service_kit::keys::private_dir(&config.data)?;
        anyhow::ensure!(
            crypto::is_valid_public_key(&config.recharge_public_key),
            "the recharging center's public key is not a P-256 point"
        );
        let master_path = config.master_key_path();
        openpsd_service_kit::keys::ensure_key_kept(&master_path, &config.data.join(DB_FILE))?;
        let master = openpsd_service_kit::keys::load_or_create(
            &master_path,
            openpsd_service_kit::keys::random_key,
            |_| true,
        )?;
        let db = Db::open(&config.data.join(DB_FILE), SCHEMA)?;
        let kms = Self {
            db,
            master: Arc::new(master),
            rc_public_key: config.recharge_public_key,
        };
        kms.migrate_wraps(&config.data.join(DB_FILE))?;
        Ok(kms)
    }

    /// The HTTP API and who may call each route: the issuer (an operator) registers
    /// devices; only the meter server has audits verified, refill messages sealed and
    /// receipts made (`docs/security.md`).
    pub fn routes() -> Routes<Kms> {
        const METER: &[Who] = &[Who::Role(Role::Meter)];
        const OPERATOR: &[Who] = &[Who::Role(Role::Operator)];
        const BOTH: &[Who] = &[Who::Role(Role::Meter), Who::Role(Role::Operator)];
        Routes::new()
            .route(Method::POST, "/v1/devices", post(register), OPERATOR)
            .route(Method::GET, "/v1/devices/{device_id}", get(device), BOTH)
            .route(Method::POST, "/v1/audits/verify", post(verify_audit), METER)
            .route(Method::POST, "/v1/refill-messages", post(seal), METER)
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

    /// The key that wraps `device`'s K1: HMAC-SHA256(master key, label ‖ device ID). A
    /// wrap is bound to its device this way (RFC 3394 has no associated data): a row whose
    /// `k1_wrapped` was moved from another device fails the wrap's integrity check.
    fn device_kek(&self, device_id: &str, step: &str) -> Result<Zeroizing<[u8; 32]>, ApiError> {
        use hmac::{KeyInit as _, Mac as _};
        let mut mac = <hmac::Hmac<sha2::Sha256>>::new_from_slice(self.master.as_ref().as_ref())
            .map_err(|_| ApiError::internal(step, "master key length"))?;
        mac.update(KEK_LABEL);
        mac.update(device_id.as_bytes());
        Ok(Zeroizing::new(mac.finalize().into_bytes().into()))
    }

    fn kw(key: &[u8; 32], step: &str) -> Result<KwAes256, ApiError> {
        <KwAes256 as aes_kw::KeyInit>::new_from_slice(key)
            .map_err(|_| ApiError::internal(step, "key-encryption key length"))
    }

    fn wrap(
        &self,
        device_id: &str,
        k1: &[u8; MAC_KEY_LEN],
        step: &str,
    ) -> Result<Vec<u8>, ApiError> {
        let kw = Self::kw(&*self.device_kek(device_id, step)?, step)?;
        let mut buf = [0u8; MAC_KEY_LEN + aes_kw::IV_LEN];
        kw.wrap_key(k1, &mut buf)
            .map(<[u8]>::to_vec)
            .map_err(|e| ApiError::internal(step, format!("key wrap: {e}")))
    }

    /// K1 from `wrapped` under `key`, if the wrap's integrity check passes.
    fn unwrap_with(key: &[u8; 32], wrapped: &[u8], step: &str) -> Result<MacKey, ApiError> {
        let kw = Self::kw(key, step)?;
        let mut buf = Zeroizing::new([0u8; MAC_KEY_LEN]);
        kw.unwrap_key(wrapped, buf.as_mut()).map_err(|_| {
            ApiError::internal(
                step,
                "K1 does not unwrap under this device's key (wrong master key, or the row was changed or moved from another device)",
            )
        })?;
        Ok(MacKey::new(*buf))
    }

    fn unwrap(&self, device_id: &str, wrapped: &[u8], step: &str) -> Result<MacKey, ApiError> {
        Self::unwrap_with(&*self.device_kek(device_id, step)?, wrapped, step)
    }

    /// Stored format 1 wrapped every K1 under the master key itself. Re-wraps such rows
    /// under their device's key, once, in one transaction, before the KMS serves; a row that
    /// unwraps under neither is left as it is and reported (its device's audits are then
    /// refused until an operator looks).
    fn migrate_wraps(&self, path: &Path) -> anyhow::Result<()> {
        const STEP: &str = "kms_migrate";
        let mut c = openpsd_service_kit::db::open_connection(path)?;
        let tx = c.transaction()?;
        let rows: Vec<(String, Vec<u8>)> = tx
            .prepare("SELECT device_id, k1_wrapped FROM devices")?
            .query_map([], |r| r.try_into())?
            .collect::<Result<_, _>>()?;
        let master: &[u8; 32] = self.master.as_ref();
        let mut moved = 0usize;
        for (id, wrapped) in rows {
            if self.unwrap(&id, &wrapped, STEP).is_ok() {
                continue;
            }
            match Self::unwrap_with(master, &wrapped, STEP) {
                Ok(k1) => {
                    let again = self
                        .wrap(&id, k1.expose(), STEP)
                        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
                    tx.execute(
                        "UPDATE devices SET k1_wrapped = ?2 WHERE device_id = ?1",
                        params![id, again],
                    )?;
                    moved += 1;
                }
                Err(_) => tracing::error!(
                    device = %id,
                    "K1 unwraps under neither this device's key nor the master key: the row was changed or moved; its audits will be refused"
                ),
            }
        }
        tx.commit()?;
        if moved > 0 {
            tracing::info!(
                rows = moved,
                "K1 wraps bound to their device IDs (stored format 2)"
            );
        }
        Ok(())
    }

    /// K1 of a registered device.
    async fn k1(&self, device: DeviceId, step: &'static str) -> Result<MacKey, ApiError> {
        let id = codec::device_hex(&device);
        let id2 = id.clone();
        let wrapped: Option<Vec<u8>> = self
            .db
            .run(step, move |c| {
                c.query_row(
                    "SELECT k1_wrapped FROM devices WHERE device_id = ?1",
                    [&id2],
                    |r| r.get(0),
                )
                .optional()
                .storage(step)
            })
            .await?;
        let wrapped = wrapped.ok_or_else(|| ApiError::unknown_device(step, &id))?;
        self.unwrap(&id, &wrapped, step)
    }

    /// Step 230: decodes an audit and checks its MAC under the device's K1.
    async fn open_audit(
        &self,
        hex_audit: &str,
        step: &'static str,
    ) -> Result<(AuditData, MacKey), ApiError> {
        let bytes = codec::hex_vec("audit", hex_audit, 256, step)?;
        let claimed = AuditData::decode_unverified(&bytes).map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::AuditMalformed,
                step,
                "the audit bytes do not decode",
            )
        })?;
        let k1 = self.k1(claimed.device, step).await?;
        let audit = AuditData::open(&bytes, &k1).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::AuditMacInvalid,
                step,
                "the audit's MAC does not verify under the device's K1",
            )
        })?;
        Ok((audit, k1))
    }
}

/// Validated registration fields.
struct Registration {
    k1: Zeroizing<[u8; MAC_KEY_LEN]>,
    key_id: String,
    public_key: String,
    licenses: String,
    info: DeviceInfo,
}

fn validate_registration(r: &DeviceRegistration) -> Result<Registration, ApiError> {
    let step = STEP_REGISTER;
    let device = codec::device_id(&r.device_id, step)?;
    let k1 = Zeroizing::new(codec::hex_array::<MAC_KEY_LEN>("k1", &r.k1, step)?);
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
    let info = DeviceInfo {
        device_id: codec::device_hex(&device),
        key_id: hex::encode(key_id),
        public_key: hex::encode(public_key),
        licenses: r.licenses.clone(),
    };
    Ok(Registration {
        k1,
        key_id: info.key_id.clone(),
        public_key: info.public_key.clone(),
        licenses,
        info,
    })
}

/// `POST /v1/devices`: `201` new, `200` the same registration again, `409` otherwise.
async fn register(State(kms): State<Kms>, body: Bytes) -> Result<impl IntoResponse, ApiError> {
    let step = STEP_REGISTER;
    let req: DeviceRegistration = codec::json(&body, step)?;
    let reg = validate_registration(&req)?;
    let wrapped = kms.wrap(&reg.info.device_id, &reg.k1, step)?;
    let kms2 = kms.clone();
    let id = reg.info.device_id.clone();
    let (key_id, public_key, licenses) = (reg.key_id, reg.public_key, reg.licenses);
    let k1 = reg.k1;
    let created = kms
        .db
        .run(step, move |c| {
            let tx = c.transaction().storage(step)?;
            let existing: Option<(Vec<u8>, String, String, String)> = tx
                .query_row(
                    "SELECT k1_wrapped, key_id, public_key, licenses FROM devices WHERE device_id = ?1",
                    [&id],
                    |r| r.try_into(),
                )
                .optional()
                .storage(step)?;
            if let Some((w, k, p, l)) = existing {
                // Compare K1 itself, not the wrapped bytes (wrapping is deterministic, but
                // this keeps working if the master key is ever rotated).
                let stored = kms2.unwrap(&id, &w, step)?;
                let same_k1 = bool::from(subtle_eq(stored.expose(), k1.as_ref()));
                if same_k1 && k == key_id && p == public_key && l == licenses {
                    return Ok(false);
                }
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    ErrorCode::DeviceConflict,
                    step,
                    format!("device {id} is registered already with other keys or licenses"),
                ));
            }
            tx.execute(
                "INSERT INTO devices (device_id, k1_wrapped, key_id, public_key, licenses, registered_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![id, wrapped, key_id, public_key, licenses, now_secs()],
            )
            .storage(step)?;
            tx.commit().storage(step)?;
            Ok(true)
        })
        .await?;
    let status = if created {
        tracing::info!(device = %reg.info.device_id, "device registered");
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(reg.info)))
}

fn subtle_eq(a: &[u8], b: &[u8]) -> subtle::Choice {
    use subtle::ConstantTimeEq;
    a.ct_eq(b)
}

/// `GET /v1/devices/{id}`: a registered device's public data (no K1).
async fn device(
    State(kms): State<Kms>,
    UrlPath(device_id): UrlPath<String>,
) -> Result<Json<DeviceInfo>, ApiError> {
    let step = STEP_DEVICE;
    let device = codec::device_id(&device_id, step)?;
    let id = codec::device_hex(&device);
    let id2 = id.clone();
    let row: Option<(String, String, String)> = kms
        .db
        .run(step, move |c| {
            c.query_row(
                "SELECT key_id, public_key, licenses FROM devices WHERE device_id = ?1",
                [&id2],
                |r| r.try_into(),
            )
            .optional()
            .storage(step)
        })
        .await?;
    let (key_id, public_key, licenses) = row.ok_or_else(|| ApiError::unknown_device(step, &id))?;
    let licenses = serde_json::from_str(&licenses)
        .map_err(|e| ApiError::internal(step, format!("stored licenses: {e}")))?;
    Ok(Json(DeviceInfo {
        device_id: id,
        key_id,
        public_key,
        licenses,
    }))
}

/// `POST /v1/audits/verify` (steps 225-240).
async fn verify_audit(
    State(kms): State<Kms>,
    body: Bytes,
) -> Result<Json<VerifiedAudit>, ApiError> {
    let req: AuditBody = codec::json(&body, STEP_VERIFY)?;
    let (audit, _) = kms.open_audit(&req.audit, STEP_VERIFY).await?;
    Ok(Json(VerifiedAudit::from(&audit)))
}

/// `POST /v1/refill-messages` (steps 270-280): seals a combination the RC signed (a refill,
/// or a void of amount zero).
async fn seal(State(kms): State<Kms>, body: Bytes) -> Result<Json<RefillMessage>, ApiError> {
    let step = STEP_SEAL;
    let req: SignedCombination = codec::json(&body, step)?;
    let c = req.combination.to_core(step)?;
    let signature =
        codec::hex_array::<{ crypto::SIGNATURE_LEN }>("signature", &req.signature, step)
            .map_err(|_| not_authorized("the signature is not 64 bytes of hex (r‖s)"))?;
    // Seed 000's "single point of compromise" guard: K1 MACs only what the RC decided.
    if !crypto::verify_signature(&kms.rc_public_key, &c.body(), &signature) {
        return Err(not_authorized(
            "the combination's signature does not verify under the recharging center's key",
        ));
    }
    // An amount of zero is a void (the RC signs one only for a refill it holds, with the
    // same precondition: `docs/refill.md` § Cancel); sealed like any refill message.
    if c.amount.0 > i64::MAX as u64 || c.control_sum.0 > i64::MAX as u64 {
        return Err(ApiError::amount_invalid(
            step,
            "amount or control sum out of range",
        ));
    }
    let k1 = kms.k1(c.device, step).await?;
    let message = c.seal(&k1);
    drop(k1);

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
                        "this combination ID was sealed already for other data",
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

/// `POST /v1/receipts`: the back office's acceptance of an audit, MACed for the PSD.
async fn receipt(State(kms): State<Kms>, body: Bytes) -> Result<Json<ReceiptResponse>, ApiError> {
    let step = STEP_RECEIPT;
    let req: ReceiptRequest = codec::json(&body, step)?;
    let accepted_on = codec::date("accepted_on", &req.accepted_on, step)?;
    let (audit, k1) = kms.open_audit(&req.audit, step).await?;
    let r = Receipt {
        device: audit.device,
        nonce: audit.nonce,
        accepted_on,
    };
    Ok(Json(ReceiptResponse {
        receipt: hex::encode(r.seal(&k1)),
    }))
}
