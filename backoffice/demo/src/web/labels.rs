//! The page's "verify a label" (issue 13 item 6): a scan the mailer uploads (PNG or JPEG,
//! hex in JSON like every change the room takes) is decoded here with the post office's
//! label decoder and handed to the post office as a scanner would (the operator's
//! certificate); the page gets the post office's verdict. The room adds nothing of its
//! own: what the page shows is what the post office decided.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

use openpsd_protocol::post::{ScanBatch, ScanResult, Verdict};
use openpsd_protocol::ErrorCode;
use openpsd_service_kit::codec;
use openpsd_service_kit::error::ApiError;

use super::Web;

const STEP_LABEL: &str = "room_label";
/// Largest scan the page may upload (hex in JSON: twice that).
const MAX_SCAN_BYTES: usize = 2 * 1024 * 1024;
/// Scans decoded at once: each takes a blocking thread and up to ~40 megapixels of memory
/// (openpsd_post::label's bound), so many uploads at once must queue, not pile up.
const DECODERS: usize = 2;
static DECODING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(DECODERS);

/// `POST /demo/v1/labels` `{"image": hex}` or `{"indicium": hex}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LabelScan {
    #[serde(default)]
    image: Option<String>,
    #[serde(default)]
    indicium: Option<String>,
}

fn unreadable(reason: String) -> Verdict {
    Verdict {
        verdict: "unreadable".into(),
        device_id: None,
        license: None,
        piece: None,
        postage: None,
        reason: Some(reason),
    }
}

pub(crate) async fn verify_label(
    State(web): State<Web>,
    body: Bytes,
) -> Result<Json<Verdict>, ApiError> {
    let step = STEP_LABEL;
    let post = web.post.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::ServiceUnavailable,
            step,
            "this demo runs without a post office",
        )
    })?;
    let scan: LabelScan = codec::json(&body, step)?;
    let indicium = match (scan.image, scan.indicium) {
        (Some(image), None) => {
            if image.len() > 2 * MAX_SCAN_BYTES {
                return Err(ApiError::bad_request(step, "image: at most 2 MiB"));
            }
            let bytes = hex::decode(image.trim())
                .map_err(|_| ApiError::bad_request(step, "image: hex of a PNG or JPEG file"))?;
            let Ok(_turn) = DECODING.try_acquire() else {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::ServiceUnavailable,
                    step,
                    "the label decoder is busy with other scans; try again in a moment",
                ));
            };
            let decoded = tokio::task::spawn_blocking(move || openpsd_post::label::decode(&bytes))
                .await
                .map_err(|e| ApiError::internal(step, format!("label decoder: {e}")))?;
            match decoded {
                Ok(b) => hex::encode(b),
                Err(e) => return Ok(Json(unreadable(e.to_string()))),
            }
        }
        (None, Some(indicium)) => indicium,
        _ => {
            return Err(ApiError::bad_request(
                step,
                "give exactly one of image (a scan) or indicium (its bytes), hex",
            ))
        }
    };
    let result: ScanResult = post
        .post(
            "/v1/indicia",
            &ScanBatch {
                indicia: vec![indicium],
            },
            step,
        )
        .await?;
    result
        .verdicts
        .into_iter()
        .next()
        .map(Json)
        .ok_or_else(|| ApiError::internal(step, "the post office gave no verdict"))
}
