//! The PSD's command APDUs as `docs/apdu.md` defines them, built once for every front end.
//! [`command`], [`sw`] and [`data`] are here too for scripts and tests that build or split
//! raw APDUs of their own.

use alloc::vec::Vec;

pub use super::exchange::{command, sw};
use crate::psd::audit::NONCE_LEN;
use crate::psd::certmeter::attestation::Purpose;
use crate::psd::certmeter::postmark::PostmarkRequest;
use crate::psd::device::Personalization;
use crate::psd::indicium::IndiciumRequest;
use crate::psd::license::install::Install;
use crate::psd::license::request::LicenseAsk;
use crate::psd::license::DIGEST_LEN;
use crate::psd::{ins, CLA_PSD, PSD_AID};
use crate::status::{Status, SW_OK};
use crate::types::RegisterSetIndex;

/// LICENSE REQUEST: `replace` (P1 `01`) makes a new request even if one is pending.
pub fn license_request(ask: &LicenseAsk, replace: bool) -> Vec<u8> {
    command(
        CLA_PSD,
        ins::LICENSE_REQUEST,
        u8::from(replace),
        0,
        &ask.encode(),
        256,
    )
}

/// LICENSE INSTALL.
pub fn license_install(install: &Install) -> Vec<u8> {
    command(CLA_PSD, ins::LICENSE_INSTALL, 0, 0, &install.encode(), 256)
}

/// EXPORT SET, phase 1: prepare (the answer is the blob).
pub fn export_prepare(set: RegisterSetIndex) -> Vec<u8> {
    command(CLA_PSD, ins::EXPORT_SET, 0, set.0, &[], u16::MAX)
}

/// EXPORT SET, phase 2: commit, naming the blob's digest (after the file is synced).
pub fn export_commit(set: RegisterSetIndex, digest: &[u8; DIGEST_LEN]) -> Vec<u8> {
    command(CLA_PSD, ins::EXPORT_SET, 1, set.0, digest, 256)
}

/// EXPORT SET: cancel a prepared export.
pub fn export_cancel(set: RegisterSetIndex) -> Vec<u8> {
    command(CLA_PSD, ins::EXPORT_SET, 2, set.0, &[], 256)
}

/// IMPORT SET.
pub fn import_set(blob: &[u8]) -> Vec<u8> {
    command(CLA_PSD, ins::IMPORT_SET, 0, 0, blob, 256)
}

/// RETIRE SET: retire the outstanding export of `epoch` (the answer is the receipt).
pub fn retire_set(epoch: u64) -> Vec<u8> {
    command(CLA_PSD, ins::RETIRE_SET, 0, 0, &epoch.to_be_bytes(), 256)
}

/// RETIRE SET: forget the retired entry of `epoch` (after the back office booked it).
pub fn forget_retired(epoch: u64) -> Vec<u8> {
    command(CLA_PSD, ins::RETIRE_SET, 1, 0, &epoch.to_be_bytes(), 256)
}

/// GET DATA (license slots and exports).
pub fn get_license_data() -> Vec<u8> {
    command(CLA_PSD, ins::GET_DATA, 0x00, 0x04, &[], u16::MAX)
}

/// LOAD RATE TABLE (the vendor-signed table).
pub fn load_rate_table(table: &[u8]) -> Vec<u8> {
    command(CLA_PSD, ins::LOAD_RATE_TABLE, 0, 0, table, 256)
}

/// LOAD TRUST ANCHOR (the vendor-signed anchor).
pub fn load_trust_anchor(anchor: &[u8]) -> Vec<u8> {
    command(CLA_PSD, ins::LOAD_TRUST_ANCHOR, 0, 0, anchor, 256)
}

/// GENERATE KEY of a purpose; `replace` (P2 `01`) makes a new key even if one is pending.
pub fn generate_key(purpose: Purpose, replace: bool) -> Vec<u8> {
    command(
        CLA_PSD,
        ins::GENERATE_KEY,
        purpose.code(),
        u8::from(replace),
        &[],
        256,
    )
}

/// INSTALL KEY CERTIFICATE in `slot`, the fee paid by `set`.
pub fn install_key_certificate(slot: u8, set: RegisterSetIndex, certificate: &[u8]) -> Vec<u8> {
    command(
        CLA_PSD,
        ins::INSTALL_KEY_CERTIFICATE,
        slot,
        set.0,
        certificate,
        256,
    )
}

/// ISSUE POSTMARK, the fee paid by `set`.
pub fn issue_postmark(set: RegisterSetIndex, req: &PostmarkRequest) -> Vec<u8> {
    command(CLA_PSD, ins::ISSUE_POSTMARK, 0, set.0, &req.encode(), 256)
}

/// GET DATA (the certificate meter's public state).
pub fn get_certmeter_data() -> Vec<u8> {
    command(CLA_PSD, ins::GET_DATA, 0x00, 0x05, &[], u16::MAX)
}

/// SELECT the PSD applet by AID.
pub fn select() -> Vec<u8> {
    command(0x00, 0xA4, 0x04, 0x00, PSD_AID, 256)
}

/// PERSONALIZE.
pub fn personalize(p: &Personalization) -> Vec<u8> {
    command(CLA_PSD, ins::PERSONALIZE, 0, 0, &p.encode(), 256)
}

/// PERSONALIZE P1 `01`: a PSD whose indicia `signer` (SEC1 uncompressed) signs outside it
/// (feature `webcrypto`).
#[cfg(feature = "webcrypto")]
pub fn personalize_outside(signer: &[u8; 65], p: &Personalization) -> Vec<u8> {
    let mut data = signer.to_vec();
    data.extend_from_slice(&p.encode());
    command(CLA_PSD, ins::PERSONALIZE, 1, 0, &data, 256)
}

/// STORE SIGNATURE: the outside signature (r ‖ s) of a set's pending indicium (feature
/// `webcrypto`).
#[cfg(feature = "webcrypto")]
pub fn store_signature(set: RegisterSetIndex, signature: &[u8; 64]) -> Vec<u8> {
    command(CLA_PSD, ins::STORE_SIGNATURE, 0, set.0, signature, 256)
}

/// GET DATA (device public data).
pub fn get_data() -> Vec<u8> {
    command(CLA_PSD, ins::GET_DATA, 0x00, 0x01, &[], 256)
}

/// READ REGISTERS of a set.
pub fn read_registers(set: RegisterSetIndex) -> Vec<u8> {
    command(CLA_PSD, ins::READ_REGISTERS, 0, set.0, &[], 256)
}

/// ISSUE INDICIUM on a set.
pub fn issue_indicium(set: RegisterSetIndex, req: &IndiciumRequest) -> Vec<u8> {
    command(CLA_PSD, ins::ISSUE_INDICIUM, 0, set.0, &req.encode(), 256)
}

/// AUDIT of a set with the server's nonce.
pub fn audit(set: RegisterSetIndex, nonce: &[u8; NONCE_LEN]) -> Vec<u8> {
    command(CLA_PSD, ins::AUDIT, 0, set.0, nonce, 256)
}

/// REFILL a set with a sealed refill message.
pub fn refill(set: RegisterSetIndex, message: &[u8]) -> Vec<u8> {
    command(CLA_PSD, ins::REFILL, 0, set.0, message, 256)
}

/// RECEIPT: the back office's acceptance of this session's last audit.
pub fn receipt(message: &[u8]) -> Vec<u8> {
    command(CLA_PSD, ins::RECEIPT, 0, 0, message, 256)
}

/// GET DATA 00 02: the PSD's transfer data (scheme, counters, pending transfer).
pub fn get_transfer_data() -> Vec<u8> {
    command(CLA_PSD, ins::GET_DATA, 0x00, 0x02, &[], 256)
}

/// OPEN SESSION: the PSD's hello for a value transfer.
pub fn open_session() -> Vec<u8> {
    command(CLA_PSD, ins::OPEN_SESSION, 0, 0, &[], 256)
}

/// AUTHENTICATE CARD with the purse's hello and cryptogram.
pub fn authenticate_card(card_hello: &[u8]) -> Vec<u8> {
    command(CLA_PSD, ins::AUTHENTICATE_CARD, 0, 0, card_hello, 256)
}

/// TRANSFER DEBIT on a set with the purse's request.
pub fn transfer_debit(set: RegisterSetIndex, request: &[u8]) -> Vec<u8> {
    command(CLA_PSD, ins::TRANSFER_DEBIT, 0, set.0, request, 256)
}

/// TRANSFER CONFIRM with the purse's acknowledgement.
pub fn transfer_confirm(ack: &[u8]) -> Vec<u8> {
    command(CLA_PSD, ins::TRANSFER_CONFIRM, 0, 0, ack, 256)
}

/// TRANSFER RESOLVE with the purse's transfer status.
pub fn transfer_resolve(status: &[u8]) -> Vec<u8> {
    command(CLA_PSD, ins::TRANSFER_RESOLVE, 0, 0, status, 256)
}

/// TRANSFER RESOLVE P1 `01` with the issuer's settlement of the pending transfer (counter
/// ‖ decision ‖ signature; see [`crate::psd::settle::settle_transfer_data`]).
pub fn transfer_settle(data: &[u8]) -> Vec<u8> {
    command(CLA_PSD, ins::TRANSFER_RESOLVE, 1, 0, data, 256)
}

/// TRANSFER CLOSE: the PSD's statement that nothing is pending with the session's card.
pub fn transfer_close() -> Vec<u8> {
    command(CLA_PSD, ins::TRANSFER_CLOSE, 0, 0, &[], 256)
}

/// RESET RECOGNITION with the issuer's data (counter ‖ MAC under K1; see
/// [`crate::psd::transfer::reset_recognition_data`]).
pub fn reset_recognition(data: &[u8]) -> Vec<u8> {
    command(CLA_PSD, ins::RESET_RECOGNITION, 0, 0, data, 0)
}

/// GET DATA 00 03: the PSD's recognition key, certificate and revocation list version.
pub fn get_recognition_data() -> Vec<u8> {
    command(CLA_PSD, ins::GET_DATA, 0x00, 0x03, &[], 256)
}

/// INSTALL CERTIFICATE with the issuer's certificate on the recognition key.
pub fn install_certificate(certificate: &[u8]) -> Vec<u8> {
    command(CLA_PSD, ins::INSTALL_CERTIFICATE, 0, 0, certificate, 0)
}

/// LOAD REVOCATION with the issuer's revocation list.
pub fn load_revocation(list: &[u8]) -> Vec<u8> {
    command(CLA_PSD, ins::LOAD_REVOCATION, 0, 0, list, 0)
}

/// The data of a response whose status is `9000`, or the card's refusal, for scripts that
/// send raw APDUs without [`super::exchange`]. A status word the card does not define is
/// reported as [`Status::Internal`].
pub fn data(response: &[u8]) -> Result<&[u8], Status> {
    let sw = sw(response);
    if response.len() >= 2 && sw == SW_OK {
        Ok(&response[..response.len() - 2])
    } else {
        Err(Status::from_sw(sw).unwrap_or(Status::Internal))
    }
}

/// SIGN, the fee paid by `set`.
pub fn sign(set: RegisterSetIndex, req: &crate::psd::certmeter::sign::SignRequest) -> Vec<u8> {
    command(CLA_PSD, ins::SIGN, 0, set.0, &req.encode(), 256)
}

/// VALIDATE POSTMARK, the fee paid by `set` (an extended APDU: the request carries a
/// certificate). Empty if a part of the request exceeds a u16 length.
pub fn validate_postmark(
    set: RegisterSetIndex,
    req: &crate::psd::certmeter::validate::ValidateRequest,
) -> Vec<u8> {
    match req.encode() {
        Ok(data) => command(CLA_PSD, ins::VALIDATE_POSTMARK, 0, set.0, &data, 256),
        Err(_) => Vec::new(),
    }
}

/// ISSUE AGENT CERTIFICATE with a key the card generates (mode 01), the fee paid by `set`.
/// The APDU holds the password: zeroized on drop.
pub fn generate_agent_certificate(
    set: RegisterSetIndex,
    req: &crate::psd::certmeter::agent::GenerateRequest,
) -> zeroize::Zeroizing<Vec<u8>> {
    zeroize::Zeroizing::new(command(
        CLA_PSD,
        ins::ISSUE_AGENT_CERTIFICATE,
        crate::psd::certmeter::agent::MODE_GENERATE,
        set.0,
        &req.encode(),
        u16::MAX,
    ))
}

/// ISSUE AGENT CERTIFICATE from a PKCS#10 request (mode 00), the fee paid by `set`.
pub fn issue_agent_certificate(
    set: RegisterSetIndex,
    req: &crate::psd::certmeter::agent::AgentRequest,
) -> Vec<u8> {
    command(
        CLA_PSD,
        ins::ISSUE_AGENT_CERTIFICATE,
        crate::psd::certmeter::agent::MODE_CSR,
        set.0,
        &req.encode(),
        u16::MAX,
    )
}

/// LOAD CREDIT LINE with the creditor's line of credit certificate (DER); `set` pays the
/// credit-line fee, if the rate table prices it.
pub fn load_credit_line(set: RegisterSetIndex, certificate: &[u8]) -> Vec<u8> {
    command(CLA_PSD, ins::LOAD_CREDIT_LINE, 0, set.0, certificate, 256)
}

/// PAY: a payment certificate drawn on the line held; `set` pays the payment fee.
pub fn pay(set: RegisterSetIndex, req: &crate::psd::certmeter::credit::PayRequest) -> Vec<u8> {
    command(CLA_PSD, ins::PAY, 0, set.0, &req.encode(), u16::MAX)
}

/// REVOCATION REQUEST for the key in `slot`: reason ‖ the CA's challenge.
pub fn revocation_request(
    slot: u8,
    reason: crate::psd::certmeter::revoke::Reason,
    challenge: &[u8; crate::psd::certmeter::revoke::CHALLENGE_LEN],
) -> Vec<u8> {
    let mut data = Vec::with_capacity(1 + challenge.len());
    data.push(reason.code());
    data.extend_from_slice(challenge);
    command(CLA_PSD, ins::REVOCATION_REQUEST, slot, 0, &data, 256)
}

/// REVOKE KEY with the CA's signed order, the fee paid (or owed) by `set`.
pub fn revoke_key(set: RegisterSetIndex, order: &[u8]) -> Vec<u8> {
    command(CLA_PSD, ins::REVOKE_KEY, 0, set.0, order, 256)
}
