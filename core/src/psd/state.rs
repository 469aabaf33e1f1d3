//! The PSD's state, split by lifetime: [`Persistent`] (loaded from the store, changed only
//! after a commit) and [`Volatile`] (RAM only, forgotten at deselect and reset).
//!
//! Records and their IDs: [`crate::records::psd`]. A store without PSD records is a blank
//! PSD; records that do not decode, or register sets without a device, are an error, never
//! a fresh device.

use alloc::vec::Vec;

use crate::records::psd as rec;
use crate::status::Status;
use crate::store::{RecordId, Store, StoreError};
use crate::types::Date;
use crate::wire::{Reader, Writer};

use super::audit::NONCE_LEN;
use super::certmeter::state::CertMeterState;
use super::command::LifeCycle;
use super::device::{self, Device};
use super::license::LicenseState;
use super::registers::RegisterSet;
use super::transfer::{PsdSession, TransferState};
use crate::transfer::cert::Credentials;

/// What survives a power cut: the RAM copy of the committed records.
#[derive(Default)]
pub(super) struct Persistent {
    /// The device (record `DEVICE`); `None` while blank.
    pub device: Option<Device>,
    /// Device-wide counters (record `COUNTERS`).
    pub counters: Counters,
    /// The register set slots (records `SET_BASE + i`): `None` for a free slot.
    pub sets: Vec<Option<RegisterSet>>,
    /// Licenses: pending request, counters, outstanding exports (record `LICENSES`).
    pub licenses: LicenseState,
    /// Value transfer to purses: personality, failed recognitions, pending transfer
    /// (record `TRANSFER`).
    pub transfer: TransferState,
    /// The PSD's certificate and revocation list (record `CREDENTIALS`).
    pub credentials: Credentials,
    /// The certificate meter (record `CERTMETER`; read without the `certmeter` feature
    /// only so a PSD's records load the same either way).
    #[cfg_attr(not(feature = "certmeter"), allow(dead_code))]
    pub certmeter: CertMeterState,
}

/// What a deselect or reset forgets.
#[derive(Default)]
pub(super) struct Volatile {
    /// The nonce of the last AUDIT since power-on, which a RECEIPT must name.
    pub last_audit_nonce: Option<[u8; NONCE_LEN]>,
    /// The transfer session in progress.
    pub session: Option<PsdSession>,
}

/// Device-wide persistent counters (one record).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Counters {
    /// Last date of mailing used (dates never go back).
    pub last_date: Option<Date>,
    /// Date of the last audit the back office accepted (RECEIPT).
    pub last_inspection: Option<Date>,
}

impl Persistent {
    /// Loads the PSD's records from `store`.
    pub fn load(store: &dyn Store) -> Result<Persistent, StoreError> {
        let ids: Vec<RecordId> = store
            .ids()?
            .into_iter()
            .filter(|id| rec::RANGE.contains(id))
            .collect();
        let Some(device) = store.read(rec::DEVICE)? else {
            if ids.is_empty() {
                return Ok(Persistent::default());
            }
            return Err(StoreError::Corrupt("PSD records without a device record"));
        };
        let device = Device::decode(&device).map_err(|_| StoreError::Corrupt("device record"))?;
        let counters = match store.read(rec::COUNTERS)? {
            None => return Err(StoreError::Corrupt("counters record missing")),
            Some(bytes) => Counters::decode(&bytes)?,
        };
        let mut sets = Vec::with_capacity(device::MAX_REGISTER_SETS);
        for i in 0..device::MAX_REGISTER_SETS {
            sets.push(match store.read(rec::set(i))? {
                Some(bytes) => Some(
                    RegisterSet::decode(&bytes)
                        .map_err(|_| StoreError::Corrupt("register set record"))?,
                ),
                None => None,
            });
        }
        let licenses = LicenseState::load(store.read(rec::LICENSES)?)?;
        if sets.iter().all(Option::is_none)
            && licenses.exports.is_empty()
            && device.postal_authority.is_none()
        {
            return Err(StoreError::Corrupt(
                "personalized PSD without register sets",
            ));
        }
        let transfer = TransferState::load(store.read(rec::TRANSFER)?)?;
        if let Some(p) = &transfer.pending {
            let set = sets
                .get(usize::from(p.set))
                .and_then(Option::as_ref)
                .ok_or(StoreError::Corrupt("pending transfer on a missing set"))?;
            if set.pending != p.amount {
                return Err(StoreError::Corrupt(
                    "pending transfer and register disagree",
                ));
            }
        }
        let credentials = match store.read(rec::CREDENTIALS)? {
            None => Credentials::default(),
            Some(b) => {
                Credentials::decode(&b).map_err(|_| StoreError::Corrupt("credentials record"))?
            }
        };
        let certmeter = CertMeterState::load(store.read(rec::CERTMETER)?)?;
        Ok(Persistent {
            device: Some(device),
            counters,
            sets,
            licenses,
            transfer,
            credentials,
            certmeter,
        })
    }

    /// The register set in slot `i`: `6A88` for a free or missing slot.
    pub fn set(&self, i: usize) -> Result<&RegisterSet, Status> {
        self.sets
            .get(i)
            .and_then(Option::as_ref)
            .ok_or(Status::ReferencedDataNotFound)
    }

    /// Replaces the set in slot `i` (after its commit).
    pub fn put_set(&mut self, i: usize, set: RegisterSet) {
        if let Some(slot) = self.sets.get_mut(i) {
            *slot = Some(set);
        }
    }

    /// Whether `license` is in this PSD: a resident set, or an export preparing or
    /// outstanding (one license has one set per device, wherever it is).
    #[cfg(feature = "licenses")]
    pub fn holds_license(&self, license: crate::types::LicenseId) -> bool {
        self.sets.iter().flatten().any(|s| s.license == license)
            || self.licenses.export_of(license).is_some()
    }

    /// Whether the set in slot `i` is frozen by an export being prepared (`9A34`).
    pub fn frozen(&self, i: usize) -> bool {
        self.licenses
            .exports
            .iter()
            .any(|e| usize::from(e.slot) == i && e.state == super::license::ExportState::Preparing)
    }

    /// Blank or personalized.
    pub fn life_cycle(&self) -> LifeCycle {
        match self.device {
            None => LifeCycle::Blank,
            Some(_) => LifeCycle::Personalized,
        }
    }

    /// The device. Commands that need it are refused before they run on a blank PSD
    /// ([`super::command::PsdCommand::allowed_in`]); this answers `6985` all the same.
    pub fn device(&self) -> Result<&Device, Status> {
        self.device.as_ref().ok_or(Status::ConditionsNotSatisfied)
    }
}

impl Counters {
    /// Record layout, version 1: per date, `00` or `01` ‖ date.
    pub fn encode(self) -> Vec<u8> {
        let mut w = Vec::with_capacity(11);
        w.put_u8(1);
        for d in [self.last_date, self.last_inspection] {
            match d {
                None => w.put_u8(0),
                Some(d) => {
                    w.put_u8(1);
                    d.write(&mut w);
                }
            }
        }
        w
    }

    /// Parses the record.
    pub fn decode(bytes: &[u8]) -> Result<Counters, StoreError> {
        let corrupt = |_| StoreError::Corrupt("counters record");
        let mut r = Reader::new(bytes);
        if r.u8().map_err(corrupt)? != 1 {
            return Err(StoreError::Corrupt("counters record version"));
        }
        let mut date = || -> Result<Option<Date>, StoreError> {
            match r.u8().map_err(corrupt)? {
                0 => Ok(None),
                1 => Ok(Some(Date::read(&mut r).map_err(corrupt)?)),
                _ => Err(StoreError::Corrupt("counters record")),
            }
        };
        let counters = Counters {
            last_date: date()?,
            last_inspection: date()?,
        };
        r.finish().map_err(corrupt)?;
        Ok(counters)
    }
}
