//! Refills per second end to end (issue 4, item 6): host ↔ meter server ↔ KMS ↔
//! recharging center, all on loopback in this process, with in-process PSD cards. For 1, 8
//! and 64 concurrent devices it runs the whole flow (request, AUDIT, audit, REFILL, RECEIPT,
//! AUDIT, confirm) and prints refills/s and p50/p99 latency, then checks that the ledger
//! balances to the cent against the cards' control sums.
//!
//! ```sh
//! cargo bench -p openpsd-backoffice --bench refill -- --refills 512
//! cargo bench -p openpsd-backoffice --bench refill -- --concurrency 1,8,64 --dir /some/disk
//! ```
//!
//! Every commit is fsynced (WAL, `synchronous=FULL`), so the figures depend on the disk
//! under `--dir` (default: the system temp directory).
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{parties, Psd};

struct Args {
    refills: usize,
    concurrency: Vec<usize>,
    dir: Option<std::path::PathBuf>,
}

fn args() -> Args {
    let mut a = Args {
        refills: 512,
        concurrency: vec![1, 8, 64],
        dir: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--refills" => a.refills = it.next().and_then(|v| v.parse().ok()).expect("--refills N"),
            "--concurrency" => {
                a.concurrency = it
                    .next()
                    .map(|v| v.split(',').filter_map(|x| x.parse().ok()).collect())
                    .expect("--concurrency 1,8,64")
            }
            "--dir" => a.dir = it.next().map(Into::into),
            "--help" | "-h" => {
                println!(
                    "refill benchmark: [--refills N (per level, default 512)] \
                     [--concurrency 1,8,64] [--dir DIR (SQLite files; default: temp dir)]"
                );
                std::process::exit(0);
            }
            // `cargo bench` passes --bench; filters are not used.
            _ => {}
        }
    }
    a
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    // why: `p` is a percentage (50 or 99), so the rank is in 0..=len, clamped below (and a
    // float-to-integer cast saturates, never wraps).
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let args = args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(args));
}

async fn run(args: Args) {
    let tmp = match &args.dir {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .expect("data directory");
    // Mutual TLS between the services and to the host, customers logged in, every route's
    // access list checked; the per-customer rate limit is raised out of the way (it is a
    // policy, not a cost: the default would hold one device to 100 requests/s).
    let pki = openpsd_backoffice::server::local_pki(tmp.path()).expect("PKI");
    let handles =
        openpsd_backoffice::server::spawn_all_on(tmp.path(), &pki, ["127.0.0.1:0"; 3], 1_000_000)
            .await
            .expect("services start");
    let (mut host, admin) = parties(
        &handles.meter.url,
        &handles.kms.url,
        &handles.recharge.url,
        &pki,
    );
    // Connections kept open, as a host and the services do.
    host.meter = common::Client::with_pool(&handles.meter.url, &pki, None, 256);
    println!(
        "refill benchmark: {} refills per level, data in {}",
        args.refills,
        tmp.path().display()
    );
    println!(
        "{:>8} {:>8} {:>10} {:>10} {:>10} {:>10}",
        "devices", "refills", "refills/s", "p50 ms", "p99 ms", "max ms"
    );

    let mut all_cards: Vec<Psd> = Vec::new();
    let mut expected_debit: u64 = 0;
    let mut next_card = 1000u32;
    for &c in &args.concurrency {
        let per_device = args.refills.div_ceil(c.max(1));
        let mut cards = Vec::new();
        for _ in 0..c {
            let psd = Psd::new(next_card, 0, &handles.kms_public_key);
            admin.register_to(&psd, &format!("bench-{next_card}")).await;
            admin
                .fund(&format!("bench-{next_card}"), 1_000_000_000)
                .await;
            next_card += 1;
            cards.push(psd);
        }
        let local = tokio::task::LocalSet::new();
        let (cards, latencies, wall, debit) = local
            .run_until(async {
                // Warm-up: one refill per device (first contact: the meter learns the
                // device from the KMS, connections open).
                let mut tasks = Vec::new();
                for mut psd in cards {
                    let host = host.clone();
                    tasks.push(tokio::task::spawn_local(async move {
                        let acct = account_of(&psd);
                        let txn = format!("{}-warm", psd.device_id());
                        host.refill(&mut psd, &txn, &acct, 100)
                            .await
                            .expect("warm-up refill");
                        psd
                    }));
                }
                let mut cards = Vec::new();
                for t in tasks {
                    cards.push(t.await.expect("task"));
                }
                let mut debit = 100 * cards.len() as u64;

                let start = Instant::now();
                let mut tasks = Vec::new();
                for (d, mut psd) in cards.into_iter().enumerate() {
                    let host = host.clone();
                    tasks.push(tokio::task::spawn_local(async move {
                        let acct = account_of(&psd);
                        let mut lat = Vec::with_capacity(per_device);
                        let mut sum = 0u64;
                        for i in 0..per_device {
                            // Odd amounts, so a lost or doubled cent shows.
                            let amount = 1_001 + ((d * 7 + i * 13) % 97) as u64;
                            let txn = format!("{}-{i}", psd.device_id());
                            let t0 = Instant::now();
                            let v = host
                                .refill(&mut psd, &txn, &acct, amount)
                                .await
                                .expect("refill");
                            lat.push(t0.elapsed());
                            assert_eq!(v.state, "completed");
                            sum += amount;
                        }
                        (psd, lat, sum)
                    }));
                }
                let mut cards = Vec::new();
                let mut latencies = Vec::new();
                for t in tasks {
                    let (psd, lat, sum) = t.await.expect("task");
                    cards.push(psd);
                    latencies.extend(lat);
                    debit += sum;
                }
                (cards, latencies, start.elapsed(), debit)
            })
            .await;
        let mut sorted = latencies.clone();
        sorted.sort();
        let n = sorted.len();
        println!(
            "{:>8} {:>8} {:>10.1} {:>10.2} {:>10.2} {:>10.2}",
            c,
            n,
            n as f64 / wall.as_secs_f64(),
            ms(percentile(&sorted, 50.0)),
            ms(percentile(&sorted, 99.0)),
            ms(*sorted.last().unwrap_or(&Duration::ZERO)),
        );
        expected_debit += debit;
        all_cards.extend(cards);
    }

    // Reconciliation: nothing held, every cent debited is in a card, every account balances.
    let mut refs: Vec<&mut Psd> = all_cards.iter_mut().collect();
    let ledger = admin.assert_reconciled(&mut refs).await;
    assert_eq!(ledger.debited, expected_debit, "ledger vs refills made");
    let credited: u64 = all_cards.iter_mut().map(|c| c.credited()).sum();
    println!(
        "ledger: deposited {} = available {} + held {} + debited {}; cards credited {} ({} combinations applied, {} released): balanced",
        cents(ledger.deposited),
        cents(ledger.available),
        cents(ledger.held),
        cents(ledger.debited),
        cents(credited),
        ledger.combinations_applied,
        ledger.combinations_released,
    );
    handles.stop().await;
}

fn account_of(psd: &Psd) -> String {
    // Card n has account bench-n; the device ID ends in n (big-endian).
    let id = hex::decode(psd.device_id()).expect("hex");
    let n = u32::from_be_bytes(id[4..8].try_into().expect("4 bytes"));
    format!("bench-{n}")
}

fn cents(minor: u64) -> String {
    format!("{}.{:02}", minor / 100, minor % 100)
}
