//! Pause points for the crash tests: with `BACKOFFICE_PAUSE_AT=name[,name...]` in its
//! environment, a service that reaches one of the named points prints
//! `failpoint NAME reached` on stdout and stops there (the request never completes), so a
//! test can `kill -9` it at exactly that point of the flow and restart it on the same data.
//!
//! Without the variable every point is a no-op. The points sit between a commit and the
//! next external effect, where a crash is the most interesting.
//!
//! A pause can also be *released*, for tests of what happens when the paused request goes
//! on late (`backoffice/tests/datacenter_servers.rs`: a box command that arrives after its
//! server lost its database session): with `BACKOFFICE_PAUSE_RELEASE=FILE` as well, a
//! paused point waits until FILE exists (looked for every 10 ms), then goes on; the file
//! left in place lets every later pass through. Without `BACKOFFICE_PAUSE_AT` the release
//! variable does nothing.
//!
//! In process (the fault schedules of `backoffice/tests/fault_schedules.rs`, where every
//! service runs in the test's own process), a test installs a crash hook instead
//! ([`set_crash_hook`]): asked at every point reached, it answers whether the service
//! crashes there. A crash unwinds the request's task with a panic whose message starts
//! with [`CRASH_PANIC`]: the reply is never sent (the caller sees its connection close),
//! what was committed stays, and the test then restarts the service from its database.
//! The environment variable, when set, is obeyed first, so the `kill -9` tests are
//! unchanged; without a hook and without the variable every point is still a no-op.

use std::io::Write as _;
#[cfg(any(test, feature = "test-util"))]
use std::sync::RwLock;
use std::sync::{Arc, OnceLock};

/// The start of the panic message of a crash the hook asked for.
pub const CRASH_PANIC: &str = "simulated crash at failpoint";

/// Asked with a point's name at every point reached: `true` crashes the service there.
pub type CrashHook = Arc<dyn Fn(&str) -> bool + Send + Sync>;

#[cfg(any(test, feature = "test-util"))]
static HOOK: RwLock<Option<CrashHook>> = RwLock::new(None);

/// Installs (or with `None` removes) the process's crash hook. For tests only: it exists
/// only with the kit's feature `test-util`, which the back office's dev-dependencies
/// enable, so no service binary can install one.
#[cfg(any(test, feature = "test-util"))]
pub fn set_crash_hook(hook: Option<CrashHook>) {
    *HOOK.write().unwrap_or_else(|p| p.into_inner()) = hook;
}

/// Panics (a simulated crash) if the hook asks for one at `name`.
#[cfg(any(test, feature = "test-util"))]
fn crash_if_asked(name: &str) {
    let hook = HOOK.read().unwrap_or_else(|p| p.into_inner()).clone();
    if hook.is_some_and(|h| h(name)) {
        panic!("{CRASH_PANIC} {name}");
    }
}

/// Without `test-util` there is no hook to ask.
#[cfg(not(any(test, feature = "test-util")))]
fn crash_if_asked(_name: &str) {}

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

/// The file whose existence releases a paused point (`BACKOFFICE_PAUSE_RELEASE`), if any.
fn release_file() -> Option<&'static std::path::Path> {
    static RELEASE: OnceLock<Option<std::path::PathBuf>> = OnceLock::new();
    RELEASE
        .get_or_init(|| {
            std::env::var_os("BACKOFFICE_PAUSE_RELEASE")
                .filter(|v| !v.is_empty())
                .map(std::path::PathBuf::from)
        })
        .as_deref()
}

/// How often a paused point looks for its release file.
const RELEASE_POLL: std::time::Duration = std::time::Duration::from_millis(10);

/// Stops here (forever, or until the release file exists) if `name` is armed; crashes here
/// if the crash hook asks.
pub async fn pause(name: &str) {
    if armed().iter().any(|a| a == name) {
        announce(name);
        match release_file() {
            Some(f) => {
                while !f.exists() {
                    tokio::time::sleep(RELEASE_POLL).await;
                }
            }
            None => std::future::pending::<()>().await,
        }
    }
    crash_if_asked(name);
}

// Kept out of the async fn: the stdout lock is not `Send` and must not live in its future.
fn announce(name: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "failpoint {name} reached");
    let _ = out.flush();
}

/// [`pause`] for code on a blocking thread (inside a database transaction's closure): the
/// thread parks for ever (or sleeps until the release file exists) if `name` is armed;
/// crashes (panics) if the crash hook asks.
pub fn pause_blocking(name: &str) {
    if armed().iter().any(|a| a == name) {
        announce(name);
        match release_file() {
            Some(f) => {
                while !f.exists() {
                    std::thread::sleep(RELEASE_POLL);
                }
            }
            None => loop {
                std::thread::park();
            },
        }
    }
    crash_if_asked(name);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crash_hook_crashes_only_where_it_says() {
        set_crash_hook(Some(Arc::new(|name: &str| name == "test_crash_here")));
        // Another point passes.
        pause_blocking("test_not_here");
        let crashed = std::panic::catch_unwind(|| pause_blocking("test_crash_here"));
        let msg = crashed
            .err()
            .and_then(|p| p.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        assert_eq!(msg, format!("{CRASH_PANIC} test_crash_here"));
        set_crash_hook(None);
        pause_blocking("test_crash_here");
    }
}
