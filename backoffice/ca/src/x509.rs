//! The certificates and CRLs of the certificate authority, built with `x509-cert`'s
//! builder: the CA's own self-signed certificate, one profile per key purpose for the
//! certificates it issues (`docs/ca.md` § Profiles), and CRLs.
//!
//! Key identifiers are RFC 7093 method 1 (the leftmost 160 bits of SHA-256 of the key's
//! bits), as in the postal authority's certificates: the card has no SHA-1. The CA's
//! certificate carries its own AKI because `CrlBuilder` copies the issuer's AKI into every
//! CRL, and without one would compute a SHA-1 identifier that matches nothing here.

use der::asn1::{Ia5String, OctetString};
use der::Encode as _;
use openpsd_core::psd::certmeter::attestation::Purpose;
use openpsd_core::psd::license::grant::certificate_key_id;
pub use openpsd_service_kit::x509::{customer_name, pem, spki_of, x509_time};
use openpsd_service_kit::x509::{name_of, printable, rdn, utf8, OID_C, OID_CN, OID_O};
use p256::ecdsa::{DerSignature, SigningKey};
use spki::ObjectIdentifier;
use x509_cert::builder::profile::BuilderProfile;
use x509_cert::builder::{Builder as _, CertificateBuilder, CrlBuilder};
use x509_cert::certificate::TbsCertificate;
use x509_cert::crl::RevokedCert;
use x509_cert::ext::pkix::constraints::name::GeneralSubtree;
use x509_cert::ext::pkix::crl::dp::DistributionPoint;
use x509_cert::ext::pkix::name::{DistributionPointName, GeneralName};
use x509_cert::ext::pkix::{
    AccessDescription, AuthorityInfoAccessSyntax, AuthorityKeyIdentifier, BasicConstraints,
    CrlDistributionPoints, CrlNumber, ExtendedKeyUsage, KeyUsage, KeyUsages, NameConstraints,
    SubjectKeyIdentifier,
};
use x509_cert::ext::{Extension, ToExtension as _};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::Validity;
use x509_cert::Certificate;

/// The CA's subject (RFC 4514 order: the DER holds C, O, CN).
pub const CA_SUBJECT: &str = "CN=openpsd certificate authority,O=openpsd,C=DE";

/// id-kp-timeStamping (RFC 3161 §2.3: the only EKU of a TSA certificate, critical).
const OID_TIME_STAMPING: &str = "1.3.6.1.5.5.7.3.8";
/// id-kp-emailProtection.
const OID_EMAIL_PROTECTION: &str = "1.3.6.1.5.5.7.3.4";
/// id-ad-ocsp.
const OID_AD_OCSP: &str = "1.3.6.1.5.5.7.48.1";

/// The CA's subject name.
pub fn ca_name() -> anyhow::Result<Name> {
    name_of(vec![
        rdn(OID_C, printable("DE")?)?,
        rdn(OID_O, utf8("openpsd")?)?,
        rdn(OID_CN, utf8("openpsd certificate authority")?)?,
    ])
}

/// The names a customer's agent CA may certify (Fig. 3A): the subtree of their
/// organisation, `O=openpsd customer <account>` — the first RDN of every subject the CA
/// gives the account's keys. An employee's certificate must name the same organisation
/// first (then any OU, CN, emailAddress the customer likes). Accounts hold no e-mail
/// domain, so there is no rfc822Name or dNSName subtree.
pub fn customer_subtree(account_id: &str) -> anyhow::Result<Name> {
    name_of(vec![rdn(
        OID_O,
        utf8(&format!("openpsd customer {account_id}"))?,
    )?])
}

struct CaProfile {
    name: Name,
    key_id: [u8; 20],
}

impl BuilderProfile for CaProfile {
    fn get_issuer(&self, _subject: &Name) -> Name {
        self.name.clone()
    }

    fn get_subject(&self) -> Name {
        self.name.clone()
    }

    fn build_extensions(
        &self,
        _spk: spki::SubjectPublicKeyInfoRef<'_>,
        _issuer_spk: spki::SubjectPublicKeyInfoRef<'_>,
        tbs: &TbsCertificate,
    ) -> x509_cert::builder::Result<Vec<Extension>> {
        let id = OctetString::new(self.key_id.to_vec())?;
        let subject = tbs.subject();
        let mut v: Vec<Extension> = Vec::new();
        // Path length 1: an agent CA certificate (a customer's PSD certifying its
        // employees, Fig. 3A) sits between this CA and the employees' certificates.
        let bc = BasicConstraints {
            ca: true,
            path_len_constraint: Some(1),
        };
        v.push((true, &bc).to_extension(subject, &v)?);
        // digitalSignature too: the CA signs its OCSP responses itself.
        let ku =
            KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign | KeyUsages::DigitalSignature);
        v.push((true, &ku).to_extension(subject, &v)?);
        v.push((&SubjectKeyIdentifier(id.clone())).to_extension(subject, &v)?);
        let aki = AuthorityKeyIdentifier {
            key_identifier: Some(id),
            ..Default::default()
        };
        v.push((&aki).to_extension(subject, &v)?);
        Ok(v)
    }
}

/// The CA's self-signed certificate, valid from `from` to `to` (Unix seconds).
pub fn ca_certificate(
    key: &SigningKey,
    sec1: &[u8; 65],
    from: u64,
    to: u64,
) -> anyhow::Result<Certificate> {
    let b = CertificateBuilder::new(
        CaProfile {
            name: ca_name()?,
            key_id: certificate_key_id(sec1),
        },
        SerialNumber::new(&[0x01])?,
        Validity::new(x509_time(from)?, x509_time(to)?),
        spki_of(sec1)?,
    )?;
    Ok(b.build::<_, DerSignature>(key)?)
}

/// What a certificate the CA issues says besides its key.
pub struct Leaf<'a> {
    /// The key's purpose: which profile.
    pub purpose: Purpose,
    /// The subject (from the account).
    pub subject: Name,
    /// Serial magnitude, first octet 0x01..=0x7F.
    pub serial: &'a [u8],
    /// Validity, Unix seconds.
    pub not_before: u64,
    /// Validity end, Unix seconds.
    pub not_after: u64,
    /// The certified key, SEC1 uncompressed.
    pub public_key: &'a [u8; 65],
    /// The CRL's URL (`http://…/v1/ca/crl.der`).
    pub crl_url: &'a str,
    /// The agent profile's permitted directoryName subtree ([`customer_subtree`]); the
    /// other profiles ignore it.
    pub permitted: Option<Name>,
    /// The OCSP responder's URL (`http://…/ocsp`).
    pub ocsp_url: &'a str,
}

struct LeafProfile {
    issuer: Name,
    subject: Name,
    purpose: Purpose,
    key_id: [u8; 20],
    ca_key_id: [u8; 20],
    crl_url: Ia5String,
    ocsp_url: Ia5String,
    permitted: Option<Name>,
}

impl BuilderProfile for LeafProfile {
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
        if self.purpose == Purpose::AgentCa {
            self.agent_extensions(subject, &mut v)?;
        } else {
            self.end_entity_extensions(subject, &mut v)?;
        }
        let ski = SubjectKeyIdentifier(OctetString::new(self.key_id.to_vec())?);
        v.push((&ski).to_extension(subject, &v)?);
        let aki = AuthorityKeyIdentifier {
            key_identifier: Some(OctetString::new(self.ca_key_id.to_vec())?),
            ..Default::default()
        };
        v.push((&aki).to_extension(subject, &v)?);
        let cdp = CrlDistributionPoints(vec![DistributionPoint {
            distribution_point: Some(DistributionPointName::FullName(vec![
                GeneralName::UniformResourceIdentifier(self.crl_url.clone()),
            ])),
            reasons: None,
            crl_issuer: None,
        }]);
        v.push((&cdp).to_extension(subject, &v)?);
        let aia = AuthorityInfoAccessSyntax(vec![AccessDescription {
            access_method: ObjectIdentifier::new(OID_AD_OCSP).map_err(der::Error::from)?,
            access_location: GeneralName::UniformResourceIdentifier(self.ocsp_url.clone()),
        }]);
        v.push((&aia).to_extension(subject, &v)?);
        Ok(v)
    }
}

impl LeafProfile {
    /// An agent CA (Fig. 3A): certifies end entities only (pathLenConstraint 0), signs
    /// certificates and nothing else (the PSD publishes no CRL of its own), and only for
    /// names in the customer's subtree (critical nameConstraints, which OpenSSL enforces on
    /// the path and the PSD before it signs).
    fn agent_extensions(&self, subject: &Name, v: &mut Vec<Extension>) -> der::Result<()> {
        let bc = BasicConstraints {
            ca: true,
            path_len_constraint: Some(0),
        };
        v.push((true, &bc).to_extension(subject, v)?);
        let ku = KeyUsage(KeyUsages::KeyCertSign.into());
        v.push((true, &ku).to_extension(subject, v)?);
        let permitted = self
            .permitted
            .clone()
            .ok_or(der::Error::from(der::ErrorKind::Value {
                tag: der::Tag::Sequence,
            }))?;
        let nc = NameConstraints {
            permitted_subtrees: Some(vec![GeneralSubtree {
                base: GeneralName::DirectoryName(permitted),
                minimum: 0,
                maximum: None,
            }]),
            excluded_subtrees: None,
        };
        v.push((true, &nc).to_extension(subject, v)?);
        Ok(())
    }

    /// The postmark and sign profiles.
    fn end_entity_extensions(&self, subject: &Name, v: &mut Vec<Extension>) -> der::Result<()> {
        let bc = BasicConstraints {
            ca: false,
            path_len_constraint: None,
        };
        v.push((true, &bc).to_extension(subject, v)?);
        let ku = KeyUsage(KeyUsages::DigitalSignature | KeyUsages::NonRepudiation);
        v.push((true, &ku).to_extension(subject, v)?);
        // A TSA certificate's EKU is timeStamping alone and critical (RFC 3161 §2.3):
        // `openssl ts -verify` refuses anything else. The sign profile's is not critical.
        let (eku_oid, critical) = match self.purpose {
            Purpose::Postmark => (OID_TIME_STAMPING, true),
            _ => (OID_EMAIL_PROTECTION, false),
        };
        let eku = ExtendedKeyUsage(vec![
            ObjectIdentifier::new(eku_oid).map_err(der::Error::from)?
        ]);
        v.push((critical, &eku).to_extension(subject, v)?);
        Ok(())
    }
}

/// A certificate for `leaf`, signed by the CA (`ca`, `ca_key`). The postmark, sign and
/// agent profiles exist; the caller refuses payment keys before.
pub fn issue(ca: &Certificate, ca_key: &SigningKey, leaf: Leaf<'_>) -> anyhow::Result<Certificate> {
    anyhow::ensure!(
        matches!(
            leaf.purpose,
            Purpose::Postmark | Purpose::Sign | Purpose::AgentCa
        ),
        "no profile for purpose {}",
        leaf.purpose.name()
    );
    let ca_sec1: [u8; 65] = ca
        .tbs_certificate()
        .subject_public_key_info()
        .subject_public_key
        .raw_bytes()
        .try_into()
        .map_err(|_| anyhow::anyhow!("the CA key is not a SEC1 uncompressed point"))?;
    let profile = LeafProfile {
        issuer: ca.tbs_certificate().subject().clone(),
        subject: leaf.subject,
        purpose: leaf.purpose,
        key_id: certificate_key_id(leaf.public_key),
        ca_key_id: certificate_key_id(&ca_sec1),
        crl_url: Ia5String::new(leaf.crl_url)?,
        ocsp_url: Ia5String::new(leaf.ocsp_url)?,
        permitted: leaf.permitted,
    };
    let b = CertificateBuilder::new(
        profile,
        SerialNumber::new(leaf.serial)?,
        Validity::new(x509_time(leaf.not_before)?, x509_time(leaf.not_after)?),
        spki_of(leaf.public_key)?,
    )?;
    Ok(b.build::<_, DerSignature>(ca_key)?)
}

/// A CRL numbered `number`, issued at `this_update`, next at `next_update` (Unix
/// seconds), listing `revoked` as (serial magnitude, revocation time).
pub fn crl(
    ca: &Certificate,
    key: &SigningKey,
    number: u64,
    this_update: u64,
    next_update: u64,
    revoked: &[(Vec<u8>, u64)],
) -> anyhow::Result<Vec<u8>> {
    let mut entries: Vec<RevokedCert> = Vec::with_capacity(revoked.len());
    for (serial, at) in revoked {
        entries.push(RevokedCert {
            serial_number: SerialNumber::new(serial)?,
            revocation_date: x509_time(*at)?,
            crl_entry_extensions: None,
        });
    }
    let b = CrlBuilder::new_with_this_update(
        ca,
        CrlNumber::try_from(number)?,
        x509_time(this_update)?,
    )?
    .with_next_update(Some(x509_time(next_update)?))
    .with_certificates(entries.into_iter());
    Ok(b.build::<_, DerSignature>(key)?.to_der()?)
}
