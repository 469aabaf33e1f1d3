//! The box's commands, parsed once from CLA/INS/P1/P2 into a typed [`VboxCommand`], and
//! the life-cycle state each may run in. Same order of checks as the PSD's
//! (`psd/command.rs`): unknown INS `6D00`, then class `6E00`, then P1/P2 `6A86`, then the
//! life-cycle `6985`, then the data in each handler.

use crate::apdu::Command;
use crate::status::Status;

use super::{ins, CLA_VBOX};

/// A box command whose class, instruction and parameters were checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VboxCommand<'a> {
    /// PERSONALIZE (`80 10 00 00`): box ID ‖ shards ‖ depth ‖ vendor key.
    Personalize(&'a [u8]),
    /// GET DATA (`80 CA 00 01`): the box's public data (or its blank state).
    GetBoxInfo,
    /// GET DATA (`80 CA 00 02`): the box's count of approved log-ins (`vbox::login`).
    GetLoginCount,
    /// READ SHARD (`80 34 shard`): P1P2 is the shard number.
    ReadShard(u16),
    /// CREATE METER (`80 20 00 00`): the vendor's grant ‖ the empty slot's proof.
    CreateMeter(&'a [u8]),
    /// ISSUE INDICIUM (`80 40 00 00`): slot ‖ mailer ‖ record ‖ proof ‖ indicium request.
    IssueIndicium(&'a [u8]),
    /// ISSUE BATCH (`80 42 00 00`): slot ‖ mailer ‖ record ‖ proof ‖ count ‖ requests.
    IssueBatch(&'a [u8]),
    /// REFILL (`80 52 00 00`): slot ‖ mailer ‖ record ‖ proof ‖ refill message.
    Refill(&'a [u8]),
    /// ENROLL MAILER (`80 60 00 00`): mailer ID ‖ password hash.
    EnrollMailer(&'a [u8]),
    /// AUTHENTICATE MAILER (`80 62 P1 00`): mailer ID ‖ password hash ‖ verifier, and with
    /// P1 = `01` the data center's time: the approved log-in is then counted and signed.
    AuthenticateMailer {
        /// P1 = `01`: answer a signed log-in record (`vbox::login`).
        record: bool,
        /// The command's data.
        data: &'a [u8],
    },
    /// RESUME (`80 46 ins 00`): the data of the shard's last command, whose INS is P1.
    Resume {
        /// INS of the command resumed (CREATE METER, ISSUE INDICIUM, ISSUE BATCH or REFILL).
        ins: u8,
        /// Its data, byte for byte.
        data: &'a [u8],
    },
}

/// Where the box is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LifeCycle {
    /// No keys, no shards.
    Blank,
    /// Personalized (once, for ever).
    Personalized,
}

type Parser<'a> = fn(&Command<'a>) -> Result<VboxCommand<'a>, Status>;

impl<'a> VboxCommand<'a> {
    /// The typed command, or the status word the box answers to the APDU.
    pub fn parse(cmd: &Command<'a>) -> Result<VboxCommand<'a>, Status> {
        use VboxCommand::*;
        let parser: Parser<'a> = match cmd.ins {
            ins::PERSONALIZE => |c| no_params(c).map(|_| Personalize(c.data)),
            ins::READ_SHARD => |c| {
                c.expect_no_data()?;
                Ok(ReadShard(u16::from_be_bytes([c.p1, c.p2])))
            },
            ins::CREATE_METER => |c| no_params(c).map(|_| CreateMeter(c.data)),
            ins::ISSUE_INDICIUM => |c| no_params(c).map(|_| IssueIndicium(c.data)),
            ins::ISSUE_BATCH => |c| no_params(c).map(|_| IssueBatch(c.data)),
            ins::REFILL => |c| no_params(c).map(|_| Refill(c.data)),
            ins::ENROLL_MAILER => |c| no_params(c).map(|_| EnrollMailer(c.data)),
            ins::AUTHENTICATE_MAILER => |c| match (c.p1, c.p2) {
                (0 | 1, 0) => Ok(AuthenticateMailer {
                    record: c.p1 == 1,
                    data: c.data,
                }),
                _ => Err(Status::IncorrectP1P2),
            },
            ins::RESUME => |c| match (c.p1, c.p2) {
                (ins::CREATE_METER | ins::ISSUE_INDICIUM | ins::ISSUE_BATCH | ins::REFILL, 0) => {
                    Ok(Resume {
                        ins: c.p1,
                        data: c.data,
                    })
                }
                _ => Err(Status::IncorrectP1P2),
            },
            ins::GET_DATA => |c| {
                let what = match (c.p1, c.p2) {
                    (0x00, 0x01) => GetBoxInfo,
                    (0x00, 0x02) => GetLoginCount,
                    _ => return Err(Status::IncorrectP1P2),
                };
                c.expect_no_data()?;
                Ok(what)
            },
            _ => return Err(Status::InstructionNotSupported),
        };
        if cmd.cla != CLA_VBOX {
            return Err(Status::ClassNotSupported);
        }
        parser(cmd)
    }

    /// Whether the command may run in `state` (else `6985`).
    pub fn allowed_in(&self, state: LifeCycle) -> bool {
        match self {
            VboxCommand::Personalize(_) => state == LifeCycle::Blank,
            VboxCommand::GetBoxInfo => true,
            _ => state == LifeCycle::Personalized,
        }
    }
}

fn no_params(cmd: &Command<'_>) -> Result<(), Status> {
    cmd.expect_p1p2(0, 0)
}
