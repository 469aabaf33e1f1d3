//! The certificate authority (seed 004 Fig. 5-6): a PSD's key attestation becomes, through
//! the meter server, a certificate of the customer's account that stock `openssl verify`
//! accepts; every forgery and every wrong caller is refused with nothing issued; a
//! revocation shows at once in the CRL (`openssl verify -crl_check`) and in OCSP
//! (`openssl ocsp`), both fetched over the CA's public listener as any relying party would.
//!
//! All services run with mutual TLS exactly as apart (`spawn_all`). Attestations are made
//! with core's `KeyAttestation::sign` and the device key read out of a card-sim PSD (the
//! card's GENERATE KEY is wired elsewhere): the same bytes the card will send.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::{expect_refused, parties, Client, Psd};
use openpsd_core::crypto::IndiciumKey;
use openpsd_core::psd::certmeter::attestation::{KeyAttestation, Purpose};
use openpsd_core::types::DeviceId;
use openpsd_protocol::ca::{
    CertificateAnswer, CertificateRequest, CertificateRevocation, CertificateView,
    MeterCertificateRequest,
};
use openpsd_protocol::Revocation;
use openpsd_service_kit::codec::OsRandom;
use openpsd_service_kit::tls::Role;

fn device_id(psd: &Psd) -> DeviceId {
    DeviceId(hex::decode(psd.device_id()).unwrap().try_into().unwrap())
}

/// GENERATE KEY's answer for a new key of `purpose`, signed by `device_key`.
fn attest(
    psd: &Psd,
    device_key: &IndiciumKey,
    purpose: Purpose,
    generation: u32,
) -> (Vec<u8>, IndiciumKey) {
    let key = IndiciumKey::generate(&mut OsRandom);
    let a = KeyAttestation {
        device: device_id(psd),
        slot: 1,
        purpose,
        generation,
        public_key: key.public_key(),
    };
    (a.sign(device_key, &key), key)
}

fn body(psd: &Psd, attestation: &[u8]) -> MeterCertificateRequest {
    MeterCertificateRequest {
        device_id: psd.device_id(),
        attestation: hex::encode(attestation),
    }
}

fn openssl(args: &[&str], dir: &Path) -> (bool, String) {
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
    eprintln!("$ openssl {}\n{text}", args.join(" "));
    (out.status.success(), text)
}

fn write_pem(path: &Path, label: &str, der: &[u8]) {
    std::fs::write(path, openpsd_ca::x509::pem(label, der).unwrap()).unwrap();
}

/// A plain-HTTP GET on the CA's public listener (what `openssl` and browsers use).
async fn public_get(base: &str, path: &str) -> Vec<u8> {
    let r = reqwest::get(format!("{base}{path}")).await.unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.bytes().await.unwrap().to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn attested_key_becomes_a_certificate_openssl_accepts_and_revocation_shows_in_crl_and_ocsp() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let h = openpsd_backoffice::spawn_all(dir).await.unwrap();
    let (host, admin) = parties(&h.meter.url, &h.kms.url, &h.recharge.url, &h.pki);
    let psd = Psd::new(1, 0, &h.kms_public_key);
    admin.register_to(&psd, "alice").await;
    let alice = host.as_customer("alice");
    let account = host.customers.account("alice");
    let device_key = psd.dumped_key();
    let (att, _key) = attest(&psd, &device_key, Purpose::Postmark, 1);

    // A subject in the request is not a field: it is ignored, the account names the subject.
    let mut spoofed = serde_json::to_value(body(&psd, &att)).unwrap();
    spoofed["subject"] = "CN=mallory,O=openpsd certificate authority".into();
    spoofed["username"] = "mallory".into();
    let a: CertificateAnswer = alice.post("/v1/certificates", &spoofed).await.unwrap();
    // The same attestation again: the same certificate.
    let again: CertificateAnswer = alice
        .post("/v1/certificates", &body(&psd, &att))
        .await
        .unwrap();
    assert_eq!(again, a);

    let work = dir.join("openssl");
    std::fs::create_dir_all(&work).unwrap();
    let ca_der = hex::decode(&a.ca_certificate).unwrap();
    // The CA certificate the public listener serves is the one in the answer and in ca.pem.
    assert_eq!(
        public_get(&h.ca_public.url, "/v1/ca/certificate").await,
        ca_der
    );
    let ca_pem = std::fs::read_to_string(dir.join("ca").join(openpsd_ca::CA_FILE)).unwrap();
    assert_eq!(
        String::from_utf8(public_get(&h.ca_public.url, "/v1/ca/certificate.pem").await).unwrap(),
        ca_pem
    );
    std::fs::write(work.join("ca.pem"), &ca_pem).unwrap();
    // The key a trust anchor carries to the PSDs is the certificate's.
    let public_hex =
        std::fs::read_to_string(dir.join("ca").join(openpsd_ca::PUBLIC_KEY_FILE)).unwrap();
    let ca_cert = <x509_cert::Certificate as der::Decode>::from_der(&ca_der).unwrap();
    assert_eq!(
        hex::decode(public_hex.trim()).unwrap(),
        ca_cert
            .tbs_certificate()
            .subject_public_key_info()
            .subject_public_key
            .raw_bytes()
    );
    write_pem(
        &work.join("cert.pem"),
        "CERTIFICATE",
        &hex::decode(&a.certificate).unwrap(),
    );

    let (ok, out) = openssl(&["verify", "-CAfile", "ca.pem", "cert.pem"], &work);
    assert!(ok && out.contains("cert.pem: OK"), "{out}");
    let (ok, text) = openssl(&["x509", "-in", "cert.pem", "-noout", "-text"], &work);
    assert!(ok, "{text}");
    let subject = format!(
        "Subject: O = openpsd customer {account}, serialNumber = {}, CN = alice",
        psd.device_id()
    );
    assert!(text.contains(&subject), "{subject} in\n{text}");
    assert!(!text.contains("mallory"), "{text}");
    assert!(
        text.contains("Issuer: C = DE, O = openpsd, CN = openpsd certificate authority"),
        "{text}"
    );
    let eku = text
        .split("X509v3 Extended Key Usage: critical")
        .nth(1)
        .expect("a critical EKU");
    assert_eq!(
        eku.lines().nth(1).unwrap().trim(),
        "Time Stamping",
        "{text}"
    );
    for want in [
        "X509v3 Basic Constraints: critical",
        "CA:FALSE",
        "X509v3 Key Usage: critical",
        "Digital Signature, Non Repudiation",
        "X509v3 Subject Key Identifier",
        "X509v3 Authority Key Identifier",
        format!("URI:{}/v1/ca/crl.der", h.ca_public.url).as_str(),
        format!("OCSP - URI:{}/ocsp", h.ca_public.url).as_str(),
    ] {
        assert!(text.contains(want), "{want} in\n{text}");
    }
    // Serial: 16 octets, positive.
    assert_eq!(a.serial.len(), 32);
    assert!(u8::from_str_radix(&a.serial[..2], 16).unwrap() < 0x80);
    let (ok, out) = openssl(
        &[
            "verify",
            "-purpose",
            "timestampsign",
            "-CAfile",
            "ca.pem",
            "cert.pem",
        ],
        &work,
    );
    assert!(ok, "a TSA certificate: {out}");

    // Good before the revocation, in the CRL and in OCSP.
    let url = format!("{}/ocsp", h.ca_public.url);
    let ocsp_args = [
        "ocsp", "-issuer", "ca.pem", "-cert", "cert.pem", "-url", &url, "-CAfile", "ca.pem",
    ];
    let (ok, out) = openssl(&ocsp_args, &work);
    assert!(ok && out.contains("cert.pem: good"), "{out}");
    assert!(out.contains("Response verify OK"), "{out}");
    assert!(!out.contains("WARNING"), "the nonce is echoed: {out}");
    std::fs::write(
        work.join("crl.der"),
        public_get(&h.ca_public.url, "/v1/ca/crl.der").await,
    )
    .unwrap();
    let crl_args = [
        "verify",
        "-crl_check",
        "-CRLfile",
        "crl.der",
        "-CAfile",
        "ca.pem",
        "cert.pem",
    ];
    let (ok, out) = openssl(&crl_args, &work);
    assert!(ok && out.contains("cert.pem: OK"), "{out}");
    let (_, n1) = openssl(
        &[
            "crl",
            "-inform",
            "DER",
            "-in",
            "crl.der",
            "-noout",
            "-crlnumber",
        ],
        &work,
    );

    // Revoked by the operator: at once in the CRL and in OCSP.
    let operator = Client::new(&h.ca.url, &h.pki, Some(Role::Operator));
    let v: CertificateView = operator
        .post(
            &format!("/v1/certificates/{}/revoke", a.serial),
            &CertificateRevocation {
                reason: "key compromise".into(),
            },
        )
        .await
        .unwrap();
    assert!(v.revoked_at.is_some());
    assert_eq!(
        (v.device_id.as_str(), v.purpose.as_str()),
        (psd.device_id().as_str(), "postmark")
    );
    let (ok, out) = openssl(&ocsp_args, &work);
    assert!(ok && out.contains("cert.pem: revoked"), "{out}");
    assert!(out.contains("Response verify OK"), "{out}");
    std::fs::write(
        work.join("crl.der"),
        public_get(&h.ca_public.url, "/v1/ca/crl.der").await,
    )
    .unwrap();
    let (ok, out) = openssl(&crl_args, &work);
    assert!(!ok && out.contains("certificate revoked"), "{out}");
    let (_, n2) = openssl(
        &[
            "crl",
            "-inform",
            "DER",
            "-in",
            "crl.der",
            "-noout",
            "-crlnumber",
        ],
        &work,
    );
    let number =
        |s: &str| u64::from_str_radix(s.trim().trim_start_matches("crlNumber=0x"), 16).unwrap();
    assert!(number(&n2) > number(&n1), "{n1} {n2}");

    // The sign profile: emailProtection, not critical.
    let (other_att, _) = attest(&psd, &device_key, Purpose::Sign, 2);
    let s: CertificateAnswer = alice
        .post("/v1/certificates", &body(&psd, &other_att))
        .await
        .unwrap();
    write_pem(
        &work.join("sign.pem"),
        "CERTIFICATE",
        &hex::decode(&s.certificate).unwrap(),
    );
    let (ok, text) = openssl(&["x509", "-in", "sign.pem", "-noout", "-text"], &work);
    assert!(ok && text.contains("E-mail Protection"), "{text}");
    assert!(!text.contains("Extended Key Usage: critical"), "{text}");
    h.stop().await;
}

/// SEC1 `EC PRIVATE KEY` DER of a P-256 key (what `openssl x509 -CAkey` reads).
fn sec1_private_key(key: &IndiciumKey) -> Vec<u8> {
    let mut der = vec![0x30, 0x77, 0x02, 0x01, 0x01, 0x04, 0x20];
    der.extend_from_slice(key.secret_bytes().as_ref());
    der.extend_from_slice(&[
        0xA0, 0x0A, 0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07, 0xA1, 0x44, 0x03,
        0x42, 0x00,
    ]);
    der.extend_from_slice(&key.public_key());
    der
}

/// Seed 004 Fig. 3A: an agent key's attestation becomes an agent CA certificate (CA,
/// path length 0, keyCertSign, critical name constraints permitting the account's
/// organisation), and the constraints hold: stock OpenSSL accepts a certificate the agent
/// key signs inside them and refuses one outside.
#[tokio::test(flavor = "multi_thread")]
async fn an_agent_key_gets_an_agent_ca_certificate_constrained_to_the_account() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let h = openpsd_backoffice::spawn_all(dir).await.unwrap();
    let (host, admin) = parties(&h.meter.url, &h.kms.url, &h.recharge.url, &h.pki);
    let psd = Psd::new(4, 0, &h.kms_public_key);
    admin.register_to(&psd, "alice").await;
    let alice = host.as_customer("alice");
    let account = host.customers.account("alice");
    let (att, agent_key) = attest(&psd, &psd.dumped_key(), Purpose::AgentCa, 1);
    let a: CertificateAnswer = alice
        .post("/v1/certificates", &body(&psd, &att))
        .await
        .unwrap();
    let work = dir.join("agent");
    std::fs::create_dir_all(&work).unwrap();
    write_pem(
        &work.join("ca.pem"),
        "CERTIFICATE",
        &hex::decode(&a.ca_certificate).unwrap(),
    );
    write_pem(
        &work.join("agent.pem"),
        "CERTIFICATE",
        &hex::decode(&a.certificate).unwrap(),
    );
    let (ok, out) = openssl(&["verify", "-CAfile", "ca.pem", "agent.pem"], &work);
    assert!(ok && out.contains("agent.pem: OK"), "{out}");
    let (ok, text) = openssl(&["x509", "-in", "agent.pem", "-noout", "-text"], &work);
    assert!(ok, "{text}");
    let subject = format!(
        "Subject: O = openpsd customer {account}, serialNumber = {}, CN = alice",
        psd.device_id()
    );
    assert!(text.contains(&subject), "{subject} in\n{text}");
    for want in [
        "X509v3 Basic Constraints: critical",
        "CA:TRUE, pathlen:0",
        "X509v3 Key Usage: critical",
        "Certificate Sign",
        "X509v3 Name Constraints: critical",
        "Permitted:",
        &format!("DirName:O = openpsd customer {account}"),
        "X509v3 Subject Key Identifier",
        "X509v3 Authority Key Identifier",
    ] {
        assert!(text.contains(want), "{want} in\n{text}");
    }
    assert!(!text.contains("Extended Key Usage"), "{text}");
    assert!(!text.contains("Digital Signature"), "{text}");

    // The constraints bite: the agent key signs (with openssl) one certificate inside the
    // account's organisation and one outside; openssl verify takes only the first.
    write_pem(
        &work.join("agent.key"),
        "EC PRIVATE KEY",
        &sec1_private_key(&agent_key),
    );
    for (name, subj, good) in [
        (
            "inside",
            format!("/O=openpsd customer {account}/CN=bob"),
            true,
        ),
        ("outside", "/O=somebody else/CN=mallory".to_owned(), false),
    ] {
        let csr = format!("{name}.csr");
        let pem = format!("{name}.pem");
        let key = format!("{name}.key");
        let (ok, out) = openssl(
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &key,
                "-subj",
                &subj,
                "-out",
                &csr,
            ],
            &work,
        );
        assert!(ok, "{out}");
        let (ok, out) = openssl(
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "agent.pem",
                "-CAkey",
                "agent.key",
                "-CAcreateserial",
                "-days",
                "30",
                "-out",
                &pem,
            ],
            &work,
        );
        assert!(ok, "{out}");
        let (ok, out) = openssl(
            &[
                "verify",
                "-CAfile",
                "ca.pem",
                "-untrusted",
                "agent.pem",
                &pem,
            ],
            &work,
        );
        if good {
            assert!(ok && out.contains(&format!("{pem}: OK")), "{out}");
        } else {
            assert!(!ok && out.contains("permitted subtree violation"), "{out}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn forgeries_other_devices_and_other_callers_are_refused_with_nothing_issued() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let h = openpsd_backoffice::spawn_all(dir).await.unwrap();
    let (host, admin) = parties(&h.meter.url, &h.kms.url, &h.recharge.url, &h.pki);
    let psd = Psd::new(2, 0, &h.kms_public_key);
    admin.register_to(&psd, "alice").await;
    let bobs = Psd::new(3, 0, &h.kms_public_key);
    admin.register_to(&bobs, "bob").await;
    let alice = host.as_customer("alice");
    let bob = host.as_customer("bob");
    let device_key = psd.dumped_key();
    let db = dir.join("ca").join(openpsd_ca::DB_FILE);
    let issued = || {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.query_row("SELECT COUNT(*) FROM certificates", [], |r| {
            r.get::<_, i64>(0)
        })
        .unwrap()
    };

    // Signed by another key than the device's.
    let stranger = IndiciumKey::generate(&mut OsRandom);
    let (forged, _) = attest(&psd, &stranger, Purpose::Postmark, 1);
    expect_refused(
        alice
            .post::<_, CertificateAnswer>("/v1/certificates", &body(&psd, &forged))
            .await,
        422,
        "attestation_invalid",
    );
    // The possession signature by another key than the one certified.
    let key = IndiciumKey::generate(&mut OsRandom);
    let not_mine = IndiciumKey::generate(&mut OsRandom);
    let a = KeyAttestation {
        device: device_id(&psd),
        slot: 1,
        purpose: Purpose::Postmark,
        generation: 1,
        public_key: not_mine.public_key(),
    };
    expect_refused(
        alice
            .post::<_, CertificateAnswer>(
                "/v1/certificates",
                &body(&psd, &a.sign(&device_key, &key)),
            )
            .await,
        422,
        "attestation_invalid",
    );
    // One bit flipped.
    let (mut flipped, _) = attest(&psd, &device_key, Purpose::Postmark, 1);
    flipped[14] ^= 1; // the generation: still decodes, no signature holds
    expect_refused(
        alice
            .post::<_, CertificateAnswer>("/v1/certificates", &body(&psd, &flipped))
            .await,
        422,
        "attestation_invalid",
    );
    // Garbage, and an attestation of another device than the body names.
    expect_refused(
        alice
            .post::<_, CertificateAnswer>("/v1/certificates", &body(&psd, &[0xA7; 10]))
            .await,
        400,
        "bad_request",
    );
    let (bobs_att, _) = attest(&bobs, &bobs.dumped_key(), Purpose::Postmark, 1);
    expect_refused(
        alice
            .post::<_, CertificateAnswer>("/v1/certificates", &body(&psd, &bobs_att))
            .await,
        400,
        "bad_request",
    );
    // Another customer's device: not found (bob's device asked by alice, and alice's by bob).
    expect_refused(
        alice
            .post::<_, CertificateAnswer>("/v1/certificates", &body(&bobs, &bobs_att))
            .await,
        404,
        "unknown_device",
    );
    let (att, _) = attest(&psd, &device_key, Purpose::Postmark, 1);
    expect_refused(
        bob.post::<_, CertificateAnswer>("/v1/certificates", &body(&psd, &att))
            .await,
        404,
        "unknown_device",
    );
    // Purposes without a profile yet.
    let (agent, _) = attest(&psd, &device_key, Purpose::Payment, 7);
    expect_refused(
        alice
            .post::<_, CertificateAnswer>("/v1/certificates", &body(&psd, &agent))
            .await,
        422,
        "purpose_not_issued",
    );
    // No caller but the meter asks the CA: the operator, the vendor, the PA get 403.
    let direct = CertificateRequest {
        attestation: hex::encode(&att),
        account_id: host.customers.account("alice"),
        username: "alice".into(),
    };
    for role in [
        Role::Operator,
        Role::Vendor,
        Role::Pa,
        Role::Kms,
        Role::Post,
    ] {
        let c = Client::new(&h.ca.url, &h.pki, Some(role));
        expect_refused(
            c.post::<_, CertificateAnswer>("/v1/certificates", &direct)
                .await,
            403,
            "forbidden",
        );
    }
    // Without a certificate there is no TLS session with the CA at all.
    let e = Client::new(&h.ca.url, &h.pki, None)
        .post::<_, CertificateAnswer>("/v1/certificates", &direct)
        .await
        .unwrap_err();
    assert_eq!(e.status, 0, "{e:?}");
    // A device the KMS does not know, asked by the meter's identity directly.
    let meter_at_ca = Client::new(&h.ca.url, &h.pki, Some(Role::Meter));
    let unknown = Psd::new(4, 0, &h.kms_public_key);
    let (u_att, _) = attest(&unknown, &unknown.dumped_key(), Purpose::Postmark, 1);
    expect_refused(
        meter_at_ca
            .post::<_, CertificateAnswer>(
                "/v1/certificates",
                &CertificateRequest {
                    attestation: hex::encode(&u_att),
                    ..direct.clone()
                },
            )
            .await,
        404,
        "unknown_device",
    );
    assert_eq!(issued(), 0, "nothing issued");

    // Issued once; the same generation with another key: 409; the same attestation from
    // another account: 409 too.
    let _: CertificateAnswer = alice
        .post("/v1/certificates", &body(&psd, &att))
        .await
        .unwrap();
    let (again, _) = attest(&psd, &device_key, Purpose::Postmark, 1);
    expect_refused(
        alice
            .post::<_, CertificateAnswer>("/v1/certificates", &body(&psd, &again))
            .await,
        409,
        "certificate_conflict",
    );
    expect_refused(
        meter_at_ca
            .post::<_, CertificateAnswer>(
                "/v1/certificates",
                &CertificateRequest {
                    account_id: "someone-else".into(),
                    ..direct.clone()
                },
            )
            .await,
        409,
        "certificate_conflict",
    );
    assert_eq!(issued(), 1);

    // A device the issuer revoked gets no more certificates.
    let _: serde_json::Value = admin
        .kms
        .post(
            &format!("/v1/devices/{}/revoke", psd.device_id()),
            &Revocation {
                reason: "stolen".into(),
            },
        )
        .await
        .unwrap();
    let (after, _) = attest(&psd, &device_key, Purpose::Postmark, 2);
    expect_refused(
        alice
            .post::<_, CertificateAnswer>("/v1/certificates", &body(&psd, &after))
            .await,
        410,
        "device_revoked",
    );
    // Revocation: unknown serials and bad reasons are refused; the meter may revoke too.
    expect_refused(
        meter_at_ca
            .post::<_, CertificateView>(
                "/v1/certificates/0102/revoke",
                &CertificateRevocation { reason: "x".into() },
            )
            .await,
        404,
        "unknown_certificate",
    );
    expect_refused(
        meter_at_ca
            .post::<_, CertificateView>(
                "/v1/certificates/zz/revoke",
                &CertificateRevocation { reason: "x".into() },
            )
            .await,
        400,
        "bad_request",
    );
    assert_eq!(issued(), 1);
    h.stop().await;
}

/// Identical requests at the same instant (a host retrying while its first request is in
/// flight) all get the one certificate: the CA's transaction sees the first's row and
/// answers it, never a 500.
#[tokio::test(flavor = "multi_thread")]
async fn identical_requests_at_once_get_the_same_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let h = openpsd_backoffice::spawn_all(dir).await.unwrap();
    let (host, admin) = parties(&h.meter.url, &h.kms.url, &h.recharge.url, &h.pki);
    let psd = Psd::new(4, 0, &h.kms_public_key);
    admin.register_to(&psd, "alice").await;
    let alice = host.as_customer("alice");
    let (att, _key) = attest(&psd, &psd.dumped_key(), Purpose::Postmark, 1);
    let req = body(&psd, &att);
    let post = || alice.post::<_, CertificateAnswer>("/v1/certificates", &req);
    let (a, b, c, d) = tokio::join!(post(), post(), post(), post());
    let a = a.unwrap();
    assert_eq!(
        (b.unwrap(), c.unwrap(), d.unwrap()),
        (a.clone(), a.clone(), a)
    );
    let db = rusqlite::Connection::open(dir.join("ca").join(openpsd_ca::DB_FILE)).unwrap();
    let rows: i64 = db
        .query_row("SELECT COUNT(*) FROM certificates", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 1, "one certificate issued");
}
