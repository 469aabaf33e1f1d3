//! Host-side X.509 and CMS for openpsd (layer 1 in docs/architecture.md): the `openpsd` CLI,
//! the certificate authority and the tests use it; the card and the browser module never
//! do (CMS and X.509 would cost the module about 20 KB gzip of a 150 KB budget).
//!
//! [`postmark`] turns the card's compact postmark
//! ([`openpsd_core::psd::certmeter::tst::CompactPostmark`]) into an RFC 3161
//! TimeStampToken that stock `openssl ts -verify` accepts, back again without loss, and
//! verifies a token natively. [`sign`] does the same for the card's document signatures
//! (a detached CMS SignedData for `openssl cms -verify`). [`cms`] holds the few CMS
//! structures both need.

pub mod cms;
pub mod postmark;
pub mod sign;

/// PEM of a DER object under `label` (e.g. `CERTIFICATE`), 64-column base64, LF endings.
pub fn pem(label: &str, der_bytes: &[u8]) -> String {
    der::pem::encode_string(label, der::pem::LineEnding::LF, der_bytes).unwrap_or_default()
}

/// The DER inside a PEM document, or the bytes themselves if they are not PEM.
pub fn der_of(pem_or_der: &[u8]) -> anyhow::Result<Vec<u8>> {
    if !pem_or_der.starts_with(b"-----BEGIN") {
        return Ok(pem_or_der.to_vec());
    }
    let (_, der_bytes) =
        der::pem::decode_vec(pem_or_der).map_err(|e| anyhow::anyhow!("not a PEM document: {e}"))?;
    Ok(der_bytes)
}
