//! The web demo's listener (`backoffice-demo --web ADDR`): one loopback origin that serves
//! the browser postage client (`web-demo/`), the wasm package it loads, the meter server's
//! host API (`/v1/...`, passed through to the meter server unchanged) and the vendor's
//! personalization room for browser PSDs (`/demo/v1/...`).
//!
//! Personalizing a browser PSD is the same job `backoffice demo` does for the card
//! simulator's PSD (`card-sim personalize` + KMS registration), split in two because the
//! device's indicium key is generated inside the PSD, which here runs in the page:
//!
//! 1. `POST /demo/v1/devices` `{"origin"?}` — the station chooses the device ID and a
//!    license, asks the KMS for its public key, and returns the PERSONALIZE command data
//!    (hex; nothing secret in it) with the back office's vendor key and postal authority
//!    block, so the PSD can take licenses (seed 003). The page personalizes its PSD
//!    with it.
//! 2. `POST /demo/v1/devices/{device_id}/register` `{"key_id", "public_key"}` — the PSD's
//!    answer to PERSONALIZE; the station registers the device (key, licenses) with the
//!    KMS exactly as the card simulator's secrets file is registered, registers it at the
//!    meter server owned by the customer's account (baselines zero: a fresh PSD), opens
//!    that account at the recharging center and puts the demo deposit on it.
//!
//! The room is also the demo scheme's issuer: every browser PSD gets the scheme slot of
//! the room's demo scheme (the issuer's *public* key; no secret), and
//!
//! 3. `POST /demo/v1/devices/{device_id}/certificate` `{"recognition_key"}` — the issuer's
//!    certificate on the recognition key the browser PSD generated inside itself, for the
//!    page's `psd.installCertificate` (needed before the first transfer).
//! 4. `POST /demo/v1/purses` `{"pin"}` — PERSONALIZE data (hex) for a new purse card of
//!    that scheme: admin key from the room's admin key, the room's issuer public key, the
//!    holder's PIN (4-12 digits). No key that opens another card.
//! 5. `POST /demo/v1/purses/{card_id}/certify` `{"public_key"}` — the issuer's signature
//!    on the purse's purchase key (`certificate_body`), for the page's `purse.certify`;
//!    `POST /demo/v1/purses/{card_id}/certificate` `{"recognition_key"}` — the
//!    certificate on its recognition key, for `purse.installCertificate`.
//!
//! The issuer's admin and signing keys derive from one room seed, made once per data
//! directory (`web-room.key`, 0600; see [`start_in`]); they never leave the room. (Before
//! issue 12 a scheme master key derived from the same seed went to every browser PSD.)
//!
//! PERSONALIZE carries no secret: the page receives only public keys and generates its
//! own private keys inside the PSD. The room is still unauthenticated (it makes devices
//! and customers for whoever reaches it), so it listens on loopback only.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use openpsd_core::crypto::{self, IndiciumKey, MacKey};
use openpsd_core::psd::device::SchemeSlot;
use openpsd_core::purse::personal::PursePersonalization;
use openpsd_core::transfer::card_admin_key;
use openpsd_core::types::{Amount, CardId, SchemeId};
use zeroize::Zeroizing;

use openpsd_backoffice::Handles;
use openpsd_protocol::{ErrorCode, Me};
use openpsd_service_kit::codec;
use openpsd_service_kit::error::ApiError;
use openpsd_service_kit::server::{bind, Service};
use openpsd_service_kit::tls::{client_config, Role};
use openpsd_service_kit::upstream::Upstream;

mod files;
mod labels;
mod online;
mod proxy;
mod purses;
mod room;

use files::{index, page_file, pkg_file};
use proxy::meter_proxy;
use purses::{certify_device_recognition, certify_purse, certify_purse_recognition, new_purse};
use room::{account, new_device, register};

pub use room::{account_for, psd_request};

pub(crate) const STEP_PERSONALIZE: &str = "demo_personalize";
pub(crate) const STEP_REGISTER: &str = "demo_register";
pub(crate) const STEP_ACCOUNT: &str = "demo_account";
pub(crate) const STEP_PROXY: &str = "web_meter_proxy";
pub(crate) const STEP_STATIC: &str = "web_static";
pub(crate) const STEP_PURSE: &str = "demo_purse";
pub(crate) const STEP_CERTIFY: &str = "demo_certify";
pub(crate) const STEP_RECOGNITION: &str = "demo_recognition_certificate";

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
pub(crate) const MAX_PENDING: usize = 256;
/// Largest request body the meter proxy passes on.
pub(crate) const MAX_PROXY_BODY: usize = 64 * 1024;

/// Where the web demo's files are and where it listens.
#[derive(Clone, Debug)]
pub struct WebOptions {
    /// Listen address (loopback).
    pub listen: String,
    /// The page: `web-demo/`.
    pub root: PathBuf,
    /// The wasm package for the web target (served under `/pkg/`).
    pub pkg: PathBuf,
    /// The post office's base URL, for the page's "verify a label" (none: that answers 503).
    pub post: Option<String>,
    /// The virtual meter's data center, for the "online meter" tab (none: that answers 503).
    pub datacenter: Option<String>,
}

/// The station's side of a browser PSD between its two personalization steps.
pub(crate) struct Pending {
    pub(crate) licenses: Vec<(u32, String)>,
    pub(crate) seq: u64,
}

/// The room's issuer keys, all derived from one 32-byte seed.
pub struct RoomKeys {
    /// The issuer's admin key (per-card admin keys derive from it).
    pub admin_key: Zeroizing<[u8; 16]>,
    /// The issuer's signing key (certifies every device's recognition key and purses'
    /// purchase keys).
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

    /// The scheme slot every browser PSD gets: the issuer's public key, nothing secret.
    pub fn scheme_slot(&self) -> SchemeSlot {
        SchemeSlot {
            scheme: WEB_SCHEME,
            issuer_public_key: self.issuer.public_key(),
            max_failures: WEB_MAX_FAILURES,
        }
    }

    /// The purse PERSONALIZE data for `card` with `pin`.
    pub fn purse_personalization(&self, card: CardId, pin: &[u8]) -> PursePersonalization {
        PursePersonalization {
            card,
            scheme: WEB_SCHEME,
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
pub(crate) struct Web {
    /// The data center's base URL (the "online meter" tab), if the demo runs one.
    pub(crate) datacenter: Option<String>,
    pub(crate) root: PathBuf,
    pub(crate) pkg: PathBuf,
    pub(crate) meter: String,
    /// The meter as an anonymous client (sign-up, log-in).
    pub(crate) meter_public: Upstream,
    pub(crate) kms: Upstream,
    pub(crate) recharge: Upstream,
    /// The post office, as a scanner (the operator's certificate).
    pub(crate) post: Option<Upstream>,
    /// The meter server's operator API (device registration), with the operator's
    /// certificate.
    pub(crate) meter_api: Upstream,
    /// The meter for the page's own calls: TLS trusting the back office's CA, no client
    /// certificate (the page's requests carry the customer's token, never the room's
    /// identity).
    pub(crate) http: reqwest::Client,
    pub(crate) pending: Arc<Mutex<(u64, HashMap<String, Pending>)>>,
    pub(crate) room: Arc<RoomKeys>,
    /// The recognition key the room certified for each device ID (one per ID).
    pub(crate) certified: Arc<Mutex<HashMap<String, [u8; 33]>>>,
    /// The purchase key the room certified for each purse (one per purse).
    pub(crate) purchase_keys: Arc<Mutex<HashMap<String, [u8; 65]>>>,
    /// Purse cards the room issued (and will certify).
    pub(crate) purses: Arc<Mutex<std::collections::HashSet<String>>>,
    /// Browser PSDs the room personalized (and will certify).
    pub(crate) devices: Arc<Mutex<std::collections::HashSet<String>>>,
    /// The vendor's public key, personalized into every browser PSD so it accepts the
    /// vendor's countersignatures on license grants (seed 003).
    pub(crate) vendor_public_key: [u8; 65],
    /// The postal authority's key and subject: PERSONALIZE's postal authority block, so a
    /// browser PSD can ask for and install licenses.
    pub(crate) postal_authority: openpsd_core::psd::device::PostalAuthority,
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
    // The room is the demo's issuer and payments desk: it registers devices at the KMS
    // and books deposits at the RC with the operator's certificate.
    let operator = client_config(&h.pki, Some(Role::Operator))?;
    let web = Web {
        datacenter: o.datacenter.clone(),
        root: o.root.clone(),
        pkg: o.pkg.clone(),
        meter: h.meter.url.clone(),
        meter_public: Upstream::new(
            "meter",
            &h.meter.url,
            Role::Meter,
            client_config(&h.pki, None)?,
        )?,
        meter_api: Upstream::new("meter server", &h.meter.url, Role::Meter, operator.clone())?,
        kms: Upstream::new("KMS", &h.kms.url, Role::Kms, operator.clone())?,
        post: o
            .post
            .as_deref()
            .map(|url| Upstream::new("post office", url, Role::Post, operator.clone()))
            .transpose()?,
        recharge: Upstream::new(
            "recharging center",
            &h.recharge.url,
            Role::Recharge,
            operator,
        )?,
        http: reqwest::Client::builder()
            .use_preconfigured_tls(client_config(&h.pki, None)?)
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(30))
            .build()?,
        pending: Arc::default(),
        room: Arc::new(room),
        purses: Arc::default(),
        certified: Arc::default(),
        purchase_keys: Arc::default(),
        devices: Arc::default(),
        vendor_public_key: h.vendor_public_key,
        postal_authority: h.postal_authority.clone(),
    };
    let listener = bind(&o.listen, None).await?;
    let addr = listener.local_addr()?;
    // The personalization room is not authenticated (no device is, before its first
    // keys): never on a network interface.
    anyhow::ensure!(
        addr.ip().is_loopback(),
        "the web demo listens on loopback only (it is the personalization room: whoever \
         reaches it gets devices made and customers signed up), not on {addr}"
    );
    Ok(Service::spawn("web", listener, router(web, addr.port()))?)
}

/// The cookie that carries a browser's session token: HttpOnly (no script reads it),
/// SameSite=Strict (no other site's page sends it). Not `Secure`: the demo page is plain
/// HTTP on loopback, which browsers treat as a secure context anyway.
pub(crate) const SESSION_COOKIE: &str = "openpsd_session";
/// How long the cookie lives: the meter's session lifetime.
pub(crate) const SESSION_MAX_AGE: u64 = 8 * 3600;

pub(crate) fn session_cookie(token: &str, max_age: u64) -> String {
    format!("{SESSION_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}")
}

/// The session token in a request's cookie.
pub(crate) fn session_token(headers: &HeaderMap) -> Option<String> {
    cookie_value(headers, SESSION_COOKIE)
}

/// The value of cookie `name` in a request, if it comes exactly once.
pub(crate) fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    let prefix = format!("{name}=");
    let mut found = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().strip_prefix(&prefix).map(str::to_owned));
    // More than one such cookie means none: cookies are not scoped by port, so a page on
    // another loopback port could plant its own beside the page's (with a longer path,
    // sent first) to have this page act as the attacker's customer.
    match (found.next(), found.next()) {
        (Some(token), None) => Some(token),
        _ => None,
    }
}

impl Web {
    /// The customer of the request's session cookie, from the meter.
    pub(crate) async fn me(&self, headers: &HeaderMap, step: &str) -> Result<Me, ApiError> {
        let token = session_token(headers).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::Unauthenticated,
                step,
                "no session: create the device again to start one",
            )
        })?;
        let resp = self
            .http
            .get(format!("{}/v1/me", self.meter))
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| ApiError::unavailable(step, format!("meter: {e}")))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| ApiError::unavailable(step, format!("meter: {e}")))?;
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .map_err(|e| ApiError::unavailable(step, format!("meter: {e}")));
        }
        let body: openpsd_protocol::ErrorBody = serde_json::from_slice(&bytes)
            .map_err(|_| ApiError::unavailable(step, format!("meter answered {status}")))?;
        Err(ApiError {
            status: StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY),
            code: body.error.code,
            step: body.error.step,
            message: body.error.message,
        })
    }
}

/// The page's own origin only. Every request must name this listener as its `Host`
/// (`127.0.0.1`, `localhost` or `[::1]` with its port): a page of another site whose name
/// was made to resolve to 127.0.0.1 (DNS rebinding) names its own host and is refused.
/// CSRF: a request that changes anything must be JSON (a cross-site form cannot send that
/// without a preflight the room never answers) and, when the browser names its origin,
/// come from this page's origin.
async fn same_origin_json(
    axum::extract::State(port): axum::extract::State<u16>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let refuse = |message: &str| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            "web_origin",
            message,
        )
        .into_response()
    };
    let headers = req.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let ours = ["127.0.0.1", "localhost", "[::1]"]
        .iter()
        .any(|h| host == format!("{h}:{port}"));
    if !ours {
        return refuse("this page is served on loopback only; the Host header names another site");
    }
    if matches!(req.method(), &Method::GET | &Method::HEAD) {
        return next.run(req).await;
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim() == "application/json")
        });
    if !json {
        return refuse("requests that change something must be application/json");
    }
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        if origin != format!("http://{host}") {
            return refuse("cross-origin request refused");
        }
    }
    next.run(req).await
}

fn router(web: Web, port: u16) -> Router {
    Router::new()
        .route("/demo/v1/devices", post(new_device))
        .route("/demo/v1/devices/{device_id}/register", post(register))
        .route("/demo/v1/accounts/{account_id}", get(account))
        .route("/demo/v1/purses", post(new_purse))
        .route("/demo/v1/purses/{card_id}/certify", post(certify_purse))
        .route(
            "/demo/v1/purses/{card_id}/certificate",
            post(certify_purse_recognition),
        )
        .route(
            "/demo/v1/devices/{device_id}/certificate",
            post(certify_device_recognition),
        )
        .route("/demo/v1/labels", post(labels::verify_label))
        .route("/v1/{*rest}", any(meter_proxy))
        .route("/dc/v1/{*rest}", any(online::dc_proxy))
        .route("/dc/demo/deposits", post(online::pay_in))
        .route("/pkg/{*rest}", get(pkg_file))
        .route("/", get(index))
        .fallback(get(page_file))
        .layer(axum::middleware::from_fn_with_state(port, same_origin_json))
        .with_state(web)
}
