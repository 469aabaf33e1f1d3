//! Key files and listeners (issue 11 item 5 and 6, first steps): a service whose key file
//! is lost while its database exists refuses to start and leaves the database as it was,
//! a second instance on one data directory is refused, no service listens on an address
//! another machine can reach, and the KMS's database holds nothing that vouches for a device
//! on its own (a device row given another device's public key makes the real device's audits
//! fail, and nothing moves).
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::path::Path;

use common::Psd;
use common::{parties, parties_again};

use openpsd_kms::{Config, Kms, SIGNING_KEY_FILE as KMS_KEY_FILE};
use openpsd_recharge::{Recharge, SIGNING_KEY_FILE};

fn refused(e: anyhow::Error, key: &str) {
    let e = format!("{e:#}");
    assert!(e.contains(key) && e.contains("Refusing to start"), "{e}");
}

fn open_kms(data: &Path, rc: &Recharge) -> anyhow::Result<Kms> {
    Kms::open(&Config {
        data: data.to_path_buf(),
        recharge_public_key: rc.public_key(),
        signing_key: None,
    })
}

#[tokio::test]
async fn a_lost_key_file_is_refused_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let rc = Recharge::open(data).unwrap();
    drop(open_kms(data, &rc).unwrap());

    // The KMS's signing key is lost: no new one (PSDs hold the old one's public half), and
    // the database is left as it was.
    let db = data.join(openpsd_kms::DB_FILE);
    let before = fs::read(&db).unwrap();
    fs::remove_file(data.join(KMS_KEY_FILE)).unwrap();
    refused(open_kms(data, &rc).err().unwrap(), KMS_KEY_FILE);
    assert!(
        !data.join(KMS_KEY_FILE).exists(),
        "no new signing key was made"
    );
    assert_eq!(fs::read(&db).unwrap(), before, "the database is untouched");

    // The same for the recharging center's signing key.
    drop(rc);
    fs::remove_file(data.join(SIGNING_KEY_FILE)).unwrap();
    refused(Recharge::open(data).err().unwrap(), SIGNING_KEY_FILE);
    assert!(!data.join(SIGNING_KEY_FILE).exists());

    // A fresh directory still starts and makes its keys.
    let fresh = tempfile::tempdir().unwrap();
    let rc = Recharge::open(fresh.path()).unwrap();
    open_kms(fresh.path(), &rc).unwrap();
    assert!(fresh.path().join(KMS_KEY_FILE).exists());
}

#[tokio::test]
async fn plain_http_is_served_on_loopback_only() {
    // Every service listens with TLS, so any address may be bound; plain HTTP (the demo's
    // browser page) is refused anywhere but loopback.
    let e = openpsd_service_kit::server::bind("0.0.0.0:0", None)
        .await
        .err()
        .expect("a wildcard address without TLS is refused");
    assert!(format!("{e:#}").contains("loopback only"), "{e:#}");
    assert!(openpsd_service_kit::server::bind("127.0.0.1:0", None)
        .await
        .is_ok());
}

#[tokio::test]
async fn a_second_instance_on_one_data_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = Recharge::open(dir.path()).unwrap();
    let e = format!("{:#}", Recharge::open(dir.path()).err().unwrap());
    assert!(e.contains("in use by another instance"), "{e}");
    // Once the first is gone, the directory opens again.
    drop(first);
    Recharge::open(dir.path()).unwrap();
}

#[tokio::test]
async fn the_kms_signing_key_can_live_outside_the_data_directory() {
    let data = tempfile::tempdir().unwrap();
    let secrets = tempfile::tempdir().unwrap();
    let rc = Recharge::open(&data.path().join("rc")).unwrap();
    let config = Config {
        data: data.path().join("kms"),
        recharge_public_key: rc.public_key(),
        signing_key: Some(secrets.path().join("kms.key")),
    };
    drop(Kms::open(&config).unwrap());
    assert!(secrets.path().join("kms.key").exists());
    assert!(
        !config.data.join(KMS_KEY_FILE).exists(),
        "no private key in the data directory"
    );
    // The same again opens; without the key's place, the data directory alone is refused.
    drop(Kms::open(&config).unwrap());
    let without = Config {
        signing_key: None,
        ..config
    };
    refused(Kms::open(&without).err().unwrap(), KMS_KEY_FILE);
}

/// Rewrites a device's public key in the KMS's database (an attacker with the file).
fn set_public_key(dir: &Path, device: &str, public_key: &str) {
    let c = rusqlite::Connection::open(dir.join("kms").join(openpsd_kms::DB_FILE)).unwrap();
    let n = c
        .execute(
            "UPDATE devices SET public_key = ?2 WHERE device_id = ?1",
            rusqlite::params![device, public_key],
        )
        .unwrap();
    assert_eq!(n, 1);
}

#[tokio::test]
async fn a_device_row_given_another_public_key_refuses_the_audits_and_costs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let h = openpsd_backoffice::spawn_all(dir.path()).await.unwrap();
    let (_, admin) = parties(&h.meter.url, &h.kms.url, &h.recharge.url, &h.pki);
    let (mut a, b) = (
        Psd::new(1, 0, &h.kms_public_key),
        Psd::new(2, 0, &h.kms_public_key),
    );
    admin.register_to(&a, "acct").await;
    admin.register_to(&b, "acct").await;
    admin.fund("acct", 10_000).await;
    h.stop().await;

    // B's public key written into A's row: the KMS now checks A's audits under B's key.
    // Whoever did it holds no device key and no KMS key, so the most it gets is refusals.
    set_public_key(dir.path(), &a.device_id(), &b.secrets.public_key);

    let h = openpsd_backoffice::spawn_all(dir.path()).await.unwrap();
    let (host, admin) = parties_again(
        &h.meter.url,
        &h.kms.url,
        &h.recharge.url,
        &h.pki,
        &admin.customers,
    );
    let v = host
        .request("t1", &a.device_id(), 0, "acct", 500)
        .await
        .unwrap();
    let audit = a.audit(0, &v.nonce);
    let e = host.audit("t1", &audit).await.unwrap_err();
    assert_eq!(
        (e.status, e.code.as_str()),
        (422, "audit_signature_invalid"),
        "{e:?}"
    );
    let l = admin.ledger().await;
    assert_eq!((l.held, l.debited), (0, 0), "nothing held or debited");
    assert_eq!(a.registers(0).control_sum.0, 0, "nothing credited");
    h.stop().await;
}
