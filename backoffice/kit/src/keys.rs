//! Key files: the ECDSA P-256 signing keys of the key management system (refill messages
//! and receipts) and of the recharging center (combinations), and the demo room's seed.
//! Each is made from the OS random source on the service's first start and written hex,
//! mode 0600, created exclusively so two starts racing on one directory cannot end up with
//! different keys; the public half goes beside it in a readable file ([`write_public`]).

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{bail, Context, Result};
use zeroize::Zeroizing;

use crate::codec::random_bytes;

/// Reads the 32-byte key in `path`, or makes one with `generate` and writes it (0600).
/// `generate` returns the key bytes; `valid` says whether bytes read back are a key.
pub fn load_or_create(
    path: &Path,
    generate: impl FnOnce() -> Zeroizing<[u8; 32]>,
    valid: impl Fn(&[u8; 32]) -> bool,
) -> Result<Zeroizing<[u8; 32]>> {
    match fs::read_to_string(path) {
        Ok(text) => {
            let mode = fs::metadata(path)?.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::warn!(
                    "{} is readable by others (mode {:o}); it should be 0600",
                    path.display(),
                    mode & 0o777
                );
            }
            let mut key = Zeroizing::new([0u8; 32]);
            let text = Zeroizing::new(text);
            hex::decode_to_slice(text.trim(), key.as_mut())
                .with_context(|| format!("{} is not 64 hex digits", path.display()))?;
            if !valid(&key) {
                bail!("{} does not hold a valid key", path.display());
            }
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = generate();
            let text = Zeroizing::new(hex::encode(key.as_ref()) + "\n");
            write_new_private(path, text.as_bytes())?;
            tracing::info!("made a new key in {}", path.display());
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Refuses to go on when the key file `key` is missing but the service's database `db`
/// exists: that database holds data made under the lost key (combinations the recharging
/// center signed), and making a new key would turn it into errors much later. Call it
/// before [`load_or_create`].
pub fn ensure_key_kept(key: &Path, db: &Path) -> Result<()> {
    if db.exists() {
        ensure_key_kept_for(key, Some(&format!("{} exists", db.display())))?;
    }
    Ok(())
}

/// [`ensure_key_kept`] for a service that decides itself whether its data needs the key:
/// refuses when `key` is missing and `depends` names what depends on it (e.g. "kms.sqlite
/// has 12 devices personalized with its public key"). `None`: nothing does, a new key may
/// be made.
pub fn ensure_key_kept_for(key: &Path, depends: Option<&str>) -> Result<()> {
    if let (false, Some(depends)) = (key.exists(), depends) {
        bail!(
            "{} is missing but {depends}: that was made under this key. Restore the key \
             file (from backup); a new key would make it unusable. Refusing to start.",
            key.display(),
        );
    }
    Ok(())
}

/// Creates `path` exclusively, mode 0600, with `bytes`, and makes file and name durable.
/// Fails if the file exists: a key is never overwritten by accident.
///
/// The bytes go to a temporary file first (fsynced), which is then linked under `path`
/// (a hard link fails if `path` exists, as `create_new` would): a power cut can leave a
/// stray `.new` file, never a key file that exists empty or half-written, which the
/// service would refuse (or worse, take for a key) at its next start.
pub fn write_new_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".new");
    let tmp = std::path::PathBuf::from(tmp);
    // A temporary file left by a power cut holds nothing anyone relies on.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", tmp.display())),
    }
    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    let linked = fs::hard_link(&tmp, path).with_context(|| format!("creating {}", path.display()));
    let _ = fs::remove_file(&tmp);
    linked?;
    sync_dir(path)
}

/// 32 fresh random bytes (an AES-256 key, a seed).
pub fn random_key() -> Zeroizing<[u8; 32]> {
    let mut k = Zeroizing::new([0u8; 32]);
    random_bytes(k.as_mut());
    k
}

/// Writes a public (non-secret) file atomically: temp file, fsync, rename.
pub fn write_public(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f =
            fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    sync_dir(path)
}

/// Creates a service's data directory (and parents) readable by its owner only: it holds
/// the key files and the database.
///
/// Each directory it makes is made durable in its parent (fsync of the parent): a data
/// directory whose name a power cut forgot would take the keys in it along, and the service
/// would start again with new ones.
pub fn private_dir(path: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let missing: Vec<&Path> = path
        .ancestors()
        .take_while(|p| !p.as_os_str().is_empty() && !p.exists())
        .collect();
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .with_context(|| format!("creating {}", path.display()))?;
    // Deepest first: each new name is durable before the one holding it is.
    for dir in missing {
        sync_dir(dir).with_context(|| format!("syncing the directory of {}", dir.display()))?;
    }
    Ok(())
}

/// fsyncs the directory holding `path`, so a new file's name is durable too.
fn sync_dir(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_new_private_file_is_whole_private_and_never_overwritten() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("service.key");
        // A stray temporary file, as a power cut before the link leaves it.
        fs::write(dir.path().join("service.key.new"), b"half a ke").expect("stray file");
        write_new_private(&path, b"secret key bytes").expect("written");
        assert_eq!(fs::read(&path).expect("read"), b"secret key bytes");
        let mode = fs::metadata(&path).expect("metadata").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "owner only");
        assert!(
            !dir.path().join("service.key.new").exists(),
            "no temporary file left"
        );
        let again = write_new_private(&path, b"another key");
        assert!(again.is_err(), "an existing key is never overwritten");
        assert_eq!(fs::read(&path).expect("read"), b"secret key bytes");
        assert!(!dir.path().join("service.key.new").exists());
    }
}
