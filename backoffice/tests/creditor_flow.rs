//! Seed 004 Figs. 7-9 end to end, with a real PSD and every service as it runs apart: the
//! operator grants acme's account a credit limit at the creditor; the vendor vouches for
//! the creditor's key (anchor `creditor`); the PSD generates a payment key and attests it;
//! the meter passes the attestation to the creditor, which issues the line of credit
//! certificate for acme's account (stock `openssl verify` accepts it under the creditor's
//! certificate); LOAD CREDIT LINE installs it; PAY makes payment certificates; the
//! merchants present them and the creditor settles each once and in order. Refusals:
//! double presentment (the same record again, nothing settled twice), another merchant,
//! a counter gap, a payment over the line (a PSD whose credit record was edited), a foreign
//! line, the wrong callers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::{parties, Client, Psd};
use openpsd_backoffice::server::spawn_all;
use openpsd_core::crypto::{sha256, IndiciumKey};
use openpsd_core::psd::certmeter::attestation::Purpose;
use openpsd_core::psd::certmeter::credit::{
    CreditState, PayRequest, PaymentCertificate, PaymentInfo,
};
use openpsd_core::types::*;
use openpsd_protocol::creditor::{
    LimitView, LineAnswer, MeterLineRequest, RevokedLine, Settlement,
};
use openpsd_service_kit::tls::Role;

fn openssl(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn pay(psd: &mut Psd, txn: u64, amount: u64, merchant: &str, order: &str) -> Vec<u8> {
    let (fee, cert) = psd
        .client
        .pay(
            RegisterSetIndex(0),
            &PayRequest {
                transaction: TransactionId(txn.to_be_bytes()),
                amount: Amount(amount),
                merchant: merchant.as_bytes().to_vec(),
                order: order.as_bytes().to_vec(),
            },
        )
        .unwrap();
    assert_eq!(fee, Amount(3));
    cert.to_der()
}

fn present(payment: &[u8]) -> serde_json::Value {
    serde_json::json!({ "payment": hex::encode(payment) })
}

/// Raises the credit remaining (and the line) in the card's own memory: what the holder of a software PSD
/// can do to its state. The PSD then signs a payment the line does not cover.
fn edit_remaining(psd: &mut Psd, extra: u64) {
    use openpsd_core::store::{MemStore, Store as _, Write};
    let mut store = MemStore::open(psd.snapshot()).unwrap();
    let id = openpsd_core::records::psd::CREDIT;
    let mut credit = CreditState::decode(&store.read(id).unwrap().unwrap()).unwrap();
    credit.remaining = Amount(credit.remaining.0 + extra);
    // The record keeps remaining ≤ line: the line as the card holds it is raised too (the
    // certificate, which the creditor reads, is not).
    credit.line.amount = Amount(credit.line.amount.0 + extra);
    store
        .commit(&[Write {
            id,
            value: Some(credit.encode()),
        }])
        .unwrap();
    let nvm = store.nvm().clone();
    psd.roll_back(&nvm);
}

#[tokio::test(flavor = "multi_thread")]
async fn seed004_limit_line_pay_and_settle_through_the_services() {
    let dir = tempfile::tempdir().unwrap();
    let h = spawn_all(dir.path()).await.unwrap();
    let (host, admin) = parties(&h.meter.url, &h.kms.url, &h.recharge.url, &h.pki);
    let mut psd = Psd::licensed(1, &h);
    admin.register(&psd).await;
    admin.fund("acme", 100_000).await;
    let acme = host.as_customer("acme");
    let account = host.customers.account("acme");

    // The vendor prices lines and payments and vouches for the creditor's key.
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
    let creditor_dir = dir.path().join("creditor");
    let creditor_key =
        std::fs::read_to_string(creditor_dir.join(openpsd_creditor::PUBLIC_KEY_FILE)).unwrap();
    // The anchor names the key in the creditor's certificate (`backoffice vendor trust
    // --cert creditor.pem` reads it the same way).
    let pem = std::fs::read(creditor_dir.join(openpsd_creditor::CERT_FILE)).unwrap();
    assert_eq!(
        hex::encode(openpsd_vendor::rates::certificate_key(&pem).unwrap()),
        creditor_key.trim()
    );
    let _: serde_json::Value = vendor
        .post(
            "/v1/anchors",
            &serde_json::json!({ "kind": "creditor", "public_key": creditor_key.trim() }),
        )
        .await
        .unwrap();
    host.refill(&mut psd, "r1", "acme", 10_000).await.unwrap();
    psd.load_updates(&acme).await;

    // Fig. 8: the payment key made inside and attested; no limit yet: refused.
    let (attestation, _) = psd.client.generate_key(Purpose::Payment, false).unwrap();
    let ask = |request_id: &str, amount: u64| MeterLineRequest {
        request_id: request_id.to_owned(),
        device_id: psd.device_id(),
        attestation: hex::encode(&attestation),
        amount,
    };
    let e = acme
        .post::<_, LineAnswer>("/v1/credit-lines", &ask("0000000000000001", 1_000))
        .await
        .unwrap_err();
    assert_eq!((e.status, e.code.as_str()), (409, "over_limit"), "{e:?}");

    // The operator grants acme 1,000.00 EUR; only the operator may.
    let creditor_op = Client::new(&h.creditor.url, &h.pki, Some(Role::Operator));
    let limit = serde_json::json!({ "account_id": account, "limit": 1_000, "currency": "EUR" });
    let view: LimitView = creditor_op.post("/v1/limits", &limit).await.unwrap();
    assert_eq!(view.limit, 1_000);
    let as_meter = Client::new(&h.creditor.url, &h.pki, Some(Role::Meter));
    let e = as_meter
        .post::<_, LimitView>("/v1/limits", &limit)
        .await
        .unwrap_err();
    assert_eq!(e.status, 403);

    // Above the limit: refused; within: the line, for acme's account.
    let e = acme
        .post::<_, LineAnswer>("/v1/credit-lines", &ask("0000000000000002", 1_001))
        .await
        .unwrap_err();
    assert_eq!((e.status, e.code.as_str()), (409, "over_limit"), "{e:?}");
    let line: LineAnswer = acme
        .post("/v1/credit-lines", &ask("0000000000000003", 1_000))
        .await
        .unwrap();
    assert_eq!(
        (line.number, line.amount, line.currency.as_str()),
        (1, 1_000, "EUR")
    );
    // The same request again (a lost answer): the same certificate.
    let again: LineAnswer = acme
        .post("/v1/credit-lines", &ask("0000000000000003", 1_000))
        .await
        .unwrap();
    assert_eq!(again, line);
    // The same request ID for another amount: refused.
    let e = acme
        .post::<_, LineAnswer>("/v1/credit-lines", &ask("0000000000000003", 900))
        .await
        .unwrap_err();
    assert_eq!((e.status, e.code.as_str()), (409, "line_conflict"), "{e:?}");
    // Another customer may not ask for a line on acme's device.
    admin.ensure_customer("bob").await;
    let bob = host.as_customer("bob");
    let e = bob
        .post::<_, LineAnswer>("/v1/credit-lines", &ask("0000000000000004", 10))
        .await
        .unwrap_err();
    assert_eq!(e.status, 404);

    // Stock openssl: the line chains to the creditor's certificate, names acme's account.
    let cert = hex::decode(&line.certificate).unwrap();
    assert_eq!(line.line_hash, hex::encode(sha256(&cert)));
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("creditor.pem"), &pem).unwrap();
    std::fs::write(
        work.path().join("line.pem"),
        openpsd_pki::pem("CERTIFICATE", &cert),
    )
    .unwrap();
    let (ok, text) = openssl(
        work.path(),
        &[
            "verify",
            "-CAfile",
            "creditor.pem",
            "-purpose",
            "any",
            "line.pem",
        ],
    );
    assert!(ok, "openssl verify: {text}");
    let (ok, text) = openssl(
        work.path(),
        &["x509", "-in", "line.pem", "-noout", "-subject", "-text"],
    );
    assert!(ok, "{text}");
    assert!(
        text.contains(&format!("openpsd customer {account}")),
        "{text}"
    );
    assert!(text.contains("1.3.6.1.4.1.32473.1.3"), "{text}");

    // Fig. 8 step 812: the PSD installs it, paying the line fee.
    let before = psd.registers(0);
    let reply = psd
        .client
        .load_credit_line(RegisterSetIndex(0), &cert)
        .unwrap();
    assert_eq!(
        (reply.number, reply.fee, reply.remaining),
        (1, Amount(50), Amount(1_000))
    );
    assert_eq!(psd.registers(0).dr.0, before.dr.0 - 50);

    // Fig. 9: three payments, two merchants.
    let p1 = pay(&mut psd, 1, 300, "shop-7", "order 1");
    let p2 = pay(&mut psd, 2, 200, "shop-7", "order 2");
    let p3 = pay(&mut psd, 3, 100, "other-shop", "order 9");
    let shop = Client::merchant(&h.creditor.url, &h.pki, "shop-7");
    let other = Client::merchant(&h.creditor.url, &h.pki, "other-shop");

    // A gap: 2 before 1 is refused (not held); nothing settled.
    let e = shop
        .post::<_, Settlement>("/v1/settlements", &present(&p2))
        .await
        .unwrap_err();
    assert_eq!((e.status, e.code.as_str()), (409, "out_of_order"), "{e:?}");
    // Another merchant presents shop-7's payment.
    let e = other
        .post::<_, Settlement>("/v1/settlements", &present(&p1))
        .await
        .unwrap_err();
    assert_eq!(
        (e.status, e.code.as_str()),
        (403, "other_merchant"),
        "{e:?}"
    );
    let s1: Settlement = shop.post("/v1/settlements", &present(&p1)).await.unwrap();
    assert_eq!(
        (s1.counter, s1.amount, s1.remaining, s1.merchant.as_str()),
        (1, 300, 700, "shop-7")
    );
    assert_eq!(s1.account_id, account);
    assert_eq!(s1.line_hash, line.line_hash);
    // The record is signed by the creditor's key.
    let creditor_pk: [u8; 65] = hex::decode(creditor_key.trim())
        .unwrap()
        .try_into()
        .unwrap();
    let sig: [u8; 64] = hex::decode(&s1.signature).unwrap().try_into().unwrap();
    assert!(openpsd_core::crypto::verify_signature(
        &creditor_pk,
        &s1.signed_bytes(),
        &sig
    ));
    // Double presentment: the same record, settled once.
    let again: Settlement = shop.post("/v1/settlements", &present(&p1)).await.unwrap();
    assert_eq!(again, s1);
    let s2: Settlement = shop.post("/v1/settlements", &present(&p2)).await.unwrap();
    assert_eq!((s2.counter, s2.remaining), (2, 500));
    let e = shop
        .post::<_, Settlement>("/v1/settlements", &present(&p3))
        .await
        .unwrap_err();
    assert_eq!(e.status, 403);
    let s3: Settlement = other.post("/v1/settlements", &present(&p3)).await.unwrap();
    assert_eq!((s3.counter, s3.remaining), (3, 400));

    // Over the line: a PSD whose credit record was raised signs 900 with 400 left.
    edit_remaining(&mut psd, 1_000);
    let p4 = pay(&mut psd, 4, 900, "shop-7", "order 4");
    let e = shop
        .post::<_, Settlement>("/v1/settlements", &present(&p4))
        .await
        .unwrap_err();
    assert_eq!((e.status, e.code.as_str()), (409, "inconsistent"), "{e:?}");

    // A foreign line: a payment on a line this creditor never issued.
    let stranger = IndiciumKey::from_bytes(&[9; 32]).unwrap();
    let info_der = PaymentInfo {
        line: [7; 32],
        counter: 1,
        device: DeviceId([1; 8]),
        amount: Amount(10),
        currency: *b"EUR",
        remaining: Amount(990),
        merchant: b"shop-7".to_vec(),
        order: b"o".to_vec(),
        time: 1_795_000_000,
        transaction: TransactionId([1; 8]),
    }
    .to_der();
    let foreign = PaymentCertificate {
        signature: stranger.sign(&info_der),
        info_der,
    }
    .to_der();
    let e = shop
        .post::<_, Settlement>("/v1/settlements", &present(&foreign))
        .await
        .unwrap_err();
    assert_eq!(
        (e.status, e.code.as_str()),
        (422, "payment_invalid"),
        "{e:?}"
    );
    // Bytes that are no payment at all.
    let e = shop
        .post::<_, Settlement>("/v1/settlements", &present(b"\x30\x03\x02\x01\x01"))
        .await
        .unwrap_err();
    assert_eq!(e.status, 422);
    // Only merchants present: the meter's certificate may not.
    let e = as_meter
        .post::<_, Settlement>("/v1/settlements", &present(&p1))
        .await
        .unwrap_err();
    assert_eq!(e.status, 403);
    // A merchant's certificate without a merchant ID (the role's plain certificate).
    let anonymous = Client::new(&h.creditor.url, &h.pki, Some(Role::Merchant));
    let e = anonymous
        .post::<_, Settlement>("/v1/settlements", &present(&p1))
        .await
        .unwrap_err();
    assert_eq!(e.status, 403);

    // The book: 3 settled, 600 drawn, whatever was refused.
    let conn = rusqlite::Connection::open(creditor_dir.join(openpsd_creditor::DB_FILE)).unwrap();
    let (settled, drawn): (i64, i64) = conn
        .query_row(
            "SELECT settled, drawn FROM lines WHERE line_hash = ?1",
            [&line.line_hash],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((settled, drawn), (3, 600));
    let n: i64 = conn
        .query_row("SELECT COUNT(*) FROM settlements", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 3);
    h.stop().await;
}

/// The vendor prices lines (50) and payments (3) and vouches for the creditor's key.
async fn vendor_prices_and_trusts_the_creditor(
    h: &openpsd_backoffice::server::Handles,
    creditor_dir: &Path,
) {
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
    let creditor_key =
        std::fs::read_to_string(creditor_dir.join(openpsd_creditor::PUBLIC_KEY_FILE)).unwrap();
    let _: serde_json::Value = vendor
        .post(
            "/v1/anchors",
            &serde_json::json!({ "kind": "creditor", "public_key": creditor_key.trim() }),
        )
        .await
        .unwrap();
}

/// Refills `psd` and loads the updates the meter hands its owner (the rate table, the
/// creditor's anchor).
async fn ready(host: &common::Host, acme: &Client, psd: &mut Psd, txn: &str) {
    host.refill(psd, txn, "acme", 10_000).await.unwrap();
    psd.load_updates(acme).await;
}

/// Asks the meter for a line until it answers something else than `line_conflict` (a
/// request of the same account that raced this one: "ask again"). `Ok(number)` or the
/// refusal's code.
async fn ask_line(
    acme: &Client,
    device_id: &str,
    attestation: &[u8],
    request_id: u64,
    amount: u64,
) -> Result<u32, String> {
    let req = MeterLineRequest {
        request_id: format!("{request_id:016x}"),
        device_id: device_id.to_owned(),
        attestation: hex::encode(attestation),
        amount,
    };
    loop {
        match acme.post::<_, LineAnswer>("/v1/credit-lines", &req).await {
            Ok(a) => return Ok(a.number),
            Err(e) if e.code == "line_conflict" => continue,
            Err(e) => return Err(format!("{} {}", e.status, e.code)),
        }
    }
}

/// Issue 15: the limit bounds everything the account can be made to owe. Lines superseded
/// on the same device, lines on other devices, a superseded line's payments presented
/// after the newer line was granted, a lowered limit and requests racing each other: the
/// amounts of every line ever granted stay within the limit.
#[tokio::test(flavor = "multi_thread")]
async fn the_limit_bounds_what_an_account_owes() {
    let dir = tempfile::tempdir().unwrap();
    let h = spawn_all(dir.path()).await.unwrap();
    let (host, admin) = parties(&h.meter.url, &h.kms.url, &h.recharge.url, &h.pki);
    let mut psd = Psd::licensed(1, &h);
    let mut psd2 = Psd::licensed(2, &h);
    admin.register(&psd).await;
    admin.register(&psd2).await;
    admin.fund("acme", 100_000).await;
    let acme = host.as_customer("acme");
    let account = host.customers.account("acme");
    let creditor_dir = dir.path().join("creditor");
    vendor_prices_and_trusts_the_creditor(&h, &creditor_dir).await;
    ready(&host, &acme, &mut psd, "r1").await;
    ready(&host, &acme, &mut psd2, "r2").await;
    let (att1, _) = psd.client.generate_key(Purpose::Payment, false).unwrap();
    let (att2, _) = psd2.client.generate_key(Purpose::Payment, false).unwrap();
    let (dev1, dev2) = (psd.device_id(), psd2.device_id());
    let creditor_op = Client::new(&h.creditor.url, &h.pki, Some(Role::Operator));
    let set_limit = |limit: u64| {
        let op = creditor_op.clone();
        let account = account.clone();
        async move {
            let _: LimitView = op
                .post(
                    "/v1/limits",
                    &serde_json::json!({ "account_id": account, "limit": limit, "currency": "EUR" }),
                )
                .await
                .unwrap();
        }
    };
    let over = Err("409 over_limit".to_owned());
    set_limit(1_000).await;

    // Line 1 (600) on the PSD; a payment of 200 signed, not presented yet.
    let line1: LineAnswer = acme
        .post(
            "/v1/credit-lines",
            &MeterLineRequest {
                request_id: format!("{:016x}", 1),
                device_id: dev1.clone(),
                attestation: hex::encode(&att1),
                amount: 600,
            },
        )
        .await
        .unwrap();
    psd.client
        .load_credit_line(
            RegisterSetIndex(0),
            &hex::decode(&line1.certificate).unwrap(),
        )
        .unwrap();
    let p1 = pay(&mut psd, 1, 200, "shop-7", "before line 2");
    // Line 2 on the same device supersedes line 1, whose 600 still count: 400 fits, no more.
    assert_eq!(ask_line(&acme, &dev1, &att1, 2, 401).await, over);
    assert_eq!(ask_line(&acme, &dev1, &att1, 3, 400).await, Ok(2));
    // Nothing left on any device: the other device's line is refused too.
    assert_eq!(ask_line(&acme, &dev2, &att2, 4, 1).await, over);
    assert_eq!(ask_line(&acme, &dev1, &att1, 5, 1_000).await, over);

    // The superseded line's payment, presented late, settles: the merchant delivered on it.
    let shop = Client::merchant(&h.creditor.url, &h.pki, "shop-7");
    let s1: Settlement = shop.post("/v1/settlements", &present(&p1)).await.unwrap();
    assert_eq!((s1.counter, s1.remaining), (1, 400));
    assert_eq!(s1.line_hash, line1.line_hash);
    // Line 2 loaded and spent; a third line on the same device is still refused.
    let line2 = {
        let conn =
            rusqlite::Connection::open(creditor_dir.join(openpsd_creditor::DB_FILE)).unwrap();
        let cert: Vec<u8> = conn
            .query_row(
                "SELECT certificate FROM lines WHERE account_id = ?1 AND number = 2",
                [&account],
                |r| r.get(0),
            )
            .unwrap();
        cert
    };
    psd.client
        .load_credit_line(RegisterSetIndex(0), &line2)
        .unwrap();
    let p2 = pay(&mut psd, 2, 400, "shop-7", "all of line 2");
    let s2: Settlement = shop.post("/v1/settlements", &present(&p2)).await.unwrap();
    assert_eq!((s2.counter, s2.remaining), (1, 0));
    assert_eq!(ask_line(&acme, &dev1, &att1, 6, 1).await, over);

    // A limit lowered below what the account owes grants nothing; raised, only the rest.
    set_limit(500).await;
    assert_eq!(ask_line(&acme, &dev2, &att2, 7, 1).await, over);
    set_limit(1_300).await;
    assert_eq!(ask_line(&acme, &dev2, &att2, 8, 301).await, over);
    assert_eq!(ask_line(&acme, &dev2, &att2, 9, 300).await, Ok(3));

    // Eight requests of 300 racing with 1,000 left: exactly three granted.
    set_limit(2_300).await;
    let mut tasks = Vec::new();
    for i in 0..8u64 {
        let (acme, dev, att) = (acme.clone(), dev2.clone(), att2.clone());
        tasks.push(tokio::spawn(async move {
            ask_line(&acme, &dev, &att, 100 + i, 300).await
        }));
    }
    let mut granted = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => granted += 1,
            Err(e) => assert_eq!(Err::<u32, _>(e), over),
        }
    }
    assert_eq!(granted, 3);

    // The book: every line ever granted within the last limit, what was settled with them.
    let conn = rusqlite::Connection::open(creditor_dir.join(openpsd_creditor::DB_FILE)).unwrap();
    let (n, amounts, drawn): (i64, i64, i64) = conn
        .query_row(
            "SELECT COUNT(*), SUM(amount), SUM(drawn) FROM lines WHERE account_id = ?1",
            [&account],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((n, amounts, drawn), (6, 2_200, 600));
    h.stop().await;
}

/// The operator revokes a line: a payment the PSD made before is still settled (the
/// merchant delivered while the line was good), one dated after is refused; the revoked
/// line still counts its whole amount against the limit.
#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_line_settles_only_payments_made_before() {
    let dir = tempfile::tempdir().unwrap();
    let h = spawn_all(dir.path()).await.unwrap();
    let (host, admin) = parties(&h.meter.url, &h.kms.url, &h.recharge.url, &h.pki);
    let mut psd = Psd::licensed(1, &h);
    admin.register(&psd).await;
    admin.fund("acme", 100_000).await;
    let acme = host.as_customer("acme");
    let account = host.customers.account("acme");
    vendor_prices_and_trusts_the_creditor(&h, &dir.path().join("creditor")).await;
    ready(&host, &acme, &mut psd, "r1").await;
    let (att, _) = psd.client.generate_key(Purpose::Payment, false).unwrap();
    let dev = psd.device_id();
    let creditor_op = Client::new(&h.creditor.url, &h.pki, Some(Role::Operator));
    let _: LimitView = creditor_op
        .post(
            "/v1/limits",
            &serde_json::json!({ "account_id": account, "limit": 1_000, "currency": "EUR" }),
        )
        .await
        .unwrap();
    let line: LineAnswer = acme
        .post(
            "/v1/credit-lines",
            &MeterLineRequest {
                request_id: format!("{:016x}", 1),
                device_id: dev.clone(),
                attestation: hex::encode(&att),
                amount: 500,
            },
        )
        .await
        .unwrap();
    psd.client
        .load_credit_line(
            RegisterSetIndex(0),
            &hex::decode(&line.certificate).unwrap(),
        )
        .unwrap();
    let before = pay(&mut psd, 1, 100, "shop-7", "delivered before");

    // The revocation a second later than the payment's date (the PSD's clock is seconds).
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    // Only the operator revokes; an unknown line is 404; revoked again, the same answer.
    let revoke = serde_json::json!({ "line_hash": line.line_hash });
    let as_meter = Client::new(&h.creditor.url, &h.pki, Some(Role::Meter));
    let e = as_meter
        .post::<_, RevokedLine>("/v1/lines/revoke", &revoke)
        .await
        .unwrap_err();
    assert_eq!(e.status, 403);
    let e = creditor_op
        .post::<_, RevokedLine>(
            "/v1/lines/revoke",
            &serde_json::json!({ "line_hash": "00".repeat(32) }),
        )
        .await
        .unwrap_err();
    assert_eq!(e.status, 404);
    let revoked: RevokedLine = creditor_op.post("/v1/lines/revoke", &revoke).await.unwrap();
    assert_eq!(
        (revoked.number, revoked.account_id.as_str()),
        (1, account.as_str())
    );
    let again: RevokedLine = creditor_op.post("/v1/lines/revoke", &revoke).await.unwrap();
    assert_eq!(again, revoked);

    // The PSD knows nothing of it: restarted (its clock now after the revocation), it
    // still pays on the line.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let nvm = psd.snapshot();
    psd.roll_back(&nvm);
    let after = pay(&mut psd, 2, 100, "shop-7", "after the revocation");
    let dated = |der: &[u8]| {
        PaymentInfo::from_der(&PaymentCertificate::from_der(der).unwrap().info_der)
            .unwrap()
            .time
    };
    assert!(dated(&before) < u64::try_from(revoked.revoked_at).unwrap());
    assert!(dated(&after) >= u64::try_from(revoked.revoked_at).unwrap());

    let shop = Client::merchant(&h.creditor.url, &h.pki, "shop-7");
    let s: Settlement = shop
        .post("/v1/settlements", &present(&before))
        .await
        .unwrap();
    assert_eq!((s.counter, s.remaining), (1, 400));
    let e = shop
        .post::<_, Settlement>("/v1/settlements", &present(&after))
        .await
        .unwrap_err();
    assert_eq!((e.status, e.code.as_str()), (409, "line_revoked"), "{e:?}");

    // The revoked line still counts its 500: 501 more refused, 500 granted.
    let ask = |id: u64, amount: u64| MeterLineRequest {
        request_id: format!("{id:016x}"),
        device_id: dev.clone(),
        attestation: hex::encode(&att),
        amount,
    };
    let e = acme
        .post::<_, LineAnswer>("/v1/credit-lines", &ask(2, 501))
        .await
        .unwrap_err();
    assert_eq!((e.status, e.code.as_str()), (409, "over_limit"), "{e:?}");
    let _: LineAnswer = acme.post("/v1/credit-lines", &ask(3, 500)).await.unwrap();
    h.stop().await;
}
