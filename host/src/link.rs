//! The host's transports as core's [`Link`]: what `openpsd_core::transfer::host` (the
//! transfer driver) and the merchant terminal drive cards through. Responses that come in
//! pieces (`61xx`) are fetched with GET RESPONSE here, so the driver sees one response.

use openpsd_core::psd::host as psd_host;
use openpsd_core::status::SW1_BYTES_REMAINING;
pub use openpsd_core::transfer::host::Link;

use crate::transport::{open, CardSpec, Transport, TransportError};

/// GET RESPONSE rounds before giving up on a card that keeps answering `61xx`.
const MAX_GET_RESPONSE: usize = 64;

/// A card behind one of the host's transports, as a [`Link`].
pub struct CardLink {
    transport: Box<dyn Transport>,
}

impl CardLink {
    /// A link over `transport`.
    pub fn new(transport: Box<dyn Transport>) -> Self {
        Self { transport }
    }

    /// Opens the card `spec` names.
    pub fn open(spec: &CardSpec) -> Result<Self, TransportError> {
        open(spec).map(Self::new)
    }
}

impl Link for CardLink {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, String> {
        let mut data = Vec::new();
        let mut resp = self.transport.transmit(apdu).map_err(|e| e.0)?;
        for _ in 0..MAX_GET_RESPONSE {
            if resp.len() < 2 || resp[resp.len() - 2] != SW1_BYTES_REMAINING {
                data.extend_from_slice(&resp);
                return Ok(data);
            }
            data.extend_from_slice(&resp[..resp.len() - 2]);
            resp = self
                .transport
                .transmit(&psd_host::command(0x00, 0xC0, 0, 0, &[], 256))
                .map_err(|e| e.0)?;
        }
        Err("the card kept answering 61xx (more data) without end".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A card that answers in 3-byte pieces.
    struct Pieces(Vec<u8>);

    impl Transport for Pieces {
        fn transmit(&mut self, _apdu: &[u8]) -> Result<Vec<u8>, TransportError> {
            let n = self.0.len().min(3);
            let mut out: Vec<u8> = self.0.drain(..n).collect();
            if self.0.is_empty() {
                out.extend_from_slice(&[0x90, 0x00]);
            } else {
                out.extend_from_slice(&[0x61, self.0.len().min(255) as u8]);
            }
            Ok(out)
        }
    }

    #[test]
    fn pieces_are_joined() {
        let mut link = CardLink::new(Box::new(Pieces((1..=10).collect())));
        let resp = link.transmit(&[0x80, 0xCA, 0, 1, 0]).unwrap();
        let mut want: Vec<u8> = (1..=10).collect();
        want.extend_from_slice(&[0x90, 0x00]);
        assert_eq!(resp, want);
    }
}
