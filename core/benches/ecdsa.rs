//! ECDSA P-256 in core against `openssl speed ecdsap256`, in one run (issue 17): raw
//! signing, indicium issuance through the full APDU path (in-process card, in-memory
//! store) and verification, each before (p256 alone, as the card did until 2026-12-01)
//! and after (the precomputed tables of core/src/crypto/comb.rs), as rates and as ratios
//! to OpenSSL; and bursts of 1,000 indicia through the APDU path from a full nonce pool
//! (core/src/crypto/nonce.rs), with the pool's fill rate.
//!
//! `cargo bench -p openpsd-core --bench ecdsa` (~1 min; `openssl` on PATH, else the
//! OpenSSL column is left out)
//!
//! Our rates are per second of this thread's CPU time (/proc/thread-self/schedstat), as
//! `openssl speed` divides by CPU user time, so a busy machine slows neither side. The
//! "before" APDU-path rate is derived, not measured: the APDU path's time with the
//! card's signing time replaced by p256's (both measured here); the card has one
//! signing code, and the note in docs/purse.md gives the one measured at the old commit.
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion};
use openpsd_core::client::psd_apdu;
use openpsd_core::crypto::{self, nonce, IndiciumKey, PreparedKey};
use openpsd_core::platform::SeededPlatform;
use openpsd_core::psd::device::{DeviceInfo, LicenseSlot, Personalization};
use openpsd_core::psd::indicium::{self, IndiciumRequest};
use openpsd_core::psd::psd_card;
use openpsd_core::psd::refill::RefillCombination;
use openpsd_core::store::MemStore;
use openpsd_core::types::*;
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::elliptic_curve::group::Group as _;

/// Indicia per burst (issue 17: "a burst of 1,000 indicia").
const BURST: u64 = 1_000;
/// Bursts per run, each from a freshly filled pool.
const BURST_ROUNDS: usize = 5;

/// (name, iterations, CPU time) of each benchmark, for the table printed at the end.
static TOTALS: Mutex<Vec<(&str, u64, Duration)>> = Mutex::new(Vec::new());

fn record(name: &'static str, iters: u64, t: Duration) {
    let mut totals = TOTALS.lock().unwrap();
    match totals.iter_mut().find(|e| e.0 == name) {
        Some(e) => {
            e.1 += iters;
            e.2 += t;
        }
        None => totals.push((name, iters, t)),
    }
}

fn rate(name: &str) -> f64 {
    let totals = TOTALS.lock().unwrap();
    totals.iter().find(|e| e.0 == name).map_or(0.0, |e| {
        e.1 as f64 / e.2.as_secs_f64().max(f64::MIN_POSITIVE)
    })
}

/// Time this thread has run on a CPU (Linux: first field of /proc/thread-self/schedstat,
/// ns); `None` where the file is missing (wall time is used then).
fn thread_cpu() -> Option<Duration> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .map(Duration::from_nanos)
}

/// Runs `f` `iters` times and records its CPU time (wall time if unavailable) under `name`.
fn timed(name: &'static str, iters: u64, mut f: impl FnMut()) -> Duration {
    let (cpu0, wall0) = (thread_cpu(), Instant::now());
    for _ in 0..iters {
        f();
    }
    let wall = wall0.elapsed();
    let t = match (cpu0, thread_cpu()) {
        (Some(a), Some(b)) if b > a => b - a,
        _ => wall,
    };
    record(name, iters, t);
    t
}

fn funded_card() -> openpsd_core::Card<MemStore, SeededPlatform> {
    let kms = IndiciumKey::from_bytes(&[0x11; 32]).unwrap();
    let vendor = IndiciumKey::from_bytes(&[7; 32]).unwrap().public_key();
    let mut card = psd_card(MemStore::new(), SeededPlatform::new(1)).unwrap();
    let ok = |r: Vec<u8>| assert_eq!(psd_apdu::sw(&r), 0x9000, "{r:02X?}");
    ok(card.transmit(&psd_apdu::select()));
    let p = Personalization {
        device: DeviceId(*b"BENCH001"),
        kms_public_key: kms.public_key(),
        vendor_public_key: vendor,
        max_postage: Amount(1_000),
        max_dr: Amount(u64::MAX / 2),
        inspection_days: 0,
        scheme: None,
        licenses: vec![LicenseSlot {
            license: LicenseId(1),
            origin: PostalCode::new(b"10115").unwrap(),
        }],
        postal_authority: None,
    };
    ok(card.transmit(&psd_apdu::personalize(&p)));
    let refill = RefillCombination {
        device: p.device,
        license: LicenseId(1),
        amount: Amount(u64::MAX / 4),
        control_sum: Amount(0),
        refills: RefillCount(0),
        combination_id: [0; 8],
    };
    ok(card.transmit(&psd_apdu::refill(RegisterSetIndex(0), &refill.sign(&kms))));
    card
}

fn request() -> IndiciumRequest {
    IndiciumRequest {
        transaction: TransactionId([0; 8]),
        postage: Amount(85),
        date: Date::new(2026, 12, 1).unwrap(),
        rate: RateCategory(1),
        origin: PostalCode::new(b"10115").unwrap(),
        destination: PostalCode::new(b"20095").unwrap(),
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("ecdsa");

    // The tables are built once per process: not part of any figure below.
    let t = Instant::now();
    black_box(crypto::comb::generator_table());
    println!("generator table built in {:?}", t.elapsed());

    let mut card = funded_card();
    let mut apdu = psd_apdu::issue_indicium(RegisterSetIndex(0), &request());
    let mut reply = Vec::with_capacity(256);
    let mut txn = 0u64;
    group.bench_function("apdu_path", |b| {
        b.iter_custom(|iters| {
            timed("apdu_path", iters, || {
                // A new transaction ID each time: a repeated one would be answered from
                // the stored indicium without a debit.
                txn += 1;
                apdu[5..13].copy_from_slice(&txn.to_be_bytes());
                card.handle(black_box(&apdu), &mut reply);
            })
        })
    });
    // One more, outside the timing (and when a filter skipped the benchmark): the payload.
    txn += 1;
    apdu[5..13].copy_from_slice(&txn.to_be_bytes());
    card.handle(&apdu, &mut reply);
    assert_eq!(psd_apdu::sw(&reply), 0x9000, "an indicium was issued");
    let payload = reply[..reply.len() - 2 - 64].to_vec();

    // Bursts: 1,000 indicia through the same APDU path from a full nonce pool, filled by
    // `Card::idle` (as a host does between commands) outside the burst's timing, which is
    // recorded apart ("pool_fill_batch", per batch). The sustained rate above is the pool
    // empty (the comb signer, RFC 6979), i.e. a device that is never idle.
    let info = card.transmit(&psd_apdu::get_data());
    let device_pk = DeviceInfo::decode(&info[..info.len() - 2])
        .ok()
        .flatten()
        .expect("device info")
        .public_key;
    let batches = nonce::CAPACITY.div_ceil(nonce::BATCH) as u64;
    for _ in 0..BURST_ROUNDS {
        timed("pool_fill_batch", batches, || assert!(card.idle()));
        assert!(!card.idle(), "the pool is full");
        timed("apdu_burst", BURST, || {
            txn += 1;
            apdu[5..13].copy_from_slice(&txn.to_be_bytes());
            card.handle(black_box(&apdu), &mut reply);
        });
        assert_eq!(
            psd_apdu::sw(&reply),
            0x9000,
            "the burst's indicia were issued"
        );
        indicium::verify(&reply[..reply.len() - 2], &device_pk)
            .expect("a pooled indicium verifies");
    }

    constant_time_check();

    let key = IndiciumKey::from_bytes(&[0x42; 32]).unwrap();
    let reference = SigningKey::from_slice(&[0x42; 32]).unwrap();
    let theirs: Signature = reference.sign(&payload);
    assert_eq!(key.sign(&payload), *theirs.to_bytes(), "the same signature");
    group.bench_function("sign_card", |b| {
        b.iter_custom(|iters| {
            timed("sign_card", iters, || {
                black_box(key.sign(black_box(&payload)));
            })
        })
    });
    group.bench_function("sign_p256", |b| {
        b.iter_custom(|iters| {
            timed("sign_p256", iters, || {
                let sig: Signature = reference.sign(black_box(&payload));
                black_box(sig);
            })
        })
    });

    let pk = key.public_key();
    let sig = key.sign(&payload);
    let vk = VerifyingKey::from_sec1_bytes(&pk).unwrap();
    let parsed = Signature::from_slice(&sig).unwrap();
    let prepared = PreparedKey::from_sec1(&pk).unwrap();
    group.bench_function("verify_p256", |b| {
        b.iter_custom(|iters| {
            timed("verify_p256", iters, || {
                assert!(vk.verify(black_box(&payload), &parsed).is_ok());
            })
        })
    });
    group.bench_function("verify_card", |b| {
        b.iter_custom(|iters| {
            timed("verify_card", iters, || {
                assert!(crypto::verify_signature(&pk, black_box(&payload), &sig));
            })
        })
    });
    group.bench_function("verify_prepared", |b| {
        b.iter_custom(|iters| {
            timed("verify_prepared", iters, || {
                assert!(prepared.verify(black_box(&payload), &sig));
            })
        })
    });
    group.bench_function("prepare_key", |b| {
        b.iter_custom(|iters| {
            timed("prepare_key", iters, || {
                black_box(PreparedKey::from_sec1(black_box(&pk)));
            })
        })
    });
    group.finish();

    // Where a signature's time goes (printed as µs at the end).
    let mut parts = c.benchmark_group("ecdsa_parts");
    let k = *p256::NonZeroScalar::from_repr([0x5a; 32].into()).unwrap();
    let table = crypto::comb::generator_table();
    let r_point = table.mul(&k);
    let mut part = |name: &'static str, f: &mut dyn FnMut()| {
        parts.bench_function(name, |b| b.iter_custom(|iters| timed(name, iters, &mut *f)));
    };
    part("part_kG_table", &mut || {
        black_box(table.mul(black_box(&k)));
    });
    part("part_kG_p256", &mut || {
        black_box(p256::ProjectivePoint::mul_by_generator(black_box(&k)));
    });
    part("part_to_affine", &mut || {
        black_box(black_box(r_point).to_affine());
    });
    part("part_scalar_invert", &mut || {
        black_box(black_box(k).invert());
    });
    part("part_scalar_invert_vartime", &mut || {
        black_box(black_box(k).invert_vartime());
    });
    part("part_sha256", &mut || {
        black_box(crypto::sha256(black_box(&payload)));
    });
    // The window widths (W) the table could use: constant time (signing) and variable
    // time (verification), k·G alone.
    fn widths<const W: usize>(
        parts: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
        k: &p256::Scalar,
        names: [&'static str; 2],
    ) {
        let table = crypto::comb::FixedBaseTable::<W>::new(&p256::ProjectivePoint::GENERATOR);
        parts.bench_function(names[0], |b| {
            b.iter_custom(|iters| {
                timed(names[0], iters, || {
                    black_box(table.mul(black_box(k)));
                })
            })
        });
        parts.bench_function(names[1], |b| {
            b.iter_custom(|iters| {
                timed(names[1], iters, || {
                    black_box(table.mul_vartime(black_box(k)));
                })
            })
        });
    }
    widths::<4>(&mut parts, &k, ["part_kG_w4", "part_kG_w4_vartime"]);
    widths::<5>(&mut parts, &k, ["part_kG_w5", "part_kG_w5_vartime"]);
    widths::<6>(&mut parts, &k, ["part_kG_w6", "part_kG_w6_vartime"]);
    widths::<7>(&mut parts, &k, ["part_kG_w7", "part_kG_w7_vartime"]);
    parts.finish();
}

/// `openssl speed -seconds 3 ecdsap256`: (sign/s, verify/s), or `None` without openssl.
fn openssl_speed() -> Option<(f64, f64)> {
    let out = std::process::Command::new("openssl")
        .args(["speed", "-seconds", "3", "ecdsap256"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    // " 256 bits ecdsa (nistp256)   0.0000s   0.0001s  51407.8  16916.1": sign/s, verify/s.
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|line| {
            let rest = line.split("ecdsa (nistp256)").nth(1)?;
            let f: Vec<f64> = rest
                .split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect();
            Some((*f.first()?, *f.get(1)?))
        })
}

/// Samples per class of the constant-time check.
const CT_SAMPLES: usize = 3_000;
/// Welch's |t| above which the timing depends on the class (dudect's "definitely not
/// constant time"; ~4.5 is its "maybe").
const CT_THRESHOLD: f64 = 10.0;

/// Welch's t of two samples.
fn welch_t(a: &[f64], b: &[f64]) -> f64 {
    let stats = |x: &[f64]| {
        let n = x.len() as f64;
        let mean = x.iter().sum::<f64>() / n;
        let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
        (n, mean, var)
    };
    let ((na, ma, va), (nb, mb, vb)) = (stats(a), stats(b));
    (ma - mb) / (va / na + vb / nb).sqrt().max(f64::MIN_POSITIVE)
}

/// dudect-style timing test of `f` (Reparaz, Balasch, Verbauwhede 2017): class 0 a fixed
/// scalar (1: every digit but the lowest zero), class 1 random scalars, the classes
/// interleaved at random so that the machine's load falls on both alike; each call timed
/// alone, the slowest 20 % of all samples (preemptions, interrupts) dropped; Welch's t.
fn dudect(f: &dyn Fn(&p256::Scalar) -> p256::ProjectivePoint) -> f64 {
    use p256::elliptic_curve::ops::Reduce;
    let random: Vec<p256::Scalar> = (0..CT_SAMPLES as u64)
        .map(|i| {
            let h = crypto::sha256(&i.to_le_bytes());
            <p256::Scalar as Reduce<p256::FieldBytes>>::reduce(&h.into())
        })
        .collect();
    let fixed = p256::Scalar::ONE;
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut samples: Vec<(bool, f64)> = Vec::with_capacity(2 * CT_SAMPLES);
    let (mut zeros, mut ones) = (0, 0);
    while zeros < CT_SAMPLES || ones < CT_SAMPLES {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let class = (state & 1 == 1 && ones < CT_SAMPLES) || zeros >= CT_SAMPLES;
        let k = if class { random[ones] } else { fixed };
        let t = Instant::now();
        black_box(f(black_box(&k)));
        samples.push((class, t.elapsed().as_nanos() as f64));
        if class {
            ones += 1;
        } else {
            zeros += 1;
        }
    }
    let mut sorted: Vec<f64> = samples.iter().map(|s| s.1).collect();
    sorted.sort_by(f64::total_cmp);
    let cut = sorted[sorted.len() * 8 / 10];
    let class = |c: bool| -> Vec<f64> {
        samples
            .iter()
            .filter(|s| s.0 == c && s.1 <= cut)
            .map(|s| s.1)
            .collect()
    };
    welch_t(&class(false), &class(true))
}

/// The comb's table scan in constant time, checked by timing (issue 17, "Measure"): the
/// constant-time k·G must show no class dependence (|t| < CT_THRESHOLD), and the
/// variable-time one must (the control: the test can see a leak on this machine).
fn constant_time_check() {
    let table = crypto::comb::generator_table();
    let t_ct = dudect(&|k| table.mul(k));
    let t_var = dudect(&|k| table.mul_vartime(k));
    println!(
        "constant-time check (dudect-style, {CT_SAMPLES} per class, fixed vs random k): \
         |t| = {:.2} constant time, {:.2} variable time (control); threshold {CT_THRESHOLD}",
        t_ct.abs(),
        t_var.abs()
    );
    assert!(
        t_ct.abs() < CT_THRESHOLD,
        "the constant-time k·G depends on the scalar: |t| = {t_ct:.2}"
    );
    assert!(
        t_var.abs() > CT_THRESHOLD,
        "the timing test did not see the variable-time k·G's leak: |t| = {t_var:.2}"
    );
}

criterion_group!(benches, bench);

fn main() {
    println!("running `openssl speed -seconds 3 ecdsap256` (6 s)...");
    let before = openssl_speed();
    benches();
    Criterion::default().configure_from_args().final_summary();
    // OpenSSL again after ours, the better of the two kept: a busy moment hits both.
    let after = openssl_speed();
    let openssl = match (before, after) {
        (Some(a), Some(b)) => Some((a.0.max(b.0), a.1.max(b.1))),
        (a, b) => a.or(b),
    };
    for name in [
        "part_kG_table",
        "part_kG_p256",
        "part_to_affine",
        "part_scalar_invert",
        "part_scalar_invert_vartime",
        "part_sha256",
        "part_kG_w4",
        "part_kG_w5",
        "part_kG_w6",
        "part_kG_w7",
        "part_kG_w4_vartime",
        "part_kG_w5_vartime",
        "part_kG_w6_vartime",
        "part_kG_w7_vartime",
    ] {
        let x = rate(name);
        if x > 0.0 {
            println!("{name:<34}{:>7.2} µs", 1e6 / x);
        }
    }
    let (apdu, card, p256s) = (rate("apdu_path"), rate("sign_card"), rate("sign_p256"));
    if apdu == 0.0 || card == 0.0 || p256s == 0.0 {
        return; // a filtered run (`-- sign_card`): no table
    }
    // The APDU path with p256's signing instead of the card's (per-op times swapped).
    let apdu_before = 1.0 / (1.0 / apdu - 1.0 / card + 1.0 / p256s);
    let ratio = |x: f64, i: usize| match openssl {
        Some(o) => format!("{:.2}", x / if i == 0 { o.0 } else { o.1 }),
        None => "-".into(),
    };
    println!();
    match openssl {
        Some((s, v)) => println!("OpenSSL ecdsap256: {s:.0} sign/s, {v:.0} verify/s"),
        None => println!("OpenSSL: not measured (no `openssl speed` output)"),
    }
    println!("per CPU second                         /s   ratio to OpenSSL");
    let line = |label: &str, x: f64, i: usize| println!("{label:<34}{x:>7.0}   {}", ratio(x, i));
    line("sign, before (p256)", p256s, 0);
    line("sign, after (card, tables)", card, 0);
    line("indicium APDU path, before (derived)", apdu_before, 0);
    line("indicium APDU path, after (sustained)", apdu, 0);
    let burst = rate("apdu_burst");
    line("indicium APDU path, burst of 1,000", burst, 0);
    let fill = rate("pool_fill_batch") * nonce::BATCH as f64;
    line("nonce pool fill (pairs, idle time)", fill, 0);
    line("verify, before (p256)", rate("verify_p256"), 1);
    line("verify, after (one-off)", rate("verify_card"), 1);
    line("verify, after (prepared key)", rate("verify_prepared"), 1);
    println!(
        "prepared key's table: {:.0} µs to build",
        1e6 / rate("prepare_key").max(f64::MIN_POSITIVE)
    );
    println!(
        "targets (issue 17): APDU path >= 1.00 of OpenSSL sign, burst >= 5.00, verify >= 1.00"
    );
}
