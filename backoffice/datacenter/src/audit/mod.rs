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
//!
//! Files: this one holds the report, [`audit`] and the walk; `refills.rs` the refill rows
//! (the light read, the rows against the records); `deposits.rs` the recharging center's
//! side (the comparison, the re-check, `--rc`); `tests.rs` their unit tests.

use std::collections::BTreeMap;

use openpsd_core::vbox::merkle::EmptyHashes;
use openpsd_core::vbox::record::MeterRecord;
use openpsd_core::vbox::txn::{self, TransactionRecord};
use openpsd_service_kit::codec;

use crate::db::Database;
use crate::sql::{args, Conn, Sql};
use crate::store;

mod deposits;
mod logins;
mod refills;
#[cfg(test)]
mod tests;

pub use deposits::{audit_with_rc, recheck_deposits, reconcile_deposits, RECHECKS, RECHECK_PAUSE};
pub use refills::read_refills;
use refills::{refills_in, rows_against_records};
/// What the auditor found.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct AuditReport {
    /// Transaction records read.
    pub records: u64,
    /// Log-in records read (`logins.rs`).
    pub logins: u64,
    /// Sequences of log-in records the box counted and the database lacks, as `7` or
    /// `7-9`: each lost between the box and the database, under way, or deleted (not told
    /// apart, so not a problem; `logins.rs`).
    pub logins_missing: Vec<String>,
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

fn walk(c: &mut Conn<'_>, box_key: Option<&[u8]>) -> anyhow::Result<AuditReport> {
    let b = c
        .one(
            "audit",
            "SELECT txn_key, depth, shards, box_id FROM box WHERE id = 1",
            args![],
        )
        .map_err(api)?;
    let (key_hex, depth, shards, box_id): (String, u8, u16, String) = (
        b.text(0).map_err(api)?,
        b.num(1).map_err(api)?,
        b.num(2).map_err(api)?,
        b.text(3).map_err(api)?,
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
    logins::walk_logins(c, &key, &box_id, &mut rep)?;
    Ok(rep)
}
