//! `kill -9` of the creditor in the middle of a line's issuance and of a settlement (seed
//! 004 Figs. 8-9, `docs/creditor.md`), then a restart on the same data directory and at the
//! same address:
//! - killed after the line was signed and before its commit: nothing stored; the meter's
//!   same request issues it;
//! - killed after the commit and before the answer: the same request answers the stored
//!   line (one row for the request);
//! - killed before a settlement's commit: nothing settled; the same presentment settles it
//!   once;
//! - killed after the commit: the same presentment answers the stored record; the book
//!   holds the payment once (`drawn` = Σ settled amounts), and the next payment settles.
//!
//! The creditor runs as its own `backoffice serve --role creditor` child process; the other
//! services (the KMS it reads device keys at, the vendor that vouches for its key, the meter
//! the PSD is refilled at) run in process. The test calls the creditor as the meter (the
//! meter's certificate) and as a merchant, with a real PSD's attestation and payments.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/proc.rs"]
mod proc;

use common::{parties, Client, Psd};
use openpsd_backoffice::server::spawn_all;
use openpsd_core::psd::certmeter::attestation::Purpose;
use openpsd_core::psd::certmeter::credit::PayRequest;
use openpsd_core::types::*;
use openpsd_protocol::creditor::{LineAnswer, LineRequest, Settlement};
use openpsd_service_kit::tls::Role;
use proc::Proc;

fn count(db: &std::path::Path, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn kill9_mid_issuance_and_mid_settlement_loses_nothing_and_settles_once() {
    let dir = tempfile::tempdir().unwrap();
    let h = spawn_all(dir.path()).await.unwrap();
    let (host, admin) = parties(&h.meter.url, &h.kms.url, &h.recharge.url, &h.pki);
    let mut psd = Psd::licensed(1, &h);
    admin.register(&psd).await;
    admin.fund("acme", 100_000).await;
    let acme = host.as_customer("acme");
    let account = host.customers.account("acme");

    // The creditor as a child process, on its own data, armed before the line's commit.
    let pki_dir = h.pki.dir().display().to_string();
    let args = vec![
        "--pki".to_owned(),
        pki_dir,
        "--kms".to_owned(),
        h.kms.url.clone(),
    ];
    let mut creditor = Proc::start(
        "creditor",
        &dir.path().join("creditor-proc"),
        "127.0.0.1:0",
        &args,
        "creditor_issue_before_commit",
    );
    let db = creditor.data.join(openpsd_creditor::DB_FILE);
    let key =
        std::fs::read_to_string(creditor.data.join(openpsd_creditor::PUBLIC_KEY_FILE)).unwrap();

    // The vendor vouches for its key; the PSD gets the rates and the anchor.
    let vendor = Client::new(&h.vendor.url, &h.pki, Some(Role::Operator));
    let _: serde_json::Value = vendor
        .post(
            "/v1/rates",
            &serde_json::json!({
                "version": 1, "effective": "2000-01-01",
                "fees": { "certificate": 500, "credit_line": 50, "payment": 3 },
            }),
        )
        .await
        .unwrap();
    let _: serde_json::Value = vendor
        .post(
            "/v1/anchors",
            &serde_json::json!({ "kind": "creditor", "public_key": key.trim() }),
        )
        .await
        .unwrap();
    host.refill(&mut psd, "r1", "acme", 10_000).await.unwrap();
    psd.load_updates(&acme).await;
    let operator = Client::new(&creditor.url, &h.pki, Some(Role::Operator));
    let _: serde_json::Value = operator
        .post(
            "/v1/limits",
            &serde_json::json!({ "account_id": account, "limit": 1_000, "currency": "EUR" }),
        )
        .await
        .unwrap();

    // Issuance, killed before and after its commit.
    let (attestation, _) = psd.client.generate_key(Purpose::Payment, false).unwrap();
    let request = LineRequest {
        request_id: "00000000000000aa".into(),
        attestation: hex::encode(&attestation),
        amount: 1_000,
        account_id: account.clone(),
        username: "acme".into(),
    };
    // The URL stays across restarts (the same address).
    let url = creditor.url.clone();
    let meter = || Client::new(&url, &h.pki, Some(Role::Meter));
    for (point, next) in [
        (
            "creditor_issue_before_commit",
            "creditor_issue_after_commit",
        ),
        (
            "creditor_issue_after_commit",
            "creditor_settle_before_commit",
        ),
    ] {
        let call = tokio::spawn({
            let (m, r) = (meter(), request.clone());
            async move { m.post::<_, LineAnswer>("/v1/lines", &r).await }
        });
        creditor.wait_paused(point);
        let stored = count(&db, "SELECT COUNT(*) FROM lines");
        creditor.kill9_and_restart(next);
        assert!(call.await.unwrap().is_err(), "killed at {point}");
        // Before the commit nothing is stored; after it, the line is.
        let expected = i64::from(point.ends_with("after_commit"));
        assert_eq!(
            count(&db, "SELECT COUNT(*) FROM lines"),
            expected,
            "{point}"
        );
        assert!(stored <= expected);
    }
    // The meter's retry: the stored line, and again the same.
    let line: LineAnswer = meter().post("/v1/lines", &request).await.unwrap();
    let again: LineAnswer = meter().post("/v1/lines", &request).await.unwrap();
    assert_eq!(line, again);
    assert_eq!(line.number, 1);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM lines"), 1);
    let cert = hex::decode(&line.certificate).unwrap();
    psd.client
        .load_credit_line(RegisterSetIndex(0), &cert)
        .unwrap();

    // Two payments to shop-7.
    let mut payments = Vec::new();
    for (txn, amount) in [(1u64, 300u64), (2, 200)] {
        let (_, p) = psd
            .client
            .pay(
                RegisterSetIndex(0),
                &PayRequest {
                    transaction: TransactionId(txn.to_be_bytes()),
                    amount: Amount(amount),
                    merchant: b"shop-7".to_vec(),
                    order: format!("order {txn}").into_bytes(),
                },
            )
            .unwrap();
        payments.push(serde_json::json!({ "payment": hex::encode(p.to_der()) }));
    }
    let merchant = || Client::merchant(&url, &h.pki, "shop-7");

    // Settlement, killed before and after its commit.
    for (point, next) in [
        (
            "creditor_settle_before_commit",
            "creditor_settle_after_commit",
        ),
        ("creditor_settle_after_commit", ""),
    ] {
        let call = tokio::spawn({
            let (m, p) = (merchant(), payments[0].clone());
            async move { m.post::<_, Settlement>("/v1/settlements", &p).await }
        });
        creditor.wait_paused(point);
        creditor.kill9_and_restart(next);
        assert!(call.await.unwrap().is_err(), "killed at {point}");
        let expected = i64::from(point.ends_with("after_commit"));
        assert_eq!(
            count(&db, "SELECT COUNT(*) FROM settlements"),
            expected,
            "{point}"
        );
        assert_eq!(
            count(&db, "SELECT drawn FROM lines"),
            300 * expected,
            "{point}"
        );
    }
    // The merchant's retry: the stored record; then the next payment.
    let s1: Settlement = merchant()
        .post("/v1/settlements", &payments[0])
        .await
        .unwrap();
    assert_eq!((s1.counter, s1.remaining), (1, 700));
    let again: Settlement = merchant()
        .post("/v1/settlements", &payments[0])
        .await
        .unwrap();
    assert_eq!(again, s1);
    let s2: Settlement = merchant()
        .post("/v1/settlements", &payments[1])
        .await
        .unwrap();
    assert_eq!((s2.counter, s2.remaining), (2, 500));
    assert_eq!(count(&db, "SELECT COUNT(*) FROM settlements"), 2);
    assert_eq!(count(&db, "SELECT drawn FROM lines"), 500);
    assert_eq!(count(&db, "SELECT settled FROM lines"), 2);
    drop(creditor);
    h.stop().await;
}
