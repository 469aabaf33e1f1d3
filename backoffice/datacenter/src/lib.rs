//! The virtual meter's data center (seed 001, WO 98/57304 Fig. 1; `docs/virtual-meter.md`
//! §9): communication, function and database server in one service. Mailers sign up and
//! log in from a browser ([`mailers`]); each has one meter whose record lives in the
//! database ([`store`]) and whose every change goes through the secure box ([`boxhost`]):
//! the box checks the record's MAC and its Merkle path to the shard root (an old, edited,
//! moved or another mailer's record is refused before anything is printed), does the
//! accounting, signs the indicium and a transaction record, and commits its new root before
//! it answers.
//!
//! **Commit order.** For each box command the data center (1) records an intent (the
//! command's bytes) and commits it, (2) sends the command, (3) commits the answer (record,
//! Merkle path, transaction record, indicium) and drops the intent in one transaction. A
//! crash between (2) and (3) leaves the intent: at start-up, and before any later command of
//! the same shard, RESUME re-sends it and the box answers the identical bytes (or `9A64`:
//! it has not committed it, and the command itself is sent now; only a refusal drops the
//! intent, nothing charged). At start-up every
//! shard's root in the database must equal the box's: a database restored from a backup is
//! refused, loudly ([`Datacenter::open`]).
//!
//! **Serialization.** On SQLite, one database closure at a time (`db::Db::run`'s one
//! connection). On PostgreSQL, a few connections per process (`database_connections`) and
//! possibly several data centers (function servers) on one database and one box:
//! PostgreSQL's advisory locks keep them apart, one per shard held from the intent to the
//! answer's commit ([`locks`]); commands of different shards run in parallel on different
//! connections (`docs/virtual-meter.md` §9, Several function servers).
//!
//! **Storage**: SQLite in the data directory by default; PostgreSQL with `database_url`
//! (a primary with a synchronous standby; a failover costs the requests under way a 503,
//! never value: [`db`]).
//!
//! **The box** runs in this process (its own thread) or as a separate `card-sim serve
//! --tcp` process, over plain loopback TCP or mutual TLS ([`boxhost::BoxAt`]); a link lost mid-command is healed by RESUME like a
//! crash between the two commits.
//!
//! **Not built yet**: group commit across meters (§8).

pub mod audit;
pub mod boxhost;
pub mod db;
mod indicia;
pub(crate) mod locks;
mod mailers;
mod refill;
pub mod sql;
mod standing;
pub mod store;

pub use db::Database;

use std::path::PathBuf;
use std::sync::Arc;

use axum::http::{Method, StatusCode};
use axum::routing::{delete, get, post};
use axum::Router;
use openpsd_core::crypto::PUBLIC_KEY_LEN;
use openpsd_core::vbox::login::LoginRecord;
use openpsd_core::vbox::merkle::EmptyHashes;
use openpsd_protocol::datacenter::{
    code, BoxRegistration, GrantAnswer, GrantRequest, MeterRegistration,
};
use openpsd_protocol::kms::DeviceInfo;
use openpsd_protocol::kms::KmsPublicKey;
use openpsd_protocol::license::VendorPublicKey;
use openpsd_service_kit::access::{RateLimit, Routes, Who};
use openpsd_service_kit::codec;
use openpsd_service_kit::error::ApiError;
use openpsd_service_kit::pki::Pki;
use openpsd_service_kit::tls::{client_config, Role};
use openpsd_service_kit::upstream::Upstream;
use zeroize::Zeroizing;

use boxhost::{BoxAt, BoxHandle, BoxInfo};
use db::{Db, DEFAULT_CONNECTIONS};
use sql::Sql;

/// Database file name.
pub const DB_FILE: &str = "datacenter.sqlite";
/// The secret every password hash is computed with (hex, 0600).
pub const PEPPER_FILE: &str = "datacenter-pepper.key";
/// The box's card memory (a card-sim file store).
pub const BOX_DIR: &str = "box";

const STEP_OPEN: &str = "datacenter_open";
const STEP_METER: &str = "datacenter_meter";
/// How long a start waits, in all, for shards another server holds past the lock timeout
/// (10 s a try, `db::LOCK_TIMEOUT_MS`) or a box that does not answer: then the start fails.
const START_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

/// How the data center is set up.
#[derive(Clone, Debug)]
pub struct Config {
    /// Data directory: the database, the pepper, the box.
    pub data: PathBuf,
    /// The vendor's base URL (grants).
    pub vendor_url: String,
    /// The KMS's base URL (its public key: the box's refill key; meter registration,
    /// refill messages).
    pub kms_url: String,
    /// The recharging center's base URL (the mailers' deposits).
    pub rc_url: String,
    /// The back office's PKI.
    pub pki: Pki,
    /// The box's geometry, used when it is personalized (first start).
    pub shards: u16,
    /// Depth of each shard's tree.
    pub depth: u8,
    /// The postal license the meters are granted under.
    pub license: u32,
    /// Their origin postal code.
    pub origin: String,
    /// Largest postage per piece.
    pub max_postage: u64,
    /// Largest balance a meter may hold.
    pub max_dr: u64,
    /// A PostgreSQL connection string (key=value; several `host`s with
    /// `target_session_attrs=read-write` follow a failover); `None`: `datacenter.sqlite` in
    /// the data directory.
    pub database_url: Option<String>,
    /// Connections to PostgreSQL (SQLite: always one): each runs one call at a time, so
    /// this many calls on different shards run side by side.
    pub database_connections: usize,
    /// Where the box is: in this process on `DATA/box` (the default), or a
    /// `card-sim serve --tcp` process (plain TCP or mutual TLS).
    pub box_at: BoxAt,
    /// How old the KMS's word that a meter is in service (registered, not revoked) may be
    /// for a new indicium (standing.rs); zero asks before every request.
    pub standing_recheck: std::time::Duration,
    /// Connections served at once from one address (of 4,096 in all): a firm's mailers
    /// behind one NAT share it. Default 1,024; the benchmark, whose thousand mailers are
    /// all 127.0.0.1, raises it.
    pub connections_per_address: usize,
}

impl Config {
    /// Defaults: 16 shards of depth 10 (16,384 meters), license 4711, origin 10115, 100.00
    /// per piece, 10,000.00 per meter.
    pub fn new(data: PathBuf, [vendor_url, kms_url, rc_url]: [&str; 3], pki: Pki) -> Self {
        Self {
            vendor_url: vendor_url.to_owned(),
            kms_url: kms_url.to_owned(),
            rc_url: rc_url.to_owned(),
            pki,
            shards: 16,
            depth: 10,
            license: 4711,
            origin: "10115".to_owned(),
            max_postage: 10_000,
            max_dr: 1_000_000,
            database_url: None,
            database_connections: usize::from(DEFAULT_CONNECTIONS),
            box_at: BoxAt::InProcess(boxhost::LocalBox::in_data(&data)),
            standing_recheck: std::time::Duration::from_secs(60),
            connections_per_address: 1024,
            data,
        }
    }
}

/// The box a data center's database belongs to, as the KMS registers it
/// (`backoffice datacenter register-box`). Reads the database only. Blocking.
pub fn box_registration(db: &Database) -> anyhow::Result<BoxRegistration> {
    db.read(|c| {
        let r = c
            .one(
                "register_box",
                "SELECT box_id, txn_key, depth FROM box WHERE id = 1",
                args![],
            )
            .map_err(|e| anyhow::anyhow!("{}", e.message))?;
        let get = || -> Result<BoxRegistration, ApiError> {
            Ok(BoxRegistration {
                box_id: r.text(0)?,
                txn_key: r.text(1)?,
                depth: r.num(2)?,
            })
        };
        get().map_err(|e| anyhow::anyhow!("{}", e.message))
    })
}

/// The data center's shared state.
#[derive(Clone)]
pub struct Datacenter {
    db: Db,
    boxh: BoxHandle,
    info: Arc<BoxInfo>,
    empty: Arc<EmptyHashes>,
    vendor: Upstream,
    rc: Upstream,
    kms: Upstream,
    pepper: Arc<Zeroizing<[u8; 32]>>,
    /// One lock per mailer, held while its refills are driven (refill.rs).
    refill_locks:
        Arc<std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    config: Arc<Config>,
    /// The meters' standing at the KMS, asked before printing (standing.rs).
    standing: Arc<std::sync::Mutex<standing::Standing>>,
}

/// The check a PostgreSQL reconnect runs before it serves (`db::Db::check_after_reconnect`):
/// every shard's root in the database is the box's, except on a shard with an intent, which
/// RESUME finishes before the shard's next command. A promoted standby that misses commits
/// (an asynchronous one, the wrong member of a quorum) is refused here with the start's
/// alarm: 503 to every request until the latest database is back, never a refill bound to
/// stale counters.
fn roots_check(
    boxh: BoxHandle,
    info: Arc<BoxInfo>,
    empty: Arc<EmptyHashes>,
) -> Box<db::ReconnectCheck> {
    Box::new(move |c| {
        let step = "datacenter_reconnect";
        for s in 0..info.shards {
            // Under the shard's lock, so another data center's command in flight is not
            // mistaken for a stale database.
            locks::lock_shard(c, s, step)?;
            let pending = c
                .opt(step, "SELECT 1 FROM intents WHERE shard = ?1", args![s])?
                .is_some();
            let same = if pending {
                Ok(true)
            } else {
                same_root(c, &boxh, &info, &empty, s, step)
            };
            locks::unlock_shards(c, step)?;
            if !same? {
                tracing::error!(
                    shard = s,
                    "ALARM: the database reconnected to is older than the box"
                );
                return Err(ApiError::unavailable(
                    step,
                    format!(
                        "the database now answering holds shard {s} older than the box (a \
                         standby that missed commits was promoted?): refusing to serve from \
                         it; restore the latest database"
                    ),
                ));
            }
        }
        Ok(())
    })
}

/// Whether the database's root of `shard` is the box's (READ SHARD). The caller holds the
/// shard's lock and has finished or skipped its intents. A box that does not answer
/// ([`boxhost::LOST`]) is 503: a running server answers its request so, a starting one tries
/// again. A box that answers with an error (a shard record it cannot read: `6F00`) is 500,
/// which no retry mends: a start fails at once with it.
fn same_root(
    c: &mut sql::Conn<'_>,
    boxh: &BoxHandle,
    info: &BoxInfo,
    empty: &EmptyHashes,
    shard: u16,
    step: &'static str,
) -> Result<bool, ApiError> {
    let ours = store::root(c, shard, info.depth, empty, step)?;
    let theirs = boxh.shard_root(shard).map_err(|r| {
        let message = format!("READ SHARD {shard}: {}", r.meaning());
        if r == boxhost::LOST {
            ApiError::unavailable(step, message)
        } else {
            ApiError::internal(step, message)
        }
    })?;
    Ok(ours == theirs)
}

/// The slot of the `n`-th meter: shard `n mod shards`, index `n / shards` (`None` past the
/// box's capacity).
fn spread_slot(n: u64, shards: u16, depth: u8) -> Option<u64> {
    let shards = u64::from(shards.max(1));
    let index = n / shards;
    (index < 1u64 << depth).then(|| ((n % shards) << depth) | index)
}

fn public_key(hex_text: &str, what: &str) -> anyhow::Result<[u8; PUBLIC_KEY_LEN]> {
    let b = hex::decode(hex_text)?;
    b.try_into()
        .map_err(|_| anyhow::anyhow!("{what}: not a 65-byte public key"))
}

impl Datacenter {
    /// Opens the database and the box (personalizing it at first start with the vendor's
    /// and the KMS's public keys, read from them), finishes any command a crash left
    /// uncommitted (RESUME), and checks every shard's root against the box's.
    pub async fn open(config: &Config) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.data)?;
        let db_path = config.data.join(DB_FILE);
        let pepper_path = config.data.join(PEPPER_FILE);
        let db = match &config.database_url {
            None => {
                openpsd_service_kit::keys::ensure_key_kept(&pepper_path, &db_path)?;
                Db::sqlite(&db_path, store::SCHEMA)?
            }
            Some(url) => {
                let db = Db::postgres(url, store::SCHEMA, config.database_connections).await?;
                let mailers = db
                    .run(STEP_OPEN, |c| {
                        c.one(STEP_OPEN, "SELECT COUNT(*) FROM mailers", args![])?
                            .int(0)
                    })
                    .await
                    .map_err(|e| anyhow::anyhow!("{}", e.message))?;
                let depends = format!("the PostgreSQL database holds {mailers} mailers");
                openpsd_service_kit::keys::ensure_key_kept_for(
                    &pepper_path,
                    (mailers > 0).then_some(depends.as_str()),
                )?;
                db
            }
        };
        tracing::info!(database = db.kind(), "data center database open");
        let pepper = openpsd_service_kit::keys::load_or_create(
            &pepper_path,
            openpsd_service_kit::keys::random_key,
            |_| true,
        )?;
        let tls = client_config(&config.pki, Some(Role::Datacenter))?;
        let vendor = Upstream::new("vendor", &config.vendor_url, Role::Vendor, tls.clone())?;
        let rc = Upstream::new(
            "recharging center",
            &config.rc_url,
            Role::Recharge,
            tls.clone(),
        )?;
        let kms = Upstream::new("KMS", &config.kms_url, Role::Kms, tls)?;
        let at = config.box_at.clone();
        let pki = config.pki.clone();
        let (boxh, info) =
            tokio::task::spawn_blocking(move || BoxHandle::connect(&at, Some(&pki))).await??;
        let info = match info {
            Some(info) => info,
            None => {
                // A blank box: personalized now with the vendor's and the KMS's keys.
                let v: VendorPublicKey = vendor
                    .get("/v1/public-key", STEP_OPEN)
                    .await
                    .map_err(|e| anyhow::anyhow!("the vendor's public key: {}", e.message))?;
                let k: KmsPublicKey = kms
                    .get("/v1/public-key", STEP_OPEN)
                    .await
                    .map_err(|e| anyhow::anyhow!("the KMS's public key: {}", e.message))?;
                let (v, k) = (
                    public_key(&v.public_key, "vendor")?,
                    public_key(&k.public_key, "KMS")?,
                );
                let (shards, depth) = (config.shards, config.depth);
                let h = boxh.clone();
                tokio::task::spawn_blocking(move || h.personalize(shards, depth, v, k)).await??
            }
        };
        tracing::info!(
            box_id = %codec::device_hex(&info.box_id),
            at = %config.box_at,
            "the secure box is open"
        );
        let dc = Self {
            db,
            boxh,
            info: Arc::new(info),
            empty: Arc::new(EmptyHashes::new()),
            vendor,
            rc,
            kms,
            pepper: Arc::new(pepper),
            refill_locks: Arc::default(),
            config: Arc::new(config.clone()),
            standing: Arc::default(),
        };
        dc.bind_box().await?;
        dc.check_pepper().await?;
        mailers::move_rows_to_the_box(&dc).await?;
        dc.recover_and_check().await?;
        dc.check_log_ins().await?;
        dc.db.check_after_reconnect(roots_check(
            dc.boxh.clone(),
            Arc::clone(&dc.info),
            Arc::clone(&dc.empty),
        ));
        // Refills a crash left between their steps: finished now if the recharging center
        // and the KMS answer, else at the mailer's next request.
        if let Err(e) = refill::finish_refills(&dc, None).await {
            tracing::warn!(error = %e.message, "unfinished refills stay for the mailers' next requests");
        }
        Ok(dc)
    }

    /// Records the box this database belongs to, or refuses another one.
    async fn bind_box(&self) -> anyhow::Result<()> {
        let info = self.info.clone();
        let (id, key) = (codec::device_hex(&info.box_id), hex::encode(info.txn_key));
        let (shards, depth) = (info.shards, info.depth);
        let recorded: Option<(String, String)> = self
            .db
            .run(STEP_OPEN, move |c| {
                // The first data center to start records its box; every later one (or one
                // starting at the same time) must have the same.
                c.exec(
                    STEP_OPEN,
                    "INSERT INTO box (id, box_id, shards, depth, txn_key) VALUES (1, ?1, ?2, ?3, ?4)
                     ON CONFLICT (id) DO NOTHING",
                    args![id, shards, depth, key],
                )?;
                c.opt(
                    STEP_OPEN,
                    "SELECT box_id, txn_key FROM box WHERE id = 1",
                    args![],
                )?
                .map(|r| Ok::<_, ApiError>((r.text(0)?, r.text(1)?)))
                .transpose()
            })
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.message))?;
        if let Some((id, key)) = recorded {
            anyhow::ensure!(
                id == codec::device_hex(&self.info.box_id) && key == hex::encode(self.info.txn_key),
                "the database belongs to box {id}, but the box at {} is box {}: refusing to start",
                self.config.box_at,
                codec::device_hex(&self.info.box_id)
            );
        }
        Ok(())
    }

    /// Records the pepper's fingerprint, or refuses a pepper that is not the one recorded:
    /// a second data center on the database needs a copy of the first one's
    /// `datacenter-pepper.key`, or every log-in it checked would fail.
    async fn check_pepper(&self) -> anyhow::Result<()> {
        use sha2::Digest as _;
        use subtle::ConstantTimeEq as _;
        let mut h = sha2::Sha256::new();
        h.update(b"openpsd datacenter pepper fingerprint v1\0");
        h.update(&self.pepper[..]);
        let ours = hex::encode(h.finalize());
        let mine = ours.clone();
        let recorded: String = self
            .db
            .run(STEP_OPEN, move |c| {
                c.exec(
                    STEP_OPEN,
                    "INSERT INTO pepper (id, fingerprint) VALUES (1, ?1) ON CONFLICT (id) DO NOTHING",
                    args![mine],
                )?;
                c.one(STEP_OPEN, "SELECT fingerprint FROM pepper WHERE id = 1", args![])?
                    .text(0)
            })
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.message))?;
        anyhow::ensure!(
            bool::from(recorded.as_bytes().ct_eq(ours.as_bytes())),
            "{} is not the pepper this database's password hashes were made with: copy it \
             from the data center that first used the database; refusing to start",
            self.config.data.join(PEPPER_FILE).display()
        );
        Ok(())
    }

    /// Finishes every intent a crash left (RESUME), then compares every shard's root in the
    /// database with the box's: a mismatch (a database restored from a backup, an edited
    /// node) refuses the start, since every command of that shard would be refused anyway.
    async fn recover_and_check(&self) -> anyhow::Result<()> {
        let dc = self.clone();
        let mismatched = self
            .db
            .run(STEP_OPEN, move |c| {
                let mut bad = Vec::new();
                let deadline = std::time::Instant::now() + START_PATIENCE;
                // Shard by shard under its lock: another data center's command in flight
                // is finished or waited for, never mistaken for a restored database.
                for s in 0..dc.info.shards {
                    let same = loop {
                        match dc.root_is_the_box(c, s) {
                            // Another server holds the shard past the lock timeout (its
                            // box link stalled, say), or the box did not answer: a running
                            // server answers its request 503; a starting one tries again,
                            // within a minute for all shards.
                            Err(e)
                                if e.status == StatusCode::SERVICE_UNAVAILABLE
                                    && e.code != sql::UNREACHABLE
                                    && std::time::Instant::now() < deadline =>
                            {
                                tracing::warn!(shard = s, error = %e.message, "the shard is busy at start: trying again");
                                std::thread::sleep(std::time::Duration::from_secs(1));
                            }
                            r => break r?,
                        }
                    };
                    if !same {
                        bad.push(s);
                    }
                }
                Ok(bad)
            })
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.message))?;
        if !mismatched.is_empty() {
            tracing::error!(shards = ?mismatched, "ALARM: the database's roots are not the box's");
            anyhow::bail!(
                "the database's Merkle roots of shard(s) {mismatched:?} are not the box's: the \
                 database is older than the box (restored from a backup?) or was edited. \
                 Refusing to start: restore the latest database."
            );
        }
        Ok(())
    }

    /// Compares the box's count of approved log-ins (GET DATA 00 02) with the log-in records
    /// the database holds. The box counts a log-in before the database keeps its record, so
    /// the box is never behind: if it is, its memory was rolled back (restored from a
    /// backup) and it would sign sequences the database holds again. That refuses the start,
    /// with an alarm, as a shard root does. The database's last row must be a record the box
    /// signed, with that sequence: a row edited or inserted in the database refuses the start
    /// with its own alarm, not taken for a rolled-back box. A box ahead counted log-ins whose
    /// records the database does not hold (lost between the two commits, deleted, or under
    /// way on another data center): named in a warning, since the auditor, which reads the
    /// database only, cannot see records lost after the last one stored. A box that does not
    /// know GET DATA 00 02 (`6A86`: an older `card-sim`) is not compared, with a warning.
    async fn check_log_ins(&self) -> anyhow::Result<()> {
        // The database first, the box second: another data center on the same database
        // may be logging mailers in meanwhile, and the box's count only grows and is
        // committed before each record is stored, so a count read after the last stored
        // record can only be at or past it, unless the box was rolled back.
        let last = self
            .db
            .run(STEP_OPEN, |c| {
                c.opt(
                    STEP_OPEN,
                    "SELECT sequence, record FROM logins ORDER BY sequence DESC LIMIT 1",
                    args![],
                )?
                .map(|r| Ok::<_, ApiError>((r.int(0)?, r.blob(1)?)))
                .transpose()
            })
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.message))?;
        let held = match last {
            None => 0,
            Some((seq, record)) => {
                let signed = LoginRecord::verify(&record, &self.info.txn_key)
                    .ok()
                    .filter(|l| {
                        i64::try_from(l.sequence).ok() == Some(seq) && l.box_id == self.info.box_id
                    });
                if signed.is_none() {
                    tracing::error!(
                        sequence = seq,
                        "ALARM: the database's last log-in row is not a record the box signed"
                    );
                    anyhow::bail!(
                        "the database's log-in row {seq} is not a record the box signed with that \
                         sequence (edited or inserted in the database?): `backoffice datacenter \
                         audit` names it. Refusing to start: restore the latest database, or \
                         remove the row."
                    );
                }
                u64::try_from(seq).unwrap_or(0)
            }
        };
        let boxh = self.boxh.clone();
        let counted = match tokio::task::spawn_blocking(move || boxh.login_count()).await? {
            Ok(n) => n,
            Err(r) if r.0 == openpsd_core::status::Status::IncorrectP1P2.sw() => {
                tracing::warn!("the box does not report its log-in count (an older card-sim?): not compared with the database's");
                return Ok(());
            }
            Err(r) => anyhow::bail!("GET DATA 00 02 (the box's log-in count): {}", r.meaning()),
        };
        if counted < held {
            tracing::error!(
                box_count = counted,
                database = held,
                "ALARM: the box's log-in count is behind the database's"
            );
            anyhow::bail!(
                "the box has counted {counted} log-ins but the database holds the record of \
                 log-in {held}: the box's memory is older than the database (restored from a \
                 backup?) and would sign those sequences again. Refusing to start: restore the \
                 box's latest memory."
            );
        }
        if counted > held {
            let missing = if counted == held + 1 {
                counted.to_string()
            } else {
                format!("{}-{counted}", held + 1)
            };
            tracing::warn!(
                box_count = counted,
                database = held,
                missing = %missing,
                "the box counted log-ins whose records the database does not hold (lost between \
                 the box and the database, deleted, or under way on another data center)"
            );
        } else {
            tracing::info!(
                log_ins = counted,
                "the box's log-in count is the database's"
            );
        }
        Ok(())
    }

    /// Whether the database's root of `shard` is the box's, once the shard's intents are
    /// finished (under the shard's lock).
    fn root_is_the_box(&self, c: &mut sql::Conn<'_>, shard: u16) -> Result<bool, ApiError> {
        if let Err(e) = indicia::claim_shard(self, c, shard) {
            // Not held while the caller waits to try again.
            let _ = locks::unlock_shards(c, STEP_OPEN);
            return Err(e);
        }
        let same = same_root(c, &self.boxh, &self.info, &self.empty, shard, STEP_OPEN);
        locks::unlock_shards(c, STEP_OPEN)?;
        same
    }

    /// `mailer`'s refill lock.
    pub(crate) async fn refill_lock(&self, mailer: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut map = self.refill_locks.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(map.entry(mailer.to_owned()).or_default())
        };
        lock.lock_owned().await
    }

    /// The box's description.
    pub fn box_info(&self) -> &BoxInfo {
        &self.info
    }

    /// The routes: sign-up, log-in and the health check are anyone's; the meter, indicia,
    /// history and log-out a logged-in mailer's (whose meter the handler looks up by the
    /// session, never by an ID in the request); a meter's credit the post office's.
    ///
    /// `rate` requests per second per caller; sign-up and log-in (Argon2, and a box slot
    /// per sign-up) a twentieth of it per address.
    pub fn routes(rate: u32) -> Routes<Datacenter> {
        const ANYONE: &[Who] = &[Who::Anyone];
        const MAILER: &[Who] = &[Who::Customer];
        let slow = RateLimit::new((rate / 20).max(1), (rate / 5).max(1));
        Routes::new()
            .route(
                Method::POST,
                "/v1/mailers",
                slow.on(post(mailers::sign_up)),
                ANYONE,
            )
            .route(
                Method::POST,
                "/v1/sessions",
                slow.on(post(mailers::log_in)),
                ANYONE,
            )
            .route(
                Method::DELETE,
                "/v1/sessions/current",
                delete(mailers::log_out),
                MAILER,
            )
            .route(Method::GET, "/v1/meter", get(indicia::meter), MAILER)
            .route(Method::POST, "/v1/indicia", post(indicia::issue), MAILER)
            .route(
                Method::POST,
                "/v1/indicia/batch",
                post(indicia::issue_batch),
                MAILER,
            )
            .route(Method::GET, "/v1/history", get(indicia::history), MAILER)
            .route(Method::POST, "/v1/refills", post(refill::refill), MAILER)
            .route(Method::GET, "/v1/deposit", get(refill::deposit), MAILER)
            .route(
                Method::GET,
                "/v1/meters/{meter_id}/credit",
                get(indicia::credit),
                &[Who::Role(Role::Post)],
            )
            .route(Method::GET, "/health", get(|| async { "ok" }), ANYONE)
    }

    /// The router, `rate` requests per second per caller, with the mailers' session check
    /// outside the routes'.
    pub fn router(self, rate: u32) -> Router {
        Self::routes(rate)
            .into_router(&RateLimit::new(rate, rate.saturating_mul(2)))
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                mailers::authenticate,
            ))
            .with_state(self)
    }

    /// Makes `mailer`'s meter if it has none yet: reserves a slot and a meter ID (kept, so a
    /// retry asks the vendor for the same grant), asks the vendor for the grant, and has the
    /// box create the meter (CREATE METER).
    pub(crate) async fn ensure_meter(&self, mailer: &str) -> Result<(), ApiError> {
        let step = STEP_METER;
        let m = mailer.to_owned();
        let exists = self
            .db
            .run(step, move |c| {
                Ok(
                    c.opt(step, "SELECT 1 FROM meters WHERE mailer_id = ?1", args![&m])?
                        .is_some(),
                )
            })
            .await?;
        if exists {
            // Its deposit account was opened before it (below).
            self.try_register_meter(mailer).await;
            return Ok(());
        }
        // The deposit account first (idempotent): a sign-up that failed after the mailer's
        // row was written gets it here, at its next log-in.
        refill::open_account(self, mailer).await?;
        let m = mailer.to_owned();
        let (shards, depth) = (self.info.shards, self.info.depth);
        let capacity = u64::from(shards) << depth;
        let reserved: Option<(String, u32)> = self
            .db
            .run(step, move |c| {
                if c.opt(step, "SELECT 1 FROM meters WHERE mailer_id = ?1", args![&m])?
                    .is_some()
                {
                    return Ok(None);
                }
                let mut tx = c.transaction(step)?;
                // The next free slot, read and taken atomically across data centers.
                tx.xact_lock(locks::RESERVATIONS, step)?;
                let got = tx
                    .opt(
                        step,
                        "SELECT meter_id, slot FROM reservations WHERE mailer_id = ?1",
                        args![&m],
                    )?
                    .map(|r| Ok::<_, ApiError>((r.text(0)?, r.num::<u32>(1)?)))
                    .transpose()?;
                let got = match got {
                    Some(g) => g,
                    None => {
                        // The n-th meter goes to shard n mod shards, so meters spread over
                        // the shards from the first ones on and several data centers work
                        // in parallel (one command at a time per shard). A slot taken
                        // already (a database from before the spread) is skipped.
                        let mut n = tx
                            .one(step, "SELECT COUNT(*) FROM reservations", args![])?
                            .int(0)?;
                        let slot = loop {
                            let slot = u64::try_from(n)
                                .ok()
                                .and_then(|n| spread_slot(n, shards, depth))
                                .filter(|s| *s < capacity);
                            let Some(slot) = slot else {
                                return Err(ApiError::coded(StatusCode::SERVICE_UNAVAILABLE, code::NO_SLOT, step, "the data center's box is full"));
                            };
                            let slot = u32::try_from(slot).map_err(|_| ApiError::internal(step, "slot"))?;
                            if tx
                                .opt(step, "SELECT 1 FROM reservations WHERE slot = ?1", args![slot])?
                                .is_none()
                            {
                                break slot;
                            }
                            n += 1;
                        };
                        let mut id = *b"VM\0\0\0\0\0\0";
                        codec::random_bytes(&mut id[2..]);
                        let meter = hex::encode_upper(id);
                        tx.exec(
                            step,
                            "INSERT INTO reservations (mailer_id, meter_id, slot) VALUES (?1, ?2, ?3)",
                            args![&m, &meter, slot],
                        )?;
                        (meter, slot)
                    }
                };
                tx.commit(step)?;
                Ok(Some(got))
            })
            .await?;
        let Some((meter, slot)) = reserved else {
            self.try_register_meter(mailer).await;
            return Ok(());
        };
        let req = GrantRequest {
            box_id: codec::device_hex(&self.info.box_id),
            meter_id: meter.clone(),
            slot,
            mailer_id: mailer.to_owned(),
            license: self.config.license,
            origin: self.config.origin.clone(),
            max_postage: self.config.max_postage,
            max_dr: self.config.max_dr,
        };
        let answer: GrantAnswer = self.vendor.post("/v1/vbox/grants", &req, step).await?;
        let grant = hex::decode(&answer.grant)
            .map_err(|_| ApiError::unavailable(step, "the vendor's grant is not hex"))?;
        indicia::create_meter(self, mailer, slot, grant).await?;
        tracing::info!(mailer = %mailer, meter = %meter, slot, "meter created in the box");
        self.try_register_meter(mailer).await;
        Ok(())
    }

    /// [`Self::register_meter`], its failure logged: the meter exists, but neither prints
    /// nor is refilled until it is registered, which every later request retries (a new
    /// indicium registers it first: standing.rs).
    async fn try_register_meter(&self, mailer: &str) {
        if let Err(e) = self.register_meter(mailer).await {
            tracing::warn!(mailer = %mailer, error = %e.message, "the meter is not registered at the KMS yet");
        }
    }

    /// Registers `mailer`'s meter at the KMS (once; the KMS checks the box made it), so the
    /// KMS seals its refills and the post office verifies its indicia with its key.
    pub(crate) async fn register_meter(&self, mailer: &str) -> Result<(), ApiError> {
        let step = STEP_METER;
        let m = mailer.to_owned();
        // Meter ID, its record at creation, the siblings then, the CREATE transaction record.
        type Pending = (String, Vec<u8>, Vec<u8>, Vec<u8>);
        let pending: Option<Pending> = self
            .db
            .run(step, move |c| {
                c.opt(
                    step,
                    "SELECT m.meter_id, m.created_record, m.create_proof, t.record
                     FROM meters m JOIN txns t ON t.meter_id = m.meter_id AND t.kind = 1
                     WHERE m.mailer_id = ?1 AND m.kms_registered = 0",
                    args![&m],
                )?
                .map(|r| Ok::<_, ApiError>((r.text(0)?, r.blob(1)?, r.blob(2)?, r.blob(3)?)))
                .transpose()
            })
            .await?;
        let Some((meter, record, proof, transaction)) = pending else {
            return Ok(());
        };
        let reg = MeterRegistration {
            record: hex::encode(record),
            proof: hex::encode(proof),
            transaction: hex::encode(transaction),
        };
        let _: DeviceInfo = self
            .kms
            .post("/v1/vbox/meters", &reg, step)
            .await
            .map_err(|e| {
                ApiError::unavailable(
                    step,
                    format!(
                        "the KMS does not register the meter yet ({}); is the box registered \
                         (`backoffice datacenter register-box`)?",
                        e.message
                    ),
                )
            })?;
        self.db
            .run(step, move |c| {
                c.exec(
                    step,
                    "UPDATE meters SET kms_registered = 1 WHERE meter_id = ?1",
                    args![meter],
                )
                .map(drop)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::spread_slot;

    #[test]
    fn meters_spread_over_the_shards_and_fill_the_box_once() {
        let (shards, depth) = (4u16, 3u8);
        let slots: Vec<u64> = (0..).map_while(|n| spread_slot(n, shards, depth)).collect();
        assert_eq!(slots.len(), 32, "every slot of the box, then none");
        assert_eq!(&slots[..5], &[0, 8, 16, 24, 1], "one per shard in turn");
        let mut sorted = slots.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..32).collect::<Vec<u64>>(), "each slot once");
    }
}
