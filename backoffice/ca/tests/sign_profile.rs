//! The CA's sign profile against stock OpenSSL: a sign certificate is accepted for S/MIME
//! signing (`openssl verify -purpose smimesign`, the purpose `openssl cms -verify` applies
//! by default, so the card's detached signatures verify without `-purpose any`) and
//! refused as a time-stamping certificate; the postmark profile the other way round.
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use der::Encode as _;
use openpsd_ca::x509::{ca_certificate, customer_name, issue, pem, Leaf};
use openpsd_core::crypto::IndiciumKey;
use openpsd_core::psd::certmeter::attestation::Purpose;
use p256::ecdsa::SigningKey;

fn openssl(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn sign_certificates_are_for_smime_signing_and_postmark_ones_for_time_stamping() {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let ca_key = SigningKey::from_slice(&[7; 32]).unwrap();
    let mut ca_sec1 = [0u8; 65];
    ca_sec1.copy_from_slice(ca_key.verifying_key().to_sec1_point(false).as_bytes());
    let ca = ca_certificate(&ca_key, &ca_sec1, now - 86_400, now + 365 * 86_400).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("ca.pem"),
        pem("CERTIFICATE", &ca.to_der().unwrap()).unwrap(),
    )
    .unwrap();
    let key = IndiciumKey::from_bytes(&[9; 32]).unwrap().public_key();
    for (purpose, good, bad) in [
        (Purpose::Sign, "smimesign", "timestampsign"),
        (Purpose::Postmark, "timestampsign", "smimesign"),
    ] {
        let cert = issue(
            &ca,
            &ca_key,
            Leaf {
                purpose,
                subject: customer_name("alice", "5053443030303031", "42").unwrap(),
                serial: &[0x01, 0x02, purpose.code()],
                not_before: now - 3600,
                not_after: now + 30 * 86_400,
                public_key: &key,
                crl_url: "http://127.0.0.1:1/v1/ca/crl.der",
                permitted: None,
                ocsp_url: "http://127.0.0.1:1/ocsp",
            },
        )
        .unwrap();
        std::fs::write(
            d.join("cert.pem"),
            pem("CERTIFICATE", &cert.to_der().unwrap()).unwrap(),
        )
        .unwrap();
        let verify = |p: &str| {
            openssl(
                d,
                &["verify", "-purpose", p, "-CAfile", "ca.pem", "cert.pem"],
            )
        };
        let (ok, text) = verify(good);
        assert!(ok, "{purpose:?} for {good}: {text}");
        let (ok, text) = verify(bad);
        assert!(!ok, "{purpose:?} for {bad}: {text}");
    }
}
