//! The post office as a service (`backoffice serve --role post`): scanners post batches of
//! indicia (`POST /v1/indicia`, the operator's certificate), the service verifies them with
//! the device keys it reads at the KMS (as `post.openpsd`), records them in its registry,
//! reconciles every device it saw against the value the meter server says was credited,
//! and reports each new finding to the meter server, which quarantines the device.
//! `GET /v1/devices/{id}/findings` explains a device (`backoffice post explain`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{Method, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};

use openpsd_core::crypto::SIGNATURE_LEN;
use openpsd_core::psd::indicium::{IndiciumData, VerifyError};
use openpsd_core::types::KeyId;
use openpsd_protocol::post::{DeviceReport, LastAudit, ScanBatch, ScanResult, Verdict, MAX_BATCH};
use openpsd_protocol::{DeviceCredit, DeviceInfo, ErrorCode, PostFinding};
use openpsd_service_kit::access::{RateLimit, Routes, Who};
use openpsd_service_kit::codec;
use openpsd_service_kit::error::ApiError;
use openpsd_service_kit::pki::Pki;
use openpsd_service_kit::tls::{client_config, Role};
use openpsd_service_kit::upstream::Upstream;

use crate::licenses::{refused_by_grant, Grants, LicenseKey};
use crate::registry::{self, Recorded, Series};
use crate::store::Store;
pub use crate::store::DB_FILE;
use crate::verify::{verify_batch, DeviceKey};

/// How long a device key (and its revocation state) read at the KMS is used before it is
/// read again.
pub const KEY_TTL: Duration = Duration::from_secs(60);
/// Device keys kept in the cache at most.
pub const KEY_CACHE_MAX: usize = 100_000;
/// Worker threads verifying a batch.
pub const VERIFY_THREADS: usize = 2;

const STEP_SCAN: &str = "post_scan";
const STEP_KEYS: &str = "post_keys";
const STEP_REPORT: &str = "post_report";
const STEP_EXPLAIN: &str = "post_explain";

/// How the post office is set up.
#[derive(Clone, Debug)]
pub struct Config {
    /// Data directory: `post.sqlite` (unless `database_url` names a PostgreSQL server).
    pub data: PathBuf,
    /// A PostgreSQL connection string; `None` keeps the registry in `post.sqlite`.
    pub database_url: Option<String>,
    /// KMS base URL (device keys).
    pub kms_url: String,
    /// Meter server base URL (credit, findings).
    pub meter_url: String,
    /// Postal authority base URL (the license grants: the keys of sets added by a license).
    pub pa_url: String,
    /// The virtual meter's data center (seed 001), if any: the credit of the meters it keeps
    /// (devices the meter server does not serve).
    pub datacenter_url: Option<String>,
    /// The back office's PKI: the post office's certificate for calling them.
    pub pki: Pki,
    /// How often findings the meter server was not told yet (it was unreachable) are sent
    /// again, for devices not scanned since ([`REPORT_RETRY`] by default).
    pub report_retry: Duration,
}

/// How often unreported findings are sent again by default.
pub const REPORT_RETRY: Duration = Duration::from_secs(30);
/// Devices whose unreported findings one retry round sends.
const REPORT_ROUND: u32 = 1000;

/// A device key as the KMS knows it.
struct KeyEntry {
    key: Option<Arc<DeviceKey>>,
    /// The device's licenses and their origin postal codes, as registered.
    licenses: Vec<(u32, String)>,
    /// Days since 2000-01-01 of the revocation, if revoked.
    revoked_day: Option<u32>,
    read_at: Instant,
}

/// The post office's shared state: what the routes and the background reporter use, and
/// the reporter's stop (when the last clone of the service's state goes, so does the
/// sender, and the reporter ends, letting go of the store).
#[derive(Clone)]
pub struct PostOffice {
    core: Core,
    _reporter: Arc<tokio::sync::watch::Sender<()>>,
}

/// The store and the two services the post office calls.
#[derive(Clone)]
pub struct Core {
    pub(crate) db: Store,
    kms: Upstream,
    pub(crate) meter: Upstream,
    /// The data center: virtual meters' credit.
    pub(crate) datacenter: Option<Upstream>,
    pub(crate) pa: Upstream,
    keys: Arc<Mutex<HashMap<String, Arc<KeyEntry>>>>,
    /// The license keys of devices, by device (read at the PA when an indicium needs them).
    pub(crate) grants: Arc<Mutex<HashMap<String, Arc<Grants>>>>,
}

impl std::ops::Deref for PostOffice {
    type Target = Core;

    fn deref(&self) -> &Core {
        &self.core
    }
}

/// One indicium of a batch as it goes through the checks.
struct Item {
    hex: String,
    bytes: Vec<u8>,
    data: Option<IndiciumData>,
    verdict: Option<Verdict>,
}

fn verdict(kind: &str, data: Option<&IndiciumData>, reason: Option<String>) -> Verdict {
    Verdict {
        verdict: kind.to_owned(),
        device_id: data.map(|d| hex::encode_upper(d.device.0)),
        license: data.map(|d| d.license.0),
        piece: data.map(|d| d.pieces.0),
        postage: data.map(|d| d.postage.0),
        reason,
    }
}

impl PostOffice {
    /// Opens the data directory, or connects to the PostgreSQL server the config names,
    /// and starts sending unreported findings every `config.report_retry`.
    pub async fn open(config: Config) -> anyhow::Result<Self> {
        openpsd_service_kit::keys::private_dir(&config.data)?;
        let db = match &config.database_url {
            Some(url) => Store::postgres(url).await?,
            None => Store::sqlite(&config.data)?,
        };
        tracing::info!(store = db.kind(), "post office registry");
        let tls = client_config(&config.pki, Some(Role::Post))?;
        let core = Core {
            db,
            kms: Upstream::new("KMS", &config.kms_url, Role::Kms, tls.clone())?,
            meter: Upstream::new("meter server", &config.meter_url, Role::Meter, tls.clone())?,
            datacenter: config
                .datacenter_url
                .as_deref()
                .map(|u| Upstream::new("data center", u, Role::Datacenter, tls.clone()))
                .transpose()?,
            pa: Upstream::new("postal authority", &config.pa_url, Role::Pa, tls)?,
            keys: Arc::default(),
            grants: Arc::default(),
        };
        let (stop, stopped) = tokio::sync::watch::channel(());
        core.clone().spawn_reporter(config.report_retry, stopped);
        Ok(Self {
            core,
            _reporter: Arc::new(stop),
        })
    }

    /// The HTTP API and who may call each route: scanners and the operator (the operator's
    /// certificate) post indicia and read findings.
    pub fn routes() -> Routes<PostOffice> {
        const OPERATOR: &[Who] = &[Who::Role(Role::Operator)];
        Routes::new()
            .route(Method::POST, "/v1/indicia", post(scan), OPERATOR)
            .route(
                Method::GET,
                "/v1/devices/{device_id}/findings",
                get(explain),
                OPERATOR,
            )
            .route(
                Method::GET,
                "/v1/licenses/{license}",
                get(crate::licenses::license_report),
                OPERATOR,
            )
            .route(
                Method::GET,
                "/health",
                get(|| async { "ok" }),
                &[Who::AnyRole],
            )
    }

    /// The router with its state.
    pub fn router(self, limit: &RateLimit) -> Router {
        Self::routes().into_router(limit).with_state(self)
    }
}

impl Core {
    /// The device's key as the KMS has it (cached for [`KEY_TTL`]); `None` inside for a
    /// device the KMS does not know.
    async fn key(&self, device: &str) -> Result<Arc<KeyEntry>, ApiError> {
        if let Some(e) = self
            .keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(device)
        {
            if e.read_at.elapsed() < KEY_TTL {
                return Ok(Arc::clone(e));
            }
        }
        let entry = match self
            .kms
            .get::<DeviceInfo>(&format!("/v1/devices/{device}"), STEP_KEYS)
            .await
        {
            Ok(info) => {
                let pk = hex::decode(&info.public_key).unwrap_or_default();
                KeyEntry {
                    key: DeviceKey::from_sec1(&pk).map(Arc::new),
                    licenses: info.licenses,
                    revoked_day: info.revoked_at.map(|t| {
                        u32::try_from(
                            (t / 86_400)
                                .saturating_sub(openpsd_core::calendar::UNIX_DAYS_AT_EPOCH_2000),
                        )
                        .unwrap_or(u32::MAX)
                    }),
                    read_at: Instant::now(),
                }
            }
            Err(e) if e.code == ErrorCode::UnknownDevice.as_str() => KeyEntry {
                key: None,
                licenses: Vec::new(),
                revoked_day: None,
                read_at: Instant::now(),
            },
            Err(e) => return Err(e),
        };
        let entry = Arc::new(entry);
        let mut keys = self
            .keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Bounded: indicia naming many devices (or made-up ones, which are cached too, as
        // unknown) must not grow it for ever. Expired entries go first, then all.
        if keys.len() >= KEY_CACHE_MAX {
            keys.retain(|_, e| e.read_at.elapsed() < KEY_TTL);
            if keys.len() >= KEY_CACHE_MAX {
                keys.clear();
            }
        }
        keys.insert(device.to_owned(), Arc::clone(&entry));
        Ok(entry)
    }

    /// Sends findings the meter server has not been told yet every `every`, until the
    /// service stops: a device quarantined by a finding must not wait for its next label.
    fn spawn_reporter(self, every: Duration, mut stopped: tokio::sync::watch::Receiver<()>) {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await; // the first tick is now
            loop {
                tokio::select! {
                    _ = tick.tick() => self.report_pending().await,
                    // The sender went with the last clone of the service's state.
                    _ = stopped.changed() => break,
                }
            }
        });
    }

    /// One round of [`Self::spawn_reporter`].
    async fn report_pending(&self) {
        let devices = match self
            .db
            .run(STEP_REPORT, Vec::new(), |tx| {
                tx.unreported_devices(REPORT_ROUND)
            })
            .await
        {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e.message, "unreported findings not read");
                return;
            }
        };
        for device in devices {
            if let Err(e) = self.report(&device).await {
                tracing::warn!(device, error = %e.message, "findings not reported yet; retried");
                // The meter is still away: the next round tries again.
                return;
            }
        }
    }

    /// Tells the meter server every finding of `device` it does not have yet.
    async fn report(&self, device: &str) -> Result<(), ApiError> {
        let d = device.to_owned();
        let pending = self
            .db
            .run(STEP_REPORT, Vec::new(), move |tx| tx.unreported(&d))
            .await?;
        for (id, license, kind, message) in pending {
            let f = PostFinding {
                license,
                kind,
                message,
            };
            // reported: 1 the meter has it; 2 the meter refused it for good (a device it
            // does not serve): kept here for `explain`, not retried, not blocking the others.
            // The meter drops a finding it has already (the same message), so a retry after
            // a lost answer raises no second alarm.
            let outcome = match self
                .meter
                .post::<_, serde_json::Value>(
                    &format!("/v1/devices/{device}/findings"),
                    &f,
                    STEP_REPORT,
                )
                .await
            {
                Ok(_) => 1,
                Err(e) if e.status.is_client_error() => {
                    tracing::warn!(device, finding = id, error = %e.message, "the meter refused a finding");
                    2
                }
                Err(e) => return Err(e),
            };
            self.db
                .run(STEP_REPORT, Vec::new(), move |tx| {
                    tx.mark_reported(id, outcome)
                })
                .await?;
        }
        Ok(())
    }
}

/// Why an accepted piece becomes an anomaly after reconciliation.
const REGISTERS_EXCEED: &str =
    "the device's registers exceed what the back office credited (see its findings)";
/// Why an accepted piece becomes an anomaly after its set was retired and refunded.
const AFTER_RETIREMENT: &str =
    "the set was retired and refunded at a lower AR (see the device's findings)";
/// Why an accepted piece becomes an anomaly against the last audit.
const AGAINST_AUDIT: &str =
    "the piece contradicts the last audit the meter accepted (see the device's findings)";

/// Days after a revocation in which pieces dated up to it are still taken: mail takes
/// days, not months; later, a piece dated before the revocation is more likely back-dated
/// with a stolen key than late.
pub const REVOCATION_GRACE_DAYS: u32 = 30;

/// Why a validly signed indicium is still refused: a license or origin the device was not
/// registered with, registers out of any device's range, or a revoked key.
/// `grant`: the license grant whose key signed it, for a set added by a license (its
/// license and origin are the grant's, not the KMS's).
fn refused(d: &IndiciumData, entry: &KeyEntry, grant: Option<&LicenseKey>) -> Option<String> {
    if let Some(g) = grant {
        if let Some(why) = refused_by_grant(d, g) {
            return Some(why);
        }
    } else {
        let Some((_, origin)) = entry.licenses.iter().find(|(l, _)| *l == d.license.0) else {
            return Some(format!("license {} is not the device's", d.license.0));
        };
        if *origin != d.origin.to_string() {
            return Some(format!(
                "origin {} is not license {}'s ({origin})",
                d.origin, d.license.0
            ));
        }
    }
    let max = u64::try_from(i64::MAX).unwrap_or(u64::MAX);
    let in_range = [d.ar.0, d.dr.0, d.postage.0].iter().all(|v| *v <= max)
        && d.ar.0.checked_add(d.dr.0).is_some_and(|t| t <= max);
    if !in_range {
        return Some("registers beyond any device's range".into());
    }
    if let Some(day) = entry.revoked_day {
        if d.date.day_number() > day {
            return Some("mailed after the device was revoked".into());
        }
        let today = codec::today_utc().day_number();
        if today > day.saturating_add(REVOCATION_GRACE_DAYS) {
            return Some(format!(
                "the device was revoked more than {REVOCATION_GRACE_DAYS} days ago"
            ));
        }
    }
    None
}

/// Decodes a batch's hex and the signed part of each indicium.
fn parse(batch: ScanBatch) -> Result<Vec<Item>, ApiError> {
    if batch.indicia.len() > MAX_BATCH {
        return Err(ApiError::bad_request(
            STEP_SCAN,
            format!("indicia: at most {MAX_BATCH} in one batch"),
        ));
    }
    Ok(batch
        .indicia
        .into_iter()
        .map(|hex_text| {
            let bytes = if hex_text.len() <= 1024 {
                hex::decode(hex_text.trim()).ok()
            } else {
                None
            };
            let data = bytes.as_ref().and_then(|b| {
                let split = b.len().checked_sub(SIGNATURE_LEN)?;
                IndiciumData::decode(&b[..split]).ok()
            });
            let verdict = if data.is_none() {
                Some(verdict(
                    "invalid",
                    None,
                    Some("not an indicium: the bytes do not decode".into()),
                ))
            } else {
                None
            };
            Item {
                hex: hex_text,
                bytes: bytes.unwrap_or_default(),
                data,
                verdict,
            }
        })
        .collect())
}

/// `POST /v1/indicia`: verifies and records a batch; answers a verdict per indicium.
async fn scan(State(po): State<PostOffice>, body: Bytes) -> Result<Json<ScanResult>, ApiError> {
    let step = STEP_SCAN;
    let batch: ScanBatch = codec::json(&body, step)?;
    let mut items = parse(batch)?;

    // The keys of the devices named, read at the KMS once each.
    let devices: BTreeSet<String> = items
        .iter()
        .filter_map(|i| i.data.as_ref())
        .map(|d| hex::encode_upper(d.device.0))
        .collect();
    let mut keys = HashMap::new();
    for d in devices {
        let e = po.key(&d).await?;
        keys.insert(d, e);
    }

    // Indicia signed by another key than the device's: sets added by a license sign
    // with its own key, which the PA certified. Their devices' grants, once each.
    let mut wanted: BTreeMap<String, Vec<(KeyId, u32)>> = BTreeMap::new();
    for d in items.iter().filter_map(|i| i.data.as_ref()) {
        let device = hex::encode_upper(d.device.0);
        if keys[&device]
            .key
            .as_ref()
            .is_some_and(|k| k.key_id() != d.key_id)
        {
            wanted
                .entry(device)
                .or_default()
                .push((d.key_id, d.license.0));
        }
    }
    let mut grants: HashMap<String, Arc<Grants>> = HashMap::new();
    for (device, want) in wanted {
        let g = po.license_keys(&device, &want).await?;
        grants.insert(device, g);
    }

    // Verification across the worker threads. A job's key is the device's, or the grant
    // (index into its device's list) whose key the indicium names.
    let mut jobs: Vec<(usize, Arc<DeviceKey>, Option<usize>)> = Vec::new();
    for (n, item) in items.iter_mut().enumerate() {
        let Some(d) = item.data.as_ref() else {
            continue;
        };
        let device = hex::encode_upper(d.device.0);
        let entry = &keys[&device];
        match &entry.key {
            None => {
                item.verdict = Some(verdict(
                    "invalid",
                    Some(d),
                    Some("the KMS knows no such device".into()),
                ));
            }
            Some(k) => {
                let grant = grants.get(&device).and_then(|g| {
                    g.keys
                        .iter()
                        .position(|l| l.key.key_id() == d.key_id && l.license == d.license.0)
                });
                match grant {
                    Some(i) => jobs.push((n, Arc::clone(&grants[&device].keys[i].key), Some(i))),
                    None => jobs.push((n, Arc::clone(k), None)),
                }
            }
        }
    }
    let inputs: Vec<(Arc<DeviceKey>, Vec<u8>)> = jobs
        .iter()
        .map(|(n, k, _)| (Arc::clone(k), items[*n].bytes.clone()))
        .collect();
    let results = tokio::task::spawn_blocking(move || {
        let refs: Vec<(&DeviceKey, &[u8])> = inputs
            .iter()
            .map(|(k, b)| (k.as_ref(), b.as_slice()))
            .collect();
        verify_batch(&refs, VERIFY_THREADS)
    })
    .await
    .map_err(|e| ApiError::internal(step, format!("verification: {e}")))?;
    for ((n, _, grant), r) in jobs.iter().zip(results) {
        let item = &mut items[*n];
        let Some(d) = item.data else { continue };
        match r {
            Err(e) => {
                let why = match e {
                    VerifyError::WrongKey => {
                        "signed under a key that is neither the device's nor one the postal \
                         authority granted it for this license"
                    }
                    VerifyError::BadSignature => "the signature does not verify",
                    VerifyError::Malformed => "malformed",
                };
                item.verdict = Some(verdict("invalid", Some(&d), Some(why.into())));
            }
            Ok(_) => {
                let device = hex::encode_upper(d.device.0);
                let entry = &keys[&device];
                let grant = grant.and_then(|i| grants.get(&device).map(|g| &g.keys[i]));
                if let Some(why) = refused(&d, entry, grant) {
                    item.verdict = Some(verdict("invalid", Some(&d), Some(why)));
                }
            }
        }
    }

    // Record what verified, in one transaction.
    let to_record: Vec<(usize, IndiciumData, Vec<u8>, String)> = items
        .iter()
        .enumerate()
        .filter(|(_, i)| i.verdict.is_none())
        .filter_map(|(n, i)| {
            let d = i.data?;
            let split = i.bytes.len().checked_sub(SIGNATURE_LEN)?;
            Some((n, d, i.bytes[..split].to_vec(), i.hex.clone()))
        })
        .collect();
    let days = to_record.iter().map(|r| r.1.date.day_number()).collect();
    let recorded = po
        .db
        .run(step, days, move |tx| {
            let (index, batch): (Vec<usize>, Vec<_>) = to_record
                .into_iter()
                .map(|(n, d, signed, hex_text)| (n, (d, signed, hex_text)))
                .unzip();
            let recorded = registry::record_batch(tx, &batch, step)?;
            Ok(index.into_iter().zip(recorded).collect::<Vec<_>>())
        })
        .await?;
    let mut touched: BTreeMap<String, BTreeSet<(u32, String)>> = BTreeMap::new();
    for (n, r) in recorded {
        let item = &mut items[n];
        let Some(d) = item.data else { continue };
        let (kind, reason) = match r {
            Recorded::New => ("accepted", None),
            Recorded::Anomaly(m) => ("anomaly", Some(m)),
            Recorded::Duplicate => (
                "duplicate",
                Some("this piece was seen before: the label is used again".to_owned()),
            ),
            Recorded::Conflict(m) => ("conflict", Some(m)),
        };
        item.verdict = Some(verdict(kind, Some(&d), reason));
        touched
            .entry(hex::encode_upper(d.device.0))
            .or_default()
            .insert((d.license.0, hex::encode(d.key_id.0)));
    }

    // Reconciliation against the meter's credit and last audits, then every new finding
    // to the meter. A finding names a piece; the batch's items by piece mark theirs.
    let mut by_piece: HashMap<(String, u32, u32), Vec<usize>> = HashMap::new();
    let mut by_device: HashMap<String, Vec<usize>> = HashMap::new();
    for (n, item) in items.iter().enumerate() {
        if let Some(d) = item.data {
            let device = hex::encode_upper(d.device.0);
            by_piece
                .entry((device.clone(), d.license.0, d.pieces.0))
                .or_default()
                .push(n);
            by_device.entry(device).or_default().push(n);
        }
    }
    for (device, series) in &touched {
        // A device the meter does not serve was credited nothing by the back office.
        let credit = match po
            .meter
            .get::<DeviceCredit>(&format!("/v1/devices/{device}/credit"), step)
            .await
        {
            Ok(credit) => Some(credit),
            // Not a PSD of the meter server: a virtual meter's credit is the data center's.
            Err(e) if e.code == ErrorCode::UnknownDevice.as_str() => match &po.datacenter {
                Some(dc) => match dc
                    .get::<DeviceCredit>(&format!("/v1/meters/{device}/credit"), step)
                    .await
                {
                    Ok(c) => Some(c),
                    Err(e) if e.code == ErrorCode::UnknownDevice.as_str() => Some(DeviceCredit {
                        device_id: device.clone(),
                        sets: Vec::new(),
                    }),
                    Err(e) => {
                        tracing::warn!(device, error = %e.message, "credit not read; reconciled next time");
                        None
                    }
                },
                None => Some(DeviceCredit {
                    device_id: device.clone(),
                    sets: Vec::new(),
                }),
            },
            Err(e) => {
                tracing::warn!(device, error = %e.message, "credit not read; reconciled next time");
                None
            }
        };
        if let Some(credit) = credit {
            {
                let audits: Vec<(u32, LastAudit)> = credit
                    .sets
                    .iter()
                    .filter_map(|s| Some((s.license, s.last_audit?)))
                    .collect();
                let (dev, series) = (device.clone(), series.clone());
                let named = po
                    .db
                    .run(step, Vec::new(), move |tx| {
                        let mut named = Vec::new();
                        for (license, key) in &series {
                            let set = credit.sets.iter().find(|s| s.license == *license);
                            let s = Series {
                                device: &dev,
                                key,
                                license: *license,
                            };
                            let credited = set.map_or(0, |s| s.credited);
                            for p in registry::reconcile(tx, &s, credited, step)? {
                                named.push((*license, p, REGISTERS_EXCEED));
                            }
                            if let Some(r) = set.and_then(|s| s.retired_ar) {
                                for p in registry::check_after_retirement(tx, &s, r, step)? {
                                    named.push((*license, p, AFTER_RETIREMENT));
                                }
                            }
                            if let Some(audit) = set.and_then(|s| s.last_audit) {
                                for p in registry::check_against_audit(tx, &s, &audit, step)? {
                                    named.push((*license, p, AGAINST_AUDIT));
                                }
                            }
                        }
                        Ok(named)
                    })
                    .await?;
                let mut marked: Vec<(usize, &str)> = Vec::new();
                for (license, piece, why) in named {
                    let key = (device.clone(), license, piece);
                    for n in by_piece.get(&key).into_iter().flatten() {
                        marked.push((*n, why));
                    }
                }
                // A finding names one piece; every other piece of the batch dated before the
                // audit it was counted after is out of line too.
                for n in by_device.get(device).into_iter().flatten() {
                    let Some(d) = items[*n].data else { continue };
                    let backdated = audits.iter().any(|(l, a)| {
                        *l == d.license.0
                            && d.pieces.0 > a.pieces
                            && d.date.day_number()
                                < a.day.saturating_sub(registry::AUDIT_DATE_SLACK_DAYS)
                    });
                    if backdated {
                        marked.push((*n, AGAINST_AUDIT));
                    }
                }
                for (n, why) in marked {
                    if let Some(v) = items[n].verdict.as_mut() {
                        if v.verdict == "accepted" {
                            v.verdict = "anomaly".into();
                            v.reason = Some(why.into());
                        }
                    }
                }
            }
        }
        if let Err(e) = po.report(device).await {
            tracing::warn!(device, error = %e.message, "findings not reported yet; next scan retries");
        }
    }
    Ok(Json(ScanResult {
        verdicts: items
            .into_iter()
            .map(|i| {
                i.verdict
                    .unwrap_or_else(|| verdict("invalid", None, Some("not checked".into())))
            })
            .collect(),
    }))
}

/// `GET /v1/devices/{id}/findings`: what the registry holds of a device and what it found.
async fn explain(
    State(po): State<PostOffice>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<DeviceReport>, ApiError> {
    let step = STEP_EXPLAIN;
    let device = codec::device_hex(&codec::device_id(&id, step)?);
    let d = device.clone();
    let (mut licenses, duplicates, findings) = po
        .db
        .run(step, Vec::new(), move |tx| registry::report(tx, &d, step))
        .await?;
    if licenses.is_empty() && findings.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::UnknownDevice,
            step,
            format!("no piece of device {device} was scanned"),
        ));
    }
    if let Ok(credit) = po
        .meter
        .get::<DeviceCredit>(&format!("/v1/devices/{device}/credit"), step)
        .await
    {
        for l in &mut licenses {
            l.credited = credit
                .sets
                .iter()
                .find(|s| s.license == l.license)
                .map(|s| s.credited);
        }
    }
    Ok(Json(DeviceReport {
        device_id: device,
        licenses,
        duplicates,
        findings,
    }))
}
