//! openpsd's demo (`backoffice-demo`, the README's main job): the three back-office
//! services with a PSD in the card simulator refilled through the meter server by the host
//! library ([`demo`]), and the web demo's listener ([`web`]): static files, the meter
//! server's API passed through, the personalization room for browser PSDs and the purse
//! issuer.
//!
//! This is the only crate that links both the card simulator and the services: the
//! services themselves (and the `backoffice` binary that serves them) carry no simulator.

pub mod demo;
pub mod web;
