//! The personalization room for browser PSDs: PERSONALIZE data for a new device, its
//! registration with the KMS and the customer's funded account, the account shown to the
//! page.

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::Json;
use card_sim::personalize::{Request, Secrets};
use openpsd_core::crypto::{self, IndiciumKey};
use openpsd_core::psd::device::{LicenseSlot, Personalization};
use openpsd_core::types::{Amount, DeviceId, LicenseId, PostalCode};
use serde_json::json;
use zeroize::Zeroizing;

use openpsd_protocol::{NewDevice, Personalize, Register, Registered};

use openpsd_protocol::ErrorCode;
use openpsd_protocol::{Account, DeviceInfo};
use openpsd_service_kit::codec::{self, OsRandom};
use openpsd_service_kit::error::ApiError;

use super::{
    Pending, Web, INITIAL_DEPOSIT, MAX_PENDING, STEP_ACCOUNT, STEP_PERSONALIZE, STEP_REGISTER,
};

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

pub(crate) async fn new_device(
    State(web): State<Web>,
    body: Bytes,
) -> Result<Json<Personalize>, ApiError> {
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
    super::purses::remember(&web.devices, &device_id);
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

pub(crate) async fn register(
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
                // The room certifies the recognition key in its own step (`/certificate`).
                certificate_serial: None,
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
pub(crate) async fn ensure_account(web: &Web, account_id: &str) -> Result<Account, ApiError> {
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
pub(crate) async fn account(
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
