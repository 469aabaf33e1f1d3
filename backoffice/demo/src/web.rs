//! The web demo's listener (`backoffice-demo --web ADDR`): one loopback origin that serves
//! the browser postage client (`web-demo/`), the wasm package it loads, the meter server's
//! host API (`/v1/...`, passed through to the meter server unchanged) and the vendor's
//! personalization room for browser PSDs (`/demo/v1/...`).
//!
//! Personalizing a browser PSD is the same job `backoffice demo` does for the card
//! simulator's PSD (`card-sim personalize` + KMS registration), split in two because the
//! device's indicium key is generated inside the PSD, which here runs in the page:
//!
//! 1. `POST /demo/v1/devices` `{"origin"?}` — the station chooses the device ID, K1, a
//!    throwaway vendor key and a license, keeps K1 until step 2, and returns the
//!    PERSONALIZE command data (hex). The page personalizes its PSD with it.
//! 2. `POST /demo/v1/devices/{device_id}/register` `{"key_id", "public_key"}` — the PSD's
//!    answer to PERSONALIZE; the station registers the device (K1, key, licenses) with the
//!    KMS exactly as the card simulator's secrets file is registered, opens the customer's
//!    account at the recharging center and puts the demo deposit on it.
//!
//! The room is also the demo scheme's purse issuer: every browser PSD gets the scheme slot
//! of the room's demo scheme, and
//!
//! 3. `POST /demo/v1/purses` `{"pin"}` — PERSONALIZE data (hex) for a new purse card of
//!    that scheme: card key diversified from the scheme key, admin key from the room's
//!    admin key, the room's issuer public key, the holder's PIN (4-12 digits).
//! 4. `POST /demo/v1/purses/{card_id}/certify` `{"public_key"}` — the issuer's signature
//!    on the purse's purchase key (`certificate_body`), for the page's `purse.certify`.
//!
//! The scheme key, the issuer's admin and signing keys all derive from one room seed,
//! made once per data directory (`web-room.key`, 0600; see [`start_in`]).
//!
//! PERSONALIZE carries K1 in clear: like `card-sim personalize`, this is the vendor's
//! trusted personalization room, and it listens on loopback only.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use card_sim::personalize::{Request, Secrets};
use openpsd_core::crypto::{self, IndiciumKey, MacKey};
use openpsd_core::psd::device::{LicenseSlot, Personalization, SchemeSlot};
use openpsd_core::purse::personal::{certificate_body, PursePersonalization};
use openpsd_core::transfer::{card_admin_key, card_key};
use openpsd_core::types::{Amount, CardId, DeviceId, LicenseId, PostalCode, SchemeId};
use serde_json::json;
use zeroize::Zeroizing;

use openpsd_protocol::{
    Certified, Certify, NewDevice, NewPurse, Personalize, PursePersonalize, Register, Registered,
};

use openpsd_backoffice::Handles;
use openpsd_protocol::ErrorCode;
use openpsd_protocol::{Account, DeviceInfo};
use openpsd_service_kit::codec::{self, OsRandom};
use openpsd_service_kit::error::ApiError;
use openpsd_service_kit::server::{bind, Service};
use openpsd_service_kit::upstream::Upstream;

const STEP_PERSONALIZE: &str = "demo_personalize";
const STEP_REGISTER: &str = "demo_register";
const STEP_ACCOUNT: &str = "demo_account";
const STEP_PROXY: &str = "web_meter_proxy";
const STEP_STATIC: &str = "web_static";
const STEP_PURSE: &str = "demo_purse";
const STEP_CERTIFY: &str = "demo_certify";

/// The web demo's value-transfer scheme.
pub const WEB_SCHEME: SchemeId = SchemeId(0x5745_4201);
/// Failed recognitions in a row that block transfers, on both sides.
pub const WEB_MAX_FAILURES: u8 = 5;
/// PIN tries of a demo purse.
pub const PURSE_PIN_TRIES: u8 = 3;
/// A demo purse's highest balance: 500.00.
pub const PURSE_MAX_BALANCE: Amount = Amount(50_000);
/// A demo purse's highest transfer: 200.00.
pub const PURSE_MAX_TRANSFER: Amount = Amount(20_000);
/// The room seed's file in the data directory.
pub const ROOM_KEY_FILE: &str = "web-room.key";

/// What each new browser customer finds on the account: 100.00, as for the card simulator.
pub const INITIAL_DEPOSIT: Amount = Amount(10_000);
/// Devices personalized but not registered yet that the station remembers (oldest dropped).
const MAX_PENDING: usize = 256;
/// Largest request body the meter proxy passes on.
const MAX_PROXY_BODY: usize = 64 * 1024;

/// Where the web demo's files are and where it listens.
#[derive(Clone, Debug)]
pub struct WebOptions {
    /// Listen address (loopback).
    pub listen: String,
    /// The page: `web-demo/`.
    pub root: PathBuf,
    /// The wasm package for the web target (served under `/pkg/`).
    pub pkg: PathBuf,
}

/// The station's side of a browser PSD between its two personalization steps.
struct Pending {
    k1: Zeroizing<[u8; 16]>,
    licenses: Vec<(u32, String)>,
    seq: u64,
}

/// The room's scheme and issuer keys, all derived from one 32-byte seed.
pub struct RoomKeys {
    /// The demo scheme's key (PSDs hold it; purse card keys derive from it).
    pub scheme_key: Zeroizing<[u8; 16]>,
    /// The issuer's admin key (per-card admin keys derive from it).
    pub admin_key: Zeroizing<[u8; 16]>,
    /// The issuer's signing key (certifies purses' purchase keys).
    pub issuer: IndiciumKey,
}

impl RoomKeys {
    /// The keys of `seed`; `None` in the negligible case the issuer scalar is invalid.
    pub fn from_seed(seed: &[u8; 32]) -> Option<RoomKeys> {
        let part =
            |label: &[u8]| Zeroizing::new(crypto::sha256(&[label, seed.as_slice()].concat()));
        let half = |label: &[u8]| {
            let mut k = Zeroizing::new([0u8; 16]);
            k.copy_from_slice(&part(label)[..16]);
            k
        };
        Some(RoomKeys {
            scheme_key: half(b"openpsd web room scheme key"),
            admin_key: half(b"openpsd web room admin key"),
            issuer: IndiciumKey::from_bytes(part(b"openpsd web room issuer key").as_slice())?,
        })
    }

    /// The room's keys from `dir/web-room.key`, made (0600) on the first start.
    pub fn load_or_create(dir: &Path) -> anyhow::Result<RoomKeys> {
        openpsd_service_kit::keys::private_dir(dir)?;
        let seed = openpsd_service_kit::keys::load_or_create(
            &dir.join(ROOM_KEY_FILE),
            openpsd_service_kit::keys::random_key,
            |s| RoomKeys::from_seed(s).is_some(),
        )?;
        RoomKeys::from_seed(&seed).ok_or_else(|| anyhow::anyhow!("room seed is not valid"))
    }

    /// The scheme slot every browser PSD gets.
    pub fn scheme_slot(&self) -> SchemeSlot {
        SchemeSlot {
            scheme: WEB_SCHEME,
            key: *self.scheme_key,
            max_failures: WEB_MAX_FAILURES,
        }
    }

    /// The purse PERSONALIZE data for `card` with `pin`.
    pub fn purse_personalization(&self, card: CardId, pin: &[u8]) -> PursePersonalization {
        PursePersonalization {
            card,
            scheme: WEB_SCHEME,
            card_key: *card_key(&MacKey::new(*self.scheme_key), card).expose(),
            admin_key: *card_admin_key(&MacKey::new(*self.admin_key), card).expose(),
            issuer_public_key: self.issuer.public_key(),
            max_balance: PURSE_MAX_BALANCE,
            max_transfer: PURSE_MAX_TRANSFER,
            pin_tries: PURSE_PIN_TRIES,
            max_failures: WEB_MAX_FAILURES,
            pin: pin.to_vec(),
        }
    }
}

#[derive(Clone)]
struct Web {
    root: PathBuf,
    pkg: PathBuf,
    meter: String,
    kms: Upstream,
    recharge: Upstream,
    http: reqwest::Client,
    pending: Arc<Mutex<(u64, HashMap<String, Pending>)>>,
    room: Arc<RoomKeys>,
    /// Purse cards the room issued (and will certify).
    purses: Arc<Mutex<std::collections::HashSet<String>>>,
}

/// The PSD a browser gets: the card simulator demo's parameters, with the mailer's origin.
pub fn psd_request(license: u32, origin: PostalCode) -> Request {
    Request {
        device: None,
        vendor_public_key: None,
        max_postage: Amount(10_000),
        max_dr: Amount(1_000_000),
        // Real meters stop franking 28 days after they last reached the data center.
        inspection_days: 28,
        licenses: vec![LicenseSlot {
            license: LicenseId(license),
            origin,
        }],
    }
}

/// The customer account of a browser PSD at the recharging center.
pub fn account_for(device_id: &str) -> String {
    format!("web-{device_id}")
}

/// Starts the web demo listener next to the back office `h`, with room keys that live as
/// long as the process (use [`start_in`] to keep them in a data directory).
pub async fn start(o: &WebOptions, h: &Handles) -> anyhow::Result<Service> {
    start_in(o, h, None).await
}

/// Starts the web demo listener; the room's scheme and issuer keys are kept in `data`
/// (made there on the first start), or live in memory only without one.
pub async fn start_in(o: &WebOptions, h: &Handles, data: Option<&Path>) -> anyhow::Result<Service> {
    let room = match data {
        Some(dir) => RoomKeys::load_or_create(dir)?,
        None => loop {
            if let Some(k) = RoomKeys::from_seed(&codec::random_array::<32>()) {
                break k;
            }
        },
    };
    if !o.root.join("index.html").is_file() {
        anyhow::bail!(
            "{}: no index.html (the web demo's directory, --web-root)",
            o.root.display()
        );
    }
    if !o.pkg.is_dir() {
        tracing::warn!(
            "{}: no wasm package (build it with `bash scripts/demo.sh`); the page will say so",
            o.pkg.display()
        );
    }
    let web = Web {
        root: o.root.clone(),
        pkg: o.pkg.clone(),
        meter: h.meter.url.clone(),
        kms: Upstream::new("KMS", &h.kms.url)?,
        recharge: Upstream::new("recharging center", &h.recharge.url)?,
        http: reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(30))
            .build()?,
        pending: Arc::default(),
        room: Arc::new(room),
        purses: Arc::default(),
    };
    let listener = bind(&o.listen).await?;
    let addr = listener.local_addr()?;
    // The personalization room hands out K1: never on a network interface.
    anyhow::ensure!(
        addr.ip().is_loopback(),
        "the web demo listens on loopback only (it is the personalization room and hands out \
         K1), not on {addr}"
    );
    Ok(Service::spawn("web", listener, router(web))?)
}

fn router(web: Web) -> Router {
    Router::new()
        .route("/demo/v1/devices", post(new_device))
        .route("/demo/v1/devices/{device_id}/register", post(register))
        .route("/demo/v1/accounts/{account_id}", get(account))
        .route("/demo/v1/purses", post(new_purse))
        .route("/demo/v1/purses/{card_id}/certify", post(certify_purse))
        .route("/v1/{*rest}", any(meter_proxy))
        .route("/pkg/{*rest}", get(pkg_file))
        .route("/", get(index))
        .fallback(get(page_file))
        .with_state(web)
}

async fn new_device(State(web): State<Web>, body: Bytes) -> Result<Json<Personalize>, ApiError> {
    let step = STEP_PERSONALIZE;
    let req: NewDevice = if body.is_empty() {
        NewDevice::default()
    } else {
        codec::json(&body, step)?
    };
    let origin_text = req.origin.unwrap_or_else(|| "10115".into());
    let origin = PostalCode::new(origin_text.trim().to_ascii_uppercase().as_bytes())
        .ok_or_else(|| ApiError::bad_request(step, "origin: 1-10 characters of A-Z 0-9 space -"))?;
    // A license number of the demo's postal administration.
    let license = 10_000 + u32::from_be_bytes(codec::random_array::<4>()) % 90_000;
    let r = psd_request(license, origin);
    let device = r.device.unwrap_or_else(|| {
        let mut id = *b"PSD00000";
        codec::random_bytes(&mut id[3..]);
        DeviceId(id)
    });
    let k1 = Zeroizing::new(codec::random_array::<16>());
    let vendor_public_key = r
        .vendor_public_key
        .unwrap_or_else(|| IndiciumKey::generate(&mut OsRandom).public_key());
    let p = Personalization {
        device,
        k1: *k1,
        vendor_public_key,
        max_postage: r.max_postage,
        max_dr: r.max_dr,
        inspection_days: r.inspection_days,
        licenses: r.licenses.clone(),
        scheme: Some(web.room.scheme_slot()),
    };
    let device_id = codec::device_hex(&device);
    let licenses: Vec<(u32, String)> = r
        .licenses
        .iter()
        .map(|l| (l.license.0, l.origin.to_string()))
        .collect();
    {
        let mut guard = web.pending.lock().unwrap_or_else(|p| p.into_inner());
        let (next, map) = &mut *guard;
        *next += 1;
        if map.len() >= MAX_PENDING {
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, p)| p.seq)
                .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(
            device_id.clone(),
            Pending {
                k1,
                licenses: licenses.clone(),
                seq: *next,
            },
        );
    }
    tracing::info!(device = %device_id, license, "browser PSD personalization data issued");
    Ok(Json(Personalize {
        account_id: account_for(&device_id),
        device_id,
        personalize: hex::encode(p.encode().as_slice()),
        license,
        origin: origin.to_string(),
        max_postage: r.max_postage.0,
        max_dr: r.max_dr.0,
        inspection_days: r.inspection_days,
    }))
}

async fn new_purse(
    State(web): State<Web>,
    body: Bytes,
) -> Result<Json<PursePersonalize>, ApiError> {
    let step = STEP_PURSE;
    let req: NewPurse = codec::json(&body, step)?;
    let pin = Zeroizing::new(req.pin);
    if !(4..=12).contains(&pin.len()) || !pin.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::bad_request(step, "pin: 4 to 12 digits"));
    }
    let mut id = *b"PRS00000";
    codec::random_bytes(&mut id[3..]);
    let card = CardId(id);
    let p = web.room.purse_personalization(card, pin.as_bytes());
    let card_id = hex::encode_upper(card.0);
    {
        let mut purses = web.purses.lock().unwrap_or_else(|p| p.into_inner());
        if purses.len() >= MAX_PENDING * 16 {
            purses.clear();
        }
        purses.insert(card_id.clone());
    }
    tracing::info!(card = %card_id, "browser purse personalization data issued");
    Ok(Json(PursePersonalize {
        card_id,
        personalize: hex::encode(p.encode().as_slice()),
        scheme: WEB_SCHEME.0,
        max_balance: PURSE_MAX_BALANCE.0,
        max_transfer: PURSE_MAX_TRANSFER.0,
        pin_tries: PURSE_PIN_TRIES,
        issuer_public_key: hex::encode(web.room.issuer.public_key()),
    }))
}

async fn certify_purse(
    State(web): State<Web>,
    UrlPath(card_id): UrlPath<String>,
    body: Bytes,
) -> Result<Json<Certified>, ApiError> {
    let step = STEP_CERTIFY;
    let card = CardId(codec::hex_array::<8>("card_id", &card_id, step)?);
    let card_id = hex::encode_upper(card.0);
    let req: Certify = codec::json(&body, step)?;
    let public_key: [u8; 65] = codec::hex_array("public_key", &req.public_key, step)?;
    if !crypto::is_valid_public_key(&public_key) {
        return Err(ApiError::bad_request(step, "public_key: not a P-256 point"));
    }
    let known = web
        .purses
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .contains(&card_id);
    if !known {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::UnknownCard,
            step,
            format!("the personalization room did not issue purse {card_id}"),
        ));
    }
    let signature = web
        .room
        .issuer
        .sign(&certificate_body(card, WEB_SCHEME, &public_key));
    tracing::info!(card = %card_id, "browser purse certified");
    Ok(Json(Certified {
        card_id,
        signature: hex::encode(signature),
    }))
}

async fn register(
    State(web): State<Web>,
    UrlPath(device_id): UrlPath<String>,
    body: Bytes,
) -> Result<Json<Registered>, ApiError> {
    let step = STEP_REGISTER;
    let device = codec::device_id(&device_id, step)?;
    let device_id = codec::device_hex(&device);
    let req: Register = codec::json(&body, step)?;
    let public_key: [u8; 65] = codec::hex_array("public_key", &req.public_key, step)?;
    let key_id: [u8; 4] = codec::hex_array("key_id", &req.key_id, step)?;
    if !crypto::is_valid_public_key(&public_key) {
        return Err(ApiError::bad_request(step, "public_key: not a P-256 point"));
    }
    if crypto::key_id(&public_key).0 != key_id {
        return Err(ApiError::bad_request(
            step,
            "key_id is not the first 4 bytes of SHA-256 of public_key",
        ));
    }
    let pending = {
        let mut guard = web.pending.lock().unwrap_or_else(|p| p.into_inner());
        guard.1.remove(&device_id)
    };
    let info: DeviceInfo = match pending {
        Some(p) => {
            let secrets = Secrets {
                device_id: device_id.clone(),
                k1: hex::encode(*p.k1),
                key_id: hex::encode(key_id),
                public_key: hex::encode(public_key),
                licenses: p.licenses.clone(),
            };
            let r = web.kms.post("/v1/devices", &secrets, step).await;
            if r.is_err() {
                // Keep K1 so that the page can retry.
                let mut guard = web.pending.lock().unwrap_or_else(|p| p.into_inner());
                guard.1.insert(device_id.clone(), p);
            }
            r?
        }
        // Registered before (the page retries after a lost answer): the same key is fine.
        None => {
            let info: DeviceInfo = web
                .kms
                .get(&format!("/v1/devices/{device_id}"), step)
                .await
                .map_err(|e| {
                    if e.code == "unknown_device" {
                        ApiError::new(
                            StatusCode::NOT_FOUND,
                            ErrorCode::UnknownDevice,
                            step,
                            format!(
                                "the personalization room has no PSD {device_id} waiting \
                                 (the back office restarted?): create the device again"
                            ),
                        )
                    } else {
                        e
                    }
                })?;
            if !info
                .public_key
                .eq_ignore_ascii_case(&hex::encode(public_key))
            {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    ErrorCode::DeviceConflict,
                    step,
                    format!("device {device_id} is registered already with another key"),
                ));
            }
            info
        }
    };
    let account = ensure_account(&web, &account_for(&device_id)).await?;
    tracing::info!(device = %device_id, "browser PSD registered with the KMS");
    Ok(Json(Registered {
        device_id,
        key_id: info.key_id,
        public_key: info.public_key,
        licenses: info.licenses,
        account,
    }))
}

/// Opens the account and makes the initial deposit (both idempotent).
async fn ensure_account(web: &Web, account_id: &str) -> Result<Account, ApiError> {
    let step = STEP_ACCOUNT;
    let _: Account = web
        .recharge
        .post("/v1/accounts", &json!({"account_id": account_id}), step)
        .await?;
    web.recharge
        .post(
            &format!("/v1/accounts/{account_id}/deposits"),
            &json!({"amount": INITIAL_DEPOSIT.0, "reference": format!("{account_id}-initial")}),
            step,
        )
        .await
}

/// The customer's account, so the page can show the deposit left.
async fn account(
    State(web): State<Web>,
    UrlPath(account_id): UrlPath<String>,
) -> Result<Json<Account>, ApiError> {
    let step = STEP_ACCOUNT;
    codec::ident("account_id", &account_id, step)?;
    if !account_id.starts_with("web-") {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            step,
            "the web demo shows only its own customers' accounts",
        ));
    }
    Ok(Json(
        web.recharge
            .get(&format!("/v1/accounts/{account_id}"), step)
            .await?,
    ))
}

/// `/v1/...` to the meter server, unchanged: the page talks to the meter server's own API
/// from the page's origin.
async fn meter_proxy(
    State(web): State<Web>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let step = STEP_PROXY;
    if body.len() > MAX_PROXY_BODY {
        return Err(ApiError::bad_request(step, "request body too large"));
    }
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut req = web
        .http
        .request(method.clone(), format!("{}{path}", web.meter))
        .body(body);
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        req = req.header(header::CONTENT_TYPE, ct.clone());
    }
    let resp = req.send().await.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            ErrorCode::ServiceUnavailable,
            step,
            format!("meter server at {} unreachable: {e}", web.meter),
        )
    })?;
    let status = resp.status();
    let ct = resp.headers().get(header::CONTENT_TYPE).cloned();
    let bytes = resp.bytes().await.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            ErrorCode::ServiceUnavailable,
            step,
            format!("meter server's answer lost: {e}"),
        )
    })?;
    let mut out = Response::new(Body::from(bytes));
    *out.status_mut() = status;
    if let Some(ct) = ct {
        out.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    no_store(out.headers_mut());
    Ok(out)
}

async fn index(State(web): State<Web>) -> Result<Response, ApiError> {
    serve_file(&web.root, "index.html").await
}

async fn page_file(State(web): State<Web>, uri: Uri) -> Result<Response, ApiError> {
    serve_file(&web.root, uri.path()).await
}

async fn pkg_file(
    State(web): State<Web>,
    UrlPath(rest): UrlPath<String>,
) -> Result<Response, ApiError> {
    serve_file(&web.pkg, &rest).await
}

/// A file below `dir`; the URL path may only name plain components (no `..`, no hidden
/// files).
async fn serve_file(dir: &Path, url_path: &str) -> Result<Response, ApiError> {
    let step = STEP_STATIC;
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            step,
            format!("no such file: {url_path}"),
        )
    };
    let rel = Path::new(url_path.trim_start_matches('/'));
    let plain = rel.components().all(|c| match c {
        Component::Normal(s) => !s.to_string_lossy().starts_with('.'),
        _ => false,
    });
    if !plain || rel.as_os_str().is_empty() {
        return Err(not_found());
    }
    let path = dir.join(rel);
    let read = path.clone();
    let bytes = match tokio::task::spawn_blocking(move || std::fs::read(read))
        .await
        .map_err(|e| ApiError::internal(step, format!("reader task: {e}")))?
    {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_found()),
        Err(e) if e.kind() == std::io::ErrorKind::IsADirectory => return Err(not_found()),
        Err(e) => {
            return Err(ApiError::internal(
                step,
                format!("reading {}: {e}", path.display()),
            ))
        }
    };
    let mut resp = (StatusCode::OK, bytes).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(&path)),
    );
    no_store(resp.headers_mut());
    Ok(resp)
}

fn no_store(h: &mut HeaderMap) {
    // A demo under development: never run yesterday's module against today's page.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "wasm" => "application/wasm",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "ts" | "md" | "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        assert_eq!(content_type(Path::new("a/b.wasm")), "application/wasm");
        assert_eq!(
            content_type(Path::new("app.js")),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(content_type(Path::new("x")), "application/octet-stream");
    }

    #[tokio::test]
    async fn static_files_stay_inside_their_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("index.html"), "hi").unwrap();
        std::fs::write(dir.path().join(".secret"), "no").unwrap();
        assert!(serve_file(dir.path(), "/index.html").await.is_ok());
        for bad in [
            "/../etc/passwd",
            "/.secret",
            "/",
            "/a/../index.html",
            "/nope",
        ] {
            let e = serve_file(dir.path(), bad).await.unwrap_err();
            assert_eq!(e.status, StatusCode::NOT_FOUND, "{bad}");
        }
    }
}
