//! CRL build time of the certificate authority (issue 15, "Measure": a CRL of 10^5 entries
//! against `openssl ca -gencrl`; `scripts/crl-bench.sh` runs both in the same run and
//! prints the ratio).
//!
//! Two figures for N revoked certificates (random 16-octet serials as the CA makes them,
//! revocation times one second apart):
//!
//! - `build`: the CA's own CRL function, `openpsd_ca::x509::crl` (x509-cert's `CrlBuilder`,
//!   DER, ECDSA P-256 signature) on the N entries in memory, as the `GET /v1/ca/crl.der`
//!   handler calls it. Best of `--runs` (default 3).
//! - `served`: the first `GET /v1/ca/crl.der` from a running CA whose store holds the same
//!   N revoked rows (inserted beforehand in one transaction, not timed): the handler's
//!   SELECT, the build, the CRL written back to SQLite, and the HTTP answer on loopback.
//!   Once (a second request would answer the cached CRL). `--no-served` skips it.
//!
//! With `openssl` on PATH the built CRL is checked once: `openssl crl -inform DER -CAfile`
//! must verify its signature and list N serial numbers.
//!
//! ```sh
//! cargo bench -p openpsd-backoffice --bench ca_crl
//! cargo bench -p openpsd-backoffice --bench ca_crl -- --entries 10000 --runs 5
//! ```
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read as _, Write as _};
use std::time::{Duration, Instant};

use openpsd_backoffice::server;
use openpsd_ca::x509;
use openpsd_core::crypto::IndiciumKey;
use openpsd_service_kit::codec::{random_array, OsRandom};

/// The services' per-client rate limit, raised out of the way (a policy, not a cost).
const RATE: u32 = 1_000_000;

struct Args {
    entries: usize,
    runs: usize,
    served: bool,
}

fn args() -> Args {
    let mut a = Args {
        entries: 100_000,
        runs: 3,
        served: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--entries" => a.entries = it.next().and_then(|v| v.parse().ok()).expect("--entries N"),
            "--runs" => {
                a.runs = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&n| n > 0)
                    .expect("--runs N (>= 1)")
            }
            "--no-served" => a.served = false,
            "--help" | "-h" => {
                println!(
                    "ca_crl benchmark: [--entries N (revoked certificates, default 100000)] \
                     [--runs R (in-memory builds, best kept, default 3)] [--no-served]"
                );
                std::process::exit(0);
            }
            // `cargo bench` passes --bench; filters are not used.
            _ => {}
        }
    }
    a
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// N revoked entries as the handler passes them: (serial magnitude, revocation time),
/// ordered by time then serial (its `ORDER BY revoked_at, serial`). Serials as the CA's
/// `new_serial`: 16 random octets, the first in 0x01..=0x7F.
fn entries(n: usize, t: u64) -> Vec<(Vec<u8>, u64)> {
    let mut seen = std::collections::HashSet::with_capacity(n);
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        let mut s = random_array::<16>().to_vec();
        s[0] = s[0] % 0x7F + 1;
        if seen.insert(s.clone()) {
            let back = u64::try_from(n - v.len()).unwrap();
            v.push((s, t - back));
        }
    }
    v.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
    v
}

/// `openssl crl` on the CRL: its signature under the CA certificate, and its entry count.
fn check_with_openssl(der: &[u8], ca_pem: &str, n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let crl = dir.path().join("crl.der");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&crl, der).unwrap();
    std::fs::write(&ca, ca_pem).unwrap();
    let out = match std::process::Command::new("openssl")
        .args(["crl", "-inform", "DER", "-noout", "-text", "-in"])
        .arg(&crl)
        .arg("-CAfile")
        .arg(&ca)
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            println!("openssl check: skipped (openssl: {e})");
            return;
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.contains("verify OK"),
        "openssl crl refused the CRL: {err}"
    );
    let count = text.matches("Serial Number:").count();
    assert_eq!(count, n, "openssl crl lists {count} entries, not {n}");
    println!("openssl check: verify OK, {count} entries");
}

/// The first `GET /v1/ca/crl.der` from a CA whose store holds `revoked`: milliseconds and
/// the CRL's size.
async fn served(revoked: &[(Vec<u8>, u64)]) -> (f64, usize) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = server::local_pki(dir).unwrap();
    // No KMS: the CRL does not call it (the URL is only parsed).
    let config = server::ca_config(&dir.join("ca"), "https://127.0.0.1:9", &pki);
    let (ca, public) = server::start_ca(&config, "127.0.0.1:0", "127.0.0.1:0", RATE)
        .await
        .unwrap();
    let t = Instant::now();
    {
        let mut c = rusqlite::Connection::open(dir.join("ca").join(openpsd_ca::DB_FILE)).unwrap();
        c.busy_timeout(Duration::from_secs(30)).unwrap();
        let tx = c.transaction().unwrap();
        {
            let mut ins = tx
                .prepare(
                    "INSERT INTO certificates (serial, device_id, slot, purpose, generation,
                     public_key, account_id, username, attestation, certificate, issued_at,
                     revoked_at, reason) VALUES (?1, ?2, 1, 'postmark', 1, ?3, 'bench-account',
                     'bench', ?4, ?5, ?6, ?7, 'bench')",
                )
                .unwrap();
            // A certificate's size, so the table's rows are as long as the real ones.
            let cert = vec![0u8; 600];
            let key = "04".repeat(65);
            for (i, (serial, at)) in revoked.iter().enumerate() {
                let at = i64::try_from(*at).unwrap();
                ins.execute(rusqlite::params![
                    hex::encode(serial),
                    format!("{i:016X}"),
                    key,
                    format!("{i:064x}"),
                    cert,
                    at - 86_400,
                    at,
                ])
                .unwrap();
            }
        }
        tx.commit().unwrap();
    }
    eprintln!(
        "{} revoked rows inserted in {:.1} s (not timed)",
        revoked.len(),
        t.elapsed().as_secs_f64()
    );
    let addr = public.addr;
    let (elapsed, body) = tokio::task::spawn_blocking(move || {
        let t = Instant::now();
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /v1/ca/crl.der HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).unwrap();
        let elapsed = t.elapsed();
        let split = buf
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("an HTTP answer");
        let head = String::from_utf8_lossy(&buf[..split]).into_owned();
        assert!(
            head.starts_with("HTTP/1.1 200"),
            "GET /v1/ca/crl.der: {head}"
        );
        (elapsed, buf[split + 4..].to_vec())
    })
    .await
    .unwrap();
    ca.stop().await;
    public.stop().await;
    (ms(elapsed), body.len())
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let a = args();
    let key = IndiciumKey::generate(&mut OsRandom);
    let public = key.public_key();
    let signing = p256::ecdsa::SigningKey::from_slice(key.secret_bytes().as_ref()).unwrap();
    let t = now();
    let ca = x509::ca_certificate(&signing, &public, t - 86_400, t + 86_400 * 365).unwrap();
    let revoked = entries(a.entries, t);
    println!(
        "CA CRL build (openpsd_ca::x509::crl: x509-cert CrlBuilder, DER, ECDSA P-256), {} entries",
        a.entries
    );
    let mut best = Duration::MAX;
    let mut der = Vec::new();
    for run in 1..=a.runs {
        let s = Instant::now();
        der = x509::crl(&ca, &signing, 1, t, t + 86_400, &revoked).unwrap();
        let d = s.elapsed();
        println!("run {run}: {:.1} ms, {} bytes", ms(d), der.len());
        best = best.min(d);
    }
    // Parsable by scripts/crl-bench.sh.
    println!(
        "build entries {} bytes {} ms {:.1}",
        a.entries,
        der.len(),
        ms(best)
    );
    use der::Encode as _;
    let ca_pem = x509::pem("CERTIFICATE", &ca.to_der().unwrap()).unwrap();
    check_with_openssl(&der, &ca_pem, a.entries);
    if a.served {
        let (m, bytes) = served(&revoked).await;
        println!("served entries {} bytes {bytes} ms {m:.1}", a.entries);
    }
}
