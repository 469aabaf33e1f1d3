//! The log-in record (seed 001, transaction box 42: "logins and login history records"):
//! what the box signs for every log-in it approves, AUTHENTICATE MAILER with P1 = `01`
//! ([`super::auth`]), so that a mailer's history of log-ins is the box's word and not only
//! the database's.
//!
//! Layout (big-endian, 40 bytes and a 64-byte signature):
//!
//! ```text
//! box ID 8 | sequence 8 | mailer ID 16 | time 8 ‖ ECDSA P-256 signature 64
//! over "openpsd vbox login v1" ‖ everything before
//! ```
//!
//! The sequence counts the box's approved log-ins from 1; the box commits it (record
//! `records::vbox::LOGINS`) before the signed record leaves, so no two records share one.
//! An auditor holding the box's transaction public key finds a record changed (signature)
//! or deleted (a gap in the sequence). The time is the data center's (Unix seconds): the box
//! has no clock, and signs it as said, not as true. The key is the box's transaction key,
//! under a label of its own (the transaction box signs both kinds of record; neither label
//! is a prefix of the other, so no signature of one kind is one of the other).

use alloc::vec::Vec;

use crate::crypto::{self, IndiciumKey, SIGNATURE_LEN};
use crate::types::DeviceId;
use crate::wire::{Malformed, Reader, Writer};

use super::keys::MAILER_ID_LEN;

/// Domain label of the box's log-in signatures.
pub const LOGIN_LABEL: &[u8] = b"openpsd vbox login v1";
/// Length of a signed log-in record.
pub const LOGIN_RECORD_LEN: usize = 8 + 8 + MAILER_ID_LEN + 8 + SIGNATURE_LEN;
/// Version of the stored log-in counter (`records::vbox::LOGINS`).
pub const LOGINS_VERSION: u8 = 1;

/// A log-in the box approved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginRecord {
    /// The box.
    pub box_id: DeviceId,
    /// Its approved log-ins so far, this one included.
    pub sequence: u64,
    /// The mailer.
    pub mailer: [u8; MAILER_ID_LEN],
    /// The data center's time of the log-in (Unix seconds; not the box's).
    pub time: u64,
}

impl LoginRecord {
    /// The signed bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(LOGIN_RECORD_LEN);
        w.extend_from_slice(&self.box_id.0);
        w.put_u64(self.sequence);
        w.extend_from_slice(&self.mailer);
        w.put_u64(self.time);
        w
    }

    /// The record signed by the box's transaction key (deterministic: RFC 6979).
    pub fn sign(&self, key: &IndiciumKey) -> Vec<u8> {
        key.sign_appended(LOGIN_LABEL, self.encode())
    }

    /// Checks the signature with the box's transaction public key and decodes.
    pub fn verify(bytes: &[u8], public_key: &[u8]) -> Result<Self, Malformed> {
        if bytes.len() != LOGIN_RECORD_LEN {
            return Err(Malformed::Length);
        }
        let body = crypto::open_appended(public_key, LOGIN_LABEL, bytes).ok_or(Malformed::Value)?;
        let mut r = Reader::new(body);
        let l = LoginRecord {
            box_id: DeviceId(r.array()?),
            sequence: r.u64()?,
            mailer: r.array()?,
            time: r.u64()?,
        };
        r.finish()?;
        Ok(l)
    }
}

/// The stored counter: version ‖ approved log-ins (u64).
pub fn encode_logins(count: u64) -> Vec<u8> {
    let mut w = Vec::with_capacity(9);
    w.put_u8(LOGINS_VERSION);
    w.put_u64(count);
    w
}

/// The approved log-ins a stored counter holds (0 when there is none yet).
pub fn decode_logins(stored: Option<&[u8]>) -> Result<u64, Malformed> {
    let Some(bytes) = stored else {
        return Ok(0);
    };
    let mut r = Reader::new(bytes);
    if r.u8()? != LOGINS_VERSION {
        return Err(Malformed::Value);
    }
    let n = r.u64()?;
    r.finish()?;
    Ok(n)
}
