//! Key files and listeners (issue 11 item 5 and 6, first steps): a service whose key file
//! is lost while its database exists refuses to start and leaves the database as it was,
//! a second instance on one data directory is refused, and no service listens on an address
//! another machine can reach.
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::Path;

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
async fn services_listen_on_loopback_only() {
    let dir = tempfile::tempdir().unwrap();
    let e = openpsd_backoffice::server::start_recharge(dir.path(), "0.0.0.0:0")
        .await
        .err()
        .expect("a wildcard address is refused");
    assert!(format!("{e:#}").contains("loopback only"), "{e:#}");
    let ok = openpsd_backoffice::server::start_recharge(dir.path(), "127.0.0.1:0").await;
    assert!(ok.is_ok());
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
