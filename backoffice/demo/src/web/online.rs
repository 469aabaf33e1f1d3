//! The page's "online meter" tab (seed 001, issue 16 item 6): the virtual meter's data center
//! behind this origin. `/dc/v1/...` goes to the data center's mailer routes; its session token
//! lives in an HttpOnly cookie of its own (`openpsd_dc_session`), set from the sign-up and
//! log-in answers and never shown to the page's scripts. `POST /dc/demo/deposits` is
//! the demo's payments desk: it books a payment into the logged-in mailer's deposit at the
//! recharging center with the operator's certificate (a real back office books bank
//! transfers there).

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use axum::Json;
use openpsd_protocol::datacenter::{DepositView, MailerSession};
use openpsd_protocol::recharge::{Account, Deposit};
use openpsd_protocol::ErrorCode;
use openpsd_service_kit::codec;
use openpsd_service_kit::error::ApiError;
use serde::Deserialize;

use super::files::no_store;
use super::{Web, MAX_PROXY_BODY};

const STEP: &str = "web_online_meter";
/// The data center's session cookie.
const COOKIE: &str = "openpsd_dc_session";
/// Largest payment the demo's desk books at once (1,000.00).
const MAX_PAYMENT: u64 = 100_000;

/// Whether `path` (under `/dc`) is one of the mailer's routes.
fn mailer_route(method: &Method, path: &str) -> bool {
    matches!(
        (method.as_str(), path),
        ("POST", "/dc/v1/mailers")
            | ("POST", "/dc/v1/sessions")
            | ("DELETE", "/dc/v1/sessions/current")
            | ("GET", "/dc/v1/meter")
            | ("GET", "/dc/v1/deposit")
            | ("GET", "/dc/v1/history")
            | ("POST", "/dc/v1/indicia")
            | ("POST", "/dc/v1/indicia/batch")
            | ("POST", "/dc/v1/refills")
    )
}

fn cookie(token: &str, max_age: u64) -> String {
    format!("{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/dc; Max-Age={max_age}")
}

/// The data center's session token in the request's cookie (exactly one such cookie:
/// [`super::cookie_value`] says why).
fn token(headers: &HeaderMap) -> Option<String> {
    super::cookie_value(headers, COOKIE)
}

fn unavailable(message: String) -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        ErrorCode::ServiceUnavailable,
        STEP,
        message,
    )
}

fn datacenter(web: &Web) -> Result<&str, ApiError> {
    web.datacenter.as_deref().ok_or_else(|| {
        ApiError::unavailable(STEP, "this demo runs no data center (the online meter)")
    })
}

/// `/dc/v1/...`: the data center's mailer routes, the session from the cookie.
pub(crate) async fn dc_proxy(
    State(web): State<Web>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    if body.len() > MAX_PROXY_BODY {
        return Err(ApiError::bad_request(STEP, "request body too large"));
    }
    let path = uri.path();
    if !mailer_route(&method, path) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            STEP,
            format!("no route {path}"),
        ));
    }
    let base = datacenter(&web)?;
    let target = path.trim_start_matches("/dc");
    let mut req = web
        .http
        .request(method.clone(), format!("{base}{target}"))
        .body(body);
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        req = req.header(header::CONTENT_TYPE, ct.clone());
    }
    if let Some(t) = token(&headers) {
        req = req.bearer_auth(t);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| unavailable(format!("data center at {base} unreachable: {e}")))?;
    let status = resp.status();
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| unavailable(format!("the data center's answer lost: {e}")))?;
    let session_route = method == Method::POST && matches!(target, "/v1/mailers" | "/v1/sessions");
    let (body, set_cookie) = if session_route && status.is_success() {
        // The token goes into the cookie; the page sees who and until when, not the token.
        let s: MailerSession = serde_json::from_slice(&bytes)
            .map_err(|e| unavailable(format!("the data center's session: {e}")))?;
        let max_age =
            u64::try_from(s.expires_at - openpsd_service_kit::db::now_secs()).unwrap_or(0);
        let shown = serde_json::json!({"mailer_id": s.mailer_id, "expires_at": s.expires_at});
        (
            Bytes::from(shown.to_string()),
            Some(cookie(&s.token, max_age)),
        )
    } else if method == Method::DELETE {
        (bytes, Some(cookie("", 0)))
    } else {
        (bytes, None)
    };
    let mut out = Response::new(Body::from(body));
    *out.status_mut() = status;
    out.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    if let Some(c) = set_cookie {
        if let Ok(v) = header::HeaderValue::from_str(&c) {
            out.headers_mut().insert(header::SET_COOKIE, v);
        }
    }
    no_store(out.headers_mut());
    Ok(out)
}

/// `POST /dc/demo/deposits` body.
#[derive(Deserialize)]
pub(crate) struct Payment {
    amount: u64,
}

/// `POST /dc/demo/deposits`: the demo's payments desk books `amount` into the
/// logged-in mailer's deposit.
pub(crate) async fn pay_in(
    State(web): State<Web>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<DepositView>, ApiError> {
    let p: Payment = codec::json(&body, STEP)?;
    if p.amount == 0 || p.amount > MAX_PAYMENT {
        return Err(ApiError::amount_invalid(STEP, "amount: 0.01 to 1,000.00"));
    }
    let base = datacenter(&web)?;
    let t = token(&headers).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthenticated,
            STEP,
            "log in first",
        )
    })?;
    let resp = web
        .http
        .get(format!("{base}/v1/deposit"))
        .bearer_auth(&t)
        .send()
        .await
        .map_err(|e| unavailable(format!("data center: {e}")))?;
    if !resp.status().is_success() {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthenticated,
            STEP,
            "the online meter's session is over: log in again",
        ));
    }
    let d: DepositView = resp
        .json()
        .await
        .map_err(|e| unavailable(format!("data center: {e}")))?;
    let reference = format!("demo-{}", hex::encode(codec::random_array::<8>()));
    let a: Account = web
        .recharge
        .post(
            &format!("/v1/accounts/{}/deposits", d.account_id),
            &Deposit {
                amount: p.amount,
                reference,
            },
            STEP,
        )
        .await?;
    Ok(Json(DepositView {
        account_id: a.account_id,
        available: a.available,
        held: a.held,
        debited: a.debited,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mailers_routes_only() {
        for (m, p) in [
            (Method::POST, "/dc/v1/mailers"),
            (Method::POST, "/dc/v1/sessions"),
            (Method::DELETE, "/dc/v1/sessions/current"),
            (Method::GET, "/dc/v1/meter"),
            (Method::POST, "/dc/v1/indicia"),
            (Method::POST, "/dc/v1/indicia/batch"),
            (Method::POST, "/dc/v1/refills"),
        ] {
            assert!(mailer_route(&m, p), "{m} {p}");
        }
        for (m, p) in [
            (Method::GET, "/dc/v1/mailers"),
            (Method::POST, "/dc/v1/meter"),
            (Method::GET, "/dc/health"),
            (Method::POST, "/dc/v1/indicia/extra"),
            (Method::GET, "/dc/v1/indicia/batch"),
            (Method::DELETE, "/dc/v1/sessions/other"),
        ] {
            assert!(!mailer_route(&m, p), "{m} {p}");
        }
    }

    #[test]
    fn the_cookie_is_httponly_and_scoped_to_the_data_centers_routes() {
        let c = cookie("dcs_x", 60);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Path=/dc"));
    }
}
