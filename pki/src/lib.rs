//! Host-side X.509 and CMS for openpsd (layer 1 in docs/architecture.md): the `openpsd` CLI,
//! the certificate authority and the tests use it; the card and the browser module never
//! do (CMS and X.509 would cost the module about 20 KB gzip of a 150 KB budget).
//!
//! [`postmark`] turns the card's compact postmark
//! ([`openpsd_core::psd::certmeter::tst::CompactPostmark`]) into an RFC 3161
//! TimeStampToken that stock `openssl ts -verify` accepts, back again without loss, and
//! verifies a token natively. [`cms`] holds the few CMS structures this needs.

pub mod cms;
pub mod postmark;
