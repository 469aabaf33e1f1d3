//! The CMS structures of an RFC 3161 TimeStampToken and of a detached document signature
//! (RFC 5652), written with `der` derive.
//!
//! Why not the `cms` crate: for der 0.8 it exists only as a pre-release (0.3.0-rc.0), and a
//! token needs five small SEQUENCEs. Only the shape a postmark uses is modelled: `sid` is
//! always issuerAndSerialNumber (OpenSSL reads time-stamp tokens as PKCS #7, which knows no
//! other), there are no CRLs and no unsigned attributes; a token with them does not decode.

use der::asn1::{ObjectIdentifier, OctetString, SetOfVec};
use der::{Sequence, ValueOrd};
use spki::AlgorithmIdentifierOwned;
use x509_cert::attr::Attribute;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::Certificate;

/// id-signedData, 1.2.840.113549.1.7.2.
pub const ID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
/// id-data, 1.2.840.113549.1.7.1 (the content type of a signed document).
pub const ID_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
/// id-ct-TSTInfo, 1.2.840.113549.1.9.16.1.4.
pub const ID_CT_TST_INFO: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.1.4");
/// id-sha256, 2.16.840.1.101.3.4.2.1.
pub const ID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
/// ecdsa-with-SHA256, 1.2.840.10045.4.3.2.
pub const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");

/// `ContentInfo { contentType id-signedData, content [0] EXPLICIT SignedData }`.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct ContentInfo {
    /// Always [`ID_SIGNED_DATA`] here.
    pub content_type: ObjectIdentifier,
    /// The signed data.
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT")]
    pub content: SignedData,
}

/// SignedData (RFC 5652 §5.1) without CRLs.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct SignedData {
    /// CMSVersion: 3 for a time-stamp token (the content type is not id-data), 1 for a
    /// document signature (RFC 5652 §5.1).
    pub version: u8,
    /// The digest algorithms of the signers: {sha256}.
    pub digest_algorithms: SetOfVec<AlgorithmIdentifierOwned>,
    /// The TSTInfo.
    pub encap_content_info: EncapsulatedContentInfo,
    /// The signer's certificate and any chain (`[0] IMPLICIT CertificateSet`).
    #[asn1(
        context_specific = "0",
        tag_mode = "IMPLICIT",
        constructed = "true",
        optional = "true"
    )]
    pub certificates: Option<SetOfVec<Certificate>>,
    /// Exactly one signer for a postmark.
    pub signer_infos: SetOfVec<SignerInfo>,
}

/// `EncapsulatedContentInfo { eContentType, eContent [0] EXPLICIT OCTET STRING OPTIONAL }`.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct EncapsulatedContentInfo {
    /// [`ID_CT_TST_INFO`].
    pub e_content_type: ObjectIdentifier,
    /// The TSTInfo DER; absent in a detached document signature.
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    pub e_content: Option<OctetString>,
}

/// SignerInfo (RFC 5652 §5.3), version 1 with issuerAndSerialNumber, no unsigned attributes.
#[derive(Clone, Debug, Eq, PartialEq, Sequence, ValueOrd)]
pub struct SignerInfo {
    /// 1: the sid is issuerAndSerialNumber.
    pub version: u8,
    /// The signer's certificate.
    pub sid: IssuerAndSerialNumber,
    /// sha256.
    pub digest_algorithm: AlgorithmIdentifierOwned,
    /// The signed attributes (`[0] IMPLICIT SET OF Attribute`); the signature is over their
    /// DER with the SET OF tag, `0x31`.
    #[asn1(
        context_specific = "0",
        tag_mode = "IMPLICIT",
        constructed = "true",
        optional = "true"
    )]
    pub signed_attrs: Option<SetOfVec<Attribute>>,
    /// ecdsa-with-SHA256, parameters absent.
    pub signature_algorithm: AlgorithmIdentifierOwned,
    /// DER ECDSA-Sig-Value.
    pub signature: OctetString,
}

/// `IssuerAndSerialNumber { issuer Name, serialNumber CertificateSerialNumber }`.
#[derive(Clone, Debug, Eq, PartialEq, Sequence, ValueOrd)]
pub struct IssuerAndSerialNumber {
    /// The certificate's issuer.
    pub issuer: Name,
    /// The certificate's serial number.
    pub serial_number: SerialNumber,
}
