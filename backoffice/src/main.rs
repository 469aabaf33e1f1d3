//! `backoffice`: runs the meter server, the key management system and the recharging
//! center, alone (`--role kms|recharge|meter`) or together in one process (`--role all`).
//! `backoffice init` makes the back office's CA and the services' certificates (they talk
//! mutual TLS, `docs/security.md`). `backoffice demo` hands over to the demo's own
//! program, `backoffice-demo`.
//!
//! Each service prints `ROLE listening on https://ADDR` on stdout once it accepts
//! connections (scripts and the crash tests wait for that line); logs go to stderr
//! (`RUST_LOG=debug` for more).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use openpsd_backoffice::server;
use openpsd_kms as kms;
use openpsd_recharge as recharge;
use openpsd_service_kit::pki::Pki;
use openpsd_service_kit::tls::Role as TlsRole;
use openpsd_service_kit::Service;

mod ca_cli;
mod creditor_cli;
mod datacenter_cli;
mod pa_cli;
mod post_cli;
mod vendor_cli;

#[derive(Parser)]
#[command(
    name = "backoffice",
    version,
    about = "openpsd back office: meter server, key management system and recharging center for remote refills",
    long_about = "openpsd back office for remote refills (docs/refill.md): the meter server (the host's \
                  counterpart), the key management system (verifies audits, signs refill messages; holds its own \
                  signing key and no device secret) and the recharging center (holds deposits). Each keeps its own SQLite database in its data directory."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make the back office's certificate authority and a key and certificate for every
    /// service identity (meter, kms, recharge, operator, post, vendor, pa, ca, creditor, datacenter,
    /// merchant, box) that has none; or renew one; or certify a merchant (--merchant ID).
    Init(Init),
    /// Serve one service, or all of them in one process.
    Serve(Box<Serve>),
    /// The post office's scanner and clerk: scan labels and indicia, explain a device.
    Post(PostCmd),
    /// The postal authority's desk (seed 003): grant a license to an account, list and
    /// revoke license grants, fetch the CRL.
    Pa(PaCmd),
    /// The manufacturer's desk (seed 004): publish rate tables, sign trust anchors for the
    /// certificate authority and the creditor, list them.
    Vendor(VendorCmd),
    /// The creditor's desk (seed 004 Figs. 7-9): grant an account a credit limit (operator),
    /// present payment certificates for settlement (a merchant).
    Creditor(creditor_cli::CreditorCmd),
    /// The certificate authority's desk (seed 004 Fig. 6): close a revocation order its PSD
    /// cannot apply (operator).
    Ca(ca_cli::CaCmd),
    /// The virtual meter's data center (seed 001): audit its ledger.
    Datacenter(datacenter_cli::DatacenterCmd),
    /// The demo: runs `backoffice-demo` (installed next to this program) with the same
    /// arguments; `backoffice-demo --help` lists them. The demo lives in its own program so
    /// the services' binary carries no card simulator.
    #[command(disable_help_flag = true)]
    Demo {
        /// Arguments for `backoffice-demo`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Role {
    /// Key management system (default port 8701).
    Kms,
    /// Recharging center (default port 8702).
    Recharge,
    /// Meter server (default port 8700).
    Meter,
    /// Post office: indicium verifier and registry (default port 8703).
    Post,
    /// Postal authority: grants licenses as X.509 certificates (default port 8704).
    Pa,
    /// Vendor (the manufacturer): checks, forwards and countersigns license requests
    /// (default port 8705).
    Vendor,
    /// Certificate authority (seed 004): certifies keys PSDs generated, for the meter's
    /// customers (default port 8706; its public listener for the CA certificate, the CRL
    /// and OCSP on 8707).
    Ca,
    /// Creditor (seed 004 Figs. 7-9): grants lines of credit on PSDs' payment keys and
    /// settles merchants' payment certificates (default port 8708).
    Creditor,
    /// Virtual meter data center (seed 001): mailers' meters in a database, checked by the
    /// secure box in DIR/box (default port 8709; needs --vendor and --kms).
    Datacenter,
    /// All of them; data in DIR/kms, DIR/recharge, DIR/meter, DIR/post, DIR/pa, DIR/vendor,
    /// DIR/ca, DIR/creditor.
    All,
}

#[derive(clap::Args)]
struct PostCmd {
    #[command(subcommand)]
    what: PostWhat,
    /// The post office's base URL.
    #[arg(
        long,
        value_name = "URL",
        default_value = "https://127.0.0.1:8703",
        global = true
    )]
    post: String,
    /// The PKI directory (the operator's certificate and the CA).
    #[arg(long, value_name = "DIR", env = "OPENPSD_PKI", global = true)]
    pki: Option<PathBuf>,
    /// Print JSON.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(clap::Args)]
struct PaCmd {
    #[command(subcommand)]
    what: PaWhat,
    /// The postal authority's base URL.
    #[arg(
        long,
        value_name = "URL",
        default_value = "https://127.0.0.1:8704",
        global = true
    )]
    pa: String,
    /// The PKI directory (the operator's certificate and the CA).
    #[arg(long, value_name = "DIR", env = "OPENPSD_PKI", global = true)]
    pki: Option<PathBuf>,
    /// Print JSON.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(clap::Args)]
struct VendorCmd {
    #[command(subcommand)]
    what: VendorWhat,
    /// The vendor's base URL.
    #[arg(
        long,
        value_name = "URL",
        default_value = "https://127.0.0.1:8705",
        global = true
    )]
    vendor: String,
    /// The PKI directory (the operator's certificate and the CA).
    #[arg(long, value_name = "DIR", env = "OPENPSD_PKI", global = true)]
    pki: Option<PathBuf>,
    /// Print JSON.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum VendorWhat {
    /// Rate tables: what each paid service of the certificate meter costs.
    Rates {
        #[command(subcommand)]
        what: RatesWhat,
    },
    /// Have the vendor sign a trust anchor: the key PSDs accept certificates (--kind ca)
    /// or lines of credit (--kind creditor) under. The key the newest anchor of the kind
    /// names already answers that anchor; another key gets the next version.
    Trust {
        /// What the key is trusted for.
        #[arg(long, value_parser = ["ca", "creditor"])]
        kind: String,
        /// The CA's (or creditor's) certificate, PEM: its P-256 key is trusted.
        #[arg(long, value_name = "FILE", conflicts_with = "public_key")]
        cert: Option<PathBuf>,
        /// The key itself, SEC1 uncompressed (130 hex digits).
        #[arg(long, value_name = "HEX", required_unless_present = "cert")]
        public_key: Option<String>,
    },
    /// The newest trust anchor of each kind.
    Anchors,
}

#[derive(Subcommand)]
enum RatesWhat {
    /// Publish a rate table: the vendor gives it the next version, refuses an effective
    /// date before the last table's, and signs it. PSDs get it at their next refill or
    /// inspection.
    Publish {
        /// First date of mailing it applies to, YYYY-MM-DD.
        #[arg(long, value_name = "DATE")]
        effective: String,
        /// A service's fee in currency units, e.g. postmark=0.10 (repeatable). Services:
        /// postmark, validation, certificate, signature, revocation, agent_certificate,
        /// credit_line, payment.
        #[arg(long = "fee", value_name = "NAME=AMOUNT", required = true)]
        fees: Vec<String>,
        /// The version it must get (the next one): a retry with the same version and
        /// fields answers the stored table instead of publishing it twice.
        #[arg(long, value_name = "N")]
        version: Option<u32>,
    },
    /// The tables a PSD should hold now: the one in effect today and any later ones.
    List,
}

#[derive(Subcommand)]
enum PaWhat {
    /// Grant a license number to a customer account (before any of its devices asks): the
    /// account's devices may then ask for it through the meter, and no other account's.
    Grant {
        /// The license number (0: the next free one).
        #[arg(long, default_value_t = 0)]
        license: u32,
        /// Its origin postal code.
        #[arg(long)]
        origin: String,
        /// The customer account (the recharging center's account ID).
        #[arg(long)]
        account: String,
    },
    /// The grants of a license, of a device, or all.
    List {
        /// Only this license.
        #[arg(long)]
        license: Option<u32>,
        /// Only this device (16 hex digits).
        #[arg(long)]
        device: Option<String>,
    },
    /// Revoke a grant (it goes on the CRL; the same license may then be granted to that
    /// device again).
    Revoke {
        /// The certificate serial, hex.
        serial: String,
        /// Why (1 to 200 characters).
        #[arg(long)]
        reason: String,
    },
    /// Write the current CRL to a file (DER; PEM with --pem).
    Crl {
        /// Output file.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// PEM instead of DER.
        #[arg(long)]
        pem: bool,
    },
}

#[derive(Subcommand)]
enum PostWhat {
    /// Scan label images (PNG/JPEG), raw indicium files, text files of hex indicia (one
    /// per line) and directories of them: a verdict per piece (accepted, duplicate,
    /// conflict, anomaly, invalid, unreadable); progress on stderr. Exits 0 when every
    /// piece was scanned, whatever the verdicts.
    Scan {
        /// Files and directories.
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// Indicia per request (1 to 1000).
        #[arg(long, default_value_t = 500)]
        batch: usize,
    },
    /// What the registry holds of a device and every finding, in words.
    Explain {
        /// Device ID, 16 hex digits.
        device: String,
    },
    /// One license across its devices (seed 003, claim 6): each device's pieces, postage
    /// used and credit, the PA's grant, and whether the license adds up to what was paid.
    License {
        /// The license number.
        license: u32,
    },
}

#[derive(clap::Args)]
struct Init {
    /// PKI directory (created 0700): ca.crt, ca.key, ROLE.crt, ROLE.key.
    #[arg(long, value_name = "DIR")]
    pki: PathBuf,
    /// Another DNS name or IP address the servers are reached at (repeatable); loopback
    /// names are always in.
    #[arg(long = "host", value_name = "NAME")]
    hosts: Vec<String>,
    /// Issue a new key and certificate for this identity (the old pair is kept aside).
    #[arg(long, value_name = "ROLE")]
    renew: Option<String>,
    /// Issue merchant ID a client certificate (merchant-ID.crt/.key: role merchant, naming
    /// ID.merchant.openpsd), for presenting payment certificates to the creditor. ID: 1 to
    /// 32 of a-z 0-9 -, as its customers' payments name it.
    #[arg(long, value_name = "ID", conflicts_with = "renew")]
    merchant: Option<String>,
    /// Print what was made as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct Serve {
    /// Which service to run.
    #[arg(long, value_enum, default_value = "all")]
    role: Role,
    /// Data directory (created if missing): the service's SQLite file and key files.
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// Listen address of the service (with --role all: of the meter server).
    /// Default: 127.0.0.1 with port 8700 (meter, all), 8701 (kms) or 8702 (recharge).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// With --role all: the KMS's listen address.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8701")]
    kms_listen: String,
    /// With --role all: the recharging center's listen address.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8702")]
    recharge_listen: String,
    /// With --role all: the post office's listen address.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8703")]
    post_listen: String,
    /// With --role post or all: keep the post office's registry in this PostgreSQL
    /// database (`postgres://user@host/db` or `host=/run/postgresql dbname=post`) instead
    /// of DATA/post.sqlite. Tables and month partitions are made on start. With --role
    /// datacenter: the data center's database instead of DATA/datacenter.sqlite; name the
    /// primary and its standby (`host=/a,/b … target_session_attrs=read-write`) to follow
    /// a failover. Without the flag: the environment variable OPENPSD_POST_DATABASE_URL
    /// (post, all) or OPENPSD_DATACENTER_DATABASE_URL (datacenter).
    // One variable per role, read in `role_database_url`: with one shared variable, an
    // environment set for the post office would put a new data center's tables into the
    // post office's database.
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// With --role datacenter: where the secure box is. `in-process` (the default): in
    /// this process, its memory in DATA/box. `tcp:HOST:PORT`: a separate card-sim process
    /// serving a virtual meter box card (`card-sim create --kind vbox --state DIR`, then
    /// `card-sim serve --state DIR --tcp HOST:PORT`; loopback only). `tls:HOST:PORT`: the
    /// same over mutual TLS, any host (card-sim serving with `--tls-cert box.crt --tls-key
    /// box.key --client-ca ca.crt --client-name datacenter.openpsd`, files of this --pki):
    /// this data center presents its certificate and accepts only the box's. A blank box is
    /// personalized at the first start; the link is one connection, made again when lost
    /// (a command cut off is settled by RESUME, docs/virtual-meter.md §9).
    #[arg(
        long = "box",
        value_name = "in-process|tcp:HOST:PORT|tls:HOST:PORT",
        default_value = "in-process"
    )]
    box_at: String,
    /// With --role datacenter and --box in-process: the file of the key the box's store
    /// (DATA/box) is sealed under, made at the first start. Default: DATA/box.storage-key,
    /// kept with the data so keeping DATA keeps the box. Put it on another volume (move
    /// the file, then pass its path) and a copy of DATA no longer opens the box; lost, the
    /// box and every meter's value are lost: back it up (docs/virtual-meter.md §9).
    #[arg(long, value_name = "FILE")]
    box_storage_key: Option<PathBuf>,
    /// With --role datacenter: how many seconds old the KMS's word that a meter is in
    /// service (registered, not revoked) may be for a new indicium; a revocation stops
    /// printing within this time. 0 asks the KMS before every request.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    standing_recheck: u64,
    /// With --role datacenter and a PostgreSQL --database-url: connections to the
    /// database. Each runs one call at a time, so this many requests on different shards
    /// are served side by side (docs/virtual-meter.md §9). SQLite always has one.
    #[arg(long, value_name = "N", default_value_t = openpsd_datacenter::db::DEFAULT_CONNECTIONS, value_parser = clap::value_parser!(u16).range(1..=64))]
    database_connections: u16,
    /// With --role post: the meter server's base URL.
    #[arg(long, value_name = "URL", default_value = "https://127.0.0.1:8700")]
    meter: String,
    /// With --role meter, post, vendor, ca or creditor: the KMS's base URL.
    #[arg(long, value_name = "URL", default_value = "https://127.0.0.1:8701")]
    kms: String,
    /// With --role meter: the recharging center's base URL.
    #[arg(long, value_name = "URL", default_value = "https://127.0.0.1:8702")]
    recharge: String,
    /// With --role post: the virtual meter's data center, whose meters' credit the post
    /// office reconciles their pieces against (none: they are reconciled against nothing).
    #[arg(long, value_name = "URL")]
    datacenter: Option<String>,
    /// With --role meter: the vendor's base URL, for licenses (`POST /v1/licenses`);
    /// without it the meter answers license orders with 503.
    #[arg(long, value_name = "URL")]
    vendor: Option<String>,
    /// With --role meter: the certificate authority's base URL (its mutual-TLS listener,
    /// `https://127.0.0.1:8706`), for key certificates (`POST /v1/certificates`); without
    /// it the meter answers certificate requests with 503.
    #[arg(long, value_name = "URL")]
    ca: Option<String>,
    /// With --role meter and --ca: days a revocation order the CA forced on a device (an
    /// operator revoked one of its certificates) may stay unconfirmed, counted from its
    /// first hand-over to the meter, before the meter refuses the device's refills (`409
    /// revocation_overdue`). Orders the PSD asked for itself never block.
    #[arg(long, value_name = "DAYS", default_value_t = 7)]
    revocation_grace_days: u32,
    /// With --role meter: the creditor's base URL (`https://127.0.0.1:8708`), for lines of
    /// credit (`POST /v1/credit-lines`); without it the meter answers those with 503.
    #[arg(long, value_name = "URL")]
    creditor: Option<String>,
    /// With --role ca: the public listener (plain HTTP, loopback only) serving the CA
    /// certificate, the CRL and OCSP to anyone. A second listener because relying parties
    /// (`openssl ocsp -url`, browsers) present no back-office client certificate, and the
    /// mutual-TLS listener requires one.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8707")]
    public_listen: String,
    /// With --role ca: the base URL certificates name for their CRL
    /// (`URL/v1/ca/crl.der`) and OCSP responder (`URL/ocsp`). Default: http://PUBLIC_LISTEN.
    #[arg(long, value_name = "URL")]
    public_url: Option<String>,
    /// The PKI directory `backoffice init` made (the service's certificate and the CA).
    /// Default with --role all: DATA/pki, made on first start; required otherwise.
    #[arg(long, value_name = "DIR", env = "OPENPSD_PKI")]
    pki: Option<PathBuf>,
    /// Requests per second one customer may make to the meter (twice that at once);
    /// services get 50 times that.
    #[arg(long, value_name = "N", default_value_t = server::DEFAULT_RATE)]
    rate: u32,
    /// With --role kms (required): the recharging center's public key file, SEC1 hex
    /// (the RC writes it as recharge-public.key in its data directory).
    #[arg(long, value_name = "FILE")]
    recharge_public_key: Option<PathBuf>,
    /// With --role kms: the KMS's signing key file (default: kms-signing.key in the data
    /// directory), which signs every refill message and receipt; its public half is
    /// written beside it as kms-public.key for personalization. Made on the first start;
    /// the KMS refuses to start if it is lost or replaced once devices depend on it. Keep
    /// it off the data directory's disk so a copy of the data directory alone signs
    /// nothing.
    #[arg(long, value_name = "FILE", env = "OPENPSD_KMS_SIGNING_KEY")]
    signing_key: Option<PathBuf>,
    /// With --role pa: an authorized manufacturer's public key file, SEC1 hex (the vendor
    /// writes vendor-public.key in its data directory); repeatable. Kept in the PA's
    /// database once given.
    #[arg(long = "vendor-public-key", value_name = "FILE")]
    vendor_public_keys: Vec<PathBuf>,
    /// With --role pa: days a license is granted for (from the day of the grant); with
    /// --role ca: days a certificate is valid for.
    #[arg(long, value_name = "DAYS", default_value_t = 365)]
    validity_days: u32,
    /// With --role pa: most devices one license is granted to.
    #[arg(long, value_name = "N", default_value_t = openpsd_pa::MAX_DEVICES_PER_LICENSE)]
    max_devices_per_license: u32,
    /// With --role vendor, post or meter: the postal authority's base URL (the post office
    /// reads the license grants there: the keys of sets added by a license; the meter
    /// revokes the grant of a retired set, with --vendor).
    #[arg(long, value_name = "URL", default_value = "https://127.0.0.1:8704")]
    pa: String,
    /// With --role vendor (required): the PA's CA certificate (pa-ca.pem in its data
    /// directory, or `GET /v1/ca`).
    #[arg(long, value_name = "FILE")]
    pa_ca: Option<PathBuf>,
    /// Retired with K1 (the KMS has no master key any more): refused with a pointer to
    /// --signing-key.
    #[arg(long, value_name = "FILE", env = "OPENPSD_KMS_MASTER_KEY", hide = true)]
    master_key: Option<PathBuf>,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = openpsd_service_kit::server::runtime()?;
    match cli.command {
        Command::Init(i) => init(&i),
        Command::Serve(s) => runtime.block_on(serve(*s)),
        Command::Post(p) => runtime.block_on(post_cmd(p)),
        Command::Pa(p) => runtime.block_on(pa_cmd(p)),
        Command::Vendor(v) => runtime.block_on(vendor_cmd(v)),
        Command::Creditor(c) => runtime.block_on(creditor_cli::run(c)),
        Command::Ca(c) => runtime.block_on(ca_cli::run(c)),
        Command::Datacenter(c) => match runtime.block_on(datacenter_cli::run(c))? {
            0 => Ok(()),
            status => std::process::exit(i32::from(status)),
        },
        Command::Demo { args } => run_demo(&args),
    }
}

/// Runs `backoffice-demo` from this program's directory with `args`, and exits with its
/// status.
fn run_demo(args: &[std::ffi::OsString]) -> Result<()> {
    let me = std::env::current_exe().context("locating this program")?;
    let demo = me.with_file_name(format!("backoffice-demo{}", std::env::consts::EXE_SUFFIX));
    let status = std::process::Command::new(&demo)
        .args(args)
        .status()
        .with_context(|| {
            format!(
                "running {} (build it with `cargo build -p openpsd-demo`)",
                demo.display()
            )
        })?;
    std::process::exit(status.code().unwrap_or(1));
}

fn init(i: &Init) -> Result<()> {
    let pki = Pki::at(&i.pki);
    if let Some(id) = &i.merchant {
        pki.init(&TlsRole::ALL, &i.hosts)?;
        pki.init_merchant(id)?;
        if i.json {
            println!(
                "{}",
                serde_json::json!({"pki": i.pki, "merchant": id,
                    "certificate": pki.merchant_cert(id), "key": pki.merchant_key(id)})
            );
        } else {
            println!(
                "merchant {id}: {} and {}",
                pki.merchant_cert(id).display(),
                pki.merchant_key(id).display()
            );
        }
        return Ok(());
    }
    let made: Vec<&str> = match &i.renew {
        Some(name) => {
            let role = TlsRole::from_name(name).with_context(|| {
                format!(
                    "no identity '{name}': one of meter, kms, recharge, operator, post, vendor, pa, ca, creditor, merchant, datacenter, box"
                )
            })?;
            pki.renew(role, &i.hosts)?;
            vec![role.name()]
        }
        None => pki
            .init(&TlsRole::ALL, &i.hosts)?
            .into_iter()
            .map(TlsRole::name)
            .collect(),
    };
    if i.json {
        println!(
            "{}",
            serde_json::json!({"pki": i.pki, "ca": pki.ca_cert(), "issued": made})
        );
    } else if made.is_empty() {
        println!(
            "{}: every identity has its certificate already",
            i.pki.display()
        );
    } else {
        println!("{}: issued {}", i.pki.display(), made.join(", "));
    }
    Ok(())
}

/// The post office's database URL when `--database-url` is not given.
const POST_DATABASE_ENV: &str = "OPENPSD_POST_DATABASE_URL";
/// The data center's (also read by `backoffice datacenter audit|register-box`).
const DATACENTER_DATABASE_ENV: &str = "OPENPSD_DATACENTER_DATABASE_URL";

/// `--database-url`, or the role's own environment variable (an empty one counts as unset).
fn role_database_url(flag: &Option<String>, env: &str) -> Option<String> {
    flag.clone()
        .or_else(|| std::env::var(env).ok().filter(|v| !v.is_empty()))
}

async fn serve(s: Serve) -> Result<()> {
    let default_port = match s.role {
        Role::Meter | Role::All => 8700,
        Role::Kms => 8701,
        Role::Recharge => 8702,
        Role::Post => 8703,
        Role::Pa => 8704,
        Role::Vendor => 8705,
        Role::Ca => 8706,
        Role::Creditor => 8708,
        Role::Datacenter => 8709,
    };
    let listen = s
        .listen
        .clone()
        .unwrap_or_else(|| format!("127.0.0.1:{default_port}"));
    if s.master_key.is_some() {
        anyhow::bail!(
            "--master-key (OPENPSD_KMS_MASTER_KEY) is retired: the KMS keeps no K1 and has no \
             master key. Drop it; the KMS's own signing key is --signing-key FILE \
             (OPENPSD_KMS_SIGNING_KEY), default kms-signing.key in the data directory"
        );
    }
    if s.signing_key.is_some() && !matches!(s.role, Role::Kms) {
        anyhow::bail!("--signing-key (OPENPSD_KMS_SIGNING_KEY) goes with --role kms");
    }
    let pki = match (&s.pki, s.role) {
        (Some(dir), _) => Pki::at(dir),
        (None, Role::All) => server::local_pki(&s.data)?,
        (None, _) => anyhow::bail!(
            "--pki DIR is needed with --role {:?} (make it with `backoffice init --pki DIR`)",
            s.role
        ),
    };
    anyhow::ensure!(
        pki.exists(),
        "{} holds no CA: run `backoffice init --pki {}` first",
        pki.dir().display(),
        pki.dir().display()
    );
    let rate = s.rate;
    let services: Vec<(&str, Service)> = match s.role {
        Role::Kms => {
            let file = s.recharge_public_key.as_ref().context(
                "--role kms needs --recharge-public-key FILE (the recharging center's recharge-public.key)",
            )?;
            let key = kms::read_public_key(file)?;
            let signing = s.signing_key.as_deref();
            vec![(
                "kms",
                server::start_kms(&s.data, &listen, key, signing, &pki, rate).await?,
            )]
        }
        Role::Recharge => vec![(
            "recharge",
            server::start_recharge(&s.data, &listen, &pki, rate).await?,
        )],
        Role::Meter => vec![(
            "meter",
            server::serve_meter(
                server::open_meter(
                    &s.data,
                    [&s.kms, &s.recharge],
                    s.vendor.as_deref().map(|v| [v, s.pa.as_str()]),
                    [s.ca.as_deref(), s.creditor.as_deref()],
                    &pki,
                    rate,
                )?
                .with_revocation_grace(std::time::Duration::from_secs(
                    u64::from(s.revocation_grace_days) * 86_400,
                )),
                &listen,
                &pki,
            )
            .await?,
        )],
        Role::Post => vec![(
            "post",
            server::start_post_with(
                &s.data,
                role_database_url(&s.database_url, POST_DATABASE_ENV).as_deref(),
                &listen,
                [&s.kms, &s.meter, &s.pa],
                s.datacenter.as_deref(),
                &pki,
                rate,
            )
            .await?,
        )],
        Role::Pa => {
            let mut config = openpsd_pa::Config::new(s.data.clone());
            for f in &s.vendor_public_keys {
                config
                    .vendor_public_keys
                    .push(openpsd_pa::read_public_key(f)?);
            }
            config.validity_days = s.validity_days;
            config.max_devices_per_license = s.max_devices_per_license;
            vec![("pa", server::start_pa(&config, &listen, &pki, rate).await?)]
        }
        Role::Ca => {
            let mut config = server::ca_config(&s.data, &s.kms, &pki);
            config.validity_days = s.validity_days;
            config.public_url = s.public_url.clone().unwrap_or_default();
            let (ca, public) = server::start_ca(&config, &listen, &s.public_listen, rate).await?;
            vec![("ca", ca), ("ca-public", public)]
        }
        Role::Creditor => {
            let mut config = server::creditor_config(&s.data, &s.kms, &pki);
            config.validity_days = s.validity_days;
            vec![(
                "creditor",
                server::start_creditor(&config, &listen, rate).await?,
            )]
        }
        Role::Datacenter => {
            let vendor = s
                .vendor
                .as_deref()
                .context("--role datacenter needs --vendor URL (the vendor grants its meters)")?;
            let mut config = openpsd_datacenter::Config::new(
                s.data.clone(),
                [vendor, &s.kms, &s.recharge],
                pki.clone(),
            );
            config.database_url = role_database_url(&s.database_url, DATACENTER_DATABASE_ENV);
            config.box_at = openpsd_datacenter::boxhost::BoxAt::parse(
                &s.box_at,
                &openpsd_datacenter::boxhost::LocalBox {
                    key: s
                        .box_storage_key
                        .clone()
                        .unwrap_or(openpsd_datacenter::boxhost::LocalBox::in_data(&s.data).key),
                    ..openpsd_datacenter::boxhost::LocalBox::in_data(&s.data)
                },
            )?;
            config.standing_recheck = std::time::Duration::from_secs(s.standing_recheck);
            config.database_connections = usize::from(s.database_connections);
            let (svc, info) = server::start_datacenter(&config, &listen, rate).await?;
            tracing::info!(
                box_id = %openpsd_service_kit::codec::device_hex(&info.box_id),
                "the box's transaction key must be registered at the KMS once, by an operator: \
                 backoffice datacenter register-box --data {} --pki DIR",
                s.data.display()
            );
            vec![("datacenter", svc)]
        }
        Role::Vendor => {
            let pa_ca = s
                .pa_ca
                .as_ref()
                .context("--role vendor needs --pa-ca FILE (the postal authority's pa-ca.pem)")?;
            vec![(
                "vendor",
                server::start_vendor(&s.data, &listen, [&s.kms, &s.pa], pa_ca, &pki, rate).await?,
            )]
        }
        Role::All => {
            let addrs = [listen.as_str(), &s.kms_listen, &s.recharge_listen];
            let h = server::spawn_all_on(&s.data, &pki, addrs, rate).await?;
            tracing::info!(
                "recharging center public key: {}",
                recharge::Recharge::public_key_path(&s.data.join("recharge")).display()
            );
            tracing::info!(
                "KMS public key (for personalization): {}",
                s.data.join("kms").join(kms::PUBLIC_KEY_FILE).display()
            );
            let post = server::start_post(
                &s.data.join("post"),
                role_database_url(&s.database_url, POST_DATABASE_ENV).as_deref(),
                &s.post_listen,
                [&h.kms.url, &h.meter.url, &h.pa.url],
                &pki,
                rate,
            )
            .await?;
            vec![
                ("recharge", h.recharge),
                ("kms", h.kms),
                ("pa", h.pa),
                ("vendor", h.vendor),
                ("ca", h.ca),
                ("ca-public", h.ca_public),
                ("creditor", h.creditor),
                ("meter", h.meter),
                ("post", post),
            ]
        }
    };
    for (name, svc) in &services {
        println!("{name} listening on {}", svc.url);
    }
    shutdown_signal().await;
    tracing::info!("shutting down");
    for (_, svc) in services {
        svc.stop().await;
    }
    Ok(())
}

async fn post_cmd(p: PostCmd) -> Result<()> {
    let pki = Pki::at(p.pki.as_ref().context(
        "--pki DIR (or OPENPSD_PKI): the PKI `backoffice init` made, for the operator's certificate",
    )?);
    let client = post_cli::PostClient::new(&p.post, &pki)?;
    match p.what {
        PostWhat::Scan { paths, batch } => {
            let results = post_cli::scan(&client, &paths, batch, p.json).await?;
            if p.json {
                let out: Vec<serde_json::Value> = results
                    .iter()
                    .map(|(source, v)| {
                        let mut j = serde_json::to_value(v).unwrap_or_default();
                        j["source"] = serde_json::Value::String(source.clone());
                        j
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&out)?);
            }
        }
        PostWhat::Explain { device } => {
            let r = post_cli::explain(&client, &device).await?;
            if p.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                post_cli::print_report(&r);
            }
        }
        PostWhat::License { license } => {
            let r = post_cli::license(&client, license).await?;
            if p.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                post_cli::print_license(&r);
            }
        }
    }
    Ok(())
}

async fn pa_cmd(p: PaCmd) -> Result<()> {
    let pki = Pki::at(p.pki.as_ref().context(
        "--pki DIR (or OPENPSD_PKI): the PKI `backoffice init` made, for the operator's certificate",
    )?);
    match p.what {
        PaWhat::Grant {
            license,
            origin,
            account,
        } => {
            let pa = pa_cli::client(&p.pa, &pki)?;
            let h = pa_cli::allocate(&pa, license, &origin, &account).await?;
            if p.json {
                println!("{}", serde_json::to_string_pretty(&h)?);
            } else {
                println!(
                    "license {} (origin {}) granted to account {}",
                    h.license,
                    h.origin,
                    h.account.as_deref().unwrap_or("-")
                );
            }
        }
        PaWhat::List { license, device } => {
            let pa = pa_cli::client(&p.pa, &pki)?;
            let list = pa_cli::list(&pa, license, device.as_deref()).await?;
            if p.json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                pa_cli::print(&list.grants);
            }
        }
        PaWhat::Revoke { serial, reason } => {
            let pa = pa_cli::client(&p.pa, &pki)?;
            let g = pa_cli::revoke(&pa, &serial.to_ascii_lowercase(), &reason).await?;
            if p.json {
                println!("{}", serde_json::to_string_pretty(&g)?);
            } else {
                pa_cli::print(std::slice::from_ref(&g));
            }
        }
        PaWhat::Crl { out, pem } => {
            let der = pa_cli::crl(&p.pa, &pki).await?;
            let bytes = if pem {
                openpsd_pa::ca::pem("X509 CRL", &der)?.into_bytes()
            } else {
                der.clone()
            };
            std::fs::write(&out, bytes).with_context(|| format!("writing {}", out.display()))?;
            if p.json {
                println!(
                    "{}",
                    serde_json::json!({"crl": out, "bytes": der.len(), "pem": pem})
                );
            } else {
                println!("{}: CRL, {} bytes DER", out.display(), der.len());
            }
        }
    }
    Ok(())
}

async fn vendor_cmd(v: VendorCmd) -> Result<()> {
    let pki = Pki::at(v.pki.as_ref().context(
        "--pki DIR (or OPENPSD_PKI): the PKI `backoffice init` made, for the operator's certificate",
    )?);
    let vendor = vendor_cli::client(&v.vendor, &pki)?;
    match v.what {
        VendorWhat::Rates {
            what:
                RatesWhat::Publish {
                    effective,
                    fees,
                    version,
                },
        } => {
            let fees = vendor_cli::parse_fees(&fees)?;
            let t = vendor_cli::publish(&vendor, &effective, fees, version).await?;
            if v.json {
                println!("{}", serde_json::to_string_pretty(&t)?);
            } else {
                vendor_cli::print_tables(std::slice::from_ref(&t));
            }
        }
        VendorWhat::Rates {
            what: RatesWhat::List,
        } => {
            let list = vendor_cli::list(&vendor).await?;
            if v.json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                vendor_cli::print_tables(&list.tables);
            }
        }
        VendorWhat::Trust {
            kind,
            cert,
            public_key,
        } => {
            let key = vendor_cli::anchor_key(cert.as_deref(), public_key.as_deref())?;
            let a = vendor_cli::trust(&vendor, &kind, key).await?;
            if v.json {
                println!("{}", serde_json::to_string_pretty(&a)?);
            } else {
                vendor_cli::print_anchors(std::slice::from_ref(&a));
            }
        }
        VendorWhat::Anchors => {
            let list = vendor_cli::anchors(&vendor).await?;
            if v.json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                vendor_cli::print_anchors(&list.anchors);
            }
        }
    }
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
