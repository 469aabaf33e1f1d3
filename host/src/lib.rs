//! openpsd's host side: what a mailer's computer runs to use a PSD.
//!
//! [`transport::open`] reaches a card — in-process (a card-sim state directory), over
//! card-sim's TCP transport, or through any PC/SC reader (feature `pcsc`) — as core's
//! [`Link`]; core's client layer ([`openpsd_core::client`]: `PsdClient`, `PurseClient`,
//! the transfer driver) speaks the cards' APDU contract (`docs/apdu.md`) over it, with the
//! cards' status words mapped to [`openpsd_core::Status`], the one table the cards use.
//! What this crate adds is the mailer's side of the back office ([`refill`], logged in
//! with a [`session`]), a merchant
//! terminal ([`terminal`]) and refusals explained in words ([`purse::explain`]).

pub mod purse;
pub mod refill;
pub mod session;
pub mod transport;

pub use openpsd_core::client::{ClientError, Link, LinkError};

/// Core's typed PSD client over whichever link [`transport::open`] gave.
pub type PsdClient = openpsd_core::client::PsdClient<Box<dyn Link>>;
pub use transport::{open, CardSpec};

/// The merchant terminal (`openpsd pay`, `batch`, `terminal`): the `openpsd-terminal` crate.
pub use openpsd_terminal as terminal;
