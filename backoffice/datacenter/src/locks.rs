//! What serializes the data center's work when several of them — stateless function servers
//! of seed 001's Fig. 1 — share one PostgreSQL database and one box
//! (`docs/virtual-meter.md` §9, Several function servers), and the connections of one of
//! them (`Config::database_connections`): each connection runs one closure at a time;
//! between connections, of one process or of several, PostgreSQL's advisory locks do:
//!
//! - **a shard** ([`lock_shard`]): a *session* lock, taken before the shard's intent is
//!   looked at and held until the closure that took it returns — across the intent's
//!   commit, the box command and the answer's commit. A transaction lock could not span
//!   them: the intent must be committed before the box is asked. A server that dies holding
//!   it ends its session, PostgreSQL releases the lock, and the next server finds the
//!   intent and finishes it (`crate::indicia::finish_intents`), as a restart does;
//! - **the slot counter** ([`RESERVATIONS`]) and **a mailer's refill rows**
//!   ([`mailer_key`]): transaction locks around a read-then-insert that one connection used
//!   to make atomic;
//! - **a username's log-in failures** ([`login_key`]): a transaction lock around "count the
//!   failures, then record this attempt", so parallel guesses through several connections
//!   or servers cannot each read the count before the others' attempts (found by the
//!   parallel-guessing test once a data center had more than one connection);
//! - **the schema** ([`SCHEMA`]): servers starting together apply it one at a time.
//!
//! On SQLite every lock is a no-op: one process owns the file (its lock file), and its
//! one connection serializes everything.

use openpsd_service_kit::error::ApiError;

use crate::sql::Conn;

/// "VM" 0002 ‖ shard: a shard's lock.
const SHARD: i64 = 0x564D_0002_0000_0000;
/// "VM" 0003: the lock of the slot counter (`reservations`).
pub(crate) const RESERVATIONS: i64 = 0x564D_0003_0000_0000;
/// "VM" 0004 ‖ 32 bits of the mailer ID: a mailer's refill rows.
const MAILER: i64 = 0x564D_0004_0000_0000;
/// "VM" 0005: the schema, applied by one server at a time.
pub(crate) const SCHEMA: i64 = 0x564D_0005_0000_0000;
/// "VM" 0006 ‖ 32 bits of SHA-256 of a username: its log-in failures.
const LOGIN: i64 = 0x564D_0006_0000_0000;

/// Takes `shard`'s lock for the rest of the current `Db::run` closure (PostgreSQL; waits
/// while another server holds it).
pub(crate) fn lock_shard(c: &mut Conn<'_>, shard: u16, step: &str) -> Result<(), ApiError> {
    c.session_lock(SHARD | i64::from(shard), step)
}

/// Releases every shard lock the connection holds (before the closure ends, when it walks
/// the shards one by one).
pub(crate) fn unlock_shards(c: &mut Conn<'_>, step: &str) -> Result<(), ApiError> {
    c.release_session_locks(step)
}

/// The lock of `mailer`'s refill rows: its ID's first 8 hex digits (mailer IDs are random),
/// so two mailers rarely share one, and sharing only serializes them.
pub(crate) fn mailer_key(mailer: &str) -> i64 {
    let low = mailer
        .get(..8)
        .and_then(|h| u32::from_str_radix(h, 16).ok())
        .unwrap_or(0);
    MAILER | i64::from(low)
}

/// The lock of `username`'s log-in failures: 32 bits of its SHA-256 (usernames are chosen
/// by mailers, so not their raw bytes: two that share a key only wait for each other).
pub(crate) fn login_key(username: &str) -> i64 {
    use sha2::Digest as _;
    let h = sha2::Sha256::digest(username.as_bytes());
    LOGIN | i64::from(u32::from_be_bytes([h[0], h[1], h[2], h[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_keys_do_not_overlap() {
        let shard_max = SHARD | i64::from(u16::MAX);
        let mailer_max = mailer_key("ffffffff00000000");
        assert!(shard_max < RESERVATIONS && RESERVATIONS < MAILER && mailer_max < SCHEMA);
        assert!(SCHEMA < LOGIN && login_key("alice") >> 32 == LOGIN >> 32);
        assert_ne!(login_key("alice"), login_key("bob"));
        assert_eq!(mailer_key("0000000a"), MAILER | 10);
        assert_eq!(mailer_key("not hex"), MAILER);
    }
}
