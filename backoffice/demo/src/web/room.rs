//! The personalization room for browser PSDs: PERSONALIZE data for a new device, its
//! registration with the KMS and the customer's funded account, the account shown to the
//! page.

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, HeaderName, StatusCode};
use axum::response::AppendHeaders;
use axum::Json;
use card_sim::personalize::{Request, Secrets};
use openpsd_core::crypto;
use openpsd_core::psd::device::{LicenseSlot, Personalization};
use openpsd_core::types::{Amount, DeviceId, LicenseId, PostalCode};
use serde_json::json;

use openpsd_protocol::{NewDevice, Personalize, Register, Registered};

use openpsd_protocol::ErrorCode;
use openpsd_protocol::{
    Account, Credentials, CustomerView, DeviceInfo, MeterDevice, MeterRegistration, Session,
};
use openpsd_service_kit::codec;
use openpsd_service_kit::error::ApiError;

use super::{
    Pending, Web, INITIAL_DEPOSIT, MAX_PENDING, STEP_ACCOUNT, STEP_PERSONALIZE, STEP_REGISTER,
};

/// The PSD a browser gets: the card simulator demo's parameters, with the mailer's origin.
pub fn psd_request(license: u32, origin: PostalCode, kms_public_key: [u8; 65]) -> Request {
    Request {
        device: None,
        kms_public_key,
        vendor_public_key: None,
        max_postage: Amount(10_000),
        max_dr: Amount(1_000_000),
        // Real meters stop franking 28 days after they last reached the data center.
        inspection_days: 28,
        licenses: vec![LicenseSlot {
            license: LicenseId(license),
            origin,
        }],
        postal_authority: None,
    }
}

/// The customer account of a browser PSD at the recharging center.
pub fn account_for(device_id: &str) -> String {
    format!("web-{device_id}")
}

/// A new browser PSD comes with a new customer: the room signs them up at the meter
/// (which opens their deposit account), books the demo deposit as the payments desk, and
/// gives the page the customer's session as an HttpOnly cookie (`docs/security.md`).
pub(crate) async fn new_device(
    State(web): State<Web>,
    body: Bytes,
) -> Result<(AppendHeaders<[(HeaderName, String); 1]>, Json<Personalize>), ApiError> {
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
    let r = psd_request(license, origin, kms_public_key(&web, step).await?);
    let device = r.device.unwrap_or_else(|| {
        let mut id = *b"PSD00000";
        codec::random_bytes(&mut id[3..]);
        DeviceId(id)
    });
    // The back office's vendor and postal authority: the PSD accepts the licenses they
    // grant (seed 003; `docs/licenses.md`).
    let vendor_public_key = r.vendor_public_key.unwrap_or(web.vendor_public_key);
    let p = Personalization {
        device,
        kms_public_key: r.kms_public_key,
        vendor_public_key,
        max_postage: r.max_postage,
        max_dr: r.max_dr,
        inspection_days: r.inspection_days,
        licenses: r.licenses.clone(),
        scheme: Some(web.room.scheme_slot()),
        postal_authority: Some(web.postal_authority.clone()),
    };
    let device_id = codec::device_hex(&device);
    let (account_id, cookie) = new_customer(&web, &device_id).await?;
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
                licenses: licenses.clone(),
                seq: *next,
            },
        );
    }
    tracing::info!(device = %device_id, license, "browser PSD personalization data issued");
    Ok((
        AppendHeaders([(header::SET_COOKIE, cookie)]),
        Json(Personalize {
            account_id,
            device_id,
            personalize: hex::encode(p.encode().as_slice()),
            license,
            origin: origin.to_string(),
            max_postage: r.max_postage.0,
            max_dr: r.max_dr.0,
            inspection_days: r.inspection_days,
        }),
    ))
}

/// The KMS's public key, asked of the KMS (with the operator's certificate): what every
/// browser PSD checks refill messages and receipts with.
async fn kms_public_key(web: &Web, step: &'static str) -> Result<[u8; 65], ApiError> {
    let v: serde_json::Value = web.kms.get("/v1/public-key", step).await?;
    let hex_key = v["public_key"].as_str().unwrap_or_default();
    let key: [u8; 65] = codec::hex_array("public_key", hex_key, step)?;
    if !crypto::is_valid_public_key(&key) {
        return Err(ApiError::internal(
            step,
            "the KMS's public key is not a P-256 point",
        ));
    }
    Ok(key)
}

/// Signs up the browser's customer with a random password nobody keeps (the cookie is
/// the only way in), logs in, books the demo deposit; answers the account and the cookie.
async fn new_customer(web: &Web, device_id: &str) -> Result<(String, String), ApiError> {
    let step = STEP_ACCOUNT;
    let creds = Credentials {
        username: account_for(device_id).to_ascii_lowercase(),
        password: hex::encode(codec::random_array::<16>()),
    };
    let c: CustomerView = web.meter_public.post("/v1/customers", &creds, step).await?;
    let s: Session = web.meter_public.post("/v1/sessions", &creds, step).await?;
    let _: Account = web
        .recharge
        .post(
            &format!("/v1/accounts/{}/deposits", c.account_id),
            &json!({"amount": INITIAL_DEPOSIT.0, "reference": format!("{}-initial", c.account_id)}),
            step,
        )
        .await?;
    Ok((
        c.account_id,
        super::session_cookie(&s.token, super::SESSION_MAX_AGE),
    ))
}

pub(crate) async fn register(
    State(web): State<Web>,
    UrlPath(device_id): UrlPath<String>,
    headers: HeaderMap,
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
    // The session's customer first: a caller without one takes nothing from the room.
    let me = web.me(&headers, step).await?;
    let pending = {
        let mut guard = web.pending.lock().unwrap_or_else(|p| p.into_inner());
        guard.1.remove(&device_id)
    };
    let info: DeviceInfo = match pending {
        Some(p) => {
            let secrets = Secrets {
                device_id: device_id.clone(),
                key_id: hex::encode(key_id),
                public_key: hex::encode(public_key),
                licenses: p.licenses.clone(),
                // The room certifies the recognition key in its own step (`/certificate`).
                certificate_serial: None,
            };
            let r = web.kms.post("/v1/devices", &secrets, step).await;
            if r.is_err() {
                // Keep the licenses so that the page can retry.
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
    // The meter serves only devices registered with it: owned by the session's customer,
    // starting from zero (the PSD was just personalized). The same again is fine.
    let account = me.account;
    let _: MeterDevice = web
        .meter_api
        .post(
            "/v1/devices",
            &MeterRegistration {
                device_id: device_id.clone(),
                account_id: account.account_id.clone(),
                baselines: Vec::new(),
            },
            step,
        )
        .await?;
    tracing::info!(device = %device_id, "browser PSD registered with the KMS and the meter");
    Ok(Json(Registered {
        device_id,
        key_id: info.key_id,
        public_key: info.public_key,
        licenses: info.licenses,
        account,
    }))
}

/// The customer's account, so the page can show the deposit left: only the one of the
/// customer whose session cookie came with the request (another's is not found).
pub(crate) async fn account(
    State(web): State<Web>,
    UrlPath(account_id): UrlPath<String>,
    headers: HeaderMap,
) -> Result<Json<Account>, ApiError> {
    let step = STEP_ACCOUNT;
    codec::ident("account_id", &account_id, step)?;
    let me = web.me(&headers, step).await?;
    if me.account.account_id != account_id {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::UnknownAccount,
            step,
            format!("no account '{account_id}' of yours"),
        ));
    }
    Ok(Json(me.account))
}
