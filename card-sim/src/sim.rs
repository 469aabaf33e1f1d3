//! A simulated card: the PSD applet on a persistent store, with its ATR and power states,
//! as the transports (vpcd, TCP, scripts) drive it.

use std::path::Path;

use openpsd_core::platform::Platform;
use openpsd_core::psd::psd_card;
use openpsd_core::store::{MemStore, Store, StoreError};
use openpsd_core::Card;

use crate::file_store::FileStore;
use crate::os_platform::{Clock, OsPlatform};

/// The ATR: direct convention (`3B`), T0 = `8n` (TD1 follows, n historical bytes), TD1 =
/// `80` (TD2 follows, T=0), TD2 = `01` (T=1), historical bytes "openpsd1", TCK. It offers
/// T=1, which vpcd always reports, so long responses travel whole.
pub const ATR: [u8; 13] = {
    let hist = *b"openpsd1";
    let mut atr = [0x3B, 0x88, 0x80, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let mut i = 0;
    while i < 8 {
        atr[4 + i] = hist[i];
        i += 1;
    }
    // TCK: XOR of every byte from T0 to the last historical byte.
    let mut tck = 0u8;
    let mut j = 1;
    while j < 12 {
        tck ^= atr[j];
        j += 1;
    }
    atr[12] = tck;
    atr
};

/// What a transport needs from a card.
pub trait SimulatedCard {
    /// Answer to reset.
    fn atr(&self) -> &[u8];
    /// Power off, power on or reset: volatile state is lost.
    fn reset(&mut self);
    /// One command APDU in, one response APDU out.
    fn transmit(&mut self, apdu: &[u8], reply: &mut Vec<u8>);
}

/// A PSD card on any store.
pub struct SimCard<S: Store, P: Platform> {
    card: Card<S, P>,
}

impl<S: Store, P: Platform> SimCard<S, P> {
    /// Loads the PSD from `store`.
    pub fn new(store: S, platform: P) -> Result<Self, StoreError> {
        Ok(Self {
            card: psd_card(store, platform)?,
        })
    }

    /// The card itself.
    pub fn card(&mut self) -> &mut Card<S, P> {
        &mut self.card
    }
}

impl<S: Store, P: Platform> SimulatedCard for SimCard<S, P> {
    fn atr(&self) -> &[u8] {
        &ATR
    }
    fn reset(&mut self) {
        self.card.reset();
    }
    fn transmit(&mut self, apdu: &[u8], reply: &mut Vec<u8>) {
        self.card.handle(apdu, reply);
    }
}

/// A card whose memory is a state directory.
pub type FileCard = SimCard<FileStore, OsPlatform>;
/// A card in memory only (scripts, tests).
pub type MemCard = SimCard<MemStore, OsPlatform>;

/// Opens the card kept in `dir`; a missing or unreadable state is an error.
pub fn open_file_card(dir: &Path, clock: Clock) -> Result<FileCard, StoreError> {
    SimCard::new(FileStore::open(dir)?, OsPlatform::new(clock))
}

/// Creates a blank card (not yet personalized) in `dir`.
pub fn create_file_card(dir: &Path, clock: Clock) -> Result<FileCard, StoreError> {
    SimCard::new(FileStore::create(dir)?, OsPlatform::new(clock))
}

/// A blank card in memory.
pub fn mem_card(clock: Clock) -> Result<MemCard, StoreError> {
    SimCard::new(MemStore::new(), OsPlatform::new(clock))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atr_offers_t1_and_has_a_valid_check_byte() {
        assert_eq!(&ATR[..4], &[0x3B, 0x88, 0x80, 0x01]);
        assert_eq!(ATR[1..].iter().fold(0, |a, b| a ^ b), 0, "XOR T0..TCK is 0");
    }
}
