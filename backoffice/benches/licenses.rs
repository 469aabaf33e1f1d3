//! Licenses per second end to end (seed 003 Fig. 4, steps 63-66): meter → vendor (device
//! looked up at the KMS, request checked and recorded, forwarded) → postal authority
//! (forward and request checked, certificate signed and recorded) → vendor (grant checked,
//! countersigned), all on loopback in this process with mutual TLS, set up as
//! `tests/licenses.rs` does. For 1, 8 and 64 devices, each a distinct key registered at
//! the KMS, one request at a time per device and all devices at once, it prints licenses/s
//! and p50/p99 latency per license, then checks every answer as LICENSE INSTALL would
//! (`grant::verify_grant`).
//!
//! Requests are signed beforehand with core's `LicenseRequest::sign` (license 0: the PA
//! assigns a number, so no device reaches the per-license limit); only the order is timed.
//! Each level stops after `--seconds` (default 4) or `--licenses` (default 2000) orders,
//! whichever comes first, so the whole run takes well under a minute.
//!
//! ```sh
//! cargo bench -p openpsd-backoffice --bench licenses
//! cargo bench -p openpsd-backoffice --bench licenses -- --concurrency 1,8,64 --seconds 4 --dir /some/disk
//! ```
//!
//! The vendor and the PA commit to SQLite (WAL, fsynced), so the figures depend on the
//! disk under `--dir` (default: the system temp directory).
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use openpsd_backoffice::server;
use openpsd_core::crypto::IndiciumKey;
use openpsd_core::psd::license::grant::{self, CardFields};
use openpsd_core::psd::license::install::Install;
use openpsd_core::psd::license::request::{LicenseRequest, RequestBody};
use openpsd_core::types::{DeviceId, LicenseId, PostalCode};
use openpsd_protocol::license::{LicenseGrant, LicenseOrder, PaPublicKey};
use openpsd_protocol::{DeviceInfo, DeviceRegistration};
use openpsd_service_kit::codec::{random_array, OsRandom};
use openpsd_service_kit::pki::Pki;
use openpsd_service_kit::tls::{client_config, Role};
use openpsd_service_kit::upstream::Upstream;

/// The services' per-client rate limit, raised out of the way (a policy, not a cost).
const RATE: u32 = 1_000_000;
const ORIGIN: &str = "53113";

struct Args {
    licenses: usize,
    seconds: f64,
    concurrency: Vec<usize>,
    dir: Option<std::path::PathBuf>,
}

fn args() -> Args {
    let mut a = Args {
        licenses: 2000,
        seconds: 4.0,
        concurrency: vec![1, 8, 64],
        dir: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--licenses" => {
                a.licenses = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--licenses N")
            }
            "--seconds" => a.seconds = it.next().and_then(|v| v.parse().ok()).expect("--seconds S"),
            "--concurrency" => {
                a.concurrency = it
                    .next()
                    .map(|v| v.split(',').filter_map(|x| x.parse().ok()).collect())
                    .expect("--concurrency 1,8,64")
            }
            "--dir" => a.dir = it.next().map(Into::into),
            "--help" | "-h" => {
                println!(
                    "licenses benchmark: [--licenses N (most per level, default 2000)] \
                     [--seconds S (per level, default 4)] [--concurrency 1,8,64] \
                     [--dir DIR (SQLite files; default: temp dir)]"
                );
                std::process::exit(0);
            }
            // `cargo bench` passes --bench; filters are not used.
            _ => {}
        }
    }
    a
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    // why: `p` is a percentage (50 or 99), so the rank is in 0..=len, clamped below (and a
    // float-to-integer cast saturates, never wraps).
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn up(pki: &Pki, me: Role, peer: Role, url: &str) -> Upstream {
    Upstream::new("bench", url, peer, client_config(pki, Some(me)).unwrap()).unwrap()
}

struct Device {
    id: DeviceId,
    key: IndiciumKey,
    /// The next request counter.
    counter: u32,
}

impl Device {
    /// The card's LICENSE REQUEST answer for license 0 at [`ORIGIN`].
    fn request(&mut self) -> LicenseRequest {
        self.counter += 1;
        let license_key = IndiciumKey::generate(&mut OsRandom);
        let body = RequestBody {
            device: self.id,
            counter: self.counter,
            license: LicenseId(0),
            origin: PostalCode::new(ORIGIN.as_bytes()).unwrap(),
            license_public_key: license_key.public_key(),
            nonce: random_array(),
        };
        LicenseRequest::sign(body, &license_key, &self.key)
    }
}

async fn order(meter: &Upstream, req: &LicenseRequest) -> LicenseGrant {
    let order = LicenseOrder {
        request: hex::encode(req.encode()),
        account_id: None,
    };
    meter
        .post("/v1/licenses", &order, "bench")
        .await
        .expect("license granted")
}

fn main() {
    let args = args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(args));
}

async fn run(args: Args) {
    let tmp = match &args.dir {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .expect("data directory");
    let dir = tmp.path();
    // KMS, PA and vendor as tests/licenses.rs starts them (mutual TLS, local PKI).
    let pki = server::local_pki(dir).expect("PKI");
    let rc = IndiciumKey::generate(&mut OsRandom).public_key();
    let kms = server::start_kms(&dir.join("kms"), "127.0.0.1:0", rc, None, &pki, RATE)
        .await
        .expect("KMS starts");
    let vendor_public = openpsd_vendor::open_key(&dir.join("vendor")).expect("vendor key");
    let mut config = openpsd_pa::Config::new(dir.join("pa"));
    config.vendor_public_keys.push(vendor_public);
    let pa = server::start_pa(&config, "127.0.0.1:0", &pki, RATE)
        .await
        .expect("PA starts");
    let vendor = server::start_vendor(
        &dir.join("vendor"),
        "127.0.0.1:0",
        [&kms.url, &pa.url],
        &dir.join("pa").join(openpsd_pa::CA_FILE),
        &pki,
        RATE,
    )
    .await
    .expect("vendor starts");
    let kms_op = up(&pki, Role::Operator, Role::Kms, &kms.url);
    let pa_op = up(&pki, Role::Operator, Role::Pa, &pa.url);
    let pk: PaPublicKey = pa_op.get("/v1/public-key", "bench").await.unwrap();
    let pa_public_key: [u8; 65] = hex::decode(&pk.public_key).unwrap().try_into().unwrap();
    let pa_subject = hex::decode(&pk.subject).unwrap();
    // The meter's view of the vendor, one client (its pool) shared by every device.
    let meter = up(&pki, Role::Meter, Role::Vendor, &vendor.url);

    println!(
        "licenses benchmark: up to {} licenses or {} s per level, data in {}",
        args.licenses,
        args.seconds,
        dir.display()
    );
    println!(
        "{:>8} {:>9} {:>11} {:>9} {:>9} {:>9}",
        "devices", "licenses", "licenses/s", "p50 ms", "p99 ms", "max ms"
    );

    let mut checked = 0usize;
    for &c in &args.concurrency {
        let c = c.max(1);
        // Distinct devices, registered at the KMS.
        let mut devices = Vec::with_capacity(c);
        for _ in 0..c {
            let key = IndiciumKey::generate(&mut OsRandom);
            let id = DeviceId(random_array());
            let reg = DeviceRegistration {
                device_id: hex::encode_upper(id.0),
                key_id: hex::encode(key.key_id().0),
                public_key: hex::encode(key.public_key()),
                licenses: vec![(1, ORIGIN.to_owned())],
            };
            let _: DeviceInfo = kms_op.post("/v1/devices", &reg, "bench").await.unwrap();
            devices.push(Device {
                id,
                key,
                counter: 0,
            });
        }
        // Warm-up: one license per device (connections open, the pages warm).
        let mut tasks = Vec::new();
        for d in &mut devices {
            let (meter, req) = (meter.clone(), d.request());
            tasks.push(tokio::spawn(async move { order(&meter, &req).await }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        // The requests, signed before the clock starts.
        let per_device = args.licenses.div_ceil(c);
        let batches: Vec<Vec<LicenseRequest>> = devices
            .iter_mut()
            .map(|d| (0..per_device).map(|_| d.request()).collect())
            .collect();

        let deadline = Instant::now() + Duration::from_secs_f64(args.seconds);
        let start = Instant::now();
        let mut tasks = Vec::new();
        for batch in batches {
            let meter = meter.clone();
            tasks.push(tokio::spawn(async move {
                let mut done = Vec::with_capacity(batch.len());
                for req in batch {
                    if Instant::now() >= deadline {
                        break;
                    }
                    let t0 = Instant::now();
                    let g = order(&meter, &req).await;
                    done.push((t0.elapsed(), req, g));
                }
                done
            }));
        }
        let mut done = Vec::new();
        for t in tasks {
            done.extend(t.await.unwrap());
        }
        let wall = start.elapsed();
        let mut sorted: Vec<Duration> = done.iter().map(|d| d.0).collect();
        sorted.sort();
        let n = sorted.len();
        println!(
            "{:>8} {:>9} {:>11.1} {:>9.2} {:>9.2} {:>9.2}",
            c,
            n,
            n as f64 / wall.as_secs_f64(),
            ms(percentile(&sorted, 50.0)),
            ms(percentile(&sorted, 99.0)),
            ms(*sorted.last().unwrap_or(&Duration::ZERO)),
        );

        // Every answer is one the card takes (after the clock).
        for (_, req, g) in &done {
            let install = Install::decode(&hex::decode(&g.install).unwrap()).unwrap();
            assert_eq!(install.request, req.body.counter);
            let card = CardFields {
                pa_subject: &pa_subject,
                pa_public_key: &pa_public_key,
                device: req.body.device,
                license_public_key: &req.body.license_public_key,
                nonce: &req.body.nonce,
            };
            grant::verify_grant(
                &install.fields,
                &card,
                &install.pa_signature,
                &vendor_public,
                &install.countersignature,
            )
            .expect("the card would install it");
        }
        checked += done.len();
    }
    println!("{checked} grants checked as LICENSE INSTALL does: all verify");
    vendor.stop().await;
    pa.stop().await;
    kms.stop().await;
}
