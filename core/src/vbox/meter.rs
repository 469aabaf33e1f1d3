//! CREATE METER: a new logical meter at an empty slot, authorized by the vendor's grant.
//!
//! Grant layout (vendor-signed, ECDSA P-256 / SHA-256 over [`GRANT_LABEL`] ‖ fields):
//!
//! ```text
//! box ID 8 | meter ID 8 | slot 4 | mailer ID 16 | license 4 | origin 1+n |
//! max postage 8 | max DR 8 ‖ signature 64
//! ```
//!
//! Command data: grant ‖ the empty slot's siblings (depth × 32). The grant names the box
//! and the slot, so it creates one meter once: replayed at the same slot the slot is no
//! longer empty (`9A61`), elsewhere the signature does not cover the slot (`6982`). The
//! registers start at zero; the indicium key is made in the box
//! ([`super::keys::BoxKeys::meter_indicium_key`]) and leaves it only wrapped.
//! Response: new root 32 ‖ record length 2 ‖ the sealed record ‖ the transaction record
//! ([`super::txn`]).

use alloc::vec::Vec;

use crate::card::Ctx;
use crate::crypto::{self, SIGNATURE_LEN};
use crate::status::Status;
use crate::types::{Amount, DeviceId, LicenseId, PieceCount, PostalCode, RefillCount};
use crate::wire::{Malformed, Reader, Writer};

use super::merkle::{self, parse_siblings};
use super::record::{MeterRecord, MAILER_ID_LEN, STATUS_ACTIVE};
use super::{ins, request_hash, txn, VboxApplet};

/// Domain label of a grant's signature.
pub const GRANT_LABEL: &[u8] = b"openpsd vbox grant v1";

/// What the vendor grants: one meter at one slot of one box.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeterGrant {
    /// The box that may create it.
    pub box_id: DeviceId,
    /// The meter ID (its indicia's device ID).
    pub meter: DeviceId,
    /// The slot.
    pub slot: u32,
    /// The owner.
    pub mailer: [u8; MAILER_ID_LEN],
    /// The postal license.
    pub license: LicenseId,
    /// Its origin postal code.
    pub origin: PostalCode,
    /// Per-piece limit.
    pub max_postage: Amount,
    /// Most the descending register may hold.
    pub max_dr: Amount,
}

impl MeterGrant {
    /// The signed fields.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(72);
        w.extend_from_slice(&self.box_id.0);
        w.extend_from_slice(&self.meter.0);
        w.put_u32(self.slot);
        w.extend_from_slice(&self.mailer);
        w.put_u32(self.license.0);
        self.origin.write(&mut w);
        w.put_u64(self.max_postage.0);
        w.put_u64(self.max_dr.0);
        w
    }

    /// Reads the fields from `r` (the signature follows them).
    pub fn read(r: &mut Reader<'_>) -> Result<Self, Malformed> {
        Ok(MeterGrant {
            box_id: DeviceId(r.array()?),
            meter: DeviceId(r.array()?),
            slot: r.u32()?,
            mailer: r.array()?,
            license: LicenseId(r.u32()?),
            origin: PostalCode::read(r)?,
            max_postage: Amount(r.u64()?),
            max_dr: Amount(r.u64()?),
        })
    }

    /// The vendor's signed grant: fields ‖ signature.
    pub fn sign(&self, vendor: &crypto::IndiciumKey) -> Vec<u8> {
        let mut w = self.encode();
        let sig = vendor.sign_labelled(GRANT_LABEL, &w);
        w.extend_from_slice(&sig);
        w
    }
}

/// CREATE METER command data: the signed grant ‖ the slot's siblings.
pub fn create_meter_data(signed_grant: &[u8], proof: &[u8]) -> Vec<u8> {
    let mut d = signed_grant.to_vec();
    d.extend_from_slice(proof);
    d
}

impl VboxApplet {
    /// CREATE METER (80 20 00 00), and its RESUME (80 46 20 00).
    pub(super) fn create_meter(
        &mut self,
        ctx: &mut Ctx<'_>,
        data: &[u8],
        resume: bool,
        reply: &mut Vec<u8>,
    ) -> Result<(), Status> {
        let cfg = self.config()?.clone();
        let mut r = Reader::new(data);
        let grant = MeterGrant::read(&mut r)?;
        let signature = r.take(SIGNATURE_LEN)?;
        let proof = r.remaining();
        let siblings = parse_siblings(proof, cfg.depth).ok_or(Status::WrongLength)?;
        if grant.max_postage == Amount::ZERO || grant.max_dr < grant.max_postage {
            return Err(Status::WrongData);
        }
        if !crypto::verify_labelled(&cfg.vendor_key, GRANT_LABEL, &grant.encode(), signature) {
            return Err(Status::SecurityStatusNotSatisfied);
        }
        if grant.box_id != cfg.box_id {
            return Err(Status::WrongDevice);
        }
        let (shard_index, index) = cfg.locate(grant.slot)?;
        let shard = self.shard(ctx, shard_index)?;
        let request = request_hash(ins::CREATE_METER, data);
        // The slot must be empty: the empty leaf proves the root.
        let root_before = Self::check_path(
            &shard,
            &self.empty.at(0),
            index,
            &siblings,
            resume.then_some(&request),
        )?;

        let key = cfg
            .keys
            .meter_indicium_key(grant.meter, grant.slot, &root_before);
        let record = MeterRecord {
            meter: grant.meter,
            slot: grant.slot,
            mailer: grant.mailer,
            license: grant.license,
            origin: grant.origin,
            ar: Amount::ZERO,
            dr: Amount::ZERO,
            control_sum: Amount::ZERO,
            pieces: PieceCount(0),
            refills: RefillCount(0),
            update_counter: 0,
            last: None,
            last_date: None,
            max_postage: grant.max_postage,
            max_dr: grant.max_dr,
            public_key: key.public_key(),
            wrapped_key: cfg
                .keys
                .wrap_key(grant.meter, &key)
                .ok_or(Status::Internal)?,
            status: STATUS_ACTIVE,
        };
        let sealed = record.seal(&cfg.keys.rec);
        let new_root = merkle::root_from(&merkle::leaf_hash(&sealed), index, &siblings);
        let sequence = Self::next_sequence(&shard, resume)?;
        Self::finish_root(ctx, shard_index, &shard, new_root, request, resume)?;
        Self::answer(
            &cfg,
            shard_index,
            sequence,
            txn::KIND_CREATE,
            &record,
            &sealed,
            Amount::ZERO,
            [0; 32],
            (root_before, new_root),
            reply,
        )
    }
}
