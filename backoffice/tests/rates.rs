//! Rate tables and trust anchors (seed 004, step 257 and claim 12; `docs/rates.md`): an
//! operator publishes them at the vendor, which signs them with the key PSDs carry as
//! `vendor_public_key`, and the meter server hands them to the device's owner at contact.
//! The whole back office runs as in production (mutual TLS between services); the signed
//! bytes are checked with core's `RateTable::open` and `Anchor::open`, the card's own
//! checks.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use common::{expect_refused, parties, Client, Psd};
use openpsd_backoffice::server::Handles;
use openpsd_core::crypto::IndiciumKey;
use openpsd_core::psd::certmeter::anchor::{Anchor, AnchorKind};
use openpsd_core::psd::certmeter::rates::{RateTable, Service};
use openpsd_core::types::RegisterSetIndex;
use openpsd_core::types::{Amount, Date};
use openpsd_core::wire::OpenError;
use openpsd_host::refill::{MeterClient, RefillRequest};
use openpsd_protocol::vendor::{
    AnchorRequest, AnchorView, Anchors, DeviceUpdates, RatePublication, RateTableView, RateTables,
};
use openpsd_service_kit::codec::OsRandom;
use openpsd_service_kit::tls::Role;
use reqwest::Method;

fn publication(version: Option<u32>, effective: &str, fees: &[(&str, u64)]) -> RatePublication {
    RatePublication {
        version,
        effective: effective.to_owned(),
        fees: fees
            .iter()
            .map(|(n, f)| ((*n).to_owned(), *f))
            .collect::<BTreeMap<_, _>>(),
    }
}

fn bytes(hex_text: &str) -> Vec<u8> {
    hex::decode(hex_text).unwrap()
}

/// The vendor with the operator's certificate.
fn operator(h: &Handles) -> Client {
    Client::new(&h.vendor.url, &h.pki, Some(Role::Operator))
}

/// POSTs and returns the status with the decoded answer.
async fn post_status<T: serde::de::DeserializeOwned>(
    c: &Client,
    path: &str,
    body: &impl serde::Serialize,
) -> (u16, T) {
    let (status, body) = c.post_bytes(path, body).await.unwrap();
    let value = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{status} {e}: {}", String::from_utf8_lossy(&body)));
    (status, value)
}

#[tokio::test(flavor = "multi_thread")]
async fn published_tables_come_back_signed_and_versions_rise() {
    let dir = tempfile::tempdir().unwrap();
    let h = openpsd_backoffice::spawn_all(dir.path()).await.unwrap();
    let op = operator(&h);
    let vendor_pk = h.vendor_public_key;

    let (status, t1): (u16, RateTableView) = post_status(
        &op,
        "/v1/rates",
        &publication(
            None,
            "2020-01-01",
            &[("postmark", 10), ("certificate", 500)],
        ),
    )
    .await;
    assert_eq!((status, t1.version), (201, 1));
    let opened = RateTable::open(&bytes(&t1.table), &vendor_pk).unwrap();
    assert_eq!(
        opened,
        RateTable {
            version: 1,
            effective: Date::new(2020, 1, 1).unwrap(),
            // Ascending by code, whatever order the JSON named them in.
            fees: vec![
                (Service::Postmark, Amount(10)),
                (Service::Certificate, Amount(500)),
            ],
        }
    );
    let stranger = IndiciumKey::generate(&mut OsRandom).public_key();
    assert_eq!(
        RateTable::open(&bytes(&t1.table), &stranger),
        Err(OpenError::Unauthentic)
    );

    let t2: RateTableView = op
        .post(
            "/v1/rates",
            &publication(
                None,
                "2020-06-01",
                &[("postmark", 12), ("agent_certificate", 0)],
            ),
        )
        .await
        .unwrap();
    let t3: RateTableView = op
        .post(
            "/v1/rates",
            &publication(Some(3), "2099-01-01", &[("postmark", 15)]),
        )
        .await
        .unwrap();
    assert_eq!((t2.version, t3.version), (2, 3));
    assert_eq!(t2.fees["agent_certificate"], 0);
    assert_eq!(
        RateTable::open(&bytes(&t2.table), &vendor_pk)
            .unwrap()
            .fee(Service::AgentCertificate),
        Some(Amount(0))
    );

    // What a PSD should hold now: the table in effect today (2, which superseded 1) and
    // the later one.
    let list: RateTables = op.get("/v1/rates").await.unwrap();
    let got: Vec<(u32, bool)> = list
        .tables
        .iter()
        .map(|t| (t.version, t.in_effect))
        .collect();
    assert_eq!(got, [(2, true), (3, false)]);
    for t in &list.tables {
        assert_eq!(
            RateTable::open(&bytes(&t.table), &vendor_pk)
                .unwrap()
                .version,
            t.version
        );
    }
    // The meter reads them too.
    let as_meter = Client::new(&h.vendor.url, &h.pki, Some(Role::Meter));
    assert_eq!(as_meter.get::<RateTables>("/v1/rates").await.unwrap(), list);

    // A retry under its version answers the stored table; other fields under it, or a
    // version that is not the next one, are refused.
    let (status, again): (u16, RateTableView) = post_status(
        &op,
        "/v1/rates",
        &publication(Some(3), "2099-01-01", &[("postmark", 15)]),
    )
    .await;
    assert_eq!((status, again.table.as_str()), (200, t3.table.as_str()));
    expect_refused(
        op.post::<_, RateTableView>(
            "/v1/rates",
            &publication(Some(3), "2099-01-01", &[("postmark", 16)]),
        )
        .await,
        409,
        "rate_version_taken",
    );
    expect_refused(
        op.post::<_, RateTableView>(
            "/v1/rates",
            &publication(Some(9), "2099-01-01", &[("postmark", 16)]),
        )
        .await,
        409,
        "rate_version_taken",
    );
    let t4: RateTableView = op
        .post(
            "/v1/rates",
            &publication(None, "2099-01-01", &[("postmark", 16)]),
        )
        .await
        .unwrap();
    assert_eq!(t4.version, 4);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_effective_date_going_back_and_bad_input_are_refused_with_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    let h = openpsd_backoffice::spawn_all(dir.path()).await.unwrap();
    let op = operator(&h);
    let _: RateTableView = op
        .post(
            "/v1/rates",
            &publication(None, "2030-01-01", &[("postmark", 10)]),
        )
        .await
        .unwrap();
    let before: RateTables = op.get("/v1/rates").await.unwrap();

    let e = expect_refused(
        op.post::<_, RateTableView>(
            "/v1/rates",
            &publication(None, "2029-12-31", &[("postmark", 5)]),
        )
        .await,
        409,
        "effective_date_backwards",
    );
    assert!(e.message.contains("2030-01-01"), "{e:?}");
    for (body, what) in [
        (
            serde_json::json!({"effective": "2030-02-30", "fees": {"postmark": 1}}),
            "effective",
        ),
        (
            serde_json::json!({"effective": "2030-02-01", "fees": {"stamp": 1}}),
            "no service 'stamp'",
        ),
        (
            serde_json::json!({"effective": "2030-02-01", "fees": {}}),
            "fees",
        ),
        (
            serde_json::json!({"effective": "2030-02-01", "fees": {"postmark": -1}}),
            "request body",
        ),
        (serde_json::json!({"fees": {"postmark": 1}}), "request body"),
    ] {
        let e = expect_refused(
            op.post::<_, RateTableView>("/v1/rates", &body).await,
            400,
            "bad_request",
        );
        assert!(e.message.contains(what), "{body}: {e:?}");
    }
    assert_eq!(op.get::<RateTables>("/v1/rates").await.unwrap(), before);
    // The same date as the last table's is allowed (a correction taking over that day).
    let t: RateTableView = op
        .post(
            "/v1/rates",
            &publication(None, "2030-01-01", &[("postmark", 11)]),
        )
        .await
        .unwrap();
    assert_eq!(t.version, 2);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_operator_publishes_and_signs() {
    let dir = tempfile::tempdir().unwrap();
    let h = openpsd_backoffice::spawn_all(dir.path()).await.unwrap();
    let (_, admin) = parties(&h.meter.url, &h.kms.url, &h.recharge.url, &h.pki);
    let token = {
        admin.ensure_customer("alice").await;
        admin.customers.get("alice").1
    };
    for role in [Role::Meter, Role::Post, Role::Kms, Role::Pa, Role::Vendor] {
        let c = Client::new(&h.vendor.url, &h.pki, Some(role));
        for path in ["/v1/rates", "/v1/anchors"] {
            assert_eq!(
                c.status(&Method::POST, path).await,
                403,
                "POST {path} as {role:?}"
            );
        }
        let read = c.status(&Method::GET, "/v1/rates").await;
        assert_eq!(
            read,
            if role == Role::Meter { 200 } else { 403 },
            "{role:?}"
        );
    }
    // A customer has no certificate: the vendor takes no TLS session from them at all.
    let customer = Client::new(&h.vendor.url, &h.pki, None).with_bearer(&token);
    assert_eq!(customer.status(&Method::POST, "/v1/rates").await, 0);
    assert_eq!(
        operator(&h).get::<RateTables>("/v1/rates").await.unwrap(),
        RateTables::default()
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_anchor_opens_under_the_vendor_key_and_names_the_ca_key() {
    let dir = tempfile::tempdir().unwrap();
    let h = openpsd_backoffice::spawn_all(dir.path()).await.unwrap();
    let op = operator(&h);
    let ca = IndiciumKey::generate(&mut OsRandom).public_key();
    let ask = |kind: &str, key: &[u8]| AnchorRequest {
        kind: kind.to_owned(),
        public_key: hex::encode(key),
    };

    let (status, a1): (u16, AnchorView) = post_status(&op, "/v1/anchors", &ask("ca", &ca)).await;
    assert_eq!((status, a1.version), (201, 1));
    let opened = Anchor::open(&bytes(&a1.anchor), &h.vendor_public_key).unwrap();
    assert_eq!(
        opened,
        Anchor {
            kind: AnchorKind::CertificateCa,
            version: 1,
            public_key: ca,
        }
    );
    assert_eq!(
        Anchor::open(&bytes(&a1.anchor), &ca),
        Err(OpenError::Unauthentic)
    );
    // The same key again: the same anchor, no new version.
    let (status, same): (u16, AnchorView) = post_status(&op, "/v1/anchors", &ask("ca", &ca)).await;
    assert_eq!((status, same), (200, a1.clone()));

    // The PA's CA certificate read by `backoffice vendor trust --cert`: the key in it.
    let pem = std::fs::read(dir.path().join("pa").join(openpsd_pa::CA_FILE)).unwrap();
    let pa_key = openpsd_vendor::rates::certificate_key(&pem).unwrap();
    assert_eq!(pa_key, h.postal_authority.public_key);
    // A service's certificate (not a CA's) is refused: PSDs must not trust its key.
    let service = std::fs::read(dir.path().join("pki").join("meter.crt")).unwrap();
    let err = openpsd_vendor::rates::certificate_key(&service).unwrap_err();
    assert!(err.to_string().contains("not a CA certificate"), "{err}");
    let a2: AnchorView = op.post("/v1/anchors", &ask("ca", &pa_key)).await.unwrap();
    assert_eq!(a2.version, 2);
    let creditor = IndiciumKey::generate(&mut OsRandom).public_key();
    let c1: AnchorView = op
        .post("/v1/anchors", &ask("creditor", &creditor))
        .await
        .unwrap();
    assert_eq!(
        Anchor::open(&bytes(&c1.anchor), &h.vendor_public_key)
            .unwrap()
            .kind,
        AnchorKind::Creditor
    );
    assert_eq!(c1.version, 1);
    let newest: Anchors = op.get("/v1/anchors").await.unwrap();
    assert_eq!(newest.anchors, [a2, c1]);

    // Not a point, not a kind, not a certificate: refused, nothing signed.
    let mut off_curve = ca;
    off_curve[64] ^= 1;
    for body in [
        ask("ca", &off_curve),
        ask("ca", &ca[..64]),
        ask("root", &ca),
    ] {
        expect_refused(
            op.post::<_, AnchorView>("/v1/anchors", &body).await,
            400,
            "bad_request",
        );
    }
    assert!(openpsd_vendor::rates::certificate_key(b"not a certificate").is_err());
    assert_eq!(op.get::<Anchors>("/v1/anchors").await.unwrap(), newest);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_meter_gives_updates_to_the_devices_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let h = openpsd_backoffice::spawn_all(dir.path()).await.unwrap();
    let (host, admin) = parties(&h.meter.url, &h.kms.url, &h.recharge.url, &h.pki);
    let psd = Psd::new(41, 0, &h.kms_public_key);
    admin.register_to(&psd, "alice").await;
    admin.ensure_customer("bob").await;
    let op = operator(&h);
    let _: RateTableView = op
        .post(
            "/v1/rates",
            &publication(None, "2020-01-01", &[("postmark", 10)]),
        )
        .await
        .unwrap();
    let _: RateTableView = op
        .post(
            "/v1/rates",
            &publication(None, "2099-01-01", &[("postmark", 20)]),
        )
        .await
        .unwrap();
    let ca = IndiciumKey::generate(&mut OsRandom).public_key();
    let _: AnchorView = op
        .post(
            "/v1/anchors",
            &AnchorRequest {
                kind: "ca".into(),
                public_key: hex::encode(ca),
            },
        )
        .await
        .unwrap();

    let path = format!("/v1/devices/{}/updates", psd.device_id());
    // The meter's cache (10 s) is filled by the first request below.
    let cached_at = std::time::Instant::now();
    let alice = host.as_customer("alice");
    let u: DeviceUpdates = alice.get(&path).await.unwrap();
    let rates: RateTables = op.get("/v1/rates").await.unwrap();
    let anchors: Anchors = op.get("/v1/anchors").await.unwrap();
    assert_eq!(
        u.rate_tables,
        rates
            .tables
            .iter()
            .map(|t| t.table.clone())
            .collect::<Vec<_>>()
    );
    assert_eq!(u.anchors, [anchors.anchors[0].anchor.clone()]);
    let versions: Vec<u32> = u
        .rate_tables
        .iter()
        .map(|t| {
            RateTable::open(&bytes(t), &h.vendor_public_key)
                .unwrap()
                .version
        })
        .collect();
    assert_eq!(versions, [1, 2]);
    assert_eq!(
        Anchor::open(&bytes(&u.anchors[0]), &h.vendor_public_key)
            .unwrap()
            .public_key,
        ca
    );
    // The lower-case device ID is the same device.
    let lower = format!(
        "/v1/devices/{}/updates",
        psd.device_id().to_ascii_lowercase()
    );
    assert_eq!(alice.get::<DeviceUpdates>(&lower).await.unwrap(), u);

    // Another customer's device, an unknown one, a malformed ID.
    expect_refused(
        host.as_customer("bob").get::<DeviceUpdates>(&path).await,
        404,
        "unknown_device",
    );
    expect_refused(
        alice
            .get::<DeviceUpdates>("/v1/devices/0000000000000001/updates")
            .await,
        404,
        "unknown_device",
    );
    expect_refused(
        alice
            .get::<DeviceUpdates>("/v1/devices/nothing/updates")
            .await,
        400,
        "bad_request",
    );
    // An operator is not the device's owner: the route is the customer's.
    expect_refused(
        admin.meter.get::<DeviceUpdates>(&path).await,
        403,
        "forbidden",
    );

    // Within ten seconds the meter answers from its cache: a table published meanwhile
    // reaches hosts at their next contact after that.
    let _: RateTableView = op
        .post(
            "/v1/rates",
            &publication(None, "2099-02-01", &[("postmark", 30)]),
        )
        .await
        .unwrap();
    let again = alice.get::<DeviceUpdates>(&path).await.unwrap();
    // On a machine so loaded that ten seconds passed, the cache has expired and the new
    // table is there: the other half of the rule.
    if cached_at.elapsed() < std::time::Duration::from_secs(9) {
        assert_eq!(again, u);
    } else {
        assert_eq!(again.rate_tables.len(), u.rate_tables.len() + 1);
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_vendor_down_is_503_at_the_meter() {
    let dir = tempfile::tempdir().unwrap();
    let h = openpsd_backoffice::spawn_all(dir.path()).await.unwrap();
    let (host, admin) = parties(&h.meter.url, &h.kms.url, &h.recharge.url, &h.pki);
    let psd = Psd::new(42, 0, &h.kms_public_key);
    admin.register_to(&psd, "alice").await;
    let Handles {
        meter,
        kms,
        recharge,
        pa,
        vendor,
        ..
    } = h;
    vendor.stop().await;
    expect_refused(
        host.as_customer("alice")
            .get::<DeviceUpdates>(&format!("/v1/devices/{}/updates", psd.device_id()))
            .await,
        503,
        "service_unavailable",
    );
    meter.stop().await;
    pa.stop().await;
    kms.stop().await;
    recharge.stop().await;
}

/// `backoffice vendor rates publish|list` and `backoffice vendor trust|anchors`, the
/// binary as an operator runs it.
#[tokio::test(flavor = "multi_thread")]
async fn the_operator_cli_publishes_lists_and_trusts() {
    let dir = tempfile::tempdir().unwrap();
    let h = openpsd_backoffice::spawn_all(dir.path()).await.unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_backoffice"))
            .arg("vendor")
            .args(["--vendor", &h.vendor.url])
            .arg("--pki")
            .arg(h.pki.dir())
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = run(&[
        "rates",
        "publish",
        "--effective",
        "2020-01-01",
        "--fee",
        "postmark=0.10",
        "--fee",
        "certificate=5",
        "--json",
    ]);
    assert!(ok, "{err}");
    let t: RateTableView = serde_json::from_str(&out).unwrap();
    assert_eq!(t.fees["postmark"], 10);
    assert_eq!(t.fees["certificate"], 500);
    RateTable::open(&bytes(&t.table), &h.vendor_public_key).unwrap();

    let (ok, out, err) = run(&["rates", "list"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("rate table 1 effective 2020-01-01 (in effect)"),
        "{out}"
    );
    assert!(out.contains("5.00"), "{out}");

    for bad in [
        vec![
            "rates",
            "publish",
            "--effective",
            "2020-01-01",
            "--fee",
            "stamp=1",
        ],
        vec![
            "rates",
            "publish",
            "--effective",
            "2020-01-01",
            "--fee",
            "postmark=0.001",
        ],
        vec![
            "rates",
            "publish",
            "--effective",
            "2019-01-01",
            "--fee",
            "postmark=1",
        ],
    ] {
        let (ok, _, err) = run(&bad);
        assert!(!ok, "{bad:?} succeeded");
        assert!(!err.is_empty(), "{bad:?}: no message");
    }

    let pa_ca = dir.path().join("pa").join(openpsd_pa::CA_FILE);
    let (ok, out, err) = run(&[
        "trust",
        "--kind",
        "ca",
        "--cert",
        pa_ca.to_str().unwrap(),
        "--json",
    ]);
    assert!(ok, "{err}");
    let a: AnchorView = serde_json::from_str(&out).unwrap();
    let anchor = Anchor::open(&bytes(&a.anchor), &h.vendor_public_key).unwrap();
    assert_eq!(anchor.public_key, h.postal_authority.public_key);
    let (ok, out, err) = run(&["anchors"]);
    assert!(ok, "{err}");
    assert!(out.contains(&hex::encode(anchor.public_key)), "{out}");
    h.stop().await;
}

/// Seed 004, step 257, against a host that withholds a newer table: the PSD's audit
/// (version 5) says which table it holds, and the meter refuses the refill's audit and the
/// inspection of a PSD holding an older table than the vendor's in effect (`409
/// rate_table_stale`), holding nothing and recording nothing; once the PSD holds the table
/// in effect (a later, not yet effective table is not required) the same refill goes on.
#[tokio::test(flavor = "multi_thread")]
async fn a_psd_withheld_a_newer_table_is_refused_until_it_holds_the_one_in_effect() {
    let dir = tempfile::tempdir().unwrap();
    let h = openpsd_backoffice::spawn_all(dir.path()).await.unwrap();
    let (host, admin) = parties(&h.meter.url, &h.kms.url, &h.recharge.url, &h.pki);
    let mut psd = Psd::licensed(43, &h);
    admin.register_to(&psd, "alice").await;
    admin.fund("alice", 50_000).await;
    let op = operator(&h);
    let mut tables = Vec::new();
    for (effective, fee) in [("2020-01-01", 10), ("2021-01-01", 25), ("2099-01-01", 40)] {
        let t: RateTableView = op
            .post(
                "/v1/rates",
                &publication(None, effective, &[("postmark", fee)]),
            )
            .await
            .unwrap();
        tables.push(bytes(&t.table));
    }
    // The PSD holds table 1 only: its host never loaded table 2, in effect since 2021.
    assert_eq!(psd.client.load_rate_table(&tables[0]).unwrap(), 1);
    // Nor can it skip table 2 by loading table 3 (of 2099), which the audit would report:
    // the PSD takes the next version only.
    let skipped = psd.client.load_rate_table(&tables[2]).unwrap_err();
    assert_eq!(
        skipped.status(),
        Some(openpsd_core::Status::ConditionsNotSatisfied),
        "{skipped}"
    );

    let before = admin.account("alice").await;
    let v = host
        .request("stale-1", &psd.device_id(), 0, "alice", 1_000)
        .await
        .unwrap();
    let audit = psd.audit(0, &v.nonce);
    assert_eq!(
        &audit[2..4],
        "05",
        "a PSD holding a table audits as version 5"
    );
    let refused = expect_refused(host.audit("stale-1", &audit).await, 409, "rate_table_stale");
    assert!(refused.message.contains("version 1") && refused.message.contains("version 2"));
    // Nothing held, the refill still waits for an audit, the PSD unchanged.
    let after = admin.account("alice").await;
    assert_eq!(
        (after.available, after.held),
        (before.available, before.held)
    );
    assert_eq!(
        host.status("stale-1").await.unwrap().state,
        openpsd_protocol::RefillState::AwaitingAudit
    );
    let dr = psd.registers(0).dr;
    // An inspection is refused the same way (the PSD's inspection is not renewed).
    expect_refused(host.inspect(&mut psd, 0).await, 409, "rate_table_stale");

    // The same refill as `openpsd refill` runs it (the host library): the meter's updates
    // loaded before the audit (tables 2 and 3), and the refill goes on.
    let ca_pem = h.pki.ca_cert();
    let token = host.customers.get("alice").1;
    let device = psd.client.info().unwrap().expect("personalized").device;
    let meter_url = h.meter.url.clone();
    let (out, lines) = tokio::task::block_in_place(|| {
        let meter = MeterClient::new(&meter_url, Some(&ca_pem), Some(&token)).unwrap();
        let mut lines = Vec::new();
        let out = meter
            .refill(
                &mut psd.client,
                device,
                &RefillRequest {
                    client_txn_id: "stale-1".into(),
                    account_id: None,
                    set: RegisterSetIndex(0),
                    amount: Amount(1_000),
                },
                &mut |l| lines.push(l.to_owned()),
            )
            .unwrap();
        (out, lines)
    });
    assert!(
        lines.iter().any(|l| l.contains("loaded 2 rate table(s)")),
        "{lines:?}"
    );
    assert_eq!(out.registers.dr.0, dr.0 + 1_000);
    let held = psd.client.certmeter_info().unwrap();
    let versions: Vec<u32> = held.tables.iter().map(|(t, _)| t.version).collect();
    assert_eq!(
        versions,
        [2, 3],
        "table 1 dropped once table 2 is in effect"
    );
    // Holding the table in effect is enough: an inspection passes.
    host.inspect(&mut psd, 0).await.unwrap();
    admin.assert_reconciled(&mut [&mut psd]).await;
    h.stop().await;
}
