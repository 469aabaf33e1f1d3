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

/// LICENSE INSTALL's answer: the slot of the new set ‖ its key ID ‖ its license.
pub fn encode_installed(slot: u8, key_id: crate::types::KeyId, license: LicenseId) -> Vec<u8> {
    let mut w = Vec::with_capacity(9);
    w.put_u8(slot);
    w.extend_from_slice(&key_id.0);
    w.put_u32(license.0);
    w
}

#[cfg(feature = "licenses")]
impl crate::psd::PsdApplet {
    /// LICENSE INSTALL (80 44 00 00): checks the grant and creates the set in one commit.
    pub(in crate::psd) fn license_install(
        &mut self,
        ctx: &mut crate::card::Ctx<'_>,
        data: &[u8],
        reply: &mut Vec<u8>,
    ) -> Result<(), crate::status::Status> {
        use crate::psd::registers::{RegisterSet, SetGrant};
        use crate::records::psd as rec;
        use crate::status::Status;
        use grant::{CardFields, GrantError};

        let install = Install::decode(data)?;
        let p = &self.persistent;
        let device = p.device()?;
        let pa = device
            .postal_authority
            .as_ref()
            .ok_or(Status::NoPostalAuthority)?;
        let licenses = &p.licenses;
        let pending = match &licenses.pending {
            Some(pending) if pending.counter == install.request => pending,
            _ if install.request != 0 && install.request <= licenses.request_counter => {
                return Err(Status::GrantAlreadyUsed)
            }
            _ => return Err(Status::NoLicenseRequest),
        };
        let license_public_key = pending.key.public_key();
        let card = CardFields {
            pa_subject: &pa.subject,
            pa_public_key: &pa.public_key,
            device: device.id,
            license_public_key: &license_public_key,
            nonce: &pending.nonce,
        };
        grant::verify_grant(
            &install.fields,
            &card,
            &install.pa_signature,
            &device.vendor_public_key,
            &install.countersignature,
        )
        .map_err(|e| match e {
            GrantError::Template(_) => Status::WrongData,
            GrantError::PaSignature | GrantError::Countersignature => {
                Status::SecurityStatusNotSatisfied
            }
        })?;
        let fields = &install.fields;
        // The grant is for what was asked: the origin, and the license unless the PA was to
        // number it (then any number but 0). The vendor checks the same; the card does not
        // rely on it.
        if (pending.license.0 != 0 && pending.license != fields.license)
            || fields.license.0 == 0
            || fields.origin != pending.origin
        {
            return Err(Status::WrongData);
        }
        if p.holds_license(fields.license) {
            return Err(Status::LicenseExists);
        }
        if p.counters.last_date.is_some_and(|d| fields.not_after < d) {
            return Err(Status::LicenseNotValid);
        }
        let slot = p
            .sets
            .iter()
            .position(Option::is_none)
            .ok_or(Status::NotEnoughMemory)?;
        let mut set = RegisterSet::new(fields.license, fields.origin);
        set.grant = Some(SetGrant {
            key: pending.key.clone(),
            serial: fields.serial.clone(),
            not_before: fields.not_before,
            not_after: fields.not_after,
        });
        let mut next = licenses.clone();
        next.pending = None;
        next.last_installed = install.request;
        let mut txn = crate::store::Transaction::begin(ctx.store);
        txn.write(rec::set(slot), set.encode());
        txn.write(rec::LICENSES, next.encode().to_vec());
        txn.commit()?;
        let key_id = set.key_id(&device.key);
        let license = set.license;
        self.persistent.licenses = next;
        self.persistent.put_set(slot, set);
        // why: slot < MAX_REGISTER_SETS (4).
        #[allow(clippy::cast_possible_truncation)]
        reply.extend_from_slice(&encode_installed(slot as u8, key_id, license));
        Ok(())
    }
}
