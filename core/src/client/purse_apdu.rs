//! The purse's command APDUs as `docs/apdu.md` defines them, and the issuer's
//! authenticated command data (UNBLOCK PIN, RESET RECOGNITION).

use alloc::vec::Vec;

use super::exchange::command;
use crate::crypto::MacKey;
use crate::purse::personal::PursePersonalization;
use crate::purse::purchase::PurchaseRequest;
use crate::purse::{ins, CLA_PURSE, PIN_REF, PURSE_AID, RESET_LABEL, UNBLOCK_LABEL};
use crate::transfer::PsdHello;
use crate::types::{Amount, CardId};
use crate::wire::Writer;

/// SELECT the purse applet by AID.
pub fn select() -> Vec<u8> {
    command(0x00, 0xA4, 0x04, 0x00, PURSE_AID, 256)
}

/// PERSONALIZE.
pub fn personalize(p: &PursePersonalization) -> Vec<u8> {
    command(CLA_PURSE, ins::PERSONALIZE, 0, 0, &p.encode(), 256)
}

/// CERTIFY with the issuer's signature.
pub fn certify(signature: &[u8]) -> Vec<u8> {
    command(CLA_PURSE, ins::CERTIFY, 0, 0, signature, 0)
}

/// INSTALL CERTIFICATE with the issuer's certificate on the recognition key.
pub fn install_certificate(certificate: &[u8]) -> Vec<u8> {
    command(CLA_PURSE, ins::INSTALL_CERTIFICATE, 0, 0, certificate, 0)
}

/// LOAD REVOCATION with the issuer's revocation list.
pub fn load_revocation(list: &[u8]) -> Vec<u8> {
    command(CLA_PURSE, ins::LOAD_REVOCATION, 0, 0, list, 0)
}

/// GET DATA: `01` public data, `02` paired PSDs, `03` log, `04` recognition key and
/// certificate. Without Le, so the whole
/// answer comes back (the paired table and the log can pass 256 bytes).
pub fn get_data(p2: u8) -> Vec<u8> {
    command(CLA_PURSE, ins::GET_DATA, 0, p2, &[], 0)
}

/// VERIFY the PIN (an empty PIN asks for the try counter).
pub fn verify(pin: &[u8]) -> Vec<u8> {
    command(0x00, ins::VERIFY, 0, PIN_REF, pin, 0)
}

/// CHANGE REFERENCE DATA: old PIN ‖ new PIN.
pub fn change_pin(old: &[u8], new: &[u8]) -> Vec<u8> {
    let mut data = old.to_vec();
    data.extend_from_slice(new);
    let apdu = command(0x00, ins::CHANGE_PIN, 0, PIN_REF, &data, 0);
    zeroize::Zeroize::zeroize(&mut data);
    apdu
}

/// RECOGNIZE with the PSD's hello.
pub fn recognize(psd: &PsdHello) -> Vec<u8> {
    command(CLA_PURSE, ins::RECOGNIZE, 0, 0, &psd.encode(), 256)
}

/// AUTHENTICATE PSD with the PSD's cryptogram.
pub fn authenticate_psd(cryptogram: &[u8]) -> Vec<u8> {
    command(CLA_PURSE, ins::AUTHENTICATE_PSD, 0, 0, cryptogram, 0)
}

/// TRANSFER REQUEST for `amount`.
pub fn transfer_request(amount: Amount) -> Vec<u8> {
    command(
        CLA_PURSE,
        ins::TRANSFER_REQUEST,
        0,
        0,
        &amount.0.to_be_bytes(),
        256,
    )
}

/// TRANSFER CREDIT with the PSD's value message.
pub fn transfer_credit(value: &[u8]) -> Vec<u8> {
    command(CLA_PURSE, ins::TRANSFER_CREDIT, 0, 0, value, 256)
}

/// TRANSFER STATUS.
pub fn transfer_status() -> Vec<u8> {
    command(CLA_PURSE, ins::TRANSFER_STATUS, 0, 0, &[], 256)
}

/// TRANSFER CLOSE with the PSD's statement (CLS).
pub fn transfer_close(close: &[u8]) -> Vec<u8> {
    command(CLA_PURSE, ins::TRANSFER_CLOSE, 0, 0, close, 0)
}

/// PURCHASE.
pub fn purchase(req: &PurchaseRequest) -> Vec<u8> {
    command(CLA_PURSE, ins::PURCHASE, 0, 0, &req.encode(), 256)
}

/// UNBLOCK PIN data and APDU, made by the issuer with the card's admin key.
pub fn unblock_pin(admin_key: &MacKey, card: CardId, counter: u32, new_pin: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(18);
    body.put_u32(counter);
    body.put_short_bytes(new_pin);
    let tag = admin_key.mac(&[UNBLOCK_LABEL, &card.0, &body]);
    body.extend_from_slice(&tag);
    let apdu = command(CLA_PURSE, ins::UNBLOCK_PIN, 0, PIN_REF, &body, 0);
    zeroize::Zeroize::zeroize(&mut body);
    apdu
}

/// RELEASE PARTNER APDU, made by the issuer with the card's admin key: releases `device`'s
/// entry (see [`crate::purse::release`]; its answer opens with
/// [`crate::purse::release::Released::open`]).
pub fn release_partner(
    admin_key: &MacKey,
    card: CardId,
    counter: u32,
    device: crate::types::DeviceId,
) -> Vec<u8> {
    let body = crate::purse::release::release_partner_data(admin_key, card, counter, device);
    command(CLA_PURSE, ins::RELEASE_PARTNER, 0, 0, &body, 256)
}

/// RESET RECOGNITION data and APDU, made by the issuer with the card's admin key.
pub fn reset_recognition(admin_key: &MacKey, card: CardId, counter: u32) -> Vec<u8> {
    let c = counter.to_be_bytes();
    let mut body = c.to_vec();
    body.extend_from_slice(&admin_key.mac(&[RESET_LABEL, &card.0, &c]));
    command(CLA_PURSE, ins::RESET_RECOGNITION, 0, 0, &body, 0)
}
