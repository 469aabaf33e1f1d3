//! The PSD's commands, parsed once from CLA/INS/P1/P2 (and, where the check comes first,
//! the data length) into a typed [`PsdCommand`], and the life-cycle state each may run in.
//!
//! The order of the checks is part of the contract (a host sees the first refusal): an
//! unknown INS is `6D00` whatever the class, a known INS with another class `6E00`, then
//! P1/P2 (`6A86`), then the life-cycle ([`PsdCommand::allowed_in`], `6985`), then the
//! register set named by P2 (`6A88`, in [`super::PsdApplet`]'s dispatch), then the data in
//! each handler. A new command is one variant, one line in [`PsdCommand::parse`]'s table,
//! one line in [`PsdCommand::allowed_in`] if it runs on a blank device, and one handler.

use crate::apdu::Command;
use crate::status::Status;
use crate::types::RegisterSetIndex;

use super::{ins, CLA_PSD};

/// A PSD command whose class, instruction and parameters were checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
// Without the `licenses` / `certmeter` features their variants are never parsed.
#[cfg_attr(
    not(all(feature = "licenses", feature = "certmeter", feature = "webcrypto")),
    allow(dead_code)
)]
pub enum PsdCommand<'a> {
    /// PERSONALIZE (`80 10 00 00`): personalization data.
    Personalize(&'a [u8]),
    /// PERSONALIZE (`80 10 01 00`): the outside signer's public key ‖ personalization data
    /// (feature `webcrypto`).
    PersonalizeOutside(&'a [u8]),
    /// STORE SIGNATURE (`80 46 00 set`): the pending indicium's signature r ‖ s (feature
    /// `webcrypto`).
    StoreSignature(RegisterSetIndex, &'a [u8]),
    /// GET DATA (`80 CA 00 01`): the device's public data (or its blank state).
    GetDeviceInfo,
    /// GET DATA (`80 CA 00 02`): the transfer function's public data.
    GetTransferInfo,
    /// GET DATA (`80 CA 00 03`): the recognition key and certificate.
    GetRecognitionInfo,
    /// INSTALL CERTIFICATE (`80 14 00 00`): the issuer's certificate.
    InstallCertificate(&'a [u8]),
    /// LOAD REVOCATION (`80 6C 00 00`): the issuer's revocation list.
    LoadRevocation(&'a [u8]),
    /// READ REGISTERS (`80 32 00 set`).
    ReadRegisters(RegisterSetIndex),
    /// ISSUE INDICIUM (`80 40 00 set`): the indicium request.
    IssueIndicium(RegisterSetIndex, &'a [u8]),
    /// AUDIT (`80 50 00 set`): the server's nonce.
    Audit(RegisterSetIndex, &'a [u8]),
    /// REFILL (`80 52 00 set`): the refill message.
    Refill(RegisterSetIndex, &'a [u8]),
    /// RECEIPT (`80 54 00 00`): the audit receipt.
    Receipt(&'a [u8]),
    /// OPEN SESSION (`80 60 00 00`).
    OpenSession,
    /// AUTHENTICATE CARD (`80 62 00 00`): the card's hello.
    AuthenticateCard(&'a [u8]),
    /// TRANSFER DEBIT (`80 64 00 set`): the purse's request.
    TransferDebit(RegisterSetIndex, &'a [u8]),
    /// TRANSFER CONFIRM (`80 66 00 00`): the purse's acknowledgement.
    TransferConfirm(&'a [u8]),
    /// TRANSFER RESOLVE (`80 68 00 00`): the purse's transfer status.
    TransferResolve(&'a [u8]),
    /// TRANSFER RESOLVE (`80 68 01 00`): the issuer's signed settlement.
    TransferSettle(&'a [u8]),
    /// TRANSFER CLOSE (`80 6E 00 00`): the PSD's statement that nothing is pending.
    TransferClose,
    /// RESET RECOGNITION (`80 6A 00 00`): counter ‖ MAC.
    ResetRecognition(&'a [u8]),
    /// LICENSE REQUEST (`80 42 P1 00`): P1 `01` replaces a pending request.
    LicenseRequest {
        /// P1 `01`.
        replace: bool,
        /// License and origin asked for.
        data: &'a [u8],
    },
    /// LICENSE INSTALL (`80 44 00 00`): the grant.
    LicenseInstall(&'a [u8]),
    /// EXPORT SET (`80 48 P1 slot`): P1 `00` prepare, `01` commit, `02` cancel.
    ExportSet {
        /// P1.
        phase: u8,
        /// The slot.
        set: RegisterSetIndex,
        /// The digest, for commit.
        data: &'a [u8],
    },
    /// IMPORT SET (`80 4A 00 00`): the blob.
    ImportSet(&'a [u8]),
    /// RETIRE SET (`80 4C P1 00`): P1 `00` retire, `01` forget; data: the export's epoch.
    RetireSet {
        /// P1 `01`.
        forget: bool,
        /// The epoch.
        data: &'a [u8],
    },
    /// GET DATA (`80 CA 00 04`): the license slots and exports.
    GetLicenseInfo,
    /// LOAD RATE TABLE (`80 70 00 00`): the vendor-signed table.
    LoadRateTable(&'a [u8]),
    /// LOAD TRUST ANCHOR (`80 5C 00 00`): the vendor-signed anchor.
    LoadTrustAnchor(&'a [u8]),
    /// GENERATE KEY (`80 74 purpose P2`): P2 `01` replaces a pending key.
    GenerateKey {
        /// P1: the purpose code.
        purpose: u8,
        /// P2 `01`.
        replace: bool,
        /// Must be empty.
        data: &'a [u8],
    },
    /// INSTALL KEY CERTIFICATE (`80 76 slot set`): the certificate.
    InstallKeyCertificate {
        /// P1: the key slot.
        slot: u8,
        /// P2: the register set that pays the fee.
        set: RegisterSetIndex,
        /// The certificate (DER).
        data: &'a [u8],
    },
    /// ISSUE POSTMARK (`80 72 00 set`): the postmark request.
    IssuePostmark(RegisterSetIndex, &'a [u8]),
    /// LOAD CREDIT LINE (`80 58 00 set`): the line of credit certificate (DER).
    LoadCreditLine(RegisterSetIndex, &'a [u8]),
    /// PAY (`80 5A 00 set`): the payment request.
    Pay(RegisterSetIndex, &'a [u8]),
    /// GET DATA (`80 CA 00 05`): the certificate meter's public state.
    GetCertMeterInfo,
    /// SIGN (`80 78 00 set`): the sign request.
    Sign(RegisterSetIndex, &'a [u8]),
    /// VALIDATE POSTMARK (`80 7E 00 set`): the validation request.
    ValidatePostmark(RegisterSetIndex, &'a [u8]),
    /// ISSUE AGENT CERTIFICATE (`80 56 mode set`): the request.
    IssueAgentCertificate {
        /// P1: `00` from a PKCS#10 request, `01` the card generates the key.
        mode: u8,
        /// P2: the register set that pays the fee.
        set: RegisterSetIndex,
        /// The request.
        data: &'a [u8],
    },
    /// REVOCATION REQUEST (`80 7A slot 00`): reason ‖ the CA's challenge.
    RevocationRequest {
        /// P1: the key slot.
        slot: u8,
        /// Reason 1 ‖ challenge 16.
        data: &'a [u8],
    },
    /// REVOKE KEY (`80 7C 00 set`): the CA's signed order.
    RevokeKey(RegisterSetIndex, &'a [u8]),
}

/// Where the PSD is in its life: the one state a command's permission depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LifeCycle {
    /// Not personalized: no keys, no register sets.
    Blank,
    /// Personalized (once, for ever).
    Personalized,
}

type Parser<'a> = fn(&Command<'a>) -> Result<PsdCommand<'a>, Status>;

impl<'a> PsdCommand<'a> {
    /// The typed command, or the status word the PSD answers to the APDU.
    pub fn parse(cmd: &Command<'a>) -> Result<PsdCommand<'a>, Status> {
        use PsdCommand::*;
        // One table: INS → the parser of its P1/P2 (and data, where that check is first).
        let parser: Parser<'a> = match cmd.ins {
            #[cfg(not(feature = "webcrypto"))]
            ins::PERSONALIZE => |c| no_params(c).map(|_| Personalize(c.data)),
            #[cfg(feature = "webcrypto")]
            ins::PERSONALIZE => |c| match (c.p1, c.p2) {
                (0, 0) => Ok(Personalize(c.data)),
                (1, 0) => Ok(PersonalizeOutside(c.data)),
                _ => Err(Status::IncorrectP1P2),
            },
            #[cfg(feature = "webcrypto")]
            ins::STORE_SIGNATURE => |c| set_param(c).map(|s| StoreSignature(s, c.data)),
            ins::READ_REGISTERS => |c| {
                let set = set_param(c)?;
                c.expect_no_data()?;
                Ok(ReadRegisters(set))
            },
            ins::ISSUE_INDICIUM => |c| set_param(c).map(|s| IssueIndicium(s, c.data)),
            ins::AUDIT => |c| set_param(c).map(|s| Audit(s, c.data)),
            ins::REFILL => |c| set_param(c).map(|s| Refill(s, c.data)),
            ins::RECEIPT => |c| no_params(c).map(|_| Receipt(c.data)),
            ins::OPEN_SESSION => |c| {
                no_params(c)?;
                c.expect_no_data()?;
                Ok(OpenSession)
            },
            ins::AUTHENTICATE_CARD => |c| no_params(c).map(|_| AuthenticateCard(c.data)),
            ins::TRANSFER_DEBIT => |c| set_param(c).map(|s| TransferDebit(s, c.data)),
            ins::TRANSFER_CONFIRM => |c| no_params(c).map(|_| TransferConfirm(c.data)),
            ins::TRANSFER_RESOLVE => |c| match (c.p1, c.p2) {
                (0, 0) => Ok(TransferResolve(c.data)),
                (1, 0) => Ok(TransferSettle(c.data)),
                _ => Err(Status::IncorrectP1P2),
            },
            ins::TRANSFER_CLOSE => |c| {
                no_params(c)?;
                c.expect_no_data()?;
                Ok(TransferClose)
            },
            ins::RESET_RECOGNITION => |c| no_params(c).map(|_| ResetRecognition(c.data)),
            ins::INSTALL_CERTIFICATE => |c| no_params(c).map(|_| InstallCertificate(c.data)),
            ins::LOAD_REVOCATION => |c| no_params(c).map(|_| LoadRevocation(c.data)),
            #[cfg(feature = "licenses")]
            ins::LICENSE_REQUEST => |c| match (c.p1, c.p2) {
                (0 | 1, 0) => Ok(LicenseRequest {
                    replace: c.p1 == 1,
                    data: c.data,
                }),
                _ => Err(Status::IncorrectP1P2),
            },
            #[cfg(feature = "licenses")]
            ins::LICENSE_INSTALL => |c| no_params(c).map(|_| LicenseInstall(c.data)),
            #[cfg(feature = "licenses")]
            ins::EXPORT_SET => |c| match c.p1 {
                0..=2 => Ok(ExportSet {
                    phase: c.p1,
                    set: RegisterSetIndex(c.p2),
                    data: c.data,
                }),
                _ => Err(Status::IncorrectP1P2),
            },
            #[cfg(feature = "licenses")]
            ins::IMPORT_SET => |c| no_params(c).map(|_| ImportSet(c.data)),
            #[cfg(feature = "licenses")]
            ins::RETIRE_SET => |c| match (c.p1, c.p2) {
                (0 | 1, 0) => Ok(RetireSet {
                    forget: c.p1 == 1,
                    data: c.data,
                }),
                _ => Err(Status::IncorrectP1P2),
            },
            #[cfg(feature = "certmeter")]
            ins::LOAD_RATE_TABLE => |c| no_params(c).map(|_| LoadRateTable(c.data)),
            #[cfg(feature = "certmeter")]
            ins::LOAD_TRUST_ANCHOR => |c| no_params(c).map(|_| LoadTrustAnchor(c.data)),
            #[cfg(feature = "certmeter")]
            ins::GENERATE_KEY => |c| match c.p2 {
                0 | 1 => Ok(GenerateKey {
                    purpose: c.p1,
                    replace: c.p2 == 1,
                    data: c.data,
                }),
                _ => Err(Status::IncorrectP1P2),
            },
            #[cfg(feature = "certmeter")]
            ins::INSTALL_KEY_CERTIFICATE => |c| {
                Ok(InstallKeyCertificate {
                    slot: c.p1,
                    set: RegisterSetIndex(c.p2),
                    data: c.data,
                })
            },
            #[cfg(feature = "certmeter")]
            ins::ISSUE_POSTMARK => |c| set_param(c).map(|s| IssuePostmark(s, c.data)),
            #[cfg(feature = "certmeter")]
            ins::SIGN => |c| set_param(c).map(|s| Sign(s, c.data)),
            #[cfg(feature = "certmeter")]
            ins::VALIDATE_POSTMARK => |c| set_param(c).map(|s| ValidatePostmark(s, c.data)),
            #[cfg(feature = "certmeter")]
            ins::ISSUE_AGENT_CERTIFICATE => |c| {
                Ok(IssueAgentCertificate {
                    mode: c.p1,
                    set: RegisterSetIndex(c.p2),
                    data: c.data,
                })
            },
            #[cfg(feature = "certmeter")]
            ins::LOAD_CREDIT_LINE => |c| set_param(c).map(|s| LoadCreditLine(s, c.data)),
            #[cfg(feature = "certmeter")]
            ins::PAY => |c| set_param(c).map(|s| Pay(s, c.data)),
            #[cfg(feature = "certmeter")]
            ins::REVOCATION_REQUEST => |c| match c.p2 {
                0 => Ok(RevocationRequest {
                    slot: c.p1,
                    data: c.data,
                }),
                _ => Err(Status::IncorrectP1P2),
            },
            #[cfg(feature = "certmeter")]
            ins::REVOKE_KEY => |c| set_param(c).map(|s| RevokeKey(s, c.data)),
            ins::GET_DATA => |c| {
                let object = match (c.p1, c.p2) {
                    (0x00, 0x02) => GetTransferInfo,
                    (0x00, 0x03) => GetRecognitionInfo,
                    #[cfg(feature = "licenses")]
                    (0x00, 0x04) => GetLicenseInfo,
                    #[cfg(feature = "certmeter")]
                    (0x00, 0x05) => GetCertMeterInfo,
                    _ => {
                        c.expect_p1p2(0x00, 0x01)?;
                        GetDeviceInfo
                    }
                };
                c.expect_no_data()?;
                Ok(object)
            },
            _ => return Err(Status::InstructionNotSupported),
        };
        if cmd.cla != CLA_PSD {
            return Err(Status::ClassNotSupported);
        }
        parser(cmd)
    }

    /// Whether the command may run in `state` (else `6985`).
    pub fn allowed_in(&self, state: LifeCycle) -> bool {
        match self {
            PsdCommand::Personalize(_) | PsdCommand::PersonalizeOutside(_) => {
                state == LifeCycle::Blank
            }
            PsdCommand::GetDeviceInfo => true,
            _ => state == LifeCycle::Personalized,
        }
    }
}

/// P1 and P2 both `00`.
fn no_params(cmd: &Command<'_>) -> Result<(), Status> {
    cmd.expect_p1p2(0, 0)
}

/// P1 `00`, P2 a register set (checked against the device's sets after the life-cycle).
fn set_param(cmd: &Command<'_>) -> Result<RegisterSetIndex, Status> {
    if cmd.p1 == 0 {
        Ok(RegisterSetIndex(cmd.p2))
    } else {
        Err(Status::IncorrectP1P2)
    }
}
