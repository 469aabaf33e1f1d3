//! Core's license template (`grant::tbs_certificate`, `grant::certificate`), the one the
//! card rebuilds and the PA signs, against a mirror of the same certificate encoded by
//! `der`'s derive with x509-cert's types (the spike's test, ported): byte for byte over
//! random inputs, with dates around the 2049/2050 switch. x509-cert 0.3 cannot hold the
//! license extension's 2.25.<uuid> OID, hence the raw extension list.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::str::FromStr as _;

use der::asn1::{BitString, OctetString, PrintableString};
use der::{Any, Encode as _, Sequence, Tag};
use openpsd_core::crypto::IndiciumKey;
use openpsd_core::psd::license::grant::{self, CardFields, GrantFields};
use openpsd_core::types::{Date, DeviceId, LicenseId, PostalCode};
use openpsd_pa::ca::{spki_of, x509_time, PA_SUBJECT};
use openpsd_service_kit::codec::{random_array, random_bytes, OsRandom};
use spki::{AlgorithmIdentifierOwned, ObjectIdentifier};
use x509_cert::certificate::Version;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, KeyUsage, KeyUsages, SubjectKeyIdentifier,
};
use x509_cert::ext::{Extension, ToExtension as _};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::Validity;

/// The license extension's value.
#[derive(Sequence)]
struct LicenseInfo {
    license: u32,
    origin: PrintableString,
    nonce: OctetString,
}

/// `Extension` with the OID as raw `Any` (const-oid's arcs are u32).
#[derive(Clone, Sequence)]
struct RawExtension {
    extn_id: Any,
    #[asn1(default = "Default::default")]
    critical: bool,
    extn_value: OctetString,
}

/// `TbsCertificate` (v3, no unique IDs) with raw extensions.
#[derive(Clone, Sequence)]
struct RawTbs {
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT")]
    version: Version,
    serial_number: SerialNumber,
    signature: AlgorithmIdentifierOwned,
    issuer: Name,
    validity: Validity,
    subject: Name,
    subject_public_key_info: spki::SubjectPublicKeyInfoOwned,
    #[asn1(context_specific = "3", tag_mode = "EXPLICIT")]
    extensions: Vec<RawExtension>,
}

#[derive(Clone, Sequence)]
struct RawCert {
    tbs: RawTbs,
    signature_algorithm: AlgorithmIdentifierOwned,
    signature: BitString,
}

fn ecdsa_sha256() -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned {
        oid: ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2"),
        parameters: None,
    }
}

fn mirror_tbs(g: &GrantFields, c: &CardFields<'_>, issuer: &Name) -> RawTbs {
    // RFC 4514 order (last RDN first): DER holds serialNumber, then CN.
    let subject = Name::from_str(&format!(
        "CN=license {},serialNumber={}",
        g.license.0,
        hex::encode_upper(c.device.0)
    ))
    .unwrap();
    let mut v: Vec<Extension> = Vec::new();
    let bc = BasicConstraints {
        ca: false,
        path_len_constraint: None,
    };
    v.push((true, &bc).to_extension(&subject, &v).unwrap());
    let ku = KeyUsage(KeyUsages::DigitalSignature.into());
    v.push((true, &ku).to_extension(&subject, &v).unwrap());
    let ski = SubjectKeyIdentifier(
        OctetString::new(grant::certificate_key_id(c.license_public_key).to_vec()).unwrap(),
    );
    v.push((&ski).to_extension(&subject, &v).unwrap());
    let aki = AuthorityKeyIdentifier {
        key_identifier: Some(
            OctetString::new(grant::certificate_key_id(c.pa_public_key).to_vec()).unwrap(),
        ),
        ..Default::default()
    };
    v.push((&aki).to_extension(&subject, &v).unwrap());
    let mut extensions: Vec<RawExtension> = v
        .into_iter()
        .map(|e| RawExtension {
            extn_id: Any::from(e.extn_id),
            critical: e.critical,
            extn_value: e.extn_value,
        })
        .collect();
    let info = LicenseInfo {
        license: g.license.0,
        origin: PrintableString::new(g.origin.as_bytes()).unwrap(),
        nonce: OctetString::new(c.nonce.to_vec()).unwrap(),
    };
    extensions.push(RawExtension {
        extn_id: Any::new(Tag::ObjectIdentifier, grant::LICENSE_EXTENSION_OID).unwrap(),
        critical: false,
        extn_value: OctetString::new(info.to_der().unwrap()).unwrap(),
    });
    RawTbs {
        version: Version::V3,
        serial_number: SerialNumber::new(&g.serial).unwrap(),
        signature: ecdsa_sha256(),
        issuer: issuer.clone(),
        validity: Validity::new(
            x509_time(g.not_before, false).unwrap(),
            x509_time(g.not_after, true).unwrap(),
        ),
        subject,
        subject_public_key_info: spki_of(c.license_public_key).unwrap(),
        extensions,
    }
}

fn below(n: u32) -> u32 {
    u32::from_be_bytes(random_array()) % n
}

fn random_date() -> Date {
    // Mostly near the 2049/2050 switch, some anywhere the template takes.
    let year = match below(4) {
        0 => 2000 + below(8000),
        1 => 2045 + below(11),
        2 => 2049,
        _ => 2050,
    };
    let year = u16::try_from(year).unwrap();
    loop {
        let month = u8::try_from(1 + below(12)).unwrap();
        let day = u8::try_from(1 + below(31)).unwrap();
        if let Some(d) = Date::new(year, month, day) {
            return d;
        }
    }
}

fn random_serial() -> Vec<u8> {
    loop {
        let n = 1 + usize::try_from(below(20)).unwrap();
        let mut s = vec![0u8; n];
        random_bytes(&mut s);
        match below(3) {
            0 => s[0] |= 0x80,
            1 => s[0] = 0x80,
            _ => {}
        }
        if grant::serial_ok(&s) {
            return s;
        }
    }
}

fn random_origin() -> PostalCode {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 -";
    let n = 1 + usize::try_from(below(10)).unwrap();
    let s: Vec<u8> = (0..n)
        .map(|_| CHARS[usize::try_from(below(38)).unwrap()])
        .collect();
    PostalCode::new(&s).unwrap()
}

fn random_license() -> u32 {
    match below(4) {
        0 => below(300),
        1 => u32::MAX - below(3),
        2 => 0x80 << (8 * below(4)),
        _ => u32::from_be_bytes(random_array()),
    }
}

#[test]
fn template_equals_der_encoding_over_random_inputs() {
    let issuer = Name::from_str(PA_SUBJECT).unwrap();
    let subject_der = issuer.to_der().unwrap();
    assert!(grant::pa_subject_ok(&subject_der));
    let pa = IndiciumKey::generate(&mut OsRandom);
    let pa_public = pa.public_key();
    let mut seen_utc = false;
    let mut seen_generalized = false;
    for i in 0..400 {
        let (mut nb, mut na) = (random_date(), random_date());
        if na < nb {
            std::mem::swap(&mut nb, &mut na);
        }
        seen_utc |= nb.year <= 2049;
        seen_generalized |= na.year >= 2050;
        let g = GrantFields {
            serial: random_serial(),
            not_before: nb,
            not_after: na,
            license: LicenseId(random_license()),
            origin: random_origin(),
        };
        let license_key = IndiciumKey::generate(&mut OsRandom).public_key();
        let nonce: [u8; 16] = random_array();
        let c = CardFields {
            pa_subject: &subject_der,
            pa_public_key: &pa_public,
            device: DeviceId(random_array()),
            license_public_key: &license_key,
            nonce: &nonce,
        };
        let tbs = grant::tbs_certificate(&g, &c).unwrap();
        let mirror = mirror_tbs(&g, &c, &issuer);
        assert_eq!(tbs, mirror.to_der().unwrap(), "case {i}: {g:?}");
        if i % 20 == 0 {
            // The whole certificate too, its signature as DER.
            let rs = pa.sign(&tbs);
            let sig = p256::ecdsa::Signature::from_slice(&rs).unwrap().to_der();
            let cert = RawCert {
                tbs: mirror,
                signature_algorithm: ecdsa_sha256(),
                signature: BitString::from_bytes(sig.as_bytes()).unwrap(),
            };
            assert_eq!(
                grant::certificate(&tbs, &rs),
                cert.to_der().unwrap(),
                "case {i}"
            );
        }
    }
    assert!(seen_utc && seen_generalized);
}

#[test]
fn the_ca_keeps_its_key_and_certificate_across_starts() {
    let dir = tempfile::tempdir().unwrap();
    let config = openpsd_pa::Config::new(dir.path().to_path_buf());
    let first = openpsd_pa::Pa::open(&config).unwrap();
    let pem = first.ca_pem().to_owned();
    let subject = first.subject().to_vec();
    drop(first);
    let again = openpsd_pa::Pa::open(&config).unwrap();
    assert_eq!(again.ca_pem(), pem);
    assert_eq!(again.subject(), subject);
    drop(again);
    // The key lost while the database holds the CA: refused, not replaced.
    std::fs::rename(
        dir.path().join(openpsd_pa::SIGNING_KEY_FILE),
        dir.path().join("moved.key"),
    )
    .unwrap();
    let e = openpsd_pa::Pa::open(&config).err().unwrap();
    assert!(format!("{e:#}").contains("Refusing to start"), "{e:#}");
}
