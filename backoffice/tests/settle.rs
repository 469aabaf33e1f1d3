//! Settlement that cannot be outrun (issue 11 items 3 and 4), over HTTP with real SQLite
//! files and real PSDs: registration baselines, cancel before and after the refill message
//! left, the void racing the refill, expiry, alarms and quarantine. After every flow the
//! ledger is exact: for every card, control sum − baseline = Σ applied, and
//! deposited = available + held + debited.
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use openpsd_backoffice::spawn_all;
use openpsd_core::Status;
use openpsd_protocol::{Baseline, Outcome, RefillState, Settle};

/// A card registered to `acme`, which has 10,000 deposited.
async fn card(env: &Env, n: u32) -> Psd {
    let psd = Psd::new(n, 0, &env.kms());
    env.admin.register(&psd).await;
    env.admin.fund("acme", 10_000).await;
    psd
}

/// Request and audit: the refill message has left the back office.
async fn issued(env: &Env, psd: &mut Psd, txn: &str, amount: u64) -> openpsd_protocol::RefillView {
    issued_on(&env.host, psd, txn, amount).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hold_is_not_released_while_its_message_can_still_apply_and_a_void_beats_it() {
    let env = env().await;
    let mut psd = card(&env, 1).await;
    let v = issued(&env, &mut psd, "t1", 1_000).await;

    // The owner cancels after the message left: a void comes back, nothing is released.
    let c = env.host.cancel("t1").await.unwrap();
    assert_eq!(c.state, RefillState::Voiding);
    assert_ne!(c.void_combination_id, c.combination_id);
    assert_eq!(env.admin.ledger().await.held, 1_000, "still held");
    // Cancelling again is the same void.
    assert_eq!(env.host.cancel("t1").await.unwrap(), c);
    // An audit that shows neither applied settles nothing: both can still apply.
    env.host.inspect(&mut psd, 0).await.unwrap();
    let audit = psd.audit(0, c.confirm_nonce.as_deref().unwrap());
    expect_refused(env.host.confirm("t1", &audit).await, 409, "not_applied");
    assert_eq!(env.admin.ledger().await.held, 1_000, "still held");

    // The void applies; the original message is refused by the card from then on.
    let regs = psd.refill(0, c.void_message.as_deref().unwrap()).unwrap();
    assert_eq!((regs.control_sum.0, regs.refills.0), (0, 1));
    assert_eq!(
        psd.refill(0, v.refill_message.as_deref().unwrap()),
        Err(Status::RefillReplayed)
    );
    let audit = psd.audit(0, c.confirm_nonce.as_deref().unwrap());
    let done = env.host.confirm("t1", &audit).await.unwrap();
    assert_eq!(done.state, RefillState::Released);
    let l = env.admin.ledger().await;
    assert_eq!((l.held, l.debited, l.combinations_released), (0, 0, 1));
    env.admin.assert_exact(&mut [&mut psd]).await;

    // The device goes on: a later refill is checked against the void's audit.
    env.host.refill(&mut psd, "t2", "acme", 700).await.unwrap();
    env.admin.assert_exact(&mut [&mut psd]).await;
    assert_eq!(env.admin.alarms().await.raised, 0);
    env.handles.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refill_that_won_the_race_against_its_void_is_charged() {
    let env = env().await;
    let mut psd = card(&env, 2).await;
    let v = issued(&env, &mut psd, "t1", 1_200).await;
    psd.refill(0, v.refill_message.as_deref().unwrap()).unwrap();
    // The cancel comes too late: the void cannot apply any more, the confirmation says so.
    let c = env.host.cancel("t1").await.unwrap();
    assert_eq!(c.state, RefillState::Voiding);
    assert_eq!(
        psd.refill(0, c.void_message.as_deref().unwrap()),
        Err(Status::RefillReplayed)
    );
    let audit = psd.audit(0, c.confirm_nonce.as_deref().unwrap());
    let done = env.host.confirm("t1", &audit).await.unwrap();
    assert_eq!(done.state, RefillState::Completed);
    // A completed refill cannot be cancelled.
    expect_refused(env.host.cancel("t1").await, 409, "wrong_state");
    let l = env.admin.ledger().await;
    assert_eq!((l.held, l.debited), (0, 1_200));
    env.admin.assert_exact(&mut [&mut psd]).await;
    env.handles.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_late_apply_after_the_void_settled_is_refused_by_the_card() {
    let env = env().await;
    let mut psd = card(&env, 3).await;
    let v = issued(&env, &mut psd, "t1", 900).await;
    let c = env.host.cancel("t1").await.unwrap();
    psd.refill(0, c.void_message.as_deref().unwrap()).unwrap();
    let audit = psd.audit(0, c.confirm_nonce.as_deref().unwrap());
    assert_eq!(
        env.host.confirm("t1", &audit).await.unwrap().state,
        RefillState::Released
    );
    // Released, and the message the host still has is worthless.
    assert_eq!(
        psd.refill(0, v.refill_message.as_deref().unwrap()),
        Err(Status::RefillReplayed)
    );
    assert_eq!(psd.credited(), 0);
    env.host.inspect(&mut psd, 0).await.unwrap();
    env.admin.assert_exact(&mut [&mut psd]).await;
    assert_eq!(env.admin.account("acme").await.available, 10_000);
    env.handles.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_before_the_message_left_releases_at_once() {
    let env = env().await;
    let mut psd = card(&env, 4).await;
    let v = env
        .host
        .request("t1", &psd.device_id(), 0, "acme", 500)
        .await
        .unwrap();
    let c = env.host.cancel("t1").await.unwrap();
    assert_eq!(c.state, RefillState::Released);
    assert!(c.refill_message.is_none() && c.void_message.is_none());
    // Its audit comes too late: nothing is made.
    let audit = psd.audit(0, &v.nonce);
    assert_eq!(
        env.host.audit("t1", &audit).await.unwrap().state,
        RefillState::Released
    );
    let l = env.admin.ledger().await;
    assert_eq!(
        (l.held, l.combinations_held, l.combinations_released),
        (0, 0, 0)
    );
    // The device is free for the next refill.
    env.host.refill(&mut psd, "t2", "acme", 500).await.unwrap();
    env.admin.assert_exact(&mut [&mut psd]).await;
    env.handles.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unissued_refills_expire_and_issued_ones_wait_for_an_audit() {
    let dir = tempfile::tempdir().unwrap();
    let h = spawn_all(dir.path()).await.unwrap();
    // A second meter on its own data with a time-to-live of one second.
    let meter = openpsd_meter::Meter::open(&openpsd_meter::Config {
        data: dir.path().join("meter-ttl"),
        kms_url: h.kms.url.clone(),
        recharge_url: h.recharge.url.clone(),
        pki: h.pki.clone(),
        rate: openpsd_backoffice::server::DEFAULT_RATE,
        vendor_url: None,
        pa_url: None,
        ca_url: None,
        creditor_url: None,
    })
    .unwrap()
    .with_unissued_ttl(Duration::from_secs(1));
    let tls = openpsd_service_kit::tls::server_config(
        &h.pki,
        openpsd_service_kit::tls::Role::Meter,
        openpsd_service_kit::tls::ClientAuth::Optional,
    )
    .unwrap();
    let m = openpsd_service_kit::server::Service::spawn(
        "meter",
        openpsd_service_kit::server::bind("127.0.0.1:0", Some(tls))
            .await
            .unwrap(),
        meter.router(),
    )
    .unwrap();
    let (host, admin) = parties(&m.url, &h.kms.url, &h.recharge.url, &h.pki);
    let mut psd = Psd::new(5, 0, &h.kms_public_key);
    admin.register(&psd).await;
    admin.fund("acme", 10_000).await;

    let v = host
        .request("t1", &psd.device_id(), 0, "acme", 400)
        .await
        .unwrap();
    expect_refused(
        host.request("t2", &psd.device_id(), 0, "acme", 400).await,
        409,
        "refill_outstanding",
    );
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    // Its time is up: the next request releases it and goes ahead.
    let v2 = host
        .request("t2", &psd.device_id(), 0, "acme", 400)
        .await
        .unwrap();
    assert_eq!(
        host.status("t1").await.unwrap().state,
        RefillState::Released
    );
    let audit = psd.audit(0, &v.nonce);
    assert_eq!(
        host.audit("t1", &audit).await.unwrap().state,
        RefillState::Released
    );
    // t2's message leaves; from then on only an audit resolves it, however long it takes.
    let audit = psd.audit(0, &v2.nonce);
    let v2 = host.audit("t2", &audit).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    expect_refused(
        host.request("t3", &psd.device_id(), 0, "acme", 400).await,
        409,
        "refill_outstanding",
    );
    assert_eq!(admin.ledger().await.held, 400);
    psd.refill(0, v2.refill_message.as_deref().unwrap())
        .unwrap();
    host.inspect(&mut psd, 0).await.unwrap();
    assert_eq!(
        host.status("t2").await.unwrap().state,
        RefillState::Completed
    );
    admin.assert_exact(&mut [&mut psd]).await;
    m.stop().await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn value_put_on_the_card_before_its_first_audit_is_caught_and_quarantines_it() {
    let env = env().await;
    let mut psd = Psd::new(6, 0, &env.kms());
    // Refilled offline with K1 before the back office ever audited it.
    psd.offline_refill(0, 5_000, [0xEE; 8], &env.kms_signing_key());
    env.admin.register(&psd).await;
    env.admin.fund("acme", 10_000).await;

    let v = env
        .host
        .request("t1", &psd.device_id(), 0, "acme", 1_000)
        .await
        .unwrap();
    let audit = psd.audit(0, &v.nonce);
    let e = expect_refused(
        env.host.audit("t1", &audit).await,
        422,
        "audit_inconsistent",
    );
    assert!(e.message.contains("baseline"), "{e:?}");
    let alarms = env.admin.alarms().await;
    assert_eq!((alarms.raised, alarms.open), (1, 1));
    assert_eq!(alarms.alarms[0].kind, "baseline");
    assert!(env.admin.device(&psd.device_id()).await.quarantined);
    // Quarantined: refills, audits and inspections refused, nothing held.
    expect_refused(
        env.host.audit("t1", &audit).await,
        409,
        "device_quarantined",
    );
    expect_refused(
        env.host
            .request("t2", &psd.device_id(), 0, "acme", 100)
            .await,
        409,
        "device_quarantined",
    );
    expect_refused(
        env.host.inspect(&mut psd, 0).await,
        409,
        "device_quarantined",
    );
    assert_eq!(env.admin.ledger().await.held, 0);
    // A resolution needs a note.
    expect_refused(
        env.admin.resolve(&psd.device_id(), " ", true).await,
        400,
        "bad_request",
    );
    // The operator accepts the card's state: the 50.00 is written off into the baseline.
    let dev = env
        .admin
        .resolve(&psd.device_id(), "issuer funding, booked by hand", true)
        .await
        .unwrap();
    assert!(!dev.quarantined);
    assert_eq!(
        dev.baselines[0],
        Baseline {
            control_sum: 5_000,
            refills: 1
        }
    );
    let alarms = env.admin.alarms().await;
    assert_eq!((alarms.raised, alarms.open), (1, 0));
    assert_eq!(
        alarms.alarms[0].note.as_deref(),
        Some("issuer funding, booked by hand")
    );
    // The refill waiting since then goes through, and the ledger is exact.
    env.host.cancel("t1").await.unwrap();
    env.host
        .refill(&mut psd, "t3", "acme", 1_000)
        .await
        .unwrap();
    env.admin.assert_exact(&mut [&mut psd]).await;
    env.handles.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn funding_registered_as_the_baseline_is_accepted() {
    let env = env().await;
    let mut psd = Psd::new(7, 0, &env.kms());
    psd.offline_refill(0, 5_000, [0xF0; 8], &env.kms_signing_key());
    let baselines = vec![
        Baseline {
            control_sum: 5_000,
            refills: 1,
        },
        Baseline {
            control_sum: 0,
            refills: 0,
        },
    ];
    env.admin
        .register_with(&psd, "acme", baselines.clone())
        .await
        .unwrap();
    env.admin.fund("acme", 10_000).await;
    env.host
        .refill(&mut psd, "t1", "acme", 1_000)
        .await
        .unwrap();
    assert_eq!(psd.registers(0).control_sum.0, 6_000);
    env.admin.assert_exact(&mut [&mut psd]).await;
    // The same registration again is fine; another owner or baseline is a conflict; a
    // baseline per set is required.
    env.admin
        .register_with(&psd, "acme", baselines)
        .await
        .unwrap();
    expect_refused(
        env.admin.register_with(&psd, "other", vec![]).await,
        409,
        "device_conflict",
    );
    let other = Psd::new(8, 0, &env.kms());
    expect_refused(
        env.admin
            .register_with(
                &other,
                "acme",
                vec![Baseline {
                    control_sum: 0,
                    refills: 0,
                }],
            )
            .await,
        400,
        "bad_request",
    );
    env.handles.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unregistered_devices_and_other_accounts_are_unknown() {
    let env = env().await;
    let mut psd = Psd::new(9, 0, &env.kms());
    // At the KMS only: the meter does not serve it.
    let _: serde_json::Value = env
        .admin
        .kms
        .post("/v1/devices", &psd.secrets)
        .await
        .unwrap();
    env.admin.fund("acme", 10_000).await;
    expect_refused(
        env.host
            .request("t1", &psd.device_id(), 0, "acme", 100)
            .await,
        404,
        "unknown_device",
    );
    expect_refused(env.host.inspect(&mut psd, 0).await, 404, "unknown_device");
    env.admin.register_to(&psd, "acme").await;
    // Someone else's account: exactly the unknown device's answer.
    env.admin.ensure_customer("mallory").await;
    let e = expect_refused(
        env.host
            .request("t1", &psd.device_id(), 0, "mallory", 100)
            .await,
        404,
        "unknown_device",
    );
    assert!(!e.message.contains("acme"), "{e:?}");
    env.host.refill(&mut psd, "t1", "acme", 100).await.unwrap();
    env.admin.assert_exact(&mut [&mut psd]).await;
    env.handles.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn value_the_recharging_center_released_behind_the_meter_raises_an_alarm() {
    let env = env().await;
    let mut psd = card(&env, 10).await;
    let v = issued(&env, &mut psd, "t1", 1_000).await;
    // The operator may not settle at the RC: only the meter may.
    let path = format!(
        "/v1/combinations/{}/settle",
        v.combination_id.as_deref().unwrap()
    );
    let released = Settle {
        outcome: Outcome::Released,
    };
    expect_refused(
        env.admin
            .rc
            .post::<_, serde_json::Value>(&path, &released)
            .await,
        403,
        "forbidden",
    );
    // Someone with the meter's stolen certificate settles behind the meter's back: the
    // meter catches it at the next audit.
    let _: serde_json::Value = env
        .admin
        .as_meter(&env.admin.rc)
        .post(
            &format!(
                "/v1/combinations/{}/settle",
                v.combination_id.as_deref().unwrap()
            ),
            &Settle {
                outcome: Outcome::Released,
            },
        )
        .await
        .unwrap();
    psd.refill(0, v.refill_message.as_deref().unwrap()).unwrap();
    let audit = psd.audit(0, v.confirm_nonce.as_deref().unwrap());
    let e = expect_refused(
        env.host.confirm("t1", &audit).await,
        422,
        "audit_inconsistent",
    );
    assert!(e.message.contains("will not debit"), "{e:?}");
    let alarms = env.admin.alarms().await;
    assert_eq!(
        (alarms.open, alarms.alarms[0].kind.as_str()),
        (1, "settle_refused")
    );
    expect_refused(
        env.host.confirm("t1", &audit).await,
        409,
        "device_quarantined",
    );
    expect_refused(
        env.host
            .request("t2", &psd.device_id(), 0, "acme", 100)
            .await,
        409,
        "device_quarantined",
    );
    env.handles.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn databases_from_before_voids_and_registrations_open_and_need_a_registration() {
    let dir = tempfile::tempdir().unwrap();
    let h = spawn_all(dir.path()).await.unwrap();
    let (host, admin) = parties(&h.meter.url, &h.kms.url, &h.recharge.url, &h.pki);
    let mut psd = Psd::new(11, 0, &h.kms_public_key);
    admin.register(&psd).await;
    admin.fund("acme", 10_000).await;
    host.refill(&mut psd, "t1", "acme", 800).await.unwrap();
    h.stop().await;
    // Back to the first stored format: no void columns, no registrations.
    let meter = rusqlite::Connection::open(dir.path().join("meter/meter.sqlite")).unwrap();
    meter
        .execute_batch(
            "DROP INDEX refills_void;
             ALTER TABLE refills DROP COLUMN void_combination_id;
             ALTER TABLE refills DROP COLUMN void_signature;
             ALTER TABLE refills DROP COLUMN void_message;
             DROP TABLE registrations; DROP TABLE baselines; DROP TABLE alarms;",
        )
        .unwrap();
    drop(meter);
    let rc = rusqlite::Connection::open(dir.path().join("recharge/recharge.sqlite")).unwrap();
    rc.execute_batch(
        "DROP INDEX combinations_void;
         ALTER TABLE combinations DROP COLUMN void_combination_id;
         ALTER TABLE combinations DROP COLUMN void_signature;",
    )
    .unwrap();
    drop(rc);

    let h = spawn_all(dir.path()).await.unwrap();
    let (host, admin) = parties_again(
        &h.meter.url,
        &h.kms.url,
        &h.recharge.url,
        &h.pki,
        &admin.customers,
    );
    // The old refill reads back; the device is served again once an operator registers it,
    // and its history goes on from its last accepted audit.
    assert_eq!(
        host.status("t1").await.unwrap().state,
        RefillState::Completed
    );
    expect_refused(
        host.request("t2", &psd.device_id(), 0, "acme", 300).await,
        404,
        "unknown_device",
    );
    admin.register(&psd).await;
    let v = issued_on(&host, &mut psd, "t2", 300).await;
    let c = host.cancel("t2").await.unwrap();
    psd.refill(0, c.void_message.as_deref().unwrap()).unwrap();
    assert_eq!(
        psd.refill(0, v.refill_message.as_deref().unwrap()),
        Err(Status::RefillReplayed)
    );
    let audit = psd.audit(0, c.confirm_nonce.as_deref().unwrap());
    assert_eq!(
        host.confirm("t2", &audit).await.unwrap().state,
        RefillState::Released
    );
    admin.assert_exact(&mut [&mut psd]).await;
    h.stop().await;
}

async fn issued_on(
    host: &Host,
    psd: &mut Psd,
    txn: &str,
    amount: u64,
) -> openpsd_protocol::RefillView {
    let v = host
        .request(txn, &psd.device_id(), 0, "acme", amount)
        .await
        .unwrap();
    let audit = psd.audit(0, &v.nonce);
    let v = host.audit(txn, &audit).await.unwrap();
    assert_eq!(v.state, RefillState::MessageIssued);
    v
}

/// `openpsd refill --cancel`: the host library's cancel applies the void on the PSD, audits
/// and confirms; run again, it answers the same outcome.
#[tokio::test(flavor = "multi_thread")]
async fn the_host_library_cancels_through_the_void() {
    let env = env().await;
    let mut psd = card(&env, 12).await;
    let v = issued(&env, &mut psd, "t1", 600).await;
    let meter = openpsd_host::refill::MeterClient::new(
        &env.handles.meter.url,
        Some(&env.handles.pki.ca_cert()),
        Some(&env.host.customers.get("acme").1),
    )
    .unwrap();
    // The library is blocking (ureq); the services run on the other workers.
    let out =
        tokio::task::block_in_place(|| meter.cancel(&mut psd.client, "t1", &mut |_| {})).unwrap();
    assert_eq!(out.state, RefillState::Released);
    assert_eq!(
        (out.registers.control_sum.0, out.registers.refills.0),
        (0, 1)
    );
    assert_eq!(
        psd.refill(0, v.refill_message.as_deref().unwrap()),
        Err(Status::RefillReplayed)
    );
    let again =
        tokio::task::block_in_place(|| meter.cancel(&mut psd.client, "t1", &mut |_| {})).unwrap();
    assert_eq!(again.state, RefillState::Released);
    // Not issued yet: released at once, the card untouched.
    env.host
        .request("t2", &psd.device_id(), 0, "acme", 600)
        .await
        .unwrap();
    let out =
        tokio::task::block_in_place(|| meter.cancel(&mut psd.client, "t2", &mut |_| {})).unwrap();
    assert_eq!(out.state, RefillState::Released);
    assert_eq!(out.registers.refills.0, 1);
    env.admin.assert_exact(&mut [&mut psd]).await;
    assert_eq!(env.admin.ledger().await.held, 0);
    env.handles.stop().await;
}
