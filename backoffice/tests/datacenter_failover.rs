//! The data center on PostgreSQL when its primary dies (issue 16 §5): a primary with a
//! synchronous standby (`scripts/postgres-test.sh` starts both and says how to kill the one
//! and promote the other), mailers printing all the while; the primary is killed
//! (`pg_ctl -m immediate`, no shutdown of any kind) mid-load and the standby promoted. The
//! requests under way answer 503 and are retried under the same client transaction IDs;
//! afterwards every piece was charged exactly once, every meter holds what it was credited
//! less what it printed, the auditor finds the ledger whole, a retry answers the very bytes
//! first issued, a refill goes through, and the data center starts again on the promoted
//! server (its roots are the box's).
//!
//! What it does not force: the kill landing exactly between the box's commit and the
//! database's (RESUME's window). Where it lands is up to the load; the window itself is
//! forced on SQLite by `kill9_datacenter.rs`, and RESUME is the same code on both servers.
//!
//! Runs only with `OPENPSD_TEST_PG_FAILOVER_URL` (the two servers, `target_session_attrs=
//! read-write`), `OPENPSD_TEST_PG_FAILOVER_PRIMARY` (the primary alone, to make the
//! database), `OPENPSD_TEST_PG_KILL_PRIMARY` and `OPENPSD_TEST_PG_PROMOTE` (shell commands);
//! without them it says so and does nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Client;
use openpsd_backoffice::server::{spawn_all, start_datacenter};
use openpsd_protocol::datacenter::{
    BoxRegistration, IndiciumIssued, IndiciumOrder, MailerCredentials, MailerSession, MeterView,
    RefillDone, RefillOrder,
};
use openpsd_protocol::recharge::{Account, Deposit};
use openpsd_service_kit::codec::device_hex;
use openpsd_service_kit::tls::Role;

const MAILERS: u64 = 4;
const CREDIT: u64 = 20_000;

struct Failover {
    url: String,
    primary: String,
    kill: String,
    promote: String,
}

impl Failover {
    fn from_env() -> Option<Self> {
        let v = |k: &str| std::env::var(k).ok();
        Some(Self {
            url: v("OPENPSD_TEST_PG_FAILOVER_URL")?,
            primary: v("OPENPSD_TEST_PG_FAILOVER_PRIMARY")?,
            kill: v("OPENPSD_TEST_PG_KILL_PRIMARY")?,
            promote: v("OPENPSD_TEST_PG_PROMOTE")?,
        })
    }
}

fn sh(cmd: &str) {
    let st = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .status()
        .unwrap();
    assert!(st.success(), "{cmd}: {st}");
}

/// One mailer's pieces: client transaction ID → (postage, the bytes first answered).
type Pieces = BTreeMap<String, (u64, String)>;

/// Prints pieces until `stop`, each retried under its ID until it is answered; counts the
/// 503s met on the way.
async fn print(
    c: Client,
    mailer: u64,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    busy: Arc<AtomicU64>,
) -> Pieces {
    let mut pieces = Pieces::new();
    for k in 0u64.. {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let id = format!("{:016x}", (mailer << 32) | k);
        let order = IndiciumOrder {
            client_txn_id: id.clone(),
            postage: 10 + k % 7,
            rate: 1,
            destination: "80331".into(),
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        let issued = loop {
            match c.post::<_, IndiciumIssued>("/v1/indicia", &order).await {
                Ok(i) => break i,
                Err(e) if e.status == 503 && Instant::now() < deadline => {
                    busy.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_primary_dies_mid_load_and_the_standby_takes_over_with_no_value_lost_or_created() {
    let Some(fo) = Failover::from_env() else {
        eprintln!("skipped: no primary/standby pair (run scripts/postgres-test.sh)");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let h = spawn_all(tmp.path()).await.unwrap();
    let name = format!("dc_failover_{}", std::process::id());
    let primary = fo.primary.clone();
    let n2 = name.clone();
    tokio::task::spawn_blocking(move || openpsd_post::postgres::create_database(&primary, &n2))
        .await
        .unwrap()
        .unwrap();
    let mut config = openpsd_datacenter::Config::new(
        tmp.path().join("datacenter"),
        [&h.vendor.url, &h.kms.url, &h.recharge.url],
        h.pki.clone(),
    );
    config.shards = 4;
    config.depth = 4;
    config.database_url = Some(format!("{} dbname={name}", fo.url));
    let (dc, info) = start_datacenter(&config, "127.0.0.1:0", 100_000)
        .await
        .unwrap();
    let op = Client::new(&h.kms.url, &h.pki, Some(Role::Operator));
    let _: BoxRegistration = op
        .post(
            "/v1/vbox/boxes",
            &BoxRegistration {
                box_id: device_hex(&info.box_id),
                txn_key: hex::encode(info.txn_key),
                depth: info.depth,
            },
        )
        .await
        .unwrap();

    // Mailers, each with 200.00 in the meter.
    let rc_op = Client::new(&h.recharge.url, &h.pki, Some(Role::Operator));
    let mut clients = Vec::new();
    for i in 0..MAILERS {
        let anon = Client::new(&dc.url, &h.pki, None);
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
                    amount: CREDIT + 1_000,
                    reference: format!("bank-{i}"),
                },
            )
            .await
            .unwrap();
        let c = anon.with_bearer(&s.token);
        let _: RefillDone = c
            .post(
                "/v1/refills",
                &RefillOrder {
                    client_txn_id: format!("{:016x}", 0xf000 + i),
                    amount: CREDIT,
                },
            )
            .await
            .unwrap();
        clients.push(c);
    }

    // Load, and the primary killed under it.
    let (stop, done, busy) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let tasks: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(i, c)| {
            tokio::spawn(print(
                c.clone(),
                i as u64,
                stop.clone(),
                done.clone(),
                busy.clone(),
            ))
        })
        .collect();
    let wait_for = |n: u64| {
        let done = done.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(120);
            while done.load(Ordering::SeqCst) < n {
                assert!(Instant::now() < deadline, "the load stalled at {n}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    wait_for(60).await;
    let before = done.load(Ordering::SeqCst);
    let kill = fo.kill.clone();
    tokio::task::spawn_blocking(move || sh(&kill))
        .await
        .unwrap();
    eprintln!("primary killed after {before} pieces");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let promote = fo.promote.clone();
    tokio::task::spawn_blocking(move || sh(&promote))
        .await
        .unwrap();
    eprintln!("standby promoted");
    let after_promote = done.load(Ordering::SeqCst);
    wait_for(after_promote + 60).await;
    stop.store(true, Ordering::SeqCst);
    let mut all = Vec::new();
    for t in tasks {
        all.push(t.await.unwrap());
    }
    let met = busy.load(Ordering::SeqCst);
    eprintln!(
        "{} pieces in all, {met} answers 503 during the failover",
        done.load(Ordering::SeqCst)
    );
    assert!(met > 0, "the primary died with requests under way");

    // Every piece charged once: the meter's registers are its pieces' sum.
    let mut used_all = 0;
    for (c, pieces) in clients.iter().zip(&all) {
        let used: u64 = pieces.values().map(|p| p.0).sum();
        used_all += used;
        let m: MeterView = c.get("/v1/meter").await.unwrap();
        assert_eq!(
            (m.used, m.balance, u64::from(m.pieces)),
            (used, CREDIT - used, pieces.len() as u64),
            "a meter after the failover"
        );
        // A retry answers the bytes first issued (a piece the dead primary committed is on
        // the standby; one it did not was finished by RESUME or issued afresh once).
        for (id, (postage, indicium)) in pieces.iter().take(200) {
            let again: IndiciumIssued = c
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
            assert_eq!(&again.indicium, indicium, "piece {id}");
        }
    }
    // The deposits: every refill settled, nothing held, each mailer debited what its meter
    // was credited.
    for c in &clients {
        let d: openpsd_protocol::datacenter::DepositView = c.get("/v1/deposit").await.unwrap();
        assert_eq!((d.held, d.debited, d.available), (0, CREDIT, 1_000));
    }
    // The promoted server takes refills too.
    let _: RefillDone = clients[0]
        .post(
            "/v1/refills",
            &RefillOrder {
                client_txn_id: "000000000000f0ff".into(),
                amount: 1_000,
            },
        )
        .await
        .unwrap();

    // The auditor, on the promoted server: the ledger is whole.
    let db = openpsd_datacenter::Database::Postgres(config.database_url.clone().unwrap());
    let key = info.txn_key;
    let a = tokio::task::spawn_blocking(move || openpsd_datacenter::audit::audit(&db, Some(&key)))
        .await
        .unwrap()
        .unwrap();
    assert!(a.problems.is_empty(), "{:?}", a.problems);
    assert_eq!((a.credited, a.used), (CREDIT * MAILERS + 1_000, used_all));

    // And the data center starts again on it: every shard's root is the box's.
    dc.stop().await;
    let (dc, _) = start_datacenter(&config, "127.0.0.1:0", 100_000)
        .await
        .unwrap();
    dc.stop().await;
    h.stop().await;
}
