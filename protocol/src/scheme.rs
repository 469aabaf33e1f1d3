//! The public scheme file: what a merchant terminal or a host may know about a value-transfer
//! scheme (`docs/purse.md` § Scheme files). `card-sim scheme public` writes it; a full scheme
//! file (the issuer's, with secrets) parses as this too, since it carries the same two fields.
//!
//! ```json
//! { "scheme": 7, "issuer_public_key": "04…" }
//! ```
//!
//! `issuer_public_key` is the issuer's P-256 key, SEC1 uncompressed, as 130 hex digits.

use openpsd_core::crypto::{self, PUBLIC_KEY_LEN};
use openpsd_core::types::SchemeId;
use serde::{Deserialize, Serialize};

/// What merchants and hosts may know about a scheme.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemePublic {
    /// The scheme ID.
    pub scheme: u32,
    /// The issuer's public key (SEC1 uncompressed), hex.
    pub issuer_public_key: String,
}

/// Why a scheme file's public part is unusable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SchemeFileError {
    /// Not JSON with the two fields.
    NotASchemeFile(String),
    /// `issuer_public_key` is not 130 hex digits.
    KeyLength,
    /// `issuer_public_key` is not a point of P-256.
    NotAPoint,
    /// The file could not be read.
    Io(String),
}

impl core::fmt::Display for SchemeFileError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SchemeFileError::NotASchemeFile(e) => {
                write!(f, "neither a scheme file nor an issuer key file: {e}")
            }
            SchemeFileError::KeyLength => f.write_str("issuer_public_key: expected 130 hex digits"),
            SchemeFileError::NotAPoint => f.write_str("issuer_public_key is not a P-256 point"),
            SchemeFileError::Io(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for SchemeFileError {}

impl SchemePublic {
    /// The public part of `id` with `issuer_key`.
    pub fn new(id: SchemeId, issuer_key: &[u8; PUBLIC_KEY_LEN]) -> Self {
        SchemePublic {
            scheme: id.0,
            issuer_public_key: hex::encode(issuer_key),
        }
    }

    /// Parses a scheme file's text (public or full).
    pub fn parse(text: &str) -> Result<Self, SchemeFileError> {
        serde_json::from_str(text).map_err(|e| SchemeFileError::NotASchemeFile(e.to_string()))
    }

    /// The issuer's public key as bytes, checked to be a valid P-256 point.
    pub fn issuer_key(&self) -> Result<[u8; PUBLIC_KEY_LEN], SchemeFileError> {
        let key: [u8; PUBLIC_KEY_LEN] = hex::decode(self.issuer_public_key.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(SchemeFileError::KeyLength)?;
        if !crypto::is_valid_public_key(&key) {
            return Err(SchemeFileError::NotAPoint);
        }
        Ok(key)
    }

    /// Reads a scheme file (public or full): scheme ID and checked issuer key.
    pub fn read_file(
        path: &std::path::Path,
    ) -> Result<(SchemeId, [u8; PUBLIC_KEY_LEN]), SchemeFileError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SchemeFileError::Io(format!("reading {}: {e}", path.display())))?;
        Self::parse(&text)?.checked()
    }

    /// Scheme ID and checked issuer key.
    pub fn checked(&self) -> Result<(SchemeId, [u8; PUBLIC_KEY_LEN]), SchemeFileError> {
        Ok((SchemeId(self.scheme), self.issuer_key()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_files_are_errors() {
        assert!(matches!(
            SchemePublic::parse("{}"),
            Err(SchemeFileError::NotASchemeFile(_))
        ));
        let short = SchemePublic::parse(r#"{"scheme":1,"issuer_public_key":"04ab"}"#).unwrap();
        assert_eq!(short.checked(), Err(SchemeFileError::KeyLength));
        let not_a_point = SchemePublic::new(SchemeId(1), &[4; PUBLIC_KEY_LEN]);
        assert_eq!(not_a_point.checked(), Err(SchemeFileError::NotAPoint));
    }
}
