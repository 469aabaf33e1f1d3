//! The postal authority's grant, checked without an ASN.1 parser (seed 003, Fig. 4 step 67).
//!
//! The PA grants a license as an X.509 v3 certificate, so stock `openssl verify` and every
//! verifier reads it. The card never parses it: it **rebuilds** the `tbsCertificate` from a
//! fixed DER template, filled with the fields the host sends ([`GrantFields`]) and the
//! fields the card already holds ([`CardFields`]: the PA's subject name and key, the device
//! ID, the pending license key and nonce), hashes it and verifies the PA's `r‖s`. One byte
//! the card did not expect (another device, key, nonce, extension, encoding) and the
//! signature fails. Every accepted input has exactly one encoding, so there is no second
//! certificate the same signature could stand for.
//!
//! Why our own DER writer: `der`/`x509-cert` need an allocator-heavy builder and a parser
//! the card does not want; the template is ~120 lines and is tested byte for byte against
//! `der`'s encoding and `openssl verify` (`backoffice/pa/tests`).
//!
//! The template (docs/licenses.md, "The grant certificate"): version 3; serial 1..20
//! octets; ecdsa-with-SHA256; issuer = the PA's subject as personalized; validity from
//! 00:00:00Z of the first date of mailing to 23:59:59Z of the last (UTCTime through 2049,
//! GeneralizedTime from 2050); subject `serialNumber=<device ID in hex>, CN=license <n>`;
//! the license key; extensions basicConstraints CA:FALSE (critical), keyUsage
//! digitalSignature (critical), SKI and AKI as RFC 7093 method 1 (truncated SHA-256: the
//! card has no SHA-1), and the non-critical license extension {license, origin, nonce}.

use alloc::vec::Vec;

use crate::crypto::{self, PUBLIC_KEY_LEN, SIGNATURE_LEN};
use crate::types::{Date, DeviceId, LicenseId, PostalCode};

/// OID of the openpsd license extension, `2.25.201712551118113773997345347640717259978`
/// (a UUID OID, ITU-T X.667: registration-free and unique), content octets only.
pub const LICENSE_EXTENSION_OID: &[u8] = &[
    0x69, 0x82, 0xAF, 0xC0, 0xB6, 0xA6, 0xD6, 0xE2, 0xDA, 0x89, 0x9B, 0xB1, 0x90, 0xB9, 0xF0, 0xC5,
    0xDC, 0xB2, 0xE9, 0x4A,
];
/// The same OID in dotted form, for tools.
pub const LICENSE_EXTENSION_OID_DOTTED: &str = "2.25.201712551118113773997345347640717259978";

/// Longest PA subject name (full DER) a PSD stores.
pub const MAX_PA_SUBJECT_LEN: usize = 129;
/// Longest certificate serial magnitude.
pub const MAX_SERIAL_LEN: usize = 20;
/// Length of the request nonce bound into the grant.
pub const NONCE_LEN: usize = 16;

/// Label of the vendor's countersignature: ECDSA over label ‖ SHA-256(tbsCertificate) ‖
/// device ID ‖ nonce.
pub const COUNTERSIGN_LABEL: &[u8] = b"openpsd license countersign v1";

/// The certificate fields the host sends (copied from the PA's certificate).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantFields {
    /// Serial number: an unsigned big-endian magnitude, 1 to 20 octets, first octet not
    /// zero (19 at most when its top bit is set: DER pads it with a zero octet).
    pub serial: Vec<u8>,
    /// First valid date of mailing.
    pub not_before: Date,
    /// Last valid date of mailing.
    pub not_after: Date,
    /// The license the PA granted.
    pub license: LicenseId,
    /// The license's origin (the "town die").
    pub origin: PostalCode,
}

/// What the card holds itself.
#[derive(Clone, Copy, Debug)]
pub struct CardFields<'a> {
    /// The PA's subject name, full DER, as personalized.
    pub pa_subject: &'a [u8],
    /// The PA's public key (SEC1 uncompressed).
    pub pa_public_key: &'a [u8; PUBLIC_KEY_LEN],
    /// The device.
    pub device: DeviceId,
    /// The pending license key (SEC1 uncompressed).
    pub license_public_key: &'a [u8; PUBLIC_KEY_LEN],
    /// The pending request's nonce.
    pub nonce: &'a [u8; NONCE_LEN],
}

/// Why the template refused its inputs (before any signature is checked).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TemplateError {
    /// Serial empty, with a leading zero octet, or longer than 20 DER octets.
    Serial,
    /// notAfter before notBefore.
    Validity,
    /// The stored PA subject is not one DER SEQUENCE of at most 127 content octets.
    PaSubject,
}

/// Whether a serial magnitude has exactly one DER encoding of at most 20 octets.
pub fn serial_ok(s: &[u8]) -> bool {
    match s.first() {
        None | Some(0) => false,
        Some(&first) => s.len() + usize::from(first >> 7) <= MAX_SERIAL_LEN,
    }
}

/// Whether `der` is a PA subject the template can hold: one SEQUENCE with a short length.
pub fn pa_subject_ok(der: &[u8]) -> bool {
    der.len() >= 2
        && der.len() <= MAX_PA_SUBJECT_LEN
        && der[0] == SEQ
        && usize::from(der[1]) == der.len() - 2
}

// ---- a tiny DER writer: content first, then wrapped ---------------------------------

fn push_len(out: &mut Vec<u8>, len: usize) {
    // The TBS is under 1 KiB: two length octets are always enough.
    let b = len.to_be_bytes();
    let [.., hi, lo] = b;
    if len < 0x80 {
        out.push(lo);
    } else if len < 0x100 {
        out.extend_from_slice(&[0x81, lo]);
    } else {
        out.extend_from_slice(&[0x82, hi, lo]);
    }
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

/// DER INTEGER of a non-empty unsigned magnitude without leading zero octets (a single
/// zero octet for zero).
fn push_uint(out: &mut Vec<u8>, magnitude: &[u8]) {
    let pad = magnitude.first().is_some_and(|b| b & 0x80 != 0);
    out.push(INTEGER);
    push_len(out, magnitude.len() + usize::from(pad));
    if pad {
        out.push(0);
    }
    out.extend_from_slice(magnitude);
}

const INTEGER: u8 = 0x02;
const OCTETS: u8 = 0x04;
const OID: u8 = 0x06;
const UTF8: u8 = 0x0C;
const PRINTABLE: u8 = 0x13;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
const SEQ: u8 = 0x30;
const SET: u8 = 0x31;

/// ecdsa-with-SHA256, parameters absent (RFC 5758).
const SIGNATURE_ALGORITHM: &[u8] = &[
    0x30, 0x0A, 0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x02,
];
/// SubjectPublicKeyInfo up to the point: id-ecPublicKey, prime256v1, BIT STRING header.
const SPKI_PREFIX: &[u8] = &[
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01, 0x06, 0x08, 0x2A,
    0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
/// basicConstraints, critical, CA:FALSE (an empty SEQUENCE).
const EXT_BASIC_CONSTRAINTS: &[u8] = &[
    0x30, 0x0C, 0x06, 0x03, 0x55, 0x1D, 0x13, 0x01, 0x01, 0xFF, 0x04, 0x02, 0x30, 0x00,
];
/// keyUsage, critical, digitalSignature only.
const EXT_KEY_USAGE: &[u8] = &[
    0x30, 0x0E, 0x06, 0x03, 0x55, 0x1D, 0x0F, 0x01, 0x01, 0xFF, 0x04, 0x04, 0x03, 0x02, 0x07, 0x80,
];
/// subjectKeyIdentifier up to its 20 octets.
const EXT_SKI_PREFIX: &[u8] = &[
    0x30, 0x1D, 0x06, 0x03, 0x55, 0x1D, 0x0E, 0x04, 0x16, 0x04, 0x14,
];
/// authorityKeyIdentifier ([0] keyIdentifier) up to its 20 octets.
const EXT_AKI_PREFIX: &[u8] = &[
    0x30, 0x1F, 0x06, 0x03, 0x55, 0x1D, 0x23, 0x04, 0x18, 0x30, 0x16, 0x80, 0x14,
];
/// id-at-serialNumber and id-at-commonName.
const AT_SERIAL_NUMBER: &[u8] = &[0x55, 0x04, 0x05];
const AT_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

/// RFC 7093 method 1: the leftmost 160 bits of SHA-256 over the SEC1 point (the
/// subjectPublicKey BIT STRING's value). The SKI/AKI of every certificate the PA issues.
pub fn certificate_key_id(public_key: &[u8; PUBLIC_KEY_LEN]) -> [u8; 20] {
    let d = crypto::sha256(public_key);
    let mut id = [0u8; 20];
    id.copy_from_slice(&d[..20]);
    id
}

/// The license key a grant certificate (DER) certifies, for verifiers of the indicia it
/// signs (the post office): the 65 bytes after the template's SubjectPublicKeyInfo prefix,
/// accepted only if the certificate also carries their RFC 7093 key identifier (the SKI).
/// The card never calls this; it rebuilds the whole `tbsCertificate` instead.
pub fn certificate_public_key(der: &[u8]) -> Option<[u8; PUBLIC_KEY_LEN]> {
    let at = der
        .windows(SPKI_PREFIX.len())
        .position(|w| w == SPKI_PREFIX)?
        .checked_add(SPKI_PREFIX.len())?;
    let key: [u8; PUBLIC_KEY_LEN] = der
        .get(at..at.checked_add(PUBLIC_KEY_LEN)?)?
        .try_into()
        .ok()?;
    let ski = certificate_key_id(&key);
    (key[0] == 0x04 && der.windows(ski.len()).any(|w| w == ski)).then_some(key)
}

fn push_digits(out: &mut Vec<u8>, mut v: u16, n: usize) {
    let mut buf = [b'0'; 4];
    for b in buf[..n].iter_mut().rev() {
        // why: v % 10 < 10 fits a byte.
        #[allow(clippy::cast_possible_truncation)]
        let digit = (v % 10) as u8;
        *b = b'0' + digit;
        v /= 10;
    }
    out.extend_from_slice(&buf[..n]);
}

/// UTCTime (YYMMDDhhmmssZ) through 2049, GeneralizedTime (YYYYMMDDhhmmssZ) from 2050
/// (RFC 5280 §4.1.2.5).
fn push_time(out: &mut Vec<u8>, d: Date, end_of_day: bool) {
    let mut s = Vec::with_capacity(15);
    let tag = if d.year <= 2049 {
        push_digits(&mut s, d.year % 100, 2);
        UTC_TIME
    } else {
        push_digits(&mut s, d.year, 4);
        GENERALIZED_TIME
    };
    push_digits(&mut s, d.month.into(), 2);
    push_digits(&mut s, d.day.into(), 2);
    s.extend_from_slice(if end_of_day { b"235959Z" } else { b"000000Z" });
    tlv(out, tag, &s);
}

/// One RDN: SET { SEQUENCE { type, value } }.
fn push_rdn(out: &mut Vec<u8>, attribute: &[u8], string_tag: u8, value: &[u8]) {
    let mut atv = Vec::with_capacity(value.len() + 9);
    tlv(&mut atv, OID, attribute);
    tlv(&mut atv, string_tag, value);
    tlv(out, SET, &wrap(SEQ, &atv));
}

/// The device ID in upper-case hex, as the certificate's subject serialNumber.
pub fn device_hex(device: DeviceId) -> [u8; 16] {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = [0u8; 16];
    for (i, b) in device.0.iter().enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 15)];
    }
    out
}

/// The certificate's common name: `license <n>` in decimal.
fn common_name(license: LicenseId) -> Vec<u8> {
    let mut cn = Vec::with_capacity(18);
    cn.extend_from_slice(b"license ");
    let mut digits = [0u8; 10];
    let mut n = license.0;
    let mut k = digits.len();
    loop {
        k -= 1;
        // why: n % 10 < 10 fits a byte.
        #[allow(clippy::cast_possible_truncation)]
        let digit = (n % 10) as u8;
        digits[k] = b'0' + digit;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    cn.extend_from_slice(&digits[k..]);
    cn
}

/// The license certificate's `tbsCertificate`, byte for byte.
pub fn tbs_certificate(g: &GrantFields, c: &CardFields<'_>) -> Result<Vec<u8>, TemplateError> {
    if !serial_ok(&g.serial) {
        return Err(TemplateError::Serial);
    }
    if g.not_after < g.not_before {
        return Err(TemplateError::Validity);
    }
    if !pa_subject_ok(c.pa_subject) {
        return Err(TemplateError::PaSubject);
    }
    let mut t = Vec::with_capacity(512);
    t.extend_from_slice(&[0xA0, 0x03, 0x02, 0x01, 0x02]); // [0] version v3
    push_uint(&mut t, &g.serial);
    t.extend_from_slice(SIGNATURE_ALGORITHM);
    t.extend_from_slice(c.pa_subject); // issuer
    let mut validity = Vec::with_capacity(34);
    push_time(&mut validity, g.not_before, false);
    push_time(&mut validity, g.not_after, true);
    tlv(&mut t, SEQ, &validity);
    let mut subject = Vec::with_capacity(64);
    push_rdn(
        &mut subject,
        AT_SERIAL_NUMBER,
        PRINTABLE,
        &device_hex(c.device),
    );
    push_rdn(&mut subject, AT_COMMON_NAME, UTF8, &common_name(g.license));
    tlv(&mut t, SEQ, &subject);
    t.extend_from_slice(SPKI_PREFIX);
    t.extend_from_slice(c.license_public_key);
    // Extensions in this fixed order: basicConstraints, keyUsage, SKI, AKI, license.
    let mut e = Vec::with_capacity(200);
    e.extend_from_slice(EXT_BASIC_CONSTRAINTS);
    e.extend_from_slice(EXT_KEY_USAGE);
    e.extend_from_slice(EXT_SKI_PREFIX);
    e.extend_from_slice(&certificate_key_id(c.license_public_key));
    e.extend_from_slice(EXT_AKI_PREFIX);
    e.extend_from_slice(&certificate_key_id(c.pa_public_key));
    // SEQUENCE { INTEGER license, PrintableString origin, OCTET STRING nonce }
    let mut value = Vec::with_capacity(40);
    let lb = g.license.0.to_be_bytes();
    let first = lb.iter().position(|&b| b != 0).unwrap_or(lb.len() - 1);
    push_uint(&mut value, &lb[first..]);
    tlv(&mut value, PRINTABLE, g.origin.as_bytes());
    tlv(&mut value, OCTETS, c.nonce);
    let mut ext = Vec::with_capacity(64);
    tlv(&mut ext, OID, LICENSE_EXTENSION_OID);
    // Non-critical: DER omits the DEFAULT FALSE; a critical unknown extension would make
    // OpenSSL refuse the certificate.
    tlv(&mut ext, OCTETS, &wrap(SEQ, &value));
    tlv(&mut e, SEQ, &ext);
    tlv(&mut t, 0xA3, &wrap(SEQ, &e));
    Ok(wrap(SEQ, &t))
}

/// The whole certificate: `SEQUENCE { tbs, ecdsa-with-SHA256, BIT STRING { ECDSA-Sig-Value } }`
/// with the PA's `r‖s` written as DER (the PA side builds its certificates with this, so
/// the card and the PA share one template).
pub fn certificate(tbs: &[u8], signature: &[u8; SIGNATURE_LEN]) -> Vec<u8> {
    let (r, s) = signature.split_at(32);
    let mut sig = Vec::with_capacity(72);
    for half in [r, s] {
        let start = half.iter().position(|&b| b != 0).unwrap_or(half.len() - 1);
        push_uint(&mut sig, &half[start..]);
    }
    let sig = wrap(SEQ, &sig);
    let mut bits = Vec::with_capacity(sig.len() + 1);
    bits.push(0); // no unused bits
    bits.extend_from_slice(&sig);
    let mut body = Vec::with_capacity(tbs.len() + 100);
    body.extend_from_slice(tbs);
    body.extend_from_slice(SIGNATURE_ALGORITHM);
    tlv(&mut body, 0x03, &bits);
    wrap(SEQ, &body)
}

/// The message the vendor countersigns: label ‖ SHA-256(tbs) ‖ device ID ‖ nonce.
pub fn countersign_message(tbs: &[u8], device: DeviceId, nonce: &[u8; NONCE_LEN]) -> Vec<u8> {
    let mut m = Vec::with_capacity(COUNTERSIGN_LABEL.len() + 32 + 8 + NONCE_LEN);
    m.extend_from_slice(COUNTERSIGN_LABEL);
    m.extend_from_slice(&crypto::sha256(tbs));
    m.extend_from_slice(&device.0);
    m.extend_from_slice(nonce);
    m
}

/// Why a grant is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantError {
    /// The template refused the fields.
    Template(TemplateError),
    /// The PA's signature does not verify over the rebuilt certificate.
    PaSignature,
    /// The vendor's countersignature does not verify.
    Countersignature,
}

/// The card's check of a grant: the rebuilt TBS under the PA's key, and the vendor's
/// countersignature over it under the vendor key the PSD was personalized with. Neither
/// alone adds a license.
pub fn verify_grant(
    g: &GrantFields,
    c: &CardFields<'_>,
    pa_signature: &[u8; SIGNATURE_LEN],
    vendor_public_key: &[u8; PUBLIC_KEY_LEN],
    countersignature: &[u8; SIGNATURE_LEN],
) -> Result<Vec<u8>, GrantError> {
    let tbs = tbs_certificate(g, c).map_err(GrantError::Template)?;
    if !crypto::verify_signature(c.pa_public_key, &tbs, pa_signature) {
        return Err(GrantError::PaSignature);
    }
    let m = countersign_message(&tbs, c.device, c.nonce);
    if !crypto::verify_signature(vendor_public_key, &m, countersignature) {
        return Err(GrantError::Countersignature);
    }
    Ok(tbs)
}
