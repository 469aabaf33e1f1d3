//! Fig. 4 of seed 003 end to end, with a real PSD: the card's LICENSE REQUEST, the meter
//! server's `/v1/licenses` as the customer who owns the device, the vendor and the postal
//! authority as services, and the card's LICENSE INSTALL; then Fig. 5's export and import
//! of the new set. Every service runs as it does apart (mutual TLS, its own database).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{parties, Psd};
use openpsd_backoffice::server::spawn_all;
use openpsd_core::psd::license::export::Blob;
use openpsd_core::psd::license::install::Install;
use openpsd_core::psd::license::request::LicenseAsk;
use openpsd_core::psd::license::SlotInfo;
use openpsd_core::types::*;
use openpsd_protocol::license::{LicenseGrant, MeterLicenseOrder};

#[tokio::test(flavor = "multi_thread")]
async fn fig4_a_psd_asks_the_meter_and_installs_the_grant() {
    let dir = tempfile::tempdir().unwrap();
    let h = spawn_all(dir.path()).await.unwrap();
    let (host, admin) = parties(&h.meter.url, &h.kms.url, &h.recharge.url, &h.pki);
    let mut psd = Psd::licensed(1, &h);
    admin.register(&psd).await;
    let acme = host.as_customer("acme");

    // Steps 60-62: the PSD makes the key and signs.
    let ask = LicenseAsk {
        license: LicenseId(0),
        origin: PostalCode::new(b"53113").unwrap(),
    };
    let request = psd.client.license_request(&ask, false).unwrap();
    let order = MeterLicenseOrder {
        client_txn_id: "lic-1".into(),
        device_id: psd.device_id(),
        request: hex::encode(request.encode()),
    };
    // Steps 63-66 through the meter; the same order again answers the same grant.
    let grant: LicenseGrant = acme.post("/v1/licenses", &order).await.unwrap();
    let again: LicenseGrant = acme.post("/v1/licenses", &order).await.unwrap();
    assert_eq!(grant, again);
    assert_eq!(grant.fields.origin, "53113");
    assert!(grant.certificate.starts_with("-----BEGIN CERTIFICATE-----"));
    // Another customer may not order for acme's device; the same ID for another order is
    // refused.
    admin.ensure_customer("bob").await;
    let other = host.as_customer("bob");
    let refused = other.post::<_, LicenseGrant>("/v1/licenses", &order).await;
    assert_eq!(refused.unwrap_err().status, 404);
    let replaced = psd.client.license_request(&ask, true).unwrap();
    let reuse = MeterLicenseOrder {
        request: hex::encode(replaced.encode()),
        ..order.clone()
    };
    assert_eq!(
        acme.post::<_, LicenseGrant>("/v1/licenses", &reuse)
            .await
            .unwrap_err()
            .status,
        409
    );

    // The replaced request's grant is refused by the card (its key is forgotten); the new
    // request's grant installs (step 67).
    let old = Install::decode(&hex::decode(&grant.install).unwrap()).unwrap();
    assert!(psd.client.license_install(&old).is_err());
    let fresh: LicenseGrant = acme
        .post(
            "/v1/licenses",
            &MeterLicenseOrder {
                client_txn_id: "lic-2".into(),
                ..reuse
            },
        )
        .await
        .unwrap();
    let install = Install::decode(&hex::decode(&fresh.install).unwrap()).unwrap();
    let (slot, key_id, license) = psd.client.license_install(&install).unwrap();
    assert_eq!(slot, RegisterSetIndex(2), "after the two personalized sets");
    assert_eq!(license.0, fresh.fields.license);
    let info = psd.client.license_info().unwrap();
    assert!(matches!(
        info.slots[2],
        SlotInfo::Set { key_id: k, .. } if k == key_id
    ));

    // Fig. 5: the new set parked on disk and back.
    let blob = psd.client.export_prepare(slot).unwrap();
    psd.client
        .export_commit(slot, &Blob::digest_of(&blob))
        .unwrap();
    assert_eq!(psd.client.license_info().unwrap().slots[2], SlotInfo::Free);
    assert_eq!(psd.client.import_set(&blob).unwrap(), slot);
    assert!(psd.client.import_set(&blob).is_err(), "once only");
    h.stop().await;
}

/// Seed 003's sets added by a license are refilled through the meter like the
/// personalized ones, and the meter keeps each set's history by its license: moved to
/// another slot (EXPORT, IMPORT), it is refilled again with no alarm; a slot whose license
/// the meter never granted is refused.
#[tokio::test(flavor = "multi_thread")]
async fn a_licensed_set_is_refilled_and_its_history_follows_its_license() {
    let dir = tempfile::tempdir().unwrap();
    let h = spawn_all(dir.path()).await.unwrap();
    let (host, admin) = parties(&h.meter.url, &h.kms.url, &h.recharge.url, &h.pki);
    let mut psd = Psd::licensed(2, &h);
    admin.register(&psd).await;
    admin.fund("acme", 100_000).await;
    let acme = host.as_customer("acme");
    let device = psd.device_id();

    // Before any license: slot 2 is refused (no registered set, nothing granted).
    let refused = host.request("r-none", &device, 2, "acme", 1_000).await;
    let e = refused.unwrap_err();
    assert_eq!(e.status, 400, "{e:?}");
    assert!(e.message.contains("no license"), "{e:?}");

    // Fig. 4: request, grant through the meter, install (slot 2).
    let ask = LicenseAsk {
        license: LicenseId(0),
        origin: PostalCode::new(b"53113").unwrap(),
    };
    let request = psd.client.license_request(&ask, false).unwrap();
    let grant: LicenseGrant = acme
        .post(
            "/v1/licenses",
            &MeterLicenseOrder {
                client_txn_id: "lic-a".into(),
                device_id: device.clone(),
                request: hex::encode(request.encode()),
            },
        )
        .await
        .unwrap();
    let install = Install::decode(&hex::decode(&grant.install).unwrap()).unwrap();
    let (slot, _, license) = psd.client.license_install(&install).unwrap();
    assert_eq!(slot, RegisterSetIndex(2));
    assert_eq!(license.0, grant.fields.license);

    // The new set is refilled through the meter (its baseline: zero) and franks.
    let v = host
        .refill_set(&mut psd, 2, "r-lic-1", "acme", 5_000)
        .await
        .unwrap();
    assert_eq!(v.state, "completed");
    assert_eq!(psd.registers(2).control_sum.0, 5_000);
    psd.indicium_on(2, 1, 120, b"53113", 0);
    // A personalized set is refilled as before.
    host.refill(&mut psd, "r-set0", "acme", 1_000)
        .await
        .unwrap();

    // Fig. 5: park the licensed set and the personalized set 1, then bring the licensed
    // one back first: it lands in slot 1, the other in slot 2.
    let lic_blob = psd.client.export_prepare(RegisterSetIndex(2)).unwrap();
    psd.client
        .export_commit(RegisterSetIndex(2), &Blob::digest_of(&lic_blob))
        .unwrap();
    let set1_blob = psd.client.export_prepare(RegisterSetIndex(1)).unwrap();
    psd.client
        .export_commit(RegisterSetIndex(1), &Blob::digest_of(&set1_blob))
        .unwrap();
    assert_eq!(
        psd.client.import_set(&lic_blob).unwrap(),
        RegisterSetIndex(1)
    );
    assert_eq!(
        psd.client.import_set(&set1_blob).unwrap(),
        RegisterSetIndex(2)
    );

    // The licensed set, now in slot 1, is refilled again: the meter checks it against
    // its license's history (not slot 1's), so there is no alarm.
    let v = host
        .refill_set(&mut psd, 1, "r-lic-2", "acme", 2_000)
        .await
        .unwrap();
    assert_eq!(v.state, "completed");
    assert_eq!(psd.registers(1).control_sum.0, 7_000);
    assert_eq!(psd.registers(1).license, license);
    psd.indicium_on(1, 2, 80, b"53113", 0);
    // The personalized set 4712, now in slot 2: its first audit meets its registration
    // baseline, whatever the slot.
    host.inspect(&mut psd, 2).await.unwrap();
    host.inspect(&mut psd, 1).await.unwrap();
    let alarms = admin.alarms().await;
    assert!(alarms.alarms.is_empty(), "{alarms:?}");
    assert!(!admin.device(&device).await.quarantined);

    // A message issued for the set in slot 1, which then moves to slot 2 before it is
    // applied: it applies there, and the confirmation (an audit of slot 2) settles it.
    let v = host
        .request("r-lic-3", &device, 1, "acme", 500)
        .await
        .unwrap();
    let audit = psd.audit(1, &v.nonce);
    let v = host.audit("r-lic-3", &audit).await.unwrap();
    assert_eq!(v.state, "message_issued");
    let blob = psd.client.export_prepare(RegisterSetIndex(1)).unwrap();
    psd.client
        .export_commit(RegisterSetIndex(1), &Blob::digest_of(&blob))
        .unwrap();
    let other = psd.client.export_prepare(RegisterSetIndex(2)).unwrap();
    psd.client
        .export_commit(RegisterSetIndex(2), &Blob::digest_of(&other))
        .unwrap();
    assert_eq!(psd.client.import_set(&other).unwrap(), RegisterSetIndex(1));
    assert_eq!(psd.client.import_set(&blob).unwrap(), RegisterSetIndex(2));
    let moved = openpsd_protocol::RefillView { set: 2, ..v };
    let v = host.apply_and_confirm(&mut psd, &moved).await.unwrap();
    assert_eq!(v.state, "completed");
    assert_eq!(psd.registers(2).control_sum.0, 7_500);
    assert_eq!(psd.registers(2).license, license);
    host.inspect(&mut psd, 1).await.unwrap();
    assert!(admin.alarms().await.alarms.is_empty());

    // Slot 3 is empty: the request is taken (the device has a granted license), but no
    // audit of it can name a license the device holds; an audit of another slot is refused
    // as not the request's.
    let r = host
        .request("r-slot3", &device, 3, "acme", 1_000)
        .await
        .unwrap();
    let audit = psd.audit(2, &r.nonce);
    let e = host.audit("r-slot3", &audit).await.unwrap_err();
    assert_eq!(e.status, 422, "{e:?}");
    host.cancel("r-slot3").await.unwrap();

    // A license granted behind this meter's back (the vendor asked directly, with the
    // meter's certificate): the card installs it (slot 3), but the meter refuses its audits
    // — neither registered at the KMS nor granted through the meter — with no alarm.
    let ask = LicenseAsk {
        license: LicenseId(0),
        origin: PostalCode::new(b"01067").unwrap(),
    };
    let request = psd.client.license_request(&ask, false).unwrap();
    let vendor = common::Client::new(
        &h.vendor.url,
        &h.pki,
        Some(openpsd_service_kit::tls::Role::Meter),
    );
    let direct: LicenseGrant = vendor
        .post(
            "/v1/licenses",
            &openpsd_protocol::license::LicenseOrder {
                request: hex::encode(request.encode()),
                account_id: None,
            },
        )
        .await
        .unwrap();
    let install = Install::decode(&hex::decode(&direct.install).unwrap()).unwrap();
    let (slot, _, stranger) = psd.client.license_install(&install).unwrap();
    assert_eq!(slot, RegisterSetIndex(3));
    let r = host
        .request("r-stranger", &device, 3, "acme", 1_000)
        .await
        .unwrap();
    let audit = psd.audit(3, &r.nonce);
    let e = host.audit("r-stranger", &audit).await.unwrap_err();
    assert_eq!(
        (e.status, e.code.as_str()),
        (422, "audit_inconsistent"),
        "{e:?}"
    );
    assert!(
        e.message.contains(&format!("license {}", stranger.0)) && e.message.contains("granted"),
        "{e:?}"
    );
    assert!(admin.alarms().await.alarms.is_empty());
    assert!(!admin.device(&device).await.quarantined);
    host.cancel("r-stranger").await.unwrap();

    // What the meter credited, per license.
    let credit: openpsd_protocol::post::DeviceCredit = admin
        .meter
        .get(&format!("/v1/devices/{device}/credit"))
        .await
        .unwrap();
    let lic = credit.sets.iter().find(|s| s.license == license.0).unwrap();
    assert_eq!((lic.set, lic.credited), (2, 7_500));
    h.stop().await;
}

/// Seed 003, C11: a replacement PSD keeps the customer's license. The new PSD is granted
/// the same license (the customer holds it); the old PSD's set is exported and retired
/// (RETIRE SET), and the meter checks the receipt under the device key and against the
/// set's history, refunds its DR to the deposit once, and revokes the old grant at the
/// PA. The retired set is served no more; a forged receipt is refused.
#[tokio::test(flavor = "multi_thread")]
async fn c11_a_replacement_psd_keeps_the_license_and_the_old_set_is_retired_and_refunded() {
    use openpsd_core::psd::license::retire::Receipt;
    use openpsd_protocol::license::{GrantList, Retirement, RetirementRequest};
    let dir = tempfile::tempdir().unwrap();
    let h = spawn_all(dir.path()).await.unwrap();
    let (host, admin) = parties(&h.meter.url, &h.kms.url, &h.recharge.url, &h.pki);
    let mut old = Psd::licensed(7, &h);
    let mut new = Psd::licensed(8, &h);
    admin.register(&old).await;
    admin.register(&new).await;
    admin.fund("acme", 100_000).await;
    let acme = host.as_customer("acme");

    let g_old = old.order_and_install(&acme, "lic-old", 0).await;
    let license = g_old.fields.license;
    let v = host
        .refill_set(&mut old, 2, "fill-old", "acme", 5_000)
        .await
        .unwrap();
    assert_eq!(v.state, "completed");
    old.indicium_on(2, 1, 1_200, b"53113", 0);
    // The replacement asks for the same license: the customer holds it.
    let g_new = new.order_and_install(&acme, "lic-new", license).await;
    assert_eq!(g_new.fields.license, license);
    assert_ne!(g_new.fields.serial, g_old.fields.serial);
    let before = admin.account("acme").await;

    // The holder keeps a copy of the old PSD's memory from before the retirement.
    let saved = old.snapshot();
    // The old set leaves the old PSD and is retired there.
    let blob = old.client.export_prepare(RegisterSetIndex(2)).unwrap();
    old.client
        .export_commit(RegisterSetIndex(2), &Blob::digest_of(&blob))
        .unwrap();
    let epoch = Blob::decode(&blob).unwrap().epoch;
    let receipt = old.client.retire_set(epoch).unwrap();
    assert_eq!((receipt.control_sum.0, receipt.dr.0), (5_000, 3_800));
    let req = RetirementRequest {
        device_id: old.device_id(),
        receipt: hex::encode(receipt.encode()),
        blob: Some(hex::encode(&blob)),
    };
    // Only the owner may book it.
    admin.ensure_customer("bob").await;
    let e = host
        .as_customer("bob")
        .post::<_, Retirement>("/v1/licenses/retirements", &req)
        .await
        .unwrap_err();
    assert_eq!(e.status, 404, "{e:?}");
    let r: Retirement = acme.post("/v1/licenses/retirements", &req).await.unwrap();
    assert_eq!(
        (r.license, r.epoch, r.refunded, r.final_ar),
        (license, epoch, 3_800, 1_200)
    );
    assert_eq!(
        r.revoked_grant.as_deref(),
        Some(g_old.fields.serial.as_str())
    );
    // The same receipt again: the same answer, refunded once.
    let again: Retirement = acme.post("/v1/licenses/retirements", &req).await.unwrap();
    assert_eq!(again, r);
    // The same receipt in upper-case hex is the same receipt.
    let upper = RetirementRequest {
        receipt: req.receipt.to_ascii_uppercase(),
        ..req.clone()
    };
    let again: Retirement = acme.post("/v1/licenses/retirements", &upper).await.unwrap();
    assert_eq!(again, r);
    let after = admin.account("acme").await;
    assert_eq!(after.available, before.available + 3_800);
    assert_eq!(after.debited + 3_800, before.debited);
    assert_eq!(
        after.deposited,
        after.available + after.held + after.debited
    );
    old.client.forget_retired(epoch).unwrap();

    // The PA: the old grant revoked, the new one standing.
    let pa = common::Client::new(
        &h.pa.url,
        &h.pki,
        Some(openpsd_service_kit::tls::Role::Operator),
    );
    let grants: GrantList = pa
        .get(&format!("/v1/grants?license={license}"))
        .await
        .unwrap();
    let revoked: Vec<_> = grants
        .grants
        .iter()
        .map(|g| (g.device_id.clone(), g.revoked_at.is_some()))
        .collect();
    assert!(revoked.contains(&(old.device_id(), true)), "{revoked:?}");
    assert!(revoked.contains(&(new.device_id(), false)), "{revoked:?}");

    // The old device may not ask the license again; the new one is refilled and franks.
    let ask = LicenseAsk {
        license: LicenseId(license),
        origin: PostalCode::new(b"53113").unwrap(),
    };
    let request = old.client.license_request(&ask, false).unwrap();
    let e = acme
        .post::<_, LicenseGrant>(
            "/v1/licenses",
            &MeterLicenseOrder {
                client_txn_id: "lic-old-again".into(),
                device_id: old.device_id(),
                request: hex::encode(request.encode()),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.status, 409, "{e:?}");
    let v = host
        .refill_set(&mut new, 2, "fill-new", "acme", 2_000)
        .await
        .unwrap();
    assert_eq!(v.state, "completed");
    new.indicium_on(2, 1, 300, b"53113", 0);

    // A receipt forged with the old device's key read out of its memory: a control sum
    // above anything the back office credited the set is refused, nothing refunded.
    let forged = Receipt {
        device: receipt.device,
        epoch: 99,
        license: receipt.license,
        control_sum: Amount(50_000),
        dr: Amount(48_000),
        digest: [0; 16],
        signature: [0; 64],
    };
    let forged = forged.signed(&old.dumped_key());
    // The old set is retired already: served no more, whatever the receipt says.
    let e = acme
        .post::<_, Retirement>(
            "/v1/licenses/retirements",
            &RetirementRequest {
                device_id: old.device_id(),
                receipt: hex::encode(forged.encode()),
                blob: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(
        (e.status, e.code.as_str()),
        (422, "audit_inconsistent"),
        "{e:?}"
    );
    // On the new device (its key read out too), above the credit: refused.
    let forged_new = Receipt {
        device: DeviceId(hex::decode(new.device_id()).unwrap().try_into().unwrap()),
        ..forged
    }
    .signed(&new.dumped_key());
    let e = acme
        .post::<_, Retirement>(
            "/v1/licenses/retirements",
            &RetirementRequest {
                device_id: new.device_id(),
                receipt: hex::encode(forged_new.encode()),
                blob: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(
        (e.status, e.code.as_str()),
        (422, "audit_inconsistent"),
        "{e:?}"
    );
    assert!(e.message.contains("above what the back office"), "{e:?}");
    assert_eq!(
        admin.account("acme").await.available,
        after.available - 2_000
    );

    // The copy from before the retirement spends the refunded DR: the post office finds
    // the postage used after the refund, with the amount.
    old.roll_back(&saved);
    let spent = old.indicium_on(2, 7, 900, b"53113", 0);
    let honest = new.indicium_on(2, 2, 100, b"53113", 0);
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
    let clerk = common::Client::new(
        &post.url,
        &h.pki,
        Some(openpsd_service_kit::tls::Role::Operator),
    );
    let r: openpsd_protocol::post::ScanResult = clerk
        .post(
            "/v1/indicia",
            &openpsd_protocol::post::ScanBatch {
                indicia: vec![hex::encode(&spent), hex::encode(&honest)],
            },
        )
        .await
        .unwrap();
    let kinds: Vec<_> = r.verdicts.iter().map(|v| v.verdict.as_str()).collect();
    assert_eq!(kinds, ["anomaly", "accepted"], "{r:?}");
    let report: openpsd_protocol::post::DeviceReport = clerk
        .get(&format!("/v1/devices/{}/findings", old.device_id()))
        .await
        .unwrap();
    let f = report
        .findings
        .iter()
        .find(|f| f.kind == "used_after_retirement")
        .unwrap_or_else(|| panic!("{report:?}"));
    assert_eq!(f.amount, Some(900));
    post.stop().await;
    h.stop().await;
}

/// The PA's desk grants a license number to a customer account before any of its devices
/// asks (`backoffice pa grant`): that account's PSDs may ask for it through the meter, no
/// other account's — not even through a meter or vendor that skips the check, since the
/// order carries the account and the PA holds each license's account.
#[tokio::test(flavor = "multi_thread")]
async fn the_pa_desk_grants_a_license_number_to_an_account_and_only_its_devices_get_it() {
    use openpsd_protocol::license::LicenseHolder;
    let dir = tempfile::tempdir().unwrap();
    let h = spawn_all(dir.path()).await.unwrap();
    let (host, admin) = parties(&h.meter.url, &h.kms.url, &h.recharge.url, &h.pki);
    let mut mine = Psd::licensed(9, &h);
    let mut theirs = Psd::licensed(10, &h);
    admin.register(&mine).await;
    admin.register_to(&theirs, "bob").await;
    let acme_account = admin.ensure_customer("acme").await;
    let bob_account = admin.ensure_customer("bob").await;
    let desk = common::Client::new(
        &h.pa.url,
        &h.pki,
        Some(openpsd_service_kit::tls::Role::Operator),
    );
    let allocation = LicenseHolder {
        license: 777,
        origin: "53113".into(),
        account: Some(acme_account.clone()),
        devices: 0,
    };
    let held: LicenseHolder = desk.post("/v1/licenses", &allocation).await.unwrap();
    assert_eq!((held.license, held.devices), (777, 0));
    let again: LicenseHolder = desk.post("/v1/licenses", &allocation).await.unwrap();
    assert_eq!(again, held);
    let e = desk
        .post::<_, LicenseHolder>(
            "/v1/licenses",
            &LicenseHolder {
                account: Some(bob_account.clone()),
                ..allocation.clone()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.status, 409, "{e:?}");
    // A customer may not allocate licenses.
    let e = host
        .as_customer("acme")
        .post::<_, LicenseHolder>("/v1/licenses", &allocation)
        .await;
    assert!(e.is_err());

    // Acme's PSD asks for 777 through the meter: granted.
    let acme = host.as_customer("acme");
    let g = mine.order_and_install(&acme, "lic-777", 777).await;
    assert_eq!(g.fields.license, 777);
    let held: LicenseHolder = desk.get("/v1/licenses/777").await.unwrap();
    assert_eq!(
        (held.account.as_deref(), held.devices),
        (Some(acme_account.as_str()), 1)
    );

    // Bob's PSD: the meter refuses; the vendor called directly (a meter that skipped its
    // check) with bob's account: the PA refuses.
    let ask = LicenseAsk {
        license: LicenseId(777),
        origin: PostalCode::new(b"53113").unwrap(),
    };
    let request = theirs.client.license_request(&ask, false).unwrap();
    let e = host
        .as_customer("bob")
        .post::<_, LicenseGrant>(
            "/v1/licenses",
            &MeterLicenseOrder {
                client_txn_id: "lic-bob".into(),
                device_id: theirs.device_id(),
                request: hex::encode(request.encode()),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(
        (e.status, e.code.as_str()),
        (403, "license_not_yours"),
        "{e:?}"
    );
    let vendor = common::Client::new(
        &h.vendor.url,
        &h.pki,
        Some(openpsd_service_kit::tls::Role::Meter),
    );
    let e = vendor
        .post::<_, LicenseGrant>(
            "/v1/licenses",
            &openpsd_protocol::license::LicenseOrder {
                request: hex::encode(request.encode()),
                account_id: Some(bob_account),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(
        (e.status, e.code.as_str()),
        (409, "license_not_yours"),
        "{e:?}"
    );

    // A new number asked through the meter is the asking account's at the PA.
    let g = mine.order_and_install(&acme, "lic-new", 0).await;
    let held: LicenseHolder = desk
        .get(&format!("/v1/licenses/{}", g.fields.license))
        .await
        .unwrap();
    assert_eq!(held.account.as_deref(), Some(acme_account.as_str()));
    let e = desk
        .get::<LicenseHolder>("/v1/licenses/999999")
        .await
        .unwrap_err();
    assert_eq!((e.status, e.code.as_str()), (404, "unknown_license"));
    h.stop().await;
}

/// A refill of a set still outstanding when the set is retired ends with the retirement:
/// its message can never be applied to a retired set, so the receipt's control sum settles
/// it — not applied: the hold is released; applied (not yet confirmed): the hold is debited.
/// No hold stays held, and the deposit balances.
#[tokio::test(flavor = "multi_thread")]
async fn a_refill_outstanding_when_its_set_is_retired_is_settled_by_the_receipt() {
    use openpsd_protocol::license::{Retirement, RetirementRequest};
    let dir = tempfile::tempdir().unwrap();
    let h = spawn_all(dir.path()).await.unwrap();
    let (host, admin) = parties(&h.meter.url, &h.kms.url, &h.recharge.url, &h.pki);
    admin.fund("acme", 100_000).await;
    let acme = host.as_customer("acme");
    let retire = |psd: &mut Psd| {
        let blob = psd.client.export_prepare(RegisterSetIndex(2)).unwrap();
        psd.client
            .export_commit(RegisterSetIndex(2), &Blob::digest_of(&blob))
            .unwrap();
        let epoch = Blob::decode(&blob).unwrap().epoch;
        RetirementRequest {
            device_id: psd.device_id(),
            receipt: hex::encode(psd.client.retire_set(epoch).unwrap().encode()),
            blob: Some(hex::encode(&blob)),
        }
    };

    for (n, applied) in [(11, false), (12, true)] {
        let mut psd = Psd::licensed(n, &h);
        admin.register(&psd).await;
        psd.order_and_install(&acme, &format!("lic-{n}"), 0).await;
        let fill = format!("fill-{n}");
        let v = host
            .refill_set(&mut psd, 2, &fill, "acme", 5_000)
            .await
            .unwrap();
        assert_eq!(v.state, "completed");
        // A second refill's message leaves the meter (1,000 held).
        let txn = format!("out-{n}");
        let v = host
            .request(&txn, &psd.device_id(), 2, "acme", 1_000)
            .await
            .unwrap();
        let audit = psd.audit(2, &v.nonce);
        let v = host.audit(&txn, &audit).await.unwrap();
        assert_eq!(v.state, "message_issued");
        if applied {
            psd.refill(2, v.refill_message.as_deref().unwrap()).unwrap();
        }
        let before = admin.account("acme").await;
        assert_eq!(before.held, 1_000);
        let req = retire(&mut psd);
        let r: Retirement = acme.post("/v1/licenses/retirements", &req).await.unwrap();
        let after = admin.account("acme").await;
        assert_eq!(after.held, 0, "no hold left (applied: {applied})");
        assert_eq!(
            after.deposited,
            after.available + after.held + after.debited
        );
        if applied {
            // Debited 1,000, then the set's whole DR (6,000) refunded.
            assert_eq!(r.refunded, 6_000);
            assert_eq!(after.available, before.available + 6_000);
        } else {
            // Released 1,000, and the set's DR (5,000) refunded.
            assert_eq!(r.refunded, 5_000);
            assert_eq!(after.available, before.available + 1_000 + 5_000);
        }
        let state = host.status(&txn).await.unwrap();
        assert_eq!(
            state.state,
            if applied { "completed" } else { "released" },
            "{state:?}"
        );
    }
    h.stop().await;
}
