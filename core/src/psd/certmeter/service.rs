//! What every paid service of the certificate meter shares (seed 004; the order of
//! issue 15): the service's time ([`PsdApplet::service_time`]), the retry of the last
//! service ([`CertMeterState::retry`]), and the one commit that debits the fee and keeps the
//! output together ([`PsdApplet::commit_service`]).
//!
//! The order is always: every check, then one commit (the charged register set and the
//! certificate-meter record holding the output and the transaction ID), then the reply.
//! A power cut before the commit charges nothing and answers nothing; after it, the same
//! transaction ID answers the stored output, charged once.
//!
//! [`PsdApplet::service_time`]: crate::psd::PsdApplet::service_time
//! [`PsdApplet::commit_service`]: crate::psd::PsdApplet::commit_service
//! [`CertMeterState::retry`]: super::state::CertMeterState::retry

use crate::card::Ctx;
use crate::psd::certmeter::state::CertMeterState;
use crate::psd::registers::RegisterSet;
use crate::records::psd as rec;
use crate::status::Status;
use crate::store::{StoreError, Transaction};
use crate::types::Date;

impl crate::psd::PsdApplet {
    /// The time of a timed paid service (a postmark, a signature, a validation): the
    /// host's clock, bounded by the PSD. Never before the last timed service, never
    /// before the day of the last back-office contact (the last accepted audit: the
    /// clock was set back), never after the inspection window that contact opened.
    /// Unix seconds and its day; `6985`-class refusals (`ClockRefused`,
    /// `InspectionOverdue`) otherwise.
    pub(in crate::psd) fn service_time(&self, ctx: &mut Ctx<'_>) -> Result<(u64, Date), Status> {
        let device = self.device()?;
        let p = &self.persistent;
        let now = ctx.platform.now().ok_or(Status::ClockRefused)?;
        if now < p.certmeter.last_time {
            return Err(Status::ClockRefused);
        }
        let date = Date::from_unix_seconds(now).ok_or(Status::ClockRefused)?;
        if p.counters.last_inspection.is_some_and(|last| date < last) {
            return Err(Status::ClockRefused);
        }
        if device.inspection_days > 0 {
            let last = p
                .counters
                .last_inspection
                .ok_or(Status::InspectionOverdue)?;
            if date.day_number()
                > last
                    .day_number()
                    .saturating_add(u32::from(device.inspection_days))
            {
                return Err(Status::InspectionOverdue);
            }
        }
        Ok((now, date))
    }

    /// The one commit of a paid service: register set `i` charged and the next
    /// certificate-meter record (its output, transaction ID and counters) written in one
    /// transaction, then the RAM copies. `forget` says the commit erased a key's scalar:
    /// no older copy of the record may keep it, so the store rewrites its history (the
    /// commit stands whatever that answers, and a store that could not rewrite itself
    /// tries again at its next compaction; power lost while rewriting gives no reply, as
    /// on a chip, and the retry answers).
    pub(in crate::psd) fn commit_service(
        &mut self,
        ctx: &mut Ctx<'_>,
        i: usize,
        next_set: RegisterSet,
        next: CertMeterState,
        forget: bool,
    ) -> Result<(), Status> {
        let mut txn = Transaction::begin(ctx.store);
        txn.write(rec::set(i), next_set.encode());
        txn.write(rec::CERTMETER, next.encode());
        txn.commit()?;
        self.persistent.put_set(i, next_set);
        self.persistent.certmeter = next;
        if forget {
            if let Err(e @ StoreError::PowerLost) = ctx.store.forget_history() {
                return Err(e.into());
            }
        }
        Ok(())
    }
}
