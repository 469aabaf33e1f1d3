//! Pause points for the crash tests: with `BACKOFFICE_PAUSE_AT=name[,name...]` in its
//! environment, a service that reaches one of the named points prints
//! `failpoint NAME reached` on stdout and stops there (the request never completes), so a
//! test can `kill -9` it at exactly that point of the flow and restart it on the same data.
//!
//! Without the variable every point is a no-op. The points sit between a commit and the
//! next external effect, where a crash is the most interesting.

use std::io::Write as _;
use std::sync::OnceLock;

fn armed() -> &'static [String] {
    static ARMED: OnceLock<Vec<String>> = OnceLock::new();
    ARMED.get_or_init(|| {
        std::env::var("BACKOFFICE_PAUSE_AT")
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    })
}

/// Stops here forever if `name` is armed.
pub async fn pause(name: &str) {
    if armed().iter().any(|a| a == name) {
        announce(name);
        std::future::pending::<()>().await;
    }
}

// Kept out of the async fn: the stdout lock is not `Send` and must not live in its future.
fn announce(name: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "failpoint {name} reached");
    let _ = out.flush();
}

/// [`pause`] for code on a blocking thread (inside a database transaction's closure): the
/// thread parks for ever if `name` is armed.
pub fn pause_blocking(name: &str) {
    if armed().iter().any(|a| a == name) {
        announce(name);
        loop {
            std::thread::park();
        }
    }
}
