//! The host's side of the PSD contract: command APDUs built with `iso7816`'s builder, and
//! response APDUs split into data and status. Tests, the simulator's script tools and the
//! wasm API all talk to the card through these, so they follow `docs/apdu.md` in one place.

use alloc::vec;
use alloc::vec::Vec;
use iso7816::command::class::Class;
use iso7816::command::{CommandBuilder, ExpectedLen};
use iso7816::Instruction;

use super::audit::NONCE_LEN;
use super::device::Personalization;
use super::indicium::IndiciumRequest;
use super::{ins, CLA_PSD, PSD_AID};
use crate::status::{Status, SW_OK};
use crate::types::RegisterSetIndex;

/// Encodes one command APDU (short when it fits, extended otherwise). `ne` 0 means no Le.
/// Data longer than an extended APDU can carry (65535 bytes), or CLA `FF`, gives an empty
/// vector.
pub fn command(cla: u8, ins: u8, p1: u8, p2: u8, data: &[u8], ne: u16) -> Vec<u8> {
    if data.len() > usize::from(u16::MAX) {
        return Vec::new();
    }
    let Ok(class) = Class::from_byte(cla) else {
        return Vec::new();
    };
    let le = if ne == u16::MAX {
        ExpectedLen::Max
    } else {
        ExpectedLen::Ne(ne)
    };
    let builder = CommandBuilder::new(class, Instruction::from(ins), p1, p2, data, le);
    let mut out = vec![0u8; builder.required_len()];
    let mut slice = out.as_mut_slice();
    // The buffer is exactly `required_len`, which is what serialization needs.
    if builder.serialize_into(&mut slice).is_err() {
        out.clear();
    }
    out
}

/// SELECT the PSD applet by AID.
pub fn select() -> Vec<u8> {
    command(0x00, 0xA4, 0x04, 0x00, PSD_AID, 256)
}

/// PERSONALIZE.
pub fn personalize(p: &Personalization) -> Vec<u8> {
    command(CLA_PSD, ins::PERSONALIZE, 0, 0, &p.encode(), 256)
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

/// A response APDU's status word.
pub fn sw(response: &[u8]) -> u16 {
    match response {
        [.., a, b] => u16::from_be_bytes([*a, *b]),
        _ => 0,
    }
}

/// The data of a response whose status is `9000`, or the card's refusal. A status word
/// the card does not define is reported as [`Status::Internal`].
pub fn data(response: &[u8]) -> Result<&[u8], Status> {
    let sw = sw(response);
    if response.len() >= 2 && sw == SW_OK {
        Ok(&response[..response.len() - 2])
    } else {
        Err(Status::from_sw(sw).unwrap_or(Status::Internal))
    }
}
