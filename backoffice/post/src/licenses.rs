//! Licenses at the post office (seed 003): the keys that sign the indicia of register sets
//! added by a license, and each license reconciled across its devices.
//!
//! A set a PSD made by LICENSE INSTALL signs its indicia with its own license key (the key
//! ID in the indicium is that key's), not with the device key the KMS registered. The
//! postal authority certified that key for one (license, device): the post office reads the
//! device's grants at the PA (`GET /v1/grants?device=…`, as `post.openpsd`) only when an
//! indicium names a key other than the device's, and picks the grant by (device, key ID,
//! license): 4-byte key IDs collide, the device and license narrow it to the one key the
//! PA certified. An indicium is then refused when it is dated outside the grant's validity,
//! after the grant's revocation, or at another origin than the grant's.
//!
//! Claim 6 (one license on several PSDs): the registry keys pieces by (device, key,
//! license, piece), so the devices of one license never collide, and
//! `GET /v1/licenses/{license}` ([`license_report`]) adds the license up across its devices
//! against what the back office credited each one ("a data processing task to check the
//! indicia printed to see that they add up properly to match the funds paid in connection
//! with the license").

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::Json;

use openpsd_core::psd::indicium::IndiciumData;
use openpsd_core::types::KeyId;
use openpsd_protocol::license::GrantList;
use openpsd_protocol::post::{LicenseDevice, LicenseReport};
use openpsd_protocol::{DeviceCredit, ErrorCode};
use openpsd_service_kit::db::from_sql_int;
use openpsd_service_kit::error::ApiError;

use crate::service::{Core, PostOffice, KEY_CACHE_MAX, KEY_TTL};
use crate::verify::DeviceKey;

const STEP_GRANTS: &str = "post_grants";
const STEP_REPORT: &str = "post_license_report";

/// A device's grants are read again when an indicium names a key none of them has, but
/// not more often than this (a flood of made-up key IDs must not flood the PA).
const GRANTS_REREAD: Duration = Duration::from_secs(5);

/// A license key the PA certified for one (license, device).
#[derive(Debug)]
pub struct LicenseKey {
    /// The license.
    pub license: u32,
    /// The origin the grant names.
    pub origin: String,
    /// The certified key.
    pub key: Arc<DeviceKey>,
    /// First and last day of mailing (days since 2000-01-01), and as written.
    pub not_before: (u32, String),
    /// Last day of mailing.
    pub not_after: (u32, String),
    /// Day of the grant's revocation, if revoked.
    pub revoked_day: Option<u32>,
}

/// A device's grants as the PA listed them.
#[derive(Debug)]
pub struct Grants {
    /// The grants with a key (every grant the PA lists has one).
    pub keys: Vec<LicenseKey>,
    read_at: Instant,
}

impl Grants {
    /// The grant whose key signed an indicium of `license` with key ID `key_id`.
    pub fn find(&self, key_id: KeyId, license: u32) -> Option<&LicenseKey> {
        self.keys
            .iter()
            .find(|g| g.key.key_id() == key_id && g.license == license)
    }
}

fn unix_day(t: u64) -> u32 {
    u32::try_from((t / 86_400).saturating_sub(openpsd_core::calendar::UNIX_DAYS_AT_EPOCH_2000))
        .unwrap_or(u32::MAX)
}

impl Core {
    /// The device's license keys from the PA's grants, cached for [`KEY_TTL`]; read again
    /// (at most every [`GRANTS_REREAD`]) when `wanted` is not among them, so a license
    /// granted a moment ago verifies at once.
    pub(crate) async fn license_keys(
        &self,
        device: &str,
        wanted: &[(KeyId, u32)],
    ) -> Result<Arc<Grants>, ApiError> {
        if let Some(g) = self
            .grants
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(device)
        {
            let age = g.read_at.elapsed();
            let all_known = wanted.iter().all(|(k, l)| g.find(*k, *l).is_some());
            if age < GRANTS_REREAD || (age < KEY_TTL && all_known) {
                return Ok(Arc::clone(g));
            }
        }
        let list: GrantList = self
            .pa
            .get(&format!("/v1/grants?device={device}"), STEP_GRANTS)
            .await?;
        let mut keys = Vec::with_capacity(list.grants.len());
        for g in list.grants {
            let key = g
                .public_key
                .as_deref()
                .and_then(|h| hex::decode(h).ok())
                .and_then(|pk| DeviceKey::from_sec1(&pk));
            let dates = (
                g.not_before.parse::<openpsd_core::types::Date>(),
                g.not_after.parse::<openpsd_core::types::Date>(),
            );
            let (Some(key), (Ok(nb), Ok(na))) = (key, dates) else {
                tracing::warn!(device, serial = %g.serial, "a grant the PA listed without a usable key or dates");
                continue;
            };
            keys.push(LicenseKey {
                license: g.license,
                origin: g.origin,
                key: Arc::new(key),
                not_before: (nb.day_number(), g.not_before),
                not_after: (na.day_number(), g.not_after),
                revoked_day: g.revoked_at.map(unix_day),
            });
        }
        let entry = Arc::new(Grants {
            keys,
            read_at: Instant::now(),
        });
        let mut grants = self
            .grants
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if grants.len() >= KEY_CACHE_MAX {
            grants.retain(|_, e| e.read_at.elapsed() < KEY_TTL);
            if grants.len() >= KEY_CACHE_MAX {
                grants.clear();
            }
        }
        grants.insert(device.to_owned(), Arc::clone(&entry));
        Ok(entry)
    }
}

/// Why an indicium that verified under a license key is still refused: another origin than
/// the grant's, a date outside the grant's validity or after its revocation.
pub fn refused_by_grant(d: &IndiciumData, g: &LicenseKey) -> Option<String> {
    let license = g.license;
    if g.origin != d.origin.to_string() {
        return Some(format!(
            "origin {} is not license {license}'s ({})",
            d.origin, g.origin
        ));
    }
    let day = d.date.day_number();
    if day < g.not_before.0 || day > g.not_after.0 {
        return Some(format!(
            "mailed on {} outside license {license}'s grant to the device ({} to {})",
            d.date, g.not_before.1, g.not_after.1
        ));
    }
    if g.revoked_day.is_some_and(|r| day > r) {
        return Some(format!(
            "mailed after license {license}'s grant to the device was revoked"
        ));
    }
    None
}

/// `GET /v1/licenses/{license}`: the license across its devices — every device that mailed
/// under it (the registry) or was granted it (the PA) — against what the back office
/// credited each (the meter server).
pub(crate) async fn license_report(
    State(po): State<PostOffice>,
    UrlPath(license): UrlPath<String>,
) -> Result<Json<LicenseReport>, ApiError> {
    let step = STEP_REPORT;
    // Parsed here, not by the extractor: its refusal is plain text, not the error body.
    let license: u32 = license
        .parse()
        .map_err(|_| ApiError::bad_request(step, format!("license {license:?} is not a number")))?;
    let rows = po
        .db
        .run(step, Vec::new(), move |tx| tx.license_devices(license))
        .await?;
    let mut devices: BTreeMap<String, LicenseDevice> = BTreeMap::new();
    for (device, pieces, highest_piece, highest_ar, copies, findings) in rows {
        devices.insert(
            device.clone(),
            LicenseDevice {
                device_id: device,
                pieces: from_sql_int(pieces, step)?,
                highest_piece,
                highest_ar: from_sql_int(highest_ar, step)?,
                duplicates: from_sql_int(copies, step)?,
                findings: from_sql_int(findings, step)?,
                credited: None,
                grant_serial: None,
                grant_revoked: false,
            },
        );
    }
    // The PA's grants name devices that have not mailed yet, too. A license registered at
    // personalization has none; a PA that does not answer leaves the grant columns empty.
    match po
        .pa
        .get::<GrantList>(&format!("/v1/grants?license={license}"), step)
        .await
    {
        Ok(list) => {
            for g in list.grants {
                let d = devices
                    .entry(g.device_id.clone())
                    .or_insert_with(|| LicenseDevice {
                        device_id: g.device_id.clone(),
                        pieces: 0,
                        highest_piece: 0,
                        highest_ar: 0,
                        duplicates: 0,
                        findings: 0,
                        credited: None,
                        grant_serial: None,
                        grant_revoked: false,
                    });
                // The newest grant speaks for the device (a device granted again after a
                // revocation holds the later one).
                d.grant_serial = Some(g.serial);
                d.grant_revoked = g.revoked_at.is_some();
            }
        }
        Err(e) => tracing::warn!(license, error = %e.message, "grants not read at the PA"),
    }
    if devices.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            step,
            format!("license {license}: no piece scanned and no grant known"),
        ));
    }
    let mut credits: HashMap<String, Option<u64>> = HashMap::new();
    for device in devices.keys() {
        let credited = match po
            .meter
            .get::<DeviceCredit>(&format!("/v1/devices/{device}/credit"), step)
            .await
        {
            Ok(c) => Some(
                c.sets
                    .iter()
                    .find(|s| s.license == license)
                    .map_or(0, |s| s.credited),
            ),
            // A device the meter does not serve was credited nothing.
            Err(e) if e.code == ErrorCode::UnknownDevice.as_str() => Some(0),
            Err(e) => {
                tracing::warn!(device, error = %e.message, "credit not read");
                None
            }
        };
        credits.insert(device.clone(), credited);
    }
    let mut report = LicenseReport {
        license,
        devices: Vec::with_capacity(devices.len()),
        postage_used: 0,
        credited: 0,
        unpaid: 0,
        status: String::new(),
        findings: 0,
    };
    let mut complete = true;
    for (device, mut d) in devices {
        d.credited = credits.get(&device).copied().flatten();
        report.postage_used = report.postage_used.saturating_add(d.highest_ar);
        report.findings = report.findings.saturating_add(d.findings);
        match d.credited {
            Some(c) => {
                report.credited = report.credited.saturating_add(c);
                report.unpaid = report.unpaid.saturating_add(d.highest_ar.saturating_sub(c));
            }
            None => complete = false,
        }
        report.devices.push(d);
    }
    report.status = if report.unpaid > 0 {
        "unpaid"
    } else if !complete {
        "incomplete"
    } else {
        "balanced"
    }
    .to_owned();
    Ok(Json(report))
}
