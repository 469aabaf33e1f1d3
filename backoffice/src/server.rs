//! Starting the services, alone or together (`--role all`, the tests and the
//! benchmark), each on its own listener and talking HTTPS with client certificates to the
//! others (`docs/security.md`).

use std::path::Path;

use openpsd_kms as kms;
use openpsd_meter as meter;
use openpsd_recharge as recharge;
use openpsd_service_kit::access::RateLimit;
use openpsd_service_kit::pki::Pki;
use openpsd_service_kit::server::{bind, Service};
use openpsd_service_kit::tls::{server_config, ClientAuth, Role};

/// Requests per second a customer may make to the meter by default (twice that at once).
pub const DEFAULT_RATE: u32 = 100;

/// The service-to-service routes carry every customer's traffic: their per-caller bound is
/// this many times a customer's.
const SERVICE_RATE_FACTOR: u32 = 50;

/// The services of one back office: the refill three, and the manufacturer and postal
/// authority of licenses (seed 003).
pub struct Handles {
    /// Meter server (the host's).
    pub meter: Service,
    /// Key management system.
    pub kms: Service,
    /// Recharging center.
    pub recharge: Service,
    /// The RC's public key, as the KMS was given it.
    pub recharge_public_key: [u8; 65],
    /// The KMS's public key (SEC1 uncompressed): what personalization writes into every
    /// PSD so it accepts the KMS's refill messages and receipts.
    pub kms_public_key: [u8; 65],
    /// The PKI the services use (and clients trust).
    pub pki: Pki,
    /// The postal authority (licenses).
    pub pa: Service,
    /// The vendor (the manufacturer: license requests, countersignatures).
    pub vendor: Service,
    /// The vendor's public key: what personalization writes into every PSD as
    /// `vendor_public_key`, so it accepts the vendor's countersignatures.
    pub vendor_public_key: [u8; 65],
    /// The postal authority's key and subject: PERSONALIZE's postal authority block.
    pub postal_authority: openpsd_core::psd::device::PostalAuthority,
    /// The certificate authority (seed 004), on mutual TLS.
    pub ca: Service,
    /// Its public listener (plain HTTP, loopback): CA certificate, CRL, OCSP.
    pub ca_public: Service,
    /// The creditor (seed 004 Figs. 7-9), on mutual TLS.
    pub creditor: Service,
}

impl Handles {
    /// Stops them all.
    pub async fn stop(self) {
        self.meter.stop().await;
        self.creditor.stop().await;
        self.ca.stop().await;
        self.ca_public.stop().await;
        self.vendor.stop().await;
        self.pa.stop().await;
        self.kms.stop().await;
        self.recharge.stop().await;
    }
}

/// The PKI of a back office kept in one directory `dir` (the demo, the tests): `dir/pki`,
/// made with a certificate for every role on first use.
pub fn local_pki(dir: &Path) -> anyhow::Result<Pki> {
    let pki = Pki::at(&dir.join("pki"));
    pki.init(&Role::ALL, &[])?;
    Ok(pki)
}

/// Starts the recharging center, the KMS, the postal authority, the vendor and the meter
/// server on `127.0.0.1:0` each,
/// with their databases in `dir/recharge`, `dir/kms` and `dir/meter` and their
/// certificates in `dir/pki`, talking HTTPS to each other exactly as when they run apart.
pub async fn spawn_all(dir: &Path) -> anyhow::Result<Handles> {
    let pki = local_pki(dir)?;
    spawn_all_on(dir, &pki, ["127.0.0.1:0"; 3], DEFAULT_RATE).await
}

/// [`spawn_all`] with a given PKI, listen addresses (meter, KMS, RC) and customer rate.
pub async fn spawn_all_on(
    dir: &Path,
    pki: &Pki,
    [meter_addr, kms_addr, recharge_addr]: [&str; 3],
    rate: u32,
) -> anyhow::Result<Handles> {
    let recharge = start_recharge(&dir.join("recharge"), recharge_addr, pki, rate).await?;
    let recharge_public_key =
        kms::read_public_key(&recharge::Recharge::public_key_path(&dir.join("recharge")))?;
    let k = open_kms(&dir.join("kms"), recharge_public_key, None)?;
    let kms_public_key = k.public_key();
    let kms = serve_kms(k, kms_addr, pki, rate).await?;
    // Licenses: the vendor's key first (the PA authorizes it), then the PA (its CA is made
    // at first start), then the vendor, which checks grants against the PA's CA.
    let vendor_dir = dir.join("vendor");
    let vendor_public_key = openpsd_vendor::open_key(&vendor_dir)?;
    let mut pa_config = openpsd_pa::Config::new(dir.join("pa"));
    pa_config.vendor_public_keys.push(vendor_public_key);
    let pa = start_pa(&pa_config, "127.0.0.1:0", pki, rate).await?;
    let pa_ca = dir.join("pa").join(openpsd_pa::CA_FILE);
    let (subject, public_key) = openpsd_vendor::read_pa_ca(&pa_ca)?;
    let vendor = start_vendor(
        &vendor_dir,
        "127.0.0.1:0",
        [&kms.url, &pa.url],
        &pa_ca,
        pki,
        rate,
    )
    .await?;
    let (ca, ca_public) = start_ca(
        &ca_config(&dir.join("ca"), &kms.url, pki),
        "127.0.0.1:0",
        "127.0.0.1:0",
        rate,
    )
    .await?;
    let creditor = start_creditor(
        &creditor_config(&dir.join("creditor"), &kms.url, pki),
        "127.0.0.1:0",
        rate,
    )
    .await?;
    let meter = start_meter(
        &dir.join("meter"),
        meter_addr,
        [&kms.url, &recharge.url],
        Some([&vendor.url, &pa.url]),
        [Some(&ca.url), Some(&creditor.url)],
        pki,
        rate,
    )
    .await?;
    Ok(Handles {
        creditor,
        ca,
        ca_public,
        pa,
        vendor,
        vendor_public_key,
        postal_authority: openpsd_core::psd::device::PostalAuthority {
            public_key,
            subject,
        },
        meter,
        kms,
        recharge,
        recharge_public_key,
        kms_public_key,
        pki: pki.clone(),
    })
}

fn service_limit(rate: u32) -> RateLimit {
    let r = rate.saturating_mul(SERVICE_RATE_FACTOR);
    RateLimit::new(r, r.saturating_mul(2))
}

/// Starts a KMS alone (e.g. again after a test stopped it); its signing key in
/// `signing_key`, or `kms-signing.key` in `dir` when `None` (its public half is then
/// `kms-public.key` beside it, or [`kms::Kms::public_key`] of [`open_kms`]). Only clients
/// with a certificate get in.
pub async fn start_kms(
    dir: &Path,
    addr: &str,
    recharge_public_key: [u8; 65],
    signing_key: Option<&Path>,
    pki: &Pki,
    rate: u32,
) -> anyhow::Result<Service> {
    let k = open_kms(dir, recharge_public_key, signing_key)?;
    serve_kms(k, addr, pki, rate).await
}

/// Opens a KMS's data directory `dir` (its database, and its signing key: `signing_key`,
/// or `kms-signing.key` in `dir`), without serving it yet: [`serve_kms`].
pub fn open_kms(
    dir: &Path,
    recharge_public_key: [u8; 65],
    signing_key: Option<&Path>,
) -> anyhow::Result<kms::Kms> {
    kms::Kms::open(&kms::Config {
        data: dir.to_path_buf(),
        recharge_public_key,
        signing_key: signing_key.map(Path::to_path_buf),
    })
}

/// Serves an opened KMS on `addr`. Only clients with a certificate get in.
pub async fn serve_kms(k: kms::Kms, addr: &str, pki: &Pki, rate: u32) -> anyhow::Result<Service> {
    let tls = server_config(pki, Role::Kms, ClientAuth::Required)?;
    Ok(Service::spawn(
        "kms",
        bind(addr, Some(tls)).await?,
        k.router(&service_limit(rate)),
    )?)
}

/// Starts a recharging center alone. Only clients with a certificate get in.
pub async fn start_recharge(
    dir: &Path,
    addr: &str,
    pki: &Pki,
    rate: u32,
) -> anyhow::Result<Service> {
    let rc = recharge::Recharge::open(dir)?;
    let tls = server_config(pki, Role::Recharge, ClientAuth::Required)?;
    Ok(Service::spawn(
        "recharge",
        bind(addr, Some(tls)).await?,
        rc.router(&service_limit(rate)),
    )?)
}

/// Starts a meter server alone, calling the KMS and the RC at `[kms_url, recharge_url]`
/// and, for licenses, the vendor and the postal authority at `[vendor_url, pa_url]` (the
/// PA: revoking the grant of a retired set).
/// With `ca_url`, customers' devices get their keys certified by the certificate
/// authority there (`POST /v1/certificates`); with `creditor_url`, lines of credit on
/// their payment keys from the creditor there (`POST /v1/credit-lines`).
/// Customers connect without a certificate and log in; operators present theirs.
pub async fn start_meter(
    dir: &Path,
    addr: &str,
    upstreams: [&str; 2],
    licensing: Option<[&str; 2]>,
    [ca_url, creditor_url]: [Option<&str>; 2],
    pki: &Pki,
    rate: u32,
) -> anyhow::Result<Service> {
    let m = open_meter(dir, upstreams, licensing, [ca_url, creditor_url], pki, rate)?;
    serve_meter(m, addr, pki).await
}

/// The meter server [`start_meter`] starts, opened but not listening (to configure it
/// further, e.g. [`meter::Meter::with_revocation_grace`]).
pub fn open_meter(
    dir: &Path,
    [kms_url, recharge_url]: [&str; 2],
    licensing: Option<[&str; 2]>,
    [ca_url, creditor_url]: [Option<&str>; 2],
    pki: &Pki,
    rate: u32,
) -> anyhow::Result<meter::Meter> {
    meter::Meter::open(&meter::Config {
        data: dir.to_path_buf(),
        kms_url: kms_url.to_owned(),
        recharge_url: recharge_url.to_owned(),
        pki: pki.clone(),
        rate,
        vendor_url: licensing.map(|[v, _]| v.to_owned()),
        pa_url: licensing.map(|[_, p]| p.to_owned()),
        ca_url: ca_url.map(str::to_owned),
        creditor_url: creditor_url.map(str::to_owned),
    })
}

/// Serves meter server `m` on `addr`.
pub async fn serve_meter(m: meter::Meter, addr: &str, pki: &Pki) -> anyhow::Result<Service> {
    let tls = server_config(pki, Role::Meter, ClientAuth::Optional)?;
    Ok(Service::spawn(
        "meter",
        bind(addr, Some(tls)).await?,
        m.router(),
    )?)
}

/// Starts the post office alone (issue 13), reading device keys at the KMS, telling the
/// meter server its findings and reading license grants at the PA, at `[kms_url,
/// meter_url, pa_url]`. Only clients with a certificate
/// get in (scanners use the operator's).
/// `database_url` puts the registry in PostgreSQL instead of `DIR/post.sqlite`.
pub async fn start_post(
    dir: &Path,
    database_url: Option<&str>,
    addr: &str,
    urls: [&str; 3],
    pki: &Pki,
    rate: u32,
) -> anyhow::Result<Service> {
    start_post_with(dir, database_url, addr, urls, None, pki, rate).await
}

/// [`start_post`] that also asks the virtual meter's data center at `datacenter_url` for the
/// credit of the meters it keeps (devices the meter server does not serve).
pub async fn start_post_with(
    dir: &Path,
    database_url: Option<&str>,
    addr: &str,
    [kms_url, meter_url, pa_url]: [&str; 3],
    datacenter_url: Option<&str>,
    pki: &Pki,
    rate: u32,
) -> anyhow::Result<Service> {
    let p = openpsd_post::PostOffice::open(openpsd_post::Config {
        data: dir.to_path_buf(),
        database_url: database_url.map(str::to_owned),
        kms_url: kms_url.to_owned(),
        meter_url: meter_url.to_owned(),
        pa_url: pa_url.to_owned(),
        datacenter_url: datacenter_url.map(str::to_owned),
        pki: pki.clone(),
        report_retry: openpsd_post::REPORT_RETRY,
    })
    .await?;
    let tls = server_config(pki, Role::Post, ClientAuth::Required)?;
    Ok(Service::spawn(
        "post",
        bind(addr, Some(tls)).await?,
        p.router(&service_limit(rate)),
    )?)
}

/// Starts the postal authority alone (seed 003), its data in `config.data`. Only clients
/// with a certificate get in (grants: the vendor's).
pub async fn start_pa(
    config: &openpsd_pa::Config,
    addr: &str,
    pki: &Pki,
    rate: u32,
) -> anyhow::Result<Service> {
    let pa = openpsd_pa::Pa::open(config)?;
    let tls = server_config(pki, Role::Pa, ClientAuth::Required)?;
    Ok(Service::spawn(
        "pa",
        bind(addr, Some(tls)).await?,
        pa.router(&service_limit(rate)),
    )?)
}

/// Starts the vendor (the manufacturer, seed 003) alone, its data in `dir`, checking
/// devices at the KMS and forwarding to the PA at `[kms_url, pa_url]`, the PA's CA
/// certificate in `pa_ca`. Only clients with a certificate get in (orders: the meter's).
pub async fn start_vendor(
    dir: &Path,
    addr: &str,
    [kms_url, pa_url]: [&str; 2],
    pa_ca: &Path,
    pki: &Pki,
    rate: u32,
) -> anyhow::Result<Service> {
    let v = openpsd_vendor::Vendor::open(&openpsd_vendor::Config {
        data: dir.to_path_buf(),
        kms_url: kms_url.to_owned(),
        pa_url: pa_url.to_owned(),
        pa_ca: pa_ca.to_path_buf(),
        pki: pki.clone(),
    })?;
    let tls = server_config(pki, Role::Vendor, ClientAuth::Required)?;
    Ok(Service::spawn(
        "vendor",
        bind(addr, Some(tls)).await?,
        v.router(&service_limit(rate)),
    )?)
}

/// A certificate authority's configuration with the defaults (365 days of validity), its
/// data in `dir`, reading devices at the KMS at `kms_url`; the public URL is set by
/// [`start_ca`] from the public listener's address unless given.
pub fn ca_config(dir: &Path, kms_url: &str, pki: &Pki) -> openpsd_ca::Config {
    openpsd_ca::Config {
        data: dir.to_path_buf(),
        kms_url: kms_url.to_owned(),
        pki: pki.clone(),
        public_url: String::new(),
        validity_days: 365,
    }
}

/// Starts the certificate authority (seed 004): its mutual-TLS listener on `addr` (only
/// clients with a certificate get in; certificates are the meter's to ask for) and its
/// public listener on `public_addr`, plain HTTP on loopback, for the CA certificate, the
/// CRL and OCSP, which relying parties fetch without a back-office certificate (`docs/ca.md`
/// § Why a second listener). An empty `config.public_url` becomes `http://<public_addr>`,
/// the URL every certificate names for its CRL and OCSP.
pub async fn start_ca(
    config: &openpsd_ca::Config,
    addr: &str,
    public_addr: &str,
    rate: u32,
) -> anyhow::Result<(Service, Service)> {
    let public = bind(public_addr, None).await?;
    let mut config = config.clone();
    if config.public_url.is_empty() {
        config.public_url = format!("http://{}", public.local_addr()?);
    }
    let ca = openpsd_ca::Ca::open(&config)?;
    let tls = server_config(&config.pki, Role::Ca, ClientAuth::Required)?;
    let ca_tls = Service::spawn(
        "ca",
        bind(addr, Some(tls)).await?,
        ca.clone().router(&service_limit(rate)),
    )?;
    // Anyone may call the public listener: bounded per address like a customer.
    let public_limit = RateLimit::new(rate, rate.saturating_mul(2));
    let ca_public = Service::spawn("ca-public", public, ca.public_router(&public_limit))?;
    Ok((ca_tls, ca_public))
}

/// A creditor's configuration with the defaults (lines valid 365 days), its data in `dir`,
/// reading devices at the KMS at `kms_url`.
pub fn creditor_config(dir: &Path, kms_url: &str, pki: &Pki) -> openpsd_creditor::Config {
    openpsd_creditor::Config {
        data: dir.to_path_buf(),
        kms_url: kms_url.to_owned(),
        pki: pki.clone(),
        validity_days: 365,
    }
}

/// Starts the creditor (seed 004 Figs. 7-9) on `addr`: only clients with a certificate get
/// in (limits: the operator's; line requests: the meter's; presentments: merchants').
pub async fn start_creditor(
    config: &openpsd_creditor::Config,
    addr: &str,
    rate: u32,
) -> anyhow::Result<Service> {
    let creditor = openpsd_creditor::Creditor::open(config)?;
    let tls = server_config(&config.pki, Role::Creditor, ClientAuth::Required)?;
    Ok(Service::spawn(
        "creditor",
        bind(addr, Some(tls)).await?,
        creditor.router(&service_limit(rate)),
    )?)
}

/// Starts the virtual meter's data center (seed 001): customers (mailers, no certificate)
/// and services share its listener; `rate` requests per second per caller.
pub async fn start_datacenter(
    config: &openpsd_datacenter::Config,
    addr: &str,
    rate: u32,
) -> anyhow::Result<(Service, openpsd_datacenter::boxhost::BoxInfo)> {
    let dc = openpsd_datacenter::Datacenter::open(config).await?;
    let info = dc.box_info().clone();
    let tls = server_config(&config.pki, Role::Datacenter, ClientAuth::Optional)?;
    let mut listener = bind(addr, Some(tls)).await?;
    // Thousands of mailers' browsers, many of a firm's behind one address (its NAT or
    // proxy): more connections than a service the back office alone calls. Each still
    // costs one task and a few kilobytes; the rate limits hold per caller.
    listener.limits.connections = 4096;
    listener.limits.per_address = config.connections_per_address.clamp(1, 4096);
    let svc = Service::spawn("datacenter", listener, dc.router(rate))?;
    Ok((svc, info))
}
