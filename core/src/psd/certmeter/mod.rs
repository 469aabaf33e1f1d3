//! The certificate meter (seed 004, EP 0 762 692; `docs/certmeter.md`): paid security
//! services of the PSD. Fees come from a vendor-signed rate table and are debited from a
//! register set's DR like postage; keys of one purpose each are generated inside and
//! certified by the back office's CA; postmarks are RFC 3161 time-stamp tokens in a compact
//! form.
//!
//! The message formats here compile always (the back office and the host read them); the
//! commands answer only with the `certmeter` feature.

pub mod anchor;
pub mod attestation;
pub mod rates;
