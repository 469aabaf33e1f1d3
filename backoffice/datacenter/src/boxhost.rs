//! The secure box (seed 001's meter box 44) as the data center hosts it: core's `vbox`
//! applet on a card whose memory is card-sim's file store (`box/` in the data directory:
//! an fsynced append log, all-or-nothing per commit), spoken to in APDUs exactly as a
//! separate card-sim process or a hardware token would be. The box holds every key; this
//! module only builds commands and reads answers.

use std::path::Path;
use std::sync::mpsc;

use card_sim::file_store::FileStore;
use card_sim::os_platform::{Clock, OsPlatform};
use openpsd_core::card::Card;
use openpsd_core::crypto::PUBLIC_KEY_LEN;
use openpsd_core::status::Status;
use openpsd_core::types::DeviceId;
use openpsd_core::vbox::merkle::Hash;
use openpsd_core::vbox::{ins, vbox_card, CLA_VBOX, VBOX_AID};
use openpsd_service_kit::codec;

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

/// The box card.
pub struct BoxHost {
    card: Card<FileStore, OsPlatform>,
    info: BoxInfo,
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
    /// Opens the box in `dir` (creating and personalizing it the first time with a fresh
    /// box ID, `shards` × `depth`, and the vendor's and the KMS's keys).
    pub fn open(
        dir: &Path,
        shards: u16,
        depth: u8,
        vendor_key: &[u8; PUBLIC_KEY_LEN],
        refill_key: &[u8; PUBLIC_KEY_LEN],
    ) -> anyhow::Result<Self> {
        let store = if dir.join("state.log").exists() {
            FileStore::open(dir)
        } else {
            std::fs::create_dir_all(dir)?;
            FileStore::create(dir)
        }
        .map_err(|e| anyhow::anyhow!("the box's store {}: {e:?}", dir.display()))?;
        let mut card = vbox_card(store, OsPlatform::new(Clock::System))
            .map_err(|e| anyhow::anyhow!("loading the box: {e:?}"))?;
        let mut select = vec![0x00, 0xA4, 0x04, 0x00, 7];
        select.extend_from_slice(VBOX_AID);
        split(card.transmit(&select)).map_err(|r| anyhow::anyhow!("SELECT: {}", r.meaning()))?;
        let mut host = Self {
            card,
            info: BoxInfo {
                box_id: DeviceId([0; 8]),
                shards: 0,
                depth: 0,
                txn_key: [0; PUBLIC_KEY_LEN],
            },
        };
        if host.read_info()?.is_none() {
            let mut id = *b"VB\0\0\0\0\0\0";
            codec::random_bytes(&mut id[2..]);
            let mut d = id.to_vec();
            d.extend_from_slice(&shards.to_be_bytes());
            d.push(depth);
            d.extend_from_slice(vendor_key);
            d.extend_from_slice(refill_key);
            host.send(ins::PERSONALIZE, 0, &d)
                .map_err(|r| anyhow::anyhow!("PERSONALIZE: {}", r.meaning()))?;
            tracing::info!(box_id = %codec::device_hex(&DeviceId(id)), shards, depth, "personalized the box");
        }
        host.info = host
            .read_info()?
            .ok_or_else(|| anyhow::anyhow!("the box is blank after PERSONALIZE"))?;
        Ok(host)
    }

    fn read_info(&mut self) -> anyhow::Result<Option<BoxInfo>> {
        let d = split(
            self.card
                .transmit(&[CLA_VBOX, ins::GET_DATA, 0x00, 0x01, 0x00]),
        )
        .map_err(|r| anyhow::anyhow!("GET DATA: {}", r.meaning()))?;
        match d.first() {
            Some(0) => Ok(None),
            Some(1) if d.len() == 1 + 8 + 2 + 1 + 4 + PUBLIC_KEY_LEN => {
                let mut id = [0u8; 8];
                id.copy_from_slice(&d[1..9]);
                let mut key = [0u8; PUBLIC_KEY_LEN];
                key.copy_from_slice(&d[16..]);
                Ok(Some(BoxInfo {
                    box_id: DeviceId(id),
                    shards: u16::from_be_bytes([d[9], d[10]]),
                    depth: d[11],
                    txn_key: key,
                }))
            }
            _ => anyhow::bail!("GET DATA 00 01: unexpected answer {}", hex::encode(&d)),
        }
    }

    /// What the box says of itself.
    pub fn info(&self) -> &BoxInfo {
        &self.info
    }

    /// Sends `ins` with `data` (P2 = 0); the answer's data, or its status word.
    pub fn send(&mut self, ins: u8, p1: u8, data: &[u8]) -> Result<Vec<u8>, Refused> {
        let a = apdu(ins, p1, 0, data).map_err(|_| Refused(0x6700))?;
        split(self.card.transmit(&a))
    }

    /// RESUME of the command `ins` with `data`.
    pub fn resume(&mut self, original: u8, data: &[u8]) -> Result<Vec<u8>, Refused> {
        self.send(ins::RESUME, original, data)
    }

    /// The box's root of `shard` (READ SHARD).
    pub fn shard_root(&mut self, shard: u16) -> Result<Hash, Refused> {
        let [p1, p2] = shard.to_be_bytes();
        let d = split(
            self.card
                .transmit(&[CLA_VBOX, ins::READ_SHARD, p1, p2, 0x00]),
        )?;
        d.get(..32)
            .and_then(|r| r.try_into().ok())
            .ok_or(Refused(0x6F00))
    }
}

/// A request to the box's thread.
enum Request {
    Send(u8, u8, Vec<u8>, mpsc::Sender<Result<Vec<u8>, Refused>>),
    ShardRoot(u16, mpsc::Sender<Result<Hash, Refused>>),
}

/// The box on a thread of its own (the card runtime's applets are not `Send`): callers on
/// any thread send it commands, one at a time, as a reader sends APDUs to a card.
#[derive(Clone)]
pub struct BoxHandle {
    tx: mpsc::Sender<Request>,
}

/// The box's thread has stopped (it panicked or the process is ending).
const GONE: Refused = Refused(0x6F00);

impl BoxHandle {
    /// Opens the box ([`BoxHost::open`]) on its own thread.
    pub fn spawn(
        dir: &Path,
        shards: u16,
        depth: u8,
        vendor_key: [u8; PUBLIC_KEY_LEN],
        refill_key: [u8; PUBLIC_KEY_LEN],
    ) -> anyhow::Result<(Self, BoxInfo)> {
        let (tx, rx) = mpsc::channel::<Request>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let dir = dir.to_owned();
        std::thread::Builder::new()
            .name("vbox".into())
            .spawn(move || {
                let mut host = match BoxHost::open(&dir, shards, depth, &vendor_key, &refill_key) {
                    Ok(h) => {
                        let _ = ready_tx.send(Ok(h.info().clone()));
                        h
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                for req in rx {
                    match req {
                        Request::Send(ins, p1, data, reply) => {
                            let _ = reply.send(host.send(ins, p1, &data));
                        }
                        Request::ShardRoot(s, reply) => {
                            let _ = reply.send(host.shard_root(s));
                        }
                    }
                }
            })?;
        let info = ready_rx
            .recv()
            .map_err(|_| anyhow::anyhow!("the box's thread stopped while opening"))??;
        Ok((Self { tx }, info))
    }

    /// Sends `ins` with `data` (P1 = `p1`, P2 = 0); blocks until the box answers.
    pub fn send(&self, ins: u8, p1: u8, data: &[u8]) -> Result<Vec<u8>, Refused> {
        let (reply, answer) = mpsc::channel();
        self.tx
            .send(Request::Send(ins, p1, data.to_vec(), reply))
            .map_err(|_| GONE)?;
        answer.recv().map_err(|_| GONE)?
    }

    /// RESUME of the command `original` with `data`.
    pub fn resume(&self, original: u8, data: &[u8]) -> Result<Vec<u8>, Refused> {
        self.send(ins::RESUME, original, data)
    }

    /// The box's root of `shard` (READ SHARD).
    pub fn shard_root(&self, shard: u16) -> Result<Hash, Refused> {
        let (reply, answer) = mpsc::channel();
        self.tx
            .send(Request::ShardRoot(shard, reply))
            .map_err(|_| GONE)?;
        answer.recv().map_err(|_| GONE)?
    }
}
