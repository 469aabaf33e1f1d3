//! What INSTALL KEY CERTIFICATE checks of a certificate before the PSD pays for it and
//! activates its key (seed 004, Fig. 5 step 520): that it is DER, for the slot's key,
//! signed with ECDSA P-256/SHA-256 by the CA the vendor told the PSD to trust, valid today,
//! and made for the key's purpose (a postmark certificate carries the critical
//! timeStamping-only extended key usage OpenSSL demands of a time-stamping authority).
//!
//! The parser is `x509-cert`'s; the signature and the key are compared byte for byte.

use der::asn1::UintRef;
use der::{Decode as _, Encode as _, Reader as _, SliceReader};
use x509_cert::ext::pkix::{BasicConstraints, ExtendedKeyUsage};
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
/// `today`, and answers its validity (first and last day, which the PSD keeps: it signs
/// nothing under the certificate outside them). `6A80` if it is not a DER certificate at
/// all, `9A44` for everything else that is wrong.
pub fn check(
    cert: &[u8],
    public_key: &[u8; PUBLIC_KEY_LEN],
    purpose: Purpose,
    ca_key: &[u8; PUBLIC_KEY_LEN],
    today: Date,
) -> Result<(Date, Date), Status> {
    if cert.len() > MAX_CERTIFICATE_LEN {
        return Err(Status::WrongLength);
    }
    let parsed = Certificate::from_der(cert).map_err(|_| Status::WrongData)?;
    // One encoding only: what the CA signed is what the PSD keeps and hashes.
    if parsed.to_der().ok().as_deref() != Some(cert) {
        return Err(Status::WrongData);
    }
    let mismatch = Status::CertificateMismatch;
    let tbs = parsed.tbs_certificate();
    if parsed.signature_algorithm().oid != ECDSA_SHA256 || tbs.signature().oid != ECDSA_SHA256 {
        return Err(mismatch);
    }
    let tbs_der = tbs.to_der().map_err(|_| mismatch)?;
    let rs = ecdsa_rs(parsed.signature().as_bytes().ok_or(mismatch)?).ok_or(mismatch)?;
    if !crypto::verify_signature(ca_key, &tbs_der, &rs) {
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
    let (from, to) = match (date(&v.not_before), date(&v.not_after)) {
        (Some(f), Some(t)) if f <= today && today <= t => (f, t),
        _ => return Err(mismatch),
    };
    // An end-entity certificate: never a CA.
    if let Some((_, bc)) = tbs
        .get_extension::<BasicConstraints>()
        .map_err(|_| mismatch)?
    {
        if bc.ca {
            return Err(mismatch);
        }
    }
    let eku = tbs
        .get_extension::<ExtendedKeyUsage>()
        .map_err(|_| mismatch)?;
    let fits = match (purpose, eku) {
        // RFC 3161 §2.3: critical, and timeStamping alone.
        (Purpose::Postmark, Some((true, e))) => e.0.as_slice() == [KP_TIME_STAMPING],
        (Purpose::Sign, Some((_, e))) => {
            e.0.contains(&KP_EMAIL_PROTECTION) && !e.0.contains(&KP_TIME_STAMPING)
        }
        // Agent CA and payment certificates are not issued yet (docs/certmeter.md).
        _ => false,
    };
    if fits {
        Ok((from, to))
    } else {
        Err(mismatch)
    }
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
