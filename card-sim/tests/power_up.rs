//! What docs/card-sim.md promises about the transports and power-up, checked on the real
//! binaries: the vpcd control frames (`00`/`01`/`02` unanswered, `04` answered with the
//! ATR, a zero-length frame ignored), a card made by `card-sim create` and personalized by
//! APDUs through vpcd becoming a PSD (purse AID `6A82`) at its next power-up, and every TCP
//! connection a fresh power-up.
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use card_sim::os_platform::OsPlatform;
use card_sim::sim::{SimCard, ATR};
use card_sim::transport::{control, run_tcp_server_with, TcpCardClient};
use openpsd_core::client::{psd_apdu, purse_apdu, Link, LinkError};
use openpsd_core::crypto::IndiciumKey;
use openpsd_core::store::MemStore;

/// The vpcd side of the framing: what pcscd's vpcd driver does, by hand.
struct Vpcd {
    stream: TcpStream,
}

impl Vpcd {
    fn send(&mut self, body: &[u8]) {
        let mut frame = u16::try_from(body.len()).unwrap().to_be_bytes().to_vec();
        frame.extend_from_slice(body);
        self.stream.write_all(&frame).unwrap();
    }

    fn receive(&mut self) -> Vec<u8> {
        self.stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut len = [0u8; 2];
        self.stream.read_exact(&mut len).unwrap();
        let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
        self.stream.read_exact(&mut body).unwrap();
        body
    }

    /// Sends `body` and checks that the card answers nothing to it.
    fn send_unanswered(&mut self, body: &[u8]) {
        self.send(body);
        self.stream
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut byte = [0u8; 1];
        match self.stream.read(&mut byte) {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            other => panic!("frame {body:02X?} was answered: {other:?} {byte:02X?}"),
        }
    }

    fn sw(&mut self, apdu: &[u8]) -> u16 {
        let r = self.transmit(apdu).unwrap();
        u16::from_be_bytes([r[r.len() - 2], r[r.len() - 1]])
    }

    /// Power off, then power on: what pcscd does when a client reconnects the card.
    fn power_cycle(&mut self) {
        self.send_unanswered(&[control::POWER_OFF]);
        self.send_unanswered(&[control::POWER_ON]);
    }
}

impl Link for Vpcd {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, LinkError> {
        self.send(apdu);
        Ok(self.receive())
    }
}

/// Kills the `card-sim serve` this test started (by its own handle) when the test ends.
struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn card_sim(args: &[&str], state: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_card-sim"));
    c.args(args).arg("--state").arg(state);
    c
}

/// `card-sim serve --vpcd` of the card in `state`, connected to a vpcd played by the test.
fn serve_to_vpcd(state: &Path) -> (Served, Vpcd) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let child = card_sim(&["serve", "--clock", "none", "--vpcd", &addr], state)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let served = Served(child);
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let stream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("card-sim did not connect to the vpcd of the test: {e}"),
        }
    };
    stream.set_nonblocking(false).unwrap();
    (served, Vpcd { stream })
}

fn purse_select() -> Vec<u8> {
    purse_apdu::select()
}

#[test]
fn vpcd_control_frames_and_a_created_card_personalized_as_a_psd_is_a_psd_after_a_power_cycle() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("card");
    let made = card_sim(&["create"], &state).output().unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let (_served, mut vpcd) = serve_to_vpcd(&state);

    // The control frames: only GET ATR is answered.
    vpcd.send(&[control::GET_ATR]);
    assert_eq!(vpcd.receive(), ATR);
    vpcd.send_unanswered(&[control::POWER_ON]);
    vpcd.send_unanswered(&[control::RESET]);
    vpcd.send_unanswered(&[]);
    vpcd.send_unanswered(&[0x03]);
    // A reset clears the selection: nothing is selected, whatever came before.
    assert_eq!(vpcd.sw(&psd_apdu::select()), 0x9000);
    vpcd.send_unanswered(&[control::RESET]);
    assert_eq!(vpcd.sw(&[0x80, 0xCA, 0x00, 0x01, 0x00]), 0x6985);

    // A blank card answers both AIDs.
    assert_eq!(vpcd.sw(&purse_select()), 0x9000);
    assert_eq!(vpcd.sw(&psd_apdu::select()), 0x9000);

    // Personalized as a PSD by APDUs, as any host would.
    let kms = IndiciumKey::generate(&mut OsPlatform::default()).public_key();
    let req = card_sim::personalize::Request::new(kms);
    card_sim::personalize::personalize(&mut vpcd, &mut OsPlatform::default(), &req).unwrap();
    // Until the next power-up the card is what it was loaded as.
    assert_eq!(vpcd.sw(&purse_select()), 0x9000);

    vpcd.power_cycle();
    assert_eq!(
        vpcd.sw(&purse_select()),
        0x6A82,
        "after its next power-up the card is a PSD: no purse applet"
    );
    let fci = vpcd.transmit(&psd_apdu::select()).unwrap();
    assert_eq!(fci[..2], [0x6F, 0x09]);
    assert_eq!(fci[fci.len() - 2..], [0x90, 0x00]);

    // A warm reset is a power-up too.
    vpcd.send_unanswered(&[control::RESET]);
    assert_eq!(vpcd.sw(&purse_select()), 0x6A82);
}

#[test]
fn every_tcp_connection_is_a_fresh_power_up() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut card = SimCard::new(MemStore::new(), OsPlatform::default()).unwrap();
        let _ = run_tcp_server_with(listener, &mut card, Duration::from_secs(10));
    });

    let scheme = card_sim::scheme::Scheme::generate(Some(7), &mut OsPlatform::default());
    {
        let mut first = TcpCardClient::connect(addr).unwrap();
        assert_eq!(first.atr().unwrap(), ATR);
        let req = card_sim::issuer::PurseRequest {
            card: None,
            pin: zeroize::Zeroizing::new(b"1234".to_vec()),
            max_balance: openpsd_core::types::Amount(50_000),
            max_transfer: openpsd_core::types::Amount(10_000),
            pin_tries: 3,
            max_failures: 5,
        };
        card_sim::issuer::personalize_purse(&mut first, &mut OsPlatform::default(), &scheme, &req)
            .unwrap();
        // Still both applets on this connection (loaded blank).
        assert_eq!(sw(&first.transmit(&psd_apdu::select()).unwrap()), 0x9000);
        // Leave response bytes pending: the next client must not get them.
        assert_eq!(sw(&first.transmit(&purse_select()).unwrap()), 0x9000);
        let r = first
            .transmit(&[0x80, 0xCA, 0x00, 0x01, 0x04])
            .expect("GET DATA");
        assert_eq!(r[r.len() - 2], 0x61, "{r:02X?}");
    }
    let mut next = TcpCardClient::connect(addr).unwrap();
    // The new connection starts powered on with nothing selected: no pending bytes, and
    // the card is now a purse.
    assert_eq!(
        sw(&next.transmit(&[0x00, 0xC0, 0x00, 0x00, 0x00]).unwrap()),
        0x6B00
    );
    assert_eq!(
        sw(&next.transmit(&[0x80, 0xCA, 0x00, 0x01, 0x00]).unwrap()),
        0x6985
    );
    assert_eq!(sw(&next.transmit(&psd_apdu::select()).unwrap()), 0x6A82);
    assert_eq!(sw(&next.transmit(&purse_select()).unwrap()), 0x9000);
}

fn sw(r: &[u8]) -> u16 {
    u16::from_be_bytes([r[r.len() - 2], r[r.len() - 1]])
}
