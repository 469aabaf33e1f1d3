//! The kit every back-office service is built from (`docs/refill.md`, `docs/security.md`):
//! mutual TLS and the back-office CA ([`tls`], [`pki`]), who may call which route
//! ([`access`]), the one
//! [`error::ApiError`] they answer with, the SQLite handle for async handlers ([`db`]),
//! running a router on a listener with the JSON 404 ([`server`]), calls to another service
//! that pass its refusals on ([`upstream`]), key files ([`keys`]), the OS random source and
//! the protocol's field parsers ([`codec`]), and the crash tests' pause points
//! ([`failpoint`]). A service crate adds its schema, its routes and its rules; it never
//! depends on another service.

pub mod access;
pub mod codec;
pub mod db;
pub mod error;
pub mod failpoint;
pub mod keys;
pub mod pki;
pub mod server;
pub mod tls;
pub mod upstream;
pub mod x509;

pub use error::ApiError;
pub use server::Service;
