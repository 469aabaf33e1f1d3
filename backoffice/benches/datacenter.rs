//! Indicia per second through the virtual meter's data center (issue 16, Measure): mailers
//! logged in over HTTPS, each piece a request that reads the record and its Merkle path from
//! SQLite, has the box check, charge and sign (indicium and transaction record), and commits
//! the answer (every commit fsynced). For each number of concurrent users it prints pieces/s
//! and p50/p99, with distinct meters (one per user) and with one hot meter; then, in the same
//! run, the in-process PSD (a card in memory, no HTTP, no database) and a card-sim PSD on
//! its file store (every commit fsynced) as the reference ratios;
//! and checks that the auditor finds the ledger exact.
//!
//! ```sh
//! cargo bench -p openpsd-backoffice --bench datacenter -- --pieces 512 --users 1,64
//! cargo bench -p openpsd-backoffice --bench datacenter -- --pieces 512 --users 1,64 --batch 16
//! cargo bench -p openpsd-backoffice --bench datacenter -- --users 1000 --pieces 4000
//! cargo bench -p openpsd-backoffice --bench datacenter -- --postgres 'host=/tmp/pg user=postgres'
//! cargo build --release -p openpsd-card-sim && \
//!   cargo bench -p openpsd-backoffice --bench datacenter -- --box tcp --batch 16
//! ```
//!
//! `--batch N` sends N pieces per request (`POST /v1/indicia/batch`, one box command, one
//! commit); pieces/s counts pieces, p50/p99 are per request. `--postgres BASE` runs the data
//! center on a fresh database of that PostgreSQL server (`scripts/postgres-test.sh` does, on
//! its cluster) instead of SQLite. `--box tcp` runs the box as a separate process: a blank
//! virtual meter box card made and served by `card-sim serve --tcp` (the `card-sim` binary
//! of this profile, `target/release/card-sim`, or `$OPENPSD_CARD_SIM`), which the data
//! center personalizes and reaches over one TCP connection; `--box tcp:ADDR` uses a box
//! already served there. Default: the box in the data center's process. `--servers N`
//! (with `--postgres` and `--box tcp`) runs N data centers (function servers) in this process
//! on the one database and the one box (`card-sim serve --clients N`), each with its own
//! connection to either; mailer u talks to server u mod N, and the hot meter's tasks to
//! every server in turn (docs/virtual-meter.md §9, Several function servers). Each mailer
//! is an HTTP client of its own that keeps its connection, as a browser does; the hot
//! meter's tasks are the same clients. `RUST_LOG=warn` prints the services' warnings (a
//! connection refused names its cause there).
//!
//! ```sh
//! cargo bench -p openpsd-backoffice --bench datacenter -- --postgres 'host=/tmp/pg user=postgres' --box tcp --servers 3
//! ```
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{Client, Psd};
use openpsd_backoffice::server::{spawn_all, start_datacenter};
use openpsd_core::crypto::IndiciumKey;
use openpsd_protocol::datacenter::{
    BoxRegistration, IndiciumBatch, IndiciumBatchIssued, IndiciumIssued, IndiciumOrder,
    MailerCredentials, MailerSession, RefillDone, RefillOrder,
};
use openpsd_protocol::recharge::{Account, Deposit};
use openpsd_service_kit::codec::device_hex;
use openpsd_service_kit::tls::Role;

struct Args {
    pieces: usize,
    users: Vec<usize>,
    postgres: Option<String>,
    /// Pieces per request (1: `POST /v1/indicia`; more: `POST /v1/indicia/batch`).
    batch: usize,
    /// `tcp` or `tcp:ADDR`: the box as a card-sim process; `None`: in-process.
    box_at: Option<String>,
    /// Data centers on the one database and box.
    servers: usize,
    /// PostgreSQL connections per data center (`None`: the service's default).
    connections: Option<usize>,
}

fn args() -> Args {
    let mut a = Args {
        pieces: 512,
        users: vec![1, 64],
        postgres: None,
        batch: 1,
        box_at: None,
        servers: 1,
        connections: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--pieces" => a.pieces = it.next().and_then(|v| v.parse().ok()).expect("--pieces N"),
            "--users" => {
                a.users = it
                    .next()
                    .map(|v| v.split(',').filter_map(|x| x.parse().ok()).collect())
                    .expect("--users 1,64")
            }
            "--postgres" => a.postgres = Some(it.next().expect("--postgres BASE")),
            "--batch" => {
                a.batch = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|n| (1..=16).contains(n))
                    .expect("--batch N (1 to 16)")
            }
            "--box" => {
                let v = it.next().expect("--box tcp|tcp:HOST:PORT");
                assert!(
                    v == "tcp" || v.starts_with("tcp:"),
                    "--box tcp|tcp:HOST:PORT"
                );
                a.box_at = Some(v);
            }
            "--servers" => {
                a.servers = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|n| (1..=16).contains(n))
                    .expect("--servers N (1 to 16)")
            }
            "--connections" => {
                a.connections = Some(
                    it.next()
                        .and_then(|v| v.parse().ok())
                        .filter(|n| (1..=64).contains(n))
                        .expect("--connections N (1 to 64)"),
                )
            }
            "--help" | "-h" => {
                println!(
                    "datacenter benchmark: [--pieces N (per level, default 512)] [--users 1,64] \
                     [--batch N (pieces per request, 1-16)] \
                     [--postgres BASE (key=value connection string of a PostgreSQL server)] \
                     [--box tcp|tcp:HOST:PORT (the box as a card-sim process; default in-process)] \
                     [--servers N (data centers on one database and box; needs --postgres and --box tcp)] \
                     [--connections N (PostgreSQL connections per data center; default the service's)]"
                );
                std::process::exit(0);
            }
            _ => {}
        }
    }
    if a.servers > 1 && (a.postgres.is_none() || a.box_at.as_deref() != Some("tcp")) {
        eprintln!(
            "datacenter bench: --servers {} needs --postgres (one database for all) and --box tcp \
             (one box for all)",
            a.servers
        );
        std::process::exit(2);
    }
    // Each user sends whole requests of `batch` pieces: fewer pieces than that per level
    // would leave a user with nothing to send and no latency to report.
    if let Some(&most) = a.users.iter().max() {
        if a.pieces < most * a.batch {
            eprintln!(
                "datacenter bench: --pieces {} is fewer than users × batch = {} × {} at the \
                 largest level; give at least {}",
                a.pieces,
                most,
                a.batch,
                most * a.batch
            );
            std::process::exit(2);
        }
    }
    a
}

/// The `card-sim` binary: `$OPENPSD_CARD_SIM`, or `card-sim` in this bench's profile
/// directory (`target/release/deps/datacenter-…` → `target/release/card-sim`).
fn card_sim_bin() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("OPENPSD_CARD_SIM") {
        return p.into();
    }
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(std::path::Path::parent)
        .map(|d| d.join("card-sim"))
        .unwrap();
    assert!(
        bin.exists(),
        "{} is missing: cargo build --release -p openpsd-card-sim (or set OPENPSD_CARD_SIM)",
        bin.display()
    );
    bin
}

/// The second reference: a card-sim PSD on its file store (card-sim's own personalization
/// and funding, every commit appended and fsynced as `card-sim serve` does), driven in this
/// process through the same host library: pieces/s for `pieces` indicia.
fn card_sim_psd_rate(pieces: usize) -> f64 {
    use card_sim::os_platform::{Clock, OsPlatform};
    use openpsd_core::client::PsdClient;
    use openpsd_core::psd::indicium::IndiciumRequest;
    use openpsd_core::types::{Amount, PostalCode, RateCategory, RegisterSetIndex, TransactionId};
    let dir = tempfile::tempdir().unwrap();
    let mut card = card_sim::sim::create_file_card(&dir.path().join("psd"), Clock::System).unwrap();
    let kms = IndiciumKey::from_bytes(&[0x43; 32]).unwrap();
    let req = card_sim::personalize::Request::new(kms.public_key());
    card_sim::issuer::personalize_and_fund(
        &mut card,
        &mut OsPlatform::default(),
        &req,
        &kms,
        None,
        Amount(1_000_000),
    )
    .unwrap();
    let mut psd = PsdClient::new(&mut card);
    psd.select().unwrap();
    let today = openpsd_service_kit::codec::today_utc();
    let start = Instant::now();
    for k in 0..pieces as u64 {
        let r = IndiciumRequest {
            transaction: TransactionId((k + 1).to_be_bytes()),
            postage: Amount(1),
            date: today,
            rate: RateCategory(1),
            origin: PostalCode::new(b"10115").unwrap(),
            destination: PostalCode::new(b"20095").unwrap(),
        };
        psd.issue_indicium(RegisterSetIndex(0), &r).unwrap();
    }
    #[allow(clippy::cast_precision_loss)]
    let rate = pieces as f64 / start.elapsed().as_secs_f64();
    rate
}

/// A blank box card in `dir`, served by a `card-sim serve --tcp` process on a free
/// loopback port to up to `clients` clients at once: the process and its address.
fn start_card_sim(dir: &std::path::Path, clients: usize) -> (std::process::Child, String) {
    let bin = card_sim_bin();
    let card = dir.join("box-card");
    let out = std::process::Command::new(&bin)
        .args(["create", "--kind", "vbox", "--state"])
        .arg(&card)
        .output()
        .unwrap();
    assert!(out.status.success(), "card-sim create: {out:?}");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = std::process::Command::new(&bin)
        .args(["serve", "--state"])
        .arg(&card)
        .args(["--tcp", &addr, "--clients", &clients.to_string()])
        .env("RUST_LOG", "error")
        .spawn()
        .unwrap();
    // Listening once /proc/net/tcp shows the port in LISTEN (a probe connection would be a
    // client, and a power-up, of its own).
    let needle = format!(":{port:04X} 00000000:0000 0A");
    for _ in 0..400 {
        if std::fs::read_to_string("/proc/net/tcp")
            .unwrap_or_default()
            .contains(&needle)
        {
            return (child, addr);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("card-sim does not listen on {addr}");
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// `pieces` indicia by `tasks` concurrent clients, client `i` as `clients[i % len]`, `batch`
/// pieces per request (each task's share rounded down to whole requests): (pieces/s, p50,
/// p99 per request).
async fn run(
    clients: &[Client],
    tasks: usize,
    pieces: usize,
    first_txn: u64,
    batch: usize,
) -> (f64, Duration, Duration) {
    let per = pieces / tasks / batch * batch;
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let c = clients[t % clients.len()].clone();
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per);
                for k in (0..per).step_by(batch) {
                    let order = |j: usize| IndiciumOrder {
                        client_txn_id: format!("{:016x}", first_txn + (t * per + k + j) as u64),
                        postage: 1,
                        rate: 1,
                        destination: "80331".into(),
                    };
                    let t0 = Instant::now();
                    if batch == 1 {
                        let _: IndiciumIssued = c.post("/v1/indicia", &order(0)).await.unwrap();
                    } else {
                        let b = IndiciumBatch {
                            orders: (0..batch).map(order).collect(),
                        };
                        let r: IndiciumBatchIssued = c.post("/v1/indicia/batch", &b).await.unwrap();
                        assert_eq!(r.indicia.len(), batch);
                    }
                    lat.push(t0.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    let secs = start.elapsed().as_secs_f64();
    all.sort();
    #[allow(clippy::cast_precision_loss)]
    let rate = (all.len() * batch) as f64 / secs;
    (rate, percentile(&all, 0.5), percentile(&all, 0.99))
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let a = args();
    // The services' warnings (a connection refused, a timeout) on stderr when asked for
    // with RUST_LOG: they name the cause of a transport error the bench reports.
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
    }
    let tmp = tempfile::tempdir().unwrap();
    let h = spawn_all(tmp.path()).await.unwrap();
    let mut config = openpsd_datacenter::Config::new(
        tmp.path().join("datacenter"),
        [&h.vendor.url, &h.kms.url, &h.recharge.url],
        h.pki.clone(),
    );
    // Every simulated mailer connects from 127.0.0.1: the cap per address (1,024 by
    // default, for a firm behind one NAT) would refuse the thousandth mailer's browser.
    config.connections_per_address = 4096;
    if let Some(base) = a.postgres.clone() {
        let name = format!("dc_bench_{}", std::process::id());
        let url = tokio::task::spawn_blocking(move || {
            openpsd_post::postgres::create_database(&base, &name)
        })
        .await
        .unwrap()
        .unwrap();
        config.database_url = Some(url);
    }
    if let Some(n) = a.connections {
        config.database_connections = n;
    }
    let mut card_sim = None;
    match a.box_at.as_deref() {
        None => {}
        Some("tcp") => {
            let (child, addr) = start_card_sim(tmp.path(), a.servers);
            config.box_at = openpsd_datacenter::boxhost::BoxAt::Tcp(addr);
            card_sim = Some(child);
        }
        Some(other) => {
            config.box_at = openpsd_datacenter::boxhost::BoxAt::parse(
                other,
                &openpsd_datacenter::boxhost::LocalBox::in_data(&tmp.path().join("datacenter")),
            )
            .unwrap();
        }
    }
    let database = openpsd_datacenter::Database::new(
        &tmp.path().join("datacenter"),
        config.database_url.as_deref(),
    );
    let (dc, info) = start_datacenter(&config, "127.0.0.1:0", 1_000_000)
        .await
        .unwrap();
    // More data centers on the same database and box, each with the first one's pepper.
    let mut dcs = vec![dc];
    for i in 1..a.servers {
        let mut c = config.clone();
        c.data = tmp.path().join(format!("datacenter{i}"));
        std::fs::create_dir_all(&c.data).unwrap();
        let pepper = openpsd_datacenter::PEPPER_FILE;
        std::fs::copy(config.data.join(pepper), c.data.join(pepper)).unwrap();
        let (d, _) = start_datacenter(&c, "127.0.0.1:0", 1_000_000)
            .await
            .unwrap();
        dcs.push(d);
    }
    let op_kms = Client::with_pool(&h.kms.url, &h.pki, Some(Role::Operator), 4);
    let _: BoxRegistration = op_kms
        .post(
            "/v1/vbox/boxes",
            &BoxRegistration {
                box_id: device_hex(&info.box_id),
                txn_key: hex::encode(info.txn_key),
                depth: info.depth,
            },
        )
        .await
        .unwrap();
    let op_rc = Client::with_pool(&h.recharge.url, &h.pki, Some(Role::Operator), 4);
    let most = a.users.iter().copied().max().unwrap_or(1);
    println!(
        "datacenter bench: {} pieces per level, users {:?}, {} per request, {} data center(s), box {} shards × depth {} {}, {}",
        a.pieces,
        a.users,
        a.batch,
        a.servers,
        info.shards,
        info.depth,
        match &config.box_at {
            openpsd_datacenter::boxhost::BoxAt::InProcess(_) => "in-process".to_owned(),
            openpsd_datacenter::boxhost::BoxAt::Tcp(a) => format!("in a card-sim process (tcp:{a})"),
            openpsd_datacenter::boxhost::BoxAt::Tls(a) => format!("in a card-sim process (tls:{a})"),
        },
        if a.postgres.is_some() {
            format!(
                "PostgreSQL ({} connection(s) per data center)",
                config.database_connections
            )
        } else {
            "SQLite".to_owned()
        }
    );
    let anons: Vec<Client> = dcs
        .iter()
        .map(|d| Client::with_pool(&d.url, &h.pki, None, 64))
        .collect();
    let mut clients = Vec::new();
    // The hot meter (the first mailer's) through every server in turn.
    let mut hot_token = String::new();
    let signing_up = Instant::now();
    for u in 0..most {
        if u > 0 && u % 100 == 0 {
            eprintln!(
                "  {u} of {most} mailers signed up and funded ({:.0} s)",
                signing_up.elapsed().as_secs_f64()
            );
        }
        let anon = &anons[u % anons.len()];
        let s: MailerSession = anon
            .post(
                "/v1/mailers",
                &MailerCredentials {
                    username: format!("bench-{u}"),
                    password: "a long bench password".into(),
                },
            )
            .await
            .unwrap();
        let _: Account = op_rc
            .post(
                &format!("/v1/accounts/vm-{}/deposits", s.mailer_id),
                &Deposit {
                    amount: 1_000_000,
                    reference: format!("bench-{u}"),
                },
            )
            .await
            .unwrap();
        // Each simulated mailer is a client of its own, keeping its one connection between
        // its requests, as a browser does. One client shared by all of them (its pool racing
        // a new connection against every busy one) churned connections past the data
        // center's cap per address and was refused: transport errors at 1,000 users with
        // single pieces, which no set of real mailers would see.
        let c = Client::with_pool(&dcs[u % dcs.len()].url, &h.pki, None, 1).with_bearer(&s.token);
        if u == 0 {
            hot_token = s.token.clone();
        }
        let _: RefillDone = c
            .post(
                "/v1/refills",
                &RefillOrder {
                    client_txn_id: format!("{:016x}", 0xF000_0000_u64 + u as u64),
                    amount: 1_000_000,
                },
            )
            .await
            .unwrap();
        clients.push(c);
    }
    // The hot meter's users: each of the same browsers, logged in as the first mailer.
    let hot: Vec<Client> = clients.iter().map(|c| c.with_bearer(&hot_token)).collect();
    let mut txn = 1u64;
    let mut issued = 0u64;
    let mut rates: Vec<(String, f64)> = Vec::new();
    for &u in &a.users {
        let (rate, p50, p99) = run(&clients[..u], u, a.pieces, txn, a.batch).await;
        txn += a.pieces as u64;
        issued += (a.pieces / u / a.batch * a.batch * u) as u64;
        println!(
            "  {u:>4} users, distinct meters: {rate:>8.1} pieces/s  p50 {:>7.2} ms  p99 {:>7.2} ms",
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3
        );
        let (rate_hot, p50, p99) = run(&hot, u, a.pieces, txn, a.batch).await;
        txn += a.pieces as u64;
        issued += (a.pieces / u / a.batch * a.batch * u) as u64;
        println!("  {u:>4} users, one hot meter:   {rate_hot:>8.1} pieces/s  p50 {:>7.2} ms  p99 {:>7.2} ms", p50.as_secs_f64() * 1e3, p99.as_secs_f64() * 1e3);
        rates.push((format!("{u} users, distinct meters"), rate));
        rates.push((format!("{u} users, one hot meter"), rate_hot));
    }

    // The reference: a PSD card in this process (no HTTP, no database), the same pieces.
    let kms = IndiciumKey::from_bytes(&[0x42; 32]).unwrap();
    let mut psd = Psd::new(1, 0, &kms.public_key());
    psd.offline_refill(0, 1_000_000, [7; 8], &kms);
    let start = Instant::now();
    for k in 0..a.pieces as u64 {
        psd.frank(k + 1, 1).unwrap();
    }
    #[allow(clippy::cast_precision_loss)]
    let psd_rate = a.pieces as f64 / start.elapsed().as_secs_f64();
    println!("  in-process PSD (reference):    {psd_rate:>8.1} pieces/s");
    let file_rate = card_sim_psd_rate(a.pieces);
    println!(
        "  card-sim PSD, file store:      {file_rate:>8.1} pieces/s (reference; every commit fsynced)"
    );
    for (what, rate) in &rates {
        println!(
            "  ratio {what}: {:.2} of the in-process PSD, {:.2} of the card-sim PSD",
            rate / psd_rate,
            rate / file_rate
        );
    }

    let key = info.txn_key;
    let report = tokio::task::spawn_blocking(move || {
        openpsd_datacenter::audit::audit(&database, Some(&key))
    })
    .await
    .unwrap()
    .unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.used, issued, "the ledger counts every piece once");
    println!(
        "  ledger: {} records, credited {}, used {}, held {}: exact",
        report.records, report.credited, report.used, report.held
    );
    for d in dcs {
        d.stop().await;
    }
    if let Some(mut c) = card_sim {
        let _ = c.kill();
        let _ = c.wait();
    }
    h.stop().await;
}
