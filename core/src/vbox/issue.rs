//! ISSUE INDICIUM and RESUME: seed Fig. 4, steps 200–265, in one command.
//!
//! Command data: `slot 4 | mailer ID 16 | record length 2 | record | siblings (depth × 32) |
//! indicium request` (the PSD's request layout, [`IndiciumRequest`]).
//! Response: `new root 32 | record length 2 | the new sealed record | transaction record
//! 219 | indicium` (the PSD's
//! indicium v1: signed bytes ‖ ECDSA signature, device ID = meter ID, verified by
//! [`crate::psd::indicium::verify`] with the meter's public key).
//!
//! Order (each refusal changes nothing): 205/210 the record's MAC (`9A60`), the record's
//! own slot (`9A62`), 220–230 its path against the shard root (`9A61`), the mailer
//! (`9A63`), the meter's status (`6985`); a retry of the record's last transaction ID
//! answers the same indicium again, free; then the date against the platform's clock,
//! 235 the meter's key unwrapped, 240 AR+, DR−, pieces+ and the update counter+ with
//! checked arithmetic, 255 the indicium signed, 260 the record re-MACed, 245/250 the new
//! root **committed** with the old root kept as the previous one, 265 the answer.
//!
//! RESUME (`80 46 40 00`) takes the same data after a crash between the box's commit and the
//! database's: the old record proves the *previous* root, the request's hash is the shard's
//! last, and the same computation (CMAC, RFC 6979 and the KDF are deterministic; the
//! clock is not consulted) gives the same bytes, which must lead to the root committed.
//! Nothing is written and nothing is debited a second time.

use alloc::vec::Vec;

use crate::card::Ctx;
use crate::crypto::sha256;
use crate::psd::indicium::{IndiciumData, IndiciumRequest};
use crate::psd::{MAX_DAYS_AHEAD, MAX_DAYS_BEHIND};
use crate::status::Status;
use crate::types::Amount;
use crate::wire::{Malformed, Reader, Writer};

use super::merkle::{self, parse_siblings, Hash};
use super::record::{LastIndicium, MeterRecord, MAILER_ID_LEN, STATUS_ACTIVE};
use super::state::{BoxConfig, ShardState};
use super::{ins, request_hash, txn, VboxApplet};

/// ISSUE INDICIUM command data.
pub fn issue_data(
    slot: u32,
    mailer: &[u8; MAILER_ID_LEN],
    record: &[u8],
    proof: &[u8],
    request: &IndiciumRequest,
) -> Vec<u8> {
    let mut d = Vec::with_capacity(22 + record.len() + proof.len() + 48);
    d.put_u32(slot);
    d.extend_from_slice(mailer);
    d.put_u16(u16::try_from(record.len()).unwrap_or(u16::MAX));
    d.extend_from_slice(record);
    d.extend_from_slice(proof);
    d.extend_from_slice(&request.encode());
    d
}

/// The answer of every command that changes a shard: `new root 32 | record length 2 |
/// record | transaction record 219 | indicium` (the indicium only for ISSUE INDICIUM).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssueReply {
    /// The shard's root after the command.
    pub root: Hash,
    /// The new sealed record (for the database).
    pub record: Vec<u8>,
    /// The box-signed transaction record ([`txn::TransactionRecord::verify`]).
    pub transaction: Vec<u8>,
    /// The indicium: signed bytes ‖ signature (empty for CREATE METER and REFILL).
    pub indicium: Vec<u8>,
}

impl IssueReply {
    /// Parses the response data.
    pub fn decode(bytes: &[u8]) -> Result<Self, Malformed> {
        let mut r = Reader::new(bytes);
        let root = r.array()?;
        let n = r.u16()?;
        let record = r.take(usize::from(n))?.to_vec();
        let transaction = r.take(txn::TXN_RECORD_LEN)?.to_vec();
        Ok(IssueReply {
            root,
            record,
            transaction,
            indicium: r.remaining().to_vec(),
        })
    }
}

/// The part every record command starts with: `slot 4 | mailer ID 16 | record length 2 |
/// record | siblings (depth × 32)`, followed by the command's own message.
pub(super) struct RecordCommand<'a> {
    pub(super) slot: u32,
    pub(super) mailer: [u8; MAILER_ID_LEN],
    pub(super) record: &'a [u8],
    pub(super) siblings: Vec<Hash>,
    /// The command's own message (indicium request, refill message).
    pub(super) rest: &'a [u8],
}

pub(super) fn parse_record_command(data: &[u8], depth: u8) -> Result<RecordCommand<'_>, Status> {
    let mut r = Reader::new(data);
    let slot = r.u32()?;
    let mailer = r.array()?;
    let n = r.u16()?;
    let record = r.take(usize::from(n))?;
    let siblings =
        parse_siblings(r.take(usize::from(depth) * 32)?, depth).ok_or(Status::WrongLength)?;
    Ok(RecordCommand {
        slot,
        mailer,
        record,
        siblings,
        rest: r.remaining(),
    })
}

/// A record that passed the box's checks, with where it lives.
pub(super) struct Checked {
    pub(super) rec: MeterRecord,
    pub(super) shard_index: u16,
    pub(super) index: u32,
    pub(super) shard: ShardState,
    /// The root the record proved (the shard's, or for RESUME the previous one).
    pub(super) root: Hash,
    /// SHA-256(INS ‖ data).
    pub(super) request: Hash,
}

impl VboxApplet {
    /// Steps 205–230 for any record command: MAC (`9A60`), own slot (`9A62`), path
    /// (`9A61`, or `9A64` for RESUME), mailer (`9A63`), status (`6985`).
    pub(super) fn check_record(
        &self,
        ctx: &Ctx<'_>,
        cfg: &BoxConfig,
        cmd: &RecordCommand<'_>,
        ins: u8,
        data: &[u8],
        resume: bool,
    ) -> Result<Checked, Status> {
        let (shard_index, index) = cfg.locate(cmd.slot)?;
        let rec = match MeterRecord::open(cmd.record, &cfg.keys.rec) {
            Ok(r) => r,
            Err(None) => return Err(Status::RecordUnauthentic),
            Err(Some(_)) => return Err(Status::Internal),
        };
        if rec.slot != cmd.slot {
            return Err(Status::RecordWrongSlot);
        }
        let shard = self.shard(ctx, shard_index)?;
        let request = request_hash(ins, data);
        let leaf = merkle::leaf_hash(cmd.record);
        let root = Self::check_path(
            &shard,
            &leaf,
            index,
            &cmd.siblings,
            resume.then_some(&request),
        )?;
        if rec.mailer != cmd.mailer {
            return Err(Status::RecordNotOwned);
        }
        if rec.status != STATUS_ACTIVE {
            return Err(Status::ConditionsNotSatisfied);
        }
        Ok(Checked {
            rec,
            shard_index,
            index,
            shard,
            root,
            request,
        })
    }
}

/// The indicium a record and a request give (after the debit: `rec` holds the registers
/// the indicium shows).
pub(super) fn indicium_data(rec: &MeterRecord, req: &IndiciumRequest) -> IndiciumData {
    IndiciumData {
        key_id: crate::crypto::key_id(&rec.public_key),
        device: rec.meter,
        license: rec.license,
        ar: rec.ar,
        dr: rec.dr,
        pieces: rec.pieces,
        postage: req.postage,
        date: req.date,
        rate: req.rate,
        origin: req.origin,
        destination: req.destination,
    }
}

/// The request's date against the platform's clock (not consulted by RESUME, whose re-run
/// must not depend on the day it runs).
pub(super) fn check_date(ctx: &Ctx<'_>, req: &IndiciumRequest) -> Result<(), Status> {
    if let Some(today) = ctx.platform.today() {
        let (day, today) = (req.date.day_number(), today.day_number());
        if day > today.saturating_add(MAX_DAYS_AHEAD) {
            return Err(Status::DateTooFarAhead);
        }
        if day < today.saturating_sub(MAX_DAYS_BEHIND) {
            return Err(Status::DateBeforeLastUsed);
        }
    }
    Ok(())
}

/// 240: the accounting, a pure function of the record and the request (RESUME re-runs it).
pub(super) fn debit(rec: &MeterRecord, req: &IndiciumRequest) -> Result<MeterRecord, Status> {
    if req.postage == Amount::ZERO {
        return Err(Status::WrongData);
    }
    if req.origin != rec.origin {
        return Err(Status::OriginMismatch);
    }
    if req.postage > rec.max_postage {
        return Err(Status::PostageAboveLimit);
    }
    if rec.last_date.is_some_and(|last| req.date < last) {
        return Err(Status::DateBeforeLastUsed);
    }
    let dr = rec
        .dr
        .checked_sub(req.postage)
        .ok_or(Status::InsufficientFunds)?;
    let ar = rec
        .ar
        .checked_add(req.postage)
        .ok_or(Status::CounterOverflow)?;
    let pieces = rec.pieces.checked_next().ok_or(Status::CounterOverflow)?;
    let update_counter = rec
        .update_counter
        .checked_add(1)
        .ok_or(Status::CounterOverflow)?;
    let mut next = MeterRecord {
        ar,
        dr,
        pieces,
        update_counter,
        last_date: Some(req.date),
        ..rec.clone()
    };
    let payload = indicium_data(&next, req).encode();
    next.last = Some(LastIndicium {
        transaction: req.transaction,
        dr: next.dr,
        digest: sha256(&payload),
    });
    Ok(next)
}

impl VboxApplet {
    /// ISSUE INDICIUM (80 40 00 00), and its RESUME (80 46 40 00).
    pub(super) fn issue_indicium(
        &mut self,
        ctx: &mut Ctx<'_>,
        data: &[u8],
        resume: bool,
        reply: &mut Vec<u8>,
    ) -> Result<(), Status> {
        let cfg: BoxConfig = self.config()?.clone();
        let cmd = parse_record_command(data, cfg.depth)?;
        let req = IndiciumRequest::decode(cmd.rest)?;
        let Checked {
            rec,
            shard_index,
            index,
            shard,
            root,
            request,
        } = self.check_record(ctx, &cfg, &cmd, ins::ISSUE_INDICIUM, data, resume)?;
        let key = cfg
            .keys
            .unwrap_key(rec.meter, &rec.wrapped_key)
            .ok_or(Status::Internal)?;

        // A retry of the last transaction: the same indicium, free, nothing written.
        if let Some(last) = rec
            .last
            .filter(|l| l.transaction == req.transaction && !resume)
        {
            let then = MeterRecord {
                dr: last.dr,
                ..rec.clone()
            };
            let payload = indicium_data(&then, &req).encode();
            if sha256(&payload) != last.digest {
                return Err(Status::TransactionIdReused);
            }
            Self::answer(
                &cfg,
                shard_index,
                shard.sequence,
                txn::KIND_REPRINT,
                &rec,
                cmd.record,
                Amount::ZERO,
                last.digest,
                (root, root),
                reply,
            )?;
            reply.extend_from_slice(&payload);
            reply.extend_from_slice(&key.sign(&payload));
            return Ok(());
        }

        if !resume {
            check_date(ctx, &req)?;
        }
        let next = debit(&rec, &req)?;
        let payload = indicium_data(&next, &req).encode();
        let signature = key.sign(&payload);
        let sealed = next.seal(&cfg.keys.rec);
        let new_root = merkle::root_from(&merkle::leaf_hash(&sealed), index, &cmd.siblings);
        // Commit before a byte of the answer exists.
        let sequence = Self::next_sequence(&shard, resume)?;
        Self::finish_root(ctx, shard_index, &shard, new_root, request, resume)?;
        Self::answer(
            &cfg,
            shard_index,
            sequence,
            txn::KIND_ISSUE,
            &next,
            &sealed,
            req.postage,
            sha256(&payload),
            (root, new_root),
            reply,
        )?;
        reply.extend_from_slice(&payload);
        reply.extend_from_slice(&signature);
        Ok(())
    }
}
