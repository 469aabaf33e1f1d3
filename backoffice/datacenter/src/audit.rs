//! The auditor (issue 16 §4; `backoffice datacenter audit`): walks every transaction record
//! the box signed, shard by shard, and recomputes every meter from them alone.
//!
//! Per shard the records must verify under the box's key, count up from sequence 1 without
//! a gap, and chain (each record's root before is the previous one's root after; the first's
//! is the empty tree's). Per meter the registers are replayed (CREATE: zero; ISSUE: AR +,
//! DR −, one piece; REFILL: DR +) and each record's registers must be the replay's. At the end
//! each shard's last root must be the database's tree root and each meter's stored record
//! must hold the replayed registers. A record changed (signature), deleted or reordered
//! (gap, broken chain), or a register edited in the database is reported. Every sum is
//! checked: an absurd amount is reported by its record (or refill row), never saturated or
//! failed on. Each mailer's refill rows `applied` or `settled` must come to what the records
//! credited its meters (the rows are not signed).
//!
//! Reads the database only (read-only, alongside a running service). The box's own roots
//! are compared by the service at every start ([`crate::Datacenter::open`]).
//!
//! The recharging center's side is [`reconcile_deposits`]: given each mailer's deposit
//! account as the recharging center reports it, what it debited must be exactly what the
//! box's records credited that mailer's meter (a refill credited that nobody paid for, or a
//! payment no refill credited, is reported), and nothing may stay held unless a refill of
//! that mailer is under way. `backoffice datacenter audit --rc URL` reads the accounts, then
//! the refills again ([`read_refills`], a light read: one query on the refill rows, no
//! record walked or verified) to leave out a mailer whose refill moved meanwhile, and
//! re-checks those mailers a few times ([`audit_with_rc`], [`recheck_deposits`]).

use std::collections::BTreeMap;

use openpsd_core::vbox::merkle::EmptyHashes;
use openpsd_core::vbox::record::MeterRecord;
use openpsd_core::vbox::txn::{self, TransactionRecord};
use openpsd_service_kit::codec;

use crate::db::Database;
use crate::sql::{args, Conn, Sql};
use crate::store;

/// What the auditor found.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct AuditReport {
    /// Transaction records read.
    pub records: u64,
    /// Meters recomputed.
    pub meters: u64,
    /// Value credited to meters (Σ refills).
    pub credited: u64,
    /// Postage used (Σ indicia).
    pub used: u64,
    /// Value the meters hold (Σ descending registers, replayed).
    pub held: u64,
    /// Every inconsistency, one line each; empty when the ledger balances.
    pub problems: Vec<String>,
    /// What each meter was credited by its records, with its mailer: what the recharging
    /// center must have debited ([`reconcile_deposits`]).
    pub credits: Vec<MeterCredit>,
    /// Deposit accounts compared with the records (0 until [`reconcile_deposits`] ran),
    /// those of a re-check included.
    pub deposits_checked: u64,
    /// Of `deposits_checked`, those compared at a re-check ([`recheck_deposits`]): their
    /// mailer's refill had moved while the accounts were first read.
    pub deposits_rechecked: u64,
    /// Deposit accounts not compared in the end: the mailer's refill moved while they were
    /// read, at the first read and at every re-check. Not a balanced account: nothing was
    /// checked for it (`backoffice datacenter audit --rc` exits with status 3).
    pub deposits_skipped: u64,
    /// The mailers of `deposits_skipped`, by ID: the ones a re-check compares.
    pub skipped_mailers: Vec<String>,
    /// Re-checks made of the mailers skipped ([`recheck_deposits`]).
    pub deposit_rechecks: u32,
    /// Each mailer's refills as the walk's snapshot saw them ([`read_refills`]'s figures
    /// from the same snapshot as `credits`): what [`reconcile_deposits`] compares the light
    /// second read with. Not printed: `credits` holds what they mean.
    #[serde(skip)]
    pub refills: BTreeMap<String, MailerRefills>,
}

/// A mailer's refills, as the refill rows show them: the figures that move whenever a
/// refill of the mailer moves, read without walking a record ([`read_refills`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MailerRefills {
    /// Σ amounts of its refill rows `applied` or `settled`: the box credited exactly these
    /// (a row reaches `applied` in the transaction that commits the refill's record,
    /// `crate::indicia`), so this moves whenever the meter's credit by its records does.
    /// Not the credit itself: the rows are not signed, the records are.
    pub credited: u64,
    /// Its refill rows in every state: moves with a refill begun, even one that ended
    /// (released, refused) before the next read, under way in neither.
    pub rows: u64,
    /// Its refills under way (as [`MeterCredit::under_way`]).
    pub under_way: Vec<UnderWay>,
}

/// One meter's credit by its records, and its mailer.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct MeterCredit {
    /// The mailer (32 hex digits), as the meter's record names it.
    pub mailer_id: String,
    /// The meter.
    pub meter_id: String,
    /// Σ of its refill records.
    pub credited: u64,
    /// The mailer's refills not finished yet (usually none or one), by transaction ID.
    pub under_way: Vec<UnderWay>,
}

/// A refill not finished yet: its recharging-center hold may be open, or (`applied`)
/// settled a moment before its row is.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct UnderWay {
    /// Its client transaction ID.
    pub client_txn_id: String,
    /// Its row's state (`requested` … `applied`).
    pub state: String,
    /// Its amount.
    pub amount: u64,
}

/// A mailer's deposit account at the recharging center, as the auditor read it.
pub type Deposit = openpsd_protocol::recharge::Account;

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
/// - credited − (Σ refills `applied`) ≤ debited ≤ credited: a refill `applied` is credited
///   by the box and its hold settled a moment before its row moves on;
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
        if a.debited > c.credited || a.debited < c.credited.saturating_sub(applied) {
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

#[derive(Clone, Copy, Default)]
struct Regs {
    ar: u64,
    dr: u64,
    pieces: u32,
}

/// What the replay makes of one record.
enum Replay {
    /// The registers after it.
    Regs(Regs),
    /// None: it spends more than the meter held.
    Disagrees,
    /// None: its amount overflows this register (name, value before).
    Overflows(&'static str, u64),
}

/// Audits the data center's database `db`, its records checked under `box_key` (the
/// box's transaction key as the KMS registered it); `None` takes the key the database
/// stores, which whoever rewrote the database could have replaced. Blocking.
pub fn audit(db: &Database, box_key: Option<&[u8]>) -> anyhow::Result<AuditReport> {
    db.read(|c| walk(c, box_key))
}

/// The light second read of `backoffice datacenter audit --rc`: each mailer's refills
/// ([`MailerRefills`]), by mailer, from the refill rows alone, for [`reconcile_deposits`]
/// to find the mailers whose refill moved since [`audit`]. One query in one snapshot, no
/// transaction record read: the refill rows (one per refill ever made, far fewer than the
/// records, and nothing to verify), summed here with checked arithmetic. Blocking.
pub fn read_refills(db: &Database) -> anyhow::Result<BTreeMap<String, MailerRefills>> {
    // A row's absurd amount was reported by the walk (or will be by the next audit); here
    // only whether the figures moved is asked, and such a row moves them like any other.
    db.read(|c| refills_in(c, &mut Vec::new()))
}

/// The states of a refill not finished yet ([`UnderWay`]).
const UNDER_WAY: [&str; 6] = [
    "requested",
    "held",
    "sealed",
    "voiding",
    "voided",
    "applied",
];

/// [`read_refills`] on connection `c` (in its snapshot); a row whose amount is negative or
/// makes its mailer's sum overflow is reported in `problems` (by mailer and client
/// transaction ID), counted as 0 or the sum kept at its maximum.
fn refills_in(
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

/// `*total += amount`, checked: on overflow the total stays at its maximum and `what` (the
/// row that overflowed it) is reported, once per total.
fn add_checked(
    total: &mut u64,
    amount: u64,
    problems: &mut Vec<String>,
    what: impl FnOnce() -> String,
) {
    match total.checked_add(amount) {
        Some(t) => *total = t,
        None => {
            if *total != u64::MAX {
                problems.push(what());
            }
            *total = u64::MAX;
        }
    }
}

fn api(e: openpsd_service_kit::error::ApiError) -> anyhow::Error {
    anyhow::anyhow!("{}", e.message)
}

/// Each mailer's refill rows `applied` or `settled` against what the box's records credited
/// its meters, both from the walk's snapshot. They agree in any snapshot: a refill's row
/// reaches `applied` in the transaction that commits its record (`crate::indicia`,
/// `commit_answer`: `sealed` → `applied`, or the whole commit fails), and only from there
/// `settled`; a void's zero refill moves its row to `voided`, counted in neither. The rows
/// are not signed: a difference is an edited row (or a refill the box credited that no row
/// asked for), and the recharging center debits by the rows' refills.
fn rows_against_records(rep: &mut AuditReport) {
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

fn walk(c: &mut Conn<'_>, box_key: Option<&[u8]>) -> anyhow::Result<AuditReport> {
    let b = c
        .one(
            "audit",
            "SELECT txn_key, depth, shards FROM box WHERE id = 1",
            args![],
        )
        .map_err(api)?;
    let (key_hex, depth, shards): (String, u8, u16) = (
        b.text(0).map_err(api)?,
        b.num(1).map_err(api)?,
        b.num(2).map_err(api)?,
    );
    let stored = hex::decode(key_hex)?;
    let empty = EmptyHashes::new();
    let mut rep = AuditReport::default();
    let key = match box_key {
        Some(k) => {
            if k != stored.as_slice() {
                rep.problems.push(
                    "the database names another box key than the one given: every record is checked under the one given"
                        .to_owned(),
                );
            }
            k.to_vec()
        }
        None => stored,
    };
    let mut regs: BTreeMap<String, Regs> = BTreeMap::new();
    let mut credited: BTreeMap<String, u64> = BTreeMap::new();
    let mut last: BTreeMap<u16, (u64, [u8; 32])> = BTreeMap::new();
    let rows = c
        .rows(
            "audit",
            "SELECT shard, sequence, meter_id, record FROM txns ORDER BY shard, sequence",
            args![],
        )
        .map_err(api)?;
    for row in rows {
        let (shard, seq, meter, bytes): (u16, i64, String, Vec<u8>) = (
            row.num(0).map_err(api)?,
            row.int(1).map_err(api)?,
            row.text(2).map_err(api)?,
            row.blob(3).map_err(api)?,
        );
        rep.records += 1;
        let Ok(t) = TransactionRecord::verify(&bytes, &key) else {
            rep.problems.push(format!(
                "shard {shard} sequence {seq}: the record's signature does not verify (changed)"
            ));
            continue;
        };
        if (t.shard, i64::try_from(t.sequence).unwrap_or(-1)) != (shard, seq)
            || codec::device_hex(&t.meter) != meter
        {
            rep.problems.push(format!(
                "shard {shard} sequence {seq}: the row's keys are not the record's"
            ));
        }
        let (prev_seq, prev_root) = last.get(&shard).copied().unwrap_or((0, empty.at(depth)));
        // Checked: a sequence of u64::MAX (a record signed under a key the database
        // replaced) must be reported, not overflow.
        if prev_seq.checked_add(1) != Some(t.sequence) {
            rep.problems.push(format!(
                "shard {shard}: sequence {} follows {prev_seq} (a record deleted or reordered)",
                t.sequence
            ));
        }
        if t.root_before != prev_root {
            rep.problems.push(format!(
                "shard {shard} sequence {}: the chain of roots is broken",
                t.sequence
            ));
        }
        last.insert(shard, (t.sequence, t.root_after));
        // Every sum checked: amounts a real box signs never come near 2^64, so an overflow is
        // an absurd amount (signed under a key the database replaced, or an edit) and is
        // reported by its record; the audit goes on with the rest.
        let amount = t.amount.0;
        let at = format!("meter {meter}: shard {shard} sequence {}", t.sequence);
        if t.kind == txn::KIND_REFILL {
            let c = credited.entry(meter.clone()).or_insert(0u64);
            add_checked(c, amount, &mut rep.problems, || {
                format!("{at}: its refill of {amount} makes the meter's credit overflow")
            });
            add_checked(&mut rep.credited, amount, &mut rep.problems, || {
                format!("{at}: its refill of {amount} makes the total credited overflow")
            });
        }
        if t.kind == txn::KIND_ISSUE {
            add_checked(&mut rep.used, amount, &mut rep.problems, || {
                format!("{at}: its postage of {amount} makes the total used overflow")
            });
        }
        let r = regs.entry(meter.clone()).or_default();
        let expect = match t.kind {
            txn::KIND_CREATE => Replay::Regs(Regs::default()),
            txn::KIND_ISSUE => match (
                r.dr.checked_sub(amount),
                r.ar.checked_add(amount),
                r.pieces.checked_add(1),
            ) {
                // More postage than the meter held: the replay disagrees with the record.
                (None, _, _) => Replay::Disagrees,
                (Some(dr), Some(ar), Some(pieces)) => Replay::Regs(Regs { ar, dr, pieces }),
                (Some(_), None, _) => Replay::Overflows("AR", r.ar),
                (Some(_), Some(_), None) => Replay::Overflows("pieces", u64::from(r.pieces)),
            },
            txn::KIND_REFILL => match r.dr.checked_add(amount) {
                Some(dr) => Replay::Regs(Regs { dr, ..*r }),
                None => Replay::Overflows("DR", r.dr),
            },
            _ => Replay::Regs(*r),
        };
        match expect {
            Replay::Regs(e) if (e.ar, e.dr, e.pieces) == (t.ar.0, t.dr.0, t.pieces.0) => *r = e,
            other => {
                rep.problems.push(match other {
                    Replay::Overflows(reg, was) => format!(
                        "{at}: {amount} overflows the replayed {reg} of {was} (an absurd amount); the record states AR {} DR {} pieces {}",
                        t.ar.0, t.dr.0, t.pieces.0
                    ),
                    _ => format!(
                        "{at} states AR {} DR {} pieces {}, the replay disagrees",
                        t.ar.0, t.dr.0, t.pieces.0
                    ),
                });
                // The replay goes on from what the record states.
                *r = Regs {
                    ar: t.ar.0,
                    dr: t.dr.0,
                    pieces: t.pieces.0,
                };
            }
        }
    }
    for s in 0..shards {
        let db_root = store::root(c, s, depth, &empty, "audit").map_err(api)?;
        let ledger_root = last.get(&s).map_or(empty.at(depth), |l| l.1);
        if db_root != ledger_root {
            rep.problems.push(format!(
                "shard {s}: the database's tree root is not the last record's root after"
            ));
        }
    }
    // The refills in the walk's snapshot: the meters' refills under way, and what the
    // light second read of `--rc` is compared with.
    rep.refills = refills_in(c, &mut rep.problems)?;
    let rows = c
        .rows(
            "audit",
            "SELECT meter_id, record, mailer_id
             FROM meters ORDER BY meter_id",
            args![],
        )
        .map_err(api)?;
    for row in rows {
        let (meter, record) = (row.text(0).map_err(api)?, row.blob(1).map_err(api)?);
        let mailer = row.text(2).map_err(api)?;
        let under_way = rep
            .refills
            .get(&mailer)
            .map(|r| r.under_way.clone())
            .unwrap_or_default();
        rep.meters += 1;
        // The mailer whose deposit pays: the one the record names (the box checks it at
        // every command), which must be the row's.
        let named = MeterRecord::decode(&record)
            .ok()
            .map(|m| hex::encode(m.mailer));
        if named.as_deref() != Some(mailer.as_str()) {
            rep.problems.push(format!(
                "meter {meter}: the row's mailer is not the one its record names"
            ));
        }
        rep.credits.push(MeterCredit {
            mailer_id: named.unwrap_or(mailer),
            meter_id: meter.clone(),
            credited: credited.get(&meter).copied().unwrap_or(0),
            under_way,
        });
        let Some(r) = regs.get(&meter) else {
            rep.problems
                .push(format!("meter {meter}: no transaction record creates it"));
            continue;
        };
        match MeterRecord::decode(&record) {
            Ok(m) if (m.ar.0, m.dr.0, m.pieces.0) == (r.ar, r.dr, r.pieces) => {}
            Ok(m) => rep.problems.push(format!(
                "meter {meter}: the stored record holds AR {} DR {} pieces {}, the ledger AR {} DR {} pieces {}",
                m.ar.0, m.dr.0, m.pieces.0, r.ar, r.dr, r.pieces
            )),
            Err(_) => rep.problems.push(format!("meter {meter}: the stored record does not parse")),
        }
    }
    for (meter, r) in &regs {
        add_checked(&mut rep.held, r.dr, &mut rep.problems, || {
            format!(
                "meter {meter}: its DR of {} makes the total held overflow",
                r.dr
            )
        });
    }
    if rep.used.checked_add(rep.held) != Some(rep.credited) {
        rep.problems.push(format!(
            "credited {} is not used {} + held {}",
            rep.credited, rep.used, rep.held
        ));
    }
    rows_against_records(&mut rep);
    Ok(rep)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn credit(mailer: &str, credited: u64, under_way: &[(&str, u64)]) -> MeterCredit {
        MeterCredit {
            mailer_id: mailer.into(),
            meter_id: format!("M{mailer}"),
            credited,
            under_way: under_way
                .iter()
                .map(|(state, amount)| UnderWay {
                    client_txn_id: "00000000000000aa".into(),
                    state: (*state).into(),
                    amount: *amount,
                })
                .collect(),
        }
    }

    fn account(mailer: &str, held: u64, debited: u64) -> (String, Deposit) {
        let id = format!("vm-{mailer}");
        let a = Deposit {
            account_id: id.clone(),
            available: 0,
            held,
            debited,
            deposited: held + debited,
        };
        (id, a)
    }

    /// The refill rows' figures matching `credits` (as a consistent database holds them).
    fn rows_of(credits: &[MeterCredit]) -> BTreeMap<String, MailerRefills> {
        credits
            .iter()
            .map(|c| {
                let r = MailerRefills {
                    credited: c.credited,
                    under_way: c.under_way.clone(),
                    ..MailerRefills::default()
                };
                (c.mailer_id.clone(), r)
            })
            .collect()
    }

    /// The problems `reconcile_deposits` reports for `credits` against `accounts`, the
    /// refills read twice alike.
    fn problems(credits: Vec<MeterCredit>, accounts: &[(String, Deposit)]) -> Vec<String> {
        let mut rep = AuditReport {
            refills: rows_of(&credits),
            credits,
            ..AuditReport::default()
        };
        let again = rep.refills.clone();
        let accounts: HashMap<_, _> = accounts.iter().cloned().collect();
        reconcile_deposits(&mut rep, &accounts, &again);
        rep.problems
    }

    #[test]
    fn an_overflowing_sum_of_refills_under_way_is_reported_not_saturated() {
        // Two edited rows under way whose sum overflows: saturated, the sum would cover any
        // hold (a stranded one hidden) and the lower bound on the debit would vanish.
        let huge = u64::MAX / 2 + 1;
        let p = problems(
            vec![credit("a", 500, &[("held", huge), ("applied", huge)])],
            &[account("a", 7, 0)],
        );
        assert!(
            p.iter()
                .any(|p| p.contains("overflow") && p.contains("00000000000000aa")),
            "{p:?}"
        );
    }

    #[test]
    fn settled_refills_balance_and_a_refill_in_its_last_step_is_allowed_either_way() {
        assert!(problems(vec![credit("a", 500, &[])], &[account("a", 0, 500)]).is_empty());
        // Applied by the box; the recharging center settled it or not yet.
        let applied = || vec![credit("a", 800, &[("applied", 300)])];
        assert!(problems(applied(), &[account("a", 300, 500)]).is_empty());
        assert!(problems(applied(), &[account("a", 0, 800)]).is_empty());
        // Held for a refill not credited yet.
        assert!(problems(
            vec![credit("a", 500, &[("sealed", 200)])],
            &[account("a", 200, 500)]
        )
        .is_empty());
    }

    #[test]
    fn unpaid_credit_payment_without_credit_stranded_hold_and_missing_account_are_reported() {
        // Credited 500, paid 400: value nobody paid for.
        assert_eq!(
            problems(vec![credit("a", 500, &[])], &[account("a", 0, 400)]).len(),
            1
        );
        // Paid 600 for 500 credited.
        assert_eq!(
            problems(vec![credit("a", 500, &[])], &[account("a", 0, 600)]).len(),
            1
        );
        // An applied refill of 300 does not excuse 400 missing.
        assert_eq!(
            problems(
                vec![credit("a", 800, &[("applied", 300)])],
                &[account("a", 0, 400)]
            )
            .len(),
            1
        );
        // 200 held with nothing under way.
        let p = problems(vec![credit("a", 500, &[])], &[account("a", 200, 500)]);
        assert!(p.len() == 1 && p[0].contains("stranded"), "{p:?}");
        let p = problems(vec![credit("a", 500, &[])], &[]);
        assert!(p.len() == 1 && p[0].contains("no account"), "{p:?}");
    }

    #[test]
    fn a_mailer_whose_refill_moved_between_the_reads_is_not_compared() {
        let before = vec![credit("a", 500, &[("held", 300)])];
        let after = rows_of(&[credit("a", 800, &[])]);
        let mut rep = AuditReport {
            refills: rows_of(&before),
            credits: before,
            ..AuditReport::default()
        };
        let accounts: HashMap<_, _> = [account("a", 0, 800)].into_iter().collect();
        reconcile_deposits(&mut rep, &accounts, &after);
        assert!(rep.problems.is_empty(), "{:?}", rep.problems);
        assert_eq!((rep.deposits_checked, rep.deposits_skipped), (0, 1));
    }

    /// A data center database in memory, with mailers `a` and `b`'s refill rows: `a` has
    /// 500 settled and 300 sealed (held at the recharging center), `b` 200 settled.
    fn ledger() -> rusqlite::Connection {
        let c = rusqlite::Connection::open_in_memory().unwrap();
        c.execute_batch(store::SCHEMA).unwrap();
        for (mailer, txn, amount, state) in [
            ("a", "00000000000000a1", 500, "settled"),
            ("a", "00000000000000aa", 300, "sealed"),
            ("b", "00000000000000b1", 200, "settled"),
        ] {
            add_refill(&c, mailer, txn, amount, state);
        }
        c
    }

    fn add_refill(c: &rusqlite::Connection, mailer: &str, txn: &str, amount: i64, state: &str) {
        c.execute(
            "INSERT INTO refills (mailer_id, client_txn_id, amount, bound_refills, bound_sum, state, created_at)
             VALUES (?1, ?2, ?3, 0, 0, ?4, 0)",
            rusqlite::params![mailer, txn, amount, state],
        )
        .unwrap();
    }

    /// What the walk gives for [`ledger`]'s mailers (their records credited 500 and 200),
    /// with the refill rows read in the same snapshot.
    fn first_read(c: &mut rusqlite::Connection) -> AuditReport {
        AuditReport {
            credits: vec![credit("a", 500, &[("sealed", 300)]), credit("b", 200, &[])],
            refills: refills_in(&mut Conn::Lite(c), &mut Vec::new()).unwrap(),
            ..AuditReport::default()
        }
    }

    /// The refill rows of `c` read again and `rep` reconciled with `accounts` (as
    /// `audit --rc` does after reading them).
    fn second_read(
        c: &mut rusqlite::Connection,
        rep: &mut AuditReport,
        accounts: &[(String, Deposit)],
    ) {
        let accounts: HashMap<_, _> = accounts.iter().cloned().collect();
        let again = refills_in(&mut Conn::Lite(c), &mut Vec::new()).unwrap();
        reconcile_deposits(rep, &accounts, &again);
    }

    #[test]
    fn the_light_read_sees_the_refills_as_the_walk_does() {
        let mut c = ledger();
        let rep = first_read(&mut c);
        // The rows' figures are the credits' (the database is consistent), and every row
        // is counted.
        let rows: BTreeMap<_, _> = rep
            .refills
            .iter()
            .map(|(m, r)| (m.clone(), r.rows))
            .collect();
        assert_eq!(rows, [("a".to_owned(), 2), ("b".to_owned(), 1)].into());
        let refills = rep
            .refills
            .into_iter()
            .map(|(m, r)| (m, MailerRefills { rows: 0, ..r }))
            .collect::<BTreeMap<_, _>>();
        assert_eq!(refills, rows_of(&rep.credits));
    }

    #[test]
    fn an_unchanged_ledger_compares_every_mailer() {
        let mut c = ledger();
        let mut rep = first_read(&mut c);
        // `b` debited 50 more than its records credited: compared, so reported.
        second_read(
            &mut c,
            &mut rep,
            &[account("a", 300, 500), account("b", 0, 250)],
        );
        assert_eq!((rep.deposits_checked, rep.deposits_skipped), (2, 0));
        assert!(
            rep.problems.len() == 1 && rep.problems[0].contains("vm-b"),
            "{:?}",
            rep.problems
        );
        assert!(rep.skipped_mailers.is_empty());
    }

    #[test]
    fn the_light_read_finds_a_refill_that_moved_between_the_reads() {
        let mut c = ledger();
        let mut rep = first_read(&mut c);
        // After the walk: `a`'s sealed refill is applied by the box, and the recharging
        // center, read then, settled it already (debited 800): the records the walk read
        // credited 500.
        c.execute(
            "UPDATE refills SET state = 'applied' WHERE client_txn_id = '00000000000000aa'",
            [],
        )
        .unwrap();
        second_read(
            &mut c,
            &mut rep,
            &[account("a", 0, 800), account("b", 0, 200)],
        );
        assert!(
            rep.problems.is_empty(),
            "no false alarm: {:?}",
            rep.problems
        );
        assert_eq!((rep.deposits_checked, rep.deposits_skipped), (1, 1));
        assert_eq!(rep.skipped_mailers, ["a"]);

        // A refill of `b` made from start to end between the reads: never under way in
        // either, but its credit moved the rows' sum.
        let mut c = ledger();
        let mut rep = first_read(&mut c);
        add_refill(&c, "b", "00000000000000b2", 100, "settled");
        second_read(
            &mut c,
            &mut rep,
            &[account("a", 300, 500), account("b", 0, 300)],
        );
        assert!(
            rep.problems.is_empty(),
            "no false alarm: {:?}",
            rep.problems
        );
        assert_eq!((rep.deposits_checked, rep.deposits_skipped), (1, 1));
        assert_eq!(rep.skipped_mailers, ["b"]);
    }

    #[test]
    fn the_light_read_finds_a_refill_begun_and_released_between_the_reads() {
        // A refill of `b` begun after the walk, held at the recharging center when it was
        // read, then released (the KMS refused it) before the second read: under way in
        // neither read, nothing credited, but the hold was real when the account was read.
        let mut c = ledger();
        let mut rep = first_read(&mut c);
        add_refill(&c, "b", "00000000000000b2", 100, "released");
        second_read(
            &mut c,
            &mut rep,
            &[account("a", 300, 500), account("b", 100, 200)],
        );
        assert!(
            rep.problems.is_empty(),
            "no false alarm: {:?}",
            rep.problems
        );
        assert_eq!((rep.deposits_checked, rep.deposits_skipped), (1, 1));
    }

    /// `rep` (of [`ledger`]) with `b` skipped: its refill of 100 settled between the walk
    /// and the light read. Answers the database as it is then.
    fn b_skipped() -> (rusqlite::Connection, AuditReport) {
        let mut c = ledger();
        let mut rep = first_read(&mut c);
        add_refill(&c, "b", "00000000000000b2", 100, "settled");
        second_read(
            &mut c,
            &mut rep,
            &[account("a", 300, 500), account("b", 0, 300)],
        );
        assert_eq!(rep.skipped_mailers, ["b"]);
        (c, rep)
    }

    /// A fresh walk of [`ledger`] after `b`'s refill of 100 settled (credited 300).
    fn fresh_walk(c: &mut rusqlite::Connection) -> AuditReport {
        AuditReport {
            credits: vec![credit("a", 500, &[("sealed", 300)]), credit("b", 300, &[])],
            refills: refills_in(&mut Conn::Lite(c), &mut Vec::new()).unwrap(),
            ..AuditReport::default()
        }
    }

    #[test]
    fn a_skipped_mailer_is_compared_at_a_recheck_against_the_fresh_walk() {
        // Standing still from the fresh walk to the light read after its account: compared
        // with the fresh walk's figures, and only it (`a`'s account is not read again).
        let (mut c, mut rep) = b_skipped();
        let fresh = fresh_walk(&mut c);
        let accounts: HashMap<_, _> = [account("b", 0, 300)].into_iter().collect();
        let again = refills_in(&mut Conn::Lite(&mut c), &mut Vec::new()).unwrap();
        recheck_deposits(&mut rep, &fresh, &accounts, &again);
        assert!(rep.problems.is_empty(), "{:?}", rep.problems);
        assert_eq!(
            (
                rep.deposits_checked,
                rep.deposits_rechecked,
                rep.deposits_skipped
            ),
            (2, 1, 0)
        );
        assert!(rep.skipped_mailers.is_empty());
        assert_eq!(rep.deposit_rechecks, 1);

        // The same, the recharging center having debited `b` 50 more than credited: the
        // re-check compares, so reports it.
        let (mut c, mut rep) = b_skipped();
        let fresh = fresh_walk(&mut c);
        let accounts: HashMap<_, _> = [account("b", 0, 350)].into_iter().collect();
        let again = refills_in(&mut Conn::Lite(&mut c), &mut Vec::new()).unwrap();
        recheck_deposits(&mut rep, &fresh, &accounts, &again);
        assert!(
            rep.problems.len() == 1
                && rep.problems[0].contains("vm-b")
                && rep.problems[0].contains("350"),
            "{:?}",
            rep.problems
        );
    }

    #[test]
    fn a_mailer_still_moving_at_the_recheck_stays_skipped() {
        // Another refill of `b` settled after the fresh walk, before the light read: its
        // account, read between, is not compared with the fresh walk's figures.
        let (mut c, mut rep) = b_skipped();
        let fresh = fresh_walk(&mut c);
        add_refill(&c, "b", "00000000000000b3", 100, "settled");
        let accounts: HashMap<_, _> = [account("b", 0, 400)].into_iter().collect();
        let again = refills_in(&mut Conn::Lite(&mut c), &mut Vec::new()).unwrap();
        recheck_deposits(&mut rep, &fresh, &accounts, &again);
        assert!(
            rep.problems.is_empty(),
            "no false alarm: {:?}",
            rep.problems
        );
        assert_eq!(rep.skipped_mailers, ["b"]);
        assert_eq!(
            (
                rep.deposits_checked,
                rep.deposits_rechecked,
                rep.deposits_skipped
            ),
            (1, 0, 1)
        );
        assert_eq!(rep.deposit_rechecks, 1);
    }

    #[test]
    fn refill_rows_that_are_not_what_the_records_credited_are_reported() {
        // A consistent snapshot: no problem.
        let mut c = ledger();
        let mut rep = first_read(&mut c);
        rows_against_records(&mut rep);
        assert!(rep.problems.is_empty(), "{:?}", rep.problems);

        // `b`'s settled row edited from 200 to 250; and a row of a mailer with no meter
        // settled 70 (nothing of the box's credited it).
        c.execute(
            "UPDATE refills SET amount = 250 WHERE client_txn_id = '00000000000000b1'",
            [],
        )
        .unwrap();
        add_refill(&c, "c", "00000000000000c1", 70, "settled");
        // A released and an applied-then-voided refill credit nothing on either side.
        add_refill(&c, "a", "00000000000000a2", 40, "released");
        let mut rep = first_read(&mut c);
        rows_against_records(&mut rep);
        assert_eq!(rep.problems.len(), 2, "{:?}", rep.problems);
        assert!(
            rep.problems
                .iter()
                .any(|p| p.contains("mailer b") && p.contains("250") && p.contains("200")),
            "{:?}",
            rep.problems
        );
        assert!(
            rep.problems
                .iter()
                .any(|p| p.contains("mailer c") && p.contains("70") && p.contains(" 0")),
            "{:?}",
            rep.problems
        );

        // Records credited a meter that no row applied.
        let mut rep = AuditReport {
            credits: vec![credit("d", 90, &[])],
            ..AuditReport::default()
        };
        rows_against_records(&mut rep);
        assert!(
            rep.problems.len() == 1
                && rep.problems[0].contains("mailer d")
                && rep.problems[0].contains("90"),
            "{:?}",
            rep.problems
        );
    }

    #[test]
    fn absurd_refill_row_amounts_are_reported_by_row_not_failed_on() {
        // Two rows of b settled at i64::MAX: SQL's SUM fails on them; the walk's read names
        // the row that overflows, and a negative amount.
        let mut c = ledger();
        add_refill(&c, "b", "00000000000000b2", i64::MAX, "settled");
        add_refill(&c, "b", "00000000000000b3", i64::MAX, "settled");
        add_refill(&c, "b", "00000000000000b4", -5, "settled");
        let mut problems = Vec::new();
        let r = refills_in(&mut Conn::Lite(&mut c), &mut problems).unwrap();
        assert_eq!(r["b"].credited, u64::MAX);
        assert_eq!(r["b"].rows, 4);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].contains("mailer b")
                && problems[0].contains("00000000000000b3")
                && problems[0].contains("overflow"),
            "{problems:?}"
        );
        assert!(
            problems[1].contains("00000000000000b4") && problems[1].contains("-5"),
            "{problems:?}"
        );
    }

    /// A database holding the box row and the records `records` of meter [`METER`] on
    /// shard 0, each signed by the box's key (row sequences 1, 2, …), its roots chained
    /// (all the empty tree's, as the database's tree with no node).
    fn signed_ledger(records: &[TransactionRecord]) -> rusqlite::Connection {
        let key = openpsd_core::crypto::IndiciumKey::from_bytes(&[7u8; 32]).unwrap();
        let c = rusqlite::Connection::open_in_memory().unwrap();
        c.execute_batch(store::SCHEMA).unwrap();
        c.execute(
            "INSERT INTO box (id, box_id, shards, depth, txn_key) VALUES (1, 'b0', 1, 4, ?1)",
            [hex::encode(key.public_key())],
        )
        .unwrap();
        for (row, t) in (1i64..).zip(records) {
            c.execute(
                "INSERT INTO txns (shard, sequence, meter_id, kind, record) VALUES (0, ?1, ?2, ?3, ?4)",
                rusqlite::params![row, codec::device_hex(&t.meter), t.kind, t.sign(&key)],
            )
            .unwrap();
        }
        c
    }

    const METER: openpsd_core::types::DeviceId = openpsd_core::types::DeviceId([9; 8]);

    /// Record `sequence` of [`METER`]: `kind` of `amount`, stating AR `ar`, DR `dr`, `pieces`.
    fn rec(
        sequence: u64,
        kind: u8,
        amount: u64,
        ar: u64,
        dr: u64,
        pieces: u32,
    ) -> TransactionRecord {
        use openpsd_core::types::{Amount, DeviceId, PieceCount};
        let empty = EmptyHashes::new().at(4);
        TransactionRecord {
            box_id: DeviceId([1; 8]),
            shard: 0,
            sequence,
            kind,
            meter: METER,
            slot: 0,
            amount: Amount(amount),
            ar: Amount(ar),
            dr: Amount(dr),
            pieces: PieceCount(pieces),
            digest: [0; 32],
            root_before: empty,
            root_after: empty,
        }
    }

    #[test]
    fn absurd_signed_amounts_are_reported_by_record_and_the_walk_goes_on() {
        // Records signed under a key the database names (the one an attacker who replaced
        // it signs with): a refill of nearly 2^64, then one of 100 that overflows DR (the
        // record states the saturated value, which a saturating replay would accept), then
        // a piece the replay takes from the record's registers; then a record claiming
        // sequence 2^64 - 1 and one after it (2^64 - 1 + 1 must not overflow).
        let max = u64::MAX;
        let mut c = signed_ledger(&[
            rec(1, txn::KIND_CREATE, 0, 0, 0, 0),
            rec(2, txn::KIND_REFILL, max - 10, 0, max - 10, 0),
            rec(3, txn::KIND_REFILL, 100, 0, max, 0),
            rec(4, txn::KIND_ISSUE, 5, 5, max - 5, 1),
            rec(max, txn::KIND_REPRINT, 0, 5, max - 5, 1),
            rec(6, txn::KIND_REPRINT, 0, 5, max - 5, 1),
        ]);
        let rep = walk(&mut Conn::Lite(&mut c), None).unwrap();
        let meter = codec::device_hex(&METER);
        let named = |needle: &str| {
            rep.problems
                .iter()
                .filter(|p| p.contains(needle))
                .cloned()
                .collect::<Vec<_>>()
        };
        let dr = named("overflows the replayed DR");
        assert!(
            dr.len() == 1 && dr[0].starts_with(&format!("meter {meter}: shard 0 sequence 3:")),
            "{:?}",
            rep.problems
        );
        let total = named("the total credited overflow");
        assert!(
            total.len() == 1 && total[0].contains("shard 0 sequence 3"),
            "{:?}",
            rep.problems
        );
        // The piece after it replays (from the record's registers): nothing said of it.
        assert!(named("sequence 4").is_empty(), "{:?}", rep.problems);
        assert_eq!(
            named(&format!("sequence 6 follows {max}")).len(),
            1,
            "{:?}",
            rep.problems
        );
        assert_eq!(rep.records, 6);
    }
}
