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
pub mod payment;
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

/// The DER of a distinguished name written as RFC 4514 (`CN=bob,O=acme`, most specific
/// first) or as OpenSSL's `-subj` (`/O=acme/CN=bob`, least specific first; no escaped `/`).
/// Values are UTF8String.
pub fn name_der(text: &str) -> anyhow::Result<Vec<u8>> {
    use der::Encode as _;
    use std::str::FromStr as _;
    let rfc4514 = match text.strip_prefix('/') {
        Some(rest) => rest.split('/').rev().collect::<Vec<_>>().join(","),
        None => text.to_string(),
    };
    let name = x509_cert::name::Name::from_str(&rfc4514)
        .map_err(|e| anyhow::anyhow!("{text:?}: not a distinguished name: {e}"))?;
    if name.is_empty() {
        return Err(anyhow::anyhow!("{text:?}: an empty name"));
    }
    name.to_der()
        .map_err(|e| anyhow::anyhow!("{text:?}: not encodable: {e}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_in_either_order_encode_alike() {
        let a = super::name_der("CN=bob,O=acme").unwrap();
        let b = super::name_der("/O=acme/CN=bob").unwrap();
        assert_eq!(a, b);
        assert!(super::name_der("").is_err());
        assert!(super::name_der("nonsense").is_err());
    }
}
