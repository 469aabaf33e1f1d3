//! Command APDUs as the applets see them, parsed with the `iso7816` crate.
//!
//! The card layer reassembles chains and strips what it handles itself (class checks,
//! SELECT, GET RESPONSE); an applet receives a [`Command`] whose data is complete.

use crate::status::Status;
use iso7816::command::{CommandView, FromSliceError};

/// A complete command APDU (after chaining), borrowed from the card's buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Command<'a> {
    /// Class byte with the chaining bit cleared.
    pub cla: u8,
    /// Instruction byte.
    pub ins: u8,
    /// Parameter 1.
    pub p1: u8,
    /// Parameter 2.
    pub p2: u8,
    /// Command data (Lc bytes, or the whole chain's).
    pub data: &'a [u8],
    /// Ne, the most response bytes the host accepts: 0 if Le was absent, 256 for a short
    /// `00`, 65536 for an extended `0000`.
    pub ne: usize,
    /// Whether the APDU used extended lengths.
    pub extended: bool,
}

/// Parses one transmitted APDU (cases 1, 2S/3S/4S, 2E/3E/4E). Never panics.
pub fn parse(apdu: &[u8]) -> Result<CommandView<'_>, Status> {
    CommandView::try_from(apdu).map_err(|e| match e {
        FromSliceError::InvalidClass => Status::ClassNotSupported,
        _ => Status::WrongLength,
    })
}

impl<'a> Command<'a> {
    /// Builds the applet's view from header fields and (possibly reassembled) data.
    pub fn new(header: [u8; 4], data: &'a [u8], ne: usize, extended: bool) -> Self {
        Command {
            cla: header[0] & !CHAIN_BIT,
            ins: header[1],
            p1: header[2],
            p2: header[3],
            data,
            ne,
            extended,
        }
    }

    /// Fails with `6A86` unless P1 and P2 are both as given.
    pub fn expect_p1p2(&self, p1: u8, p2: u8) -> Result<(), Status> {
        if self.p1 == p1 && self.p2 == p2 {
            Ok(())
        } else {
            Err(Status::IncorrectP1P2)
        }
    }

    /// Fails with `6700` if there is command data.
    pub fn expect_no_data(&self) -> Result<(), Status> {
        if self.data.is_empty() {
            Ok(())
        } else {
            Err(Status::WrongLength)
        }
    }
}

/// The class bit that marks "more of this command follows" (ISO 7816-4 5.1.1).
pub const CHAIN_BIT: u8 = 0x10;
