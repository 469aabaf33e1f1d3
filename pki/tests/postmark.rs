//! Postmarks against stock OpenSSL: a test CA and a postmark certificate per the
//! certificate meter's postmark profile (x509-cert's `CertificateBuilder`), a TSTInfo and
//! signed attributes from core's `certmeter::tst` signed with core's `IndiciumKey` exactly
//! as the card signs, expanded here, then `openssl ts -verify` / `ts -reply -text` as the
//! oracle, and this crate's native `verify` and `compact_of` beside it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::str::FromStr as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use der::asn1::{Ia5String, OctetString};
use der::{Any, Encode as _};
use openpsd_core::crypto::{sha256, IndiciumKey};
use openpsd_core::psd::certmeter::tst::{
    signed_attrs_der, tst_info_der, CompactPostmark, PostmarkFields,
};
use openpsd_core::psd::license::grant::certificate_key_id;
use openpsd_core::types::{Amount, DeviceId, LicenseId};
use openpsd_pki::postmark::{certificates_of, compact_of, expand, verify};
use p256::ecdsa::{DerSignature, SigningKey};
use spki::{AlgorithmIdentifierOwned, ObjectIdentifier, SubjectPublicKeyInfoOwned};
use x509_cert::builder::profile::BuilderProfile;
use x509_cert::builder::{Builder as _, CertificateBuilder};
use x509_cert::certificate::TbsCertificate;
use x509_cert::ext::pkix::crl::dp::DistributionPoint;
use x509_cert::ext::pkix::name::{DistributionPointName, GeneralName};
use x509_cert::ext::pkix::{
    AccessDescription, AuthorityInfoAccessSyntax, AuthorityKeyIdentifier, BasicConstraints,
    CrlDistributionPoints, ExtendedKeyUsage, KeyUsage, KeyUsages, SubjectKeyIdentifier,
};
use x509_cert::ext::{Extension, ToExtension as _};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};

const CA_SUBJECT: &str = "CN=openpsd test CA,O=openpsd,C=DE";
const ID_KP_TIME_STAMPING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.8");
const ID_AD_OCSP: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1");
const DEVICE: DeviceId = DeviceId([0x4F, 0x50, 0x53, 0x44, 0x00, 0x00, 0x00, 0x2A]);

fn spki_of(sec1: &[u8; 65]) -> SubjectPublicKeyInfoOwned {
    SubjectPublicKeyInfoOwned {
        algorithm: AlgorithmIdentifierOwned {
            oid: ObjectIdentifier::new_unwrap("1.2.840.10045.2.1"),
            parameters: Some(Any::from(ObjectIdentifier::new_unwrap(
                "1.2.840.10045.3.1.7",
            ))),
        },
        subject_public_key: der::asn1::BitString::from_bytes(sec1).unwrap(),
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn validity(from: u64, to: u64) -> Validity {
    let t = |s| Time::try_from(UNIX_EPOCH + Duration::from_secs(s)).unwrap();
    Validity::new(t(from), t(to))
}

/// The certificate-meter CA's postmark profile, or (when `postmark` is false) the test
/// CA's own self-signed profile.
struct Profile {
    issuer: Name,
    subject: Name,
    ski: [u8; 20],
    aki: [u8; 20],
    postmark: bool,
}

impl BuilderProfile for Profile {
    fn get_issuer(&self, _subject: &Name) -> Name {
        self.issuer.clone()
    }

    fn get_subject(&self) -> Name {
        self.subject.clone()
    }

    fn build_extensions(
        &self,
        _spk: spki::SubjectPublicKeyInfoRef<'_>,
        _issuer_spk: spki::SubjectPublicKeyInfoRef<'_>,
        tbs: &TbsCertificate,
    ) -> x509_cert::builder::Result<Vec<Extension>> {
        let subject = tbs.subject();
        let mut v: Vec<Extension> = Vec::new();
        let ski = SubjectKeyIdentifier(OctetString::new(self.ski.to_vec())?);
        let aki = AuthorityKeyIdentifier {
            key_identifier: Some(OctetString::new(self.aki.to_vec())?),
            ..Default::default()
        };
        if !self.postmark {
            let bc = BasicConstraints {
                ca: true,
                path_len_constraint: Some(0),
            };
            v.push((true, &bc).to_extension(subject, &v)?);
            let ku = KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign);
            v.push((true, &ku).to_extension(subject, &v)?);
            v.push((&ski).to_extension(subject, &v)?);
            v.push((&aki).to_extension(subject, &v)?);
            return Ok(v);
        }
        let bc = BasicConstraints {
            ca: false,
            path_len_constraint: None,
        };
        v.push((true, &bc).to_extension(subject, &v)?);
        let ku = KeyUsage(KeyUsages::DigitalSignature | KeyUsages::NonRepudiation);
        v.push((true, &ku).to_extension(subject, &v)?);
        // OpenSSL refuses a TSA certificate unless its EKU is timeStamping alone, critical.
        let eku = ExtendedKeyUsage(vec![ID_KP_TIME_STAMPING]);
        v.push((true, &eku).to_extension(subject, &v)?);
        v.push((&ski).to_extension(subject, &v)?);
        v.push((&aki).to_extension(subject, &v)?);
        let uri = |s: &str| GeneralName::UniformResourceIdentifier(Ia5String::new(s).unwrap());
        let cdp = CrlDistributionPoints(vec![DistributionPoint {
            distribution_point: Some(DistributionPointName::FullName(vec![uri(
                "http://127.0.0.1:8449/v1/ca/crl.der",
            )])),
            reasons: None,
            crl_issuer: None,
        }]);
        v.push((&cdp).to_extension(subject, &v)?);
        let aia = AuthorityInfoAccessSyntax(vec![AccessDescription {
            access_method: ID_AD_OCSP,
            access_location: uri("http://127.0.0.1:8449/ocsp"),
        }]);
        v.push((&aia).to_extension(subject, &v)?);
        Ok(v)
    }
}

/// A CA and one postmark certificate, with the keys that go with them.
struct Pki {
    ca_der: Vec<u8>,
    cert_der: Vec<u8>,
    key: IndiciumKey,
}

fn pki(ca_seed: &[u8], key_seed: &[u8], cert_from: u64, cert_to: u64) -> Pki {
    let ca_key = SigningKey::from_slice(&sha256(ca_seed)).unwrap();
    let mut ca_sec1 = [0u8; 65];
    ca_sec1.copy_from_slice(ca_key.verifying_key().to_sec1_point(false).as_bytes());
    let ca_id = certificate_key_id(&ca_sec1);
    let ca_name = Name::from_str(CA_SUBJECT).unwrap();
    let ca = CertificateBuilder::new(
        Profile {
            issuer: ca_name.clone(),
            subject: ca_name.clone(),
            ski: ca_id,
            aki: ca_id,
            postmark: false,
        },
        SerialNumber::new(&[0x01]).unwrap(),
        validity(now() - 86_400, now() + 10 * 365 * 86_400),
        spki_of(&ca_sec1),
    )
    .unwrap()
    .build::<_, DerSignature>(&ca_key)
    .unwrap();

    let key = IndiciumKey::from_bytes(&sha256(key_seed)).unwrap();
    let sec1 = key.public_key();
    let subject =
        Name::from_str("CN=alice,serialNumber=4F5053440000002A,O=openpsd customer 42").unwrap();
    let mut serial = sha256(&[key_seed, b" serial"].concat())[..16].to_vec();
    serial[0] &= 0x7F;
    let cert = CertificateBuilder::new(
        Profile {
            issuer: ca_name,
            subject,
            ski: certificate_key_id(&sec1),
            aki: ca_id,
            postmark: true,
        },
        SerialNumber::new(&serial).unwrap(),
        validity(cert_from, cert_to),
        spki_of(&sec1),
    )
    .unwrap()
    .build::<_, DerSignature>(&ca_key)
    .unwrap();
    Pki {
        ca_der: ca.to_der().unwrap(),
        cert_der: cert.to_der().unwrap(),
        key,
    }
}

fn fields(document: &[u8], nonce: Option<Vec<u8>>) -> PostmarkFields {
    PostmarkFields {
        digest: sha256(document),
        device: DEVICE,
        counter: 0x0102_0304,
        gen_time: now(),
        nonce,
        fee: Amount(150),
        license: LicenseId(4711),
        table_version: 3,
    }
}

/// What the card does in ISSUE POSTMARK once the fields are committed.
fn card_signs(pki: &Pki, f: &PostmarkFields) -> CompactPostmark {
    let tst_info = tst_info_der(f);
    let signature = pki
        .key
        .sign(&signed_attrs_der(&tst_info, &sha256(&pki.cert_der)));
    CompactPostmark {
        key_id: pki.key.key_id(),
        tst_info,
        signature,
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    der::pem::encode_string(label, der::pem::LineEnding::LF, der).unwrap()
}

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

fn write_pki(dir: &Path, pki: &Pki) {
    std::fs::write(dir.join("ca.pem"), pem("CERTIFICATE", &pki.ca_der)).unwrap();
    std::fs::write(dir.join("tsa.pem"), pem("CERTIFICATE", &pki.cert_der)).unwrap();
}

const VERIFY: &[&str] = &[
    "ts",
    "-verify",
    "-data",
    "doc",
    "-in",
    "T.tst",
    "-token_in",
    "-CAfile",
    "ca.pem",
    "-untrusted",
    "tsa.pem",
];

#[test]
fn openssl_verifies_an_expanded_postmark() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = pki(b"ca", b"postmark", now() - 60, now() + 365 * 86_400);
    write_pki(d, &pki);
    let document = b"a letter worth a postmark\n";
    std::fs::write(d.join("doc"), document).unwrap();

    let f = fields(document, None);
    let compact = card_signs(&pki, &f);
    let token = expand(&compact, &pki.cert_der, &[]).unwrap();
    std::fs::write(d.join("T.tst"), &token).unwrap();

    let (ok, text) = openssl(d, VERIFY);
    assert!(ok && text.contains("Verification: OK"), "{text}");

    // Another document: the imprint no longer matches.
    std::fs::write(d.join("doc"), b"a forged letter\n").unwrap();
    let (ok, text) = openssl(d, VERIFY);
    assert!(!ok && text.contains("message imprint mismatch"), "{text}");

    // The TSTInfo as OpenSSL reads it.
    let (ok, text) = openssl(
        d,
        &[
            "ts",
            "-reply",
            "-in",
            "T.tst",
            "-token_in",
            "-token_out",
            "-text",
        ],
    );
    assert!(ok, "{text}");
    assert!(text.contains("Policy OID: 1.3.6.1.4.1.32473.1.1"), "{text}");
    assert!(
        text.contains("Serial number: 0x4F5053440000002A01020304"),
        "{text}"
    );
    assert!(text.contains("Nonce: unspecified"), "{text}");
    assert!(text.contains("Hash Algorithm: sha256"), "{text}");
    assert!(
        text.contains("Time stamp: ") && text.contains(" GMT"),
        "{text}"
    );
    assert!(
        text.contains("Ordering: no") && text.contains("TSA: unspecified"),
        "{text}"
    );

    // Natively: the same checks, the fields back, and the compact form back without loss.
    assert_eq!(verify(&token, &f.digest, &pki.ca_der).unwrap(), f);
    let err = verify(&token, &sha256(b"a forged letter\n"), &pki.ca_der).unwrap_err();
    assert!(
        err.to_string().contains("message imprint mismatch"),
        "{err}"
    );
    assert_eq!(compact_of(&token).unwrap(), compact);
    assert_eq!(certificates_of(&token).unwrap(), vec![pki.cert_der.clone()]);
    let bytes = compact.encode().unwrap();
    assert_eq!(CompactPostmark::decode(&bytes).unwrap(), compact);
    eprintln!(
        "compact {} B, token {} B (certificate {} B)",
        bytes.len(),
        token.len(),
        pki.cert_der.len()
    );
}

#[test]
fn nonce_and_query_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = pki(b"ca", b"postmark", now() - 60, now() + 365 * 86_400);
    write_pki(d, &pki);
    let document = b"a query with a nonce\n";
    std::fs::write(d.join("doc"), document).unwrap();

    // The host's time-stamp query; OpenSSL puts a random 64-bit nonce in it.
    let (ok, text) = openssl(
        d,
        &[
            "ts", "-query", "-data", "doc", "-sha256", "-cert", "-out", "q.tsq",
        ],
    );
    assert!(ok, "{text}");
    let (ok, text) = openssl(d, &["ts", "-query", "-in", "q.tsq", "-text"]);
    assert!(ok, "{text}");
    let hex_nonce = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Nonce: 0x"))
        .expect("the query has a nonce")
        .trim();
    let padded = if hex_nonce.len() % 2 == 1 {
        format!("0{hex_nonce}")
    } else {
        hex_nonce.to_owned()
    };
    let nonce = hex::decode(padded).unwrap();

    let f = fields(document, Some(nonce.clone()));
    let token = expand(&card_signs(&pki, &f), &pki.cert_der, &[]).unwrap();
    std::fs::write(d.join("T.tst"), &token).unwrap();
    let query_verify = [
        "ts",
        "-verify",
        "-queryfile",
        "q.tsq",
        "-in",
        "T.tst",
        "-token_in",
        "-CAfile",
        "ca.pem",
        "-untrusted",
        "tsa.pem",
    ];
    let (ok, text) = openssl(d, &query_verify);
    assert!(ok && text.contains("Verification: OK"), "{text}");
    let (ok, text) = openssl(d, VERIFY);
    assert!(ok && text.contains("Verification: OK"), "{text}");
    let (_, text) = openssl(
        d,
        &[
            "ts",
            "-reply",
            "-in",
            "T.tst",
            "-token_in",
            "-token_out",
            "-text",
        ],
    );
    assert!(
        text.to_uppercase()
            .contains(&format!("NONCE: 0X{}", hex_nonce.to_uppercase())),
        "{text}"
    );

    // Another nonce: the query no longer matches.
    let mut other = nonce;
    *other.last_mut().unwrap() ^= 1;
    let token = expand(
        &card_signs(&pki, &fields(document, Some(other))),
        &pki.cert_der,
        &[],
    )
    .unwrap();
    std::fs::write(d.join("T.tst"), &token).unwrap();
    let (ok, text) = openssl(d, &query_verify);
    assert!(!ok && text.contains("nonce mismatch"), "{text}");
}

#[test]
fn chain_in_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = pki(b"ca", b"postmark", now() - 60, now() + 365 * 86_400);
    write_pki(d, &pki);
    let document = b"chain\n";
    std::fs::write(d.join("doc"), document).unwrap();
    let f = fields(document, Some(vec![0x80, 0, 1]));
    let compact = card_signs(&pki, &f);
    let token = expand(&compact, &pki.cert_der, std::slice::from_ref(&pki.ca_der)).unwrap();
    std::fs::write(d.join("T.tst"), &token).unwrap();
    // The postmark certificate travels in the token: no -untrusted needed.
    let (ok, text) = openssl(
        d,
        &[
            "ts",
            "-verify",
            "-data",
            "doc",
            "-in",
            "T.tst",
            "-token_in",
            "-CAfile",
            "ca.pem",
        ],
    );
    assert!(ok && text.contains("Verification: OK"), "{text}");
    assert_eq!(compact_of(&token).unwrap(), compact);
    let certs = certificates_of(&token).unwrap();
    assert_eq!(certs[0], pki.cert_der);
    assert_eq!(
        expand(&compact_of(&token).unwrap(), &certs[0], &certs[1..]).unwrap(),
        token
    );
    assert_eq!(verify(&token, &f.digest, &pki.ca_der).unwrap(), f);
}

#[test]
fn refusals() {
    let pki_a = pki(b"ca", b"postmark", now() - 60, now() + 365 * 86_400);
    let other = pki(
        b"another ca",
        b"another key",
        now() - 60,
        now() + 365 * 86_400,
    );
    let f = fields(b"doc", None);
    let compact = card_signs(&pki_a, &f);

    // A certificate for another key, or a signature that does not verify.
    let err = expand(&compact, &other.cert_der, &[]).unwrap_err();
    assert!(err.to_string().contains("not the postmark's key"), "{err}");
    let mut bad = compact.clone();
    bad.signature[10] ^= 1;
    assert!(expand(&bad, &pki_a.cert_der, &[]).is_err());
    let mut bad = compact.clone();
    bad.tst_info.push(0);
    assert!(expand(&bad, &pki_a.cert_der, &[]).is_err());

    let token = expand(&compact, &pki_a.cert_der, &[]).unwrap();
    // Another CA.
    let err = verify(&token, &f.digest, &other.ca_der).unwrap_err();
    // Same subject name, another key: the name matches, the signature does not.
    assert!(err.to_string().contains("not signed by the CA"), "{err}");

    // Any single flipped bit is refused natively (or, in the certificate, by its hash).
    for i in (0..token.len()).step_by(7) {
        let mut t = token.clone();
        t[i] ^= 0x01;
        assert!(verify(&t, &f.digest, &pki_a.ca_der).is_err(), "byte {i}");
    }

    // genTime outside the certificate's validity.
    let expired = pki(
        b"ca",
        b"postmark",
        now() - 400 * 86_400,
        now() - 35 * 86_400,
    );
    let token = expand(&card_signs(&expired, &f), &expired.cert_der, &[]).unwrap();
    let err = verify(&token, &f.digest, &expired.ca_der).unwrap_err();
    assert!(err.to_string().contains("validity"), "{err}");
}
