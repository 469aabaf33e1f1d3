//! EXPORT SET (`80 48 P1 slot`, seed 003 Fig. 5, claim 4): a register set leaves the PSD
//! for a file on the host's disk, freeing its slot, in two phases so that a power cut or a
//! lost write never loses the value.
//!
//! - P1 `00` **prepare**: freezes the set (indicia, refills and transfers get `9A34`),
//!   takes the next export epoch (never reused), records the blob's digest as *preparing*
//!   in the outstanding-export table, commits, and answers the blob. Asking again answers
//!   the same bytes.
//! - P1 `01` **commit** (data: the digest), once the host has written and synced the file:
//!   deletes the set and marks the entry *outstanding*. Asking again answers the same.
//! - P1 `02` **cancel**: unfreezes the set; the epoch is spent.
//!
//! The blob ([`Blob`]): the registers in clear (so a host and the back office can show and
//! settle them), the license key sealed with AES-SIV under a key that never leaves this
//! PSD (the clear part is its associated data), and the device key's signature over all
//! of it (so the back office can check a dead PSD's file). Only an outstanding entry with
//! the same license, epoch and digest lets IMPORT SET take it back, once.

use alloc::vec::Vec;

use zeroize::Zeroizing;

use crate::crypto::{self, IndiciumKey, PUBLIC_KEY_LEN, SIGNATURE_LEN};
use crate::psd::registers::{read_last_indicium, write_last_indicium, RegisterSet, SetGrant};
use crate::types::{
    Amount, Date, DeviceId, LicenseId, PieceCount, PostalCode, RefillCount, TransactionId,
};
use crate::wire::{Malformed, Reader, Writer};

use super::siv;
use super::DIGEST_LEN;
#[cfg(feature = "licenses")]
use super::{ExportEntry, ExportState, MAX_OUTSTANDING};

/// The blob's first bytes.
pub const BLOB_TAG: &[u8] = b"openpsd register set v1";
/// The first bytes of a blob whose set paid certificate-meter fees (seed 004): version 1
/// with fees (8) ‖ services (4) after the last indicium. A set that never paid keeps
/// version 1's bytes.
pub const BLOB_TAG_FEES: &[u8] = b"openpsd register set v2";
/// The first bytes of a blob whose last indicium carries its signature: version 2's layout
/// with fees (8) ‖ services (4) always present, then the signature (64). Written for every
/// set whose last indicium was signed by a PSD that keeps signatures (record version 5):
/// with a random nonce from the pool, signing the same bytes again would give other bytes.
pub const BLOB_TAG_SIGNED: &[u8] = b"openpsd register set v3";
/// Label of the device key's signature over the blob.
pub const BLOB_SIGNATURE_LABEL: &[u8] = b"openpsd register set signature v1";

/// An exported register set, as the file holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blob {
    /// The exporting device (only it can import).
    pub device: DeviceId,
    /// The export epoch.
    pub epoch: u64,
    /// The set's registers, grant and last indicium, in clear (no transfer is pending in
    /// an exported set).
    pub set: ClearSet,
    /// AES-SIV of the license key (empty plaintext for a set without a grant) with the
    /// clear part as associated data.
    pub sealed: Vec<u8>,
    /// The device key's signature over everything before it.
    pub signature: [u8; SIGNATURE_LEN],
}

/// What a blob shows in clear.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClearSet {
    /// License.
    pub license: LicenseId,
    /// Origin.
    pub origin: PostalCode,
    /// AR.
    pub ar: Amount,
    /// DR.
    pub dr: Amount,
    /// Control sum (AR + DR).
    pub control_sum: Amount,
    /// Part of AR moved to purses.
    pub transferred: Amount,
    /// Pieces franked.
    pub pieces: PieceCount,
    /// Refills applied.
    pub refills: RefillCount,
    /// Last refill's combination.
    pub last_combination: [u8; 8],
    /// The grant: serial, validity and the license's public key.
    pub grant: Option<ClearGrant>,
    /// The last indicium issued on the set and its transaction (public: it was printed),
    /// so a host that lost that reply still gets the same indicium after an import, not a
    /// second debit.
    pub last_indicium: Option<(TransactionId, Vec<u8>)>,
    /// The part of AR paid as certificate-meter fees (version 2 blobs).
    pub fees: Amount,
    /// Paid services counted (version 2 blobs).
    pub services: PieceCount,
    /// The last indicium's signature (version 3 blobs), so an import answers a retry with
    /// the very bytes the exporting PSD answered.
    pub last_signature: Option<[u8; SIGNATURE_LEN]>,
}

/// A blob's layout version, decided by what the set holds (one encoding per set).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// Registers, grant, last indicium.
    V1,
    /// And fees ‖ services (a set that paid).
    V2,
    /// And fees ‖ services ‖ the last indicium's signature.
    V3,
}

/// The public part of a set's grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClearGrant {
    /// Certificate serial.
    pub serial: Vec<u8>,
    /// First valid date.
    pub not_before: Date,
    /// Last valid date.
    pub not_after: Date,
    /// The license's public key.
    pub public_key: [u8; PUBLIC_KEY_LEN],
}

impl ClearSet {
    fn of(set: &RegisterSet) -> ClearSet {
        ClearSet {
            license: set.license,
            origin: set.origin,
            ar: set.ar,
            dr: set.dr,
            control_sum: set.control_sum,
            transferred: set.transferred,
            pieces: set.pieces,
            refills: set.refills,
            last_combination: set.last_combination,
            grant: set.grant.as_ref().map(|g| ClearGrant {
                serial: g.serial.clone(),
                not_before: g.not_before,
                not_after: g.not_after,
                public_key: g.public_key(),
            }),
            last_indicium: set.last_indicium.clone(),
            fees: set.fees,
            services: set.services,
            // A signature without its indicium is never written (registers.rs, version 5).
            last_signature: set.last_indicium.as_ref().and(set.last_signature),
        }
    }

    /// Whether the set paid a fee or counted a service.
    fn paid(&self) -> bool {
        self.fees != Amount::ZERO || self.services != PieceCount(0)
    }

    fn layout(&self) -> Layout {
        match (self.last_signature.is_some(), self.paid()) {
            (true, _) => Layout::V3,
            (false, true) => Layout::V2,
            (false, false) => Layout::V1,
        }
    }

    fn tag(&self) -> &'static [u8] {
        match self.layout() {
            Layout::V1 => BLOB_TAG,
            Layout::V2 => BLOB_TAG_FEES,
            Layout::V3 => BLOB_TAG_SIGNED,
        }
    }

    fn write(&self, w: &mut Vec<u8>) {
        w.put_u32(self.license.0);
        self.origin.write(w);
        w.put_u64(self.ar.0);
        w.put_u64(self.dr.0);
        w.put_u64(self.control_sum.0);
        w.put_u64(self.transferred.0);
        w.put_u32(self.pieces.0);
        w.put_u32(self.refills.0);
        w.extend_from_slice(&self.last_combination);
        match &self.grant {
            None => w.put_u8(0),
            Some(g) => {
                w.put_u8(1);
                w.put_short_bytes(&g.serial);
                g.not_before.write(w);
                g.not_after.write(w);
                w.extend_from_slice(&g.public_key);
            }
        }
        write_last_indicium(w, &self.last_indicium);
        if self.layout() != Layout::V1 {
            w.put_u64(self.fees.0);
            w.put_u32(self.services.0);
        }
        if let Some(signature) = &self.last_signature {
            w.extend_from_slice(signature);
        }
    }

    fn read(r: &mut Reader<'_>, layout: Layout) -> Result<ClearSet, Malformed> {
        let mut set = ClearSet {
            license: LicenseId(r.u32()?),
            origin: PostalCode::read(r)?,
            ar: Amount(r.u64()?),
            dr: Amount(r.u64()?),
            control_sum: Amount(r.u64()?),
            transferred: Amount(r.u64()?),
            pieces: PieceCount(r.u32()?),
            refills: RefillCount(r.u32()?),
            last_combination: r.array()?,
            grant: match r.u8()? {
                0 => None,
                1 => Some(ClearGrant {
                    serial: r.short_bytes()?.to_vec(),
                    not_before: Date::read(r)?,
                    not_after: Date::read(r)?,
                    public_key: r.array()?,
                }),
                _ => return Err(Malformed::Value),
            },
            last_indicium: read_last_indicium(r)?,
            fees: Amount::ZERO,
            services: PieceCount(0),
            last_signature: None,
        };
        if layout != Layout::V1 {
            set.fees = Amount(r.u64()?);
            set.services = PieceCount(r.u32()?);
        }
        if layout == Layout::V3 {
            // A signature needs the indicium it signs.
            if set.last_indicium.is_none() {
                return Err(Malformed::Value);
            }
            set.last_signature = Some(r.array()?);
        }
        // One encoding per blob: version 2 only for a set that paid, version 3 only with a
        // signature.
        if set.layout() != layout {
            return Err(Malformed::Value);
        }
        Ok(set)
    }
}

impl Blob {
    /// The clear part: tag ‖ device ‖ epoch ‖ set.
    fn clear_bytes(device: DeviceId, epoch: u64, set: &ClearSet) -> Vec<u8> {
        let mut w = Vec::with_capacity(212);
        w.extend_from_slice(set.tag());
        w.extend_from_slice(&device.0);
        w.put_u64(epoch);
        set.write(&mut w);
        w
    }

    /// The file's bytes: clear part ‖ sealed (length-prefixed) ‖ signature.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Blob::clear_bytes(self.device, self.epoch, &self.set);
        w.put_short_bytes(&self.sealed);
        w.extend_from_slice(&self.signature);
        w
    }

    /// Parses the file's bytes (no check of the seal or the signature).
    pub fn decode(bytes: &[u8]) -> Result<Blob, Malformed> {
        let mut r = Reader::new(bytes);
        // The tags have the same length: the version is the last byte.
        let layout = match r.take(BLOB_TAG.len())? {
            t if t == BLOB_TAG => Layout::V1,
            t if t == BLOB_TAG_FEES => Layout::V2,
            t if t == BLOB_TAG_SIGNED => Layout::V3,
            _ => return Err(Malformed::Value),
        };
        let blob = Blob {
            device: DeviceId(r.array()?),
            epoch: r.u64()?,
            set: ClearSet::read(&mut r, layout)?,
            sealed: r.short_bytes()?.to_vec(),
            signature: r.array()?,
        };
        r.finish()?;
        Ok(blob)
    }

    /// The first [`DIGEST_LEN`] bytes of the file's SHA-256: what the table records.
    pub fn digest_of(bytes: &[u8]) -> [u8; DIGEST_LEN] {
        let h = crypto::sha256(bytes);
        let mut d = [0u8; DIGEST_LEN];
        d.copy_from_slice(&h[..DIGEST_LEN]);
        d
    }

    /// Checks the device's signature (for the back office and hosts; the PSD itself
    /// relies on the seal).
    pub fn verify_signature(bytes: &[u8], device_public_key: &[u8]) -> bool {
        let Some(split) = bytes.len().checked_sub(SIGNATURE_LEN) else {
            return false;
        };
        let (signed, signature) = bytes.split_at(split);
        crypto::verify_labelled(device_public_key, BLOB_SIGNATURE_LABEL, signed, signature)
    }

    /// Seals `set` (epoch `epoch`) for `device`: deterministic (AES-SIV and RFC 6979), so
    /// a repeated prepare answers the same bytes.
    pub fn seal(
        device: DeviceId,
        device_key: &IndiciumKey,
        seal_key: &[u8; 32],
        epoch: u64,
        set: &RegisterSet,
    ) -> Result<Vec<u8>, crate::status::Status> {
        let clear = ClearSet::of(set);
        let ad = Blob::clear_bytes(device, epoch, &clear);
        let secret: Zeroizing<Vec<u8>> = Zeroizing::new(
            set.grant
                .as_ref()
                .map(|g| g.key.secret_bytes().to_vec())
                .unwrap_or_default(),
        );
        // AES-SIV written out in `siv` (the same bytes as the `aes-siv` crate; one AES in
        // the browser module).
        let sealed = siv::seal(seal_key, &[&ad], &secret);
        let mut bytes = ad;
        bytes.put_short_bytes(&sealed);
        let signature = device_key.sign_labelled(BLOB_SIGNATURE_LABEL, &bytes);
        bytes.extend_from_slice(&signature);
        Ok(bytes)
    }

    /// Opens a blob sealed by this PSD: the set it holds, or `None` if the seal fails.
    pub fn open(&self, seal_key: &[u8; 32]) -> Option<RegisterSet> {
        let ad = Blob::clear_bytes(self.device, self.epoch, &self.set);
        let secret = Zeroizing::new(siv::open(seal_key, &[&ad], &self.sealed)?);
        let c = &self.set;
        let grant = match (&c.grant, secret.len()) {
            (None, 0) => None,
            (Some(g), 32) => {
                let key = IndiciumKey::from_bytes(&secret)?;
                if key.public_key() != g.public_key {
                    return None;
                }
                Some(SetGrant {
                    key,
                    serial: g.serial.clone(),
                    not_before: g.not_before,
                    not_after: g.not_after,
                })
            }
            _ => return None,
        };
        let mut set = RegisterSet::new(c.license, c.origin);
        set.ar = c.ar;
        set.dr = c.dr;
        set.control_sum = c.control_sum;
        set.transferred = c.transferred;
        set.pieces = c.pieces;
        set.refills = c.refills;
        set.last_combination = c.last_combination;
        set.last_indicium = c.last_indicium.clone();
        set.last_signature = c.last_signature;
        set.fees = c.fees;
        set.services = c.services;
        set.grant = grant;
        set.is_consistent().then_some(set)
    }
}

#[cfg(feature = "licenses")]
impl crate::psd::PsdApplet {
    /// EXPORT SET (80 48 P1 slot): P1 `00` prepare, `01` commit (data: digest), `02`
    /// cancel.
    pub(in crate::psd) fn export_set(
        &mut self,
        ctx: &mut crate::card::Ctx<'_>,
        phase: u8,
        i: usize,
        data: &[u8],
        reply: &mut Vec<u8>,
    ) -> Result<(), crate::status::Status> {
        match phase {
            0 => self.export_prepare(ctx, i, data, reply),
            1 => self.export_commit(ctx, i, data, reply),
            _ => self.export_cancel(ctx, i, data),
        }
    }

    fn export_prepare(
        &mut self,
        ctx: &mut crate::card::Ctx<'_>,
        i: usize,
        data: &[u8],
        reply: &mut Vec<u8>,
    ) -> Result<(), crate::status::Status> {
        use crate::records::psd as rec;
        use crate::status::Status;

        if !data.is_empty() {
            return Err(Status::WrongLength);
        }
        let p = &self.persistent;
        let device = p.device()?;
        let set = p.set(i)?;
        let licenses = &p.licenses;
        // A repeated prepare answers the same bytes.
        if let Some(e) = licenses
            .exports
            .iter()
            .find(|e| usize::from(e.slot) == i && e.state == ExportState::Preparing)
        {
            let seal_key = licenses.seal_key.as_ref().ok_or(Status::Internal)?;
            let bytes = Blob::seal(device.id, &device.key, seal_key, e.epoch, set)?;
            reply.extend_from_slice(&bytes);
            return Ok(());
        }
        let pending_here = p
            .transfer
            .pending
            .as_ref()
            .is_some_and(|t| usize::from(t.set) == i);
        if set.pending != Amount::ZERO || pending_here {
            return Err(Status::TransferPending);
        }
        if licenses.exports.len() >= MAX_OUTSTANDING {
            return Err(Status::ExportTableFull);
        }
        let epoch = licenses.export_counter;
        // Stuck at the top: never wraps to an epoch already used.
        let next_counter = epoch.checked_add(1).ok_or(Status::CounterOverflow)?;
        let mut next = licenses.clone();
        let seal_key = match &next.seal_key {
            Some(k) => k.clone(),
            None => {
                let mut k = Zeroizing::new([0u8; 32]);
                ctx.platform.fill_random(k.as_mut());
                next.seal_key = Some(k.clone());
                k
            }
        };
        let bytes = Blob::seal(device.id, &device.key, &seal_key, epoch, set)?;
        next.export_counter = next_counter;
        // why: i < MAX_REGISTER_SETS (4).
        #[allow(clippy::cast_possible_truncation)]
        next.exports.push(ExportEntry {
            license: set.license,
            epoch,
            digest: Blob::digest_of(&bytes),
            state: ExportState::Preparing,
            slot: i as u8,
            control_sum: set.control_sum,
            dr: set.dr,
        });
        let mut txn = crate::store::Transaction::begin(ctx.store);
        txn.write(rec::LICENSES, next.encode().to_vec());
        txn.commit()?;
        self.persistent.licenses = next;
        reply.extend_from_slice(&bytes);
        Ok(())
    }

    fn export_commit(
        &mut self,
        ctx: &mut crate::card::Ctx<'_>,
        i: usize,
        data: &[u8],
        reply: &mut Vec<u8>,
    ) -> Result<(), crate::status::Status> {
        use crate::records::psd as rec;
        use crate::status::Status;

        let digest: [u8; DIGEST_LEN] = data.try_into().map_err(|_| Status::WrongLength)?;
        let licenses = &self.persistent.licenses;
        let Some(k) = licenses.exports.iter().position(|e| e.digest == digest) else {
            return Err(Status::ConditionsNotSatisfied);
        };
        let entry = licenses.exports[k];
        if usize::from(entry.slot) != i {
            return Err(Status::WrongData);
        }
        match entry.state {
            ExportState::Preparing => {}
            ExportState::Outstanding => {
                // Committed already: the same answer again.
                reply.put_u64(entry.epoch);
                return Ok(());
            }
            // Given up for a refund: it never becomes outstanding again (its file would
            // import), and the slot may hold another set by now.
            ExportState::Retired => return Err(Status::ConditionsNotSatisfied),
        }
        let mut next = licenses.clone();
        next.exports[k].state = ExportState::Outstanding;
        let mut txn = crate::store::Transaction::begin(ctx.store);
        txn.remove(rec::set(i));
        txn.write(rec::LICENSES, next.encode().to_vec());
        txn.commit()?;
        self.persistent.licenses = next;
        if let Some(slot) = self.persistent.sets.get_mut(i) {
            *slot = None;
        }
        reply.put_u64(entry.epoch);
        Ok(())
    }

    fn export_cancel(
        &mut self,
        ctx: &mut crate::card::Ctx<'_>,
        i: usize,
        data: &[u8],
    ) -> Result<(), crate::status::Status> {
        use crate::records::psd as rec;
        use crate::status::Status;

        if !data.is_empty() {
            return Err(Status::WrongLength);
        }
        let licenses = &self.persistent.licenses;
        let Some(k) = licenses
            .exports
            .iter()
            .position(|e| usize::from(e.slot) == i && e.state == ExportState::Preparing)
        else {
            return Err(Status::ConditionsNotSatisfied);
        };
        let mut next = licenses.clone();
        next.exports.remove(k);
        let mut txn = crate::store::Transaction::begin(ctx.store);
        txn.write(rec::LICENSES, next.encode().to_vec());
        txn.commit()?;
        self.persistent.licenses = next;
        Ok(())
    }
}
