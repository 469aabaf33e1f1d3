//! The X.509 pieces every certificate-issuing service shares (the CA, the creditor, the
//! postal authority): times, a P-256 key's SubjectPublicKeyInfo, names, PEM. One copy,
//! because the issuers' certificates must agree on them: a customer's subject, for one,
//! names them alike in their key certificates (CA) and their lines of credit (creditor).

use std::time::Duration;

use der::asn1::{BitString, PrintableStringRef, Utf8StringRef};
use der::{Any, Decode as _, Encode as _};
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};
use x509_cert::spki::{AlgorithmIdentifierOwned, ObjectIdentifier, SubjectPublicKeyInfoOwned};
use x509_cert::time::Time;

/// commonName.
pub const OID_CN: &str = "2.5.4.3";
/// serialNumber.
pub const OID_SERIAL_NUMBER: &str = "2.5.4.5";
/// organizationName.
pub const OID_O: &str = "2.5.4.10";
/// countryName.
pub const OID_C: &str = "2.5.4.6";

/// An object identifier from its dotted text.
pub fn oid(s: &str) -> anyhow::Result<ObjectIdentifier> {
    ObjectIdentifier::new(s).map_err(|e| anyhow::anyhow!("OID {s}: {e}"))
}

/// A Unix time (seconds) as an X.509 time (RFC 5280 §4.1.2.5: UTCTime through 2049,
/// GeneralizedTime from 2050).
pub fn x509_time(secs: u64) -> anyhow::Result<Time> {
    let dt = der::DateTime::from_unix_duration(Duration::from_secs(secs))?;
    Ok(if dt.year() <= 2049 {
        Time::UtcTime(der::asn1::UtcTime::from_date_time(dt)?)
    } else {
        Time::GeneralTime(der::asn1::GeneralizedTime::from_date_time(dt))
    })
}

/// id-ecPublicKey on prime256v1 holding `sec1`.
pub fn spki_of(sec1: &[u8; 65]) -> anyhow::Result<SubjectPublicKeyInfoOwned> {
    Ok(SubjectPublicKeyInfoOwned {
        algorithm: AlgorithmIdentifierOwned {
            oid: oid("1.2.840.10045.2.1")?,
            parameters: Some(Any::from(oid("1.2.840.10045.3.1.7")?)),
        },
        subject_public_key: BitString::from_bytes(sec1)?,
    })
}

/// One attribute as a relative distinguished name.
pub fn rdn(attr: &str, value: Any) -> anyhow::Result<RelativeDistinguishedName> {
    Ok(RelativeDistinguishedName::try_from(vec![
        AttributeTypeAndValue {
            oid: oid(attr)?,
            value,
        },
    ])?)
}

/// A UTF8String value.
pub fn utf8(s: &str) -> anyhow::Result<Any> {
    Ok(Any::encode_from(&Utf8StringRef::new(s)?)?)
}

/// A PrintableString value.
pub fn printable(s: &str) -> anyhow::Result<Any> {
    Ok(Any::encode_from(&PrintableStringRef::new(s)?)?)
}

/// A name of these RDNs, in order.
pub fn name_of(rdns: Vec<RelativeDistinguishedName>) -> anyhow::Result<Name> {
    // `Name` has no public constructor from RDNs without the `hazmat` feature: its DER.
    Ok(Name::from_der(&RdnSequence::from(rdns).to_der()?)?)
}

/// A customer's subject, from their account only (RFC 4514: `CN=<username>,
/// serialNumber=<device ID>,O=openpsd customer <account>`). serialNumber is a
/// PrintableString (X.520); the device ID is 16 upper-case hex.
pub fn customer_name(username: &str, device_hex: &str, account_id: &str) -> anyhow::Result<Name> {
    name_of(vec![
        rdn(OID_O, utf8(&format!("openpsd customer {account_id}"))?)?,
        rdn(OID_SERIAL_NUMBER, printable(device_hex)?)?,
        rdn(OID_CN, utf8(username)?)?,
    ])
}

/// PEM of a DER object (`CERTIFICATE`, `X509 CRL`).
pub fn pem(label: &str, der: &[u8]) -> anyhow::Result<String> {
    Ok(der::pem::encode_string(
        label,
        der::pem::LineEnding::LF,
        der,
    )?)
}
