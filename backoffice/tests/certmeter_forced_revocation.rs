//! Forced revocation (seed 004 Fig. 6; issue 15 item 6): an operator revokes a PSD key's
//! certificate at the CA without the PSD's request. The CA issues the signed order all the
//! same (pending), the meter hands it to the host at the next contact (`GET
//! /v1/devices/{id}/revocations`), the host library's refill applies it (REVOKE KEY on an
//! in-process PSD: key retired, fee paid) and records the confirmation before the refill,
//! which then completes. An order left unapplied past the meter's grace period blocks
//! refills (`409 revocation_overdue`) until it is applied. A forged order or one for
//! another device is refused by the PSD and changes nothing; the applied order again
//! answers the same confirmation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{parties, Client, Psd};
use openpsd_backoffice::server::{open_meter, serve_meter, spawn_all, Handles};
use openpsd_core::crypto::IndiciumKey;
use openpsd_core::psd::certmeter::attestation::Purpose;
use openpsd_core::psd::certmeter::postmark::PostmarkRequest;
use openpsd_core::psd::certmeter::revoke::{Outcome, Reason, RevocationOrder};
use openpsd_core::types::*;
use openpsd_host::refill::{MeterClient, RefillRequest};
use openpsd_protocol::ca::{CertificateAnswer, MeterCertificateRequest, PendingRevocations};
use openpsd_protocol::vendor::DeviceUpdates;
use openpsd_service_kit::tls::Role;

/// A key of `purpose` generated, certified through the meter and installed: its slot,
/// serial and certificate.
async fn certified_key(psd: &mut Psd, acme: &Client, purpose: Purpose) -> (u8, String) {
    let (attestation, a) = psd.client.generate_key(purpose, false).unwrap();
    let answer: CertificateAnswer = acme
        .post(
            "/v1/certificates",
            &MeterCertificateRequest {
                device_id: psd.device_id(),
                attestation: hex::encode(&attestation),
            },
        )
        .await
        .unwrap();
    let cert = hex::decode(&answer.certificate).unwrap();
    psd.client
        .install_key_certificate(a.slot, RegisterSetIndex(0), &cert)
        .unwrap();
    (a.slot, answer.serial)
}

#[tokio::test(flavor = "multi_thread")]
async fn operator_revocation_reaches_the_psd_at_its_next_refill_and_an_overdue_one_blocks_refills()
{
    let dir = tempfile::tempdir().unwrap();
    let h = spawn_all(dir.path()).await.unwrap();
    // The meter again, on the same data, with a grace period of 3 s.
    let grace = 3;
    h.meter.stop().await;
    let short = serve_meter(
        open_meter(
            &dir.path().join("meter"),
            [&h.kms.url, &h.recharge.url],
            Some([&h.vendor.url, &h.pa.url]),
            [Some(&h.ca.url), Some(&h.creditor.url)],
            &h.pki,
            openpsd_backoffice::server::DEFAULT_RATE,
        )
        .unwrap()
        .with_revocation_grace(Duration::from_secs(grace)),
        "127.0.0.1:0",
        &h.pki,
    )
    .await
    .unwrap();
    let h = Handles { meter: short, ..h };
    let (host, admin) = parties(&h.meter.url, &h.kms.url, &h.recharge.url, &h.pki);
    let mut psd = Psd::licensed(1, &h);
    admin.register(&psd).await;
    admin.fund("acme", 100_000).await;
    let acme = host.as_customer("acme");
    let vendor = Client::new(&h.vendor.url, &h.pki, Some(Role::Operator));
    let _: serde_json::Value = vendor
        .post(
            "/v1/rates",
            &serde_json::json!({
                "version": 1, "effective": "2000-01-01",
                "fees": { "postmark": 10, "certificate": 500, "revocation": 25 },
            }),
        )
        .await
        .unwrap();
    let ca_dir = dir.path().join("ca");
    let ca_key = std::fs::read_to_string(ca_dir.join(openpsd_ca::PUBLIC_KEY_FILE)).unwrap();
    let ca_pk = hex::decode(ca_key.trim()).unwrap();
    let _: serde_json::Value = vendor
        .post(
            "/v1/anchors",
            &serde_json::json!({ "kind": "ca", "public_key": ca_key.trim() }),
        )
        .await
        .unwrap();
    host.refill(&mut psd, "r1", "acme", 10_000).await.unwrap();
    let updates: DeviceUpdates = acme
        .get(&format!("/v1/devices/{}/updates", psd.device_id()))
        .await
        .unwrap();
    for t in &updates.rate_tables {
        psd.client
            .load_rate_table(&hex::decode(t).unwrap())
            .unwrap();
    }
    for a in &updates.anchors {
        psd.client
            .load_trust_anchor(&hex::decode(a).unwrap())
            .unwrap();
    }
    let (slot_a, serial_a) = certified_key(&mut psd, &acme, Purpose::Postmark).await;
    let pending_path = format!("/v1/devices/{}/revocations", psd.device_id());
    let none: PendingRevocations = acme.get(&pending_path).await.unwrap();
    assert!(none.orders.is_empty());

    // The operator revokes the certificate at the CA: revoked for relying parties at once,
    // and an order pending for the PSD.
    let operator = Client::new(&h.ca.url, &h.pki, Some(Role::Operator));
    let _: serde_json::Value = operator
        .post(
            &format!("/v1/certificates/{serial_a}/revoke"),
            &serde_json::json!({ "reason": "keyCompromise" }),
        )
        .await
        .unwrap();
    let pending: PendingRevocations = acme.get(&pending_path).await.unwrap();
    assert_eq!(pending.orders.len(), 1, "{pending:?}");
    let p = &pending.orders[0];
    assert_eq!(
        (p.counter, p.slot, p.serial.as_str()),
        (1, slot_a, serial_a.as_str())
    );
    assert_eq!(p.refills_refused_from, Some(p.created_at + grace));
    let order_a = hex::decode(&p.order).unwrap();
    let o = RevocationOrder::open(&order_a, &ca_pk).expect("signed by the CA key");
    assert_eq!(
        (o.slot, o.counter, o.reason),
        (slot_a, 1, Reason::KeyCompromise)
    );
    // Revoked again: the same, no second order.
    let _: serde_json::Value = operator
        .post(
            &format!("/v1/certificates/{serial_a}/revoke"),
            &serde_json::json!({ "reason": "superseded" }),
        )
        .await
        .unwrap();
    let again: PendingRevocations = acme.get(&pending_path).await.unwrap();
    assert_eq!(again, pending);
    // Another customer sees nothing of it.
    admin.ensure_customer("bob").await;
    let bob = host.as_customer("bob");
    assert_eq!(
        bob.get::<PendingRevocations>(&pending_path)
            .await
            .unwrap_err()
            .status,
        404
    );

    // A forged order, and a genuine CA-signed order for another device: refused by the
    // PSD, nothing changed.
    let before_info = format!("{:?}", psd.client.certmeter_info().unwrap());
    let before = psd.registers(0);
    let mut forged = order_a.clone();
    forged[12] ^= 1;
    assert!(psd.client.revoke_key(RegisterSetIndex(0), &forged).is_err());
    let scalar = std::fs::read_to_string(ca_dir.join(openpsd_ca::SIGNING_KEY_FILE)).unwrap();
    let ca_signing = IndiciumKey::from_bytes(&hex::decode(scalar.trim()).unwrap()).unwrap();
    let mut other = o;
    other.device = DeviceId(*b"OTHERPSD");
    let refused = psd
        .client
        .revoke_key(RegisterSetIndex(0), &other.sign(&ca_signing))
        .unwrap_err();
    assert!(
        format!("{refused:?}").contains("WrongDevice"),
        "{refused:?}"
    );
    assert_eq!(
        format!("{:?}", psd.client.certmeter_info().unwrap()),
        before_info
    );
    assert_eq!(format!("{:?}", psd.registers(0)), format!("{before:?}"));

    // The next refill, as `openpsd refill` runs it: the order applied first and confirmed,
    // then the refill.
    let ca_pem = h.pki.ca_cert();
    let token = host.customers.get("acme").1;
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
                    client_txn_id: "r2".into(),
                    account_id: None,
                    set: RegisterSetIndex(0),
                    amount: Amount(1_000),
                },
                &mut |l| lines.push(l.to_owned()),
            )
            .unwrap();
        (out, lines)
    });
    eprintln!("{}", lines.join("\n"));
    assert_eq!(out.revocations.len(), 1);
    let c = out.revocations[0].result.as_ref().expect("applied");
    assert_eq!(
        (c.outcome, c.fee, c.counter, c.slot),
        (Outcome::Paid, Amount(25), 1, slot_a)
    );
    assert!(
        lines[0].contains("revocation order 1") && lines[0].contains("paid"),
        "{lines:?}"
    );
    // DR: the fee out, the refill in.
    assert_eq!(out.registers.dr.0, before.dr.0 - 25 + 1_000);
    let refused = psd.client.issue_postmark(
        RegisterSetIndex(0),
        &PostmarkRequest {
            transaction: TransactionId([9; 8]),
            digest: [1; 32],
            nonce: vec![],
        },
    );
    assert!(format!("{:?}", refused.unwrap_err()).contains("KeyRevoked"));
    // Confirmed at the CA: nothing pending.
    let none: PendingRevocations = acme.get(&pending_path).await.unwrap();
    assert!(none.orders.is_empty(), "{none:?}");
    // The applied order again: the same confirmation, nothing charged.
    let regs = psd.registers(0);
    let (_, c2) = psd
        .client
        .revoke_key(RegisterSetIndex(0), &order_a)
        .unwrap();
    assert_eq!(&c2, c);
    assert_eq!(format!("{:?}", psd.registers(0)), format!("{regs:?}"));

    // A second key revoked by the operator and left unapplied: refills go on during the
    // grace period, and are refused once it is over.
    let (slot_b, serial_b) = certified_key(&mut psd, &acme, Purpose::Sign).await;
    let _: serde_json::Value = operator
        .post(
            &format!("/v1/certificates/{serial_b}/revoke"),
            &serde_json::json!({ "reason": "affiliation changed by the operator" }),
        )
        .await
        .unwrap();
    host.refill(&mut psd, "r3", "acme", 500).await.unwrap();
    tokio::time::sleep(Duration::from_secs(grace + 1)).await;
    let refused = host
        .request("r4", &psd.device_id(), 0, "acme", 500)
        .await
        .unwrap_err();
    assert_eq!(refused.status, 409, "{refused:?}");
    assert_eq!(refused.code, "revocation_overdue", "{refused:?}");
    assert_eq!(
        host.status("r4").await.unwrap_err().status,
        404,
        "nothing stored"
    );
    // The host applies it (the inspection path: orders first); refills work again.
    let applied = tokio::task::block_in_place(|| {
        let meter = MeterClient::new(&meter_url, Some(&ca_pem), Some(&token)).unwrap();
        meter
            .apply_revocations(&mut psd.client, device, RegisterSetIndex(0), &mut |_| {})
            .unwrap()
    });
    assert_eq!(applied.len(), 1);
    let c = applied[0].result.as_ref().expect("applied");
    assert_eq!((c.counter, c.slot), (2, slot_b));
    assert_eq!(applied[0].reason, "unspecified", "a free-text reason");
    host.refill(&mut psd, "r4", "acme", 500).await.unwrap();
    h.stop().await;
}
