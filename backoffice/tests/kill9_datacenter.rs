//! The data center killed with SIGKILL between its two commits (docs/virtual-meter.md §5):
//! after the box committed an indicium or a refill and before the database did, and after
//! the database recorded the intent and before the box saw it. Restarted on the same data,
//! it finishes what the box committed (RESUME: the same bytes) and carries out what it did
//! not (the committed intent's command sent now): every indicium charged once, every refill credited once and its hold settled, the ledger
//! audited clean by `backoffice datacenter audit`. The operator registers the box at the KMS
//! with `backoffice datacenter register-box`. With `OPENPSD_TEST_POSTGRES` set (as
//! `scripts/postgres-test.sh` does) the crash test's data center, register-box and audit
//! run on a fresh PostgreSQL database of that server instead of SQLite.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/proc.rs"]
mod proc;

use std::process::Command;

use common::Client;
use openpsd_backoffice::server::spawn_all;
use openpsd_core::psd::indicium;
use openpsd_protocol::datacenter::{
    DepositView, IndiciumBatch, IndiciumBatchIssued, IndiciumIssued, IndiciumOrder,
    MailerCredentials, MailerSession, MeterView, RefillDone, RefillOrder,
};
use openpsd_protocol::recharge::{Account, Deposit};
use openpsd_service_kit::tls::Role;
use proc::Proc;

fn order(txn: u64, postage: u64) -> IndiciumOrder {
    IndiciumOrder {
        client_txn_id: format!("{txn:016x}"),
        postage,
        rate: 1,
        destination: "80331".into(),
    }
}

fn refill(txn: u64, amount: u64) -> RefillOrder {
    RefillOrder {
        client_txn_id: format!("{txn:016x}"),
        amount,
    }
}

/// Runs the `backoffice` binary: whether it succeeded, and its standard output (with its
/// standard error after it when it failed, for the message).
fn backoffice(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_backoffice"))
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        (true, stdout)
    } else {
        (false, stdout + &String::from_utf8_lossy(&out.stderr))
    }
}

/// `serve --role datacenter`'s arguments beside the services `h`, under the PKI `pki`.
fn serve_args(pki: &str, h: &openpsd_backoffice::server::Handles) -> Vec<String> {
    [
        "--pki",
        pki,
        "--vendor",
        &h.vendor.url,
        "--kms",
        &h.kms.url,
        "--recharge",
        &h.recharge.url,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_the_box_and_the_database_is_healed() {
    let tmp = tempfile::tempdir().unwrap();
    let h = spawn_all(tmp.path()).await.unwrap();
    let pki = h.pki.dir().to_str().unwrap().to_owned();
    let data = tmp.path().join("dc");
    let mut args = serve_args(&pki, &h);
    // The database the service and the CLI share: SQLite in DATA, or PostgreSQL.
    let db_args: Vec<String> = match common::post_database().await {
        Some(url) => vec!["--database-url".into(), url],
        None => vec![],
    };
    args.extend(db_args.iter().cloned());
    let with_db = |a: &[&str]| -> Vec<String> {
        a.iter()
            .map(|s| (*s).to_owned())
            .chain(db_args.iter().cloned())
            .collect()
    };
    let run = |a: Vec<String>| backoffice(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let mut dc = Proc::start("datacenter", &data, "127.0.0.1:0", &args, "");
    assert_eq!(
        data.join("datacenter.sqlite").is_file(),
        db_args.is_empty(),
        "the database asked for"
    );
    let data_s = data.to_str().unwrap();
    let (ok, register_out) = run(with_db(&[
        "datacenter",
        "register-box",
        "--data",
        data_s,
        "--pki",
        &pki,
        "--kms",
        &h.kms.url,
        "--json",
    ]));
    assert!(ok, "{register_out}");

    let anon = Client::new(&dc.url, &h.pki, None);
    let s: MailerSession = anon
        .post(
            "/v1/mailers",
            &MailerCredentials {
                username: "alice".into(),
                password: "alice-long-password".into(),
            },
        )
        .await
        .unwrap();
    let alice = anon.with_bearer(&s.token);
    let op = Client::new(&h.recharge.url, &h.pki, Some(Role::Operator));
    let _: Account = op
        .post(
            &format!("/v1/accounts/vm-{}/deposits", s.mailer_id),
            &Deposit {
                amount: 5_000,
                reference: "bank-1".into(),
            },
        )
        .await
        .unwrap();
    let _: RefillDone = alice.post("/v1/refills", &refill(1, 3_000)).await.unwrap();

    // 1. The box commits an indicium; the process dies before the database does.
    dc.kill9_and_restart("datacenter_after_box");
    let hung = {
        let a = alice.clone();
        tokio::spawn(async move { a.post_bytes("/v1/indicia", &order(1, 250)).await })
    };
    dc.wait_paused("datacenter_after_box");
    dc.kill9_and_restart("");
    let _ = hung.await;
    let m: MeterView = alice.get("/v1/meter").await.unwrap();
    assert_eq!(
        (m.balance, m.used, m.pieces),
        (2_750, 250, 1),
        "resumed, charged once"
    );
    let again: IndiciumIssued = alice.post("/v1/indicia", &order(1, 250)).await.unwrap();
    assert!(
        again.reprint,
        "the resumed indicium is the one the retry gets"
    );
    let key = hex::decode(&m.public_key).unwrap();
    let data1 = indicium::verify(&hex::decode(&again.indicium).unwrap(), &key).unwrap();
    assert_eq!((data1.postage.0, data1.dr.0), (250, 2_750));

    // 2. The intent is recorded; the process dies before the box sees the command. The
    // restart carries the committed intent out (the box had not committed it: RESUME 9A64,
    // then the command itself), charged once; the retry gets that indicium, free.
    dc.kill9_and_restart("datacenter_before_box");
    let hung = {
        let a = alice.clone();
        tokio::spawn(async move { a.post_bytes("/v1/indicia", &order(2, 100)).await })
    };
    dc.wait_paused("datacenter_before_box");
    dc.kill9_and_restart("");
    let _ = hung.await;
    let m: MeterView = alice.get("/v1/meter").await.unwrap();
    assert_eq!(
        (m.balance, m.pieces),
        (2_650, 2),
        "carried out at the restart: charged once"
    );
    let again: IndiciumIssued = alice.post("/v1/indicia", &order(2, 100)).await.unwrap();
    assert!(again.reprint, "the retry gets the indicium carried out");
    assert_eq!(again.balance, 2_650);
    let data2 = indicium::verify(&hex::decode(&again.indicium).unwrap(), &key).unwrap();
    assert_eq!(
        (data2.postage.0, data2.dr.0, data2.pieces.0),
        (100, 2_650, 2)
    );

    // 3. The box applies a refill; the process dies before the database commits it.
    dc.kill9_and_restart("datacenter_after_box");
    let hung = {
        let a = alice.clone();
        tokio::spawn(async move { a.post_bytes("/v1/refills", &refill(2, 1_000)).await })
    };
    dc.wait_paused("datacenter_after_box");
    dc.kill9_and_restart("");
    let _ = hung.await;
    let m: MeterView = alice.get("/v1/meter").await.unwrap();
    assert_eq!((m.balance, m.refills), (3_650, 2), "credited once");
    let d: DepositView = alice.get("/v1/deposit").await.unwrap();
    assert_eq!(
        (d.available, d.held, d.debited),
        (1_000, 0, 4_000),
        "the hold settled"
    );
    let done: RefillDone = alice.post("/v1/refills", &refill(2, 1_000)).await.unwrap();
    assert_eq!((done.amount, done.balance), (1_000, 3_650));

    // 4. The box commits a batch; the process dies before the database does: RESUME books
    // every piece under its order, charged once; the batch again is all reprints.
    let batch = IndiciumBatch {
        orders: vec![order(10, 100), order(11, 50), order(12, 25)],
    };
    dc.kill9_and_restart("datacenter_after_box");
    let hung = {
        let (a, b) = (alice.clone(), batch.clone());
        tokio::spawn(async move { a.post_bytes("/v1/indicia/batch", &b).await })
    };
    dc.wait_paused("datacenter_after_box");
    dc.kill9_and_restart("");
    let _ = hung.await;
    let m: MeterView = alice.get("/v1/meter").await.unwrap();
    assert_eq!(
        (m.balance, m.used, m.pieces),
        (3_475, 525, 5),
        "the batch resumed, charged once"
    );
    let again: IndiciumBatchIssued = alice.post("/v1/indicia/batch", &batch).await.unwrap();
    assert!(again.indicia.iter().all(|i| i.reprint));
    let last = indicium::verify(&hex::decode(&again.indicia[2].indicium).unwrap(), &key).unwrap();
    assert_eq!((last.postage.0, last.dr.0, last.pieces.0), (25, 3_475, 5));

    // The auditor: every meter is its signed records' replay.
    // Under the key the KMS registered (register-box --json printed it), not the one the
    // audited database stores.
    let reg: serde_json::Value = serde_json::from_str(&register_out).unwrap();
    let key = reg["txn_key"].as_str().unwrap().to_owned();
    let (ok, out) = run(with_db(&[
        "datacenter",
        "audit",
        "--data",
        data_s,
        "--box-key",
        &key,
        "--json",
    ]));
    assert!(ok, "{out}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["credited"], 4_000);
    assert_eq!(report["used"], 525);
    assert_eq!(report["held"], 3_475);
    assert_eq!(report["problems"], serde_json::json!([]));
    drop(dc);
    h.stop().await;
}

/// Each role reads its own database variable: an environment set for the post office
/// (`OPENPSD_POST_DATABASE_URL`) leaves a data center on its SQLite file, and the data
/// center's own variable is the one it follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_center_reads_its_own_database_variable() {
    let tmp = tempfile::tempdir().unwrap();
    let h = spawn_all(tmp.path()).await.unwrap();
    let pki = h.pki.dir().to_str().unwrap().to_owned();
    let args = serve_args(&pki, &h);
    // The post office's variable names a server that does not exist: not followed.
    let data = tmp.path().join("dc");
    let dc = Proc::start_env(
        "datacenter",
        &data,
        "127.0.0.1:0",
        &args,
        "",
        &[("OPENPSD_POST_DATABASE_URL", "host=/nonexistent dbname=post")],
    );
    assert!(data.join("datacenter.sqlite").is_file(), "on SQLite");
    drop(dc);

    // Its own variable is followed: the same unreachable server refuses the start.
    let out = Command::new(env!("CARGO_BIN_EXE_backoffice"))
        .args(["serve", "--role", "datacenter", "--data"])
        .arg(tmp.path().join("dc2"))
        .args(["--listen", "127.0.0.1:0"])
        .args(&args)
        .env(
            "OPENPSD_DATACENTER_DATABASE_URL",
            "host=/nonexistent dbname=dc",
        )
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "refused: {err}");
    assert!(
        err.contains("/nonexistent") || err.contains("database"),
        "{err}"
    );
    assert!(!tmp.path().join("dc2").join("datacenter.sqlite").exists());
}
