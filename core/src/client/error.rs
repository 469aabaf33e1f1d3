//! [`ClientError`]: the one error of the client layer, for a single device's typed calls
//! and for the transfer driver, which talks to two.

use alloc::string::String;

use crate::psd::indicium::VerifyError;
use crate::status::Status;
use crate::types::CardId;

/// Which device answered.
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

/// Why a call to a card (or a transfer between two) stopped. Every variant but
/// [`ClientError::PendingForOtherCard`] names the device and the step (the command's name
/// as `docs/apdu.md` spells it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientError {
    /// A device refused a command with this status.
    Refused(Side, &'static str, Status),
    /// A device answered a status word the contract does not define (not an openpsd card?).
    UnknownStatus(Side, &'static str, u16),
    /// The link to a device failed (the message says how); the command may or may not have
    /// run.
    Link(Side, String),
    /// A response did not have the documented layout.
    BadResponse(Side, &'static str),
    /// An indicium the PSD returned does not verify against its public key.
    Indicium(VerifyError),
    /// The PSD has a transfer pending for another card; insert that card first.
    PendingForOtherCard(CardId),
    /// ISSUE INDICIUM answered an **unsigned** indicium: the PSD's indicia are signed
    /// outside it (feature `webcrypto`). The card does not show that before the command,
    /// so the debit is committed; [`super::PsdClient::issue_outside`] with the same
    /// transaction ID answers the same bytes, not debited again, to be signed and stored.
    #[cfg(feature = "webcrypto")]
    SignedOutside,
}

impl core::fmt::Display for ClientError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ClientError::Refused(side, step, s) => write!(f, "{side} refused {step}: {s}"),
            ClientError::UnknownStatus(side, step, sw) => {
                write!(f, "{side} answered {step} with undefined status {sw:04X}")
            }
            ClientError::Link(side, why) => write!(f, "link to the {side} failed: {why}"),
            ClientError::BadResponse(side, step) => {
                write!(f, "{side}'s response to {step} is malformed")
            }
            ClientError::Indicium(e) => write!(f, "{e}"),
            ClientError::PendingForOtherCard(card) => write!(
                f,
                "the PSD has a transfer pending for card {card}: insert that card to complete or undo it"
            ),
            #[cfg(feature = "webcrypto")]
            ClientError::SignedOutside => f.write_str(
                "the PSD's indicia are signed outside it: ISSUE INDICIUM debited and answered \
                 the unsigned indicium; issue again with the same transaction ID through the \
                 outside signer's call (issue_outside; wasm: issueUnsigned, WebCryptoPsd) to \
                 get it, not debited again, and store its signature",
            ),
        }
    }
}

impl core::error::Error for ClientError {}

impl ClientError {
    /// The card's status, when a card refused.
    pub fn status(&self) -> Option<Status> {
        match self {
            ClientError::Refused(_, _, s) => Some(*s),
            _ => None,
        }
    }

    /// The status word a card answered, defined or not.
    pub fn sw(&self) -> Option<u16> {
        match self {
            ClientError::Refused(_, _, s) => Some(s.sw()),
            ClientError::UnknownStatus(_, _, sw) => Some(*sw),
            _ => None,
        }
    }

    /// Whether the link failed, so the command may or may not have run on the card.
    pub fn is_link(&self) -> bool {
        matches!(self, ClientError::Link(..))
    }
}
