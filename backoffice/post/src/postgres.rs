//! The registry in PostgreSQL, for a post office that has outgrown one SQLite file
//! (`backoffice serve --role post --database-url …`): the same questions [`RegistryTx`]
//! asks, over the `postgres` client (rust-postgres, the synchronous face of
//! tokio-postgres), run on tokio's blocking threads like the SQLite store.
//!
//! **Partitioned by device, and by date where dates are what is asked.** Every question
//! the registry asks names one device ("is piece 7 of this series stored, whatever its
//! date?", "its neighbours?", "its highest AR?"), none a date. So `pieces` is partitioned by
//! hash of the device (16 partitions, `pieces_h00`…): each lookup is pruned to one partition
//! and PostgreSQL's own primary key enforces one row per (device, key, license, piece) — the
//! same key a national post shards on across machines. It was first partitioned by month of
//! the mailing date, as the issue sketched: a primary key must then hold the date, the "any
//! date" lookup visits every month's index, and inserts with the checks ran at ~2,600/s at
//! 2×10^5 pieces over 17 partitions (docs/post-office.md § Scale). What is kept by date is
//! the **scan log**, `scans`: one row per label scanned (first sight, copies, conflicts),
//! partitioned by month of the mailing date (`scans_2026_11`, made ahead of the mail, and
//! a default partition for dates outside them), so an operator archives a month by
//! detaching its partition. Two post office instances recording pieces of one device wait
//! for each other on a per-device advisory lock (`pg_advisory_xact_lock`), which keeps
//! their neighbour checks from interleaving; instances recording other devices do not.

use std::collections::BTreeSet;

use postgres::{Client, NoTls, Statement, Transaction};

use openpsd_core::calendar::UNIX_DAYS_AT_EPOCH_2000;
use openpsd_core::types::Date;
use openpsd_service_kit::error::ApiError;

use crate::registry::{
    FindingRow, Inserted, LicenseDeviceRow, LicenseRow, NewFinding, PieceRow, RegistryTx, Series,
    Unreported,
};

/// Hash partitions of `pieces`.
pub const DEVICE_PARTITIONS: u32 = 16;

/// The registry's tables (the partitions are added by [`schema`] and [`ensure_months`]).
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS pieces (
    device_id   TEXT NOT NULL,
    key_id      TEXT NOT NULL,
    license     BIGINT NOT NULL,
    piece       BIGINT NOT NULL,
    ar          BIGINT NOT NULL,
    dr          BIGINT NOT NULL,
    postage     BIGINT NOT NULL,
    mailed_on   INTEGER NOT NULL,           -- days since 2000-01-01
    origin      TEXT NOT NULL,
    destination TEXT NOT NULL,
    digest      BYTEA NOT NULL,             -- SHA-256 of the signed bytes
    copies      INTEGER NOT NULL DEFAULT 1,
    first_seen  BIGINT NOT NULL,
    PRIMARY KEY (device_id, key_id, license, piece)
) PARTITION BY HASH (device_id);
-- Every label scanned, by month of its mailing date: the archive an operator detaches.
CREATE TABLE IF NOT EXISTS scans (
    device_id  TEXT NOT NULL,
    key_id     TEXT NOT NULL,
    license    BIGINT NOT NULL,
    piece      BIGINT NOT NULL,
    mailed_on  INTEGER NOT NULL,            -- the partition key
    digest     BYTEA NOT NULL,              -- of what was scanned (a conflict's other content)
    scanned_at BIGINT NOT NULL
) PARTITION BY RANGE (mailed_on);
CREATE TABLE IF NOT EXISTS scans_other PARTITION OF scans DEFAULT;
CREATE TABLE IF NOT EXISTS findings (
    finding_id BIGSERIAL PRIMARY KEY,
    device_id  TEXT NOT NULL,
    license    BIGINT NOT NULL,
    piece      BIGINT NOT NULL,
    kind       TEXT NOT NULL,
    message    TEXT NOT NULL,
    amount     BIGINT,
    evidence   TEXT,
    found_at   BIGINT NOT NULL,
    reported   BIGINT NOT NULL DEFAULT 0,
    UNIQUE (device_id, license, piece, kind)
);
CREATE INDEX IF NOT EXISTS findings_by_device ON findings (device_id, finding_id);
CREATE INDEX IF NOT EXISTS findings_unreported ON findings (device_id) WHERE reported = 0;
";

/// Makes a fresh, empty database `name` on the server `base` (key=value connection
/// string) and answers its connection string: for tests and the registry benchmark, which
/// each want a registry of their own. Blocking: call it off the async threads.
pub fn create_database(base: &str, name: &str) -> anyhow::Result<String> {
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        anyhow::bail!("database name {name:?}: lower-case letters, digits and _ only");
    }
    let mut c = Client::connect(base, NoTls)
        .map_err(|e| anyhow::anyhow!("PostgreSQL (the base connection string): {e}"))?;
    // Two statements: one query string would run them in one (implicit) transaction,
    // which CREATE DATABASE refuses.
    c.batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))?;
    c.batch_execute(&format!("CREATE DATABASE {name}"))?;
    Ok(format!("{base} dbname={name}"))
}

/// Months of partitions made behind and ahead of today when the store opens.
pub const MONTHS_BEHIND: u32 = 13;
/// See [`MONTHS_BEHIND`].
pub const MONTHS_AHEAD: u32 = 2;

fn pg(step: &'static str) -> impl Fn(postgres::Error) -> ApiError {
    // The server's own message ("db error" alone tells nothing).
    move |e| {
        let why = e
            .as_db_error()
            .map_or_else(|| e.to_string(), ToString::to_string);
        ApiError::internal(step, format!("storage (PostgreSQL): {why}"))
    }
}

fn int(v: u32) -> i64 {
    i64::from(v)
}

fn small(v: i64, step: &str) -> Result<u32, ApiError> {
    u32::try_from(v).map_err(|_| ApiError::internal(step, "stored number out of range"))
}

/// A month as (year, month 1-12).
type Month = (u16, u8);

fn month_of(day: u32) -> Option<Month> {
    let d = Date::from_unix_days(u64::from(day) + UNIX_DAYS_AT_EPOCH_2000)?;
    Some((d.year, d.month))
}

fn next((y, m): Month) -> Month {
    if m == 12 {
        (y.saturating_add(1), 1)
    } else {
        (y, m + 1)
    }
}

fn first_day((y, m): Month) -> Option<u32> {
    Date::new(y, m, 1).map(Date::day_number)
}

/// The connection, its prepared statements and the months it has partitions for.
pub struct PgStore {
    client: Client,
    st: Statements,
    months: BTreeSet<Month>,
}

struct Statements {
    lock_all: Statement,
    insert: Statement,
    add_copy: Statement,
    top_ar: Statement,
    top_held: Statement,
    dated_before: Statement,
    ar_above: Statement,
    finding: Statement,
    unreported: Statement,
    unreported_devices: Statement,
    mark: Statement,
    licenses: Statement,
    findings: Statement,
    license_devices: Statement,
}

const WHERE_SERIES: &str = "device_id = $1 AND key_id = $2 AND license = $3";

impl Statements {
    fn prepare(c: &mut Client) -> Result<Self, postgres::Error> {
        Ok(Self {
            // Sorted, in order (the lock call is volatile, so it runs after the sort): two
            // instances locking overlapping batches cannot deadlock.
            lock_all: c.prepare(
                "SELECT pg_advisory_xact_lock(hashtextextended(d, 20261130))
                 FROM unnest($1::text[]) WITH ORDINALITY AS t(d, n) ORDER BY n",
            )?,
            // One round trip per piece: the stored digest of its key, the insert when there
            // is none (data-modifying WITH parts run once whatever the rest reads), the scan
            // logged, and the neighbours as they were before it.
            insert: c.prepare(&format!(
                "WITH old AS (
                     SELECT digest FROM pieces WHERE {WHERE_SERIES} AND piece = $4 LIMIT 1
                 ), ins AS (
                     INSERT INTO pieces (device_id, key_id, license, piece, ar, dr, postage,
                         mailed_on, origin, destination, digest, first_seen)
                     SELECT $1, $2, $3, $4, $5::bigint, $6::bigint, $7::bigint, $8::integer,
                         $9::text, $10::text, $11::bytea, $12::bigint
                     WHERE NOT EXISTS (SELECT 1 FROM old)
                 ), scan AS (
                     INSERT INTO scans (device_id, key_id, license, piece, mailed_on, digest,
                         scanned_at)
                     VALUES ($1, $2, $3, $4, $8::integer, $11::bytea, $12::bigint)
                 ), bef AS (
                     SELECT piece, ar FROM pieces WHERE {WHERE_SERIES} AND piece < $4
                     ORDER BY piece DESC LIMIT 1
                 ), aft AS (
                     SELECT piece, ar, postage FROM pieces WHERE {WHERE_SERIES} AND piece > $4
                     ORDER BY piece ASC LIMIT 1
                 )
                 SELECT (SELECT digest FROM old), (SELECT piece FROM bef), (SELECT ar FROM bef),
                        (SELECT piece FROM aft), (SELECT ar FROM aft), (SELECT postage FROM aft)"
            ))?,
            add_copy: c.prepare(&format!(
                "UPDATE pieces SET copies = copies + 1 WHERE {WHERE_SERIES} AND piece = $4"
            ))?,
            top_ar: c.prepare(&format!(
                "SELECT piece, ar FROM pieces WHERE {WHERE_SERIES}
                 ORDER BY ar DESC, piece DESC LIMIT 1"
            ))?,
            top_held: c.prepare(&format!(
                "SELECT piece, ar + dr FROM pieces WHERE {WHERE_SERIES}
                 ORDER BY ar + dr DESC, piece DESC LIMIT 1"
            ))?,
            dated_before: c.prepare(&format!(
                "SELECT piece, mailed_on FROM pieces
                 WHERE {WHERE_SERIES} AND piece > $4 AND mailed_on < $5
                 ORDER BY piece ASC LIMIT 1"
            ))?,
            ar_above: c.prepare(&format!(
                "SELECT piece, ar FROM pieces WHERE {WHERE_SERIES} AND piece <= $4
                 ORDER BY piece DESC LIMIT 1"
            ))?,
            finding: c.prepare(
                "INSERT INTO findings
                     (device_id, license, piece, kind, message, amount, evidence, found_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (device_id, license, piece, kind) DO NOTHING",
            )?,
            unreported: c.prepare(
                "SELECT finding_id, license, kind, message FROM findings
                 WHERE device_id = $1 AND reported = 0 ORDER BY finding_id",
            )?,
            unreported_devices: c.prepare(
                "SELECT DISTINCT device_id FROM findings WHERE reported = 0
                 ORDER BY device_id LIMIT $1",
            )?,
            mark: c.prepare("UPDATE findings SET reported = $2 WHERE finding_id = $1")?,
            licenses: c.prepare(
                "SELECT license, COUNT(*), MAX(piece), MAX(ar), SUM(copies - 1)::BIGINT
                 FROM pieces WHERE device_id = $1 GROUP BY license ORDER BY license",
            )?,
            license_devices: c.prepare(
                "SELECT p.device_id, COUNT(*), MAX(p.piece), MAX(p.ar), SUM(p.copies - 1)::BIGINT,
                        (SELECT COUNT(*) FROM findings f
                         WHERE f.device_id = p.device_id AND f.license = $1)
                 FROM pieces p WHERE p.license = $1 GROUP BY p.device_id ORDER BY p.device_id",
            )?,
            findings: c.prepare(
                "SELECT kind, license, piece, message, amount, found_at, reported FROM findings
                 WHERE device_id = $1 ORDER BY finding_id",
            )?,
        })
    }
}

impl PgStore {
    /// Connects to `url` (a libpq-style URL or key=value string), creates the tables if
    /// they are missing and the month partitions around `today`.
    pub fn connect(url: &str, today: Date) -> anyhow::Result<Self> {
        let mut client = Client::connect(url, NoTls)
            .map_err(|e| anyhow::anyhow!("PostgreSQL at the --database-url: {e}"))?;
        ddl(&mut client, &schema())?;
        // Every statement names the device, so a generic plan prunes `pieces` to one
        // partition as it starts; planning each call for its values (PostgreSQL's default
        // for the first calls, and whenever it guesses better) costs more than it saves.
        client.batch_execute("SET plan_cache_mode = force_generic_plan")?;
        let st = Statements::prepare(&mut client)?;
        let mut store = Self {
            client,
            st,
            months: BTreeSet::new(),
        };
        let mut want = BTreeSet::new();
        let mut m = month_of(today.day_number().saturating_sub(MONTHS_BEHIND * 31))
            .ok_or_else(|| anyhow::anyhow!("today is out of the calendar"))?;
        let last = month_of(today.day_number().saturating_add(MONTHS_AHEAD * 31))
            .ok_or_else(|| anyhow::anyhow!("today is out of the calendar"))?;
        while m <= last {
            want.insert(m);
            m = next(m);
        }
        ensure_months(&mut store.client, &mut store.months, &want)
            .map_err(|e| anyhow::anyhow!("partitions: {}", e.message))?;
        Ok(store)
    }

    /// Whether the connection broke (the service then connects again).
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Runs `f` in one transaction (committed if it answers `Ok`). Months named in
    /// `days` get their partitions first, in a transaction of their own.
    pub fn run<T>(
        &mut self,
        step: &'static str,
        days: &[u32],
        f: impl FnOnce(&mut dyn RegistryTx) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        // Only months inside the window made on start get a partition of their own: a
        // signed piece can carry any date, and each new partition locks the scan log while
        // it is made. Others go to the default partition.
        let t = openpsd_service_kit::codec::today_utc().day_number();
        let (lo, hi) = (
            month_of(t.saturating_sub(MONTHS_BEHIND * 31)),
            month_of(t.saturating_add(MONTHS_AHEAD * 31)),
        );
        let want: BTreeSet<Month> = days
            .iter()
            .filter_map(|d| month_of(*d))
            .filter(|m| lo.is_some_and(|l| *m >= l) && hi.is_some_and(|h| *m <= h))
            .collect();
        ensure_months(&mut self.client, &mut self.months, &want)?;
        // READ COMMITTED, whatever the server's default: each statement must see what another
        // instance committed before this one got the device's lock.
        let tx = self
            .client
            .build_transaction()
            .isolation_level(postgres::IsolationLevel::ReadCommitted)
            .start()
            .map_err(pg(step))?;
        let mut t = PgTx {
            tx,
            st: &self.st,
            step,
            locked: BTreeSet::new(),
        };
        let out = f(&mut t)?;
        t.tx.commit().map_err(pg(step))?;
        Ok(out)
    }
}

/// Creates the month partitions of `want` that are missing. A month whose rows already
/// sit in the default partition keeps them there (PostgreSQL refuses the new partition);
/// that only costs the month its own partition, never a piece.
fn ensure_months(
    client: &mut Client,
    have: &mut BTreeSet<Month>,
    want: &BTreeSet<Month>,
) -> Result<(), ApiError> {
    const STEP: &str = "post_partitions";
    for &m in want.difference(&have.clone()) {
        let (Some(from), Some(to)) = (first_day(m), first_day(next(m))) else {
            continue;
        };
        let name = format!("scans_{:04}_{:02}", m.0, m.1);
        let ddl = format!(
            "CREATE TABLE IF NOT EXISTS {name} PARTITION OF scans FOR VALUES FROM ({from}) TO ({to})"
        );
        match self::ddl(client, &ddl) {
            Ok(()) => {}
            Err(e) if e.code() == Some(&postgres::error::SqlState::CHECK_VIOLATION) => {
                tracing::warn!(partition = %name, "rows of this month are in the default partition; left there");
            }
            Err(e) => return Err(pg(STEP)(e)),
        }
        have.insert(m);
    }
    Ok(())
}

/// The tables and the device partitions of `pieces`.
fn schema() -> String {
    let mut sql = SCHEMA.to_owned();
    for r in 0..DEVICE_PARTITIONS {
        sql.push_str(&format!(
            "CREATE TABLE IF NOT EXISTS pieces_h{r:02} PARTITION OF pieces \
             FOR VALUES WITH (MODULUS {DEVICE_PARTITIONS}, REMAINDER {r});\n"
        ));
    }
    sql
}

/// Key of the advisory lock the schema and partitions are made under: `CREATE TABLE IF NOT
/// EXISTS` is not safe against the same table created at the same time, which two
/// instances starting together (or making next month's partition together) would do.
const DDL_LOCK: i64 = 20_261_130;

/// Runs `sql` (DDL) in a transaction of its own under [`DDL_LOCK`].
fn ddl(client: &mut Client, sql: &str) -> Result<(), postgres::Error> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&DDL_LOCK])?;
    tx.batch_execute(sql)?;
    tx.commit()
}

/// One PostgreSQL transaction seen as the registry's.
struct PgTx<'a> {
    tx: Transaction<'a>,
    st: &'a Statements,
    step: &'static str,
    /// Devices whose advisory lock this transaction holds.
    locked: BTreeSet<String>,
}

impl PgTx<'_> {
    fn opt(
        &mut self,
        st: &Statement,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Option<postgres::Row>, ApiError> {
        self.tx.query_opt(st, params).map_err(pg(self.step))
    }

    fn pair(&mut self, st: &Statement, s: &Series<'_>, more: &[i64]) -> PairResult {
        let lic = int(s.license);
        let mut p: Vec<&(dyn postgres::types::ToSql + Sync)> = vec![&s.device, &s.key, &lic];
        for m in more {
            p.push(m);
        }
        let step = self.step;
        self.opt(st, &p)?
            .map(|r| Ok((small(r.get(0), step)?, r.get(1))))
            .transpose()
    }
}

type PairResult = Result<Option<(u32, i64)>, ApiError>;

impl RegistryTx for PgTx<'_> {
    fn lock(&mut self, devices: &[&str]) -> Result<(), ApiError> {
        let mut todo: Vec<&str> = devices
            .iter()
            .copied()
            .filter(|d| !self.locked.contains(*d))
            .collect();
        todo.sort_unstable();
        todo.dedup();
        if todo.is_empty() {
            return Ok(());
        }
        self.tx
            .execute(&self.st.lock_all, &[&todo])
            .map_err(pg(self.step))?;
        self.locked.extend(todo.iter().map(|d| (*d).to_owned()));
        Ok(())
    }

    fn insert_piece(
        &mut self,
        s: &Series<'_>,
        piece: u32,
        row: &PieceRow,
    ) -> Result<Inserted, ApiError> {
        // Normally held already (`registry::record_batch` locks the batch's devices).
        self.lock(&[s.device])?;
        let (lic, pc) = (int(s.license), int(piece));
        let day = i32::try_from(row.mailed_on)
            .map_err(|_| ApiError::internal(self.step, "date out of range"))?;
        let step = self.step;
        let r = self
            .tx
            .query_one(
                &self.st.insert,
                &[
                    &s.device,
                    &s.key,
                    &lic,
                    &pc,
                    &row.ar,
                    &row.dr,
                    &row.postage,
                    &day,
                    &row.origin,
                    &row.destination,
                    &row.digest.as_slice(),
                    &row.first_seen,
                ],
            )
            .map_err(pg(step))?;
        if let Some(old) = r.get::<_, Option<Vec<u8>>>(0) {
            return Ok(Inserted::Existing(old));
        }
        let before = match (r.get::<_, Option<i64>>(1), r.get::<_, Option<i64>>(2)) {
            (Some(p), Some(ar)) => Some((small(p, step)?, ar)),
            _ => None,
        };
        let after = match (
            r.get::<_, Option<i64>>(3),
            r.get::<_, Option<i64>>(4),
            r.get::<_, Option<i64>>(5),
        ) {
            (Some(p), Some(ar), Some(postage)) => Some((small(p, step)?, ar, postage)),
            _ => None,
        };
        Ok(Inserted::New { before, after })
    }

    fn add_copy(&mut self, s: &Series<'_>, piece: u32) -> Result<(), ApiError> {
        let (lic, pc) = (int(s.license), int(piece));
        self.tx
            .execute(&self.st.add_copy, &[&s.device, &s.key, &lic, &pc])
            .map_err(pg(self.step))?;
        Ok(())
    }

    fn top_ar(&mut self, s: &Series<'_>) -> Result<Option<(u32, i64)>, ApiError> {
        let st = self.st;
        self.pair(&st.top_ar, s, &[])
    }

    fn top_held(&mut self, s: &Series<'_>) -> Result<Option<(u32, i64)>, ApiError> {
        let st = self.st;
        self.pair(&st.top_held, s, &[])
    }

    fn dated_before(
        &mut self,
        s: &Series<'_>,
        counted: u32,
        day: u32,
    ) -> Result<Option<(u32, u32)>, ApiError> {
        let (lic, pc) = (int(s.license), int(counted));
        let day = i32::try_from(day).unwrap_or(i32::MAX);
        let st = self.st;
        let step = self.step;
        self.opt(&st.dated_before, &[&s.device, &s.key, &lic, &pc, &day])?
            .map(|r| {
                let d: i32 = r.get(1);
                Ok((
                    small(r.get(0), step)?,
                    u32::try_from(d).map_err(|_| ApiError::internal(step, "stored date"))?,
                ))
            })
            .transpose()
    }

    fn ar_above(
        &mut self,
        s: &Series<'_>,
        counted: u32,
        ar: i64,
    ) -> Result<Option<(u32, i64)>, ApiError> {
        let st = self.st;
        Ok(self
            .pair(&st.ar_above, s, &[int(counted)])?
            .filter(|(_, a)| *a > ar))
    }

    fn insert_finding(&mut self, f: &NewFinding<'_>, found_at: i64) -> Result<bool, ApiError> {
        let (lic, pc) = (int(f.license), int(f.piece));
        let n = self
            .tx
            .execute(
                &self.st.finding,
                &[
                    &f.device,
                    &lic,
                    &pc,
                    &f.kind,
                    &f.message,
                    &f.amount,
                    &f.evidence,
                    &found_at,
                ],
            )
            .map_err(pg(self.step))?;
        Ok(n > 0)
    }

    fn unreported(&mut self, device: &str) -> Result<Vec<Unreported>, ApiError> {
        let step = self.step;
        self.tx
            .query(&self.st.unreported, &[&device])
            .map_err(pg(step))?
            .into_iter()
            .map(|r| Ok((r.get(0), small(r.get(1), step)?, r.get(2), r.get(3))))
            .collect()
    }

    fn unreported_devices(&mut self, limit: u32) -> Result<Vec<String>, ApiError> {
        let step = self.step;
        Ok(self
            .tx
            .query(&self.st.unreported_devices, &[&i64::from(limit)])
            .map_err(pg(step))?
            .into_iter()
            .map(|r| r.get(0))
            .collect())
    }

    fn mark_reported(&mut self, id: i64, outcome: i64) -> Result<(), ApiError> {
        self.tx
            .execute(&self.st.mark, &[&id, &outcome])
            .map_err(pg(self.step))?;
        Ok(())
    }

    fn licenses(&mut self, device: &str) -> Result<Vec<LicenseRow>, ApiError> {
        let step = self.step;
        self.tx
            .query(&self.st.licenses, &[&device])
            .map_err(pg(step))?
            .into_iter()
            .map(|r| {
                Ok((
                    small(r.get(0), step)?,
                    r.get(1),
                    small(r.get(2), step)?,
                    r.get(3),
                    r.get(4),
                ))
            })
            .collect()
    }

    fn findings(&mut self, device: &str) -> Result<Vec<FindingRow>, ApiError> {
        let step = self.step;
        self.tx
            .query(&self.st.findings, &[&device])
            .map_err(pg(step))?
            .into_iter()
            .map(|r| {
                Ok((
                    r.get(0),
                    small(r.get(1), step)?,
                    small(r.get(2), step)?,
                    r.get(3),
                    r.get(4),
                    r.get(5),
                    r.get(6),
                ))
            })
            .collect()
    }

    fn license_devices(&mut self, license: u32) -> Result<Vec<LicenseDeviceRow>, ApiError> {
        let step = self.step;
        self.tx
            .query(&self.st.license_devices, &[&i64::from(license)])
            .map_err(pg(step))?
            .into_iter()
            .map(|r| {
                Ok((
                    r.get(0),
                    r.get(1),
                    small(r.get(2), step)?,
                    r.get(3),
                    r.get(4),
                    r.get(5),
                ))
            })
            .collect()
    }
}
