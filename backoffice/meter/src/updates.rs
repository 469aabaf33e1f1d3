//! `GET /v1/devices/{device_id}/updates` (seed 004, step 257; `docs/rates.md`): what the
//! host loads into a PSD after a refill or an inspection — the vendor's signed rate tables
//! (the one in effect and any later ones) and its newest trust anchors — so tables switch
//! on their effective date and a new CA key reaches every PSD at its next contact.
//!
//! Only the customer who owns the device asks (another's device is `404`, as for refills).
//! The records are public and the PSD checks the vendor's signature on each, so the meter
//! passes them on as the vendor signed them; it only checks that they decode, so a vendor
//! answering garbage is a `503` here rather than a refusal on the card. A quarantined
//! device still gets them: they move no money, and a PSD with the right fees is what the
//! operator resolving the alarm wants.
//!
//! The vendor is asked at most once every ten seconds per vendor ([`CACHE_TTL`]): every host asks
//! at every contact and the answer changes when an operator publishes, so a table or an
//! anchor reaches hosts within ten seconds of its publication. The vendor unreachable (and
//! nothing cached) is `503`, as for any upstream.
//!
//! The same answer guards refills and inspections ([`Meter::refuse_if_rate_table_stale`]):
//! a PSD whose audit (version 5) says it holds a rate table older than the vendor's table in
//! effect today is refused (`409 rate_table_stale`) until its host loads these updates, so
//! a host cannot keep the older, cheaper fees by never loading a newer table. A PSD that
//! holds no table at all sells no paid service (`9A40`) and is not asked for one.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use openpsd_core::psd::certmeter::anchor::Anchor;
use openpsd_core::psd::certmeter::rates::RateTable;
use openpsd_core::types::Date;
use openpsd_protocol::vendor::{code, Anchors, DeviceUpdates, RateTables};
use openpsd_service_kit::access::Customer;
use openpsd_service_kit::codec;
use openpsd_service_kit::error::ApiError;
use openpsd_service_kit::upstream::Upstream;

use crate::history::Audited;
use crate::Meter;

const STEP: &str = "meter_updates";

/// How long the vendor's answer is reused.
pub(crate) const CACHE_TTL: Duration = Duration::from_secs(10);

/// The vendor's last answer per vendor client (its base URL and instance), and when it came.
// why a static: the meter's state is built in lib.rs, which this feature does not touch;
// keyed by the vendor's URL, so meters of different back offices in one process (the
// tests) never see each other's records.
fn cache() -> &'static Mutex<HashMap<String, (Instant, DeviceUpdates)>> {
    static CACHE: OnceLock<Mutex<HashMap<String, (Instant, DeviceUpdates)>>> = OnceLock::new();
    CACHE.get_or_init(Mutex::default)
}

/// Reads the vendor's tables and anchors, each checked to decode.
async fn from_vendor(vendor: &Upstream) -> Result<DeviceUpdates, ApiError> {
    let rates: RateTables = vendor.get("/v1/rates", STEP).await?;
    let anchors: Anchors = vendor.get("/v1/anchors", STEP).await?;
    let malformed =
        |what: &str| ApiError::unavailable(STEP, format!("the vendor answered a malformed {what}"));
    let rate_tables = rates
        .tables
        .into_iter()
        .map(|t| {
            let ok = hex::decode(&t.table)
                .ok()
                .is_some_and(|b| RateTable::decode_unverified(&b).is_ok());
            ok.then(|| t.table.to_ascii_lowercase())
                .ok_or_else(|| malformed("rate table"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let anchors = anchors
        .anchors
        .into_iter()
        .map(|a| {
            let ok = hex::decode(&a.anchor)
                .ok()
                .is_some_and(|b| Anchor::decode_unverified(&b).is_ok());
            ok.then(|| a.anchor.to_ascii_lowercase())
                .ok_or_else(|| malformed("trust anchor"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(DeviceUpdates {
        rate_tables,
        anchors,
    })
}

/// `GET /v1/devices/{device_id}/updates`.
pub(crate) async fn device_updates(
    State(meter): State<Meter>,
    Extension(customer): Extension<Customer>,
    UrlPath(device): UrlPath<String>,
) -> Result<Json<DeviceUpdates>, ApiError> {
    let device = codec::device_hex(&codec::device_id(&device, STEP)?);
    meter
        .registered(&device, Some(&customer.account_id), STEP)
        .await?;
    let vendor = meter.vendor.as_ref().ok_or_else(|| {
        ApiError::unavailable(
            STEP,
            "this meter server has no vendor configured (--vendor): no rate tables or trust \
             anchors to give",
        )
    })?;
    Ok(Json(vendor_updates(vendor).await?))
}

/// The vendor's tables and anchors, asked at most once a [`CACHE_TTL`].
async fn vendor_updates(vendor: &Upstream) -> Result<DeviceUpdates, ApiError> {
    // The client's instance too: a port reused by another back office (two tests one after
    // the other) must not be answered from the first one's cache.
    let key = format!("{}#{}", vendor.base(), vendor.instance());
    let fresh = {
        let map = cache().lock().unwrap_or_else(|p| p.into_inner());
        map.get(&key)
            .filter(|(at, _)| at.elapsed() < CACHE_TTL)
            .map(|(_, u)| u.clone())
    };
    if let Some(u) = fresh {
        return Ok(u);
    }
    let updates = from_vendor(vendor).await?;
    cache()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key, (Instant::now(), updates.clone()));
    Ok(updates)
}

/// Of the vendor's tables, the version and effective date of the one in effect on `today`.
fn in_effect(updates: &DeviceUpdates, today: Date) -> Option<(u32, Date)> {
    updates
        .rate_tables
        .iter()
        .filter_map(|t| RateTable::decode_unverified(&hex::decode(t).ok()?).ok())
        .filter(|t| t.effective <= today)
        .max_by_key(|t| t.version)
        .map(|t| (t.version, t.effective))
}

impl Meter {
    /// Refuses a refill or an inspection (`409 rate_table_stale`) whose audit says the PSD
    /// holds a rate table older than the vendor's table in effect today. An audit of a PSD
    /// holding no table passes; so does any audit when no vendor is configured or it cannot
    /// be asked (logged): the fees then stay what the PSD holds until the next contact.
    pub(crate) async fn refuse_if_rate_table_stale(
        &self,
        audit: &Audited,
        step: &'static str,
    ) -> Result<(), ApiError> {
        let Some(vendor) = self.vendor.as_ref().filter(|_| audit.rate_table != 0) else {
            return Ok(());
        };
        let updates = match vendor_updates(vendor).await {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(
                    device = %audit.device_id,
                    error = %e,
                    "rate table not checked: the vendor did not answer"
                );
                return Ok(());
            }
        };
        let Some((version, effective)) = in_effect(&updates, codec::today_utc()) else {
            return Ok(());
        };
        if audit.rate_table >= version {
            return Ok(());
        }
        tracing::warn!(
            device = %audit.device_id,
            held = audit.rate_table,
            in_effect = version,
            "refused: the PSD holds an older rate table than the one in effect"
        );
        Err(ApiError {
            status: StatusCode::CONFLICT,
            code: code::RATE_TABLE_STALE.to_owned(),
            step: step.to_owned(),
            message: format!(
                "the PSD holds rate table version {} and version {version} is in effect since \
                {effective}: load the meter server's updates (LOAD RATE TABLE; GET \
                /v1/devices/{}/updates, which `openpsd refill` and `openpsd inspect` load \
                first) and send a new audit",
                audit.rate_table, audit.device_id
            ),
        })
    }
}
