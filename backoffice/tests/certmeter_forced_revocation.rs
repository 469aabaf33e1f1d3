//! Forced revocation (seed 004 Fig. 6; issue 15 item 6): an operator revokes a PSD key's
//! certificate at the CA without the PSD's request. The CA issues the signed order all the
//! same (pending), the meter hands it to the host at the next contact (`GET
//! /v1/devices/{id}/revocations`), the host library's refill applies it (REVOKE KEY on an
//! in-process PSD: key retired, fee paid) and records the confirmation before the refill,
//! which then completes. An order left unapplied past the meter's grace period blocks
//! refills (`409 revocation_overdue`) until it is applied. A forged order or one for
//! another device is refused by the PSD and changes nothing; the applied order again
//! answers the same confirmation.
//!
//! The review's defects (issue 15), each shown blocking and then cleared: an order the PSD
//! asked for never blocks; the grace period counts from the first hand-over; orders the
//! PSD cannot apply (`9A41` after a later order, a certificate never installed, a lost
//! confirmation) are closed by the operator (`backoffice ca close-order`, its route
//! refused to the meter); one whose slot a later certified key took is closed by the CA.
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
use openpsd_protocol::ca::{
    CertificateAnswer, MeterCertificateRequest, MeterRevocationConfirmation,
    MeterRevocationRequest, PendingRevocations, RevocationOrderAnswer, RevocationOrderView,
    RevocationRecord,
};
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
    // A meter with a grace period of 3 s.
    let grace = 3;
    let World {
        _dir: dir,
        h,
        host,
        admin,
        mut psd,
        acme,
        operator,
    } = world(grace).await;
    let ca_dir = dir.path().join("ca");
    let ca_key = std::fs::read_to_string(ca_dir.join(openpsd_ca::PUBLIC_KEY_FILE)).unwrap();
    let ca_pk = hex::decode(ca_key.trim()).unwrap();
    let (slot_a, serial_a) = certified_key(&mut psd, &acme, Purpose::Postmark).await;
    let pending_path = format!("/v1/devices/{}/revocations", psd.device_id());
    let none: PendingRevocations = acme.get(&pending_path).await.unwrap();
    assert!(none.orders.is_empty());

    // The operator revokes the certificate at the CA: revoked for relying parties at once,
    // and an order pending for the PSD.
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
    assert!(p.forced, "the operator's revocation forces the order");
    assert_eq!(
        p.refills_refused_from,
        Some(p.handed_over_at.expect("handed over") + grace)
    );
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

/// A back office whose meter has a grace period of `grace` seconds, a funded PSD of
/// customer acme with the rate table (revocation 25) and the CA anchor loaded.
struct World {
    _dir: tempfile::TempDir,
    h: Handles,
    host: common::Host,
    admin: common::Admin,
    psd: Psd,
    acme: Client,
    operator: Client,
}

async fn world(grace: u64) -> World {
    let dir = tempfile::tempdir().unwrap();
    let h = spawn_all(dir.path()).await.unwrap();
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
    let ca_key =
        std::fs::read_to_string(dir.path().join("ca").join(openpsd_ca::PUBLIC_KEY_FILE)).unwrap();
    let _: serde_json::Value = vendor
        .post(
            "/v1/anchors",
            &serde_json::json!({ "kind": "ca", "public_key": ca_key.trim() }),
        )
        .await
        .unwrap();
    host.refill(&mut psd, "r1", "acme", 10_000).await.unwrap();
    psd.load_updates(&acme).await;
    let operator = Client::new(&h.ca.url, &h.pki, Some(Role::Operator));
    World {
        _dir: dir,
        h,
        host,
        admin,
        psd,
        acme,
        operator,
    }
}

impl World {
    fn pending_path(&self) -> String {
        format!("/v1/devices/{}/revocations", self.psd.device_id())
    }

    async fn pending(&self) -> PendingRevocations {
        self.acme.get(&self.pending_path()).await.unwrap()
    }

    /// The operator's revocation of `serial` at the CA (a forced order).
    async fn operator_revokes(&self, serial: &str) {
        let _: serde_json::Value = self
            .operator
            .post(
                &format!("/v1/certificates/{serial}/revoke"),
                &serde_json::json!({ "reason": "keyCompromise" }),
            )
            .await
            .unwrap();
    }

    /// The PSD asks for the revocation of its key in `slot` (through the meter): the order.
    async fn psd_asks_revocation(&mut self, slot: u8) -> RevocationOrderAnswer {
        let bytes = self
            .psd
            .client
            .revocation_request(slot, Reason::KeyCompromise, &[0x42; 16])
            .unwrap();
        self.acme
            .post(
                "/v1/revocations",
                &MeterRevocationRequest {
                    device_id: self.psd.device_id(),
                    request: hex::encode(&bytes),
                },
            )
            .await
            .unwrap()
    }

    /// A refill's first step at the meter: `Ok` or the meter's refusal.
    async fn try_refill(&self, txn: &str) -> Result<(), common::Refused> {
        self.host
            .request(txn, &self.psd.device_id(), 0, "acme", 100)
            .await
            .map(|_| ())
    }

    /// `openpsd refill`'s first part: the pending orders applied on the PSD.
    fn apply(&mut self) -> Vec<openpsd_host::refill::AppliedRevocation> {
        let ca_pem = self.h.pki.ca_cert();
        let token = self.host.customers.get("acme").1;
        let device = self
            .psd
            .client
            .info()
            .unwrap()
            .expect("personalized")
            .device;
        let url = self.h.meter.url.clone();
        let psd = &mut self.psd.client;
        tokio::task::block_in_place(|| {
            let meter = MeterClient::new(&url, Some(&ca_pem), Some(&token)).unwrap();
            meter
                .apply_revocations(psd, device, RegisterSetIndex(0), &mut |_| {})
                .unwrap()
        })
    }
}

/// Issue 15's review, (e) and (1): an order the PSD asked for itself and never applied (or
/// confirmed) is pending, but never blocks refills — only orders the CA forced do.
#[tokio::test(flavor = "multi_thread")]
async fn an_order_the_psd_asked_for_never_blocks_refills() {
    let grace = 2;
    let mut w = world(grace).await;
    let (slot, serial) = certified_key(&mut w.psd, &w.acme, Purpose::Postmark).await;
    let order = w.psd_asks_revocation(slot).await;
    assert_eq!(order.counter, 1);
    let pending = w.pending().await;
    assert_eq!(pending.orders.len(), 1, "{pending:?}");
    let p = &pending.orders[0];
    assert_eq!(p.serial, serial);
    assert!(!p.forced, "{p:?}");
    assert!(p.handed_over_at.is_some(), "{p:?}");
    assert_eq!(
        p.refills_refused_from, None,
        "a requested order never blocks"
    );
    tokio::time::sleep(Duration::from_secs(grace + 1)).await;
    w.try_refill("q1")
        .await
        .expect("not blocked by a requested order");
    w.h.stop().await;
}

/// (2): the grace period counts from the order's first hand-over to the meter, not from
/// its creation: an order the CA made long before the device's next contact does not
/// refuse that contact's refill.
#[tokio::test(flavor = "multi_thread")]
async fn the_grace_period_counts_from_the_first_hand_over() {
    let grace = 2;
    let mut w = world(grace).await;
    let (_, serial) = certified_key(&mut w.psd, &w.acme, Purpose::Postmark).await;
    w.operator_revokes(&serial).await;
    // No contact for longer than the grace period.
    tokio::time::sleep(Duration::from_secs(grace + 1)).await;
    w.try_refill("q1")
        .await
        .expect("the first hand-over starts the grace period");
    let p = w.pending().await.orders.remove(0);
    assert!(p.forced);
    let handed = p.handed_over_at.expect("handed over");
    assert!(handed >= p.created_at + grace, "{p:?}");
    assert_eq!(p.refills_refused_from, Some(handed + grace));
    tokio::time::sleep(Duration::from_secs(grace + 1)).await;
    let refused = w.try_refill("q2").await.unwrap_err();
    assert_eq!(
        (refused.status, refused.code.as_str()),
        (409, "revocation_overdue"),
        "{refused:?}"
    );
    w.h.stop().await;
}

/// (a) and (3): a forced order the PSD can never apply — the PSD applied its own later
/// order first, so REVOKE KEY answers `9A41` — blocks refills once the grace period is
/// over, until the operator closes it (`backoffice ca close-order`); the certificate stays
/// revoked.
#[tokio::test(flavor = "multi_thread")]
async fn the_operator_closes_an_order_the_psd_cannot_apply() {
    let grace = 2;
    let mut w = world(grace).await;
    let (_, serial_a) = certified_key(&mut w.psd, &w.acme, Purpose::Postmark).await;
    let (slot_b, serial_b) = certified_key(&mut w.psd, &w.acme, Purpose::Sign).await;
    // The operator's order (1) and the PSD's own (2), applied first.
    w.operator_revokes(&serial_a).await;
    let own = w.psd_asks_revocation(slot_b).await;
    assert_eq!(own.counter, 2);
    let (confirmation, _) = w
        .psd
        .client
        .revoke_key(RegisterSetIndex(0), &hex::decode(&own.order).unwrap())
        .unwrap();
    let _: RevocationRecord = w
        .acme
        .post(
            "/v1/revocations/confirmations",
            &MeterRevocationConfirmation {
                device_id: w.psd.device_id(),
                confirmation: hex::encode(&confirmation),
            },
        )
        .await
        .unwrap();
    // Order 1 can never be applied now.
    let applied = w.apply();
    assert_eq!(applied.len(), 1);
    assert_eq!(applied[0].counter, 1);
    let refused = applied[0].result.as_ref().unwrap_err();
    assert!(refused.contains("NotNewer"), "{refused}");
    tokio::time::sleep(Duration::from_secs(grace + 1)).await;
    let blocked = w.try_refill("q1").await.unwrap_err();
    assert_eq!(
        (blocked.status, blocked.code.as_str()),
        (409, "revocation_overdue")
    );

    // Only the operator closes it; the meter (the host's voice) cannot.
    let meter_as_caller = Client::new(&w.h.ca.url, &w.h.pki, Some(Role::Meter));
    let close_path = format!("/v1/certificates/{serial_a}/revocation-order/close");
    let body = serde_json::json!({ "reason": "the PSD applied a later order first (9A41)" });
    let no = meter_as_caller
        .post::<_, serde_json::Value>(&close_path, &body)
        .await
        .unwrap_err();
    assert_eq!(no.status, 403, "{no:?}");
    let bad = w
        .operator
        .post::<_, serde_json::Value>(&close_path, &serde_json::json!({ "reason": " " }))
        .await
        .unwrap_err();
    assert_eq!(bad.status, 400, "{bad:?}");
    let confirmed = w
        .operator
        .post::<_, serde_json::Value>(
            &format!("/v1/certificates/{serial_b}/revocation-order/close"),
            &body,
        )
        .await
        .unwrap_err();
    assert_eq!(
        (confirmed.status, confirmed.code.as_str()),
        (409, "revocation_confirmed"),
        "{confirmed:?}"
    );
    let none = w
        .operator
        .post::<_, serde_json::Value>("/v1/certificates/0bad/revocation-order/close", &body)
        .await
        .unwrap_err();
    assert_eq!(none.status, 404, "{none:?}");

    // The operator's CLI.
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_backoffice"))
            .args(["ca", "--ca", &w.h.ca.url, "--pki"])
            .arg(w.h.pki.dir())
            .args([
                "close-order",
                &serial_a,
                "--reason",
                "the PSD applied a later order first (9A41)",
                "--json",
            ])
            .output()
            .unwrap()
    };
    let out = run();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let view: RevocationOrderView = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (view.counter, view.serial.as_str(), view.forced),
        (1, serial_a.as_str(), true)
    );
    assert_eq!(view.closed_by.as_deref(), Some("operator"));
    assert!(view.closed_at.is_some() && view.confirmed_at.is_none());
    // Closed again: the same record.
    let again: RevocationOrderView = serde_json::from_slice(&run().stdout).unwrap();
    assert_eq!(again, view);

    // Nothing pending, refills go through; the certificate stays revoked.
    assert!(w.pending().await.orders.is_empty());
    w.try_refill("q1")
        .await
        .expect("the closed order no longer blocks");
    w.h.stop().await;
}

/// (b): a forced order whose slot GENERATE KEY has reused (the PSD answers `9A44`) is
/// closed by the CA itself once it certifies the later key in that slot: the PSD's
/// device-signed attestation proves the revoked key is erased.
#[tokio::test(flavor = "multi_thread")]
async fn the_ca_closes_an_order_whose_slot_holds_a_later_attested_key() {
    let grace = 2;
    let mut w = world(grace).await;
    let (slot_a, serial_a) = certified_key(&mut w.psd, &w.acme, Purpose::Postmark).await;
    w.operator_revokes(&serial_a).await;
    assert_eq!(w.pending().await.orders.len(), 1);
    // A newer postmark key retires A; two sign keys fill the four slots (the first
    // retired by the second).
    certified_key(&mut w.psd, &w.acme, Purpose::Postmark).await;
    certified_key(&mut w.psd, &w.acme, Purpose::Sign).await;
    certified_key(&mut w.psd, &w.acme, Purpose::Sign).await;
    tokio::time::sleep(Duration::from_secs(grace + 1)).await;
    let blocked = w.try_refill("q1").await.unwrap_err();
    assert_eq!(
        (blocked.status, blocked.code.as_str()),
        (409, "revocation_overdue")
    );
    // The next postmark key takes A's retired slot: REVOKE KEY answers 9A44 from now on.
    let (reused, _) = certified_key(&mut w.psd, &w.acme, Purpose::Postmark).await;
    assert_eq!(reused, slot_a, "GENERATE KEY reused A's slot");
    assert!(w.pending().await.orders.is_empty(), "closed by the CA");
    let applied = w.apply();
    assert!(applied.is_empty(), "{applied:?}");
    w.try_refill("q1").await.expect("no longer blocked");
    w.h.stop().await;
}

/// (d) and (c): a forced order for a certificate the PSD never installed (`9A44`) and one
/// the PSD applied whose confirmation was lost before a later order was applied (`9A41`:
/// the PSD keeps only the last confirmation) both block refills after the grace period,
/// until the operator closes them.
#[tokio::test(flavor = "multi_thread")]
async fn orders_never_installed_or_with_a_lost_confirmation_are_closed_by_the_operator() {
    let grace = 2;
    let mut w = world(grace).await;
    let (_, serial_a) = certified_key(&mut w.psd, &w.acme, Purpose::Postmark).await;
    let (_, serial_c) = certified_key(&mut w.psd, &w.acme, Purpose::Sign).await;
    // D: generated and certified, never installed (its slot stays pending).
    let (attestation, _) = w.psd.client.generate_key(Purpose::Postmark, false).unwrap();
    let d: CertificateAnswer = w
        .acme
        .post(
            "/v1/certificates",
            &MeterCertificateRequest {
                device_id: w.psd.device_id(),
                attestation: hex::encode(&attestation),
            },
        )
        .await
        .unwrap();
    for serial in [&d.serial, &serial_a, &serial_c] {
        w.operator_revokes(serial).await;
    }
    let pending = w.pending().await;
    let order = |n: u32| hex::decode(&pending.orders[n as usize - 1].order).unwrap();
    // D's order: the slot holds no certificate (9A44).
    let no = w
        .psd
        .client
        .revoke_key(RegisterSetIndex(0), &order(1))
        .unwrap_err();
    assert!(format!("{no:?}").contains("CertificateMismatch"), "{no:?}");
    // Order 2 applied, its confirmation lost; order 3 applied and confirmed.
    w.psd
        .client
        .revoke_key(RegisterSetIndex(0), &order(2))
        .unwrap();
    let (c3, _) = w
        .psd
        .client
        .revoke_key(RegisterSetIndex(0), &order(3))
        .unwrap();
    let _: RevocationRecord = w
        .acme
        .post(
            "/v1/revocations/confirmations",
            &MeterRevocationConfirmation {
                device_id: w.psd.device_id(),
                confirmation: hex::encode(&c3),
            },
        )
        .await
        .unwrap();
    let applied = w.apply();
    let refused: Vec<(u32, String)> = applied
        .iter()
        .map(|a| (a.counter, a.result.clone().unwrap_err()))
        .collect();
    assert_eq!(refused.len(), 2, "{refused:?}");
    // Both below the counter applied since: 9A41 (the counter is checked first).
    assert_eq!(
        refused,
        [(1, "NotNewer".to_owned()), (2, "NotNewer".to_owned())]
    );
    tokio::time::sleep(Duration::from_secs(grace + 1)).await;
    let blocked = w.try_refill("q1").await.unwrap_err();
    assert_eq!(
        (blocked.status, blocked.code.as_str()),
        (409, "revocation_overdue")
    );
    for (serial, why) in [
        (&d.serial, "never installed (9A44)"),
        (&serial_a, "applied, confirmation lost (9A41)"),
    ] {
        let v: RevocationOrderView = w
            .operator
            .post(
                &format!("/v1/certificates/{serial}/revocation-order/close"),
                &serde_json::json!({ "reason": why }),
            )
            .await
            .unwrap();
        assert_eq!(v.close_reason.as_deref(), Some(why));
    }
    assert!(w.pending().await.orders.is_empty());
    w.try_refill("q1").await.expect("no longer blocked");
    w.h.stop().await;
}
