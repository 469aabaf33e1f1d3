//! LICENSE INSTALL (`80 44 00 00`, seed 003 Fig. 4 step 67): the grant the postal authority
//! signed and the manufacturer countersigned becomes a register set, in one commit.
//!
//! Checks, in this order (the host sees the first refusal; nothing is written on any):
//! no request pending, or one with another counter (`9A31`; `9A32` for a request already
//! installed or replaced); the rebuilt certificate under the PA's key and the
//! countersignature under the vendor key (`6982`); the license already resident or
//! exported (`9A30`); notAfter before the last date of mailing used (`9A35`); no free slot
//! (`6A84`).

use alloc::vec::Vec;

use crate::crypto::SIGNATURE_LEN;
use crate::types::{Date, LicenseId, PostalCode};
use crate::wire::{Malformed, Reader, Writer};

use super::grant::{self, GrantFields};

/// Layout version of LICENSE INSTALL's data.
pub const INSTALL_VERSION: u8 = 1;

/// LICENSE INSTALL's command data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Install {
    /// The request this grant answers (its counter).
    pub request: u32,
    /// The certificate's fields.
    pub fields: GrantFields,
    /// The PA's signature over the certificate (`r‖s`).
    pub pa_signature: [u8; SIGNATURE_LEN],
    /// The vendor's countersignature (`r‖s`).
    pub countersignature: [u8; SIGNATURE_LEN],
}

impl Install {
    /// `version ‖ request counter ‖ serial (length-prefixed) ‖ notBefore ‖ notAfter ‖
    /// license ‖ origin ‖ PA r‖s ‖ vendor r‖s`.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(180);
        w.put_u8(INSTALL_VERSION);
        w.put_u32(self.request);
        w.put_short_bytes(&self.fields.serial);
        self.fields.not_before.write(&mut w);
        self.fields.not_after.write(&mut w);
        w.put_u32(self.fields.license.0);
        self.fields.origin.write(&mut w);
        w.extend_from_slice(&self.pa_signature);
        w.extend_from_slice(&self.countersignature);
        w
    }

    /// Parses the command data (a serial the template cannot encode is malformed).
    pub fn decode(bytes: &[u8]) -> Result<Install, Malformed> {
        let mut r = Reader::new(bytes);
        if r.u8()? != INSTALL_VERSION {
            return Err(Malformed::Value);
        }
        let request = r.u32()?;
        let serial = r.short_bytes()?.to_vec();
        if !grant::serial_ok(&serial) {
            return Err(Malformed::Value);
        }
        let fields = GrantFields {
            serial,
            not_before: Date::read(&mut r)?,
            not_after: Date::read(&mut r)?,
            license: LicenseId(r.u32()?),
            origin: PostalCode::read(&mut r)?,
        };
        if fields.not_after < fields.not_before {
            return Err(Malformed::Value);
        }
        let install = Install {
            request,
            fields,
            pa_signature: r.array()?,
            countersignature: r.array()?,
        };
        r.finish()?;
        Ok(install)
    }
}
