//! Mailers (seed 001 Fig. 1: the user logs in to the communication server from any
//! computer): sign-up, log-in, sessions, log-out.
//!
//! Passwords are kept as Argon2id hashes computed with the data center's **secret**
//! (`datacenter-pepper.key`, 0600, in the data directory, never in the database): a copy of
//! the database alone neither logs anyone in (it holds no password-equivalent: sessions are
//! kept as SHA-256 of their tokens) nor lets the hashes be guessed offline. Failed log-ins
//! are counted per username, each attempt counted as a failure before its hash is checked
//! (and uncounted when right): the sixth within 15 minutes is refused with `429` before any
//! hash is computed, whatever runs in parallel, and logged. Sign-up and log-in are also
//! bounded per address (the router's `slow` limit): each sign-up takes a slot of the box.

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use openpsd_protocol::datacenter::{code, MailerCredentials, MailerSession};
use openpsd_protocol::ErrorCode;
use openpsd_service_kit::access::Customer;
use openpsd_service_kit::codec::random_bytes;
use openpsd_service_kit::db::now_secs;
use openpsd_service_kit::error::ApiError;
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use crate::sql::{args, Sql};
use crate::Datacenter;

const STEP: &str = "datacenter_mailer";
/// How long a session lasts.
pub(crate) const SESSION_SECONDS: i64 = 8 * 3600;
/// Failed log-ins per username allowed within [`FAILURE_WINDOW`] seconds.
const MAX_FAILURES: i64 = 5;
const FAILURE_WINDOW: i64 = 15 * 60;

/// Argon2 computations at once, at most (19 MiB and a core each).
static ARGON2_SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

fn argon2(pepper: &[u8]) -> Result<Argon2<'_>, ApiError> {
    Argon2::new_with_secret(
        pepper,
        Algorithm::Argon2id,
        Version::V0x13,
        Params::default(),
    )
    .map_err(|e| ApiError::internal(STEP, e.to_string()))
}

fn unauthenticated(message: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        ErrorCode::Unauthenticated,
        STEP,
        message,
    )
}

fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Whether `t` has our tokens' shape (`dcs_` and 64 hex digits).
fn well_formed(t: &str) -> bool {
    t.starts_with("dcs_") && t.len() == 68 && t[4..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// A username as accepted at sign-up: 3 to 64 of a-z 0-9 . _ @ -.
fn username_ok(name: &str) -> bool {
    (3..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._@-".contains(&b))
}

fn check(c: &MailerCredentials) -> Result<(), ApiError> {
    if !username_ok(&c.username) {
        return Err(ApiError::bad_request(
            STEP,
            "username: 3 to 64 of a-z 0-9 . _ @ -",
        ));
    }
    if !(10..=256).contains(&c.password.len()) {
        return Err(ApiError::bad_request(STEP, "password: 10 to 256 bytes"));
    }
    Ok(())
}

async fn hash_password(dc: &Datacenter, password: Zeroizing<String>) -> Result<String, ApiError> {
    let _slot = ARGON2_SLOTS
        .acquire()
        .await
        .map_err(|e| ApiError::internal(STEP, e.to_string()))?;
    let pepper = dc.pepper.clone();
    tokio::task::spawn_blocking(move || {
        let mut salt = [0u8; 16];
        random_bytes(&mut salt);
        let salt =
            SaltString::encode_b64(&salt).map_err(|e| ApiError::internal(STEP, e.to_string()))?;
        argon2(&pepper[..])?
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| ApiError::internal(STEP, e.to_string()))
    })
    .await
    .map_err(|e| ApiError::internal(STEP, e.to_string()))?
}

/// Whether `password` matches `stored`; with none, a dummy hash is checked all the same so
/// an unknown username takes as long as a wrong password.
async fn verify_password(
    dc: &Datacenter,
    password: Zeroizing<String>,
    stored: Option<String>,
) -> Result<bool, ApiError> {
    let _slot = ARGON2_SLOTS
        .acquire()
        .await
        .map_err(|e| ApiError::internal(STEP, e.to_string()))?;
    let pepper = dc.pepper.clone();
    let dummy = dc.dummy_hash.clone();
    tokio::task::spawn_blocking(move || {
        let known = stored.is_some();
        let text = stored.unwrap_or_else(|| dummy.to_string());
        let a = argon2(&pepper[..])?;
        let ok = PasswordHash::new(&text)
            .is_ok_and(|h| a.verify_password(password.as_bytes(), &h).is_ok());
        Ok(known && ok)
    })
    .await
    .map_err(|e| ApiError::internal(STEP, e.to_string()))?
}

/// A hash of a random password, checked when the username is unknown.
pub(crate) fn dummy_hash(pepper: &[u8]) -> anyhow::Result<String> {
    let mut pw = [0u8; 16];
    random_bytes(&mut pw);
    let salt = SaltString::encode_b64(&[7u8; 16]).map_err(|e| anyhow::anyhow!("{e}"))?;
    let a = Argon2::new_with_secret(
        pepper,
        Algorithm::Argon2id,
        Version::V0x13,
        Params::default(),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(a.hash_password(&pw, &salt)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .to_string())
}

/// A new session for `mailer`, stored as its token's hash.
async fn new_session(dc: &Datacenter, mailer: &str) -> Result<MailerSession, ApiError> {
    let mut b = Zeroizing::new([0u8; 32]);
    random_bytes(b.as_mut());
    let token = format!("dcs_{}", hex::encode(b.as_ref()));
    let expires_at = now_secs() + SESSION_SECONDS;
    let (h, m) = (token_hash(&token), mailer.to_owned());
    dc.db
        .run(STEP, move |c| {
            c.exec(
                STEP,
                "INSERT INTO sessions (token_hash, mailer_id, expires_at) VALUES (?1, ?2, ?3)",
                args![h, m, expires_at],
            )
            .map(drop)
        })
        .await?;
    Ok(MailerSession {
        token,
        expires_at,
        mailer_id: mailer.to_owned(),
    })
}

/// `POST /v1/mailers`: a new mailer, a new meter in the box, and a session.
pub(crate) async fn sign_up(
    State(dc): State<Datacenter>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, axum::Json<MailerSession>), ApiError> {
    let req: MailerCredentials = openpsd_service_kit::codec::json(&body, STEP)?;
    check(&req)?;
    let name = req.username.clone();
    let taken = dc
        .db
        .run(STEP, move |c| {
            c.opt(
                STEP,
                "SELECT 1 FROM mailers WHERE username = ?1",
                args![&name],
            )
        })
        .await?
        .is_some();
    if taken {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::WrongState,
            STEP,
            "that username is taken",
        ));
    }
    let hash = hash_password(&dc, Zeroizing::new(req.password)).await?;
    let mut id = [0u8; 16];
    random_bytes(&mut id);
    let mailer = hex::encode(id);
    let (m, name) = (mailer.clone(), req.username.clone());
    dc.db
        .run(STEP, move |c| {
            let n = c.exec(
                STEP,
                "INSERT INTO mailers (mailer_id, username, password_hash, created_at)
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                args![m, name, hash, now_secs()],
            )?;
            if n == 0 {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    ErrorCode::WrongState,
                    STEP,
                    "that username is taken",
                ));
            }
            Ok(())
        })
        .await?;
    tracing::info!(mailer = %mailer, "mailer signed up");
    dc.ensure_meter(&mailer).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(new_session(&dc, &mailer).await?),
    ))
}

/// `POST /v1/sessions`: log-in.
pub(crate) async fn log_in(
    State(dc): State<Datacenter>,
    body: axum::body::Bytes,
) -> Result<axum::Json<MailerSession>, ApiError> {
    let req: MailerCredentials = openpsd_service_kit::codec::json(&body, STEP)?;
    check(&req).map_err(|_| unauthenticated("wrong username or password"))?;
    let name = req.username.clone();
    let now = now_secs();
    // A failure is recorded before the password is checked (and removed when it was
    // right), in the same step as the count: parallel guesses each count, so the sixth
    // within the window is refused whatever the timing.
    let (attempt, row) = dc
        .db
        .run(STEP, move |c| {
            let mut tx = c.transaction(STEP)?;
            // The count and the insert are one step across connections and servers.
            tx.xact_lock(crate::locks::login_key(&name), STEP)?;
            let failures = tx
                .one(
                    STEP,
                    "SELECT COUNT(*) FROM login_failures WHERE username = ?1 AND at > ?2",
                    args![&name, now - FAILURE_WINDOW],
                )?
                .int(0)?;
            if failures >= MAX_FAILURES {
                return Ok((None, None));
            }
            // The failure's own ID: SQLite's rowid, PostgreSQL's `id` column.
            let returning = if tx.is_postgres() { "id" } else { "rowid" };
            let attempt = tx
                .one(
                    STEP,
                    &format!(
                        "INSERT INTO login_failures (username, at) VALUES (?1, ?2) RETURNING {returning}"
                    ),
                    args![&name, now],
                )?
                .int(0)?;
            // Old failures and expired sessions go while we are here.
            tx.exec(
                STEP,
                "DELETE FROM login_failures WHERE at <= ?1",
                args![now - FAILURE_WINDOW],
            )?;
            tx.exec(STEP, "DELETE FROM sessions WHERE expires_at <= ?1", args![now])?;
            let row = tx
                .opt(
                    STEP,
                    "SELECT mailer_id, password_hash FROM mailers WHERE username = ?1",
                    args![&name],
                )?
                .map(|r| Ok::<_, ApiError>((r.text(0)?, r.text(1)?)))
                .transpose()?;
            tx.commit(STEP)?;
            Ok((Some(attempt), row))
        })
        .await?;
    let Some(attempt) = attempt else {
        tracing::warn!(username = %req.username, "log-in throttled: too many failures");
        return Err(ApiError::coded(
            StatusCode::TOO_MANY_REQUESTS,
            code::LOGIN_THROTTLED,
            STEP,
            "too many failed log-ins for this username: wait 15 minutes",
        ));
    };
    let (mailer, stored) = match row {
        Some((m, h)) => (Some(m), Some(h)),
        None => (None, None),
    };
    if !verify_password(&dc, Zeroizing::new(req.password), stored).await? {
        tracing::warn!(username = %req.username, "failed log-in");
        return Err(unauthenticated("wrong username or password"));
    }
    dc.db
        .run(STEP, move |c| {
            let key = if c.is_postgres() { "id" } else { "rowid" };
            c.exec(
                STEP,
                &format!("DELETE FROM login_failures WHERE {key} = ?1"),
                args![attempt],
            )
            .map(drop)
        })
        .await?;
    let mailer = mailer.ok_or_else(|| unauthenticated("wrong username or password"))?;
    dc.ensure_meter(&mailer).await?;
    Ok(axum::Json(new_session(&dc, &mailer).await?))
}

/// `DELETE /v1/sessions/current`: the bearer token is forgotten.
pub(crate) async fn log_out(
    State(dc): State<Datacenter>,
    req: Request,
) -> Result<StatusCode, ApiError> {
    let token = bearer(&req).unwrap_or_default();
    let h = token_hash(&token);
    dc.db
        .run(STEP, move |c| {
            c.exec(STEP, "DELETE FROM sessions WHERE token_hash = ?1", args![h])
                .map(drop)
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

fn bearer(req: &Request) -> Option<String> {
    req.headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(|s| s.trim().to_owned())
}

/// Checks the bearer token, if any, and marks the request as the mailer's ([`Customer`] with
/// the mailer's ID). Without one the request goes on anonymous (the route decides).
pub(crate) async fn authenticate(
    State(dc): State<Datacenter>,
    mut req: Request,
    next: Next,
) -> Response {
    if req.headers().get(header::AUTHORIZATION).is_none() {
        return next.run(req).await;
    }
    let Some(token) = bearer(&req).filter(|t| well_formed(t)) else {
        return unauthenticated("the session token is unknown or expired").into_response();
    };
    let h = token_hash(&token);
    let now = now_secs();
    let found = dc
        .db
        .run(STEP, move |c| {
            c.opt(
                STEP,
                "SELECT mailer_id FROM sessions WHERE token_hash = ?1 AND expires_at > ?2",
                args![h, now],
            )?
            .map(|r| r.text(0))
            .transpose()
        })
        .await;
    match found {
        Ok(Some(mailer)) => {
            req.extensions_mut().insert(Customer {
                id: mailer,
                account_id: String::new(),
                session: true,
            });
            next.run(req).await
        }
        Ok(None) => unauthenticated("the session token is unknown or expired").into_response(),
        Err(e) => e.into_response(),
    }
}
