//! A service as a child process (`backoffice serve --role ...`), for the crash tests: it
//! can be held at a pause point (`BACKOFFICE_PAUSE_AT`, `backoffice/kit/src/failpoint.rs`),
//! killed with SIGKILL, and started again on the same data directory and address.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A service child process.
pub struct Proc {
    pub role: &'static str,
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
    /// Its base URL, `https://127.0.0.1:PORT` (kept across restarts).
    pub url: String,
    /// Its data directory (kept across restarts).
    pub data: PathBuf,
    args: Vec<String>,
}

impl Proc {
    /// Starts `backoffice serve --role ROLE --data DATA --listen LISTEN ARGS...`, armed at
    /// the pause points `pause` (comma-separated; empty: none), and waits until it listens.
    pub fn start(
        role: &'static str,
        data: &Path,
        listen: &str,
        args: &[String],
        pause: &str,
    ) -> Proc {
        Proc::start_env(role, data, listen, args, pause, &[])
    }

    /// [`Proc::start`] with these environment variables set for the child.
    pub fn start_env(
        role: &'static str,
        data: &Path,
        listen: &str,
        args: &[String],
        pause: &str,
        env: &[(&str, &str)],
    ) -> Proc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_backoffice"))
            .args(["serve", "--role", role, "--data"])
            .arg(data)
            .args(["--listen", listen])
            .args(args)
            .envs(env.iter().copied())
            .env("BACKOFFICE_PAUSE_AT", pause)
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("backoffice starts");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut p = Proc {
            role,
            child,
            lines,
            url: String::new(),
            data: data.to_path_buf(),
            args: args.to_vec(),
        };
        let line = p.wait_line(&format!("{role} listening on "));
        p.url = line.rsplit(' ').next().expect("url").to_owned();
        p
    }

    /// Waits for a stdout line starting with `prefix`.
    pub fn wait_line(&mut self, prefix: &str) -> String {
        loop {
            match self.lines.recv_timeout(Duration::from_secs(30)) {
                Ok(l) if l.starts_with(prefix) => return l,
                Ok(_) => {}
                Err(e) => panic!("{}: no '{prefix}' line ({e})", self.role),
            }
        }
    }

    /// Waits until the child stopped at pause point `name`.
    pub fn wait_paused(&mut self, name: &str) {
        self.wait_line(&format!("failpoint {name} reached"));
    }

    /// SIGKILL, then start again on the same data and address, armed at `pause`.
    pub fn kill9_and_restart(&mut self, pause: &str) {
        self.kill9();
        let listen = self.url.trim_start_matches("https://").to_owned();
        let next = Proc::start(self.role, &self.data, &listen, &self.args, pause);
        *self = next;
    }

    /// SIGKILL, and reaps the child.
    pub fn kill9(&mut self) {
        // std's Child::kill is SIGKILL on Unix: no destructors, no flush, no clean close.
        self.child.kill().expect("kill -9");
        let status = self.child.wait().expect("reaped");
        assert!(!status.success(), "{} was killed", self.role);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
