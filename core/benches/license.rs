//! Licenses (seed 003) on the card, in process, through the APDU path (`card.transmit`:
//! parse, checks, commit to the in-memory store, answer), against the raw P-256 sign and
//! verify of core in the same run:
//!
//! - `request`: LICENSE REQUEST with P1 `01` (a new key generated, the proof of possession
//!   and the device's signature, one commit), again and again on one card;
//! - `install`: LICENSE INSTALL (the certificate rebuilt from its template, the PA's
//!   signature and the vendor's countersignature verified, one commit), each on a fresh
//!   copy of a card with the request pending (the copy is made outside the timing);
//! - `request_grant_install`: the whole Fig. 4 chain on a fresh card; the grant the bench
//!   signs as PA and vendor (template + two signatures) is timed apart and left out;
//! - `export_import`: EXPORT SET prepare + commit, then IMPORT SET, round trips on one card
//!   (the set with a grant), each phase timed apart.
//!
//! At the end it prints the rates, their ratios to one signature and one verification, and
//! once the bytes: an exported blob, a resident set's record and an outstanding-table
//! entry (what one parked set still costs the PSD).
//!
//! `cargo bench -p openpsd-core --bench license -- --warm-up-time 1 --measurement-time 3`
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion};
use openpsd_core::client::psd_apdu;
use openpsd_core::crypto::{self, IndiciumKey};
use openpsd_core::platform::SeededPlatform;
use openpsd_core::psd::device::{Personalization, PostalAuthority};
use openpsd_core::psd::license::export::Blob;
use openpsd_core::psd::license::grant::{self, CardFields, GrantFields};
use openpsd_core::psd::license::install::Install;
use openpsd_core::psd::license::request::{LicenseAsk, LicenseRequest};
use openpsd_core::psd::license::{DIGEST_LEN, MAX_OUTSTANDING};
use openpsd_core::psd::psd_card;
use openpsd_core::psd::registers::RegisterSet;
use openpsd_core::records;
use openpsd_core::store::{MemStore, Store};
use openpsd_core::types::*;
use openpsd_core::Card;

type TestCard = Card<MemStore, SeededPlatform>;

/// (iterations, time) per measured operation, for the summary at the end.
type Slot = Mutex<(u64, Duration)>;
static SIGN: Slot = Mutex::new((0, Duration::ZERO));
static VERIFY: Slot = Mutex::new((0, Duration::ZERO));
static REQUEST: Slot = Mutex::new((0, Duration::ZERO));
static INSTALL: Slot = Mutex::new((0, Duration::ZERO));
/// Request + install on the card in the full chain, and the bench's grant apart.
static FULL_CARD: Slot = Mutex::new((0, Duration::ZERO));
static FULL_GRANT: Slot = Mutex::new((0, Duration::ZERO));
static EXPORT: Slot = Mutex::new((0, Duration::ZERO));
static IMPORT: Slot = Mutex::new((0, Duration::ZERO));

fn record(slot: &Slot, iters: u64, t: Duration) {
    let mut s = slot.lock().unwrap();
    s.0 += iters;
    s.1 += t;
}

/// Mean time of one, in µs.
fn us(slot: &Slot) -> f64 {
    let (n, t) = *slot.lock().unwrap();
    t.as_secs_f64() * 1e6 / (n.max(1) as f64)
}

const LICENSE: u32 = 9001;
const ORIGIN: &[u8] = b"10115";

fn ok(r: Vec<u8>) -> Vec<u8> {
    assert_eq!(psd_apdu::sw(&r), 0x9000, "{r:02X?}");
    r[..r.len() - 2].to_vec()
}

fn pa_key() -> IndiciumKey {
    IndiciumKey::from_bytes(&[0x50; 32]).unwrap()
}

fn vendor_key() -> IndiciumKey {
    IndiciumKey::from_bytes(&[7; 32]).unwrap()
}

/// `CN=openpsd test PA`, DER (as tests/src/licenses.rs).
fn pa_subject() -> Vec<u8> {
    let cn = b"openpsd test PA";
    let mut atv = vec![
        0x06,
        0x03,
        0x55,
        0x04,
        0x03,
        0x0C,
        u8::try_from(cn.len()).unwrap(),
    ];
    atv.extend_from_slice(cn);
    let mut set = vec![0x30, u8::try_from(atv.len()).unwrap()];
    set.extend_from_slice(&atv);
    let mut rdn = vec![0x31, u8::try_from(set.len()).unwrap()];
    rdn.extend_from_slice(&set);
    let mut name = vec![0x30, u8::try_from(rdn.len()).unwrap()];
    name.extend_from_slice(&rdn);
    name
}

/// A PSD personalized with the PA and no register set of its own, SELECTed.
fn licensing_card() -> TestCard {
    let mut card = psd_card(MemStore::new(), SeededPlatform::new(1)).unwrap();
    ok(card.transmit(&psd_apdu::select()));
    let p = Personalization {
        device: DeviceId(*b"BENCH001"),
        kms_public_key: IndiciumKey::from_bytes(&[0x11; 32]).unwrap().public_key(),
        vendor_public_key: vendor_key().public_key(),
        max_postage: Amount(1_000),
        max_dr: Amount(u64::MAX / 2),
        inspection_days: 0,
        licenses: vec![],
        scheme: None,
        postal_authority: Some(PostalAuthority {
            public_key: pa_key().public_key(),
            subject: pa_subject(),
        }),
    };
    ok(card.transmit(&psd_apdu::personalize(&p)));
    card
}

/// The same card state on a fresh card (the copy costs a store clone and an applet load,
/// a scalar multiplication or two: never timed).
fn reopen(store: &MemStore, seed: u64) -> TestCard {
    let mut card = psd_card(store.clone(), SeededPlatform::new(seed)).unwrap();
    ok(card.transmit(&psd_apdu::select()));
    card
}

fn ask() -> LicenseAsk {
    LicenseAsk {
        license: LicenseId(LICENSE),
        origin: PostalCode::new(ORIGIN).unwrap(),
    }
}

/// The serial the back office's PA gives: 16 octets, first in 01..7F.
fn serial() -> Vec<u8> {
    let mut s = vec![0x11; 16];
    s[15] = 0x01;
    s
}

/// What the PA and the vendor answer (their keys restored once, by the caller).
fn grant(req: &LicenseRequest, pa: &IndiciumKey, vendor: &IndiciumKey, subject: &[u8]) -> Install {
    let b = &req.body;
    let fields = GrantFields {
        serial: serial(),
        not_before: Date::new(2026, 11, 1).unwrap(),
        not_after: Date::new(2027, 10, 31).unwrap(),
        license: LicenseId(LICENSE),
        origin: b.origin,
    };
    let pa_public = pa.public_key();
    let card = CardFields {
        pa_subject: subject,
        pa_public_key: &pa_public,
        device: b.device,
        license_public_key: &b.license_public_key,
        nonce: &b.nonce,
    };
    let tbs = grant::tbs_certificate(&fields, &card).unwrap();
    let pa_signature = pa.sign(&tbs);
    let countersignature = vendor.sign(&grant::countersign_message(&tbs, b.device, &b.nonce));
    Install {
        request: b.counter,
        fields,
        pa_signature,
        countersignature,
    }
}

fn request(card: &mut TestCard, replace: bool) -> LicenseRequest {
    LicenseRequest::decode(&ok(
        card.transmit(&psd_apdu::license_request(&ask(), replace))
    ))
    .unwrap()
}

fn bench(c: &mut Criterion) {
    let (pa, vendor, subject) = (pa_key(), vendor_key(), pa_subject());
    let mut g = c.benchmark_group("license");

    // Anchors: core's own signature and verification (what the card calls), over a message
    // the size of a tbsCertificate.
    let key = IndiciumKey::from_bytes(&[0x42; 32]).unwrap();
    let public = key.public_key();
    let msg = vec![0xA5u8; 400];
    let sig = key.sign(&msg);
    g.bench_function("raw_sign", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                black_box(key.sign(black_box(&msg)));
            }
            let e = t.elapsed();
            record(&SIGN, iters, e);
            e
        })
    });
    g.bench_function("raw_verify", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                assert!(crypto::verify_signature(
                    black_box(&public),
                    black_box(&msg),
                    black_box(&sig)
                ));
            }
            let e = t.elapsed();
            record(&VERIFY, iters, e);
            e
        })
    });

    // LICENSE REQUEST, P1 01: each one a new key, nonce and counter.
    let blank = licensing_card();
    let mut card = reopen(blank.store(), 2);
    let apdu = psd_apdu::license_request(&ask(), true);
    g.bench_function("request", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                let r = card.transmit(black_box(&apdu));
                debug_assert_eq!(psd_apdu::sw(&r), 0x9000);
                black_box(r);
            }
            let e = t.elapsed();
            record(&REQUEST, iters, e);
            e
        })
    });

    // LICENSE INSTALL on copies of one card with one request pending.
    let mut pending = reopen(blank.store(), 3);
    let req = request(&mut pending, false);
    let install_apdu = psd_apdu::license_install(&grant(&req, &pa, &vendor, &subject));
    let pending_store = pending.store().clone();
    g.bench_function("install", |b| {
        b.iter_custom(|iters| {
            let mut e = Duration::ZERO;
            for _ in 0..iters {
                let mut card = reopen(&pending_store, 4);
                let t = Instant::now();
                let r = card.transmit(black_box(&install_apdu));
                e += t.elapsed();
                assert_eq!(psd_apdu::sw(&r), 0x9000);
            }
            record(&INSTALL, iters, e);
            e
        })
    });

    // Fig. 4 on a fresh card each time: the card's time (request + install) is the figure,
    // the grant (the bench as PA and vendor) is timed apart.
    g.bench_function("request_grant_install", |b| {
        b.iter_custom(|iters| {
            let (mut on_card, mut granting) = (Duration::ZERO, Duration::ZERO);
            for i in 0..iters {
                let mut card = reopen(blank.store(), 5 + i);
                let t = Instant::now();
                let r = card.transmit(&apdu);
                on_card += t.elapsed();
                let t = Instant::now();
                let req = LicenseRequest::decode(&ok(r)).unwrap();
                let install = psd_apdu::license_install(&grant(&req, &pa, &vendor, &subject));
                granting += t.elapsed();
                let t = Instant::now();
                let r = card.transmit(&install);
                on_card += t.elapsed();
                assert_eq!(psd_apdu::sw(&r), 0x9000);
            }
            record(&FULL_CARD, iters, on_card);
            record(&FULL_GRANT, iters, granting);
            on_card
        })
    });

    // EXPORT (prepare + commit) and IMPORT, round trips on one card holding a granted set.
    let mut card = reopen(pending.store(), 6);
    ok(card.transmit(&install_apdu));
    let prepare = psd_apdu::export_prepare(RegisterSetIndex(0));
    g.bench_function("export_import", |b| {
        b.iter_custom(|iters| {
            let (mut exp, mut imp) = (Duration::ZERO, Duration::ZERO);
            for _ in 0..iters {
                let t = Instant::now();
                let blob = ok(card.transmit(&prepare));
                let digest = Blob::digest_of(&blob);
                ok(card.transmit(&psd_apdu::export_commit(RegisterSetIndex(0), &digest)));
                exp += t.elapsed();
                let t = Instant::now();
                let slot = ok(card.transmit(&psd_apdu::import_set(&blob)));
                imp += t.elapsed();
                assert_eq!(slot, [0]);
            }
            record(&EXPORT, iters, exp);
            record(&IMPORT, iters, imp);
            exp + imp
        })
    });
    g.finish();
}

/// The seed's memory argument, once: the bytes of a parked set on disk and in the PSD.
fn bytes() {
    let (pa, vendor, subject) = (pa_key(), vendor_key(), pa_subject());
    let mut card = licensing_card();
    let req = request(&mut card, false);
    ok(card.transmit(&psd_apdu::license_install(&grant(
        &req, &pa, &vendor, &subject,
    ))));
    let set_id = records::psd::set(0);
    let resident = card.store().read(set_id).unwrap().expect("set record");
    let set = RegisterSet::decode(&resident).unwrap();
    assert!(set.grant.is_some());
    let encoded = set.encode();
    assert_eq!(encoded, resident, "RegisterSet::encode() is the record");
    let licenses_before = card.store().read(records::psd::LICENSES).unwrap().unwrap();

    let export = |card: &mut TestCard| {
        let blob = ok(card.transmit(&psd_apdu::export_prepare(RegisterSetIndex(0))));
        let digest: [u8; DIGEST_LEN] = Blob::digest_of(&blob);
        ok(card.transmit(&psd_apdu::export_commit(RegisterSetIndex(0), &digest)));
        blob
    };
    // The first export also generates the seal key (32 bytes, once per PSD): export,
    // import, export again and compare the record with and without the entry.
    let first = export(&mut card);
    ok(card.transmit(&psd_apdu::import_set(&first)));
    let licenses_none = card.store().read(records::psd::LICENSES).unwrap().unwrap();
    let blob = export(&mut card);
    let licenses_after = card.store().read(records::psd::LICENSES).unwrap().unwrap();
    assert_eq!(card.store().read(set_id).unwrap(), None, "the set left");
    let entry = licenses_after.len() - licenses_none.len();
    // license 4 + epoch 8 + digest 16 + state 1 + slot 1 + control sum 8 + DR 8.
    let layout = 4 + 8 + DIGEST_LEN + 1 + 1 + 8 + 8;
    assert_eq!(entry, layout, "the LICENSES record grew by one entry");
    let parsed = Blob::decode(&blob).unwrap();
    println!(
        "bytes: exported blob {} (with a grant, serial {} octets, origin {} chars; sealed key {}, \
         device signature 64) on the host's disk",
        blob.len(),
        serial().len(),
        ORIGIN.len(),
        parsed.sealed.len(),
    );
    println!(
        "bytes: resident set record {} (RegisterSet::encode() with a grant, no last indicium) \
         vs outstanding-table entry {} in the PSD (license 4 + epoch 8 + digest 16 + state 1 + \
         slot 1 + control sum 8 + DR 8; LICENSES record {} -> {} -> {} bytes: installed, \
         first export (+ the 32-byte seal key, once) and back, exported): one parked set costs \
         {:.0}% of a resident one; at most {MAX_OUTSTANDING} parked",
        encoded.len(),
        entry,
        licenses_before.len(),
        licenses_none.len(),
        licenses_after.len(),
        100.0 * entry as f64 / encoded.len() as f64,
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    targets = bench
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    let (sign, verify) = (us(&SIGN), us(&VERIFY));
    if SIGN.lock().unwrap().0 == 0 || REQUEST.lock().unwrap().0 == 0 {
        // A filter left the anchors or the flows out: nothing to compare.
        bytes();
        return;
    }
    let line = |name: &str, slot: &Slot| {
        let t = us(slot);
        println!(
            "{name:<34} {:>8.0} /s  {t:>7.1} µs  = {:.2} signs = {:.2} verifies",
            1e6 / t,
            t / sign,
            t / verify
        );
    };
    line("raw p256 sign (IndiciumKey::sign)", &SIGN);
    line("raw p256 verify (verify_signature)", &VERIFY);
    line("LICENSE REQUEST (P1 01)", &REQUEST);
    line("LICENSE INSTALL", &INSTALL);
    line("request+install (card, in chain)", &FULL_CARD);
    line("  grant by the bench (PA+vendor)", &FULL_GRANT);
    line("EXPORT SET prepare+commit", &EXPORT);
    line("IMPORT SET", &IMPORT);
    let (req, inst) = (us(&REQUEST), us(&INSTALL));
    println!(
        "summary: request {req:.0} µs = {:.2} signs (key generation + 2 signatures); install \
         {inst:.0} µs = {:.2} verifies = 2 verifies ({:.0} µs) {:+.0} µs (template, decode, \
         commit); export {:.2} signs, import {:.2} signs; request+install {:.0}/s on the card \
         (the bench's grant, {:.0} µs, excluded)",
        req / sign,
        inst / verify,
        2.0 * verify,
        inst - 2.0 * verify,
        us(&EXPORT) / sign,
        us(&IMPORT) / sign,
        1e6 / us(&FULL_CARD),
        us(&FULL_GRANT),
    );
    bytes();
}
