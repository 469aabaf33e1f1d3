//! What card-sim's tests share: running the `card-sim` binary in a directory, and the
//! set-up an issuer and a meter make before a transfer — a scheme, a test-bench KMS key
//! pair, and a PSD personalized for both and refilled.
#![allow(dead_code)] // each test binary uses a different part

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

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

/// A `card-sim serve` process, killed when the test ends (even by a failed assertion: a
/// leftover server would hold the test's output open).
pub struct Server(Child);

impl Server {
    pub fn id(&self) -> u32 {
        self.0.id()
    }
    pub fn wait(&mut self) {
        let _ = self.0.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `card-sim serve --tcp 127.0.0.1:0` for the card in `state`; the port it chose.
pub fn serve(state: &Path) -> (Server, u16) {
    serve_with(state, &[])
}

/// [`serve`] with more arguments (`--clients 2`).
pub fn serve_with(state: &Path, more: &[&str]) -> (Server, u16) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_card-sim"))
        .args(["serve", "--tcp", "127.0.0.1:0", "--state"])
        .arg(state)
        .args(more)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let port = loop {
        let line = lines.next().expect("card-sim logs its address").unwrap();
        if let Some(rest) = line.split("addr=127.0.0.1:").nth(1) {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (Server(child), port)
}
