//! Runs fuzzer bytes against the virtual meter box (`openpsd_core::vbox`): raw APDUs and
//! well-formed record commands built from a small stand-in for the data center's database
//! (each possibly with one byte changed, or "lost" as if the database crashed before its
//! commit), and checks after every one what must hold whatever the host sends:
//!
//! * every response ends in a status word, no panic;
//! * a refusal writes nothing to the box's store;
//! * the database's root of every shard is the box's root, or (a reply lost) the box's
//!   previous root until RESUME, which must give the lost bytes again;
//! * no record the box answers breaks AR + DR = control sum, and the value in all
//!   meters never exceeds what the harness's KMS signed refills for;
//! * only the box's records are ever written.
//!
//! ```text
//! input = { op:u8 ... }*
//!   op % 4 = 0: raw APDU          len:u16 apdu
//!   op % 4 = 1: ISSUE INDICIUM    meter:u8 x:u8 postage:u16 edit:u16 xor:u8
//!               (bit 3 of op: ISSUE BATCH of (op >> 4) % 4 + 1 pieces, IDs x, x+1, ...)
//!   op % 4 = 2: REFILL            meter:u8 x:u8 amount:u16 edit:u16 xor:u8
//!   (x: bit 7 presents the record for another mailer; bits 0-3 the transaction ID;
//!    xor ≠ 0 flips those bits of the command's byte at edit mod its length)
//!   op % 4 = 3: RESUME the lost reply, if any
//! bit 2 of op: the reply is lost (the database does not commit it)
//! ```

use std::collections::BTreeMap;
use std::sync::OnceLock;

use openpsd_core::crypto::IndiciumKey;
use openpsd_core::platform::SeededPlatform;
use openpsd_core::psd::indicium::{self, IndiciumRequest};
use openpsd_core::psd::refill::RefillCombination;
use openpsd_core::records::vbox as rec;
use openpsd_core::store::{MemStore, Store};
use openpsd_core::types::*;
use openpsd_core::vbox::batch::{batch_data, BatchReply};
use openpsd_core::vbox::issue::{issue_data, IssueReply};
use openpsd_core::vbox::login::{self, LoginRecord};
use openpsd_core::vbox::merkle::ShardTree;
use openpsd_core::vbox::meter::{create_meter_data, MeterGrant};
use openpsd_core::vbox::record::MeterRecord;
use openpsd_core::vbox::txn::TransactionRecord;
use openpsd_core::vbox::{ins, vbox_card, VBOX_AID};
use openpsd_core::Card;

/// The box under test.
pub type BoxCard = Card<MemStore, SeededPlatform>;

/// Most operations run from one input.
pub const MAX_OPS: usize = 48;
const BOX_ID: DeviceId = DeviceId(*b"VBOXFUZZ");
const SHARDS: u16 = 2;
const DEPTH: u8 = 3;
/// The fixture's meters: (slot, mailer).
const METERS: [(u32, [u8; 16]); 3] = [(1, [0xA1; 16]), (2, [0xB2; 16]), (9, [0xA1; 16])];

fn key(cell: &'static OnceLock<IndiciumKey>, scalar: u8) -> IndiciumKey {
    cell.get_or_init(|| IndiciumKey::from_bytes(&[scalar; 32]).expect("scalar"))
        .clone()
}
fn vendor() -> IndiciumKey {
    static K: OnceLock<IndiciumKey> = OnceLock::new();
    key(&K, 0x21)
}
fn kms() -> IndiciumKey {
    static K: OnceLock<IndiciumKey> = OnceLock::new();
    key(&K, 0x11)
}

fn sw(resp: &[u8]) -> u16 {
    assert!(resp.len() >= 2, "a response without a status word");
    u16::from_be_bytes([resp[resp.len() - 2], resp[resp.len() - 1]])
}

/// An extended case-4 APDU.
pub fn apdu(ins: u8, p1: u8, p2: u8, data: &[u8]) -> Vec<u8> {
    let mut a = vec![0x80, ins, p1, p2, 0x00];
    a.extend_from_slice(&u16::try_from(data.len()).unwrap_or(u16::MAX).to_be_bytes());
    a.extend_from_slice(data);
    a.extend_from_slice(&[0x00, 0x00]);
    a
}

struct Dc {
    records: BTreeMap<u32, Vec<u8>>,
    trees: Vec<ShardTree>,
    signed_value: u64,
    /// The box's transaction public key.
    txn_key: Vec<u8>,
    /// A reply the database lost: (the command, the reply bytes, its shard).
    lost: Option<(Vec<u8>, Vec<u8>, usize)>,
}

impl Dc {
    fn locate(slot: u32) -> (usize, u32) {
        ((slot >> DEPTH) as usize, slot & ((1 << DEPTH) - 1))
    }
    fn proof(&self, slot: u32) -> Vec<u8> {
        let (s, i) = Self::locate(slot);
        self.trees[s].proof(i)
    }
    fn store(&mut self, slot: u32, record: &[u8]) {
        let (s, i) = Self::locate(slot);
        self.trees[s].set(i, record);
        self.records.insert(slot, record.to_vec());
    }
    fn prefix(&self, slot: u32, mailer: &[u8; 16]) -> Vec<u8> {
        let record = &self.records[&slot];
        let mut d = slot.to_be_bytes().to_vec();
        d.extend_from_slice(mailer);
        d.extend_from_slice(&u16::try_from(record.len()).unwrap_or(0).to_be_bytes());
        d.extend_from_slice(record);
        d.extend_from_slice(&self.proof(slot));
        d
    }
}

fn ok(card: &mut BoxCard, apdu: &[u8]) -> Vec<u8> {
    let resp = card.transmit(apdu);
    assert_eq!(sw(&resp), 0x9000, "fixture command refused");
    resp[..resp.len() - 2].to_vec()
}

/// A personalized box with three meters, the first two funded.
fn start() -> (BoxCard, Dc) {
    let mut p = SeededPlatform::new(3);
    p.today = Date::new(2026, 11, 30);
    let mut card = vbox_card(MemStore::new(), p).expect("blank store loads");
    let mut sel = vec![0x00, 0xA4, 0x04, 0x00, 7];
    sel.extend_from_slice(VBOX_AID);
    ok(&mut card, &sel);
    let mut pd = BOX_ID.0.to_vec();
    pd.extend_from_slice(&SHARDS.to_be_bytes());
    pd.push(DEPTH);
    pd.extend_from_slice(&vendor().public_key());
    pd.extend_from_slice(&kms().public_key());
    let out = ok(&mut card, &apdu(ins::PERSONALIZE, 0, 0, &pd));
    let mut dc = Dc {
        records: BTreeMap::new(),
        trees: (0..SHARDS).map(|_| ShardTree::new(DEPTH)).collect(),
        signed_value: 0,
        txn_key: out.get(32..).expect("root ‖ transaction key").to_vec(),
        lost: None,
    };
    for (n, (slot, mailer)) in METERS.iter().enumerate() {
        let grant = MeterGrant {
            box_id: BOX_ID,
            meter: DeviceId([b'M', b'0', b'0', b'0', b'0', b'0', b'0', b'1' + n as u8]),
            slot: *slot,
            mailer: *mailer,
            license: LicenseId(4711),
            origin: PostalCode::new(b"10115").expect("code"),
            max_postage: Amount(2_000),
            max_dr: Amount(100_000),
        }
        .sign(&vendor());
        let out = ok(
            &mut card,
            &apdu(
                ins::CREATE_METER,
                0,
                0,
                &create_meter_data(&grant, &dc.proof(*slot)),
            ),
        );
        commit(&mut dc, ins::CREATE_METER, &out);
    }
    for (slot, mailer) in &METERS[..2] {
        let cmd = refill_cmd(&mut dc, *slot, mailer, 50_000);
        let out = ok(&mut card, &cmd);
        commit(&mut dc, ins::REFILL, &out);
    }
    (card, dc)
}

fn refill_cmd(dc: &mut Dc, slot: u32, mailer: &[u8; 16], amount: u64) -> Vec<u8> {
    let r = MeterRecord::decode(&dc.records[&slot]).expect("the database's record");
    let msg = RefillCombination {
        device: r.meter,
        license: r.license,
        amount: Amount(amount),
        control_sum: r.control_sum,
        refills: r.refills,
        combination_id: [7; 8],
    }
    .sign(&kms());
    dc.signed_value += amount;
    let mut d = dc.prefix(slot, mailer);
    d.extend_from_slice(&msg);
    apdu(ins::REFILL, 0, 0, &d)
}

struct Bytes<'a>(&'a [u8]);
impl Bytes<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes([self.u8()?, self.u8()?]))
    }
    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }
}

fn shard_roots(card: &BoxCard) -> Vec<Option<Vec<u8>>> {
    (0..SHARDS)
        .map(|s| card.store().read(rec::shard(s)).expect("readable"))
        .collect()
}

/// What one run did (the seed tests check their inputs reach the paths they are for).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Record commands the box carried out (roots moved or indicium reprinted).
    pub done: usize,
    /// Commands refused.
    pub refused: usize,
    /// Lost replies given again by RESUME.
    pub resumed: usize,
    /// The last sequence of a log-in record the box answered.
    pub logins: u64,
}

/// Runs fuzzer bytes (see the module comment).
pub fn run_vbox_bytes(data: &[u8]) -> Stats {
    let mut stats = Stats::default();
    let (mut card, mut dc) = start();
    let mut b = Bytes(data);
    for _ in 0..MAX_OPS {
        let Some(op) = b.u8() else { break };
        let lose = op & 4 != 0;
        let (cmd, slot) = match op % 4 {
            0 => {
                let n = usize::from(b.u16().unwrap_or(0));
                (b.take(n).to_vec(), None)
            }
            1 | 2 => {
                let (slot, mut mailer) = METERS[usize::from(b.u8().unwrap_or(0)) % METERS.len()];
                let (Some(x), Some(amount), Some(edit), Some(xor)) =
                    (b.u8(), b.u16(), b.u16(), b.u8())
                else {
                    break;
                };
                if x & 0x80 != 0 {
                    mailer = METERS[1].1; // maybe another mailer's session
                }
                let mut cmd = if op % 4 == 1 {
                    let req = IndiciumRequest {
                        transaction: TransactionId([x & 0x0F; 8]),
                        postage: Amount(u64::from(amount)),
                        date: Date::new(2026, 11, 30).expect("date"),
                        rate: RateCategory(1),
                        origin: PostalCode::new(b"10115").expect("code"),
                        destination: PostalCode::new(b"80331").expect("code"),
                    };
                    if op & 8 != 0 {
                        let reqs: Vec<IndiciumRequest> = (0..(op >> 4) % 4 + 1)
                            .map(|k| IndiciumRequest {
                                transaction: TransactionId([(x & 0x0F) + k; 8]),
                                ..req
                            })
                            .collect();
                        let d =
                            batch_data(slot, &mailer, &dc.records[&slot], &dc.proof(slot), &reqs);
                        apdu(ins::ISSUE_BATCH, 0, 0, &d)
                    } else {
                        let d =
                            issue_data(slot, &mailer, &dc.records[&slot], &dc.proof(slot), &req);
                        apdu(ins::ISSUE_INDICIUM, 0, 0, &d)
                    }
                } else {
                    refill_cmd(&mut dc, slot, &mailer, u64::from(amount))
                };
                if xor != 0 {
                    let i = usize::from(edit) % cmd.len();
                    cmd[i] ^= xor;
                }
                (cmd, Some(slot))
            }
            _ => match &dc.lost {
                Some((c, _, _)) => {
                    let mut r = c.clone();
                    r[2] = r[1];
                    r[1] = ins::RESUME;
                    (r, None)
                }
                None => continue,
            },
        };
        let writes = card.store().writes();
        let roots = shard_roots(&card);
        let mut resp = card.transmit(&cmd);
        // An edited Le may leave part of the answer for GET RESPONSE: fetch it all.
        while sw(&resp) & 0xFF00 == 0x6100 {
            resp.truncate(resp.len() - 2);
            let more = card.transmit(&[0x00, 0xC0, 0x00, 0x00, 0x00]);
            resp.extend_from_slice(&more);
        }
        let status = sw(&resp);
        let body = &resp[..resp.len() - 2];
        if std::env::var_os("VBOX_TRACE").is_some() {
            eprintln!("op {op:02X}: {status:04X}");
        }
        if status != 0x9000 {
            assert_eq!(
                card.store().writes(),
                writes,
                "a refusal wrote {status:04X}"
            );
            assert_eq!(shard_roots(&card), roots);
            stats.refused += 1;
            continue;
        }
        // An edit that set the chaining bit of CLA (`90`) makes the command the first part
        // of a chain: the card keeps its data and carries nothing out yet (ISO 7816-4
        // §5.3.3), so it must not have moved any root.
        if cmd.first().is_some_and(|cla| cla & 0x10 != 0) {
            assert_eq!(shard_roots(&card), roots, "a chained part moved a shard");
            continue;
        }
        if cmd.len() > 2 && cmd[1] == ins::RESUME && op % 4 == 3 {
            let (_, lost, _) = dc.lost.take().expect("a lost reply");
            assert_eq!(body, &lost[..], "RESUME gives the lost bytes again");
            assert_eq!(card.store().writes(), writes, "RESUME writes nothing");
            commit(&mut dc, cmd[2], body);
            stats.resumed += 1;
            continue;
        }
        let Some(slot) = slot else {
            // A raw APDU that succeeded: it must not have moved any root.
            if roots != shard_roots(&card) {
                panic!("a raw APDU changed a shard (no MAC can be forged): {cmd:02X?}");
            }
            let logins = |card: &BoxCard| {
                let stored = card.store().read(rec::LOGINS).expect("readable");
                login::decode_logins(stored.as_deref()).expect("the count decodes")
            };
            if cmd.get(1) == Some(&ins::AUTHENTICATE_MAILER) && cmd.get(2) == Some(&1) {
                // An approved log-in asked to be recorded: counted once, and the signed
                // record it answers carries that count.
                let l = LoginRecord::verify(body, &dc.txn_key).expect("a signed log-in record");
                assert_eq!(
                    l.sequence,
                    logins(&card),
                    "the record's sequence is the count"
                );
                assert!(l.sequence > stats.logins, "a sequence signed twice");
                stats.logins = l.sequence;
            } else if cmd.get(1) == Some(&ins::GET_DATA) && cmd.get(3) == Some(&2) {
                // The count the box reports is the one it stores, and reading it writes
                // nothing.
                assert_eq!(body, &logins(&card).to_be_bytes()[..], "GET DATA 00 02");
                assert_eq!(card.store().writes(), writes, "GET DATA wrote");
            } else if cmd
                .get(1)
                .is_some_and(|&i| i == ins::ENROLL_MAILER || i == ins::AUTHENTICATE_MAILER)
            {
                // The fixture's box has K_auth from PERSONALIZE: nothing to write.
                assert_eq!(card.store().writes(), writes, "ENROLL/AUTHENTICATE wrote");
            }
            continue;
        };
        let after = shard_roots(&card);
        let moved: Vec<usize> = (0..roots.len()).filter(|&i| roots[i] != after[i]).collect();
        assert!(moved.len() <= 1, "one command moved two shards");
        if let Some((_, _, lost_shard)) = &dc.lost {
            assert!(
                !moved.contains(lost_shard),
                "the box moved a shard on past a lost reply"
            );
        }
        if lose && !moved.is_empty() && dc.lost.is_none() {
            dc.lost = Some((cmd.clone(), body.to_vec(), moved[0]));
        } else if !moved.is_empty() || cmd[1] == ins::ISSUE_INDICIUM {
            commit(&mut dc, cmd[1], body);
        }
        let _ = slot;
        stats.done += 1;
        check_books(&dc);
    }
    let ids = card.store().ids().expect("ids readable");
    assert!(
        ids.iter()
            .all(|id| rec::RANGE.contains(id) || rec::SHARDS.contains(id)),
        "foreign records"
    );
    stats
}

/// The database commits a box answer: record, tree, and the transaction record, whose
/// signature, registers and chain of roots are checked.
fn commit(dc: &mut Dc, ins_byte: u8, body: &[u8]) {
    if ins_byte == ins::ISSUE_BATCH {
        return commit_batch(dc, body);
    }
    let reply = IssueReply::decode(body).expect("the answer decodes");
    let r = MeterRecord::decode(&reply.record).expect("record decodes");
    let t = TransactionRecord::verify(&reply.transaction, &dc.txn_key)
        .expect("the transaction record verifies");
    assert_eq!(
        (t.meter, t.slot, t.ar, t.dr, t.pieces),
        (r.meter, r.slot, r.ar, r.dr, r.pieces)
    );
    assert_eq!(t.root_after, reply.root);
    if ins_byte == ins::ISSUE_INDICIUM {
        let data = indicium::verify(&reply.indicium, &r.public_key).expect("indicium verifies");
        // The indicium shows the record's AR and pieces, and the DR of its own time (a
        // reprint after a refill shows the DR before the refill).
        let last = r
            .last
            .expect("a record that issued names its last indicium");
        assert_eq!((data.ar, data.dr, data.pieces), (r.ar, last.dr, r.pieces));
        assert_eq!(
            openpsd_core::crypto::sha256(&reply.indicium[..reply.indicium.len() - 64]),
            last.digest
        );
        assert_eq!(t.digest, last.digest);
    } else {
        assert!(reply.indicium.is_empty());
    }
    let (s, _) = Dc::locate(r.slot);
    // The ledger's chain: each record starts from the root the shard's last one left.
    assert_eq!(t.root_before, dc.trees[s].root(), "chain of roots");
    dc.store(r.slot, &reply.record);
    assert_eq!(
        reply.root,
        dc.trees[s].root(),
        "the box's root is the database's"
    );
}

/// A batch's answer: each piece's transaction record chained from the database's root, its
/// indicium verifying under the meter's key and showing that record's registers; the last
/// record's registers are the new record's.
fn commit_batch(dc: &mut Dc, body: &[u8]) {
    let reply = BatchReply::decode(body).expect("the batch answer decodes");
    let r = MeterRecord::decode(&reply.record).expect("record decodes");
    let (s, _) = Dc::locate(r.slot);
    let mut root = dc.trees[s].root();
    assert!(!reply.pieces.is_empty());
    let mut last = None;
    for p in &reply.pieces {
        let t = TransactionRecord::verify(&p.transaction, &dc.txn_key)
            .expect("the transaction record verifies");
        let data = indicium::verify(&p.indicium, &r.public_key).expect("indicium verifies");
        assert_eq!((data.ar, data.dr, data.pieces), (t.ar, t.dr, t.pieces));
        assert_eq!(t.root_before, root, "chain of roots");
        assert_eq!(
            openpsd_core::crypto::sha256(&p.indicium[..p.indicium.len() - 64]),
            t.digest
        );
        root = t.root_after;
        last = Some(t);
    }
    let t = last.expect("a piece");
    assert_eq!(
        (t.meter, t.slot, t.ar, t.dr, t.pieces),
        (r.meter, r.slot, r.ar, r.dr, r.pieces)
    );
    assert_eq!(root, reply.root);
    dc.store(r.slot, &reply.record);
    assert_eq!(
        reply.root,
        dc.trees[s].root(),
        "the box's root is the database's"
    );
}

fn check_books(dc: &Dc) {
    let mut total = 0u64;
    for bytes in dc.records.values() {
        let r = MeterRecord::decode(bytes).expect("record decodes");
        assert_eq!(r.ar.0 + r.dr.0, r.control_sum.0);
        total += r.control_sum.0;
    }
    assert!(total <= dc.signed_value, "more value than the KMS signed");
}

/// The seed corpus of the `vbox_handle` target (written by `cargo run --bin gen-corpus`,
/// replayed by `cargo test`): every record command, lost replies and RESUME, edits, another
/// mailer, batches, and a chained part.
pub fn seeds() -> crate::ByteSeeds {
    // Issue, issue with an edit, refill, a lost issue then RESUME, an issue by another
    // mailer, a raw blank APDU, a lost refill then RESUME, then more on every meter.
    let mut singles = vec![];
    singles.extend_from_slice(&[1, 0, 1, 0x01, 0x00, 0, 0, 0]);
    singles.extend_from_slice(&[1, 0, 2, 0x00, 0x50, 0, 40, 0x10]);
    singles.extend_from_slice(&[2, 1, 0, 0x03, 0xE8, 0, 0, 0]);
    singles.extend_from_slice(&[5, 1, 3, 0x00, 0x20, 0, 0, 0]);
    singles.push(3);
    singles.extend_from_slice(&[1, 0, 0x84, 0x00, 0x20, 0, 0, 0]);
    singles.extend_from_slice(&[0, 0, 5, 0x80, 0xCA, 0x00, 0x01, 0x00]);
    singles.extend_from_slice(&[6, 0, 0, 0x00, 0x10, 0, 0, 0]);
    singles.push(3);
    singles.extend_from_slice(&[1, 2, 4, 0x00, 0x01, 0, 0, 0]);
    singles.extend_from_slice(&[1, 0, 1, 0x01, 0x00, 0, 0, 0]);
    // ISSUE BATCH: 4 pieces; 2 pieces whose answer is lost, then RESUME; 4 pieces on the
    // unfunded meter (refused whole); 2 pieces, the first under the record's last ID.
    let mut batches = vec![];
    batches.extend_from_slice(&[0x39, 0, 1, 0x00, 0x64, 0, 0, 0]);
    batches.extend_from_slice(&[0x1D, 0, 8, 0x00, 0x64, 0, 0, 0]);
    batches.push(3);
    batches.extend_from_slice(&[0x39, 2, 0, 0x00, 0x01, 0, 0, 0]);
    batches.extend_from_slice(&[0x19, 0, 9, 0x00, 0x01, 0, 0, 0]);
    // An issue whose CLA was edited to `90` (a chain part, kept by the card), then the
    // same issue whole (the card joins the two: refused), then an issue that goes through.
    let mut chained = vec![];
    chained.extend_from_slice(&[1, 0, 1, 0x00, 0x30, 0, 0, 0x10]);
    chained.extend_from_slice(&[1, 0, 1, 0x00, 0x30, 0, 0, 0]);
    chained.extend_from_slice(&[1, 0, 2, 0x00, 0x30, 0, 0, 0]);
    // The authentication box: ENROLL MAILER (done, not counted: a raw APDU), AUTHENTICATE
    // MAILER with a made-up verifier (9A65), a recorded log-in twice, the count read,
    // ENROLL one byte short (6700).
    let mut auth = vec![];
    let raw = |v: &mut Vec<u8>, apdu: &[u8]| {
        v.push(0);
        v.extend_from_slice(&u16::try_from(apdu.len()).unwrap_or(0).to_be_bytes());
        v.extend_from_slice(apdu);
    };
    let mut enroll = vec![0x80, ins::ENROLL_MAILER, 0, 0, 48];
    enroll.extend_from_slice(&[0xA1; 16]);
    enroll.extend_from_slice(&[0x5A; 32]);
    raw(&mut auth, &enroll);
    let mut authenticate = vec![0x80, ins::AUTHENTICATE_MAILER, 0, 0, 64];
    authenticate.extend_from_slice(&enroll[5..]);
    authenticate.extend_from_slice(&[0x33; 16]);
    raw(&mut auth, &authenticate);
    // A recorded log-in (P1 = 01) with the fixture box's real verifier, twice: two
    // records, sequences 1 and 2.
    let (mut fixture, _) = start();
    let verifier = ok(&mut fixture, &enroll);
    let mut log_in = vec![0x80, ins::AUTHENTICATE_MAILER, 1, 0, 72];
    log_in.extend_from_slice(&enroll[5..]);
    log_in.extend_from_slice(&verifier);
    log_in.extend_from_slice(&1_780_000_000u64.to_be_bytes());
    raw(&mut auth, &log_in);
    raw(&mut auth, &log_in);
    // The count the box reports then (GET DATA 00 02): 2.
    raw(&mut auth, &[0x80, ins::GET_DATA, 0x00, 0x02, 0x00]);
    enroll.pop();
    enroll[4] = 47;
    raw(&mut auth, &enroll);
    vec![
        ("mailer-auth", auth),
        ("singles-lost-resume", singles),
        ("batches", batches),
        ("chained-part", chained),
    ]
}
