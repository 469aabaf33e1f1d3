//! Licenses through the back office (seed 003 Fig. 4 steps 63-66): a PSD's request goes
//! meter → vendor → postal authority and back countersigned; the KMS, the PA and the vendor
//! run as services with mutual TLS, exactly as apart. Requests are signed here with core's
//! `LicenseRequest::sign` (the card's LICENSE REQUEST command is wired elsewhere) and the
//! answer is checked with core's `grant::verify_grant`, the card's own check. Stock
//! `openssl` is the oracle for the certificates, the CRL and the countersignature.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use openpsd_backoffice::server;
use openpsd_core::crypto::IndiciumKey;
use openpsd_core::psd::license::grant::{self, CardFields};
use openpsd_core::psd::license::install::Install;
use openpsd_core::psd::license::request::{LicenseRequest, RequestBody};
use openpsd_core::types::{Date, DeviceId, LicenseId, PostalCode};
use openpsd_protocol::license::{
    forward_message, GrantList, GrantRequest, GrantResponse, GrantRevocation, GrantView,
    LicenseGrant, LicenseOrder, PaPublicKey,
};
use openpsd_protocol::{DeviceInfo, DeviceRegistration, Revocation};
use openpsd_service_kit::codec::{random_array, OsRandom};
use openpsd_service_kit::pki::Pki;
use openpsd_service_kit::tls::{client_config, Role};
use openpsd_service_kit::upstream::Upstream;
use openpsd_service_kit::{ApiError, Service};

const RATE: u32 = 1000;

struct Chain {
    _dir: tempfile::TempDir,
    dir: std::path::PathBuf,
    kms: Service,
    pa: Service,
    vendor: Service,
    /// The meter's view of the vendor.
    meter: Upstream,
    /// The operator at the KMS and at the PA.
    kms_op: Upstream,
    pa_op: Upstream,
    /// The vendor's identity at the PA (for forged forwards).
    pa_as_vendor: Upstream,
    vendor_key: IndiciumKey,
    pa_public_key: [u8; 65],
    pa_subject: Vec<u8>,
    pki: Pki,
}

fn up(pki: &Pki, me: Role, peer: Role, url: &str) -> Upstream {
    Upstream::new("test", url, peer, client_config(pki, Some(me)).unwrap()).unwrap()
}

/// A raw HTTPS client (CRL and PEM answers are not JSON).
async fn raw_get(pki: &Pki, me: Role, peer: Role, addr: SocketAddr, path: &str) -> Vec<u8> {
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(client_config(pki, Some(me)).unwrap())
        .resolve(&peer.dns_name(), addr)
        .build()
        .unwrap();
    let r = http
        .get(format!("https://{}:{}{path}", peer.dns_name(), addr.port()))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.bytes().await.unwrap().to_vec()
}

async fn chain_with(fixed_validity: Option<(Date, Date)>) -> Chain {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let pki = server::local_pki(&dir).unwrap();
    let rc = IndiciumKey::generate(&mut OsRandom).public_key();
    let kms = server::start_kms(&dir.join("kms"), "127.0.0.1:0", rc, None, &pki, RATE)
        .await
        .unwrap();
    let vendor_public = openpsd_vendor::open_key(&dir.join("vendor")).unwrap();
    let mut config = openpsd_pa::Config::new(dir.join("pa"));
    config.vendor_public_keys.push(vendor_public);
    config.fixed_validity = fixed_validity;
    config.max_devices_per_license = 3;
    let pa = server::start_pa(&config, "127.0.0.1:0", &pki, RATE)
        .await
        .unwrap();
    let vendor = server::start_vendor(
        &dir.join("vendor"),
        "127.0.0.1:0",
        [&kms.url, &pa.url],
        &dir.join("pa").join(openpsd_pa::CA_FILE),
        &pki,
        RATE,
    )
    .await
    .unwrap();
    let text =
        std::fs::read_to_string(dir.join("vendor").join(openpsd_vendor::SIGNING_KEY_FILE)).unwrap();
    let vendor_key = IndiciumKey::from_bytes(&hex::decode(text.trim()).unwrap()).unwrap();
    assert_eq!(vendor_key.public_key(), vendor_public);
    let pa_op = up(&pki, Role::Operator, Role::Pa, &pa.url);
    let pk: PaPublicKey = pa_op.get("/v1/public-key", "t").await.unwrap();
    Chain {
        meter: up(&pki, Role::Meter, Role::Vendor, &vendor.url),
        kms_op: up(&pki, Role::Operator, Role::Kms, &kms.url),
        pa_as_vendor: up(&pki, Role::Vendor, Role::Pa, &pa.url),
        pa_op,
        pa_public_key: hex::decode(&pk.public_key).unwrap().try_into().unwrap(),
        pa_subject: hex::decode(&pk.subject).unwrap(),
        vendor_key,
        kms,
        pa,
        vendor,
        pki,
        dir,
        _dir: tmp,
    }
}

struct Device {
    id: DeviceId,
    key: IndiciumKey,
}

impl Chain {
    async fn device(&self) -> Device {
        let key = IndiciumKey::generate(&mut OsRandom);
        let id = DeviceId(random_array());
        let reg = DeviceRegistration {
            device_id: hex::encode_upper(id.0),
            key_id: hex::encode(key.key_id().0),
            public_key: hex::encode(key.public_key()),
            licenses: vec![(1, "53113".to_owned())],
        };
        let _: DeviceInfo = self.kms_op.post("/v1/devices", &reg, "t").await.unwrap();
        Device { id, key }
    }

    async fn order(&self, req: &LicenseRequest) -> Result<LicenseGrant, ApiError> {
        let order = LicenseOrder {
            request: hex::encode(req.encode()),
            account_id: None,
        };
        self.meter.post("/v1/licenses", &order, "t").await
    }

    fn card<'a>(&'a self, req: &'a LicenseRequest) -> CardFields<'a> {
        CardFields {
            pa_subject: &self.pa_subject,
            pa_public_key: &self.pa_public_key,
            device: req.body.device,
            license_public_key: &req.body.license_public_key,
            nonce: &req.body.nonce,
        }
    }

    /// The card's check of an answer, as LICENSE INSTALL makes it.
    fn card_accepts(&self, req: &LicenseRequest, g: &LicenseGrant) -> Install {
        let install = Install::decode(&hex::decode(&g.install).unwrap()).unwrap();
        assert_eq!(install.request, req.body.counter);
        grant::verify_grant(
            &install.fields,
            &self.card(req),
            &install.pa_signature,
            &self.vendor_key.public_key(),
            &install.countersignature,
        )
        .unwrap();
        install
    }

    async fn crl(&self) -> Vec<u8> {
        raw_get(&self.pki, Role::Operator, Role::Pa, self.pa.addr, "/v1/crl").await
    }

    async fn revoke(&self, serial: &str) -> GrantView {
        let body = GrantRevocation {
            reason: "replaced PSD".to_owned(),
        };
        self.pa_op
            .post(&format!("/v1/grants/{serial}/revoke"), &body, "t")
            .await
            .unwrap()
    }

    async fn stop(self) {
        self.vendor.stop().await;
        self.pa.stop().await;
        self.kms.stop().await;
    }
}

fn request(dev: &Device, counter: u32, license: u32, origin: &str) -> LicenseRequest {
    let license_key = IndiciumKey::generate(&mut OsRandom);
    let body = RequestBody {
        device: dev.id,
        counter,
        license: LicenseId(license),
        origin: PostalCode::new(origin.as_bytes()).unwrap(),
        license_public_key: license_key.public_key(),
        nonce: random_array(),
    };
    LicenseRequest::sign(body, &license_key, &dev.key)
}

fn code(e: &ApiError) -> &str {
    &e.code
}

// ---- openssl -------------------------------------------------------------------------

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

/// DER `ECDSA-Sig-Value` of an `r‖s`.
fn ecdsa_der(rs: &[u8; 64]) -> Vec<u8> {
    let mut body = Vec::new();
    for half in rs.chunks(32) {
        let start = half.iter().position(|&b| b != 0).unwrap_or(31);
        let mut int = half[start..].to_vec();
        if int[0] & 0x80 != 0 {
            int.insert(0, 0);
        }
        body.push(0x02);
        body.push(u8::try_from(int.len()).unwrap());
        body.extend_from_slice(&int);
    }
    let mut out = vec![0x30, u8::try_from(body.len()).unwrap()];
    out.extend_from_slice(&body);
    out
}

/// SubjectPublicKeyInfo DER of a P-256 point.
fn spki_der(point: &[u8; 65]) -> Vec<u8> {
    let mut v = vec![
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01, 0x06, 0x08,
        0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
    ];
    v.extend_from_slice(point);
    v
}

// ---- the chain -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_request_becomes_a_license_the_card_and_openssl_accept() {
    let c = chain_with(None).await;
    let dev = c.device().await;
    let req = request(&dev, 1, 0, "53113");
    let g = c.order(&req).await.unwrap();
    let install = c.card_accepts(&req, &g);
    assert!(install.fields.license.0 >= 1, "license 0 gets a number");
    assert_eq!(install.fields.origin.as_bytes(), b"53113");
    let today = openpsd_service_kit::codec::today_utc();
    assert_eq!(install.fields.not_before, today);
    assert_eq!(install.fields.not_after, today.plus_days(365).unwrap());
    assert!((0x01..=0x7F).contains(&install.fields.serial[0]));
    assert_eq!(install.fields.serial.len(), 16);

    // The same request again: the same answer, byte for byte.
    let again = c.order(&req).await.unwrap();
    assert_eq!(again, g);

    // openssl: the CA, the license, the CRL before and after a revocation.
    let out = c.dir.join("openssl");
    std::fs::create_dir_all(&out).unwrap();
    let ca = raw_get(&c.pki, Role::Vendor, Role::Pa, c.pa.addr, "/v1/ca").await;
    assert_eq!(
        ca,
        std::fs::read(c.dir.join("pa").join(openpsd_pa::CA_FILE)).unwrap()
    );
    std::fs::write(out.join("pa-ca.pem"), &ca).unwrap();
    std::fs::write(out.join("license.pem"), &g.certificate).unwrap();
    let (ok, text) = openssl(
        &out,
        &[
            "verify",
            "-x509_strict",
            "-CAfile",
            "pa-ca.pem",
            "license.pem",
        ],
    );
    assert!(ok, "{text}");
    let (ok, text) = openssl(&out, &["x509", "-in", "license.pem", "-noout", "-text"]);
    assert!(ok, "{text}");
    assert!(
        text.contains(&format!("CN = license {}", install.fields.license.0)),
        "{text}"
    );
    assert!(text.contains(&hex::encode_upper(dev.id.0)), "{text}");
    assert!(text.contains(grant::LICENSE_EXTENSION_OID_DOTTED), "{text}");
    let (ok, text) = openssl(&out, &["x509", "-in", "pa-ca.pem", "-noout", "-text"]);
    assert!(ok && text.contains("CA:TRUE"), "{text}");

    std::fs::write(out.join("crl.der"), c.crl().await).unwrap();
    let (ok, text) = openssl(
        &out,
        &["crl", "-inform", "DER", "-in", "crl.der", "-out", "crl.pem"],
    );
    assert!(ok, "{text}");
    let (ok, text) = openssl(
        &out,
        &[
            "crl",
            "-in",
            "crl.pem",
            "-noout",
            "-text",
            "-CAfile",
            "pa-ca.pem",
        ],
    );
    assert!(
        ok && text.contains("verify OK") && text.contains("Next Update"),
        "{text}"
    );
    let (ok, text) = openssl(
        &out,
        &[
            "verify",
            "-x509_strict",
            "-crl_check",
            "-CAfile",
            "pa-ca.pem",
            "-CRLfile",
            "crl.pem",
            "license.pem",
        ],
    );
    assert!(ok, "{text}");

    let serial = g.fields.serial.clone();
    let view = c.revoke(&serial).await;
    assert!(view.revoked_at.is_some());
    std::fs::write(out.join("crl2.der"), c.crl().await).unwrap();
    let (ok, text) = openssl(
        &out,
        &[
            "crl", "-inform", "DER", "-in", "crl2.der", "-out", "crl2.pem",
        ],
    );
    assert!(ok, "{text}");
    let (ok, text) = openssl(
        &out,
        &[
            "verify",
            "-x509_strict",
            "-crl_check",
            "-CAfile",
            "pa-ca.pem",
            "-CRLfile",
            "crl2.pem",
            "license.pem",
        ],
    );
    assert!(!ok && text.contains("certificate revoked"), "{text}");
    let (_, text) = openssl(&out, &["crl", "-in", "crl2.pem", "-noout", "-text"]);
    assert!(text.contains(&serial.to_uppercase()), "{text}");
    // Each CRL after a revocation has the next number; revoking again changes nothing.
    let (_, first) = openssl(&out, &["crl", "-in", "crl.pem", "-noout", "-crlnumber"]);
    let (_, second) = openssl(&out, &["crl", "-in", "crl2.pem", "-noout", "-crlnumber"]);
    assert_eq!(
        (first.trim(), second.trim()),
        ("crlNumber=0x01", "crlNumber=0x02")
    );
    assert_eq!(c.revoke(&serial).await, view);
    let by_device: GrantList = c
        .pa_op
        .get(&format!("/v1/grants?device={}", hex::encode(dev.id.0)), "t")
        .await
        .unwrap();
    assert_eq!(by_device.grants, vec![view.clone()]);

    // The countersignature under the vendor key, by openssl.
    let tbs = grant::tbs_certificate(&install.fields, &c.card(&req)).unwrap();
    let msg = grant::countersign_message(&tbs, dev.id, &req.body.nonce);
    std::fs::write(out.join("countersign.msg"), &msg).unwrap();
    std::fs::write(
        out.join("countersign.sig"),
        ecdsa_der(&install.countersignature),
    )
    .unwrap();
    std::fs::write(out.join("vendor.der"), spki_der(&c.vendor_key.public_key())).unwrap();
    let (ok, text) = openssl(
        &out,
        &[
            "pkey",
            "-pubin",
            "-inform",
            "DER",
            "-in",
            "vendor.der",
            "-out",
            "vendor.pem",
        ],
    );
    assert!(ok, "{text}");
    let (ok, text) = openssl(
        &out,
        &[
            "dgst",
            "-sha256",
            "-verify",
            "vendor.pem",
            "-signature",
            "countersign.sig",
            "countersign.msg",
        ],
    );
    assert!(ok && text.contains("Verified OK"), "{text}");
    let mut forged = msg.clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    std::fs::write(out.join("forged.msg"), &forged).unwrap();
    let (ok, _) = openssl(
        &out,
        &[
            "dgst",
            "-sha256",
            "-verify",
            "vendor.pem",
            "-signature",
            "countersign.sig",
            "forged.msg",
        ],
    );
    assert!(
        !ok,
        "openssl refuses a countersignature over another message"
    );

    let list: GrantList = c
        .pa_op
        .get(
            &format!("/v1/grants?license={}", install.fields.license.0),
            "t",
        )
        .await
        .unwrap();
    assert_eq!(list.grants.len(), 1);
    assert_eq!(list.grants[0].device_id, hex::encode_upper(dev.id.0));
    assert_eq!(
        list.grants[0].key_id,
        hex::encode(grant::certificate_key_id(&req.body.license_public_key))
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dates_in_2049_and_2050_verify_by_the_card_and_openssl() {
    let from = Date::new(2049, 12, 31).unwrap();
    let to = Date::new(2050, 1, 1).unwrap();
    let c = chain_with(Some((from, to))).await;
    let dev = c.device().await;
    let req = request(&dev, 7, 4242, "D-53113");
    let g = c.order(&req).await.unwrap();
    let install = c.card_accepts(&req, &g);
    assert_eq!(
        (install.fields.not_before, install.fields.not_after),
        (from, to)
    );
    assert_eq!(install.fields.license, LicenseId(4242));
    let out = c.dir.join("openssl");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("pa-ca.pem"),
        std::fs::read(c.dir.join("pa").join(openpsd_pa::CA_FILE)).unwrap(),
    )
    .unwrap();
    std::fs::write(out.join("license.pem"), &g.certificate).unwrap();
    let (ok, text) = openssl(&out, &["x509", "-in", "license.pem", "-noout", "-dates"]);
    assert!(ok, "{text}");
    assert!(
        text.contains("notBefore=Dec 31 00:00:00 2049 GMT"),
        "{text}"
    );
    assert!(text.contains("notAfter=Jan  1 23:59:59 2050 GMT"), "{text}");
    // UTCTime for 2049, GeneralizedTime for 2050 (RFC 5280 §4.1.2.5).
    let (_, text) = openssl(&out, &["asn1parse", "-in", "license.pem"]);
    assert!(text.contains("UTCTIME           :491231000000Z"), "{text}");
    assert!(
        text.contains("GENERALIZEDTIME   :20500101235959Z"),
        "{text}"
    );
    // 2049-12-31 12:00Z and 2050-01-01 12:00Z: valid; today: not yet.
    for at in ["2524564800", "2524651200"] {
        let (ok, text) = openssl(
            &out,
            &[
                "verify",
                "-x509_strict",
                "-attime",
                at,
                "-CAfile",
                "pa-ca.pem",
                "license.pem",
            ],
        );
        assert!(ok, "{at}: {text}");
    }
    let (ok, _) = openssl(&out, &["verify", "-CAfile", "pa-ca.pem", "license.pem"]);
    assert!(!ok, "not valid before 2049");
    c.stop().await;
}

// ---- refusals ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn every_refusal() {
    let c = chain_with(None).await;
    let dev = c.device().await;

    // Bad device signature: another key signed the request.
    let mut impostor = Device {
        id: dev.id,
        key: IndiciumKey::generate(&mut OsRandom),
    };
    let e = c
        .order(&request(&impostor, 1, 0, "53113"))
        .await
        .unwrap_err();
    assert_eq!(
        (e.status.as_u16(), code(&e)),
        (422, "request_invalid"),
        "{e}"
    );
    assert!(e.message.contains("device signature"), "{e}");

    // Bad proof of possession.
    let mut req = request(&dev, 2, 0, "53113");
    req.pop[10] ^= 1;
    let e = c.order(&req).await.unwrap_err();
    assert_eq!(code(&e), "request_invalid", "{e}");
    assert!(e.message.contains("proof of possession"), "{e}");

    // Malformed request.
    let e = c
        .meter
        .post::<_, LicenseGrant>(
            "/v1/licenses",
            &LicenseOrder {
                request: "00".into(),
                account_id: None,
            },
            "t",
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), "request_invalid", "{e}");

    // Unknown device.
    impostor.id = DeviceId(random_array());
    let e = c
        .order(&request(&impostor, 1, 0, "53113"))
        .await
        .unwrap_err();
    assert_eq!(code(&e), "unknown_device", "{e}");

    // Straight to the PA: a valid request forwarded wrongly.
    let req = request(&dev, 3, 0, "53113");
    let bytes = req.encode();
    let digest = openpsd_core::crypto::sha256(&bytes);
    let forward = |key: &IndiciumKey, device_key: &[u8; 65], over: &[u8; 65]| GrantRequest {
        request: hex::encode(&bytes),
        device_public_key: hex::encode(device_key),
        forward_signature: hex::encode(key.sign(&forward_message(&digest, over))),
        account: None,
    };
    let dk = dev.key.public_key();
    // Unknown vendor: a key the PA has not authorized.
    let stranger = IndiciumKey::generate(&mut OsRandom);
    let e = c
        .pa_as_vendor
        .post::<_, GrantResponse>("/v1/grants", &forward(&stranger, &dk, &dk), "t")
        .await
        .unwrap_err();
    // 403 at the PA; the kit's client reports a 403 as the PA being unavailable to it
    // (its identity or key is not the PA's business partner), with the PA's code.
    assert!(e.message.contains("forward_invalid"), "{e}");
    // Forged forward: the vendor signed another device key than the one sent.
    let other = IndiciumKey::generate(&mut OsRandom).public_key();
    let e = c
        .pa_as_vendor
        .post::<_, GrantResponse>("/v1/grants", &forward(&c.vendor_key, &other, &dk), "t")
        .await
        .unwrap_err();
    assert!(e.message.contains("forward_invalid"), "{e}");
    // A properly forwarded request whose device signature fails under the key vouched for.
    let e = c
        .pa_as_vendor
        .post::<_, GrantResponse>("/v1/grants", &forward(&c.vendor_key, &other, &other), "t")
        .await
        .unwrap_err();
    assert_eq!(
        (e.status.as_u16(), code(&e)),
        (422, "request_invalid"),
        "{e}"
    );
    // And the right one is granted: the vendor's key and the device's make a grant.
    let ok: GrantResponse = c
        .pa_as_vendor
        .post("/v1/grants", &forward(&c.vendor_key, &dk, &dk), "t")
        .await
        .unwrap();
    assert!(ok.certificate.starts_with("-----BEGIN CERTIFICATE-----"));
    // The meter is not the vendor: it cannot ask the PA (403, which the kit's client
    // reports as the PA being unavailable to it).
    let meter_at_pa = up(&c.pki, Role::Meter, Role::Pa, &c.pa.url);
    let e = meter_at_pa
        .post::<_, GrantResponse>("/v1/grants", &forward(&c.vendor_key, &dk, &dk), "t")
        .await
        .unwrap_err();
    assert!(e.message.contains("forbidden"), "{e}");

    // Same license and device twice with another request: refused until revoked.
    let first = c.order(&request(&dev, 10, 500, "53113")).await.unwrap();
    let second_req = request(&dev, 11, 500, "53113");
    let e = c.order(&second_req).await.unwrap_err();
    assert_eq!(
        (e.status.as_u16(), code(&e)),
        (409, "license_refused"),
        "{e}"
    );
    c.revoke(&first.fields.serial).await;
    let second = c.order(&second_req).await.unwrap();
    c.card_accepts(&second_req, &second);
    assert_ne!(second.fields.serial, first.fields.serial);

    // The same license on other devices (claim 6), up to the limit (3 in this test).
    let d2 = c.device().await;
    let d3 = c.device().await;
    let d4 = c.device().await;
    for d in [&d2, &d3] {
        let r = request(d, 1, 500, "53113");
        let g = c.order(&r).await.unwrap();
        c.card_accepts(&r, &g);
    }
    let e = c.order(&request(&d4, 1, 500, "53113")).await.unwrap_err();
    assert_eq!(code(&e), "license_refused", "{e}");
    assert!(e.message.contains("most allowed"), "{e}");
    // Another origin for an existing license.
    let e = c.order(&request(&d4, 2, 500, "10115")).await.unwrap_err();
    assert_eq!(code(&e), "license_refused", "{e}");

    // A request counter used again for another request.
    let e = c.order(&request(&dev, 10, 501, "53113")).await.unwrap_err();
    assert_eq!((e.status.as_u16(), code(&e)), (409, "wrong_state"), "{e}");

    // A revoked device gets nothing.
    let _: DeviceInfo = c
        .kms_op
        .post(
            &format!("/v1/devices/{}/revoke", hex::encode_upper(d4.id.0)),
            &Revocation {
                reason: "stolen".to_owned(),
            },
            "t",
        )
        .await
        .unwrap();
    let e = c.order(&request(&d4, 3, 0, "53113")).await.unwrap_err();
    assert_eq!(
        (e.status.as_u16(), code(&e)),
        (410, "device_revoked"),
        "{e}"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn neither_the_pa_nor_the_vendor_alone_makes_an_install_the_card_takes() {
    let c = chain_with(None).await;
    let dev = c.device().await;
    let req = request(&dev, 1, 0, "53113");
    let g = c.order(&req).await.unwrap();
    let install = Install::decode(&hex::decode(&g.install).unwrap()).unwrap();
    let card = c.card(&req);
    let vendor_pk = c.vendor_key.public_key();
    // The vendor alone: fields of its choosing, countersigned, with the PA's old signature.
    let mut fields = install.fields.clone();
    fields.not_after = Date::new(2099, 12, 31).unwrap();
    let tbs = grant::tbs_certificate(&fields, &card).unwrap();
    let cs = c
        .vendor_key
        .sign(&grant::countersign_message(&tbs, dev.id, &req.body.nonce));
    assert_eq!(
        grant::verify_grant(&fields, &card, &install.pa_signature, &vendor_pk, &cs),
        Err(grant::GrantError::PaSignature)
    );
    // The PA alone: its grant without the vendor's countersignature.
    let pa_only: GrantResponse = {
        let bytes = req.encode();
        let digest = openpsd_core::crypto::sha256(&bytes);
        let dk = dev.key.public_key();
        c.pa_as_vendor
            .post(
                "/v1/grants",
                &GrantRequest {
                    request: hex::encode(&bytes),
                    device_public_key: hex::encode(dk),
                    forward_signature: hex::encode(
                        c.vendor_key.sign(&forward_message(&digest, &dk)),
                    ),
                    account: None,
                },
                "t",
            )
            .await
            .unwrap()
    };
    assert_eq!(
        pa_only.fields, g.fields,
        "the PA answers the same request the same"
    );
    let stranger = IndiciumKey::generate(&mut OsRandom);
    let tbs = grant::tbs_certificate(&install.fields, &card).unwrap();
    let forged = stranger.sign(&grant::countersign_message(&tbs, dev.id, &req.body.nonce));
    assert_eq!(
        grant::verify_grant(
            &install.fields,
            &card,
            &install.pa_signature,
            &vendor_pk,
            &forged
        ),
        Err(grant::GrantError::Countersignature)
    );
    // A grant for another PSD's request does not fit this one's nonce and key.
    let other = request(&dev, 2, 0, "53113");
    assert!(grant::verify_grant(
        &install.fields,
        &c.card(&other),
        &install.pa_signature,
        &vendor_pk,
        &install.countersignature
    )
    .is_err());
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_vendor_countersigns_no_grant_but_the_pas_it_knows() {
    // A second vendor pointed at another PA (another key, which authorizes it), while it
    // knows the first PA's CA: that PA's grants do not verify, nothing is countersigned.
    let c = chain_with(None).await;
    let vendor2_key = openpsd_vendor::open_key(&c.dir.join("vendor2")).unwrap();
    let mut config = openpsd_pa::Config::new(c.dir.join("rogue"));
    config.vendor_public_keys.push(vendor2_key);
    let rogue = server::start_pa(&config, "127.0.0.1:0", &c.pki, RATE)
        .await
        .unwrap();
    let vendor2 = server::start_vendor(
        &c.dir.join("vendor2"),
        "127.0.0.1:0",
        [&c.kms.url, &rogue.url],
        &c.dir.join("pa").join(openpsd_pa::CA_FILE),
        &c.pki,
        RATE,
    )
    .await
    .unwrap();
    let dev = c.device().await;
    let meter = up(&c.pki, Role::Meter, Role::Vendor, &vendor2.url);
    let order = LicenseOrder {
        request: hex::encode(request(&dev, 1, 0, "53113").encode()),
        account_id: None,
    };
    let e = meter
        .post::<_, LicenseGrant>("/v1/licenses", &order, "t")
        .await
        .unwrap_err();
    // 502 at the vendor: the kit's client reports a server error as "not available".
    assert!(
        e.message.contains("grant_invalid") && e.message.contains("signature does not verify"),
        "{e}"
    );
    vendor2.stop().await;
    rogue.stop().await;
    c.stop().await;
}
