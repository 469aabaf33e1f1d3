//! The data center's database (seed 001's database server 24, untrusted by the box): the
//! mailers and their sessions, each meter's sealed record, every shard's Merkle nodes, the
//! transaction records the box signed, the indicia it made, and the intent of a box command
//! whose answer is not committed yet.
//!
//! Nothing here is trusted for money: the box refuses a record whose MAC or path does not
//! hold. The database's duty is to keep what the box answered, in one transaction per answer.

use openpsd_core::vbox::merkle::{self, EmptyHashes, Hash};
use openpsd_service_kit::error::ApiError;

use crate::sql::{args, Sql};

pub(crate) const SCHEMA: &str = "
-- The box this database belongs to, and its transaction key (for the history and the auditor).
CREATE TABLE IF NOT EXISTS box (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    box_id      TEXT NOT NULL,
    shards      INTEGER NOT NULL,
    depth       INTEGER NOT NULL,
    txn_key     TEXT NOT NULL
);
-- SHA-256 of a label and the password pepper: every data center on this database must
-- hold the same pepper (datacenter-pepper.key), or the mailers' log-ins would fail on it.
-- Says nothing of the pepper (32 random bytes).
CREATE TABLE IF NOT EXISTS pepper (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    fingerprint TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS mailers (
    mailer_id     TEXT PRIMARY KEY,           -- 32 hex
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,              -- Argon2id with the service's secret (pepper)
    created_at    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash  TEXT PRIMARY KEY,             -- SHA-256 of the bearer token
    mailer_id   TEXT NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS login_failures (
    username    TEXT NOT NULL,
    at          INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS login_failures_by_name ON login_failures (username, at);
-- One meter per mailer, one per slot; the record is the box's, sealed (AES-CMAC).
CREATE TABLE IF NOT EXISTS meters (
    meter_id    TEXT PRIMARY KEY,             -- 16 hex
    mailer_id   TEXT NOT NULL UNIQUE,
    slot        INTEGER NOT NULL UNIQUE,
    record      BLOB NOT NULL,
    -- The record CREATE METER answered and its siblings then: the KMS's proof that the box
    -- made this meter's key (`POST /v1/vbox/meters`).
    created_record BLOB NOT NULL,
    create_proof   BLOB NOT NULL,
    kms_registered INTEGER NOT NULL DEFAULT 0
);
-- Refills from the mailer's deposit: one row per client transaction ID, moving through
-- requested -> held -> sealed -> applied -> settled, or sealed -> voiding -> (voided) ->
-- releasing -> released, or releasing -> released, or refused (refill.rs).
CREATE TABLE IF NOT EXISTS refills (
    mailer_id      TEXT NOT NULL,
    client_txn_id  TEXT NOT NULL,
    amount         INTEGER NOT NULL,
    bound_refills  INTEGER NOT NULL,          -- the record's refill count and control sum
    bound_sum      INTEGER NOT NULL,          -- the combination is made for
    state          TEXT NOT NULL,
    combination    TEXT,                      -- the RC's signed combination (JSON)
    message        BLOB,                      -- the KMS's refill message
    balance        INTEGER,
    created_at     INTEGER NOT NULL,
    PRIMARY KEY (mailer_id, client_txn_id)
);
-- One refill under way per mailer (its meter): the counters it bound cannot move under it.
CREATE UNIQUE INDEX IF NOT EXISTS refills_one_under_way ON refills (mailer_id)
    WHERE state IN ('requested', 'held', 'sealed', 'voiding');
-- The slot and meter ID a mailer's meter gets, kept from before the vendor's grant so a
-- retry asks for the same grant.
CREATE TABLE IF NOT EXISTS reservations (
    mailer_id   TEXT PRIMARY KEY,
    meter_id    TEXT NOT NULL UNIQUE,
    slot        INTEGER NOT NULL UNIQUE
);
-- The Merkle forest: node (shard, height, index); height 0 are the leaves. An absent node
-- is the empty subtree's hash.
CREATE TABLE IF NOT EXISTS nodes (
    shard       INTEGER NOT NULL,
    height      INTEGER NOT NULL,
    idx         INTEGER NOT NULL,
    hash        BLOB NOT NULL,
    PRIMARY KEY (shard, height, idx)
);
-- Every transaction record the box signed, by shard and sequence (the chain).
CREATE TABLE IF NOT EXISTS txns (
    shard       INTEGER NOT NULL,
    sequence    INTEGER NOT NULL,
    meter_id    TEXT NOT NULL,
    kind        INTEGER NOT NULL,
    record      BLOB NOT NULL,
    PRIMARY KEY (shard, sequence)
);
CREATE INDEX IF NOT EXISTS txns_by_meter ON txns (meter_id, shard, sequence);
-- Every log-in the box approved and signed (seed 001's transaction box 42), by the box's
-- sequence: a gap is a record lost (a crash between the box and here) or deleted.
CREATE TABLE IF NOT EXISTS logins (
    sequence    INTEGER PRIMARY KEY,
    mailer_id   TEXT NOT NULL,
    at          INTEGER NOT NULL,
    record      BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS logins_by_mailer ON logins (mailer_id, sequence);
-- The indicia, by the client's transaction ID: a retry answers the stored bytes.
CREATE TABLE IF NOT EXISTS indicia (
    mailer_id      TEXT NOT NULL,
    client_txn_id  TEXT NOT NULL,
    request_digest TEXT NOT NULL,
    postage        INTEGER NOT NULL,
    indicium       BLOB NOT NULL,
    balance        INTEGER NOT NULL,
    created_at     INTEGER NOT NULL,
    PRIMARY KEY (mailer_id, client_txn_id)
);
-- A box command sent and not yet committed here (at most one per shard: the box keeps one
-- previous root). Start-up and every later command of the shard finish it with RESUME.
CREATE TABLE IF NOT EXISTS intents (
    shard       INTEGER PRIMARY KEY,
    ins         INTEGER NOT NULL,
    data        BLOB NOT NULL,
    -- For an indicium: whose, under which transaction ID, and the request's digest.
    mailer_id   TEXT,
    client_txn_id TEXT,
    request_digest TEXT,
    postage     INTEGER
);
";

/// The shard and leaf index of `slot` in a forest of `depth`.
pub(crate) fn locate(slot: u32, depth: u8) -> (u16, u32) {
    let shard = u16::try_from(slot >> depth).unwrap_or(u16::MAX);
    (shard, slot & ((1u32 << depth) - 1))
}

fn node(
    c: &mut impl Sql,
    shard: u16,
    height: u8,
    idx: u32,
    empty: &EmptyHashes,
    step: &str,
) -> Result<Hash, ApiError> {
    let h = c
        .opt(
            step,
            "SELECT hash FROM nodes WHERE shard = ?1 AND height = ?2 AND idx = ?3",
            args![shard, height, idx],
        )?
        .map(|r| r.blob(0))
        .transpose()?;
    match h {
        None => Ok(empty.at(height)),
        Some(b) => b
            .try_into()
            .map_err(|_| ApiError::internal(step, "a Merkle node is not 32 bytes")),
    }
}

/// The siblings of leaf `idx` of `shard`, bottom up, as the box's commands carry them.
pub(crate) fn proof(
    c: &mut impl Sql,
    shard: u16,
    idx: u32,
    depth: u8,
    empty: &EmptyHashes,
    step: &str,
) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::with_capacity(usize::from(depth) * 32);
    for h in 0..depth {
        out.extend_from_slice(&node(c, shard, h, (idx >> h) ^ 1, empty, step)?);
    }
    Ok(out)
}

/// The root of `shard` as the database has it.
pub(crate) fn root(
    c: &mut impl Sql,
    shard: u16,
    depth: u8,
    empty: &EmptyHashes,
    step: &str,
) -> Result<Hash, ApiError> {
    node(c, shard, depth, 0, empty, step)
}

/// Sets leaf `idx` of `shard` to `record`'s hash and rewrites its path; answers the new root.
pub(crate) fn set_leaf(
    c: &mut impl Sql,
    shard: u16,
    idx: u32,
    record: &[u8],
    depth: u8,
    empty: &EmptyHashes,
    step: &str,
) -> Result<Hash, ApiError> {
    let mut hash = merkle::leaf_hash(record);
    let mut i = idx;
    for h in 0..=depth {
        c.exec(
            step,
            "INSERT INTO nodes (shard, height, idx, hash) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (shard, height, idx) DO UPDATE SET hash = excluded.hash",
            args![shard, h, i, hash.to_vec()],
        )?;
        if h == depth {
            break;
        }
        let sibling = node(c, shard, h, i ^ 1, empty, step)?;
        hash = if i & 1 == 1 {
            merkle::node_hash(&sibling, &hash)
        } else {
            merkle::node_hash(&hash, &sibling)
        };
        i >>= 1;
    }
    Ok(hash)
}
