//! Licenses (seed 003) as the JS API sees them: the PSD's side of Fig. 4 (LICENSE REQUEST,
//! LICENSE INSTALL) and of Fig. 5 (EXPORT SET in two phases, IMPORT SET), and GET DATA
//! `00 04`, through core's client layer. The page does the meter server's part
//! (`POST /v1/licenses`) and keeps the exported file, as `host/src/license_commands.rs`
//! does for `openpsd license`.
//!
//! Kept small for the module's size budget (`wasm/API.md`): requests and grants cross as
//! the bytes the meter server carries (hex), blobs as `Uint8Array`s the card judges, and
//! the views hold what a page shows; a set's registers come from `registers(slot)`.

use openpsd_core::client::psd_apdu;
use openpsd_core::psd::ins;
use openpsd_core::psd::license::export::Blob;
use openpsd_core::psd::license::request::LicenseAsk;
use openpsd_core::psd::license::{ExportState, SlotInfo};
use openpsd_core::types::{LicenseId, RegisterSetIndex};
use serde::Serialize;

use crate::device::{hex_lower, malformed, PsdDevice};
use crate::error::{ApiError, ApiResult};
use crate::views::parse_postal_code;

/// One slot of GET DATA `00 04`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SlotView {
    /// The slot (register set index), 0-based.
    pub slot: u8,
    /// The set's license; `null` when the slot is free.
    pub license: Option<u32>,
    /// ID of the key that signs the set's indicia: 8 hex digits (`null` when free).
    pub key_id: Option<String>,
    /// The grant's last valid date; `null` for a set made at personalization (or free).
    pub valid_until: Option<String>,
    /// An export is prepared: no indicium, refill or transfer until commit or cancel.
    pub frozen: bool,
}

/// One entry of the PSD's table of exports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportView {
    /// The set's license.
    pub license: u32,
    /// The export's epoch (decimal string: a u64 that is never reused).
    pub epoch: String,
    /// `true` while the export is prepared (the set still in the PSD, frozen); `false`
    /// once committed (the file holds the set; only this entry lets it back in).
    pub preparing: bool,
    /// The slot it left.
    pub slot: u8,
    /// The set's DR, which the PSD keeps answering for while it is out (amount).
    pub dr: String,
}

/// GET DATA `00 04`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LicensesView {
    /// Every slot, in order.
    pub slots: Vec<SlotView>,
    /// The license asked for by a pending LICENSE REQUEST (0: the postal authority
    /// numbers it); `null` when none is pending.
    pub pending: Option<u32>,
    /// Exports preparing or outstanding.
    pub exports: Vec<ExportView>,
}

/// LICENSE INSTALL's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstalledView {
    /// The slot the new set is in.
    pub slot: u8,
    /// The license key's ID: 8 hex digits.
    pub key_id: String,
    /// The license.
    pub license: u32,
}

impl PsdDevice {
    /// GET DATA `00 04`.
    pub fn licenses(&mut self) -> ApiResult<LicensesView> {
        let info = self.client().license_info()?;
        let mut slots = Vec::with_capacity(info.slots.len());
        for (slot, s) in (0u8..).zip(info.slots.iter()) {
            slots.push(match s {
                SlotInfo::Free => SlotView {
                    slot,
                    license: None,
                    key_id: None,
                    valid_until: None,
                    frozen: false,
                },
                SlotInfo::Set {
                    license,
                    key_id,
                    not_after,
                    frozen,
                    ..
                } => SlotView {
                    slot,
                    license: Some(license.0),
                    key_id: Some(hex_lower(&key_id.0)),
                    valid_until: not_after.map(|d| d.to_string()),
                    frozen: *frozen,
                },
            });
        }
        Ok(LicensesView {
            slots,
            pending: info.pending.map(|(_, l)| l.0),
            exports: info
                .exports
                .iter()
                .map(|e| ExportView {
                    license: e.license.0,
                    epoch: e.epoch.to_string(),
                    preparing: e.state == ExportState::Preparing,
                    slot: e.slot,
                    dr: e.dr.to_string(),
                })
                .collect(),
        })
    }

    /// LICENSE REQUEST for `license` (0: the postal authority numbers it) at `origin`:
    /// the signed request, hex, as the meter server's `POST /v1/licenses` takes it. Asking
    /// again answers the same request; `replace` makes a new one (the old key is forgotten).
    pub fn license_request(
        &mut self,
        origin: &str,
        license: u32,
        replace: bool,
    ) -> ApiResult<String> {
        let ask = LicenseAsk {
            license: LicenseId(license),
            origin: parse_postal_code("origin", origin)?,
        };
        let request = self
            .client()
            .exchange("LICENSE REQUEST", &psd_apdu::license_request(&ask, replace))?;
        Ok(hex_lower(&request))
    }

    /// LICENSE INSTALL with the grant's `install` data (hex, from the meter server; the
    /// card checks its layout and both signatures).
    pub fn license_install(&mut self, install_hex: &str) -> ApiResult<InstalledView> {
        let bytes =
            hex::decode(install_hex).map_err(|_| ApiError::input("install: not a hex string"))?;
        if bytes.is_empty() {
            return Err(ApiError::input("install: empty"));
        }
        let answer = self.command("LICENSE INSTALL", ins::LICENSE_INSTALL, 0, &bytes)?;
        match answer.as_slice() {
            [slot, k @ .., l0, l1, l2, l3] if k.len() == 4 => Ok(InstalledView {
                slot: *slot,
                key_id: hex_lower(k),
                license: u32::from_be_bytes([*l0, *l1, *l2, *l3]),
            }),
            _ => Err(malformed()),
        }
    }

    /// EXPORT SET, prepare: freezes `set` and answers the sealed blob (the same bytes if
    /// asked again before commit or cancel).
    pub fn export_prepare(&mut self, set: u8) -> ApiResult<Vec<u8>> {
        Ok(self.client().export_prepare(RegisterSetIndex(set))?)
    }

    /// EXPORT SET, commit, once the blob is kept: the slot is freed; the export's epoch.
    pub fn export_commit(&mut self, set: u8, blob: &[u8]) -> ApiResult<String> {
        let epoch = self
            .client()
            .export_commit(RegisterSetIndex(set), &Blob::digest_of(blob))?;
        Ok(epoch.to_string())
    }

    /// EXPORT SET, cancel: the set is live again (its epoch is spent).
    pub fn export_cancel(&mut self, set: u8) -> ApiResult<()> {
        Ok(self.client().export_cancel(RegisterSetIndex(set))?)
    }

    /// IMPORT SET: the slot the set came back to; an older or duplicate copy is `9A33`.
    pub fn import_set(&mut self, blob: &[u8]) -> ApiResult<u8> {
        let answer = self.command("IMPORT SET", ins::IMPORT_SET, 0, blob)?;
        match answer.as_slice() {
            [slot] => Ok(*slot),
            _ => Err(malformed()),
        }
    }
}
