//! The partners a device has recognised since power-on: for each certificate whose issuer
//! signature it has checked, the static-static ECDH secret with that certificate's key.
//!
//! A certificate's signature is a fixed fact about its bytes, and the static-static secret
//! a fixed function of the device's own key and the partner's: computing them again at
//! every contact with the same partner would repeat the two most expensive steps of a
//! recognition (an ECDSA verification and a scalar multiplication) for nothing. The
//! checks that can change — kind, scheme and ID against the hello, validity on today's
//! date, the revocation list — run at every recognition before the cache is consulted.
//! RAM only (a few entries, oldest replaced first); a power cut empties it.

use zeroize::Zeroizing;

use super::cert::{CertificateError, DeviceCertificate, DeviceKind, RevocationList};
use crate::crypto::{sha256, IndiciumKey, SHARED_SECRET_LEN};
use crate::types::{Date, SchemeId};

/// Partners remembered.
pub const PARTNERS: usize = 4;

type Secret = Zeroizing<[u8; SHARED_SECRET_LEN]>;

/// Recently recognised partners (see the module comment).
#[derive(Default)]
pub struct Partners {
    entries: [Option<([u8; 32], Secret)>; PARTNERS],
    next: usize,
}

impl Partners {
    /// Checks `cert` (`expect`: kind, scheme and ID the partner must have) as
    /// [`DeviceCertificate::check`] does, and returns the static-static secret of `own` with
    /// its key. The signature check and the scalar multiplication are skipped for a
    /// certificate already checked since power-on.
    pub fn recognise(
        &mut self,
        own: &IndiciumKey,
        cert: &DeviceCertificate,
        issuer_public_key: &[u8],
        expect: (DeviceKind, SchemeId, [u8; 8]),
        today: Option<Date>,
        revoked: Option<&RevocationList>,
    ) -> Result<Secret, CertificateError> {
        cert.check_unsigned(expect, today, revoked)?;
        let id = sha256(&cert.encode());
        if let Some((_, secret)) = self.entries.iter().flatten().find(|(h, _)| *h == id) {
            return Ok(secret.clone());
        }
        if !cert.signed_by(issuer_public_key) {
            return Err(CertificateError::BadSignature);
        }
        let secret = own
            .agree(&cert.public_key)
            .ok_or(CertificateError::BadSignature)?;
        let slot = self.next % PARTNERS;
        self.entries[slot] = Some((id, secret.clone()));
        self.next = (slot + 1) % PARTNERS;
        Ok(secret)
    }
}
