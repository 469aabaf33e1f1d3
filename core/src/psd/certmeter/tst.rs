//! The bytes of a postmark, written by hand: the RFC 3161 TSTInfo, the CMS signed
//! attributes the card signs over it (written by [`cms_signed_attrs_der`], which SIGN uses
//! too), and the compact postmark (ISSUE POSTMARK's reply).
//!
//! Why by hand: the `der`/`cms` crates cost about 20 KB gzip of the browser module, which
//! has about 6 KB left (design-certmeter §3), while the card only ever writes one fixed
//! shape. The host side (`openpsd-pki`) parses these bytes with `der` and wraps them in a
//! CMS SignedData; its tests check them against stock `openssl ts -verify`.
//!
//! The one shape (all INTEGERs positive and minimal):
//!
//! ```text
//! TSTInfo ::= SEQUENCE {
//!   version 1, policy 1.3.6.1.4.1.32473.1.1,
//!   messageImprint { sha256 (parameters absent), OCTET STRING 32 },
//!   serialNumber INTEGER (device ID 8 ‖ postmark counter u32),
//!   genTime GeneralizedTime "YYYYMMDDHHMMSSZ",
//!   nonce INTEGER OPTIONAL,
//!   extensions [1] IMPLICIT { { 1.3.6.1.4.1.32473.1.2, extnValue OCTET STRING
//!     SEQUENCE { fee INTEGER, license INTEGER, tableVersion INTEGER } } } }
//! ```
//!
//! [`decode_tst_info`] accepts exactly what [`tst_info_der`] writes: it reads the fields,
//! writes them again and requires the same bytes, so there is one encoding per postmark.

use alloc::vec::Vec;

use crate::calendar::UNIX_DAYS_AT_EPOCH_2000;
use crate::crypto::{sha256, SIGNATURE_LEN};
use crate::types::{Amount, Date, DeviceId, KeyId, LicenseId};
use crate::wire::Malformed;

/// The postmark policy, 1.3.6.1.4.1.32473.1.1 (OID content octets). 32473 is RFC 5612's
/// documentation enterprise number: a deployment registers its own.
pub const POLICY_OID: &[u8] = &[0x2B, 0x06, 0x01, 0x04, 0x01, 0x81, 0xFD, 0x59, 0x01, 0x01];

/// The TSTInfo extension carrying fee, license and rate-table version,
/// 1.3.6.1.4.1.32473.1.2 (OID content octets).
pub const EXTENSION_OID: &[u8] = &[0x2B, 0x06, 0x01, 0x04, 0x01, 0x81, 0xFD, 0x59, 0x01, 0x02];

/// id-ct-TSTInfo, 1.2.840.113549.1.9.16.1.4 (OID content octets).
pub const ID_CT_TST_INFO: &[u8] = &[
    0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x09, 0x10, 0x01, 0x04,
];

/// id-sha256, 2.16.840.1.101.3.4.2.1 (OID content octets).
pub const ID_SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];

/// id-contentType, 1.2.840.113549.1.9.3.
const ID_CONTENT_TYPE: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x09, 0x03];
/// id-messageDigest, 1.2.840.113549.1.9.4.
const ID_MESSAGE_DIGEST: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x09, 0x04];
/// id-signingTime, 1.2.840.113549.1.9.5.
const ID_SIGNING_TIME: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x09, 0x05];
/// id-data, 1.2.840.113549.1.7.1 (OID content octets): the content type of a signed
/// document.
pub const ID_DATA: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x07, 0x01];
/// id-aa-signingCertificateV2, 1.2.840.113549.1.9.16.2.47 (RFC 5035).
const ID_SIGNING_CERTIFICATE_V2: &[u8] = &[
    0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x09, 0x10, 0x02, 0x2F,
];

/// First byte of a compact postmark.
pub const COMPACT_TAG: u8 = 0x50;
/// Version of the compact postmark layout.
pub const COMPACT_VERSION: u8 = 1;
/// Bytes of a compact postmark besides its TSTInfo: tag, version, key ID, length, r‖s.
pub const COMPACT_OVERHEAD: usize = 1 + 1 + 4 + 2 + SIGNATURE_LEN;
/// Longest nonce, in bytes of magnitude.
pub const MAX_NONCE_LEN: usize = 16;
/// Earliest genTime: 2000-01-01T00:00:00Z (the PSD's calendar starts there).
pub const MIN_GEN_TIME: u64 = UNIX_DAYS_AT_EPOCH_2000 * 86_400;
/// Latest genTime: 9999-12-31T23:59:59Z (GeneralizedTime has four year digits).
pub const MAX_GEN_TIME: u64 = 253_402_300_799;

const INTEGER: u8 = 0x02;
const OCTETS: u8 = 0x04;
const OID: u8 = 0x06;
const GENERALIZED_TIME: u8 = 0x18;
const UTC_TIME: u8 = 0x17;
const SEQ: u8 = 0x30;
const SET: u8 = 0x31;
/// `[1]` constructed: TSTInfo's `extensions [1] IMPLICIT`.
const EXTENSIONS: u8 = 0xA1;

/// What a postmark states: the fields of its TSTInfo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostmarkFields {
    /// SHA-256 of the document (the message imprint).
    pub digest: [u8; 32],
    /// The PSD; the serial number's first 8 bytes.
    pub device: DeviceId,
    /// The postmark counter; the serial number's last 4 bytes.
    pub counter: u32,
    /// genTime, Unix seconds UTC (whole seconds: no fraction, no accuracy field).
    pub gen_time: u64,
    /// The host's nonce as a big-endian magnitude (1..=16 bytes, no leading zero byte
    /// unless it is the single byte of zero), echoed as an INTEGER.
    pub nonce: Option<Vec<u8>>,
    /// The fee charged, from the rate table.
    pub fee: Amount,
    /// The PSD's license.
    pub license: LicenseId,
    /// The rate table the fee came from.
    pub table_version: u32,
}

impl PostmarkFields {
    /// Whether the fields have exactly one encoding that reads back as themselves:
    /// genTime within [`MIN_GEN_TIME`]..=[`MAX_GEN_TIME`] and a nonce of 1..=16 bytes
    /// without a leading zero byte. The card checks this before it commits a postmark;
    /// [`tst_info_der`] writes any fields, but only these round-trip.
    pub fn check(&self) -> Result<(), Malformed> {
        if !(MIN_GEN_TIME..=MAX_GEN_TIME).contains(&self.gen_time) {
            return Err(Malformed::Value);
        }
        if let Some(nonce) = &self.nonce {
            if nonce.is_empty() || nonce.len() > MAX_NONCE_LEN {
                return Err(Malformed::Length);
            }
            if nonce.len() > 1 && nonce[0] == 0 {
                return Err(Malformed::Value);
            }
        }
        Ok(())
    }
}

/// The DER of the postmark's TSTInfo (module doc for the shape).
///
/// Never fails: a genTime outside [`MIN_GEN_TIME`]..=[`MAX_GEN_TIME`] is written clamped
/// into that range, and a nonce is written as the minimal INTEGER of its magnitude (an
/// empty one as zero). [`PostmarkFields::check`] says whether the fields round-trip.
pub fn tst_info_der(f: &PostmarkFields) -> Vec<u8> {
    let mut body = Vec::with_capacity(200);
    push_uint(&mut body, &[1]);
    tlv(&mut body, OID, POLICY_OID);

    let mut imprint = Vec::with_capacity(49);
    push_sha256_algorithm(&mut imprint);
    tlv(&mut imprint, OCTETS, &f.digest);
    tlv(&mut body, SEQ, &imprint);

    let mut serial = [0u8; 12];
    serial[..8].copy_from_slice(&f.device.0);
    serial[8..].copy_from_slice(&f.counter.to_be_bytes());
    push_uint(&mut body, &serial);

    tlv(&mut body, GENERALIZED_TIME, &generalized_time(f.gen_time));

    if let Some(nonce) = &f.nonce {
        push_uint(&mut body, nonce);
    }

    let mut value = Vec::with_capacity(25);
    push_uint(&mut value, &f.fee.0.to_be_bytes());
    push_uint(&mut value, &f.license.0.to_be_bytes());
    push_uint(&mut value, &f.table_version.to_be_bytes());
    let mut extension = Vec::with_capacity(41);
    tlv(&mut extension, OID, EXTENSION_OID);
    // critical is DEFAULT FALSE: absent in DER.
    tlv(&mut extension, OCTETS, &wrap(SEQ, &value));
    tlv(&mut body, EXTENSIONS, &wrap(SEQ, &extension));

    wrap(SEQ, &body)
}

/// Reads a TSTInfo that [`tst_info_der`] wrote; anything else (another encoding of the
/// same values included) is [`Malformed`]. Never panics.
pub fn decode_tst_info(der: &[u8]) -> Result<PostmarkFields, Malformed> {
    let mut outer = Der(der);
    let mut r = Der(outer.take(SEQ)?);
    outer.end()?;

    // version and policy: checked by the re-encoding below.
    r.take(INTEGER)?;
    r.take(OID)?;

    let mut imprint = Der(r.take(SEQ)?);
    imprint.take(SEQ)?;
    let digest: [u8; 32] = imprint
        .take(OCTETS)?
        .try_into()
        .map_err(|_| Malformed::Length)?;
    imprint.end()?;

    let serial: [u8; 12] = uint_fixed(r.take(INTEGER)?)?;
    let mut device = [0u8; 8];
    device.copy_from_slice(&serial[..8]);
    let mut counter = [0u8; 4];
    counter.copy_from_slice(&serial[8..]);

    let gen_time = parse_generalized_time(r.take(GENERALIZED_TIME)?)?;

    let nonce = if r.peek() == Some(INTEGER) {
        let magnitude = uint_magnitude(r.take(INTEGER)?)?;
        if magnitude.len() > MAX_NONCE_LEN {
            return Err(Malformed::Length);
        }
        Some(magnitude.to_vec())
    } else {
        None
    };

    let mut extensions = Der(r.take(EXTENSIONS)?);
    r.end()?;
    let mut extension = Der(extensions.take(SEQ)?);
    extensions.end()?;
    extension.take(OID)?;
    let mut value = Der(extension.take(OCTETS)?);
    extension.end()?;
    let mut values = Der(value.take(SEQ)?);
    value.end()?;
    let fee = u64::from_be_bytes(uint_fixed(values.take(INTEGER)?)?);
    let license = u32::from_be_bytes(uint_fixed(values.take(INTEGER)?)?);
    let table_version = u32::from_be_bytes(uint_fixed(values.take(INTEGER)?)?);
    values.end()?;

    let fields = PostmarkFields {
        digest,
        device: DeviceId(device),
        counter: u32::from_be_bytes(counter),
        gen_time,
        nonce,
        fee: Amount(fee),
        license: LicenseId(license),
        table_version,
    };
    // One encoding per postmark: OIDs, version, minimal lengths and INTEGERs, the absent
    // critical flag, all checked at once.
    if tst_info_der(&fields) != der {
        return Err(Malformed::Value);
    }
    Ok(fields)
}

/// The signed attributes as a DER SET OF (tag `0x31`): what the card signs
/// (ECDSA P-256 over SHA-256 of these bytes, [`IndiciumKey::sign`]), and, retagged
/// `[0] IMPLICIT`, the SignerInfo's `signedAttrs`.
///
/// contentType = id-ct-TSTInfo; messageDigest = SHA-256(`tst_info`);
/// signingCertificateV2 = { { ESSCertIDv2 { certHash = `cert_der_hash` } } } with the
/// hashAlgorithm absent (its DEFAULT, SHA-256) and no issuerSerial (OpenSSL checks the
/// certHash against the signer's certificate; RFC 5035 makes issuerSerial optional).
///
/// [`IndiciumKey::sign`]: crate::crypto::IndiciumKey::sign
pub fn signed_attrs_der(tst_info: &[u8], cert_der_hash: &[u8; 32]) -> Vec<u8> {
    cms_signed_attrs_der(ID_CT_TST_INFO, &sha256(tst_info), None, cert_der_hash)
}

/// The CMS signed attributes of any signature the card makes (a postmark's, through
/// [`signed_attrs_der`], and SIGN's, `super::sign`): contentType = `content_type` (OID
/// content octets), signingTime when given (RFC 5652 §11.3: UTCTime before 2050,
/// GeneralizedTime from 2050; clamped like [`tst_info_der`]'s genTime), messageDigest =
/// `content_digest`, signingCertificateV2 naming `cert_der_hash`, in DER SET OF order.
pub fn cms_signed_attrs_der(
    content_type: &[u8],
    content_digest: &[u8; 32],
    signing_time: Option<u64>,
    cert_der_hash: &[u8; 32],
) -> Vec<u8> {
    let content_type = attribute(ID_CONTENT_TYPE, &wrap(OID, content_type));
    let message_digest = attribute(ID_MESSAGE_DIGEST, &wrap(OCTETS, content_digest));
    let ess_cert_id = wrap(SEQ, &wrap(OCTETS, cert_der_hash));
    let signing_certificate = wrap(SEQ, &wrap(SEQ, &ess_cert_id));
    let signing_certificate = attribute(ID_SIGNING_CERTIFICATE_V2, &signing_certificate);

    let mut attributes = Vec::with_capacity(4);
    attributes.extend([content_type, message_digest, signing_certificate]);
    if let Some(t) = signing_time {
        attributes.push(attribute(ID_SIGNING_TIME, &signing_time_der(t)));
    }
    // DER orders a SET OF by the elements' encodings (X.690 §11.6); verifiers re-encode
    // the attributes to check the signature, so the order must be exactly this.
    attributes.sort();
    let mut content = Vec::with_capacity(attributes.iter().map(Vec::len).sum());
    for a in &attributes {
        content.extend_from_slice(a);
    }
    wrap(SET, &content)
}

/// RFC 5652 §11.3's Time of `secs` (clamped into 2000..=9999): UTCTime `YYMMDDHHMMSSZ`
/// through 2049, GeneralizedTime from 2050.
fn signing_time_der(secs: u64) -> Vec<u8> {
    let g = generalized_time(secs);
    if &g[..2] == b"20" && g[2] < b'5' {
        wrap(UTC_TIME, &g[2..])
    } else {
        wrap(GENERALIZED_TIME, &g)
    }
}

/// A compact postmark: `50 | 01 | key ID 4 | TSTInfo length u16 | TSTInfo | r‖s 64`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompactPostmark {
    /// `crypto::key_id` of the postmark key that signed.
    pub key_id: KeyId,
    /// The TSTInfo DER ([`tst_info_der`]).
    pub tst_info: Vec<u8>,
    /// ECDSA P-256 r‖s over [`signed_attrs_der`] of the TSTInfo and the certificate hash.
    pub signature: [u8; SIGNATURE_LEN],
}

impl CompactPostmark {
    /// The compact bytes; [`Malformed::Length`] if the TSTInfo exceeds a u16 length
    /// (never for one [`tst_info_der`] wrote from checked fields: those are under 200 B).
    pub fn encode(&self) -> Result<Vec<u8>, Malformed> {
        let len = u16::try_from(self.tst_info.len()).map_err(|_| Malformed::Length)?;
        let mut out = Vec::with_capacity(COMPACT_OVERHEAD + self.tst_info.len());
        out.push(COMPACT_TAG);
        out.push(COMPACT_VERSION);
        out.extend_from_slice(&self.key_id.0);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&self.tst_info);
        out.extend_from_slice(&self.signature);
        Ok(out)
    }

    /// Reads compact bytes: exact length, tag and version, and a TSTInfo that
    /// [`decode_tst_info`] accepts. The signature is not checked here (it needs the
    /// certificate: `openpsd-pki`).
    pub fn decode(bytes: &[u8]) -> Result<CompactPostmark, Malformed> {
        let (head, rest) = bytes.split_at_checked(8).ok_or(Malformed::Length)?;
        if head[0] != COMPACT_TAG || head[1] != COMPACT_VERSION {
            return Err(Malformed::Value);
        }
        let key_id = KeyId([head[2], head[3], head[4], head[5]]);
        let len = usize::from(u16::from_be_bytes([head[6], head[7]]));
        if rest.len() != len + SIGNATURE_LEN {
            return Err(Malformed::Length);
        }
        let (tst_info, signature) = rest.split_at(len);
        decode_tst_info(tst_info)?;
        let mut sig = [0u8; SIGNATURE_LEN];
        sig.copy_from_slice(signature);
        Ok(CompactPostmark {
            key_id,
            tst_info: tst_info.to_vec(),
            signature: sig,
        })
    }
}

// ---- time ----------------------------------------------------------------------------

/// `YYYYMMDDHHMMSSZ` of a Unix time, clamped into the four-digit years from 2000.
fn generalized_time(secs: u64) -> [u8; 15] {
    let secs = secs.clamp(MIN_GEN_TIME, MAX_GEN_TIME);
    let date = Date::from_unix_seconds(secs).unwrap_or(Date {
        year: 2000,
        month: 1,
        day: 1,
    });
    let of_day = secs % 86_400;
    let mut out = [0u8; 15];
    let fields: [(u64, usize); 6] = [
        (u64::from(date.year), 4),
        (u64::from(date.month), 2),
        (u64::from(date.day), 2),
        (of_day / 3600, 2),
        (of_day / 60 % 60, 2),
        (of_day % 60, 2),
    ];
    let mut at = 0;
    for (value, width) in fields {
        let mut v = value;
        for k in (at..at + width).rev() {
            out[k] = b'0' + u8::try_from(v % 10).unwrap_or(0);
            v /= 10;
        }
        at += width;
    }
    out[14] = b'Z';
    out
}

/// The Unix time of `YYYYMMDDHHMMSSZ` (a valid date from 2000, no leap second).
fn parse_generalized_time(text: &[u8]) -> Result<u64, Malformed> {
    let text: &[u8; 15] = text.try_into().map_err(|_| Malformed::Length)?;
    if text[14] != b'Z' {
        return Err(Malformed::Value);
    }
    let number = |from: usize, to: usize| -> Result<u16, Malformed> {
        text[from..to].iter().try_fold(0u16, |n, &c| {
            if c.is_ascii_digit() {
                Ok(n * 10 + u16::from(c - b'0'))
            } else {
                Err(Malformed::Value)
            }
        })
    };
    let year = number(0, 4)?;
    let month = u8::try_from(number(4, 6)?).map_err(|_| Malformed::Value)?;
    let day = u8::try_from(number(6, 8)?).map_err(|_| Malformed::Value)?;
    let (hour, minute, second) = (number(8, 10)?, number(10, 12)?, number(12, 14)?);
    if hour > 23 || minute > 59 || second > 59 {
        return Err(Malformed::Value);
    }
    let date = Date::new(year, month, day).ok_or(Malformed::Value)?;
    let days = u64::from(date.day_number()) + UNIX_DAYS_AT_EPOCH_2000;
    Ok(days * 86_400 + u64::from(hour) * 3600 + u64::from(minute) * 60 + u64::from(second))
}

// ---- a tiny DER writer: content first, then wrapped -----------------------------------

fn push_len(out: &mut Vec<u8>, len: usize) {
    if let Ok(short @ 0..=0x7F) = u8::try_from(len) {
        out.push(short);
        return;
    }
    // Long form: the length's big-endian octets without leading zeros, after 0x80 | count.
    let bytes = len.to_be_bytes();
    let skip = bytes.iter().take_while(|&&b| b == 0).count();
    let count = bytes.len() - skip;
    out.push(0x80 | u8::try_from(count).unwrap_or(0));
    out.extend_from_slice(&bytes[skip..]);
}

fn tlv(out: &mut Vec<u8>, tag: u8, content: &[u8]) {
    out.push(tag);
    push_len(out, content.len());
    out.extend_from_slice(content);
}

fn wrap(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(content.len() + 4);
    tlv(&mut v, tag, content);
    v
}

/// The minimal positive DER INTEGER of a big-endian magnitude: leading zero octets
/// dropped, one `00` put back when the top bit is set, a single `00` for zero.
fn push_uint(out: &mut Vec<u8>, magnitude: &[u8]) {
    let skip = magnitude.iter().take_while(|&&b| b == 0).count();
    let m = &magnitude[skip..];
    out.push(INTEGER);
    match m.first() {
        None => out.extend_from_slice(&[1, 0]),
        Some(b) if b & 0x80 != 0 => {
            push_len(out, m.len() + 1);
            out.push(0);
            out.extend_from_slice(m);
        }
        Some(_) => {
            push_len(out, m.len());
            out.extend_from_slice(m);
        }
    }
}

/// AlgorithmIdentifier { id-sha256 } with the parameters absent (RFC 5754 §2).
fn push_sha256_algorithm(out: &mut Vec<u8>) {
    tlv(out, SEQ, &wrap(OID, ID_SHA256));
}

/// Attribute ::= SEQUENCE { attrType OID, attrValues SET OF (one value) }.
fn attribute(oid: &[u8], value: &[u8]) -> Vec<u8> {
    let mut a = Vec::with_capacity(oid.len() + value.len() + 6);
    tlv(&mut a, OID, oid);
    tlv(&mut a, SET, value);
    wrap(SEQ, &a)
}

// ---- a tiny DER reader (lengths up to 2 octets; the re-encoding checks the rest) -------

struct Der<'a>(&'a [u8]);

impl<'a> Der<'a> {
    fn peek(&self) -> Option<u8> {
        self.0.first().copied()
    }

    /// The content of the next element, which must carry `tag`.
    fn take(&mut self, tag: u8) -> Result<&'a [u8], Malformed> {
        let (&t, rest) = self.0.split_first().ok_or(Malformed::Length)?;
        if t != tag {
            return Err(Malformed::Value);
        }
        let (&first, rest) = rest.split_first().ok_or(Malformed::Length)?;
        let (len, rest) = match first {
            0..=0x7F => (usize::from(first), rest),
            0x81 => {
                let (&b, rest) = rest.split_first().ok_or(Malformed::Length)?;
                (usize::from(b), rest)
            }
            0x82 => {
                let (b, rest) = rest.split_at_checked(2).ok_or(Malformed::Length)?;
                (usize::from(u16::from_be_bytes([b[0], b[1]])), rest)
            }
            _ => return Err(Malformed::Length),
        };
        let (content, rest) = rest.split_at_checked(len).ok_or(Malformed::Length)?;
        self.0 = rest;
        Ok(content)
    }

    fn end(&self) -> Result<(), Malformed> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Malformed::Length)
        }
    }
}

/// The magnitude of a non-negative INTEGER's content, leading zeros dropped (zero keeps
/// one octet).
fn uint_magnitude(content: &[u8]) -> Result<&[u8], Malformed> {
    match content.first() {
        None => Err(Malformed::Length),
        Some(b) if b & 0x80 != 0 => Err(Malformed::Value),
        Some(_) => {
            let skip = content.iter().take_while(|&&b| b == 0).count();
            Ok(if skip == content.len() {
                &content[skip - 1..]
            } else {
                &content[skip..]
            })
        }
    }
}

/// A non-negative INTEGER's value as `N` big-endian bytes.
fn uint_fixed<const N: usize>(content: &[u8]) -> Result<[u8; N], Malformed> {
    let m = uint_magnitude(content)?;
    let pad = N.checked_sub(m.len()).ok_or(Malformed::Value)?;
    let mut out = [0u8; N];
    out[pad..].copy_from_slice(m);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> PostmarkFields {
        PostmarkFields {
            digest: [0xAB; 32],
            device: DeviceId([0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80]),
            counter: 7,
            // 2026-11-30T10:50:00Z
            gen_time: 1_796_035_800,
            nonce: Some(alloc::vec![0x9F, 0x01]),
            fee: Amount(150),
            license: LicenseId(4711),
            table_version: 3,
        }
    }

    /// A small xorshift: deterministic spreads without a dev-dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next().to_le_bytes()[0]).collect()
        }
    }

    #[test]
    fn known_answer() {
        let der = tst_info_der(&fields());
        let expected = concat!(
            "308183",
            "020101",
            "060a2b0601040181fd590101",
            "302f300b0609608648016503040201",
            "0420abababababababababababababababababababababababababababababababab",
            "020c102030405060708000000007",
            "180f32303236313133303130353030305a",
            "0203009f01",
            "a11d301b060a2b0601040181fd590102040d300b0202009602021267020103",
        );
        assert_eq!(hex(&der), expected);
        assert_eq!(decode_tst_info(&der), Ok(fields()));
    }

    fn hex(b: &[u8]) -> alloc::string::String {
        b.iter().map(|x| alloc::format!("{x:02x}")).collect()
    }

    #[test]
    fn generalized_times() {
        assert_eq!(&generalized_time(MIN_GEN_TIME), b"20000101000000Z");
        assert_eq!(&generalized_time(MAX_GEN_TIME), b"99991231235959Z");
        assert_eq!(&generalized_time(0), b"20000101000000Z", "clamped");
        assert_eq!(&generalized_time(u64::MAX), b"99991231235959Z", "clamped");
        // 2024-02-29T23:59:59Z, a leap day.
        assert_eq!(&generalized_time(1_709_251_199), b"20240229235959Z");
        assert_eq!(
            parse_generalized_time(b"20240229235959Z"),
            Ok(1_709_251_199)
        );
        for bad in [
            &b"20230229000000Z"[..],
            b"20240229240000Z",
            b"20240229236000Z",
            b"20240229235960Z",
            b"19991231235959Z",
            b"2024022923595Z",
            b"20240229235959+",
            b"2024022923595 Z",
        ] {
            assert!(parse_generalized_time(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn round_trips_over_a_spread() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let edges64 = [
            0,
            1,
            0x7F,
            0x80,
            0xFF,
            0x100,
            0x7FFF_FFFF,
            1 << 63,
            u64::MAX,
        ];
        for i in 0..4000 {
            let pick = |rng: &mut Rng| {
                let r = rng.next();
                if r.is_multiple_of(3) {
                    edges64[usize::try_from(r / 3 % 9).unwrap()]
                } else {
                    rng.next() >> (r % 64)
                }
            };
            let mut digest = [0u8; 32];
            digest.copy_from_slice(&rng.bytes(32));
            let mut device = [0u8; 8];
            device.copy_from_slice(&rng.bytes(8));
            if i % 5 == 0 {
                device[..usize::try_from(i % 9).unwrap()].fill(0);
            }
            let nonce = match i % 4 {
                0 => None,
                _ => {
                    let len = usize::try_from(rng.next() % 16).unwrap() + 1;
                    let mut n = rng.bytes(len);
                    if n[0] == 0 && n.len() > 1 {
                        n[0] = 1;
                    }
                    Some(n)
                }
            };
            let f = PostmarkFields {
                digest,
                device: DeviceId(device),
                counter: u32::try_from(pick(&mut rng) & 0xFFFF_FFFF).unwrap(),
                gen_time: MIN_GEN_TIME + pick(&mut rng) % (MAX_GEN_TIME - MIN_GEN_TIME + 1),
                nonce,
                fee: Amount(pick(&mut rng)),
                license: LicenseId(u32::try_from(pick(&mut rng) >> 32).unwrap()),
                table_version: u32::try_from(pick(&mut rng) & 0xFFFF_FFFF).unwrap(),
            };
            assert_eq!(f.check(), Ok(()));
            let der = tst_info_der(&f);
            assert_eq!(decode_tst_info(&der).as_ref(), Ok(&f), "{}", hex(&der));
            let c = CompactPostmark {
                key_id: KeyId([1, 2, 3, 4]),
                tst_info: der,
                signature: [0x5A; 64],
            };
            let bytes = c.encode().unwrap();
            assert_eq!(bytes.len(), COMPACT_OVERHEAD + c.tst_info.len());
            assert_eq!(CompactPostmark::decode(&bytes), Ok(c));
        }
    }

    #[test]
    fn zero_values_and_edges() {
        let mut f = fields();
        f.device = DeviceId([0; 8]);
        f.counter = 0;
        f.fee = Amount(0);
        f.nonce = Some(alloc::vec![0]);
        f.gen_time = MIN_GEN_TIME;
        let der = tst_info_der(&f);
        assert_eq!(decode_tst_info(&der), Ok(f.clone()));
        f.nonce = Some(alloc::vec![0xFF; 16]);
        f.gen_time = MAX_GEN_TIME;
        f.fee = Amount(u64::MAX);
        assert_eq!(decode_tst_info(&tst_info_der(&f)), Ok(f));
    }

    #[test]
    fn check_refuses_what_would_not_round_trip() {
        let mut f = fields();
        f.nonce = Some(Vec::new());
        assert!(f.check().is_err());
        f.nonce = Some(alloc::vec![0, 1]);
        assert!(f.check().is_err());
        assert_eq!(
            decode_tst_info(&tst_info_der(&f)).map(|d| d.nonce),
            Ok(Some(alloc::vec![1])),
            "written as the minimal INTEGER"
        );
        f.nonce = Some(alloc::vec![1; 17]);
        assert!(f.check().is_err());
        assert!(decode_tst_info(&tst_info_der(&f)).is_err());
        f.nonce = None;
        f.gen_time = MIN_GEN_TIME - 1;
        assert!(f.check().is_err());
        f.gen_time = MAX_GEN_TIME + 1;
        assert!(f.check().is_err());
    }

    #[test]
    fn other_encodings_are_refused() {
        let der = tst_info_der(&fields());
        // Every single-byte change, every truncation and every extension is refused or
        // reads back as its own exact encoding; none panics.
        for i in 0..der.len() {
            for flip in [0x01u8, 0x80, 0xFF] {
                let mut d = der.clone();
                d[i] ^= flip;
                if let Ok(f) = decode_tst_info(&d) {
                    assert_eq!(tst_info_der(&f), d);
                }
            }
            assert!(decode_tst_info(&der[..i]).is_err());
        }
        let mut longer = der.clone();
        longer.push(0);
        assert!(decode_tst_info(&longer).is_err());
        // A non-minimal length form of the outer SEQUENCE.
        let mut long_form = alloc::vec![0x30, 0x82, 0x00];
        long_form.extend_from_slice(&der[2..]);
        assert!(decode_tst_info(&long_form).is_err());
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = Rng(0x1234_5678_9ABC_DEF1);
        for _ in 0..20_000 {
            let len = usize::try_from(rng.next() % 300).unwrap();
            let mut b = rng.bytes(len);
            // Often start like a TSTInfo so the parser gets past the first checks.
            if rng.next().is_multiple_of(2) && len > 2 {
                b[0] = SEQ;
            }
            let _ = decode_tst_info(&b);
            let _ = CompactPostmark::decode(&b);
            let _ = parse_generalized_time(&b);
        }
    }

    #[test]
    fn compact_layout_is_strict() {
        let c = CompactPostmark {
            key_id: KeyId([9, 8, 7, 6]),
            tst_info: tst_info_der(&fields()),
            signature: [1; 64],
        };
        let bytes = c.encode().unwrap();
        assert_eq!(&bytes[..8], &[0x50, 0x01, 9, 8, 7, 6, 0, 0x86]);
        for i in 0..bytes.len() {
            assert!(CompactPostmark::decode(&bytes[..i]).is_err());
        }
        let mut b = bytes.clone();
        b[0] = 0x51;
        assert_eq!(CompactPostmark::decode(&b), Err(Malformed::Value));
        let mut b = bytes.clone();
        b[1] = 2;
        assert_eq!(CompactPostmark::decode(&b), Err(Malformed::Value));
        let mut b = bytes;
        b.push(0);
        assert_eq!(CompactPostmark::decode(&b), Err(Malformed::Length));
        let huge = CompactPostmark {
            tst_info: alloc::vec![0; 70_000],
            ..c
        };
        assert_eq!(huge.encode(), Err(Malformed::Length));
    }

    #[test]
    fn signed_attributes() {
        let tst = tst_info_der(&fields());
        let attrs = signed_attrs_der(&tst, &[0xCC; 32]);
        let expected = [
            alloc::format!("3181{:02x}", attrs.len() - 3),
            "301a06092a864886f70d010903310d060b2a864886f70d0109100104".into(),
            alloc::format!("302f06092a864886f70d01090431220420{}", hex(&sha256(&tst))),
            alloc::format!(
                "3037060b2a864886f70d010910022f3128302630243022 0420{}",
                hex(&[0xCC; 32])
            )
            .replace(' ', ""),
        ]
        .concat();
        assert_eq!(hex(&attrs), expected);
        assert_eq!(attrs.len(), 3 + 0x1C + 0x31 + 0x39);
    }
}
