//! Mailers (seed 001 Fig. 1: the user logs in to the communication server from any
//! computer): sign-up, log-in, sessions, log-out.
//!
//! **Passwords are checked by the box** (the seed's authentication box 40, Fig. 3 steps
//! 115–120; `openpsd_core::vbox::auth`). The data center computes the memory-hard part,
//! Argon2id of the password with the mailer's salt and the data center's **secret**
//! (`datacenter-pepper.key`, 0600, in the data directory, never in the database); the box
//! keeps the mailer's verifier under `K_auth`, a key made inside it that never leaves. The
//! row holds `vbox1$<salt>$<verifier>`: without the box it is worth nothing, so a copy of
//! the database (and of the data center's files, pepper included, when the box runs on its
//! own machine) logs no one in and lets no password be guessed offline, and a verifier
//! copied to another mailer's row does not log in as that mailer. (Whoever can edit the
//! database, or send box commands, is not stopped by it: docs/virtual-meter.md §8.) Rows of the layout before (`$argon2id$…`, checked with the pepper
//! alone) are moved to the box at start, without the passwords ([`move_rows_to_the_box`]);
//! one written after is refused.
//!
//! Sessions are kept as SHA-256 of their tokens. Failed log-ins are counted per username,
//! each attempt counted as a failure before its hash is checked (and uncounted when
//! right): the sixth within 15 minutes is refused with `429` before any hash is computed,
//! whatever runs in parallel, and logged. Sign-up and log-in are also bounded per address
//! (the router's `slow` limit): each sign-up takes a slot of the box.

use argon2::password_hash::PasswordHash;
use argon2::{Algorithm, Argon2, Params, Version};
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use openpsd_core::status::Status;
use openpsd_core::vbox;
use openpsd_core::vbox::auth::{authenticate_data, enroll_data};
use openpsd_core::vbox::keys::{PASSWORD_HASH_LEN, VERIFIER_LEN};
use openpsd_core::vbox::login::LoginRecord;
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

/// The layout of a row checked by the box: `vbox1$` ‖ salt (32 hex) ‖ `$` ‖ verifier (32 hex).
const BOX_PREFIX: &str = "vbox1$";
/// A row moved to the box from the layout before it, at start and without the password:
/// `vbox0$` ‖ verifier (32 hex) ‖ the old PHC string without its hash (`$argon2id$v=19$
/// m=…,t=…,p=…$<salt>`), whose parameters and salt make the hash the verifier is of.
const MOVED_PREFIX: &str = "vbox0$";

/// Argon2id (with the pepper) of `password` and `salt`: what the box's verifier is made of.
fn password_hash(
    pepper: &[u8],
    password: &[u8],
    salt: &[u8; 16],
) -> Result<Zeroizing<[u8; PASSWORD_HASH_LEN]>, ApiError> {
    let mut out = Zeroizing::new([0u8; PASSWORD_HASH_LEN]);
    argon2(pepper)?
        .hash_password_into(password, salt, &mut out[..])
        .map_err(|e| ApiError::internal(STEP, e.to_string()))?;
    Ok(out)
}

/// The parameters of an old PHC string if they are the ones every row of the layout before
/// the box was made with (Argon2id, version 0x13, `Params::default()`), else `None`. The
/// row is read from the database, so whoever edits it must not choose the work a log-in
/// does: a memory cost of gigabytes would take the service down.
fn old_layout_params(parsed: &PasswordHash<'_>) -> Option<Params> {
    let params = Params::try_from(parsed).ok()?;
    let d = Params::default();
    let same = parsed.algorithm == Algorithm::Argon2id.ident()
        && parsed.version == Some(Version::V0x13.into())
        && (params.m_cost(), params.t_cost(), params.p_cost())
            == (d.m_cost(), d.t_cost(), d.p_cost());
    same.then_some(params)
}

/// The hash of a PHC string of the layout before the box (its salt, with the pepper and
/// [`old_layout_params`]) of `password`; `None` for a string that is not one, has other
/// parameters, or whose output is not 32 bytes.
fn phc_hash(
    pepper: &[u8],
    password: &[u8],
    phc: &str,
) -> Result<Option<Zeroizing<[u8; PASSWORD_HASH_LEN]>>, ApiError> {
    use argon2::password_hash::PasswordHasher as _;
    let Ok(parsed) = PasswordHash::new(phc) else {
        return Ok(None);
    };
    let (Some(params), Some(salt)) = (old_layout_params(&parsed), parsed.salt) else {
        return Ok(None);
    };
    let done = argon2(pepper)?
        .hash_password_customized(
            password,
            Some(parsed.algorithm),
            parsed.version,
            params,
            salt,
        )
        .ok();
    Ok(done
        .and_then(|h| h.hash)
        .and_then(|o| <[u8; PASSWORD_HASH_LEN]>::try_from(o.as_bytes()).ok())
        .map(Zeroizing::new))
}

/// Runs `f` with an Argon2 slot on the blocking pool (the slot is given back when `f`
/// returns: box commands run after, so a slow box does not hold the slots).
async fn with_argon2<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let _slot = ARGON2_SLOTS
        .acquire()
        .await
        .map_err(|e| ApiError::internal(STEP, e.to_string()))?;
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(STEP, e.to_string()))?
}

/// A box command of this module on the blocking pool: its answer, `Ok(None)` for `9A65`
/// (not authenticated), 503 for anything else (the box is needed to log in; nothing was
/// changed). The command data holds a password hash: zeroized after.
async fn box_auth(
    dc: &Datacenter,
    ins: u8,
    p1: u8,
    data: Zeroizing<Vec<u8>>,
) -> Result<Option<Vec<u8>>, ApiError> {
    let dc = dc.clone();
    let answer = tokio::task::spawn_blocking(move || dc.boxh.send(ins, p1, &data))
        .await
        .map_err(|e| ApiError::internal(STEP, e.to_string()))?;
    match answer {
        Ok(v) => Ok(Some(v)),
        Err(r) if r.0 == Status::MailerNotAuthenticated.sw() => Ok(None),
        Err(r) => Err(ApiError::unavailable(
            STEP,
            format!("the box could not check the password: {}", r.meaning()),
        )),
    }
}

/// ENROLL MAILER: the box's verifier of `hash` for `mailer`.
async fn box_verifier(
    dc: &Datacenter,
    mailer: [u8; 16],
    hash: &[u8; PASSWORD_HASH_LEN],
) -> Result<[u8; VERIFIER_LEN], ApiError> {
    let data = Zeroizing::new(enroll_data(&mailer, hash));
    box_auth(dc, vbox::ins::ENROLL_MAILER, 0, data)
        .await?
        .ok_or_else(|| ApiError::internal(STEP, "ENROLL MAILER answered 9A65"))?
        .try_into()
        .map_err(|_| ApiError::internal(STEP, "ENROLL MAILER: not a verifier"))
}

/// A mailer's password as enrolled: the stored row, and what the box checks it with.
struct Enrolled {
    /// The row: `vbox1$<salt>$<verifier>`.
    row: String,
    /// Argon2id of the password with the salt and the pepper.
    hash: Zeroizing<[u8; PASSWORD_HASH_LEN]>,
    /// The box's verifier of `hash`.
    verifier: [u8; VERIFIER_LEN],
}

/// The stored form of `password` for `mailer`: a fresh salt, the box's verifier.
async fn enroll(
    dc: &Datacenter,
    mailer: [u8; 16],
    password: Zeroizing<String>,
) -> Result<Enrolled, ApiError> {
    let pepper = dc.pepper.clone();
    let (salt, hash) = with_argon2(move || {
        let mut salt = [0u8; 16];
        random_bytes(&mut salt);
        Ok((
            salt,
            password_hash(&pepper[..], password.as_bytes(), &salt)?,
        ))
    })
    .await?;
    let verifier = box_verifier(dc, mailer, &hash).await?;
    Ok(Enrolled {
        row: format!(
            "{BOX_PREFIX}{}${}",
            hex::encode(salt),
            hex::encode(verifier)
        ),
        hash,
        verifier,
    })
}

/// AUTHENTICATE MAILER with P1 = 01: the box checks `hash` against `verifier` and, if it
/// approves, counts the log-in and answers its signed record (`None`: refused).
async fn box_log_in(
    dc: &Datacenter,
    mailer: &[u8; 16],
    hash: &[u8; PASSWORD_HASH_LEN],
    verifier: &[u8; VERIFIER_LEN],
    at: u64,
) -> Result<Option<Vec<u8>>, ApiError> {
    let mut data = Zeroizing::new(authenticate_data(mailer, hash, verifier));
    data.extend_from_slice(&at.to_be_bytes());
    box_auth(dc, vbox::ins::AUTHENTICATE_MAILER, 1, data).await
}

/// A stored row the box checks: how to make its hash, and its verifier.
enum Stored<'a> {
    /// `vbox1$`: Argon2id with this salt and the default parameters.
    Salt([u8; 16], [u8; VERIFIER_LEN]),
    /// `vbox0$`: a row moved from the layout before: its PHC string without the hash.
    Phc(&'a str, [u8; VERIFIER_LEN]),
}

impl<'a> Stored<'a> {
    fn parse(row: &'a str) -> Option<Self> {
        if let Some(rest) = row.strip_prefix(BOX_PREFIX) {
            let (salt, verifier) = rest.split_once('$')?;
            return Some(Stored::Salt(
                hex::decode(salt).ok()?.try_into().ok()?,
                hex::decode(verifier).ok()?.try_into().ok()?,
            ));
        }
        let rest = row.strip_prefix(MOVED_PREFIX)?;
        let (verifier, phc) = (rest.get(..2 * VERIFIER_LEN)?, rest.get(2 * VERIFIER_LEN..)?);
        Some(Stored::Phc(
            phc,
            hex::decode(verifier).ok()?.try_into().ok()?,
        ))
    }
}

/// Checks `password` against `stored` (the mailer's row), by the box, which counts and signs
/// the log-in it approves (AUTHENTICATE MAILER with P1 = 01 and `at`): the signed log-in
/// record, or `None` for a refusal. An unknown username, a row of the layout before the box
/// (moved at every start, so written since by someone else than the data center) or an
/// unreadable row is refused after the same work (an Argon2id and a box command that
/// fails), so none of them answers sooner than a wrong password.
async fn verify_password(
    dc: &Datacenter,
    mailer: Option<String>,
    password: Zeroizing<String>,
    stored: Option<String>,
    at: u64,
) -> Result<Option<Vec<u8>>, ApiError> {
    let pepper = dc.pepper.clone();
    let (id, h, verifier) = with_argon2(move || {
        let id = mailer
            .as_deref()
            .and_then(|m| crate::indicia::mailer_bytes(m, STEP).ok());
        let row = stored.as_deref().unwrap_or("");
        let checked = match Stored::parse(row) {
            Some(Stored::Salt(salt, v)) => {
                Some((password_hash(&pepper[..], password.as_bytes(), &salt)?, v))
            }
            Some(Stored::Phc(phc, v)) => {
                phc_hash(&pepper[..], password.as_bytes(), phc)?.map(|h| (h, v))
            }
            None => None,
        };
        if checked.is_none() && stored.is_some() {
            tracing::warn!(
                mailer = mailer.as_deref().unwrap_or(""),
                "ALARM: a password row the box does not check (edited in the database?): refused"
            );
        }
        Ok(match checked {
            Some((h, v)) => (id, h, v),
            None => (
                None,
                password_hash(&pepper[..], password.as_bytes(), &[7; 16])?,
                [0; VERIFIER_LEN],
            ),
        })
    })
    .await?;
    let record = box_log_in(dc, &id.unwrap_or([0; 16]), &h, &verifier, at).await?;
    Ok(record.filter(|_| id.is_some()))
}

/// Moves every row of the layout before the box (`$argon2id$…`, checked with the pepper
/// alone) to the box, without the password: its hash is in the row, so the box makes the
/// verifier of that hash, and the row keeps the PHC string without it (`vbox0$`). Run at
/// start, before the service answers: afterwards no row a copy of the database could be
/// guessed against is left, and a row of that layout written later is refused.
pub(crate) async fn move_rows_to_the_box(dc: &Datacenter) -> anyhow::Result<()> {
    let rows: Vec<(String, String)> = dc
        .db
        .run(STEP, |c| {
            c.rows(
                STEP,
                "SELECT mailer_id, password_hash FROM mailers WHERE password_hash LIKE '$argon2%'",
                args![],
            )?
            .into_iter()
            .map(|r| Ok((r.text(0)?, r.text(1)?)))
            .collect()
        })
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    if rows.is_empty() {
        return Ok(());
    }
    tracing::info!(rows = rows.len(), "moving password rows to the box");
    for (i, (mailer, old)) in rows.into_iter().enumerate() {
        let parsed = PasswordHash::new(&old).ok();
        let hash = parsed
            .as_ref()
            .and_then(|p| p.hash)
            .and_then(|o| <[u8; PASSWORD_HASH_LEN]>::try_from(o.as_bytes()).ok())
            .map(Zeroizing::new);
        let parsed = parsed.filter(|p| old_layout_params(p).is_some());
        let (Some(parsed), Some(hash), Ok(id)) =
            (parsed, hash, crate::indicia::mailer_bytes(&mailer, STEP))
        else {
            tracing::warn!(mailer, "a password row of the layout before the box that cannot be read, or not of its parameters: left (it logs no one in)");
            continue;
        };
        let phc = PasswordHash {
            hash: None,
            ..parsed
        }
        .to_string();
        let v = box_verifier(dc, id, &hash).await.map_err(moving_failed)?;
        let new = format!("{MOVED_PREFIX}{}{phc}", hex::encode(v));
        let m = mailer.clone();
        dc.db
            .run(STEP, move |c| {
                c.exec(
                    STEP,
                    "UPDATE mailers SET password_hash = ?1 WHERE mailer_id = ?2 AND password_hash = ?3",
                    args![new, m, old],
                )
            })
            .await
            .map_err(moving_failed)?;
        if (i + 1) % 1000 == 0 {
            tracing::info!(moved = i + 1, "moving password rows to the box");
        }
    }
    Ok(())
}

/// The start's error when a row could not be moved (the box or the database failed).
fn moving_failed(e: ApiError) -> anyhow::Error {
    anyhow::anyhow!("moving password rows to the box: {}", e.message)
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
    let mut id = [0u8; 16];
    random_bytes(&mut id);
    let mailer = hex::encode(id);
    let enrolled = enroll(&dc, id, Zeroizing::new(req.password)).await?;
    let (m, name, hash) = (mailer.clone(), req.username.clone(), enrolled.row.clone());
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
    // The session sign-up opens is a log-in like any other: counted and signed by the box,
    // kept in the history. The mailer exists from here on: a step that fails now says so,
    // since a retry of the sign-up would only hear that the name is taken.
    let signed_up = |mut e: ApiError| {
        e.message = format!(
            "you are signed up, but your first session could not be opened ({}): log in with \
             your username and password",
            e.message
        );
        e
    };
    let at = u64::try_from(now_secs()).unwrap_or(0);
    let record = box_log_in(&dc, &id, &enrolled.hash, &enrolled.verifier, at)
        .await
        .map_err(signed_up)?
        .ok_or_else(|| ApiError::internal(STEP, "the box refused the verifier it just made"))
        .map_err(signed_up)?;
    record_log_in(&dc, &mailer, record, at, None)
        .await
        .map_err(signed_up)?;
    dc.ensure_meter(&mailer).await.map_err(signed_up)?;
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
            let returning = failure_id(&tx);
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
    // The attempt's failure row goes: a right password, or one not checked at all.
    let uncount =
        |dc: Datacenter| async move { dc.db.run(STEP, move |c| uncount_attempt(c, attempt)).await };
    let at = u64::try_from(now).unwrap_or(0);
    let password = Zeroizing::new(req.password);
    let record = match verify_password(&dc, mailer.clone(), password, stored, at).await {
        Ok(record) => record,
        Err(e) => {
            // Not checked (the box or the database unavailable): not a failure either, or
            // an outage would lock the mailer out.
            let _ = uncount(dc.clone()).await;
            return Err(e);
        }
    };
    let Some(record) = record else {
        tracing::warn!(username = %req.username, "failed log-in");
        return Err(unauthenticated("wrong username or password"));
    };
    let mailer = mailer.ok_or_else(|| unauthenticated("wrong username or password"))?;
    record_log_in(&dc, &mailer, record, at, Some(attempt)).await?;
    dc.ensure_meter(&mailer).await?;
    Ok(axum::Json(new_session(&dc, &mailer).await?))
}

/// The column of a log-in failure's own ID: SQLite's rowid, PostgreSQL's `id`.
fn failure_id(c: &impl Sql) -> &'static str {
    if c.is_postgres() {
        "id"
    } else {
        "rowid"
    }
}

/// Deletes the failure row a log-in attempt counted (`attempt`: its own ID).
fn uncount_attempt(c: &mut impl Sql, attempt: i64) -> Result<(), ApiError> {
    let sql = format!("DELETE FROM login_failures WHERE {} = ?1", failure_id(c));
    c.exec(STEP, &sql, args![attempt]).map(drop)
}

/// Keeps the log-in record the box signed for `mailer` (`GET /v1/history` shows it, the
/// auditor walks them all), and uncounts the attempt's failure row (`attempt`; none for
/// sign-up's), in one transaction: the record is not lost to a failed uncount. The record must verify under
/// the box's key and name this mailer and time: the box's answer is checked like any other
/// before it is stored. A sequence the database holds already means the box signed it again:
/// its memory was rolled back (a restored store whose shards had not moved since). That
/// log-in answers 503 with an alarm; the box's count passes the database's again after as
/// many log-ins, each refused so.
async fn record_log_in(
    dc: &Datacenter,
    mailer: &str,
    record: Vec<u8>,
    at: u64,
    attempt: Option<i64>,
) -> Result<(), ApiError> {
    let id = crate::indicia::mailer_bytes(mailer, STEP)?;
    let l = LoginRecord::verify(&record, &dc.info.txn_key)
        .ok()
        .filter(|l| l.mailer == id && l.time == at && l.box_id == dc.info.box_id)
        .ok_or_else(|| ApiError::internal(STEP, "the box's log-in record is not this log-in's"))?;
    let sequence = i64::try_from(l.sequence)
        .map_err(|_| ApiError::internal(STEP, "a log-in sequence beyond 2^63"))?;
    let at = i64::try_from(at).unwrap_or(i64::MAX);
    let mailer = mailer.to_owned();
    dc.db
        .run(STEP, move |c| {
            let mut tx = c.transaction(STEP)?;
            if let Some(attempt) = attempt {
                uncount_attempt(&mut tx, attempt)?;
            }
            if tx
                .opt(
                    STEP,
                    "SELECT 1 FROM logins WHERE sequence = ?1",
                    args![sequence],
                )?
                .is_some()
            {
                tracing::error!(
                    sequence,
                    "ALARM: the box signed a log-in sequence the database holds already: its \
                     memory was rolled back (restored from a backup?)"
                );
                // The password was right: not counted as a failure.
                tx.commit(STEP)?;
                return Err(ApiError::unavailable(
                    STEP,
                    "the box's log-in count is behind the database's (its memory restored?)",
                ));
            }
            tx.exec(
                STEP,
                "INSERT INTO logins (sequence, mailer_id, at, record) VALUES (?1, ?2, ?3, ?4)",
                args![sequence, mailer, at, record],
            )?;
            tx.commit(STEP)
        })
        .await
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A PHC string of the layout before the box, as that layout made it.
    fn old_row(password: &[u8]) -> String {
        use argon2::password_hash::{PasswordHasher as _, SaltString};
        let salt = SaltString::encode_b64(&[5; 16]).expect("salt");
        argon2(b"pepper")
            .expect("argon2")
            .hash_password(password, &salt)
            .expect("hash")
            .to_string()
    }

    #[test]
    fn an_old_row_is_checked_with_the_parameters_it_was_made_with_only() {
        let row = old_row(b"secret");
        let parsed = PasswordHash::new(&row).expect("phc");
        assert!(old_layout_params(&parsed).is_some(), "{row}");
        let hash = phc_hash(b"pepper", b"secret", &row)
            .expect("no error")
            .expect("a hash");
        assert_eq!(&hash[..], parsed.hash.expect("hash").as_bytes());

        // Edited parameters: a memory cost of 4 GiB, more passes, another variant or
        // version. Each is refused before any Argon2 work is done.
        let m = format!("m={}", Params::default().m_cost());
        for (from, to) in [
            (m.as_str(), "m=4194304"),
            (",t=2,", ",t=1000,"),
            (",p=1", ",p=16"),
            ("$argon2id$", "$argon2i$"),
            ("$v=19$", "$v=16$"),
        ] {
            assert!(row.contains(from), "{row} has {from}");
            let edited = row.replacen(from, to, 1);
            let parsed = PasswordHash::new(&edited).expect("still a PHC string");
            assert!(old_layout_params(&parsed).is_none(), "{edited}");
            assert!(
                phc_hash(b"pepper", b"secret", &edited)
                    .expect("no error")
                    .is_none(),
                "{edited}"
            );
        }
    }
}
