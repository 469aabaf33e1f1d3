//! Licenses (seed 003): register sets added after personalization through a grant chain,
//! and register sets parked on the host's disk that can never be rolled back or cloned.
//!
//! - [`request`]: LICENSE REQUEST (Fig. 4, 60-62) and its message.
//! - [`grant`]: the PA's X.509 grant rebuilt from a template, the vendor's countersignature.
//! - [`install`]: LICENSE INSTALL (Fig. 4, 67): a new set in one commit.
//! - [`export`]: EXPORT SET (Fig. 5), two phases; the blob's layout.
//! - [`import`]: IMPORT SET (claim 5): an outstanding export comes back once.
//! - [`retire`]: RETIRE SET: an outstanding export given up for a refund (a lost file, a
//!   replaced PSD's set), with a signed receipt.
//!
//! This file holds the persistent license state (record `LICENSES`): the pending request,
//! the counters, the export seal key and the outstanding-export table. `docs/licenses.md`
//! says where the value is at every instant of every step.

pub mod export;
pub mod grant;
#[cfg(feature = "licenses")]
pub mod import;
pub mod install;
pub mod request;
pub mod retire;
mod siv;

use alloc::vec::Vec;
use zeroize::Zeroizing;

use crate::crypto::IndiciumKey;
use crate::store::StoreError;
use crate::types::{Amount, LicenseId, PostalCode};
use crate::wire::{Malformed, Reader, Writer};

use grant::NONCE_LEN;

/// Most exports outstanding at once (a bounded table, as Android KeyMint's rollback
/// resistance: when full, EXPORT SET is refused with `9A36` instead of weakening).
pub const MAX_OUTSTANDING: usize = 16;
/// Length of an export's digest (the first bytes of the blob's SHA-256).
pub const DIGEST_LEN: usize = 16;
/// Layout version of the `LICENSES` record.
const RECORD_VERSION: u8 = 1;

/// A request committed before it was answered: what LICENSE INSTALL will check a grant
/// against.
#[derive(Clone, Debug)]
pub struct PendingRequest {
    /// Its counter.
    pub counter: u32,
    /// The license asked for (0: the PA assigns).
    pub license: LicenseId,
    /// The origin asked for.
    pub origin: PostalCode,
    /// The new license key.
    pub key: IndiciumKey,
    /// The nonce the grant must carry.
    pub nonce: [u8; NONCE_LEN],
}

/// Where an export is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportState {
    /// Prepared: the set is still resident, frozen; the host writes the file.
    Preparing,
    /// Committed: the set left the PSD; the file holds it and only this entry admits it.
    Outstanding,
    /// Given up by RETIRE SET: no file is ever admitted again; the back office refunds the
    /// DR against the receipt, then the host forgets the entry.
    Retired,
}

/// One entry of the outstanding-export table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExportEntry {
    /// The set's license.
    pub license: LicenseId,
    /// The export counter value the blob carries (never reused).
    pub epoch: u64,
    /// The first bytes of the blob's SHA-256.
    pub digest: [u8; DIGEST_LEN],
    /// Preparing or outstanding.
    pub state: ExportState,
    /// The slot the set was exported from.
    pub slot: u8,
    /// The set's control sum (AR + DR; nothing is pending in an exported set): the value
    /// the PSD answers for while the set is on disk.
    pub control_sum: Amount,
    /// The set's DR: the value a write-off would refund if the file were lost.
    pub dr: Amount,
}

impl ExportEntry {
    /// `license ‖ epoch ‖ digest ‖ state (1 preparing, 2 outstanding, 3 retired) ‖ slot ‖ control
    /// sum ‖ DR`.
    fn write(&self, w: &mut Vec<u8>) {
        w.put_u32(self.license.0);
        w.put_u64(self.epoch);
        w.extend_from_slice(&self.digest);
        w.put_u8(match self.state {
            ExportState::Preparing => 1,
            ExportState::Outstanding => 2,
            ExportState::Retired => 3,
        });
        w.put_u8(self.slot);
        w.put_u64(self.control_sum.0);
        w.put_u64(self.dr.0);
    }

    /// Reads a count and that many entries (at most [`MAX_OUTSTANDING`]).
    fn read_table(r: &mut Reader<'_>) -> Result<Vec<ExportEntry>, Malformed> {
        let n = usize::from(r.u8()?);
        if n > MAX_OUTSTANDING {
            return Err(Malformed::Value);
        }
        let mut exports = Vec::with_capacity(n);
        for _ in 0..n {
            let license = LicenseId(r.u32()?);
            let epoch = r.u64()?;
            let digest = r.array()?;
            let state = match r.u8()? {
                1 => ExportState::Preparing,
                2 => ExportState::Outstanding,
                3 => ExportState::Retired,
                _ => return Err(Malformed::Value),
            };
            exports.push(ExportEntry {
                license,
                epoch,
                digest,
                state,
                slot: r.u8()?,
                control_sum: Amount(r.u64()?),
                dr: Amount(r.u64()?),
            });
        }
        Ok(exports)
    }

    /// Writes a count and the entries.
    fn write_table(entries: &[ExportEntry], w: &mut Vec<u8>) {
        // why: at most MAX_OUTSTANDING (16) entries; EXPORT SET refuses a 17th.
        #[allow(clippy::cast_possible_truncation)]
        w.put_u8(entries.len() as u8);
        for e in entries {
            e.write(w);
        }
    }
}

/// The PSD's license state (record `LICENSES`; absent on a PSD that never used them).
#[derive(Clone, Debug)]
pub struct LicenseState {
    /// The request waiting for its grant.
    pub pending: Option<PendingRequest>,
    /// The last request counter used (the next request takes the one after).
    pub request_counter: u32,
    /// The counter of the last request installed (0: none), so a re-sent install is
    /// told apart (`9A32`) from one without a request (`9A31`).
    pub last_installed: u32,
    /// The export seal key (AES-SIV), generated inside at the first export.
    pub seal_key: Option<Zeroizing<[u8; 32]>>,
    /// The next export epoch; starts at 1, never reused, stuck at its top.
    pub export_counter: u64,
    /// Exports preparing or outstanding.
    pub exports: Vec<ExportEntry>,
}

impl Default for LicenseState {
    fn default() -> Self {
        LicenseState {
            pending: None,
            request_counter: 0,
            last_installed: 0,
            seal_key: None,
            export_counter: 1,
            exports: Vec::new(),
        }
    }
}

impl LicenseState {
    /// Loads the record (absent: nothing yet).
    pub fn load(bytes: Option<Vec<u8>>) -> Result<LicenseState, StoreError> {
        match bytes {
            None => Ok(LicenseState::default()),
            Some(b) => LicenseState::decode(&b).map_err(|_| StoreError::Corrupt("licenses record")),
        }
    }

    /// The entry of `license`, if an export of it is preparing or outstanding.
    pub fn export_of(&self, license: LicenseId) -> Option<&ExportEntry> {
        self.exports.iter().find(|e| e.license == license)
    }

    /// Record layout (holds secrets: the pending key and the seal key).
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut w = Zeroizing::new(Vec::with_capacity(128 + self.exports.len() * 48));
        w.put_u8(RECORD_VERSION);
        match &self.pending {
            None => w.put_u8(0),
            Some(p) => {
                w.put_u8(1);
                w.put_u32(p.counter);
                w.put_u32(p.license.0);
                p.origin.write(&mut w);
                w.extend_from_slice(p.key.secret_bytes().as_ref());
                w.extend_from_slice(&p.nonce);
            }
        }
        w.put_u32(self.request_counter);
        w.put_u32(self.last_installed);
        match &self.seal_key {
            None => w.put_u8(0),
            Some(k) => {
                w.put_u8(1);
                w.extend_from_slice(k.as_ref());
            }
        }
        w.put_u64(self.export_counter);
        ExportEntry::write_table(&self.exports, &mut w);
        w
    }

    /// Parses the record.
    pub fn decode(bytes: &[u8]) -> Result<LicenseState, Malformed> {
        let mut r = Reader::new(bytes);
        if r.u8()? != RECORD_VERSION {
            return Err(Malformed::Value);
        }
        let pending = match r.u8()? {
            0 => None,
            1 => Some(PendingRequest {
                counter: r.u32()?,
                license: LicenseId(r.u32()?),
                origin: PostalCode::read(&mut r)?,
                key: IndiciumKey::from_bytes(r.take(32)?).ok_or(Malformed::Value)?,
                nonce: r.array()?,
            }),
            _ => return Err(Malformed::Value),
        };
        let request_counter = r.u32()?;
        let last_installed = r.u32()?;
        let seal_key = match r.u8()? {
            0 => None,
            1 => Some(Zeroizing::new(r.array()?)),
            _ => return Err(Malformed::Value),
        };
        let export_counter = r.u64()?;
        let exports = ExportEntry::read_table(&mut r)?;
        r.finish()?;
        if exports.iter().any(|e| e.epoch >= export_counter) {
            return Err(Malformed::Value);
        }
        Ok(LicenseState {
            pending,
            request_counter,
            last_installed,
            seal_key,
            export_counter,
            exports,
        })
    }
}

/// Layout version of GET DATA `00 04`.
pub const LICENSE_INFO_VERSION: u8 = 1;

/// A slot as GET DATA `00 04` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotInfo {
    /// No set.
    Free,
    /// A set: its license, the ID of the key that signs its indicia, the grant's last
    /// valid date (none for a set made at personalization), and whether an export is
    /// being prepared (frozen).
    Set {
        /// License.
        license: LicenseId,
        /// Signing key ID.
        key_id: crate::types::KeyId,
        /// The signing key (SEC1 uncompressed): what its indicia verify under.
        public_key: [u8; crate::crypto::PUBLIC_KEY_LEN],
        /// Last valid date of the grant.
        not_after: Option<crate::types::Date>,
        /// Frozen by an export being prepared.
        frozen: bool,
    },
}

/// GET DATA `00 04`: the slots, the pending request and the outstanding exports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LicenseInfo {
    /// Every slot, in order.
    pub slots: Vec<SlotInfo>,
    /// The pending request's counter and license, if any.
    pub pending: Option<(u32, LicenseId)>,
    /// The next export epoch.
    pub export_counter: u64,
    /// Exports preparing or outstanding.
    pub exports: Vec<ExportEntry>,
}

impl LicenseInfo {
    /// The answer's layout.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(64 + self.exports.len() * 48);
        w.put_u8(LICENSE_INFO_VERSION);
        // why: at most MAX_REGISTER_SETS (4) slots.
        #[allow(clippy::cast_possible_truncation)]
        w.put_u8(self.slots.len() as u8);
        for s in &self.slots {
            match s {
                SlotInfo::Free => w.put_u8(0),
                SlotInfo::Set {
                    license,
                    key_id,
                    public_key,
                    not_after,
                    frozen,
                } => {
                    w.put_u8(if *frozen { 2 } else { 1 });
                    w.put_u32(license.0);
                    w.extend_from_slice(&key_id.0);
                    w.extend_from_slice(public_key);
                    match not_after {
                        Some(d) => d.write(&mut w),
                        None => w.put_u32(0),
                    }
                }
            }
        }
        match self.pending {
            None => w.put_u8(0),
            Some((counter, license)) => {
                w.put_u8(1);
                w.put_u32(counter);
                w.put_u32(license.0);
            }
        }
        w.put_u64(self.export_counter);
        ExportEntry::write_table(&self.exports, &mut w);
        w
    }

    /// Parses the answer.
    pub fn decode(bytes: &[u8]) -> Result<LicenseInfo, Malformed> {
        let mut r = Reader::new(bytes);
        if r.u8()? != LICENSE_INFO_VERSION {
            return Err(Malformed::Value);
        }
        let n = usize::from(r.u8()?);
        let mut slots = Vec::with_capacity(n);
        for _ in 0..n {
            slots.push(match r.u8()? {
                0 => SlotInfo::Free,
                state @ (1 | 2) => SlotInfo::Set {
                    license: LicenseId(r.u32()?),
                    key_id: crate::types::KeyId(r.array()?),
                    public_key: r.array()?,
                    not_after: if r.remaining().starts_with(&[0; 4]) {
                        r.take(4)?;
                        None
                    } else {
                        Some(crate::types::Date::read(&mut r)?)
                    },
                    frozen: state == 2,
                },
                _ => return Err(Malformed::Value),
            });
        }
        let pending = match r.u8()? {
            0 => None,
            1 => Some((r.u32()?, LicenseId(r.u32()?))),
            _ => return Err(Malformed::Value),
        };
        let export_counter = r.u64()?;
        let exports = ExportEntry::read_table(&mut r)?;
        r.finish()?;
        Ok(LicenseInfo {
            slots,
            pending,
            export_counter,
            exports,
        })
    }
}

#[cfg(feature = "licenses")]
impl crate::psd::PsdApplet {
    /// GET DATA (80 CA 00 04): the license slots and exports.
    pub(in crate::psd) fn license_info(
        &self,
        reply: &mut Vec<u8>,
    ) -> Result<(), crate::status::Status> {
        let p = &self.persistent;
        let device = p.device()?;
        let slots = p
            .sets
            .iter()
            .enumerate()
            .map(|(i, s)| match s {
                None => SlotInfo::Free,
                Some(s) => SlotInfo::Set {
                    license: s.license,
                    key_id: s.key_id(&device.key),
                    public_key: s.signing_key(&device.key).public_key(),
                    not_after: s.grant.as_ref().map(|g| g.not_after),
                    frozen: p.frozen(i),
                },
            })
            .collect();
        let l = &p.licenses;
        reply.extend_from_slice(
            &LicenseInfo {
                slots,
                pending: l.pending.as_ref().map(|q| (q.counter, q.license)),
                export_counter: l.export_counter,
                exports: l.exports.clone(),
            }
            .encode(),
        );
        Ok(())
    }
}
