//! The OCSP responder's messages (RFC 6960 §4.1-4.2), written with `der`'s derive
//! (`x509-ocsp` is on der 0.7, the rest of the CA on 0.8), and the responder itself.
//!
//! The CA signs its responses with its own key (responderID byKey, the SHA-1 of its key's
//! bits, as RFC 6960 §4.2.1 defines KeyHash): no delegated OCSP-signing certificate, so
//! none of the delegated responder's pitfalls (a missing id-kp-OCSPSigning, a `-VAfile`).
//! The CA's certificate goes in the response's `certs`, so a client finds the signer
//! without being told. The nonce extension of a request is echoed.
//!
//! A request's CertID is matched with the hash it names (SHA-1, what `openssl ocsp` sends
//! by default, or SHA-256): another issuer's CertID is answered `unknown`, as is a serial
//! this CA never issued.

use der::asn1::{BitString, GeneralizedTime, Null, ObjectIdentifier, OctetString};
use der::{Any, Choice, Decode as _, Encode as _, Enumerated, Sequence};
use p256::ecdsa::{DerSignature, SigningKey};
use sha1::Digest as _;
use spki::AlgorithmIdentifierOwned;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::Extensions;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::Certificate;

/// id-pkix-ocsp-basic.
pub const OID_BASIC: &str = "1.3.6.1.5.5.7.48.1.1";
/// id-pkix-ocsp-nonce.
pub const OID_NONCE: &str = "1.3.6.1.5.5.7.48.1.2";
const OID_SHA1: &str = "1.3.14.3.2.26";
const OID_SHA256: &str = "2.16.840.1.101.3.4.2.1";
const OID_ECDSA_SHA256: &str = "1.2.840.10045.4.3.2";
/// Most certificates asked about in one request.
pub const MAX_REQUESTS: usize = 16;

/// `OCSPRequest`.
#[derive(Clone, Debug, Sequence)]
pub struct OcspRequest {
    /// What is asked.
    pub tbs_request: TbsRequest,
    /// A signed request's signature (not checked: anyone may ask).
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    pub optional_signature: Option<Any>,
}

/// `TBSRequest`.
#[derive(Clone, Debug, Sequence)]
pub struct TbsRequest {
    /// v1 (0), DEFAULT.
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    pub version: Option<u8>,
    /// Who asks (ignored).
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", optional = "true")]
    pub requestor_name: Option<GeneralName>,
    /// The certificates asked about.
    pub request_list: Vec<Request>,
    /// The nonce, among others.
    #[asn1(context_specific = "2", tag_mode = "EXPLICIT", optional = "true")]
    pub request_extensions: Option<Extensions>,
}

/// `Request`.
#[derive(Clone, Debug, Sequence)]
pub struct Request {
    /// The certificate.
    pub req_cert: CertId,
    /// Ignored.
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    pub single_request_extensions: Option<Extensions>,
}

/// `CertID`: a certificate named by its issuer's name and key hashes and its serial.
#[derive(Clone, Debug, Sequence, PartialEq, Eq)]
pub struct CertId {
    /// SHA-1 or SHA-256.
    pub hash_algorithm: AlgorithmIdentifierOwned,
    /// Hash of the issuer's subject DER.
    pub issuer_name_hash: OctetString,
    /// Hash of the issuer key's bits.
    pub issuer_key_hash: OctetString,
    /// The serial.
    pub serial_number: SerialNumber,
}

/// `OCSPResponseStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Enumerated)]
#[repr(u32)]
pub enum ResponseStatus {
    /// Response has valid confirmations.
    Successful = 0,
    /// Illegal confirmation request.
    MalformedRequest = 1,
    /// Internal error in issuer.
    InternalError = 2,
    /// Try again later.
    TryLater = 3,
}

/// `OCSPResponse`.
#[derive(Clone, Debug, Sequence)]
pub struct OcspResponse {
    /// Whether there is an answer.
    pub response_status: ResponseStatus,
    /// The answer (a [`BasicOcspResponse`]).
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    pub response_bytes: Option<ResponseBytes>,
}

/// `ResponseBytes`.
#[derive(Clone, Debug, Sequence)]
pub struct ResponseBytes {
    /// id-pkix-ocsp-basic.
    pub response_type: ObjectIdentifier,
    /// DER of the [`BasicOcspResponse`].
    pub response: OctetString,
}

/// `BasicOCSPResponse`.
#[derive(Clone, Debug, Sequence)]
pub struct BasicOcspResponse {
    /// What is signed.
    pub tbs_response_data: ResponseData,
    /// ecdsa-with-SHA256.
    pub signature_algorithm: AlgorithmIdentifierOwned,
    /// DER ECDSA-Sig-Value.
    pub signature: BitString,
    /// The signer's certificate (the CA's).
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    pub certs: Option<Vec<Certificate>>,
}

/// `ResponseData` (version v1, the DEFAULT, left out).
#[derive(Clone, Debug, Sequence)]
pub struct ResponseData {
    /// Who signs.
    pub responder_id: ResponderId,
    /// When.
    pub produced_at: GeneralizedTime,
    /// One per certificate asked about.
    pub responses: Vec<SingleResponse>,
    /// The echoed nonce.
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", optional = "true")]
    pub response_extensions: Option<Extensions>,
}

/// `ResponderID`.
#[derive(Clone, Debug, Choice)]
pub enum ResponderId {
    /// By the responder's subject.
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", constructed = "true")]
    ByName(Name),
    /// By the SHA-1 of the responder key's bits.
    #[asn1(context_specific = "2", tag_mode = "EXPLICIT", constructed = "true")]
    ByKey(OctetString),
}

/// `SingleResponse`.
#[derive(Clone, Debug, Sequence)]
pub struct SingleResponse {
    /// The CertID asked about, as asked.
    pub cert_id: CertId,
    /// Good, revoked, unknown.
    pub cert_status: CertStatus,
    /// Now.
    pub this_update: GeneralizedTime,
    /// When to ask again at the latest.
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    pub next_update: Option<GeneralizedTime>,
    /// None.
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", optional = "true")]
    pub single_extensions: Option<Extensions>,
}

/// `CertStatus`.
#[derive(Clone, Debug, Choice)]
pub enum CertStatus {
    /// Issued and not revoked.
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT")]
    Good(Null),
    /// Revoked.
    #[asn1(context_specific = "1", tag_mode = "IMPLICIT", constructed = "true")]
    Revoked(RevokedInfo),
    /// Not issued by this CA.
    #[asn1(context_specific = "2", tag_mode = "IMPLICIT")]
    Unknown(Null),
}

/// `RevokedInfo` (no reason code: the CA keeps the reason as text).
#[derive(Clone, Debug, Sequence)]
pub struct RevokedInfo {
    /// When.
    pub revocation_time: GeneralizedTime,
}

/// What the store says about a serial.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Issued, not revoked.
    Good,
    /// Revoked at (Unix seconds).
    Revoked(u64),
    /// Never issued here.
    Unknown,
}

/// The CA as the responder knows it.
pub struct Issuer<'a> {
    /// Its certificate (sent along in `certs`).
    pub certificate: &'a Certificate,
    /// Its key.
    pub key: &'a SigningKey,
}

impl Issuer<'_> {
    fn name_der(&self) -> der::Result<Vec<u8>> {
        self.certificate.tbs_certificate().subject().to_der()
    }

    fn key_bits(&self) -> &[u8] {
        self.certificate
            .tbs_certificate()
            .subject_public_key_info()
            .subject_public_key
            .raw_bytes()
    }

    /// Whether `id` names a certificate of this issuer (by the hashes of its name and key).
    fn issued(&self, id: &CertId) -> bool {
        let Ok(name) = self.name_der() else {
            return false;
        };
        let (n, k): (Vec<u8>, Vec<u8>) = match id.hash_algorithm.oid.to_string().as_str() {
            OID_SHA1 => (
                sha1::Sha1::digest(&name).to_vec(),
                sha1::Sha1::digest(self.key_bits()).to_vec(),
            ),
            OID_SHA256 => (
                sha2::Sha256::digest(&name).to_vec(),
                sha2::Sha256::digest(self.key_bits()).to_vec(),
            ),
            _ => return false,
        };
        id.issuer_name_hash.as_bytes() == n.as_slice() && id.issuer_key_hash.as_bytes() == k
    }
}

/// A parsed request: the CertIDs asked about and the nonce extension, if any.
pub struct Parsed {
    /// The CertIDs, in order.
    pub ids: Vec<CertId>,
    /// The nonce extension as sent.
    pub nonce: Option<x509_cert::ext::Extension>,
}

/// Parses an `OCSPRequest`; `None` if it is not one (or asks about none or too many).
pub fn parse(der: &[u8]) -> Option<Parsed> {
    let req = OcspRequest::from_der(der).ok()?;
    let tbs = req.tbs_request;
    if tbs.request_list.is_empty() || tbs.request_list.len() > MAX_REQUESTS {
        return None;
    }
    let nonce_oid = ObjectIdentifier::new(OID_NONCE).ok()?;
    let nonce = tbs
        .request_extensions
        .unwrap_or_default()
        .into_iter()
        .find(|e| e.extn_id == nonce_oid);
    // RFC 8954: a nonce of 1 to 32 octets (the extension's value is an OCTET STRING
    // holding it: 2 bytes of header more). A longer one is a malformed request, not an echo.
    if nonce
        .as_ref()
        .is_some_and(|e| !(3..=34).contains(&e.extn_value.as_bytes().len()))
    {
        return None;
    }
    Some(Parsed {
        ids: tbs.request_list.into_iter().map(|r| r.req_cert).collect(),
        nonce,
    })
}

/// The serial magnitude `id` asks about, if it names a certificate of `issuer`.
pub fn serial_of(issuer: &Issuer<'_>, id: &CertId) -> Option<Vec<u8>> {
    issuer
        .issued(id)
        .then(|| id.serial_number.as_bytes().to_vec())
}

fn generalized(secs: u64) -> anyhow::Result<GeneralizedTime> {
    Ok(GeneralizedTime::from_unix_duration(
        std::time::Duration::from_secs(secs),
    )?)
}

/// A response with no answer (`malformedRequest`, `internalError`).
pub fn refusal(status: ResponseStatus) -> Vec<u8> {
    let r = OcspResponse {
        response_status: status,
        response_bytes: None,
    };
    // Two small fixed fields: encoding cannot fail; an empty body would say as much.
    r.to_der().unwrap_or_default()
}

/// A signed `successful` response: `statuses[i]` answers `parsed.ids[i]`; produced at
/// `now`, next update `now + next` (seconds).
pub fn respond(
    issuer: &Issuer<'_>,
    parsed: Parsed,
    statuses: &[Status],
    now: u64,
    next: u64,
) -> anyhow::Result<Vec<u8>> {
    anyhow::ensure!(parsed.ids.len() == statuses.len(), "one status per CertID");
    let this_update = generalized(now)?;
    let next_update = generalized(now.saturating_add(next))?;
    let mut responses = Vec::with_capacity(statuses.len());
    for (id, status) in parsed.ids.into_iter().zip(statuses) {
        let cert_status = match status {
            Status::Good => CertStatus::Good(Null),
            Status::Revoked(at) => CertStatus::Revoked(RevokedInfo {
                revocation_time: generalized(*at)?,
            }),
            Status::Unknown => CertStatus::Unknown(Null),
        };
        responses.push(SingleResponse {
            cert_id: id,
            cert_status,
            this_update,
            next_update: Some(next_update),
            single_extensions: None,
        });
    }
    let tbs = ResponseData {
        responder_id: ResponderId::ByKey(OctetString::new(
            sha1::Sha1::digest(issuer.key_bits()).to_vec(),
        )?),
        produced_at: this_update,
        responses,
        response_extensions: parsed.nonce.map(|n| vec![n]),
    };
    let signature: DerSignature = p256::ecdsa::signature::Signer::sign(issuer.key, &tbs.to_der()?);
    let basic = BasicOcspResponse {
        tbs_response_data: tbs,
        signature_algorithm: AlgorithmIdentifierOwned {
            oid: ObjectIdentifier::new(OID_ECDSA_SHA256)?,
            parameters: None,
        },
        signature: BitString::from_bytes(signature.as_bytes())?,
        certs: Some(vec![issuer.certificate.clone()]),
    };
    let r = OcspResponse {
        response_status: ResponseStatus::Successful,
        response_bytes: Some(ResponseBytes {
            response_type: ObjectIdentifier::new(OID_BASIC)?,
            response: OctetString::new(basic.to_der()?)?,
        }),
    };
    Ok(r.to_der()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_the_bare_status() {
        // SEQUENCE { ENUMERATED 1 }: what RFC 6960 §4.2.1 sends without responseBytes.
        assert_eq!(
            refusal(ResponseStatus::MalformedRequest),
            [0x30, 0x03, 0x0A, 0x01, 0x01]
        );
    }

    #[test]
    fn garbage_and_empty_requests_do_not_parse() {
        assert!(parse(b"").is_none());
        assert!(parse(b"GET / HTTP/1.1").is_none());
        // OCSPRequest { TBSRequest { requestList: empty } }: asks about nothing.
        assert!(parse(&[0x30, 0x04, 0x30, 0x02, 0x30, 0x00]).is_none());
    }

    #[test]
    fn a_nonce_longer_than_32_octets_is_a_malformed_request() {
        let id = CertId {
            hash_algorithm: AlgorithmIdentifierOwned {
                oid: ObjectIdentifier::new_unwrap("1.3.14.3.2.26"),
                parameters: None,
            },
            issuer_name_hash: OctetString::new(vec![1; 20]).unwrap(),
            issuer_key_hash: OctetString::new(vec![2; 20]).unwrap(),
            serial_number: SerialNumber::new(&[5]).unwrap(),
        };
        let request = |nonce_len: usize| {
            let inner = OctetString::new(vec![7; nonce_len]).unwrap();
            let ext = x509_cert::ext::Extension {
                extn_id: ObjectIdentifier::new(OID_NONCE).unwrap(),
                critical: false,
                extn_value: OctetString::new(inner.to_der().unwrap()).unwrap(),
            };
            OcspRequest {
                tbs_request: TbsRequest {
                    version: None,
                    requestor_name: None,
                    request_list: vec![Request {
                        req_cert: id.clone(),
                        single_request_extensions: None,
                    }],
                    request_extensions: Some(vec![ext]),
                },
                optional_signature: None,
            }
            .to_der()
            .unwrap()
        };
        assert!(parse(&request(32)).is_some());
        assert!(parse(&request(33)).is_none());
    }
}
