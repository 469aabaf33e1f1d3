//! The refill rows (not signed): each mailer's refills as the rows show them, read in the
//! walk's snapshot or alone ([`read_refills`], the light second read of `--rc`), and the
//! rows `applied` or `settled` checked against what the records credited.

use std::collections::BTreeMap;

use super::{add_checked, api, AuditReport, MailerRefills, UnderWay};
use crate::db::Database;
use crate::sql::{args, Conn, Sql};

/// The light second read of `backoffice datacenter audit --rc`: each mailer's refills
/// ([`MailerRefills`]), by mailer, from the refill rows alone, for
/// [`reconcile_deposits`](super::reconcile_deposits) to find the mailers whose refill moved
/// since [`audit`](super::audit()). One query in one snapshot, no transaction record read:
/// the refill rows (one per refill ever made, far fewer than the records, and nothing to
/// verify), summed here with checked arithmetic. Blocking.
pub fn read_refills(db: &Database) -> anyhow::Result<BTreeMap<String, MailerRefills>> {
    // A row's absurd amount was reported by the walk (or will be by the next audit); here
    // only whether the figures moved is asked, and such a row moves them like any other.
    db.read(|c| refills_in(c, &mut Vec::new()))
}

/// The states of a refill not finished yet ([`UnderWay`]).
const UNDER_WAY: [&str; 7] = [
    "requested",
    "held",
    "sealed",
    "voiding",
    "voided",
    "releasing",
    "applied",
];

/// [`read_refills`] on connection `c` (in its snapshot); a row whose amount is negative or
/// makes its mailer's sum overflow is reported in `problems` (by mailer and client
/// transaction ID), counted as 0 or the sum kept at its maximum.
pub(super) fn refills_in(
    c: &mut Conn<'_>,
    problems: &mut Vec<String>,
) -> anyhow::Result<BTreeMap<String, MailerRefills>> {
    let mut out: BTreeMap<String, MailerRefills> = BTreeMap::new();
    // Summed here, not by SQL's SUM: an edited row's absurd amount would make the whole
    // query fail (SQLite: integer overflow; PostgreSQL: bigint out of range) without naming
    // the row. Every row counted: a refill begun and released between two reads leaves only
    // its row behind.
    for row in c
        .rows(
            "audit",
            "SELECT mailer_id, client_txn_id, state, amount FROM refills
             ORDER BY mailer_id, client_txn_id",
            args![],
        )
        .map_err(api)?
    {
        let (mailer, txn, state, raw) = (
            row.text(0).map_err(api)?,
            row.text(1).map_err(api)?,
            row.text(2).map_err(api)?,
            row.int(3).map_err(api)?,
        );
        let amount = u64::try_from(raw).unwrap_or_else(|_| {
            problems.push(format!(
                "mailer {mailer}: refill {txn}'s row holds the amount {raw} (negative: edited)"
            ));
            0
        });
        let r = out.entry(mailer.clone()).or_default();
        r.rows = r.rows.saturating_add(1);
        if matches!(state.as_str(), "applied" | "settled") {
            match r.credited.checked_add(amount) {
                Some(t) => r.credited = t,
                None => {
                    if r.credited != u64::MAX {
                        problems.push(format!(
                            "mailer {mailer}: refill {txn}'s row ({amount}) makes the sum of its refills credited overflow"
                        ));
                    }
                    r.credited = u64::MAX;
                }
            }
        }
        if UNDER_WAY.contains(&state.as_str()) {
            r.under_way.push(UnderWay {
                client_txn_id: txn,
                state,
                amount,
            });
        }
    }
    Ok(out)
}

/// Each mailer's refill rows `applied` or `settled` against what the box's records credited
/// its meters, both from the walk's snapshot. They agree in any snapshot: a refill's row
/// reaches `applied` in the transaction that commits its record (`crate::indicia`,
/// `commit_answer`: `sealed` → `applied`, or the whole commit fails), and only from there
/// `settled`; a void's zero refill moves its row to `voided`, counted in neither. The rows
/// are not signed: a difference is an edited row (or a refill the box credited that no row
/// asked for), and the recharging center debits by the rows' refills.
pub(super) fn rows_against_records(rep: &mut AuditReport) {
    let mut by_records: BTreeMap<&str, u64> = BTreeMap::new();
    let mut problems = Vec::new();
    for c in &rep.credits {
        let t = by_records.entry(c.mailer_id.as_str()).or_insert(0);
        add_checked(t, c.credited, &mut problems, || {
            format!(
                "mailer {}: the credit of its meters overflows at meter {}",
                c.mailer_id, c.meter_id
            )
        });
    }
    let mailers: std::collections::BTreeSet<&str> = by_records
        .keys()
        .copied()
        .chain(rep.refills.keys().map(String::as_str))
        .collect();
    for m in mailers {
        let records = by_records.get(m).copied().unwrap_or(0);
        let rows = rep.refills.get(m).map_or(0, |r| r.credited);
        if rows != records {
            problems.push(format!(
                "mailer {m}: its refill rows applied or settled come to {rows}, the box's records credited its meter {records}"
            ));
        }
    }
    rep.problems.extend(problems);
}
