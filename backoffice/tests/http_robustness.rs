//! HTTP robustness (issue 18 §3): every route of every service, called by a caller its
//! access list allows, with random JSON bodies (known field names with values of every
//! type, huge numbers, long and odd strings, nesting), raw bytes that are not JSON, and
//! random path parameters: no answer is a 5xx, every answer comes (no dropped connection),
//! every refusal is the JSON error body, and the recharging center's books stay balanced
//! (deposited = available + held + debited, nothing debited without a PSD).
//!
//! Deterministic: the seed is printed; `OPENPSD_HTTP_FUZZ_SEED=<n>` replays a run and
//! `OPENPSD_HTTP_FUZZ_ROUNDS=<n>` (default 2) sets the requests per route and kind. It is
//! a test on real services in process (mutual TLS on loopback, as `access.rs`), not a
//! cargo-fuzz target: the services need a tokio runtime, TLS and their databases, which a
//! libFuzzer process would rebuild per input or share across inputs unsoundly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{parties, Client, Psd};
use openpsd_kms::Kms;
use openpsd_meter::Meter;
use openpsd_post::PostOffice;
use openpsd_recharge::Recharge;
use openpsd_service_kit::access::{Rule, Who};
use openpsd_service_kit::tls::Role;
use serde_json::{json, Map, Value};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap_or(0)
    }
    fn byte(&mut self) -> u8 {
        self.next().to_be_bytes()[7]
    }
}

/// Field names the services' bodies use (and a few they do not).
const FIELDS: &[&str] = &[
    "amount",
    "reference",
    "device_id",
    "account_id",
    "client_txn_id",
    "register_set",
    "set",
    "license",
    "origin",
    "nonce",
    "audit",
    "combination",
    "combination_id",
    "username",
    "password",
    "currency",
    "limit",
    "request_id",
    "csr",
    "attestation",
    "certificate",
    "payment",
    "signature",
    "public_key",
    "serial",
    "labels",
    "reason",
    "kind",
    "state",
    "outcome",
    "receipt",
    "blob",
    "epoch",
    "x",
];

fn random_string(r: &mut Rng) -> String {
    match r.below(9) {
        0 => String::new(),
        1 => "A".repeat(5_000),
        2 => "00".repeat(1 + r.below(80)),
        3 => "../../etc/passwd".into(),
        4 => "ü\u{0}\u{202E}💥".into(),
        5 => "-1".into(),
        6 => "PSD00001".into(),
        7 => FIELDS[r.below(FIELDS.len())].into(),
        _ => (0..r.below(40))
            .map(|_| char::from(32 + r.byte() % 95))
            .collect(),
    }
}

fn random_json(r: &mut Rng, depth: u32) -> Value {
    match r.below(if depth > 2 { 6 } else { 8 }) {
        0 => Value::Null,
        1 => Value::Bool(r.next().is_multiple_of(2)),
        2 => [json!(0), json!(1), json!(u64::MAX), json!(i64::MIN)][r.below(4)].clone(),
        3 => json!(r.next()),
        4 => json!([1e308, -0.5, 1.5][r.below(3)]),
        5 => Value::String(random_string(r)),
        6 => Value::Array((0..r.below(4)).map(|_| random_json(r, depth + 1)).collect()),
        _ => {
            let mut m = Map::new();
            for _ in 0..r.below(7) {
                m.insert(
                    FIELDS[r.below(FIELDS.len())].to_owned(),
                    random_json(r, depth + 1),
                );
            }
            Value::Object(m)
        }
    }
}

/// A body: JSON (mostly an object of known fields), or bytes that are not JSON.
fn random_body(r: &mut Rng) -> (&'static str, Vec<u8>) {
    match r.below(6) {
        0 => ("application/json", b"{\"amount\":".to_vec()),
        1 => (
            "application/json",
            (0..r.below(64)).map(|_| r.byte()).collect(),
        ),
        2 => ("text/plain", b"amount=5".to_vec()),
        _ => {
            let mut m = Map::new();
            for _ in 0..r.below(8) {
                m.insert(FIELDS[r.below(FIELDS.len())].to_owned(), random_json(r, 1));
            }
            (
                "application/json",
                serde_json::to_vec(&Value::Object(m)).unwrap(),
            )
        }
    }
}

/// A path parameter: a valid one, or random (percent-encoded).
fn param(r: &mut Rng, valid: &str) -> String {
    if r.below(2) == 0 {
        return valid.to_owned();
    }
    let s = random_string(r);
    let s = if s.is_empty() { "x".to_owned() } else { s };
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn random_requests_get_no_5xx_and_the_books_balance() {
    let seed: u64 = std::env::var("OPENPSD_HTTP_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_0018);
    let rounds: usize = std::env::var("OPENPSD_HTTP_FUZZ_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    println!("OPENPSD_HTTP_FUZZ_SEED={seed} OPENPSD_HTTP_FUZZ_ROUNDS={rounds}");
    let mut r = Rng(seed | 1);

    let dir = tempfile::tempdir().unwrap();
    let h = openpsd_backoffice::spawn_all(dir.path()).await.unwrap();
    let (host, admin) = parties(&h.meter.url, &h.kms.url, &h.recharge.url, &h.pki);
    let psd = Psd::new(3, 0, &h.kms_public_key);
    admin.register_to(&psd, "alice").await;
    admin.fund("alice", 10_000).await;
    let alice = host.customers.account("alice");
    let post = openpsd_backoffice::server::start_post(
        &dir.path().join("post"),
        None,
        "127.0.0.1:0",
        [&h.kms.url, &h.meter.url, &h.pa.url],
        &h.pki,
        openpsd_backoffice::server::DEFAULT_RATE,
    )
    .await
    .unwrap();

    // The virtual meter's data center, a mailer signed up there (its customers' routes).
    let (dc, _) = openpsd_backoffice::server::start_datacenter(
        &openpsd_datacenter::Config::new(
            dir.path().join("datacenter"),
            [&h.vendor.url, &h.kms.url, &h.recharge.url],
            h.pki.clone(),
        ),
        "127.0.0.1:0",
        openpsd_backoffice::server::DEFAULT_RATE,
    )
    .await
    .unwrap();
    let mailer: openpsd_protocol::datacenter::MailerSession = Client::new(&dc.url, &h.pki, None)
        .post(
            "/v1/mailers",
            &openpsd_protocol::datacenter::MailerCredentials {
                username: "carol".into(),
                password: "carol-long-password".into(),
            },
        )
        .await
        .unwrap();

    let services: [(&str, &str, Vec<Rule>); 10] = [
        ("meter", &h.meter.url, Meter::routes(100).rules().to_vec()),
        ("kms", &h.kms.url, Kms::routes().rules().to_vec()),
        (
            "recharge",
            &h.recharge.url,
            Recharge::routes().rules().to_vec(),
        ),
        ("post", &post.url, PostOffice::routes().rules().to_vec()),
        ("pa", &h.pa.url, openpsd_pa::Pa::routes().rules().to_vec()),
        (
            "vendor",
            &h.vendor.url,
            openpsd_vendor::Vendor::routes().rules().to_vec(),
        ),
        ("ca", &h.ca.url, openpsd_ca::Ca::routes().rules().to_vec()),
        (
            "creditor",
            &h.creditor.url,
            openpsd_creditor::Creditor::routes().rules().to_vec(),
        ),
        (
            "ca-public",
            &h.ca_public.url,
            openpsd_ca::Ca::public_routes().rules().to_vec(),
        ),
        (
            "datacenter",
            &dc.url,
            openpsd_datacenter::Datacenter::routes(100).rules().to_vec(),
        ),
    ];
    let mut sent = 0;
    let mut failures = Vec::new();
    for (service, base, rules) in &services {
        let mut rules = rules.clone();
        // Log-out ends the customer's session: last.
        rules.sort_by_key(|r| r.path == "/v1/sessions/current");
        for rule in &rules {
            // A caller the route allows: its first entry.
            let (role, customer) = match rule.who.first() {
                Some(Who::Role(role)) => (Some(*role), false),
                Some(Who::AnyRole) => (Some(Role::Operator), false),
                Some(Who::Customer) => (None, true),
                _ => (None, false),
            };
            let mut client = Client::new(base, &h.pki, role);
            if customer {
                let token = if *service == "datacenter" {
                    mailer.token.clone()
                } else {
                    host.customers.get("alice").1
                };
                client = client.with_bearer(&token);
            }
            for _ in 0..rounds * 3 {
                let path = rule
                    .path
                    .replace("{client_txn_id}", &param(&mut r, "t1"))
                    .replace("{device_id}", &param(&mut r, &psd.device_id()))
                    .replace("{account_id}", &param(&mut r, &alice))
                    .replace("{combination_id}", &param(&mut r, "0000000000000000"))
                    .replace("{inspection_id}", &param(&mut r, "nothing"))
                    .replace("{key_id}", &param(&mut r, "key-nothing"))
                    .replace("{serial}", &param(&mut r, "01"))
                    .replace("{license}", &param(&mut r, "4711"))
                    .replace("{meter_id}", &param(&mut r, "564D000000000001"));
                let (content_type, body) = random_body(&mut r);
                let (status, answer) = client
                    .raw(&rule.method, &path, content_type, body.clone())
                    .await;
                sent += 1;
                let what = || {
                    format!(
                        "{service} {} {path} ({content_type}, {} bytes: {}) -> {status} {}",
                        rule.method,
                        body.len(),
                        String::from_utf8_lossy(&body[..body.len().min(200)]),
                        String::from_utf8_lossy(&answer[..answer.len().min(300)])
                    )
                };
                if status == 0 || status >= 500 {
                    failures.push(what());
                    continue;
                }
                // A refusal carries the error body (plain-text answers: the CA's PEM and
                // CRL, health checks, only with 2xx).
                if status >= 400 && status != 404 && status != 405 {
                    let parsed: Result<openpsd_protocol::ErrorBody, _> =
                        serde_json::from_slice(&answer);
                    if parsed.is_err() {
                        failures.push(format!("no JSON error body: {}", what()));
                    }
                }
            }
        }
    }
    assert!(sent > 300, "{sent} requests");
    assert!(
        failures.is_empty(),
        "{} of {sent} requests failed (seed {seed}):\n{}",
        failures.len(),
        failures.join("\n")
    );
    let a = admin.account("alice").await;
    assert_eq!(
        a.deposited,
        a.available + a.held + a.debited,
        "the books do not balance: {a:?}"
    );
    assert_eq!(a.debited, 0, "debited without a PSD: {a:?}");
    dc.stop().await;
    post.stop().await;
    h.stop().await;
}
