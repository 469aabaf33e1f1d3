//! Key files and listeners (issue 11 item 5 and 6, first steps): a service whose key file
//! is lost while its database exists refuses to start and leaves the database as it was,
//! a second instance on one data directory is refused, no service listens on an address
//! another machine can reach, and a K1 wrap is bound to its device (a row moved from another
//! device is detected; stored format 1 wraps are re-bound at start).
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::path::Path;

use common::Psd;
use common::{parties, parties_again};

use openpsd_kms::{Config, Kms, MASTER_KEY_FILE};
use openpsd_recharge::{Recharge, SIGNING_KEY_FILE};

fn refused(e: anyhow::Error, key: &str) {
    let e = format!("{e:#}");
    assert!(e.contains(key) && e.contains("Refusing to start"), "{e}");
}

fn open_kms(data: &Path, rc: &Recharge) -> anyhow::Result<Kms> {
    Kms::open(&Config {
        data: data.to_path_buf(),
        recharge_public_key: rc.public_key(),
        master_key: None,
    })
}

#[tokio::test]
async fn a_lost_key_file_is_refused_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let rc = Recharge::open(data).unwrap();
    drop(open_kms(data, &rc).unwrap());

    // The KMS master key is lost: no new one, and the database is left as it was.
    let db = data.join(openpsd_kms::DB_FILE);
    let before = fs::read(&db).unwrap();
    fs::remove_file(data.join(MASTER_KEY_FILE)).unwrap();
    refused(open_kms(data, &rc).err().unwrap(), MASTER_KEY_FILE);
    assert!(
        !data.join(MASTER_KEY_FILE).exists(),
        "no new master key was made"
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
    assert!(fresh.path().join(MASTER_KEY_FILE).exists());
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
async fn the_master_key_can_live_outside_the_data_directory() {
    let data = tempfile::tempdir().unwrap();
    let secrets = tempfile::tempdir().unwrap();
    let rc = Recharge::open(&data.path().join("rc")).unwrap();
    let config = Config {
        data: data.path().join("kms"),
        recharge_public_key: rc.public_key(),
        master_key: Some(secrets.path().join("master.key")),
    };
    drop(Kms::open(&config).unwrap());
    assert!(secrets.path().join("master.key").exists());
    assert!(
        !config.data.join(MASTER_KEY_FILE).exists(),
        "nothing in the data directory"
    );
    // The same again opens; without the key's place, the data directory alone is refused.
    drop(Kms::open(&config).unwrap());
    let without = Config {
        master_key: None,
        ..config
    };
    refused(Kms::open(&without).err().unwrap(), MASTER_KEY_FILE);
}

/// Swaps two devices' `k1_wrapped` (an attacker with the database file), or rewrites one.
fn set_wrap(dir: &Path, device: &str, wrapped: &[u8]) {
    let c = rusqlite::Connection::open(dir.join("kms").join(openpsd_kms::DB_FILE)).unwrap();
    let n = c
        .execute(
            "UPDATE devices SET k1_wrapped = ?2 WHERE device_id = ?1",
            rusqlite::params![device, wrapped],
        )
        .unwrap();
    assert_eq!(n, 1);
}

fn wrap_of(dir: &Path, device: &str) -> Vec<u8> {
    let c = rusqlite::Connection::open(dir.join("kms").join(openpsd_kms::DB_FILE)).unwrap();
    c.query_row(
        "SELECT k1_wrapped FROM devices WHERE device_id = ?1",
        [device],
        |r| r.get(0),
    )
    .unwrap()
}

#[tokio::test]
async fn a_k1_moved_to_another_device_row_is_refused_and_costs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let h = openpsd_backoffice::spawn_all(dir.path()).await.unwrap();
    let (_, admin) = parties(&h.meter.url, &h.kms.url, &h.recharge.url, &h.pki);
    let (mut a, b) = (Psd::new(1, 0), Psd::new(2, 0));
    admin.register_to(&a, "acct").await;
    admin.register_to(&b, "acct").await;
    admin.fund("acct", 10_000).await;
    h.stop().await;

    // B's wrapped K1 copied into A's row: were the wrap not bound to the device, the KMS
    // would now check A's audits under B's key.
    let (wa, wb) = (
        wrap_of(dir.path(), &a.device_id()),
        wrap_of(dir.path(), &b.device_id()),
    );
    assert_ne!(wa, wb, "wraps differ per device");
    set_wrap(dir.path(), &a.device_id(), &wb);

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
    // Detected as a moved row (before, B's K1 unwrapped fine and only the MAC failed).
    assert!(
        e.status == 503 && e.message.contains("changed or moved from another device"),
        "{e:?}"
    );
    let l = admin.ledger().await;
    assert_eq!((l.held, l.debited), (0, 0), "nothing held or debited");
    assert_eq!(a.registers(0).control_sum.0, 0, "nothing credited");
    h.stop().await;
}

#[tokio::test]
async fn k1_wrapped_under_the_master_key_is_rebound_at_start() {
    use aes_kw::KeyInit as _;
    let dir = tempfile::tempdir().unwrap();
    let h = openpsd_backoffice::spawn_all(dir.path()).await.unwrap();
    let (_, admin) = parties(&h.meter.url, &h.kms.url, &h.recharge.url, &h.pki);
    let mut a = Psd::new(3, 0);
    admin.register_to(&a, "acct").await;
    admin.fund("acct", 10_000).await;
    h.stop().await;

    // Stored format 1: K1 wrapped under the master key itself.
    let master_hex = fs::read_to_string(dir.path().join("kms").join(MASTER_KEY_FILE)).unwrap();
    let master: [u8; 32] = hex::decode(master_hex.trim()).unwrap().try_into().unwrap();
    let k1: [u8; 16] = hex::decode(&a.secrets.k1).unwrap().try_into().unwrap();
    let mut v1 = [0u8; 24];
    aes_kw::KwAes256::new_from_slice(&master)
        .unwrap()
        .wrap_key(&k1, &mut v1)
        .unwrap();
    set_wrap(dir.path(), &a.device_id(), &v1);

    // At start the row is re-wrapped under the device's key, and the refill goes through.
    let h = openpsd_backoffice::spawn_all(dir.path()).await.unwrap();
    assert_ne!(
        wrap_of(dir.path(), &a.device_id()),
        v1.to_vec(),
        "re-wrapped"
    );
    let (host, _) = parties_again(
        &h.meter.url,
        &h.kms.url,
        &h.recharge.url,
        &h.pki,
        &admin.customers,
    );
    let v = host.refill(&mut a, "t1", "acct", 500).await.unwrap();
    assert_eq!(v.state, openpsd_protocol::RefillState::Completed);
    assert_eq!(a.registers(0).control_sum.0, 500);
    h.stop().await;
}
