//! The box's persistent state: its configuration and keys (one record) and, per shard, the
//! root, the previous root and the hash of the last request (one record each).

use alloc::vec::Vec;

use crate::crypto::{IndiciumKey, PUBLIC_KEY_LEN};
use crate::records::vbox as rec;
use crate::status::Status;
use crate::store::{Store, StoreError};
use crate::types::DeviceId;
use crate::wire::{Malformed, Reader, Writer};

use super::keys::{BoxKeys, Cmac256};
use super::merkle::{EmptyHashes, Hash, MAX_DEPTH};

/// Most shards a box holds (its record range `0x2000–0x2FFF`).
pub const MAX_SHARDS: u16 = 4096;
/// The configuration's layout: 1 without `K_auth` (boxes personalized before the
/// authentication box existed; still read, and rewritten as 2 at their first ENROLL
/// MAILER), 2 with it.
const CONFIG_V1: u8 = 1;
const CONFIG_VERSION: u8 = 2;
const SHARD_VERSION: u8 = 1;

/// What PERSONALIZE fixed for ever.
#[derive(Clone, Debug)]
pub struct BoxConfig {
    /// The box's identity (grants name it).
    pub box_id: DeviceId,
    /// Number of shards.
    pub shards: u16,
    /// Depth of each shard's tree (2^depth slots per shard).
    pub depth: u8,
    /// The vendor's key that signs meter grants (CREATE METER).
    pub vendor_key: [u8; PUBLIC_KEY_LEN],
    /// The key management system's refill key (REFILL messages, as the PSD's).
    pub refill_key: [u8; PUBLIC_KEY_LEN],
    /// The secret keys.
    pub keys: BoxKeys,
    /// The box's transaction key (ECDSA P-256): signs transaction records.
    pub txn_key: IndiciumKey,
}

/// Whether a geometry is allowed: 1–4,096 shards, depth 1–24, and every slot fits a `u32`.
pub fn geometry_ok(shards: u16, depth: u8) -> bool {
    (1..=MAX_SHARDS).contains(&shards)
        && (1..=MAX_DEPTH).contains(&depth)
        && (u64::from(shards) << depth) <= 1u64 << 32
}

impl BoxConfig {
    /// Stored layout: version 2 | box ID 8 | shards 2 | depth 1 | vendor key 65 |
    /// refill key 65 | K_rec 32 | K_wrap 32 | K_gen 32 | transaction key scalar 32 |
    /// K_auth 32. Version 1 is the same without K_auth (written only for a box that has
    /// none, so an old box's record is not changed by anything but its upgrade).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(302);
        w.put_u8(if self.keys.auth.is_some() {
            CONFIG_VERSION
        } else {
            CONFIG_V1
        });
        w.extend_from_slice(&self.box_id.0);
        w.put_u16(self.shards);
        w.put_u8(self.depth);
        w.extend_from_slice(&self.vendor_key);
        w.extend_from_slice(&self.refill_key);
        w.extend_from_slice(self.keys.rec.expose());
        w.extend_from_slice(self.keys.wrap.expose());
        w.extend_from_slice(self.keys.gen.expose());
        w.extend_from_slice(self.txn_key.secret_bytes().as_ref());
        if let Some(auth) = &self.keys.auth {
            w.extend_from_slice(auth.expose());
        }
        w
    }

    /// Parses the stored layout.
    pub fn decode(bytes: &[u8]) -> Result<Self, Malformed> {
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if version != CONFIG_V1 && version != CONFIG_VERSION {
            return Err(Malformed::Value);
        }
        let mut cfg = BoxConfig {
            box_id: DeviceId(r.array()?),
            shards: r.u16()?,
            depth: r.u8()?,
            vendor_key: r.array()?,
            refill_key: r.array()?,
            keys: BoxKeys {
                rec: Cmac256::new(r.array()?),
                wrap: Cmac256::new(r.array()?),
                gen: Cmac256::new(r.array()?),
                auth: None,
            },
            txn_key: IndiciumKey::from_bytes(r.take(32)?).ok_or(Malformed::Value)?,
        };
        if version == CONFIG_VERSION {
            cfg.keys.auth = Some(Cmac256::new(r.array()?));
        }
        r.finish()?;
        if !geometry_ok(cfg.shards, cfg.depth) {
            return Err(Malformed::Value);
        }
        Ok(cfg)
    }

    /// The configuration in `store`, if the box is personalized.
    pub fn load(store: &dyn Store) -> Result<Option<Self>, StoreError> {
        match store.read(rec::CONFIG)? {
            None => Ok(None),
            Some(b) => Self::decode(&b)
                .map(Some)
                .map_err(|_| StoreError::Corrupt("vbox configuration")),
        }
    }

    /// The shard and the index within it of `slot`, or `6A80` if the slot is beyond the
    /// box's shards.
    pub fn locate(&self, slot: u32) -> Result<(u16, u32), Status> {
        let shard = u64::from(slot) >> self.depth;
        let index = slot & ((1u32 << self.depth) - 1);
        match u16::try_from(shard) {
            Ok(s) if s < self.shards => Ok((s, index)),
            _ => Err(Status::WrongData),
        }
    }
}

/// One shard's freshness state: 104 bytes in the box.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardState {
    /// The root of the shard's tree as of the last command.
    pub root: Hash,
    /// The root before the last command (RESUME proves the old leaf against it).
    pub previous_root: Hash,
    /// SHA-256(INS ‖ command data) of the last command that changed the shard.
    pub last_request: Hash,
    /// Commands that changed the shard.
    pub sequence: u64,
}

impl ShardState {
    /// A shard never written: the empty tree's root, no previous root.
    pub fn fresh(depth: u8, empty: &EmptyHashes) -> Self {
        Self {
            root: empty.at(depth),
            previous_root: [0; 32],
            last_request: [0; 32],
            sequence: 0,
        }
    }

    /// Stored layout: version 1 | root 32 | previous root 32 | last request 32 | sequence 8.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(105);
        w.put_u8(SHARD_VERSION);
        w.extend_from_slice(&self.root);
        w.extend_from_slice(&self.previous_root);
        w.extend_from_slice(&self.last_request);
        w.put_u64(self.sequence);
        w
    }

    /// The public view (READ SHARD): the stored layout without its version byte.
    pub fn public(&self) -> Vec<u8> {
        let mut w = self.encode();
        w.remove(0);
        w
    }

    /// Parses the stored layout.
    pub fn decode(bytes: &[u8]) -> Result<Self, Malformed> {
        let mut r = Reader::new(bytes);
        if r.u8()? != SHARD_VERSION {
            return Err(Malformed::Value);
        }
        let s = ShardState {
            root: r.array()?,
            previous_root: r.array()?,
            last_request: r.array()?,
            sequence: r.u64()?,
        };
        r.finish()?;
        Ok(s)
    }

    /// Shard `index`'s state in `store`.
    pub fn load(
        store: &dyn Store,
        index: u16,
        depth: u8,
        empty: &EmptyHashes,
    ) -> Result<Self, Status> {
        match store.read(rec::shard(index))? {
            None => Ok(Self::fresh(depth, empty)),
            Some(b) => Self::decode(&b).map_err(|_| Status::Internal),
        }
    }
}
