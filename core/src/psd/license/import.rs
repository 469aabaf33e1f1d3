//! IMPORT SET (`80 4A 00 00`, seed 003 claim 5): an exported register set comes back into
//! a free slot, once.
//!
//! Checks, in order: the blob decodes (`6A80`); it is this device's (`9A10`); its seal
//! opens under this PSD's seal key (`6982`: a changed byte, or another PSD's file); an
//! outstanding entry has the same license, epoch and digest (`9A33`: an older copy, or a
//! copy already imported — it can never be used); a slot is free (`6A84`; the file stays
//! valid). One commit recreates the set and consumes the entry, so each epoch comes back
//! at most once (no rollback), and no other PSD holds the entry or the key (no clone).

use alloc::vec::Vec;

use crate::status::Status;
use crate::wire::Writer;

use super::export::Blob;
use super::ExportState;

#[cfg(feature = "licenses")]
impl crate::psd::PsdApplet {
    /// IMPORT SET (80 4A 00 00): answers the slot the set went to.
    pub(in crate::psd) fn import_set(
        &mut self,
        ctx: &mut crate::card::Ctx<'_>,
        data: &[u8],
        reply: &mut Vec<u8>,
    ) -> Result<(), Status> {
        use crate::records::psd as rec;

        let blob = Blob::decode(data)?;
        let p = &self.persistent;
        let device = p.device()?;
        if blob.device != device.id {
            return Err(Status::WrongDevice);
        }
        let licenses = &p.licenses;
        let seal_key = licenses
            .seal_key
            .as_ref()
            .ok_or(Status::SecurityStatusNotSatisfied)?;
        let set = blob
            .open(seal_key)
            .ok_or(Status::SecurityStatusNotSatisfied)?;
        let digest = Blob::digest_of(data);
        let Some(k) = licenses.exports.iter().position(|e| {
            e.state == ExportState::Outstanding
                && e.license == set.license
                && e.epoch == blob.epoch
                && e.digest == digest
        }) else {
            return Err(Status::ExportNotOutstanding);
        };
        let slot = p
            .sets
            .iter()
            .position(Option::is_none)
            .ok_or(Status::NotEnoughMemory)?;
        let mut next = licenses.clone();
        next.exports.remove(k);
        let mut txn = crate::store::Transaction::begin(ctx.store);
        txn.write(rec::set(slot), set.encode());
        txn.write(rec::LICENSES, next.encode().to_vec());
        txn.commit()?;
        self.persistent.licenses = next;
        self.persistent.put_set(slot, set);
        // why: slot < MAX_REGISTER_SETS (4).
        #[allow(clippy::cast_possible_truncation)]
        reply.put_u8(slot as u8);
        Ok(())
    }
}
