//! The post office's registry (`openpsd_post::registry`) through its [`Store`], as the
//! service uses it: duplicates, conflicts (also across months, and against a piece in the
//! PostgreSQL default partition), an AR that goes back, the checks against the meter's last
//! audit, reconciliation against the credit, findings reported oldest first, two post office
//! instances recording one piece at once, and a failed transaction leaving nothing behind.
//!
//! Runs on SQLite (a fresh `post.sqlite` per test) by default. On PostgreSQL, set
//! `OPENPSD_TEST_POSTGRES` to a key=value connection string of a server the tests may
//! create databases on (each test makes its own, `openpsd_reg_<pid>_<n>`):
//!
//!     OPENPSD_TEST_POSTGRES="host=/tmp/pg user=postgres" cargo test -p openpsd-post --test registry
//!
//! or run `bash scripts/postgres-test.sh`, which starts a private server and does so.
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use openpsd_core::psd::indicium::IndiciumData;
use openpsd_core::types::{
    Amount, Date, DeviceId, KeyId, LicenseId, PieceCount, PostalCode, RateCategory,
};
use openpsd_post::registry::{self, Recorded, Series, Unreported, AUDIT_DATE_SLACK_DAYS};
use openpsd_post::store::Store;
use openpsd_protocol::post::{Finding, LastAudit, LicenseSeen};
use openpsd_service_kit::error::ApiError;

/// Databases made by this test binary so far (PostgreSQL).
static DATABASES: AtomicU32 = AtomicU32::new(0);

/// With `OPENPSD_TEST_POSTGRES`: a fresh PostgreSQL database of this test's own, its
/// connection string.
async fn fresh_postgres() -> Option<String> {
    let base = std::env::var("OPENPSD_TEST_POSTGRES").ok()?;
    if base.trim().is_empty() {
        return None;
    }
    let n = DATABASES.fetch_add(1, Ordering::SeqCst);
    let name = format!("openpsd_reg_{}_{n}", std::process::id());
    let url =
        tokio::task::spawn_blocking(move || openpsd_post::postgres::create_database(&base, &name))
            .await
            .unwrap()
            .expect("a fresh PostgreSQL database");
    Some(url)
}

/// The registry under test: `post.sqlite` in `dir`, or with `OPENPSD_TEST_POSTGRES` a
/// fresh PostgreSQL database of this test's own.
async fn store(dir: &Path) -> Store {
    match fresh_postgres().await {
        Some(url) => Store::postgres(&url).await.expect("PostgreSQL store"),
        None => Store::sqlite(dir).expect("SQLite store"),
    }
}

const LICENSE: u32 = 4711;

fn date(y: u16, m: u8, d: u8) -> Date {
    Date::new(y, m, d).unwrap()
}

/// Piece `n` of the test device's license: postage 100, AR 100·n, DR 100,000 − 100·n,
/// mailed 2026-11-29 from 10115 to 20095.
fn piece(n: u32) -> IndiciumData {
    IndiciumData {
        key_id: KeyId([0xA1, 0xB2, 0xC3, 0xD4]),
        device: DeviceId(*b"PSD\0\0\0\0\x01"),
        license: LicenseId(LICENSE),
        ar: Amount(u64::from(n) * 100),
        dr: Amount(100_000 - u64::from(n) * 100),
        pieces: PieceCount(n),
        postage: Amount(100),
        date: date(2026, 11, 29),
        rate: RateCategory(1),
        origin: PostalCode::new(b"10115").unwrap(),
        destination: PostalCode::new(b"20095").unwrap(),
    }
}

/// The same piece count with other content (another destination).
fn other_content(d: IndiciumData) -> IndiciumData {
    IndiciumData {
        destination: PostalCode::new(b"80331").unwrap(),
        ..d
    }
}

fn device_hex(d: &IndiciumData) -> String {
    hex::encode_upper(d.device.0)
}

fn key_hex(d: &IndiciumData) -> String {
    hex::encode(d.key_id.0)
}

/// Records `d` in a transaction of its own, its month's partition made first.
async fn record(store: &Store, d: IndiciumData) -> Recorded {
    record_with_days(store, d, vec![d.date.day_number()]).await
}

/// Records `d`, telling the store only `days` (PostgreSQL: no partition for a day not
/// named, so the piece lands in the month's partition if one exists, else the default).
async fn record_with_days(store: &Store, d: IndiciumData, days: Vec<u32>) -> Recorded {
    store
        .run("test", days, move |tx| {
            registry::record(tx, &d, &d.encode(), "evidence-hex", "test")
        })
        .await
        .expect("record")
}

/// What the registry holds of the test device: licenses, extra copies, findings.
async fn report(store: &Store) -> (Vec<LicenseSeen>, u64, Vec<Finding>) {
    let device = device_hex(&piece(1));
    store
        .run("test", Vec::new(), move |tx| {
            registry::report(tx, &device, "test")
        })
        .await
        .expect("report")
}

async fn findings(store: &Store) -> Vec<Finding> {
    report(store).await.2
}

/// Runs the audit check on the test device's series.
async fn check_audit(store: &Store, audit: LastAudit) -> Vec<u32> {
    let (device, key) = (device_hex(&piece(1)), key_hex(&piece(1)));
    store
        .run("test", Vec::new(), move |tx| {
            let s = Series {
                device: &device,
                key: &key,
                license: LICENSE,
            };
            registry::check_against_audit(tx, &s, &audit, "test")
        })
        .await
        .expect("check_against_audit")
}

/// Reconciles the test device's series against `credited`.
async fn reconcile(store: &Store, credited: u64) -> Vec<u32> {
    let (device, key) = (device_hex(&piece(1)), key_hex(&piece(1)));
    store
        .run("test", Vec::new(), move |tx| {
            let s = Series {
                device: &device,
                key: &key,
                license: LICENSE,
            };
            registry::reconcile(tx, &s, credited, "test")
        })
        .await
        .expect("reconcile")
}

/// The test device's findings not yet reported, oldest first.
async fn unreported(store: &Store) -> Vec<Unreported> {
    let device = device_hex(&piece(1));
    store
        .run("test", Vec::new(), move |tx| tx.unreported(&device))
        .await
        .expect("unreported")
}

/// Marks a finding reported (1) or refused for good (2).
async fn mark(store: &Store, id: i64, outcome: i64) {
    store
        .run("test", Vec::new(), move |tx| tx.mark_reported(id, outcome))
        .await
        .expect("mark_reported");
}

/// PostgreSQL only: the month partition of the scan log holding the stored content of
/// the test device's piece `n` (`None` on SQLite).
async fn partition_of(store: &Store, n: u32) -> Option<String> {
    let Store::Postgres { url, .. } = store else {
        return None;
    };
    let (url, device) = (url.to_string(), device_hex(&piece(1)));
    let name = tokio::task::spawn_blocking(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let row = c
            .query_one(
                "SELECT s.tableoid::regclass::text FROM scans s JOIN pieces p
                     ON p.device_id = s.device_id AND p.piece = s.piece AND p.digest = s.digest
                 WHERE s.device_id = $1 AND s.piece = $2 LIMIT 1",
                &[&device, &i64::from(n)],
            )
            .unwrap();
        row.get::<_, String>(0)
    })
    .await
    .unwrap();
    Some(name)
}

/// The scan log partition a piece dated `d` goes to: its month's, if the month is inside
/// the window the store makes partitions for around today (13 months back, 2 ahead), else
/// the default partition — a signed piece may carry any date, and no batch may make the
/// store create partitions without end.
fn month_partition(d: Date) -> String {
    use openpsd_post::postgres::{MONTHS_AHEAD, MONTHS_BEHIND};
    let today = openpsd_service_kit::codec::today_utc().day_number();
    let month = |day: u32| {
        let d = Date::from_unix_days(u64::from(day) + 10_957).unwrap();
        (d.year, d.month)
    };
    let m = (d.year, d.month);
    let inside = month(today.saturating_sub(MONTHS_BEHIND * 31)) <= m
        && m <= month(today + MONTHS_AHEAD * 31);
    if inside {
        format!("scans_{:04}_{:02}", d.year, d.month)
    } else {
        "scans_other".to_owned()
    }
}

fn is_conflict(r: &Recorded) -> bool {
    matches!(r, Recorded::Conflict(_))
}

/// The findings of one kind: (piece, amount).
fn of_kind(findings: &[Finding], kind: &str) -> Vec<(u32, Option<u64>)> {
    findings
        .iter()
        .filter(|f| f.kind == kind)
        .map(|f| (f.piece, f.amount))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_signed_bytes_again_is_a_duplicate_copy() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path()).await;
    assert_eq!(record(&store, piece(1)).await, Recorded::New);
    assert_eq!(record(&store, piece(1)).await, Recorded::Duplicate);
    let (licenses, duplicates, findings) = report(&store).await;
    assert_eq!(duplicates, 1, "one extra copy counted");
    assert_eq!(licenses.len(), 1);
    assert_eq!(licenses[0].license, LICENSE);
    assert_eq!(licenses[0].pieces, 1, "a copy is not another piece");
    assert!(
        findings.is_empty(),
        "a duplicate is counted, not a finding: {findings:?}"
    );
    assert_eq!(record(&store, piece(1)).await, Recorded::Duplicate);
    assert_eq!(report(&store).await.1, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_piece_count_with_other_content_is_a_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path()).await;
    assert_eq!(record(&store, piece(1)).await, Recorded::New);
    let r = record(&store, other_content(piece(1))).await;
    assert!(is_conflict(&r), "{r:?}");
    let (licenses, duplicates, findings) = report(&store).await;
    assert_eq!(of_kind(&findings, "conflict"), vec![(1, None)]);
    assert_eq!(duplicates, 0, "a conflict is not a copy");
    assert_eq!(licenses[0].pieces, 1, "the second content is not stored");
    // Seen again, the conflict is not raised twice.
    assert!(is_conflict(&record(&store, other_content(piece(1))).await));
    assert_eq!(findings.len(), report(&store).await.2.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_conflict_is_found_when_the_copies_are_dated_in_other_months() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path()).await;
    // Piece 1 mailed 2026-11-29, its other content dated a month later; piece 2 dated
    // more than a year later (a month whose partition does not exist when the store opens).
    assert_eq!(record(&store, piece(1)).await, Recorded::New);
    let later = IndiciumData {
        date: date(2026, 12, 5),
        ..piece(1)
    };
    assert!(is_conflict(&record(&store, later).await));
    assert_eq!(record(&store, piece(2)).await, Recorded::New);
    let much_later = IndiciumData {
        date: date(2028, 3, 1),
        ..piece(2)
    };
    assert!(is_conflict(&record(&store, much_later).await));
    assert_eq!(
        of_kind(&findings(&store).await, "conflict"),
        vec![(1, None), (2, None)]
    );
    if let Some(p) = partition_of(&store, 1).await {
        assert_eq!(p, month_partition(date(2026, 11, 29)));
    }
    // The other way round: the stored copy is in the later month's partition.
    let first = IndiciumData {
        date: date(2028, 3, 1),
        ..piece(3)
    };
    assert_eq!(record(&store, first).await, Recorded::New);
    if let Some(p) = partition_of(&store, 3).await {
        assert_eq!(p, month_partition(date(2028, 3, 1)));
    }
    assert!(is_conflict(&record(&store, piece(3)).await));
    assert_eq!(of_kind(&findings(&store).await, "conflict").len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_conflict_is_found_against_a_piece_dated_far_in_the_past() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path()).await;
    // Dated 2001 with no partition made for it: PostgreSQL's default partition.
    let old = IndiciumData {
        date: date(2001, 3, 15),
        ..piece(1)
    };
    assert_eq!(
        record_with_days(&store, old, Vec::new()).await,
        Recorded::New
    );
    if let Some(p) = partition_of(&store, 1).await {
        assert_eq!(p, "scans_other");
    }
    assert!(is_conflict(&record(&store, piece(1)).await));
    // The other way round: stored this month, the other copy dated 2001.
    assert_eq!(record(&store, piece(2)).await, Recorded::New);
    let old2 = IndiciumData {
        date: date(2001, 3, 16),
        ..piece(2)
    };
    assert!(is_conflict(
        &record_with_days(&store, old2, Vec::new()).await
    ));
    assert_eq!(
        of_kind(&findings(&store).await, "conflict"),
        vec![(1, None), (2, None)]
    );
    // A later batch naming March 2001: its partition cannot be made (the default one
    // holds rows of that month); the piece is still recorded, there.
    let old3 = IndiciumData {
        date: date(2001, 3, 20),
        ..piece(3)
    };
    assert_eq!(record(&store, old3).await, Recorded::New);
    if let Some(p) = partition_of(&store, 3).await {
        assert_eq!(p, "scans_other");
    }
    assert!(is_conflict(&record(&store, piece(3)).await));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ar_lower_than_an_earlier_piece_is_an_anomaly() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path()).await;
    assert_eq!(record(&store, piece(1)).await, Recorded::New);
    assert_eq!(record(&store, piece(2)).await, Recorded::New);
    // Piece 3 after postage 100 must start from piece 2's AR 200: 250 - 100 < 200.
    let back = IndiciumData {
        ar: Amount(250),
        ..piece(3)
    };
    let r = record(&store, back).await;
    assert!(matches!(r, Recorded::Anomaly(_)), "{r:?}");
    // Recorded all the same: a copy of it is a duplicate, not new.
    assert_eq!(record(&store, back).await, Recorded::Duplicate);
    assert_eq!(
        of_kind(&findings(&store).await, "ar_not_rising"),
        vec![(3, None)]
    );
    // Exactly the postage more is fine.
    let exact = IndiciumData {
        ar: Amount(350),
        ..piece(4)
    };
    assert_eq!(record(&store, exact).await, Recorded::New);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ar_above_a_later_piece_is_an_anomaly() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path()).await;
    assert_eq!(record(&store, piece(1)).await, Recorded::New);
    assert_eq!(record(&store, piece(5)).await, Recorded::New);
    // Piece 3 recorded after piece 5: 5's AR before its postage (400) must cover 3's AR.
    assert_eq!(record(&store, piece(3)).await, Recorded::New);
    let high = IndiciumData {
        ar: Amount(450),
        ..piece(4)
    };
    let r = record(&store, high).await;
    assert!(matches!(r, Recorded::Anomaly(_)), "{r:?}");
    assert_eq!(
        of_kind(&findings(&store).await, "ar_not_rising"),
        vec![(4, None)]
    );
}

/// Pieces 1..=10 mailed on `day` − 5, then the audit at piece 10 accepted on `day`.
async fn audited(store: &Store) -> u32 {
    let day = date(2026, 11, 29).day_number();
    for n in 1..=10 {
        let d = IndiciumData {
            date: date(2026, 11, 24),
            ..piece(n)
        };
        assert_eq!(record(store, d).await, Recorded::New);
    }
    day
}

#[tokio::test(flavor = "multi_thread")]
async fn a_piece_counted_after_the_audit_but_dated_before_it_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path()).await;
    let day = audited(&store).await;
    let audit = LastAudit {
        pieces: 10,
        ar: 1000,
        day,
    };
    // Piece 11 dated the audit day, piece 12 dated the slack's days before (a host west of
    // UTC dating a piece a day back), piece 13 one day more: only 13 is out of line.
    assert_eq!(record(&store, piece(11)).await, Recorded::New);
    assert_eq!(
        AUDIT_DATE_SLACK_DAYS, 2,
        "a day of time zone + MAX_DAYS_BEHIND"
    );
    let within = IndiciumData {
        date: date(2026, 11, 27),
        ..piece(12)
    };
    assert_eq!(record(&store, within).await, Recorded::New);
    assert_eq!(check_audit(&store, audit).await, Vec::<u32>::new());
    let two_days = IndiciumData {
        date: date(2026, 11, 26),
        ..piece(13)
    };
    assert_eq!(record(&store, two_days).await, Recorded::New);
    assert_eq!(check_audit(&store, audit).await, vec![13]);
    let found = findings(&store).await;
    assert_eq!(of_kind(&found, "dated_before_audit"), vec![(13, None)]);
    assert_eq!(found.len(), 1, "{found:?}");
    // Pieces counted at or before the audit may be dated before it.
    assert_eq!(of_kind(&found, "ar_above_audit"), vec![]);
    // Run again: nothing new.
    assert_eq!(check_audit(&store, audit).await, Vec::<u32>::new());
    assert_eq!(findings(&store).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ar_above_the_audit_before_it_is_found_with_the_amount() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path()).await;
    let day = audited(&store).await;
    assert_eq!(record(&store, piece(11)).await, Recorded::New);
    // The audit said AR 1000 at piece 10: consistent.
    let honest = LastAudit {
        pieces: 10,
        ar: 1000,
        day,
    };
    assert_eq!(check_audit(&store, honest).await, Vec::<u32>::new());
    // It said 930 at piece 10, whose AR is 1000: 70 used and not reported. Piece 11's
    // higher AR was counted after the audit and is not held against it.
    let short = LastAudit {
        pieces: 10,
        ar: 930,
        day,
    };
    assert_eq!(check_audit(&store, short).await, vec![10]);
    assert_eq!(
        of_kind(&findings(&store).await, "ar_above_audit"),
        vec![(10, Some(70))]
    );
    assert_eq!(check_audit(&store, short).await, Vec::<u32>::new());
    assert_eq!(findings(&store).await.len(), 1);
}

/// Pieces 1..=3: AR 100, 200, 300; DR 900, 850 (after a refill of 50), 700; so AR + DR is
/// highest (1050) at piece 2 and AR at piece 3.
async fn three_pieces(store: &Store) {
    for (n, dr) in [(1, 900), (2, 850), (3, 700)] {
        let d = IndiciumData {
            dr: Amount(dr),
            ..piece(n)
        };
        assert_eq!(record(store, d).await, Recorded::New);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn reconcile_within_the_credit_finds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path()).await;
    three_pieces(&store).await;
    assert_eq!(reconcile(&store, 1050).await, Vec::<u32>::new());
    assert!(findings(&store).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn registers_above_the_credit_are_found_with_the_excess() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path()).await;
    three_pieces(&store).await;
    // AR (300) within 1000, AR + DR (1050 at piece 2) above it.
    assert_eq!(reconcile(&store, 1000).await, vec![2]);
    let found = findings(&store).await;
    assert_eq!(
        of_kind(&found, "registers_exceed_credit"),
        vec![(2, Some(50))]
    );
    assert_eq!(of_kind(&found, "unpaid_postage"), vec![]);
    assert_eq!(reconcile(&store, 1000).await, Vec::<u32>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn postage_used_above_the_credit_is_unpaid_with_the_amount() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path()).await;
    three_pieces(&store).await;
    assert_eq!(reconcile(&store, 250).await, vec![3]);
    let found = findings(&store).await;
    assert_eq!(of_kind(&found, "unpaid_postage"), vec![(3, Some(50))]);
    // The unpaid postage says it all: no registers_exceed_credit besides.
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(reconcile(&store, 250).await, Vec::<u32>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn unreported_findings_come_back_oldest_first_until_marked() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path()).await;
    assert_eq!(record(&store, piece(1)).await, Recorded::New);
    assert!(is_conflict(&record(&store, other_content(piece(1))).await));
    let back = IndiciumData {
        ar: Amount(150),
        ..piece(2)
    };
    assert!(matches!(record(&store, back).await, Recorded::Anomaly(_)));
    assert_eq!(reconcile(&store, 100).await, vec![2]);

    let kinds = |rows: &[Unreported]| rows.iter().map(|r| r.2.clone()).collect::<Vec<_>>();

    let rows = unreported(&store).await;
    assert_eq!(
        kinds(&rows),
        ["conflict", "ar_not_rising", "unpaid_postage"]
    );
    assert!(rows.windows(2).all(|w| w[0].0 < w[1].0), "{rows:?}");
    assert!(rows.iter().all(|r| r.1 == LICENSE));
    // The same answer until something is marked.
    assert_eq!(unreported(&store).await, rows);
    // The meter has the second; refused the first for good.
    mark(&store, rows[1].0, 1).await;
    assert_eq!(
        kinds(&unreported(&store).await),
        ["conflict", "unpaid_postage"]
    );
    mark(&store, rows[0].0, 2).await;
    assert_eq!(kinds(&unreported(&store).await), ["unpaid_postage"]);
    let reported: Vec<bool> = findings(&store).await.iter().map(|f| f.reported).collect();
    assert_eq!(reported, [false, true, false], "refused is not reported");
    mark(&store, rows[2].0, 1).await;
    assert!(unreported(&store).await.is_empty());
    // Another device's findings are its own.
    let other = store
        .run("test", Vec::new(), |tx| tx.unreported("PSD0000000000002"))
        .await
        .unwrap();
    assert!(other.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_recording_one_piece_at_once_give_one_new_and_one_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let one = store(dir.path()).await;
    let two = match &one {
        Store::Postgres { url, .. } => Store::postgres(url).await.expect("a second instance"),
        Store::Sqlite(_) => {
            // SQLite: one instance per file (a second one is refused); its requests share
            // the one connection.
            let refused = Store::sqlite(dir.path());
            assert!(refused.is_err(), "a second SQLite instance must be refused");
            one.clone()
        }
    };
    const ROUNDS: u32 = 20;
    for n in 1..=ROUNDS {
        // The other content dated in the next month: on PostgreSQL another partition, so
        // only the registry's own check under the device's lock keeps them apart.
        let a = piece(n);
        let b = IndiciumData {
            date: date(2026, 12, 1),
            ..other_content(a)
        };
        let (ra, rb) = tokio::join!(record(&one, a), record(&two, b));
        let new = [&ra, &rb].iter().filter(|r| ***r == Recorded::New).count();
        let conflicts = [&ra, &rb].iter().filter(|r| is_conflict(r)).count();
        assert_eq!((new, conflicts), (1, 1), "round {n}: {ra:?} and {rb:?}");
    }
    let (licenses, duplicates, found) = report(&one).await;
    assert_eq!(licenses[0].pieces, u64::from(ROUNDS));
    assert_eq!(duplicates, 0);
    assert_eq!(of_kind(&found, "conflict").len(), ROUNDS as usize);
    assert_eq!(found.len(), ROUNDS as usize, "{found:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_starting_together_on_a_fresh_registry_both_start() {
    // PostgreSQL only: SQLite refuses a second instance (above).
    let Some(url) = fresh_postgres().await else {
        return;
    };
    let (one, two) = tokio::join!(Store::postgres(&url), Store::postgres(&url));
    let (one, two) = (one.expect("first instance"), two.expect("second instance"));
    // Both naming the same months at once (each month inside the window gets its
    // partition once; those beyond it none: the default partition takes them).
    let today = openpsd_service_kit::codec::today_utc().day_number();
    for back in 0..24 {
        let day = today.saturating_sub(back * 30);
        let (a, b) = tokio::join!(
            one.run("test", vec![day], |_| Ok(())),
            two.run("test", vec![day], |_| Ok(()))
        );
        a.expect("first instance, new month");
        b.expect("second instance, new month");
    }
    let d = IndiciumData {
        date: date(2031, 6, 1),
        ..piece(1)
    };
    assert_eq!(record(&one, d).await, Recorded::New);
    assert_eq!(record(&two, d).await, Recorded::Duplicate);
    assert_eq!(
        partition_of(&one, 1).await.unwrap(),
        month_partition(date(2031, 6, 1))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_transaction_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path()).await;
    let (d, other) = (piece(1), other_content(piece(1)));
    let out = store
        .run("test", vec![d.date.day_number()], move |tx| {
            assert_eq!(
                registry::record(tx, &d, &d.encode(), "evidence-hex", "test")?,
                Recorded::New
            );
            assert!(is_conflict(&registry::record(
                tx,
                &other,
                &other.encode(),
                "evidence-hex",
                "test"
            )?));
            Err::<(), _>(ApiError::internal("test", "abandoned"))
        })
        .await;
    assert_eq!(out.unwrap_err().message, "abandoned");
    let (licenses, duplicates, found) = report(&store).await;
    assert!(licenses.is_empty(), "{licenses:?}");
    assert_eq!(duplicates, 0);
    assert!(found.is_empty(), "{found:?}");
    // The other content is the first seen now.
    assert_eq!(record(&store, other).await, Recorded::New);
    assert_eq!(record(&store, other).await, Recorded::Duplicate);
}
