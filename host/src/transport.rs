//! Ways to reach a card, chosen by a [`CardSpec`]:
//!
//! * `state:DIR` — the card kept in a card-sim state directory, run in this process;
//! * `tcp:HOST:PORT` — a `card-sim serve --tcp` process;
//! * `pcsc:READER` — a PC/SC reader by name (or by index, `pcsc:0`), e.g. pcscd's vpcd
//!   reader "Virtual PCD 00 00" with `card-sim serve --vpcd` behind it (feature `pcsc`).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use card_sim::os_platform::Clock;
use card_sim::sim::{self, FileCard, SimulatedCard};
use card_sim::transport::TcpCardClient;

/// Why an APDU did not get an answer. The command may or may not have reached the card.
#[derive(Debug)]
pub struct TransportError(pub String);

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TransportError {}

/// Carries one command APDU to a card and its response back.
pub trait Transport {
    /// Sends `apdu`, returns the response APDU (data ‖ SW1 SW2).
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, TransportError>;
}

/// Where the card is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CardSpec {
    /// A card-sim state directory, run in-process.
    State(PathBuf),
    /// A `card-sim serve --tcp` address.
    Tcp(String),
    /// A PC/SC reader: its name, or its index in the reader list.
    Pcsc(String),
}

impl FromStr for CardSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            Some(("state", dir)) if !dir.is_empty() => Ok(CardSpec::State(dir.into())),
            Some(("tcp", addr)) if addr.contains(':') => Ok(CardSpec::Tcp(addr.into())),
            Some(("pcsc", reader)) if !reader.is_empty() => Ok(CardSpec::Pcsc(reader.into())),
            _ => Err(format!(
                "'{s}': expected state:DIR, tcp:HOST:PORT or pcsc:READER (name or index)"
            )),
        }
    }
}

impl fmt::Display for CardSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CardSpec::State(d) => write!(f, "state:{}", d.display()),
            CardSpec::Tcp(a) => write!(f, "tcp:{a}"),
            CardSpec::Pcsc(r) => write!(f, "pcsc:{r}"),
        }
    }
}

/// Opens a transport to the card `spec` names.
pub fn open(spec: &CardSpec) -> Result<Box<dyn Transport>, TransportError> {
    match spec {
        CardSpec::State(dir) => {
            let card = sim::open_file_card(dir, Clock::System)
                .map_err(|e| TransportError(format!("card in {}: {e}", dir.display())))?;
            Ok(Box::new(InProcess(card)))
        }
        CardSpec::Tcp(addr) => {
            let client = TcpCardClient::connect(addr.as_str())
                .map_err(|e| TransportError(format!("connecting to card-sim at {addr}: {e}")))?;
            Ok(Box::new(Tcp(client)))
        }
        #[cfg(feature = "pcsc")]
        CardSpec::Pcsc(reader) => Ok(Box::new(pcsc_reader::PcscReader::connect(reader)?)),
        #[cfg(not(feature = "pcsc"))]
        CardSpec::Pcsc(_) => Err(TransportError(
            "this openpsd was built without PC/SC support (cargo feature `pcsc`)".into(),
        )),
    }
}

/// A card run in this process.
pub struct InProcess(pub FileCard);

impl Transport for InProcess {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, TransportError> {
        let mut reply = Vec::new();
        self.0.transmit(apdu, &mut reply);
        Ok(reply)
    }
}

/// A `card-sim serve --tcp` card.
pub struct Tcp(pub TcpCardClient);

impl Transport for Tcp {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, TransportError> {
        self.0
            .transmit(apdu)
            .map_err(|e| TransportError(format!("card-sim connection: {e}")))
    }
}

#[cfg(feature = "pcsc")]
mod pcsc_reader {
    //! A card in a PC/SC reader, through the `pcsc` crate (libpcsclite).
    use super::{Transport, TransportError};

    /// A connected PC/SC card.
    pub struct PcscReader {
        card: pcsc::Card,
        buf: Vec<u8>,
    }

    impl PcscReader {
        /// Connects to the reader named `reader` (or with that index in the list).
        pub fn connect(reader: &str) -> Result<Self, TransportError> {
            let err = |what: &str, e: pcsc::Error| TransportError(format!("PC/SC {what}: {e}"));
            let ctx = pcsc::Context::establish(pcsc::Scope::User).map_err(|e| err("context", e))?;
            let names: Vec<std::ffi::CString> = ctx
                .list_readers_owned()
                .map_err(|e| err("reader list", e))?;
            let wanted = names
                .iter()
                .enumerate()
                .find(|(i, n)| n.to_string_lossy() == reader || reader.parse() == Ok(*i))
                .map(|(_, n)| n.clone())
                .ok_or_else(|| {
                    let list: Vec<_> = names
                        .iter()
                        .map(|n| n.to_string_lossy().into_owned())
                        .collect();
                    TransportError(format!("no PC/SC reader '{reader}' (readers: {list:?})"))
                })?;
            let card = ctx
                .connect(&wanted, pcsc::ShareMode::Shared, pcsc::Protocols::ANY)
                .map_err(|e| err("connect", e))?;
            Ok(Self {
                card,
                buf: vec![0; pcsc::MAX_BUFFER_SIZE_EXTENDED],
            })
        }
    }

    impl Transport for PcscReader {
        fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, TransportError> {
            self.card
                .transmit(apdu, &mut self.buf)
                .map(<[u8]>::to_vec)
                .map_err(|e| TransportError(format!("PC/SC transmit: {e}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_specs() {
        assert_eq!("state:/tmp/c".parse(), Ok(CardSpec::State("/tmp/c".into())));
        assert_eq!(
            "tcp:127.0.0.1:35990".parse(),
            Ok(CardSpec::Tcp("127.0.0.1:35990".into()))
        );
        assert_eq!(
            "pcsc:Virtual PCD 00 00".parse(),
            Ok(CardSpec::Pcsc("Virtual PCD 00 00".into()))
        );
        for bad in ["", "tcp:nohost", "state:", "usb:1", "pcsc:"] {
            assert!(bad.parse::<CardSpec>().is_err(), "{bad}");
        }
    }
}
