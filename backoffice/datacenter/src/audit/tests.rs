//! Unit tests of the auditor: the deposit comparison and its re-check, the light read, the
//! refill rows against the records, and absurd amounts on SQLite ledgers made here.

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
fn a_row_made_applied_does_not_excuse_credit_the_recharging_center_neither_debited_nor_holds() {
    // The box credited 800, the recharging center debited 500 and holds nothing: 300 nobody
    // paid for. An edited (unsigned) row in `applied` of 300 must not excuse it: a refill
    // really in its last step is still held at the recharging center or already debited.
    let p = problems(
        vec![credit("a", 800, &[("applied", 300)])],
        &[account("a", 0, 500)],
    );
    assert!(p.len() == 1 && p[0].contains("debited vm-a 500"), "{p:?}");
    // Held only in part: only what is held excuses.
    let p = problems(
        vec![credit("a", 800, &[("applied", 300)])],
        &[account("a", 100, 500)],
    );
    assert!(p.iter().any(|p| p.contains("debited vm-a 500")), "{p:?}");
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
fn rec(sequence: u64, kind: u8, amount: u64, ar: u64, dr: u64, pieces: u32) -> TransactionRecord {
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
