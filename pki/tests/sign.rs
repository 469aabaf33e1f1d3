//! Document signatures against stock OpenSSL: a test CA and a sign certificate per the
//! back office CA's sign profile (key usage digitalSignature + nonRepudiation, EKU
//! emailProtection), signed attributes from core's `certmeter::sign` signed with core's
//! `IndiciumKey` exactly as the card's SIGN signs, expanded here into a detached CMS
//! SignedData, then `openssl cms -verify` (its default purpose, smimesign) as the oracle
//! and this crate's native `verify` beside it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::str::FromStr as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use der::asn1::{Ia5String, OctetString};
use der::{Any, Encode as _};
use openpsd_core::crypto::{sha256, IndiciumKey};
use openpsd_core::psd::certmeter::sign::CompactSignature;
use openpsd_core::psd::license::grant::certificate_key_id;
use openpsd_pki::sign::{expand, verify};
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
const ID_KP_EMAIL_PROTECTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.4");
const ID_AD_OCSP: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1");

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
    /// The sign profile (false: the CA's own).
    sign: bool,
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
        if !self.sign {
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
        // The back office CA's sign profile: emailProtection, not critical.
        let eku = ExtendedKeyUsage(vec![ID_KP_EMAIL_PROTECTION]);
        v.push((false, &eku).to_extension(subject, &v)?);
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

/// A CA and one sign certificate, with the keys that go with them.
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
            sign: false,
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
            sign: true,
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

/// What the card does in SIGN once the fee is committed.
fn card_signs(pki: &Pki, content: &[u8], signing_time: u64) -> CompactSignature {
    let mut c = CompactSignature {
        key_id: pki.key.key_id(),
        signing_time,
        digest: sha256(content),
        signature: [0; 64],
    };
    c.signature = pki.key.sign(&c.signed_attrs(&sha256(&pki.cert_der)));
    c
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

fn cms_verify(dir: &Path, inform: &str) -> (bool, String) {
    openssl(
        dir,
        &[
            "cms", "-verify", "-binary", "-inform", inform, "-in", "sig.p7s", "-content", "doc",
            "-CAfile", "ca.pem", "-out", "out",
        ],
    )
}

/// 2049-12-31T23:59:59Z, the last UTCTime second, and 2050-01-01T00:00:00Z, the first
/// GeneralizedTime one (RFC 5652 §11.3).
const LAST_UTC_TIME: u64 = 2_524_607_999;

#[test]
fn openssl_cms_verify_accepts_expanded_signatures_utc_and_generalized_time() {
    let pki = pki(
        b"sign CA",
        b"sign key",
        now() - 86_400,
        LAST_UTC_TIME + 86_400 * 400,
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("ca.pem"), pem("CERTIFICATE", &pki.ca_der)).unwrap();
    for (i, t) in [now(), LAST_UTC_TIME, LAST_UTC_TIME + 1]
        .into_iter()
        .enumerate()
    {
        let content = format!("document {i}\n").into_bytes();
        let c = card_signs(&pki, &content, t);
        let p7s = expand(&c, &pki.cert_der, &[]).unwrap();
        let v = verify(&p7s, &sha256(&content), &pki.ca_der).unwrap();
        assert_eq!(v.compact, c);
        assert_eq!(v.certificate, pki.cert_der);
        assert!(v.subject.contains("CN=alice"), "{}", v.subject);
        std::fs::write(d.join("doc"), &content).unwrap();
        std::fs::write(d.join("sig.p7s"), &p7s).unwrap();
        let (ok, text) = cms_verify(d, "DER");
        assert!(
            ok && text.contains("Verification successful"),
            "{t}: {text}"
        );
        assert_eq!(std::fs::read(d.join("out")).unwrap(), content);
        std::fs::write(d.join("sig.p7s"), pem("CMS", &p7s)).unwrap();
        let (ok, text) = cms_verify(d, "PEM");
        assert!(ok, "PEM {t}: {text}");
        // One changed byte of content: OpenSSL and the native check refuse.
        let mut other = content.clone();
        other[0] ^= 1;
        std::fs::write(d.join("doc"), &other).unwrap();
        std::fs::write(d.join("sig.p7s"), &p7s).unwrap();
        let (ok, text) = cms_verify(d, "DER");
        assert!(!ok, "{text}");
        assert!(verify(&p7s, &sha256(&other), &pki.ca_der).is_err());
    }
}

#[test]
fn forged_truncated_or_foreign_signatures_are_refused() {
    let pki_a = pki(
        b"sign CA",
        b"sign key",
        now() - 86_400,
        now() + 86_400 * 400,
    );
    let pki_b = pki(
        b"other CA",
        b"other key",
        now() - 86_400,
        now() + 86_400 * 400,
    );
    let content = b"content";
    let c = card_signs(&pki_a, content, now());
    // The other key's certificate: not the signature's key.
    assert!(expand(&c, &pki_b.cert_der, &[]).is_err());
    let mut forged = c.clone();
    forged.signing_time += 1;
    assert!(
        expand(&forged, &pki_a.cert_der, &[]).is_err(),
        "time is signed"
    );
    let p7s = expand(&c, &pki_a.cert_der, &[]).unwrap();
    assert!(
        verify(&p7s, &sha256(content), &pki_b.ca_der).is_err(),
        "foreign CA"
    );
    for n in 0..p7s.len() {
        assert!(verify(&p7s[..n], &sha256(content), &pki_a.ca_der).is_err());
    }
    for n in (0..p7s.len()).step_by(7) {
        let mut b = p7s.clone();
        b[n] ^= 0x01;
        assert!(
            verify(&b, &sha256(content), &pki_a.ca_der).is_err(),
            "byte {n}"
        );
    }
    // Signed outside the certificate's validity: refused natively.
    let late = card_signs(&pki_a, content, now() + 86_400 * 500);
    let p7s = expand(&late, &pki_a.cert_der, &[]).unwrap();
    assert!(verify(&p7s, &sha256(content), &pki_a.ca_der).is_err());
}
