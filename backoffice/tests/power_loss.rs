//! Power loss, not just process death: the meter server, KMS and recharging center keep
//! their SQLite files on a simulated disk (`openpsd_sqlite::crash_vfs`) that forgets what
//! was not fsynced. The power is cut at every sync of two refills (and of the clean
//! restart between them, whose checkpoints sync too); the services come back from what
//! survived (the last synced content plus a seeded part of the rest, torn at sectors) and
//! the host finishes the same refills. Afterwards: every refill terminal, no hold open,
//! Σ applied = Σ control sums (baselines are zero), deposited = available + held + debited,
//! and every combination the KMS sealed is one the recharging center made.
//!
//! `kill -9` (kill9.rs) keeps the page cache, so it would pass without a single fsync;
//! this test does not. `OPENPSD_POWER_SEEDS=n` runs n seeds per cut point (default 1),
//! `OPENPSD_POWER_SEED=s` the first seed (default 0), to replay or widen by hand.
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{kms_public_key_in, parties_again, Admin, Customers, Host, Psd, Refused};
use openpsd_backoffice::server::{self, DEFAULT_RATE};
use openpsd_core::Status;
use openpsd_protocol::RefillView;
use openpsd_service_kit::pki::Pki;
use openpsd_service_kit::Service;
use openpsd_sqlite::crash_vfs::{self, Disk};

/// The three services of a refill, on one machine (one disk, one power supply).
struct Stack {
    rc: Service,
    kms: Service,
    meter: Service,
}

impl Stack {
    async fn start(dir: &Path, pki: &Pki) -> Stack {
        let rc = server::start_recharge(&dir.join("recharge"), "127.0.0.1:0", pki, DEFAULT_RATE)
            .await
            .expect("the recharging center starts");
        let rc_key = openpsd_kms::read_public_key(&openpsd_recharge::Recharge::public_key_path(
            &dir.join("recharge"),
        ))
        .expect("the RC's public key");
        let kms = server::start_kms(
            &dir.join("kms"),
            "127.0.0.1:0",
            rc_key,
            None,
            pki,
            DEFAULT_RATE,
        )
        .await
        .expect("the KMS starts");
        let meter = server::start_meter(
            &dir.join("meter"),
            "127.0.0.1:0",
            [&kms.url, &rc.url],
            None,
            [None, None],
            pki,
            DEFAULT_RATE,
        )
        .await
        .expect("the meter starts");
        Stack { rc, kms, meter }
    }

    fn parties(&self, pki: &Pki, customers: &Customers) -> (Host, Admin) {
        parties_again(&self.meter.url, &self.kms.url, &self.rc.url, pki, customers)
    }

    async fn stop(self) {
        self.meter.stop().await;
        self.kms.stop().await;
        self.rc.stop().await;
    }
}

/// One machine under test: its directory, disk, PKI and services.
struct Machine {
    dir: tempfile::TempDir,
    disk: Arc<Disk>,
    pki: Pki,
    customers: Customers,
    stack: Option<Stack>,
    host: Host,
    admin: Admin,
    /// Power cuts survived, and what the disk kept of the unsynced writes.
    cuts: u32,
    recovered: crash_vfs::Recovered,
}

impl Machine {
    async fn boot() -> Machine {
        let dir = tempfile::tempdir().expect("tempdir");
        let disk = Disk::new(dir.path()).expect("the crash VFS");
        let pki = server::local_pki(dir.path()).expect("PKI");
        let customers = Customers::default();
        let stack = Stack::start(dir.path(), &pki).await;
        let (host, admin) = stack.parties(&pki, &customers);
        Machine {
            dir,
            disk,
            pki,
            customers,
            stack: Some(stack),
            host,
            admin,
            cuts: 0,
            recovered: crash_vfs::Recovered::default(),
        }
    }

    /// Stops the services (cleanly if the power is on; their connections close either way),
    /// brings the disk back from a cut if there was one, and starts them again.
    async fn restart(&mut self, seed: u64) {
        if let Some(stack) = self.stack.take() {
            stack.stop().await;
        }
        if self.disk.is_off() {
            let r = self.recover(seed).await;
            self.cuts += 1;
            self.recovered.kept += r.kept;
            self.recovered.dropped += r.dropped;
            self.recovered.torn += r.torn;
        }
        let stack = Stack::start(self.dir.path(), &self.pki).await;
        (self.host, self.admin) = stack.parties(&self.pki, &self.customers);
        self.stack = Some(stack);
    }

    /// The services' connections close on blocking-pool threads: wait for the last.
    async fn recover(&self, seed: u64) -> crash_vfs::Recovered {
        for _ in 0..200 {
            match self.disk.recover(seed) {
                Ok(r) => return r,
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            }
        }
        panic!("{}", self.disk.recover(seed).unwrap_err());
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        crash_vfs::forget(&self.disk);
    }
}

/// A call failed because the power went: what the host sees of a dead machine.
fn lost(e: &Refused) -> bool {
    e.status >= 500 || e.code == "transport"
}

/// Drives refill `txn` to a terminal state from wherever it stands, as a host retrying with
/// the same transaction ID does. `Err` when a call failed (the power is off).
async fn finish(
    m: &Machine,
    psd: &mut Psd,
    txn: &str,
    amount: u64,
    audit: &mut Option<String>,
) -> Result<RefillView, Refused> {
    let dev = psd.device_id();
    let mut v = m.host.request(txn, &dev, 0, "acme", amount).await?;
    loop {
        match v.state.as_str() {
            "completed" | "released" => return Ok(v),
            "awaiting_audit" | "audit_accepted" => {
                // The same audit again, so a retry is the same request.
                let a = audit.get_or_insert_with(|| psd.audit(0, &v.nonce)).clone();
                v = m.host.audit(txn, &a).await?;
            }
            "message_issued" => {
                let message = v.refill_message.as_deref().expect("a refill message");
                match psd.refill(0, message) {
                    // Applied now, or by an attempt before the cut.
                    Ok(_) | Err(Status::RefillReplayed) => {}
                    Err(e) => panic!("{txn}: REFILL refused: {e:?} ({v:?})"),
                }
                match psd.receipt(v.receipt.as_deref().expect("a receipt")) {
                    Ok(_) | Err(Status::ReceiptForOtherAudit) => {}
                    Err(e) => panic!("{txn}: RECEIPT refused: {e:?}"),
                }
                let a = psd.audit(0, v.confirm_nonce.as_deref().expect("a confirm nonce"));
                v = m.host.confirm(txn, &a).await?;
            }
            other => panic!("{txn}: unexpected state {other}: {v:?}"),
        }
    }
}

/// The refills of one run, a clean restart (checkpoints) between them.
const REFILLS: [(&str, u64); 2] = [("p1", 2_500), ("p2", 1_000)];

/// One run: setup, arm a cut at sync `cut` (or none), the refills with retries across power
/// cycles, then the invariants. Returns the syncs the armed part made.
async fn run(n: u32, cut: Option<u64>, seed: u64) -> (u64, u32, crash_vfs::Recovered) {
    let mut m = Machine::boot().await;
    let mut psd = Psd::new(n, 0, &kms_public_key_in(&m.dir.path().join("kms")));
    m.admin.register(&psd).await;
    m.admin.fund("acme", 100_000).await;
    let start = m.disk.syncs();
    if let Some(c) = cut {
        m.disk.cut_at_sync(c);
    }
    for (i, (txn, amount)) in REFILLS.iter().enumerate() {
        if i > 0 {
            // A clean restart: the last connection's close checkpoints the WAL (syncs).
            m.restart(seed).await;
        }
        let mut audit = None;
        let mut tries = 0;
        loop {
            let before = m.disk.syncs();
            match finish(&m, &mut psd, txn, *amount, &mut audit).await {
                Ok(v) => {
                    assert!(
                        ["completed", "released"].contains(&v.state.as_str()),
                        "{v:?}"
                    );
                    break;
                }
                Err(e) if lost(&e) && m.disk.is_off() => {
                    tries += 1;
                    assert!(tries < 3, "{txn}: cut again after recovery: {e:?}");
                    m.restart(seed).await;
                }
                Err(e) => panic!(
                    "{txn}: refused with the power on ({} syncs into the step): {e:?}",
                    m.disk.syncs() - before
                ),
            }
        }
    }
    // Without a cut (no recovery reset the count): the sync points of the armed part.
    let syncs = if cut.is_none() {
        m.disk.syncs() - start
    } else {
        0
    };
    // Every refill terminal, and the ledger reconciles with the card.
    for (txn, _) in REFILLS {
        let s = m.host.status(txn).await.unwrap().state;
        assert!(s == "completed" || s == "released", "{txn}: {s}");
    }
    let l = m.admin.assert_reconciled(&mut [&mut psd]).await;
    assert_eq!(l.held, 0);
    // Sealed ⊆ made: read both databases once the services are stopped.
    let stack = m.stack.take().expect("running");
    stack.stop().await;
    let made = ids(
        &m.dir
            .path()
            .join("recharge")
            .join(openpsd_recharge::DB_FILE),
        "SELECT combination_id FROM combinations UNION \
         SELECT void_combination_id FROM combinations WHERE void_combination_id IS NOT NULL",
    );
    let sealed = ids(
        &m.dir.path().join("kms").join(openpsd_kms::DB_FILE),
        "SELECT combination_id FROM refill_messages",
    );
    assert!(!sealed.is_empty());
    for s in &sealed {
        assert!(
            made.contains(s),
            "the KMS sealed {s}, which the RC never made"
        );
    }
    (syncs, m.cuts, m.recovered)
}

fn ids(db: &Path, sql: &str) -> std::collections::BTreeSet<String> {
    let c = rusqlite::Connection::open(db).expect("the database");
    let mut stmt = c.prepare(sql).expect("query");
    stmt.query_map([], |r| r.get::<_, String>(0))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("ids")
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread")]
async fn power_cut_at_every_sync_of_two_refills_then_finish_them() {
    let t0 = std::time::Instant::now();
    // A run without a cut counts the sync points.
    let (points, cuts, _) = run(1, None, 0).await;
    assert_eq!(cuts, 0);
    assert!(points >= 10, "only {points} syncs in two refills");
    let seeds = env_u64("OPENPSD_POWER_SEEDS", 1);
    let first = env_u64("OPENPSD_POWER_SEED", 0);
    let mut total = crash_vfs::Recovered::default();
    let mut runs = 0;
    let mut cut_runs = 0;
    for cut in 0..points {
        for seed in first..first + seeds {
            let (_, cuts, r) = run(1, Some(cut), seed).await;
            assert!(cuts <= 1, "cut {cut} seed {seed}: {cuts} cuts");
            cut_runs += u32::from(cuts == 1);
            total.kept += r.kept;
            total.dropped += r.dropped;
            total.torn += r.torn;
            runs += 1;
        }
    }
    // The flow is the same every run: every armed cut fires (a few syncs may move with timing).
    assert!(
        cut_runs * 10 >= runs * 9,
        "only {cut_runs} of {runs} runs were cut"
    );
    eprintln!(
        "power loss: {points} cut points × {seeds} seed(s) = {runs} runs ({cut_runs} cut) in \
         {:.1} s; unsynced writes kept {}, dropped {}, torn {}",
        t0.elapsed().as_secs_f64(),
        total.kept,
        total.dropped,
        total.torn
    );
}
