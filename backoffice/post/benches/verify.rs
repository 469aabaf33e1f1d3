//! Indicium verifications per second: each candidate library on the same 64 real indicia
//! (one device key, as at the post: one key verifies many indicia), one thread, and the
//! post's batch verifier on one and two threads. Prints the rates at the end in lines
//! `scripts/post-bench.sh` reads (`rate <name> <per s of wall time> <per s of CPU time>`),
//! where they are set against `openssl speed` run in the same script.
//!
//! - `post_ring`: `openpsd_post::verify::DeviceKey::verify`, the verifier as built (ring,
//!   plus decoding the fields and comparing the key ID);
//! - `core_p256`: `openpsd_core::psd::indicium::verify`, the reference as called today
//!   (RustCrypto `p256`, public key parsed on every call);
//! - `p256_parsed`: `p256` with the key parsed once, signature check only;
//! - `ring_raw`, `aws_lc_rs` (with `--features bench-aws-lc`): the signature check alone;
//! - `batch_1t`, `batch_2t`: `verify_batch` over 256 indicia on one and two threads;
//! - `from_sec1`: preparing a device key (what a key cache would save per indicium).
//!
//! `cargo bench -p openpsd-post --bench verify [--features bench-aws-lc] -- --warm-up-time 0.5 --measurement-time 1.5`
// Bench code: a failed unwrap or expect is a broken benchmark, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion};
use openpsd_core::crypto::IndiciumKey;
use openpsd_core::psd::indicium::{self, IndiciumData};
use openpsd_core::types::*;
use openpsd_post::verify::{verify_batch, DeviceKey};
use p256::ecdsa::signature::Verifier;

/// Per benchmark: verifications, wall time, and on-CPU time of the measuring thread.
type Total = (&'static str, u64, Duration, Duration);
static TOTALS: Mutex<Vec<Total>> = Mutex::new(Vec::new());

fn record(name: &'static str, n: u64, wall: Duration, cpu: Duration) {
    let mut totals = TOTALS.lock().unwrap();
    match totals.iter_mut().find(|e| e.0 == name) {
        Some(e) => {
            e.1 += n;
            e.2 += wall;
            e.3 += cpu;
        }
        None => totals.push((name, n, wall, cpu)),
    }
}

/// Time this thread has run on a CPU (Linux: first field of /proc/thread-self/schedstat,
/// in ns). `openssl speed` divides by CPU time too, so the two compare even when the
/// machine is busy (a CI run, other builds): wall time then mostly measures the queue.
/// Zero where the file is missing; the rates then fall back to wall time.
fn thread_cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .map_or(Duration::ZERO, Duration::from_nanos)
}

/// CPU time of the whole process, every thread, those that have exited included (Linux:
/// utime + stime of /proc/self/stat, in clock ticks of 10 ms): for the batch, whose worker
/// threads come and go. Zero where the file is missing.
fn process_cpu() -> Duration {
    let ticks = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command name (which may hold spaces): state is the first,
            // utime and stime the 12th and 13th.
            let mut f = s.get(s.rfind(')')? + 1..)?.split_whitespace().skip(11);
            Some(f.next()?.parse::<u64>().ok()? + f.next()?.parse::<u64>().ok()?)
        });
    ticks.map_or(Duration::ZERO, |t| Duration::from_millis(10 * t))
}

/// Starts a measurement; `.stop(name, n)` records it and returns the wall time.
struct Clock(Instant, Duration, fn() -> Duration);
impl Clock {
    fn start(cpu: fn() -> Duration) -> Clock {
        Clock(Instant::now(), cpu(), cpu)
    }
    fn stop(self, name: &'static str, n: u64) -> Duration {
        let wall = self.0.elapsed();
        record(name, n, wall, (self.2)().saturating_sub(self.1));
        wall
    }
}

/// The indicia: what one PSD issues for 64 consecutive pieces.
fn indicia(key: &IndiciumKey) -> Vec<Vec<u8>> {
    (1..=64u32)
        .map(|piece| {
            let data = IndiciumData {
                key_id: key.key_id(),
                device: DeviceId(*b"BENCH001"),
                license: LicenseId(1),
                ar: Amount(1_000_000 - 85 * u64::from(piece)),
                dr: Amount(85 * u64::from(piece)),
                pieces: PieceCount(piece),
                postage: Amount(85),
                date: Date::new(2026, 11, 29).unwrap(),
                rate: RateCategory(1),
                origin: PostalCode::new(b"10115").unwrap(),
                destination: PostalCode::new(b"20095").unwrap(),
            };
            let mut bytes = data.encode();
            let sig = key.sign(&bytes);
            bytes.extend_from_slice(&sig);
            bytes
        })
        .collect()
}

/// Runs `f` on the indicia in turn, `iters` times in all; records and returns the time.
fn timed(
    name: &'static str,
    set: &[Vec<u8>],
    iters: u64,
    mut f: impl FnMut(&[u8], &[u8], &[u8]) -> bool,
) -> Duration {
    let clock = Clock::start(thread_cpu);
    for (_, ind) in (0..iters).zip(set.iter().cycle()) {
        let (signed, sig) = ind.split_at(ind.len() - 64);
        assert!(f(black_box(ind), black_box(signed), black_box(sig)));
    }
    clock.stop(name, iters)
}

fn bench(c: &mut Criterion) {
    let key = IndiciumKey::from_bytes(&[7; 32]).unwrap();
    let pk = key.public_key();
    let set = indicia(&key);
    let dk = DeviceKey::from_sec1(&pk).unwrap();

    let mut group = c.benchmark_group("verify");
    // ~70-500 µs an iteration: 30 samples fit the short runs CI makes.
    group.sample_size(30);
    group.bench_function("post_ring", |b| {
        b.iter_custom(|iters| timed("post_ring", &set, iters, |ind, _, _| dk.verify(ind).is_ok()))
    });
    group.bench_function("core_p256", |b| {
        b.iter_custom(|iters| {
            timed("core_p256", &set, iters, |ind, _, _| {
                indicium::verify(ind, &pk).is_ok()
            })
        })
    });
    let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&pk).unwrap();
    group.bench_function("p256_parsed", |b| {
        b.iter_custom(|iters| {
            timed("p256_parsed", &set, iters, |_, s, sig| {
                let sig = p256::ecdsa::Signature::from_slice(sig).unwrap();
                vk.verify(s, &sig).is_ok()
            })
        })
    });
    let ring_key =
        ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, pk);
    group.bench_function("ring_raw", |b| {
        b.iter_custom(|iters| {
            timed("ring_raw", &set, iters, |_, s, sig| {
                ring_key.verify(s, sig).is_ok()
            })
        })
    });
    #[cfg(feature = "bench-aws-lc")]
    {
        use aws_lc_rs::signature::{ParsedPublicKey, ECDSA_P256_SHA256_FIXED};
        let aws_key = ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, pk).unwrap();
        group.bench_function("aws_lc_rs", |b| {
            b.iter_custom(|iters| {
                timed("aws_lc_rs", &set, iters, |_, s, sig| {
                    aws_key.verify_sig(s, sig).is_ok()
                })
            })
        });
    }
    group.bench_function("from_sec1", |b| {
        b.iter_custom(|iters| {
            let clock = Clock::start(thread_cpu);
            for _ in 0..iters {
                black_box(DeviceKey::from_sec1(black_box(&pk)).unwrap());
            }
            clock.stop("from_sec1", iters)
        })
    });
    group.finish();

    // The batch: 256 indicia (the set four times), ~14 ms on one thread, so starting the
    // worker thread (tens of µs) is a small part of it, as in a post's batches of scans;
    // fewer samples, to keep the run short.
    let items: Vec<(&DeviceKey, &[u8])> = set
        .iter()
        .cycle()
        .take(256)
        .map(|i| (&dk, &i[..]))
        .collect();
    let mut group = c.benchmark_group("verify_batch");
    group.sample_size(10);
    for (name, threads) in [("batch_1t", 1), ("batch_2t", 2)] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let clock = Clock::start(process_cpu);
                for _ in 0..iters {
                    let out = verify_batch(black_box(&items), threads);
                    assert!(out.iter().all(Result::is_ok));
                }
                clock.stop(name, iters * items.len() as u64)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    // `rate NAME WALL/s CPU/s`: verifications per second of wall time and of CPU time (the
    // measuring thread's; for the batches, all threads'). A batch on two threads that
    // keeps its CPU figure verifies with no overhead from the split, so its wall figure
    // doubles when two cores are free; on a busy machine only the CPU figure is stable.
    let per_s = |n: u64, t: Duration| n as f64 / t.as_secs_f64().max(f64::MIN_POSITIVE);
    for &(name, n, wall, cpu) in TOTALS.lock().unwrap().iter() {
        let cpu = if cpu.is_zero() { wall } else { cpu };
        println!("rate {name} {:.0} {:.0}", per_s(n, wall), per_s(n, cpu));
    }
}
