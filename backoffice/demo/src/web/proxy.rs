//! The meter server's host API on the page's origin: `/v1/refills...`,
//! `/v1/inspections...`, `/v1/licenses...` (license orders, seed 003) and `/v1/me` passed through, with the customer's session token
//! taken from the page's HttpOnly cookie into the `Authorization` header (the page itself
//! never holds it). The meter's operator routes (device registration, alarms, resolve)
//! are not the page's: they are answered `404 not_found` here.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;

use openpsd_protocol::ErrorCode;
use openpsd_service_kit::error::ApiError;

use super::files::no_store;
use super::{Web, MAX_PROXY_BODY, STEP_PROXY};

/// `/v1/...` to the meter server, unchanged: the page talks to the meter server's own API
/// from the page's origin.
pub(crate) async fn meter_proxy(
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
    let host_route = ["/v1/refills", "/v1/inspections", "/v1/licenses", "/v1/me"]
        .iter()
        .any(|prefix| {
            uri.path()
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        });
    if !host_route {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            step,
            format!("no route {}", uri.path()),
        ));
    }
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut req = web
        .http
        .request(method.clone(), format!("{}{path}", web.meter))
        .body(body);
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        req = req.header(header::CONTENT_TYPE, ct.clone());
    }
    // A program on the page's origin may bring its own token or API key; the page's
    // requests carry the cookie.
    if let Some(auth) = headers.get(header::AUTHORIZATION) {
        req = req.header(header::AUTHORIZATION, auth.clone());
    } else if let Some(token) = super::session_token(&headers) {
        req = req.bearer_auth(token);
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
