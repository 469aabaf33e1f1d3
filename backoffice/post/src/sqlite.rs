//! The registry in SQLite (the default: one file, `post.sqlite`, next to the service): the
//! tables and the answers [`RegistryTx`] asks for, inside one SQLite transaction. A single
//! writer, so checking a piece and inserting it cannot interleave with another batch.

use rusqlite::{params, OptionalExtension, Transaction};

use openpsd_service_kit::error::{ApiError, StorageContext};

use crate::registry::{
    FindingRow, Inserted, LicenseDeviceRow, LicenseRow, NewFinding, PieceRow, RegistryTx, Series,
    Unreported,
};

/// The registry's tables.
pub const SCHEMA: &str = "
-- Every distinct piece seen, by (device, key, license, piece count).
CREATE TABLE IF NOT EXISTS pieces (
    device_id   TEXT NOT NULL,              -- 16 upper-case hex
    key_id      TEXT NOT NULL,              -- the device key that signed it (8 hex): a device
                                            -- personalized again starts a new series
    license     INTEGER NOT NULL,
    piece       INTEGER NOT NULL,
    ar          INTEGER NOT NULL,
    dr          INTEGER NOT NULL,
    postage     INTEGER NOT NULL,
    mailed_on   INTEGER NOT NULL,           -- days since 2000-01-01
    origin      TEXT NOT NULL,
    destination TEXT NOT NULL,
    digest      BLOB NOT NULL,              -- SHA-256 of the signed bytes
    copies      INTEGER NOT NULL DEFAULT 1, -- times scanned
    first_seen  INTEGER NOT NULL,
    PRIMARY KEY (device_id, key_id, license, piece)
) WITHOUT ROWID;
-- What the registry found; reported: 0 not yet told, 1 the meter server has it (device
-- quarantined), 2 the meter refused it for good (a device it does not serve).
CREATE TABLE IF NOT EXISTS findings (
    finding_id INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id  TEXT NOT NULL,
    license    INTEGER NOT NULL,
    piece      INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    message    TEXT NOT NULL,
    amount     INTEGER,
    evidence   TEXT,                        -- the indicium (hex) that raised it
    found_at   INTEGER NOT NULL,
    reported   INTEGER NOT NULL DEFAULT 0,
    UNIQUE (device_id, license, piece, kind)
);
";

/// One SQLite transaction seen as the registry's.
pub struct SqliteTx<'t, 'c> {
    tx: &'t Transaction<'c>,
    step: &'static str,
}

impl<'t, 'c> SqliteTx<'t, 'c> {
    /// Wraps `tx`; errors are reported at `step`.
    pub fn new(tx: &'t Transaction<'c>, step: &'static str) -> Self {
        Self { tx, step }
    }
}

impl SqliteTx<'_, '_> {
    /// The first row of `sql`, if any, as a tuple.
    fn one<T>(&self, sql: &str, p: impl rusqlite::Params) -> Result<Option<T>, ApiError>
    where
        T: for<'r> TryFrom<&'r rusqlite::Row<'r>, Error = rusqlite::Error>,
    {
        self.tx
            .prepare_cached(sql)
            .and_then(|mut st| st.query_row(p, |r| r.try_into()).optional())
            .storage(self.step)
    }

    /// Every row of `sql`, as tuples.
    fn all<T>(&self, sql: &str, p: impl rusqlite::Params) -> Result<Vec<T>, ApiError>
    where
        T: for<'r> TryFrom<&'r rusqlite::Row<'r>, Error = rusqlite::Error>,
    {
        let mut st = self.tx.prepare_cached(sql).storage(self.step)?;
        let rows = st
            .query_map(p, |r| r.try_into())
            .storage(self.step)?
            .collect::<Result<_, _>>()
            .storage(self.step)?;
        Ok(rows)
    }
}

const WHERE_SERIES: &str = "device_id = ?1 AND key_id = ?2 AND license = ?3";

impl RegistryTx for SqliteTx<'_, '_> {
    fn lock(&mut self, _devices: &[&str]) -> Result<(), ApiError> {
        // One writer: the SQLite transaction (BEGIN IMMEDIATE is not needed, the file lock
        // of `Db` keeps other processes out) already excludes every other batch.
        Ok(())
    }

    fn insert_piece(
        &mut self,
        s: &Series<'_>,
        piece: u32,
        row: &PieceRow,
    ) -> Result<Inserted, ApiError> {
        let n = self
            .tx
            .prepare_cached(
                "INSERT OR IGNORE INTO pieces (device_id, key_id, license, piece, ar, dr, postage,
                     mailed_on, origin, destination, digest, first_seen)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    s.device,
                    s.key,
                    s.license,
                    piece,
                    row.ar,
                    row.dr,
                    row.postage,
                    row.mailed_on,
                    row.origin,
                    row.destination,
                    row.digest.as_slice(),
                    row.first_seen
                ])
            })
            .storage(self.step)?;
        if n == 0 {
            let old: Vec<u8> = self
                .tx
                .prepare_cached(&format!(
                    "SELECT digest FROM pieces WHERE {WHERE_SERIES} AND piece = ?4"
                ))
                .and_then(|mut st| {
                    st.query_row(params![s.device, s.key, s.license, piece], |r| r.get(0))
                })
                .storage(self.step)?;
            return Ok(Inserted::Existing(old));
        }
        let before = self
            .tx
            .prepare_cached(&format!(
                "SELECT piece, ar FROM pieces WHERE {WHERE_SERIES} AND piece < ?4
                 ORDER BY piece DESC LIMIT 1"
            ))
            .and_then(|mut st| {
                st.query_row(params![s.device, s.key, s.license, piece], |r| r.try_into())
                    .optional()
            })
            .storage(self.step)?;
        let after = self
            .tx
            .prepare_cached(&format!(
                "SELECT piece, ar, postage FROM pieces WHERE {WHERE_SERIES} AND piece > ?4
                 ORDER BY piece ASC LIMIT 1"
            ))
            .and_then(|mut st| {
                st.query_row(params![s.device, s.key, s.license, piece], |r| r.try_into())
                    .optional()
            })
            .storage(self.step)?;
        Ok(Inserted::New { before, after })
    }

    fn add_copy(&mut self, s: &Series<'_>, piece: u32) -> Result<(), ApiError> {
        self.tx
            .execute(
                &format!(
                    "UPDATE pieces SET copies = copies + 1 WHERE {WHERE_SERIES} AND piece = ?4"
                ),
                params![s.device, s.key, s.license, piece],
            )
            .storage(self.step)?;
        Ok(())
    }

    fn top_ar(&mut self, s: &Series<'_>) -> Result<Option<(u32, i64)>, ApiError> {
        self.one(
            &format!(
                "SELECT piece, ar FROM pieces WHERE {WHERE_SERIES}
                 ORDER BY ar DESC, piece DESC LIMIT 1"
            ),
            params![s.device, s.key, s.license],
        )
    }

    fn top_held(&mut self, s: &Series<'_>) -> Result<Option<(u32, i64)>, ApiError> {
        self.one(
            &format!(
                "SELECT piece, ar + dr FROM pieces WHERE {WHERE_SERIES}
                 ORDER BY ar + dr DESC, piece DESC LIMIT 1"
            ),
            params![s.device, s.key, s.license],
        )
    }

    fn dated_before(
        &mut self,
        s: &Series<'_>,
        counted: u32,
        day: u32,
    ) -> Result<Option<(u32, u32)>, ApiError> {
        self.one(
            &format!(
                "SELECT piece, mailed_on FROM pieces
                 WHERE {WHERE_SERIES} AND piece > ?4 AND mailed_on < ?5
                 ORDER BY piece ASC LIMIT 1"
            ),
            params![s.device, s.key, s.license, counted, day],
        )
    }

    fn ar_above(
        &mut self,
        s: &Series<'_>,
        counted: u32,
        ar: i64,
    ) -> Result<Option<(u32, i64)>, ApiError> {
        self.one(
            &format!(
                "SELECT piece, ar FROM pieces
                 WHERE {WHERE_SERIES} AND piece <= ?4
                 ORDER BY piece DESC LIMIT 1"
            ),
            params![s.device, s.key, s.license, counted],
        )
        .map(|found: Option<(u32, i64)>| found.filter(|(_, a)| *a > ar))
    }

    fn insert_finding(&mut self, f: &NewFinding<'_>, found_at: i64) -> Result<bool, ApiError> {
        let n = self
            .tx
            .execute(
                "INSERT OR IGNORE INTO findings
                     (device_id, license, piece, kind, message, amount, evidence, found_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    f.device, f.license, f.piece, f.kind, f.message, f.amount, f.evidence, found_at
                ],
            )
            .storage(self.step)?;
        Ok(n > 0)
    }

    fn unreported(&mut self, device: &str) -> Result<Vec<Unreported>, ApiError> {
        self.all(
            "SELECT finding_id, license, kind, message FROM findings
                 WHERE device_id = ?1 AND reported = 0 ORDER BY finding_id",
            [device],
        )
    }

    fn unreported_devices(&mut self, limit: u32) -> Result<Vec<String>, ApiError> {
        let rows: Vec<(String,)> = self.all(
            "SELECT DISTINCT device_id FROM findings WHERE reported = 0
             ORDER BY device_id LIMIT ?1",
            [limit],
        )?;
        Ok(rows.into_iter().map(|(d,)| d).collect())
    }

    fn mark_reported(&mut self, id: i64, outcome: i64) -> Result<(), ApiError> {
        self.tx
            .execute(
                "UPDATE findings SET reported = ?2 WHERE finding_id = ?1",
                [id, outcome],
            )
            .storage(self.step)?;
        Ok(())
    }

    fn licenses(&mut self, device: &str) -> Result<Vec<LicenseRow>, ApiError> {
        self.all(
            "SELECT license, COUNT(*), MAX(piece), MAX(ar), SUM(copies - 1) FROM pieces
                 WHERE device_id = ?1 GROUP BY license ORDER BY license",
            [device],
        )
    }

    fn findings(&mut self, device: &str) -> Result<Vec<FindingRow>, ApiError> {
        self.all(
            "SELECT kind, license, piece, message, amount, found_at, reported FROM findings
                 WHERE device_id = ?1 ORDER BY finding_id",
            [device],
        )
    }

    fn license_devices(&mut self, license: u32) -> Result<Vec<LicenseDeviceRow>, ApiError> {
        self.all(
            "SELECT p.device_id, COUNT(*), MAX(p.piece), MAX(p.ar), SUM(p.copies - 1),
                    (SELECT COUNT(*) FROM findings f
                     WHERE f.device_id = p.device_id AND f.license = ?1)
                 FROM pieces p WHERE p.license = ?1 GROUP BY p.device_id ORDER BY p.device_id",
            [license],
        )
    }
}
