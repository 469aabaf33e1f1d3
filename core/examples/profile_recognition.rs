//! Times the P-256 operations a recognition is made of (key generation, ECDH, ECDSA
//! verification and signing), to see where a transfer's time goes (docs/purse.md,
//! Benchmark).
//!
//! `cargo run --release -p openpsd-core --features test-util --example profile_recognition`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
use openpsd_core::crypto::{verify_signature, IndiciumKey};
use openpsd_core::platform::SeededPlatform;
use std::time::Instant;
fn t(name: &str, n: u32, mut f: impl FnMut()) {
    let s = Instant::now();
    for _ in 0..n {
        f();
    }
    println!(
        "{name}: {:.1} µs",
        s.elapsed().as_secs_f64() * 1e6 / f64::from(n)
    );
}
fn main() {
    let mut p = SeededPlatform::new(1);
    let k = IndiciumKey::generate(&mut p);
    let other = IndiciumKey::generate(&mut p);
    let pc = other.public_key_compressed();
    let pu = other.public_key();
    let sig = k.sign(b"hello");
    let pk = k.public_key();
    t("generate", 200, || {
        let _ = IndiciumKey::generate(&mut p);
    });
    t("public_key_compressed", 200, || {
        let _ = k.public_key_compressed();
    });
    t("agree compressed", 200, || {
        let _ = k.agree(&pc);
    });
    t("agree uncompressed", 200, || {
        let _ = k.agree(&pu);
    });
    t("verify", 200, || {
        assert!(verify_signature(&pk, b"hello", &sig));
    });
    t("sign", 200, || {
        let _ = k.sign(b"hello");
    });
    t("from_bytes", 200, || {
        let _ = IndiciumKey::from_bytes(&[7; 32]);
    });
}
