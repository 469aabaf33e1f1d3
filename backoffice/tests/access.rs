//! The authorization matrix (issue 11): every route of every service, called by every kind
//! of caller — nobody, a customer, another customer, each service identity, the operator —
//! gets the answer its access list says, and a refusal changes no byte of any database.
//! Then the scenarios of the issue, as the attacks they were: another customer's account,
//! device or refill; deposits and settlements from the wrong identity; receipts from
//! anyone but the meter.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{expect_refused, parties, Client, Psd};
use openpsd_kms::Kms;
use openpsd_meter::Meter;
use openpsd_post::PostOffice;
use openpsd_protocol::{Account, Deposit, ReceiptRequest, RefillView, Settle};
use openpsd_recharge::Recharge;
use openpsd_service_kit::access::{Rule, Who};
use openpsd_service_kit::tls::Role;

/// Every file of the data directory's databases, by name.
fn databases(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for service in ["meter", "kms", "recharge", "post", "pa", "vendor", "ca"] {
        let Ok(entries) = std::fs::read_dir(dir.join(service)) else {
            continue;
        };
        for entry in entries {
            let p = entry.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if name.contains(".sqlite") {
                out.insert(format!("{service}/{name}"), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// Who calls: a name, the certificate, the bearer token.
struct Caller {
    name: &'static str,
    role: Option<Role>,
    customer: Option<&'static str>,
}

const CALLERS: [Caller; 15] = [
    Caller {
        name: "nobody",
        role: None,
        customer: None,
    },
    Caller {
        name: "customer",
        role: None,
        customer: Some("alice"),
    },
    Caller {
        name: "other customer",
        role: None,
        customer: Some("bob"),
    },
    Caller {
        name: "meter",
        role: Some(Role::Meter),
        customer: None,
    },
    Caller {
        name: "kms",
        role: Some(Role::Kms),
        customer: None,
    },
    Caller {
        name: "recharge",
        role: Some(Role::Recharge),
        customer: None,
    },
    Caller {
        name: "operator",
        role: Some(Role::Operator),
        customer: None,
    },
    Caller {
        name: "post",
        role: Some(Role::Post),
        customer: None,
    },
    Caller {
        name: "vendor",
        role: Some(Role::Vendor),
        customer: None,
    },
    Caller {
        name: "pa",
        role: Some(Role::Pa),
        customer: None,
    },
    Caller {
        name: "ca",
        role: Some(Role::Ca),
        customer: None,
    },
    Caller {
        name: "creditor",
        role: Some(Role::Creditor),
        customer: None,
    },
    // The role's plain certificate, naming no merchant: the settlement route lets it past
    // the access check and refuses it itself (403) only after reading the body, so the
    // empty body of this walk answers 400.
    Caller {
        name: "merchant",
        role: Some(Role::Merchant),
        customer: None,
    },
    Caller {
        name: "datacenter",
        role: Some(Role::Datacenter),
        customer: None,
    },
    // The box's certificate is for serving only: no TLS session as a client (status 0),
    // even where any role may call.
    Caller {
        name: "box",
        role: Some(Role::Box),
        customer: None,
    },
];

fn allowed(rule: &Rule, c: &Caller) -> bool {
    rule.who.iter().any(|w| match w {
        Who::Anyone => true,
        Who::Role(r) => c.role == Some(*r),
        Who::AnyRole => c.role.is_some(),
        Who::Customer => c.customer.is_some(),
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn every_route_times_every_caller() {
    let dir = tempfile::tempdir().unwrap();
    let h = openpsd_backoffice::spawn_all(dir.path()).await.unwrap();
    let (host, admin) = parties(&h.meter.url, &h.kms.url, &h.recharge.url, &h.pki);
    let mut psd = Psd::new(1, 0, &h.kms_public_key);
    admin.register_to(&psd, "alice").await;
    admin.fund("alice", 10_000).await;
    admin.fund("bob", 10_000).await;
    let v = host
        .request("t1", &psd.device_id(), 0, "alice", 100)
        .await
        .unwrap();
    let audit = psd.audit(0, &v.nonce);
    host.audit("t1", &audit).await.unwrap();
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

    // The license services (seed 003) run with the others.
    let (pa, vendor) = (&h.pa, &h.vendor);
    // The virtual meter's data center (seed 001): its customers are mailers with its own
    // sessions; "alice" and "bob" sign up there too.
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
    let mut mailers = std::collections::HashMap::new();
    for name in ["alice", "bob"] {
        let s: openpsd_protocol::datacenter::MailerSession = Client::new(&dc.url, &h.pki, None)
            .post(
                "/v1/mailers",
                &openpsd_protocol::datacenter::MailerCredentials {
                    username: name.into(),
                    password: format!("{name}-long-password"),
                },
            )
            .await
            .unwrap();
        mailers.insert(name, s.token);
    }

    let services: [(&str, &str, Vec<Rule>); 10] = [
        ("meter", &h.meter.url, Meter::routes(100).rules().to_vec()),
        ("kms", &h.kms.url, Kms::routes().rules().to_vec()),
        (
            "recharge",
            &h.recharge.url,
            Recharge::routes().rules().to_vec(),
        ),
        ("post", &post.url, PostOffice::routes().rules().to_vec()),
        ("pa", &pa.url, openpsd_pa::Pa::routes().rules().to_vec()),
        (
            "vendor",
            &vendor.url,
            openpsd_vendor::Vendor::routes().rules().to_vec(),
        ),
        ("ca", &h.ca.url, openpsd_ca::Ca::routes().rules().to_vec()),
        (
            "creditor",
            &h.creditor.url,
            openpsd_creditor::Creditor::routes().rules().to_vec(),
        ),
        (
            "datacenter",
            &dc.url,
            openpsd_datacenter::Datacenter::routes(100).rules().to_vec(),
        ),
        // The CA's public listener: plain HTTP, so no caller's certificate reaches it, and
        // every route is for anyone.
        (
            "ca-public",
            &h.ca_public.url,
            openpsd_ca::Ca::public_routes().rules().to_vec(),
        ),
    ];
    let mut tried = 0;
    for (service, base, rules) in &services {
        // Log-out (allowed for customers) ends their sessions: try it last.
        let mut rules = rules.clone();
        rules.sort_by_key(|r| r.path == "/v1/sessions/current");
        for rule in &rules {
            let path = rule
                .path
                .replace("{client_txn_id}", "t1")
                .replace("{device_id}", &psd.device_id())
                .replace("{account_id}", &alice)
                .replace("{combination_id}", "0000000000000000")
                .replace("{inspection_id}", "nothing")
                .replace("{key_id}", "key-nothing")
                .replace("{serial}", "01");
            for caller in &CALLERS {
                let mut client = Client::new(base, &h.pki, caller.role);
                if let Some(name) = caller.customer {
                    let token = if *service == "datacenter" {
                        mailers[name].clone()
                    } else {
                        host.customers.get(name).1
                    };
                    client = client.with_bearer(&token);
                }
                let before = databases(dir.path());
                let status = client.status(&rule.method, &path).await;
                tried += 1;
                let what = format!("{} {} {path} as {}", service, rule.method, caller.name);
                if caller.role == Some(Role::Box) && base.starts_with("https:") {
                    assert_eq!(status, 0, "{what}: no session with a server's certificate");
                    continue;
                }
                if allowed(rule, caller) {
                    assert!(
                        ![0, 401, 403].contains(&status),
                        "{what}: allowed, answered {status}"
                    );
                    continue;
                }
                // KMS and RC take only callers with a certificate: without one, there is
                // no TLS session at all (status 0).
                // (The meter and the data center serve customers, who have none.)
                let no_certificate =
                    caller.role.is_none() && !["meter", "datacenter"].contains(service);
                let expected = if no_certificate {
                    0
                } else if caller.role.is_none() && caller.customer.is_none() {
                    401
                } else {
                    403
                };
                assert_eq!(status, expected, "{what}");
                assert!(
                    databases(dir.path()) == before,
                    "{what}: a database changed"
                );
            }
        }
    }
    assert!(tried > 100, "{tried} calls");
    dc.stop().await;
    post.stop().await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn another_customers_account_refill_and_device_are_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let h = openpsd_backoffice::spawn_all(dir.path()).await.unwrap();
    let (host, admin) = parties(&h.meter.url, &h.kms.url, &h.recharge.url, &h.pki);
    let mut psd = Psd::new(2, 0, &h.kms_public_key);
    admin.register_to(&psd, "alice").await;
    admin.fund("alice", 10_000).await;
    admin.fund("bob", 10_000).await;
    let v = host
        .request("t1", &psd.device_id(), 0, "alice", 1_000)
        .await
        .unwrap();
    let bob = host.as_customer("bob");
    let alice_account = host.customers.account("alice");

    // `openpsd refill --account <alice's>` by bob: not found, nothing held.
    let e = expect_refused(
        bob.post::<_, RefillView>(
            "/v1/refills",
            &openpsd_protocol::RefillRequest {
                client_txn_id: "bob-1".into(),
                device_id: psd.device_id(),
                set: 0,
                account_id: Some(alice_account.clone()),
                amount: 1_000,
            },
        )
        .await,
        404,
        "unknown_account",
    );
    assert!(!e.message.contains("alice"), "{e:?}");
    // Alice's refill by its transaction ID: not found for bob (no account, no amount).
    expect_refused(
        bob.get::<RefillView>("/v1/refills/t1").await,
        404,
        "unknown_refill",
    );
    let audit = psd.audit(0, &v.nonce);
    expect_refused(
        bob.post::<_, RefillView>(
            "/v1/refills/t1/audit",
            &serde_json::json!({ "audit": audit }),
        )
        .await,
        404,
        "unknown_refill",
    );
    // Alice goes on as if nothing happened.
    let v = host.audit("t1", &audit).await.unwrap();
    host.apply_and_confirm(&mut psd, &v).await.unwrap();
    let l = admin.assert_reconciled(&mut [&mut psd]).await;
    assert_eq!((l.debited, l.held), (1_000, 0));
    assert_eq!(admin.account("bob").await.available, 10_000);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deposits_settlements_and_receipts_only_from_their_identity() {
    let dir = tempfile::tempdir().unwrap();
    let h = openpsd_backoffice::spawn_all(dir.path()).await.unwrap();
    let (host, admin) = parties(&h.meter.url, &h.kms.url, &h.recharge.url, &h.pki);
    let mut psd = Psd::new(3, 0, &h.kms_public_key);
    admin.register_to(&psd, "alice").await;
    admin.fund("alice", 10_000).await;
    let alice = host.customers.account("alice");
    let before = databases(dir.path());

    // A deposit of 1,000,000.00 with no payment, by the meter's certificate: refused.
    let meter_rc = admin.as_meter(&admin.rc);
    expect_refused(
        meter_rc
            .post::<_, Account>(
                &format!("/v1/accounts/{alice}/deposits"),
                &Deposit {
                    amount: 100_000_000,
                    reference: "free money".into(),
                },
            )
            .await,
        403,
        "forbidden",
    );
    // And by a customer (no certificate): no TLS session with the RC at all.
    let customer_rc =
        Client::new(&h.recharge.url, &h.pki, None).with_bearer(&host.customers.get("alice").1);
    let e = customer_rc
        .post::<_, Account>(
            &format!("/v1/accounts/{alice}/deposits"),
            &Deposit {
                amount: 100_000_000,
                reference: "free money".into(),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.status, 0, "{e:?}");
    assert!(databases(dir.path()) == before, "nothing booked");

    // The meter issues a refill message; releasing its hold by hand (the operator) is
    // refused: only the meter settles.
    let v = host
        .request("t1", &psd.device_id(), 0, "alice", 1_000)
        .await
        .unwrap();
    let audit = psd.audit(0, &v.nonce);
    let v = host.audit("t1", &audit).await.unwrap();
    let cid = v.combination_id.clone().unwrap();
    expect_refused(
        admin
            .rc
            .post::<_, serde_json::Value>(
                &format!("/v1/combinations/{cid}/settle"),
                &Settle {
                    outcome: openpsd_protocol::Outcome::Released,
                },
            )
            .await,
        403,
        "forbidden",
    );
    // A receipt for any audit and any date, asked of the KMS by the operator: refused.
    expect_refused(
        admin
            .kms
            .post::<_, serde_json::Value>(
                "/v1/receipts",
                &ReceiptRequest {
                    audit,
                    accepted_on: "2099-12-31".into(),
                },
            )
            .await,
        403,
        "forbidden",
    );
    host.apply_and_confirm(&mut psd, &v).await.unwrap();
    let l = admin.assert_reconciled(&mut [&mut psd]).await;
    assert_eq!((l.debited, l.held, l.deposited), (1_000, 0, 10_000));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn api_keys_are_revoked_by_their_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let h = openpsd_backoffice::spawn_all(dir.path()).await.unwrap();
    let (host, admin) = parties(&h.meter.url, &h.kms.url, &h.recharge.url, &h.pki);
    admin.fund("alice", 1_000).await;
    admin.fund("bob", 1_000).await;
    let alice = host.as_customer("alice");
    let key: openpsd_protocol::ApiKey = alice
        .post(
            "/v1/api-keys",
            &openpsd_protocol::NewApiKey {
                label: "mail room".into(),
            },
        )
        .await
        .unwrap();
    let machine = Client::new(&h.meter.url, &h.pki, None).with_bearer(&key.key);
    let me: openpsd_protocol::Me = machine.get("/v1/me").await.unwrap();
    assert_eq!(me.customer.username, "alice");
    let path = format!("/v1/api-keys/{}", key.key_id);
    // Not by another key, not by another customer.
    assert_eq!(machine.status(&reqwest::Method::DELETE, &path).await, 403);
    assert_eq!(
        host.as_customer("bob")
            .status(&reqwest::Method::DELETE, &path)
            .await,
        404
    );
    assert!(machine.get::<openpsd_protocol::Me>("/v1/me").await.is_ok());
    // By alice, logged in: the key stops working at once (its cache entry dropped too).
    assert_eq!(alice.status(&reqwest::Method::DELETE, &path).await, 204);
    let e = machine
        .get::<openpsd_protocol::Me>("/v1/me")
        .await
        .unwrap_err();
    assert_eq!((e.status, e.code.as_str()), (401, "unauthenticated"));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sign_up_and_log_in_are_limited_per_address_whatever_token_comes_with_them() {
    let dir = tempfile::tempdir().unwrap();
    let h = openpsd_backoffice::spawn_all(dir.path()).await.unwrap();
    let (host, admin) = parties(&h.meter.url, &h.kms.url, &h.recharge.url, &h.pki);
    admin.fund("alice", 1_000).await;
    // A customer's token does not buy a bucket of its own: the address's runs out.
    let alice = host.as_customer("alice");
    let mut statuses = Vec::new();
    for _ in 0..40 {
        statuses.push(alice.status(&reqwest::Method::POST, "/v1/sessions").await);
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    // Malformed tokens are refused before any lookup.
    let junk = Client::new(&h.meter.url, &h.pki, None).with_bearer("x");
    assert_eq!(junk.status(&reqwest::Method::GET, "/v1/me").await, 401);
    h.stop().await;
}
