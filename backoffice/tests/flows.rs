//! Remote refill end to end over HTTP: meter server, KMS and recharging center started
//! in-process on loopback ports with their SQLite files in a temporary directory, and real
//! PSD cards driven through the host library. The happy path, then every attack refused
//! with nothing credited and nothing charged.
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{env, expect_refused, parties, Env, Psd};
use openpsd_backoffice::spawn_all;
use openpsd_core::crypto::IndiciumKey;
use openpsd_core::Status;
use openpsd_protocol::{Combination, HoldRequest, SignedCombination};

/// A registered card and a funded account.
async fn card(env: &Env, n: u32, account: &str, deposit: u64) -> Psd {
    let psd = Psd::new(n, 0, &env.kms());
    env.admin.register_to(&psd, account).await;
    env.admin.fund(account, deposit).await;
    psd
}

#[tokio::test(flavor = "multi_thread")]
async fn happy_path_credits_the_card_and_debits_the_deposit_exactly() {
    let env = env().await;
    let mut psd = card(&env, 1, "acme", 10_000).await;
    let dev = psd.device_id();

    let v = env
        .host
        .request("t1", &dev, 0, "acme", 2_500)
        .await
        .unwrap();
    assert_eq!(v.state, "awaiting_audit");
    assert_eq!(v.nonce.len(), 32);
    let audit = psd.audit(0, &v.nonce);
    let v = env.host.audit("t1", &audit).await.unwrap();
    assert_eq!(v.state, "message_issued");
    assert_eq!(v.combination_id.as_ref().unwrap().len(), 16);
    // Held, not yet debited.
    let a = env.admin.account("acme").await;
    assert_eq!((a.available, a.held, a.debited), (7_500, 2_500, 0));

    let regs = psd.refill(0, v.refill_message.as_ref().unwrap()).unwrap();
    assert_eq!(
        (regs.dr.0, regs.control_sum.0, regs.refills.0),
        (2_500, 2_500, 1)
    );
    // The receipt renews the inspection: the card now reports today as last inspection.
    psd.receipt(v.receipt.as_ref().unwrap()).unwrap();
    let info = psd.client.info().unwrap().unwrap();
    assert_eq!(
        info.last_inspection,
        Some(openpsd_service_kit::codec::today_utc())
    );
    let confirm_audit = psd.audit(0, v.confirm_nonce.as_ref().unwrap());
    let done = env.host.confirm("t1", &confirm_audit).await.unwrap();
    assert_eq!(done.state, "completed");

    let a = env.admin.account("acme").await;
    assert_eq!(
        (a.available, a.held, a.debited, a.deposited),
        (7_500, 0, 2_500, 10_000)
    );
    assert_eq!(psd.registers(0).dr.0, 2_500);

    // Everything is idempotent once completed.
    assert_eq!(env.host.status("t1").await.unwrap().state, "completed");
    assert_eq!(
        env.host.confirm("t1", &confirm_audit).await.unwrap().state,
        "completed"
    );
    let again = env
        .host
        .request("t1", &dev, 0, "acme", 2_500)
        .await
        .unwrap();
    assert_eq!(again.refill_message, v.refill_message);

    // A second refill follows from the history the first one left.
    let v2 = env
        .host
        .refill(&mut psd, "t2", "acme", 1_000)
        .await
        .unwrap();
    assert_eq!(v2.state, "completed");
    assert_eq!(psd.registers(0).control_sum.0, 3_500);
    let l = env.admin.assert_reconciled(&mut [&mut psd]).await;
    assert_eq!((l.debited, l.available), (3_500, 6_500));
    env.handles.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn replayed_refill_message_is_refused_by_the_card_and_charges_nothing() {
    let env = env().await;
    let mut psd = card(&env, 2, "acme", 10_000).await;
    let v = env
        .host
        .refill(&mut psd, "t1", "acme", 2_000)
        .await
        .unwrap();
    let first = env.admin.ledger().await;
    let message = env.host.status("t1").await.unwrap().refill_message.unwrap();
    assert_eq!(psd.refill(0, &message), Err(Status::RefillReplayed)); // 9A12
    assert_eq!(Status::RefillReplayed.sw(), 0x9A12);
    assert_eq!(psd.registers(0).control_sum.0, 2_000);
    assert_eq!(env.admin.ledger().await, first);
    // Posting the old audit or confirmation again changes nothing either.
    assert_eq!(env.host.status("t1").await.unwrap(), v);
    env.admin.assert_reconciled(&mut [&mut psd]).await;
    env.handles.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn message_for_another_device_is_refused() {
    let env = env().await;
    let mut a = card(&env, 3, "acme", 10_000).await;
    let mut b = Psd::new(4, 0, &env.kms());
    env.admin.register(&b).await;

    let v = env
        .host
        .request("ta", &a.device_id(), 0, "acme", 1_500)
        .await
        .unwrap();
    let audit = a.audit(0, &v.nonce);
    let v = env.host.audit("ta", &audit).await.unwrap();
    // B cannot use A's message: the KMS's signature holds for every device, but the
    // message names A, and B checks that before anything is credited.
    assert_eq!(
        b.refill(0, v.refill_message.as_ref().unwrap()),
        Err(Status::WrongDevice)
    );
    assert_eq!(b.credited(), 0);

    // Nor can a refill for B be made from A's audit.
    let vb = env
        .host
        .request("tb", &b.device_id(), 0, "acme", 1_500)
        .await
        .unwrap();
    let a_audit = a.audit(0, &vb.nonce);
    let e = expect_refused(
        env.host.audit("tb", &a_audit).await,
        422,
        "audit_inconsistent",
    );
    assert_eq!(e.step, "meter_check_audit");
    assert_eq!(env.admin.ledger().await.held, 1_500); // only A's hold

    // A's refill still completes, and only it is charged.
    env.host.apply_and_confirm(&mut a, &v).await.unwrap();
    let l = env.admin.assert_reconciled(&mut [&mut a, &mut b]).await;
    assert_eq!(l.debited, 1_500);
    env.handles.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn changed_amount_is_refused_by_the_card() {
    let env = env().await;
    let mut psd = card(&env, 5, "acme", 10_000).await;
    let v = env
        .host
        .request("t1", &psd.device_id(), 0, "acme", 1_000)
        .await
        .unwrap();
    let audit = psd.audit(0, &v.nonce);
    let v = env.host.audit("t1", &audit).await.unwrap();
    let mut msg = hex::decode(v.refill_message.as_ref().unwrap()).unwrap();
    // Amount: bytes 14..22 (tag, version, device 8, license 4); 1000 -> 100000.
    msg[14..22].copy_from_slice(&100_000u64.to_be_bytes());
    assert_eq!(
        psd.refill(0, &hex::encode(&msg)),
        Err(Status::SecurityStatusNotSatisfied)
    );
    assert_eq!(psd.credited(), 0);
    // The host cannot confirm what the card does not show.
    let audit = psd.audit(0, v.confirm_nonce.as_ref().unwrap());
    expect_refused(env.host.confirm("t1", &audit).await, 409, "not_applied");
    let l = env.admin.ledger().await;
    assert_eq!((l.debited, l.held), (0, 1_000));
    // The genuine message still applies, for the amount paid.
    env.host.apply_and_confirm(&mut psd, &v).await.unwrap();
    env.admin.assert_reconciled(&mut [&mut psd]).await;
    env.handles.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_audit_signature_is_refused_and_nothing_is_held() {
    let env = env().await;
    let mut psd = card(&env, 6, "acme", 10_000).await;
    let v = env
        .host
        .request("t1", &psd.device_id(), 0, "acme", 1_000)
        .await
        .unwrap();
    let audit = psd.audit(0, &v.nonce);
    let mut bytes = hex::decode(&audit).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1; // the signature
    let e = expect_refused(
        env.host.audit("t1", &hex::encode(&bytes)).await,
        422,
        "audit_signature_invalid",
    );
    assert_eq!(e.step, "kms_verify_audit");
    // A register changed (DR raised) under the original signature.
    let mut bytes = hex::decode(&audit).unwrap();
    bytes[31] ^= 0x40;
    expect_refused(
        env.host.audit("t1", &hex::encode(&bytes)).await,
        422,
        "audit_signature_invalid",
    );
    // Garbage.
    expect_refused(env.host.audit("t1", "a1").await, 400, "audit_malformed");
    expect_refused(env.host.audit("t1", "xyz").await, 400, "bad_request");
    let l = env.admin.ledger().await;
    assert_eq!((l.held, l.debited), (0, 0));
    assert_eq!(env.host.status("t1").await.unwrap().state, "awaiting_audit");
    // The genuine audit still goes through.
    env.host.audit("t1", &audit).await.unwrap();
    env.handles.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_with_rolled_back_registers_is_refused() {
    let env = env().await;
    let mut psd = card(&env, 7, "acme", 10_000).await;
    let before_refill = psd.snapshot();
    env.host
        .refill(&mut psd, "t1", "acme", 2_000)
        .await
        .unwrap();
    let funded = psd.snapshot();
    psd.frank(1, 85).unwrap();
    // The meter sees AR 0.85, one piece.
    env.host.inspect(&mut psd, 0).await.unwrap();

    // Back to before the indicium: AR and piece count went down.
    psd.roll_back(&funded);
    let v = env
        .host
        .request("t2", &psd.device_id(), 0, "acme", 1_000)
        .await
        .unwrap();
    let audit = psd.audit(0, &v.nonce);
    let e = expect_refused(
        env.host.audit("t2", &audit).await,
        422,
        "audit_inconsistent",
    );
    assert!(e.message.contains("AR went down"), "{e:?}");
    // A verified audit that disagrees with the ledger is an alarm: the device is
    // quarantined until an operator resolves it.
    let alarms = env.admin.alarms().await;
    assert_eq!((alarms.raised, alarms.open), (1, 1));
    assert_eq!(alarms.alarms[0].kind, "history");
    expect_refused(
        env.host.audit("t2", &audit).await,
        409,
        "device_quarantined",
    );
    env.admin
        .resolve(&psd.device_id(), "rolled-back card seized; checked", false)
        .await
        .unwrap();
    // Back to before the refill: refill count and control sum went down.
    psd.roll_back(&before_refill);
    let audit = psd.audit(0, &v.nonce);
    expect_refused(
        env.host.audit("t2", &audit).await,
        422,
        "audit_inconsistent",
    );
    assert_eq!(env.admin.alarms().await.open, 1);
    let l = env.admin.ledger().await;
    assert_eq!((l.held, l.debited), (0, 2_000));
    env.handles.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kms_seals_only_combinations_the_recharging_center_signed() {
    let env = env().await;
    let mut psd = card(&env, 8, "acme", 10_000).await;
    let v = env
        .host
        .request("t1", &psd.device_id(), 0, "acme", 1_000)
        .await
        .unwrap();
    let audit = psd.audit(0, &v.nonce);
    let v = env.host.audit("t1", &audit).await.unwrap();
    let regs = psd.registers(0);
    let genuine = Combination {
        device_id: psd.device_id(),
        license: 4711,
        amount: 1_000,
        control_sum: regs.control_sum.0,
        refills: regs.refills.0,
        combination_id: v.combination_id.clone().unwrap(),
    };
    // An insider with the meter's certificate (only the meter may have refills sealed).
    let seal = |c: Combination, signature: String| {
        let kms = env.admin.as_meter(&env.admin.kms);
        async move {
            kms.post::<_, serde_json::Value>(
                "/v1/refill-messages",
                &SignedCombination {
                    combination: c,
                    signature,
                },
            )
            .await
        }
    };
    // No signature, garbage, a signature by another key.
    let e = expect_refused(
        seal(genuine.clone(), String::new()).await,
        403,
        "combination_not_authorized",
    );
    assert_eq!(e.step, "kms_seal");
    expect_refused(
        seal(genuine.clone(), "00".repeat(64)).await,
        403,
        "combination_not_authorized",
    );
    let rogue = IndiciumKey::from_bytes(&[9u8; 32]).unwrap();
    let body = genuine.to_core("t").unwrap().body();
    expect_refused(
        seal(genuine.clone(), hex::encode(rogue.sign(&body))).await,
        403,
        "combination_not_authorized",
    );
    // The RC's genuine signature over another amount.
    let rc = env
        .admin
        .rc
        .get::<serde_json::Value>(&format!("/v1/combinations/{}", genuine.combination_id))
        .await
        .unwrap();
    let rc_sig = rc["signature"].as_str().unwrap().to_owned();
    let mut more = genuine.clone();
    more.amount = 1_000_000;
    expect_refused(
        seal(more, rc_sig.clone()).await,
        403,
        "combination_not_authorized",
    );
    // The genuine combination seals to the very message the meter issued.
    let ok = seal(genuine, rc_sig).await.unwrap();
    assert_eq!(ok["refill_message"].as_str(), v.refill_message.as_deref());
    assert_eq!(psd.credited(), 0);
    env.handles.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kms_down_gives_503_and_holds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut handles = spawn_all(dir.path()).await.unwrap();
    let (host, admin) = parties(
        &handles.meter.url,
        &handles.kms.url,
        &handles.recharge.url,
        &handles.pki,
    );
    let mut psd = Psd::new(9, 0, &handles.kms_public_key);
    admin.register(&psd).await;
    admin.fund("acme", 10_000).await;
    host.refill(&mut psd, "t1", "acme", 1_000).await.unwrap();
    let mut fresh = Psd::new(10, 0, &handles.kms_public_key);
    admin.register(&fresh).await;
    let late = Psd::new(11, 0, &handles.kms_public_key);
    let _: serde_json::Value = admin.kms.post("/v1/devices", &late.secrets).await.unwrap();

    let kms_addr = handles.kms.addr;
    handles.kms.stop().await;
    // Registering at the meter needs the KMS (the device's licenses come from there).
    let e = expect_refused(
        admin
            .meter
            .post::<_, serde_json::Value>(
                "/v1/devices",
                &openpsd_protocol::MeterRegistration {
                    device_id: late.device_id(),
                    account_id: "acme".into(),
                    baselines: vec![],
                },
            )
            .await,
        503,
        "service_unavailable",
    );
    assert_eq!(e.step, "meter_register");
    // A registered device: the request is taken (the meter keeps its licenses), the audit
    // cannot be verified.
    host.request("f1", &fresh.device_id(), 0, "acme", 500)
        .await
        .unwrap();
    // A known device: the request is taken, the audit cannot be verified.
    let v = host
        .request("t2", &psd.device_id(), 0, "acme", 1_000)
        .await
        .unwrap();
    let audit = psd.audit(0, &v.nonce);
    let e = expect_refused(host.audit("t2", &audit).await, 503, "service_unavailable");
    assert_eq!(e.step, "meter_audit");
    let l = admin.ledger().await;
    assert_eq!((l.held, l.debited), (0, 1_000));

    // The KMS comes back on the same address and data: the same transaction finishes.
    handles.kms = openpsd_backoffice::server::start_kms(
        &dir.path().join("kms"),
        &kms_addr.to_string(),
        handles.recharge_public_key,
        None,
        &handles.pki,
        openpsd_backoffice::server::DEFAULT_RATE,
    )
    .await
    .unwrap();
    let v = host.audit("t2", &audit).await.unwrap();
    host.apply_and_confirm(&mut psd, &v).await.unwrap();
    host.refill(&mut fresh, "f1", "acme", 500).await.unwrap();
    admin.assert_reconciled(&mut [&mut psd, &mut fresh]).await;
    handles.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn insufficient_deposit_is_refused_and_holds_nothing() {
    let env = env().await;
    let mut psd = card(&env, 11, "poor", 1_000).await;
    let v = env
        .host
        .request("t1", &psd.device_id(), 0, "poor", 2_500)
        .await
        .unwrap();
    let audit = psd.audit(0, &v.nonce);
    let e = expect_refused(
        env.host.audit("t1", &audit).await,
        402,
        "insufficient_deposit",
    );
    assert_eq!(e.step, "rc_combination");
    // Final for this transaction, and it does not block the device.
    expect_refused(
        env.host.audit("t1", &audit).await,
        402,
        "insufficient_deposit",
    );
    let s = env.host.status("t1").await.unwrap();
    assert_eq!(s.state, "refused");
    assert_eq!(s.error.unwrap().code, "insufficient_deposit");
    let a = env.admin.account("poor").await;
    assert_eq!((a.available, a.held, a.debited), (1_000, 0, 0));
    // An account that is not the customer's (or does not exist): not found, at once.
    let e = expect_refused(
        env.host
            .as_customer("poor")
            .post::<_, openpsd_protocol::RefillView>(
                "/v1/refills",
                &openpsd_protocol::RefillRequest {
                    client_txn_id: "t2".into(),
                    device_id: psd.device_id(),
                    set: 0,
                    account_id: Some("nobody".into()),
                    amount: 100,
                },
            )
            .await,
        404,
        "unknown_account",
    );
    assert_eq!(e.step, "meter_request");
    expect_refused(
        env.host.request("t3", &psd.device_id(), 0, "poor", 0).await,
        400,
        "amount_invalid",
    );
    // What the deposit covers goes through.
    env.host
        .refill(&mut psd, "t4", "poor", 1_000)
        .await
        .unwrap();
    env.admin.assert_reconciled(&mut [&mut psd]).await;
    env.handles.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_requests_for_one_device_make_one_refill_and_one_hold() {
    let env = env().await;
    let mut psd = card(&env, 12, "acme", 100_000).await;
    let dev = psd.device_id();
    let (a, b) = tokio::join!(
        env.host.request("c1", &dev, 0, "acme", 1_000),
        env.host.request("c2", &dev, 0, "acme", 1_000),
    );
    let (winner, loser) = match (a, b) {
        (Ok(w), Err(l)) | (Err(l), Ok(w)) => (w, l),
        other => panic!("expected one refill and one refusal, got {other:?}"),
    };
    assert_eq!(
        (loser.status, loser.code.as_str()),
        (409, "refill_outstanding")
    );
    // The same transaction twice at once is one refill; its audit twice at once one hold.
    let (x, y) = tokio::join!(
        env.host
            .request(&winner.client_txn_id, &dev, 0, "acme", 1_000),
        env.host
            .request(&winner.client_txn_id, &dev, 0, "acme", 1_000),
    );
    assert_eq!(x.unwrap().nonce, winner.nonce);
    assert_eq!(y.unwrap().nonce, winner.nonce);
    let audit = psd.audit(0, &winner.nonce);
    let (x, y) = tokio::join!(
        env.host.audit(&winner.client_txn_id, &audit),
        env.host.audit(&winner.client_txn_id, &audit),
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!(x.refill_message, y.refill_message);
    let l = env.admin.ledger().await;
    assert_eq!((l.combinations_held, l.held), (1, 1_000));
    env.host.apply_and_confirm(&mut psd, &x).await.unwrap();
    // Now the device is free for the next one.
    env.host
        .refill(&mut psd, "c3", "acme", 1_000)
        .await
        .unwrap();
    let l = env.admin.assert_reconciled(&mut [&mut psd]).await;
    assert_eq!(l.debited, 2_000);
    env.handles.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_that_lost_replies_finishes_the_same_refill() {
    let env = env().await;
    let mut psd = card(&env, 13, "acme", 10_000).await;
    let dev = psd.device_id();
    let v = env
        .host
        .request("t1", &dev, 0, "acme", 3_000)
        .await
        .unwrap();
    let audit = psd.audit(0, &v.nonce);
    let issued = env.host.audit("t1", &audit).await.unwrap();
    // Reply lost: the host asks by its transaction ID, every way it can.
    assert_eq!(env.host.status("t1").await.unwrap(), issued);
    assert_eq!(
        env.host
            .request("t1", &dev, 0, "acme", 3_000)
            .await
            .unwrap(),
        issued
    );
    assert_eq!(env.host.audit("t1", &audit).await.unwrap(), issued);
    // A different request under the same ID is not the same refill.
    expect_refused(
        env.host.request("t1", &dev, 0, "acme", 3_001).await,
        409,
        "wrong_state",
    );
    // Confirm before applying: not applied.
    let early = psd.audit(0, issued.confirm_nonce.as_ref().unwrap());
    expect_refused(env.host.confirm("t1", &early).await, 409, "not_applied");
    // Another refill of this device has to wait for this one.
    expect_refused(
        env.host.request("t2", &dev, 0, "acme", 1).await,
        409,
        "refill_outstanding",
    );
    // Applied, then the confirmation's reply is lost too: confirming again is the same.
    let done = env.host.apply_and_confirm(&mut psd, &issued).await.unwrap();
    let audit2 = psd.audit(0, issued.confirm_nonce.as_ref().unwrap());
    assert_eq!(env.host.confirm("t1", &audit2).await.unwrap(), done);
    let l = env.admin.assert_reconciled(&mut [&mut psd]).await;
    assert_eq!(l.debited, 3_000);
    env.handles.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refill_whose_count_another_combination_consumed_is_released() {
    let env = env().await;
    let mut psd = card(&env, 14, "acme", 10_000).await;
    let dev = psd.device_id();
    let v = env
        .host
        .request("t1", &dev, 0, "acme", 3_000)
        .await
        .unwrap();
    let audit = psd.audit(0, &v.nonce);
    let ours = env.host.audit("t1", &audit).await.unwrap();

    // Someone with access to the RC and the KMS makes a second combination for the same
    // audited state, outside the meter, and the card applies that one instead.
    let regs = psd.registers(0);
    let other: SignedCombination = env
        .admin
        .as_meter(&env.admin.rc)
        .post(
            "/v1/combinations",
            &HoldRequest {
                request_id: "desk/manual-1".into(),
                account_id: env.admin.customers.account("acme"),
                device_id: dev.clone(),
                license: 4711,
                amount: 1_200,
                control_sum: regs.control_sum.0,
                refills: regs.refills.0,
            },
        )
        .await
        .unwrap();
    let msg: serde_json::Value = env
        .admin
        .as_meter(&env.admin.kms)
        .post("/v1/refill-messages", &other)
        .await
        .unwrap();
    psd.refill(0, msg["refill_message"].as_str().unwrap())
        .unwrap();

    // Our message can no longer apply, and the confirmation says so.
    assert_eq!(
        psd.refill(0, ours.refill_message.as_ref().unwrap()),
        Err(Status::RefillReplayed)
    );
    let audit = psd.audit(0, ours.confirm_nonce.as_ref().unwrap());
    let v = env.host.confirm("t1", &audit).await.unwrap();
    assert_eq!(v.state, "released");
    // The hold that became value is debited, ours released.
    let l = env.admin.assert_reconciled(&mut [&mut psd]).await;
    assert_eq!((l.debited, l.combinations_released), (1_200, 1));
    assert_eq!(env.admin.account("acme").await.available, 8_800);
    env.handles.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_inspection_renews_the_psd_and_settles_an_unconfirmed_refill() {
    let env = env().await;
    let mut psd = Psd::new(15, 28, &env.kms());
    env.admin.register(&psd).await;
    env.admin.fund("acme", 10_000).await;
    let dev = psd.device_id();

    // Never inspected: no indicia (9A08).
    assert_eq!(psd.frank(1, 85), Err(Status::InspectionOverdue));

    // A refill the host applies but never confirms.
    let v = env
        .host
        .request("t1", &dev, 0, "acme", 2_000)
        .await
        .unwrap();
    let audit = psd.audit(0, &v.nonce);
    let v = env.host.audit("t1", &audit).await.unwrap();
    psd.refill(0, v.refill_message.as_ref().unwrap()).unwrap();
    assert_eq!(env.admin.ledger().await.held, 2_000);

    // A plain audit: the receipt renews the inspection, and the audit shows the refill
    // applied, so the hold is debited.
    let receipt = env.host.inspect(&mut psd, 0).await.unwrap();
    psd.receipt(&receipt).unwrap();
    psd.frank(1, 85).unwrap();
    assert_eq!(env.host.status("t1").await.unwrap().state, "completed");
    // A receipt is good for the audit it names only.
    assert_eq!(psd.receipt(&receipt), Err(Status::ReceiptForOtherAudit));
    env.admin.assert_reconciled(&mut [&mut psd]).await;
    env.handles.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_name_their_code_and_step() {
    let env = env().await;
    let mut psd = card(&env, 16, "acme", 10_000).await;
    let dev = psd.device_id();
    // A device the meter has no registration of is refused before anything is asked.
    let e = expect_refused(
        env.host
            .request("t1", "0000000000000000", 0, "acme", 1)
            .await,
        404,
        "unknown_device",
    );
    assert_eq!(e.step, "meter_request");
    // The KMS is the registry of devices: registering one it does not know at the meter
    // is refused by its lookup.
    let e = expect_refused(
        env.admin
            .meter
            .post::<_, serde_json::Value>(
                "/v1/devices",
                &openpsd_protocol::MeterRegistration {
                    device_id: "0000000000000000".into(),
                    account_id: "acme".into(),
                    baselines: vec![],
                },
            )
            .await,
        404,
        "unknown_device",
    );
    assert_eq!(e.step, "kms_device");
    expect_refused(
        env.host.request("t1", &dev, 9, "acme", 1).await,
        400,
        "bad_request",
    );
    expect_refused(
        env.host.request("bad id", &dev, 0, "acme", 1).await,
        400,
        "bad_request",
    );
    expect_refused(env.host.status("nope").await, 404, "unknown_refill");
    let r: Result<serde_json::Value, _> = env
        .host
        .as_customer("acme")
        .post("/v1/refills", &serde_json::json!({"amount": -1}))
        .await;
    expect_refused(r, 400, "bad_request");

    // An audit for another nonce, of another set.
    let v = env.host.request("t1", &dev, 0, "acme", 100).await.unwrap();
    let stale = psd.audit(0, &"00".repeat(16));
    let e = expect_refused(
        env.host.audit("t1", &stale).await,
        422,
        "audit_nonce_mismatch",
    );
    assert_eq!(e.step, "meter_check_audit");
    let other_set = psd.audit(1, &v.nonce);
    expect_refused(
        env.host.audit("t1", &other_set).await,
        422,
        "audit_inconsistent",
    );
    // Confirm before the message.
    expect_refused(env.host.confirm("t1", &stale).await, 409, "wrong_state");

    // Registration: the same again is fine, other keys are a conflict.
    let again = env
        .admin
        .kms
        .post::<_, serde_json::Value>("/v1/devices", &psd.secrets)
        .await;
    assert!(again.is_ok());
    let mut other = psd.secrets.clone();
    other.public_key = hex::encode(IndiciumKey::from_bytes(&[0x22; 32]).unwrap().public_key());
    other.key_id =
        hex::encode(openpsd_core::crypto::key_id(&hex::decode(&other.public_key).unwrap()).0);
    let e = expect_refused(
        env.admin
            .kms
            .post::<_, serde_json::Value>("/v1/devices", &other)
            .await,
        409,
        "device_conflict",
    );
    assert_eq!(e.step, "kms_register");
    env.handles.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_kms_stores_no_device_secret_and_key_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let handles = spawn_all(dir.path()).await.unwrap();
    let (_, admin) = parties(
        &handles.meter.url,
        &handles.kms.url,
        &handles.recharge.url,
        &handles.pki,
    );
    let psd = Psd::new(17, 0, &handles.kms_public_key);
    admin.register(&psd).await;
    // The KMS's row of a device: its ID, public key and licenses; nothing a device keeps
    // secret (the card generated its keys inside and never gave one out).
    let db = rusqlite::Connection::open(dir.path().join("kms/kms.sqlite")).unwrap();
    let stmt = db.prepare("SELECT * FROM devices").unwrap();
    let columns: Vec<String> = stmt.column_names().map(String::from).collect();
    assert!(
        !columns
            .iter()
            .any(|c| c.contains("k1") || c.contains("secret")),
        "{columns:?}"
    );
    let stored: String = db
        .query_row("SELECT public_key FROM devices", [], |r| r.get(0))
        .unwrap();
    assert_eq!(stored, psd.secrets.public_key);
    // The KMS's own signing key is the one whose public half the PSD holds.
    assert_eq!(
        common::kms_public_key_in(&dir.path().join("kms")),
        handles.kms_public_key
    );
    for f in ["kms/kms-signing.key", "recharge/recharge-signing.key"] {
        let mode = std::fs::metadata(dir.path().join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    for (f, mode) in [
        ("kms/kms.sqlite", "wal"),
        ("meter/meter.sqlite", "wal"),
        ("recharge/recharge.sqlite", "wal"),
    ] {
        let c = rusqlite::Connection::open(dir.path().join(f)).unwrap();
        let m: String = c
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(m, mode, "{f}");
    }
    handles.stop().await;
}

/// The host library's own refill client (`openpsd refill`) against the three services,
/// with a card-sim file card run in-process (`InProcess`), then again with the same
/// client transaction ID after a lost reply.
#[tokio::test(flavor = "multi_thread")]
async fn openpsd_host_refill_client_completes_against_the_back_office() {
    use card_sim::os_platform::{Clock, OsPlatform};
    use openpsd_core::types::{Amount, LicenseId, PostalCode, RegisterSetIndex};
    use openpsd_host::refill::{MeterClient, RefillRequest};

    let env = env().await;
    env.admin.fund("acme", 10_000).await;
    let cards = tempfile::tempdir().unwrap();
    let state = cards.path().join("psd");
    // The card-sim card lives on its own thread: it is not `Send`, and the host library's
    // HTTP client is blocking.
    let (tx_secrets, rx_secrets) = std::sync::mpsc::channel();
    let (tx_go, rx_go) = std::sync::mpsc::channel::<(String, std::path::PathBuf, String)>();
    let kms_public_key = env.kms();
    let card = std::thread::spawn(move || {
        let mut sim = card_sim::sim::create_file_card(&state, Clock::System).unwrap();
        let req = card_sim::personalize::Request {
            device: None,
            kms_public_key,
            vendor_public_key: None,
            max_postage: Amount(10_000),
            max_dr: Amount(1_000_000),
            inspection_days: 28,
            licenses: vec![openpsd_core::psd::device::LicenseSlot {
                license: LicenseId(4711),
                origin: PostalCode::new(b"10115").unwrap(),
            }],
            postal_authority: None,
        };
        let mut station = OsPlatform::new(Clock::System);
        let (info, secrets) =
            card_sim::personalize::personalize(&mut sim, &mut station, &req).unwrap();
        tx_secrets.send(secrets).unwrap();
        let (meter_url, ca, token) = rx_go.recv().unwrap();
        let mut psd = openpsd_host::PsdClient::new(Box::new(sim));
        psd.select().unwrap();
        let meter = MeterClient::new(&meter_url, Some(&ca), Some(&token)).unwrap();
        let account_id = meter.me().unwrap().customer.account_id;
        let req = RefillRequest {
            client_txn_id: "host-1".into(),
            account_id: Some(account_id),
            set: RegisterSetIndex(0),
            amount: Amount(2_500),
        };
        let out = meter
            .refill(&mut psd, info.device, &req, &mut |_| {})
            .unwrap();
        // The host runs it again (it lost the outcome): the same refill, not a second one.
        let again = meter
            .refill(&mut psd, info.device, &req, &mut |_| {})
            .unwrap();
        // A plain inspection (`openpsd inspect`) renews the inspection on its own too.
        let inspected = meter
            .inspect(&mut psd, info.device, RegisterSetIndex(0))
            .unwrap();
        (
            out,
            again,
            inspected,
            psd.registers(RegisterSetIndex(0)).unwrap(),
        )
    });
    let secrets = tokio::task::spawn_blocking(move || rx_secrets.recv().unwrap())
        .await
        .unwrap();
    let _: serde_json::Value = env.admin.kms.post("/v1/devices", &secrets).await.unwrap();
    let _: serde_json::Value = env
        .admin
        .meter
        .post(
            "/v1/devices",
            &openpsd_protocol::MeterRegistration {
                device_id: secrets.device_id.clone(),
                account_id: env.admin.customers.account("acme"),
                baselines: vec![],
            },
        )
        .await
        .unwrap();
    tx_go
        .send((
            env.handles.meter.url.clone(),
            env.handles.pki.ca_cert(),
            env.host.customers.get("acme").1,
        ))
        .unwrap();
    let (out, again, inspected, regs) = tokio::task::spawn_blocking(move || card.join().unwrap())
        .await
        .unwrap();
    assert_eq!(out.state, "completed");
    assert!(out.inspection_renewed);
    assert_eq!(again.state, "completed");
    use openpsd_core::platform::Platform;
    assert_eq!(Some(inspected), OsPlatform::default().today());
    assert_eq!(
        (regs.dr.0, regs.control_sum.0, regs.refills.0),
        (2_500, 2_500, 1)
    );
    let l = env.admin.ledger().await;
    assert_eq!((l.debited, l.held, l.combinations_applied), (2_500, 0, 1));
    env.handles.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn recharging_center_books_deposits_once_and_settles_once() {
    use openpsd_protocol::{Account, Deposit, Settle, Settled};
    let env = env().await;
    let mut psd = card(&env, 18, "acme", 5_000).await;
    let rc = &env.admin.rc;
    let acme = env.admin.customers.account("acme");
    // The same payment reference again is the same deposit; with other data a conflict.
    let dep = Deposit {
        amount: 5_000,
        reference: "acme-initial".into(),
    };
    let a: Account = rc
        .post(&format!("/v1/accounts/{acme}/deposits"), &dep)
        .await
        .unwrap();
    assert_eq!(a.deposited, 5_000);
    let other = Deposit {
        amount: 1,
        reference: "acme-initial".into(),
    };
    expect_refused(
        rc.post::<_, Account>(&format!("/v1/accounts/{acme}/deposits"), &other)
            .await,
        409,
        "wrong_state",
    );
    expect_refused(
        rc.post::<_, Account>(
            "/v1/accounts/nobody/deposits",
            &Deposit {
                amount: 1,
                reference: "x".into(),
            },
        )
        .await,
        404,
        "unknown_account",
    );

    let v = env
        .host
        .refill(&mut psd, "t1", "acme", 1_234)
        .await
        .unwrap();
    let id = v.combination_id.unwrap();
    let path = format!("/v1/combinations/{id}/settle");
    // Only the meter settles; the operator's certificate is refused.
    let released = Settle {
        outcome: openpsd_protocol::Outcome::Released,
    };
    expect_refused(
        rc.post::<_, Settled>(&path, &released).await,
        403,
        "forbidden",
    );
    let rc = &env.admin.as_meter(rc);
    let applied = Settle {
        outcome: openpsd_protocol::Outcome::Applied,
    };
    let s: Settled = rc.post(&path, &applied).await.unwrap();
    assert_eq!(s.state, "applied");
    let released = Settle {
        outcome: openpsd_protocol::Outcome::Released,
    };
    let e = expect_refused(
        rc.post::<_, Settled>(&path, &released).await,
        409,
        "wrong_state",
    );
    assert_eq!(e.step, "rc_settle");
    let l = env.admin.assert_reconciled(&mut [&mut psd]).await;
    assert_eq!((l.debited, l.available, l.deposited), (1_234, 3_766, 5_000));
    env.handles.stop().await;
}

/// The issuer (the operator) revokes a device at the KMS: the back office then signs
/// nothing for it — no refill message, no receipt — and the refill ends refused with
/// `device_revoked` before any money is held. (The other devices of the scheme refuse it
/// by the issuer's signed revocation list: `card-sim/tests/revocation.rs`.)
#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_device_gets_no_refill_and_no_money_moves() {
    let env = env().await;
    let mut psd = card(&env, 18, "acme", 10_000).await;
    let dev = psd.device_id();
    let v = env
        .host
        .refill(&mut psd, "t1", "acme", 1_000)
        .await
        .unwrap();
    assert_eq!(v.state, "completed");

    let revoked: serde_json::Value = env
        .admin
        .kms
        .post(
            &format!("/v1/devices/{dev}/revoke"),
            &serde_json::json!({"reason": "reported stolen"}),
        )
        .await
        .expect("the operator revokes");
    assert_eq!(revoked["reason"], "reported stolen");
    // The meter may not revoke (only the issuer's operator).
    let e = expect_refused(
        env.admin
            .as_meter(&env.admin.kms)
            .post::<_, serde_json::Value>(
                &format!("/v1/devices/{dev}/revoke"),
                &serde_json::json!({"reason": "x"}),
            )
            .await,
        403,
        "forbidden",
    );
    assert_eq!(e.code, "forbidden");

    let before = psd.registers(0);
    let ledger = env.admin.ledger().await;
    let e = env
        .host
        .refill(&mut psd, "t2", "acme", 1_000)
        .await
        .unwrap_err();
    assert_eq!(
        (e.status, e.code.as_str()),
        (410, "device_revoked"),
        "{e:?}"
    );
    assert_eq!(psd.registers(0), before, "nothing credited");
    let after = env.admin.ledger().await;
    assert_eq!(
        (after.held, after.debited),
        (ledger.held, ledger.debited),
        "nothing held or debited"
    );
    // Nor an inspection: no receipt renews a revoked device.
    let e = env.host.inspect(&mut psd, 0).await.unwrap_err();
    assert_eq!(
        (e.status, e.code.as_str()),
        (410, "device_revoked"),
        "{e:?}"
    );
    env.handles.stop().await;
}
