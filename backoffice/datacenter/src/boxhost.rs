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
//! committed by the box: it answers [`LOST`], the data center keeps the command's
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
use card_sim::sim::{make_storage_key_at, read_storage_key_at};
use card_sim::transport::TcpCardClient;
use openpsd_core::card::Card;
use openpsd_core::crypto::PUBLIC_KEY_LEN;
use openpsd_core::records::host as rec;
use openpsd_core::status::Status;
use openpsd_core::store::{SealedStore, StorageKey, Store as _, StoreError, Write};
use openpsd_core::types::DeviceId;
use openpsd_core::vbox::merkle::Hash;
use openpsd_core::vbox::{ins, vbox_card, CLA_VBOX, VBOX_AID};
use openpsd_service_kit::codec;
use openpsd_service_kit::pki::Pki;
use openpsd_service_kit::tls::{client_config, Role};
use rustls::ClientConfig;
use zeroize::Zeroize as _;

/// The in-process box's memory: a card-sim file store in `dir`, its records sealed under
/// the storage key in the file `key` (both created the first time).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalBox {
    /// The store's directory (`DATA/box`).
    pub dir: PathBuf,
    /// The storage key's file, kept out of the data directory by default
    /// ([`LocalBox::in_data`]).
    pub key: PathBuf,
}

impl LocalBox {
    /// The default for the data directory `data`: the store in `DATA/box`, its key in
    /// `DATA/box.storage-key`. The default keeps the key with the data, so keeping `DATA`
    /// (a volume, a backup) keeps the box: a key made outside it by default would be lost
    /// with a container's file system, and every meter's value with it. What the sealing
    /// protects then is a copy of the store alone; kept elsewhere (`--box-storage-key`), a
    /// copy of the whole data directory does not open the box either.
    pub fn in_data(data: &Path) -> Self {
        Self {
            dir: data.join(crate::BOX_DIR),
            key: data.join("box.storage-key"),
        }
    }
}

/// Where the box is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BoxAt {
    /// In this process, its memory a sealed card-sim file store (created the first time).
    InProcess(LocalBox),
    /// A `card-sim serve --tcp` process at this address (`HOST:PORT`, loopback: the plain
    /// framing has no TLS).
    Tcp(String),
    /// A `card-sim serve --tcp … --tls-cert …` process at this address (`HOST:PORT`, any
    /// host): mutual TLS, the box's certificate naming `box.openpsd`.
    Tls(String),
}

impl BoxAt {
    /// `tcp:HOST:PORT`, `tls:HOST:PORT`, or `in-process` with its memory at `local`.
    pub fn parse(text: &str, local: &LocalBox) -> anyhow::Result<Self> {
        if text == "in-process" {
            return Ok(Self::InProcess(local.clone()));
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
            Self::InProcess(l) => write!(f, "in-process ({})", l.dir.display()),
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
/// box committed it is not known. The data center keeps its intent for RESUME. `0000` is no
/// status word a card can send (SW1 is `6X` or `9X`), so a lost link is never taken for
/// the box's own `6F00` (an internal error, such as a stored record that does not decode),
/// which trying again would not mend.
pub const LOST: Refused = Refused(0x0000);

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
    /// The card in this process and where its memory is; `None` after its memory failed
    /// and could not be re-read yet.
    Local(Option<Box<LocalCard>>, LocalBox),
    Tcp(TcpBox),
}

/// The in-process box: the applet on a sealed file store.
type LocalCard = Card<SealedStore<FileStore>, OsPlatform>;

/// What the sealed marker record holds.
const SEALED_LABEL: &[u8] = b"openpsd datacenter box store sealed v1";

/// The in-process box at `at`, loaded from its store and selected; the store is created
/// if there is none only when `create`.
fn local_card(at: &LocalBox, create: bool) -> anyhow::Result<Box<LocalCard>> {
    let store = sealed_store(at, create)?;
    let mut card = vbox_card(store, OsPlatform::new(Clock::System))
        .map_err(|e| anyhow::anyhow!("loading the box: {e:?}"))?;
    split(card.transmit(&select_apdu())).map_err(|r| anyhow::anyhow!("SELECT: {}", r.meaning()))?;
    Ok(Box::new(card))
}

/// The box's store at `at`, sealed (AES-SIV, `core::store::SealedStore`, as card-sim seals
/// a card's) under the key in `at.key`:
/// - a sealed store (it holds the marker `records::host::SEALED`) opens under its key; a
///   missing key or another key is an error, never a new key;
/// - a store of the layout before (records in clear, before stop 40) is sealed in one
///   commit with the marker, the key made first (durably) or taken from a sealing a crash
///   cut short, and its log rewritten so the records in clear leave the file;
/// - no store: a new one, sealed from its first record, only when `create`.
fn sealed_store(at: &LocalBox, create: bool) -> anyhow::Result<SealedStore<FileStore>> {
    let dir = &at.dir;
    let failed = |what: &str, e: StoreError| {
        anyhow::anyhow!("the box's store {}: {what}: {e:?}", dir.display())
    };
    if !dir.join("state.log").exists() {
        if !create {
            anyhow::bail!("no box store at {}", dir.display());
        }
        std::fs::create_dir_all(dir)?;
        let store = FileStore::create(dir).map_err(|e| failed("creating", e))?;
        let mut sealed = SealedStore::new(store, key_for_sealing(&at.key)?);
        sealed
            .commit(&[sealed_marker()])
            .map_err(|e| failed("marking it sealed", e))?;
        tracing::info!(dir = %dir.display(), key = %at.key.display(), "a new box store, sealed under a new storage key");
        return Ok(sealed);
    }
    let store = FileStore::open(dir).map_err(|e| failed("opening", e))?;
    if store
        .read(rec::SEALED)
        .map_err(|e| failed("reading", e))?
        .is_some()
    {
        let key = read_storage_key_at(&at.key).map_err(|e| {
            anyhow::anyhow!(
                "the box's store {} is sealed, and its storage key {} cannot be read ({e:?}): \
                 without it the box's keys and roots cannot be read; restore that file",
                dir.display(),
                at.key.display()
            )
        })?;
        let mut sealed = SealedStore::new(store, key);
        let opens = sealed
            .read(rec::SEALED)
            .ok()
            .flatten()
            .is_some_and(|v| v == SEALED_LABEL);
        anyhow::ensure!(
            opens,
            "the box's store {} does not open under the storage key {}: that key is not this \
             box's (restore the right file)",
            dir.display(),
            at.key.display()
        );
        // A sealing a crash cut after its commit left the records in clear in the log's
        // earlier frames: dropped at every start (a box store is small), not left to a
        // compaction that a quiet box may never reach.
        // A rewrite that fails (a full disk) leaves the store as it was: a warning, not a
        // refusal to start.
        if create {
            if let Err(e) = sealed.forget_history() {
                tracing::warn!(dir = %dir.display(), error = ?e, "the box's sealed store: its log could not be rewritten (earlier frames stay until its next compaction)");
            }
        }
        return Ok(sealed);
    }
    // Not marked sealed. Sealed now only at start (a re-open after a failed write opens the
    // store that failed, as it was), and only a store the box reads in clear: empty, or a
    // configuration that decodes in clear. A sealed store stripped of its marker (and of
    // its configuration too, which would read as a blank box) is refused, changing nothing.
    anyhow::ensure!(
        create,
        "the box's store {} is no longer marked sealed: not re-opened",
        dir.display()
    );
    let mut store = store;
    let ids = store.ids().map_err(|e| failed("listing", e))?;
    let config = store
        .read(openpsd_core::records::vbox::CONFIG)
        .map_err(|e| failed("reading", e))?;
    let in_clear = ids.is_empty()
        || (config.is_some() && vbox_card(&mut store, OsPlatform::new(Clock::System)).is_ok());
    anyhow::ensure!(
        in_clear,
        "the box's store {} is not marked sealed, and does not read as a store in clear \
         either: refusing to open it; restore the store",
        dir.display()
    );
    let mut sealed = SealedStore::new(store, key_for_sealing(&at.key)?);
    // A key made by a sealing a crash cut short opens none of the records in clear; one that
    // opens any means the records are sealed already under it.
    for &id in &ids {
        anyhow::ensure!(
            sealed.read(id).is_err(),
            "the box's store {} holds records sealed under {} but is not marked sealed \
             (edited?): refusing to open it; restore the store",
            dir.display(),
            at.key.display()
        );
    }
    // All of them sealed in one commit.
    let mut writes = Vec::new();
    for id in ids {
        let value = sealed.inner().read(id).map_err(|e| failed("reading", e))?;
        writes.push(Write { id, value });
    }
    let records = writes.len();
    writes.push(sealed_marker());
    let done = sealed.commit(&writes);
    for w in &mut writes {
        if let Some(v) = w.value.as_mut() {
            v.zeroize();
        }
    }
    done.map_err(|e| failed("sealing", e))?;
    // The records in clear are still earlier frames of the log: rewrite it without them
    // (the sealing stands if this fails; the next compaction drops them then).
    if let Err(e) = sealed.forget_history() {
        tracing::warn!(dir = %dir.display(), error = ?e, "the box's store is sealed, but its log still holds the records in clear until its next compaction");
    }
    tracing::info!(dir = %dir.display(), key = %at.key.display(), records, "the box's store, of the layout before, sealed under a new storage key");
    Ok(sealed)
}

/// The storage key to seal a store with: the one in `path` if a sealing a crash cut short
/// (or a new store's) made it already, else a new one written there durably.
fn key_for_sealing(path: &Path) -> anyhow::Result<StorageKey> {
    let key = if path.exists() {
        read_storage_key_at(path)
    } else {
        make_storage_key_at(path)
    };
    key.map_err(|e| anyhow::anyhow!("the box's storage key {}: {e:?}", path.display()))
}

fn sealed_marker() -> Write {
    Write {
        id: rec::SEALED,
        value: Some(SEALED_LABEL.to_vec()),
    }
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
            Link::Local(slot, at) => {
                let dir = &at.dir;
                if slot.is_none() {
                    // Only the store that failed is re-opened, never a new one: a volume
                    // gone from under the box (its mount point left empty) must not turn
                    // into a blank box whose refusals would drop intents the real one
                    // may have committed. No store there: no answer (`LOST`), intents kept.
                    match local_card(at, false) {
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
                if card.store().inner().has_failed() {
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
        if self == LOST {
            return "no answer (the link to the box was lost)".to_owned();
        }
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
            BoxAt::InProcess(at) => Link::Local(Some(local_card(at, true)?), at.clone()),
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

    /// The box's count of approved log-ins (GET DATA 00 02).
    pub fn login_count(&mut self) -> Result<u64, Refused> {
        let d = split(
            self.link
                .transmit(&[CLA_VBOX, ins::GET_DATA, 0x00, 0x02, 0x00], true)?,
        )?;
        let n: [u8; 8] = d.try_into().map_err(|_| Refused(0x6F00))?;
        Ok(u64::from_be_bytes(n))
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

    /// The box's count of approved log-ins (GET DATA 00 02).
    pub fn login_count(&self) -> Result<u64, Refused> {
        self.call(BoxHost::login_count).ok_or(GONE)?
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// P-256's generator, SEC1 uncompressed: a valid public key for PERSONALIZE.
    const G: &str = "046b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c2964fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5";

    fn g() -> [u8; PUBLIC_KEY_LEN] {
        hex::decode(G).unwrap().try_into().unwrap()
    }

    fn log_of(local: &LocalBox) -> Vec<u8> {
        std::fs::read(local.dir.join("state.log")).unwrap()
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    /// The box's configuration record (its secret keys) as the store holds it.
    fn config_record(local: &LocalBox) -> Vec<u8> {
        FileStore::open(&local.dir)
            .unwrap()
            .read(openpsd_core::records::vbox::CONFIG)
            .unwrap()
            .unwrap()
    }

    #[test]
    fn the_in_process_box_store_is_sealed_under_its_storage_key() {
        let tmp = tempfile::tempdir().unwrap();
        // The key kept out of the data directory (`--box-storage-key`).
        std::fs::create_dir_all(tmp.path().join("secrets")).unwrap();
        let local = LocalBox {
            key: tmp.path().join("secrets").join("box.key"),
            ..LocalBox::in_data(&tmp.path().join("dc"))
        };
        let info = {
            let mut h = BoxHost::connect(&BoxAt::InProcess(local.clone()), None).unwrap();
            h.personalize(2, 4, &g(), &g()).unwrap()
        };
        assert!(local.key.exists());
        assert!(!tmp.path().join("dc").join("box.storage-key").exists());
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&local.key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // What the file holds does not open without the key: the configuration record
        // is not the box's plain layout (its ID would be at its start, in clear).
        let stored = config_record(&local);
        assert!(!contains(&stored, &info.box_id.0), "the box ID in clear");
        assert!(
            !contains(&log_of(&local), &info.box_id.0),
            "the box ID in the log"
        );
        // Opened again under its key: the same box.
        let mut h = BoxHost::connect(&BoxAt::InProcess(local.clone()), None).unwrap();
        assert_eq!(h.read_info().unwrap(), Some(info.clone()));
        drop(h);

        // Without its key, or under another: a clear error, nothing made or changed.
        let key = std::fs::read(&local.key).unwrap();
        let log = log_of(&local);
        std::fs::remove_file(&local.key).unwrap();
        let e = BoxHost::connect(&BoxAt::InProcess(local.clone()), None)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("is sealed") && e.contains("box.key"), "{e}");
        assert!(!local.key.exists(), "no new key made for a sealed store");
        make_storage_key_at(&local.key).unwrap();
        let e = BoxHost::connect(&BoxAt::InProcess(local.clone()), None)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("not this box's"), "{e}");
        assert_eq!(log_of(&local), log, "the store untouched");
        std::fs::write(&local.key, key).unwrap();
        let mut h = BoxHost::connect(&BoxAt::InProcess(local), None).unwrap();
        assert_eq!(h.read_info().unwrap(), Some(info));
    }

    /// A box store of the layout before stop 40 (records in clear, as the data center kept
    /// it until then): personalized in clear here, then opened by this data center.
    fn plain_box(local: &LocalBox) -> (Vec<u8>, [u8; 8]) {
        std::fs::create_dir_all(&local.dir).unwrap();
        let store = FileStore::create(&local.dir).unwrap();
        let mut card = vbox_card(store, OsPlatform::new(Clock::System)).unwrap();
        split(card.transmit(&select_apdu())).unwrap();
        let id = *b"VBplain1";
        let mut d = id.to_vec();
        d.extend_from_slice(&2u16.to_be_bytes());
        d.push(4);
        d.extend_from_slice(&g());
        d.extend_from_slice(&g());
        split(card.transmit(&apdu(ins::PERSONALIZE, 0, 0, &d).unwrap())).unwrap();
        drop(card);
        let plain = config_record(local);
        assert!(
            contains(&plain, &id),
            "the layout before holds the box in clear"
        );
        (plain, id)
    }

    #[test]
    fn a_box_store_of_the_layout_before_is_sealed_at_its_next_start_and_keeps_its_box() {
        let tmp = tempfile::tempdir().unwrap();
        let local = LocalBox::in_data(&tmp.path().join("dc"));
        let (plain, id) = plain_box(&local);
        assert!(!local.key.exists());
        let mut h = BoxHost::connect(&BoxAt::InProcess(local.clone()), None).unwrap();
        let info = h.read_info().unwrap().unwrap();
        assert_eq!(info.box_id.0, id, "the same box, keys and all");
        drop(h);
        assert!(local.key.exists());
        let log = log_of(&local);
        assert!(!contains(&log, &plain), "the record in clear left the log");
        assert!(!contains(&log, &id), "no trace of the box ID in clear");
        let mut h = BoxHost::connect(&BoxAt::InProcess(local), None).unwrap();
        assert_eq!(h.read_info().unwrap(), Some(info));
    }

    /// The frozen `DATA/box` of a data center before stop 40 (`tests/state/vbox/box-plain/`,
    /// records in clear): its box, its transaction key and the verifier its `K_auth` made.
    const FROZEN_TXN_KEY: &str = "0442f9e70c3ab4803d7d2b3a892b42098c2305e01baea85d446c27c86bbbf6d7b58bc22c21bfab69b6ef40722700323c4d3b60b63538564c6301c7b61eb504847a";
    const FROZEN_VERIFIER: &str = "51142e81f3094202e8ca4c32481e3439";

    #[test]
    fn the_frozen_box_store_of_before_stop_40_is_sealed_and_keeps_its_keys() {
        let frozen = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/state/vbox/box-plain/state.log");
        let tmp = tempfile::tempdir().unwrap();
        let local = LocalBox::in_data(&tmp.path().join("dc"));
        std::fs::create_dir_all(&local.dir).unwrap();
        std::fs::copy(&frozen, local.dir.join("state.log")).unwrap();
        let mut h = BoxHost::connect(&BoxAt::InProcess(local.clone()), None).unwrap();
        let info = h.read_info().unwrap().unwrap();
        assert_eq!(
            (
                &info.box_id.0,
                info.shards,
                info.depth,
                hex::encode(info.txn_key)
            ),
            (b"VBfrozn1", 2, 4, FROZEN_TXN_KEY.to_owned())
        );
        // K_auth came through the sealing: the verifier made before it still checks, and
        // only for its own password hash.
        let (mailer, hash) = ([0xA1; 16], [0x5A; 32]);
        let verifier: [u8; 16] = hex::decode(FROZEN_VERIFIER).unwrap().try_into().unwrap();
        let auth = openpsd_core::vbox::auth::authenticate_data(&mailer, &hash, &verifier);
        assert_eq!(h.send(ins::AUTHENTICATE_MAILER, 0, &auth), Ok(vec![]));
        let wrong = openpsd_core::vbox::auth::authenticate_data(&mailer, &[0x5B; 32], &verifier);
        assert_eq!(
            h.send(ins::AUTHENTICATE_MAILER, 0, &wrong),
            Err(Refused(Status::MailerNotAuthenticated.sw()))
        );
        // No log-in was counted before stop 40.
        assert_eq!(h.login_count(), Ok(0));
        drop(h);
        assert!(local.key.exists());
        assert!(
            !contains(&log_of(&local), b"VBfrozn1"),
            "the box ID in clear left the log"
        );
        let mut h = BoxHost::connect(&BoxAt::InProcess(local), None).unwrap();
        assert_eq!(h.read_info().unwrap(), Some(info));
    }

    #[test]
    fn a_shard_the_box_cannot_read_is_its_error_not_a_lost_link() {
        let tmp = tempfile::tempdir().unwrap();
        let local = LocalBox::in_data(&tmp.path().join("dc"));
        BoxHost::connect(&BoxAt::InProcess(local.clone()), None)
            .unwrap()
            .personalize(2, 4, &g(), &g())
            .unwrap();
        // Shard 1's record replaced by bytes that do not decode.
        let mut store = sealed_store(&local, false).unwrap();
        store
            .commit(&[Write {
                id: openpsd_core::records::vbox::shard(1),
                value: Some(vec![0xEE; 3]),
            }])
            .unwrap();
        drop(store);
        let mut h = BoxHost::connect(&BoxAt::InProcess(local), None).unwrap();
        assert!(h.shard_root(0).is_ok());
        let e = h.shard_root(1).unwrap_err();
        assert_eq!(e, Refused(Status::Internal.sw()));
        assert_ne!(e, LOST, "the box answered: a retry would not mend it");
        assert!(!e.meaning().contains("link"), "{}", e.meaning());
        assert!(LOST.meaning().contains("link to the box was lost"));
    }

    #[test]
    fn a_sealing_cut_short_after_its_key_was_made_is_done_again_with_that_key() {
        let tmp = tempfile::tempdir().unwrap();
        let local = LocalBox::in_data(&tmp.path().join("dc"));
        let (_, id) = plain_box(&local);
        // The crash: the key written, the store not yet sealed.
        make_storage_key_at(&local.key).unwrap();
        let key = std::fs::read(&local.key).unwrap();
        let mut h = BoxHost::connect(&BoxAt::InProcess(local.clone()), None).unwrap();
        assert_eq!(h.read_info().unwrap().unwrap().box_id.0, id);
        drop(h);
        assert_eq!(
            std::fs::read(&local.key).unwrap(),
            key,
            "that key, not another"
        );
        assert!(!contains(&log_of(&local), &id));
    }

    /// The box's store seen as it is, without its key.
    fn raw_store(local: &LocalBox) -> FileStore {
        FileStore::open(&local.dir).unwrap()
    }

    #[test]
    fn a_sealed_store_stripped_of_its_marker_and_configuration_is_refused_not_blank() {
        let tmp = tempfile::tempdir().unwrap();
        let local = LocalBox::in_data(&tmp.path().join("dc"));
        let info = BoxHost::connect(&BoxAt::InProcess(local.clone()), None)
            .unwrap()
            .personalize(2, 4, &g(), &g())
            .unwrap();
        let saved = raw_store(&local)
            .read(openpsd_core::records::vbox::CONFIG)
            .unwrap();
        let mut store = raw_store(&local);
        store
            .commit(&[
                Write {
                    id: rec::SEALED,
                    value: None,
                },
                Write {
                    id: openpsd_core::records::vbox::CONFIG,
                    value: None,
                },
            ])
            .unwrap();
        // A shard record is still there (a box with meters): not an empty store.
        store
            .commit(&[Write {
                id: openpsd_core::records::vbox::shard(0),
                value: Some(vec![0xEE; 40]),
            }])
            .unwrap();
        drop(store);
        let log = log_of(&local);
        let e = BoxHost::connect(&BoxAt::InProcess(local.clone()), None)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("not marked sealed"), "{e}");
        assert_eq!(log_of(&local), log, "nothing written");
        // Put back as it was: the same box.
        raw_store(&local)
            .commit(&[
                Write {
                    id: openpsd_core::records::vbox::CONFIG,
                    value: saved,
                },
                Write {
                    id: openpsd_core::records::vbox::shard(0),
                    value: None,
                },
            ])
            .unwrap();
        let mut sealed =
            SealedStore::new(raw_store(&local), read_storage_key_at(&local.key).unwrap());
        sealed.commit(&[sealed_marker()]).unwrap();
        drop(sealed);
        let mut h = BoxHost::connect(&BoxAt::InProcess(local), None).unwrap();
        assert_eq!(h.read_info().unwrap(), Some(info));
    }

    #[test]
    fn a_sealing_cut_after_its_commit_drops_the_records_in_clear_at_the_next_start() {
        let tmp = tempfile::tempdir().unwrap();
        let local = LocalBox::in_data(&tmp.path().join("dc"));
        let (plain, id) = plain_box(&local);
        // The crash: sealed in one commit, the log not yet rewritten.
        let store = raw_store(&local);
        let ids = store.ids().unwrap();
        let mut writes: Vec<Write> = ids
            .iter()
            .map(|&i| Write {
                id: i,
                value: store.read(i).unwrap(),
            })
            .collect();
        writes.push(sealed_marker());
        let mut sealed = SealedStore::new(store, make_storage_key_at(&local.key).unwrap());
        sealed.commit(&writes).unwrap();
        drop(sealed);
        assert!(contains(&log_of(&local), &plain), "still in the log");
        let mut h = BoxHost::connect(&BoxAt::InProcess(local.clone()), None).unwrap();
        assert_eq!(h.read_info().unwrap().unwrap().box_id.0, id);
        drop(h);
        assert!(
            !contains(&log_of(&local), &id),
            "the records in clear dropped"
        );
    }

    #[test]
    fn a_store_re_read_after_a_failed_write_is_never_sealed_nor_keyed_then() {
        let tmp = tempfile::tempdir().unwrap();
        let local = LocalBox::in_data(&tmp.path().join("dc"));
        let _ = plain_box(&local);
        let log = log_of(&local);
        let e = local_card(&local, false).err().unwrap().to_string();
        assert!(e.contains("no longer marked sealed"), "{e}");
        assert!(!local.key.exists(), "no key made");
        assert_eq!(log_of(&local), log, "nothing written");
    }

    #[test]
    fn a_sealed_store_whose_marker_was_taken_out_is_refused_not_sealed_again() {
        let tmp = tempfile::tempdir().unwrap();
        let local = LocalBox::in_data(&tmp.path().join("dc"));
        let info = BoxHost::connect(&BoxAt::InProcess(local.clone()), None)
            .unwrap()
            .personalize(2, 4, &g(), &g())
            .unwrap();
        let mut store = FileStore::open(&local.dir).unwrap();
        store
            .commit(&[Write {
                id: rec::SEALED,
                value: None,
            }])
            .unwrap();
        drop(store);
        let log = log_of(&local);
        let e = BoxHost::connect(&BoxAt::InProcess(local.clone()), None)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("not marked sealed"), "{e}");
        assert_eq!(log_of(&local), log, "nothing written");
        // The same with its key gone too: refused, and no key made.
        let key = std::fs::read(&local.key).unwrap();
        std::fs::remove_file(&local.key).unwrap();
        let e = BoxHost::connect(&BoxAt::InProcess(local.clone()), None)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("not marked sealed"), "{e}");
        assert!(!local.key.exists(), "no new key");
        assert_eq!(log_of(&local), log, "nothing written");
        std::fs::write(&local.key, key).unwrap();
        // The marker put back: the same box.
        let mut sealed = SealedStore::new(
            FileStore::open(&local.dir).unwrap(),
            read_storage_key_at(&local.key).unwrap(),
        );
        sealed.commit(&[sealed_marker()]).unwrap();
        drop(sealed);
        let mut h = BoxHost::connect(&BoxAt::InProcess(local), None).unwrap();
        assert_eq!(h.read_info().unwrap(), Some(info));
    }

    #[test]
    fn box_addresses_parse_by_scheme() {
        let local = LocalBox::in_data(Path::new("/srv/dc"));
        assert_eq!(
            local,
            LocalBox {
                dir: "/srv/dc/box".into(),
                key: "/srv/dc/box.storage-key".into()
            },
            "by default the key is kept with the data"
        );
        let dir = &local;
        assert_eq!(
            BoxAt::parse("in-process", dir).unwrap(),
            BoxAt::InProcess(local.clone())
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
