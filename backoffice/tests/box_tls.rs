//! The box link over mutual TLS (docs/virtual-meter.md §9, The box link): a real `card-sim
//! serve --tcp … --tls-cert box.crt …` process serves a blank virtual meter box card, its
//! certificate and the data center's from `pki init`.
//!
//! - The data center (`backoffice serve --role datacenter --box tls:ADDR`, a process)
//!   personalizes the box, a mailer refills and prints; the card-sim process is killed with
//!   SIGKILL mid-printing and started again, and the link heals as over plain TCP (503,
//!   reconnect, RESUME): the meter's registers are exactly its pieces.
//! - Every other client is refused in the handshake — no certificate, the meter's
//!   certificate of the same CA, a data center certificate of another CA, plain TCP — and
//!   logged, while the PERSONALIZE each sends never reaches the card: the box is still blank
//!   afterwards, and the same command from the data center's certificate then personalizes
//!   it. A client silent in the handshake is dropped by the handshake deadline, and a box
//!   serving another role's certificate is refused by the data center's side.
//!
//! card-sim is another package's binary: build it first (`cargo build -p
//! openpsd-card-sim`), or set `$OPENPSD_CARD_SIM` (common/box_process.rs).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/box_process.rs"]
#[allow(dead_code)]
mod box_process;
mod common;
#[path = "common/proc.rs"]
#[allow(dead_code)]
mod proc;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use box_process::{create_box, free_port, CardSim};
use card_sim::transport::TcpCardClient;
use common::Client;
use openpsd_backoffice::server::spawn_all;
use openpsd_core::psd::indicium;
use openpsd_core::vbox::{ins, CLA_VBOX, VBOX_AID};
use openpsd_protocol::datacenter::{
    IndiciumIssued, IndiciumOrder, MailerCredentials, MailerSession, MeterView, RefillDone,
    RefillOrder,
};
use openpsd_protocol::recharge::{Account, Deposit};
use openpsd_service_kit::pki::Pki;
use openpsd_service_kit::tls::{client_config, read_certs, Role};
use proc::Proc;

/// card-sim's TLS flags: serving `pki`'s certificate of `server`, taking the data center.
fn tls_args(pki: &Pki, server: Role) -> Vec<String> {
    let path = |p: std::path::PathBuf| p.to_str().unwrap().to_owned();
    vec![
        "--tls-cert".into(),
        path(pki.cert(server)),
        "--tls-key".into(),
        path(pki.key(server)),
        "--client-ca".into(),
        path(pki.ca_cert()),
        "--client-name".into(),
        Role::Datacenter.dns_name(),
    ]
}

fn order(txn: u64, postage: u64) -> IndiciumOrder {
    IndiciumOrder {
        client_txn_id: format!("{txn:016x}"),
        postage,
        rate: 1,
        destination: "80331".into(),
    }
}

/// One piece, retried under its transaction ID while the box is unreachable (503).
async fn print(m: &Client, txn: u64, postage: u64, unavailable: &mut u32) -> IndiciumIssued {
    loop {
        match m.post("/v1/indicia", &order(txn, postage)).await {
            Ok(i) => return i,
            Err(e) if e.status == 503 => {
                *unavailable += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("order {txn}: {e:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_data_center_prints_through_a_box_behind_mutual_tls() {
    let tmp = tempfile::tempdir().unwrap();
    let h = spawn_all(tmp.path()).await.unwrap();
    let pki = h.pki.dir().to_str().unwrap().to_owned();

    // The box listens on every address: with TLS, card-sim allows it.
    let card = tmp.path().join("cards").join("box");
    create_box(&card);
    let port = free_port();
    let mut sim = CardSim::start_with(
        &card,
        &format!("0.0.0.0:{port}"),
        &tls_args(&h.pki, Role::Box),
    );

    let data = tmp.path().join("dc");
    let box_arg = format!("tls:127.0.0.1:{port}");
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
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_backoffice"))
        .args(["datacenter", "register-box", "--data"])
        .arg(&data)
        .args(["--pki", &pki, "--kms", &h.kms.url])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    let anon = Client::new(&dc.url, &h.pki, None);
    let op = Client::new(&h.recharge.url, &h.pki, Some(Role::Operator));
    let s: MailerSession = anon
        .post(
            "/v1/mailers",
            &MailerCredentials {
                username: "mailer".into(),
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
                reference: "bank-1".into(),
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

    // Pieces before, during and after a SIGKILL of the box: the printer runs on while the
    // box is killed, so a command may be cut off mid-answer (then 503 and RESUME).
    let printer = {
        let m = m.clone();
        tokio::spawn(async move {
            let mut unavailable = 0;
            let mut printed = Vec::new();
            for n in 0..12u64 {
                let postage = 5 + n % 7;
                printed.push((print(&m, 100 + n, postage, &mut unavailable).await, postage));
            }
            (printed, unavailable)
        })
    };
    let before = loop {
        let v: MeterView = m.get("/v1/meter").await.unwrap();
        if v.pieces >= 4 {
            break v.pieces;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    sim.kill9_and_restart();
    let (printed, unavailable) = printer.await.unwrap();
    eprintln!("box_tls: box killed after {before} pieces, {unavailable} answers 503");

    let v: MeterView = m.get("/v1/meter").await.unwrap();
    let used: u64 = printed.iter().map(|(_, p)| p).sum();
    assert_eq!(
        (v.used, v.pieces, v.balance),
        (used, 12, 3_000 - used),
        "registers are the pieces answered, each charged once"
    );
    let key = hex::decode(&v.public_key).unwrap();
    for (i, _) in &printed {
        indicium::verify(&hex::decode(&i.indicium).unwrap(), &key).unwrap();
    }

    // The data center killed and started again: it reconnects over TLS to the box it
    // personalized, its roots the database's, and prints.
    dc.kill9_and_restart("");
    let mut unavailable = 0;
    let again = print(&m, 200, 7, &mut unavailable).await;
    assert!(!again.reprint);
    let v: MeterView = m.get("/v1/meter").await.unwrap();
    assert_eq!((v.used, v.pieces), (used + 7, 13));
    drop(dc);
    drop(sim);
    h.stop().await;
}

/// `CLA INS P1 P2` and `data` as an extended-length case 4 APDU.
fn apdu(ins: u8, p1: u8, p2: u8, data: &[u8]) -> Vec<u8> {
    let mut a = vec![CLA_VBOX, ins, p1, p2, 0x00];
    a.extend_from_slice(&u16::try_from(data.len()).unwrap().to_be_bytes());
    a.extend_from_slice(data);
    a.extend_from_slice(&[0x00, 0x00]);
    a
}

fn select() -> Vec<u8> {
    let mut a = vec![0x00, 0xA4, 0x04, 0x00, 7];
    a.extend_from_slice(VBOX_AID);
    a
}

/// PERSONALIZE of a blank box: ID, 1 shard of depth 4, and P-256's generator as the
/// vendor's and the KMS's keys (a valid point; nobody signs with them here).
fn personalize() -> Vec<u8> {
    let g = hex::decode(
        "046B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296\
         4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5",
    )
    .unwrap();
    let mut d = b"VBTLS001".to_vec();
    d.extend_from_slice(&1u16.to_be_bytes());
    d.push(4);
    d.extend_from_slice(&g);
    d.extend_from_slice(&g);
    apdu(ins::PERSONALIZE, 0, 0, &d)
}

/// GET DATA 00 01: what the box says of itself (`00 90 00` while blank).
fn get_data() -> Vec<u8> {
    vec![CLA_VBOX, ins::GET_DATA, 0x00, 0x01, 0x00]
}

/// Connects to the box with `config` (expecting `box.openpsd`), and sends SELECT and
/// then PERSONALIZE: the answers, or the first error (handshake or exchange).
fn try_personalize(
    addr: &SocketAddr,
    config: rustls::ClientConfig,
) -> Result<Vec<Vec<u8>>, String> {
    let name = card_sim::tls::dns_name(&Role::Box.dns_name()).unwrap();
    let mut c = TcpCardClient::connect_tls(addr, Duration::from_secs(5), Arc::new(config), name)
        .map_err(|e| format!("connect: {e}"))?;
    let mut answers = Vec::new();
    for a in [select(), personalize()] {
        answers.push(c.transmit(&a).map_err(|e| format!("exchange: {e}"))?);
    }
    Ok(answers)
}

/// A client configuration trusting `roots`' CA, presenting `holder`'s certificate of
/// `role` (another CA's, for the foreign client).
fn presenting(roots: &Pki, holder: &Pki, role: Role) -> rustls::ClientConfig {
    let mut store = rustls::RootCertStore::empty();
    for c in read_certs(&roots.ca_cert()).unwrap() {
        store.add(c).unwrap();
    }
    let key = std::fs::read(holder.key(role)).unwrap();
    let key = rustls::pki_types::pem::PemObject::from_pem_slice(&key).unwrap();
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(store)
        .with_client_auth_cert(read_certs(&holder.cert(role)).unwrap(), key)
        .unwrap()
}

/// An answer with status word 9000.
fn sw_ok(answer: &[u8]) {
    assert!(answer.ends_with(&[0x90, 0x00]), "{answer:02X?}");
}

fn refusals(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .matches("client refused")
        .count()
}

#[test]
fn the_tls_box_refuses_every_client_but_the_data_center() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::at(&tmp.path().join("pki"));
    pki.init(&Role::ALL, &[]).unwrap();
    let other = Pki::at(&tmp.path().join("other"));
    other.init(&Role::ALL, &[]).unwrap();

    let card = tmp.path().join("box");
    create_box(&card);
    let log = tmp.path().join("card-sim.log");
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let _sim = CardSim::start_logged(&card, &addr.to_string(), &tls_args(&pki, Role::Box), &log);

    // Each sends PERSONALIZE after its side of the handshake; none gets an answer.
    let attempts = [
        ("no certificate", client_config(&pki, None).unwrap()),
        (
            "the meter's certificate",
            client_config(&pki, Some(Role::Meter)).unwrap(),
        ),
        (
            "a data center certificate of another CA",
            presenting(&pki, &other, Role::Datacenter),
        ),
    ];
    for (n, (who, config)) in attempts.into_iter().enumerate() {
        let r = try_personalize(&addr, config);
        assert!(r.is_err(), "{who}: answered {r:?}");
        eprintln!("{who}: {}", r.unwrap_err());
        // Logged by card-sim before it takes the next client (the log line is written
        // right after the refusal; give it a moment).
        let t = Instant::now();
        while refusals(&log) < n + 1 && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(refusals(&log), n + 1, "{who}: logged");
    }
    // Plain TCP: the framing's bytes are no TLS handshake.
    let mut plain = TcpCardClient::connect(addr).unwrap();
    let r = plain
        .transmit(&select())
        .and_then(|_| plain.transmit(&personalize()));
    assert!(r.is_err(), "plain TCP answered {r:?}");
    drop(plain);

    // The data center's certificate: the box is still blank (nothing reached it), and the
    // same PERSONALIZE personalizes it.
    let dc = || {
        TcpCardClient::connect_tls(
            &addr,
            Duration::from_secs(20),
            Arc::new(client_config(&pki, Some(Role::Datacenter)).unwrap()),
            card_sim::tls::dns_name(&Role::Box.dns_name()).unwrap(),
        )
        .unwrap()
    };
    let mut c = dc();
    sw_ok(&c.transmit(&select()).unwrap());
    assert_eq!(
        c.transmit(&get_data()).unwrap(),
        [0x00, 0x90, 0x00],
        "blank: no refused client's PERSONALIZE reached the card"
    );
    sw_ok(&c.transmit(&personalize()).unwrap());
    let info = c.transmit(&get_data()).unwrap();
    assert_eq!(info[..9], *b"\x01VBTLS001", "personalized: {info:02X?}");
    drop(c);
    assert_eq!(
        refusals(&log),
        4,
        "the plain client was refused and logged too"
    );

    // A client silent in the handshake holds the card for the handshake deadline (10 s),
    // not for the 30 s idle bound: the data center's next connection is served after it.
    let _silent = std::net::TcpStream::connect(addr).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    let mut c = dc();
    sw_ok(&c.transmit(&select()).unwrap());
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_secs(8) && waited < Duration::from_secs(20),
        "served after the silent client's handshake deadline: {waited:?}"
    );
    drop(c);

    // The data center accepts no server but `box.openpsd`: a card-sim serving the meter's
    // certificate (same CA) is refused on the data center's side.
    let card2 = tmp.path().join("box2");
    create_box(&card2);
    let port2 = free_port();
    let addr2: SocketAddr = format!("127.0.0.1:{port2}").parse().unwrap();
    let _impostor = CardSim::start_with(&card2, &addr2.to_string(), &tls_args(&pki, Role::Meter));
    let r = try_personalize(&addr2, client_config(&pki, Some(Role::Datacenter)).unwrap());
    let e = r.expect_err("a server certificate of another role");
    assert!(e.starts_with("connect:"), "refused in the handshake: {e}");
}
