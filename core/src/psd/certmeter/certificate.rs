//! What INSTALL KEY CERTIFICATE checks of a certificate before the PSD pays for it and
//! activates its key (seed 004, Fig. 5 step 520): that it is DER, for the slot's key,
//! signed with ECDSA P-256/SHA-256 by the CA the vendor told the PSD to trust, valid today,
//! and made for the key's purpose (a postmark certificate carries the critical
//! timeStamping-only extended key usage OpenSSL demands of a time-stamping authority; an
//! agent CA certificate is the one CA certificate accepted: path length 0, keyCertSign and
//! critical name constraints, Fig. 3A).
//!
//! The parser is `x509-cert`'s; the signature and the key are compared byte for byte.
//! [`examine`] answers the same questions one by one for VALIDATE POSTMARK, which reports
//! each rather than refusing.

use der::asn1::UintRef;
use der::{Decode as _, Encode as _, Reader as _, SliceReader};
use x509_cert::ext::pkix::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages, NameConstraints,
};
use x509_cert::Certificate;

use crate::crypto::{self, PUBLIC_KEY_LEN, SIGNATURE_LEN};
use crate::status::Status;
use crate::types::Date;

use super::attestation::Purpose;
use super::state::MAX_CERTIFICATE_LEN;

/// ecdsa-with-SHA256 (1.2.840.10045.4.3.2).
const ECDSA_SHA256: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
/// id-kp-timeStamping (1.3.6.1.5.5.7.3.8).
const KP_TIME_STAMPING: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.8");
/// id-kp-emailProtection (1.3.6.1.5.5.7.3.4).
const KP_EMAIL_PROTECTION: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.4");

/// Checks `cert` for the key `public_key` of `purpose` under the CA key `ca_key` on
/// `today`, and answers its validity (notBefore and notAfter in Unix seconds, which the
/// PSD keeps: it signs nothing under the certificate outside them). `6A80` if it is not a DER certificate at
/// all, `9A44` for everything else that is wrong.
pub(super) fn check(
    cert: &[u8],
    public_key: &[u8; PUBLIC_KEY_LEN],
    purpose: Purpose,
    ca_key: &[u8; PUBLIC_KEY_LEN],
    today: Date,
) -> Result<(u64, u64), Status> {
    let parsed = parse(cert)?;
    let mismatch = Status::CertificateMismatch;
    let tbs = parsed.tbs_certificate();
    if !signed_by(&parsed, ca_key) {
        return Err(mismatch);
    }
    if tbs.subject_public_key_info().subject_public_key.as_bytes() != Some(&public_key[..]) {
        return Err(mismatch);
    }
    let date = |t: &x509_cert::time::Time| {
        let dt = t.to_date_time();
        Date::new(dt.year(), dt.month(), dt.day())
    };
    let v = tbs.validity();
    match (date(&v.not_before), date(&v.not_after)) {
        (Some(f), Some(t)) if f <= today && today <= t => {}
        _ => return Err(mismatch),
    }
    let (from, to) = (
        v.not_before.to_unix_duration().as_secs(),
        v.not_after.to_unix_duration().as_secs(),
    );
    if purpose == Purpose::AgentCa {
        let bc = tbs
            .get_extension::<BasicConstraints>()
            .map_err(|_| mismatch)?;
        return agent_ca_fits(tbs, bc).then_some((from, to)).ok_or(mismatch);
    }
    if fits(tbs, purpose) {
        Ok((from, to))
    } else {
        Err(mismatch)
    }
}

/// What VALIDATE POSTMARK learns of a certificate it is shown (seed 004, Fig. 4 step 408):
/// each check on its own, so the receipt can say which failed.
#[derive(Clone, Copy, Debug)]
pub struct Examined {
    /// The subject's key, if it is an uncompressed SEC1 point of the right length.
    pub public_key: Option<[u8; PUBLIC_KEY_LEN]>,
    /// Signed (ecdsa-with-SHA256) by the CA key given.
    pub ca_signed: bool,
    /// A postmark certificate: end entity, critical EKU timeStamping alone, key usage (if
    /// present) digitalSignature and/or nonRepudiation only.
    pub postmark: bool,
    /// notBefore and notAfter, Unix seconds.
    pub valid: (u64, u64),
}

/// Examines `cert` under `ca_key`: `6A80` if it is not one canonical DER certificate (bad
/// bytes, refused), otherwise the facts, whatever they are.
pub fn examine(cert: &[u8], ca_key: &[u8; PUBLIC_KEY_LEN]) -> Result<Examined, Status> {
    let parsed = parse(cert)?;
    let tbs = parsed.tbs_certificate();
    let public_key = tbs
        .subject_public_key_info()
        .subject_public_key
        .as_bytes()
        .and_then(|k| <[u8; PUBLIC_KEY_LEN]>::try_from(k).ok());
    let v = tbs.validity();
    Ok(Examined {
        public_key,
        ca_signed: signed_by(&parsed, ca_key),
        postmark: fits(tbs, Purpose::Postmark),
        valid: (
            v.not_before.to_unix_duration().as_secs(),
            v.not_after.to_unix_duration().as_secs(),
        ),
    })
}

/// A certificate in canonical DER of at most [`MAX_CERTIFICATE_LEN`] bytes (`6700`,
/// `6A80` otherwise): what the CA signed is what the PSD keeps and hashes.
fn parse(cert: &[u8]) -> Result<Certificate, Status> {
    if cert.len() > MAX_CERTIFICATE_LEN {
        return Err(Status::WrongLength);
    }
    let parsed = Certificate::from_der(cert).map_err(|_| Status::WrongData)?;
    if parsed.to_der().ok().as_deref() != Some(cert) {
        return Err(Status::WrongData);
    }
    Ok(parsed)
}

/// Whether `ca_key` signed the certificate with ecdsa-with-SHA256.
fn signed_by(parsed: &Certificate, ca_key: &[u8; PUBLIC_KEY_LEN]) -> bool {
    let tbs = parsed.tbs_certificate();
    if parsed.signature_algorithm().oid != ECDSA_SHA256 || tbs.signature().oid != ECDSA_SHA256 {
        return false;
    }
    let (Ok(tbs_der), Some(rs)) = (
        tbs.to_der(),
        parsed.signature().as_bytes().and_then(ecdsa_rs),
    ) else {
        return false;
    };
    crypto::verify_signature(ca_key, &tbs_der, &rs)
}

/// Whether the certificate is an end entity's made for `purpose`, with the uses OpenSSL
/// demands of it: a postmark certificate `openssl ts -verify` accepts (RFC 3161 §2.3: EKU
/// critical, timeStamping alone; key usage, if present, digitalSignature and/or
/// nonRepudiation and nothing else), a sign certificate `openssl cms -verify` accepts with
/// its default purpose smimesign (EKU with emailProtection, never timeStamping; key usage,
/// if present, with digitalSignature or nonRepudiation).
fn fits(tbs: &x509_cert::TbsCertificate, purpose: Purpose) -> bool {
    // An end-entity certificate: never a CA.
    match tbs.get_extension::<BasicConstraints>() {
        Ok(Some((_, bc))) if bc.ca => return false,
        Ok(_) => {}
        Err(_) => return false,
    }
    let Ok(ku) = tbs.get_extension::<KeyUsage>() else {
        return false;
    };
    let signing = KeyUsages::DigitalSignature | KeyUsages::NonRepudiation;
    let (ku_signs, ku_only_signs) = match ku {
        None => (true, true),
        Some((_, ku)) => (
            !(ku.0 & signing).is_empty(),
            (ku.0 - signing).is_empty() && !(ku.0 & signing).is_empty(),
        ),
    };
    let Ok(eku) = tbs.get_extension::<ExtendedKeyUsage>() else {
        return false;
    };
    match (purpose, eku) {
        (Purpose::Postmark, Some((true, e))) => {
            e.0.as_slice() == [KP_TIME_STAMPING] && ku_only_signs
        }
        (Purpose::Sign, Some((_, e))) => {
            e.0.contains(&KP_EMAIL_PROTECTION) && !e.0.contains(&KP_TIME_STAMPING) && ku_signs
        }
        // Agent CA certificates are checked by `agent_ca_fits`; payment certificates by
        // the credit line's own check.
        _ => false,
    }
}

/// An agent CA certificate (Fig. 3A): a CA that certifies end entities only (critical
/// basicConstraints, cA, pathLenConstraint 0), may sign certificates (keyUsage
/// keyCertSign), and is held to the customer's names (a critical nameConstraints with
/// permitted subtrees, which ISSUE AGENT CERTIFICATE enforces before it signs).
fn agent_ca_fits(tbs: &x509_cert::TbsCertificate, bc: Option<(bool, BasicConstraints)>) -> bool {
    let ca = matches!(
        bc,
        Some((
            true,
            BasicConstraints {
                ca: true,
                path_len_constraint: Some(0)
            }
        ))
    );
    let ku = matches!(
        tbs.get_extension::<KeyUsage>(),
        Ok(Some((_, ku))) if ku.key_cert_sign()
    );
    let nc = matches!(
        tbs.get_extension::<NameConstraints>(),
        Ok(Some((true, nc))) if nc.permitted_subtrees.as_ref().is_some_and(|p| !p.is_empty())
    );
    ca && ku && nc
}

/// The `r ‖ s` of a DER `ECDSA-Sig-Value`, each left-padded to 32 bytes.
pub(super) fn ecdsa_rs(der_sig: &[u8]) -> Option<[u8; SIGNATURE_LEN]> {
    let mut reader = SliceReader::new(der_sig).ok()?;
    let (r, s) = reader
        .sequence(|seq| Ok::<_, der::Error>((UintRef::decode(seq)?, UintRef::decode(seq)?)))
        .ok()?;
    reader.finish().ok()?;
    let mut out = [0u8; SIGNATURE_LEN];
    for (half, int) in out.chunks_mut(32).zip([r, s]) {
        let bytes = int.as_bytes();
        let pad = 32usize.checked_sub(bytes.len())?;
        half[pad..].copy_from_slice(bytes);
    }
    Some(out)
}
