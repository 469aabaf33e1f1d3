//! The auditor's recharging-center side: each mailer's deposit account compared with what
//! the box's records credited its meter ([`reconcile_deposits`]), the re-check of the
//! mailers whose refill moved while their account was read ([`recheck_deposits`]), and
//! `backoffice datacenter audit --rc` putting the reads in order ([`audit_with_rc`]).

use std::collections::BTreeMap;

use super::{add_checked, audit, read_refills, AuditReport, Deposit, MailerRefills, MeterCredit};
use crate::db::Database;

/// Compares what the recharging center debited and holds for each mailer (`accounts`, by
/// account ID `vm-<mailer>`, read after [`audit`] gave `rep`) with what the box's records
/// credited the mailer's meter, and reports each difference in `rep.problems`.
///
/// `again` is [`read_refills`] made after the accounts were read: a mailer whose refills
/// there differ from `rep.refills` (the walk's snapshot) was caught mid-refill and is not
/// compared (counted in `deposits_skipped`, named in `skipped_mailers`: [`recheck_deposits`]
/// tries it again). Its credit by the records moves only with a row reaching `applied`
/// (committed together), so the rows' figures move whenever the credit or a refill under
/// way does, and the records need not be walked again. For the others, the recharging
/// center was read while the mailer's refills stood still, so:
/// - credited − min(Σ refills `applied`, held) ≤ debited ≤ credited: a refill `applied` is
///   credited by the box and its hold settled a moment before its row moves on, so until
///   then it is still held (an edited row `applied` excuses nothing the center does not
///   hold);
/// - held ≤ Σ refills under way (a hold is made or released a moment before its row
///   moves).
///
/// A refill credited that nobody paid for, a payment no refill credited, a stranded hold
/// and a missing account are reported.
pub fn reconcile_deposits(
    rep: &mut AuditReport,
    accounts: &std::collections::HashMap<String, Deposit>,
    again: &BTreeMap<String, MailerRefills>,
) {
    let out = compare_deposits(&rep.credits, &rep.refills, accounts, again, None);
    rep.deposits_checked = rep.deposits_checked.saturating_add(out.checked);
    rep.deposits_skipped = out.skipped;
    rep.skipped_mailers = out.mailers;
    rep.problems.extend(out.problems);
}

/// Tries again the mailers [`reconcile_deposits`] (or an earlier re-check) skipped
/// (`rep.skipped_mailers`), from three reads made in this order: `fresh`, a new [`audit`];
/// `accounts`, those mailers' accounts read after it; `again`, [`read_refills`] after
/// those. As at the first read, a mailer is compared only if its refills in `again` are
/// `fresh.refills`' (the two reads bracket its account read) and then against `fresh`'s
/// figures, the records' (signed) credit in the snapshot whose refill rows stood still
/// until after its account was read. Not against `again`'s own figures: the rows are not
/// signed, and in a snapshot with no walk nothing checked them against the records. The
/// one still moving stays in `skipped_mailers`.
///
/// A problem `fresh` found that `rep` does not hold already (the database changed between
/// the walks) is added to `rep.problems`.
pub fn recheck_deposits(
    rep: &mut AuditReport,
    fresh: &AuditReport,
    accounts: &std::collections::HashMap<String, Deposit>,
    again: &BTreeMap<String, MailerRefills>,
) {
    if rep.skipped_mailers.is_empty() {
        return;
    }
    let only: std::collections::BTreeSet<String> = rep.skipped_mailers.iter().cloned().collect();
    let mut out = compare_deposits(&fresh.credits, &fresh.refills, accounts, again, Some(&only));
    // A skipped mailer the fresh walk has no meter of was not compared either.
    for m in &only {
        if !fresh.credits.iter().any(|c| &c.mailer_id == m) {
            out.skipped = out.skipped.saturating_add(1);
            out.mailers.push(m.clone());
        }
    }
    rep.deposit_rechecks = rep.deposit_rechecks.saturating_add(1);
    rep.deposits_checked = rep.deposits_checked.saturating_add(out.checked);
    rep.deposits_rechecked = rep.deposits_rechecked.saturating_add(out.checked);
    rep.deposits_skipped = out.skipped;
    out.mailers.sort();
    out.mailers.dedup();
    rep.skipped_mailers = out.mailers;
    rep.problems.extend(out.problems);
    for p in &fresh.problems {
        if !rep.problems.contains(p) {
            rep.problems.push(p.clone());
        }
    }
}

/// What [`compare_deposits`] found.
struct Compared {
    /// Accounts compared.
    checked: u64,
    /// Accounts (meters' entries) not compared: their mailer's refills moved.
    skipped: u64,
    /// Their mailers.
    mailers: Vec<String>,
    problems: Vec<String>,
}

/// [`reconcile_deposits`]'s comparison of `accounts` with `credits`, for the mailers whose
/// refills are the same in `before` (read with `credits`) and `again` (read after the
/// accounts); `only`: just those mailers.
fn compare_deposits(
    credits: &[MeterCredit],
    before: &BTreeMap<String, MailerRefills>,
    accounts: &std::collections::HashMap<String, Deposit>,
    again: &BTreeMap<String, MailerRefills>,
    only: Option<&std::collections::BTreeSet<String>>,
) -> Compared {
    let mut out = Compared {
        checked: 0,
        skipped: 0,
        mailers: Vec::new(),
        problems: Vec::new(),
    };
    for c in credits {
        if only.is_some_and(|o| !o.contains(&c.mailer_id)) {
            continue;
        }
        // Both reads keyed alike (the mailer the record names): a mailer with no refill row
        // in either read is unmoved.
        if before.get(&c.mailer_id) != again.get(&c.mailer_id) {
            out.skipped = out.skipped.saturating_add(1);
            if !out.mailers.contains(&c.mailer_id) {
                out.mailers.push(c.mailer_id.clone());
            }
            continue;
        }
        let id = format!("vm-{}", c.mailer_id);
        let Some(a) = accounts.get(&id) else {
            out.problems.push(format!(
                "meter {}: the recharging center has no account {id}",
                c.meter_id
            ));
            continue;
        };
        out.checked = out.checked.saturating_add(1);
        // Checked: the rows are not signed, and a saturated sum would cover any hold (a
        // stranded one hidden). An overflow is reported by its row; the bounds then go on
        // from the sum kept at its maximum, the meter reported either way.
        let (mut applied, mut under_way) = (0u64, 0u64);
        for u in &c.under_way {
            let what = || {
                format!(
                    "mailer {}: refill {}'s row ({}) makes the sum of its refills under way overflow",
                    c.mailer_id, u.client_txn_id, u.amount
                )
            };
            if u.state == "applied" {
                add_checked(&mut applied, u.amount, &mut out.problems, what);
            }
            add_checked(&mut under_way, u.amount, &mut out.problems, what);
        }
        // A refill `applied` excuses only what the recharging center still holds: until its
        // settle it is held there, after it debited. The rows are not signed; an edited row
        // `applied` must not cover a credit that was neither paid nor held.
        let excused = applied.min(a.held);
        if a.debited > c.credited || a.debited < c.credited.saturating_sub(excused) {
            out.problems.push(format!(
                "meter {}: the recharging center debited {id} {}, the box's records credited the meter {}",
                c.meter_id, a.debited, c.credited
            ));
        }
        if a.held > under_way {
            out.problems.push(format!(
                "account {id}: {} held, and the mailer's refills under way come to {} (a stranded hold)",
                a.held, under_way
            ));
        }
    }
    out
}

/// How many times `backoffice datacenter audit --rc` ([`audit_with_rc`]) re-checks the
/// mailers whose refill moved while their accounts were read. A refill takes a moment (a
/// few round trips), so a mailer caught in one is usually still only at the next try; one
/// refilling without pause for every try stays not compared, and is said to be.
pub const RECHECKS: u32 = 3;

/// The pause before each re-check: long enough for a refill under way to end.
pub const RECHECK_PAUSE: std::time::Duration = std::time::Duration::from_millis(500);

/// `backoffice datacenter audit --rc`: [`audit`], then each mailer's account at the
/// recharging center `rc` (as an operator), then [`read_refills`] and [`reconcile_deposits`];
/// then, for the mailers skipped, up to [`RECHECKS`] times after [`RECHECK_PAUSE`]: a fresh
/// [`audit`], their accounts, [`read_refills`] and [`recheck_deposits`]. The mailers still
/// not compared are left in `skipped_mailers`.
///
/// Fails (no report) when the database cannot be read or the recharging center does not
/// answer for an account (a missing account, 404, is a problem reported).
pub async fn audit_with_rc(
    db: &Database,
    box_key: Option<&[u8]>,
    rc: &openpsd_service_kit::upstream::Upstream,
) -> anyhow::Result<AuditReport> {
    let key = box_key.map(<[u8]>::to_vec);
    let mut rep = walk_apart(db, key.clone()).await?;
    let mailers: Vec<String> = rep.credits.iter().map(|c| c.mailer_id.clone()).collect();
    let accounts = read_accounts(rc, &mailers).await?;
    let again = light_read_apart(db).await?;
    reconcile_deposits(&mut rep, &accounts, &again);
    for _ in 0..RECHECKS {
        if rep.skipped_mailers.is_empty() {
            break;
        }
        tokio::time::sleep(RECHECK_PAUSE).await;
        // In this order: the walk's snapshot, the accounts, the light read (the walk and the
        // light read bracket the account read).
        let fresh = walk_apart(db, key.clone()).await?;
        let accounts = read_accounts(rc, &rep.skipped_mailers).await?;
        let again = light_read_apart(db).await?;
        recheck_deposits(&mut rep, &fresh, &accounts, &again);
    }
    Ok(rep)
}

/// [`audit`] on a blocking thread (rust-postgres's client runs a runtime of its own).
async fn walk_apart(db: &Database, key: Option<Vec<u8>>) -> anyhow::Result<AuditReport> {
    let db = db.clone();
    tokio::task::spawn_blocking(move || audit(&db, key.as_deref())).await?
}

/// [`read_refills`] on a blocking thread, after the accounts were read. The failpoint is
/// where a test moves a refill between the account read and this read.
async fn light_read_apart(db: &Database) -> anyhow::Result<BTreeMap<String, MailerRefills>> {
    openpsd_service_kit::failpoint::pause("datacenter_audit_before_second_read").await;
    let db = db.clone();
    tokio::task::spawn_blocking(move || read_refills(&db)).await?
}

/// The deposit accounts of `mailers` at the recharging center, by account ID; one it does
/// not know (404) is left out (reported by the comparison as a missing account).
async fn read_accounts(
    rc: &openpsd_service_kit::upstream::Upstream,
    mailers: &[String],
) -> anyhow::Result<std::collections::HashMap<String, Deposit>> {
    let mut accounts = std::collections::HashMap::new();
    for m in mailers {
        let id = format!("vm-{m}");
        if accounts.contains_key(&id) {
            continue;
        }
        match rc
            .get::<Deposit>(&format!("/v1/accounts/{id}"), "datacenter_audit")
            .await
        {
            Ok(a) => {
                accounts.insert(id, a);
            }
            Err(e) if e.status.as_u16() == 404 => {}
            Err(e) => anyhow::bail!(
                "the recharging center did not answer for {id}: {} ({})",
                e.message,
                e.code
            ),
        }
    }
    Ok(accounts)
}
