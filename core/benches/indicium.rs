//! Indicium issuance through the full APDU path (parse, checks, commit to the in-memory
//! store, ECDSA signature, response) against raw `p256` signing of the same bytes, in one
//! run. Prints the rates and the ratio; the target is a ratio of at least 0.9.
//!
//! Raw signing is measured twice. `raw_sign` calls the card's own signing function
//! (`IndiciumKey::sign`: off the browser, k·G from the generator's table of
//! core/src/crypto/comb.rs, the same signature as p256's), so both sides run the same
//! machine code and the ratio is the cost of the APDU path. `p256_direct` calls p256's
//! own signing (what the card ran until 2026-12-01), printed for reference. The
//! comparison with OpenSSL is `cargo bench -p openpsd-core --bench ecdsa` (docs/ecdsa.md).
//!
//! `cargo bench -p openpsd-core --bench indicium`
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion};
use openpsd_core::client::psd_apdu;
use openpsd_core::crypto::IndiciumKey;
use openpsd_core::platform::SeededPlatform;
use openpsd_core::psd::device::{LicenseSlot, Personalization};
use openpsd_core::psd::indicium::IndiciumRequest;
use openpsd_core::psd::psd_card;
use openpsd_core::psd::refill::RefillCombination;
use openpsd_core::store::MemStore;
use openpsd_core::types::*;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};

/// (iterations, time) measured by each benchmark, for the ratio printed at the end.
static APDU: Mutex<(u64, Duration)> = Mutex::new((0, Duration::ZERO));
static RAW: Mutex<(u64, Duration)> = Mutex::new((0, Duration::ZERO));
static DIRECT: Mutex<(u64, Duration)> = Mutex::new((0, Duration::ZERO));

fn record(slot: &Mutex<(u64, Duration)>, iters: u64, t: Duration) {
    let mut s = slot.lock().unwrap();
    s.0 += iters;
    s.1 += t;
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
        date: Date::new(2026, 11, 21).unwrap(),
        rate: RateCategory(1),
        origin: PostalCode::new(b"10115").unwrap(),
        destination: PostalCode::new(b"20095").unwrap(),
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("indicium");

    let mut card = funded_card();
    let mut apdu = psd_apdu::issue_indicium(RegisterSetIndex(0), &request());
    let mut reply = Vec::with_capacity(256);
    let mut txn = 0u64;
    group.bench_function("apdu_path", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                // A new transaction ID each time: a repeated one would be answered from
                // the stored indicium without a debit.
                txn += 1;
                apdu[5..13].copy_from_slice(&txn.to_be_bytes());
                card.handle(black_box(&apdu), &mut reply);
                debug_assert_eq!(psd_apdu::sw(&reply), 0x9000);
            }
            let e = t.elapsed();
            record(&APDU, iters, e);
            e
        })
    });
    assert_eq!(psd_apdu::sw(&reply), 0x9000, "the last indicium was issued");
    let payload = reply[..reply.len() - 2 - 64].to_vec();

    let key = IndiciumKey::from_bytes(&[0x42; 32]).unwrap();
    group.bench_function("raw_sign", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                black_box(key.sign(black_box(&payload)));
            }
            let e = t.elapsed();
            record(&RAW, iters, e);
            e
        })
    });
    let direct = SigningKey::from_slice(&[0x42; 32]).unwrap();
    group.bench_function("p256_direct", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                let sig: Signature = direct.sign(black_box(&payload));
                black_box(sig);
            }
            let e = t.elapsed();
            record(&DIRECT, iters, e);
            e
        })
    });
    group.finish();
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    let rate = |slot: &Mutex<(u64, Duration)>| {
        let (n, t) = *slot.lock().unwrap();
        n as f64 / t.as_secs_f64().max(f64::MIN_POSITIVE)
    };
    let (apdu, raw, direct) = (rate(&APDU), rate(&RAW), rate(&DIRECT));
    if apdu > 0.0 && raw > 0.0 && direct > 0.0 {
        println!("indicium via APDU path:         {apdu:.0} /s");
        println!("raw signing (card's code):      {raw:.0} /s");
        println!("raw signing (p256's own):       {direct:.0} /s");
        println!(
            "ratio APDU path / raw signing: {:.3} (target >= 0.9)",
            apdu / raw
        );
        println!(
            "ratio APDU path / p256's own signing: {:.3} (for reference)",
            apdu / direct
        );
    }
}
