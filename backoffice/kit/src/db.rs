//! Each service's own SQLite file, opened by `openpsd-sqlite` (WAL, `synchronous=FULL`: a
//! commit is on disk before the call that made it returns), wrapped for the async services.
//!
//! One connection per service behind a mutex: SQLite serializes writers anyway, and a
//! single connection makes every read-check-write sequence inside one transaction
//! race-free without relying on busy timeouts. Work runs on tokio's blocking pool so an
//! fsync never stalls the async runtime.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::Connection;

use crate::error::ApiError;

/// A service's database.
#[derive(Clone)]
pub struct Db {
    conn: Arc<Mutex<Connection>>,
    /// The exclusive lock on `<database>.lock`, held as long as any clone lives.
    lock: Arc<std::fs::File>,
}

/// How long [`Db::open`] waits for a lock that is only briefly held (a killed instance
/// whose files the kernel is still closing): 25 × 20 ms.
const LOCK_GRACE_TRIES: u32 = 25;

impl Db {
    /// Opens (creating if needed) the database at `path` and applies `schema` (idempotent
    /// `CREATE ... IF NOT EXISTS` statements). A second instance of the service on the same
    /// database is refused: SQLite would let both write, but each keeps its own in-memory
    /// locks (one refill per device at a time), which two processes would not share.
    pub fn open(path: &Path, schema: &str) -> anyhow::Result<Self> {
        let lock = lock(path)?;
        let conn = openpsd_sqlite::open(path, schema)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            lock: Arc::new(lock),
        })
    }

    /// Runs `f` with the connection on the blocking pool. `f` opens its own transaction
    /// when it writes; returning an error drops (rolls back) an uncommitted one.
    pub async fn run<T, F>(&self, step: &'static str, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, ApiError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        // The step holds the instance's file lock until it ends. If the task that awaits
        // it is dropped (the request's future dropped at a crash, or the instance stopped),
        // the step still runs to its end on the blocking thread; without this clone the
        // last `Db` could be dropped meanwhile, releasing the lock, and a new instance could
        // open the same database and write while the dead one's step still does: two
        // instances at once, which the lock exists to prevent.
        let lock = Arc::clone(&self.lock);
        tokio::task::spawn_blocking(move || {
            let _held = lock;
            // A panic while holding the lock poisons it; the connection itself is still
            // consistent (SQLite rolled back the open transaction), so carry on with it.
            let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| ApiError::internal(step, format!("storage task: {e}")))?
    }
}

/// Takes the exclusive lock beside the database `path`.
fn lock(path: &Path) -> anyhow::Result<std::fs::File> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lock_path = std::path::PathBuf::from(name);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(|e| anyhow::anyhow!("opening {}: {e}", lock_path.display()))?;
    for _ in 0..=LOCK_GRACE_TRIES {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                anyhow::bail!("locking {}: {e}", lock_path.display())
            }
        }
    }
    anyhow::bail!(
        "{} is in use by another instance of this service (lock {}); refusing to start a \
         second one on the same data",
        path.display(),
        lock_path.display()
    )
}

/// A second, plain connection to a database a [`Db`] holds open (and locked): for a
/// migration that runs once at start, before the service serves.
pub fn open_connection(path: &Path) -> anyhow::Result<Connection> {
    Ok(openpsd_sqlite::open(path, "")?)
}

pub use openpsd_sqlite::now_secs;

/// An amount or counter as SQLite stores it (i64); values above `i64::MAX` are refused
/// where they come in, so this only fails on a broken invariant.
pub fn to_sql_int(v: u64, step: &str) -> Result<i64, ApiError> {
    openpsd_sqlite::to_sql_int(v)
        .ok_or_else(|| ApiError::internal(step, "value above the storable range"))
}

/// The inverse of [`to_sql_int`]: a negative stored value means the file was changed
/// behind the service's back.
pub fn from_sql_int(v: i64, step: &str) -> Result<u64, ApiError> {
    openpsd_sqlite::from_sql_int(v)
        .ok_or_else(|| ApiError::internal(step, "negative value in the database"))
}

/// Adds the columns `(name, declaration)` that `table` lacks: a database made by an older
/// version gets the columns a newer one added (as NULL or their default), so old state stays
/// readable. Runs once at start on a connection from [`open_connection`].
pub fn add_missing_columns(
    conn: &Connection,
    table: &str,
    columns: &[(&str, &str)],
) -> anyhow::Result<()> {
    let mut stmt = conn.prepare(&format!("PRAGMA table_info({table})"))?;
    let have: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(1))?
        .collect::<Result<_, _>>()?;
    for (name, decl) in columns {
        if !have.iter().any(|h| h == name) {
            conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {name} {decl}"))?;
        }
    }
    Ok(())
}
