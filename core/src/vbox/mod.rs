//! The virtual meter box (seed 001, WO 98/57304: meter box 44 of the data center): an
//! applet of the card runtime that keeps no meter itself. The data center's database keeps
//! every mailer's meter record; the box holds the keys and, per shard of meters, one Merkle
//! root. For each request it checks the record's MAC and its path to the shard root
//! (freshness, preventive: an old, moved or edited record is refused before anything is
//! signed), does the accounting with checked arithmetic, makes today's indicium (format and
//! verifier of [`crate::psd::indicium`], unchanged), re-MACs the record, computes the new
//! root and commits it before it answers. docs/virtual-meter.md is the design; docs/apdu.md
//! §11 the command contract.
//!
//! Layout as the PSD's: [`command`] parses each APDU once; [`VboxApplet::call`] checks the
//! life-cycle and dispatches to the handler in the file of its family ([`meter`]: CREATE
//! METER and its grant; [`issue`]: ISSUE INDICIUM, the record checks every record command
//! shares, and RESUME; [`batch`]: ISSUE BATCH; [`refill`]: REFILL); [`state`] holds the
//! persistent records, [`record`] the meter record, [`merkle`] the forest, [`keys`] the keys.
//! [`auth`] is the seed's authentication box 40 in the same applet: ENROLL and AUTHENTICATE
//! MAILER, the password verifiers under `K_auth`.

pub mod auth;
pub mod batch;
pub mod command;
pub mod issue;
pub mod keys;
pub mod login;
pub mod merkle;
pub mod meter;
pub mod record;
pub mod refill;
pub mod state;
pub mod txn;

use alloc::vec::Vec;

use crate::apdu::Command;
use crate::card::{Applet, Ctx};
use crate::crypto::{self, sha256_parts};
use crate::records::vbox as rec;
use crate::status::Status;
use crate::store::{Store, StoreError, Transaction};
use crate::types::DeviceId;
use crate::wire::Reader;

use command::{LifeCycle, VboxCommand};
use keys::BoxKeys;
use merkle::{EmptyHashes, Hash};
use state::{geometry_ok, BoxConfig, ShardState};

/// The box's AID: RID `F0 50 53 44 00`, PIX `00 03` (the PSD is `00 01`, the purse `00 02`).
pub const VBOX_AID: &[u8] = &[0xF0, 0x50, 0x53, 0x44, 0x00, 0x00, 0x03];

/// Class byte of the box's proprietary commands.
pub const CLA_VBOX: u8 = 0x80;

/// Instruction bytes.
pub mod ins {
    /// PERSONALIZE.
    pub const PERSONALIZE: u8 = 0x10;
    /// CREATE METER.
    pub const CREATE_METER: u8 = 0x20;
    /// READ SHARD.
    pub const READ_SHARD: u8 = 0x34;
    /// ISSUE INDICIUM.
    pub const ISSUE_INDICIUM: u8 = 0x40;
    /// ISSUE BATCH.
    pub const ISSUE_BATCH: u8 = 0x42;
    /// REFILL.
    pub const REFILL: u8 = 0x52;
    /// RESUME.
    pub const RESUME: u8 = 0x46;
    /// ENROLL MAILER.
    pub const ENROLL_MAILER: u8 = 0x60;
    /// AUTHENTICATE MAILER.
    pub const AUTHENTICATE_MAILER: u8 = 0x62;
    /// GET DATA.
    pub const GET_DATA: u8 = 0xCA;
}

/// Length of PERSONALIZE's data: box ID 8 ‖ shards 2 ‖ depth 1 ‖ vendor key 65 ‖ refill
/// key 65.
pub const PERSONALIZE_LEN: usize = 141;

/// The box applet.
pub struct VboxApplet {
    config: Option<BoxConfig>,
    empty: EmptyHashes,
}

impl VboxApplet {
    /// The applet with its state loaded from `store`.
    pub fn load(store: &dyn Store) -> Result<Self, StoreError> {
        Ok(Self {
            config: BoxConfig::load(store)?,
            empty: EmptyHashes::new(),
        })
    }

    /// Whether the box was personalized (its configuration record exists).
    pub fn is_personalized(&self) -> bool {
        self.config.is_some()
    }

    fn config(&self) -> Result<&BoxConfig, Status> {
        self.config.as_ref().ok_or(Status::ConditionsNotSatisfied)
    }

    /// PERSONALIZE: fixes identity and geometry, generates the keys inside. Answers the
    /// empty shard root (every shard starts with it) and the transaction public key.
    fn personalize(
        &mut self,
        ctx: &mut Ctx<'_>,
        data: &[u8],
        reply: &mut Vec<u8>,
    ) -> Result<(), Status> {
        let mut r = Reader::new(data);
        let box_id = DeviceId(r.array()?);
        let shards = r.u16()?;
        let depth = r.u8()?;
        let vendor_key: [u8; crypto::PUBLIC_KEY_LEN] = r.array()?;
        let refill_key: [u8; crypto::PUBLIC_KEY_LEN] = r.array()?;
        r.finish()?;
        if !geometry_ok(shards, depth)
            || !crypto::is_valid_public_key(&vendor_key)
            || !crypto::is_valid_public_key(&refill_key)
        {
            return Err(Status::WrongData);
        }
        let cfg = BoxConfig {
            box_id,
            shards,
            depth,
            vendor_key,
            refill_key,
            keys: BoxKeys::generate(ctx.platform),
            txn_key: crypto::IndiciumKey::generate(ctx.platform),
        };
        let mut txn = Transaction::begin(ctx.store);
        txn.write(rec::CONFIG, cfg.encode());
        txn.commit()?;
        reply.extend_from_slice(&self.empty.at(depth));
        reply.extend_from_slice(&cfg.txn_key.public_key());
        self.config = Some(cfg);
        Ok(())
    }

    /// GET DATA 00 01: `00` blank, or `01` ‖ box ID 8 ‖ shards 2 ‖ depth 1 ‖ vendor key ID 4
    /// ‖ transaction public key 65.
    fn box_info(&self, reply: &mut Vec<u8>) {
        match &self.config {
            None => reply.push(0),
            Some(c) => {
                reply.push(1);
                reply.extend_from_slice(&c.box_id.0);
                reply.extend_from_slice(&c.shards.to_be_bytes());
                reply.push(c.depth);
                reply.extend_from_slice(&crypto::key_id(&c.vendor_key).0);
                reply.extend_from_slice(&c.txn_key.public_key());
            }
        }
    }

    fn shard(&self, ctx: &Ctx<'_>, index: u16) -> Result<ShardState, Status> {
        let cfg = self.config()?;
        if index >= cfg.shards {
            return Err(Status::ReferencedDataNotFound);
        }
        ShardState::load(&*ctx.store, index, cfg.depth, &self.empty)
    }

    /// Commits a shard's new root: the old root becomes the previous one, and the request's
    /// hash is kept for RESUME. The sequence moves on by `records`, the transaction records
    /// the command signs (one, or a batch's pieces).
    fn commit_root(
        ctx: &mut Ctx<'_>,
        shard: u16,
        before: &ShardState,
        new_root: Hash,
        request: Hash,
        records: u64,
    ) -> Result<(), Status> {
        let next = ShardState {
            root: new_root,
            previous_root: before.root,
            last_request: request,
            sequence: before
                .sequence
                .checked_add(records)
                .ok_or(Status::CounterOverflow)?,
        };
        let mut txn = Transaction::begin(ctx.store);
        txn.write(rec::shard(shard), next.encode());
        txn.commit()?;
        Ok(())
    }
}

/// SHA-256(INS ‖ data): what a shard keeps of its last command.
pub fn request_hash(ins: u8, data: &[u8]) -> Hash {
    sha256_parts(&[&[ins], data])
}

impl Applet for VboxApplet {
    fn aid(&self) -> &'static [u8] {
        VBOX_AID
    }

    fn select(&mut self, ctx: &mut Ctx<'_>) -> Result<(), Status> {
        // Re-read: another host (or a restore) may have changed the store while deselected.
        self.config = BoxConfig::load(&*ctx.store)?;
        Ok(())
    }

    fn deselect(&mut self) {}

    fn call(
        &mut self,
        ctx: &mut Ctx<'_>,
        cmd: &Command<'_>,
        reply: &mut Vec<u8>,
    ) -> Result<(), Status> {
        let command = VboxCommand::parse(cmd)?;
        let life = if self.config.is_some() {
            LifeCycle::Personalized
        } else {
            LifeCycle::Blank
        };
        if !command.allowed_in(life) {
            return Err(Status::ConditionsNotSatisfied);
        }
        match command {
            VboxCommand::Personalize(data) => self.personalize(ctx, data, reply),
            VboxCommand::GetBoxInfo => {
                self.box_info(reply);
                Ok(())
            }
            VboxCommand::GetLoginCount => Self::login_count(ctx, reply),
            VboxCommand::ReadShard(i) => {
                reply.extend_from_slice(&self.shard(ctx, i)?.public());
                Ok(())
            }
            VboxCommand::CreateMeter(data) => self.create_meter(ctx, data, false, reply),
            VboxCommand::IssueIndicium(data) => self.issue_indicium(ctx, data, false, reply),
            VboxCommand::IssueBatch(data) => self.issue_batch(ctx, data, false, reply),
            VboxCommand::Refill(data) => self.refill(ctx, data, false, reply),
            VboxCommand::EnrollMailer(data) => self.enroll_mailer(ctx, data, reply),
            VboxCommand::AuthenticateMailer { record, data } => {
                self.authenticate_mailer(ctx, record, data, reply)
            }
            VboxCommand::Resume { ins, data } => match ins {
                ins::CREATE_METER => self.create_meter(ctx, data, true, reply),
                ins::REFILL => self.refill(ctx, data, true, reply),
                ins::ISSUE_BATCH => self.issue_batch(ctx, data, true, reply),
                _ => self.issue_indicium(ctx, data, true, reply),
            },
        }
    }
}

/// A card with the box applet installed, its state loaded from `store`.
pub fn vbox_card<S: Store, P: crate::platform::Platform>(
    store: S,
    platform: P,
) -> Result<crate::card::Card<S, P>, StoreError> {
    let applet = VboxApplet::load(&store)?;
    let mut card = crate::card::Card::new(store, platform);
    card.install(alloc::boxed::Box::new(applet));
    Ok(card)
}

impl VboxApplet {
    /// Freshness (Fig. 4, 220–230): the leaf with its siblings must prove the shard's root,
    /// or, for RESUME, the previous root with the shard's last request being this one.
    /// Answers the root it proved (the one the command's outputs derive from).
    fn check_path(
        shard: &ShardState,
        leaf: &Hash,
        index: u32,
        siblings: &[Hash],
        resume: Option<&Hash>,
    ) -> Result<Hash, Status> {
        let computed = merkle::root_from(leaf, index, siblings);
        match resume {
            None if computed == shard.root => Ok(shard.root),
            None => Err(Status::RecordStale),
            Some(req)
                if shard.sequence > 0
                    && computed == shard.previous_root
                    && *req == shard.last_request =>
            {
                Ok(shard.previous_root)
            }
            Some(_) => Err(Status::NothingToResume),
        }
    }

    /// The shard's sequence after a command: the next one, or for RESUME the one committed.
    fn next_sequence(shard: &ShardState, resume: bool) -> Result<u64, Status> {
        if resume {
            Ok(shard.sequence)
        } else {
            shard.sequence.checked_add(1).ok_or(Status::CounterOverflow)
        }
    }

    /// The answer every command that changes a shard gives: new root 32 ‖ record length 2 ‖
    /// the sealed record ‖ the signed transaction record ([`txn`]).
    // why: every field of the transaction record comes from the handler's own state; a
    // struct built by each caller would only move the same ten names around.
    #[allow(clippy::too_many_arguments)]
    fn answer(
        cfg: &BoxConfig,
        shard_index: u16,
        sequence: u64,
        kind: u8,
        record: &record::MeterRecord,
        sealed: &[u8],
        amount: crate::types::Amount,
        digest: Hash,
        roots: (Hash, Hash),
        reply: &mut Vec<u8>,
    ) -> Result<(), Status> {
        let t = txn::TransactionRecord {
            box_id: cfg.box_id,
            shard: shard_index,
            sequence,
            kind,
            meter: record.meter,
            slot: record.slot,
            amount,
            ar: record.ar,
            dr: record.dr,
            pieces: record.pieces,
            digest,
            root_before: roots.0,
            root_after: roots.1,
        };
        reply.extend_from_slice(&roots.1);
        reply.extend_from_slice(
            &u16::try_from(sealed.len())
                .map_err(|_| Status::Internal)?
                .to_be_bytes(),
        );
        reply.extend_from_slice(sealed);
        reply.extend_from_slice(&t.sign(&cfg.txn_key));
        Ok(())
    }

    /// Makes the new root durable (a command), or checks that it is the one committed
    /// (RESUME: the re-run gave the same bytes, so it must).
    fn finish_root(
        ctx: &mut Ctx<'_>,
        index: u16,
        shard: &ShardState,
        new_root: Hash,
        request: Hash,
        resume: bool,
    ) -> Result<(), Status> {
        if resume {
            if new_root == shard.root {
                Ok(())
            } else {
                Err(Status::NothingToResume)
            }
        } else {
            Self::commit_root(ctx, index, shard, new_root, request, 1)
        }
    }
}
