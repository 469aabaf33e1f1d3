//! The secure box as a separate process (docs/virtual-meter.md §9, The box link): a real
//! `card-sim serve --tcp` process serves a virtual meter box card, the data center
//! (`backoffice serve --role datacenter --box tcp:ADDR`, a process too) personalizes it at
//! its first start and keeps one connection to it. Mailers print, single pieces and
//! batches, while the card-sim process is killed with SIGKILL three times and started
//! again on the same card directory: a command whose answer the kill cut off is the crash
//! between the box's commit and the database's, and RESUME heals it. Afterwards every
//! meter's registers are exactly its pieces, every retry of a transaction ID answers the
//! first bytes, and the auditor finds the ledger whole. With the box down, log-ins answer
//! 503 and count as no failure (the box checks every password). Then the window is forced:
//! the data center paused right after the box's answer (its commit done, the database's
//! not), both killed -9 there; the next start RESUMEs the piece, charged once.
//!
//! card-sim is another package's binary: build it first (`cargo build -p
//! openpsd-card-sim`; `cargo test --workspace` does). The test looks for it beside this
//! test's own target directory, or at `$OPENPSD_CARD_SIM` (common/box_process.rs).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/box_process.rs"]
#[allow(dead_code)]
mod box_process;
mod common;
#[path = "common/proc.rs"]
#[allow(dead_code)]
mod proc;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use box_process::{create_box, free_port, CardSim};
use common::Client;
use openpsd_backoffice::server::spawn_all;
use openpsd_core::psd::indicium;
use openpsd_protocol::datacenter::{
    IndiciumBatch, IndiciumBatchIssued, IndiciumIssued, IndiciumOrder, MailerCredentials,
    MailerSession, MeterView, RefillDone, RefillOrder,
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

/// What one mailer printed: each transaction ID's first indicium (hex) and postage.
type Printed = BTreeMap<String, (String, u64)>;

/// Prints `rounds` requests (single pieces, or batches of `batch`), each retried under the
/// same transaction IDs until it is answered 200; counts the 503s.
async fn print(
    who: Client,
    base: u64,
    rounds: u64,
    batch: u64,
    unavailable: Arc<AtomicU64>,
    printed_total: Arc<AtomicU64>,
) -> Printed {
    let mut printed = Printed::new();
    for r in 0..rounds {
        let orders: Vec<IndiciumOrder> = (0..batch)
            .map(|i| order(base + r * batch + i, 5 + (r + i) % 7))
            .collect();
        loop {
            let answer: Result<Vec<IndiciumIssued>, common::Refused> = if batch == 1 {
                who.post("/v1/indicia", &orders[0]).await.map(|i| vec![i])
            } else {
                who.post(
                    "/v1/indicia/batch",
                    &IndiciumBatch {
                        orders: orders.clone(),
                    },
                )
                .await
                .map(|b: IndiciumBatchIssued| b.indicia)
            };
            match answer {
                Ok(issued) => {
                    assert_eq!(issued.len(), orders.len());
                    for (i, o) in issued.into_iter().zip(&orders) {
                        assert_eq!(i.client_txn_id, o.client_txn_id);
                        let prev = printed.insert(i.client_txn_id, (i.indicium, o.postage));
                        assert!(prev.is_none(), "one answer per order");
                    }
                    printed_total.fetch_add(batch, Ordering::Relaxed);
                    break;
                }
                Err(e) if e.status == 503 => {
                    unavailable.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("order {r}: {e:?}"),
            }
        }
    }
    printed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_box_process_killed_mid_load_loses_and_creates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let h = spawn_all(tmp.path()).await.unwrap();
    let pki = h.pki.dir().to_str().unwrap().to_owned();

    // The box: a blank virtual meter box card, served over TCP.
    let card = tmp.path().join("cards").join("box");
    create_box(&card);
    let addr = format!("127.0.0.1:{}", free_port());
    let mut sim = CardSim::start(&card, &addr);

    let data = tmp.path().join("dc");
    let box_arg = format!("tcp:{addr}");
    let args: Vec<String> = [
        "--pki",
        &pki,
        "--vendor",
        &h.vendor.url,
        "--kms",
        &h.kms.url,
        "--recharge",
        &h.recharge.url,
        "--box",
        &box_arg,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let mut dc = Proc::start("datacenter", &data, "127.0.0.1:0", &args, "");
    assert!(
        !data.join(openpsd_datacenter::BOX_DIR).exists(),
        "the box is the card-sim process's, not a store in the data directory"
    );
    let data_s = data.to_str().unwrap();
    let (ok, register_out) = backoffice(&[
        "datacenter",
        "register-box",
        "--data",
        data_s,
        "--pki",
        &pki,
        "--kms",
        &h.kms.url,
        "--json",
    ]);
    assert!(ok, "{register_out}");

    // Four mailers, each funded with 30.00.
    let anon = Client::new(&dc.url, &h.pki, None);
    let op = Client::new(&h.recharge.url, &h.pki, Some(Role::Operator));
    let mut mailers = Vec::new();
    for n in 0..4 {
        let s: MailerSession = anon
            .post(
                "/v1/mailers",
                &MailerCredentials {
                    username: format!("mailer{n}"),
                    password: "a-long-enough-password".into(),
                },
            )
            .await
            .unwrap();
        let _: Account = op
            .post(
                &format!("/v1/accounts/vm-{}/deposits", s.mailer_id),
                &Deposit {
                    amount: 3_000,
                    reference: format!("bank-{n}"),
                },
            )
            .await
            .unwrap();
        let m = anon.with_bearer(&s.token);
        let _: RefillDone = m
            .post(
                "/v1/refills",
                &RefillOrder {
                    client_txn_id: format!("{:016x}", 1),
                    amount: 3_000,
                },
            )
            .await
            .unwrap();
        mailers.push(m);
    }

    // Three print singles (12 each), one prints batches of 4 (6 batches).
    let unavailable = Arc::new(AtomicU64::new(0));
    let printed_total = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for (n, m) in mailers.iter().enumerate() {
        let (rounds, batch) = if n == 3 { (6, 4) } else { (12, 1) };
        tasks.push(tokio::spawn(print(
            m.clone(),
            100,
            rounds,
            batch,
            Arc::clone(&unavailable),
            Arc::clone(&printed_total),
        )));
    }
    // The box killed three times while they print, each time after a few more pieces.
    let mut kills = 0;
    for k in 1..=3u64 {
        while printed_total.load(Ordering::Relaxed) < k * 12 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(7 * k)).await;
        sim.kill9_and_restart();
        kills += 1;
    }
    let mut all = Vec::new();
    for t in tasks {
        all.push(t.await.unwrap());
    }
    assert_eq!(kills, 3);
    eprintln!(
        "kill9_box: {} pieces, {} answers 503 while the box was down or cut off",
        printed_total.load(Ordering::Relaxed),
        unavailable.load(Ordering::Relaxed)
    );

    // Registers exact: each meter's used is the sum of what it was answered, once each.
    let mut used_all = 0;
    for (m, printed) in mailers.iter().zip(&all) {
        let v: MeterView = m.get("/v1/meter").await.unwrap();
        let used: u64 = printed.values().map(|(_, p)| p).sum();
        assert_eq!(
            (v.used, v.pieces, v.balance),
            (used, u32::try_from(printed.len()).unwrap(), 3_000 - used),
            "registers are the pieces answered, each charged once"
        );
        used_all += used;
        // Every indicium verifies under the meter's key with the DR it was answered with.
        let key = hex::decode(&v.public_key).unwrap();
        for (hex_ind, _) in printed.values() {
            indicium::verify(&hex::decode(hex_ind).unwrap(), &key).unwrap();
        }
    }

    // Retries answer the first bytes, charged nothing.
    for (n, (m, printed)) in mailers.iter().zip(&all).enumerate() {
        let before: MeterView = m.get("/v1/meter").await.unwrap();
        for (txn, (first, postage)) in printed.iter().take(6) {
            let o = IndiciumOrder {
                client_txn_id: txn.clone(),
                postage: *postage,
                rate: 1,
                destination: "80331".into(),
            };
            let again: IndiciumIssued = m.post("/v1/indicia", &o).await.unwrap();
            assert!(again.reprint, "mailer {n} {txn}: a reprint");
            assert_eq!(&again.indicium, first, "mailer {n} {txn}: the same bytes");
        }
        let after: MeterView = m.get("/v1/meter").await.unwrap();
        assert_eq!((after.used, after.pieces), (before.used, before.pieces));
    }

    // Log-ins while the box is down: the box checks every password, so none can be checked,
    // right or wrong: 503, and none counts as a failure. Seven attempts are more than the
    // five failures that throttle a username; once the box is back, a wrong password is
    // still refused and the right one logs in.
    sim.kill9();
    let log_in = |password: &str| {
        let creds = MailerCredentials {
            username: "mailer0".into(),
            password: password.into(),
        };
        let anon = anon.clone();
        async move { anon.post::<_, MailerSession>("/v1/sessions", &creds).await }
    };
    for n in 0..7 {
        let password = if n % 2 == 0 {
            "a-long-enough-password"
        } else {
            "a-wrong-guess-of-it"
        };
        let e = log_in(password).await.expect_err("the box is down");
        assert_eq!(e.status, 503, "attempt {n}: {e:?}");
    }
    sim.restart();
    // The data center's link finds the box again on its next command.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let e = loop {
        let e = log_in("a-wrong-guess-of-it")
            .await
            .expect_err("wrong password");
        if e.status != 503 || std::time::Instant::now() > deadline {
            break e;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(e.status, 401, "{e:?}");
    let s = log_in("a-long-enough-password").await.unwrap();
    let v: MeterView = anon.with_bearer(&s.token).get("/v1/meter").await.unwrap();
    assert_eq!(v.pieces, u32::try_from(all[0].len()).unwrap());

    // The data center killed too and started again on the box it finds personalized: its
    // roots are the box's, and it serves.
    dc.kill9_and_restart("");
    for (m, printed) in mailers.iter().zip(&all) {
        let v: MeterView = m.get("/v1/meter").await.unwrap();
        assert_eq!(v.pieces, u32::try_from(printed.len()).unwrap());
    }

    // Both killed between the two commits (issue 16: "kill -9 of the box and of the service
    // between the two commits"): the data center stops right after the box answered a
    // piece (the box's commit done, the database's not), and there the box and the data
    // center are killed -9. At its next start the data center RESUMEs the command from
    // its intent: the piece is charged once, and its retry answers the bytes the box
    // committed, again and again.
    dc.kill9_and_restart("datacenter_after_box");
    let m0 = mailers[0].clone();
    let before: MeterView = m0.get("/v1/meter").await.unwrap();
    let cut = order(900, 9);
    let pending = tokio::spawn({
        let (m, o) = (m0.clone(), cut.clone());
        async move { m.post_bytes("/v1/indicia", &o).await }
    });
    tokio::task::block_in_place(|| dc.wait_paused("datacenter_after_box"));
    sim.kill9_and_restart();
    dc.kill9_and_restart("");
    assert!(
        pending.await.unwrap().is_err(),
        "the killed data center never answered"
    );
    let first: IndiciumIssued = m0.post("/v1/indicia", &cut).await.unwrap();
    assert!(first.reprint, "committed at the start, by RESUME");
    let again: IndiciumIssued = m0.post("/v1/indicia", &cut).await.unwrap();
    assert_eq!(again.indicium, first.indicium, "the same bytes");
    let after: MeterView = m0.get("/v1/meter").await.unwrap();
    assert_eq!(
        (after.used, after.pieces),
        (before.used + 9, before.pieces + 1),
        "charged once"
    );
    indicium::verify(
        &hex::decode(&first.indicium).unwrap(),
        &hex::decode(&after.public_key).unwrap(),
    )
    .unwrap();
    used_all += 9;

    // The auditor, under the key the KMS registered, the deposits read at the recharging
    // center: what each mailer paid is what the records credited its meter.
    let reg: serde_json::Value = serde_json::from_str(&register_out).unwrap();
    let key = reg["txn_key"].as_str().unwrap().to_owned();
    let (ok, out) = backoffice(&[
        "datacenter",
        "audit",
        "--data",
        data_s,
        "--box-key",
        &key,
        "--rc",
        &h.recharge.url,
        "--pki",
        &pki,
        "--json",
    ]);
    assert!(ok, "{out}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["credited"], 12_000);
    assert_eq!(report["used"], used_all);
    assert_eq!(report["held"], 12_000 - used_all);
    assert_eq!(report["problems"], serde_json::json!([]));
    assert_eq!(
        report["deposits_checked"], 4,
        "each mailer's account compared"
    );
    drop(dc);
    drop(sim);
    h.stop().await;
}
