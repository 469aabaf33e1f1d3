//! The certificate meter (seed 004) in tests: a PSD with a clock, a vendor-signed rate
//! table and trust anchor, a test certificate authority that certifies attested keys with
//! x509-cert's `CertificateBuilder` (the postmark profile of the certmeter spec, or a
//! deliberately wrong one), and stock `openssl` as the oracle for expanded postmarks.

use std::path::Path;
use std::process::Command;
use std::str::FromStr as _;
use std::time::{Duration, UNIX_EPOCH};

use der::asn1::OctetString;
use der::{Any, Encode as _};
use openpsd_core::client::psd_apdu;
use openpsd_core::crypto::sha256;
use openpsd_core::platform::SeededPlatform;
use openpsd_core::psd::certmeter::anchor::{Anchor, AnchorKind};
use openpsd_core::psd::certmeter::attestation::{KeyAttestation, Purpose};
use openpsd_core::psd::certmeter::info::CertMeterInfo;
use openpsd_core::psd::certmeter::rates::{RateTable, Service};
use openpsd_core::psd::license::grant::certificate_key_id;
use openpsd_core::psd::psd_card;
use openpsd_core::psd::receipt::Receipt;
use openpsd_core::store::{MemStore, Nvm, Store as _};
use openpsd_core::types::*;
use p256::ecdsa::{DerSignature, SigningKey};
use spki::{AlgorithmIdentifierOwned, ObjectIdentifier, SubjectPublicKeyInfoOwned};
use x509_cert::builder::profile::BuilderProfile;
use x509_cert::builder::{Builder as _, CertificateBuilder};
use x509_cert::certificate::TbsCertificate;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages,
    SubjectKeyIdentifier,
};
use x509_cert::ext::{Extension, ToExtension as _};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};

use crate::licenses::vendor_key;
use crate::{blank_card, expect_ok, kms_key, personalization, Kms, TestCard, DEVICE};

/// The platform's time in these tests: 2026-11-21 10:00:00 UTC.
pub const NOW: u64 = 1_795_255_200;
/// Its date.
pub fn today() -> Date {
    Date::new(2026, 11, 21).expect("date")
}
/// The postmark fee of the standard table.
pub const POSTMARK_FEE: u64 = 10;
/// The certificate fee of the standard table.
pub const CERTIFICATE_FEE: u64 = 500;
/// Funds refilled on set 0.
pub const FUNDS: u64 = 10_000;
/// The inspection period of [`certmeter_card`] cards that have one.
pub const INSPECTION_DAYS: u16 = 28;

/// id-kp-timeStamping.
pub const KP_TIME_STAMPING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.8");
/// id-kp-emailProtection.
pub const KP_EMAIL_PROTECTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.4");

/// A platform at [`NOW`].
pub fn platform(seed: u64) -> SeededPlatform {
    let mut p = SeededPlatform::new(seed);
    p.today = Some(today());
    p.now = Some(NOW);
    p
}

/// Sets the card's clock to `now` (and today to its date).
pub fn set_clock(card: &mut TestCard, now: Option<u64>) {
    let p = card.platform_mut();
    p.now = now;
    p.today = now.and_then(Date::from_unix_seconds);
}

/// Re-opens the card's memory with the clock at [`NOW`] and SELECTs the PSD.
pub fn reopen_at(nvm: &Nvm, seed: u64) -> TestCard {
    let store = MemStore::open(nvm.clone()).expect("store re-opens");
    let mut card = psd_card(store, platform(seed)).expect("state loads");
    expect_ok(&card.transmit(&psd_apdu::select()));
    card
}

/// A personalized PSD with the clock at [`NOW`], `FUNDS` refilled on set 0 and, when
/// `inspection` is set, an inspection period of [`INSPECTION_DAYS`] opened by an accepted
/// audit (RECEIPT) today. Returns it and the device's public key.
pub fn certmeter_card(seed: u64, inspection: bool) -> (TestCard, [u8; 65]) {
    let mut card = blank_card(seed);
    set_clock(&mut card, Some(NOW));
    let mut p = personalization();
    if inspection {
        p.inspection_days = INSPECTION_DAYS;
    }
    let data = expect_ok(&card.transmit(&psd_apdu::personalize(&p)));
    let pk: [u8; 65] = data[4..].try_into().expect("public key");
    let set = RegisterSetIndex(0);
    let msg = Kms::new().refill_for(&mut card, set, Amount(FUNDS), [1; 8]);
    expect_ok(&card.transmit(&psd_apdu::refill(set, &msg)));
    if inspection {
        let nonce = *b"certmeter-audit!";
        Kms::new().audit(&mut card, set, nonce);
        let receipt = Receipt {
            device: DEVICE,
            nonce,
            accepted_on: today(),
        }
        .sign(&kms_key());
        expect_ok(&card.transmit(&psd_apdu::receipt(&receipt)));
    }
    (card, pk)
}

/// A rate table signed by the test vendor.
pub fn rate_table(version: u32, effective: Date, fees: &[(Service, u64)]) -> Vec<u8> {
    RateTable {
        version,
        effective,
        fees: fees.iter().map(|(s, f)| (*s, Amount(*f))).collect(),
    }
    .sign(&vendor_key())
    .expect("well-formed table")
}

/// The standard table: version `version`, effective 2026-11-01, postmark 10, certificate
/// 500.
pub fn standard_table(version: u32) -> Vec<u8> {
    rate_table(
        version,
        Date::new(2026, 11, 1).expect("date"),
        &[
            (Service::Postmark, POSTMARK_FEE),
            (Service::Certificate, CERTIFICATE_FEE),
        ],
    )
}

/// A certificate-CA trust anchor for `ca`, signed by the test vendor.
pub fn ca_anchor(ca: &TestCa, version: u32) -> Vec<u8> {
    Anchor {
        kind: AnchorKind::CertificateCa,
        version,
        public_key: ca.public_key,
    }
    .sign(&vendor_key())
}

/// GET DATA 00 05, decoded.
pub fn cm_info(card: &mut TestCard) -> CertMeterInfo {
    CertMeterInfo::decode(&expect_ok(&card.transmit(&psd_apdu::get_certmeter_data())))
        .expect("GET DATA 00 05 decodes")
}

/// Fees paid and services charged on `set`, as GET DATA 00 05 shows them.
pub fn fees_of(card: &mut TestCard, set: u8) -> (Amount, PieceCount) {
    cm_info(card)
        .sets
        .iter()
        .find(|(s, _, _)| *s == set)
        .map(|(_, f, n)| (*f, *n))
        .expect("set listed")
}

/// Every record of `card`'s store as a frozen fixture holds them: `id u16 ‖ length u32 ‖
/// bytes`, one after the other.
pub fn store_records(card: &TestCard) -> Vec<u8> {
    let mut out = Vec::new();
    for id in card.store().ids().expect("store lists") {
        let v = card.store().read(id).expect("store reads").expect("listed");
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&u32::try_from(v.len()).expect("record fits").to_be_bytes());
        out.extend_from_slice(&v);
    }
    out
}

/// The records of a fixture [`store_records`] wrote.
pub fn decode_records(bytes: &[u8]) -> Vec<(u16, Vec<u8>)> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let id = u16::from_be_bytes(rest[..2].try_into().expect("id"));
        let len = u32::from_be_bytes(rest[2..6].try_into().expect("length")) as usize;
        out.push((id, rest[6..6 + len].to_vec()));
        rest = &rest[6 + len..];
    }
    out
}

/// The raw CERTMETER record (0x0105) as the store holds it.
pub fn certmeter_record(card: &TestCard) -> Option<Vec<u8>> {
    card.store()
        .read(openpsd_core::records::psd::CERTMETER)
        .expect("store reads")
}

/// Whether `needle` appears in any cell of the memory (home, journal or marker).
pub fn nvm_contains(nvm: &Nvm, needle: &[u8]) -> bool {
    // The cells are private; their Debug form lists each cell's bytes in order.
    let hay = format!("{nvm:?}").replace(' ', "");
    let list = format!("{needle:?}").replace(' ', "");
    let inner = &list[1..list.len() - 1];
    ["[", ","]
        .iter()
        .flat_map(|a| ["]", ","].map(move |b| format!("{a}{inner}{b}")))
        .any(|pat| hay.contains(&pat))
}

/// GENERATE KEY for `purpose`; the attestation's bytes, checked against the device key.
pub fn generate(
    card: &mut TestCard,
    purpose: Purpose,
    device_pk: &[u8; 65],
) -> (Vec<u8>, KeyAttestation) {
    let bytes = expect_ok(&card.transmit(&psd_apdu::generate_key(purpose, false)));
    let a = KeyAttestation::open(&bytes, device_pk).expect("attestation verifies");
    (bytes, a)
}

fn spki_of(sec1: &[u8; 65]) -> SubjectPublicKeyInfoOwned {
    SubjectPublicKeyInfoOwned {
        algorithm: AlgorithmIdentifierOwned {
            oid: ObjectIdentifier::new_unwrap("1.2.840.10045.2.1"),
            parameters: Some(Any::from(ObjectIdentifier::new_unwrap(
                "1.2.840.10045.3.1.7",
            ))),
        },
        subject_public_key: der::asn1::BitString::from_bytes(sec1).expect("bit string"),
    }
}

fn validity(from: u64, to: u64) -> Validity {
    let t = |s| Time::try_from(UNIX_EPOCH + Duration::from_secs(s)).expect("time");
    Validity::new(t(from), t(to))
}

/// 2026-01-01 00:00 UTC.
pub const VALID_FROM: u64 = 1_767_225_600;
/// 2036-01-01 00:00 UTC.
pub const VALID_TO: u64 = 2_082_758_400;

/// What the CA writes into a certificate: the postmark profile by default.
#[derive(Clone, Debug)]
pub struct CertProfile {
    /// Extended key usages.
    pub eku: Vec<ObjectIdentifier>,
    /// Whether the EKU extension is critical.
    pub eku_critical: bool,
    /// BasicConstraints cA.
    pub ca: bool,
    /// Validity, Unix seconds.
    pub valid: (u64, u64),
}

impl Default for CertProfile {
    fn default() -> Self {
        Self {
            eku: vec![KP_TIME_STAMPING],
            eku_critical: true,
            ca: false,
            valid: (VALID_FROM, VALID_TO),
        }
    }
}

struct Profile {
    issuer: Name,
    subject: Name,
    ski: [u8; 20],
    aki: [u8; 20],
    /// `None`: the CA's own self-signed certificate.
    leaf: Option<CertProfile>,
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
        let Some(leaf) = &self.leaf else {
            // Path length 1, as the back office's CA: an agent CA (Fig. 3A) may sit
            // between it and the employees' certificates.
            let bc = BasicConstraints {
                ca: true,
                path_len_constraint: Some(1),
            };
            v.push((true, &bc).to_extension(subject, &v)?);
            let ku = KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign);
            v.push((true, &ku).to_extension(subject, &v)?);
            v.push((&ski).to_extension(subject, &v)?);
            v.push((&aki).to_extension(subject, &v)?);
            return Ok(v);
        };
        let bc = BasicConstraints {
            ca: leaf.ca,
            path_len_constraint: None,
        };
        v.push((true, &bc).to_extension(subject, &v)?);
        let ku = KeyUsage(KeyUsages::DigitalSignature | KeyUsages::NonRepudiation);
        v.push((true, &ku).to_extension(subject, &v)?);
        let eku = ExtendedKeyUsage(leaf.eku.clone());
        v.push((leaf.eku_critical, &eku).to_extension(subject, &v)?);
        v.push((&ski).to_extension(subject, &v)?);
        v.push((&aki).to_extension(subject, &v)?);
        Ok(v)
    }
}

/// A test certificate authority.
pub struct TestCa {
    key: SigningKey,
    name: Name,
    /// Its key (SEC1 uncompressed).
    pub public_key: [u8; 65],
    /// Its self-signed certificate (DER).
    pub cert_der: Vec<u8>,
}

impl TestCa {
    /// A CA whose key derives from `seed`.
    pub fn new(seed: &[u8]) -> TestCa {
        let key = SigningKey::from_slice(&sha256(seed)).expect("scalar");
        let mut public_key = [0u8; 65];
        public_key.copy_from_slice(key.verifying_key().to_sec1_point(false).as_bytes());
        let id = certificate_key_id(&public_key);
        let name = Name::from_str("CN=openpsd test CA,O=openpsd,C=DE").expect("name");
        let cert = CertificateBuilder::new(
            Profile {
                issuer: name.clone(),
                subject: name.clone(),
                ski: id,
                aki: id,
                leaf: None,
            },
            SerialNumber::new(&[0x01]).expect("serial"),
            validity(VALID_FROM, VALID_TO),
            spki_of(&public_key),
        )
        .expect("builder")
        .build::<_, DerSignature>(&key)
        .expect("CA certificate");
        TestCa {
            key,
            name,
            public_key,
            cert_der: cert.to_der().expect("DER"),
        }
    }

    /// The standard test CA.
    pub fn standard() -> TestCa {
        TestCa::new(b"openpsd certmeter test CA")
    }

    /// A certificate for `public_key` with `profile` (subject: the test customer).
    pub fn certify(&self, public_key: &[u8; 65], profile: &CertProfile) -> Vec<u8> {
        let subject =
            Name::from_str("CN=alice,serialNumber=5053443030303031,O=openpsd customer 42")
                .expect("name");
        let mut serial = sha256(&[&public_key[..], b" serial"].concat())[..16].to_vec();
        serial[0] &= 0x7F;
        serial[0] |= 0x01;
        let cert = CertificateBuilder::new(
            Profile {
                issuer: self.name.clone(),
                subject,
                ski: certificate_key_id(public_key),
                aki: certificate_key_id(&self.public_key),
                leaf: Some(profile.clone()),
            },
            SerialNumber::new(&serial).expect("serial"),
            validity(profile.valid.0, profile.valid.1),
            spki_of(public_key),
        )
        .expect("builder")
        .build::<_, DerSignature>(&self.key)
        .expect("certificate");
        cert.to_der().expect("DER")
    }

    /// A postmark-profile certificate for `public_key`.
    pub fn postmark_certificate(&self, public_key: &[u8; 65]) -> Vec<u8> {
        self.certify(public_key, &CertProfile::default())
    }

    /// The CA's key as the PSD checks its revocation orders with (the same scalar).
    pub fn order_key(&self) -> openpsd_core::crypto::IndiciumKey {
        openpsd_core::crypto::IndiciumKey::from_bytes(&self.key.to_bytes())
            .expect("the CA's scalar")
    }
}

/// Loads the standard table (version 1) and the standard CA's anchor (version 1).
pub fn load_table_and_anchor(card: &mut TestCard, ca: &TestCa) {
    expect_ok(&card.transmit(&psd_apdu::load_rate_table(&standard_table(1))));
    expect_ok(&card.transmit(&psd_apdu::load_trust_anchor(&ca_anchor(ca, 1))));
}

/// Table, anchor, GENERATE KEY (postmark), certificate by `ca`, INSTALL KEY CERTIFICATE
/// paid by set 0. Returns the slot and the certificate.
pub fn activate_postmark_key(
    card: &mut TestCard,
    device_pk: &[u8; 65],
    ca: &TestCa,
) -> (u8, Vec<u8>) {
    load_table_and_anchor(card, ca);
    let (_, a) = generate(card, Purpose::Postmark, device_pk);
    let cert = ca.postmark_certificate(&a.public_key);
    expect_ok(&card.transmit(&psd_apdu::install_key_certificate(
        a.slot,
        RegisterSetIndex(0),
        &cert,
    )));
    (a.slot, cert)
}

/// PEM of a DER certificate.
pub fn pem(der: &[u8]) -> String {
    der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, der).expect("PEM")
}

/// Runs stock `openssl` in `dir`: success and stdout + stderr.
pub fn openssl(dir: &Path, args: &[&str]) -> (bool, String) {
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

/// The fee of a signature (SIGN) in [`sign_table`].
pub const SIGN_FEE: u64 = 7;
/// The fee of a validation (VALIDATE POSTMARK) in [`sign_table`].
pub const VALIDATION_FEE: u64 = 4;

/// The standard table plus signature and validation fees (version `version`, effective
/// 2026-11-01).
pub fn sign_table(version: u32) -> Vec<u8> {
    rate_table(
        version,
        Date::new(2026, 11, 1).expect("date"),
        &[
            (Service::Postmark, POSTMARK_FEE),
            (Service::Validation, VALIDATION_FEE),
            (Service::Certificate, CERTIFICATE_FEE),
            (Service::Signature, SIGN_FEE),
        ],
    )
}

impl TestCa {
    /// A sign-profile certificate for `public_key`, as the back office's CA makes it:
    /// key usage digitalSignature + nonRepudiation, EKU emailProtection (not critical).
    pub fn sign_certificate(&self, public_key: &[u8; 65]) -> Vec<u8> {
        self.certify(
            public_key,
            &CertProfile {
                eku: vec![KP_EMAIL_PROTECTION],
                eku_critical: false,
                ..CertProfile::default()
            },
        )
    }
}

/// GENERATE KEY for `purpose` and INSTALL KEY CERTIFICATE (paid by set 0) with the
/// certificate of `ca`'s profile for it. Table and anchor must be loaded. Returns the slot
/// and the certificate.
pub fn activate_key(
    card: &mut TestCard,
    device_pk: &[u8; 65],
    ca: &TestCa,
    purpose: Purpose,
) -> (u8, Vec<u8>) {
    let (_, a) = generate(card, purpose, device_pk);
    let cert = match purpose {
        Purpose::Sign => ca.sign_certificate(&a.public_key),
        _ => ca.postmark_certificate(&a.public_key),
    };
    expect_ok(&card.transmit(&psd_apdu::install_key_certificate(
        a.slot,
        RegisterSetIndex(0),
        &cert,
    )));
    (a.slot, cert)
}

/// The agent-certificate fee of [`agent_table`].
pub const AGENT_CERTIFICATE_FEE: u64 = 50;

/// The standard table with an agent-certificate fee (Fig. 3A): postmark 10, certificate
/// 500, agent certificate 50.
pub fn agent_table(version: u32) -> Vec<u8> {
    rate_table(
        version,
        Date::new(2026, 11, 1).expect("date"),
        &[
            (Service::Postmark, POSTMARK_FEE),
            (Service::Certificate, CERTIFICATE_FEE),
            (Service::AgentCertificate, AGENT_CERTIFICATE_FEE),
        ],
    )
}

/// The test customer's subject (every certificate [`TestCa`] issues names it).
pub const CUSTOMER_SUBJECT: &str = "CN=alice,serialNumber=5053443030303031,O=openpsd customer 42";
/// The test customer's organisation: the agent CA's permitted subtree.
pub const CUSTOMER_SUBTREE: &str = "O=openpsd customer 42";

/// What an agent CA certificate of [`TestCa::agent_certificate`] holds.
#[derive(Clone, Debug)]
pub struct AgentProfile {
    /// Permitted directoryName subtrees (RFC 4514); empty: no nameConstraints at all.
    pub permitted: Vec<String>,
    /// Permitted rfc822Name subtrees.
    pub permitted_email: Vec<String>,
    /// Whether nameConstraints is critical.
    pub nc_critical: bool,
    /// pathLenConstraint.
    pub path_len: Option<u8>,
    /// BasicConstraints cA.
    pub ca: bool,
    /// Validity, Unix seconds.
    pub valid: (u64, u64),
}

impl Default for AgentProfile {
    fn default() -> Self {
        Self {
            permitted: vec![CUSTOMER_SUBTREE.to_owned()],
            permitted_email: Vec::new(),
            nc_critical: true,
            path_len: Some(0),
            ca: true,
            valid: (VALID_FROM, VALID_TO),
        }
    }
}

struct AgentBuilderProfile {
    issuer: Name,
    subject: Name,
    ski: [u8; 20],
    aki: [u8; 20],
    p: AgentProfile,
}

impl BuilderProfile for AgentBuilderProfile {
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
        use x509_cert::ext::pkix::constraints::name::GeneralSubtree;
        use x509_cert::ext::pkix::name::GeneralName;
        use x509_cert::ext::pkix::NameConstraints;
        let subject = tbs.subject();
        let mut v: Vec<Extension> = Vec::new();
        let bc = BasicConstraints {
            ca: self.p.ca,
            path_len_constraint: self.p.path_len,
        };
        v.push((true, &bc).to_extension(subject, &v)?);
        let ku = KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign);
        v.push((true, &ku).to_extension(subject, &v)?);
        let mut permitted: Vec<GeneralSubtree> = Vec::new();
        for dn in &self.p.permitted {
            permitted.push(GeneralSubtree {
                base: GeneralName::DirectoryName(Name::from_str(dn).expect("subtree")),
                minimum: 0,
                maximum: None,
            });
        }
        for mail in &self.p.permitted_email {
            permitted.push(GeneralSubtree {
                base: GeneralName::Rfc822Name(der::asn1::Ia5String::new(mail)?),
                minimum: 0,
                maximum: None,
            });
        }
        if !permitted.is_empty() {
            let nc = NameConstraints {
                permitted_subtrees: Some(permitted),
                excluded_subtrees: None,
            };
            v.push((self.p.nc_critical, &nc).to_extension(subject, &v)?);
        }
        let ski = SubjectKeyIdentifier(OctetString::new(self.ski.to_vec())?);
        v.push((&ski).to_extension(subject, &v)?);
        let aki = AuthorityKeyIdentifier {
            key_identifier: Some(OctetString::new(self.aki.to_vec())?),
            ..Default::default()
        };
        v.push((&aki).to_extension(subject, &v)?);
        Ok(v)
    }
}

impl TestCa {
    /// An agent CA certificate (Fig. 3A) for `public_key` with `profile`, subject the test
    /// customer.
    pub fn agent_certificate(&self, public_key: &[u8; 65], profile: &AgentProfile) -> Vec<u8> {
        let mut serial = sha256(&[&public_key[..], b" agent serial"].concat())[..16].to_vec();
        serial[0] &= 0x7F;
        serial[0] |= 0x01;
        CertificateBuilder::new(
            AgentBuilderProfile {
                issuer: self.name.clone(),
                subject: Name::from_str(CUSTOMER_SUBJECT).expect("name"),
                ski: certificate_key_id(public_key),
                aki: certificate_key_id(&self.public_key),
                p: profile.clone(),
            },
            SerialNumber::new(&serial).expect("serial"),
            validity(profile.valid.0, profile.valid.1),
            spki_of(public_key),
        )
        .expect("builder")
        .build::<_, DerSignature>(&self.key)
        .expect("certificate")
        .to_der()
        .expect("DER")
    }
}

/// The agent table, the standard CA's anchor, GENERATE KEY (agent), an agent CA
/// certificate with `profile`, INSTALL KEY CERTIFICATE paid by set 0. Returns the
/// certificate.
pub fn activate_agent_key(
    card: &mut TestCard,
    device_pk: &[u8; 65],
    ca: &TestCa,
    profile: &AgentProfile,
) -> Vec<u8> {
    expect_ok(&card.transmit(&psd_apdu::load_rate_table(&agent_table(1))));
    expect_ok(&card.transmit(&psd_apdu::load_trust_anchor(&ca_anchor(ca, 1))));
    let (_, a) = generate(card, Purpose::AgentCa, device_pk);
    let cert = ca.agent_certificate(&a.public_key, profile);
    expect_ok(&card.transmit(&psd_apdu::install_key_certificate(
        a.slot,
        RegisterSetIndex(0),
        &cert,
    )));
    cert
}

/// A P-256 key and PKCS#10 request made by stock `openssl req` in `dir` (`<stem>.key`,
/// `<stem>.csr` in DER), for `subj` (OpenSSL's `/O=.../CN=...` form) and `extra` arguments
/// (e.g. `-addext subjectAltName=...`). Returns the request's DER.
pub fn openssl_csr(dir: &Path, stem: &str, subj: &str, curve: &str, extra: &[&str]) -> Vec<u8> {
    let key = format!("{stem}.key");
    let csr = format!("{stem}.csr");
    let pkeyopt = format!("ec_paramgen_curve:{curve}");
    let mut args = vec![
        "req", "-new", "-newkey", "ec", "-pkeyopt", &pkeyopt, "-nodes", "-keyout", &key, "-subj",
        subj, "-outform", "DER", "-out", &csr,
    ];
    args.extend_from_slice(extra);
    let (ok, text) = openssl(dir, &args);
    assert!(ok, "openssl req: {text}");
    std::fs::read(dir.join(csr)).expect("CSR written")
}
