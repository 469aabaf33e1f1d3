//! The data center's database behind one small interface, so the same statements run on
//! SQLite (one embedded file, the default) and on PostgreSQL (`--database-url`: a primary
//! with a synchronous standby when one machine is outgrown, `docs/virtual-meter.md` §9.6).
//!
//! Why our own layer rather than an ORM or `sqlx`: the data center asks ~40 fixed questions,
//! each inside one blocking closure that also talks to the box; both drivers it needs
//! (rusqlite, rust-postgres) are in the workspace already and are synchronous. What differs
//! between them is small and handled here: placeholders (`?1` → `$1`), column types in the
//! schema (`BLOB` → `BYTEA`, `INTEGER` → `BIGINT`, so every integer is an `i64` both ways),
//! the values a row holds ([`Val`]), and a connection that can be lost (PostgreSQL: a failover
//! drops it; the next request reconnects to whichever server is the primary then, see
//! [`crate::db`]).
//!
//! Public for the tests and tools that read or repair a data center's database directly
//! ([`crate::Database::write`]); the service itself uses it through `crate::db`.
//!
//! Statements are written in the common dialect: `ON CONFLICT … DO NOTHING/UPDATE`,
//! `CAST(… AS BIGINT)` around aggregates PostgreSQL would widen, `RETURNING`.

use openpsd_service_kit::error::ApiError;

/// One value bound to, or read from, a statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Val {
    /// An integer (every integer column is 64-bit).
    Int(i64),
    /// Text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
    /// NULL.
    Null,
}

macro_rules! from_int {
    ($($t:ty),*) => {$(
        impl From<$t> for Val {
            fn from(v: $t) -> Self {
                Val::Int(i64::from(v))
            }
        }
    )*};
}
from_int!(i64, i32, u32, u16, u8);

impl From<&str> for Val {
    fn from(v: &str) -> Self {
        Val::Text(v.to_owned())
    }
}
impl From<String> for Val {
    fn from(v: String) -> Self {
        Val::Text(v)
    }
}
impl From<&String> for Val {
    fn from(v: &String) -> Self {
        Val::Text(v.clone())
    }
}
impl From<Vec<u8>> for Val {
    fn from(v: Vec<u8>) -> Self {
        Val::Blob(v)
    }
}
impl From<&Vec<u8>> for Val {
    fn from(v: &Vec<u8>) -> Self {
        Val::Blob(v.clone())
    }
}
impl From<&[u8]> for Val {
    fn from(v: &[u8]) -> Self {
        Val::Blob(v.to_vec())
    }
}
impl<T: Into<Val>> From<Option<T>> for Val {
    fn from(v: Option<T>) -> Self {
        v.map_or(Val::Null, Into::into)
    }
}

/// The arguments of a statement: `args![a, b]`.
#[macro_export]
macro_rules! args {
    ($($v:expr),* $(,)?) => {
        &[$($crate::sql::Val::from($v)),*][..]
    };
}
pub use crate::args;

/// A row as read: its values in column order.
#[derive(Debug)]
pub struct Row(Vec<Val>);

/// A stored value of the wrong type or range: the database was changed behind the service.
fn bad(i: usize) -> ApiError {
    ApiError::internal(
        "datacenter_db",
        format!("column {i} holds a value of another type or range than the data center stores"),
    )
}

impl Row {
    fn at(&self, i: usize) -> Result<&Val, ApiError> {
        self.0.get(i).ok_or_else(|| bad(i))
    }
    /// An integer column.
    pub fn int(&self, i: usize) -> Result<i64, ApiError> {
        match self.at(i)? {
            Val::Int(v) => Ok(*v),
            _ => Err(bad(i)),
        }
    }
    /// An integer column that fits `T` (a slot, a shard, a counter).
    pub fn num<T: TryFrom<i64>>(&self, i: usize) -> Result<T, ApiError> {
        T::try_from(self.int(i)?).map_err(|_| bad(i))
    }
    /// A nullable integer column.
    pub fn opt_int(&self, i: usize) -> Result<Option<i64>, ApiError> {
        match self.at(i)? {
            Val::Null => Ok(None),
            _ => self.int(i).map(Some),
        }
    }
    /// A text column.
    pub fn text(&self, i: usize) -> Result<String, ApiError> {
        match self.at(i)? {
            Val::Text(v) => Ok(v.clone()),
            _ => Err(bad(i)),
        }
    }
    /// A nullable text column.
    pub fn opt_text(&self, i: usize) -> Result<Option<String>, ApiError> {
        match self.at(i)? {
            Val::Null => Ok(None),
            _ => self.text(i).map(Some),
        }
    }
    /// A blob column.
    pub fn blob(&self, i: usize) -> Result<Vec<u8>, ApiError> {
        match self.at(i)? {
            Val::Blob(v) => Ok(v.clone()),
            _ => Err(bad(i)),
        }
    }
    /// A nullable blob column.
    pub fn opt_blob(&self, i: usize) -> Result<Option<Vec<u8>>, ApiError> {
        match self.at(i)? {
            Val::Null => Ok(None),
            _ => self.blob(i).map(Some),
        }
    }
}

/// The questions a connection or an open transaction answers.
pub trait Sql {
    /// Runs a statement; answers the rows it changed.
    fn exec(&mut self, step: &str, sql: &str, args: &[Val]) -> Result<u64, ApiError>;
    /// Runs a query; answers every row.
    fn rows(&mut self, step: &str, sql: &str, args: &[Val]) -> Result<Vec<Row>, ApiError>;
    /// Which server answers (a statement that cannot be written in the common dialect).
    fn is_postgres(&self) -> bool;
    /// The first row, if any.
    fn opt(&mut self, step: &str, sql: &str, args: &[Val]) -> Result<Option<Row>, ApiError> {
        Ok(self.rows(step, sql, args)?.into_iter().next())
    }
    /// Exactly the first row.
    fn one(&mut self, step: &str, sql: &str, args: &[Val]) -> Result<Row, ApiError> {
        self.opt(step, sql, args)?
            .ok_or_else(|| ApiError::internal(step, "storage: a query answered no row"))
    }
}

// ---- SQLite ----

fn lite_err(step: &str, e: rusqlite::Error) -> ApiError {
    ApiError::internal(step, format!("storage: {e}"))
}

fn lite_params(args: &[Val]) -> Vec<rusqlite::types::Value> {
    use rusqlite::types::Value;
    args.iter()
        .map(|a| match a {
            Val::Int(v) => Value::Integer(*v),
            Val::Text(v) => Value::Text(v.clone()),
            Val::Blob(v) => Value::Blob(v.clone()),
            Val::Null => Value::Null,
        })
        .collect()
}

fn lite_exec(
    c: &rusqlite::Connection,
    step: &str,
    sql: &str,
    args: &[Val],
) -> Result<u64, ApiError> {
    let n = c
        .execute(sql, rusqlite::params_from_iter(lite_params(args)))
        .map_err(|e| lite_err(step, e))?;
    Ok(n as u64)
}

fn lite_rows(
    c: &rusqlite::Connection,
    step: &str,
    sql: &str,
    args: &[Val],
) -> Result<Vec<Row>, ApiError> {
    use rusqlite::types::ValueRef;
    let mut q = c.prepare_cached(sql).map_err(|e| lite_err(step, e))?;
    let n = q.column_count();
    let mut rows = q
        .query(rusqlite::params_from_iter(lite_params(args)))
        .map_err(|e| lite_err(step, e))?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(|e| lite_err(step, e))? {
        let mut vals = Vec::with_capacity(n);
        for i in 0..n {
            vals.push(match r.get_ref(i).map_err(|e| lite_err(step, e))? {
                ValueRef::Null => Val::Null,
                ValueRef::Integer(v) => Val::Int(v),
                ValueRef::Text(t) => Val::Text(String::from_utf8_lossy(t).into_owned()),
                ValueRef::Blob(b) => Val::Blob(b.to_vec()),
                ValueRef::Real(_) => return Err(bad(i)),
            });
        }
        out.push(Row(vals));
    }
    Ok(out)
}

impl Sql for rusqlite::Connection {
    fn exec(&mut self, step: &str, sql: &str, args: &[Val]) -> Result<u64, ApiError> {
        lite_exec(self, step, sql, args)
    }
    fn rows(&mut self, step: &str, sql: &str, args: &[Val]) -> Result<Vec<Row>, ApiError> {
        lite_rows(self, step, sql, args)
    }
    fn is_postgres(&self) -> bool {
        false
    }
}

impl Sql for rusqlite::Transaction<'_> {
    fn exec(&mut self, step: &str, sql: &str, args: &[Val]) -> Result<u64, ApiError> {
        lite_exec(self, step, sql, args)
    }
    fn rows(&mut self, step: &str, sql: &str, args: &[Val]) -> Result<Vec<Row>, ApiError> {
        lite_rows(self, step, sql, args)
    }
    fn is_postgres(&self) -> bool {
        false
    }
}

// ---- PostgreSQL ----

/// `?N` placeholders as PostgreSQL writes them (`$N`). Statements hold no `?` elsewhere.
fn pg_sql(sql: &str) -> String {
    sql.replace('?', "$")
}

/// The error code of a lost database connection: [`crate::db::Db::run`] drops the
/// connection on it and the next call connects again.
pub const UNREACHABLE: &str = "database_unreachable";

/// A PostgreSQL error: a lost connection (a failover, a restart: the connection closed, an
/// I/O error, SQLSTATE class 08 or an administrator's shutdown 57P0x) is the caller's to
/// retry (503: the next request reconnects); anything else — a statement or a parameter the
/// data center got wrong, a constraint — is ours (500), so a bug never answers "retry"
/// for ever.
fn pg_err(step: &str, e: postgres::Error) -> ApiError {
    let io = std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
    let state = e.code().map(postgres::error::SqlState::code);
    let lost =
        e.is_closed() || io || state.is_some_and(|c| c.starts_with("08") || c.starts_with("57P0"));
    if lost {
        ApiError::coded(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            UNREACHABLE,
            step,
            format!("the database is unreachable ({e}); retry"),
        )
    } else if state.is_some_and(|c| matches!(c, "55P03" | "40P01" | "40001")) {
        // A lock not had within the session's lock_timeout (another server holds the
        // shard), a deadlock or a serialization failure: nothing was done; try again.
        ApiError::unavailable(step, format!("the database is busy ({e}); retry"))
    } else {
        ApiError::internal(step, format!("storage: {e}"))
    }
}

fn pg_params(args: &[Val]) -> Vec<Box<dyn postgres::types::ToSql + Sync + Send>> {
    args.iter()
        .map(|a| -> Box<dyn postgres::types::ToSql + Sync + Send> {
            match a {
                Val::Int(v) => Box::new(*v),
                Val::Text(v) => Box::new(v.clone()),
                Val::Blob(v) => Box::new(v.clone()),
                Val::Null => Box::new(AnyNull),
            }
        })
        .collect()
}

/// A NULL of whatever type the statement gives its parameter (rust-postgres's `None` is typed,
/// and refused for a column of another type).
#[derive(Debug)]
struct AnyNull;

impl postgres::types::ToSql for AnyNull {
    fn to_sql(
        &self,
        _: &postgres::types::Type,
        _: &mut bytes::BytesMut,
    ) -> Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        Ok(postgres::types::IsNull::Yes)
    }
    fn accepts(_: &postgres::types::Type) -> bool {
        true
    }
    postgres::types::to_sql_checked!();
}

fn pg_row(r: &postgres::Row) -> Result<Row, ApiError> {
    use postgres::types::Type;
    let mut vals = Vec::with_capacity(r.len());
    for (i, col) in r.columns().iter().enumerate() {
        let t = col.type_();
        let v = if *t == Type::INT8 {
            r.try_get::<_, Option<i64>>(i).map(|v| v.map(Val::Int))
        } else if *t == Type::INT4 {
            r.try_get::<_, Option<i32>>(i)
                .map(|v| v.map(|v| Val::Int(v.into())))
        } else if *t == Type::TEXT || *t == Type::VARCHAR {
            r.try_get::<_, Option<String>>(i).map(|v| v.map(Val::Text))
        } else if *t == Type::BYTEA {
            r.try_get::<_, Option<Vec<u8>>>(i).map(|v| v.map(Val::Blob))
        } else {
            return Err(bad(i));
        };
        vals.push(v.map_err(|_| bad(i))?.unwrap_or(Val::Null));
    }
    Ok(Row(vals))
}

/// A PostgreSQL connection and the statements prepared on it.
///
/// Each statement text is prepared once per connection and kept: a piece runs some 40
/// statements, and an unprepared one costs a second round trip (parse, then bind). The
/// statements are the data center's own constant texts, so the cache stays small; it is
/// emptied if it ever passes [`STATEMENTS_KEPT`], and it goes with the connection (a
/// reconnect, a failover: prepared statements live in a server session).
pub struct PgConn {
    client: postgres::Client,
    statements: Statements,
    /// Whether a session advisory lock may be held ([`Conn::session_lock`]): released by
    /// [`Conn::release_session_locks`] at the end of the call that took it.
    locked: bool,
}

/// Prepared statements by their text (`?N` spelling).
#[derive(Default)]
pub struct Statements(std::collections::HashMap<String, postgres::Statement>);

/// Bound on [`Statements`]: far above the data center's own statement count.
pub const STATEMENTS_KEPT: usize = 1024;

impl PgConn {
    /// Wraps a new connection (no statement prepared yet).
    pub fn new(client: postgres::Client) -> Self {
        PgConn {
            client,
            statements: Statements::default(),
            locked: false,
        }
    }
    /// The connection, for what is not a data-center statement (session settings).
    pub fn client(&mut self) -> &mut postgres::Client {
        &mut self.client
    }
    /// Whether the server closed it.
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }
    /// How many statements are prepared.
    pub fn prepared(&self) -> usize {
        self.statements.0.len()
    }
}

/// The prepared statement for `sql` on `c`, preparing it on first use.
fn pg_statement<C: postgres::GenericClient>(
    c: &mut C,
    kept: &mut Statements,
    step: &str,
    sql: &str,
) -> Result<postgres::Statement, ApiError> {
    if let Some(s) = kept.0.get(sql) {
        return Ok(s.clone());
    }
    let s = c.prepare(&pg_sql(sql)).map_err(|e| pg_err(step, e))?;
    if kept.0.len() >= STATEMENTS_KEPT {
        kept.0.clear();
    }
    kept.0.insert(sql.to_owned(), s.clone());
    Ok(s)
}

fn pg_exec<C: postgres::GenericClient>(
    c: &mut C,
    kept: &mut Statements,
    step: &str,
    sql: &str,
    args: &[Val],
) -> Result<u64, ApiError> {
    let st = pg_statement(c, kept, step, sql)?;
    let p = pg_params(args);
    let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
        p.iter().map(|b| b.as_ref() as _).collect();
    c.execute(&st, &refs).map_err(|e| pg_err(step, e))
}

fn pg_rows<C: postgres::GenericClient>(
    c: &mut C,
    kept: &mut Statements,
    step: &str,
    sql: &str,
    args: &[Val],
) -> Result<Vec<Row>, ApiError> {
    let st = pg_statement(c, kept, step, sql)?;
    let p = pg_params(args);
    let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
        p.iter().map(|b| b.as_ref() as _).collect();
    c.query(&st, &refs)
        .map_err(|e| pg_err(step, e))?
        .iter()
        .map(pg_row)
        .collect()
}

impl Sql for PgConn {
    fn exec(&mut self, step: &str, sql: &str, args: &[Val]) -> Result<u64, ApiError> {
        pg_exec(&mut self.client, &mut self.statements, step, sql, args)
    }
    fn rows(&mut self, step: &str, sql: &str, args: &[Val]) -> Result<Vec<Row>, ApiError> {
        pg_rows(&mut self.client, &mut self.statements, step, sql, args)
    }
    fn is_postgres(&self) -> bool {
        true
    }
}

// ---- One connection, either kind ----

/// The data center's connection, lent for one [`crate::db::Db::run`].
pub enum Conn<'a> {
    /// SQLite.
    Lite(&'a mut rusqlite::Connection),
    /// PostgreSQL.
    Pg(&'a mut PgConn),
}

/// A transaction on a [`Conn`]: dropped without [`Tx::commit`], it rolls back.
pub enum Tx<'a> {
    /// SQLite.
    Lite(rusqlite::Transaction<'a>),
    /// PostgreSQL: the transaction and its connection's prepared statements.
    Pg(postgres::Transaction<'a>, &'a mut Statements),
}

impl Conn<'_> {
    /// Takes PostgreSQL's session advisory lock `key`, waiting for it: held past this
    /// call's transactions until [`Conn::release_session_locks`] (which `Db::run` calls
    /// when the closure that took it returns) or the session's end, so a server that dies
    /// holding it lets the next one in. SQLite: nothing (one process, one connection).
    pub fn session_lock(&mut self, key: i64, step: &str) -> Result<(), ApiError> {
        if let Conn::Pg(c) = self {
            c.locked = true;
            c.exec(step, "SELECT pg_advisory_lock(?1)", &[Val::Int(key)])?;
        }
        Ok(())
    }

    /// Releases every session advisory lock this connection holds (PostgreSQL).
    pub fn release_session_locks(&mut self, step: &str) -> Result<(), ApiError> {
        if let Conn::Pg(c) = self {
            if c.locked {
                c.exec(step, "SELECT pg_advisory_unlock_all()", &[])?;
                c.locked = false;
            }
        }
        Ok(())
    }

    /// Opens a transaction.
    pub fn transaction(&mut self, step: &str) -> Result<Tx<'_>, ApiError> {
        Ok(match self {
            Conn::Lite(c) => Tx::Lite(c.transaction().map_err(|e| lite_err(step, e))?),
            Conn::Pg(c) => {
                let PgConn {
                    client, statements, ..
                } = &mut **c;
                Tx::Pg(
                    client.transaction().map_err(|e| pg_err(step, e))?,
                    statements,
                )
            }
        })
    }
}

impl Tx<'_> {
    /// Takes PostgreSQL's transaction advisory lock `key`, waiting for it; released at the
    /// transaction's end. SQLite: nothing (its one writer is serialized already).
    pub fn xact_lock(&mut self, key: i64, step: &str) -> Result<(), ApiError> {
        if let Tx::Pg(..) = self {
            self.exec(step, "SELECT pg_advisory_xact_lock(?1)", &[Val::Int(key)])?;
        }
        Ok(())
    }

    /// Commits (on PostgreSQL with a synchronous standby: once the standby has it too).
    pub fn commit(self, step: &str) -> Result<(), ApiError> {
        match self {
            Tx::Lite(t) => t.commit().map_err(|e| lite_err(step, e)),
            Tx::Pg(t, _) => t.commit().map_err(|e| pg_err(step, e)),
        }
    }
}

impl Sql for Conn<'_> {
    fn exec(&mut self, step: &str, sql: &str, args: &[Val]) -> Result<u64, ApiError> {
        match self {
            Conn::Lite(c) => (**c).exec(step, sql, args),
            Conn::Pg(c) => (**c).exec(step, sql, args),
        }
    }
    fn rows(&mut self, step: &str, sql: &str, args: &[Val]) -> Result<Vec<Row>, ApiError> {
        match self {
            Conn::Lite(c) => (**c).rows(step, sql, args),
            Conn::Pg(c) => (**c).rows(step, sql, args),
        }
    }
    fn is_postgres(&self) -> bool {
        matches!(self, Conn::Pg(_))
    }
}

impl Sql for Tx<'_> {
    fn exec(&mut self, step: &str, sql: &str, args: &[Val]) -> Result<u64, ApiError> {
        match self {
            Tx::Lite(c) => c.exec(step, sql, args),
            Tx::Pg(t, kept) => pg_exec(t, kept, step, sql, args),
        }
    }
    fn rows(&mut self, step: &str, sql: &str, args: &[Val]) -> Result<Vec<Row>, ApiError> {
        match self {
            Tx::Lite(c) => c.rows(step, sql, args),
            Tx::Pg(t, kept) => pg_rows(t, kept, step, sql, args),
        }
    }
    fn is_postgres(&self) -> bool {
        matches!(self, Tx::Pg(..))
    }
}

/// The schema as PostgreSQL spells it: every integer 64 bits (rust-postgres binds an `i64`
/// only to `BIGINT`), blobs `BYTEA`, and the log-in failures keyed by their own ID (SQLite's
/// `rowid` does not exist there).
pub fn pg_schema(sqlite: &str) -> String {
    sqlite
        .replace("BLOB", "BYTEA")
        .replace("INTEGER", "BIGINT")
        .replace(
            "username    TEXT NOT NULL,\n    at",
            "id          BIGSERIAL PRIMARY KEY,\n    username    TEXT NOT NULL,\n    at",
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On PostgreSQL (`scripts/postgres-test.sh` sets `OPENPSD_TEST_POSTGRES`): a statement
    /// is prepared once per connection and serves inside and outside transactions, also
    /// after a rollback (prepared statements are not transactional), and the cache is
    /// bounded. Without a server it has nothing to run on and says so.
    #[test]
    fn statements_are_prepared_once_per_connection() {
        let Ok(url) = std::env::var("OPENPSD_TEST_POSTGRES") else {
            eprintln!("OPENPSD_TEST_POSTGRES unset: the PostgreSQL statement cache is not tested");
            return;
        };
        let client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let mut c = PgConn::new(client);
        c.client()
            .batch_execute("CREATE TEMP TABLE t (a BIGINT, b BYTEA)")
            .unwrap();
        let insert = "INSERT INTO t (a, b) VALUES (?1, ?2)";
        c.exec("t", insert, &[1i64.into(), Val::Null]).unwrap();
        c.exec("t", insert, &[2i64.into(), vec![7u8].into()])
            .unwrap();
        assert_eq!(c.prepared(), 1);
        {
            let mut conn = Conn::Pg(&mut c);
            let mut tx = conn.transaction("t").unwrap();
            tx.exec("t", insert, &[3i64.into(), Val::Null]).unwrap();
            let n = tx.one("t", "SELECT count(*) FROM t", &[]).unwrap().int(0);
            assert_eq!(n.unwrap(), 3);
            // Dropped: rolled back.
        }
        assert_eq!(
            c.prepared(),
            2,
            "the count, prepared in the transaction, is kept"
        );
        let rows = c.rows("t", "SELECT a, b FROM t ORDER BY a", &[]).unwrap();
        assert_eq!(rows.len(), 2, "the rolled-back row is gone");
        assert_eq!(rows[1].blob(1).unwrap(), vec![7u8]);
        assert_eq!(c.prepared(), 3);
        for i in 0..STATEMENTS_KEPT {
            c.rows("t", &format!("SELECT {i}"), &[]).unwrap();
        }
        assert!(c.prepared() <= STATEMENTS_KEPT, "bounded: {}", c.prepared());
        c.exec("t", insert, &[4i64.into(), Val::Null]).unwrap();
        let n = c.one("t", "SELECT count(*) FROM t", &[]).unwrap().int(0);
        assert_eq!(n.unwrap(), 3);
    }

    #[test]
    fn placeholders_become_postgres_ones() {
        assert_eq!(
            pg_sql("SELECT a FROM t WHERE b = ?1 AND c = ?12"),
            "SELECT a FROM t WHERE b = $1 AND c = $12"
        );
    }

    #[test]
    fn the_postgres_schema_has_no_sqlite_types_and_keys_failures() {
        let s = pg_schema(crate::store::SCHEMA);
        assert!(!s.contains("BLOB") && !s.contains("INTEGER"), "{s}");
        assert!(s.contains("id          BIGSERIAL PRIMARY KEY"), "{s}");
    }

    #[test]
    fn rows_read_back_in_sqlite() {
        let mut c = rusqlite::Connection::open_in_memory().unwrap();
        c.exec("t", "CREATE TABLE t (a INTEGER, b TEXT, c BLOB)", args![])
            .unwrap();
        let n = c
            .exec(
                "t",
                "INSERT INTO t (a, b, c) VALUES (?1, ?2, ?3)",
                args![7u32, "x", vec![1u8, 2]],
            )
            .unwrap();
        assert_eq!(n, 1);
        c.exec(
            "t",
            "INSERT INTO t (a) VALUES (?1)",
            args![Option::<i64>::None],
        )
        .unwrap();
        let rows = c
            .rows("t", "SELECT a, b, c FROM t ORDER BY a", args![])
            .unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].opt_int(0).unwrap(), None);
        assert!(rows[0].text(1).is_err(), "NULL is not text");
        assert_eq!(rows[1].num::<u8>(0).unwrap(), 7);
        assert_eq!(rows[1].text(1).unwrap(), "x");
        assert_eq!(rows[1].blob(2).unwrap(), vec![1, 2]);
        assert!(rows[1].num::<i8>(2).is_err(), "a blob is not a number");
    }
}
