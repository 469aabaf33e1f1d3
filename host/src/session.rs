//! The mailer's login to a meter server (`openpsd signup`, `login`, `logout`): the session
//! token the meter gave, kept in a file only its owner can read, and the meter's CA.
//!
//! The file is `session.json` in `$OPENPSD_CONFIG_DIR`, else `$XDG_CONFIG_HOME/openpsd`,
//! else `~/.config/openpsd` (directory 0700, file 0600, written to a temporary file and
//! renamed). An API key in `OPENPSD_API_KEY` is used instead of the session's token, for
//! machines that run refills unattended.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// What `openpsd login` keeps.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Session {
    /// The meter server's URL.
    pub meter: String,
    /// The CA certificate the meter's TLS certificate chains to (none: the system's roots).
    pub ca: Option<PathBuf>,
    /// The bearer token.
    pub token: String,
    /// When it stops working (Unix seconds).
    pub expires_at: i64,
    /// Who logged in.
    pub username: String,
    /// Their deposit account.
    pub account_id: String,
}

/// The directory the session file lives in.
pub fn config_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("OPENPSD_CONFIG_DIR") {
        return Ok(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CONFIG_HOME") {
        return Ok(PathBuf::from(d).join("openpsd"));
    }
    let home = std::env::var_os("HOME").context("no HOME: set OPENPSD_CONFIG_DIR")?;
    Ok(PathBuf::from(home).join(".config").join("openpsd"))
}

fn file(dir: &Path) -> PathBuf {
    dir.join("session.json")
}

impl Session {
    /// Writes the session (0600), replacing any earlier one.
    pub fn save(&self) -> Result<PathBuf> {
        let dir = config_dir()?;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        let path = file(&dir);
        let tmp = dir.join("session.json.tmp");
        let _ = fs::remove_file(&tmp);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(serde_json::to_string_pretty(self)?.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, &path)?;
        Ok(path)
    }

    /// The saved session, if any.
    pub fn load() -> Result<Option<Session>> {
        let path = file(&config_dir()?);
        match fs::read(&path) {
            Ok(bytes) => {
                Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
                    format!("{} is not a session file", path.display())
                })?))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Forgets the saved session.
    pub fn remove() -> Result<()> {
        match fs::remove_file(file(&config_dir()?)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }
}
