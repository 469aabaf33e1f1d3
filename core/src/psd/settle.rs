//! The issuer's settlement of a pending transfer (TRANSFER RESOLVE P1 `01`, issue 18 §1):
//! for a transfer whose purse will never meet the PSD again (lost, destroyed), the scheme
//! issuer decides — from what it knows of the purse — whether the value reached the purse
//! (complete) or not (undo), and signs that decision for this PSD and this very transfer.
//!
//! The PSD checks the signature with the issuer public key of its scheme block, as it does
//! for RESET RECOGNITION ([`super::transfer::reset_recognition_data`]). The signed message
//! names the device and the pending transfer in full (card, register set, the PSD's number,
//! the card's count, the amount), and the PSD rebuilds it from its own pending record, so a
//! decision can only settle the transfer it was made for: once settled, that transfer number
//! never comes back (transfers started only goes up). The issuer counter, shared with
//! RESET RECOGNITION, must go up, so that a decision is applied once and not after a newer
//! issuer command. It does not let the issuer withdraw a decision: the PSD knows only the
//! highest counter it accepted, so of two decisions signed for the same pending transfer
//! (say, undo, then complete on better evidence) whichever reaches it first is applied,
//! and the other is then refused. A decision handed out stands while the transfer is
//! pending; the issuer hands one out only once it is final.

// The applet's command is compiled out of the browser's module (its 150 KB gzip budget):
// there, only the message builders and readers below are used.
#![cfg_attr(target_arch = "wasm32", allow(unused_imports))]

use alloc::vec::Vec;

use super::transfer::{
    certified_issuer, Pending, TransferState, RESOLVED_COMPLETED, RESOLVED_UNDONE,
};
use super::PsdApplet;
use crate::card::Ctx;
use crate::crypto::{IndiciumKey, SIGNATURE_LEN};
use crate::status::Status;
use crate::transfer::Resolution;
use crate::types::DeviceId;
use crate::wire::Writer;

/// What the issuer signs before the device ID, the pending transfer, the counter and the
/// decision of a settlement.
pub const SETTLE_LABEL: &[u8] = b"openpsd psd settle transfer v1";

/// Length of the settlement's data: counter (4) ‖ decision (1) ‖ signature (64).
pub const SETTLE_DATA_LEN: usize = 4 + 1 + SIGNATURE_LEN;

/// The issuer's decision on a pending transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The purse credited the value: pending moves to AR and transferred.
    Complete,
    /// The purse did not and never will credit it: pending goes back to DR.
    Undo,
}

impl Decision {
    /// The decision byte: the same codes as TRANSFER RESOLVE's outcome, so the answer
    /// repeats the decision (`01` complete, `02` undo).
    pub fn code(self) -> u8 {
        match self {
            Decision::Complete => RESOLVED_COMPLETED,
            Decision::Undo => RESOLVED_UNDONE,
        }
    }

    /// The decision of a byte, if it is one.
    pub fn from_code(b: u8) -> Option<Decision> {
        match b {
            RESOLVED_COMPLETED => Some(Decision::Complete),
            RESOLVED_UNDONE => Some(Decision::Undo),
            _ => None,
        }
    }
}

/// The message the issuer signs: [`SETTLE_LABEL`] ‖ device ID (8) ‖ card ID (8) ‖ register
/// set (1) ‖ the PSD's transfer number (4) ‖ the card's count in its session (4) ‖ amount
/// (8) ‖ counter (4) ‖ decision (1).
pub fn settle_message(
    device: DeviceId,
    pending: &Pending,
    counter: u32,
    decision: Decision,
) -> Vec<u8> {
    let mut m = Vec::with_capacity(SETTLE_LABEL.len() + 38);
    m.extend_from_slice(SETTLE_LABEL);
    m.extend_from_slice(&device.0);
    m.extend_from_slice(&pending.card.0);
    m.put_u8(pending.set);
    m.put_u32(pending.transfer.0);
    m.put_u32(pending.card_transfers.0);
    m.put_u64(pending.amount.0);
    m.put_u32(counter);
    m.put_u8(decision.code());
    m
}

/// Builds the settlement's data: counter ‖ decision ‖ the issuer's signature over
/// [`settle_message`] (what the scheme issuer sends, having read the pending transfer from
/// the PSD's GET DATA `00 02` or its audit).
pub fn settle_transfer_data(
    issuer: &IndiciumKey,
    device: DeviceId,
    pending: &Pending,
    counter: u32,
    decision: Decision,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(SETTLE_DATA_LEN);
    out.put_u32(counter);
    out.put_u8(decision.code());
    out.extend_from_slice(&issuer.sign(&settle_message(device, pending, counter, decision)));
    out
}

impl PsdApplet {
    #[cfg(not(target_arch = "wasm32"))]
    /// TRANSFER RESOLVE (80 68 01 00): counter ‖ decision ‖ the scheme issuer's signature;
    /// completes or undoes the pending transfer it names, committed before the answer
    /// (outcome ‖ the register set after, as TRANSFER RESOLVE answers). Needs no session:
    /// the purse is not there. Ends any session, so a late ACK cannot act on a transfer the
    /// issuer settled.
    pub(super) fn transfer_settle(
        &mut self,
        ctx: &mut Ctx<'_>,
        data: &[u8],
        reply: &mut Vec<u8>,
    ) -> Result<(), Status> {
        let device = self.device()?;
        let issuer_public_key = certified_issuer(device)?;
        let id = device.id;
        let (counter_bytes, rest) = match data.split_first_chunk::<4>() {
            Some(split) if data.len() == SETTLE_DATA_LEN => split,
            _ => return Err(Status::WrongLength),
        };
        let counter = u32::from_be_bytes(*counter_bytes);
        let Some((&code, sig)) = rest.split_first() else {
            return Err(Status::WrongLength);
        };
        let decision = Decision::from_code(code).ok_or(Status::WrongData)?;
        let Some(pending) = self.persistent.transfer.pending else {
            return Err(Status::ConditionsNotSatisfied);
        };
        let signed = settle_message(id, &pending, counter, decision);
        if !crate::crypto::verify_signature(issuer_public_key, &signed, sig)
            || counter <= self.persistent.transfer.reset_counter
        {
            return Err(Status::SecurityStatusNotSatisfied);
        }
        // The counter is recorded in the same commit as the end of the transfer.
        let resolution = match decision {
            Decision::Complete => Resolution::Complete,
            Decision::Undo => Resolution::Undo,
        };
        let base = TransferState {
            reset_counter: counter,
            ..self.persistent.transfer
        };
        let i = self.finish_pending_from(ctx, base, resolution)?;
        self.volatile.session = None;
        reply.put_u8(decision.code());
        self.persistent.set(i)?.readout().write(reply);
        Ok(())
    }
}
