//! Starting the three services, alone or together (`--role all`, the tests and the
//! benchmark), each on its own listener and talking HTTP to the others.

use std::path::Path;

use openpsd_kms as kms;
use openpsd_meter as meter;
use openpsd_recharge as recharge;
use openpsd_service_kit::server::{bind, Service};

/// The three services of one back office.
pub struct Handles {
    /// Meter server (the host's).
    pub meter: Service,
    /// Key management system.
    pub kms: Service,
    /// Recharging center.
    pub recharge: Service,
    /// The RC's public key, as the KMS was given it.
    pub recharge_public_key: [u8; 65],
}

impl Handles {
    /// Stops all three.
    pub async fn stop(self) {
        self.meter.stop().await;
        self.kms.stop().await;
        self.recharge.stop().await;
    }
}

/// Starts the recharging center, the KMS and the meter server on `127.0.0.1:0` each,
/// with their databases in `dir/recharge`, `dir/kms` and `dir/meter`, talking HTTP to each
/// other exactly as when they run apart.
pub async fn spawn_all(dir: &Path) -> anyhow::Result<Handles> {
    spawn_all_on(dir, "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0").await
}

/// [`spawn_all`] on given listen addresses (meter, KMS, RC).
pub async fn spawn_all_on(
    dir: &Path,
    meter_addr: &str,
    kms_addr: &str,
    recharge_addr: &str,
) -> anyhow::Result<Handles> {
    let rc = recharge::Recharge::open(&dir.join("recharge"))?;
    let recharge_public_key = rc.public_key();
    let recharge = Service::spawn("recharge", bind(recharge_addr).await?, rc.router())?;
    let kms = start_kms(&dir.join("kms"), kms_addr, recharge_public_key, None).await?;
    let meter = start_meter(&dir.join("meter"), meter_addr, &kms.url, &recharge.url).await?;
    Ok(Handles {
        meter,
        kms,
        recharge,
        recharge_public_key,
    })
}

/// Starts a KMS alone (e.g. again after a test stopped it); its master key in
/// `master_key`, or in `dir` when `None`.
pub async fn start_kms(
    dir: &Path,
    addr: &str,
    recharge_public_key: [u8; 65],
    master_key: Option<&Path>,
) -> anyhow::Result<Service> {
    let k = kms::Kms::open(&kms::Config {
        data: dir.to_path_buf(),
        recharge_public_key,
        master_key: master_key.map(Path::to_path_buf),
    })?;
    Ok(Service::spawn("kms", bind(addr).await?, k.router())?)
}

/// Starts a recharging center alone.
pub async fn start_recharge(dir: &Path, addr: &str) -> anyhow::Result<Service> {
    let rc = recharge::Recharge::open(dir)?;
    Ok(Service::spawn("recharge", bind(addr).await?, rc.router())?)
}

/// Starts a meter server alone.
pub async fn start_meter(
    dir: &Path,
    addr: &str,
    kms_url: &str,
    recharge_url: &str,
) -> anyhow::Result<Service> {
    let m = meter::Meter::open(&meter::Config {
        data: dir.to_path_buf(),
        kms_url: kms_url.to_owned(),
        recharge_url: recharge_url.to_owned(),
    })?;
    Ok(Service::spawn("meter", bind(addr).await?, m.router())?)
}
