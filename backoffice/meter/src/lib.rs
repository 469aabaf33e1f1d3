//! Meter server (seed 000 Fig. 4): the only service the host talks to. It runs a refill
//! step by step — nonce, audit verified by the KMS, audit checked against the last one it
//! accepted for the device (step 250), combination and hold from the recharging center,
//! refill message and receipt from the KMS, confirmation by a fresh audit — and settles
//! the hold with exactly what the device's audits show. It holds no key that makes a
//! refill message, and no money.
//!
//! Crash safety: every state change is one SQLite transaction committed before the reply,
//! and every call to another service is idempotent (holds by request ID, settlements by
//! combination ID; the KMS's ECDSA signatures on refill messages and receipts are
//! deterministic, RFC 6979). So the order is always
//! "external calls first, then commit": a crash between the two leaves the refill in the
//! state before, and the host's retry with the same `client_txn_id` repeats the calls and
//! gets the same answers. A refill message leaves the meter only after the commit that
//! records it, so a message the meter has no record of was never delivered.
//!
//! Devices: the meter serves only devices an operator registered with it (owner account,
//! per-set baseline: `registry.rs`); the first audit of a set must match its baseline, and
//! any verified audit that disagrees with the ledger raises an alarm and quarantines the
//! device (`alarms.rs`). An outstanding refill can be cancelled by its owner: released at
//! once if its message never left, otherwise by a void that shares its precondition
//! (`cancel.rs`), settled by the audit that shows which of the two applied.
//!
//! Concurrency: one outstanding refill per device (a partial unique index enforces it),
//! and everything that reads and then moves a device's audit history holds that device's
//! lock across its calls to the KMS and the RC, so two audits of one device never race.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::Method;
use axum::routing::{delete, get, post};
use axum::Router;
use tokio::sync::OwnedMutexGuard;

use openpsd_service_kit::access::{RateLimit, Routes, Who};
use openpsd_service_kit::db::Db;
use openpsd_service_kit::pki::Pki;
use openpsd_service_kit::tls::{client_config, Role};
use openpsd_service_kit::upstream::Upstream;

mod alarms;
mod calls;
mod cancel;
mod certificates;
mod credit_lines;
mod customers;
mod history;
mod inspection;
pub mod licenses;
mod post_office;
mod refill;
mod registry;
pub mod retire;
mod revocations;
pub use revocations::REVOCATION_GRACE;
mod store;
#[cfg(test)]
mod tests;
mod updates;

use alarms::{list_alarms, resolve};
use cancel::cancel;
use inspection::{get_inspection, inspection_audit, new_inspection};
use refill::{confirm, get_refill, refill_audit, request_refill};
use registry::{get_device, register};

/// Database file name.
pub const DB_FILE: &str = "meter.sqlite";

pub(crate) const SCHEMA: &str = "
-- Registered devices' licenses (from the KMS's public data), to check set and license.
CREATE TABLE IF NOT EXISTS devices (
    device_id  TEXT PRIMARY KEY,
    licenses   TEXT NOT NULL,               -- JSON [[license, origin], ...]
    fetched_at INTEGER NOT NULL
);
-- The last audit accepted per device and register set: what step 250 checks against.
CREATE TABLE IF NOT EXISTS last_audits (
    device_id           TEXT NOT NULL,
    set_index           INTEGER NOT NULL,
    license             INTEGER NOT NULL,
    ar                  INTEGER NOT NULL,
    dr                  INTEGER NOT NULL,
    control_sum         INTEGER NOT NULL,
    pieces              INTEGER NOT NULL,
    refills             INTEGER NOT NULL,
    last_combination_id TEXT NOT NULL,
    nonce               TEXT NOT NULL,
    audit               TEXT NOT NULL,
    accepted_at         INTEGER NOT NULL,
    PRIMARY KEY (device_id, set_index)
);
-- Every audit accepted, for the record.
CREATE TABLE IF NOT EXISTS audit_log (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id   TEXT NOT NULL,
    set_index   INTEGER NOT NULL,
    purpose     TEXT NOT NULL,              -- refill, confirm, inspection
    reference   TEXT NOT NULL,              -- client_txn_id or inspection_id
    audit       TEXT NOT NULL,
    accepted_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS refills (
    client_txn_id     TEXT PRIMARY KEY,
    device_id         TEXT NOT NULL,
    set_index         INTEGER NOT NULL,
    account_id        TEXT NOT NULL,
    amount            INTEGER NOT NULL CHECK (amount > 0),
    state             TEXT NOT NULL CHECK (state IN ('awaiting_audit', 'audit_accepted',
                          'message_issued', 'completed', 'released', 'refused')),
    nonce             TEXT NOT NULL,
    audit             TEXT,                 -- the accepted audit the combination is bound to
    license           INTEGER,
    bound_control_sum INTEGER,
    bound_refills     INTEGER,
    combination_id    TEXT UNIQUE,
    signature         TEXT,
    refill_message    TEXT,
    receipt           TEXT,
    confirm_nonce     TEXT,
    confirm_audit     TEXT,
    error_status      INTEGER,
    error_code        TEXT,
    error_step        TEXT,
    error_message     TEXT,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    void_combination_id TEXT,               -- the owner cancelled after the message left
    void_signature    TEXT,
    void_message      TEXT
);
-- At most one outstanding refill per device, whatever races.
CREATE UNIQUE INDEX IF NOT EXISTS one_outstanding_refill ON refills(device_id)
    WHERE state IN ('awaiting_audit', 'audit_accepted', 'message_issued');
CREATE TABLE IF NOT EXISTS inspections (
    inspection_id TEXT PRIMARY KEY,
    device_id     TEXT NOT NULL,
    set_index     INTEGER NOT NULL,
    nonce         TEXT NOT NULL,
    audit         TEXT,
    receipt       TEXT,
    created_at    INTEGER NOT NULL,
    accepted_at   INTEGER
);
-- Devices the operator registered: the owner account that pays their refills, and
-- whether an alarm quarantined them.
CREATE TABLE IF NOT EXISTS registrations (
    device_id     TEXT PRIMARY KEY,
    account_id    TEXT NOT NULL,
    quarantined   INTEGER NOT NULL DEFAULT 0,
    registered_at INTEGER NOT NULL
);
-- Per register set, the state registration gave it (plus what an operator wrote off when
-- resolving an alarm): control sum - baseline = the refills applied since.
CREATE TABLE IF NOT EXISTS baselines (
    device_id   TEXT NOT NULL,
    set_index   INTEGER NOT NULL,
    control_sum INTEGER NOT NULL,
    refills     INTEGER NOT NULL,
    PRIMARY KEY (device_id, set_index)
);
-- Per register set, identified by its license (seed 003: a set can move between slots,
-- and sets added by a license have no registration baseline): the last accepted audit
-- (step 250 checks against it) and the baseline. `set_index` is the slot the set was
-- last audited in, for the record only. These replace `last_audits` and `baselines`
-- (keyed by slot), which older databases have: see `migrate_to_licenses`.
CREATE TABLE IF NOT EXISTS license_audits (
    device_id           TEXT NOT NULL,
    license             INTEGER NOT NULL,
    set_index           INTEGER NOT NULL,
    ar                  INTEGER NOT NULL,
    dr                  INTEGER NOT NULL,
    control_sum         INTEGER NOT NULL,
    pieces              INTEGER NOT NULL,
    refills             INTEGER NOT NULL,
    last_combination_id TEXT NOT NULL,
    nonce               TEXT NOT NULL,
    audit               TEXT NOT NULL,
    accepted_at         INTEGER NOT NULL,
    fees                INTEGER NOT NULL DEFAULT 0, -- certificate-meter fees (seed 004)
    services            INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (device_id, license)
);
CREATE TABLE IF NOT EXISTS license_baselines (
    device_id   TEXT NOT NULL,
    license     INTEGER NOT NULL,
    control_sum INTEGER NOT NULL,
    refills     INTEGER NOT NULL,
    PRIMARY KEY (device_id, license)
);
-- Verified audits that disagreed with the ledger.
CREATE TABLE IF NOT EXISTS alarms (
    alarm_id    INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id   TEXT NOT NULL,
    set_index   INTEGER NOT NULL,
    license     INTEGER,                    -- the set's license, when known
    kind        TEXT NOT NULL,
    message     TEXT NOT NULL,
    audit       TEXT,                       -- the audit that raised it, if one did
    raised_at   INTEGER NOT NULL,
    resolved_at INTEGER,
    note        TEXT
);
-- Combinations the RC made outside this meter's refills that an audit showed applied.
CREATE TABLE IF NOT EXISTS foreign_settlements (
    combination_id TEXT PRIMARY KEY,
    device_id      TEXT NOT NULL,
    outcome        TEXT NOT NULL,
    settled_at     INTEGER NOT NULL
);
";

pub(crate) const STEP_REQUEST: &str = "meter_request";
pub(crate) const STEP_AUDIT: &str = "meter_audit";
pub(crate) const STEP_CHECK: &str = "meter_check_audit";
pub(crate) const STEP_CONFIRM: &str = "meter_confirm";
pub(crate) const STEP_INSPECTION: &str = "meter_inspection";
pub(crate) const STEP_REGISTER: &str = "meter_register";
pub(crate) const STEP_CANCEL: &str = "meter_cancel";
pub(crate) const STEP_ALARM: &str = "meter_alarm";

/// Columns added to `refills` after the first stored format (voids).
const VOID_COLUMNS: &[(&str, &str)] = &[
    ("void_combination_id", "TEXT"),
    ("void_signature", "TEXT"),
    ("void_message", "TEXT"),
];

/// Columns added to `alarms` when history became per license.
const ALARM_COLUMNS: &[(&str, &str)] = &[("license", "INTEGER")];

/// Columns the certificate meter (seed 004) added to `license_audits`: the fees and the
/// service count the last accepted audit reported (0 for audits before).
const FEE_COLUMNS: &[(&str, &str)] = &[
    ("fees", "INTEGER NOT NULL DEFAULT 0"),
    ("services", "INTEGER NOT NULL DEFAULT 0"),
];

/// Migration to history per license (seed 003; `docs/refill.md` § History per license).
/// Databases from before kept the last audit and the baseline per slot (`last_audits`,
/// `baselines`, keyed by `set_index`). Each is copied once into its per-license table:
/// a last audit names its license already; a baseline gets the license the KMS registered
/// for its slot (the `devices` cache, which registration always fills), else that of the
/// slot's last audit. `INSERT OR IGNORE`: rows already migrated (or written since) stay.
/// The old tables are left as they were (no longer read or written).
const MIGRATE_TO_LICENSES: &str = "
INSERT OR IGNORE INTO license_audits
    (device_id, license, set_index, ar, dr, control_sum, pieces, refills,
     last_combination_id, nonce, audit, accepted_at)
SELECT device_id, license, set_index, ar, dr, control_sum, pieces, refills,
       last_combination_id, nonce, audit, accepted_at
FROM last_audits;
INSERT OR IGNORE INTO license_baselines (device_id, license, control_sum, refills)
SELECT b.device_id,
       COALESCE(json_extract(d.licenses, '$[' || b.set_index || '][0]'), la.license),
       b.control_sum, b.refills
FROM baselines b
LEFT JOIN devices d ON d.device_id = b.device_id
LEFT JOIN last_audits la ON la.device_id = b.device_id AND la.set_index = b.set_index
WHERE COALESCE(json_extract(d.licenses, '$[' || b.set_index || '][0]'), la.license) IS NOT NULL;
UPDATE alarms SET license = (
    SELECT json_extract(d.licenses, '$[' || alarms.set_index || '][0]')
    FROM devices d WHERE d.device_id = alarms.device_id)
WHERE license IS NULL;
";

/// How long a refill whose message never left may stay outstanding before it is released
/// (`docs/refill.md` § Expiry).
pub const UNISSUED_TTL: Duration = Duration::from_secs(15 * 60);

/// States in which a refill is outstanding (blocks another refill of the device).
pub(crate) const OUTSTANDING: &str = "('awaiting_audit', 'audit_accepted', 'message_issued')";

/// How the meter server is set up.
#[derive(Clone, Debug)]
pub struct Config {
    /// Data directory: `meter.sqlite`.
    pub data: PathBuf,
    /// KMS base URL.
    pub kms_url: String,
    /// Recharging center base URL.
    pub recharge_url: String,
    /// The back office's PKI: the meter's certificate for calling the KMS and the RC.
    pub pki: Pki,
    /// Requests per second per caller (and twice that at once).
    pub rate: u32,
    /// The vendor's base URL (licenses, seed 003); `None`: `/v1/licenses` answers `503`.
    pub vendor_url: Option<String>,
    /// The postal authority's base URL (revoking the grant of a retired set); `None`: a
    /// retirement is refunded but its grant is left for the PA's desk to revoke.
    pub pa_url: Option<String>,
    /// The certificate authority's base URL (key certificates, seed 004); `None`:
    /// `/v1/certificates` answers `503`.
    pub ca_url: Option<String>,
    /// The creditor's base URL (lines of credit, seed 004 Fig. 8); `None`:
    /// `/v1/credit-lines` answers `503`.
    pub creditor_url: Option<String>,
}

/// The meter server's shared state.
#[derive(Clone)]
pub struct Meter {
    pub(crate) db: Db,
    pub(crate) kms: Upstream,
    pub(crate) rc: Upstream,
    pub(crate) vendor: Option<Upstream>,
    pub(crate) pa: Option<Upstream>,
    pub(crate) ca: Option<Upstream>,
    pub(crate) creditor: Option<Upstream>,
    pub(crate) locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    rate: u32,
    pub(crate) credentials: Arc<customers::CredentialCache>,
    /// [`UNISSUED_TTL`] unless a test shortens it.
    pub(crate) unissued_ttl: Duration,
    /// How long a revocation order may stay unconfirmed before refills are refused
    /// ([`revocations::REVOCATION_GRACE`] unless configured).
    pub(crate) revocation_grace: Duration,
}

impl Meter {
    /// Opens the data directory.
    pub fn open(config: &Config) -> anyhow::Result<Self> {
        openpsd_service_kit::keys::private_dir(&config.data)?;
        let schema = format!(
            "{SCHEMA}{}{}{}",
            customers::SCHEMA,
            licenses::SCHEMA,
            retire::SCHEMA
        );
        let db = Db::open(&config.data.join(DB_FILE), &schema)?;
        // Databases from before voids: the columns added, and their index.
        let conn = openpsd_service_kit::db::open_connection(&config.data.join(DB_FILE))?;
        openpsd_service_kit::db::add_missing_columns(&conn, "refills", VOID_COLUMNS)?;
        conn.execute_batch(
            "CREATE UNIQUE INDEX IF NOT EXISTS refills_void ON refills(void_combination_id)",
        )?;
        // Databases from before history per license: alarms' license, then the copy.
        openpsd_service_kit::db::add_missing_columns(&conn, "alarms", ALARM_COLUMNS)?;
        conn.execute_batch(MIGRATE_TO_LICENSES)?;
        openpsd_service_kit::db::add_missing_columns(&conn, "license_audits", FEE_COLUMNS)?;
        let tls = client_config(&config.pki, Some(Role::Meter))?;
        Ok(Self {
            db,
            kms: Upstream::new("KMS", &config.kms_url, Role::Kms, tls.clone())?,
            rc: Upstream::new(
                "recharging center",
                &config.recharge_url,
                Role::Recharge,
                tls.clone(),
            )?,
            vendor: config
                .vendor_url
                .as_deref()
                .map(|url| Upstream::new("vendor", url, Role::Vendor, tls.clone()))
                .transpose()?,
            pa: config
                .pa_url
                .as_deref()
                .map(|url| Upstream::new("postal authority", url, Role::Pa, tls.clone()))
                .transpose()?,
            ca: config
                .ca_url
                .as_deref()
                .map(|url| Upstream::new("certificate authority", url, Role::Ca, tls.clone()))
                .transpose()?,
            creditor: config
                .creditor_url
                .as_deref()
                .map(|url| Upstream::new("creditor", url, Role::Creditor, tls))
                .transpose()?,
            locks: Arc::default(),
            rate: config.rate,
            credentials: Arc::default(),
            unissued_ttl: UNISSUED_TTL,
            revocation_grace: REVOCATION_GRACE,
        })
    }

    /// The same meter with another time-to-live for refills whose message never left
    /// (the expiry tests).
    #[must_use]
    pub fn with_unissued_ttl(mut self, ttl: Duration) -> Self {
        self.unissued_ttl = ttl;
        self
    }

    /// The same meter with another grace period for unconfirmed revocation orders (refills
    /// are refused once one is older: forced revocation).
    #[must_use]
    pub fn with_revocation_grace(mut self, grace: Duration) -> Self {
        self.revocation_grace = grace;
        self
    }

    /// The HTTP API (the hosts') and who may call each route: anyone may sign up and log
    /// in (rate-limited harder: each costs an Argon2 hash); everything about refills and
    /// inspections is the customer's who owns the device, checked in the handlers; devices
    /// are registered, alarms read and quarantines resolved by an operator
    /// (`docs/security.md`).
    pub fn routes(rate: u32) -> Routes<Meter> {
        const ANYONE: &[Who] = &[Who::Anyone];
        const CUSTOMER: &[Who] = &[Who::Customer];
        const OPERATOR: &[Who] = &[Who::Role(Role::Operator)];
        const OWNER_OR_OPERATOR: &[Who] = &[Who::Customer, Who::Role(Role::Operator)];
        // A twentieth of a customer's rate per address (5/s by default), 20 at once.
        let slow = RateLimit::new(rate / 20, rate / 5);
        Routes::new()
            .route(
                Method::POST,
                "/v1/customers",
                slow.on(post(customers::sign_up)),
                ANYONE,
            )
            .route(
                Method::POST,
                "/v1/sessions",
                slow.on(post(customers::log_in)),
                ANYONE,
            )
            .route(
                Method::POST,
                "/v1/refills/{client_txn_id}/cancel",
                post(cancel),
                CUSTOMER,
            )
            .route(Method::POST, "/v1/devices", post(register), OPERATOR)
            .route(
                Method::GET,
                "/v1/devices/{device_id}",
                get(get_device),
                OWNER_OR_OPERATOR,
            )
            .route(
                Method::POST,
                "/v1/devices/{device_id}/resolve",
                post(resolve),
                OPERATOR,
            )
            .route(Method::GET, "/v1/alarms", get(list_alarms), OPERATOR)
            .route(
                Method::GET,
                "/v1/devices/{device_id}/credit",
                get(post_office::credit),
                &[Who::Role(Role::Post), Who::Role(Role::Operator)],
            )
            .route(
                Method::POST,
                "/v1/devices/{device_id}/findings",
                post(post_office::finding),
                &[Who::Role(Role::Post)],
            )
            .route(
                Method::DELETE,
                "/v1/sessions/current",
                delete(customers::log_out),
                CUSTOMER,
            )
            .route(
                Method::POST,
                "/v1/api-keys",
                post(customers::new_api_key),
                CUSTOMER,
            )
            .route(
                Method::DELETE,
                "/v1/api-keys/{key_id}",
                delete(customers::revoke_api_key),
                CUSTOMER,
            )
            .route(Method::GET, "/v1/me", get(customers::me), CUSTOMER)
            .route(Method::POST, "/v1/refills", post(request_refill), CUSTOMER)
            .route(
                Method::POST,
                "/v1/certificates",
                post(certificates::request),
                CUSTOMER,
            )
            .route(
                Method::POST,
                "/v1/credit-lines",
                post(credit_lines::request),
                CUSTOMER,
            )
            .route(
                Method::POST,
                "/v1/revocations",
                post(revocations::request),
                CUSTOMER,
            )
            .route(
                Method::POST,
                "/v1/revocations/confirmations",
                post(revocations::confirm),
                CUSTOMER,
            )
            .route(
                Method::POST,
                "/v1/licenses",
                post(licenses::order_license),
                CUSTOMER,
            )
            .route(
                Method::POST,
                "/v1/licenses/retirements",
                post(retire::retire),
                CUSTOMER,
            )
            .route(
                Method::GET,
                "/v1/licenses/{client_txn_id}",
                get(licenses::get_order),
                CUSTOMER,
            )
            .route(
                Method::GET,
                "/v1/refills/{client_txn_id}",
                get(get_refill),
                CUSTOMER,
            )
            .route(
                Method::POST,
                "/v1/refills/{client_txn_id}/audit",
                post(refill_audit),
                CUSTOMER,
            )
            .route(
                Method::POST,
                "/v1/refills/{client_txn_id}/confirm",
                post(confirm),
                CUSTOMER,
            )
            .route(
                Method::POST,
                "/v1/inspections",
                post(new_inspection),
                CUSTOMER,
            )
            .route(
                Method::GET,
                "/v1/inspections/{inspection_id}",
                get(get_inspection),
                CUSTOMER,
            )
            .route(
                Method::POST,
                "/v1/inspections/{inspection_id}/audit",
                post(inspection_audit),
                CUSTOMER,
            )
            .route(
                Method::GET,
                "/v1/devices/{device_id}/updates",
                get(updates::device_updates),
                CUSTOMER,
            )
            .route(
                Method::GET,
                "/v1/devices/{device_id}/revocations",
                get(revocations::pending),
                CUSTOMER,
            )
            .route(Method::GET, "/health", get(|| async { "ok" }), ANYONE)
    }

    /// The router: customers authenticated first, then the rate limit, then each route's
    /// access list.
    pub fn router(self) -> Router {
        let limit = RateLimit::new(self.rate, self.rate.saturating_mul(2));
        Self::routes(self.rate)
            .into_router(&limit)
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                customers::authenticate,
            ))
            .with_state(self)
    }

    /// The device's lock, held across a read-check-call-commit sequence on its history.
    pub(crate) async fn lock(&self, device_id: &str) -> OwnedMutexGuard<()> {
        let m = {
            let mut map = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(map.entry(device_id.to_owned()).or_default())
        };
        m.lock_owned().await
    }
}
