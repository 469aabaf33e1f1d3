//! Label scans decoded per second (`openpsd_post::label::decode`): file to indicium bytes,
//! PNG or JPEG decoding, Data Matrix detection, sampling, error correction and all.
//!
//! - `png_4px`: the typical scan, one indicium label at 4 pixels per module (a 44×44
//!   symbol with its quiet zone, 192×192 pixels), grey PNG: the figure to quote;
//! - `jpeg_4px`: the same as JPEG quality 75;
//! - `png_4px_tilted_5deg`: the same tilted by 5° (bilinear), which takes the detector's
//!   slower path more often;
//! - `envelope_150dpi`: a C6 envelope at 150 dpi (960×680) with the label in a corner.
//!
//! `cargo bench -p openpsd-post --bench label` (prints images/s for each at the end).
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/labels/mod.rs"]
mod labels;

use std::hint::black_box;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion, Throughput};
use labels::*;
use openpsd_post::label::decode;

/// (name, iterations, time) of each benchmark, for the rates printed at the end.
static RUNS: Mutex<Vec<(&'static str, u64, Duration)>> = Mutex::new(Vec::new());

fn bench(c: &mut Criterion) {
    let (bytes, _) = indicium(1);
    let img = render(&bytes, 4);
    let scans: [(&'static str, Vec<u8>); 4] = [
        ("png_4px", png(&img)),
        ("jpeg_4px", jpeg(&img, 75)),
        ("png_4px_tilted_5deg", png(&rotate(&img, 5.0))),
        (
            "envelope_150dpi",
            png(&on_page(&render(&bytes, 3), 960, 680, 760, 40)),
        ),
    ];
    let mut group = c.benchmark_group("label");
    group.throughput(Throughput::Elements(1));
    for (name, file) in scans {
        assert_eq!(decode(&file).unwrap(), bytes, "{name}");
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let t = Instant::now();
                for _ in 0..iters {
                    black_box(decode(black_box(&file)).unwrap());
                }
                let elapsed = t.elapsed();
                RUNS.lock().unwrap().push((name, iters, elapsed));
                elapsed
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    let runs = RUNS.lock().unwrap();
    let mut names: Vec<&str> = runs.iter().map(|r| r.0).collect();
    names.dedup();
    for name in names {
        let (n, t) = runs
            .iter()
            .filter(|r| r.0 == name)
            .fold((0u64, Duration::ZERO), |(n, t), r| (n + r.1, t + r.2));
        if n > 0 {
            let rate = n as f64 / t.as_secs_f64().max(f64::MIN_POSITIVE);
            println!("{name:<22} {rate:>8.0} images/s (one core)");
        }
    }
}
