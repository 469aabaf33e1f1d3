//! Ways to reach a card, chosen by a [`CardSpec`], each a core [`Link`] (`61xx`, `6Cxx`
//! and status words are core's [`openpsd_core::client::exchange`]'s business):
//!
//! * `state:DIR` — the card kept in a card-sim state directory, run in this process;
//! * `tcp:HOST:PORT` — a `card-sim serve --tcp` process;
//! * `pcsc:READER` — a PC/SC reader by name (or by index, `pcsc:0`), e.g. pcscd's vpcd
//!   reader "Virtual PCD 00 00" with `card-sim serve --vpcd` behind it (feature `pcsc`).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use card_sim::os_platform::Clock;
use card_sim::sim;
use card_sim::transport::TcpCardClient;
pub use openpsd_core::client::{Link, LinkError};

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

/// Opens a link to the card `spec` names.
pub fn open(spec: &CardSpec) -> Result<Box<dyn Link>, LinkError> {
    match spec {
        CardSpec::State(dir) => {
            let card = sim::open_file_card(dir, Clock::System).map_err(|e| {
                // What to do next, when the directory holds no card at all.
                let hint = if dir.join("state.log").exists() {
                    ""
                } else {
                    ": check --card, or make a card there with `card-sim personalize --state DIR`"
                };
                LinkError(format!("card in {}: {e}{hint}", dir.display()))
            })?;
            Ok(Box::new(card))
        }
        CardSpec::Tcp(addr) => {
            let client = TcpCardClient::connect(addr.as_str()).map_err(|e| {
                LinkError(format!(
                    "connecting to card-sim at {addr}: {e}: is a card served there? \
                     (`card-sim serve --state DIR --tcp {addr}`; `bash scripts/demo.sh` serves \
                     its card at tcp:127.0.0.1:35990)"
                ))
            })?;
            Ok(Box::new(client))
        }
        #[cfg(feature = "pcsc")]
        CardSpec::Pcsc(reader) => Ok(Box::new(pcsc_reader::PcscReader::connect(reader)?)),
        #[cfg(not(feature = "pcsc"))]
        CardSpec::Pcsc(_) => Err(LinkError(
            "this openpsd was built without PC/SC support (cargo feature `pcsc`): name another \
             card with --card state:DIR or tcp:HOST:PORT, or build with `--features pcsc`"
                .into(),
        )),
    }
}

#[cfg(feature = "pcsc")]
mod pcsc_reader {
    //! A card in a PC/SC reader, through the `pcsc` crate (libpcsclite).
    use super::{Link, LinkError};

    /// A connected PC/SC card.
    pub struct PcscReader {
        card: pcsc::Card,
        buf: Vec<u8>,
    }

    impl PcscReader {
        /// Connects to the reader named `reader` (or with that index in the list).
        pub fn connect(reader: &str) -> Result<Self, LinkError> {
            let err = |what: &str, e: pcsc::Error| LinkError(format!("PC/SC {what}: {e}"));
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
                    LinkError(format!("no PC/SC reader '{reader}' (readers: {list:?})"))
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

    impl Link for PcscReader {
        fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, LinkError> {
            self.card
                .transmit(apdu, &mut self.buf)
                .map(<[u8]>::to_vec)
                .map_err(|e| LinkError(format!("PC/SC transmit: {e}")))
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
