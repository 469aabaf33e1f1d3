//! Progress bars on stderr for the CLI's long work (`transfer --repeat N`, hashing a large
//! file for a postmark or a signature). Hidden under `--json` and when stderr is not a
//! terminal, so scripts and logs see only the result.

use std::fs::File;
use std::io::{IsTerminal, Read};
use std::path::Path;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

/// Files at least this large show a progress bar while hashed (a few seconds or more).
const HASH_BAR_FROM: u64 = 64 << 20;

/// A bar of `len` steps with `what` before it; hidden under --json or without a terminal.
pub fn bar(len: u64, what: &str, json: bool, bytes: bool) -> ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let template = if bytes {
        "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta} left)"
    } else {
        "{msg} [{bar:30}] {pos}/{len} ({per_sec}, {eta} left)"
    };
    let style = ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    ProgressBar::new(len)
        .with_style(style)
        .with_message(what.to_owned())
}

/// SHA-256 of a file, read in 1 MiB pieces (never the whole file in memory), with a bar
/// for large files.
pub fn hash_file(path: &Path, json: bool) -> Result<[u8; 32]> {
    let mut f = File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let pb = if len >= HASH_BAR_FROM {
        bar(len, &format!("hashing {}", path.display()), json, true)
    } else {
        ProgressBar::hidden()
    };
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        pb.inc(n as u64);
    }
    pb.finish_and_clear();
    Ok(h.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_file_is_sha256_of_the_contents() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        // More than one read buffer, not a multiple of it.
        let data: Vec<u8> = (0..(3u32 << 20) + 17)
            .map(|i| u8::try_from(i % 251).unwrap())
            .collect();
        std::fs::write(&p, &data).unwrap();
        assert_eq!(
            hash_file(&p, false).unwrap(),
            openpsd_core::crypto::sha256(&data)
        );
        std::fs::write(&p, b"").unwrap();
        assert_eq!(
            hash_file(&p, true).unwrap(),
            openpsd_core::crypto::sha256(b"")
        );
        assert!(hash_file(&dir.path().join("missing"), false).is_err());
    }
}
