//! The post office (issue 13) against a browser PSD, the other half of tests/post.rs's
//! rollback: the wasm crate's `PsdDevice` (the PSD the web demo runs in the page, driven
//! here natively through the same Rust API the JS glue wraps) personalized for the real
//! KMS, registered at the KMS and the meter server as the web demo's personalization room
//! registers it, and refilled through the meter server over mutual TLS the way the page's
//! `meter.js` does. Its holder keeps the saved state (the `saveState()` blob the page seals
//! in IndexedDB) from right after the accepted audit, spends, restores that blob into a
//! fresh device and spends again. The meter server cannot tell (the restored state is the
//! one it accepted last); the post office sees the same piece counts with other content, a
//! conflict, and the meter server quarantines the device before its next receipt.
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use card_sim::personalize::Secrets;
use common::{env, expect_refused, explain, kinds, scan, Env, Refused};
use openpsd_protocol::{InspectionRequest, InspectionView, MeterDevice, MeterRegistration};
use openpsd_protocol::{RefillState, RefillView};
use openpsd_wasm::personalize::build_personalization;
use openpsd_wasm::views::{IndiciumArgs, LicenseArg, PersonalizationArgs};
use openpsd_wasm::PsdDevice;

/// The date the page vouches for: today, as the back office counts it (UTC).
fn today() -> String {
    openpsd_service_kit::codec::today_utc().to_string()
}

/// A browser PSD as the web demo makes one: PERSONALIZE data with the room's limits (one
/// license, 100.00 per piece, 10,000.00 DR, inspection every 28 days) and the KMS's public
/// key, then `Psd.create` with the page's entropy. The device key is made inside.
fn browser_psd(env: &Env, device: &[u8; 8]) -> PsdDevice {
    let built = build_personalization(
        &PersonalizationArgs {
            licenses: vec![LicenseArg {
                license: 4711,
                origin: "10115".into(),
            }],
            max_postage: "100.00".into(),
            max_dr: "10000.00".into(),
            inspection_days: 28,
            device_id: Some(hex::encode(device)),
            kms_public_key: Some(hex::encode(env.kms())),
            vendor_public_key: None,
        },
        &[0x5A; 32],
    )
    .unwrap();
    PsdDevice::create(&built.personalization.0, &[0x01; 32], Some(&today())).unwrap()
}

/// Registers the device as the room's `register` does: at the KMS its key ID and public key
/// (what `psd.info()` answers) with its licenses, at the meter owned by `account`'s customer
/// with zero baselines (a fresh PSD). Answers the device ID.
async fn register(env: &Env, psd: &mut PsdDevice, account: &str) -> String {
    let info = psd.info().unwrap();
    let set = psd.registers(0).unwrap();
    let secrets = Secrets {
        device_id: info.device_id.clone(),
        key_id: info.key_id,
        public_key: info.public_key,
        licenses: vec![(set.license, set.origin)],
        certificate_serial: None,
    };
    let _: serde_json::Value = env.admin.kms.post("/v1/devices", &secrets).await.unwrap();
    let account_id = env.admin.ensure_customer(account).await;
    let _: MeterDevice = env
        .admin
        .meter
        .post(
            "/v1/devices",
            &MeterRegistration {
                device_id: info.device_id.clone(),
                account_id,
                baselines: Vec::new(),
            },
        )
        .await
        .unwrap();
    info.device_id
}

fn bytes(hex_text: &str) -> Vec<u8> {
    hex::decode(hex_text).unwrap()
}

/// One refill of set 0 as `meter.js` runs it: request (nonce), AUDIT, audit (refill
/// message, receipt, confirm nonce), REFILL, RECEIPT, AUDIT of the confirm nonce, confirm.
async fn refill(
    env: &Env,
    psd: &mut PsdDevice,
    device: &str,
    txn: &str,
    amount: u64,
) -> Result<RefillView, Refused> {
    let v = env.host.request(txn, device, 0, "acme", amount).await?;
    assert_eq!(v.state, RefillState::AwaitingAudit, "{v:?}");
    let audit = psd.audit(&bytes(&v.nonce), 0).unwrap();
    let v = env.host.audit(txn, &hex::encode(audit)).await?;
    let message = v.refill_message.as_deref().expect("a refill message");
    psd.apply_refill(&bytes(message), 0).unwrap();
    psd.receipt(&bytes(v.receipt.as_deref().expect("a receipt")))
        .unwrap();
    let confirm = v.confirm_nonce.as_deref().expect("a confirm nonce");
    let audit = psd.audit(&bytes(confirm), 0).unwrap();
    env.host.confirm(txn, &hex::encode(audit)).await
}

/// A plain inspection as `meter.js`'s `inspect` runs it: the receipt's date, once the PSD
/// took it.
async fn inspect(env: &Env, psd: &mut PsdDevice, device: &str) -> Result<String, Refused> {
    let meter = env.host.as_customer("acme");
    let v: InspectionView = meter
        .post(
            "/v1/inspections",
            &InspectionRequest {
                device_id: device.to_owned(),
                set: 0,
            },
        )
        .await?;
    let audit = psd.audit(&bytes(&v.nonce), 0).unwrap();
    let v: InspectionView = meter
        .post(
            &format!("/v1/inspections/{}/audit", v.inspection_id),
            &serde_json::json!({ "audit": hex::encode(audit) }),
        )
        .await?;
    Ok(psd
        .receipt(&bytes(v.receipt.as_deref().expect("a receipt")))
        .unwrap())
}

/// An indicium dated today, as the page's "Frank" issues it: the label's bytes (the
/// barcode: signed bytes ‖ signature) and its piece count.
fn label(psd: &mut PsdDevice, txn: u64, postage: &str) -> (Vec<u8>, u32) {
    let issued = psd
        .issue_indicium(&IndiciumArgs {
            postage: postage.into(),
            date: today(),
            rate: 1,
            origin: "10115".into(),
            destination: "20095".into(),
            transaction_id: Some(format!("{txn:016x}")),
            set: None,
        })
        .unwrap();
    (issued.barcode.0, issued.fields.pieces)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_browser_psd_restored_from_an_old_sealed_blob_is_caught_as_a_conflict_and_quarantined() {
    let env = env().await;
    let (svc, post) = env.start_post().await;
    let mut psd = browser_psd(&env, b"PSDWEB01");
    let device = register(&env, &mut psd, "acme").await;
    assert_eq!(device, hex::encode_upper(b"PSDWEB01"));
    env.admin.fund("acme", 100_000).await;
    let v = refill(&env, &mut psd, &device, "web-fund", 5_000)
        .await
        .unwrap();
    assert_eq!(v.state, RefillState::Completed, "{v:?}");

    // What the page seals in IndexedDB after every call, kept from right after the
    // accepted audit (the refill's confirmation).
    let sealed = psd.save_state().unwrap();
    let funded = psd.registers(0).unwrap();
    assert_eq!(
        (funded.dr.as_str(), funded.pieces, funded.refills),
        ("50.00", 0, 1)
    );
    let (first, pieces): (Vec<Vec<u8>>, Vec<u32>) =
        (1..=2).map(|t| label(&mut psd, t, "1.00")).unzip();
    assert_eq!(pieces, [1, 2]);
    assert_eq!(kinds(&scan(&post, &first).await), ["accepted"; 2]);
    assert!(!env.admin.device(&device).await.quarantined);

    // The holder puts the old blob back (the page reloads with the old storage): a fresh
    // device from it has the spent DR back and prints pieces 1 and 2 again.
    drop(psd);
    let mut restored = PsdDevice::restore(&sealed, &[0x02; 32], Some(&today())).unwrap();
    assert_eq!(restored.registers(0).unwrap(), funded);
    let (second, pieces): (Vec<Vec<u8>>, Vec<u32>) =
        (3..=4).map(|t| label(&mut restored, t, "2.50")).unzip();
    assert_eq!(pieces, [1, 2], "the same piece counts again");
    assert_ne!(first, second, "other content");

    // The back office alone cannot tell: the restored device's audit follows from the
    // state it accepted last, so it is inspected and takes the receipt.
    inspect(&env, &mut restored, &device).await.unwrap();
    assert!(!env.admin.device(&device).await.quarantined);

    // The post office can: the same (device, license, piece) with other content.
    let v = scan(&post, &second).await;
    assert_eq!(kinds(&v), ["conflict"; 2], "{v:?}");
    assert_eq!(
        v.iter().map(|v| v.piece).collect::<Vec<_>>(),
        [Some(1), Some(2)]
    );
    assert!(
        v.iter().all(|v| v
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("rolled back or cloned"))),
        "{v:?}"
    );
    let r = explain(&post, &device).await;
    assert_eq!(
        r.findings
            .iter()
            .map(|f| (f.kind.as_str(), f.license, f.piece, f.reported))
            .collect::<Vec<_>>(),
        [("conflict", 4711, 1, true), ("conflict", 4711, 2, true)],
        "{:?}",
        r.findings
    );

    // The meter server heard it: quarantined, with the post office's alarm (and no other:
    // nothing in the audits gave the rollback away).
    assert!(env.admin.device(&device).await.quarantined);
    let alarms = env.admin.alarms().await;
    let kinds_for_device: Vec<&str> = alarms
        .alarms
        .iter()
        .filter(|a| a.device_id == device)
        .map(|a| a.kind.as_str())
        .collect();
    assert!(!kinds_for_device.is_empty(), "{alarms:?}");
    assert!(
        kinds_for_device.iter().all(|k| *k == "post_office"),
        "{alarms:?}"
    );
    // No next receipt, no refill, until an operator resolves it.
    expect_refused(
        inspect(&env, &mut restored, &device).await,
        409,
        "device_quarantined",
    );
    expect_refused(
        refill(&env, &mut restored, &device, "web-t2", 100).await,
        409,
        "device_quarantined",
    );
    svc.stop().await;
    env.handles.stop().await;
}
