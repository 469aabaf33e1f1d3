//! Where the data center keeps its database: one SQLite file in its data directory (the
//! default), or a PostgreSQL server (`--database-url`), typically a primary with a
//! synchronous standby (`docs/virtual-meter.md` §9.6).
//!
//! SQLite: one connection per data center, behind a mutex, runs one closure at a time on
//! tokio's blocking pool, so each read-check-write sequence of the process is race-free.
//! PostgreSQL: a few connections per data center (`--database-connections`, 4 by default),
//! each behind its mutex, each running one closure at a time; several data centers
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
pub(crate) struct PgSlot {
    url: String,
    schema: &'static str,
    clients: Vec<Mutex<Option<PgConn>>>,
    /// Where the next call starts looking for a free connection.
    next: std::sync::atomic::AtomicUsize,
    check: std::sync::OnceLock<Box<ReconnectCheck>>,
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
    // Several data centers may start at once: one applies the schema at a time.
    let mut tx = c.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&crate::locks::SCHEMA])?;
    tx.batch_execute(&pg_schema(schema))?;
    tx.commit()?;
    Ok(PgConn::new(c))
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
        let u = url.to_owned();
        let clients = tokio::task::spawn_blocking(move || {
            (0..connections.max(1))
                .map(|_| connect(&u, schema).map(|c| Mutex::new(Some(c))))
                .collect::<anyhow::Result<Vec<_>>>()
        })
        .await??;
        Ok(Db::Pg(Arc::new(PgSlot {
            url: url.to_owned(),
            schema,
            clients,
            next: std::sync::atomic::AtomicUsize::new(0),
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
                let slot = Arc::clone(slot);
                tokio::task::spawn_blocking(move || {
                    let mut guard = slot.connection();
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
    /// A connection no other call holds, or, if all are busy, the next one's turn: calls
    /// start looking at successive connections, so the waits spread over them.
    fn connection(&self) -> std::sync::MutexGuard<'_, Option<PgConn>> {
        let n = self.clients.len();
        let start = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        for i in 0..n {
            match self.clients[(start + i) % n].try_lock() {
                Ok(g) => return g,
                Err(std::sync::TryLockError::Poisoned(p)) => return p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => {}
            }
        }
        self.clients[start % n]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
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
