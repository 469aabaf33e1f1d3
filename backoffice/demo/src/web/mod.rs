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
//! PERSONALIZE carries K1 in clear: like `card-sim personalize`, this is the vendor's
//! trusted personalization room, and it listens on loopback only.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::{any, get, post};
use axum::Router;
use openpsd_core::crypto::{self, IndiciumKey, MacKey};
use openpsd_core::psd::device::SchemeSlot;
use openpsd_core::purse::personal::PursePersonalization;
use openpsd_core::transfer::card_admin_key;
use openpsd_core::types::{Amount, CardId, SchemeId};
use zeroize::Zeroizing;

use openpsd_backoffice::Handles;
use openpsd_service_kit::codec;
use openpsd_service_kit::server::{bind, Service};
use openpsd_service_kit::upstream::Upstream;

mod files;
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
}

/// The station's side of a browser PSD between its two personalization steps.
pub(crate) struct Pending {
    k1: Zeroizing<[u8; 16]>,
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
    pub(crate) root: PathBuf,
    pub(crate) pkg: PathBuf,
    pub(crate) meter: String,
    pub(crate) kms: Upstream,
    pub(crate) recharge: Upstream,
    pub(crate) http: reqwest::Client,
    pub(crate) pending: Arc<Mutex<(u64, HashMap<String, Pending>)>>,
    pub(crate) room: Arc<RoomKeys>,
    /// Purse cards the room issued (and will certify).
    pub(crate) purses: Arc<Mutex<std::collections::HashSet<String>>>,
    /// Browser PSDs the room personalized (and will certify).
    pub(crate) devices: Arc<Mutex<std::collections::HashSet<String>>>,
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
        devices: Arc::default(),
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
        .route(
            "/demo/v1/purses/{card_id}/certificate",
            post(certify_purse_recognition),
        )
        .route(
            "/demo/v1/devices/{device_id}/certificate",
            post(certify_device_recognition),
        )
        .route("/v1/{*rest}", any(meter_proxy))
        .route("/pkg/{*rest}", get(pkg_file))
        .route("/", get(index))
        .fallback(get(page_file))
        .with_state(web)
}
