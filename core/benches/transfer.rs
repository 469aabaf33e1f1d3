//! Value transfers PSD → purse per second, in process: both cards on in-memory stores,
//! the full host driver (SELECT both, recognition — two ephemeral keys, two certificate
//! checks, four ECDH, two cryptograms and four counter commits —, PIN with its two
//! commits, request, debit, credit, confirmation, and the purse's GET DATA at the end) —
//! what one `openpsd transfer` costs without the transport. Prints
//! transfers per second and the time of one; the PC/SC figure is `scripts/pcsc-bench.sh`.
//!
//! `cargo bench -p openpsd-core --bench transfer`
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion};
use openpsd_core::client::psd_apdu;
use openpsd_core::client::purse_apdu;
use openpsd_core::client::transfer::transfer;
use openpsd_core::crypto::IndiciumKey;
use openpsd_core::platform::SeededPlatform;
use openpsd_core::psd::device::{LicenseSlot, Personalization, SchemeSlot};
use openpsd_core::psd::psd_card;
use openpsd_core::psd::refill::RefillCombination;
use openpsd_core::purse::personal::{certificate_body, PursePersonalization};
use openpsd_core::purse::purse_card;
use openpsd_core::store::MemStore;
use openpsd_core::transfer::card_admin_key;
use openpsd_core::transfer::cert::{DeviceCertificate, DeviceKind, RecognitionInfo};
use openpsd_core::types::*;
use openpsd_core::Card;

type TestCard = Card<MemStore, SeededPlatform>;

const PIN: &[u8] = b"2468";

fn ok(r: Vec<u8>) -> Vec<u8> {
    assert_eq!(psd_apdu::sw(&r), 0x9000, "{r:02X?}");
    r[..r.len() - 2].to_vec()
}

/// The issuer's certificate on the recognition key a card reports (GET DATA `data`).
fn certificate(issuer: &IndiciumKey, kind: DeviceKind, id: [u8; 8], data: &[u8]) -> Vec<u8> {
    let info = RecognitionInfo::decode(data).unwrap();
    DeviceCertificate::issue(
        issuer,
        kind,
        SchemeId(1),
        id,
        u32::from(id[7]),
        Date::new(2026, 1, 1).unwrap(),
        Date::new(2036, 1, 1).unwrap(),
        info.public_key,
    )
    .encode()
}

fn cards() -> (TestCard, TestCard) {
    let kms = IndiciumKey::from_bytes(&[0x11; 32]).unwrap();
    let issuer = IndiciumKey::from_bytes(&[9; 32]).unwrap();
    let mut psd = psd_card(MemStore::new(), SeededPlatform::new(1)).unwrap();
    ok(psd.transmit(&psd_apdu::select()));
    let p = Personalization {
        device: DeviceId(*b"BENCH001"),
        kms_public_key: kms.public_key(),
        vendor_public_key: IndiciumKey::from_bytes(&[7; 32]).unwrap().public_key(),
        max_postage: Amount(1_000),
        max_dr: Amount(u64::MAX / 2),
        inspection_days: 0,
        licenses: vec![LicenseSlot {
            license: LicenseId(1),
            origin: PostalCode::new(b"10115").unwrap(),
        }],
        scheme: Some(SchemeSlot {
            scheme: SchemeId(1),
            issuer_public_key: issuer.public_key(),
            max_failures: 5,
        }),
        postal_authority: None,
    };
    ok(psd.transmit(&psd_apdu::personalize(&p)));
    let data = ok(psd.transmit(&psd_apdu::get_recognition_data()));
    let cert = certificate(&issuer, DeviceKind::Psd, p.device.0, &data);
    ok(psd.transmit(&psd_apdu::install_certificate(&cert)));
    let refill = RefillCombination {
        device: p.device,
        license: LicenseId(1),
        amount: Amount(u64::MAX / 4),
        control_sum: Amount(0),
        refills: RefillCount(0),
        combination_id: [0; 8],
    };
    ok(psd.transmit(&psd_apdu::refill(RegisterSetIndex(0), &refill.sign(&kms))));

    let card = CardId(*b"BENCHCRD");
    let mut purse = purse_card(MemStore::new(), SeededPlatform::new(2)).unwrap();
    ok(purse.transmit(&purse_apdu::select()));
    let pk = ok(
        purse.transmit(&purse_apdu::personalize(&PursePersonalization {
            card,
            scheme: SchemeId(1),
            admin_key: *card_admin_key(&openpsd_core::crypto::MacKey::new([1; 16]), card).expose(),
            issuer_public_key: issuer.public_key(),
            max_balance: Amount(u64::MAX / 4),
            max_transfer: Amount(1_000_000),
            pin_tries: 3,
            max_failures: 5,
            pin: PIN.to_vec(),
        })),
    );
    ok(
        purse.transmit(&purse_apdu::certify(&issuer.sign(&certificate_body(
            card,
            SchemeId(1),
            &pk,
        )))),
    );
    let data = ok(purse.transmit(&purse_apdu::get_data(4)));
    let cert = certificate(&issuer, DeviceKind::Purse, card.0, &data);
    ok(purse.transmit(&purse_apdu::install_certificate(&cert)));
    (psd, purse)
}

fn bench(c: &mut Criterion) {
    let (mut psd, mut purse) = cards();
    let mut g = c.benchmark_group("transfer");
    g.bench_function("psd_to_purse_in_process", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                transfer(&mut psd, &mut purse, RegisterSetIndex(0), Amount(1), PIN).unwrap();
            }
            t.elapsed()
        })
    });
    g.finish();

    // A plain timed run for the headline figure.
    let n = 2_000;
    let t = Instant::now();
    for _ in 0..n {
        transfer(&mut psd, &mut purse, RegisterSetIndex(0), Amount(1), PIN).unwrap();
    }
    let el: Duration = t.elapsed();
    println!(
        "in-process transfers: {:.0} transfers/s ({:.1} µs each, {n} transfers)",
        n as f64 / el.as_secs_f64(),
        el.as_secs_f64() * 1e6 / n as f64
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    targets = bench
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
