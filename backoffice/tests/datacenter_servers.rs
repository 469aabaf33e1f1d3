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
//! Two more tests, each on a database and a box of its own: a box command that reaches the
//! box after its server lost its PostgreSQL session and the shard's lock with it (the next
//! server carried the intent out, or the late copy committed first), charged once; and one
//! mailer's refills driven by three servers at once while the one that started each is
//! killed with SIGKILL mid-refill and started again, each credited once, refused ones
//! voided and their holds released.
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
    // One database (the servers wait 2 s for a lock another server holds, not the default
    // 10 s) and one box, served to up to four clients at once.
    let Some(Bench {
        tmp,
        h,
        pki,
        db,
        args,
        _box,
        ..
    }) = Bench::new("dc_servers", SERVERS).await
    else {
        return;
    };

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

// ---------------------------------------------------------------------------------------
// Two gaps of the servers' sharing, each on a database and a box of its own: a box command
// that arrives after its server lost its database session (and its shard lock with it),
// and one mailer's refills driven by several servers at once, one killed mid-refill.

/// One database, one box, the services; the servers started by the test.
struct Bench {
    tmp: tempfile::TempDir,
    h: openpsd_backoffice::server::Handles,
    pki: String,
    /// The database, as the test's own connections use it.
    db: String,
    /// `serve`'s arguments (the database with a 2 s lock_timeout).
    args: Vec<String>,
    _box: CardSim,
    /// The box's transaction key as the KMS registered it (hex), once registered.
    txn_key: String,
    depth: u64,
}

impl Bench {
    /// `None` without PostgreSQL. The box serves `servers + 1` clients.
    async fn new(tag: &str, servers: usize) -> Option<Bench> {
        let Ok(base) = std::env::var("OPENPSD_TEST_POSTGRES") else {
            eprintln!("skipped: no PostgreSQL (run scripts/postgres-test.sh)");
            return None;
        };
        let tmp = tempfile::tempdir().unwrap();
        let h = spawn_all(tmp.path()).await.unwrap();
        let pki = h.pki.dir().to_str().unwrap().to_owned();
        let name = format!("{tag}_{}", std::process::id());
        let (b2, n2) = (base.clone(), name.clone());
        tokio::task::spawn_blocking(move || openpsd_post::postgres::create_database(&b2, &n2))
            .await
            .unwrap()
            .unwrap();
        let db = format!("{base} dbname={name}");
        let served_db = format!("{db} options='-c lock_timeout=2000'");
        let card = tmp.path().join("box");
        create_box(&card);
        let box_addr = format!("127.0.0.1:{}", free_port());
        let clients = (servers + 1).to_string();
        let b = CardSim::start_with(&card, &box_addr, &["--clients".into(), clients]);
        let args = serve_args(&pki, &h, &served_db, &box_addr);
        Some(Bench {
            tmp,
            h,
            pki,
            db,
            args,
            _box: b,
            txn_key: String::new(),
            depth: 0,
        })
    }

    fn dir(&self, i: usize) -> std::path::PathBuf {
        self.tmp.path().join(format!("dc{i}"))
    }

    /// Starts server `i` (0 first: it personalizes the box), armed at `pause`, with `env`.
    fn start(&self, i: usize, listen: &str, pause: &str, env: &[(&str, &str)]) -> Proc {
        if i > 0 {
            copy_pepper(&self.dir(0), &self.dir(i));
        }
        Proc::start_env("datacenter", &self.dir(i), listen, &self.args, pause, env)
    }

    /// Registers the box at the KMS (after server 0 started, before any meter).
    fn register(&mut self) {
        let (ok, reg) = backoffice(&[
            "datacenter",
            "register-box",
            "--data",
            self.dir(0).to_str().unwrap(),
            "--database-url",
            &self.db,
            "--pki",
            &self.pki,
            "--kms",
            &self.h.kms.url,
            "--json",
        ]);
        assert!(ok, "{reg}");
        let reg: serde_json::Value = serde_json::from_str(&reg).unwrap();
        self.txn_key = reg["txn_key"].as_str().unwrap().to_owned();
        self.depth = reg["depth"].as_u64().unwrap();
    }

    /// A mailer signed up through `urls[0]`, `credit` deposited and refilled: its client on
    /// each server, and its ID.
    async fn mailer(&self, urls: &[String], name: &str, credit: u64) -> (Vec<Client>, String) {
        let anon = Client::new(&urls[0], &self.h.pki, None);
        let s: MailerSession = anon
            .post(
                "/v1/mailers",
                &MailerCredentials {
                    username: name.into(),
                    password: format!("{name}-correct-horse"),
                },
            )
            .await
            .unwrap();
        self.deposit(&s.mailer_id, credit, "bank-0").await;
        let servers: Vec<Client> = urls
            .iter()
            .map(|u| Client::new(u, &self.h.pki, None).with_bearer(&s.token))
            .collect();
        let _: RefillDone = servers[0]
            .post(
                "/v1/refills",
                &RefillOrder {
                    client_txn_id: "000000000000f000".into(),
                    amount: credit,
                },
            )
            .await
            .unwrap();
        (servers, s.mailer_id)
    }

    async fn deposit(&self, mailer: &str, amount: u64, reference: &str) {
        let rc_op = Client::new(&self.h.recharge.url, &self.h.pki, Some(Role::Operator));
        let _: Account = rc_op
            .post(
                &format!("/v1/accounts/vm-{mailer}/deposits"),
                &Deposit {
                    amount,
                    reference: reference.into(),
                },
            )
            .await
            .unwrap();
    }

    /// Runs `f` on a connection of the test's own (blocking, off the async threads).
    async fn sql<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut openpsd_datacenter::sql::Conn<'_>) -> anyhow::Result<T> + Send + 'static,
    ) -> T {
        let dbx = openpsd_datacenter::Database::Postgres(self.db.clone());
        tokio::task::spawn_blocking(move || dbx.write(f))
            .await
            .unwrap()
            .unwrap()
    }

    /// How many rows `query` (one bigint column) counts.
    async fn count(&self, query: &'static str) -> i64 {
        self.sql(move |c| {
            c.one("test", query, args![])
                .and_then(|r| r.int(0))
                .map_err(|e| anyhow::anyhow!("{}", e.message))
        })
        .await
    }

    /// Ends (pg_terminate_backend) the one session of this database holding advisory lock
    /// `key`, and waits until the lock is free.
    async fn end_holder_of(&self, key: i64) {
        let holders: Vec<i64> = self
            .sql(move |c| {
                let rows = c
                    .rows("test", HOLDERS, args![key])
                    .map_err(|e| anyhow::anyhow!("{}", e.message))?;
                rows.iter()
                    .map(|r| r.int(0).map_err(|e| anyhow::anyhow!("{}", e.message)))
                    .collect()
            })
            .await;
        assert_eq!(holders.len(), 1, "one session holds the lock: {holders:?}");
        let pid = holders[0];
        let terminated = self
            .sql(move |c| {
                c.one(
                    "test",
                    // The one PID only: a WHERE clause may call the function on every row.
                    "SELECT CASE WHEN pg_terminate_backend((?1::bigint)::int) THEN 1::bigint
                     ELSE 0::bigint END",
                    args![pid],
                )
                .and_then(|r| r.int(0))
                .map_err(|e| anyhow::anyhow!("{}", e.message))
            })
            .await;
        assert_eq!(terminated, 1, "session {pid} ended");
        let deadline = Instant::now() + Duration::from_secs(10);
        while self
            .sql(move |c| {
                c.rows("test", HOLDERS, args![key])
                    .map(|r| !r.is_empty())
                    .map_err(|e| anyhow::anyhow!("{}", e.message))
            })
            .await
        {
            assert!(Instant::now() < deadline, "the lock outlived its session");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// `backoffice datacenter audit --rc`: the records walked under the registered key, each
    /// mailer's deposit compared with what they credited. Its JSON report.
    fn audit(&self) -> serde_json::Value {
        let (ok, out) = backoffice(&[
            "datacenter",
            "audit",
            "--data",
            self.dir(0).to_str().unwrap(),
            "--database-url",
            &self.db,
            "--box-key",
            &self.txn_key,
            "--rc",
            &self.h.recharge.url,
            "--pki",
            &self.pki,
            "--json",
        ]);
        assert!(ok, "{out}");
        serde_json::from_str(&out).unwrap()
    }
}

/// An order of postage `postage` under client transaction ID `id`.
fn piece(id: u64, postage: u64) -> IndiciumOrder {
    IndiciumOrder {
        client_txn_id: format!("{id:016x}"),
        postage,
        rate: 1,
        destination: "80331".into(),
    }
}

/// The shard lock's key of `shard` (crate::locks: "VM" 0002 ‖ shard).
fn shard_key(shard: u32) -> i64 {
    0x564D_0002_0000_0000_i64 | i64::from(shard)
}

/// The sessions of this database holding advisory lock `key`, as the test connection sees
/// them.
const HOLDERS: &str = "SELECT pid::bigint FROM pg_locks
     WHERE locktype = 'advisory' AND granted
       AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
       AND ((classid::bigint << 32) | objid::bigint) = ?1";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_late_copy_of_a_box_command_after_the_lock_was_lost_charges_once() {
    const CREDIT: u64 = 5_000;
    let started = Instant::now();
    let Some(mut b) = Bench::new("dc_late", 2).await else {
        return;
    };
    let release = b.tmp.path().join("release-server-1");
    let s0 = b.start(0, "127.0.0.1:0", "", &[]);
    b.register();
    // Server 1 stops at its first box command, the intent committed and the shard's lock
    // held, until the release file exists.
    let mut s1 = b.start(
        1,
        "127.0.0.1:0",
        "datacenter_before_box",
        &[("BACKOFFICE_PAUSE_RELEASE", release.to_str().unwrap())],
    );
    let urls = vec![s0.url.clone(), s1.url.clone()];
    let (m, _) = b.mailer(&urls, "late", CREDIT).await;
    let mut issued: BTreeMap<String, (u64, String)> = BTreeMap::new();
    let first: IndiciumIssued = m[0].post("/v1/indicia", &piece(1, 10)).await.unwrap();
    issued.insert(first.client_txn_id.clone(), (10, first.indicium));
    let v: MeterView = m[0].get("/v1/meter").await.unwrap();
    let shard = v.slot >> b.depth;

    // Server 1 commits its intent for piece 2 and stops on its way to the box.
    let late = piece(2, 11);
    let on_1 = {
        let (c, o) = (m[1].clone(), late.clone());
        tokio::spawn(async move { c.post::<_, IndiciumIssued>("/v1/indicia", &o).await })
    };
    tokio::task::block_in_place(|| s1.wait_paused("datacenter_before_box"));

    // Its session is ended under it (as a lost connection would): the shard's lock goes.
    b.end_holder_of(shard_key(shard)).await;
    assert!(
        !on_1.is_finished(),
        "server 1 is still on its way to the box"
    );
    assert_eq!(
        b.count("SELECT count(*) FROM intents").await,
        1,
        "server 1's intent is committed"
    );

    // Server 0 claims the shard, finds the intent, carries it out, then prints its own.
    let next: IndiciumIssued = m[0].post("/v1/indicia", &piece(3, 12)).await.unwrap();
    assert!(!next.reprint);
    issued.insert(next.client_txn_id.clone(), (12, next.indicium));
    let carried: IndiciumIssued = m[0].post("/v1/indicia", &late).await.unwrap();
    assert!(carried.reprint, "server 0 carried server 1's intent out");
    issued.insert(
        carried.client_txn_id.clone(),
        (11, carried.indicium.clone()),
    );

    // Server 1's copy reaches the box late: refused as a stale record, not charged again.
    // Its caller gets the indicium or a clear "retry" (503), nothing else.
    std::fs::write(&release, b"").unwrap();
    match on_1.await.unwrap() {
        Ok(i) => assert_eq!(i.indicium, carried.indicium, "the one indicium"),
        Err(e) => {
            assert_eq!(e.status, 503, "{e:?}");
            eprintln!(
                "server 1 answered the late copy's caller 503: {}",
                e.message
            );
        }
    }
    // The same request again, on either server: the first bytes, free.
    for c in &m {
        let again: IndiciumIssued = c.post("/v1/indicia", &late).await.unwrap();
        assert!(again.reprint);
        assert_eq!(again.indicium, carried.indicium);
    }
    // No shard stuck: the meter prints on both servers.
    for (k, c) in m.iter().enumerate() {
        let o = piece(4 + k as u64, 13);
        let i: IndiciumIssued = c.post("/v1/indicia", &o).await.unwrap();
        assert!(!i.reprint);
        issued.insert(i.client_txn_id, (13, i.indicium));
    }

    // Again, but the late copy reaches the box before another server claims the shard: the
    // box commits it, its server cannot commit the answer (no session), and the next server
    // to claim the shard finds the intent and commits the box's answer (RESUME).
    let listen = s1.url.trim_start_matches("https://").to_owned();
    s1.kill9();
    let release = b.tmp.path().join("release-server-1-again");
    let mut s1 = b.start(
        1,
        &listen,
        "datacenter_before_box",
        &[("BACKOFFICE_PAUSE_RELEASE", release.to_str().unwrap())],
    );
    let first_wins = piece(6, 14);
    let on_1 = {
        let (c, o) = (m[1].clone(), first_wins.clone());
        tokio::spawn(async move { c.post::<_, IndiciumIssued>("/v1/indicia", &o).await })
    };
    tokio::task::block_in_place(|| s1.wait_paused("datacenter_before_box"));
    b.end_holder_of(shard_key(shard)).await;
    std::fs::write(&release, b"").unwrap();
    let answered = on_1.await.unwrap();
    let left = b.count("SELECT count(*) FROM intents").await;
    match &answered {
        Ok(_) => assert_eq!(left, 0),
        Err(e) => {
            assert_eq!(e.status, 503, "{e:?}");
            assert_eq!(left, 1, "the box's answer is not committed yet");
        }
    }
    let resumed: IndiciumIssued = m[0].post("/v1/indicia", &first_wins).await.unwrap();
    assert!(resumed.reprint, "server 0 committed the box's answer");
    if let Ok(i) = &answered {
        assert_eq!(i.indicium, resumed.indicium);
    }
    for c in &m {
        let again: IndiciumIssued = c.post("/v1/indicia", &first_wins).await.unwrap();
        assert!(again.reprint);
        assert_eq!(again.indicium, resumed.indicium);
    }
    issued.insert(resumed.client_txn_id.clone(), (14, resumed.indicium));
    for (k, c) in m.iter().enumerate() {
        let o = piece(7 + k as u64, 15);
        let i: IndiciumIssued = c.post("/v1/indicia", &o).await.unwrap();
        assert!(!i.reprint);
        issued.insert(i.client_txn_id, (15, i.indicium));
    }

    // Each piece charged once, each indicium its own step of the registers.
    let used: u64 = issued.values().map(|p| p.0).sum();
    let v: MeterView = m[1].get("/v1/meter").await.unwrap();
    assert_eq!(
        (v.used, v.balance, u64::from(v.pieces)),
        (used, CREDIT - used, issued.len() as u64)
    );
    let key = hex::decode(&v.public_key).unwrap();
    let mut counts = BTreeSet::new();
    for (id, (postage, ind)) in &issued {
        let d = indicium::verify(&hex::decode(ind).unwrap(), &key).unwrap();
        assert_eq!(d.postage.0, *postage, "piece {id}");
        assert!(
            counts.insert(d.pieces.0),
            "piece count {} twice",
            d.pieces.0
        );
    }
    let d: DepositView = m[0].get("/v1/deposit").await.unwrap();
    assert_eq!((d.held, d.debited), (0, CREDIT));
    assert_eq!(b.count("SELECT count(*) FROM intents").await, 0);
    let report = b.audit();
    assert_eq!(report["problems"], serde_json::json!([]), "{report}");
    assert_eq!(
        (report["credited"].as_u64(), report["used"].as_u64()),
        (Some(CREDIT), Some(used))
    );
    eprintln!("late copy: {:.1} s", started.elapsed().as_secs_f64());
    drop((s0, s1));
    b.h.stop().await;
}

/// Sends refill `order` to `c` until it ends (503 is sent again; so is a cut-off, status 0,
/// when `through_restarts`): the refill done, or its final refusal.
async fn refill_until_done(
    c: Client,
    order: RefillOrder,
    through_restarts: bool,
    busy: Arc<AtomicU64>,
) -> Result<RefillDone, common::Refused> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match c.post::<_, RefillDone>("/v1/refills", &order).await {
            Err(e)
                if (e.status == 503 || (e.status == 0 && through_restarts))
                    && Instant::now() < deadline =>
            {
                busy.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return other,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refills_of_one_mailer_raced_on_three_servers_one_killed_mid_refill_credit_once() {
    const CREDIT: u64 = 4_000;
    const MORE: u64 = 1_000;
    // Above the meter's limit (max_dr, 10,000.00 by default) with the balance it has then:
    // the box refuses it.
    const TOO_MUCH: u64 = 1_000_000;
    let started = Instant::now();
    let Some(mut b) = Bench::new("dc_refills", 3).await else {
        return;
    };
    let s0 = b.start(0, "127.0.0.1:0", "", &[]);
    b.register();
    let s1 = b.start(1, "127.0.0.1:0", "", &[]);
    // Server 2 stops at its first box command: the refill's REFILL, its intent committed.
    let mut s2 = b.start(2, "127.0.0.1:0", "datacenter_before_box", &[]);
    let urls = vec![s0.url.clone(), s1.url.clone(), s2.url.clone()];
    let listen2 = urls[2].trim_start_matches("https://").to_owned();
    let (m, mailer) = b.mailer(&urls, "refiller", CREDIT).await;
    let busy = Arc::new(AtomicU64::new(0));
    let order = |id: u64, amount: u64| RefillOrder {
        client_txn_id: format!("{id:016x}"),
        amount,
    };
    let mut used = 0;
    let mut pieces = 0;

    // 1. Server 2 dies holding the shard with the REFILL's intent committed, while servers
    //    0 and 1 drive the same refill (the client retrying elsewhere): one of them
    //    carries the intent out, both answer the one refill.
    b.deposit(&mailer, MORE, "bank-1").await;
    let r1 = order(0xf001, MORE);
    let on_2 = tokio::spawn(refill_until_done(
        m[2].clone(),
        r1.clone(),
        false,
        busy.clone(),
    ));
    tokio::task::block_in_place(|| s2.wait_paused("datacenter_before_box"));
    let others: Vec<_> = m[..2]
        .iter()
        .map(|c| {
            tokio::spawn(refill_until_done(
                c.clone(),
                r1.clone(),
                false,
                busy.clone(),
            ))
        })
        .collect();
    // They met server 2's lock (503 after the 2 s lock_timeout) before it dies.
    let deadline = Instant::now() + Duration::from_secs(30);
    while busy.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "the other servers never met the lock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    s2.kill9();
    assert_eq!(on_2.await.unwrap().unwrap_err().status, 0, "cut off");
    let mut first = None;
    for t in others {
        let done = t.await.unwrap().unwrap();
        assert_eq!(done.amount, MORE);
        let f = first.get_or_insert_with(|| done.clone());
        assert_eq!(
            (done.balance, &done.combination_id),
            (f.balance, &f.combination_id)
        );
    }
    let r1_done = first.unwrap();
    assert_eq!(r1_done.balance, CREDIT + MORE, "credited once");

    // 2. Server 2 again, stopped after the box applied a REFILL and before its commit, and
    //    killed there; then started again (its start finishes the intent and the refill)
    //    while servers 0 and 1 drive the same refill and print on the same meter.
    s2 = b.start(2, &listen2, "datacenter_after_box", &[]);
    b.deposit(&mailer, MORE, "bank-2").await;
    let r2 = order(0xf002, MORE);
    let on_2 = tokio::spawn(refill_until_done(
        m[2].clone(),
        r2.clone(),
        false,
        busy.clone(),
    ));
    tokio::task::block_in_place(|| s2.wait_paused("datacenter_after_box"));
    s2.kill9();
    assert_eq!(on_2.await.unwrap().unwrap_err().status, 0, "cut off");
    let restart = {
        let (args, dir, listen) = (b.args.clone(), b.dir(2), listen2.clone());
        // Not armed: a start that finished a refill the others still drive would stop
        // there, before it listens. It is armed again (killed while idle) when nothing is
        // under way.
        tokio::task::spawn_blocking(move || Proc::start("datacenter", &dir, &listen, &args, ""))
    };
    let others: Vec<_> = m[..2]
        .iter()
        .map(|c| {
            tokio::spawn(refill_until_done(
                c.clone(),
                r2.clone(),
                false,
                busy.clone(),
            ))
        })
        .collect();
    let prints: Vec<_> = m[..2]
        .iter()
        .enumerate()
        .map(|(k, c)| {
            let c = c.clone();
            tokio::spawn(async move {
                let o = piece(0x100 + k as u64, 20);
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    match c.post::<_, IndiciumIssued>("/v1/indicia", &o).await {
                        Err(e) if e.status == 503 && Instant::now() < deadline => {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        other => break other.unwrap(),
                    }
                }
            })
        })
        .collect();
    s2 = restart.await.unwrap();
    for p in prints {
        let i = p.await.unwrap();
        assert!(!i.reprint);
        used += 20;
        pieces += 1;
    }
    let mut answers = Vec::new();
    for t in others {
        answers.push(t.await.unwrap().unwrap());
    }
    answers.push(
        refill_until_done(m[2].clone(), r2.clone(), false, busy.clone())
            .await
            .unwrap(),
    );
    for a in &answers {
        assert_eq!(
            (a.amount, &a.combination_id),
            (MORE, &answers[0].combination_id),
            "every server answers the one refill"
        );
    }
    let v: MeterView = m[2].get("/v1/meter").await.unwrap();
    assert_eq!(v.balance, CREDIT + 2 * MORE - used, "credited once");

    // 3. Refills above the meter's limit, which the box refuses (the row then voided: a
    //    zero refill on the same counters, and the hold released), each driven by servers
    //    0 and 1 while server 2, which started it, is killed and started again:
    //    a. server 2 dies holding the shard with the REFILL's intent committed: the next
    //       server carries it out, the box refuses it, and the row moves to `voiding` while
    //       the other server drives it too (a REFILL re-sent after the row moved on would
    //       leave the shard's intent unfinishable);
    //    b. server 2 dies after the void's commit, its hold still held.
    //    Either way the hold goes back and nothing is credited.
    let steps = ["datacenter_before_box", "datacenter_refill_after_void"];
    for (k, at) in steps.into_iter().enumerate() {
        // Server 2 armed at `at`, killed while idle and started again.
        s2.kill9();
        s2 = tokio::task::block_in_place(|| b.start(2, &listen2, at, &[]));
        b.deposit(&mailer, TOO_MUCH, &format!("bank-too-much-{k}"))
            .await;
        let r = order(0xf003 + k as u64, TOO_MUCH);
        let on_2 = tokio::spawn(refill_until_done(
            m[2].clone(),
            r.clone(),
            false,
            busy.clone(),
        ));
        tokio::task::block_in_place(|| s2.wait_paused(at));
        let met = Arc::new(AtomicU64::new(0));
        let others: Vec<_> = m[..2]
            .iter()
            .map(|c| tokio::spawn(refill_until_done(c.clone(), r.clone(), false, met.clone())))
            .collect();
        if at == "datacenter_before_box" {
            let deadline = Instant::now() + Duration::from_secs(30);
            while met.load(Ordering::SeqCst) == 0 {
                assert!(
                    Instant::now() < deadline,
                    "the other servers never met the lock"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        s2.kill9();
        assert_eq!(on_2.await.unwrap().unwrap_err().status, 0, "cut off");
        s2 = {
            let (args, dir, listen) = (b.args.clone(), b.dir(2), listen2.clone());
            tokio::task::spawn_blocking(move || Proc::start("datacenter", &dir, &listen, &args, ""))
                .await
                .unwrap()
        };
        for t in others {
            let e = t.await.unwrap().unwrap_err();
            assert_eq!((e.status, e.code.as_str()), (409, "box_refused"), "{e:?}");
        }
        let e = refill_until_done(m[2].clone(), r.clone(), false, busy.clone())
            .await
            .unwrap_err();
        assert_eq!((e.status, e.code.as_str()), (409, "box_refused"), "{e:?}");
        busy.fetch_add(met.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    // Afterwards: the same refills again on every server answer the same; the meter prints
    // on every server (no shard stuck); nothing held, every refill row ended, no intent
    // left; the deposit debited is what the box's records credited.
    for c in &m {
        let again = refill_until_done(c.clone(), r1.clone(), false, busy.clone())
            .await
            .unwrap();
        assert_eq!(
            (again.balance, &again.combination_id),
            (r1_done.balance, &r1_done.combination_id)
        );
        let again = refill_until_done(c.clone(), r2.clone(), false, busy.clone())
            .await
            .unwrap();
        assert_eq!(again.combination_id, answers[0].combination_id);
    }
    for (k, c) in m.iter().enumerate() {
        let i: IndiciumIssued = c
            .post("/v1/indicia", &piece(0x200 + k as u64, 30))
            .await
            .unwrap();
        assert!(!i.reprint);
        used += 30;
        pieces += 1;
    }
    let credited = CREDIT + 2 * MORE;
    let v: MeterView = m[0].get("/v1/meter").await.unwrap();
    assert_eq!(
        (v.used, v.balance, v.pieces),
        (used, credited - used, pieces)
    );
    let d: DepositView = m[1].get("/v1/deposit").await.unwrap();
    assert_eq!(
        (d.held, d.debited, d.available),
        (0, credited, 2 * TOO_MUCH),
        "nothing held, the refused refill's hold given back"
    );
    assert_eq!(b.count("SELECT count(*) FROM intents").await, 0);
    assert_eq!(
        b.count(
            "SELECT count(*) FROM refills WHERE state NOT IN ('settled', 'released', 'refused')"
        )
        .await,
        0,
        "every refill ended"
    );
    let report = b.audit();
    assert_eq!(report["problems"], serde_json::json!([]), "{report}");
    assert_eq!(report["credited"].as_u64(), Some(credited));
    assert_eq!(report["deposits_checked"].as_u64(), Some(1));
    eprintln!(
        "raced refills: {:.1} s, {} answers 503 or cut off",
        started.elapsed().as_secs_f64(),
        busy.load(Ordering::SeqCst)
    );
    drop((s0, s1, s2));
    b.h.stop().await;
}
