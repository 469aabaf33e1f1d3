//! The host's side of a transfer: drives a PSD and a purse through recognition, PIN,
//! transfer and (when the PSD has one pending) resolution, over any two links — two
//! in-process cards, two PC/SC readers, a browser's wasm devices.
//!
//! The host holds no secret and decides nothing about value: it only carries messages.
//! A host that stops at any point leaves nothing worse than a pending transfer, which the
//! next [`transfer`] or [`resolve_pending`] with the same two devices completes or undoes.

use alloc::string::String;
use alloc::vec::Vec;

use super::{CardHello, PsdHello};
use crate::psd::host as psd_host;
use crate::psd::registers::Registers;
use crate::psd::transfer::{TransferInfo, RESOLVED_COMPLETED, RESOLVED_UNDONE};
use crate::psd::{ins as psd_ins, CLA_PSD};
use crate::purse::host as purse_host;
use crate::purse::personal::PurseInfo;
use crate::status::{Status, SW_OK};
use crate::types::{Amount, CardId, RegisterSetIndex};

/// Something that carries command APDUs to a card and brings back its response APDU.
pub trait Link {
    /// Sends one command APDU; the response includes the status word.
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, String>;
}

impl<S: crate::store::Store, P: crate::platform::Platform> Link for crate::card::Card<S, P> {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, String> {
        Ok(crate::card::Card::transmit(self, apdu))
    }
}

/// Which side of the transfer answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The postal security device.
    Psd,
    /// The purse card.
    Purse,
}

impl core::fmt::Display for Side {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Side::Psd => "PSD",
            Side::Purse => "purse",
        })
    }
}

/// Why a transfer stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransferError {
    /// A device refused a command with this status.
    Refused(Side, &'static str, Status),
    /// A device answered a status word the contract does not define.
    UnknownStatus(Side, &'static str, u16),
    /// The link to a device failed (the message says how).
    Link(Side, String),
    /// A response did not have the documented layout.
    BadResponse(Side, &'static str),
    /// The PSD has a transfer pending for another card; insert that card first.
    PendingForOtherCard(CardId),
}

impl core::fmt::Display for TransferError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            TransferError::Refused(side, step, s) => write!(f, "{side} refused {step}: {s}"),
            TransferError::UnknownStatus(side, step, sw) => {
                write!(f, "{side} answered {step} with undefined status {sw:04X}")
            }
            TransferError::Link(side, why) => write!(f, "link to the {side} failed: {why}"),
            TransferError::BadResponse(side, step) => {
                write!(f, "{side}'s response to {step} is malformed")
            }
            TransferError::PendingForOtherCard(card) => write!(
                f,
                "the PSD has a transfer pending for card {card}: insert that card to complete or undo it"
            ),
        }
    }
}

impl core::error::Error for TransferError {}

impl TransferError {
    /// The card's status, when a card refused.
    pub fn status(&self) -> Option<Status> {
        match self {
            TransferError::Refused(_, _, s) => Some(*s),
            _ => None,
        }
    }
}

fn exchange(
    link: &mut dyn Link,
    side: Side,
    step: &'static str,
    apdu: &[u8],
) -> Result<Vec<u8>, TransferError> {
    let mut resp = link
        .transmit(apdu)
        .map_err(|e| TransferError::Link(side, e))?;
    if resp.len() < 2 {
        return Err(TransferError::BadResponse(side, step));
    }
    // 61xx: more bytes wait; fetch them with GET RESPONSE (ISO 7816-4 5.3.3).
    let mut rounds = 0;
    while resp[resp.len() - 2] == crate::status::SW1_BYTES_REMAINING && rounds < 64 {
        rounds += 1;
        let le = resp[resp.len() - 1];
        resp.truncate(resp.len() - 2);
        let more = link
            .transmit(&[0x00, 0xC0, 0x00, 0x00, le])
            .map_err(|e| TransferError::Link(side, e))?;
        if more.len() < 2 {
            return Err(TransferError::BadResponse(side, step));
        }
        resp.extend_from_slice(&more);
    }
    let sw = psd_host::sw(&resp);
    if sw != SW_OK {
        return Err(match Status::from_sw(sw) {
            Some(s) => TransferError::Refused(side, step, s),
            None => TransferError::UnknownStatus(side, step, sw),
        });
    }
    resp.truncate(resp.len() - 2);
    Ok(resp)
}

/// How a pending transfer ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolved {
    /// The card had credited it; the PSD counted it as moved out.
    Completed,
    /// The card had not; the value went back to the PSD's DR.
    Undone,
}

/// What a completed [`transfer`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferOutcome {
    /// A pending transfer with this card found and resolved first, if any.
    pub resolved_first: Option<(Resolved, Amount)>,
    /// Value moved.
    pub amount: Amount,
    /// The PSD's register set after.
    pub registers: Registers,
    /// The purse after.
    pub purse: PurseInfo,
}

fn psd_command(ins: u8, p2: u8, data: &[u8]) -> Vec<u8> {
    psd_host::command(CLA_PSD, ins, 0, p2, data, 256)
}

/// Selects both applets and runs the mutual recognition (seed 002 blocks 111-117).
fn recognize(psd: &mut dyn Link, purse: &mut dyn Link) -> Result<CardHello, TransferError> {
    exchange(psd, Side::Psd, "SELECT", &psd_host::select())?;
    exchange(purse, Side::Purse, "SELECT", &purse_host::select())?;
    let hello = exchange(
        psd,
        Side::Psd,
        "OPEN SESSION",
        &psd_command(psd_ins::OPEN_SESSION, 0, &[]),
    )?;
    let psd_hello = PsdHello::decode(&hello)
        .map_err(|_| TransferError::BadResponse(Side::Psd, "OPEN SESSION"))?;
    let card = exchange(
        purse,
        Side::Purse,
        "RECOGNIZE",
        &purse_host::recognize(&psd_hello),
    )?;
    let card_hello = CardHello::decode(&card)
        .map_err(|_| TransferError::BadResponse(Side::Purse, "RECOGNIZE"))?;
    let cryptogram = exchange(
        psd,
        Side::Psd,
        "AUTHENTICATE CARD",
        &psd_command(psd_ins::AUTHENTICATE_CARD, 0, &card),
    )?;
    exchange(
        purse,
        Side::Purse,
        "AUTHENTICATE PSD",
        &purse_host::authenticate_psd(&cryptogram),
    )?;
    Ok(card_hello)
}

/// In a recognised session, asks the card for its status and has the PSD resolve.
fn resolve_in_session(
    psd: &mut dyn Link,
    purse: &mut dyn Link,
) -> Result<(Resolved, Registers), TransferError> {
    let status = exchange(
        purse,
        Side::Purse,
        "TRANSFER STATUS",
        &purse_host::transfer_status(),
    )?;
    let out = exchange(
        psd,
        Side::Psd,
        "TRANSFER RESOLVE",
        &psd_command(psd_ins::TRANSFER_RESOLVE, 0, &status),
    )?;
    let bad = || TransferError::BadResponse(Side::Psd, "TRANSFER RESOLVE");
    let (outcome, regs) = out.split_first().ok_or_else(bad)?;
    let regs = Registers::decode(regs).map_err(|_| bad())?;
    let resolved = match *outcome {
        RESOLVED_COMPLETED => Resolved::Completed,
        RESOLVED_UNDONE => Resolved::Undone,
        _ => return Err(bad()),
    };
    Ok((resolved, regs))
}

/// The PSD's transfer data (GET DATA 00 02).
pub fn psd_transfer_info(psd: &mut dyn Link) -> Result<TransferInfo, TransferError> {
    exchange(psd, Side::Psd, "SELECT", &psd_host::select())?;
    let data = exchange(
        psd,
        Side::Psd,
        "GET DATA",
        &psd_host::command(CLA_PSD, psd_ins::GET_DATA, 0, 2, &[], 256),
    )?;
    TransferInfo::decode(&data).map_err(|_| TransferError::BadResponse(Side::Psd, "GET DATA"))
}

/// The purse's public data (GET DATA 00 01); `None` for a blank purse.
pub fn purse_info(purse: &mut dyn Link) -> Result<Option<PurseInfo>, TransferError> {
    exchange(purse, Side::Purse, "SELECT", &purse_host::select())?;
    let data = exchange(purse, Side::Purse, "GET DATA", &purse_host::get_data(1))?;
    PurseInfo::decode(&data).map_err(|_| TransferError::BadResponse(Side::Purse, "GET DATA"))
}

/// Completes or undoes the PSD's pending transfer with this purse, if it has one for it.
/// `Ok(None)`: nothing was pending.
pub fn resolve_pending(
    psd: &mut dyn Link,
    purse: &mut dyn Link,
) -> Result<Option<(Resolved, Amount)>, TransferError> {
    let info = psd_transfer_info(psd)?;
    let Some(pending) = info.state.pending else {
        return Ok(None);
    };
    let r = recognize(psd, purse)?;
    if r.card != pending.card {
        return Err(TransferError::PendingForOtherCard(pending.card));
    }
    let (resolved, _) = resolve_in_session(psd, purse)?;
    Ok(Some((resolved, pending.amount)))
}

/// Moves `amount` from the PSD's register set `set` to the purse (seed 002 Fig. 8):
/// recognition, PIN, request, debit, credit, confirmation. A transfer the PSD still has
/// pending with this purse is resolved first.
pub fn transfer(
    psd: &mut dyn Link,
    purse: &mut dyn Link,
    set: RegisterSetIndex,
    amount: Amount,
    pin: &[u8],
) -> Result<TransferOutcome, TransferError> {
    let resolved_first = resolve_pending(psd, purse)?;
    recognize(psd, purse)?;
    exchange(purse, Side::Purse, "VERIFY", &purse_host::verify(pin))?;
    let req = exchange(
        purse,
        Side::Purse,
        "TRANSFER REQUEST",
        &purse_host::transfer_request(amount),
    )?;
    let value = exchange(
        psd,
        Side::Psd,
        "TRANSFER DEBIT",
        &psd_command(psd_ins::TRANSFER_DEBIT, set.0, &req),
    )?;
    let ack = exchange(
        purse,
        Side::Purse,
        "TRANSFER CREDIT",
        &purse_host::transfer_credit(&value),
    )?;
    let regs = exchange(
        psd,
        Side::Psd,
        "TRANSFER CONFIRM",
        &psd_command(psd_ins::TRANSFER_CONFIRM, 0, &ack),
    )?;
    let registers = Registers::decode(&regs)
        .map_err(|_| TransferError::BadResponse(Side::Psd, "TRANSFER CONFIRM"))?;
    let purse_after =
        purse_info(purse)?.ok_or(TransferError::BadResponse(Side::Purse, "GET DATA"))?;
    Ok(TransferOutcome {
        resolved_first,
        amount,
        registers,
        purse: purse_after,
    })
}
