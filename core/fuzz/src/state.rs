//! The state parsers: what a card's memory is read back from. Three targets, each on
//! arbitrary bytes (never a panic; a refusal is the parser's own "corrupt" error) and on
//! writes it generates itself (write → read gives back what was written; a changed byte is
//! refused or, for the file store's last frame, dropped whole):
//!
//! * [`run_file_log`]: card-sim's file store log (`state.log`: header, checksummed
//!   frames of commits), read as `FileStore::open` reads it;
//! * [`run_sealed`]: core's sealed store (AES-SIV per record, the record ID bound in) and
//!   the PSD's and purse's record decoders and applet loads behind it;
//! * [`run_wasm_state`]: the wasm module's saved state (`OPSDSTAT` blob).
//!
//! ```text
//! file_log   = mode:u8 (even: the rest is a log image; odd: a script:
//!              first_seq:u8 cut:u16 flip:u16 { nwrites:u8 { id:u8 flags:u8 len:u8 value } })
//! sealed     = mode:u8 (mod 3: 0 the rest is a sealed record under key [key; 32] at ID id,
//!              1 the rest is a plaintext sealed then checked, 2 the rest is a record of
//!              the PSD or the purse, which record by `which`) key:u8 id:u16 which:u8 rest
//! wasm_state = mode:u8 (even: the rest is a saved state; odd: a script of records
//!              flip:u16 { id:u8 len:u8 value })
//! ```

use std::collections::BTreeMap;

use card_sim::file_store::{read_log, write_log, LogCommit};
use openpsd_core::store::{MemStore, RecordId, SealedStore, StorageKey, Store, StoreError, Write};

struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
}

fn is_corrupt(e: &StoreError) -> bool {
    matches!(e, StoreError::Corrupt(_))
}

/// The records after applying `commits` in order.
fn apply(commits: &[LogCommit]) -> BTreeMap<RecordId, Vec<u8>> {
    let mut m = BTreeMap::new();
    for c in commits {
        for (id, v) in c {
            match v {
                Some(v) => m.insert(*id, v.clone()),
                None => m.remove(id),
            };
        }
    }
    m
}

/// Most commits a file-log script makes (keeps an execution short).
const MAX_COMMITS: usize = 16;

/// A file-log script's commits: `{ nwrites:u8 { id:u8 flags:u8 len:u8 value } }`.
fn script_commits(data: &[u8]) -> Vec<LogCommit> {
    let mut b = Bytes(data);
    let mut commits: Vec<LogCommit> = Vec::new();
    while !b.0.is_empty() && commits.len() < MAX_COMMITS {
        let n = b.u8() % 5;
        let mut c = LogCommit::new();
        for _ in 0..n {
            // Few IDs, so commits overwrite and delete each other's records.
            let id = 0x0100 + RecordId::from(b.u8() % 8);
            let flags = b.u8();
            let len = usize::from(b.u8() % 64);
            let value = b.take(len).to_vec();
            c.push((id, (flags & 1 == 1).then_some(value)));
        }
        commits.push(c);
    }
    commits
}

/// What run_file_log saw (for the stable test's checks).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogRun {
    /// The image was read without error.
    pub read: bool,
    /// Commits a script wrote.
    pub commits: usize,
    /// The changed image was refused as corrupt.
    pub flip_refused: bool,
    /// The changed image lost its last commit (damage to the last frame is a torn append).
    pub flip_dropped_last: bool,
}

/// card-sim's file store log: see the module comment.
pub fn run_file_log(data: &[u8]) -> LogRun {
    let mut b = Bytes(data);
    let mode = b.u8();
    let mut out = LogRun::default();
    if mode % 2 == 0 {
        let image = b.0;
        match read_log(image) {
            Ok((records, good)) => {
                out.read = true;
                assert!(good <= image.len(), "good length past the end");
                // What was read survives a compaction: one frame with every record.
                let all: LogCommit = records
                    .iter()
                    .map(|(id, v)| (*id, Some(v.clone())))
                    .collect();
                let again = write_log(1, &[all]).expect("compacted log writes");
                let (back, len) = read_log(&again).expect("compacted log reads");
                assert_eq!(back, records, "compaction changed the records");
                assert_eq!(len, again.len());
                // Reading only the good part gives the same records.
                let (cut, len) = read_log(&image[..good]).expect("the good prefix reads");
                assert_eq!((cut, len), (records, good), "the good prefix differs");
            }
            Err(e) => assert!(is_corrupt(&e), "not a Corrupt error: {e:?}"),
        }
        return out;
    }
    // A script: commits written by the writer, then cut and changed.
    let first_seq = u64::from(b.u8());
    let cut = usize::from(b.u16());
    let flip = usize::from(b.u16());
    let commits = script_commits(b.0);
    out.commits = commits.len();
    let image = write_log(first_seq, &commits).expect("the writer writes");
    let (records, good) = read_log(&image).expect("a written log reads");
    assert_eq!(good, image.len(), "a written log read short");
    assert_eq!(
        records,
        apply(&commits),
        "write -> read changed the records"
    );
    out.read = true;
    // Cut anywhere: the commits whose frames are whole, never part of one.
    let cut_at = cut % (image.len() + 1);
    match read_log(&image[..cut_at]) {
        Ok((records, good)) => {
            let whole = (0..=commits.len())
                .find(|k| write_log(first_seq, &commits[..*k]).expect("writes").len() == good)
                .unwrap_or_else(|| panic!("cut at {cut_at}: {good} is no commit boundary"));
            assert_eq!(records, apply(&commits[..whole]), "cut at {cut_at}");
        }
        Err(e) => {
            assert!(is_corrupt(&e), "{e:?}");
            assert!(cut_at < 20, "a cut log refused past its header: {e:?}");
        }
    }
    // One byte changed (`flip` counts from the end): refused, or (in the last frame)
    // that commit dropped.
    let mut changed = image.clone();
    let at = changed.len() - 1 - flip % changed.len();
    changed[at] ^= 1 << (flip % 8) | 1;
    match read_log(&changed) {
        Err(e) => {
            assert!(is_corrupt(&e), "{e:?}");
            out.flip_refused = true;
        }
        Ok((records, _)) => {
            let n = commits.len();
            if n == 0 {
                // Only the first sequence number can change and leave an empty log.
                assert!(
                    (12..20).contains(&at) && records.is_empty(),
                    "a changed header read (byte {at})"
                );
                return out;
            }
            let before_last = write_log(first_seq, &commits[..n - 1]).expect("writes");
            assert!(
                at >= before_last.len(),
                "byte {at} changed before the last frame, and the log still read"
            );
            assert_eq!(records, apply(&commits[..n - 1]), "changed last frame");
            out.flip_dropped_last = true;
        }
    }
    out
}

/// The record IDs [`run_sealed`] mode 2 picks from: the PSD's, then the purse's.
const RECORDS: [RecordId; 14] = {
    use openpsd_core::records::{psd, purse};
    [
        psd::DEVICE,
        psd::COUNTERS,
        psd::TRANSFER,
        psd::CREDENTIALS,
        psd::LICENSES,
        psd::CERTMETER,
        psd::CREDIT,
        psd::SET_BASE,
        purse::IDENTITY,
        purse::PIN,
        purse::STATE,
        purse::PAIRED,
        purse::LOG,
        purse::CREDENTIALS,
    ]
};

/// Decodes with `decode`; if that succeeds, the encoding decodes again and encodes to the
/// same bytes. Returns whether the first decode succeeded.
fn round_trip<T, E: core::fmt::Debug>(
    what: &str,
    bytes: &[u8],
    decode: impl Fn(&[u8]) -> Result<T, E>,
    encode: impl Fn(&T) -> Vec<u8>,
) -> bool {
    let Ok(x) = decode(bytes) else {
        return false;
    };
    let e = encode(&x);
    let y = decode(&e).unwrap_or_else(|err| panic!("{what}: its own encoding refused: {err:?}"));
    assert_eq!(encode(&y), e, "{what}: encode(decode(encode(x))) differs");
    true
}

/// What run_sealed saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SealedRun {
    /// A record decoder accepted the bytes.
    pub decoded: bool,
    /// The applet loaded from the memory with the record replaced.
    pub loaded: bool,
}

/// Core's sealed records: see the module comment.
pub fn run_sealed(data: &[u8]) -> SealedRun {
    use openpsd_core::psd::device::Device;
    use openpsd_core::psd::license::LicenseState;
    use openpsd_core::psd::registers::RegisterSet;
    use openpsd_core::psd::transfer::TransferState;
    use openpsd_core::purse::state::{Identity, Log, PairedTable, PinRecord, PurseState};
    use openpsd_core::transfer::cert::Credentials;

    let mut b = Bytes(data);
    let mode = b.u8() % 3;
    let key = StorageKey::new([b.u8(); 32]);
    let id = b.u16();
    let which = b.u8();
    let rest = b.0;
    let mut out = SealedRun::default();
    match mode {
        0 => {
            // Bytes that no sealing made: never a record, never an empty one.
            let mut inner = MemStore::new();
            inner
                .commit(&[Write {
                    id,
                    value: Some(rest.to_vec()),
                }])
                .expect("commit");
            let sealed = SealedStore::new(inner, key);
            match sealed.read(id) {
                Err(e) => assert!(is_corrupt(&e), "{e:?}"),
                Ok(v) => panic!("unsealed bytes opened: {v:02X?}"),
            }
        }
        1 => {
            let mut s = SealedStore::new(MemStore::new(), key.clone());
            s.commit(&[Write {
                id,
                value: Some(rest.to_vec()),
            }])
            .expect("sealed commit");
            assert_eq!(
                s.read(id).expect("opens"),
                Some(rest.to_vec()),
                "round trip"
            );
            let raw = s.inner().read(id).expect("read").expect("present");
            assert!(raw.len() >= rest.len() + 16, "no room for the SIV tag");
            // Under another key, at another ID, or with one bit flipped: corrupt.
            let other = SealedStore::new(s.inner().clone(), StorageKey::new([which ^ 0x5A; 32]));
            if which ^ 0x5A != data.get(1).copied().unwrap_or(0) {
                assert!(matches!(other.read(id), Err(StoreError::Corrupt(_))));
            }
            let moved_id = id ^ (1 << (which % 16));
            let mut moved = MemStore::new();
            let mut flipped = raw.clone();
            let at = usize::from(which) % flipped.len();
            flipped[at] ^= 1 << (which % 8);
            moved
                .commit(&[
                    Write {
                        id: moved_id,
                        value: Some(raw.clone()),
                    },
                    Write {
                        id,
                        value: Some(flipped),
                    },
                ])
                .expect("commit");
            let moved = SealedStore::new(moved, key);
            assert!(matches!(moved.read(moved_id), Err(StoreError::Corrupt(_))));
            assert!(matches!(moved.read(id), Err(StoreError::Corrupt(_))));
        }
        _ => {
            // The record decoders on the bytes.
            out.decoded |= round_trip("identity", rest, Identity::decode, |i| i.encode().to_vec());
            out.decoded |= round_trip("device", rest, Device::decode, |d| d.encode().to_vec());
            out.decoded |= round_trip("register set", rest, RegisterSet::decode, |s| s.encode());
            out.decoded |= round_trip("transfer", rest, TransferState::decode, |s| s.encode());
            out.decoded |= round_trip("licenses", rest, LicenseState::decode, |s| {
                s.encode().to_vec()
            });
            out.decoded |= round_trip("credentials", rest, Credentials::decode, |c| c.encode());
            out.decoded |= round_trip("purse state", rest, PurseState::decode, |s| s.encode());
            out.decoded |= round_trip("PIN", rest, PinRecord::decode, |p| p.encode().to_vec());
            out.decoded |= round_trip("paired", rest, PairedTable::decode, |p| p.encode());
            out.decoded |= round_trip("log", rest, Log::decode, |l| l.encode());
            // The applet loads from a memory whose record `which` holds them: an error or a
            // card that answers, sealed the way card-sim keeps it.
            let rec = RECORDS[usize::from(which) % RECORDS.len()];
            let is_purse = openpsd_core::records::purse::RANGE.contains(&rec);
            let nvm = if is_purse {
                crate::purse::funded_nvm()
            } else {
                crate::harness::transfer_nvm()
            };
            let mut store = SealedStore::new(MemStore::new(), key);
            let src = MemStore::open(nvm.clone()).expect("fixture opens");
            let mut writes: Vec<Write> = src
                .ids()
                .expect("ids")
                .into_iter()
                .map(|id| Write {
                    id,
                    value: src.read(id).expect("read"),
                })
                .collect();
            writes.retain(|w| w.id != rec);
            writes.push(Write {
                id: rec,
                value: Some(rest.to_vec()),
            });
            store.commit(&writes).expect("sealed commit");
            let cmds: [&[u8]; 3] = [
                &[0x80, 0xCA, 0x00, 0x01, 0x00],
                &[0x80, 0x32, 0, 0, 0],
                &[0x80, 0xCA, 0x00, 0x02, 0x00],
            ];
            let answer = |card: &mut dyn FnMut(&[u8]) -> Vec<u8>| {
                for c in cmds {
                    let r = card(c);
                    assert!(r.len() >= 2, "a response without a status word");
                }
            };
            if is_purse {
                if let Ok(mut card) =
                    openpsd_core::purse::purse_card(store, crate::harness::platform())
                {
                    out.loaded = true;
                    card.transmit(&openpsd_core::client::purse_apdu::select());
                    answer(&mut |c| card.transmit(c));
                }
            } else if let Ok(mut card) =
                openpsd_core::psd::psd_card(store, crate::harness::platform())
            {
                out.loaded = true;
                card.transmit(&openpsd_core::client::psd_apdu::select());
                answer(&mut |c| card.transmit(c));
            }
        }
    }
    out
}

/// What run_wasm_state saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WasmRun {
    /// The blob decoded.
    pub decoded: bool,
}

/// The wasm module's saved state: see the module comment.
pub fn run_wasm_state(data: &[u8]) -> WasmRun {
    use openpsd_wasm::state::{decode, encode};
    use openpsd_wasm::ErrorKind;
    let mut b = Bytes(data);
    let mode = b.u8();
    let mut out = WasmRun::default();
    if mode % 2 == 0 {
        match decode(b.0) {
            Ok(store) => {
                out.decoded = true;
                // Canonical: what decodes encodes to the same bytes.
                assert_eq!(encode(&store).expect("encodes"), b.0, "not canonical");
            }
            Err(e) => assert_eq!(e.kind, ErrorKind::State, "{e:?}"),
        }
        return out;
    }
    let flip = usize::from(b.u16());
    let mut records = BTreeMap::new();
    while !b.0.is_empty() && records.len() < 32 {
        let id = b.u8();
        let len = usize::from(b.u8());
        records.insert(0x0100 + RecordId::from(id), b.take(len).to_vec());
    }
    let mut store = MemStore::new();
    let writes: Vec<Write> = records
        .iter()
        .map(|(id, v)| Write {
            id: *id,
            value: Some(v.clone()),
        })
        .collect();
    store.commit(&writes).expect("commit");
    let blob = encode(&store).expect("encodes");
    let back = decode(&blob).expect("its own blob decodes");
    out.decoded = true;
    let got: BTreeMap<RecordId, Vec<u8>> = back
        .ids()
        .expect("ids")
        .into_iter()
        .map(|id| (id, back.read(id).expect("read").expect("present")))
        .collect();
    assert_eq!(got, records, "encode -> decode changed the records");
    let mut changed = blob.clone();
    let at = flip % changed.len();
    changed[at] ^= 1 << (flip % 8);
    let Err(e) = decode(&changed) else {
        panic!("a changed blob decoded (byte {at})");
    };
    assert_eq!(e.kind, ErrorKind::State, "{e:?}");
    out
}

/// Seeds of the three targets (written by `cargo run --bin gen-corpus`, replayed by
/// `cargo test`): valid images from the writers, scripts, and damaged images.
pub fn seeds() -> Vec<(&'static str, crate::ByteSeeds)> {
    let script = |first: u8, cut: u16, flip: u16, body: &[u8]| -> Vec<u8> {
        let mut v = vec![1, first];
        v.extend_from_slice(&cut.to_be_bytes());
        v.extend_from_slice(&flip.to_be_bytes());
        v.extend_from_slice(body);
        v
    };
    let commits: Vec<LogCommit> = vec![
        vec![
            (0x0100, Some(b"device".to_vec())),
            (0x0101, Some(vec![0; 12])),
        ],
        vec![(0x0110, Some(vec![1; 40])), (0x0101, None)],
        vec![(0x0102, Some(Vec::new()))],
    ];
    let image = write_log(1, &commits).expect("writes");
    let with_mode = |m: u8, b: &[u8]| [&[m][..], b].concat();
    let mut torn = image.clone();
    torn.truncate(image.len() - 5);
    let mut damaged = image.clone();
    damaged[30] ^= 0x40;
    let body = [
        2u8, 0, 1, 4, b'a', b'b', b'c', b'd', 3, 1, 0, 0, 1, 1, 3, 9, 9, 9, 1, 5, 1, 1, 7,
    ];
    // The script's image: flip a byte of the first frame (counted from the end), then the
    // last byte.
    let script_len = write_log(1, &script_commits(&body)).expect("writes").len();
    let first_frame = u16::try_from(script_len - 1 - 24).expect("short");
    let file_log = vec![
        ("image", with_mode(0, &image)),
        ("torn", with_mode(0, &torn)),
        ("damaged", with_mode(0, &damaged)),
        (
            "header-only",
            with_mode(0, &write_log(7, &[]).expect("writes")),
        ),
        ("script", script(1, 40, first_frame, &body)),
        ("script-last-frame", script(1, 9999, 0, &body)),
    ];

    let fixture_record = |nvm: &openpsd_core::store::Nvm, id: RecordId| -> Vec<u8> {
        MemStore::open(nvm.clone())
            .expect("opens")
            .read(id)
            .expect("read")
            .expect("present")
    };
    let sealed_rec = |which: u8| -> Vec<u8> {
        let rec = RECORDS[usize::from(which)];
        let nvm = if openpsd_core::records::purse::RANGE.contains(&rec) {
            crate::purse::funded_nvm()
        } else {
            crate::harness::transfer_nvm()
        };
        let mut v = vec![2, 7, 0x01, 0x00, which];
        v.extend_from_slice(&fixture_record(nvm, rec));
        v
    };
    let mut sealed = vec![
        ("unsealed", vec![0, 7, 0x01, 0x10, 0, 1, 2, 3, 4, 5]),
        (
            "seal",
            [&[1u8, 7, 0x01, 0x10, 3][..], b"register bytes"].concat(),
        ),
        ("seal-empty", vec![1, 9, 0x02, 0x02, 200]),
    ];
    let names = [
        "device",
        "counters",
        "transfer",
        "credentials",
        "licenses",
        "certmeter",
        "credit",
        "set-0",
        "identity",
        "pin",
        "purse-state",
        "paired",
        "log",
        "purse-credentials",
    ];
    for (i, name) in names.iter().enumerate() {
        let rec = RECORDS[i];
        let nvm = if openpsd_core::records::purse::RANGE.contains(&rec) {
            crate::purse::funded_nvm()
        } else {
            crate::harness::transfer_nvm()
        };
        if MemStore::open(nvm.clone())
            .expect("opens")
            .read(rec)
            .expect("read")
            .is_some()
        {
            sealed.push((name, sealed_rec(i as u8)));
        }
    }

    let mut store = MemStore::new();
    store
        .commit(&[
            Write {
                id: 0x0100,
                value: Some(b"device".to_vec()),
            },
            Write {
                id: 0x0110,
                value: Some(Vec::new()),
            },
        ])
        .expect("commit");
    let blob = openpsd_wasm::state::encode(&store).expect("encodes");
    let fixture = |nvm: &openpsd_core::store::Nvm| {
        openpsd_wasm::state::encode(&MemStore::open(nvm.clone()).expect("opens")).expect("encodes")
    };
    let mut bad = blob.clone();
    bad[12] ^= 1;
    let wasm_state = vec![
        ("blob", with_mode(0, &blob)),
        (
            "psd",
            with_mode(0, &fixture(crate::harness::transfer_nvm())),
        ),
        ("purse", with_mode(0, &fixture(crate::purse::funded_nvm()))),
        ("changed", with_mode(0, &bad)),
        (
            "script",
            vec![1, 0, 17, 0, 3, b'a', b'b', b'c', 16, 0, 5, 1, 1],
        ),
    ];
    vec![
        ("state_file_log", file_log),
        ("state_sealed", sealed),
        ("state_wasm", wasm_state),
    ]
}
