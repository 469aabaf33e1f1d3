//! Certificates per second from the certificate authority (seed 004 Fig. 5, steps 512-516),
//! called as the meter server calls it: mutual TLS on loopback, each request an attestation
//! the CA checks end to end — the device looked up at the KMS (another service, over mutual
//! TLS), both signatures verified, the certificate built and signed with x509-cert, stored
//! in SQLite (WAL, fsynced) — for 1, 8 and 64 concurrent clients, each with its own
//! connection. It prints certificates/s and p50/p99 latency per certificate, then checks
//! every answer's signature under the CA's key.
//!
//! Attestations are made beforehand with core's `KeyAttestation::sign` (one device
//! registered at the KMS, a new key and generation per request); only the calls are timed.
//! Each level stops after `--seconds` (default 4) or `--certificates` (default 2000)
//! requests, whichever comes first.
//!
//! ```sh
//! cargo bench -p openpsd-backoffice --bench ca_issuance
//! cargo bench -p openpsd-backoffice --bench ca_issuance -- --concurrency 1,8,64 --seconds 4
//! ```
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use der::{Decode as _, Encode as _};
use openpsd_backoffice::server;
use openpsd_core::crypto::IndiciumKey;
use openpsd_core::psd::certmeter::attestation::{KeyAttestation, Purpose};
use openpsd_core::types::DeviceId;
use openpsd_protocol::ca::{CertificateAnswer, CertificateRequest};
use openpsd_protocol::{DeviceInfo, DeviceRegistration};
use openpsd_service_kit::codec::{random_array, OsRandom};
use openpsd_service_kit::pki::Pki;
use openpsd_service_kit::tls::{client_config, Role};
use openpsd_service_kit::upstream::Upstream;

/// The services' per-client rate limit, raised out of the way (a policy, not a cost).
const RATE: u32 = 1_000_000;

struct Args {
    certificates: usize,
    seconds: f64,
    concurrency: Vec<usize>,
}

fn args() -> Args {
    let mut a = Args {
        certificates: 2000,
        seconds: 4.0,
        concurrency: vec![1, 8, 64],
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--certificates" => {
                a.certificates = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--certificates N")
            }
            "--seconds" => a.seconds = it.next().and_then(|v| v.parse().ok()).expect("--seconds S"),
            "--concurrency" => {
                a.concurrency = it
                    .next()
                    .map(|v| v.split(',').filter_map(|x| x.parse().ok()).collect())
                    .expect("--concurrency 1,8,64")
            }
            "--help" | "-h" => {
                println!(
                    "ca_issuance benchmark: [--certificates N (most per level, default 2000)] \
                     [--seconds S (per level, default 4)] [--concurrency 1,8,64]"
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

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let a = args();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = server::local_pki(dir).unwrap();
    let rc = IndiciumKey::generate(&mut OsRandom).public_key();
    let kms = server::start_kms(&dir.join("kms"), "127.0.0.1:0", rc, None, &pki, RATE)
        .await
        .unwrap();
    let (ca, ca_public) = server::start_ca(
        &server::ca_config(&dir.join("ca"), &kms.url, &pki),
        "127.0.0.1:0",
        "127.0.0.1:0",
        RATE,
    )
    .await
    .unwrap();
    let device_key = IndiciumKey::generate(&mut OsRandom);
    let device = DeviceId(random_array());
    let reg = DeviceRegistration {
        device_id: hex::encode_upper(device.0),
        key_id: hex::encode(device_key.key_id().0),
        public_key: hex::encode(device_key.public_key()),
        licenses: vec![(1, "53113".to_owned())],
    };
    let kms_op = up(&pki, Role::Operator, Role::Kms, &kms.url);
    let _: DeviceInfo = kms_op.post("/v1/devices", &reg, "bench").await.unwrap();

    let total: usize = a.concurrency.len() * a.certificates;
    let t = Instant::now();
    let attestations: Vec<String> = (0..total)
        .map(|i| {
            let key = IndiciumKey::generate(&mut OsRandom);
            let att = KeyAttestation {
                device,
                slot: 1,
                purpose: Purpose::Postmark,
                generation: u32::try_from(i + 1).unwrap(),
                public_key: key.public_key(),
            };
            hex::encode(att.sign(&device_key, &key))
        })
        .collect();
    eprintln!(
        "{total} attestations made in {:.1} s (not timed)",
        t.elapsed().as_secs_f64()
    );
    let attestations = Arc::new(attestations);
    let mut next = 0usize;
    let mut answers: Vec<CertificateAnswer> = Vec::new();
    println!("CA issuance (meter → CA over mutual TLS; KMS lookup, attestation check, x509-cert, SQLite)");
    println!("clients  certificates  seconds  certs/s  p50 ms  p99 ms");
    for &clients in &a.concurrency {
        let start = next;
        let end = next + a.certificates;
        next = end;
        let cursor = Arc::new(AtomicUsize::new(start));
        let deadline = Instant::now() + Duration::from_secs_f64(a.seconds);
        let t0 = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let client = up(&pki, Role::Meter, Role::Ca, &ca.url);
            let cursor = Arc::clone(&cursor);
            let attestations = Arc::clone(&attestations);
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut got = Vec::new();
                loop {
                    let i = cursor.fetch_add(1, Ordering::Relaxed);
                    if i >= end || Instant::now() >= deadline {
                        break;
                    }
                    let req = CertificateRequest {
                        attestation: attestations[i].clone(),
                        account_id: "bench-account".into(),
                        username: "bench".into(),
                    };
                    let s = Instant::now();
                    let r: CertificateAnswer = client
                        .post("/v1/certificates", &req, "bench")
                        .await
                        .unwrap();
                    lat.push(s.elapsed());
                    got.push(r);
                }
                (lat, got)
            }));
        }
        let mut lat = Vec::new();
        for task in tasks {
            let (l, g) = task.await.unwrap();
            lat.extend(l);
            answers.extend(g);
        }
        let secs = t0.elapsed().as_secs_f64();
        lat.sort();
        // why: a count of requests made in seconds, far below f64's exact range.
        #[allow(clippy::cast_precision_loss)]
        let rate = lat.len() as f64 / secs;
        println!(
            "{clients:>7}  {:>12}  {secs:>7.2}  {rate:>7.1}  {:>6.2}  {:>6.2}",
            lat.len(),
            ms(percentile(&lat, 50.0)),
            ms(percentile(&lat, 99.0)),
        );
    }
    // Every answer is a certificate signed by the CA's key.
    let ca_der = hex::decode(&answers[0].ca_certificate).unwrap();
    let ca_cert = x509_cert::Certificate::from_der(&ca_der).unwrap();
    let ca_key = p256::ecdsa::VerifyingKey::from_sec1_bytes(
        ca_cert
            .tbs_certificate()
            .subject_public_key_info()
            .subject_public_key
            .raw_bytes(),
    )
    .unwrap();
    for ans in &answers {
        let cert =
            x509_cert::Certificate::from_der(&hex::decode(&ans.certificate).unwrap()).unwrap();
        let tbs = cert.tbs_certificate().to_der().unwrap();
        let sig = p256::ecdsa::DerSignature::try_from(cert.signature().raw_bytes()).unwrap();
        p256::ecdsa::signature::Verifier::verify(&ca_key, &tbs, &sig).unwrap();
    }
    eprintln!("{} certificates checked under the CA's key", answers.len());
    ca.stop().await;
    ca_public.stop().await;
    kms.stop().await;
}
