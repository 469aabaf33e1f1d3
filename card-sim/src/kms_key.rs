//! The key management system's key files, as the KMS keeps them (`backoffice/kms`): the
//! signing key `kms-signing.key` (64 hex, the P-256 scalar, mode 0600) and its public half
//! `kms-public.key` (130 hex, SEC1 uncompressed).
//!
//! A PSD receives the public key at personalization and accepts refill messages and audit
//! receipts only when the KMS's signature verifies under it. The vendor's test bench
//! (`card-sim bench-kms`, `card-sim refill`) plays the KMS with a key pair of its own in
//! the same format, kept outside every card's directory; it holds no secret of any device.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use openpsd_core::crypto::{self, IndiciumKey, PUBLIC_KEY_LEN};
use openpsd_core::platform::Platform;
use zeroize::Zeroizing;

/// File name of the signing key in a KMS directory.
pub const SIGNING_KEY_FILE: &str = "kms-signing.key";
/// File name of the public key in a KMS directory.
pub const PUBLIC_KEY_FILE: &str = "kms-public.key";

/// Reads a KMS public key file (130 hex digits).
pub fn read_public(path: &Path) -> Result<[u8; PUBLIC_KEY_LEN]> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut key = [0u8; PUBLIC_KEY_LEN];
    hex::decode_to_slice(text.trim(), &mut key).map_err(|_| {
        anyhow!(
            "{}: expected the KMS's public key, 130 hex digits (kms-public.key)",
            path.display()
        )
    })?;
    if !crypto::is_valid_public_key(&key) {
        return Err(anyhow!("{}: not a P-256 point", path.display()));
    }
    Ok(key)
}

/// Reads a KMS signing key file (64 hex digits).
pub fn read_signing(path: &Path) -> Result<IndiciumKey> {
    let text = Zeroizing::new(
        fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
    );
    let expected = || {
        anyhow!(
            "{}: expected a KMS signing key, 64 hex digits (kms-signing.key)",
            path.display()
        )
    };
    let bytes = Zeroizing::new(hex::decode(text.trim()).map_err(|_| expected())?);
    if bytes.len() != 32 {
        return Err(expected());
    }
    IndiciumKey::from_bytes(&bytes)
        .ok_or_else(|| anyhow!("{}: not a P-256 private key", path.display()))
}

/// Makes a new key pair in `dir` (created 0700 if missing; refuses to overwrite a key):
/// returns the paths of the signing key and the public key.
pub fn create(dir: &Path, platform: &mut dyn Platform) -> Result<(PathBuf, PathBuf)> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let key = IndiciumKey::generate(platform);
    let signing = dir.join(SIGNING_KEY_FILE);
    let public = dir.join(PUBLIC_KEY_FILE);
    if public.exists() {
        return Err(anyhow!("{} exists already", public.display()));
    }
    let hex_key = Zeroizing::new(hex::encode(key.secret_bytes().as_ref()) + "\n");
    crate::scheme::write_new_private(&signing, hex_key.as_bytes())?;
    fs::write(&public, hex::encode(key.public_key()) + "\n")
        .with_context(|| format!("writing {}", public.display()))?;
    Ok((signing, public))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::os_platform::OsPlatform;

    #[test]
    fn a_created_pair_reads_back_and_is_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let kms = dir.path().join("kms");
        let (s, p) = create(&kms, &mut OsPlatform::default()).unwrap();
        let key = read_signing(&s).unwrap();
        assert_eq!(read_public(&p).unwrap(), key.public_key());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&s).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(create(&kms, &mut OsPlatform::default()).is_err());
        assert_eq!(read_public(&p).unwrap(), key.public_key());
        // Each file read as the other is refused with a message naming what was expected.
        let e = read_public(&s).unwrap_err().to_string();
        assert!(e.contains("130 hex"), "{e}");
        let e = read_signing(&p).unwrap_err().to_string();
        assert!(e.contains("64 hex"), "{e}");
    }
}
