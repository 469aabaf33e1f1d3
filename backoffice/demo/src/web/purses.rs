//! The room as the demo scheme's issuer: PERSONALIZE data for a browser purse, the
//! certificate on its purchase key, and the certificates on the recognition keys browser
//! PSDs and purses generate inside themselves. The issuer's private key stays here.

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::Json;
use openpsd_core::crypto;
use openpsd_core::purse::personal::certificate_body;
use openpsd_core::types::CardId;
use zeroize::Zeroizing;

use openpsd_core::transfer::cert::{DeviceCertificate, DeviceKind};
use openpsd_core::types::Date;
use openpsd_protocol::{
    Certified, Certify, CertifyRecognition, NewPurse, PursePersonalize, RecognitionCertificate,
};

use openpsd_protocol::ErrorCode;
use openpsd_service_kit::codec;
use openpsd_service_kit::error::ApiError;

use super::{
    Web, MAX_PENDING, PURSE_MAX_BALANCE, PURSE_MAX_TRANSFER, PURSE_PIN_TRIES, STEP_CERTIFY,
    STEP_PURSE, STEP_RECOGNITION, WEB_SCHEME,
};

/// Years a recognition certificate the room issues is valid.
const CERTIFICATE_YEARS: u16 = 10;

/// Remembers an ID the room issued (a bounded set: the oldest are forgotten in bulk).
/// Devices (and purses) whose keys the room certifies while it runs, at most.
const MAX_CERTIFIED: usize = 100_000;

pub(crate) fn remember(set: &std::sync::Mutex<std::collections::HashSet<String>>, id: &str) {
    let mut ids = set.lock().unwrap_or_else(|p| p.into_inner());
    if ids.len() >= MAX_PENDING * 16 {
        ids.clear();
    }
    ids.insert(id.to_string());
}

pub(crate) async fn new_purse(
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
    remember(&web.purses, &card_id);
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

pub(crate) async fn certify_purse(
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
    // One purchase key per purse, as for recognition keys: the first one certified.
    {
        let mut keys = web.purchase_keys.lock().unwrap_or_else(|p| p.into_inner());
        match keys.get(&card_id) {
            Some(k) if *k != public_key => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    ErrorCode::DeviceConflict,
                    step,
                    format!("purse {card_id} has another purchase key certified already"),
                ));
            }
            Some(_) => {}
            None if keys.len() >= MAX_CERTIFIED => {
                return Err(ApiError::unavailable(
                    step,
                    "the personalization room has certified as many purses as it keeps",
                ));
            }
            None => {
                keys.insert(card_id.clone(), public_key);
            }
        }
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

/// The issuer's certificate on the recognition key of a device the room issued.
fn recognition_certificate(
    web: &Web,
    kind: DeviceKind,
    id: [u8; 8],
    body: &Bytes,
) -> Result<RecognitionCertificate, ApiError> {
    let step = STEP_RECOGNITION;
    let id_hex = hex::encode_upper(id);
    let req: CertifyRecognition = codec::json(body, step)?;
    let key: [u8; 33] = codec::hex_array("recognition_key", &req.recognition_key, step)?;
    if !crypto::is_valid_public_key(&key) {
        return Err(ApiError::bad_request(
            step,
            "recognition_key: not a P-256 point",
        ));
    }
    let (issued, code, what) = match kind {
        DeviceKind::Psd => (&web.devices, ErrorCode::UnknownDevice, "PSD"),
        DeviceKind::Purse => (&web.purses, ErrorCode::UnknownCard, "purse"),
    };
    if !issued
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .contains(&id_hex)
    {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            code,
            step,
            format!("the personalization room did not issue {what} {id_hex}"),
        ));
    }
    // One recognition key per device: the first key certified for an ID is the only one
    // the room certifies for it again. Device IDs are printed on every indicium; without
    // this, anyone could get the issuer's certificate binding a key of theirs to someone
    // else's device ID and be recognised as that device.
    {
        let mut keys = web.certified.lock().unwrap_or_else(|p| p.into_inner());
        match keys.get(&id_hex) {
            Some(k) if *k != key => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    ErrorCode::DeviceConflict,
                    step,
                    format!("{what} {id_hex} has another recognition key certified already"),
                ));
            }
            Some(_) => {}
            None => {
                // Never forgotten while the room runs: clearing would let anyone reset
                // the rule by filling the map.
                if keys.len() >= MAX_CERTIFIED {
                    return Err(ApiError::unavailable(
                        step,
                        "the personalization room has certified as many devices as it keeps",
                    ));
                }
                keys.insert(id_hex.clone(), key);
            }
        }
    }
    let today = codec::today_utc();
    let year = today.year.saturating_add(CERTIFICATE_YEARS);
    let until = Date::new(year, today.month, today.day)
        .or_else(|| Date::new(year, today.month, 28))
        .unwrap_or(today);
    let serial = u32::from_be_bytes(codec::random_array::<4>());
    let cert = DeviceCertificate::issue(
        &web.room.issuer,
        kind,
        WEB_SCHEME,
        id,
        serial,
        today,
        until,
        key,
    );
    tracing::info!(id = %id_hex, serial, "recognition key certified");
    Ok(RecognitionCertificate {
        id: id_hex,
        certificate: hex::encode(cert.encode()),
        serial,
    })
}

pub(crate) async fn certify_device_recognition(
    State(web): State<Web>,
    UrlPath(device_id): UrlPath<String>,
    body: Bytes,
) -> Result<Json<RecognitionCertificate>, ApiError> {
    let id = codec::hex_array::<8>("device_id", &device_id, STEP_RECOGNITION)?;
    recognition_certificate(&web, DeviceKind::Psd, id, &body).map(Json)
}

pub(crate) async fn certify_purse_recognition(
    State(web): State<Web>,
    UrlPath(card_id): UrlPath<String>,
    body: Bytes,
) -> Result<Json<RecognitionCertificate>, ApiError> {
    let id = codec::hex_array::<8>("card_id", &card_id, STEP_RECOGNITION)?;
    recognition_certificate(&web, DeviceKind::Purse, id, &body).map(Json)
}
