//! The secure box as a `card-sim serve --tcp` child process, for the box-link tests
//! (kill9_box.rs, box_tls.rs): a blank virtual meter box card made with `card-sim create`,
//! served on an address (plain, or with mutual TLS by extra arguments), killed with SIGKILL
//! and started again on the same card.
//!
//! card-sim is another package's binary: build it first (`cargo build -p
//! openpsd-card-sim`; `cargo test --workspace` does). It is looked for beside the test's own
//! target directory, or at `$OPENPSD_CARD_SIM`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The `card-sim` binary: `$OPENPSD_CARD_SIM`, or `card-sim` in the test's profile
/// directory (`target/debug/deps/kill9_box-…` → `target/debug/card-sim`).
pub fn card_sim_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("OPENPSD_CARD_SIM") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("card-sim"))
        .unwrap();
    assert!(
        bin.exists(),
        "{} is missing: build it first (cargo build -p openpsd-card-sim) or set OPENPSD_CARD_SIM",
        bin.display()
    );
    bin
}

/// Makes a blank virtual meter box card in `state` (`card-sim create --kind vbox`).
pub fn create_box(state: &Path) {
    let out = Command::new(card_sim_bin())
        .args(["create", "--kind", "vbox", "--state"])
        .arg(state)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// A loopback port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `card-sim serve --tcp` process on one card directory and address.
pub struct CardSim {
    child: Child,
    state: PathBuf,
    addr: String,
    extra: Vec<String>,
    log: Option<PathBuf>,
}

impl CardSim {
    /// `card-sim serve --state STATE --tcp ADDR`, waiting until it listens.
    pub fn start(state: &Path, addr: &str) -> Self {
        Self::start_with(state, addr, &[])
    }

    /// [`CardSim::start`] with more arguments (the TLS flags).
    pub fn start_with(state: &Path, addr: &str, extra: &[String]) -> Self {
        Self::spawn(state, addr, extra, None)
    }

    /// [`CardSim::start_with`], its warnings and errors appended to the file `log`.
    pub fn start_logged(state: &Path, addr: &str, extra: &[String], log: &Path) -> Self {
        Self::spawn(state, addr, extra, Some(log.to_owned()))
    }

    fn spawn(state: &Path, addr: &str, extra: &[String], log: Option<PathBuf>) -> Self {
        let (filter, stderr) = match &log {
            Some(path) => (
                "warn",
                Stdio::from(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)
                        .unwrap(),
                ),
            ),
            None => ("error", Stdio::inherit()),
        };
        let mut child = Command::new(card_sim_bin())
            .args(["serve", "--state"])
            .arg(state)
            .args(["--tcp", addr])
            .args(extra)
            .env("RUST_LOG", filter)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("card-sim starts");
        // Listening once /proc/net/tcp shows the port in LISTEN (a probe connection would
        // be a client of its own, and a power-up).
        let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
        let needle = format!(":{port:04X} 00000000:0000 0A");
        for _ in 0..400 {
            let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
            if tcp.contains(&needle) {
                return Self {
                    child,
                    state: state.to_owned(),
                    addr: addr.to_owned(),
                    extra: extra.to_vec(),
                    log,
                };
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("card-sim ended before listening on {addr}: {status}");
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("card-sim does not listen on {addr}");
    }

    /// SIGKILL, then the same command again on the same card and address.
    pub fn kill9_and_restart(&mut self) {
        self.kill9();
        self.restart();
    }

    /// SIGKILL: the box is down until [`CardSim::restart`].
    pub fn kill9(&mut self) {
        self.child.kill().expect("kill -9");
        let status = self.child.wait().expect("reaped");
        assert!(!status.success(), "card-sim was killed");
    }

    /// The same command again on the same card and address.
    pub fn restart(&mut self) {
        *self = CardSim::spawn(&self.state, &self.addr, &self.extra, self.log.clone());
    }
}

impl Drop for CardSim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
