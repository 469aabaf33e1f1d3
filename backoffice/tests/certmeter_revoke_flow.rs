//! Revocation (seed 004 Fig. 6) end to end, with a real PSD and every service as it runs
//! apart: the PSD signs a revocation request (REVOCATION REQUEST); the meter relays it for
//! the device's owner to the CA, which checks it with the device key the KMS registered,
//! revokes the certificate at once (stock `openssl verify -crl_check` and `openssl ocsp`
//! say revoked) and answers a signed order; the PSD applies it (REVOKE KEY: the key
//! retired, the Revocation fee paid from DR) and its signed confirmation is recorded at the
//! CA (step 622). Another customer, a forged request, a confirmation with other bytes: all
//! refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::{parties, Client, Psd};
use openpsd_backoffice::server::spawn_all;
use openpsd_core::psd::certmeter::attestation::Purpose;
use openpsd_core::psd::certmeter::postmark::PostmarkRequest;
use openpsd_core::psd::certmeter::revoke::{Outcome, Reason, RevocationOrder};
use openpsd_core::types::*;
use openpsd_protocol::ca::{
    CertificateAnswer, MeterCertificateRequest, MeterRevocationConfirmation,
    MeterRevocationRequest, RevocationOrderAnswer, RevocationRecord,
};
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

async fn public_get(base: &str, path: &str) -> Vec<u8> {
    let r = reqwest::get(format!("{base}{path}")).await.unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.bytes().await.unwrap().to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn fig6_request_order_revoke_key_confirmation_and_the_crl_says_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let h = spawn_all(dir.path()).await.unwrap();
    let (host, admin) = parties(&h.meter.url, &h.kms.url, &h.recharge.url, &h.pki);
    let mut psd = Psd::licensed(1, &h);
    admin.register(&psd).await;
    admin.fund("acme", 100_000).await;
    let acme = host.as_customer("acme");

    let vendor = Client::new(&h.vendor.url, &h.pki, Some(Role::Operator));
    let _: serde_json::Value = vendor
        .post(
            "/v1/rates",
            &serde_json::json!({
                "version": 1, "effective": "2000-01-01",
                "fees": { "postmark": 10, "certificate": 500, "revocation": 25 },
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
    host.refill(&mut psd, "r1", "acme", 10_000).await.unwrap();
    psd.load_updates(&acme).await;
    let (attestation, a) = psd.client.generate_key(Purpose::Postmark, false).unwrap();
    let answer: CertificateAnswer = acme
        .post(
            "/v1/certificates",
            &MeterCertificateRequest {
                device_id: psd.device_id(),
                attestation: hex::encode(&attestation),
            },
        )
        .await
        .unwrap();
    let cert = hex::decode(&answer.certificate).unwrap();
    let ca_cert = hex::decode(&answer.ca_certificate).unwrap();
    psd.client
        .install_key_certificate(a.slot, RegisterSetIndex(0), &cert)
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    std::fs::write(w.join("ca.pem"), openpsd_pki::pem("CERTIFICATE", &ca_cert)).unwrap();
    std::fs::write(w.join("cert.pem"), openpsd_pki::pem("CERTIFICATE", &cert)).unwrap();
    let crl_args = [
        "verify",
        "-crl_check",
        "-CRLfile",
        "crl.der",
        "-CAfile",
        "ca.pem",
        "cert.pem",
    ];
    std::fs::write(
        w.join("crl.der"),
        public_get(&h.ca_public.url, "/v1/ca/crl.der").await,
    )
    .unwrap();
    let (ok, out) = openssl(w, &crl_args);
    assert!(ok && out.contains("cert.pem: OK"), "before: {out}");

    // Step 604: the PSD's request, relayed by the meter for the device's owner.
    let bytes = psd
        .client
        .revocation_request(a.slot, Reason::KeyCompromise, &[0x42; 16])
        .unwrap();
    let request = MeterRevocationRequest {
        device_id: psd.device_id(),
        request: hex::encode(&bytes),
    };
    admin.ensure_customer("bob").await;
    let bob = host.as_customer("bob");
    let refused = bob
        .post::<_, RevocationOrderAnswer>("/v1/revocations", &request)
        .await;
    assert_eq!(
        refused.unwrap_err().status,
        404,
        "another customer's device"
    );
    let mut forged = bytes.clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let refused = acme
        .post::<_, RevocationOrderAnswer>(
            "/v1/revocations",
            &MeterRevocationRequest {
                device_id: psd.device_id(),
                request: hex::encode(&forged),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(refused.status, 422, "{refused:?}");
    let order: RevocationOrderAnswer = acme.post("/v1/revocations", &request).await.unwrap();
    assert_eq!(order.counter, 1);
    assert_eq!(order.certificate.serial, answer.serial);
    assert!(order.certificate.revoked_at.is_some());
    let order_bytes = hex::decode(&order.order).unwrap();
    let ca_pk = hex::decode(ca_key.trim()).unwrap();
    let o = RevocationOrder::open(&order_bytes, &ca_pk).expect("signed by the CA key");
    assert_eq!(
        (o.slot, o.counter, o.reason),
        (a.slot, 1, Reason::KeyCompromise)
    );
    // Asked again: the same order.
    let again: RevocationOrderAnswer = acme.post("/v1/revocations", &request).await.unwrap();
    assert_eq!(again.order, order.order);

    // Revoked at once: the CRL and OCSP say so to stock openssl.
    std::fs::write(
        w.join("crl.der"),
        public_get(&h.ca_public.url, "/v1/ca/crl.der").await,
    )
    .unwrap();
    let (ok, out) = openssl(w, &crl_args);
    eprintln!("openssl {}\n{out}", crl_args.join(" "));
    assert!(!ok && out.contains("certificate revoked"), "{out}");
    let url = format!("{}/ocsp", h.ca_public.url);
    let (ok, out) = openssl(
        w,
        &[
            "ocsp", "-issuer", "ca.pem", "-cert", "cert.pem", "-url", &url, "-CAfile", "ca.pem",
        ],
    );
    assert!(ok && out.contains("cert.pem: revoked"), "{out}");

    // Steps 612-620: the PSD retires the key and pays the fee.
    let before = psd.registers(0);
    let (confirmation, c) = psd
        .client
        .revoke_key(RegisterSetIndex(0), &order_bytes)
        .unwrap();
    assert_eq!(
        (c.outcome, c.fee, c.counter),
        (Outcome::Paid, Amount(25), 1)
    );
    assert_eq!(psd.registers(0).dr.0, before.dr.0 - 25);
    let refused = psd.client.issue_postmark(
        RegisterSetIndex(0),
        &PostmarkRequest {
            transaction: TransactionId([9; 8]),
            digest: [1; 32],
            nonce: vec![],
        },
    );
    assert!(format!("{:?}", refused.unwrap_err()).contains("KeyRevoked"));

    // Step 622: the confirmation recorded; the same again answers the same.
    let body = MeterRevocationConfirmation {
        device_id: psd.device_id(),
        confirmation: hex::encode(&confirmation),
    };
    let r: RevocationRecord = acme
        .post("/v1/revocations/confirmations", &body)
        .await
        .unwrap();
    assert_eq!(
        (r.counter, r.serial.as_str(), r.outcome.as_deref(), r.fee),
        (1, answer.serial.as_str(), Some("paid"), Some(25))
    );
    assert!(r.confirmed_at.is_some());
    let r2: RevocationRecord = acme
        .post("/v1/revocations/confirmations", &body)
        .await
        .unwrap();
    assert_eq!(r2, r);
    let refused = bob
        .post::<_, RevocationRecord>("/v1/revocations/confirmations", &body)
        .await;
    assert_eq!(refused.unwrap_err().status, 404);
    h.stop().await;
}
