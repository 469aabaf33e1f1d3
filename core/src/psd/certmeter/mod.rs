//! The certificate meter (seed 004, issue 15): the PSD as a metered signer of postmarks
//! (RFC 3161 time-stamps), certificates and payments, charged from its register sets.
//!
//! [`tst`] writes the DER the card signs for a postmark (TSTInfo and the CMS signed
//! attributes) and the compact postmark that carries it; the host side (`openpsd-pki`)
//! expands the compact form into a TimeStampToken.

pub mod tst;
