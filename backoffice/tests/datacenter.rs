//! The virtual meter (seed 001) through its data center as a mailer and an operator use it:
//! sign up with no device (Fig. 1), fund the meter from the deposit at the recharging center
//! (the KMS seals the refill message for the meter the box proved it created), print
//! indicia the post office's verifier reads with the key the KMS registered (Fig. 4, steps
//! 200-265), a double click charged once, the signed history, the auditor; refusals: a
//! record edited in the database (the box's alarm), a database restored from a backup (the
//! start refused), sessions forged or logged out, password guessing throttled, the wrong
//! callers at the vendor, the KMS and the recharging center.
//!
//! The data center's database is `datacenter.sqlite`, or — with `OPENPSD_TEST_POSTGRES` set
//! (`scripts/postgres-test.sh`) — a fresh database on that PostgreSQL server: the same suite
//! runs on both. The tests that play the untrusted database edit it through
//! [`Database::write`] on either.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::{Client, Refused};
use openpsd_backoffice::server::{spawn_all, start_datacenter, Handles};
use openpsd_core::psd::indicium;
use openpsd_core::vbox::txn::TransactionRecord;
use openpsd_datacenter::boxhost::BoxInfo;
use openpsd_datacenter::sql::{args, Conn, Sql};
use openpsd_datacenter::Database;
use openpsd_protocol::datacenter::{
    BoxRegistration, DepositView, GrantRequest, History, IndiciumBatch, IndiciumBatchIssued,
    IndiciumIssued, IndiciumOrder, MailerCredentials, MailerSession, MeterView, RefillDone,
    RefillOrder,
};
use openpsd_protocol::kms::DeviceInfo;
use openpsd_protocol::recharge::{Account, Deposit};
use openpsd_service_kit::codec::device_hex;
use openpsd_service_kit::tls::Role;
use openpsd_service_kit::Service;

struct World {
    h: Handles,
    dc: Service,
    info: BoxInfo,
    dir: std::path::PathBuf,
    /// The PostgreSQL database, if the suite runs on one.
    url: Option<String>,
}

fn config(h: &Handles, dir: &Path, url: Option<&str>) -> openpsd_datacenter::Config {
    let mut c = openpsd_datacenter::Config::new(
        dir.join("datacenter"),
        [&h.vendor.url, &h.kms.url, &h.recharge.url],
        h.pki.clone(),
    );
    c.database_url = url.map(str::to_owned);
    c.shards = 4;
    c.depth = 4;
    // A meter holds at most 100.00 here (the refused-refill test reaches it).
    c.max_dr = 10_000;
    // Ask the KMS before every print (the revocation test revokes a meter that printed).
    c.standing_recheck = std::time::Duration::ZERO;
    c
}

/// The back office, the data center beside it, and its box registered at the KMS by an
/// operator.
async fn world(dir: &Path) -> World {
    world_with(dir, |_| {}).await
}

/// [`world`] with the data center's configuration changed by `f`.
async fn world_with(dir: &Path, f: impl FnOnce(&mut openpsd_datacenter::Config)) -> World {
    let h = spawn_all(dir).await.unwrap();
    let url = common::post_database().await;
    let mut c = config(&h, dir, url.as_deref());
    f(&mut c);
    let (dc, info) = start_datacenter(&c, "127.0.0.1:0", 1000).await.unwrap();
    let op = Client::new(&h.kms.url, &h.pki, Some(Role::Operator));
    let reg = BoxRegistration {
        box_id: device_hex(&info.box_id),
        txn_key: hex::encode(info.txn_key),
        depth: info.depth,
    };
    let back: BoxRegistration = op.post("/v1/vbox/boxes", &reg).await.unwrap();
    assert_eq!(back, reg);
    World {
        h,
        dc,
        info,
        dir: dir.to_path_buf(),
        url,
    }
}

impl World {
    fn database(&self) -> Database {
        Database::new(&self.dir.join("datacenter"), self.url.as_deref())
    }

    /// Runs `f` on the data center's database directly, as whoever holds the database
    /// (untrusted) could.
    fn raw<T: Send>(&self, f: impl FnOnce(&mut Conn<'_>) -> anyhow::Result<T> + Send) -> T {
        raw(&self.database(), f)
    }
}

/// [`World::raw`] on `db`, on a thread of its own (rust-postgres's client blocks).
fn raw<T: Send>(db: &Database, f: impl FnOnce(&mut Conn<'_>) -> anyhow::Result<T> + Send) -> T {
    std::thread::scope(|s| s.spawn(move || db.write(f)).join())
        .expect("the database thread")
        .expect("the direct database access")
}

fn api(e: openpsd_service_kit::error::ApiError) -> anyhow::Error {
    anyhow::anyhow!("{}", e.message)
}

/// Every table of the data center's database (a PostgreSQL backup copies them all).
const TABLES: [&str; 12] = [
    "box",
    "mailers",
    "sessions",
    "login_failures",
    "meters",
    "refills",
    "reservations",
    "nodes",
    "txns",
    "indicia",
    "intents",
    "logins",
];

fn creds(name: &str) -> MailerCredentials {
    MailerCredentials {
        username: name.into(),
        password: format!("{name}-correct-horse"),
    }
}

/// A mailer with no device: signs up in a browser (no certificate).
async fn sign_up(w: &World, name: &str) -> (Client, MailerSession) {
    let anon = Client::new(&w.dc.url, &w.h.pki, None);
    let s: MailerSession = anon.post("/v1/mailers", &creds(name)).await.unwrap();
    (anon.with_bearer(&s.token), s)
}

/// The payments desk books `amount` to the mailer's deposit.
async fn deposit(w: &World, mailer: &str, amount: u64, reference: &str) {
    let op = Client::new(&w.h.recharge.url, &w.h.pki, Some(Role::Operator));
    let _: Account = op
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

/// The client transaction ID of [`funded`]'s refill (no test uses it for another).
const FUNDING_REFILL: &str = "00000000000000f0";

/// A mailer signed up, `deposit` booked to its deposit (reference `bank-<name>`) and
/// `refill` of it credited to its meter (one refill, settled, under [`FUNDING_REFILL`]):
/// the set-up of the tests past the first, which walks it step by step.
async fn funded(w: &World, name: &str, deposit: u64, refill: u64) -> (Client, MailerSession) {
    let (c, s) = sign_up(w, name).await;
    self::deposit(w, &s.mailer_id, deposit, &format!("bank-{name}")).await;
    let done: RefillDone = c
        .post(
            "/v1/refills",
            &RefillOrder {
                client_txn_id: FUNDING_REFILL.into(),
                amount: refill,
            },
        )
        .await
        .unwrap();
    assert_eq!(done.amount, refill);
    (c, s)
}

/// Taken by every test whose refill the box refuses (voided, then released): the crash
/// hook of the crash-after-void tests is the process's, and would otherwise crash another
/// test's void instead of its own (seen on PostgreSQL, where the tests overlap longer).
static REFILL_VOIDS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn order(txn: u64, postage: u64) -> IndiciumOrder {
    IndiciumOrder {
        client_txn_id: format!("{txn:016x}"),
        postage,
        rate: 1,
        destination: "80331".into(),
    }
}

fn audit(w: &World) -> openpsd_datacenter::audit::AuditReport {
    let (db, key) = (w.database(), w.info.txn_key);
    std::thread::scope(|s| {
        s.spawn(move || openpsd_datacenter::audit::audit(&db, Some(&key)))
            .join()
    })
    .expect("the auditor's thread")
    .unwrap()
}

/// The auditor's light second read (`datacenter audit --rc`): the refill rows.
fn read_refills(
    w: &World,
) -> std::collections::BTreeMap<String, openpsd_datacenter::audit::MailerRefills> {
    let db = w.database();
    std::thread::scope(|s| {
        s.spawn(move || openpsd_datacenter::audit::read_refills(&db))
            .join()
    })
    .expect("the auditor's thread")
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fig1_a_mailer_with_no_device_signs_up_adds_funds_and_prints() {
    let _turn = REFILL_VOIDS.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let w = world(tmp.path()).await;
    let (alice, s) = sign_up(&w, "alice").await;
    let m: MeterView = alice.get("/v1/meter").await.unwrap();
    assert_eq!((m.balance, m.used, m.pieces), (0, 0, 0));

    // The KMS registered the meter with the key the box made (the post office's source).
    let op_kms = Client::new(&w.h.kms.url, &w.h.pki, Some(Role::Operator));
    let dev: DeviceInfo = op_kms
        .get(&format!("/v1/devices/{}", m.meter_id))
        .await
        .unwrap();
    assert_eq!(dev.public_key, m.public_key);

    // Without a deposit the recharging center says no; nothing is held.
    let r = alice
        .post::<_, RefillDone>(
            "/v1/refills",
            &RefillOrder {
                client_txn_id: "00000000000000a1".into(),
                amount: 2_000,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(r.status, 402, "{r:?}");

    deposit(&w, &s.mailer_id, 5_000, "bank-1").await;
    let refill = RefillOrder {
        client_txn_id: "00000000000000a2".into(),
        amount: 2_000,
    };
    let done: RefillDone = alice.post("/v1/refills", &refill).await.unwrap();
    assert_eq!((done.amount, done.balance), (2_000, 2_000));
    // The same refill again: the same answer, credited once.
    let again: RefillDone = alice.post("/v1/refills", &refill).await.unwrap();
    assert_eq!(again, done);
    let d: DepositView = alice.get("/v1/deposit").await.unwrap();
    assert_eq!((d.available, d.held, d.debited), (3_000, 0, 2_000));

    // Fig. 4: an indicium the post office's verifier reads with the registered key.
    let first: IndiciumIssued = alice.post("/v1/indicia", &order(1, 145)).await.unwrap();
    assert!(!first.reprint);
    assert_eq!(first.balance, 1_855);
    let bytes = hex::decode(&first.indicium).unwrap();
    let key = hex::decode(&dev.public_key).unwrap();
    let data = indicium::verify(&bytes, &key).unwrap();
    assert_eq!(device_hex(&data.device), m.meter_id);
    assert_eq!((data.postage.0, data.ar.0, data.dr.0), (145, 145, 1_855));

    // A double click: the same bytes, charged once.
    let second: IndiciumIssued = alice.post("/v1/indicia", &order(1, 145)).await.unwrap();
    assert!(second.reprint);
    assert_eq!(second.indicium, first.indicium);
    // Another request under the same ID is refused and changes nothing.
    let e = alice
        .post::<_, IndiciumIssued>("/v1/indicia", &order(1, 999))
        .await
        .unwrap_err();
    assert_eq!((e.status, e.code.as_str()), (409, "box_refused"));
    let _: IndiciumIssued = alice.post("/v1/indicia", &order(2, 55)).await.unwrap();
    let m: MeterView = alice.get("/v1/meter").await.unwrap();
    assert_eq!((m.balance, m.used, m.pieces), (1_800, 200, 2));
    // More than the balance: refused, nothing charged.
    let e = alice
        .post::<_, IndiciumIssued>("/v1/indicia", &order(3, 1_801))
        .await
        .unwrap_err();
    assert_eq!(e.code, "insufficient_funds");

    // The history: every line signed by the box.
    let hist: History = alice.get("/v1/history").await.unwrap();
    let kinds: Vec<_> = hist.entries.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["create", "refill", "issue", "issue"]);
    for e in &hist.entries {
        TransactionRecord::verify(&hex::decode(&e.record).unwrap(), &w.info.txn_key).unwrap();
    }
    assert_eq!(hist.box_key, hex::encode(w.info.txn_key));

    // Bob's meter is his own: his session sees his meter, not Alice's.
    let (bob, _) = sign_up(&w, "bob").await;
    let mb: MeterView = bob.get("/v1/meter").await.unwrap();
    assert_ne!(mb.meter_id, m.meter_id);
    assert_eq!(mb.balance, 0);

    // The auditor recomputes every meter from the signed records.
    let a = audit(&w);
    assert!(a.problems.is_empty(), "{:?}", a.problems);
    assert_eq!(
        (a.meters, a.credited, a.used, a.held),
        (2, 2_000, 200, 1_800)
    );
    w.dc.stop().await;
    w.h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_and_passwords() {
    common::capture_logs();
    let tmp = tempfile::tempdir().unwrap();
    let mut w = world(tmp.path()).await;
    let (alice, s) = sign_up(&w, "alice").await;
    let anon = Client::new(&w.dc.url, &w.h.pki, None);
    // Anonymous and forged sessions get nothing.
    let status = |r: Result<MeterView, Refused>| r.unwrap_err().status;
    assert_eq!(status(anon.get("/v1/meter").await), 401);
    let forged = anon.with_bearer(&format!("dcs_{}", "ab".repeat(32)));
    assert_eq!(status(forged.get("/v1/meter").await), 401);
    // The same name again is refused.
    let e = anon
        .post::<_, MailerSession>("/v1/mailers", &creds("alice"))
        .await
        .unwrap_err();
    assert_eq!(e.status, 409);
    // Log in again: a second session; log out: that token is dead, the first lives.
    let s2: MailerSession = anon.post("/v1/sessions", &creds("alice")).await.unwrap();
    assert_eq!(s2.mailer_id, s.mailer_id);
    let alice2 = anon.with_bearer(&s2.token);
    assert_eq!(
        alice2
            .status(&reqwest::Method::DELETE, "/v1/sessions/current")
            .await,
        204
    );
    assert_eq!(status(alice2.get("/v1/meter").await), 401);
    let _: MeterView = alice.get("/v1/meter").await.unwrap();
    // An expired session gets nothing: a third session, its expiry then moved into the past
    // in the database (8 hours on); the first session still lives.
    let s3: MailerSession = anon.post("/v1/sessions", &creds("alice")).await.unwrap();
    let alice3 = anon.with_bearer(&s3.token);
    let _: MeterView = alice3.get("/v1/meter").await.unwrap();
    let h3 = hex::encode(openpsd_core::crypto::sha256(s3.token.as_bytes()));
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    let n = w.raw(|c| {
        c.exec(
            "t",
            "UPDATE sessions SET expires_at = ?1 WHERE token_hash = ?2",
            args![now - 1, h3],
        )
        .map_err(api)
    });
    assert_eq!(n, 1, "the session's row");
    // 401 as for an unknown token (one message for both: it tells a guesser nothing).
    let e = alice3.get::<MeterView>("/v1/meter").await.unwrap_err();
    assert_eq!(e.status, 401);
    let _: MeterView = alice.get("/v1/meter").await.unwrap();
    // Guessing in parallel: each attempt counts before its hash is checked, so of 12 at
    // once at most five are checked (401) and the rest refused (429).
    let wrong_b = MailerCredentials {
        username: "bob-guessed".into(),
        password: "not-his-password".into(),
    };
    let _ = anon
        .post::<_, MailerSession>("/v1/mailers", &creds("bob-guessed"))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..12)
        .map(|_| {
            let (a, c) = (anon.clone(), wrong_b.clone());
            tokio::spawn(async move {
                a.post::<_, MailerSession>("/v1/sessions", &c)
                    .await
                    .unwrap_err()
                    .status
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert!(
        statuses.iter().filter(|s| **s == 401).count() <= 5,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "{statuses:?}"
    );
    // Each guess is logged: a failed log-in for each 401, a throttled one for each 429.
    let count = |s: u16| statuses.iter().filter(|x| **x == s).count();
    assert_eq!(
        common::logged(&["failed log-in", "username=bob-guessed"]).len(),
        count(401)
    );
    assert_eq!(
        common::logged(&["log-in throttled", "username=bob-guessed"]).len(),
        count(429)
    );
    // Guessing: five wrong passwords are 401, the sixth try (even the right one) 429.
    let wrong = MailerCredentials {
        username: "alice".into(),
        password: "not-her-password".into(),
    };
    for _ in 0..5 {
        let e = anon
            .post::<_, MailerSession>("/v1/sessions", &wrong)
            .await
            .unwrap_err();
        assert_eq!(e.status, 401);
    }
    let e = anon
        .post::<_, MailerSession>("/v1/sessions", &creds("alice"))
        .await
        .unwrap_err();
    assert_eq!((e.status, e.code.as_str()), (429, "login_throttled"));
    // The box checks passwords (seed 001, box 40): the row holds a salt and the box's
    // verifier under K_auth, worth nothing without the box, not a hash that the database
    // and the data center's files (its pepper) could check a guess against.
    let db = w.database();
    let row = |name: &str| -> String {
        let q = format!("SELECT password_hash FROM mailers WHERE username = '{name}'");
        raw(&db, |c| {
            c.one("t", &q, args![]).and_then(|r| r.text(0)).map_err(api)
        })
    };
    let set_row = |name: &str, value: &str| {
        let q = format!("UPDATE mailers SET password_hash = ?1 WHERE username = '{name}'");
        let v = value.to_owned();
        assert_eq!(raw(&db, |c| c.exec("t", &q, args![v]).map_err(api)), 1);
    };
    let stored = row("alice");
    assert!(
        stored.starts_with("vbox1$") && stored.len() == 6 + 32 + 1 + 32,
        "{stored}"
    );
    // Carol's row copied to Dave's does not let Carol's password in as Dave (the verifier
    // is bound to the mailer); an edited verifier lets no one in; put back, it does.
    sign_up(&w, "carol").await;
    sign_up(&w, "dave").await;
    let carol = row("carol");
    set_row("dave", &carol);
    let carol_as_dave = MailerCredentials {
        username: "dave".into(),
        password: creds("carol").password,
    };
    let e = anon
        .post::<_, MailerSession>("/v1/sessions", &carol_as_dave)
        .await
        .unwrap_err();
    assert_eq!(e.status, 401, "another mailer's verifier");
    let mut edited = carol.clone().into_bytes();
    let last = edited.len() - 1;
    edited[last] = if edited[last] == b'0' { b'1' } else { b'0' };
    set_row("carol", std::str::from_utf8(&edited).unwrap());
    let e = anon
        .post::<_, MailerSession>("/v1/sessions", &creds("carol"))
        .await
        .unwrap_err();
    assert_eq!(e.status, 401, "an edited verifier");
    set_row("carol", &carol);
    let _: MailerSession = anon.post("/v1/sessions", &creds("carol")).await.unwrap();
    // A row of the layout before the box (Argon2id with the pepper alone), as a data center
    // of stop 38 wrote it: written into a running data center's database (by whoever can
    // edit it, with the pepper), it logs no one in; the next start moves it to the box
    // without the password, and it then logs its mailer in, by the box.
    sign_up(&w, "erin").await;
    let pepper = hex::decode(
        std::fs::read_to_string(
            tmp.path()
                .join("datacenter")
                .join(openpsd_datacenter::PEPPER_FILE),
        )
        .unwrap()
        .trim(),
    )
    .unwrap();
    let legacy = {
        use argon2::password_hash::{PasswordHasher as _, SaltString};
        let a = argon2::Argon2::new_with_secret(
            &pepper,
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            argon2::Params::default(),
        )
        .unwrap();
        let salt = SaltString::encode_b64(&[3; 16]).unwrap();
        a.hash_password(creds("erin").password.as_bytes(), &salt)
            .unwrap()
            .to_string()
    };
    set_row("erin", &legacy);
    let e = anon
        .post::<_, MailerSession>("/v1/sessions", &creds("erin"))
        .await
        .unwrap_err();
    assert_eq!(
        e.status, 401,
        "a row of the old layout written after the start"
    );
    assert_eq!(row("erin"), legacy);
    w.dc.stop().await;
    let (dc, _) = start_datacenter(&config(&w.h, &w.dir, w.url.as_deref()), "127.0.0.1:0", 1000)
        .await
        .unwrap();
    w.dc = dc;
    let anon = Client::new(&w.dc.url, &w.h.pki, None);
    let moved = row("erin");
    assert!(
        moved.starts_with("vbox0$") && !moved.contains(&legacy[legacy.len() - 20..]),
        "moved, the old hash gone: {moved}"
    );
    let wrong_e = MailerCredentials {
        username: "erin".into(),
        password: "not-erins-password".into(),
    };
    let e = anon
        .post::<_, MailerSession>("/v1/sessions", &wrong_e)
        .await
        .unwrap_err();
    assert_eq!(e.status, 401);
    let _: MailerSession = anon.post("/v1/sessions", &creds("erin")).await.unwrap();
    w.dc.stop().await;
    w.h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_record_is_refused_and_a_restored_database_does_not_start() {
    common::capture_logs();
    let tmp = tempfile::tempdir().unwrap();
    let w = world(tmp.path()).await;
    let (alice, sa) = funded(&w, "alice", 5_000, 1_000).await;
    let (bob, sb) = funded(&w, "bob", 5_000, 1_000).await;
    // A backup taken now, with 1,000 in the meter.
    let backup = tmp.path().join("backup.sqlite");
    let db = tmp
        .path()
        .join("datacenter")
        .join(openpsd_datacenter::DB_FILE);
    w.raw(|c| {
        if c.is_postgres() {
            for t in TABLES {
                c.exec(
                    "t",
                    &format!("CREATE TABLE backup_{t} AS SELECT * FROM {t}"),
                    args![],
                )
                .map_err(api)?;
            }
        } else {
            c.exec("t", "VACUUM INTO ?1", args![backup.to_str().unwrap()])
                .map_err(api)?;
        }
        Ok(())
    });
    let _: IndiciumIssued = alice.post("/v1/indicia", &order(1, 400)).await.unwrap();

    // A register raised in the database: the box refuses the record (MAC), nothing printed.
    let original: Vec<u8> = {
        let rec = w.raw(|c| {
            c.one(
                "t",
                "SELECT record FROM meters WHERE mailer_id = ?1",
                args![&sa.mailer_id],
            )
            .and_then(|r| r.blob(0))
            .map_err(api)
        });
        let mut edited = rec.clone();
        // DR and control sum raised together, so the record still parses (kind 1,
        // version 1, meter 8, slot 4, mailer 16, license 4, origin 1+5, AR 8, DR 8,
        // control sum 8): only the MAC can tell.
        for at in [
            1 + 1 + 8 + 4 + 16 + 4 + 6 + 8,
            1 + 1 + 8 + 4 + 16 + 4 + 6 + 16,
        ] {
            let v = u64::from_be_bytes(edited[at..at + 8].try_into().unwrap()) + 100_000;
            edited[at..at + 8].copy_from_slice(&v.to_be_bytes());
        }
        w.raw(|c| {
            c.exec(
                "t",
                "UPDATE meters SET record = ?1 WHERE mailer_id = ?2",
                args![&edited, &sa.mailer_id],
            )
            .map_err(api)
        });
        rec
    };
    let e = alice
        .post::<_, IndiciumIssued>("/v1/indicia", &order(2, 100))
        .await
        .unwrap_err();
    assert_eq!(
        (e.status, e.code.as_str()),
        (409, "record_refused"),
        "{e:?}"
    );
    assert!(e.message.contains("9A60"), "{}", e.message);
    assert_eq!(
        common::logged(&["ALARM: the box refused a meter record", &sa.mailer_id]).len(),
        1,
        "the refusal is logged as an alarm naming the mailer"
    );
    assert!(
        !audit(&w).problems.is_empty(),
        "the auditor sees the edit too"
    );
    w.raw(|c| {
        c.exec(
            "t",
            "UPDATE meters SET record = ?1 WHERE mailer_id = ?2",
            args![&original, &sa.mailer_id],
        )
        .map_err(api)
    });
    let _: IndiciumIssued = alice.post("/v1/indicia", &order(2, 100)).await.unwrap();
    assert!(audit(&w).problems.is_empty());

    // Edits the box's proofs catch (Fig. 4, 220-230) made in the database, each refused as
    // a record alarm naming the mailer, nothing printed, and undone after:
    let meter_row = |mailer: &str| {
        let m = mailer.to_owned();
        w.raw(move |c| {
            let r = c
                .one(
                    "t",
                    "SELECT slot, record FROM meters WHERE mailer_id = ?1",
                    args![m],
                )
                .map_err(api)?;
            Ok((r.int(0).map_err(api)?, r.blob(1).map_err(api)?))
        })
    };
    let (slot_a, rec_a) = meter_row(&sa.mailer_id);
    let (slot_b, rec_b) = meter_row(&sb.mailer_id);
    let views = || async {
        (
            alice.get::<MeterView>("/v1/meter").await.unwrap(),
            bob.get::<MeterView>("/v1/meter").await.unwrap(),
        )
    };
    let before = views().await;
    let refused_with_alarm = |who: &'static str, mailer: String, txn: u64| {
        let client = if who == "alice" { &alice } else { &bob };
        async move {
            let alarms =
                || common::logged(&["ALARM: the box refused a meter record", &mailer]).len();
            let n = alarms();
            let e = client
                .post::<_, IndiciumIssued>("/v1/indicia", &order(txn, 100))
                .await
                .unwrap_err();
            assert_eq!(
                (e.status, e.code.as_str()),
                (409, "record_refused"),
                "{who}: {e:?}"
            );
            assert_eq!(alarms(), n + 1, "{who}: an alarm naming the mailer");
        }
    };
    // - an inner node: a sibling on Alice's path (height 1) replaced;
    let (shard, idx) = (slot_a >> 4, slot_a & 15);
    let sibling = (idx >> 1) ^ 1;
    let saved_node = w.raw(|c| {
        let old = c
            .opt(
                "t",
                "SELECT hash FROM nodes WHERE shard = ?1 AND height = 1 AND idx = ?2",
                args![shard, sibling],
            )
            .map_err(api)?
            .map(|r| r.blob(0))
            .transpose()
            .map_err(api)?;
        c.exec(
            "t",
            "INSERT INTO nodes (shard, height, idx, hash) VALUES (?1, 1, ?2, ?3)
             ON CONFLICT (shard, height, idx) DO UPDATE SET hash = excluded.hash",
            args![shard, sibling, vec![0x77u8; 32]],
        )
        .map_err(api)?;
        Ok(old)
    });
    refused_with_alarm("alice", sa.mailer_id.clone(), 3).await;
    w.raw(|c| {
        match &saved_node {
            Some(h) => c.exec(
                "t",
                "UPDATE nodes SET hash = ?1 WHERE shard = ?2 AND height = 1 AND idx = ?3",
                args![h, shard, sibling],
            ),
            None => c.exec(
                "t",
                "DELETE FROM nodes WHERE shard = ?1 AND height = 1 AND idx = ?2",
                args![shard, sibling],
            ),
        }
        .map_err(api)
    });
    // - the two mailers' records swapped;
    let set_record = |mailer: &str, rec: &[u8]| {
        let (m, r) = (mailer.to_owned(), rec.to_vec());
        w.raw(move |c| {
            c.exec(
                "t",
                "UPDATE meters SET record = ?1 WHERE mailer_id = ?2",
                args![r, m],
            )
            .map_err(api)
        })
    };
    set_record(&sa.mailer_id, &rec_b);
    set_record(&sb.mailer_id, &rec_a);
    refused_with_alarm("alice", sa.mailer_id.clone(), 3).await;
    refused_with_alarm("bob", sb.mailer_id.clone(), 1).await;
    set_record(&sa.mailer_id, &rec_a);
    set_record(&sb.mailer_id, &rec_b);
    // - Alice's row moved to a free slot of her shard.
    let free = (shard << 4) | 15;
    assert!(free != slot_a && free != slot_b);
    let set_slot = |slot: i64| {
        let m = sa.mailer_id.clone();
        w.raw(move |c| {
            c.exec(
                "t",
                "UPDATE meters SET slot = ?1 WHERE mailer_id = ?2",
                args![slot, m],
            )
            .map_err(api)
        })
    };
    set_slot(free);
    refused_with_alarm("alice", sa.mailer_id.clone(), 3).await;
    set_slot(slot_a);
    assert_eq!(views().await, before, "nothing printed, nothing charged");
    let _: IndiciumIssued = alice.post("/v1/indicia", &order(3, 100)).await.unwrap();
    let _: IndiciumIssued = bob.post("/v1/indicia", &order(1, 100)).await.unwrap();
    assert!(audit(&w).problems.is_empty(), "{:?}", audit(&w).problems);

    // A deleted transaction record: the auditor reports the gap.
    {
        let (shard, seq, meter, saved) = w.raw(|c| {
            let r = c
                .one(
                    "t",
                    "SELECT shard, sequence, meter_id, record FROM txns WHERE kind = 2 LIMIT 1",
                    args![],
                )
                .map_err(api)?;
            let got = (
                r.int(0).map_err(api)?,
                r.int(1).map_err(api)?,
                r.text(2).map_err(api)?,
                r.blob(3).map_err(api)?,
            );
            c.exec(
                "t",
                "DELETE FROM txns WHERE shard = ?1 AND sequence = ?2",
                args![got.0, got.1],
            )
            .map_err(api)?;
            Ok(got)
        });
        let a = audit(&w);
        assert!(
            a.problems
                .iter()
                .any(|p| p.contains("deleted or reordered")),
            "{:?}",
            a.problems
        );
        w.raw(|c| {
            c.exec(
                "t",
                "INSERT INTO txns (shard, sequence, meter_id, kind, record) VALUES (?1, ?2, ?3, 2, ?4)",
                args![shard, seq, meter, saved],
            )
            .map_err(api)
        });
        assert!(audit(&w).problems.is_empty(), "{:?}", audit(&w).problems);
    }

    // A transaction record changed (a byte of its amount), then two of a shard reordered
    // (each row given the other's record): the auditor reports each.
    {
        let (shard, first, second) = w.raw(|c| {
            let shard = c
                .one(
                    "t",
                    "SELECT shard FROM txns WHERE meter_id = (SELECT meter_id FROM meters WHERE mailer_id = ?1) LIMIT 1",
                    args![&sa.mailer_id],
                )
                .and_then(|r| r.int(0))
                .map_err(api)?;
            let rec = |c: &mut Conn<'_>, seq: i64| {
                c.one(
                    "t",
                    "SELECT record FROM txns WHERE shard = ?1 AND sequence = ?2",
                    args![shard, seq],
                )
                .and_then(|r| r.blob(0))
                .map_err(api)
            };
            Ok((shard, rec(c, 1)?, rec(c, 2)?))
        });
        let put = |seq: i64, rec: &[u8]| {
            let r = rec.to_vec();
            w.raw(move |c| {
                c.exec(
                    "t",
                    "UPDATE txns SET record = ?1 WHERE shard = ?2 AND sequence = ?3",
                    args![r, shard, seq],
                )
                .map_err(api)
            })
        };
        // box ID 8, shard 2, sequence 8, kind 1, meter 8, slot 4: the amount's last byte.
        let mut changed = second.clone();
        changed[8 + 2 + 8 + 1 + 8 + 4 + 7] ^= 1;
        let reports = |what: &str| {
            let a = audit(&w);
            assert!(
                a.problems.iter().any(|p| p.contains(what)),
                "{what}: {:?}",
                a.problems
            );
        };
        put(2, &changed);
        reports("does not verify (changed)");
        put(1, &second);
        put(2, &first);
        reports("deleted or reordered");
        put(1, &first);
        put(2, &second);
        assert!(audit(&w).problems.is_empty(), "{:?}", audit(&w).problems);
    }

    // The whole database restored from the backup: the start is refused (its roots are
    // older than the box's), so nothing is printed from the stale records.
    let database = w.database();
    w.dc.stop().await;
    if w.url.is_some() {
        raw(&database, |c| {
            for t in TABLES {
                c.exec("t", &format!("DELETE FROM {t}"), args![])
                    .map_err(api)?;
                c.exec(
                    "t",
                    &format!("INSERT INTO {t} SELECT * FROM backup_{t}"),
                    args![],
                )
                .map_err(api)?;
            }
            Ok(())
        });
    } else {
        for ext in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{ext}", db.display()));
        }
        std::fs::copy(&backup, &db).unwrap();
    }
    let err = start_datacenter(
        &config(&w.h, tmp.path(), w.url.as_deref()),
        "127.0.0.1:0",
        1000,
    )
    .await
    .err()
    .expect("a restored database is refused");
    assert!(err.to_string().contains("restored from a backup"), "{err}");
    w.h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_data_center_asks_for_grants_and_each_is_given_once() {
    let tmp = tempfile::tempdir().unwrap();
    let w = world(tmp.path()).await;
    let (_alice, _) = sign_up(&w, "alice").await;
    let grant = GrantRequest {
        box_id: device_hex(&w.info.box_id),
        meter_id: "564D000000000001".into(),
        slot: 9,
        mailer_id: "00".repeat(16),
        license: 4711,
        origin: "10115".into(),
        max_postage: 100,
        max_dr: 1_000,
    };
    // The meter server, an operator: forbidden at the vendor's grant route.
    for role in [Role::Meter, Role::Operator] {
        let c = Client::new(&w.h.vendor.url, &w.h.pki, Some(role));
        assert_eq!(
            c.status(&reqwest::Method::POST, "/v1/vbox/grants").await,
            403
        );
    }
    // The data center's identity: the same request twice is the same grant; the same
    // meter ID or the same slot for anything else is refused.
    let dcc = Client::new(&w.h.vendor.url, &w.h.pki, Some(Role::Datacenter));
    let g1: openpsd_protocol::datacenter::GrantAnswer =
        dcc.post("/v1/vbox/grants", &grant).await.unwrap();
    let g2: openpsd_protocol::datacenter::GrantAnswer =
        dcc.post("/v1/vbox/grants", &grant).await.unwrap();
    assert_eq!(g1, g2);
    let other_slot = GrantRequest {
        slot: 10,
        ..grant.clone()
    };
    let other_meter = GrantRequest {
        meter_id: "564D000000000002".into(),
        ..grant.clone()
    };
    for g in [other_slot, other_meter] {
        let e = dcc
            .post::<_, openpsd_protocol::datacenter::GrantAnswer>("/v1/vbox/grants", &g)
            .await
            .unwrap_err();
        assert_eq!((e.status, e.code.as_str()), (409, "grant_conflict"));
    }
    // The KMS registers no meter without the box's proof.
    let e = dcc_at(&w.h.kms.url, &w)
        .post::<_, DeviceInfo>(
            "/v1/vbox/meters",
            &openpsd_protocol::datacenter::MeterRegistration {
                record: "01".into(),
                proof: String::new(),
                transaction: "00".repeat(219),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.status, 400);
    // The data center cannot spend a meter-server customer's deposit.
    let rc = dcc_at(&w.h.recharge.url, &w);
    let op = Client::new(&w.h.recharge.url, &w.h.pki, Some(Role::Operator));
    let _: Account = op
        .post(
            "/v1/accounts",
            &openpsd_protocol::recharge::NewAccount {
                account_id: "acme".into(),
            },
        )
        .await
        .unwrap();
    let e = rc.get::<Account>("/v1/accounts/acme").await.unwrap_err();
    assert_eq!(e.status, 404);
    w.dc.stop().await;
    w.h.stop().await;
}

fn dcc_at(url: &str, w: &World) -> Client {
    Client::new(url, &w.h.pki, Some(Role::Datacenter))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_requests_at_once_on_one_meter() {
    let tmp = tempfile::tempdir().unwrap();
    let w = world(tmp.path()).await;
    let (alice, s) = sign_up(&w, "alice").await;
    deposit(&w, &s.mailer_id, 10_000, "bank-1").await;
    // Refills at once under different IDs: one mailer's refills are driven one at a time
    // (a refused one would say so, 409); what the deposit paid is exactly what the meter
    // was credited.
    let tasks: Vec<_> = (0..6u64)
        .map(|i| {
            let a = alice.clone();
            tokio::spawn(async move {
                a.post::<_, RefillDone>(
                    "/v1/refills",
                    &RefillOrder {
                        client_txn_id: format!("{:016x}", 0xc1 + i),
                        amount: 500,
                    },
                )
                .await
            })
        })
        .collect();
    let mut credited = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(done) => credited += done.amount,
            Err(e) => assert_eq!((e.status, e.code.as_str()), (409, "wrong_state"), "{e:?}"),
        }
    }
    assert!(credited >= 500, "at least one refill went through");
    let m: MeterView = alice.get("/v1/meter").await.unwrap();
    let d: DepositView = alice.get("/v1/deposit").await.unwrap();
    assert_eq!((m.balance, d.debited, d.held), (credited, credited, 0));
    // Topped up to 5,000 in all.
    let _: RefillDone = alice
        .post(
            "/v1/refills",
            &RefillOrder {
                client_txn_id: "00000000000000d1".into(),
                amount: 5_000 - credited,
            },
        )
        .await
        .unwrap();
    // 64 different pieces at once: exact registers.
    let tasks: Vec<_> = (0..64u64)
        .map(|i| {
            let a = alice.clone();
            tokio::spawn(async move {
                a.post::<_, IndiciumIssued>("/v1/indicia", &order(100 + i, 10))
                    .await
            })
        })
        .collect();
    for t in tasks {
        assert!(!t.await.unwrap().unwrap().reprint);
    }
    let m: MeterView = alice.get("/v1/meter").await.unwrap();
    assert_eq!((m.balance, m.used, m.pieces), (5_000 - 640, 640, 64));
    // The same piece 64 times at once: one debit, one indicium.
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let a = alice.clone();
            tokio::spawn(async move {
                a.post::<_, IndiciumIssued>("/v1/indicia", &order(7, 25))
                    .await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap().unwrap());
    }
    assert_eq!(answers.iter().filter(|a| !a.reprint).count(), 1);
    assert!(answers.iter().all(|a| a.indicium == answers[0].indicium));
    let m: MeterView = alice.get("/v1/meter").await.unwrap();
    assert_eq!((m.balance, m.pieces), (5_000 - 665, 65));
    let a = audit(&w);
    assert!(a.problems.is_empty(), "{:?}", a.problems);
    assert_eq!((a.credited, a.used), (5_000, 665));
    w.dc.stop().await;
    w.h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refill_the_box_refuses_is_voided_and_one_the_kms_refuses_released() {
    let _turn = REFILL_VOIDS.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let w = world(tmp.path()).await;
    let (alice, s) = funded(&w, "alice", 20_000, 8_000).await;
    let refill = |id: &str, amount: u64| RefillOrder {
        client_txn_id: id.into(),
        amount,
    };
    // Above the meter's 100.00: the box refuses the message (9A14), which is then voided
    // (a zero refill on the same counters, applied) and its hold released.
    let e = alice
        .post::<_, RefillDone>("/v1/refills", &refill("00000000000000e2", 5_000))
        .await
        .unwrap_err();
    assert_eq!((e.status, e.code.as_str()), (409, "box_refused"), "{e:?}");
    let m: MeterView = alice.get("/v1/meter").await.unwrap();
    assert_eq!(
        (m.balance, m.refills),
        (8_000, 2),
        "the void moved the counters on"
    );
    let d: DepositView = alice.get("/v1/deposit").await.unwrap();
    assert_eq!((d.available, d.held, d.debited), (12_000, 0, 8_000));
    // The database (untrusted) puts the refused refill back to `sealed` after the balance
    // went down: its message is stale now, nothing is credited, the hold stays released.
    let _: IndiciumIssued = alice.post("/v1/indicia", &order(1, 6_000)).await.unwrap();
    w.raw(|c| {
        c.exec(
            "t",
            "UPDATE refills SET state = 'sealed' WHERE client_txn_id = '00000000000000e2'",
            args![],
        )
        .map_err(api)
    });
    let m: MeterView = alice.get("/v1/meter").await.unwrap();
    assert_eq!(m.balance, 2_000, "the refused message never credits");
    let d: DepositView = alice.get("/v1/deposit").await.unwrap();
    assert_eq!((d.available, d.held, d.debited), (12_000, 0, 8_000));

    // The meter server cannot refund into (or read) a mailer's deposit.
    let meter_rc = Client::new(&w.h.recharge.url, &w.h.pki, Some(Role::Meter));
    let e = meter_rc
        .post::<_, Account>(
            &format!("/v1/accounts/vm-{}/refunds", s.mailer_id),
            &Deposit {
                amount: 1_000,
                reference: "steal".into(),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.status, 404, "{e:?}");

    // The issuer revokes the meter at the KMS: a refill ends released, nothing held.
    let m: MeterView = alice.get("/v1/meter").await.unwrap();
    let op_kms = Client::new(&w.h.kms.url, &w.h.pki, Some(Role::Operator));
    let _: DeviceInfo = op_kms
        .post(
            &format!("/v1/devices/{}/revoke", m.meter_id),
            &openpsd_protocol::kms::Revocation {
                reason: "test".into(),
            },
        )
        .await
        .unwrap();
    let e = alice
        .post::<_, RefillDone>("/v1/refills", &refill("00000000000000e3", 1_000))
        .await
        .unwrap_err();
    assert_eq!(e.status, 410, "{e:?}");
    let d: DepositView = alice.get("/v1/deposit").await.unwrap();
    assert_eq!((d.available, d.held), (12_000, 0), "the hold went back");
    // And it prints no more: one piece or a batch, refused before the box, nothing charged.
    let before: MeterView = alice.get("/v1/meter").await.unwrap();
    let e = alice
        .post::<_, IndiciumIssued>("/v1/indicia", &order(0xe4, 100))
        .await
        .unwrap_err();
    assert_eq!(
        (e.status, e.code.as_str()),
        (410, "device_revoked"),
        "{e:?}"
    );
    let e = alice
        .post::<_, IndiciumBatchIssued>("/v1/indicia/batch", &batch([order(0xe5, 100)]))
        .await
        .unwrap_err();
    assert_eq!(
        (e.status, e.code.as_str()),
        (410, "device_revoked"),
        "{e:?}"
    );
    let after: MeterView = alice.get("/v1/meter").await.unwrap();
    assert_eq!(
        (after.balance, after.pieces),
        (before.balance, before.pieces),
        "nothing charged for a revoked meter"
    );
    let a = audit(&w);
    assert!(a.problems.is_empty(), "{:?}", a.problems);
    assert_eq!(a.credited, 8_000);
    w.dc.stop().await;
    w.h.stop().await;
}

/// Which request finishes a refill a crash left unfinished.
#[derive(Clone, Copy, PartialEq)]
enum FinishedBy {
    /// The mailer's next `GET /v1/meter`.
    NextRequest,
    /// The data center's next start.
    Restart,
}

/// A crash after the void of a refused message was committed (the row `voided`) and
/// before its hold was released: the hold is still held after the crash, and the mailer's
/// next request (or the next start) finishes the refill, the hold going back to the
/// deposit (before, a `voided` row was left as it was, the money held for ever).
async fn a_crash_after_the_void_is_finished_by(by: FinishedBy) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let _turn = REFILL_VOIDS.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let mut w = world(tmp.path()).await;
    let (alice, s) = funded(&w, "alice", 20_000, 8_000).await;
    let refill = |id: &str, amount: u64| RefillOrder {
        client_txn_id: id.into(),
        amount,
    };
    // The next refill is above the meter's limit: refused by the box, voided, and then the
    // data center crashes (once) before the release.
    static FIRED: AtomicBool = AtomicBool::new(false);
    FIRED.store(false, Ordering::SeqCst);
    openpsd_service_kit::failpoint::set_crash_hook(Some(std::sync::Arc::new(|name: &str| {
        name == "datacenter_refill_after_void" && !FIRED.swap(true, Ordering::SeqCst)
    })));
    let e = alice
        .post::<_, RefillDone>("/v1/refills", &refill("00000000000000f2", 5_000))
        .await
        .unwrap_err();
    openpsd_service_kit::failpoint::set_crash_hook(None);
    assert!(FIRED.load(Ordering::SeqCst), "the crash came: {e:?}");
    let state = w.raw(|c| {
        c.one(
            "t",
            "SELECT state FROM refills WHERE client_txn_id = '00000000000000f2'",
            args![],
        )
        .and_then(|r| r.text(0))
        .map_err(api)
    });
    assert_eq!(
        state, "voided",
        "the crash left the row after the void's commit"
    );
    // Reading the deposit finishes nothing: the refused refill's 50.00 is still held.
    let d: DepositView = alice.get("/v1/deposit").await.unwrap();
    assert_eq!(
        (d.available, d.held, d.debited),
        (7_000, 5_000, 8_000),
        "held until the refill is finished"
    );
    let alice = match by {
        FinishedBy::NextRequest => alice,
        FinishedBy::Restart => {
            w.dc.stop().await;
            let url = w.url.clone();
            let (dc, _) =
                start_datacenter(&config(&w.h, &w.dir, url.as_deref()), "127.0.0.1:0", 1000)
                    .await
                    .unwrap();
            w.dc = dc;
            // The start finished it, before any request of the mailer's.
            let d: DepositView = Client::new(&w.dc.url, &w.h.pki, None)
                .with_bearer(&s.token)
                .get("/v1/deposit")
                .await
                .unwrap();
            assert_eq!(
                (d.available, d.held, d.debited),
                (12_000, 0, 8_000),
                "the start released the refused refill's hold"
            );
            Client::new(&w.dc.url, &w.h.pki, None).with_bearer(&s.token)
        }
    };
    // Nothing credited; the void moved the counters on.
    let m: MeterView = alice.get("/v1/meter").await.unwrap();
    assert_eq!(
        (m.balance, m.refills),
        (8_000, 2),
        "the void moved the counters on"
    );
    let d: DepositView = alice.get("/v1/deposit").await.unwrap();
    assert_eq!(
        (d.available, d.held, d.debited),
        (12_000, 0, 8_000),
        "the refused refill's hold went back"
    );
    let a = audit(&w);
    assert!(a.problems.is_empty(), "{:?}", a.problems);
    w.dc.stop().await;
    w.h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_after_the_void_is_finished_by_the_mailers_next_request() {
    a_crash_after_the_void_is_finished_by(FinishedBy::NextRequest).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_after_the_void_is_finished_by_the_next_start() {
    a_crash_after_the_void_is_finished_by(FinishedBy::Restart).await;
}

fn batch(orders: impl IntoIterator<Item = IndiciumOrder>) -> IndiciumBatch {
    IndiciumBatch {
        orders: orders.into_iter().collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_one_box_command_idempotent_per_order_and_refused_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let w = world(tmp.path()).await;
    let (alice, _) = funded(&w, "alice", 5_000, 3_000).await;
    let m: MeterView = alice.get("/v1/meter").await.unwrap();
    let key = hex::decode(&m.public_key).unwrap();

    // 16 pieces in one request: each indicium verifies as the post office reads it, each
    // shows the registers after its own piece.
    let first = batch((1..=16u64).map(|i| order(0x100 + i, 10 * i)));
    let done: IndiciumBatchIssued = alice.post("/v1/indicia/batch", &first).await.unwrap();
    assert_eq!(done.indicia.len(), 16);
    let mut balance = 3_000;
    for (i, got) in (1..=16u64).zip(&done.indicia) {
        balance -= 10 * i;
        assert!(!got.reprint);
        assert_eq!(got.client_txn_id, format!("{:016x}", 0x100 + i));
        assert_eq!((got.postage, got.balance), (10 * i, balance));
        let data = indicium::verify(&hex::decode(&got.indicium).unwrap(), &key).unwrap();
        assert_eq!((data.postage.0, data.dr.0), (10 * i, balance));
        assert_eq!(device_hex(&data.device), m.meter_id);
    }
    // The same batch again: the same bytes, charged once; one of its orders alone too.
    let again: IndiciumBatchIssued = alice.post("/v1/indicia/batch", &first).await.unwrap();
    assert!(again.indicia.iter().all(|i| i.reprint));
    let strip = |v: &[IndiciumIssued]| -> Vec<(String, String, u64)> {
        v.iter()
            .map(|i| (i.client_txn_id.clone(), i.indicium.clone(), i.balance))
            .collect()
    };
    assert_eq!(strip(&again.indicia), strip(&done.indicia));
    let one: IndiciumIssued = alice.post("/v1/indicia", &order(0x105, 50)).await.unwrap();
    assert!(one.reprint);
    assert_eq!(one.indicium, done.indicia[4].indicium);
    let m: MeterView = alice.get("/v1/meter").await.unwrap();
    assert_eq!((m.balance, m.used, m.pieces), (3_000 - 1_360, 1_360, 16));

    // Refused whole, nothing charged: an ID used for another request; the sum above the
    // balance; a piece above the per-piece limit; an ID twice; too many or no orders.
    let refused = [
        (
            batch([order(0x201, 10), order(0x101, 11)]),
            409,
            "box_refused",
        ),
        (
            batch([order(0x202, 1_000), order(0x203, 1_000)]),
            409,
            "insufficient_funds",
        ),
        (
            batch([order(0x204, 10), order(0x205, 10_001)]),
            409,
            "box_refused",
        ),
        (
            batch([order(0x206, 10), order(0x206, 10)]),
            400,
            "bad_request",
        ),
        (
            batch((0..17u64).map(|i| order(0x300 + i, 1))),
            400,
            "bad_request",
        ),
        (batch([]), 400, "bad_request"),
    ];
    for (b, status, code) in &refused {
        let e = alice
            .post::<_, IndiciumBatchIssued>("/v1/indicia/batch", b)
            .await
            .unwrap_err();
        assert_eq!((e.status, e.code.as_str()), (*status, *code), "{e:?}");
    }
    let m: MeterView = alice.get("/v1/meter").await.unwrap();
    assert_eq!(
        (m.balance, m.pieces),
        (3_000 - 1_360, 16),
        "nothing charged"
    );

    // Old and new orders together: the old answered from the database, the new issued.
    let mixed: IndiciumBatchIssued = alice
        .post(
            "/v1/indicia/batch",
            &batch([order(0x110, 160), order(0x207, 40)]),
        )
        .await
        .unwrap();
    assert_eq!(
        mixed.indicia.iter().map(|i| i.reprint).collect::<Vec<_>>(),
        [true, false]
    );
    assert_eq!(mixed.indicia[0].indicium, done.indicia[15].indicium);
    assert_eq!(mixed.indicia[1].balance, 3_000 - 1_400);

    // Batches at once on one meter, some of them the same: exact registers.
    let tasks: Vec<_> = (0..8u64)
        .map(|i| {
            let a = alice.clone();
            let b = batch((0..4u64).map(|k| order(0x400 + 4 * (i % 4) + k, 5)));
            tokio::spawn(async move {
                a.post::<_, IndiciumBatchIssued>("/v1/indicia/batch", &b)
                    .await
            })
        })
        .collect();
    let mut fresh = 0;
    for t in tasks {
        fresh += t
            .await
            .unwrap()
            .unwrap()
            .indicia
            .iter()
            .filter(|i| !i.reprint)
            .count();
    }
    assert_eq!(fresh, 16, "each order issued once");
    let m: MeterView = alice.get("/v1/meter").await.unwrap();
    assert_eq!((m.balance, m.used, m.pieces), (3_000 - 1_480, 1_480, 33));

    // The history and the auditor: one issue record per piece, the ledger exact.
    let hist: History = alice.get("/v1/history").await.unwrap();
    assert_eq!(
        hist.entries.iter().filter(|e| e.kind == "issue").count(),
        33
    );
    let a = audit(&w);
    assert!(a.problems.is_empty(), "{:?}", a.problems);
    assert_eq!((a.credited, a.used), (3_000, 1_480));
    w.dc.stop().await;
    w.h.stop().await;
}

/// The auditor reads the recharging center (`datacenter audit --rc`): what it debited each
/// mailer must be what the box's records credited the mailer's meter. A payment that no
/// refill credited (here: the recharging center's database edited to debit 1.00 more) is
/// reported.
#[tokio::test(flavor = "multi_thread")]
async fn the_auditor_reconciles_each_deposit_with_the_records() {
    use openpsd_datacenter::audit::{reconcile_deposits, MeterCredit};
    let tmp = tempfile::tempdir().unwrap();
    let w = world(tmp.path()).await;
    let (alice, s) = funded(&w, "alice", 20_000, 8_000).await;
    let (_bob, b) = sign_up(&w, "bob").await;
    let _: IndiciumIssued = alice.post("/v1/indicia", &order(0xc2, 100)).await.unwrap();
    let op = Client::new(&w.h.recharge.url, &w.h.pki, Some(Role::Operator));
    let reconciled = || async {
        let mut rep = audit(&w);
        let mut accounts = std::collections::HashMap::new();
        for c in &rep.credits {
            let id = format!("vm-{}", c.mailer_id);
            let a: Account = op.get(&format!("/v1/accounts/{id}")).await.unwrap();
            accounts.insert(id, a);
        }
        // As `datacenter audit --rc`: the refill rows again, not a second walk.
        let again = read_refills(&w);
        reconcile_deposits(&mut rep, &accounts, &again);
        rep
    };
    let rep = reconciled().await;
    assert!(rep.problems.is_empty(), "{:?}", rep.problems);
    assert_eq!(rep.deposits_checked, 2);
    let alice_credit = rep
        .credits
        .iter()
        .find(|c| c.mailer_id == s.mailer_id)
        .cloned();
    assert_eq!(
        alice_credit.map(|c| (c.credited, c.under_way.is_empty())),
        Some((8_000, true))
    );
    assert!(rep
        .credits
        .iter()
        .any(|c: &MeterCredit| c.mailer_id == b.mailer_id && c.credited == 0));

    // The recharging center's books edited: 1.00 more debited from Alice than any refill
    // credited (its own invariant deposited = available + held + debited still holds).
    let rc_db =
        rusqlite::Connection::open(w.dir.join("recharge").join(openpsd_recharge::DB_FILE)).unwrap();
    rc_db
        .busy_timeout(std::time::Duration::from_secs(5))
        .unwrap();
    let n = rc_db
        .execute(
            "UPDATE accounts SET available = available - 100, debited = debited + 100
             WHERE account_id = ?1",
            [format!("vm-{}", s.mailer_id)],
        )
        .unwrap();
    assert_eq!(n, 1);
    drop(rc_db);
    let rep = reconciled().await;
    assert_eq!(rep.problems.len(), 1, "{:?}", rep.problems);
    assert!(
        rep.problems[0].contains("debited") && rep.problems[0].contains("8100"),
        "{:?}",
        rep.problems
    );

    // The data center's refill row edited to 81.00 (unsigned; the recharging center debits
    // by it): the walk alone finds it is not what the box's records credited.
    let edited = w.raw(|c| {
        c.exec(
            "t",
            "UPDATE refills SET amount = 8100 WHERE client_txn_id = ?1",
            args![FUNDING_REFILL],
        )
        .map_err(api)
    });
    assert!(edited >= 1);
    let a = audit(&w);
    assert!(
        a.problems
            .iter()
            .any(|p| p.contains(&format!("mailer {}", s.mailer_id))
                && p.contains("8100")
                && p.contains("8000")),
        "{:?}",
        a.problems
    );
    w.dc.stop().await;
    w.h.stop().await;
}

/// The KMS's word that a meter is in service is kept for `standing_recheck`: within it the
/// meter prints with the KMS down; a meter the data center has no fresh word for does not
/// (503, nothing charged) until the KMS answers again.
#[tokio::test(flavor = "multi_thread")]
async fn printing_needs_a_fresh_word_from_the_kms() {
    let tmp = tempfile::tempdir().unwrap();
    let w = world_with(tmp.path(), |c| {
        c.standing_recheck = std::time::Duration::from_secs(3600);
    })
    .await;
    let (alice, _) = funded(&w, "alice", 5_000, 1_000).await;
    let (bob, _) = funded(&w, "bob", 5_000, 1_000).await;
    // Alice prints once: the KMS's word on her meter is fresh for an hour.
    let _: IndiciumIssued = alice.post("/v1/indicia", &order(0xd2, 100)).await.unwrap();
    let World { h, dc, .. } = w;
    h.kms.stop().await;
    // Alice prints on her fresh word; Bob, never asked about, is refused with 503.
    let _: IndiciumIssued = alice.post("/v1/indicia", &order(0xd3, 100)).await.unwrap();
    let e = bob
        .post::<_, IndiciumIssued>("/v1/indicia", &order(0xd4, 100))
        .await
        .unwrap_err();
    assert_eq!(e.status, 503, "{e:?}");
    let v: MeterView = bob.get("/v1/meter").await.unwrap();
    assert_eq!((v.balance, v.pieces), (1_000, 0), "nothing charged");
    dc.stop().await;
    h.meter.stop().await;
    h.creditor.stop().await;
    h.ca.stop().await;
    h.ca_public.stop().await;
    h.vendor.stop().await;
    h.pa.stop().await;
    h.recharge.stop().await;
}

/// Removes the process's failpoint hook when dropped (a failed assertion included).
struct HookGuard;

impl Drop for HookGuard {
    fn drop(&mut self) {
        openpsd_service_kit::failpoint::set_crash_hook(None);
    }
}

/// `datacenter audit --rc` as the CLI runs it ([`openpsd_datacenter::audit::audit_with_rc`]:
/// the walk, the accounts at the real recharging center, the light second read, the
/// re-checks), with `moves` refills of 1.00 by `mailer` (IDs from `first_txn` on), one each
/// time the auditor reaches the failpoint between an account read and its light read:
/// the mailer's refill moves after its account was read and before the rows are read again.
async fn audit_while_refilling(
    w: &World,
    mailer: &Client,
    moves: u64,
    first_txn: u64,
) -> openpsd_datacenter::audit::AuditReport {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{mpsc, Arc, Mutex};
    let (reached_tx, reached_rx) = mpsc::channel::<()>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (reached_tx, go_rx) = (Mutex::new(reached_tx), Mutex::new(go_rx));
    let left = AtomicU64::new(moves);
    // The hook answers "no crash" everywhere; at the auditor's point (the first `moves`
    // times) it holds the auditor's thread until the test's refill is done.
    openpsd_service_kit::failpoint::set_crash_hook(Some(Arc::new(move |name: &str| {
        if name == "datacenter_audit_before_second_read"
            && left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            reached_tx.lock().unwrap().send(()).unwrap();
            go_rx.lock().unwrap().recv().unwrap();
        }
        false
    })));
    let _guard = HookGuard;
    let (db, key) = (w.database(), w.info.txn_key);
    let tls = openpsd_service_kit::tls::client_config(&w.h.pki, Some(Role::Operator)).unwrap();
    let rc = openpsd_service_kit::upstream::Upstream::new(
        "recharging center",
        &w.h.recharge.url,
        Role::Recharge,
        tls,
    )
    .unwrap();
    // The auditor on a thread and runtime of its own, as the CLI's process: the hook blocks
    // it, never one of the services' threads.
    let auditor = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(openpsd_datacenter::audit::audit_with_rc(
                &db,
                Some(&key),
                &rc,
            ))
    });
    let reached_rx = Arc::new(Mutex::new(reached_rx));
    for i in 0..moves {
        let r = reached_rx.clone();
        tokio::task::spawn_blocking(move || {
            r.lock()
                .unwrap()
                .recv_timeout(std::time::Duration::from_secs(60))
        })
        .await
        .unwrap()
        .expect("the auditor reached its second read");
        let done: RefillDone = mailer
            .post(
                "/v1/refills",
                &RefillOrder {
                    client_txn_id: format!("{:016x}", first_txn + i),
                    amount: 100,
                },
            )
            .await
            .unwrap();
        assert_eq!(done.amount, 100);
        go_tx.send(()).unwrap();
    }
    tokio::task::spawn_blocking(move || auditor.join())
        .await
        .unwrap()
        .expect("the auditor's thread")
        .expect("the audit")
}

/// Finding: a mailer skipped by `audit --rc` (its refill moved while its account was read)
/// was left unchecked with a clean exit. Now it is re-checked against a fresh walk, and
/// compared once it stands still; one that refills at every read stays named as not
/// compared (the CLI's exit status 3).
#[tokio::test(flavor = "multi_thread")]
async fn the_auditor_rechecks_a_mailer_whose_refill_moved_between_the_reads() {
    use openpsd_datacenter::audit::RECHECKS;
    // The failpoint hook is the process's (as the crash-after-void tests').
    let _turn = REFILL_VOIDS.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let w = world(tmp.path()).await;
    let (alice, s) = funded(&w, "alice", 20_000, 8_000).await;
    let (_bob, _) = funded(&w, "bob", 5_000, 1_000).await;

    // Alice refills once, between the account read and the light read: skipped at first
    // (the walk saw 80.00 credited, the account was read at 81.00 debited), then compared at
    // the re-check, with the fresh walk's 81.00.
    let rep = audit_while_refilling(&w, &alice, 1, 0xa0).await;
    assert!(rep.problems.is_empty(), "{:?}", rep.problems);
    assert_eq!(
        (
            rep.deposits_checked,
            rep.deposits_rechecked,
            rep.deposits_skipped,
            rep.deposit_rechecks
        ),
        (2, 1, 0, 1),
        "Alice skipped, then compared at the first re-check"
    );
    assert!(rep.skipped_mailers.is_empty());
    // The report's totals are the first walk's (before the refill); a re-check only compares
    // the accounts skipped.
    assert_eq!(rep.credited, 8_000 + 1_000);

    // Alice refills at every read, the re-checks' too: never compared, and said so.
    let rep = audit_while_refilling(&w, &alice, 1 + u64::from(RECHECKS), 0xb0).await;
    assert!(rep.problems.is_empty(), "{:?}", rep.problems);
    assert_eq!(rep.skipped_mailers, std::slice::from_ref(&s.mailer_id));
    assert_eq!(
        (
            rep.deposits_checked,
            rep.deposits_rechecked,
            rep.deposits_skipped,
            rep.deposit_rechecks
        ),
        (1, 0, 1, RECHECKS),
        "Bob compared, Alice at no read"
    );
    let json = serde_json::to_value(&rep).unwrap();
    assert_eq!(json["skipped_mailers"], serde_json::json!([s.mailer_id]));
    assert_eq!(json["deposits_skipped"], 1);

    // Standing still again: every account compared, the ledger and the deposits agree.
    let rep = audit_while_refilling(&w, &alice, 0, 0).await;
    assert!(rep.problems.is_empty(), "{:?}", rep.problems);
    assert_eq!((rep.deposits_checked, rep.deposit_rechecks), (2, 0));
    w.dc.stop().await;
    w.h.stop().await;
}

/// Seed 001's transaction box 42 signs the log-ins: each log-in the box approves is counted
/// and signed there (sequence, mailer, time), the mailer's history shows its own, and the
/// auditor walks them all: a record changed or moved to another mailer is a problem, one
/// missing is listed (the database alone cannot tell a deleted record from one lost in a
/// crash between the box and the database).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_box_signs_every_log_in_and_the_auditor_walks_them() {
    use openpsd_core::vbox::login::LoginRecord;
    common::capture_logs();
    let tmp = tempfile::tempdir().unwrap();
    let w = world(tmp.path()).await;
    let anon = Client::new(&w.dc.url, &w.h.pki, None);
    let (_, a) = sign_up(&w, "alice").await;
    let (_, b) = sign_up(&w, "bob").await;
    let log_in = |name: &'static str| {
        let anon = anon.clone();
        async move {
            let s: MailerSession = anon.post("/v1/sessions", &creds(name)).await.unwrap();
            anon.with_bearer(&s.token)
        }
    };
    let alice = log_in("alice").await;
    let bob = log_in("bob").await;
    let _ = log_in("alice").await;
    let alice3 = log_in("alice").await;
    // A wrong password is not a log-in: nothing counted, nothing signed.
    let wrong = MailerCredentials {
        username: "alice".into(),
        password: "not-her-password".into(),
    };
    let e = anon
        .post::<_, MailerSession>("/v1/sessions", &wrong)
        .await
        .unwrap_err();
    assert_eq!(e.status, 401);
    // Nor is an unknown username (the same work, a box command that fails).
    let nobody = MailerCredentials {
        username: "nobody-here".into(),
        password: "not-anyones-password".into(),
    };
    let e = anon
        .post::<_, MailerSession>("/v1/sessions", &nobody)
        .await
        .unwrap_err();
    assert_eq!(e.status, 401);
    // The next log-in is the box's seventh (two sign-ups, four log-ins before): neither
    // refusal was counted.
    let alice3 = {
        drop(alice3);
        log_in("alice").await
    };

    let h: History = alice3.get("/v1/history").await.unwrap();
    let key = hex::decode(&h.box_key).unwrap();
    let seqs: Vec<u64> = h.logins.iter().map(|l| l.sequence).collect();
    assert_eq!(
        seqs,
        [1, 3, 5, 6, 7],
        "alice's sign-up and log-ins, oldest first"
    );
    let alice_id: [u8; 16] = hex::decode(&a.mailer_id).unwrap().try_into().unwrap();
    for l in &h.logins {
        let r = LoginRecord::verify(&hex::decode(&l.record).unwrap(), &key).unwrap();
        assert_eq!((r.sequence, r.mailer, r.time), (l.sequence, alice_id, l.at));
        assert_eq!(r.box_id, w.info.box_id);
    }
    let hb: History = bob.get("/v1/history").await.unwrap();
    assert_eq!(
        hb.logins.iter().map(|l| l.sequence).collect::<Vec<_>>(),
        [2, 4]
    );
    let r = audit(&w);
    assert_eq!((r.logins, r.logins_missing.len()), (7, 0));
    assert!(r.problems.is_empty(), "{:?}", r.problems);

    // A record changed in the database: a problem, and not also missing.
    let saved = w.raw(|c| {
        c.one("t", "SELECT record FROM logins WHERE sequence = 3", args![])
            .and_then(|r| r.blob(0))
            .map_err(api)
    });
    let mut flipped = saved.clone();
    flipped[30] ^= 1;
    w.raw(|c| {
        c.exec(
            "t",
            "UPDATE logins SET record = ?1 WHERE sequence = 3",
            args![&flipped],
        )
        .map_err(api)
    });
    let r = audit(&w);
    assert!(
        r.problems.iter().any(|p| p.contains("log-in 3")),
        "{:?}",
        r.problems
    );
    assert!(r.logins_missing.is_empty(), "{:?}", r.logins_missing);
    w.raw(|c| {
        c.exec(
            "t",
            "UPDATE logins SET record = ?1 WHERE sequence = 3",
            args![&saved],
        )
        .map_err(api)
    });

    // The box behind the database (its memory restored; played here by a row the box has
    // not signed yet): the log-in it signs with a sequence the database holds is refused
    // (503, an alarm); the next one goes through.
    w.raw(|c| {
        c.exec(
            "t",
            "INSERT INTO logins (sequence, mailer_id, at, record) SELECT 8, mailer_id, at, record FROM logins WHERE sequence = 7",
            args![],
        )
        .map_err(api)
    });
    let e = anon
        .post::<_, MailerSession>("/v1/sessions", &creds("bob"))
        .await
        .unwrap_err();
    assert_eq!(e.status, 503, "{e:?}");
    let bob = log_in("bob").await;
    let hb: History = bob.get("/v1/history").await.unwrap();
    assert_eq!(
        hb.logins.iter().map(|l| l.sequence).collect::<Vec<_>>(),
        [2, 4, 9]
    );
    w.raw(|c| {
        c.exec("t", "DELETE FROM logins WHERE sequence = 8", args![])
            .map_err(api)
    });
    let r = audit(&w);
    assert_eq!(r.logins_missing, ["8"], "the sequence the box signed twice");

    // Alice's second log-in moved to Bob in the database: Bob's history refuses to show it,
    // the auditor reports it.
    w.raw(|c| {
        c.exec(
            "t",
            "UPDATE logins SET mailer_id = ?1 WHERE sequence = 5",
            args![&b.mailer_id],
        )
        .map_err(api)
    });
    assert_eq!(
        bob.get::<History>("/v1/history").await.unwrap_err().status,
        500
    );
    let r = audit(&w);
    assert!(
        r.problems.iter().any(|p| p.contains("log-in 5")),
        "{:?}",
        r.problems
    );
    // Put back, then the first deleted: listed as missing, not a problem.
    w.raw(|c| {
        c.exec(
            "t",
            "UPDATE logins SET mailer_id = ?1 WHERE sequence = 5",
            args![&a.mailer_id],
        )
        .map_err(api)?;
        c.exec("t", "DELETE FROM logins WHERE sequence = 1", args![])
            .map_err(api)
    });
    let r = audit(&w);
    assert_eq!(
        (r.logins, r.logins_missing.clone()),
        (7, vec!["1".to_owned(), "8".to_owned()])
    );
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    let h: History = alice.get("/v1/history").await.unwrap();
    assert_eq!(
        h.logins.iter().map(|l| l.sequence).collect::<Vec<_>>(),
        [3, 5, 6, 7]
    );

    // At start the box's count (GET DATA 00 02) is compared with the database's records.
    let restart = || async {
        start_datacenter(
            &config(&w.h, tmp.path(), w.url.as_deref()),
            "127.0.0.1:0",
            1000,
        )
        .await
    };
    let (database, key) = (w.database(), w.info.txn_key);
    w.dc.stop().await;
    // The box ahead (the last record lost between the box and the database): it starts,
    // and a warning names the log-ins the database lacks.
    raw(&database, |c| {
        c.exec("t", "DELETE FROM logins WHERE sequence = 9", args![])
            .map_err(api)
    });
    let warned = || common::logged(&["the box counted log-ins whose records", "missing=8-9"]).len();
    let before = warned();
    let (dc, _) = restart().await.expect("a box ahead of the database starts");
    dc.stop().await;
    assert_eq!(warned(), before + 1, "the missing log-ins named");
    // A row inserted in the database ahead of the box (a copy of record 7 as log-in 12):
    // not a record the box signed with that sequence, refused as an edit.
    raw(&database, |c| {
        c.exec(
            "t",
            "INSERT INTO logins (sequence, mailer_id, at, record) SELECT 12, mailer_id, at, record FROM logins WHERE sequence = 7",
            args![],
        )
        .map_err(api)
    });
    let err = restart().await.err().expect("an inserted log-in row");
    assert!(
        err.to_string()
            .contains("log-in row 12 is not a record the box signed"),
        "{err}"
    );
    raw(&database, |c| {
        c.exec("t", "DELETE FROM logins WHERE sequence = 12", args![])
            .map_err(api)
    });
    // The box's memory rolled back: its store copied now, a log-in (the box's tenth), then
    // the copy put back. The box is behind the record the database holds: refused, with an
    // alarm; its latest memory put back, it starts, and the next log-in is the eleventh.
    let box_dir = tmp
        .path()
        .join("datacenter")
        .join(openpsd_datacenter::BOX_DIR);
    let copy_dir = |from: &Path, to: &Path| {
        let _ = std::fs::remove_dir_all(to);
        std::fs::create_dir_all(to).unwrap();
        for f in std::fs::read_dir(from).unwrap() {
            let f = f.unwrap();
            std::fs::copy(f.path(), to.join(f.file_name())).unwrap();
        }
    };
    let (older, latest) = (tmp.path().join("box-older"), tmp.path().join("box-latest"));
    copy_dir(&box_dir, &older);
    let (dc, _) = restart().await.expect("starts again");
    let anon = Client::new(&dc.url, &w.h.pki, None);
    let _: MailerSession = anon.post("/v1/sessions", &creds("bob")).await.unwrap();
    dc.stop().await;
    copy_dir(&box_dir, &latest);
    copy_dir(&older, &box_dir);
    let alarms =
        || common::logged(&["ALARM: the box's log-in count is behind the database's"]).len();
    let before = alarms();
    let err = restart().await.err().expect("a box behind the database");
    assert!(
        err.to_string().contains("restore the box's latest memory"),
        "{err}"
    );
    assert_eq!(alarms(), before + 1);
    copy_dir(&latest, &box_dir);
    let (dc, _) = restart().await.expect("its latest memory back");
    let anon = Client::new(&dc.url, &w.h.pki, None);
    let s: MailerSession = anon.post("/v1/sessions", &creds("bob")).await.unwrap();
    let hb: History = anon.with_bearer(&s.token).get("/v1/history").await.unwrap();
    assert_eq!(
        hb.logins.iter().map(|l| l.sequence).collect::<Vec<_>>(),
        [2, 4, 10, 11]
    );
    // A sign-up whose first log-in cannot be kept (here: a row already holds the sequence
    // the box signs, 12): the mailer exists, and the answer says so; logging in works, a
    // second sign-up is refused as taken.
    raw(&database, |c| {
        c.exec(
            "t",
            "INSERT INTO logins (sequence, mailer_id, at, record) SELECT 12, mailer_id, at, record FROM logins WHERE sequence = 11",
            args![],
        )
        .map_err(api)
    });
    let e = anon
        .post::<_, MailerSession>("/v1/mailers", &creds("carol"))
        .await
        .unwrap_err();
    assert_eq!(e.status, 503, "{e:?}");
    assert!(e.message.starts_with("you are signed up"), "{e:?}");
    raw(&database, |c| {
        c.exec("t", "DELETE FROM logins WHERE sequence = 12", args![])
            .map_err(api)
    });
    let s: MailerSession = anon.post("/v1/sessions", &creds("carol")).await.unwrap();
    let hc: History = anon.with_bearer(&s.token).get("/v1/history").await.unwrap();
    assert_eq!(
        hc.logins.iter().map(|l| l.sequence).collect::<Vec<_>>(),
        [13]
    );
    let e = anon
        .post::<_, MailerSession>("/v1/mailers", &creds("carol"))
        .await
        .unwrap_err();
    assert_eq!(e.status, 409);
    let r = std::thread::scope(|s| {
        s.spawn(|| openpsd_datacenter::audit::audit(&database, Some(&key)))
            .join()
    })
    .unwrap()
    .unwrap();
    assert_eq!(r.logins_missing, ["1", "8-9", "12"]);
    dc.stop().await;
    w.h.stop().await;
}
