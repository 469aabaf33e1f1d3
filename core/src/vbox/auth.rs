//! The authentication box (seed 001, box 40; Fig. 3, steps 115–120), in the meter box's
//! applet as the seed allows ("this function may be added to the steel box"): the mailers'
//! password verifiers are made and checked under `K_auth`, a key generated inside the box
//! that never leaves it. The database keeps each mailer's verifier; without the box it is
//! worth nothing, so a copy of the database cannot be used to guess a password offline or
//! to log in. The box authenticates no host: whoever can send it commands can enroll any
//! mailer (docs/virtual-meter.md §8).
//!
//! The password hash is the data center's Argon2id of the password with the mailer's salt
//! and its pepper: the memory-hard part stays on the data center's cores, the box adds one
//! AES-CMAC. Neither command writes, except the first ENROLL MAILER of a box personalized
//! before `K_auth` existed, which generates it and rewrites the configuration record
//! (version 1 → 2) in one atomic commit before it answers.
//!
//! ```text
//! ENROLL MAILER        80 60 00 00  mailer ID 16 ‖ password hash 32             → verifier 16
//! AUTHENTICATE MAILER  80 62 00 00  mailer ID 16 ‖ password hash 32 ‖ verifier 16 → 9000, or 9A65
//! AUTHENTICATE MAILER  80 62 01 00  the same ‖ time 8                       → log-in record 104, or 9A65
//! GET DATA             80 CA 00 02  none                                        → log-ins so far 8
//! ```
//!
//! With P1 = `01` (the transaction box 42's "logins and login history records") an approved
//! log-in is counted (record `LOGINS`, committed before the answer) and answered as a log-in
//! record the box signs ([`super::login`]); a refused one writes nothing. GET DATA `00 02`
//! answers the count, so the data center can compare it with the records it holds (a box
//! behind the database was rolled back; one ahead counted log-ins whose records were lost).
//!
//! What it does not do (docs/virtual-meter.md §8): issue a ticket that ISSUE and REFILL
//! would then require, so the mailer ID of a record command stays the data center's
//! assertion (`9A63` checks it against the record).

use alloc::vec::Vec;

use crate::card::Ctx;
use crate::records::vbox as rec;
use crate::status::Status;
use crate::store::Transaction;
use crate::wire::Reader;

use super::keys::{Cmac256, MAILER_ID_LEN, PASSWORD_HASH_LEN, VERIFIER_LEN};
use super::login::{self, LoginRecord};
use super::VboxApplet;

/// Length of ENROLL MAILER's data.
pub const ENROLL_LEN: usize = MAILER_ID_LEN + PASSWORD_HASH_LEN;
/// Length of AUTHENTICATE MAILER's data.
pub const AUTHENTICATE_LEN: usize = ENROLL_LEN + VERIFIER_LEN;

/// ENROLL MAILER's data.
pub fn enroll_data(
    mailer: &[u8; MAILER_ID_LEN],
    password_hash: &[u8; PASSWORD_HASH_LEN],
) -> Vec<u8> {
    let mut d = Vec::with_capacity(ENROLL_LEN);
    d.extend_from_slice(mailer);
    d.extend_from_slice(password_hash);
    d
}

/// Length of AUTHENTICATE MAILER's data with P1 = `01` (the time added).
pub const AUTHENTICATE_RECORDED_LEN: usize = AUTHENTICATE_LEN + 8;

/// AUTHENTICATE MAILER's data.
pub fn authenticate_data(
    mailer: &[u8; MAILER_ID_LEN],
    password_hash: &[u8; PASSWORD_HASH_LEN],
    verifier: &[u8; VERIFIER_LEN],
) -> Vec<u8> {
    let mut d = enroll_data(mailer, password_hash);
    d.extend_from_slice(verifier);
    d
}

impl VboxApplet {
    /// ENROLL MAILER: the mailer's verifier for this password hash (sign-up, a new
    /// password). Generates `K_auth` first in a box that has none.
    pub(super) fn enroll_mailer(
        &mut self,
        ctx: &mut Ctx<'_>,
        data: &[u8],
        reply: &mut Vec<u8>,
    ) -> Result<(), Status> {
        let mut r = Reader::new(data);
        let mailer: [u8; MAILER_ID_LEN] = r.array()?;
        let hash: [u8; PASSWORD_HASH_LEN] = r.array()?;
        r.finish()?;
        let cfg = self.config.as_mut().ok_or(Status::ConditionsNotSatisfied)?;
        if cfg.keys.auth.is_none() {
            // The upgrade of a version-1 box: committed before any verifier made with the
            // key leaves, so a cut here leaves the box as it was.
            let mut upgraded = cfg.clone();
            upgraded.keys.auth = Some(Cmac256::generate(ctx.platform));
            let mut txn = Transaction::begin(ctx.store);
            txn.write(rec::CONFIG, upgraded.encode());
            txn.commit()?;
            *cfg = upgraded;
        }
        let v = cfg
            .keys
            .mailer_verifier(&mailer, &hash)
            .ok_or(Status::Internal)?;
        reply.extend_from_slice(&v);
        Ok(())
    }

    /// AUTHENTICATE MAILER: `9000` if the verifier is the mailer's for this password hash,
    /// `9A65` otherwise (also in a box that has no `K_auth` yet: it made no verifier). With
    /// `record` (P1 = `01`, the data center's time after the verifier) an approved log-in is
    /// counted, committed, then answered signed ([`LoginRecord`]).
    pub(super) fn authenticate_mailer(
        &self,
        ctx: &mut Ctx<'_>,
        record: bool,
        data: &[u8],
        reply: &mut Vec<u8>,
    ) -> Result<(), Status> {
        let mut r = Reader::new(data);
        let mailer: [u8; MAILER_ID_LEN] = r.array()?;
        let hash: [u8; PASSWORD_HASH_LEN] = r.array()?;
        let verifier: [u8; VERIFIER_LEN] = r.array()?;
        let time = if record { Some(r.u64()?) } else { None };
        r.finish()?;
        let cfg = self.config()?;
        if cfg.keys.check_mailer(&mailer, &hash, &verifier) != Some(true) {
            return Err(Status::MailerNotAuthenticated);
        }
        let Some(time) = time else {
            return Ok(());
        };
        let stored = ctx.store.read(rec::LOGINS)?;
        let sequence = login::decode_logins(stored.as_deref())
            .map_err(|_| Status::Internal)?
            .checked_add(1)
            .ok_or(Status::CounterOverflow)?;
        // Committed before the record leaves: no two records ever share a sequence.
        let mut txn = Transaction::begin(ctx.store);
        txn.write(rec::LOGINS, login::encode_logins(sequence));
        txn.commit()?;
        let signed = LoginRecord {
            box_id: cfg.box_id,
            sequence,
            mailer,
            time,
        }
        .sign(&cfg.txn_key);
        reply.extend_from_slice(&signed);
        Ok(())
    }

    /// GET DATA 00 02: the approved log-ins so far (u64; 0 before the first). Unsigned: the
    /// data center reads it over its own link to the box, at start.
    pub(super) fn login_count(ctx: &mut Ctx<'_>, reply: &mut Vec<u8>) -> Result<(), Status> {
        let stored = ctx.store.read(rec::LOGINS)?;
        let count = login::decode_logins(stored.as_deref()).map_err(|_| Status::Internal)?;
        reply.extend_from_slice(&count.to_be_bytes());
        Ok(())
    }
}
