//! openpsd-core: the card side of openpsd.
//!
//! Everything a postal security device (PSD) needs that does not touch the outside world:
//! the ISO 7816-4 APDU layer ([`card`], [`apdu`], [`status`]), the transactional persistent
//! store interface ([`store`]), the crypto primitives behind small wrappers ([`crypto`]), the
//! host platform interface for randomness and time ([`platform`]), and the PSD applet itself
//! ([`psd`]) with its indicium verifier, the purse card applet ([`purse`]) and the
//! value-transfer messages between them ([`transfer`]). On the other side of the wire,
//! [`client`] is the one host layer every front end uses: a link trait, one `exchange`,
//! the command builders, typed calls for both cards and the transfer driver. No I/O, no
//! clock, no randomness except through [`platform::Platform`] and [`client::Link`]; hosts
//! (the card simulator, the wasm module, the CLI, tests) supply those.
#![no_std]

extern crate alloc;

pub mod apdu;
pub mod calendar;
pub mod card;
pub mod client;
pub mod crypto;
pub mod platform;
pub mod psd;
pub mod purse;
pub mod records;
pub mod status;
pub mod store;
pub mod transfer;
pub mod types;
#[cfg(feature = "vbox")]
pub mod vbox;
pub mod wire;

pub use card::{Applet, Card, Ctx};
pub use status::Status;
