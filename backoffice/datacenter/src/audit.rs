//! The auditor (issue 16 §4; `backoffice datacenter audit`): walks every transaction record
//! the box signed, shard by shard, and recomputes every meter from them alone.
//!
//! Per shard the records must verify under the box's key, count up from sequence 1 without
//! a gap, and chain (each record's root before is the previous one's root after; the first's
//! is the empty tree's). Per meter the registers are replayed (CREATE: zero; ISSUE: AR +,
//! DR −, one piece; REFILL: DR +) and each record's registers must be the replay's. At the end
//! each shard's last root must be the database's tree root and each meter's stored record
//! must hold the replayed registers. A record changed (signature), deleted or reordered
//! (gap, broken chain), or a register edited in the database is reported.
//!
//! Reads the database only (read-only, alongside a running service). The box's own roots
//! are compared by the service at every start ([`crate::Datacenter::open`]).
//!
//! The recharging center's side is [`reconcile_deposits`]: given each mailer's deposit
//! account as the recharging center reports it, what it debited must be exactly what the
//! box's records credited that mailer's meter (a refill credited that nobody paid for, or a
//! payment no refill credited, is reported), and nothing may stay held unless a refill of
//! that mailer is under way. `backoffice datacenter audit --rc URL` reads the accounts.

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
    /// Deposit accounts compared with the records (0 until [`reconcile_deposits`] ran).
    pub deposits_checked: u64,
    /// Deposit accounts not compared: the mailer's refill moved while they were read.
    pub deposits_skipped: u64,
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
/// `again` is [`AuditReport::credits`] of a second audit made after the accounts were read:
/// a mailer whose credit or refill under way moved between the two reads was caught
/// mid-refill and is not compared (counted in `deposits_skipped`); for the others, the
/// recharging center was read while the mailer's refills stood still, so:
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
    again: &[MeterCredit],
) {
    for c in &rep.credits {
        if again.iter().find(|a| a.meter_id == c.meter_id) != Some(c) {
            rep.deposits_skipped += 1;
            continue;
        }
        let id = format!("vm-{}", c.mailer_id);
        let Some(a) = accounts.get(&id) else {
            rep.problems.push(format!(
                "meter {}: the recharging center has no account {id}",
                c.meter_id
            ));
            continue;
        };
        rep.deposits_checked += 1;
        let applied = c
            .under_way
            .iter()
            .filter(|u| u.state == "applied")
            .fold(0u64, |t, u| t.saturating_add(u.amount));
        let under_way = c
            .under_way
            .iter()
            .fold(0u64, |t, u| t.saturating_add(u.amount));
        if a.debited > c.credited || a.debited < c.credited.saturating_sub(applied) {
            rep.problems.push(format!(
                "meter {}: the recharging center debited {id} {}, the box's records credited the meter {}",
                c.meter_id, a.debited, c.credited
            ));
        }
        if a.held > under_way {
            rep.problems.push(format!(
                "account {id}: {} held, and the mailer's refills under way come to {} (a stranded hold)",
                a.held, under_way
            ));
        }
    }
}

#[derive(Clone, Copy, Default)]
struct Regs {
    ar: u64,
    dr: u64,
    pieces: u32,
}

/// Audits the data center's database `db`, its records checked under `box_key` (the
/// box's transaction key as the KMS registered it); `None` takes the key the database
/// stores, which whoever rewrote the database could have replaced. Blocking.
pub fn audit(db: &Database, box_key: Option<&[u8]>) -> anyhow::Result<AuditReport> {
    db.read(|c| walk(c, box_key))
}

fn api(e: openpsd_service_kit::error::ApiError) -> anyhow::Error {
    anyhow::anyhow!("{}", e.message)
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
        if t.sequence != prev_seq + 1 {
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
        if t.kind == txn::KIND_REFILL {
            let c = credited.entry(meter.clone()).or_insert(0u64);
            *c = c.saturating_add(t.amount.0);
        }
        let r = regs.entry(meter.clone()).or_default();
        let expect = match t.kind {
            txn::KIND_CREATE => Some(Regs::default()),
            txn::KIND_ISSUE => {
                rep.used = rep.used.saturating_add(t.amount.0);
                r.dr.checked_sub(t.amount.0).map(|dr| Regs {
                    ar: r.ar.saturating_add(t.amount.0),
                    dr,
                    pieces: r.pieces.saturating_add(1),
                })
            }
            txn::KIND_REFILL => {
                rep.credited = rep.credited.saturating_add(t.amount.0);
                Some(Regs {
                    dr: r.dr.saturating_add(t.amount.0),
                    ..*r
                })
            }
            _ => Some(*r),
        };
        match expect {
            Some(e) if (e.ar, e.dr, e.pieces) == (t.ar.0, t.dr.0, t.pieces.0) => *r = e,
            _ => {
                rep.problems.push(format!(
                    "meter {meter}: shard {shard} sequence {} states AR {} DR {} pieces {}, the replay disagrees",
                    t.sequence, t.ar.0, t.dr.0, t.pieces.0
                ));
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
    let mut under_way: BTreeMap<String, Vec<UnderWay>> = BTreeMap::new();
    for row in c
        .rows(
            "audit",
            "SELECT mailer_id, client_txn_id, state, amount FROM refills
             WHERE state IN ('requested', 'held', 'sealed', 'voiding', 'voided', 'applied')
             ORDER BY mailer_id, client_txn_id",
            args![],
        )
        .map_err(api)?
    {
        under_way
            .entry(row.text(0).map_err(api)?)
            .or_default()
            .push(UnderWay {
                client_txn_id: row.text(1).map_err(api)?,
                state: row.text(2).map_err(api)?,
                amount: u64::try_from(row.int(3).map_err(api)?).unwrap_or(0),
            });
    }
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
        let under_way = under_way.remove(&mailer).unwrap_or_default();
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
    rep.held = regs.values().map(|r| r.dr).fold(0u64, u64::saturating_add);
    if rep.credited != rep.used.saturating_add(rep.held) {
        rep.problems.push(format!(
            "credited {} is not used {} + held {}",
            rep.credited, rep.used, rep.held
        ));
    }
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

    /// The problems `reconcile_deposits` reports for `credits` against `accounts`, read
    /// twice alike.
    fn problems(credits: Vec<MeterCredit>, accounts: &[(String, Deposit)]) -> Vec<String> {
        let mut rep = AuditReport {
            credits: credits.clone(),
            ..AuditReport::default()
        };
        let accounts: HashMap<_, _> = accounts.iter().cloned().collect();
        reconcile_deposits(&mut rep, &accounts, &credits);
        rep.problems
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
        let after = vec![credit("a", 800, &[])];
        let mut rep = AuditReport {
            credits: before,
            ..AuditReport::default()
        };
        let accounts: HashMap<_, _> = [account("a", 0, 800)].into_iter().collect();
        reconcile_deposits(&mut rep, &accounts, &after);
        assert!(rep.problems.is_empty(), "{:?}", rep.problems);
        assert_eq!((rep.deposits_checked, rep.deposits_skipped), (0, 1));
    }
}
