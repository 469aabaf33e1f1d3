//! `kill -9` of `card-sim serve` in the middle of a stream of indicium commands: after a
//! restart, the registers and the piece count account for exactly the indicia the client
//! received, once it has re-sent (with the same transaction ID) the one request whose
//! answer the kill swallowed.
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use card_sim::personalize::read_secrets;
use card_sim::transport::TcpCardClient;
use openpsd_core::client::psd_apdu;
use openpsd_core::psd::audit::AuditData;
use openpsd_core::psd::indicium::{self, IndiciumRequest};
use openpsd_core::psd::refill::RefillCombination;
use openpsd_core::psd::registers::Registers;
use openpsd_core::types::*;

const SET: RegisterSetIndex = RegisterSetIndex(0);
const POSTAGE: u64 = 100;

/// Starts `card-sim serve --tcp 127.0.0.1:0` and returns it with the port it chose.
fn serve(state: &std::path::Path) -> (Child, u16) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_card-sim"))
        .args([
            "serve",
            "--clock",
            "none",
            "--tcp",
            "127.0.0.1:0",
            "--state",
        ])
        .arg(state)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("card-sim starts");
    let stderr = child.stderr.take().expect("stderr piped");
    let mut lines = BufReader::new(stderr).lines();
    let port = loop {
        let line = lines
            .next()
            .expect("card-sim logs its address")
            .expect("utf-8 log");
        if let Some(rest) = line.split("addr=127.0.0.1:").nth(1) {
            break rest
                .split_whitespace()
                .next()
                .expect("port")
                .parse()
                .expect("port number");
        }
    };
    // Keep draining the log so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, port)
}

fn connect(port: u16) -> TcpCardClient {
    let mut c = TcpCardClient::connect(("127.0.0.1", port)).expect("connects");
    assert_eq!(
        psd_apdu::sw(&c.transmit(&psd_apdu::select()).expect("SELECT")),
        0x9000
    );
    c
}

fn ok(resp: std::io::Result<Vec<u8>>) -> Vec<u8> {
    let resp = resp.expect("card answers");
    psd_apdu::data(&resp)
        .unwrap_or_else(|s| panic!("card refused: {s:?}"))
        .to_vec()
}

fn request(n: u64) -> IndiciumRequest {
    IndiciumRequest {
        transaction: TransactionId(n.to_be_bytes()),
        postage: Amount(POSTAGE),
        date: Date::new(2026, 11, 21).unwrap(),
        rate: RateCategory(1),
        origin: PostalCode::new(b"10115").unwrap(),
        destination: PostalCode::new(b"20095").unwrap(),
    }
}

#[test]
fn kill_9_mid_stream_loses_nothing_the_client_received_and_counts_nothing_it_did_not() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("card");
    let kms_dir = dir.path().join("kms");
    let (_, kms_public) =
        card_sim::kms_key::create(&kms_dir, &mut card_sim::os_platform::OsPlatform::default())
            .unwrap();
    let kms = card_sim::kms_key::read_signing(&kms_dir.join("kms-signing.key")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_card-sim"))
        .args(["personalize", "--license", "4711:10115", "--kms-public-key"])
        .arg(&kms_public)
        .arg("--state")
        .arg(&state)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secrets = read_secrets(&dir.path().join("card.secrets.json")).unwrap();
    let public_key = hex::decode(&secrets.public_key).unwrap();

    let (mut server, port) = serve(&state);
    let mut client = connect(port);
    // Fund the register set through an audit and a signed refill message.
    let audit = AuditData::open(
        &ok(client.transmit(&psd_apdu::audit(SET, &[1; 16]))),
        &public_key,
    )
    .unwrap();
    let funding = 1_000_000;
    let msg = RefillCombination {
        device: audit.device,
        license: audit.license,
        amount: Amount(funding),
        control_sum: audit.control_sum,
        refills: audit.refills,
        combination_id: [1; 8],
    }
    .sign(&kms);
    ok(client.transmit(&psd_apdu::refill(SET, &msg)));

    let mut received = 0u32;
    let mut next_txn = 1u64;
    for (round, delay_ms) in [120u64, 45, 300, 10, 200].into_iter().enumerate() {
        // Kill the server after `delay_ms` while the client streams indicium commands.
        let started = Instant::now();
        let pid = server.id();
        let killer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(delay_ms));
            // SIGKILL: no chance to flush or clean up.
            Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status()
                .expect("kill runs");
        });
        let in_flight = loop {
            let req = request(next_txn);
            match client.transmit(&psd_apdu::issue_indicium(SET, &req)) {
                Ok(resp) => {
                    let data = psd_apdu::data(&resp).expect("indicium issued");
                    let d = indicium::verify(data, &public_key).expect("indicium verifies");
                    received += 1;
                    assert_eq!(d.pieces, PieceCount(received));
                    next_txn += 1;
                }
                Err(_) => break req,
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the kill happened"
            );
        };
        killer.join().unwrap();
        server.wait().unwrap();

        // Restart on the same state; the client re-sends the request it lost.
        let (s, port) = serve(&state);
        server = s;
        client = connect(port);
        let ind = ok(client.transmit(&psd_apdu::issue_indicium(SET, &in_flight)));
        let d = indicium::verify(&ind, &public_key).unwrap();
        received += 1;
        next_txn += 1;
        assert_eq!(
            d.pieces,
            PieceCount(received),
            "round {round}: the re-sent request was counted once"
        );

        let r = Registers::decode(&ok(client.transmit(&psd_apdu::read_registers(SET)))).unwrap();
        assert_eq!(r.pieces, PieceCount(received), "round {round}");
        assert_eq!(r.ar, Amount(u64::from(received) * POSTAGE), "round {round}");
        assert_eq!(
            r.control_sum,
            Amount(funding),
            "round {round}: no value created or lost"
        );
        assert_eq!(r.ar.checked_add(r.dr), Some(r.control_sum));
        eprintln!(
            "round {round}: killed after {delay_ms} ms; {received} indicia received and counted"
        );
    }
    server.kill().ok();
    server.wait().ok();
}
