//! The platform a PSD gets in a browser or in Node: randomness from 32 bytes of host
//! entropy, and the date the host vouches for.

use openpsd_core::platform::Platform;
use openpsd_core::types::Date;
use sha2::{Digest, Sha256};

/// Length of the entropy a host hands over (`crypto.getRandomValues(new Uint8Array(32))`).
pub const ENTROPY_LEN: usize = 32;

/// Randomness for a card in a host without an OS: a SHA-256 counter-mode stream keyed by
/// 32 bytes of entropy the host gathered (`crypto.getRandomValues` in a browser). Written
/// here because the only randomness the core needs is a few key bytes per device, and a
/// full DRBG crate would pull a second `rand_core` into the module.
pub struct HostEntropy {
    seed: [u8; ENTROPY_LEN],
    counter: u64,
    today: Option<Date>,
    /// The time the host vouches for (Unix seconds): the certificate meter's clock.
    #[cfg(feature = "certmeter")]
    now: Option<u64>,
}

impl HostEntropy {
    /// A generator keyed by `seed`; `today` is the date the host vouches for, if any.
    pub fn new(seed: [u8; ENTROPY_LEN], today: Option<Date>) -> Self {
        Self {
            seed,
            counter: 0,
            today,
            #[cfg(feature = "certmeter")]
            now: None,
        }
    }

    /// Sets (or clears) the time the host vouches for, Unix seconds.
    #[cfg(feature = "certmeter")]
    pub fn set_now(&mut self, now: Option<u64>) {
        self.now = now;
    }

    /// Sets (or clears) the date the host vouches for.
    pub fn set_today(&mut self, today: Option<Date>) {
        self.today = today;
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

    #[cfg(feature = "certmeter")]
    fn now(&self) -> Option<u64> {
        self.now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
