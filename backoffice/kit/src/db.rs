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
}

impl Db {
    /// Opens (creating if needed) the database at `path` and applies `schema` (idempotent
    /// `CREATE ... IF NOT EXISTS` statements).
    pub fn open(path: &Path, schema: &str) -> anyhow::Result<Self> {
        let conn = openpsd_sqlite::open(path, schema)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
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
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock poisons it; the connection itself is still
            // consistent (SQLite rolled back the open transaction), so carry on with it.
            let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| ApiError::internal(step, format!("storage task: {e}")))?
    }
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
