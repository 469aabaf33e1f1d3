//! The postal authority's own certificate and its CRL, built with `x509-cert` (the spike's
//! learnings, `/work/spikes/license-template`): a self-signed P-256 CA whose SKI and AKI are
//! RFC 7093 method 1 (truncated SHA-256, as in every license certificate: the card has no
//! SHA-1), and CRLs from `CrlBuilder`, which copies the CA's own AKI (without one it would
//! compute a SHA-1 key identifier).
//!
//! License certificates are **not** built here: `openpsd_core::psd::license::grant` builds
//! them from the one template the card rebuilds; x509-cert 0.3 cannot even hold their
//! extension's `2.25.<uuid>` OID, so the PA never parses them back either.

pub use openpsd_service_kit::x509::{pem, spki_of, x509_time as x509_time_secs};
use std::str::FromStr as _;

use der::asn1::OctetString;
use der::Encode as _;
use openpsd_core::psd::license::grant::certificate_key_id;
use openpsd_core::types::Date;
use p256::ecdsa::{DerSignature, SigningKey};
use x509_cert::builder::profile::BuilderProfile;
use x509_cert::builder::{Builder as _, CertificateBuilder, CrlBuilder};
use x509_cert::certificate::TbsCertificate;
use x509_cert::crl::RevokedCert;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, CrlNumber, KeyUsage, KeyUsages, SubjectKeyIdentifier,
};
use x509_cert::ext::{Extension, ToExtension as _};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};
use x509_cert::Certificate;

/// The PA's subject (RFC 4514 order: DER holds C, O, CN).
pub const PA_SUBJECT: &str = "CN=openpsd postal authority,O=openpsd,C=DE";

/// RFC 5280 §4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050.
pub fn x509_time(d: Date, end_of_day: bool) -> anyhow::Result<Time> {
    let (h, m, s) = if end_of_day { (23, 59, 59) } else { (0, 0, 0) };
    let dt = der::DateTime::new(d.year, d.month, d.day, h, m, s)?;
    Ok(if d.year <= 2049 {
        Time::UtcTime(der::asn1::UtcTime::from_date_time(dt)?)
    } else {
        Time::GeneralTime(der::asn1::GeneralizedTime::from_date_time(dt))
    })
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
        let bc = BasicConstraints {
            ca: true,
            path_len_constraint: Some(0),
        };
        v.push((true, &bc).to_extension(subject, &v)?);
        let ku = KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign);
        v.push((true, &ku).to_extension(subject, &v)?);
        v.push((&SubjectKeyIdentifier(id.clone())).to_extension(subject, &v)?);
        // CrlBuilder copies the issuer's AKI into every CRL; without one it would compute a
        // SHA-1 key identifier that matches nothing here.
        let aki = AuthorityKeyIdentifier {
            key_identifier: Some(id),
            ..Default::default()
        };
        v.push((&aki).to_extension(subject, &v)?);
        Ok(v)
    }
}

/// The PA's self-signed CA certificate, valid `from` 00:00:00Z to `to` 23:59:59Z.
pub fn ca_certificate(
    key: &SigningKey,
    sec1: &[u8; 65],
    from: Date,
    to: Date,
) -> anyhow::Result<Certificate> {
    let name = Name::from_str(PA_SUBJECT)?;
    let validity = Validity::new(x509_time(from, false)?, x509_time(to, true)?);
    let b = CertificateBuilder::new(
        CaProfile {
            name,
            key_id: certificate_key_id(sec1),
        },
        SerialNumber::new(&[0x01])?,
        validity,
        spki_of(sec1)?,
    )?;
    Ok(b.build::<_, DerSignature>(key)?)
}

/// The subject name's DER, exactly as in `cert` (what PSDs are personalized with).
pub fn subject_der(cert: &Certificate) -> anyhow::Result<Vec<u8>> {
    Ok(cert.tbs_certificate().subject().to_der()?)
}

/// A CRL numbered `number`, issued at `this_update` (Unix seconds), next at
/// `next_update`, listing `revoked` as (serial magnitude, revocation time).
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
            revocation_date: x509_time_secs(*at)?,
            crl_entry_extensions: None,
        });
    }
    let b = CrlBuilder::new_with_this_update(
        ca,
        CrlNumber::try_from(number)?,
        x509_time_secs(this_update)?,
    )?
    .with_next_update(Some(x509_time_secs(next_update)?))
    .with_certificates(entries.into_iter());
    Ok(b.build::<_, DerSignature>(key)?.to_der()?)
}
