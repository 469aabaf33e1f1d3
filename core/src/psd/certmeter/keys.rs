//! GENERATE KEY and INSTALL KEY CERTIFICATE (seed 004, Fig. 5): a key of one purpose is
//! generated inside the PSD and attested; the back office's CA certifies it (the subject
//! from the customer's account); installing the certificate pays the certificate fee and
//! activates the key in one commit (step 520). A newer key of the same purpose retires the
//! older one in that commit: its scalar is erased, its certificate kept for the record.

use alloc::vec::Vec;

use crate::card::Ctx;
use crate::crypto::IndiciumKey;
use crate::records::psd as rec;
use crate::status::Status;
use crate::store::Transaction;
use crate::types::RegisterSetIndex;
use crate::wire::Writer;

use super::anchor::AnchorKind;
use super::attestation::{KeyAttestation, Purpose};
use super::rates::Service;
use super::state::{KeySlot, SlotState, MAX_KEY_SLOTS};

impl crate::psd::PsdApplet {
    /// GENERATE KEY (80 74 purpose P2): a new key of `purpose` in a free slot, and its
    /// attestation. A pending key of the purpose is answered again (same bytes) unless
    /// `replace` (P2 `01`), which generates a new one in its slot. Needs a rate table that
    /// prices certificates: a key nobody could pay to certify is not made.
    pub(in crate::psd) fn generate_key(
        &mut self,
        ctx: &mut Ctx<'_>,
        purpose: u8,
        replace: bool,
        data: &[u8],
        reply: &mut Vec<u8>,
    ) -> Result<(), Status> {
        // Every purpose has its service: postmark and sign keys are certified by the CA,
        // agent CA keys too (Fig. 3A), payment keys by their line of credit (Figs. 7-8).
        let purpose = Purpose::from_code(purpose).ok_or(Status::IncorrectP1P2)?;
        if !data.is_empty() {
            return Err(Status::WrongLength);
        }
        let device = self.device()?;
        let cm = &self.persistent.certmeter;
        let today = ctx.platform.today().ok_or(Status::ClockRefused)?;
        cm.fee(Service::Certificate, today)?;
        let pending = cm.slots.iter().position(|s| {
            s.as_ref()
                .is_some_and(|s| s.purpose == purpose && s.state == SlotState::Pending)
        });
        if let (Some(i), false) = (pending, replace) {
            let slot = cm.slots[i].as_ref().ok_or(Status::Internal)?;
            let key = slot.key.as_ref().ok_or(Status::Internal)?;
            let a = attestation(device.id, i, slot)?;
            reply.extend_from_slice(&a.sign(&device.key, key));
            return Ok(());
        }
        let i = match pending {
            Some(i) => i,
            None => match cm.slots.iter().position(Option::is_none) {
                Some(i) => i,
                None if cm.slots.len() < MAX_KEY_SLOTS => cm.slots.len(),
                // Full: a retired slot (no scalar left, its certificate on record at the
                // CA) takes the new key, the oldest of this purpose first, else the oldest.
                None => oldest_retired(&cm.slots, purpose).ok_or(Status::NotEnoughMemory)?,
            },
        };
        let generation = cm
            .generation
            .checked_add(1)
            .ok_or(Status::CounterOverflow)?;
        let key = IndiciumKey::generate(ctx.platform);
        let slot = KeySlot {
            state: SlotState::Pending,
            purpose,
            generation,
            public_key: key.public_key(),
            key: Some(key.clone()),
            certificate: Vec::new(),
            fee_paid: crate::types::Amount::ZERO,
            valid: None,
        };
        let a = attestation(device.id, i, &slot)?;
        let mut next = cm.clone();
        next.generation = generation;
        if i == next.slots.len() {
            next.slots.push(Some(slot));
        } else {
            next.slots[i] = Some(slot);
        }
        let mut txn = Transaction::begin(ctx.store);
        txn.write(rec::CERTMETER, next.encode());
        txn.commit()?;
        reply.extend_from_slice(&a.sign(&device.key, &key));
        self.persistent.certmeter = next;
        Ok(())
    }

    /// INSTALL KEY CERTIFICATE (80 76 slot set): checks the certificate against the slot's
    /// pending key, the CA anchor and the purpose, then in one commit debits the
    /// certificate fee from the set, activates the key and retires the purpose's older key.
    /// The same certificate again (a retry) answers the same, with no second debit.
    /// Reply: slot ‖ fee u64 ‖ the set's registers (READ REGISTERS layout).
    pub(in crate::psd) fn install_key_certificate(
        &mut self,
        ctx: &mut Ctx<'_>,
        slot: u8,
        set: RegisterSetIndex,
        data: &[u8],
        reply: &mut Vec<u8>,
    ) -> Result<(), Status> {
        let i = self.live_set_index(set)?;
        let p = &self.persistent;
        let cm = &p.certmeter;
        let s = usize::from(slot);
        let key_slot = cm
            .slots
            .get(s)
            .and_then(Option::as_ref)
            .ok_or(Status::NoKeyForPurpose)?;
        let today = ctx.platform.today();
        // A retry: the certificate is installed already.
        if key_slot.state == SlotState::Active && key_slot.certificate == data {
            return self.install_reply(slot, key_slot.fee_paid, i, reply);
        }
        if key_slot.state != SlotState::Pending {
            return Err(Status::NoKeyForPurpose);
        }
        let ca = cm
            .anchor(AnchorKind::CertificateCa)
            .ok_or(Status::CertificateMismatch)?;
        let today = today.ok_or(Status::ClockRefused)?;
        let (not_before, not_after) = super::certificate::check(
            data,
            &key_slot.public_key,
            key_slot.purpose,
            &ca.public_key,
            today,
        )?;
        let (fee, _) = cm.fee(Service::Certificate, today)?;
        let next_set = p.set(i)?.charge(fee)?;
        let mut next = cm.clone();
        let purpose = key_slot.purpose;
        let mut replaced = false;
        for other in next.slots.iter_mut().flatten() {
            if other.purpose == purpose && other.state == SlotState::Active {
                other.state = SlotState::Retired;
                other.key = None;
                replaced = true;
            }
        }
        let installed = next
            .slots
            .get_mut(s)
            .and_then(Option::as_mut)
            .ok_or(Status::Internal)?;
        installed.state = SlotState::Active;
        installed.certificate = data.to_vec();
        installed.fee_paid = fee;
        installed.valid = Some((not_before, not_after));
        // The replaced key's scalar is out of the record: no older copy may keep it.
        self.commit_service(ctx, i, next_set, next, replaced)?;
        self.install_reply(slot, fee, i, reply)
    }

    fn install_reply(
        &self,
        slot: u8,
        fee: crate::types::Amount,
        i: usize,
        reply: &mut Vec<u8>,
    ) -> Result<(), Status> {
        reply.put_u8(slot);
        reply.put_u64(fee.0);
        self.persistent.set(i)?.readout().write(reply);
        Ok(())
    }
}

/// The retired slot a new key of `purpose` may take when every slot is in use: the one
/// with the lowest generation among the purpose's, else among all.
fn oldest_retired(slots: &[Option<KeySlot>], purpose: Purpose) -> Option<usize> {
    let retired = |same: bool| {
        slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((i, s.as_ref()?)))
            .filter(|(_, s)| s.state == SlotState::Retired && (!same || s.purpose == purpose))
            .min_by_key(|(_, s)| s.generation)
            .map(|(i, _)| i)
    };
    retired(true).or_else(|| retired(false))
}

/// The attestation of the key in slot `i`.
fn attestation(
    device: crate::types::DeviceId,
    i: usize,
    slot: &KeySlot,
) -> Result<KeyAttestation, Status> {
    Ok(KeyAttestation {
        device,
        slot: u8::try_from(i).map_err(|_| Status::Internal)?,
        purpose: slot.purpose,
        generation: slot.generation,
        public_key: slot.public_key,
    })
}
