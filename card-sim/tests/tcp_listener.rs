//! `card-sim serve --tcp` serves one client at a time: a client that connects and then
//! says nothing is dropped after the idle bound, and the next client gets the card; a
//! non-loopback address is refused without TLS, and the TLS flags go together (the TLS
//! link itself is tried with the back office's certificates in backoffice/tests/box_tls.rs).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::time::{Duration, Instant};

use card_sim::os_platform::OsPlatform;
use card_sim::sim::SimCard;
use card_sim::transport::{run_tcp_server_with, TcpCardClient};
use openpsd_core::store::MemStore;

#[test]
fn an_idle_client_does_not_hold_the_card() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut card = SimCard::new(MemStore::new(), OsPlatform::default()).unwrap();
        let _ = run_tcp_server_with(listener, &mut card, Duration::from_millis(500));
    });
    // The first client connects and stays silent.
    let _idle = std::net::TcpStream::connect(addr).unwrap();
    // The second one is served once the first was dropped.
    let t = Instant::now();
    let mut next = TcpCardClient::connect(addr).unwrap();
    let reply = next
        .transmit(&openpsd_core::client::psd_apdu::select())
        .unwrap();
    assert!(reply.len() >= 2, "an answer with a status word");
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(5),
        "served after the idle client was dropped: {waited:?}"
    );
}

#[test]
fn serve_tcp_refuses_an_address_off_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("psd");
    let kms = dir.path().join("kms");
    let made = std::process::Command::new(env!("CARGO_BIN_EXE_card-sim"))
        .args(["bench-kms", "--dir"])
        .arg(&kms)
        .output()
        .unwrap();
    assert!(made.status.success());
    let made = std::process::Command::new(env!("CARGO_BIN_EXE_card-sim"))
        .args(["personalize", "--kms-public-key"])
        .arg(kms.join("kms-public.key"))
        .arg("--state")
        .arg(&state)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_card-sim"))
        .args(["serve", "--state"])
        .arg(&state)
        .args(["--tcp", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("loopback only"), "{err}");
    assert!(
        err.contains("--tls-cert"),
        "says how to listen elsewhere: {err}"
    );
}

#[test]
fn serve_tls_flags_go_together() {
    let serve = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_card-sim"))
            .args(["serve", "--state", "no-such-card"])
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}: refused");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // A certificate without the client's CA and name would serve anyone: refused by the
    // parser, before the card is opened.
    let err = serve(&[
        "--tcp",
        "127.0.0.1:0",
        "--tls-cert",
        "box.crt",
        "--tls-key",
        "box.key",
    ]);
    assert!(
        err.contains("--client-ca") && err.contains("--client-name"),
        "{err}"
    );
    let err = serve(&[
        "--tcp",
        "127.0.0.1:0",
        "--client-name",
        "datacenter.openpsd",
    ]);
    assert!(err.contains("--tls-cert"), "{err}");
    // TLS is for --tcp only.
    let err = serve(&[
        "--tls-cert",
        "box.crt",
        "--tls-key",
        "box.key",
        "--client-ca",
        "ca.crt",
        "--client-name",
        "datacenter.openpsd",
    ]);
    assert!(err.contains("--tcp"), "{err}");
    // Files that are not there fail the start, naming the file.
    let err = serve(&[
        "--tcp",
        "127.0.0.1:0",
        "--tls-cert",
        "no-box.crt",
        "--tls-key",
        "box.key",
        "--client-ca",
        "ca.crt",
        "--client-name",
        "datacenter.openpsd",
    ]);
    assert!(
        err.contains("no-box.crt") || err.contains("ca.crt"),
        "{err}"
    );
}

/// A card whose idle work never ends (as a PSD's would if its pool never filled): every
/// unit takes a millisecond and is counted.
struct BusyCard {
    units: u64,
    answered: u64,
}

impl card_sim::sim::SimulatedCard for BusyCard {
    fn atr(&self) -> &[u8] {
        &[0x3B, 0x00]
    }
    fn reset(&mut self) {}
    fn handle(&mut self, _apdu: &[u8], reply: &mut Vec<u8>) {
        self.answered += 1;
        reply.clear();
        reply.extend_from_slice(&[0x90, 0x00]);
    }
    fn idle(&mut self) -> bool {
        std::thread::sleep(Duration::from_millis(1));
        self.units += 1;
        true
    }
}

/// Between commands the card works (`Card::idle`: a PSD fills its nonce pool), and a
/// command that arrives meanwhile is still answered: the work stops at the next unit.
#[test]
fn the_card_works_between_commands_and_answers_when_asked() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut card = BusyCard {
            units: 0,
            answered: 0,
        };
        let stats = card_sim::transport::serve_connection(&mut stream, &mut card).unwrap();
        (stats, card.units, card.answered)
    });
    let mut client = TcpCardClient::connect(addr).unwrap();
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(30));
        let reply = client.transmit(&[0x00, 0xA4, 0x04, 0x00]).unwrap();
        assert_eq!(reply, [0x90, 0x00]);
    }
    drop(client);
    let (stats, units, answered) = server.join().unwrap();
    assert_eq!((stats.apdus, answered), (3, 3), "every command answered");
    assert_eq!(
        stats.idle_units, units,
        "the transport counted the card's work"
    );
    // 90 ms of pauses at ~1 ms a unit (however slow the machine, some work was done).
    assert!(
        units >= 3,
        "the card worked between commands: {units} units"
    );
}
