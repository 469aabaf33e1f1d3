//! openpsd's host side: what a mailer's computer runs to use a PSD.
//!
//! A [`Transport`] carries APDUs to a card — in-process (a card-sim state directory), over
//! card-sim's TCP transport, or through any PC/SC reader (feature `pcsc`) — and a
//! [`PsdClient`] speaks the PSD's APDU contract (`docs/apdu.md`) over it, with the card's
//! status words mapped to [`openpsd_core::Status`], the one table the card itself uses.

pub mod client;
pub mod link;
pub mod purse;
pub mod refill;
pub mod terminal;
pub mod transport;

pub use client::{HostError, PsdClient};
pub use transport::{open, CardSpec, Transport, TransportError};
