//! `card-sim serve --tcp ADDR --clients N`: one box served to several clients at once (the
//! data center's function servers). Two clients connected together are both answered, their
//! APDUs interleaved on the one card; the second's arrival does not reset the card under
//! the first, nor do a client's own power events; the card is reset when the first client
//! arrives and after the last has gone; a client beyond N is closed unserved while the
//! others go on. Through the binary: a PSD is refused `--clients 2` (its sessions would be
//! shared), `--clients 0` is refused, and a real box is shared by two clients, one of them
//! personalizing it under the other. Over TLS, a client silent in its handshake holds one
//! place and delays no one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use card_sim::sim::SimulatedCard;
use card_sim::tls;
use card_sim::transport::{run_tcp_server_shared_with, TcpCardClient};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivateKeyDer;
use rustls::{ClientConfig, ServerConfig};

mod common;

/// What the test card saw.
#[derive(Debug, Default)]
struct Counts {
    resets: u64,
    commands: u64,
}

/// A card whose every power-up and command is counted: each command is answered with the
/// card-wide count of commands so far (2 bytes) and `9000`, so answers show the order the
/// one card ran them in.
struct CountingCard(Arc<Mutex<Counts>>);

const TEST_ATR: [u8; 3] = [0x3B, 0x01, 0x42];

impl SimulatedCard for CountingCard {
    fn atr(&self) -> &[u8] {
        &TEST_ATR
    }
    fn reset(&mut self) {
        self.0.lock().unwrap().resets += 1;
    }
    fn handle(&mut self, _apdu: &[u8], reply: &mut Vec<u8>) {
        let mut c = self.0.lock().unwrap();
        c.commands += 1;
        reply.clear();
        reply.extend_from_slice(&u16::try_from(c.commands).unwrap().to_be_bytes());
        reply.extend_from_slice(&[0x90, 0x00]);
    }
}

/// A counting card served to up to `max` clients at once; its address and its counts.
fn shared_card(max: u16) -> (SocketAddr, Arc<Mutex<Counts>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let counts = Arc::new(Mutex::new(Counts::default()));
    let theirs = Arc::clone(&counts);
    std::thread::spawn(move || {
        let mut card = CountingCard(theirs);
        let _ = run_tcp_server_shared_with(listener, &mut card, max, Duration::from_secs(20));
    });
    (addr, counts)
}

fn client(addr: SocketAddr) -> TcpCardClient {
    TcpCardClient::connect_timeout(&addr, Duration::from_secs(10)).unwrap()
}

const APDU: [u8; 4] = [0x00, 0xA4, 0x04, 0x00];

/// The card's answer to the `n`th command it ran.
fn nth(n: u16) -> Vec<u8> {
    let mut r = n.to_be_bytes().to_vec();
    r.extend_from_slice(&[0x90, 0x00]);
    r
}

fn resets(counts: &Mutex<Counts>) -> u64 {
    counts.lock().unwrap().resets
}

/// Waits (10 s at most) until `f` holds.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < end, "{what}: not within 10 s");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn two_clients_share_the_card_and_its_power_ups() {
    let (addr, counts) = shared_card(2);
    let mut a = client(addr);
    assert_eq!(a.transmit(&APDU).unwrap(), nth(1));
    assert_eq!(resets(&counts), 1, "powered up when the first client came");
    let mut b = client(addr);
    assert_eq!(b.transmit(&APDU).unwrap(), nth(2));
    assert_eq!(
        resets(&counts),
        1,
        "B's arrival did not reset the card under A"
    );
    // Interleaved, on the one card.
    assert_eq!(a.transmit(&APDU).unwrap(), nth(3));
    assert_eq!(b.transmit(&APDU).unwrap(), nth(4));
    assert_eq!(a.transmit(&APDU).unwrap(), nth(5));
    // A client's power events and ATR: its own, the card not power-cycled under B.
    a.reset().unwrap();
    assert_eq!(a.atr().unwrap(), TEST_ATR);
    assert_eq!(b.transmit(&APDU).unwrap(), nth(6));
    assert_eq!(resets(&counts), 1, "A's reset frame did not reach the card");
    // A leaves; B goes on, on the same card.
    drop(a);
    assert_eq!(b.transmit(&APDU).unwrap(), nth(7));
    assert_eq!(
        resets(&counts),
        1,
        "A's leaving did not reset the card under B"
    );
    // The last one leaves: the card is reset.
    drop(b);
    eventually("reset after the last client", || resets(&counts) == 2);
    // A lone client again gets a fresh power-up.
    let mut c = client(addr);
    assert_eq!(c.transmit(&APDU).unwrap(), nth(8));
    assert_eq!(resets(&counts), 3, "powered up for the next client");
    drop(c);
    eventually("reset after the next client", || resets(&counts) == 4);
    assert_eq!(counts.lock().unwrap().commands, 8);
}

#[test]
fn a_client_beyond_the_limit_is_closed_unserved() {
    let (addr, counts) = shared_card(2);
    let mut a = client(addr);
    let mut b = client(addr);
    assert_eq!(a.transmit(&APDU).unwrap(), nth(1));
    assert_eq!(b.transmit(&APDU).unwrap(), nth(2));
    // The third: connected by the kernel, then closed by card-sim without a frame read.
    let mut c = client(addr);
    assert!(c.transmit(&APDU).is_err(), "the third client is not served");
    {
        let seen = counts.lock().unwrap();
        assert_eq!(
            (seen.commands, seen.resets),
            (2, 1),
            "the card saw nothing of it"
        );
    }
    // The two others keep working.
    assert_eq!(a.transmit(&APDU).unwrap(), nth(3));
    assert_eq!(b.transmit(&APDU).unwrap(), nth(4));
    // A place freed is taken by the next client (once card-sim has seen A go).
    drop(a);
    let mut served = None;
    eventually("a client served in A's place", || {
        let mut d = client(addr);
        match d.transmit(&APDU) {
            Ok(r) => {
                served = Some((d, r));
                true
            }
            Err(_) => false,
        }
    });
    let (mut d, first) = served.unwrap();
    assert_eq!(first, nth(5));
    assert_eq!(b.transmit(&APDU).unwrap(), nth(6));
    assert_eq!(d.transmit(&APDU).unwrap(), nth(7));
    assert_eq!(resets(&counts), 1, "B was there all along: no reset");
}

/// Runs `card-sim ARGS` (killed if still running after 20 s: a refused start must not serve).
fn card_sim(args: &[&str], dir: &std::path::Path) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_card-sim"))
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > end {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn serve_refuses_to_share_a_psd_and_zero_clients() {
    let dir = tempfile::tempdir().unwrap();
    common::card_sim(&["bench-kms", "--dir", "kms"], dir.path());
    common::card_sim(
        &[
            "personalize",
            "--state",
            "psd",
            "--kms-public-key",
            "kms/kms-public.key",
        ],
        dir.path(),
    );
    let serve = ["serve", "--state", "psd", "--tcp", "127.0.0.1:0"];
    let out = card_sim(&[&serve[..], &["--clients", "2"]].concat(), dir.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "refused: {err}");
    assert!(
        err.contains("refusing to serve the card to 2 clients at once"),
        "{err}"
    );
    assert!(err.contains("it is a PSD"), "names the kind: {err}");
    assert!(err.contains("volatile memory"), "says why: {err}");
    assert!(!err.contains("serving the card"), "never served: {err}");

    let out = card_sim(&[&serve[..], &["--clients", "0"]].concat(), dir.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "refused: {err}");
    assert!(err.contains("--clients"), "{err}");

    // --clients is for --tcp: not with vpcd, nor alone.
    let out = card_sim(
        &["serve", "--state", "psd", "--vpcd", "--clients", "2"],
        dir.path(),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "refused: {err}");
    assert!(err.contains("--vpcd") && err.contains("--clients"), "{err}");
    let out = card_sim(&["serve", "--state", "psd", "--clients", "2"], dir.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "refused: {err}");
    assert!(err.contains("--tcp"), "{err}");
}

/// SELECT of the box, as each function server sends it.
fn select_box() -> Vec<u8> {
    let mut select = vec![0x00, 0xA4, 0x04, 0x00, 7];
    select.extend_from_slice(openpsd_core::vbox::VBOX_AID);
    select
}

fn sw(r: &[u8]) -> &[u8] {
    &r[r.len() - 2..]
}

#[test]
fn a_real_box_is_shared_by_two_clients() {
    use openpsd_core::vbox::{ins, CLA_VBOX};
    let dir = tempfile::tempdir().unwrap();
    common::card_sim(&["create", "--kind", "vbox", "--state", "box"], dir.path());
    let get_data = [CLA_VBOX, ins::GET_DATA, 0x00, 0x01, 0x00];
    let key = openpsd_core::crypto::IndiciumKey::from_bytes(&[0x42; 32])
        .unwrap()
        .public_key();
    let mut data = b"VBshare1".to_vec();
    data.extend_from_slice(&4u16.to_be_bytes());
    data.push(3);
    data.extend_from_slice(&key);
    data.extend_from_slice(&key);
    let mut personalize = vec![CLA_VBOX, ins::PERSONALIZE, 0, 0, 0];
    personalize.extend_from_slice(&u16::try_from(data.len()).unwrap().to_be_bytes());
    personalize.extend_from_slice(&data);
    personalize.extend_from_slice(&[0, 0]);
    {
        // Blank: shared, as the data center's first start finds it.
        let (_server, port) = common::serve_with(&dir.path().join("box"), &["--clients", "2"]);
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let (mut a, mut b) = (client(addr), client(addr));
        assert_eq!(sw(&a.transmit(&select_box()).unwrap()), [0x90, 0x00]);
        assert_eq!(sw(&b.transmit(&select_box()).unwrap()), [0x90, 0x00]);
        assert_eq!(a.transmit(&get_data).unwrap(), [0x00, 0x90, 0x00], "blank");
        assert_eq!(b.transmit(&get_data).unwrap(), [0x00, 0x90, 0x00], "blank");
        // A personalizes the box; B, still connected, sees it at once.
        assert_eq!(sw(&a.transmit(&personalize).unwrap()), [0x90, 0x00]);
        let info = b.transmit(&get_data).unwrap();
        assert_eq!(
            (info[0], &info[1..9]),
            (1, &b"VBshare1"[..]),
            "personalized"
        );
        assert_eq!(sw(&info), [0x90, 0x00]);
    }
    // Now a box (not blank): shared too.
    let (_server, port) = common::serve_with(&dir.path().join("box"), &["--clients", "2"]);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let (mut a, mut b) = (client(addr), client(addr));
    for c in [&mut a, &mut b] {
        assert_eq!(sw(&c.transmit(&select_box()).unwrap()), [0x90, 0x00]);
    }
    for c in [&mut a, &mut b] {
        let info = c.transmit(&get_data).unwrap();
        assert_eq!((info[0], sw(&info)), (1, &[0x90, 0x00][..]));
    }
    let psd = openpsd_core::client::psd_apdu::select();
    assert_eq!(a.transmit(&psd).unwrap(), [0x6A, 0x82], "a box only");
}

/// A CA, the box's certificate (`box.openpsd`) and the data center's (`datacenter.openpsd`),
/// in `dir`: the server's configuration and a client's.
fn tls_pair(dir: &std::path::Path) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let ca_cert = ca.clone().self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let issue = |name: &str| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let (c, k) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    };
    let ca_path = dir.join("ca.crt");
    std::fs::write(&ca_path, ca_cert.pem()).unwrap();
    let (box_crt, box_key) = issue("box.openpsd");
    let (dc_crt, dc_key) = issue("datacenter.openpsd");
    let server = tls::server_config(&box_crt, &box_key, &ca_path, "datacenter.openpsd").unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_cert.der().clone()).unwrap();
    let key = std::fs::read(&dc_key).unwrap();
    let client =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(
                tls::read_certs(&dc_crt).unwrap(),
                PrivateKeyDer::from_pem_slice(&key).unwrap(),
            )
            .unwrap();
    (server, Arc::new(client))
}

/// Over TLS, each handshake runs on its connection's thread: a client silent in its
/// handshake holds one place, not the card, and two others are served together meanwhile;
/// a client beyond the limit is closed before any handshake.
#[test]
fn tls_clients_share_the_card_and_a_silent_handshake_holds_no_one() {
    let dir = tempfile::tempdir().unwrap();
    let (server, client) = tls_pair(dir.path());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let counts = Arc::new(Mutex::new(Counts::default()));
    let theirs = Arc::clone(&counts);
    std::thread::spawn(move || {
        let mut card = CountingCard(theirs);
        let idle = Duration::from_secs(20);
        let _ = tls::run_tls_server_shared_with(listener, &mut card, server, 3, idle);
    });
    let name = tls::dns_name("box.openpsd").unwrap();
    let connect = || {
        TcpCardClient::connect_tls(
            &addr,
            Duration::from_secs(5),
            Arc::clone(&client),
            name.clone(),
        )
    };
    let _silent = std::net::TcpStream::connect(addr).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    let (mut a, mut b) = (connect().unwrap(), connect().unwrap());
    assert_eq!(a.transmit(&APDU).unwrap(), nth(1));
    assert_eq!(b.transmit(&APDU).unwrap(), nth(2));
    assert_eq!(a.transmit(&APDU).unwrap(), nth(3));
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "not held by the silent handshake (10 s): {:?}",
        t.elapsed()
    );
    assert_eq!(resets(&counts), 1, "one power-up for both");
    // The silent one, A and B hold the 3 places: the next is closed unserved.
    assert!(connect().and_then(|mut d| d.transmit(&APDU)).is_err());
    assert_eq!(b.transmit(&APDU).unwrap(), nth(4));
    assert_eq!(counts.lock().unwrap().commands, 4);
}
