//! The meter server's host API on the page's origin: `/v1/refills...`,
//! `/v1/inspections...`, `/v1/licenses...` (license orders, seed 003), `/v1/me`, and the
//! certificate meter's host routes (seed 004, the Certificates tab: `POST /v1/certificates`,
//! `POST /v1/revocations` and `/v1/revocations/confirmations`, `GET
//! /v1/devices/{id}/updates` and `GET /v1/devices/{id}/revocations`), the routes `openpsd
//! cert request | revoke` and the host's `load_updates` and `apply_revocations` call, passed
//! through, with the customer's session token
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

/// The meter's customer routes under these prefixes are the page's (each keeps the meter's
/// own access rule: the meter checks the session token the proxy adds).
const HOST_PREFIXES: [&str; 6] = [
    "/v1/refills",
    "/v1/inspections",
    "/v1/licenses",
    "/v1/me",
    "/v1/certificates",
    "/v1/revocations",
];

/// Whether `path` is one of the page's meter routes. Under `/v1/devices` only the
/// device's updates and its pending revocation orders (GET; the meter answers the device's
/// owner only): registration, resolve, credit and findings are the operator's.
fn host_route(method: &Method, path: &str) -> bool {
    let under = |prefix: &str| {
        path.strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    if HOST_PREFIXES.iter().any(|p| under(p)) {
        return true;
    }
    let device_get = |suffix: &str| {
        path.strip_prefix("/v1/devices/")
            .and_then(|rest| rest.strip_suffix(suffix))
            .is_some_and(|id| !id.is_empty() && !id.contains('/'))
    };
    method == Method::GET && (device_get("/updates") || device_get("/revocations"))
}

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
    if !host_route(&method, uri.path()) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pages_routes_only() {
        let get = Method::GET;
        let post = Method::POST;
        for (m, p) in [
            (&post, "/v1/refills"),
            (&get, "/v1/me"),
            (&post, "/v1/certificates"),
            (&post, "/v1/revocations"),
            (&post, "/v1/revocations/confirmations"),
            (&get, "/v1/devices/5053440000000001/updates"),
            (&get, "/v1/devices/5053440000000001/revocations"),
        ] {
            assert!(host_route(m, p), "{m} {p}");
        }
        for (m, p) in [
            (&post, "/v1/devices"),
            (&get, "/v1/devices/5053440000000001"),
            (&post, "/v1/devices/5053440000000001/resolve"),
            (&post, "/v1/devices/5053440000000001/updates"),
            (&post, "/v1/devices/5053440000000001/revocations"),
            (&get, "/v1/devices//revocations"),
            (&get, "/v1/devices/a/b/revocations"),
            (&get, "/v1/devices/5053440000000001/revocation-orders"),
            (&get, "/v1/devices//updates"),
            (&get, "/v1/devices/a/b/updates"),
            (&get, "/v1/alarms"),
            (&get, "/v1/certificatesx"),
            (&post, "/v1/customers"),
        ] {
            assert!(!host_route(m, p), "{m} {p}");
        }
    }
}
