//! openpsd for browsers and JS apps: the core's PSD and purse applets behind a wasm-bindgen API.
//!
//! A [`Psd`] is a card with the PSD applet of `openpsd-core` on the in-memory store — the
//! same code as the card simulator, not a re-write — with typed methods for every flow,
//! its persistent store saved and restored as a checked blob ([`state`]), the indicium
//! verifier ([`indicium`]) and a Data Matrix renderer ([`barcode`]). `wasm/API.md` is the
//! JS contract. Only [`js`] touches JS values; everything else is plain Rust, tested
//! natively (`cargo test -p openpsd-wasm`) and in wasm (`tests/web.rs`).

pub mod barcode;
pub mod card;
#[cfg(feature = "certmeter")]
pub mod certmeter;
pub mod device;
pub mod entropy;
pub mod error;
pub mod indicium;
pub mod js;
pub mod licenses;
pub mod personalize;
pub mod purse;
pub mod state;
pub mod views;
#[cfg(feature = "webcrypto")]
pub mod webcrypto;

pub use device::PsdDevice;
pub use entropy::HostEntropy;
pub use error::{ApiError, ApiResult, ErrorKind};
pub use js::{Psd, Purse};
pub use purse::PurseDevice;
