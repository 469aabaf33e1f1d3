//! The one way openpsd opens a SQLite file, for every service of the back office and the
//! merchant terminal: WAL mode with `synchronous=FULL`, so a commit is on disk (WAL
//! fsynced) before the call that made it returns, and a `kill -9` or power loss after a
//! reply never loses what the reply announced; foreign keys on; a busy timeout.
//!
//! No async runtime and no HTTP here: the services wrap the connection for tokio
//! (`openpsd-service-kit`'s `Db`), the terminal uses it as it is.

use std::path::Path;
use std::time::Duration;

#[cfg(any(test, feature = "crash-test"))]
pub mod crash_vfs;

pub use rusqlite;
use rusqlite::Connection;

/// Why a database could not be opened.
#[derive(Debug)]
pub enum OpenError {
    /// SQLite refused (the file, a pragma or the schema).
    Sqlite(rusqlite::Error),
    /// The file system does not support WAL (journal mode came back as the given one).
    NotWal(String),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Sqlite(e) => write!(f, "{e}"),
            OpenError::NotWal(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for OpenError {}

impl From<rusqlite::Error> for OpenError {
    fn from(e: rusqlite::Error) -> Self {
        OpenError::Sqlite(e)
    }
}

/// Opens (creating if needed) the database at `path` and applies `schema` (idempotent
/// `CREATE ... IF NOT EXISTS` statements).
pub fn open(path: &Path, schema: &str) -> Result<Connection, OpenError> {
    let conn = Connection::open(path)?;
    // WAL: readers never block the writer; FULL: the WAL is fsynced at every commit,
    // which is what makes "committed before the reply" mean durable.
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(OpenError::NotWal(format!(
            "{}: journal_mode is {mode}, not WAL",
            path.display()
        )));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.execute_batch(schema)?;
    Ok(conn)
}

/// Seconds since the Unix epoch, for `created_at` columns.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// An amount or counter as SQLite stores it (i64); `None` above `i64::MAX`.
pub fn to_sql_int(v: u64) -> Option<i64> {
    i64::try_from(v).ok()
}

/// The inverse of [`to_sql_int`]; `None` for a negative stored value (the file was changed
/// behind the program's back).
pub fn from_sql_int(v: i64) -> Option<u64> {
    u64::try_from(v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_in_wal_with_full_sync_and_applies_the_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.sqlite");
        let c = open(&path, "CREATE TABLE IF NOT EXISTS t (x INTEGER);").unwrap();
        let mode: String = c
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        let sync: i64 = c.query_row("PRAGMA synchronous", [], |r| r.get(0)).unwrap();
        let fk: i64 = c
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .unwrap();
        assert_eq!((mode.as_str(), sync, fk), ("wal", 2, 1));
        c.execute("INSERT INTO t VALUES (1)", []).unwrap();
        drop(c);
        // Opening again keeps the data (the schema is idempotent).
        let c = open(&path, "CREATE TABLE IF NOT EXISTS t (x INTEGER);").unwrap();
        let n: i64 = c
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn sql_ints_refuse_what_does_not_fit() {
        assert_eq!(to_sql_int(u64::MAX), None);
        assert_eq!(to_sql_int(7), Some(7));
        assert_eq!(from_sql_int(-1), None);
        assert_eq!(from_sql_int(7), Some(7));
    }
}
