//! A value-transfer scheme and its issuer (seed 002): the issuer's keys that certify every
//! PSD's and purse's recognition key (so devices of one scheme recognise each other), the
//! purses' purchase keys, and authorise their PIN unblock and recognition reset.
//!
//! A scheme file (JSON, hex, mode 0600; the issuer's, never in a card's directory) holds:
//!
//! * `scheme` — the scheme ID (u32);
//! * `issuer_signing_key` — ECDSA P-256 scalar: certifies each device's recognition key
//!   (INSTALL CERTIFICATE), each purse's purchase key (CERTIFY) and signs revocation lists;
//!   its public key, `issuer_public_key`, goes into every PSD, every purse and every
//!   merchant terminal;
//! * `issuer_admin_key` — AES-128; each card's admin key is
//!   [`card_admin_key`]`(issuer_admin_key, card_id)` (UNBLOCK PIN, RESET RECOGNITION).
//!
//! Version 1 files also held a `scheme_key` (AES-128) that every PSD received and every
//! purse card key was diversified from (before issue 12). Version 2 drops it; a version 1
//! file is still read (its scheme key ignored) and is never written again.
//!
//! Merchants need only the public part ([`SchemePublic`]: scheme ID and issuer public key),
//! which `card-sim scheme public` writes to a file of its own; a scheme file read as a
//! [`SchemePublic`] gives the same two fields.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use openpsd_core::crypto::{IndiciumKey, MacKey, COMPRESSED_KEY_LEN, PUBLIC_KEY_LEN};
use openpsd_core::platform::Platform;
use openpsd_core::psd::device::SchemeSlot;
use openpsd_core::transfer::card_admin_key;
use openpsd_core::transfer::cert::{DeviceCertificate, DeviceKind, RevocationList};
use openpsd_core::types::{CardId, Date, SchemeId};
pub use openpsd_protocol::scheme::SchemePublic;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::os_platform::OsPlatform;

/// Layout version of scheme files.
pub const SCHEME_FILE_VERSION: u8 = 2;
/// Years a device certificate is valid from the day it is issued.
pub const CERTIFICATE_YEARS: u16 = 10;

/// A scheme with its secrets (the issuer's side).
pub struct Scheme {
    /// The scheme ID.
    pub id: SchemeId,
    /// The issuer's signing key (certifies recognition and purchase keys).
    pub issuer_key: IndiciumKey,
    /// The issuer's admin key (AES-128).
    pub admin_key: Zeroizing<[u8; 16]>,
}

impl std::fmt::Debug for Scheme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Scheme {{ id: {}, .. }}", self.id.0)
    }
}

#[derive(Serialize, Deserialize)]
struct SchemeFile {
    version: u8,
    scheme: u32,
    /// Version 1 only (the retired scheme key): read, ignored, never written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scheme_key: Option<String>,
    issuer_signing_key: String,
    issuer_public_key: String,
    issuer_admin_key: String,
}

impl Drop for SchemeFile {
    fn drop(&mut self) {
        if let Some(k) = &mut self.scheme_key {
            zeroize::Zeroize::zeroize(k);
        }
        zeroize::Zeroize::zeroize(&mut self.issuer_signing_key);
        zeroize::Zeroize::zeroize(&mut self.issuer_admin_key);
    }
}

fn key16(text: &str, what: &str) -> Result<Zeroizing<[u8; 16]>> {
    let bytes = Zeroizing::new(
        hex::decode(text.trim()).map_err(|_| anyhow!("{what}: expected 32 hex digits"))?,
    );
    let mut out = Zeroizing::new([0u8; 16]);
    if bytes.len() != 16 {
        bail!("{what}: expected 32 hex digits");
    }
    out.copy_from_slice(&bytes);
    Ok(out)
}

impl Scheme {
    /// A new scheme with fresh keys; a random non-zero ID unless `id` is given.
    pub fn generate(id: Option<u32>, platform: &mut dyn Platform) -> Scheme {
        let id = id.unwrap_or_else(|| loop {
            let mut b = [0u8; 4];
            platform.fill_random(&mut b);
            let n = u32::from_be_bytes(b);
            if n != 0 {
                break n;
            }
        });
        let mut admin_key = Zeroizing::new([0u8; 16]);
        platform.fill_random(admin_key.as_mut());
        Scheme {
            id: SchemeId(id),
            issuer_key: IndiciumKey::generate(platform),
            admin_key,
        }
    }

    /// The public part.
    pub fn public(&self) -> SchemePublic {
        SchemePublic::new(self.id, &self.issuer_key.public_key())
    }

    /// What a PSD of this scheme is personalized with (its PERSONALIZE's scheme block):
    /// the issuer's public key, and the failed recognitions after which transfers block.
    /// Nothing secret.
    pub fn slot(&self, max_failures: u8) -> SchemeSlot {
        SchemeSlot {
            scheme: self.id,
            issuer_public_key: self.issuer_key.public_key(),
            max_failures,
        }
    }

    /// The issuer's certificate on a device's recognition key: a fresh random serial,
    /// valid from `today` (the issuer's date; 2026-01-01 without a clock) for
    /// [`CERTIFICATE_YEARS`].
    pub fn certify(
        &self,
        platform: &mut dyn Platform,
        kind: DeviceKind,
        device: [u8; 8],
        public_key: [u8; COMPRESSED_KEY_LEN],
    ) -> DeviceCertificate {
        let today = platform
            .today()
            .or_else(|| Date::new(2026, 1, 1))
            .unwrap_or(Date {
                year: 2026,
                month: 1,
                day: 1,
            });
        let year = today.year.saturating_add(CERTIFICATE_YEARS);
        let until = Date::new(year, today.month, today.day)
            .or_else(|| Date::new(year, today.month, 28))
            .unwrap_or(today);
        let mut serial = [0u8; 4];
        platform.fill_random(&mut serial);
        DeviceCertificate::issue(
            &self.issuer_key,
            kind,
            self.id,
            device,
            u32::from_be_bytes(serial),
            today,
            until,
            public_key,
        )
    }

    /// The issuer's revocation list `version` naming the certificate `serials` (LOAD
    /// REVOCATION's data; public). `None` for more than
    /// [`openpsd_core::transfer::cert::MAX_REVOKED`] serials.
    pub fn revocation(&self, version: u32, serials: Vec<u32>) -> Option<Vec<u8>> {
        RevocationList::issue(&self.issuer_key, self.id, version, serials).map(|l| l.encode())
    }

    /// The admin key of purse `card` (UNBLOCK PIN, RESET RECOGNITION).
    pub fn card_admin_key(&self, card: CardId) -> MacKey {
        card_admin_key(&MacKey::new(*self.admin_key), card)
    }

    /// Writes a new scheme file (mode 0600); refuses to overwrite one.
    pub fn write(&self, path: &Path) -> Result<()> {
        let file = SchemeFile {
            version: SCHEME_FILE_VERSION,
            scheme: self.id.0,
            scheme_key: None,
            issuer_signing_key: hex::encode(*self.issuer_key.secret_bytes()),
            issuer_public_key: hex::encode(self.issuer_key.public_key()),
            issuer_admin_key: hex::encode(*self.admin_key),
        };
        let json = Zeroizing::new(serde_json::to_string_pretty(&file)?);
        write_new_private(path, json.as_bytes())
    }

    /// Reads a scheme file, checking every key (the public key must be the signing
    /// key's).
    pub fn read(path: &Path) -> Result<Scheme> {
        let text = Zeroizing::new(
            fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
        );
        let file: SchemeFile = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a scheme file", path.display()))?;
        if file.version != SCHEME_FILE_VERSION && file.version != 1 {
            bail!(
                "{}: scheme file version {} (this card-sim reads 1 and {SCHEME_FILE_VERSION})",
                path.display(),
                file.version
            );
        }
        let signing = Zeroizing::new(
            hex::decode(file.issuer_signing_key.trim())
                .map_err(|_| anyhow!("issuer_signing_key: expected 64 hex digits"))?,
        );
        let issuer_key = (signing.len() == 32)
            .then(|| IndiciumKey::from_bytes(&signing))
            .flatten()
            .ok_or_else(|| anyhow!("issuer_signing_key is not a P-256 scalar"))?;
        let scheme = Scheme {
            id: SchemeId(file.scheme),
            issuer_key,
            admin_key: key16(&file.issuer_admin_key, "issuer_admin_key")?,
        };
        if hex::encode(scheme.issuer_key.public_key())
            != file.issuer_public_key.trim().to_lowercase()
        {
            bail!(
                "{}: issuer_public_key is not the signing key's public key",
                path.display()
            );
        }
        Ok(scheme)
    }
}

/// Makes a new scheme, writes it to `path` (0600) and returns it.
pub fn create(path: &Path, id: Option<u32>) -> Result<Scheme> {
    let scheme = Scheme::generate(id, &mut OsPlatform::default());
    scheme.write(path)?;
    Ok(scheme)
}

/// Reads the public part (scheme ID, issuer public key) of a scheme file or of a public
/// file written by [`write_public`].
pub fn read_public(path: &Path) -> Result<(SchemeId, [u8; PUBLIC_KEY_LEN])> {
    SchemePublic::read_file(path).with_context(|| format!("scheme file {}", path.display()))
}

/// Writes the public part to a new file (mode 0644 is fine: nothing secret).
pub fn write_public(path: &Path, public: &SchemePublic) -> Result<()> {
    let json = serde_json::to_string_pretty(public)?;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(json.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    Ok(())
}

/// Creates `path` (which must not exist) readable by its owner only, with `bytes`.
pub fn write_new_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheme_files_round_trip_and_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scheme.json");
        let s = create(&path, Some(7)).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let r = Scheme::read(&path).unwrap();
        assert_eq!(r.id, SchemeId(7));
        let text = fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains("scheme_key"),
            "no scheme master key any more"
        );
        assert_eq!(*r.admin_key, *s.admin_key);
        assert_eq!(r.issuer_key.public_key(), s.issuer_key.public_key());
        let (id, key) = read_public(&path).unwrap();
        assert_eq!((id, key), (SchemeId(7), s.issuer_key.public_key()));
        assert!(create(&path, None).is_err(), "never overwrites a scheme");

        let public = dir.path().join("issuer.json");
        write_public(&public, &s.public()).unwrap();
        assert_eq!(read_public(&public).unwrap().1, s.issuer_key.public_key());
        assert!(
            Scheme::read(&public).is_err(),
            "a public file holds no secrets"
        );
    }

    #[test]
    fn a_version_1_scheme_file_is_read_and_its_scheme_key_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scheme.json");
        let s = create(&path, Some(3)).unwrap();
        let mut v: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        v["version"] = 1.into();
        v["scheme_key"] = "00112233445566778899aabbccddeeff".into();
        let old = dir.path().join("v1.json");
        fs::write(&old, v.to_string()).unwrap();
        let r = Scheme::read(&old).unwrap();
        assert_eq!(r.issuer_key.public_key(), s.issuer_key.public_key());
        assert_eq!(*r.admin_key, *s.admin_key);
    }

    #[test]
    fn a_tampered_scheme_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scheme.json");
        create(&path, Some(1)).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        let other = Scheme::generate(Some(1), &mut OsPlatform::default());
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut v2 = v.clone();
        v2["issuer_public_key"] = hex::encode(other.issuer_key.public_key()).into();
        let bad = dir.path().join("bad.json");
        fs::write(&bad, v2.to_string()).unwrap();
        assert!(Scheme::read(&bad).is_err());
        let mut v3 = v;
        v3["issuer_admin_key"] = "00".into();
        fs::write(&bad, v3.to_string()).unwrap();
        assert!(Scheme::read(&bad).is_err());
    }
}
