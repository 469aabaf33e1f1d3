//! The host's side of every card contract, written once (`docs/apdu.md`).
//!
//! Whatever carries APDUs — an in-process card, card-sim's TCP transport, a PC/SC reader, a
//! browser's wasm device — implements [`Link`]. [`exchange`] sends one command over it,
//! follows `61xx` with GET RESPONSE and `6Cxx` with the corrected Le (ISO 7816-4 5.3.3),
//! keeps the data of a `9000` and maps every other status word to [`crate::Status`], the
//! card's own table, as one error type, [`ClientError`]. On top of that sit the command
//! builders ([`psd_apdu`], [`purse_apdu`]), the typed calls ([`PsdClient`],
//! [`PurseClient`]) and the value-transfer driver ([`transfer`]).
//!
//! A new card command is added here once (builder + typed call) and every front end —
//! the `openpsd` CLI, the wasm API, card-sim's tools, the back-office demo, the tests —
//! gets it by calling it.

mod error;
mod exchange;
mod link;
mod psd;
pub mod psd_apdu;
mod purse;
pub mod purse_apdu;
pub mod transfer;

pub use error::{ClientError, Side};
pub use exchange::{command, exchange, sw, MAX_GET_RESPONSE};
pub use link::{Link, LinkError};
pub use psd::PsdClient;
pub use purse::{PurseClient, PurseStatus};
