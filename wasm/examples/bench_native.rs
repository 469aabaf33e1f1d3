//! Indicium issuance per second natively, with the exact code the wasm module runs
//! (`PsdDevice`): the typed `issue_indicium` (APDU, signature, decode, READ REGISTERS) and
//! the raw ISSUE INDICIUM APDU alone. `scripts/wasm-bench.sh` compares these with the
//! same loops in Node and Chromium (`wasm/bench/bench.mjs`).
//!
//! `cargo run --release -p openpsd-wasm --example bench_native [seconds]` prints one JSON line.
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use openpsd_core::client::psd_apdu;
use openpsd_core::crypto::IndiciumKey;
use openpsd_wasm::personalize::{build_personalization, demo_kms_refill};
use openpsd_wasm::views::{IndiciumArgs, LicenseArg, PersonalizationArgs};
use openpsd_wasm::PsdDevice;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seconds: f64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(3.0);
    // A fixed demo KMS key: the bench funds the PSD as the KMS would.
    let kms = IndiciumKey::from_bytes(&[0x11; 32]).ok_or("demo KMS key")?;
    let args = PersonalizationArgs {
        licenses: vec![LicenseArg {
            license: 4711,
            origin: "10115".into(),
        }],
        max_postage: "1.00".into(),
        max_dr: "99999999.00".into(),
        kms_public_key: Some(hex::encode(kms.public_key())),
        ..Default::default()
    };
    let built = build_personalization(&args, &[7; 32])?;
    let mut psd = PsdDevice::create(&built.personalization.0, &[8; 32], None)?;
    let audit = psd.audit(&[1; 16], 0)?;
    let device_key = psd.info()?.public_key;
    let kms_hex = hex::encode(kms.secret_bytes());
    let msg = demo_kms_refill(&kms_hex, &device_key, &audit, "99999999.00", None)?;
    psd.apply_refill(&msg, 0)?;

    let piece = IndiciumArgs {
        postage: "0.01".into(),
        date: "2026-11-21".into(),
        rate: 1,
        origin: "10115".into(),
        destination: "20095".into(),
        ..Default::default()
    };
    let typed = rate(seconds, || {
        psd.issue_indicium(&piece)
            .map(|_| ())
            .map_err(|e| e.to_string())
    })?;

    let mut req = psd.indicium_request(&piece)?;
    let mut n: u64 = 0;
    let raw = rate(seconds, || {
        n += 1;
        req.transaction.0 = n.to_be_bytes();
        let resp = psd.transmit(&psd_apdu::issue_indicium(Default::default(), &req));
        match psd_apdu::sw(&resp) {
            0x9000 => Ok(()),
            sw => Err(format!("{sw:04X}")),
        }
    })?;
    println!("{{\"typed\":{typed:.1},\"raw\":{raw:.1}}}");
    Ok(())
}

/// Calls `f` in batches for `seconds` (after a short warm-up); returns calls per second.
fn rate(seconds: f64, mut f: impl FnMut() -> Result<(), String>) -> Result<f64, String> {
    for _ in 0..20 {
        f()?;
    }
    let t = Instant::now();
    let mut calls = 0u64;
    while t.elapsed().as_secs_f64() < seconds {
        for _ in 0..20 {
            f()?;
        }
        calls += 20;
    }
    Ok(calls as f64 / t.elapsed().as_secs_f64())
}
