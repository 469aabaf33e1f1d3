//! Where the data center keeps its database: one SQLite file in its data directory (the
//! default), or a PostgreSQL server (`--database-url`), typically a primary with a
//! synchronous standby (`docs/virtual-meter.md` §9.6).
//!
//! SQLite: one connection per data center, behind a mutex, runs one closure at a time on
//! tokio's blocking pool, so each read-check-write sequence of the process is race-free.
//! PostgreSQL: a few connections per data center (`--database-connections`, 4 by default),
//! each running one closure at a time; a call waits its turn for any free connection, first
//! come first served, and answers 503 after 30 s ([`POOL_WAIT`]); several data centers
//! (function servers) may share the database and the box as well. What the connections
//! must not do at once — two commands of one shard, two slot reservations, two refills of
//! one mailer — PostgreSQL's advisory locks keep apart ([`crate::locks`]), between the
//! connections of one process as between processes; session locks a closure took are
//! released when it returns.
//!
//! **PostgreSQL and failover.** The connection string may name several servers
//! (`host=/a,/b … target_session_attrs=read-write`): the client takes the one that accepts
//! writes. When the primary dies the call under way fails with 503 and the connection is
//! dropped; the next call connects again, to the standby once it is promoted. Nothing is
//! lost by that: every commit waits for the synchronous standby, and a box command whose
//! answer was not committed left its intent (committed before the command was sent), which
//! RESUME finishes before the shard's next command (`crate::indicia`). Every data center on
//! a database must use the same box: the `box` table names it and a data center with
//! another box is refused at start (`Datacenter::bind_box`).

use std::sync::{Arc, Mutex, PoisonError};

use openpsd_service_kit::error::ApiError;

use crate::sql::{pg_schema, Conn, PgConn};

/// The data center's database.
#[derive(Clone)]
pub(crate) enum Db {
    /// The embedded SQLite file (locked against a second instance).
    Lite(openpsd_service_kit::db::Db),
    /// A PostgreSQL server.
    Pg(Arc<PgSlot>),
}

/// What a reconnect must find true before the connection serves again (the data center's
/// roots against the box's, [`Db::check_after_reconnect`]).
pub(crate) type ReconnectCheck = dyn Fn(&mut Conn<'_>) -> Result<(), ApiError> + Send + Sync;

/// The PostgreSQL connection string and the connections, each `None` while not open.
///
/// A call waits for a connection on `turns` (tokio's semaphore: first come, first served,
/// and the wait holds no thread), then takes any connection from `free`. A call that waited
/// [`POOL_WAIT`] answers 503 instead of waiting on.
pub(crate) struct PgSlot {
    url: String,
    schema: &'static str,
    clients: Vec<Mutex<Option<PgConn>>>,
    /// One permit per connection.
    turns: Arc<tokio::sync::Semaphore>,
    /// The indices of the connections no call holds.
    free: Mutex<Vec<usize>>,
    /// How long a call waits for its turn ([`POOL_WAIT`]).
    wait: std::time::Duration,
    check: std::sync::OnceLock<Box<ReconnectCheck>>,
}

/// How long a call waits for a free connection before it answers 503 ("busy, retry").
/// Long enough for a queue of 1,000 requests on one hot meter (docs/virtual-meter.md §9,
/// Measured: p99 22 s with one connection per server), short of a client's patience.
pub(crate) const POOL_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// A connection taken from the pool; given back when dropped, whatever happened.
struct Taken {
    slot: Arc<PgSlot>,
    index: usize,
    _turn: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for Taken {
    fn drop(&mut self) {
        // The index goes back before the permit (a field, dropped after this body), so the
        // next call given a turn finds a free connection.
        self.slot
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(self.index);
    }
}

/// Connections per data center on PostgreSQL unless `--database-connections` says
/// otherwise: calls on different shards run side by side (docs/virtual-meter.md §9).
pub const DEFAULT_CONNECTIONS: u16 = 4;

impl Drop for PgSlot {
    fn drop(&mut self) {
        // rust-postgres's client closes by blocking on a runtime of its own, which panics on
        // tokio's async threads, where the last clone may well be dropped.
        let clients: Vec<PgConn> = self
            .clients
            .iter_mut()
            .filter_map(|m| m.get_mut().unwrap_or_else(PoisonError::into_inner).take())
            .collect();
        if !clients.is_empty() && tokio::runtime::Handle::try_current().is_ok() {
            let _ = std::thread::spawn(move || drop(clients)).join();
        }
    }
}

/// The connection settings of `url`, with bounds where it names none: a primary whose host
/// vanished (no reset ever arrives) is given up within seconds, not after the kernel's
/// two-hour keepalive, so requests answer 503 instead of queueing behind a dead statement.
fn config(url: &str) -> anyhow::Result<postgres::Config> {
    use std::time::Duration;
    let mut c: postgres::Config = url
        .parse()
        .map_err(|e| anyhow::anyhow!("PostgreSQL ({}): {e}", redact(url)))?;
    if c.get_connect_timeout().is_none() {
        c.connect_timeout(Duration::from_secs(5));
    }
    if c.get_keepalives_idle() == Duration::from_secs(2 * 60 * 60) {
        c.keepalives_idle(Duration::from_secs(10));
        c.keepalives_interval(Duration::from_secs(5));
        c.keepalives_retries(3);
    }
    Ok(c)
}

/// How long a statement waits for a lock (advisory or row) before it gives up with 503.
pub(crate) const LOCK_TIMEOUT_MS: u32 = 10_000;

/// Connects and applies the schema. Blocking.
fn connect(url: &str, schema: &str) -> anyhow::Result<PgConn> {
    let mut c = config(url)?
        .connect(postgres::NoTls)
        .map_err(|e| anyhow::anyhow!("PostgreSQL ({}): {e}", redact(url)))?;
    // Every commit waits for the synchronous standby (if the server names one): a session
    // setting cannot weaken what the operator configured.
    c.batch_execute("SET synchronous_commit = on")?;
    // A lock another server holds for longer than this (a shard's, a refill's) answers 503
    // instead of holding this server's one connection, and every request behind it, for
    // as long as the other takes. A shard's command holds its lock for milliseconds.
    // The connection string may set its own (`options='-c lock_timeout=…'`).
    if !url.contains("lock_timeout") {
        c.batch_execute(&format!("SET lock_timeout = {LOCK_TIMEOUT_MS}"))?;
    }
    // A standby accepts the connection but no write; before the schema was skipped when
    // applied, its DDL failing said so. Refused here, so the call answers 503 and the next
    // one connects again (a URL without `target_session_attrs=read-write`).
    if c.query_one("SELECT pg_is_in_recovery()", &[])?
        .get::<_, bool>(0)
    {
        anyhow::bail!(
            "PostgreSQL ({}): the server is a standby (read-only); name the primary, or \
             add target_session_attrs=read-write",
            redact(url)
        );
    }
    apply_schema(&mut c, &pg_schema(schema))?;
    Ok(PgConn::new(c))
}

/// Applies `schema` unless the database records that it was, by its SHA-256: every
/// connection of every server comes here (a pool, reconnects after a failover), and
/// `CREATE INDEX IF NOT EXISTS` takes a lock on its table even when the index exists.
/// Several data centers may start at once: one applies the schema at a time.
fn apply_schema(c: &mut postgres::Client, schema: &str) -> anyhow::Result<()> {
    use sha2::{Digest as _, Sha256};
    let digest = hex::encode(Sha256::digest(schema.as_bytes()));
    let applied = |c: &mut postgres::Client| -> anyhow::Result<bool> {
        let row = c.query_one("SELECT to_regclass('schema_applied') IS NOT NULL", &[])?;
        if !row.get::<_, bool>(0) {
            return Ok(false);
        }
        Ok(
            c.query_opt("SELECT 1 FROM schema_applied WHERE digest = $1", &[&digest])?
                .is_some(),
        )
    };
    if applied(c)? {
        return Ok(());
    }
    let mut tx = c.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&crate::locks::SCHEMA])?;
    tx.batch_execute(schema)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_applied (
             digest     TEXT PRIMARY KEY,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         )",
    )?;
    tx.execute(
        "INSERT INTO schema_applied (digest) VALUES ($1) ON CONFLICT (digest) DO NOTHING",
        &[&digest],
    )?;
    tx.commit()?;
    tracing::info!(
        digest = &digest[..16],
        "the data center's schema applied to PostgreSQL"
    );
    Ok(())
}

/// A connection string without its password, for messages.
fn redact(url: &str) -> String {
    url.split_whitespace()
        .map(|kv| {
            if kv.starts_with("password=") {
                "password=…"
            } else {
                kv
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl Db {
    /// The SQLite file at `path`.
    pub(crate) fn sqlite(path: &std::path::Path, schema: &str) -> anyhow::Result<Self> {
        Ok(Db::Lite(openpsd_service_kit::db::Db::open(path, schema)?))
    }

    /// The PostgreSQL database at `url` (key=value connection string), through
    /// `connections` connections (at least one), all opened now.
    pub(crate) async fn postgres(
        url: &str,
        schema: &'static str,
        connections: usize,
    ) -> anyhow::Result<Self> {
        Self::postgres_waiting(url, schema, connections, POOL_WAIT).await
    }

    /// [`Db::postgres`] with a call's wait for a connection other than [`POOL_WAIT`] (the
    /// pool's test waits 1 s).
    async fn postgres_waiting(
        url: &str,
        schema: &'static str,
        connections: usize,
        wait: std::time::Duration,
    ) -> anyhow::Result<Self> {
        let u = url.to_owned();
        let clients = tokio::task::spawn_blocking(move || {
            (0..connections.max(1))
                .map(|_| connect(&u, schema).map(|c| Mutex::new(Some(c))))
                .collect::<anyhow::Result<Vec<_>>>()
        })
        .await??;
        let n = clients.len();
        Ok(Db::Pg(Arc::new(PgSlot {
            url: url.to_owned(),
            schema,
            clients,
            turns: Arc::new(tokio::sync::Semaphore::new(n)),
            free: Mutex::new((0..n).rev().collect()),
            wait,
            check: std::sync::OnceLock::new(),
        })))
    }

    /// Sets what a reconnect must check before it serves (PostgreSQL; SQLite never
    /// reconnects): the data center compares the roots with the box's, so a promoted standby
    /// that misses commits is refused at once, as at start, not found later by the box.
    pub(crate) fn check_after_reconnect(&self, check: Box<ReconnectCheck>) {
        if let Db::Pg(slot) = self {
            let _ = slot.check.set(check);
        }
    }

    /// Which server, for logs.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Db::Lite(_) => "SQLite",
            Db::Pg(_) => "PostgreSQL",
        }
    }

    /// Runs `f` with the connection on the blocking pool. `f` opens its own transaction
    /// when it writes; an error drops (rolls back) an uncommitted one.
    pub(crate) async fn run<T, F>(&self, step: &'static str, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Conn<'_>) -> Result<T, ApiError> + Send + 'static,
    {
        match self {
            Db::Lite(db) => db.run(step, move |c| f(&mut Conn::Lite(c))).await,
            Db::Pg(slot) => {
                let taken = PgSlot::take(slot, step).await?;
                tokio::task::spawn_blocking(move || {
                    // The whole of it moves here, and gives the connection back at the end.
                    let taken = taken;
                    let slot = Arc::clone(&taken.slot);
                    let mut guard = slot.clients[taken.index]
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    if guard.as_ref().is_none_or(PgConn::is_closed) {
                        *guard = None;
                        let mut c = connect(&slot.url, slot.schema).map_err(|e| {
                            ApiError::unavailable(step, format!("the database: {e}"))
                        })?;
                        if let Some(check) = slot.check.get() {
                            // Not kept unless the check passes: every call tries again.
                            check(&mut Conn::Pg(&mut c))?;
                        }
                        tracing::info!("connected to the PostgreSQL primary again");
                        *guard = Some(c);
                    }
                    let client = guard
                        .as_mut()
                        .ok_or_else(|| ApiError::internal(step, "no PostgreSQL connection"))?;
                    // A panic in `f` must not leave its shard locks held by a connection that
                    // lives on (other servers would wait for them until this one's next
                    // call): it is caught here, and the connection dropped with its session.
                    let out = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        f(&mut Conn::Pg(client))
                    })) {
                        Ok(out) => out,
                        Err(_) => {
                            tracing::error!(step, "a storage call panicked: dropping the connection and its locks");
                            *guard = None;
                            return Err(ApiError::internal(step, "the storage call failed"));
                        }
                    };
                    // The shard locks the closure took go with it (`crate::locks`); if they
                    // cannot be released the connection goes, and its session's locks with it.
                    let unlocked = Conn::Pg(client).release_session_locks(step);
                    if let Err(e) = &unlocked {
                        tracing::warn!(error = %e.message, "dropping the connection: its advisory locks could not be released");
                    }
                    // A connection that broke mid-call is dropped here, whether or not the
                    // client noticed yet: the next call connects afresh, to whichever server
                    // accepts writes then. Other errors keep it.
                    let lost = out
                        .as_ref()
                        .is_err_and(|e| e.code == crate::sql::UNREACHABLE);
                    if lost || unlocked.is_err() || guard.as_ref().is_some_and(PgConn::is_closed) {
                        *guard = None;
                    }
                    out
                })
                .await
                .map_err(|e| ApiError::internal(step, format!("storage task: {e}")))?
            }
        }
    }
}

impl PgSlot {
    /// A free connection, after the calls that asked before this one: 503 after
    /// [`POOL_WAIT`]. The turn is held until the returned value is dropped, on the blocking
    /// thread that uses the connection, so a caller that goes away (a client that hung up)
    /// does not give the connection to another call while its closure still runs.
    async fn take(slot: &Arc<PgSlot>, step: &'static str) -> Result<Taken, ApiError> {
        let turn = tokio::time::timeout(slot.wait, Arc::clone(&slot.turns).acquire_owned())
            .await
            .map_err(|_| {
                ApiError::unavailable(
                    step,
                    format!(
                        "the database is busy: no connection free within {} s, retry",
                        slot.wait.as_secs_f32()
                    ),
                )
            })?
            .map_err(|e| ApiError::internal(step, e.to_string()))?;
        // A turn means a free index: one permit per connection, and an index goes back
        // before its permit.
        let index = slot
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            .ok_or_else(|| ApiError::internal(step, "a turn without a free connection"))?;
        Ok(Taken {
            slot: Arc::clone(slot),
            index,
            _turn: turn,
        })
    }
}

/// Where a data center's database is, for the commands that read it beside the service
/// (`backoffice datacenter audit`, `register-box`).
#[derive(Clone, Debug)]
pub enum Database {
    /// `datacenter.sqlite` at this path.
    Sqlite(std::path::PathBuf),
    /// A PostgreSQL connection string.
    Postgres(String),
}

impl Database {
    /// The database of the data center whose data directory is `data`: `url` if given (the
    /// service's `--database-url`), else the SQLite file there.
    pub fn new(data: &std::path::Path, url: Option<&str>) -> Self {
        match url {
            Some(u) => Database::Postgres(u.to_owned()),
            None => Database::Sqlite(data.join(crate::DB_FILE)),
        }
    }

    /// Runs `f` on a read-write connection, outside the service and without its locks
    /// (tests that play the untrusted database; feature `test-util`, never in a release
    /// binary). Blocking: call it off the async threads.
    #[cfg(feature = "test-util")]
    pub fn write<T>(
        &self,
        f: impl FnOnce(&mut Conn<'_>) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        match self {
            Database::Sqlite(path) => {
                let mut c = openpsd_service_kit::db::open_connection(path)?;
                f(&mut Conn::Lite(&mut c))
            }
            Database::Postgres(url) => {
                let c = postgres::Client::connect(url, postgres::NoTls)
                    .map_err(|e| anyhow::anyhow!("PostgreSQL ({}): {e}", redact(url)))?;
                f(&mut Conn::Pg(&mut PgConn::new(c)))
            }
        }
    }

    /// Runs `f` on a read-only connection. Blocking: call it off the async threads.
    pub(crate) fn read<T>(
        &self,
        f: impl FnOnce(&mut Conn<'_>) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        match self {
            Database::Sqlite(path) => {
                anyhow::ensure!(
                    path.exists(),
                    "{}: no data center database there",
                    path.display()
                );
                let mut c = rusqlite::Connection::open_with_flags(
                    path,
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
                )?;
                // One snapshot for the whole walk (WAL: the service goes on committing).
                c.execute_batch("BEGIN")?;
                f(&mut Conn::Lite(&mut c))
            }
            Database::Postgres(url) => {
                let mut c = config(url)?
                    .connect(postgres::NoTls)
                    .map_err(|e| anyhow::anyhow!("PostgreSQL ({}): {e}", redact(url)))?;
                // One snapshot for the whole walk, and no write possible.
                c.batch_execute("BEGIN TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")?;
                f(&mut Conn::Pg(&mut PgConn::new(c)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// A pool of `n` connections to `OPENPSD_TEST_POSTGRES` whose calls wait `wait`.
    async fn pool(n: usize, wait: Duration) -> Option<Db> {
        let Ok(url) = std::env::var("OPENPSD_TEST_POSTGRES") else {
            eprintln!("OPENPSD_TEST_POSTGRES unset: the connection pool is not tested");
            return None;
        };
        let schema = "CREATE TABLE IF NOT EXISTS pool_test (x BIGINT);";
        Some(Db::postgres_waiting(&url, schema, n, wait).await.unwrap())
    }

    /// Waits (up to 5 s) until every connection of the pool is taken: the calls spawned
    /// before have begun, whatever the machine's load.
    async fn all_taken(db: &Db) {
        let Db::Pg(slot) = db else { unreachable!() };
        let deadline = Instant::now() + Duration::from_secs(5);
        while slot.turns.available_permits() > 0 {
            assert!(
                Instant::now() < deadline,
                "the spawned calls never took their connections"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn hold(db: &Db, for_: Duration) -> Result<(), ApiError> {
        db.run("pool_test", move |_| {
            std::thread::sleep(for_);
            Ok(())
        })
        .await
    }

    /// On PostgreSQL (`scripts/postgres-test.sh`): a call takes whichever connection frees
    /// first (not one picked in advance, which may be the slow call's), and a call that
    /// gets none within the pool's wait answers 503 without running.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn the_pool_gives_the_first_free_connection_and_answers_busy_after_its_wait() {
        let Some(db) = pool(2, Duration::from_secs(1)).await else {
            return;
        };
        // Both busy: one for 4 s, one for 0.3 s; then three quick calls one after the other.
        let slow = tokio::spawn({
            let db = db.clone();
            async move { hold(&db, Duration::from_secs(4)).await }
        });
        let short = tokio::spawn({
            let db = db.clone();
            async move { hold(&db, Duration::from_millis(300)).await }
        });
        all_taken(&db).await;
        let t0 = Instant::now();
        for _ in 0..3 {
            hold(&db, Duration::ZERO).await.unwrap();
        }
        assert!(
            t0.elapsed() < Duration::from_millis(900),
            "the quick calls waited {:?}: one of them queued behind the slow call",
            t0.elapsed()
        );
        short.await.unwrap().unwrap();
        // Now the one free connection is taken too: the next call waits 1 s and gives up.
        let second_slow = tokio::spawn({
            let db = db.clone();
            async move { hold(&db, Duration::from_secs(3)).await }
        });
        all_taken(&db).await;
        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let r = {
            let ran = Arc::clone(&ran);
            db.run("pool_test", move |_| {
                ran.store(true, std::sync::atomic::Ordering::SeqCst);
                Ok(())
            })
            .await
        };
        let e = r.expect_err("both connections were busy for longer than the wait");
        assert_eq!(e.status, axum::http::StatusCode::SERVICE_UNAVAILABLE);
        assert!(e.message.contains("busy"), "{}", e.message);
        assert!(!ran.load(std::sync::atomic::Ordering::SeqCst));
        slow.await.unwrap().unwrap();
        second_slow.await.unwrap().unwrap();
        // Both back: a call runs at once.
        hold(&db, Duration::ZERO).await.unwrap();
    }
}
