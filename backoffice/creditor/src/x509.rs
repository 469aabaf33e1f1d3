//! The creditor's certificates (`docs/creditor.md` § Certificates): its own self-signed
//! certificate (a CA of path length 0: it certifies payment keys, nothing else) and the line
//! of credit certificates (Fig. 7A) on PSDs' payment keys, with the credit-line extension
//! (1.3.6.1.4.1.32473.1.3, non-critical) LOAD CREDIT LINE reads.

pub use openpsd_service_kit::x509::{customer_name, pem, spki_of, x509_time};

use der::asn1::OctetString;
use openpsd_core::psd::certmeter::credit::{CreditLine, CREDIT_LINE_OID_TEXT};
use openpsd_core::psd::license::grant::certificate_key_id;
use p256::ecdsa::{DerSignature, SigningKey};
use spki::ObjectIdentifier;
use x509_cert::builder::profile::BuilderProfile;
use x509_cert::builder::{Builder as _, CertificateBuilder};
use x509_cert::certificate::TbsCertificate;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, KeyUsage, KeyUsages, SubjectKeyIdentifier,
};
use x509_cert::ext::{Extension, ToExtension as _};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::Validity;
use x509_cert::Certificate;

/// The creditor's subject.
pub const CREDITOR_SUBJECT: &str = "CN=openpsd creditor,O=openpsd,C=DE";

// Times, keys, names and PEM are the kit's (`openpsd_service_kit::x509`), shared with the
// CA: a customer's lines and key certificates name them alike.

struct Profile {
    issuer: Name,
    subject: Name,
    key_id: [u8; 20],
    issuer_key_id: [u8; 20],
    /// `None`: the creditor's own certificate.
    line: Option<CreditLine>,
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
        let (bc, ku) = match &self.line {
            None => (
                BasicConstraints {
                    ca: true,
                    path_len_constraint: Some(0),
                },
                KeyUsage(KeyUsages::KeyCertSign | KeyUsages::DigitalSignature),
            ),
            Some(_) => (
                BasicConstraints {
                    ca: false,
                    path_len_constraint: None,
                },
                KeyUsage(KeyUsages::DigitalSignature | KeyUsages::NonRepudiation),
            ),
        };
        v.push((true, &bc).to_extension(subject, &v)?);
        v.push((true, &ku).to_extension(subject, &v)?);
        v.push(
            (&SubjectKeyIdentifier(OctetString::new(self.key_id.to_vec())?))
                .to_extension(subject, &v)?,
        );
        let aki = AuthorityKeyIdentifier {
            key_identifier: Some(OctetString::new(self.issuer_key_id.to_vec())?),
            ..Default::default()
        };
        v.push((&aki).to_extension(subject, &v)?);
        if let Some(line) = &self.line {
            v.push(Extension {
                extn_id: ObjectIdentifier::new(CREDIT_LINE_OID_TEXT).map_err(der::Error::from)?,
                critical: false,
                extn_value: OctetString::new(line.to_der())?,
            });
        }
        Ok(v)
    }
}

/// The creditor's self-signed certificate, valid from `from` to `to` (Unix seconds).
pub fn creditor_certificate(
    key: &SigningKey,
    sec1: &[u8; 65],
    from: u64,
    to: u64,
) -> anyhow::Result<Certificate> {
    let name: Name = CREDITOR_SUBJECT.parse()?;
    let id = certificate_key_id(sec1);
    let b = CertificateBuilder::new(
        Profile {
            issuer: name.clone(),
            subject: name,
            key_id: id,
            issuer_key_id: id,
            line: None,
        },
        SerialNumber::new(&[0x01])?,
        Validity::new(x509_time(from)?, x509_time(to)?),
        spki_of(sec1)?,
    )?;
    Ok(b.build::<_, DerSignature>(key)?)
}

/// What a line certificate says besides its key.
pub struct Line<'a> {
    /// The subject (from the account).
    pub subject: Name,
    /// Serial magnitude, first octet 0x01..=0x7F.
    pub serial: &'a [u8],
    /// Unix seconds.
    pub not_before: u64,
    /// Unix seconds.
    pub not_after: u64,
    /// The payment key, SEC1 uncompressed.
    pub public_key: &'a [u8; 65],
    /// The line granted.
    pub line: CreditLine,
}

/// A line of credit certificate signed by the creditor (`issuer`, `key`).
pub fn line_certificate(
    issuer: &Certificate,
    issuer_sec1: &[u8; 65],
    key: &SigningKey,
    l: Line<'_>,
) -> anyhow::Result<Certificate> {
    let b = CertificateBuilder::new(
        Profile {
            issuer: issuer.tbs_certificate().subject().clone(),
            subject: l.subject,
            key_id: certificate_key_id(l.public_key),
            issuer_key_id: certificate_key_id(issuer_sec1),
            line: Some(l.line),
        },
        SerialNumber::new(l.serial)?,
        Validity::new(x509_time(l.not_before)?, x509_time(l.not_after)?),
        spki_of(l.public_key)?,
    )?;
    Ok(b.build::<_, DerSignature>(key)?)
}
