//! The room as the demo scheme's purse issuer: PERSONALIZE data for a browser purse and the
//! certificate on its purchase key.

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::Json;
use openpsd_core::crypto;
use openpsd_core::purse::personal::certificate_body;
use openpsd_core::types::CardId;
use zeroize::Zeroizing;

use openpsd_protocol::{Certified, Certify, NewPurse, PursePersonalize};

use openpsd_protocol::ErrorCode;
use openpsd_service_kit::codec;
use openpsd_service_kit::error::ApiError;

use super::{
    Web, MAX_PENDING, PURSE_MAX_BALANCE, PURSE_MAX_TRANSFER, PURSE_PIN_TRIES, STEP_CERTIFY,
    STEP_PURSE, WEB_SCHEME,
};

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
