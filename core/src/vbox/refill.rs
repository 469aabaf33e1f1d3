//! REFILL: the key management system's signed refill message, the PSD's format unchanged
//! ([`RefillCombination`], `docs/apdu.md` §4.6), applied to a meter record.
//!
//! Command data: `slot 4 | mailer ID 16 | record length 2 | record | siblings | refill
//! message 106`. Response: `new root 32 | record length 2 | the new sealed record |
//! transaction record` ([`super::txn`]).
//!
//! After the record checks every record command shares (MAC, slot, path, mailer, status;
//! [`super::issue`]), the message's signature (`6982`), its device = the meter (`9A10`),
//! its license (`9A11`), its refill count and control sum against the record's (behind:
//! `9A12` replayed; otherwise different: `9A13` stale), the maximum DR (`9A14`). The credit
//! moves the refill count on, so the same message is a replay for ever after; a void
//! (amount zero) credits nothing and moves it on too. RESUME `80 46 52 00` re-runs it.

use alloc::vec::Vec;

use crate::card::Ctx;
use crate::psd::refill::RefillCombination;
use crate::status::Status;

use super::issue::{parse_record_command, Checked};
use super::merkle;
use super::record::MeterRecord;
use super::state::BoxConfig;
use super::{ins, txn, VboxApplet};

/// The record a refill combination leaves (a pure function, re-run by RESUME).
fn credit(rec: &MeterRecord, c: &RefillCombination) -> Result<MeterRecord, Status> {
    if c.device != rec.meter {
        return Err(Status::WrongDevice);
    }
    if c.license != rec.license {
        return Err(Status::RefillWrongLicense);
    }
    if c.refills < rec.refills {
        return Err(Status::RefillReplayed);
    }
    if c.refills != rec.refills || c.control_sum != rec.control_sum {
        return Err(Status::RefillStale);
    }
    let dr = rec
        .dr
        .checked_add(c.amount)
        .ok_or(Status::CounterOverflow)?;
    if dr > rec.max_dr {
        return Err(Status::RefillAboveLimit);
    }
    Ok(MeterRecord {
        dr,
        control_sum: rec
            .control_sum
            .checked_add(c.amount)
            .ok_or(Status::CounterOverflow)?,
        refills: rec.refills.checked_next().ok_or(Status::CounterOverflow)?,
        update_counter: rec
            .update_counter
            .checked_add(1)
            .ok_or(Status::CounterOverflow)?,
        ..rec.clone()
    })
}

impl VboxApplet {
    /// REFILL (80 52 00 00), and its RESUME (80 46 52 00).
    pub(super) fn refill(
        &mut self,
        ctx: &mut Ctx<'_>,
        data: &[u8],
        resume: bool,
        reply: &mut Vec<u8>,
    ) -> Result<(), Status> {
        let cfg: BoxConfig = self.config()?.clone();
        let cmd = parse_record_command(data, cfg.depth)?;
        let Checked {
            rec,
            shard_index,
            index,
            shard,
            root,
            request,
        } = self.check_record(ctx, &cfg, &cmd, ins::REFILL, data, resume)?;
        let combination = RefillCombination::open(cmd.rest, &cfg.refill_key)?;
        let next = credit(&rec, &combination)?;
        let sealed = next.seal(&cfg.keys.rec);
        let new_root = merkle::root_from(&merkle::leaf_hash(&sealed), index, &cmd.siblings);
        let sequence = Self::next_sequence(&shard, resume)?;
        Self::finish_root(ctx, shard_index, &shard, new_root, request, resume)?;
        Self::answer(
            &cfg,
            shard_index,
            sequence,
            txn::KIND_REFILL,
            &next,
            &sealed,
            combination.amount,
            [0; 32],
            (root, new_root),
            reply,
        )
    }
}
