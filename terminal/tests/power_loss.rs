//! The merchant terminal's batch (SQLite) under power loss: the terminal's database on the
//! crash VFS (`openpsd_sqlite::crash_vfs`), the power cut at every sync of three payments;
//! the terminal re-opened from what survived pays again with the same card and amount.
//! Afterwards the batch holds each payment once and its total is exactly what the purse
//! lost: no debit of the card is missing from the batch, none is there twice.
//! `OPENPSD_POWER_SEEDS=n`: n seeds per cut point (default 1).
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use card_sim::issuer::{self, PurseRequest};
use card_sim::os_platform::{Clock, OsPlatform};
use card_sim::personalize::Request;
use card_sim::scheme::Scheme;
use card_sim::sim::{self, FileCard};
use openpsd_core::client::transfer::{self as driver};
use openpsd_core::types::*;
use openpsd_sqlite::crash_vfs::{self, Disk};
use openpsd_terminal::Terminal;

const PIN: &[u8] = b"2468";
const PAYS: u64 = 3;

fn date() -> Date {
    Date::new(2026, 11, 21).unwrap()
}

fn link(dir: &Path) -> FileCard {
    sim::open_file_card(dir, Clock::System).unwrap()
}

/// A scheme, a funded PSD, and a purse holding 1,000 (as tests/terminal.rs sets up).
fn setup(dir: &Path) -> Scheme {
    let scheme = Scheme::generate(Some(7), &mut OsPlatform::default());
    let mut psd = sim::create_file_card(&dir.join("psd"), Clock::System).unwrap();
    let kms = openpsd_core::crypto::IndiciumKey::from_bytes(&[0x11; 32]).unwrap();
    let req = Request {
        device: Some(DeviceId(*b"PSDTERM1")),
        ..Request::new(kms.public_key())
    };
    issuer::personalize_and_fund(
        &mut psd,
        &mut OsPlatform::default(),
        &req,
        &kms,
        Some((&scheme, 5)),
        Amount(100_000),
    )
    .unwrap();
    drop(psd);
    let mut card = sim::create_file_card(&dir.join("purse"), Clock::System).unwrap();
    let req = PurseRequest {
        card: Some(CardId(*b"PURSE001")),
        pin: zeroize::Zeroizing::new(PIN.to_vec()),
        max_balance: Amount(50_000),
        max_transfer: Amount(10_000),
        pin_tries: 3,
        max_failures: 5,
    };
    issuer::personalize_purse(&mut card, &mut OsPlatform::default(), &scheme, &req).unwrap();
    drop(card);
    driver::transfer(
        &mut link(&dir.join("psd")),
        &mut link(&dir.join("purse")),
        RegisterSetIndex(0),
        Amount(1_000),
        PIN,
    )
    .unwrap();
    scheme
}

fn balance(dir: &Path) -> u64 {
    driver::purse_info(&mut link(dir))
        .unwrap()
        .unwrap()
        .balance
        .0
}

/// One run: three payments of 100 with the power cut at sync `cut` (or none); the syncs the
/// payments made and whether a cut happened.
fn run(cut: Option<u64>, seed: u64) -> (u64, bool) {
    let dir = tempfile::tempdir().unwrap();
    let scheme = setup(dir.path());
    let purse = dir.path().join("purse");
    let term_dir = dir.path().join("terminal");
    std::fs::create_dir(&term_dir).unwrap();
    let db = term_dir.join("terminal.db");
    let disk = Disk::new(&term_dir).unwrap();
    let mut t = Terminal::init(
        &db,
        TerminalId(*b"TERM0001"),
        scheme.id,
        scheme.issuer_key.public_key(),
    )
    .unwrap();
    let start = disk.syncs();
    if let Some(c) = cut {
        disk.cut_at_sync(c);
    }
    let mut cuts = 0;
    for i in 0..PAYS {
        loop {
            match t.pay(&mut link(&purse), Amount(100), date(), PIN) {
                Ok(p) => {
                    assert_eq!(p.balance_after, 1_000 - 100 * (i + 1), "pay {i}: {p:?}");
                    break;
                }
                Err(e) if disk.is_off() => {
                    cuts += 1;
                    assert!(cuts < 2, "cut again after recovery: {e}");
                    drop(t);
                    disk.recover(seed).unwrap();
                    t = Terminal::open(&db).unwrap();
                }
                Err(e) => panic!("pay {i} refused with the power on: {e}"),
            }
        }
    }
    let syncs = if cut.is_none() {
        disk.syncs() - start
    } else {
        0
    };
    let b = t.batch(None).unwrap();
    assert_eq!(balance(&purse), 1_000 - 100 * PAYS);
    assert_eq!(
        (b.count, b.total),
        (PAYS, 100 * PAYS),
        "cut {cut:?} seed {seed}"
    );
    drop(t);
    crash_vfs::forget(&disk);
    (syncs, cuts == 1)
}

#[test]
fn power_cut_at_every_sync_of_three_payments_then_pay_again() {
    let t0 = std::time::Instant::now();
    let (points, _) = run(None, 0);
    assert!(points >= PAYS, "only {points} syncs in {PAYS} payments");
    let seeds: u64 = std::env::var("OPENPSD_POWER_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let mut cut_runs = 0;
    for cut in 0..points {
        for seed in 0..seeds {
            cut_runs += u64::from(run(Some(cut), seed).1);
        }
    }
    assert_eq!(cut_runs, points * seeds, "every armed cut fires");
    eprintln!(
        "terminal power loss: {points} cut points × {seeds} seed(s) in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}
