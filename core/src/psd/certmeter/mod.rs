//! The certificate meter (seed 004, EP 0 762 692; `docs/certmeter.md`): paid security
//! services of the PSD. Fees come from a vendor-signed rate table ([`rates`]) and are
//! debited from a register set's DR like postage; keys of one purpose each are generated
//! inside ([`keys`], attested by [`attestation`]) and certified by the back office's CA,
//! whose key the vendor vouches for ([`anchor`]); postmarks ([`postmark`]) are RFC 3161
//! time-stamp tokens in a compact form ([`tst`]). [`state`] is the record, [`info`] its
//! public view (GET DATA `00 05`). [`sign`] signs documents as CMS signers; [`validate`]
//! checks a postmark for a fee and answers a device-signed receipt (Fig. 4); [`agent`] makes
//! the PSD the customer's agent CA (Fig. 3A); [`credit`] holds a creditor's line of credit
//! and draws payment certificates on it (Figs. 7-9); [`revoke`] is revocation (Fig. 6): the
//! request to the CA, its order and the PSD's confirmation. [`service`] holds what every
//! paid service shares: its time, its retry and its one commit.
//!
//! The message formats compile always (the back office and the host read them); the
//! commands answer only with the `certmeter` feature.

pub mod agent;
pub mod anchor;
pub mod attestation;
#[cfg(feature = "certmeter")]
mod certificate;
pub mod credit;
pub mod info;
#[cfg(feature = "certmeter")]
mod keys;
#[cfg(feature = "certmeter")]
mod pkcs8;
pub mod postmark;
pub mod rates;
pub mod revoke;
#[cfg(feature = "certmeter")]
mod service;
pub mod sign;
pub mod state;
pub mod tst;
pub mod validate;
