//! The transaction record (seed 001, transaction box 42 and Fig. 4): what the box signs for
//! every command that changes a shard, handed out with the command's answer for the data
//! center to append to its ledger.
//!
//! Layout (big-endian, 219 bytes):
//!
//! ```text
//! box ID 8 | shard 2 | sequence 8 | kind 1 | meter ID 8 | slot 4 | amount 8 | AR 8 | DR 8 |
//! pieces 4 | indicium digest 32 | root before 32 | root after 32 ‖ ECDSA P-256 signature 64
//! over "openpsd vbox txn v1" ‖ everything before
//! ```
//!
//! The sequence is the shard's (READ SHARD), and each record's root before is the root after
//! of the shard's record before it: an auditor holding the box's transaction public key
//! finds any record changed (signature), deleted or reordered (a gap in the sequence or a
//! broken chain of roots), without any state beyond what the box keeps already. A reprint
//! (same transaction ID) gets a record of kind [`KIND_REPRINT`] with the root unchanged.

use alloc::vec::Vec;

use crate::crypto::{self, IndiciumKey, SIGNATURE_LEN};
use crate::types::{Amount, DeviceId, PieceCount};
use crate::wire::{Malformed, Reader, Writer};

use super::merkle::Hash;

/// Domain label of the box's transaction signatures.
pub const TXN_LABEL: &[u8] = b"openpsd vbox txn v1";
/// Length of a signed transaction record.
pub const TXN_RECORD_LEN: usize = 155 + SIGNATURE_LEN;
/// CREATE METER.
pub const KIND_CREATE: u8 = 1;
/// ISSUE INDICIUM.
pub const KIND_ISSUE: u8 = 2;
/// REFILL.
pub const KIND_REFILL: u8 = 3;
/// A reprint of the last indicium (nothing charged, nothing written).
pub const KIND_REPRINT: u8 = 4;

/// The fields of a transaction record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransactionRecord {
    /// The box.
    pub box_id: DeviceId,
    /// The shard.
    pub shard: u16,
    /// The shard's sequence after the command.
    pub sequence: u64,
    /// [`KIND_CREATE`], [`KIND_ISSUE`], [`KIND_REFILL`] or [`KIND_REPRINT`].
    pub kind: u8,
    /// The meter.
    pub meter: DeviceId,
    /// Its slot.
    pub slot: u32,
    /// Postage debited or value credited (0 for CREATE and reprints).
    pub amount: Amount,
    /// AR after.
    pub ar: Amount,
    /// DR after.
    pub dr: Amount,
    /// Pieces after.
    pub pieces: PieceCount,
    /// SHA-256 of the indicium's signed bytes (zeros when there is none).
    pub digest: Hash,
    /// The shard root before the command.
    pub root_before: Hash,
    /// The shard root after it.
    pub root_after: Hash,
}

impl TransactionRecord {
    /// The signed bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(TXN_RECORD_LEN);
        w.extend_from_slice(&self.box_id.0);
        w.put_u16(self.shard);
        w.put_u64(self.sequence);
        w.put_u8(self.kind);
        w.extend_from_slice(&self.meter.0);
        w.put_u32(self.slot);
        w.put_u64(self.amount.0);
        w.put_u64(self.ar.0);
        w.put_u64(self.dr.0);
        w.put_u32(self.pieces.0);
        w.extend_from_slice(&self.digest);
        w.extend_from_slice(&self.root_before);
        w.extend_from_slice(&self.root_after);
        w
    }

    /// The record signed by the box's transaction key (deterministic: RFC 6979).
    pub fn sign(&self, key: &IndiciumKey) -> Vec<u8> {
        key.sign_appended(TXN_LABEL, self.encode())
    }

    /// Checks the signature with the box's transaction public key and decodes.
    pub fn verify(bytes: &[u8], public_key: &[u8]) -> Result<Self, Malformed> {
        if bytes.len() != TXN_RECORD_LEN {
            return Err(Malformed::Length);
        }
        let body = crypto::open_appended(public_key, TXN_LABEL, bytes).ok_or(Malformed::Value)?;
        let mut r = Reader::new(body);
        let t = TransactionRecord {
            box_id: DeviceId(r.array()?),
            shard: r.u16()?,
            sequence: r.u64()?,
            kind: r.u8()?,
            meter: DeviceId(r.array()?),
            slot: r.u32()?,
            amount: Amount(r.u64()?),
            ar: Amount(r.u64()?),
            dr: Amount(r.u64()?),
            pieces: PieceCount(r.u32()?),
            digest: r.array()?,
            root_before: r.array()?,
            root_after: r.array()?,
        };
        r.finish()?;
        Ok(t)
    }
}
