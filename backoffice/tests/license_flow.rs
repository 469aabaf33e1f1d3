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
