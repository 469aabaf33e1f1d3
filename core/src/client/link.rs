//! [`Link`]: the one way to carry a command APDU to a card and its response back.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;

/// Why an APDU got no answer. The command may or may not have reached the card, so a
/// caller that cares (an indicium, a refill, a transfer step) retries with the same
/// transaction data rather than a new request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkError(pub String);

impl core::fmt::Display for LinkError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.0)
    }
}

impl core::error::Error for LinkError {}

impl From<String> for LinkError {
    fn from(s: String) -> Self {
        LinkError(s)
    }
}

impl From<&str> for LinkError {
    fn from(s: &str) -> Self {
        LinkError(s.into())
    }
}

/// Something that carries one command APDU to a card and brings back its response APDU
/// (data ‖ SW1 SW2), as the card sent it: `61xx` and `6Cxx` are [`super::exchange`]'s
/// business, not the link's.
pub trait Link {
    /// Sends `apdu`; the response includes the status word.
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, LinkError>;
}

impl<S: crate::store::Store, P: crate::platform::Platform> Link for crate::card::Card<S, P> {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, LinkError> {
        Ok(crate::card::Card::transmit(self, apdu))
    }
}

impl<L: Link + ?Sized> Link for &mut L {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, LinkError> {
        (**self).transmit(apdu)
    }
}

impl<L: Link + ?Sized> Link for Box<L> {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, LinkError> {
        (**self).transmit(apdu)
    }
}
