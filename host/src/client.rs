//! A PSD as the host sees it: typed calls over any [`Transport`], following
//! `docs/apdu.md`. Responses that come in pieces (`61xx`) are fetched with GET RESPONSE;
//! refusals come back as [`Status`], the card's own table of status words.

use std::fmt;

use openpsd_core::psd::audit::NONCE_LEN;
use openpsd_core::psd::device::DeviceInfo;
use openpsd_core::psd::host;
use openpsd_core::psd::indicium::{self, IndiciumData, IndiciumRequest, VerifyError};
use openpsd_core::psd::registers::Registers;
use openpsd_core::status::SW1_BYTES_REMAINING;
use openpsd_core::types::RegisterSetIndex;
use openpsd_core::Status;

use crate::transport::{Transport, TransportError};

/// Why a call failed.
#[derive(Debug)]
pub enum HostError {
    /// The APDU or its answer was lost; the card may or may not have run the command.
    Transport(TransportError),
    /// The card refused, with one of its status words.
    Card(Status),
    /// The card answered a status word it does not define (not an openpsd PSD?).
    UnknownStatus(u16),
    /// The card's answer does not have the documented layout.
    Malformed(&'static str),
    /// An indicium the card returned does not verify against its public key.
    Indicium(VerifyError),
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostError::Transport(e) => write!(f, "transport: {e}"),
            HostError::Card(s) => write!(f, "card refused: {s}"),
            HostError::UnknownStatus(sw) => write!(f, "card answered unknown status word {sw:04X}"),
            HostError::Malformed(what) => write!(f, "malformed {what} from the card"),
            HostError::Indicium(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for HostError {}

impl From<TransportError> for HostError {
    fn from(e: TransportError) -> Self {
        HostError::Transport(e)
    }
}

/// A PSD behind a transport.
pub struct PsdClient {
    transport: Box<dyn Transport>,
    public_key: Option<[u8; 65]>,
}

/// GET RESPONSE rounds before giving up on a card that keeps answering `61xx`.
const MAX_GET_RESPONSE: usize = 64;

impl PsdClient {
    /// A client on `transport`; call [`PsdClient::select`] first.
    pub fn new(transport: Box<dyn Transport>) -> Self {
        Self {
            transport,
            public_key: None,
        }
    }

    /// Sends a command and returns the response data of a `9000`, fetching `61xx` pieces.
    pub fn exchange(&mut self, apdu: &[u8]) -> Result<Vec<u8>, HostError> {
        let mut data = Vec::new();
        let mut resp = self.transport.transmit(apdu)?;
        for _ in 0..MAX_GET_RESPONSE {
            let sw = host::sw(&resp);
            if resp.len() < 2 {
                return Err(HostError::Malformed(
                    "response (shorter than a status word)",
                ));
            }
            data.extend_from_slice(&resp[..resp.len() - 2]);
            if sw == 0x9000 {
                return Ok(data);
            }
            if (sw >> 8) as u8 != SW1_BYTES_REMAINING {
                return Err(
                    Status::from_sw(sw).map_or(HostError::UnknownStatus(sw), HostError::Card)
                );
            }
            resp = self
                .transport
                .transmit(&host::command(0x00, 0xC0, 0, 0, &[], 256))?;
        }
        Err(HostError::Malformed("response (endless 61xx)"))
    }

    /// SELECTs the PSD applet and reads its public key (if personalized).
    pub fn select(&mut self) -> Result<Option<DeviceInfo>, HostError> {
        self.exchange(&host::select())?;
        self.info()
    }

    /// The device's public data; `None` for a blank device.
    pub fn info(&mut self) -> Result<Option<DeviceInfo>, HostError> {
        let data = self.exchange(&host::get_data())?;
        let info = DeviceInfo::decode(&data).map_err(|_| HostError::Malformed("GET DATA"))?;
        self.public_key = info.as_ref().map(|i| i.public_key);
        Ok(info)
    }

    /// The registers of a set.
    pub fn registers(&mut self, set: RegisterSetIndex) -> Result<Registers, HostError> {
        Registers::decode(&self.exchange(&host::read_registers(set))?)
            .map_err(|_| HostError::Malformed("READ REGISTERS"))
    }

    /// Issues an indicium and verifies it against the device's public key. After a
    /// transport error, calling again with the same request (same transaction ID) returns
    /// the same indicium without a second debit.
    pub fn issue_indicium(
        &mut self,
        set: RegisterSetIndex,
        req: &IndiciumRequest,
    ) -> Result<(Vec<u8>, IndiciumData), HostError> {
        let public_key = match self.public_key {
            Some(pk) => pk,
            None => {
                self.info()?
                    .ok_or(HostError::Card(Status::ConditionsNotSatisfied))?
                    .public_key
            }
        };
        let ind = self.exchange(&host::issue_indicium(set, req))?;
        let data = indicium::verify(&ind, &public_key).map_err(HostError::Indicium)?;
        Ok((ind, data))
    }

    /// An audit message (registers and `nonce`, MACed under K1) for the meter server.
    pub fn audit(
        &mut self,
        set: RegisterSetIndex,
        nonce: &[u8; NONCE_LEN],
    ) -> Result<Vec<u8>, HostError> {
        self.exchange(&host::audit(set, nonce))
    }

    /// Applies a refill message; returns the registers after the credit.
    pub fn refill(
        &mut self,
        set: RegisterSetIndex,
        message: &[u8],
    ) -> Result<Registers, HostError> {
        Registers::decode(&self.exchange(&host::refill(set, message))?)
            .map_err(|_| HostError::Malformed("REFILL response"))
    }
}
