//! ISSUE BATCH (`80 42 00 00`): up to [`MAX_BATCH`] pieces for one meter in one command.
//! The record's MAC and its Merkle path are checked once; the pieces are debited one after
//! the other with the same checked arithmetic as ISSUE INDICIUM (so the sum must be covered
//! and every piece must be within the limits, else the whole batch is refused and nothing is
//! written); each piece gets today's indicium and its own transaction record of kind
//! `02` (issue), chained through the intermediate roots; one new root is committed.
//!
//! The transaction record format does not change: the auditor replays a batch as its N
//! issue records. The shard's sequence moves on by N, so READ SHARD still names the last
//! record. The intermediate records (after piece 1, 2, ...) are sealed to compute the
//! intermediate roots the chain needs; only the last one is answered for the database.
//!
//! RESUME (`80 46 42 00`) takes the same data after a crash between the box's commit and the
//! database's and answers the identical bytes (deterministic: CMAC, RFC 6979, no clock).

use alloc::vec::Vec;

use crate::card::Ctx;
use crate::crypto::sha256;
use crate::psd::indicium::IndiciumRequest;
use crate::status::Status;
use crate::wire::{Malformed, Reader, Writer};

use super::issue::{check_date, debit, indicium_data, parse_record_command, Checked};
use super::merkle::{self, Hash};
use super::record::{MeterRecord, MAILER_ID_LEN};
use super::state::BoxConfig;
use super::txn::{self, TransactionRecord};
use super::{ins, VboxApplet};

/// Most pieces in one ISSUE BATCH. The answer is then at most 32 + 2 + 284 + 1 + 16 ×
/// (219 + 2 + 136) = 6,031 bytes (9-digit postal codes), within one extended APDU and
/// below the card layer's 8,192-byte chain limit.
pub const MAX_BATCH: usize = 16;

/// ISSUE BATCH command data: the record command prefix ‖ count (1) ‖ per piece: request
/// length (1) ‖ indicium request.
pub fn batch_data(
    slot: u32,
    mailer: &[u8; MAILER_ID_LEN],
    record: &[u8],
    proof: &[u8],
    requests: &[IndiciumRequest],
) -> Vec<u8> {
    let mut d = Vec::with_capacity(23 + record.len() + proof.len() + 49 * requests.len());
    d.put_u32(slot);
    d.extend_from_slice(mailer);
    d.put_u16(u16::try_from(record.len()).unwrap_or(u16::MAX));
    d.extend_from_slice(record);
    d.extend_from_slice(proof);
    d.put_u8(u8::try_from(requests.len()).unwrap_or(u8::MAX));
    for r in requests {
        let e = r.encode();
        d.put_u8(u8::try_from(e.len()).unwrap_or(u8::MAX));
        d.extend_from_slice(&e);
    }
    d
}

/// One piece of a batch's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchPiece {
    /// Its box-signed transaction record (kind `02`).
    pub transaction: Vec<u8>,
    /// Its indicium: signed bytes ‖ signature.
    pub indicium: Vec<u8>,
}

/// ISSUE BATCH's answer: `new root 32 | record length 2 | record | count 1 | per piece:
/// transaction record 219 | indicium length 2 | indicium`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchReply {
    /// The shard's root after the batch.
    pub root: Hash,
    /// The new sealed record (after the last piece).
    pub record: Vec<u8>,
    /// The pieces, in the order of the requests.
    pub pieces: Vec<BatchPiece>,
}

impl BatchReply {
    /// Parses the response data.
    pub fn decode(bytes: &[u8]) -> Result<Self, Malformed> {
        let mut r = Reader::new(bytes);
        let root = r.array()?;
        let n = r.u16()?;
        let record = r.take(usize::from(n))?.to_vec();
        let count = r.u8()?;
        let mut pieces = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let transaction = r.take(txn::TXN_RECORD_LEN)?.to_vec();
            let n = r.u16()?;
            let indicium = r.take(usize::from(n))?.to_vec();
            pieces.push(BatchPiece {
                transaction,
                indicium,
            });
        }
        r.finish()?;
        Ok(BatchReply {
            root,
            record,
            pieces,
        })
    }
}

/// The requests after the prefix: 1 to [`MAX_BATCH`] (`6A80` otherwise), each well formed.
fn parse_requests(rest: &[u8]) -> Result<Vec<IndiciumRequest>, Status> {
    let mut r = Reader::new(rest);
    let count = usize::from(r.u8()?);
    if count == 0 || count > MAX_BATCH {
        return Err(Status::WrongData);
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let n = r.u8()?;
        out.push(IndiciumRequest::decode(r.take(usize::from(n))?)?);
    }
    r.finish()?;
    Ok(out)
}

/// The indicium requests of ISSUE BATCH data (for the data center, which books each piece
/// under its request), or `None` if the data does not parse for a box of `depth`.
pub fn batch_requests(data: &[u8], depth: u8) -> Option<Vec<IndiciumRequest>> {
    parse_requests(parse_record_command(data, depth).ok()?.rest).ok()
}

impl VboxApplet {
    /// ISSUE BATCH (80 42 00 00), and its RESUME (80 46 42 00).
    pub(super) fn issue_batch(
        &mut self,
        ctx: &mut Ctx<'_>,
        data: &[u8],
        resume: bool,
        reply: &mut Vec<u8>,
    ) -> Result<(), Status> {
        let cfg: BoxConfig = self.config()?.clone();
        let cmd = parse_record_command(data, cfg.depth)?;
        let reqs = parse_requests(cmd.rest)?;
        let Checked {
            rec,
            shard_index,
            index,
            shard,
            root,
            request,
        } = self.check_record(ctx, &cfg, &cmd, ins::ISSUE_BATCH, data, resume)?;
        // One transaction ID, one piece: none repeated in the batch, none the record's last
        // (a batch is never a reprint; the data center answers those from its database).
        for (i, r) in reqs.iter().enumerate() {
            if rec.last.is_some_and(|l| l.transaction == r.transaction)
                || reqs[..i].iter().any(|p| p.transaction == r.transaction)
            {
                return Err(Status::TransactionIdReused);
            }
            if !resume {
                check_date(ctx, r)?;
            }
        }
        // 240 for every piece, before anything is signed: one refusal refuses the batch.
        let mut records: Vec<MeterRecord> = Vec::with_capacity(reqs.len());
        for r in &reqs {
            let next = debit(records.last().unwrap_or(&rec), r)?;
            records.push(next);
        }
        let key = cfg
            .keys
            .unwrap_key(rec.meter, &rec.wrapped_key)
            .ok_or(Status::Internal)?;
        let n = u64::try_from(reqs.len()).map_err(|_| Status::Internal)?;
        // The first piece's sequence: the next one, or for RESUME the one committed then.
        let base = if resume {
            shard
                .sequence
                .checked_sub(n)
                .ok_or(Status::NothingToResume)?
        } else {
            shard.sequence
        };
        let mut pieces = Vec::with_capacity(reqs.len());
        let mut before = root;
        let mut sealed = Vec::new();
        for (k, (next, r)) in (1u64..).zip(records.iter().zip(&reqs)) {
            let payload = indicium_data(next, r).encode();
            let signature = key.sign(&payload);
            sealed = next.seal(&cfg.keys.rec);
            let after = merkle::root_from(&merkle::leaf_hash(&sealed), index, &cmd.siblings);
            let t = TransactionRecord {
                box_id: cfg.box_id,
                shard: shard_index,
                sequence: base.checked_add(k).ok_or(Status::CounterOverflow)?,
                kind: txn::KIND_ISSUE,
                meter: next.meter,
                slot: next.slot,
                amount: r.postage,
                ar: next.ar,
                dr: next.dr,
                pieces: next.pieces,
                digest: sha256(&payload),
                root_before: before,
                root_after: after,
            };
            let mut indicium = payload;
            indicium.extend_from_slice(&signature);
            pieces.push((t.sign(&cfg.txn_key), indicium));
            before = after;
        }
        let new_root = before;
        // Commit before a byte of the answer exists (RESUME: the root committed then).
        if resume {
            if new_root != shard.root {
                return Err(Status::NothingToResume);
            }
        } else {
            Self::commit_root(ctx, shard_index, &shard, new_root, request, n)?;
        }
        reply.extend_from_slice(&new_root);
        reply.put_u16(u16::try_from(sealed.len()).map_err(|_| Status::Internal)?);
        reply.extend_from_slice(&sealed);
        reply.put_u8(u8::try_from(pieces.len()).map_err(|_| Status::Internal)?);
        for (t, indicium) in pieces {
            reply.extend_from_slice(&t);
            reply.put_u16(u16::try_from(indicium.len()).map_err(|_| Status::Internal)?);
            reply.extend_from_slice(&indicium);
        }
        Ok(())
    }
}
