//! The card simulator's library: cards with persistent memory and the ways to reach them.
//!
//! [`sim`] makes a card (PSD or purse, chosen by what its store holds) on the tear-safe
//! [`file_store`] with the [`os_platform`]'s randomness and date; [`transport`] serves it to
//! pcscd's vpcd or over TCP (and is a TCP client, a core `Link`), with mutual TLS by
//! [`tls`]; [`script`] runs and checks
//! APDU scripts; [`personalize`], [`scheme`] and [`issuer`] are the personalization and
//! issuer tools behind `card-sim personalize`, `scheme`, `refill`, `unblock-pin` and
//! `reset-recognition`, built on core's client layer; [`settlement`] is the issuer's
//! settlement of a transfer that cannot end by itself (`pending`, `release-partner`,
//! `settle`, `apply-settlement`).

pub mod file_store;
pub mod issuer;
pub mod kms_key;
pub mod os_platform;
pub mod personalize;
pub mod scheme;
pub mod script;
pub mod settlement;
pub mod sim;
pub mod tls;
pub mod transport;
