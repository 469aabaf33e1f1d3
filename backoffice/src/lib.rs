//! openpsd's back office for remote refills (seed 000, EP 0 854 446, Fig. 4), the contract
//! in `docs/refill.md` (typed in `openpsd-protocol`): three services, each a crate with its
//! own SQLite file and HTTP JSON API, built from `openpsd-service-kit`.
//!
//! * `openpsd-kms` — key management system: holds no device secret, only its own signing
//!   key; registers and revokes devices, verifies audits with each device's public key,
//!   signs refill combinations the recharging center signed into refill messages, signs
//!   audit receipts.
//! * `openpsd-recharge` — recharging center: customer deposits, holds, debits; decides and
//!   signs refill combinations. Cannot make a refill message.
//! * `openpsd-meter` — meter server: the host's only counterpart; runs the refill step by
//!   step and checks every audit against the device's history. Holds no key that makes a
//!   refill message, and no money.
//!
//! No single service can make a valid refill. This crate wires them: [`spawn_all`] starts
//! the three on loopback ports talking HTTPS to each other, as `backoffice serve --role all`
//! does. The demo (card simulator, web room) is `openpsd-demo`, apart.

pub mod server;

pub use openpsd_service_kit::{ApiError, Service};
pub use server::{spawn_all, Handles};
