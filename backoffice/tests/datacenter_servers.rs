//! Several function servers in front of one database and one box (issue 16 §5,
//! docs/virtual-meter.md §9 "Several function servers"): three `backoffice serve --role
//! datacenter` processes on one PostgreSQL database, each with its own long-lived link to
//! one box (`card-sim serve --tcp … --clients 4`). Mailers print through all three at
//! once — each meter from two tasks, every piece through the next server in turn, so one
//! meter's commands come from several servers at the same time — while one server is
//! killed with SIGKILL mid-load and started again. A request cut off is retried under the
//! same client transaction ID on another server.
//!
//! Afterwards every piece was charged once (each meter's registers are its pieces' sum,
//! each indicium's piece count distinct), every indicium verifies under its meter's key,
//! a retry on any server answers the bytes first issued, the auditor finds the ledger
//! whole, and the killed server starts again (its roots check runs under the shard locks
//! while the others serve). A fourth server with another password pepper is refused.
//!
//! Then each mailer's next refill is sent to all three servers at once under one client
//! transaction ID (a client retrying on another server while the first still works): each
//! server answers the one refill, credited once, and no shard is left stuck. Last, a shard
//! lock held elsewhere past the servers' `lock_timeout` answers 503, nothing charged, and
//! the same request goes through once the lock is free.
//!
//! Runs only with `OPENPSD_TEST_POSTGRES` (scripts/postgres-test.sh) and the card-sim
//! binary (`cargo build -p openpsd-card-sim`); without PostgreSQL it says so and does
//! nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Counters of a few hundred pieces, indexed as usize.
#![allow(clippy::cast_possible_truncation)]

#[path = "common/box_process.rs"]
#[allow(dead_code)]
mod box_process;
mod common;
#[path = "common/proc.rs"]
#[allow(dead_code)]
mod proc;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use box_process::{create_box, free_port, CardSim};
use common::Client;
use openpsd_backoffice::server::spawn_all;
use openpsd_core::psd::indicium;
use openpsd_datacenter::sql::{args, Sql};
use openpsd_protocol::datacenter::{
    DepositView, IndiciumIssued, IndiciumOrder, MailerCredentials, MailerSession, MeterView,
    RefillDone, RefillOrder,
};
use openpsd_protocol::recharge::{Account, Deposit};
use openpsd_service_kit::tls::Role;
use proc::Proc;

const SERVERS: usize = 3;
const MAILERS: u64 = 6;
const TASKS_PER_MAILER: u64 = 2;
const CREDIT: u64 = 30_000;

/// `serve --role datacenter`'s arguments: the services, the database, the box.
fn serve_args(
    pki: &str,
    h: &openpsd_backoffice::server::Handles,
    db: &str,
    box_addr: &str,
) -> Vec<String> {
    [
        "--pki",
        pki,
        "--vendor",
        &h.vendor.url,
        "--kms",
        &h.kms.url,
        "--recharge",
        &h.recharge.url,
        "--database-url",
        db,
        "--box",
        &format!("tcp:{box_addr}"),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

/// One meter's pieces: client transaction ID → (postage, the bytes first answered).
type Pieces = BTreeMap<String, (u64, String)>;

/// Prints pieces of one meter until `stop`, piece k through server (start + k) mod 3, each
/// retried under its ID on the next server while it is cut off (status 0: the server is
/// gone) or busy (503).
async fn print(
    servers: Vec<Client>,
    tag: u64,
    start: usize,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    retried: Arc<AtomicU64>,
) -> Pieces {
    let mut pieces = Pieces::new();
    for k in 0u64.. {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let id = format!("{:016x}", (tag << 32) | k);
        let order = IndiciumOrder {
            client_txn_id: id.clone(),
            postage: 10 + k % 5,
            rate: 1,
            destination: "80331".into(),
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut at = start + k as usize;
        let issued = loop {
            match servers[at % SERVERS]
                .post::<_, IndiciumIssued>("/v1/indicia", &order)
                .await
            {
                Ok(i) => break i,
                Err(e) if (e.status == 0 || e.status == 503) && Instant::now() < deadline => {
                    retried.fetch_add(1, Ordering::SeqCst);
                    at += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("piece {id}: {e:?}"),
            }
        };
        assert_eq!(issued.postage, order.postage);
        pieces.insert(id, (order.postage, issued.indicium));
        done.fetch_add(1, Ordering::SeqCst);
    }
    pieces
}

/// Runs the `backoffice` binary, killed if it runs 60 s: whether it succeeded, and its
/// standard output (with its standard error after it when it failed).
fn backoffice(args: &[&str]) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_backoffice"))
        .args(args)
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        (true, stdout)
    } else {
        (false, stdout + &String::from_utf8_lossy(&out.stderr))
    }
}

fn copy_pepper(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    let name = openpsd_datacenter::PEPPER_FILE;
    std::fs::copy(from.join(name), to.join(name)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_servers_share_one_database_and_one_box_and_one_dies_mid_load() {
    let Ok(base) = std::env::var("OPENPSD_TEST_POSTGRES") else {
        eprintln!("skipped: no PostgreSQL (run scripts/postgres-test.sh)");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let h = spawn_all(tmp.path()).await.unwrap();
    let pki = h.pki.dir().to_str().unwrap().to_owned();
    let name = format!("dc_servers_{}", std::process::id());
    let (b2, n2) = (base.clone(), name.clone());
    tokio::task::spawn_blocking(move || openpsd_post::postgres::create_database(&b2, &n2))
        .await
        .unwrap()
        .unwrap();
    let db = format!("{base} dbname={name}");
    // The servers wait 2 s for a lock another server holds, not the default 10 s (the
    // connection string's own setting wins).
    let served_db = format!("{db} options='-c lock_timeout=2000'");

    // One box, served to up to four clients at once.
    let card = tmp.path().join("box");
    create_box(&card);
    let box_addr = format!("127.0.0.1:{}", free_port());
    let _box = CardSim::start_with(&card, &box_addr, &["--clients".into(), "4".into()]);
    let args = serve_args(&pki, &h, &served_db, &box_addr);

    // The first server personalizes the box and records it and its pepper; the others get
    // a copy of its pepper, as an operator would give them.
    let dirs: Vec<_> = (0..SERVERS)
        .map(|i| tmp.path().join(format!("dc{i}")))
        .collect();
    let mut procs = vec![Proc::start(
        "datacenter",
        &dirs[0],
        "127.0.0.1:0",
        &args,
        "",
    )];
    for d in &dirs[1..] {
        copy_pepper(&dirs[0], d);
        procs.push(Proc::start("datacenter", d, "127.0.0.1:0", &args, ""));
    }
    // A server with a pepper of its own is refused at start.
    let stranger = tmp.path().join("stranger");
    let (ok, out) = backoffice(
        &[
            &[
                "serve",
                "--role",
                "datacenter",
                "--data",
                stranger.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
            ][..],
            &args.iter().map(String::as_str).collect::<Vec<_>>()[..],
        ]
        .concat(),
    );
    assert!(
        !ok && out.contains("is not the pepper this database's password hashes were made with"),
        "{out}"
    );

    let (ok, reg) = backoffice(&[
        "datacenter",
        "register-box",
        "--data",
        dirs[0].to_str().unwrap(),
        "--database-url",
        &db,
        "--pki",
        &pki,
        "--kms",
        &h.kms.url,
        "--json",
    ]);
    assert!(ok, "{reg}");
    let reg: serde_json::Value = serde_json::from_str(&reg).unwrap();
    let txn_key = hex::decode(reg["txn_key"].as_str().unwrap()).unwrap();
    let depth = reg["depth"].as_u64().unwrap();

    // Mailers signed up and funded through the servers in turn; a session made on one
    // server is good on every other (sessions are in the database).
    let urls: Vec<String> = procs.iter().map(|p| p.url.clone()).collect();
    let rc_op = Client::new(&h.recharge.url, &h.pki, Some(Role::Operator));
    let mut mailers = Vec::new();
    let mut mailer_ids = Vec::new();
    for i in 0..MAILERS {
        let anon = Client::new(&urls[i as usize % SERVERS], &h.pki, None);
        let s: MailerSession = anon
            .post(
                "/v1/mailers",
                &MailerCredentials {
                    username: format!("mailer{i}"),
                    password: format!("mailer{i}-correct-horse"),
                },
            )
            .await
            .unwrap();
        let _: Account = rc_op
            .post(
                &format!("/v1/accounts/vm-{}/deposits", s.mailer_id),
                &Deposit {
                    amount: CREDIT,
                    reference: format!("bank-{i}"),
                },
            )
            .await
            .unwrap();
        let servers: Vec<Client> = urls
            .iter()
            .map(|u| Client::new(u, &h.pki, None).with_bearer(&s.token))
            .collect();
        let _: RefillDone = servers[(i as usize + 1) % SERVERS]
            .post(
                "/v1/refills",
                &RefillOrder {
                    client_txn_id: format!("{:016x}", 0xf000 + i),
                    amount: CREDIT,
                },
            )
            .await
            .unwrap();
        mailers.push(servers);
        mailer_ids.push(s.mailer_id);
    }
    let slots: BTreeSet<u32> = {
        let mut s = BTreeSet::new();
        for m in &mailers {
            let v: MeterView = m[2].get("/v1/meter").await.unwrap();
            s.insert(v.slot >> depth);
        }
        s
    };
    assert_eq!(
        slots.len(),
        MAILERS as usize,
        "one shard per meter: {slots:?}"
    );

    // The load, and the second server killed under it, then started again.
    let (stop, done, retried) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (i, servers) in mailers.iter().enumerate() {
        for j in 0..TASKS_PER_MAILER {
            tasks.push((
                i,
                tokio::spawn(print(
                    servers.clone(),
                    ((i as u64) << 8) | j,
                    i + j as usize,
                    stop.clone(),
                    done.clone(),
                    retried.clone(),
                )),
            ));
        }
    }
    let wait_for = |n: u64| {
        let done = done.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(180);
            while done.load(Ordering::SeqCst) < n {
                assert!(
                    Instant::now() < deadline,
                    "the load stalled before {n} pieces"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    wait_for(300).await;
    procs[1].kill9();
    let killed_at = done.load(Ordering::SeqCst);
    eprintln!("server 1 killed after {killed_at} pieces");
    wait_for(killed_at + 300).await;
    let listen = urls[1].trim_start_matches("https://").to_owned();
    procs[1] = Proc::start("datacenter", &dirs[1], &listen, &args, "");
    eprintln!("server 1 started again");
    let back = done.load(Ordering::SeqCst);
    wait_for(back + 300).await;
    stop.store(true, Ordering::SeqCst);
    let mut by_mailer: Vec<Pieces> = vec![Pieces::new(); MAILERS as usize];
    for (i, t) in tasks {
        by_mailer[i].extend(t.await.unwrap());
    }
    let total = done.load(Ordering::SeqCst);
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{total} pieces through {SERVERS} servers in {secs:.1} s ({:.0}/s), {} retries on another server",
        total as f64 / secs,
        retried.load(Ordering::SeqCst)
    );
    assert!(
        retried.load(Ordering::SeqCst) > 0,
        "the kill cut requests off"
    );

    // Every piece charged once, each its own step of the meter's registers.
    let mut used_all = 0;
    for (servers, pieces) in mailers.iter().zip(&by_mailer) {
        let used: u64 = pieces.values().map(|p| p.0).sum();
        used_all += used;
        let m: MeterView = servers[0].get("/v1/meter").await.unwrap();
        assert_eq!(
            (m.used, m.balance, u64::from(m.pieces)),
            (used, CREDIT - used, pieces.len() as u64),
            "meter {}",
            m.meter_id
        );
        let key = hex::decode(&m.public_key).unwrap();
        let mut counts = BTreeSet::new();
        for (id, (postage, ind)) in pieces {
            let d = indicium::verify(&hex::decode(ind).unwrap(), &key).unwrap();
            assert_eq!(d.postage.0, *postage, "piece {id}");
            assert!(
                counts.insert(d.pieces.0),
                "piece count {} twice",
                d.pieces.0
            );
        }
        assert_eq!(counts.len(), pieces.len());
        // A retry on each server answers the bytes first issued.
        for (k, (id, (postage, ind))) in pieces.iter().take(6).enumerate() {
            let again: IndiciumIssued = servers[k % SERVERS]
                .post(
                    "/v1/indicia",
                    &IndiciumOrder {
                        client_txn_id: id.clone(),
                        postage: *postage,
                        rate: 1,
                        destination: "80331".into(),
                    },
                )
                .await
                .unwrap();
            assert!(again.reprint);
            assert_eq!(&again.indicium, ind, "piece {id}");
        }
        let d: DepositView = servers[1].get("/v1/deposit").await.unwrap();
        assert_eq!((d.held, d.debited), (0, CREDIT));
    }

    // One refill per mailer sent to every server at once under one client transaction ID.
    const MORE: u64 = 500;
    for (i, id) in mailer_ids.iter().enumerate() {
        let _: Account = rc_op
            .post(
                &format!("/v1/accounts/vm-{id}/deposits"),
                &Deposit {
                    amount: MORE,
                    reference: format!("bank-more-{i}"),
                },
            )
            .await
            .unwrap();
    }
    let mut racing = Vec::new();
    for (i, servers) in mailers.iter().enumerate() {
        for s in servers.clone() {
            let order = RefillOrder {
                client_txn_id: format!("{:016x}", 0xf100 + i),
                amount: MORE,
            };
            racing.push((
                i,
                tokio::spawn(async move {
                    let deadline = Instant::now() + Duration::from_secs(60);
                    loop {
                        match s.post::<_, RefillDone>("/v1/refills", &order).await {
                            Ok(r) => break r,
                            Err(e) if e.status == 503 && Instant::now() < deadline => {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                            Err(e) => panic!("the raced refill: {e:?}"),
                        }
                    }
                }),
            ));
        }
    }
    let mut answers: BTreeMap<usize, Vec<RefillDone>> = BTreeMap::new();
    for (i, t) in racing {
        answers.entry(i).or_default().push(t.await.unwrap());
    }
    for (i, a) in &answers {
        let used: u64 = by_mailer[*i].values().map(|p| p.0).sum();
        assert_eq!(a.len(), SERVERS);
        for r in a {
            assert_eq!(
                (r.amount, r.balance, &r.combination_id),
                (MORE, CREDIT - used + MORE, &a[0].combination_id),
                "mailer {i}: every server answers the one refill"
            );
        }
        let m: MeterView = mailers[*i][0].get("/v1/meter").await.unwrap();
        assert_eq!(m.balance, CREDIT - used + MORE, "credited once");
        let d: DepositView = mailers[*i][2].get("/v1/deposit").await.unwrap();
        assert_eq!((d.held, d.debited), (0, CREDIT + MORE));
    }

    // A shard lock held past the servers' lock_timeout: 503, nothing done; then it goes
    // through, charged once.
    let m0: MeterView = mailers[0][0].get("/v1/meter").await.unwrap();
    let shard = i64::from(m0.slot >> depth);
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (free_tx, free_rx) = std::sync::mpsc::channel::<()>();
    let holder = {
        let dbx = openpsd_datacenter::Database::Postgres(db.clone());
        std::thread::spawn(move || {
            dbx.write(|c| {
                // The data center's shard lock key (crate::locks): "VM" 0002 ‖ shard.
                c.exec(
                    "test",
                    "SELECT pg_advisory_lock(?1)",
                    args![0x564D_0002_0000_0000_i64 | shard],
                )
                .map_err(|e| anyhow::anyhow!("{}", e.message))?;
                held_tx.send(()).unwrap();
                free_rx.recv().unwrap();
                Ok(())
            })
            .unwrap();
        })
    };
    held_rx.recv().unwrap();
    let order = IndiciumOrder {
        client_txn_id: "00000000fffffff0".into(),
        postage: 7,
        rate: 1,
        destination: "80331".into(),
    };
    let t = Instant::now();
    let busy = mailers[0][1]
        .post::<_, IndiciumIssued>("/v1/indicia", &order)
        .await
        .unwrap_err();
    assert_eq!(busy.status, 503, "{busy:?}");
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "answered within the lock timeout: {:?}",
        t.elapsed()
    );
    let m: MeterView = mailers[0][2].get("/v1/meter").await.unwrap();
    assert_eq!(
        (m.pieces, m.balance),
        (m0.pieces, m0.balance),
        "nothing charged"
    );
    free_tx.send(()).unwrap();
    holder.join().unwrap();
    let issued: IndiciumIssued = mailers[0][1].post("/v1/indicia", &order).await.unwrap();
    assert!(!issued.reprint);
    let m: MeterView = mailers[0][2].get("/v1/meter").await.unwrap();
    assert_eq!(
        (m.pieces, m.balance),
        (m0.pieces + 1, m0.balance - 7),
        "charged once"
    );
    let used_all = used_all + 7;

    // The auditor: the ledger is whole.
    let dbx = openpsd_datacenter::Database::Postgres(db.clone());
    let a =
        tokio::task::spawn_blocking(move || openpsd_datacenter::audit::audit(&dbx, Some(&txn_key)))
            .await
            .unwrap()
            .unwrap();
    assert!(a.problems.is_empty(), "{:?}", a.problems);
    assert_eq!((a.credited, a.used), ((CREDIT + MORE) * MAILERS, used_all));
    drop(procs);
    h.stop().await;
}
