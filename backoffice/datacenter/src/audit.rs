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
//! that mailer is under way. `backoffice datacenter audit --rc URL` reads the accounts, then
//! the refills again ([`read_refills`], a light read: two queries on the refill rows, no
//! record walked or verified) to leave out a mailer whose refill moved meanwhile.

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
/// compared (counted in `deposits_skipped`). Its credit by the records moves only with a
/// row reaching `applied` (committed together), so the rows' figures move whenever the
/// credit or a refill under way does, and the records need not be walked again. For the
/// others, the recharging center was read while the mailer's refills stood still, so:
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
    for c in &rep.credits {
        // Both reads keyed alike (the mailer the record names): a mailer with no refill row
        // in either read is unmoved.
        if rep.refills.get(&c.mailer_id) != again.get(&c.mailer_id) {
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

/// The light second read of `backoffice datacenter audit --rc`: each mailer's refills
/// ([`MailerRefills`]), by mailer, from the refill rows alone, for [`reconcile_deposits`]
/// to find the mailers whose refill moved since [`audit`]. Two queries in one snapshot, no
/// transaction record read: the first counts the rows per mailer and sums those `applied` or
/// `settled` (one row per refill ever made, far fewer than the records, and nothing to
/// verify), the second reads the rows under way (a few). Blocking.
pub fn read_refills(db: &Database) -> anyhow::Result<BTreeMap<String, MailerRefills>> {
    db.read(refills_in)
}

/// The states of a refill not finished yet ([`UnderWay`]).
const UNDER_WAY: &str = "('requested', 'held', 'sealed', 'voiding', 'voided', 'applied')";

/// [`read_refills`] on connection `c` (in its snapshot).
fn refills_in(c: &mut Conn<'_>) -> anyhow::Result<BTreeMap<String, MailerRefills>> {
    let mut out: BTreeMap<String, MailerRefills> = BTreeMap::new();
    // CAST: PostgreSQL widens SUM(BIGINT) to NUMERIC (crate::sql). Every row counted: a
    // refill begun and released between two reads leaves only its row behind.
    for row in c
        .rows(
            "audit",
            "SELECT mailer_id, COUNT(*),
                    CAST(SUM(CASE WHEN state IN ('applied', 'settled') THEN amount ELSE 0 END) AS BIGINT)
             FROM refills GROUP BY mailer_id",
            args![],
        )
        .map_err(api)?
    {
        let r = out.entry(row.text(0).map_err(api)?).or_default();
        r.rows = u64::try_from(row.int(1).map_err(api)?).unwrap_or(0);
        r.credited = u64::try_from(row.int(2).map_err(api)?).unwrap_or(0);
    }
    for row in c
        .rows(
            "audit",
            &format!(
                "SELECT mailer_id, client_txn_id, state, amount FROM refills
                 WHERE state IN {UNDER_WAY} ORDER BY mailer_id, client_txn_id"
            ),
            args![],
        )
        .map_err(api)?
    {
        out.entry(row.text(0).map_err(api)?)
            .or_default()
            .under_way
            .push(UnderWay {
                client_txn_id: row.text(1).map_err(api)?,
                state: row.text(2).map_err(api)?,
                amount: u64::try_from(row.int(3).map_err(api)?).unwrap_or(0),
            });
    }
    Ok(out)
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
    // The refills in the walk's snapshot: the meters' refills under way, and what the
    // light second read of `--rc` is compared with.
    rep.refills = refills_in(c)?;
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
            refills: refills_in(&mut Conn::Lite(c)).unwrap(),
            ..AuditReport::default()
        }
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
        let again = refills_in(&mut Conn::Lite(&mut c)).unwrap();
        // `b` debited 50 more than its records credited: compared, so reported.
        let accounts: HashMap<_, _> = [account("a", 300, 500), account("b", 0, 250)]
            .into_iter()
            .collect();
        reconcile_deposits(&mut rep, &accounts, &again);
        assert_eq!((rep.deposits_checked, rep.deposits_skipped), (2, 0));
        assert!(
            rep.problems.len() == 1 && rep.problems[0].contains("vm-b"),
            "{:?}",
            rep.problems
        );
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
        let accounts: HashMap<_, _> = [account("a", 0, 800), account("b", 0, 200)]
            .into_iter()
            .collect();
        let again = refills_in(&mut Conn::Lite(&mut c)).unwrap();
        reconcile_deposits(&mut rep, &accounts, &again);
        assert!(
            rep.problems.is_empty(),
            "no false alarm: {:?}",
            rep.problems
        );
        assert_eq!((rep.deposits_checked, rep.deposits_skipped), (1, 1));

        // A refill of `b` made from start to end between the reads: never under way in
        // either, but its credit moved the rows' sum.
        let mut c = ledger();
        let mut rep = first_read(&mut c);
        add_refill(&c, "b", "00000000000000b2", 100, "settled");
        let accounts: HashMap<_, _> = [account("a", 300, 500), account("b", 0, 300)]
            .into_iter()
            .collect();
        let again = refills_in(&mut Conn::Lite(&mut c)).unwrap();
        reconcile_deposits(&mut rep, &accounts, &again);
        assert!(
            rep.problems.is_empty(),
            "no false alarm: {:?}",
            rep.problems
        );
        assert_eq!((rep.deposits_checked, rep.deposits_skipped), (1, 1));
    }

    #[test]
    fn the_light_read_finds_a_refill_begun_and_released_between_the_reads() {
        // A refill of `b` begun after the walk, held at the recharging center when it was
        // read, then released (the KMS refused it) before the second read: under way in
        // neither read, nothing credited, but the hold was real when the account was read.
        let mut c = ledger();
        let mut rep = first_read(&mut c);
        add_refill(&c, "b", "00000000000000b2", 100, "released");
        let accounts: HashMap<_, _> = [account("a", 300, 500), account("b", 100, 200)]
            .into_iter()
            .collect();
        let again = refills_in(&mut Conn::Lite(&mut c)).unwrap();
        reconcile_deposits(&mut rep, &accounts, &again);
        assert!(
            rep.problems.is_empty(),
            "no false alarm: {:?}",
            rep.problems
        );
        assert_eq!((rep.deposits_checked, rep.deposits_skipped), (1, 1));
    }
}
