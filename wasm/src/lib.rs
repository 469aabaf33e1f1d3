//! openpsd for browsers and JS apps — thin for now.
//!
//! This crate proves the core's PSD runs unchanged on `wasm32-unknown-unknown`: a [`Psd`]
//! is a card with the PSD applet on the in-memory store, reached through raw APDUs. The
//! wasm-bindgen API, the sealed state blob, the npm package and the browser client are the
//! browser issue's work and are not built yet.
#![deny(unsafe_code)]

use openpsd_core::platform::Platform;
use openpsd_core::psd::psd_card;
use openpsd_core::store::{MemStore, StoreError};
use openpsd_core::types::Date;
use openpsd_core::Card;
use sha2::{Digest, Sha256};

/// Randomness for a card in a host without an OS: a SHA-256 counter-mode stream keyed by
/// 32 bytes of entropy the host gathered (`crypto.getRandomValues` in a browser). Written
/// here because the only randomness the core needs is a few key bytes per device, and a
/// full DRBG crate would pull a second `rand_core` into the module.
pub struct HostEntropy {
    seed: [u8; 32],
    counter: u64,
    today: Option<Date>,
}

impl HostEntropy {
    /// A generator keyed by `seed`; `today` is the date the host vouches for, if any.
    pub fn new(seed: [u8; 32], today: Option<Date>) -> Self {
        Self {
            seed,
            counter: 0,
            today,
        }
    }
}

impl Drop for HostEntropy {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.seed);
    }
}

impl Platform for HostEntropy {
    fn fill_random(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(32) {
            let block = Sha256::new()
                .chain_update(self.seed)
                .chain_update(self.counter.to_be_bytes())
                .finalize();
            self.counter = self.counter.wrapping_add(1);
            chunk.copy_from_slice(&block[..chunk.len()]);
        }
    }

    fn today(&self) -> Option<Date> {
        self.today
    }
}

/// A PSD card held in memory.
pub struct Psd {
    card: Card<MemStore, HostEntropy>,
}

impl Psd {
    /// A blank PSD (personalize it with the PERSONALIZE APDU).
    pub fn new(entropy: [u8; 32], today: Option<Date>) -> Result<Self, StoreError> {
        Ok(Self {
            card: psd_card(MemStore::new(), HostEntropy::new(entropy, today))?,
        })
    }

    /// Sends one command APDU; returns the response APDU (data ‖ SW1 SW2).
    pub fn transmit(&mut self, apdu: &[u8]) -> Vec<u8> {
        self.card.transmit(apdu)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openpsd_core::psd::host;

    #[test]
    fn a_blank_psd_answers_select_and_get_data() {
        let mut psd = Psd::new([1; 32], None).unwrap();
        assert_eq!(host::sw(&psd.transmit(&host::select())), 0x9000);
        assert_eq!(psd.transmit(&host::get_data()), vec![0x00, 0x90, 0x00]);
        assert_eq!(psd.transmit(&[0x00]), vec![0x67, 0x00]);
    }

    #[test]
    fn entropy_streams_differ_by_seed() {
        let (mut a, mut b) = (
            HostEntropy::new([1; 32], None),
            HostEntropy::new([2; 32], None),
        );
        let (mut x, mut y) = ([0u8; 40], [0u8; 40]);
        a.fill_random(&mut x);
        b.fill_random(&mut y);
        assert_ne!(x, y);
        let mut z = [0u8; 40];
        a.fill_random(&mut z);
        assert_ne!(x, z, "the stream moves on");
    }
}
