//! Flow 6 (seed 004) end to end, with a real PSD and every service as it runs apart
//! (mutual TLS, its own database): the vendor publishes a rate table and vouches for the
//! CA's key; the meter hands both to the device's owner after a refill (step 257); the PSD
//! generates a postmark key and attests it; the meter passes the attestation to the CA,
//! which certifies it for the customer's account (Fig. 5); the PSD pays the certificate fee
//! at install, then a postmark fee (Fig. 3); the postmark expands into an RFC 3161 token
//! that stock `openssl ts -verify` accepts; the next inspection's audit (version 5, with the
//! fees) is accepted by the KMS and the meter; a revoked certificate is "revoked" at the
//! CA's OCSP responder for stock `openssl ocsp`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::{parties, Client, Psd};
use openpsd_backoffice::server::spawn_all;
use openpsd_core::psd::certmeter::attestation::Purpose;
use openpsd_core::psd::certmeter::postmark::PostmarkRequest;
use openpsd_core::psd::certmeter::rates::RateTable;
use openpsd_core::types::*;
use openpsd_protocol::ca::{CertificateAnswer, MeterCertificateRequest};
use openpsd_protocol::vendor::DeviceUpdates;
use openpsd_service_kit::tls::Role;

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

#[tokio::test(flavor = "multi_thread")]
async fn flow6_rates_certificate_postmark_audit_and_revocation_through_the_services() {
    let dir = tempfile::tempdir().unwrap();
    let h = spawn_all(dir.path()).await.unwrap();
    let (host, admin) = parties(&h.meter.url, &h.kms.url, &h.recharge.url, &h.pki);
    let mut psd = Psd::licensed(1, &h);
    admin.register(&psd).await;
    admin.fund("acme", 100_000).await;
    let acme = host.as_customer("acme");

    // The vendor publishes the rates and vouches for the CA's key (operator's calls).
    let vendor = Client::new(&h.vendor.url, &h.pki, Some(Role::Operator));
    let _: serde_json::Value = vendor
        .post(
            "/v1/rates",
            &serde_json::json!({
                "version": 1, "effective": "2000-01-01",
                "fees": { "postmark": 10, "certificate": 500 },
            }),
        )
        .await
        .unwrap();
    let ca_key =
        std::fs::read_to_string(dir.path().join("ca").join(openpsd_ca::PUBLIC_KEY_FILE)).unwrap();
    let _: serde_json::Value = vendor
        .post(
            "/v1/anchors",
            &serde_json::json!({ "kind": "ca", "public_key": ca_key.trim() }),
        )
        .await
        .unwrap();

    // A refill, then the meter's updates loaded into the PSD (step 257).
    host.refill(&mut psd, "r1", "acme", 10_000).await.unwrap();
    let updates: DeviceUpdates = acme
        .get(&format!("/v1/devices/{}/updates", psd.device_id()))
        .await
        .unwrap();
    assert_eq!(updates.rate_tables.len(), 1);
    for t in &updates.rate_tables {
        let bytes = hex::decode(t).unwrap();
        let table = RateTable::open(&bytes, &h.vendor_public_key).unwrap();
        assert_eq!(psd.client.load_rate_table(&bytes).unwrap(), table.version);
    }
    for a in &updates.anchors {
        psd.client
            .load_trust_anchor(&hex::decode(a).unwrap())
            .unwrap();
    }

    // Fig. 5: the key made inside, attested; the CA certifies it for acme's account. The
    // PSD's clock (its host's) stays where it was set, a second and more behind the CA's
    // when it issues: the certificate must still cover the PSD's next postmark.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let (attestation, a) = psd.client.generate_key(Purpose::Postmark, false).unwrap();
    let request = MeterCertificateRequest {
        device_id: psd.device_id(),
        attestation: hex::encode(&attestation),
    };
    let answer: CertificateAnswer = acme.post("/v1/certificates", &request).await.unwrap();
    // Another customer may not have acme's device certified.
    admin.ensure_customer("bob").await;
    let bob = host.as_customer("bob");
    let refused = bob
        .post::<_, CertificateAnswer>("/v1/certificates", &request)
        .await;
    assert_eq!(refused.unwrap_err().status, 404);
    let cert = hex::decode(&answer.certificate).unwrap();
    let ca_cert = hex::decode(&answer.ca_certificate).unwrap();
    let before = psd.registers(0);
    let (fee, regs) = psd
        .client
        .install_key_certificate(a.slot, RegisterSetIndex(0), &cert)
        .unwrap();
    assert_eq!(fee, Amount(500));
    assert_eq!(regs.dr.0, before.dr.0 - 500);
    assert_eq!(regs.ar.0, before.ar.0 + 500);

    // Fig. 3: a postmark of a document for 0.10, expanded and checked by openssl.
    let doc = b"the contract, as signed";
    let req = PostmarkRequest {
        transaction: TransactionId([1; 8]),
        digest: openpsd_core::crypto::sha256(doc),
        nonce: vec![0x2A, 0x17],
    };
    let compact = psd
        .client
        .issue_postmark(RegisterSetIndex(0), &req)
        .unwrap();
    assert_eq!(psd.registers(0).dr.0, before.dr.0 - 510);
    let token = openpsd_pki::postmark::expand(&compact, &cert, &[]).unwrap();
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("doc"), doc).unwrap();
    std::fs::write(work.path().join("t.tst"), &token).unwrap();
    std::fs::write(
        work.path().join("ca.pem"),
        openpsd_pki::pem("CERTIFICATE", &ca_cert),
    )
    .unwrap();
    std::fs::write(
        work.path().join("tsa.pem"),
        openpsd_pki::pem("CERTIFICATE", &cert),
    )
    .unwrap();
    let (ok, out) = openssl(
        work.path(),
        &[
            "ts",
            "-verify",
            "-data",
            "doc",
            "-in",
            "t.tst",
            "-token_in",
            "-CAfile",
            "ca.pem",
            "-untrusted",
            "tsa.pem",
        ],
    );
    assert!(ok && out.contains("Verification: OK"), "{out}");
    let (ok, out) = openssl(
        work.path(),
        &[
            "verify",
            "-purpose",
            "timestampsign",
            "-CAfile",
            "ca.pem",
            "tsa.pem",
        ],
    );
    assert!(ok, "{out}");

    // The next inspection: the audit is version 5 (the fees and the newest rate table
    // held), and the meter takes it.
    let audit_hex = psd.audit(0, &"00".repeat(16));
    assert_eq!(
        &audit_hex[2..4],
        "05",
        "an audit of a PSD holding a rate table is version 5"
    );
    host.inspect(&mut psd, 0).await.unwrap();

    // Revocation at the CA (the meter's or an operator's call): OCSP says so at once.
    let ca_admin = Client::new(&h.ca.url, &h.pki, Some(Role::Operator));
    let _: serde_json::Value = ca_admin
        .post(
            &format!("/v1/certificates/{}/revoke", answer.serial),
            &serde_json::json!({ "reason": "key compromise" }),
        )
        .await
        .unwrap();
    let url = format!("{}/ocsp", h.ca_public.url);
    let (ok, out) = openssl(
        work.path(),
        &[
            "ocsp", "-issuer", "ca.pem", "-cert", "tsa.pem", "-url", &url, "-CAfile", "ca.pem",
        ],
    );
    assert!(ok && out.contains("tsa.pem: revoked"), "{out}");
    h.stop().await;
}
