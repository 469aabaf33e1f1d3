//! The outside signer (feature `webcrypto`, issue 17 §5): a PSD whose indicia are signed
//! by a key outside it — the browser's non-extractable WebCrypto key — rather than by its
//! device key.
//!
//! PERSONALIZE P1 `01` takes the signer's public key before the personalization data and
//! keeps it in the device record (version 3). ISSUE INDICIUM on a set the device key would
//! sign commits the debit as always and answers the **unsigned** indicium: the set's last
//! indicium is then *pending* (no signature), and another transaction ID on the set is
//! refused (`9A09`) while the same one answers the same unsigned bytes, debited once.
//! STORE SIGNATURE (80 46 00 set) checks the host's r ‖ s against the signer's key over
//! those bytes (`9A0A`, nothing changed, if it does not verify), commits it with the last
//! indicium and answers the signed indicium, which every later retry answers too.
//!
//! The device key stays inside and keeps signing audits, license receipts and exports; a
//! licensed set's indicia are signed by its license key, inside, as on any PSD.
//! `docs/apdu.md` § 4.1 and § 4.37 hold the bytes.

use alloc::vec::Vec;

use crate::card::Ctx;
use crate::crypto::{self, PUBLIC_KEY_LEN, SIGNATURE_LEN};
use crate::records::psd as rec;
use crate::status::Status;
use crate::store::Transaction;

use super::device::{Device, Personalization};
use super::registers::RegisterSet;

/// The outside signer's key for `set`'s indicia: `None` where the PSD signs them itself
/// (no outside signer, or a licensed set, signed by its license key).
pub fn signer_of<'a>(device: &'a Device, set: &RegisterSet) -> Option<&'a [u8; PUBLIC_KEY_LEN]> {
    match set.grant {
        Some(_) => None,
        None => device.outside_signer.as_ref(),
    }
}

/// Whether `set`'s last indicium waits for its outside signature.
pub fn pending(device: &Device, set: &RegisterSet) -> bool {
    signer_of(device, set).is_some() && set.last_indicium.is_some() && set.last_signature.is_none()
}

impl super::PsdApplet {
    /// PERSONALIZE (80 10 01 00): the outside signer's public key (65, SEC1 uncompressed)
    /// ‖ PERSONALIZE's data. Keys and sets as P1 `00`; answers the key ID and public key
    /// of the device key (audits, receipts), not the signer's, which the host has.
    pub(super) fn personalize_outside(
        &mut self,
        ctx: &mut Ctx<'_>,
        data: &[u8],
        reply: &mut Vec<u8>,
    ) -> Result<(), Status> {
        if data.len() < PUBLIC_KEY_LEN {
            return Err(Status::WrongData);
        }
        let (signer, rest) = data.split_at(PUBLIC_KEY_LEN);
        let signer: [u8; PUBLIC_KEY_LEN] = signer.try_into().map_err(|_| Status::WrongData)?;
        if !crypto::is_valid_public_key(&signer) {
            return Err(Status::WrongData);
        }
        let p = Personalization::decode(rest)?;
        let mut device = Self::generate_device(ctx, &p);
        device.outside_signer = Some(signer);
        self.commit_personalization(ctx, &p, device, reply)
    }

    /// STORE SIGNATURE (80 46 00 set): r ‖ s (64) over the set's pending indicium under the
    /// outside signer's key. Verified first (`9A0A`), then committed with the indicium;
    /// answers the signed indicium. `9A0B` when nothing waits on the set.
    pub(super) fn store_signature(
        &mut self,
        ctx: &mut Ctx<'_>,
        i: usize,
        data: &[u8],
        reply: &mut Vec<u8>,
    ) -> Result<(), Status> {
        let device = self.persistent.device()?;
        let set = self.persistent.set(i)?;
        if !pending(device, set) {
            return Err(Status::NoSignaturePending);
        }
        let signature: [u8; SIGNATURE_LEN] = data.try_into().map_err(|_| Status::WrongLength)?;
        let (Some(signer), Some((_, payload))) = (signer_of(device, set), &set.last_indicium)
        else {
            return Err(Status::NoSignaturePending);
        };
        if !crypto::verify_signature(signer, payload, &signature) {
            return Err(Status::SignatureInvalid);
        }
        let mut next = set.clone();
        next.last_signature = Some(signature);
        let mut txn = Transaction::begin(ctx.store);
        txn.write(rec::set(i), next.encode());
        txn.commit()?;
        reply.extend_from_slice(payload);
        reply.extend_from_slice(&signature);
        self.persistent.put_set(i, next);
        Ok(())
    }
}

/// Whether ISSUE INDICIUM on `set` of the PSD kept in `store` answers an **unsigned**
/// indicium (a set the outside signer signs). A host that wants a signed indicium asks this
/// first and refuses before the debit: GET DATA does not show the outside signer. `false`
/// for a blank PSD, a free slot or a store that does not load (ISSUE INDICIUM refuses those
/// itself, before any debit).
pub fn signs_outside(store: &dyn crate::store::Store, set: crate::types::RegisterSetIndex) -> bool {
    let Ok(state) = super::state::Persistent::load(store) else {
        return false;
    };
    match (state.device(), state.set(usize::from(set.0))) {
        (Ok(device), Ok(set)) => signer_of(device, set).is_some(),
        _ => false,
    }
}
