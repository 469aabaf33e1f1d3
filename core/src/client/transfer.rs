//! The transfer driver: drives a PSD and a purse through recognition, PIN,
//! transfer and (when the PSD has one pending) resolution, over any two links — two
//! in-process cards, two PC/SC readers, a browser's wasm devices.
//!
//! The host holds no secret and decides nothing about value: it only carries messages.
//! A host that stops at any point leaves nothing worse than a pending transfer, which the
//! next [`transfer`] or [`resolve_pending`] with the same two devices completes or undoes.

pub use super::error::Side;
use super::{exchange, psd_apdu, purse_apdu, ClientError, Link, PsdClient, PurseClient};
use crate::psd::registers::Registers;
use crate::psd::transfer::{TransferInfo, RESOLVED_COMPLETED, RESOLVED_UNDONE};
use crate::purse::personal::PurseInfo;
use crate::transfer::{CardHello, PsdHello};
use crate::types::{Amount, RegisterSetIndex};

/// The transfer driver's error: the client layer's one error type.
pub type TransferError = ClientError;

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

/// Selects both applets and runs the mutual recognition (seed 002 blocks 111-117).
fn recognize(psd: &mut dyn Link, purse: &mut dyn Link) -> Result<CardHello, TransferError> {
    exchange(psd, Side::Psd, "SELECT", &psd_apdu::select())?;
    exchange(purse, Side::Purse, "SELECT", &purse_apdu::select())?;
    let hello = exchange(psd, Side::Psd, "OPEN SESSION", &psd_apdu::open_session())?;
    let psd_hello = PsdHello::decode(&hello)
        .map_err(|_| TransferError::BadResponse(Side::Psd, "OPEN SESSION"))?;
    let card = exchange(
        purse,
        Side::Purse,
        "RECOGNIZE",
        &purse_apdu::recognize(&psd_hello),
    )?;
    let card_hello = CardHello::decode(&card)
        .map_err(|_| TransferError::BadResponse(Side::Purse, "RECOGNIZE"))?;
    let cryptogram = exchange(
        psd,
        Side::Psd,
        "AUTHENTICATE CARD",
        &psd_apdu::authenticate_card(&card),
    )?;
    exchange(
        purse,
        Side::Purse,
        "AUTHENTICATE PSD",
        &purse_apdu::authenticate_psd(&cryptogram),
    )?;
    Ok(card_hello)
}

/// In a recognised session in which the PSD has nothing pending with the card (left, or
/// ended by CONFIRM or RESOLVE), carries the PSD's TRANSFER CLOSE to the card, so the card
/// may forget its last credit from this PSD. Until a card hears it, it keeps that credit
/// (and takes value from at most 16 PSDs with credits not closed).
fn close(psd: &mut dyn Link, purse: &mut dyn Link) -> Result<(), TransferError> {
    let cls = exchange(
        psd,
        Side::Psd,
        "TRANSFER CLOSE",
        &psd_apdu::transfer_close(),
    )?;
    exchange(
        purse,
        Side::Purse,
        "TRANSFER CLOSE",
        &purse_apdu::transfer_close(&cls),
    )?;
    Ok(())
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
        &purse_apdu::transfer_status(),
    )?;
    let out = exchange(
        psd,
        Side::Psd,
        "TRANSFER RESOLVE",
        &psd_apdu::transfer_resolve(&status),
    )?;
    let bad = || TransferError::BadResponse(Side::Psd, "TRANSFER RESOLVE");
    let (outcome, regs) = out.split_first().ok_or_else(bad)?;
    let regs = Registers::decode(regs).map_err(|_| bad())?;
    let resolved = match *outcome {
        RESOLVED_COMPLETED => Resolved::Completed,
        RESOLVED_UNDONE => Resolved::Undone,
        _ => return Err(bad()),
    };
    close(psd, purse)?;
    Ok((resolved, regs))
}

/// The PSD's transfer data (SELECT, GET DATA 00 02).
pub fn psd_transfer_info(psd: &mut dyn Link) -> Result<TransferInfo, TransferError> {
    let mut psd = PsdClient::new(psd);
    psd.exchange("SELECT", &psd_apdu::select())?;
    psd.transfer_info()
}

/// The purse's public data (SELECT, GET DATA 00 01); `None` for a blank purse.
pub fn purse_info(purse: &mut dyn Link) -> Result<Option<PurseInfo>, TransferError> {
    let mut purse = PurseClient::new(purse);
    purse.select()?;
    purse.info()
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
    exchange(purse, Side::Purse, "VERIFY", &purse_apdu::verify(pin))?;
    let req = exchange(
        purse,
        Side::Purse,
        "TRANSFER REQUEST",
        &purse_apdu::transfer_request(amount),
    )?;
    let value = exchange(
        psd,
        Side::Psd,
        "TRANSFER DEBIT",
        &psd_apdu::transfer_debit(set, &req),
    )?;
    let ack = exchange(
        purse,
        Side::Purse,
        "TRANSFER CREDIT",
        &purse_apdu::transfer_credit(&value),
    )?;
    let regs = exchange(
        psd,
        Side::Psd,
        "TRANSFER CONFIRM",
        &psd_apdu::transfer_confirm(&ack),
    )?;
    let registers = Registers::decode(&regs)
        .map_err(|_| TransferError::BadResponse(Side::Psd, "TRANSFER CONFIRM"))?;
    close(psd, purse)?;
    let purse_after =
        purse_info(purse)?.ok_or(TransferError::BadResponse(Side::Purse, "GET DATA"))?;
    Ok(TransferOutcome {
        resolved_first,
        amount,
        registers,
        purse: purse_after,
    })
}
