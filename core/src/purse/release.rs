//! RELEASE PARTNER (`80 7E`, issue 18 §1): the issuer's release of the entry a PSD that
//! never comes back holds open in the purse's table of 16, so the purse takes new PSDs
//! again (`9A2C` otherwise), and the purse's account of that entry, MACed under its admin
//! key, as the evidence the issuer needs before it signs the PSD's settlement
//! (`crate::psd::settle`).
//!
//! Releasing does not forget: the entry's closure becomes *unknown*, as if read from a
//! table of before issue 18. While it is listed, the PSD's TRANSFER RESOLVE still reads it
//! exactly; once a new PSD needs its place it is dropped and `forgotten through` rises to
//! its credit, so a PSD that comes back with that transfer still pending gets `9A23`
//! (undecided, settled by the issuer), never a wrong "undone". The rule that decides is
//! the model-checked one of `crate::transfer::resolve`; nothing new is trusted.

// The applet's command is compiled out of the browser's module (its 150 KB gzip budget):
// there, only the message builders and readers below are used.
#![cfg_attr(target_arch = "wasm32", allow(unused_imports))]

use alloc::vec::Vec;

use super::state::{Closure, Paired, PurseState};
use super::PurseApplet;
use crate::card::Ctx;
use crate::crypto::{MacKey, MAC_LEN};
use crate::records::purse as rec;
use crate::status::Status;
use crate::store::Transaction;
use crate::types::{CardId, DeviceId, TransferCount};
use crate::wire::{Malformed, Reader, Writer};

/// Label of RELEASE PARTNER's MAC (the issuer's command).
pub const RELEASE_LABEL: &[u8] = b"openpsd purse release partner";
/// Label of the MAC on RELEASE PARTNER's answer (the card's evidence).
pub const RELEASE_ANSWER_LABEL: &[u8] = b"openpsd purse released partner";
/// Length of RELEASE PARTNER's data: counter (4) ‖ device ID (8) ‖ MAC (16).
pub const RELEASE_DATA_LEN: usize = 4 + 8 + MAC_LEN;

/// What the purse knew of the released PSD: its answer to RELEASE PARTNER.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Released {
    /// The card's transfer count (credits made) now.
    pub card_transfers: TransferCount,
    /// The latest credit of a PSD the table forgot without knowing it closed.
    pub forgotten_through: TransferCount,
    /// The PSD's entry as it stood before the release (`None`: not listed).
    pub entry: Option<Paired>,
}

impl Released {
    /// Layout: card transfers u32 ‖ forgotten through u32 ‖ listed u8 (`00` / `01`) ‖ if
    /// listed: last transfer u32 ‖ count u32 ‖ total u64 ‖ date (4, zero: none) ‖ credited
    /// at u32 ‖ closure u8 (`01` open, `02` closed, `03` unknown).
    pub fn body(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(34);
        w.put_u32(self.card_transfers.0);
        w.put_u32(self.forgotten_through.0);
        match &self.entry {
            None => w.put_u8(0),
            Some(p) => {
                w.put_u8(1);
                w.put_u32(p.last_transfer.0);
                w.put_u32(p.count);
                w.put_u64(p.total.0);
                match p.date {
                    None => w.put_u32(0),
                    Some(d) => d.write(&mut w),
                }
                w.put_u32(p.credited_at.0);
                w.put_u8(p.closure as u8);
            }
        }
        w
    }

    /// Opens the card's answer for the release of `device` with `counter`: checks its MAC
    /// under the card's admin key (what the issuer does before trusting it).
    pub fn open(
        answer: &[u8],
        admin_key: &MacKey,
        card: CardId,
        counter: u32,
        device: DeviceId,
    ) -> Result<Released, Malformed> {
        let split = answer.len().checked_sub(MAC_LEN).ok_or(Malformed::Length)?;
        let (body, tag) = answer.split_at(split);
        let c = counter.to_be_bytes();
        if !admin_key.verify(&[RELEASE_ANSWER_LABEL, &card.0, &c, &device.0, body], tag) {
            return Err(Malformed::Value);
        }
        let mut r = Reader::new(body);
        let card_transfers = TransferCount(r.u32()?);
        let forgotten_through = TransferCount(r.u32()?);
        let entry = match r.u8()? {
            0 => None,
            1 => {
                let last_transfer = TransferCount(r.u32()?);
                let count = r.u32()?;
                let total = crate::types::Amount(r.u64()?);
                let date = if r.remaining().starts_with(&[0, 0, 0, 0]) {
                    r.take(4)?;
                    None
                } else {
                    Some(crate::types::Date::read(&mut r)?)
                };
                let credited_at = TransferCount(r.u32()?);
                let closure = match r.u8()? {
                    1 => Closure::Open,
                    2 => Closure::Closed,
                    3 => Closure::Unknown,
                    _ => return Err(Malformed::Value),
                };
                Some(Paired {
                    device,
                    last_transfer,
                    count,
                    total,
                    date,
                    credited_at,
                    closure,
                })
            }
            _ => return Err(Malformed::Value),
        };
        r.finish()?;
        Ok(Released {
            card_transfers,
            forgotten_through,
            entry,
        })
    }
}

/// RELEASE PARTNER's data and APDU body, made by the issuer with the card's admin key:
/// counter ‖ device ID ‖ CMAC over [`RELEASE_LABEL`] ‖ card ID ‖ counter ‖ device ID.
pub fn release_partner_data(
    admin_key: &MacKey,
    card: CardId,
    counter: u32,
    device: DeviceId,
) -> Vec<u8> {
    let c = counter.to_be_bytes();
    let mut body = Vec::with_capacity(RELEASE_DATA_LEN);
    body.extend_from_slice(&c);
    body.extend_from_slice(&device.0);
    body.extend_from_slice(&admin_key.mac(&[RELEASE_LABEL, &card.0, &c, &device.0]));
    body
}

impl PurseApplet {
    #[cfg(not(target_arch = "wasm32"))]
    /// RELEASE PARTNER (80 7E 00 00): counter ‖ device ID ‖ MAC under the admin key (length
    /// checked at parsing). The PSD's entry, if open, becomes of unknown closure; the
    /// counter is recorded with it in one commit; the answer is the entry as it stood,
    /// MACed. Ends any transfer session (the issuer's command is not part of one).
    pub(super) fn release_partner(
        &mut self,
        ctx: &mut Ctx<'_>,
        data: &[u8],
        reply: &mut Vec<u8>,
    ) -> Result<(), Status> {
        let (counter, rest) = self.check_issuer(RELEASE_LABEL, data)?;
        let device = DeviceId(rest.try_into().map_err(|_| Status::WrongLength)?);
        let c = self.personalized_mut()?;
        let entry = c.paired.get(device).copied();
        let mut paired = c.paired.clone();
        if let Some(p) = paired.entries.iter_mut().find(|p| p.device == device) {
            if p.closure == Closure::Open {
                p.closure = Closure::Unknown;
            }
        }
        let state = PurseState {
            admin_counter: counter,
            ..c.state
        };
        let answer = Released {
            card_transfers: c.state.transfers,
            forgotten_through: c.paired.forgotten_through,
            entry,
        }
        .body();
        let tag = c.id.admin_key.mac(&[
            RELEASE_ANSWER_LABEL,
            &c.id.card.0,
            &counter.to_be_bytes(),
            &device.0,
            &answer,
        ]);
        let mut txn = Transaction::begin(ctx.store);
        txn.write(rec::PAIRED, paired.encode());
        txn.write(rec::STATE, state.encode());
        txn.commit()?;
        c.paired = paired;
        c.state = state;
        self.volatile.session = None;
        reply.extend_from_slice(&answer);
        reply.extend_from_slice(&tag);
        Ok(())
    }
}
