//! What the host platform lends the card: randomness and (optionally) today's date.
//!
//! The core never reads a clock or an entropy source itself. A simulator passes the OS
//! random generator and the system date; the browser passes `crypto.getRandomValues`;
//! tests pass [`SeededPlatform`] so that every run produces the same keys and bytes.

use crate::types::Date;

/// Randomness and time, supplied by the host of the card.
pub trait Platform {
    /// Fills `buf` with cryptographically secure random bytes.
    fn fill_random(&mut self, buf: &mut [u8]);

    /// Today's date if the platform has a clock the device may trust, else `None`.
    fn today(&self) -> Option<Date>;

    /// The time in Unix seconds (UTC) if the platform has a clock finer than a date (the
    /// certificate meter's postmarks need one), else `None`, which is the default.
    fn now(&self) -> Option<u64> {
        None
    }
}

/// A deterministic platform for tests and benchmarks: a SHA-256 counter-mode stream from
/// a seed, and a fixed (settable) date. Never for real devices.
#[cfg(any(test, feature = "test-util"))]
#[derive(Clone, Debug)]
pub struct SeededPlatform {
    seed: [u8; 32],
    counter: u64,
    /// The date [`Platform::today`] reports.
    pub today: Option<Date>,
    /// The time [`Platform::now`] reports (Unix seconds).
    pub now: Option<u64>,
}

#[cfg(any(test, feature = "test-util"))]
impl SeededPlatform {
    /// A platform whose random stream is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        let mut s = [0u8; 32];
        s[..8].copy_from_slice(&seed.to_be_bytes());
        Self {
            seed: s,
            counter: 0,
            today: None,
            now: None,
        }
    }
}

#[cfg(any(test, feature = "test-util"))]
impl Platform for SeededPlatform {
    fn fill_random(&mut self, buf: &mut [u8]) {
        use sha2::{Digest, Sha256};
        for chunk in buf.chunks_mut(32) {
            let mut h = Sha256::new();
            h.update(self.seed);
            h.update(self.counter.to_be_bytes());
            self.counter = self.counter.wrapping_add(1);
            let block = h.finalize();
            chunk.copy_from_slice(&block[..chunk.len()]);
        }
    }

    fn today(&self) -> Option<Date> {
        self.today
    }

    fn now(&self) -> Option<u64> {
        self.now
    }
}
