//! The auditor's walk of the log-in records (seed 001's transaction box 42, `vbox::login`):
//! each must verify under the box's key and be the row it is stored as; the sequences the
//! box counted must all be there.
//!
//! A record that does not verify, or whose row says another sequence, mailer or time, was
//! changed: a problem. A sequence missing is listed apart (`logins_missing`), not as a
//! problem: the database alone cannot tell a record deleted from one lost between the box's
//! commit and the database's (a crash; the box counts a log-in before it answers) or one
//! still under way while the auditor reads beside a running service. Records lost after the
//! last one stored are not seen here: the auditor reads the database only (the data center's
//! start compares the box's count with them and names those in a warning, `check_log_ins`).

use openpsd_core::vbox::login::LoginRecord;
use openpsd_service_kit::codec;

use super::{api, AuditReport};
use crate::sql::{args, Conn, Sql};

/// Walks every log-in record in sequence order into `rep` (`logins`, `logins_missing`,
/// `problems`), under `key`, for the box `box_id` (16 hex digits).
pub(super) fn walk_logins(
    c: &mut Conn<'_>,
    key: &[u8],
    box_id: &str,
    rep: &mut AuditReport,
) -> anyhow::Result<()> {
    let rows = c
        .rows(
            "audit",
            "SELECT sequence, mailer_id, at, record FROM logins ORDER BY sequence",
            args![],
        )
        .map_err(api)?;
    let mut expected = 1u64;
    for row in rows {
        let (seq, mailer, at, bytes): (i64, String, i64, Vec<u8>) = (
            row.int(0).map_err(api)?,
            row.text(1).map_err(api)?,
            row.int(2).map_err(api)?,
            row.blob(3).map_err(api)?,
        );
        rep.logins += 1;
        // The sequences the rows hold (a changed row is there, and reported below): a gap
        // between them is a record missing.
        let row_seq = u64::try_from(seq).unwrap_or(0);
        if row_seq > expected {
            let last = row_seq - 1;
            rep.logins_missing.push(if last == expected {
                expected.to_string()
            } else {
                format!("{expected}-{last}")
            });
        }
        expected = expected.max(row_seq.saturating_add(1));
        let Ok(l) = LoginRecord::verify(&bytes, key) else {
            rep.problems.push(format!(
                "log-in {seq}: the record's signature does not verify (changed)"
            ));
            continue;
        };
        let same = u64::try_from(seq).ok() == Some(l.sequence)
            && hex::encode(l.mailer) == mailer
            && u64::try_from(at).ok() == Some(l.time)
            && codec::device_hex(&l.box_id) == box_id;
        if !same {
            rep.problems.push(format!(
                "log-in {seq}: the row's sequence, mailer or time, or the box, is not the record's"
            ));
        }
    }
    Ok(())
}
