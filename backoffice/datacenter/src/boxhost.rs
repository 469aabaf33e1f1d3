//! The secure box (seed 001's meter box 44) as the data center reaches it: core's `vbox`
//! applet on a card, spoken to in APDUs over a [`BoxAt`] link, either
//!
//! - **in-process** (the default): the card runs in this process, on its own thread, its
//!   memory card-sim's file store (`box/` in the data directory: an fsynced append log,
//!   all-or-nothing per commit); or
//! - **a separate `card-sim serve --tcp` process** (`--box tcp:HOST:PORT`): card-sim's
//!   vpcd framing over one long-lived TCP connection; or the same framing inside mutual
//!   TLS (`--box tls:HOST:PORT`, card-sim serving with `--tls-cert`): the data center
//!   presents its `datacenter.openpsd` certificate and accepts only a server certificate of
//!   the back-office CA naming `box.openpsd`, so the box may be on another machine.
//!   card-sim serves one client at a time (several, each command whole, with
//!   `--clients N`: several data centers share one box) and makes each connection a fresh
//!   power-up (with N, when no other client is connected); the box applet's only volatile state is
//!   its selection (no session, no authentication; RESUME's memory is in the shard records
//!   it commits), so a new connection needs one SELECT and nothing else. A connection
//!   found closed, idle near card-sim's 30 s bound, or failing is dropped and made again.
//!
//! A command whose connection is lost before its answer arrived may or may not have been
//! committed by the box: it answers `6F00` ([`LOST`]), the data center keeps the command's
//! intent and RESUME settles it, exactly as after a crash between the box's commit and the
//! database's (`docs/virtual-meter.md` §9, The box link). Only read-only commands
//! (GET DATA, READ SHARD) are re-sent on a new connection by themselves. The box holds
//! every key; this module only builds commands and reads answers.

use std::net::ToSocketAddrs;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use card_sim::file_store::FileStore;
use card_sim::os_platform::{Clock, OsPlatform};
use card_sim::transport::TcpCardClient;
use openpsd_core::card::Card;
use openpsd_core::crypto::PUBLIC_KEY_LEN;
use openpsd_core::status::Status;
use openpsd_core::types::DeviceId;
use openpsd_core::vbox::merkle::Hash;
use openpsd_core::vbox::{ins, vbox_card, CLA_VBOX, VBOX_AID};
use openpsd_service_kit::codec;
use openpsd_service_kit::pki::Pki;
use openpsd_service_kit::tls::{client_config, Role};
use rustls::ClientConfig;

/// Where the box is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BoxAt {
    /// In this process, its memory a card-sim file store in this directory (created the
    /// first time).
    InProcess(PathBuf),
    /// A `card-sim serve --tcp` process at this address (`HOST:PORT`, loopback: the plain
    /// framing has no TLS).
    Tcp(String),
    /// A `card-sim serve --tcp … --tls-cert …` process at this address (`HOST:PORT`, any
    /// host): mutual TLS, the box's certificate naming `box.openpsd`.
    Tls(String),
}

impl BoxAt {
    /// `tcp:HOST:PORT`, `tls:HOST:PORT`, or `in-process` with the store in `dir`.
    pub fn parse(text: &str, dir: &Path) -> anyhow::Result<Self> {
        if text == "in-process" {
            return Ok(Self::InProcess(dir.to_owned()));
        }
        let expected = || {
            anyhow::anyhow!("--box {text:?}: expected in-process, tcp:HOST:PORT or tls:HOST:PORT")
        };
        let (scheme, addr) = text.split_once(':').ok_or_else(expected)?;
        let host_port = addr
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if !host_port {
            return Err(expected());
        }
        match scheme {
            "tcp" => Ok(Self::Tcp(addr.to_owned())),
            "tls" => Ok(Self::Tls(addr.to_owned())),
            _ => Err(expected()),
        }
    }
}

impl std::fmt::Display for BoxAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::InProcess(d) => write!(f, "in-process ({})", d.display()),
            Self::Tcp(a) => write!(f, "tcp:{a}"),
            Self::Tls(a) => write!(f, "tls:{a}"),
        }
    }
}

/// How long a TCP box may take to accept a connection (and finish the TLS handshake) or
/// answer a command.
pub const TCP_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection idle this long is made again before the next command: card-sim drops a
/// client silent for 30 s, and a command sent on a connection it is dropping would be lost
/// (and answered 503) for nothing.
pub const TCP_IDLE: Duration = Duration::from_secs(20);

/// The answer to a command whose link was lost (or whose box thread is gone): whether the
/// box committed it is not known. The data center keeps its intent for RESUME.
pub const LOST: Refused = Refused(0x6F00);

/// What the box says of itself (GET DATA 00 01).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoxInfo {
    /// Its ID.
    pub box_id: DeviceId,
    /// Shards in its forest.
    pub shards: u16,
    /// Depth of each shard's tree.
    pub depth: u8,
    /// Its transaction key (SEC1 uncompressed).
    pub txn_key: [u8; PUBLIC_KEY_LEN],
}

/// The box: a card and the link to it.
pub struct BoxHost {
    link: Link,
    info: BoxInfo,
}

enum Link {
    /// The card in this process and its store's directory; `None` after its memory failed
    /// and could not be re-read yet.
    Local(Option<Box<Card<FileStore, OsPlatform>>>, PathBuf),
    Tcp(TcpBox),
}

/// The in-process box in `dir`, loaded from its store and selected; the store is created
/// if there is none only when `create`.
fn local_card(dir: &Path, create: bool) -> anyhow::Result<Box<Card<FileStore, OsPlatform>>> {
    let store = if dir.join("state.log").exists() {
        FileStore::open(dir)
    } else if !create {
        anyhow::bail!("no box store at {}", dir.display());
    } else {
        std::fs::create_dir_all(dir)?;
        FileStore::create(dir)
    }
    .map_err(|e| anyhow::anyhow!("the box's store {}: {e:?}", dir.display()))?;
    let mut card = vbox_card(store, OsPlatform::new(Clock::System))
        .map_err(|e| anyhow::anyhow!("loading the box: {e:?}"))?;
    split(card.transmit(&select_apdu())).map_err(|r| anyhow::anyhow!("SELECT: {}", r.meaning()))?;
    Ok(Box::new(card))
}

/// A `card-sim serve --tcp` box: the address, the TLS configuration when the link is
/// TLS (the data center's certificate, the back-office CA), and, while it lasts, one
/// selected connection.
struct TcpBox {
    addr: String,
    tls: Option<Arc<ClientConfig>>,
    conn: Option<(TcpCardClient, Instant)>,
}

impl TcpBox {
    /// The connection, made (and the box selected) if there is none or the one there was is
    /// closed or idle too long.
    fn connected(&mut self) -> Result<&mut TcpCardClient, Refused> {
        if let Some((c, used)) = &self.conn {
            if used.elapsed() >= TCP_IDLE || c.is_closed() {
                tracing::debug!(addr = %self.addr, "box connection closed or idle: reconnecting");
                self.conn = None;
            }
        }
        if self.conn.is_none() {
            let client = self.connect().map_err(|e| {
                tracing::warn!(addr = %self.addr, error = %e, "the box is unreachable");
                LOST
            })?;
            tracing::info!(addr = %self.addr, "connected to the box");
            self.conn = Some((client, Instant::now()));
        }
        match &mut self.conn {
            Some((c, used)) => {
                *used = Instant::now();
                Ok(c)
            }
            None => Err(LOST),
        }
    }

    fn connect(&self) -> anyhow::Result<TcpCardClient> {
        let addr = self
            .addr
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| anyhow::anyhow!("{}: no address", self.addr))?;
        let mut c = match &self.tls {
            None => TcpCardClient::connect_timeout(&addr, TCP_TIMEOUT)?,
            Some(config) => TcpCardClient::connect_tls(
                &addr,
                TCP_TIMEOUT,
                Arc::clone(config),
                card_sim::tls::dns_name(&Role::Box.dns_name())?,
            )?,
        };
        // Each connection is a fresh power-up of the card: nothing is selected.
        split(c.transmit(&select_apdu())?)
            .map_err(|r| anyhow::anyhow!("SELECT: {}", r.meaning()))?;
        Ok(c)
    }

    /// One APDU; `again`: the command changes nothing, so it may be sent once more on a
    /// new connection if the first one failed.
    fn transmit(&mut self, apdu: &[u8], again: bool) -> Result<Vec<u8>, Refused> {
        let tries = if again { 2 } else { 1 };
        for _ in 0..tries {
            let c = self.connected()?;
            match c.transmit(apdu) {
                Ok(r) => {
                    // The box's memory failed: card-sim powers it up again and ends this
                    // connection at its next command, unanswered. Dropped now, the next
                    // command goes on a new connection instead of failing first.
                    if r.ends_with(&[0x65, 0x81]) {
                        self.conn = None;
                    }
                    return Ok(r);
                }
                Err(e) => {
                    tracing::warn!(addr = %self.addr, error = %e, ins = apdu.get(1).copied().unwrap_or(0), "the box link failed during a command");
                    self.conn = None;
                }
            }
        }
        Err(LOST)
    }
}

impl Link {
    fn transmit(&mut self, apdu: &[u8], again: bool) -> Result<Vec<u8>, Refused> {
        match self {
            Link::Local(slot, dir) => {
                if slot.is_none() {
                    // Only the store that failed is re-opened, never a new one: a volume
                    // gone from under the box (its mount point left empty) must not turn
                    // into a blank box whose refusals would drop intents the real one
                    // may have committed. No store there: no answer (`LOST`), intents kept.
                    match local_card(dir, false) {
                        Ok(c) => {
                            tracing::info!(dir = %dir.display(), "the box's memory re-read after a failed write");
                            *slot = Some(c);
                        }
                        Err(e) => {
                            tracing::error!(dir = %dir.display(), error = %e, "the box's memory cannot be re-read");
                            return Err(LOST);
                        }
                    }
                }
                let card = slot.as_mut().ok_or(LOST)?;
                let answer = card.transmit(apdu);
                // A write whose outcome is unknown (`6581`): the store refuses commits until
                // re-opened, as a card re-reads its memory at power-up; the command's intent
                // is kept (its outcome unknown) and RESUME settles it on the re-read card.
                if card.store().has_failed() {
                    tracing::warn!(dir = %dir.display(), "the box's memory failed: re-reading it");
                    *slot = None;
                }
                Ok(answer)
            }
            Link::Tcp(t) => t.transmit(apdu, again),
        }
    }
}

/// A box answer that is not `9000`: its status word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused(pub u16);

impl Refused {
    /// The status word's meaning.
    pub fn meaning(self) -> String {
        match Status::from_sw(self.0) {
            Some(s) => format!("{:04X} {s}", self.0),
            None => format!("{:04X}", self.0),
        }
    }
}

fn select_apdu() -> Vec<u8> {
    let mut select = vec![0x00, 0xA4, 0x04, 0x00, 7];
    select.extend_from_slice(VBOX_AID);
    select
}

fn apdu(ins: u8, p1: u8, p2: u8, data: &[u8]) -> anyhow::Result<Vec<u8>> {
    // Extended case 4: records and proofs exceed 255 bytes.
    let n = u16::try_from(data.len())?;
    let mut a = vec![CLA_VBOX, ins, p1, p2, 0x00];
    a.extend_from_slice(&n.to_be_bytes());
    a.extend_from_slice(data);
    a.extend_from_slice(&[0x00, 0x00]);
    Ok(a)
}

fn split(resp: Vec<u8>) -> Result<Vec<u8>, Refused> {
    let n = resp.len();
    if n < 2 {
        return Err(Refused(0x6F00));
    }
    let sw = u16::from_be_bytes([resp[n - 2], resp[n - 1]]);
    if sw == 0x9000 {
        let mut data = resp;
        data.truncate(n - 2);
        Ok(data)
    } else {
        Err(Refused(sw))
    }
}

impl BoxHost {
    /// Opens the box at `at` (an in-process store is created the first time) and selects
    /// it; the box may still be blank ([`BoxHost::info`] is `None` then). `pki`: the data
    /// center's, for a TLS box (its `datacenter` certificate and the CA).
    pub fn connect(at: &BoxAt, pki: Option<&Pki>) -> anyhow::Result<Self> {
        let link = match at {
            BoxAt::InProcess(dir) => Link::Local(Some(local_card(dir, true)?), dir.clone()),
            BoxAt::Tcp(addr) => {
                let mut t = TcpBox {
                    addr: addr.clone(),
                    tls: None,
                    conn: None,
                };
                t.connected()
                    .map_err(|_| anyhow::anyhow!("the box at tcp:{addr} is unreachable (is `card-sim serve --tcp {addr}` running?)"))?;
                Link::Tcp(t)
            }
            BoxAt::Tls(addr) => {
                let pki = pki.ok_or_else(|| {
                    anyhow::anyhow!(
                        "the box at tls:{addr}: no PKI for the data center's certificate"
                    )
                })?;
                let config = client_config(pki, Some(Role::Datacenter))?;
                let mut t = TcpBox {
                    addr: addr.clone(),
                    tls: Some(Arc::new(config)),
                    conn: None,
                };
                t.connected().map_err(|_| {
                    anyhow::anyhow!(
                        "the box at tls:{addr} is unreachable or refused the TLS session (is \
                         `card-sim serve --tcp {addr} --tls-cert box.crt …` running, does its \
                         certificate name {}, and does it take --client-name {}?)",
                        Role::Box.dns_name(),
                        Role::Datacenter.dns_name()
                    )
                })?;
                Link::Tcp(t)
            }
        };
        Ok(Self {
            link,
            info: BoxInfo {
                box_id: DeviceId([0; 8]),
                shards: 0,
                depth: 0,
                txn_key: [0; PUBLIC_KEY_LEN],
            },
        })
    }

    /// Opens the box in `dir` (creating and personalizing it the first time with a fresh
    /// box ID, `shards` × `depth`, and the vendor's and the KMS's keys).
    pub fn open(
        dir: &Path,
        shards: u16,
        depth: u8,
        vendor_key: &[u8; PUBLIC_KEY_LEN],
        refill_key: &[u8; PUBLIC_KEY_LEN],
    ) -> anyhow::Result<Self> {
        let mut host = Self::connect(&BoxAt::InProcess(dir.to_owned()), None)?;
        match host.read_info()? {
            Some(info) => host.info = info,
            None => {
                host.personalize(shards, depth, vendor_key, refill_key)?;
            }
        }
        Ok(host)
    }

    /// PERSONALIZE of a blank box: a fresh box ID, `shards` × `depth`, the vendor's and the
    /// KMS's keys; the box generates its own keys inside. Answers what it then says of
    /// itself.
    pub fn personalize(
        &mut self,
        shards: u16,
        depth: u8,
        vendor_key: &[u8; PUBLIC_KEY_LEN],
        refill_key: &[u8; PUBLIC_KEY_LEN],
    ) -> anyhow::Result<BoxInfo> {
        let mut id = *b"VB\0\0\0\0\0\0";
        codec::random_bytes(&mut id[2..]);
        let mut d = id.to_vec();
        d.extend_from_slice(&shards.to_be_bytes());
        d.push(depth);
        d.extend_from_slice(vendor_key);
        d.extend_from_slice(refill_key);
        self.send(ins::PERSONALIZE, 0, &d)
            .map_err(|r| anyhow::anyhow!("PERSONALIZE: {}", r.meaning()))?;
        tracing::info!(box_id = %codec::device_hex(&DeviceId(id)), shards, depth, "personalized the box");
        self.info = self
            .read_info()?
            .ok_or_else(|| anyhow::anyhow!("the box is blank after PERSONALIZE"))?;
        Ok(self.info.clone())
    }

    /// GET DATA 00 01: what the box says of itself, `None` while it is blank.
    pub fn read_info(&mut self) -> anyhow::Result<Option<BoxInfo>> {
        let d = split(
            self.link
                .transmit(&[CLA_VBOX, ins::GET_DATA, 0x00, 0x01, 0x00], true)
                .map_err(|r| {
                    anyhow::anyhow!("GET DATA: the box did not answer ({})", r.meaning())
                })?,
        )
        .map_err(|r| anyhow::anyhow!("GET DATA: {}", r.meaning()))?;
        let info = match d.first() {
            Some(0) => None,
            Some(1) if d.len() == 1 + 8 + 2 + 1 + 4 + PUBLIC_KEY_LEN => {
                let mut id = [0u8; 8];
                id.copy_from_slice(&d[1..9]);
                let mut key = [0u8; PUBLIC_KEY_LEN];
                key.copy_from_slice(&d[16..]);
                Some(BoxInfo {
                    box_id: DeviceId(id),
                    shards: u16::from_be_bytes([d[9], d[10]]),
                    depth: d[11],
                    txn_key: key,
                })
            }
            _ => anyhow::bail!("GET DATA 00 01: unexpected answer {}", hex::encode(&d)),
        };
        if let Some(i) = &info {
            self.info = i.clone();
        }
        Ok(info)
    }

    /// What the box says of itself.
    pub fn info(&self) -> &BoxInfo {
        &self.info
    }

    /// Sends `ins` with `data` (P2 = 0); the answer's data, or its status word ([`LOST`]
    /// if the link failed before the answer came).
    pub fn send(&mut self, ins: u8, p1: u8, data: &[u8]) -> Result<Vec<u8>, Refused> {
        let a = apdu(ins, p1, 0, data).map_err(|_| Refused(0x6700))?;
        split(self.link.transmit(&a, false)?)
    }

    /// RESUME of the command `ins` with `data`.
    pub fn resume(&mut self, original: u8, data: &[u8]) -> Result<Vec<u8>, Refused> {
        self.send(ins::RESUME, original, data)
    }

    /// The box's root of `shard` (READ SHARD).
    pub fn shard_root(&mut self, shard: u16) -> Result<Hash, Refused> {
        let [p1, p2] = shard.to_be_bytes();
        let d = split(
            self.link
                .transmit(&[CLA_VBOX, ins::READ_SHARD, p1, p2, 0x00], true)?,
        )?;
        d.get(..32)
            .and_then(|r| r.try_into().ok())
            .ok_or(Refused(0x6F00))
    }
}

/// A request to the box's thread: a call on the host, its answer sent back by the call.
type Request = Box<dyn FnOnce(&mut BoxHost) + Send>;

/// The box on a thread of its own (the card runtime's applets are not `Send`, and a TCP
/// box's I/O blocks): callers on any thread send it commands, one at a time, as a reader
/// sends APDUs to a card.
#[derive(Clone)]
pub struct BoxHandle {
    tx: mpsc::Sender<Request>,
}

/// The box's thread has stopped (it panicked or the process is ending).
const GONE: Refused = LOST;

impl BoxHandle {
    /// Opens the box ([`BoxHost::open`]) in `dir`, in this process, on its own thread.
    pub fn spawn(
        dir: &Path,
        shards: u16,
        depth: u8,
        vendor_key: [u8; PUBLIC_KEY_LEN],
        refill_key: [u8; PUBLIC_KEY_LEN],
    ) -> anyhow::Result<(Self, BoxInfo)> {
        let (h, info) = Self::connect(&BoxAt::InProcess(dir.to_owned()), None)?;
        let info = match info {
            Some(i) => i,
            None => h.personalize(shards, depth, vendor_key, refill_key)?,
        };
        Ok((h, info))
    }

    /// Opens the link to the box at `at` on its own thread ([`BoxHost::connect`]; `pki`
    /// for a TLS box), and reads what the box says of itself: `None` while it is blank
    /// ([`BoxHandle::personalize`] it then).
    pub fn connect(at: &BoxAt, pki: Option<&Pki>) -> anyhow::Result<(Self, Option<BoxInfo>)> {
        let (tx, rx) = mpsc::channel::<Request>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let at = at.clone();
        let pki = pki.cloned();
        std::thread::Builder::new()
            .name("vbox".into())
            .spawn(move || {
                let mut host = match BoxHost::connect(&at, pki.as_ref()).and_then(|mut h| {
                    let info = h.read_info()?;
                    Ok((h, info))
                }) {
                    Ok((h, info)) => {
                        let _ = ready_tx.send(Ok(info));
                        h
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                for call in rx {
                    call(&mut host);
                }
            })?;
        let info = ready_rx
            .recv()
            .map_err(|_| anyhow::anyhow!("the box's thread stopped while opening"))??;
        Ok((Self { tx }, info))
    }

    /// Runs `f` on the box's thread and waits for its answer; `None` if the thread is gone.
    fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut BoxHost) -> T + Send + 'static,
    ) -> Option<T> {
        let (reply, answer) = mpsc::channel();
        self.tx
            .send(Box::new(move |h: &mut BoxHost| {
                let _ = reply.send(f(h));
            }))
            .ok()?;
        answer.recv().ok()
    }

    /// PERSONALIZE of a blank box ([`BoxHost::personalize`]).
    pub fn personalize(
        &self,
        shards: u16,
        depth: u8,
        vendor_key: [u8; PUBLIC_KEY_LEN],
        refill_key: [u8; PUBLIC_KEY_LEN],
    ) -> anyhow::Result<BoxInfo> {
        self.call(move |h| h.personalize(shards, depth, &vendor_key, &refill_key))
            .ok_or_else(|| anyhow::anyhow!("the box's thread stopped"))?
    }

    /// Sends `ins` with `data` (P1 = `p1`, P2 = 0); blocks until the box answers.
    pub fn send(&self, ins: u8, p1: u8, data: &[u8]) -> Result<Vec<u8>, Refused> {
        let data = data.to_vec();
        self.call(move |h| h.send(ins, p1, &data)).ok_or(GONE)?
    }

    /// RESUME of the command `original` with `data`.
    pub fn resume(&self, original: u8, data: &[u8]) -> Result<Vec<u8>, Refused> {
        self.send(ins::RESUME, original, data)
    }

    /// The box's root of `shard` (READ SHARD).
    pub fn shard_root(&self, shard: u16) -> Result<Hash, Refused> {
        self.call(move |h| h.shard_root(shard)).ok_or(GONE)?
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn box_addresses_parse_by_scheme() {
        let dir = Path::new("/data/box");
        assert_eq!(
            BoxAt::parse("in-process", dir).unwrap(),
            BoxAt::InProcess(dir.to_owned())
        );
        assert_eq!(
            BoxAt::parse("tcp:127.0.0.1:35990", dir).unwrap(),
            BoxAt::Tcp("127.0.0.1:35990".into())
        );
        let tls = BoxAt::parse("tls:box.example:35990", dir).unwrap();
        assert_eq!(tls, BoxAt::Tls("box.example:35990".into()));
        assert_eq!(tls.to_string(), "tls:box.example:35990");
        for bad in [
            "tls:box.example",
            "tls::35990",
            "udp:h:1",
            "tcp:h:99999",
            "box",
        ] {
            let e = BoxAt::parse(bad, dir).unwrap_err().to_string();
            assert!(e.contains("tls:HOST:PORT"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_tls_box_needs_the_data_centers_pki() {
        let e = BoxHost::connect(&BoxAt::Tls("127.0.0.1:1".into()), None)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("no PKI"), "{e}");
    }
}
