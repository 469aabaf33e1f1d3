//! Customers (`docs/security.md` § Customers): sign-up opens a deposit account at the
//! recharging center; passwords are kept as Argon2id hashes; logging in gives a session
//! token that expires; API keys serve machines. Tokens and keys are 256-bit random
//! strings the meter keeps only as SHA-256 hashes, so a copy of its database logs nobody in.
//!
//! [`authenticate`] runs before every route: a valid `Authorization: Bearer` token or key
//! becomes the request's [`Customer`]; an invalid one is refused at once (401) rather than
//! treated as no identity, so a client learns its token expired instead of being told it
//! may not call a route.

use std::collections::HashMap;
use std::time::Instant;

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::Argon2;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use rusqlite::{params, OptionalExtension};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use openpsd_protocol::{
    Account, ApiKey, Credentials, CustomerView, ErrorCode, Me, NewAccount, NewApiKey, Session,
};
use openpsd_service_kit::access::Customer;
use openpsd_service_kit::codec::{self, random_bytes};
use openpsd_service_kit::db::now_secs;
use openpsd_service_kit::error::{ApiError, StorageContext};

use crate::Meter;

/// The customers' tables (added to the meter's schema).
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS customers (
    customer_id   TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,               -- Argon2id, PHC string
    account_id    TEXT NOT NULL UNIQUE,
    created_at    INTEGER NOT NULL
);
-- Session tokens and API keys, by the SHA-256 of the secret (never the secret).
CREATE TABLE IF NOT EXISTS credentials (
    secret_hash TEXT PRIMARY KEY,
    kind        TEXT NOT NULL CHECK (kind IN ('session', 'api_key')),
    key_id      TEXT NOT NULL UNIQUE,
    customer_id TEXT NOT NULL REFERENCES customers(customer_id),
    label       TEXT NOT NULL,
    expires_at  INTEGER,                       -- sessions only
    revoked     INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL
);
";

const STEP: &str = "meter_customer";
/// How long a session token works.
pub(crate) const SESSION_SECONDS: i64 = 8 * 3600;

/// Checks the bearer credential of a request, if it has one, and marks it as the
/// customer's. Requests without one go on with no customer (the route decides).
pub(crate) async fn authenticate(
    State(meter): State<Meter>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return next.run(req).await;
    };
    let secret = match value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")) {
        Some(s) => s.trim().to_owned(),
        None => return unauthenticated("the Authorization header must be `Bearer <token>`"),
    };
    if !well_formed(&secret) {
        return unauthenticated("the token or API key is unknown, expired or revoked");
    }
    match lookup(&meter, &secret).await {
        Ok(Some(customer)) => {
            req.extensions_mut().insert(customer);
            next.run(req).await
        }
        Ok(None) => unauthenticated("the token or API key is unknown, expired or revoked"),
        Err(e) => e.into_response(),
    }
}

/// Whether `secret` has the shape of our tokens (`ops_` or `opk_` and 64 hex digits): no
/// database lookup for anything else.
fn well_formed(secret: &str) -> bool {
    (secret.starts_with("ops_") || secret.starts_with("opk_"))
        && secret.len() == 68
        && secret[4..].bytes().all(|b| b.is_ascii_hexdigit())
}

fn unauthenticated(message: &str) -> Response {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        ErrorCode::Unauthenticated,
        "access",
        message,
    )
    .into_response()
}

fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// How long a checked credential is trusted without asking the database again. Log-out
/// in this process drops it at once; a key revoked by another process (none today) would
/// take this long.
const CACHE_SECONDS: u64 = 30;

/// A cached credential: whose it is, when it was checked, when it expires.
type Checked = (Customer, Instant, Option<i64>);

/// Credentials checked recently, by hash. Every request carries one, and asking SQLite
/// each time would queue them behind the refills' fsyncs.
/// The cache's entries and a generation that every revocation moves on: a lookup that read
/// the database before a revocation committed must not put its (now stale) answer back.
#[derive(Default)]
pub(crate) struct CredentialCache(std::sync::Mutex<(u64, HashMap<String, Checked>)>);

impl CredentialCache {
    fn get(&self, hash: &str, now: i64) -> Option<Customer> {
        let guard = self.0.lock().ok()?;
        let (c, at, expires) = guard.1.get(hash)?;
        let fresh = at.elapsed().as_secs() < CACHE_SECONDS && expires.is_none_or(|e| e > now);
        fresh.then(|| c.clone())
    }

    /// The generation now, to hand to [`CredentialCache::put`] after a database read.
    fn generation(&self) -> u64 {
        self.0.lock().map_or(0, |g| g.0)
    }

    /// Caches what a read begun at `generation` found, unless a revocation came since.
    fn put(&self, generation: u64, hash: String, c: Customer, expires: Option<i64>) {
        if let Ok(mut guard) = self.0.lock() {
            if guard.0 != generation {
                return;
            }
            if guard.1.len() > 10_000 {
                guard.1.clear();
            }
            guard.1.insert(hash, (c, Instant::now(), expires));
        }
    }

    /// Drops `hash` (revoked) and moves the generation on.
    fn forget(&self, hash: &str) {
        if let Ok(mut guard) = self.0.lock() {
            guard.1.remove(hash);
            guard.0 = guard.0.wrapping_add(1);
        }
    }
}

async fn lookup(meter: &Meter, secret: &str) -> Result<Option<Customer>, ApiError> {
    let hash = secret_hash(secret);
    let now = now_secs();
    if let Some(c) = meter.credentials.get(&hash, now) {
        return Ok(Some(c));
    }
    let generation = meter.credentials.generation();
    let key = hash.clone();
    let found = meter
        .db
        .run("access", move |c| {
            c.query_row(
                "SELECT c.customer_id, c.account_id, k.kind, k.expires_at FROM credentials k
                 JOIN customers c USING (customer_id)
                 WHERE k.secret_hash = ?1 AND k.revoked = 0
                   AND (k.expires_at IS NULL OR k.expires_at > ?2)",
                params![hash, now],
                |r| {
                    Ok((
                        Customer {
                            id: r.get(0)?,
                            account_id: r.get(1)?,
                            session: r.get::<_, String>(2)? == "session",
                        },
                        r.get::<_, Option<i64>>(3)?,
                    ))
                },
            )
            .optional()
            .storage("access")
        })
        .await?;
    Ok(found.map(|(c, expires)| {
        meter.credentials.put(generation, key, c.clone(), expires);
        c
    }))
}

fn check_credentials(c: &Credentials) -> Result<(), ApiError> {
    let name_ok = (3..=64).contains(&c.username.len())
        && c.username
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._@-".contains(&b));
    if !name_ok {
        return Err(ApiError::bad_request(
            STEP,
            "username: 3 to 64 of a-z 0-9 . _ @ -",
        ));
    }
    if !(10..=1024).contains(&c.password.chars().count()) {
        return Err(ApiError::bad_request(
            STEP,
            "password: 10 to 1,024 characters",
        ));
    }
    Ok(())
}

/// Argon2 hashes computed at once, at most (each takes 19 MiB and a core for tens of
/// milliseconds): more callers wait their turn instead of exhausting memory.
static ARGON2_SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// A slot for one Argon2 computation, or `503` after waiting 5 s for one.
async fn argon2_slot() -> Result<tokio::sync::SemaphorePermit<'static>, ApiError> {
    match tokio::time::timeout(std::time::Duration::from_secs(5), ARGON2_SLOTS.acquire()).await {
        Ok(Ok(p)) => Ok(p),
        _ => Err(ApiError::unavailable(
            STEP,
            "too many log-ins and sign-ups at once; try again shortly",
        )),
    }
}

/// Argon2id with the crate's defaults (19 MiB, 2 passes, 1 lane: OWASP's minimum), off
/// the async threads, at most two at a time.
async fn hash_password(password: Zeroizing<String>) -> Result<String, ApiError> {
    let _slot = argon2_slot().await?;
    tokio::task::spawn_blocking(move || {
        let mut salt = [0u8; 16];
        random_bytes(&mut salt);
        let salt =
            SaltString::encode_b64(&salt).map_err(|e| ApiError::internal(STEP, e.to_string()))?;
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| ApiError::internal(STEP, e.to_string()))
    })
    .await
    .map_err(|e| ApiError::internal(STEP, e.to_string()))?
}

/// Whether `password` matches the stored hash (constant time inside argon2). With no stored
/// hash, a dummy one is checked all the same, so an unknown username takes as long as a
/// wrong password and names cannot be probed by timing.
async fn verify_password(
    password: Zeroizing<String>,
    stored: Option<String>,
) -> Result<bool, ApiError> {
    let _slot = argon2_slot().await?;
    const DUMMY: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$\
                         9wW8cKk2m6Tn1W2cSmc1eV0n9oHnVnq5n4aNq2V3c8E";
    tokio::task::spawn_blocking(move || {
        let known = stored.is_some();
        let text = stored.unwrap_or_else(|| DUMMY.to_owned());
        let ok = PasswordHash::new(&text).is_ok_and(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        });
        known && ok
    })
    .await
    .map_err(|e| ApiError::internal(STEP, e.to_string()))
}

fn new_secret(prefix: &str) -> Zeroizing<String> {
    let mut b = Zeroizing::new([0u8; 32]);
    random_bytes(b.as_mut());
    Zeroizing::new(format!("{prefix}{}", hex::encode(b.as_ref())))
}

fn new_id(prefix: &str) -> String {
    let mut b = [0u8; 8];
    random_bytes(&mut b);
    format!("{prefix}{}", hex::encode(b))
}

/// `409`: the name belongs to someone (checked before the costly work, and again by the
/// insert, which a racing sign-up may win).
fn username_taken() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        ErrorCode::WrongState,
        STEP,
        "that username is taken",
    )
}

/// API keys are made and revoked by a person logged in (a session), never by another key:
/// a stolen key cannot mint or remove keys.
fn logged_in(customer: &Customer, done: &str) -> Result<(), ApiError> {
    if customer.session {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        ErrorCode::Forbidden,
        STEP,
        format!("API keys are {done} by a person logged in, not by another key"),
    ))
}

/// `POST /v1/customers`: signs up; opens the customer's deposit account at the RC.
pub(crate) async fn sign_up(
    State(meter): State<Meter>,
    body: Bytes,
) -> Result<(StatusCode, Json<CustomerView>), ApiError> {
    let creds: Credentials = codec::json(&body, STEP)?;
    check_credentials(&creds)?;
    let name = creds.username.clone();
    let taken = meter
        .db
        .run(STEP, move |c| {
            c.query_row(
                "SELECT 1 FROM customers WHERE username = ?1",
                [name],
                |_| Ok(()),
            )
            .optional()
            .storage(STEP)
        })
        .await?
        .is_some();
    if taken {
        return Err(username_taken());
    }
    let hash = hash_password(Zeroizing::new(creds.password)).await?;
    let view = CustomerView {
        customer_id: new_id("cust-"),
        username: creds.username,
        account_id: new_id("acct-"),
    };
    // The account first: a customer row never points at an account the RC lacks; an
    // account whose customer row was not written (a crash, a username race) stays empty.
    let _: Account = meter
        .rc
        .post(
            "/v1/accounts",
            &NewAccount {
                account_id: view.account_id.clone(),
            },
            STEP,
        )
        .await?;
    let v = view.clone();
    let inserted = meter
        .db
        .run(STEP, move |c| {
            c.execute(
                "INSERT OR IGNORE INTO customers
                 (customer_id, username, password_hash, account_id, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![v.customer_id, v.username, hash, v.account_id, now_secs()],
            )
            .storage(STEP)
        })
        .await?;
    if inserted == 0 {
        return Err(username_taken());
    }
    tracing::info!(
        "customer {} signed up ({})",
        view.customer_id,
        view.username
    );
    Ok((StatusCode::CREATED, Json(view)))
}

/// `POST /v1/sessions`: logs in; answers a session token.
pub(crate) async fn log_in(
    State(meter): State<Meter>,
    body: Bytes,
) -> Result<Json<Session>, ApiError> {
    let creds: Credentials = codec::json(&body, STEP)?;
    let name = creds.username.clone();
    let row =
        meter
            .db
            .run(STEP, move |c| {
                c.query_row(
                "SELECT customer_id, account_id, password_hash FROM customers WHERE username = ?1",
                [name],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)),
            )
            .optional()
            .storage(STEP)
            })
            .await?;
    let stored = row.as_ref().map(|r| r.2.clone());
    if !verify_password(Zeroizing::new(creds.password), stored).await? {
        tracing::warn!("failed log-in for {:?}", creds.username);
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthenticated,
            STEP,
            "wrong username or password",
        ));
    }
    let Some((customer_id, account_id, _)) = row else {
        return Err(ApiError::internal(STEP, "verified without a row"));
    };
    let token = new_secret("ops_");
    let expires_at = now_secs().saturating_add(SESSION_SECONDS);
    store_credential(
        &meter,
        &token,
        "session",
        &customer_id,
        "session",
        Some(expires_at),
    )
    .await?;
    Ok(Json(Session {
        token: token.to_string(),
        expires_at,
        customer: CustomerView {
            customer_id,
            username: creds.username,
            account_id,
        },
    }))
}

async fn store_credential(
    meter: &Meter,
    secret: &str,
    kind: &'static str,
    customer_id: &str,
    label: &str,
    expires_at: Option<i64>,
) -> Result<String, ApiError> {
    let key_id = new_id("key-");
    let (hash, id, cust, label) = (
        secret_hash(secret),
        key_id.clone(),
        customer_id.to_owned(),
        label.to_owned(),
    );
    meter
        .db
        .run(STEP, move |c| {
            c.execute(
                "INSERT INTO credentials
                 (secret_hash, kind, key_id, customer_id, label, expires_at, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![hash, kind, id, cust, label, expires_at, now_secs()],
            )
            .storage(STEP)
        })
        .await?;
    Ok(key_id)
}

/// `DELETE /v1/sessions/current`: logs out (the token stops working).
pub(crate) async fn log_out(
    State(meter): State<Meter>,
    req: Request,
) -> Result<StatusCode, ApiError> {
    let secret = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|s| secret_hash(s.trim()))
        .ok_or_else(|| ApiError::bad_request(STEP, "no bearer token"))?;
    let hash = secret.clone();
    meter
        .db
        .run(STEP, move |c| {
            c.execute(
                "UPDATE credentials SET revoked = 1 WHERE secret_hash = ?1 AND kind = 'session'",
                [hash],
            )
            .storage(STEP)
        })
        .await?;
    // After the commit, so no request in between can put it back.
    meter.credentials.forget(&secret);
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/api-keys`: a key for a machine; only a person logged in may make one.
pub(crate) async fn new_api_key(
    State(meter): State<Meter>,
    Extension(customer): Extension<Customer>,
    body: Bytes,
) -> Result<(StatusCode, Json<ApiKey>), ApiError> {
    let req: NewApiKey = codec::json(&body, STEP)?;
    logged_in(&customer, "made")?;
    if req.label.is_empty() || req.label.len() > 64 {
        return Err(ApiError::bad_request(STEP, "label: 1 to 64 characters"));
    }
    let key = new_secret("opk_");
    let key_id = store_credential(&meter, &key, "api_key", &customer.id, &req.label, None).await?;
    Ok((
        StatusCode::CREATED,
        Json(ApiKey {
            key_id,
            key: key.to_string(),
            label: req.label,
        }),
    ))
}

/// `DELETE /v1/api-keys/{key_id}`: revokes one of the customer's API keys (a person logged
/// in only). Another customer's key, or none, is not found.
pub(crate) async fn revoke_api_key(
    State(meter): State<Meter>,
    Extension(customer): Extension<Customer>,
    UrlPath(key_id): UrlPath<String>,
) -> Result<StatusCode, ApiError> {
    logged_in(&customer, "revoked")?;
    let owner = customer.id.clone();
    let id = key_id.clone();
    let hash = meter
        .db
        .run(STEP, move |c| {
            let hash: Option<String> = c
                .query_row(
                    "SELECT secret_hash FROM credentials
                     WHERE key_id = ?1 AND customer_id = ?2 AND kind = 'api_key'",
                    params![id, owner],
                    |r| r.get(0),
                )
                .optional()
                .storage(STEP)?;
            if let Some(h) = &hash {
                c.execute(
                    "UPDATE credentials SET revoked = 1 WHERE secret_hash = ?1",
                    [h],
                )
                .storage(STEP)?;
            }
            Ok(hash)
        })
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::NotFound,
                STEP,
                format!("no API key '{key_id}' of yours"),
            )
        })?;
    // After the commit, so no request in between can put it back.
    meter.credentials.forget(&hash);
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/me`: the customer and their account's balances.
pub(crate) async fn me(
    State(meter): State<Meter>,
    Extension(customer): Extension<Customer>,
) -> Result<Json<Me>, ApiError> {
    let id = customer.id.clone();
    let username = meter
        .db
        .run(STEP, move |c| {
            c.query_row(
                "SELECT username FROM customers WHERE customer_id = ?1",
                [id],
                |r| r.get::<_, String>(0),
            )
            .storage(STEP)
        })
        .await?;
    let account: Account = meter
        .rc
        .get(&format!("/v1/accounts/{}", customer.account_id), STEP)
        .await?;
    Ok(Json(Me {
        customer: CustomerView {
            customer_id: customer.id,
            username,
            account_id: customer.account_id,
        },
        account,
    }))
}
