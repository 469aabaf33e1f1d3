//! The post office (issue 13; seed 000's verifier at the end of flow 2): what the post sees
//! of the mail. Label scans are decoded ([`label`]), every indicium is verified against the
//! device key the KMS registered ([`verify`]), and every accepted piece is recorded by
//! (device, license, piece count), so that a reused label, a rolled-back or cloned PSD, a
//! register edited in a software PSD's memory, and postage nobody paid for are found from
//! the indicia themselves. Findings go to the meter server, which quarantines the device.

pub mod label;
pub mod licenses;
pub mod postgres;
pub mod registry;
pub mod service;
pub mod sqlite;
pub mod store;
pub mod verify;

pub use service::{Config, PostOffice, REPORT_RETRY};
