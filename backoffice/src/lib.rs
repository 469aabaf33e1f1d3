//! openpsd's back office for remote refills (seed 000, EP 0 854 446, Fig. 4), the contract
//! in `docs/refill.md` (typed in `openpsd-protocol`): three services, each a crate with its
//! own SQLite file and HTTP JSON API, built from `openpsd-service-kit`.
//!
//! * `openpsd-kms` — key management system: holds every device's K1 (wrapped under its
//!   master key), verifies audits, seals refill combinations the recharging center signed,
//!   makes audit receipts.
//! * `openpsd-recharge` — recharging center: customer deposits, holds, debits; decides and
//!   signs refill combinations. Never holds K1.
//! * `openpsd-meter` — meter server: the host's only counterpart; runs the refill step by
//!   step and checks every audit against the device's history. Holds neither K1 nor money.
//!
//! No single service can make a valid refill. This crate wires them: [`spawn_all`] starts
//! the three on loopback ports talking HTTP to each other, as `backoffice serve --role all`
//! does. The demo (card simulator, web room) is `openpsd-demo`, apart.

pub mod server;

pub use openpsd_service_kit::{ApiError, Service};
pub use server::{spawn_all, Handles};
