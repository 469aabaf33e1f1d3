//! ISSUE POSTMARK (issue 15, "Measure") through the in-process card's full APDU path
//! (parse, checks, fee debit, TSTInfo and signed attributes, ECDSA signature, one commit of
//! the register set and the CERTMETER record to the in-memory store, reply) against raw
//! P-256 signing of the same signed-attributes bytes with the same key, in one run; and
//! the host's verification of a postmark token against a raw P-256 verify. Prints the
//! rates and the ratios at the end; the target for the APDU path is a ratio of at least 0.9.
//!
//! Raw signing calls the card's own signing function (`IndiciumKey::sign`) with the very
//! key the card holds (read back from the CERTMETER record), over the signed attributes
//! of the last postmark the card issued, so both sides run the same machine code on the
//! same bytes and the ratio is the cost of the APDU path (core/benches/indicium.rs
//! explains why a second, directly inlined copy of `p256` is not the reference).
//!
//! Verification: `expand` (compact form → RFC 3161 token; it checks the signature, one
//! ECDSA verify) followed by `verify` (the token's signature again and the certificate's
//! signature under the CA: two more), against one raw verify of the same bytes
//! (`crypto::verify_signature`, key parsed per call as the host does). `verify` alone, on
//! a token already expanded, is measured too: it is what a relying party holding a token
//! does. The ratios are therefore expected near 1/3 and 1/2, not 1: the count of ECDSA
//! verifies, not overhead, sets them.
//!
//! `cargo bench -p openpsd-tests --bench postmark`
//! (`scripts/postmark-bench.sh` runs it next to `openssl ts -reply` / `ts -verify`.)
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion};
use openpsd_core::client::psd_apdu;
use openpsd_core::crypto::{self, sha256};
use openpsd_core::psd::certmeter::attestation::Purpose;
use openpsd_core::psd::certmeter::postmark::PostmarkRequest;
use openpsd_core::psd::certmeter::rates::Service;
use openpsd_core::psd::certmeter::state::CertMeterState;
use openpsd_core::psd::certmeter::tst::{signed_attrs_der, CompactPostmark};
use openpsd_core::types::*;
use openpsd_tests::certmeter::*;
use openpsd_tests::{expect_ok, Kms, TestCard, MAX_DR};

/// (iterations, time) measured by each benchmark, for the ratios printed at the end.
static APDU: Mutex<(u64, Duration)> = Mutex::new((0, Duration::ZERO));
static RAW_SIGN: Mutex<(u64, Duration)> = Mutex::new((0, Duration::ZERO));
static EXPAND_VERIFY: Mutex<(u64, Duration)> = Mutex::new((0, Duration::ZERO));
static VERIFY: Mutex<(u64, Duration)> = Mutex::new((0, Duration::ZERO));
static RAW_VERIFY: Mutex<(u64, Duration)> = Mutex::new((0, Duration::ZERO));
/// Store writes of one postmark and the size of the CERTMETER record it rewrites: what
/// the APDU path adds to the signature besides parsing and encoding.
static STORE: Mutex<(u64, usize)> = Mutex::new((0, 0));

fn record(slot: &Mutex<(u64, Duration)>, iters: u64, t: Duration) {
    let mut s = slot.lock().unwrap();
    s.0 += iters;
    s.1 += t;
}

/// Times `iters` runs of `f` for criterion and keeps the total for the final ratios.
fn timed(slot: &Mutex<(u64, Duration)>, iters: u64, mut f: impl FnMut()) -> Duration {
    let t = Instant::now();
    for _ in 0..iters {
        f();
    }
    let e = t.elapsed();
    record(slot, iters, e);
    e
}

const SET0: RegisterSetIndex = RegisterSetIndex(0);
/// The postmark fee of the benchmark's table: small but not zero, so every postmark
/// debits the register set as a paying customer's would.
const BENCH_FEE: u64 = 1;

/// A PSD with an active postmark key certified by the standard test CA, a table that
/// charges [`BENCH_FEE`] per postmark, and DR filled to the device's limit: ~10^6
/// postmarks, far more than any criterion run issues. Returns the card, the postmark
/// certificate and the CA (whose certificate `verify` checks it against).
fn postmark_card() -> (TestCard, Vec<u8>, TestCa) {
    let (mut card, device_pk) = certmeter_card(15, false);
    let ca = TestCa::standard();
    let (_, cert) = activate_postmark_key(&mut card, &device_pk, &ca);
    // A newer table with the small fee (the standard one charges 10, and certmeter_card's
    // funds would last only ~1000 postmarks).
    let table = rate_table(
        2,
        today(),
        &[
            (Service::Postmark, BENCH_FEE),
            (Service::Certificate, CERTIFICATE_FEE),
        ],
    );
    expect_ok(&card.transmit(&psd_apdu::load_rate_table(&table)));
    let dr = openpsd_tests::registers(&mut card, 0).dr.0;
    let msg = Kms::new().refill_for(&mut card, SET0, Amount(MAX_DR.0 - dr), [2; 8]);
    expect_ok(&card.transmit(&psd_apdu::refill(SET0, &msg)));
    (card, cert, ca)
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("postmark");

    let (mut card, cert, ca) = postmark_card();
    let document = b"openpsd postmark benchmark document";
    let req = PostmarkRequest {
        transaction: TransactionId([0; 8]),
        digest: sha256(document),
        // `openssl ts -query` asks for a 64-bit nonce by default; so does this host.
        nonce: vec![0x5A; 8],
    };
    let mut apdu = psd_apdu::issue_postmark(SET0, &req);
    // Short APDU: CLA INS P1 P2 Lc, then the data, whose first 8 bytes are the
    // transaction ID (rewritten below for every postmark).
    assert_eq!(apdu[4] as usize, req.encode().len(), "short APDU");
    assert_eq!(&apdu[5..5 + req.encode().len()], &req.encode()[..]);
    let mut reply = Vec::with_capacity(512);
    let mut txn = 0u64;
    group.bench_function("apdu_path", |b| {
        b.iter_custom(|iters| {
            timed(&APDU, iters, || {
                // A new transaction ID each time: a repeated one would be answered from
                // the stored postmark without a debit or a signature.
                txn += 1;
                apdu[5..13].copy_from_slice(&txn.to_be_bytes());
                card.handle(black_box(&apdu), &mut reply);
                debug_assert_eq!(psd_apdu::sw(&reply), 0x9000);
            })
        })
    });
    assert_eq!(psd_apdu::sw(&reply), 0x9000, "the last postmark was issued");
    // One more, outside the timing, to count what it writes.
    let writes = card.store().writes();
    txn += 1;
    apdu[5..13].copy_from_slice(&txn.to_be_bytes());
    card.handle(&apdu, &mut reply);
    assert_eq!(psd_apdu::sw(&reply), 0x9000, "the last postmark was issued");
    *STORE.lock().unwrap() = (
        card.store().writes() - writes,
        certmeter_record(&card).expect("CERTMETER record").len(),
    );
    let compact = CompactPostmark::decode(&reply[..reply.len() - 2]).expect("compact postmark");

    // The card's own postmark key and the bytes it signed for the last postmark.
    let state = CertMeterState::decode(&certmeter_record(&card).expect("CERTMETER record"))
        .expect("CERTMETER decodes");
    let (_, slot) = state
        .active(Purpose::Postmark)
        .expect("active postmark key");
    let key = slot.key.clone().expect("the slot holds its scalar");
    let attrs = signed_attrs_der(&compact.tst_info, &slot.certificate_hash());
    assert!(
        crypto::verify_signature(&slot.public_key, &attrs, &compact.signature),
        "the card signed exactly these bytes with this key"
    );
    group.bench_function("raw_sign", |b| {
        b.iter_custom(|iters| {
            timed(&RAW_SIGN, iters, || {
                black_box(key.sign(black_box(&attrs)));
            })
        })
    });

    let digest = sha256(document);
    group.bench_function("expand_verify", |b| {
        b.iter_custom(|iters| {
            timed(&EXPAND_VERIFY, iters, || {
                let token = openpsd_pki::postmark::expand(black_box(&compact), &cert, &[])
                    .expect("expands");
                black_box(
                    openpsd_pki::postmark::verify(&token, &digest, &ca.cert_der).expect("verifies"),
                );
            })
        })
    });
    let token = openpsd_pki::postmark::expand(&compact, &cert, &[]).expect("expands");
    group.bench_function("verify", |b| {
        b.iter_custom(|iters| {
            timed(&VERIFY, iters, || {
                black_box(
                    openpsd_pki::postmark::verify(black_box(&token), &digest, &ca.cert_der)
                        .expect("verifies"),
                );
            })
        })
    });
    group.bench_function("raw_verify", |b| {
        b.iter_custom(|iters| {
            timed(&RAW_VERIFY, iters, || {
                assert!(crypto::verify_signature(
                    &slot.public_key,
                    black_box(&attrs),
                    &compact.signature
                ));
            })
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
    let (apdu, sign) = (rate(&APDU), rate(&RAW_SIGN));
    let (ev, v, rv) = (rate(&EXPAND_VERIFY), rate(&VERIFY), rate(&RAW_VERIFY));
    // Only when every group ran (a filter on the command line runs some of them).
    if [apdu, sign, ev, v, rv].iter().all(|r| *r > 0.0) {
        // `rate NAME PER_SECOND` lines are what scripts/postmark-bench.sh reads.
        println!("rate apdu_path {apdu:.0}");
        println!("rate raw_sign {sign:.0}");
        println!("rate expand_verify {ev:.0}");
        println!("rate verify {v:.0}");
        println!("rate raw_verify {rv:.0}");
        let (writes, record_len) = *STORE.lock().unwrap();
        println!(
            "store per postmark: {writes} cell writes (2 records), CERTMETER record of {record_len} bytes rewritten"
        );
        println!("postmark via APDU path:          {apdu:.0} /s");
        println!("raw p256 signing (card's code):  {sign:.0} /s");
        println!(
            "ratio APDU path / raw signing: {:.3} (target >= 0.9)",
            apdu / sign
        );
        println!("expand + verify (3 ECDSA verifies): {ev:.0} /s");
        println!("verify a token (2 ECDSA verifies):  {v:.0} /s");
        println!("raw p256 verify (1):                {rv:.0} /s");
        println!(
            "ratio expand+verify / raw verify: {:.3}; verify / raw verify: {:.3} (bounds 1/3 and 1/2)",
            ev / rv,
            v / rv
        );
    }
}
