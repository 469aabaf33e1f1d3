//! openpsd's back office for remote refills (seed 000, EP 0 854 446, Fig. 4), the contract
//! in `docs/refill.md`: three services, each with its own SQLite file and HTTP JSON API.
//!
//! * [`kms`] — key management system: holds every device's K1 (wrapped under its master
//!   key), verifies audits, seals refill combinations the recharging center signed, makes
//!   audit receipts.
//! * [`recharge`] — recharging center: customer deposits, holds, debits; decides and signs
//!   refill combinations. Never holds K1.
//! * [`meter`] — meter server: the host's only counterpart; runs the refill step by step
//!   and checks every audit against the device's history. Holds neither K1 nor money.
//!
//! No single service can make a valid refill. [`server::spawn_all`] starts the three on
//! loopback ports talking HTTP to each other, as `backoffice serve --role all` does.

#![deny(unsafe_code)]
#![warn(missing_docs, clippy::unwrap_used, clippy::expect_used)]

pub mod codec;
pub mod db;
pub mod demo;
pub mod error;
pub mod failpoint;
pub mod keys;
pub mod kms;
pub mod meter;
pub mod recharge;
pub mod server;
pub mod upstream;
pub mod web;

pub use error::ApiError;
pub use server::{spawn_all, Handles, Service};
