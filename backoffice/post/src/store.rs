//! Where the registry lives: SQLite by default (`post.sqlite` in the data directory), or
//! PostgreSQL when one machine is outgrown (`--database-url`). The service runs the
//! registry's logic ([`crate::registry`]) in one transaction of either, on tokio's
//! blocking threads.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use openpsd_service_kit::codec;
use openpsd_service_kit::db::Db;
use openpsd_service_kit::error::{ApiError, StorageContext};

use crate::postgres::PgStore;
use crate::registry::RegistryTx;
use crate::sqlite::{SqliteTx, SCHEMA};

/// Database file name of the SQLite store.
pub const DB_FILE: &str = "post.sqlite";

/// The registry's database.
#[derive(Clone)]
pub enum Store {
    /// `post.sqlite` in the data directory.
    Sqlite(Db),
    /// A PostgreSQL server: its URL (to connect again) and the open connection.
    Postgres {
        /// Connection string.
        url: Arc<str>,
        /// The connection (one: the registry's transactions are short and a batch is
        /// one of them).
        conn: Arc<PgConn>,
    },
}

/// The PostgreSQL connection of a [`Store`]. rust-postgres's synchronous client closes by
/// blocking on a runtime of its own, which panics on tokio's async threads, and the last
/// clone of a store may well be dropped there (the service's shutdown, a test's end): the
/// connection is then closed on a thread of its own.
pub struct PgConn(Mutex<Option<PgStore>>);

impl Drop for PgConn {
    fn drop(&mut self) {
        let store = self
            .0
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(store) = store {
            if tokio::runtime::Handle::try_current().is_ok() {
                // Joined: the server has seen the connection close when the drop returns.
                let _ = std::thread::spawn(move || drop(store)).join();
            }
        }
    }
}

impl Store {
    /// Opens `post.sqlite` in `dir`.
    pub fn sqlite(dir: &Path) -> anyhow::Result<Self> {
        Ok(Store::Sqlite(Db::open(&dir.join(DB_FILE), SCHEMA)?))
    }

    /// Connects to PostgreSQL at `url` (tables and partitions made if missing).
    pub async fn postgres(url: &str) -> anyhow::Result<Self> {
        let u = url.to_owned();
        let store =
            tokio::task::spawn_blocking(move || PgStore::connect(&u, codec::today_utc())).await??;
        Ok(Store::Postgres {
            url: url.into(),
            conn: Arc::new(PgConn(Mutex::new(Some(store)))),
        })
    }

    /// Which store, for logs and `--help`-level messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "SQLite",
            Store::Postgres { .. } => "PostgreSQL",
        }
    }

    /// Runs `f` in one transaction, committed when it answers `Ok`. `days` are the mailing
    /// days of the pieces it may insert (PostgreSQL makes their month partitions first).
    pub async fn run<T, F>(&self, step: &'static str, days: Vec<u32>, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&mut dyn RegistryTx) -> Result<T, ApiError> + Send + 'static,
    {
        match self {
            Store::Sqlite(db) => {
                db.run(step, move |c| {
                    let tx = c.transaction().storage(step)?;
                    let out = f(&mut SqliteTx::new(&tx, step))?;
                    tx.commit().storage(step)?;
                    Ok(out)
                })
                .await
            }
            Store::Postgres { url, conn } => {
                let (url, conn) = (Arc::clone(url), Arc::clone(conn));
                tokio::task::spawn_blocking(move || {
                    let mut guard = conn.0.lock().unwrap_or_else(PoisonError::into_inner);
                    // A broken connection (the server restarted) is opened again here,
                    // once per call; the failed call itself answered 500.
                    if guard.as_ref().is_none_or(PgStore::is_closed) {
                        *guard = None;
                        let store = PgStore::connect(&url, codec::today_utc()).map_err(|e| {
                            ApiError::internal(step, format!("storage (PostgreSQL): {e}"))
                        })?;
                        *guard = Some(store);
                    }
                    let store = guard
                        .as_mut()
                        .ok_or_else(|| ApiError::internal(step, "no PostgreSQL connection"))?;
                    store.run(step, &days, f)
                })
                .await
                .map_err(|e| ApiError::internal(step, format!("storage task: {e}")))?
            }
        }
    }
}
