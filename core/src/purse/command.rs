//! The purse's commands, parsed once from CLA/INS/P1/P2 (and, where that check comes
//! first, the data) into a typed [`PurseCommand`], and the life-cycle state each may run in.
//!
//! The order of the checks is part of the contract (a host sees the first refusal): an
//! unknown INS is `6D00` whatever the class; VERIFY and CHANGE REFERENCE DATA want the ISO
//! class `00`, the rest `80` (`6E00`); then P1/P2 (`6A86`) and the checks of the data that
//! come before the card's state (RESET RECOGNITION's and RELEASE PARTNER's length, PURCHASE's request); then the
//! life-cycle ([`PurseCommand::allowed_in`], `6985`); then each handler. A new command is
//! one variant, one line in [`PurseCommand::parse`]'s table, one line in
//! [`PurseCommand::allowed_in`] if it runs on a blank card, and one handler.

use crate::apdu::Command;
use crate::crypto::MAC_LEN;
use crate::status::Status;

use super::purchase::PurchaseRequest;
use super::{ins, CLA_PURSE, PIN_REF};

/// The data objects of GET DATA (`80 CA 00 xx`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataObject {
    /// `01`: the purse's public data (or its blank state).
    Info,
    /// `02`: the PSDs it was paired with.
    Paired,
    /// `03`: the log of its last operations.
    Log,
    /// `04`: the recognition key, certificate and revocation list version.
    Recognition,
}

/// A purse command whose class, instruction and parameters were checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PurseCommand<'a> {
    /// PERSONALIZE (`80 10 00 00`): personalization data.
    Personalize(&'a [u8]),
    /// CERTIFY (`80 12 00 00`): the issuer's signature on the purchase key.
    Certify(&'a [u8]),
    /// GET DATA (`80 CA 00 xx`).
    GetData(DataObject),
    /// INSTALL CERTIFICATE (`80 14 00 00`): the issuer's certificate on the recognition key.
    InstallCertificate(&'a [u8]),
    /// LOAD REVOCATION (`80 6C 00 00`): the issuer's revocation list.
    LoadRevocation(&'a [u8]),
    /// VERIFY (`00 20 00 81`): the PIN, or nothing to ask for the status.
    Verify(&'a [u8]),
    /// CHANGE REFERENCE DATA (`00 24 00 81`): old PIN ‖ new PIN.
    ChangePin(&'a [u8]),
    /// UNBLOCK PIN (`80 2C 00 81`): counter ‖ new PIN ‖ MAC.
    UnblockPin(&'a [u8]),
    /// RESET RECOGNITION (`80 6A 00 00`): counter ‖ MAC (length checked).
    ResetRecognition(&'a [u8]),
    /// RECOGNIZE (`80 70 00 00`): the PSD's hello.
    Recognize(&'a [u8]),
    /// AUTHENTICATE PSD (`80 72 00 00`): the PSD's cryptogram.
    AuthenticatePsd(&'a [u8]),
    /// TRANSFER REQUEST (`80 74 00 00`): the amount.
    TransferRequest(&'a [u8]),
    /// TRANSFER CREDIT (`80 76 00 00`): the PSD's value message.
    TransferCredit(&'a [u8]),
    /// TRANSFER STATUS (`80 78 00 00`).
    TransferStatus,
    /// TRANSFER CLOSE (`80 7C 00 00`): the PSD's statement that nothing is pending.
    TransferClose(&'a [u8]),
    /// RELEASE PARTNER (`80 7E 00 00`): counter ‖ device ID ‖ MAC (length checked).
    ReleasePartner(&'a [u8]),
    /// PURCHASE (`80 7A 00 00`): the terminal's request.
    Purchase(PurchaseRequest),
}

/// Where the purse is in its life: the one state a command's permission depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LifeCycle {
    /// Not personalized.
    Blank,
    /// Personalized (once, for ever).
    Personalized,
}

type Parser<'a> = fn(&Command<'a>) -> Result<PurseCommand<'a>, Status>;

impl<'a> PurseCommand<'a> {
    /// The typed command, or the status word the purse answers to the APDU.
    pub fn parse(cmd: &Command<'a>) -> Result<PurseCommand<'a>, Status> {
        use PurseCommand::*;
        // One table: INS → its class and the parser of its P1/P2 (and early data checks).
        let (cla, parser): (u8, Parser<'a>) = match cmd.ins {
            ins::VERIFY => (0x00, |c| pin_ref(c).map(|_| Verify(c.data))),
            ins::CHANGE_PIN => (0x00, |c| pin_ref(c).map(|_| ChangePin(c.data))),
            ins::PERSONALIZE => (CLA_PURSE, |c| no_params(c).map(|_| Personalize(c.data))),
            ins::CERTIFY => (CLA_PURSE, |c| no_params(c).map(|_| Certify(c.data))),
            ins::INSTALL_CERTIFICATE => (CLA_PURSE, |c| {
                no_params(c).map(|_| InstallCertificate(c.data))
            }),
            ins::LOAD_REVOCATION => (CLA_PURSE, |c| no_params(c).map(|_| LoadRevocation(c.data))),
            ins::UNBLOCK_PIN => (CLA_PURSE, |c| pin_ref(c).map(|_| UnblockPin(c.data))),
            ins::RESET_RECOGNITION => (CLA_PURSE, |c| {
                no_params(c)?;
                if c.data.len() != 4 + MAC_LEN {
                    return Err(Status::WrongLength);
                }
                Ok(ResetRecognition(c.data))
            }),
            ins::RECOGNIZE => (CLA_PURSE, |c| no_params(c).map(|_| Recognize(c.data))),
            ins::AUTHENTICATE_PSD => (CLA_PURSE, |c| no_params(c).map(|_| AuthenticatePsd(c.data))),
            ins::TRANSFER_REQUEST => (CLA_PURSE, |c| no_params(c).map(|_| TransferRequest(c.data))),
            ins::TRANSFER_CREDIT => (CLA_PURSE, |c| no_params(c).map(|_| TransferCredit(c.data))),
            ins::TRANSFER_STATUS => (CLA_PURSE, |c| {
                no_params(c)?;
                c.expect_no_data()?;
                Ok(TransferStatus)
            }),
            ins::TRANSFER_CLOSE => (CLA_PURSE, |c| no_params(c).map(|_| TransferClose(c.data))),
            ins::RELEASE_PARTNER => (CLA_PURSE, |c| {
                no_params(c)?;
                if c.data.len() != super::release::RELEASE_DATA_LEN {
                    return Err(Status::WrongLength);
                }
                Ok(ReleasePartner(c.data))
            }),
            ins::PURCHASE => (CLA_PURSE, |c| {
                no_params(c)?;
                Ok(Purchase(PurchaseRequest::decode(c.data)?))
            }),
            ins::GET_DATA => (CLA_PURSE, |c| {
                c.expect_no_data()?;
                let object = match (c.p1, c.p2) {
                    (0x00, 0x01) => DataObject::Info,
                    (0x00, 0x02) => DataObject::Paired,
                    (0x00, 0x03) => DataObject::Log,
                    (0x00, 0x04) => DataObject::Recognition,
                    _ => return Err(Status::IncorrectP1P2),
                };
                Ok(GetData(object))
            }),
            _ => return Err(Status::InstructionNotSupported),
        };
        if cmd.cla != cla {
            return Err(Status::ClassNotSupported);
        }
        parser(cmd)
    }

    /// Whether the command may run in `state` (else `6985`).
    pub fn allowed_in(&self, state: LifeCycle) -> bool {
        match self {
            PurseCommand::Personalize(_) => state == LifeCycle::Blank,
            PurseCommand::GetData(DataObject::Info) => true,
            _ => state == LifeCycle::Personalized,
        }
    }
}

/// P1 and P2 both `00`.
fn no_params(cmd: &Command<'_>) -> Result<(), Status> {
    cmd.expect_p1p2(0, 0)
}

/// P1 `00`, P2 the card's PIN (`81`).
fn pin_ref(cmd: &Command<'_>) -> Result<(), Status> {
    cmd.expect_p1p2(0, PIN_REF)
}
