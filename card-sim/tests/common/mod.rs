//! What card-sim's tests share: running the `card-sim` binary in a directory, and the
//! set-up an issuer and a meter make before a transfer — a scheme, a test-bench KMS key
//! pair, and a PSD personalized for both and refilled.
#![allow(dead_code)] // each test binary uses a different part

use std::path::Path;
use std::process::Command;

/// Runs `card-sim ARGS` in `dir`; fails the test with its stderr unless it succeeds;
/// answers its stdout.
pub fn card_sim(args: &[&str], dir: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_card-sim"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("card-sim runs");
    assert!(
        out.status.success(),
        "card-sim {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// In `dir`: `scheme.json` (scheme 9), a test-bench KMS in `kms/`, and the PSD `psd`
/// personalized for both and refilled with `funds` (e.g. `"100.00"`) under that KMS's key.
pub fn funded_psd(dir: &Path, funds: &str) {
    card_sim(
        &["scheme", "create", "--out", "scheme.json", "--id", "9"],
        dir,
    );
    card_sim(&["bench-kms", "--dir", "kms"], dir);
    card_sim(
        &[
            "personalize",
            "--state",
            "psd",
            "--scheme",
            "scheme.json",
            "--kms-public-key",
            "kms/kms-public.key",
        ],
        dir,
    );
    card_sim(
        &[
            "refill",
            "--state",
            "psd",
            "--amount",
            funds,
            "--kms-signing-key",
            "kms/kms-signing.key",
        ],
        dir,
    );
}
