//! openpsd's HTTP JSON contract (`docs/refill.md`), typed once: the messages of the
//! meter's [`customer`]s, the [`kms`], the recharging center ([`recharge`]), the [`meter`]
//! server, the [`post`] office, the [`vendor`]'s rate tables and trust anchors and the demo
//! [`room`]; the [`state`] strings and [`error`] codes as enums; the [`codec`] for hex
//! fields and identifiers at the JSON edge; and the one file format parties hand each
//! other, the public [`scheme`] file.
//!
//! The services (`backoffice/`), the host's meter client (`host/src/refill.rs`) and the
//! tests all use these types, and `tests/js.rs` checks the browser client
//! (`web-demo/meter.js`) against the enums, so the contract cannot drift between them.
//! serde only — no HTTP server, async runtime or database — so any front end can link it.

pub mod ca;
pub mod codec;
pub mod creditor;
pub mod customer;
pub mod datacenter;
pub mod error;
pub mod kms;
pub mod license;
pub mod meter;
pub mod post;
pub mod recharge;
pub mod room;
pub mod scheme;
pub mod state;
pub mod vendor;

pub use codec::BadField;
pub use customer::*;
pub use error::{ErrorBody, ErrorCode, ErrorDetail};
pub use kms::*;
pub use meter::*;
pub use post::{DeviceCredit, PostFinding, SetCredit};
pub use recharge::*;
pub use room::*;
pub use state::{HoldState, Outcome, RefillState};
pub use vendor::{
    AnchorRequest, AnchorView, Anchors, DeviceUpdates, RatePublication, RateTableView, RateTables,
};
