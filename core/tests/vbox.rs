//! The virtual meter box (seed 001, Fig. 4 steps 200–265) through its APDUs, in process: a
//! small stand-in for the data center's database (records by slot and each shard's tree)
//! drives a box card the way the data center will. Every attack of the design's list (d)
//! that the box alone can answer is here: an old record put back, a record moved to another
//! slot or presented for another mailer, an edited register, wrapped key or inner node; a
//! crash between the box's commit and the database's (RESUME); and a power cut at every
//! write of every command, clean and torn.
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use openpsd_core::crypto::IndiciumKey;
use openpsd_core::platform::SeededPlatform;
use openpsd_core::psd::indicium::{self, IndiciumRequest};
use openpsd_core::psd::refill::RefillCombination;
use openpsd_core::status::Status;
use openpsd_core::store::{MemStore, Nvm, PowerCut};
use openpsd_core::types::*;
use openpsd_core::vbox::batch::{batch_data, BatchReply, MAX_BATCH};
use openpsd_core::vbox::issue::{issue_data, IssueReply};
use openpsd_core::vbox::merkle::ShardTree;
use openpsd_core::vbox::meter::{create_meter_data, MeterGrant};
use openpsd_core::vbox::record::MeterRecord;
use openpsd_core::vbox::txn::{self, TransactionRecord};
use openpsd_core::vbox::{ins, vbox_card, VBOX_AID};
use openpsd_core::Card;

type BoxCard = Card<MemStore, SeededPlatform>;

const SEED: u64 = 16;
const BOX_ID: DeviceId = DeviceId(*b"VBOX0001");
const SHARDS: u16 = 4;
const DEPTH: u8 = 4;
const ALICE: [u8; 16] = *b"mailer-alice-001";
const BOB: [u8; 16] = *b"mailer-bob---002";

fn vendor() -> IndiciumKey {
    IndiciumKey::from_bytes(&[0x21; 32]).unwrap()
}
fn kms() -> IndiciumKey {
    IndiciumKey::from_bytes(&[0x11; 32]).unwrap()
}

fn apdu(ins: u8, p1: u8, p2: u8, data: &[u8]) -> Vec<u8> {
    // Extended case 4: records and proofs exceed 255 bytes.
    let mut a = vec![0x80, ins, p1, p2, 0x00];
    a.extend_from_slice(&u16::try_from(data.len()).unwrap().to_be_bytes());
    a.extend_from_slice(data);
    a.extend_from_slice(&[0x00, 0x00]);
    a
}

fn sw(resp: &[u8]) -> u16 {
    u16::from_be_bytes([resp[resp.len() - 2], resp[resp.len() - 1]])
}

fn ok(resp: &[u8]) -> Vec<u8> {
    assert_eq!(sw(resp), 0x9000, "expected 9000, got {:04X}", sw(resp));
    resp[..resp.len() - 2].to_vec()
}

fn refused(resp: &[u8], status: Status) {
    assert_eq!(
        resp,
        status.sw().to_be_bytes(),
        "expected {status}, got {:04X}",
        sw(resp)
    );
}

fn select(card: &mut BoxCard) {
    let mut a = vec![0x00, 0xA4, 0x04, 0x00, 7];
    a.extend_from_slice(VBOX_AID);
    ok(&card.transmit(&a));
}

fn reopen(nvm: &Nvm) -> BoxCard {
    let mut card = vbox_card(
        MemStore::open(nvm.clone()).unwrap(),
        SeededPlatform::new(SEED),
    )
    .unwrap();
    card.platform_mut().today = Date::new(2026, 11, 30);
    select(&mut card);
    card
}

/// The data center's side: the records by slot and the trees (untrusted by the box).
#[derive(Clone)]
struct Dc {
    card_nvm: Nvm,
    records: BTreeMap<u32, Vec<u8>>,
    trees: Vec<ShardTree>,
    /// The box's transaction public key (from PERSONALIZE).
    txn_key: Vec<u8>,
    /// The ledger: every transaction record the box answered and the database committed.
    ledger: Vec<TransactionRecord>,
}

fn locate(slot: u32) -> (usize, u32) {
    ((slot >> DEPTH) as usize, slot & ((1 << DEPTH) - 1))
}

impl Dc {
    fn proof(&self, slot: u32) -> Vec<u8> {
        let (s, i) = locate(slot);
        self.trees[s].proof(i)
    }
    fn root(&self, slot: u32) -> [u8; 32] {
        self.trees[locate(slot).0].root()
    }
    /// The database's commit of a record the box answered.
    fn store(&mut self, slot: u32, record: &[u8]) {
        let (s, i) = locate(slot);
        self.trees[s].set(i, record);
        self.records.insert(slot, record.to_vec());
    }
    fn record(&self, slot: u32) -> MeterRecord {
        MeterRecord::decode(&self.records[&slot]).unwrap()
    }
    /// The database commits a box answer: record, tree, and the transaction record (whose
    /// signature and roots are checked).
    fn commit(&mut self, out: &[u8]) -> IssueReply {
        let reply = IssueReply::decode(out).unwrap_or_else(|e| {
            panic!(
                "{e:?}: {} bytes, head {:02X?}",
                out.len(),
                &out[..40.min(out.len())]
            )
        });
        let rec = MeterRecord::decode(&reply.record).unwrap();
        let t = TransactionRecord::verify(&reply.transaction, &self.txn_key).unwrap();
        assert_eq!((t.meter, t.slot), (rec.meter, rec.slot));
        assert_eq!((t.ar, t.dr, t.pieces), (rec.ar, rec.dr, rec.pieces));
        assert_eq!(t.root_after, reply.root);
        self.store(rec.slot, &reply.record);
        assert_eq!(
            reply.root,
            self.root(rec.slot),
            "the box's new root is the database's"
        );
        self.ledger.push(t);
        reply
    }
    /// The database commits an ISSUE BATCH answer: each piece's transaction record (signed,
    /// chained from the shard's root through the intermediate roots to the box's new one,
    /// sequences one by one) and indicium (verified as the post office does), then the last
    /// record.
    fn commit_batch(&mut self, out: &[u8]) -> BatchReply {
        let reply = BatchReply::decode(out).unwrap();
        let rec = MeterRecord::decode(&reply.record).unwrap();
        let mut root = self.root(rec.slot);
        let mut seq = self
            .ledger
            .iter()
            .rev()
            .find(|t| usize::from(t.shard) == locate(rec.slot).0)
            .map_or(0, |t| t.sequence);
        for p in &reply.pieces {
            let t = TransactionRecord::verify(&p.transaction, &self.txn_key).unwrap();
            assert_eq!(
                (t.kind, t.meter, t.slot),
                (txn::KIND_ISSUE, rec.meter, rec.slot)
            );
            assert_eq!((t.root_before, t.sequence), (root, seq + 1), "chained");
            let ind = indicium::verify(&p.indicium, &rec.public_key).unwrap();
            assert_eq!((ind.ar, ind.dr, ind.pieces), (t.ar, t.dr, t.pieces));
            assert_eq!((ind.postage, ind.device), (t.amount, rec.meter));
            assert_eq!(
                openpsd_core::crypto::sha256(&p.indicium[..p.indicium.len() - 64]),
                t.digest
            );
            root = t.root_after;
            seq = t.sequence;
            self.ledger.push(t);
        }
        let last = self.ledger.last().unwrap().clone();
        assert_eq!(
            (last.ar, last.dr, last.pieces),
            (rec.ar, rec.dr, rec.pieces)
        );
        assert_eq!(root, reply.root);
        self.store(rec.slot, &reply.record);
        assert_eq!(
            reply.root,
            self.root(rec.slot),
            "the box's root is the database's"
        );
        reply
    }
}

fn personalize_data() -> Vec<u8> {
    let mut d = BOX_ID.0.to_vec();
    d.extend_from_slice(&SHARDS.to_be_bytes());
    d.push(DEPTH);
    d.extend_from_slice(&vendor().public_key());
    d.extend_from_slice(&kms().public_key());
    d
}

fn grant(slot: u32, mailer: [u8; 16], meter: &[u8; 8]) -> MeterGrant {
    MeterGrant {
        box_id: BOX_ID,
        meter: DeviceId(*meter),
        slot,
        mailer,
        license: LicenseId(4711),
        origin: PostalCode::new(b"10115").unwrap(),
        max_postage: Amount(10_000),
        max_dr: Amount(1_000_000),
    }
}

fn new_box() -> (BoxCard, Dc) {
    let mut card = vbox_card(MemStore::new(), SeededPlatform::new(SEED)).unwrap();
    card.platform_mut().today = Date::new(2026, 11, 30);
    select(&mut card);
    let out = ok(&card.transmit(&apdu(ins::PERSONALIZE, 0, 0, &personalize_data())));
    let (root, txn_key) = out.split_at(32);
    let dc = Dc {
        card_nvm: card.store().nvm().clone(),
        records: BTreeMap::new(),
        trees: (0..SHARDS).map(|_| ShardTree::new(DEPTH)).collect(),
        txn_key: txn_key.to_vec(),
        ledger: Vec::new(),
    };
    assert_eq!(root, dc.root(0));
    assert_eq!(txn_key.len(), 65);
    (card, dc)
}

fn create_cmd(dc: &Dc, slot: u32, mailer: [u8; 16], meter: &[u8; 8]) -> Vec<u8> {
    let g = grant(slot, mailer, meter).sign(&vendor());
    apdu(
        ins::CREATE_METER,
        0,
        0,
        &create_meter_data(&g, &dc.proof(slot)),
    )
}

fn create(card: &mut BoxCard, dc: &mut Dc, slot: u32, mailer: [u8; 16], meter: &[u8; 8]) {
    let out = ok(&card.transmit(&create_cmd(dc, slot, mailer, meter)));
    let reply = dc.commit(&out);
    assert_eq!(reply.indicium, b"");
}

fn refill_cmd(dc: &Dc, slot: u32, mailer: [u8; 16], amount: u64) -> Vec<u8> {
    let rec = dc.record(slot);
    let msg = RefillCombination {
        device: rec.meter,
        license: rec.license,
        amount: Amount(amount),
        control_sum: rec.control_sum,
        refills: rec.refills,
        combination_id: [9; 8],
    }
    .sign(&kms());
    let mut data = issue_prefix(dc, slot, mailer);
    data.extend_from_slice(&msg);
    apdu(ins::REFILL, 0, 0, &data)
}

/// `slot | mailer | length | record | proof`, the start of every record command.
fn issue_prefix(dc: &Dc, slot: u32, mailer: [u8; 16]) -> Vec<u8> {
    let record = &dc.records[&slot];
    let mut d = slot.to_be_bytes().to_vec();
    d.extend_from_slice(&mailer);
    d.extend_from_slice(&u16::try_from(record.len()).unwrap().to_be_bytes());
    d.extend_from_slice(record);
    d.extend_from_slice(&dc.proof(slot));
    d
}

fn refill(card: &mut BoxCard, dc: &mut Dc, slot: u32, mailer: [u8; 16], amount: u64) {
    let out = ok(&card.transmit(&refill_cmd(dc, slot, mailer, amount)));
    dc.commit(&out);
}

fn request(txn: u8, postage: u64) -> IndiciumRequest {
    IndiciumRequest {
        transaction: TransactionId([txn; 8]),
        postage: Amount(postage),
        date: Date::new(2026, 11, 30).unwrap(),
        rate: RateCategory(1),
        origin: PostalCode::new(b"10115").unwrap(),
        destination: PostalCode::new(b"80331").unwrap(),
    }
}

fn issue_cmd(dc: &Dc, slot: u32, mailer: [u8; 16], req: &IndiciumRequest) -> Vec<u8> {
    apdu(
        ins::ISSUE_INDICIUM,
        0,
        0,
        &issue_data(slot, &mailer, &dc.records[&slot], &dc.proof(slot), req),
    )
}

fn issue(
    card: &mut BoxCard,
    dc: &mut Dc,
    slot: u32,
    mailer: [u8; 16],
    req: &IndiciumRequest,
) -> IssueReply {
    let out = ok(&card.transmit(&issue_cmd(dc, slot, mailer, req)));
    dc.commit(&out)
}

fn batch_cmd(dc: &Dc, slot: u32, mailer: [u8; 16], reqs: &[IndiciumRequest]) -> Vec<u8> {
    apdu(
        ins::ISSUE_BATCH,
        0,
        0,
        &batch_data(slot, &mailer, &dc.records[&slot], &dc.proof(slot), reqs),
    )
}

/// Requests with transaction IDs `first`, `first + 1`, ... of `postage` each.
fn requests(first: u8, n: usize, postage: u64) -> Vec<IndiciumRequest> {
    (0..n)
        .map(|k| request(first + u8::try_from(k).unwrap(), postage))
        .collect()
}

/// Shard `s`'s state as READ SHARD answers it.
fn shard_state(card: &mut BoxCard, s: u16) -> Vec<u8> {
    let [p1, p2] = s.to_be_bytes();
    ok(&card.transmit(&[0x80, ins::READ_SHARD, p1, p2, 0x00]))
}

/// A box with Alice's meter at slot 1 (shard 0) funded with 10,000 and Bob's at slot 17
/// (shard 1) funded with 5,000.
fn funded() -> (BoxCard, Dc) {
    let (mut card, mut dc) = new_box();
    create(&mut card, &mut dc, 1, ALICE, b"VM000001");
    create(&mut card, &mut dc, 17, BOB, b"VM000017");
    refill(&mut card, &mut dc, 1, ALICE, 10_000);
    refill(&mut card, &mut dc, 17, BOB, 5_000);
    dc.card_nvm = card.store().nvm().clone();
    (card, dc)
}

/// A refusal answers only its status word and writes nothing.
fn refused_unchanged(card: &mut BoxCard, cmd: &[u8], status: Status) {
    let writes = card.store().writes();
    let before: Vec<_> = (0..SHARDS).map(|s| shard_state(card, s)).collect();
    refused(&card.transmit(cmd), status);
    assert_eq!(card.store().writes(), writes, "a refusal writes nothing");
    let after: Vec<_> = (0..SHARDS).map(|s| shard_state(card, s)).collect();
    assert_eq!(before, after);
}

#[test]
fn fig4_steps_200_to_265_issue_an_indicium_the_post_office_verifies() {
    let (mut card, mut dc) = funded();
    let before = dc.record(1);
    // The sizes docs/apdu.md §11 and docs/virtual-meter.md §3 give (origin of 5 characters).
    assert_eq!(
        dc.records[&1].len(),
        223 + 5,
        "a record before its first indicium"
    );
    let cmd = issue_cmd(&dc, 1, ALICE, &request(1, 250));
    assert_eq!(cmd.len() - 9, 22 + 228 + 32 * usize::from(DEPTH) + 34);
    assert_eq!(
        (before.dr, before.control_sum),
        (Amount(10_000), Amount(10_000))
    );
    // 200 record in ... 265 record back: one command.
    let reply = issue(&mut card, &mut dc, 1, ALICE, &request(1, 250));
    let after = dc.record(1);
    assert_eq!(dc.records[&1].len(), 275 + 5, "a record that has issued");
    assert_eq!(reply.indicium.len(), 118 + 10);
    // 240: AR+, DR−, pieces+, the update counter+.
    assert_eq!(
        (after.ar, after.dr, after.pieces),
        (Amount(250), Amount(9_750), PieceCount(1))
    );
    assert_eq!(after.update_counter, before.update_counter + 1);
    assert_eq!(after.control_sum, before.control_sum);
    // 255: today's indicium, today's verifier, the meter's key; device ID = meter ID.
    let data = indicium::verify(&reply.indicium, &after.public_key).unwrap();
    assert_eq!(data.device, DeviceId(*b"VM000001"));
    assert_eq!(
        (data.ar, data.dr, data.pieces),
        (after.ar, after.dr, after.pieces)
    );
    assert_eq!(data.postage, Amount(250));
    // 245/250: the box holds the new root, the previous one kept.
    let state = shard_state(&mut card, 0);
    assert_eq!(&state[..32], &dc.root(1));
    assert_eq!(state.len(), 104);
    // A second piece on the new record.
    let second = issue(&mut card, &mut dc, 1, ALICE, &request(2, 100));
    let d2 = indicium::verify(&second.indicium, &after.public_key).unwrap();
    assert_eq!((d2.dr, d2.pieces), (Amount(9_650), PieceCount(2)));
    // Bob's meter in shard 1 is untouched and still prints.
    issue(&mut card, &mut dc, 17, BOB, &request(1, 500));
    assert_eq!(dc.record(17).dr, Amount(4_500));
}

#[test]
fn a_retry_with_the_same_transaction_id_returns_the_same_bytes_charged_once() {
    let (mut card, mut dc) = funded();
    let first = issue(&mut card, &mut dc, 1, ALICE, &request(7, 300));
    let writes = card.store().writes();
    let again = ok(&card.transmit(&issue_cmd(&dc, 1, ALICE, &request(7, 300))));
    let again = IssueReply::decode(&again).unwrap();
    assert_eq!(
        (&again.root, &again.record, &again.indicium),
        (&first.root, &first.record, &first.indicium),
        "same root, record and indicium"
    );
    let t = TransactionRecord::verify(&again.transaction, &dc.txn_key).unwrap();
    assert_eq!((t.kind, t.amount), (txn::KIND_REPRINT, Amount(0)));
    assert_eq!(card.store().writes(), writes, "a reprint writes nothing");
    assert_eq!(dc.record(1).dr, Amount(9_700));
    // A refill in between raises DR; the reprint still shows the DR the indicium had.
    refill(&mut card, &mut dc, 1, ALICE, 1_000);
    let after_refill = ok(&card.transmit(&issue_cmd(&dc, 1, ALICE, &request(7, 300))));
    let after_refill = IssueReply::decode(&after_refill).unwrap();
    assert_eq!(after_refill.indicium, first.indicium);
    assert_eq!(dc.record(1).dr, Amount(10_700));
    // The same ID with other data: refused.
    refused_unchanged(
        &mut card,
        &issue_cmd(&dc, 1, ALICE, &request(7, 301)),
        Status::TransactionIdReused,
    );
}

#[test]
fn resume_after_a_crash_between_the_box_commit_and_the_database() {
    let (mut card, mut dc) = funded();
    let cmd = issue_cmd(&dc, 1, ALICE, &request(3, 400));
    let lost = ok(&card.transmit(&cmd)); // the database never committed this answer
    let writes = card.store().writes();
    // The same ISSUE again: the old record no longer proves the root: refused (alarm).
    refused_unchanged(&mut card, &cmd, Status::RecordStale);
    // RESUME with the same data: identical bytes, nothing written, nothing debited again.
    let mut resume = cmd.clone();
    resume[1] = ins::RESUME;
    resume[2] = ins::ISSUE_INDICIUM;
    assert_eq!(ok(&card.transmit(&resume)), lost);
    assert_eq!(ok(&card.transmit(&resume)), lost, "as often as needed");
    assert_eq!(card.store().writes(), writes);
    // After a power cycle too.
    let mut card = reopen(card.store().nvm());
    assert_eq!(ok(&card.transmit(&resume)), lost);
    // RESUME of another request: nothing to resume.
    let mut other = issue_cmd(&dc, 1, ALICE, &request(4, 400));
    other[1] = ins::RESUME;
    other[2] = ins::ISSUE_INDICIUM;
    refused_unchanged(&mut card, &other, Status::NothingToResume);
    // The database commits the answer; the meter goes on with one debit.
    dc.commit(&lost);
    assert_eq!(dc.record(1).dr, Amount(9_600));
    issue(&mut card, &mut dc, 1, ALICE, &request(5, 100));
    assert_eq!(dc.record(1).dr, Amount(9_500));
    // Once the shard moved on, the old request cannot be resumed.
    refused_unchanged(&mut card, &resume, Status::NothingToResume);
}

#[test]
fn resume_of_create_meter_and_refill_gives_the_same_bytes() {
    let (mut card, mut dc) = new_box();
    let cmd = create_cmd(&dc, 2, ALICE, b"VM000002");
    let lost = ok(&card.transmit(&cmd));
    let mut resume = cmd.clone();
    resume[1] = ins::RESUME;
    resume[2] = ins::CREATE_METER;
    assert_eq!(ok(&card.transmit(&resume)), lost, "same key, same record");
    refused_unchanged(&mut card, &cmd, Status::RecordStale); // the slot is no longer empty
    dc.commit(&lost);
    let cmd = refill_cmd(&dc, 2, ALICE, 700);
    let lost = ok(&card.transmit(&cmd));
    let mut resume = cmd.clone();
    resume[1] = ins::RESUME;
    resume[2] = ins::REFILL;
    assert_eq!(ok(&card.transmit(&resume)), lost);
    dc.commit(&lost);
    assert_eq!(dc.record(2).dr, Amount(700));
}

#[test]
fn an_old_record_put_back_is_refused() {
    let (mut card, mut dc) = funded();
    let saved = dc.clone(); // a copy of the database after the refill
    issue(&mut card, &mut dc, 1, ALICE, &request(1, 9_000));
    // The old record with its old proof, and with today's siblings: both stale.
    refused_unchanged(
        &mut card,
        &issue_cmd(&saved, 1, ALICE, &request(2, 9_000)),
        Status::RecordStale,
    );
    let mut mixed = dc.clone();
    mixed.records.insert(1, saved.records[&1].clone());
    refused_unchanged(
        &mut card,
        &issue_cmd(&mixed, 1, ALICE, &request(2, 9_000)),
        Status::RecordStale,
    );
    // A whole database restored from the backup, replayed as a retry of its last refill: stale.
    refused_unchanged(
        &mut card,
        &refill_cmd(&saved, 1, ALICE, 1),
        Status::RecordStale,
    );
    assert_eq!(dc.record(1).dr, Amount(1_000));
}

#[test]
fn a_record_moved_swapped_or_edited_is_refused() {
    let (mut card, dc) = funded();
    // Alice's record presented at Bob's slot (with Bob's proof).
    let mut moved = dc.clone();
    moved.records.insert(17, dc.records[&1].clone());
    refused_unchanged(
        &mut card,
        &issue_cmd(&moved, 17, ALICE, &request(1, 10)),
        Status::RecordWrongSlot,
    );
    // Bob's record asked for by Alice's session.
    refused_unchanged(
        &mut card,
        &issue_cmd(&dc, 17, ALICE, &request(1, 10)),
        Status::RecordNotOwned,
    );
    // A register byte edited (DR raised): the MAC fails.
    let mut edited = dc.clone();
    let mut rec = dc.record(1);
    rec.dr = Amount(1_000_000);
    rec.control_sum = Amount(1_000_000);
    let mut bytes = rec.encode_body();
    bytes.extend_from_slice(&dc.records[&1][dc.records[&1].len() - 16..]);
    edited.records.insert(1, bytes);
    refused_unchanged(
        &mut card,
        &issue_cmd(&edited, 1, ALICE, &request(1, 10)),
        Status::RecordUnauthentic,
    );
    // Every single bit of the record flipped: refused, nothing written.
    for bit in (0..dc.records[&1].len() * 8).step_by(37) {
        let mut e = dc.clone();
        e.records.get_mut(&1).unwrap()[bit / 8] ^= 1 << (bit % 8);
        let resp = card.transmit(&issue_cmd(&e, 1, ALICE, &request(1, 10)));
        assert!(
            [Status::RecordUnauthentic.sw(), Status::WrongLength.sw()].contains(&sw(&resp)),
            "bit {bit}: {:04X}",
            sw(&resp)
        );
    }
    // An inner node edited (one sibling of the proof): the path fails.
    let mut data = issue_data(1, &ALICE, &dc.records[&1], &dc.proof(1), &request(1, 10));
    let at = 4 + 16 + 2 + dc.records[&1].len() + 32 * 2;
    data[at] ^= 1;
    refused_unchanged(
        &mut card,
        &apdu(ins::ISSUE_INDICIUM, 0, 0, &data),
        Status::RecordStale,
    );
    // The untouched record still prints.
    let mut dc = dc;
    issue(&mut card, &mut dc, 1, ALICE, &request(1, 10));
}

#[test]
fn money_rules_and_refills() {
    let (mut card, mut dc) = funded();
    refused_unchanged(
        &mut card,
        &issue_cmd(&dc, 17, BOB, &request(1, 5_001)),
        Status::InsufficientFunds,
    );
    refused_unchanged(
        &mut card,
        &issue_cmd(&dc, 1, ALICE, &request(1, 10_001)),
        Status::PostageAboveLimit,
    );
    refused_unchanged(
        &mut card,
        &issue_cmd(&dc, 1, ALICE, &request(1, 0)),
        Status::WrongData,
    );
    let mut far = request(1, 10);
    far.date = Date::new(2026, 12, 30).unwrap();
    refused_unchanged(
        &mut card,
        &issue_cmd(&dc, 1, ALICE, &far),
        Status::DateTooFarAhead,
    );
    // A refill message applied once: the same message again is a replay.
    let cmd = refill_cmd(&dc, 17, BOB, 100);
    let out = ok(&card.transmit(&cmd));
    let old = dc.clone();
    dc.commit(&out);
    let rec = dc.record(17);
    assert_eq!(
        (rec.dr, rec.control_sum, rec.refills),
        (Amount(5_100), Amount(5_100), RefillCount(2))
    );
    let mut data = issue_prefix(&dc, 17, BOB);
    let msg_at = cmd.len() - 2 - 106;
    data.extend_from_slice(&cmd[msg_at..cmd.len() - 2]);
    refused_unchanged(
        &mut card,
        &apdu(ins::REFILL, 0, 0, &data),
        Status::RefillReplayed,
    );
    // The old record with that message: stale before anything else.
    refused_unchanged(&mut card, &cmd, Status::RecordStale);
    let _ = old;
    // Above the maximum DR; signed by another key.
    refused_unchanged(
        &mut card,
        &refill_cmd(&dc, 17, BOB, 1_000_000),
        Status::RefillAboveLimit,
    );
    let mut forged = issue_prefix(&dc, 17, BOB);
    let rec = dc.record(17);
    forged.extend_from_slice(
        &RefillCombination {
            device: rec.meter,
            license: rec.license,
            amount: Amount(5),
            control_sum: rec.control_sum,
            refills: rec.refills,
            combination_id: [1; 8],
        }
        .sign(&vendor()),
    );
    refused_unchanged(
        &mut card,
        &apdu(ins::REFILL, 0, 0, &forged),
        Status::SecurityStatusNotSatisfied,
    );
}

#[test]
fn create_meter_needs_the_vendors_grant_for_this_box_and_an_empty_slot() {
    let (mut card, mut dc) = new_box();
    let g = grant(3, ALICE, b"VM000003");
    let forged = g.sign(&kms());
    refused_unchanged(
        &mut card,
        &apdu(
            ins::CREATE_METER,
            0,
            0,
            &create_meter_data(&forged, &dc.proof(3)),
        ),
        Status::SecurityStatusNotSatisfied,
    );
    let other_box = MeterGrant {
        box_id: DeviceId(*b"VBOX0002"),
        ..g.clone()
    }
    .sign(&vendor());
    refused_unchanged(
        &mut card,
        &apdu(
            ins::CREATE_METER,
            0,
            0,
            &create_meter_data(&other_box, &dc.proof(3)),
        ),
        Status::WrongDevice,
    );
    let beyond = MeterGrant {
        slot: 64,
        ..g.clone()
    }
    .sign(&vendor());
    refused_unchanged(
        &mut card,
        &apdu(
            ins::CREATE_METER,
            0,
            0,
            &create_meter_data(&beyond, &dc.proof(3)),
        ),
        Status::WrongData,
    );
    create(&mut card, &mut dc, 3, ALICE, b"VM000003");
    // The same grant again: the slot is not empty any more.
    refused_unchanged(
        &mut card,
        &create_cmd(&dc, 3, ALICE, b"VM000003"),
        Status::RecordStale,
    );
    // A grant for a filled slot, with the proof of an empty neighbour: refused.
    let mut lie = dc.clone();
    lie.trees[0] = ShardTree::new(DEPTH);
    refused_unchanged(
        &mut card,
        &create_cmd(&lie, 3, BOB, b"VM000099"),
        Status::RecordStale,
    );
    let rec = dc.record(3);
    assert_eq!(
        (rec.ar, rec.dr, rec.pieces),
        (Amount(0), Amount(0), PieceCount(0))
    );
    // Registers start at zero: nothing prints before a refill.
    refused_unchanged(
        &mut card,
        &issue_cmd(&dc, 3, ALICE, &request(1, 1)),
        Status::InsufficientFunds,
    );
}

#[test]
fn refusals_before_personalization_and_bad_apdus() {
    let mut card = vbox_card(MemStore::new(), SeededPlatform::new(SEED)).unwrap();
    select(&mut card);
    assert_eq!(ok(&card.transmit(&[0x80, 0xCA, 0x00, 0x01, 0x00])), [0]);
    refused(
        &card.transmit(&[0x80, 0xCA, 0x00, 0x02, 0x00]),
        Status::ConditionsNotSatisfied,
    );
    refused(
        &card.transmit(&[0x80, ins::READ_SHARD, 0, 0, 0]),
        Status::ConditionsNotSatisfied,
    );
    refused(
        &card.transmit(&[0x80, 0x99, 0, 0, 0]),
        Status::InstructionNotSupported,
    );
    refused(
        &card.transmit(&[0x00, ins::ISSUE_INDICIUM, 0, 0, 0]),
        Status::ClassNotSupported,
    );
    refused(
        &card.transmit(&apdu(ins::RESUME, 0x52 + 1, 0, &[])),
        Status::IncorrectP1P2,
    );
    let mut bad = personalize_data();
    bad[9] = 0; // zero shards
    bad[8] = 0;
    refused(
        &card.transmit(&apdu(ins::PERSONALIZE, 0, 0, &bad)),
        Status::WrongData,
    );
    let (mut card, _) = new_box();
    let info = ok(&card.transmit(&[0x80, 0xCA, 0x00, 0x01, 0x00]));
    assert_eq!(&info[..9], b"\x01VBOX0001");
    assert_eq!(info.len(), 81);
    refused(
        &card.transmit(&apdu(ins::PERSONALIZE, 0, 0, &personalize_data())),
        Status::ConditionsNotSatisfied,
    );
    refused(
        &card.transmit(&[0x80, ins::READ_SHARD, 0, 4, 0]),
        Status::ReferencedDataNotFound,
    );
}

/// Runs `cmd` on boxes re-opened from `base`, cutting power at its write k = 0, 1, ...
/// (clean, then torn) until it completes uncut; `check` gets the box re-opened from what
/// the cut left. Returns the number of cuts.
fn sweep(base: &Nvm, cmd: &[u8], mut check: impl FnMut(BoxCard, &str)) -> usize {
    let uncut = ok(&reopen(base).transmit(cmd));
    let mut cuts = 0;
    for torn in [false, true] {
        for k in 0.. {
            let mut card = reopen(base);
            let start = card.store().writes();
            card.store_mut().set_power_cut(Some(PowerCut {
                at_write: start + k,
                torn,
            }));
            let resp = card.transmit(cmd);
            if !card.store().is_dead() {
                assert_eq!(ok(&resp), uncut, "uncut: the same bytes");
                break;
            }
            cuts += 1;
            let at = format!("cut {k} torn {torn}");
            // Nothing leaves a box whose commit did not complete.
            assert_eq!(resp, Status::MemoryFailure.sw().to_be_bytes(), "{at}");
            check(reopen(card.store().nvm()), &at);
        }
    }
    assert!(cuts > 0);
    cuts
}

/// After a cut, the box is before the command (the command runs again, same bytes) or after
/// it (RESUME gives the same bytes); never anything else.
fn before_or_after(cmd: &[u8], resumed_ins: u8, base: &Nvm) -> usize {
    let uncut = ok(&reopen(base).transmit(cmd));
    let mut resume = cmd.to_vec();
    resume[1] = ins::RESUME;
    resume[2] = resumed_ins;
    let (mut befores, mut afters) = (0, 0);
    let cuts = sweep(base, cmd, |mut card, at| {
        let r = card.transmit(&resume);
        if sw(&r) == 0x9000 {
            assert_eq!(ok(&r), uncut, "{at}: after, RESUME gives the same bytes");
            afters += 1;
        } else {
            refused(&r, Status::NothingToResume);
            assert_eq!(
                ok(&card.transmit(cmd)),
                uncut,
                "{at}: before, the command runs"
            );
            befores += 1;
        }
    });
    assert!(befores > 0, "some cut lands before the commit point");
    cuts
}

#[test]
fn tearing_at_every_write_of_every_command() {
    let (card, dc) = new_box();
    let base = card.store().nvm().clone();
    let mut cuts = before_or_after(
        &create_cmd(&dc, 1, ALICE, b"VM000001"),
        ins::CREATE_METER,
        &base,
    );
    let (card, dc) = funded();
    let base = card.store().nvm().clone();
    cuts += before_or_after(&refill_cmd(&dc, 1, ALICE, 50), ins::REFILL, &base);
    cuts += before_or_after(
        &issue_cmd(&dc, 1, ALICE, &request(1, 10)),
        ins::ISSUE_INDICIUM,
        &base,
    );
    cuts += before_or_after(
        &batch_cmd(&dc, 1, ALICE, &requests(1, 4, 10)),
        ins::ISSUE_BATCH,
        &base,
    );
    // PERSONALIZE: blank or personalized, never half.
    let mut blank = vbox_card(MemStore::new(), SeededPlatform::new(SEED)).unwrap();
    select(&mut blank);
    let base = blank.store().nvm().clone();
    cuts += sweep(
        &base,
        &apdu(ins::PERSONALIZE, 0, 0, &personalize_data()),
        |mut card, at| {
            let info = ok(&card.transmit(&[0x80, 0xCA, 0x00, 0x01, 0x00]));
            assert!(info == [0] || info.len() == 81, "{at}");
        },
    );
    println!("vbox tearing: {cuts} cut points checked");
}

#[test]
fn transaction_records_chain_per_shard_and_reprints_move_nothing() {
    let (mut card, mut dc) = funded();
    issue(&mut card, &mut dc, 1, ALICE, &request(1, 250));
    issue(&mut card, &mut dc, 17, BOB, &request(1, 100));
    let reprint = issue(&mut card, &mut dc, 1, ALICE, &request(1, 250));
    issue(&mut card, &mut dc, 1, ALICE, &request(2, 50));
    // Per shard: sequences 1, 2, 3, ... and each root before is the root after of the
    // record before it; a reprint keeps the root and the sequence.
    for shard in 0..SHARDS {
        let mut seq = 0;
        let mut root = ShardTree::new(DEPTH).root();
        for t in dc.ledger.iter().filter(|t| t.shard == shard) {
            assert_eq!(t.box_id, BOX_ID);
            assert_eq!(t.root_before, root, "chain of roots in shard {shard}");
            if t.kind == txn::KIND_REPRINT {
                assert_eq!((t.sequence, t.root_after, t.amount), (seq, root, Amount(0)));
            } else {
                assert_eq!(t.sequence, seq + 1);
            }
            seq = t.sequence;
            root = t.root_after;
        }
        assert_eq!(&shard_state(&mut card, shard)[..32], &root);
    }
    let kinds: Vec<u8> = dc.ledger.iter().map(|t| t.kind).collect();
    assert_eq!(
        kinds,
        [
            txn::KIND_CREATE,
            txn::KIND_CREATE,
            txn::KIND_REFILL,
            txn::KIND_REFILL,
            txn::KIND_ISSUE,
            txn::KIND_ISSUE,
            txn::KIND_REPRINT,
            txn::KIND_ISSUE
        ]
    );
    let t = TransactionRecord::verify(&reprint.transaction, &dc.txn_key).unwrap();
    assert_eq!(
        t.digest, dc.ledger[4].digest,
        "the reprint names the same indicium"
    );
    // An edited transaction record does not verify.
    let mut bad = reprint.transaction.clone();
    bad[30] ^= 1;
    assert!(TransactionRecord::verify(&bad, &dc.txn_key).is_err());
}

#[test]
fn a_batch_issues_its_pieces_with_one_commit_and_one_chained_record_each() {
    let (mut card, mut dc) = funded();
    let w0 = card.store().writes();
    issue(&mut card, &mut dc, 1, ALICE, &request(1, 100));
    let writes = card.store().writes();
    let per_command = writes - w0;
    let before = dc.record(1);
    let reqs: Vec<_> = (0..MAX_BATCH)
        .map(|k| request(10 + u8::try_from(k).unwrap(), 10 * (k as u64 + 1)))
        .collect();
    let sum: u64 = reqs.iter().map(|r| r.postage.0).sum();
    let cmd = batch_cmd(&dc, 1, ALICE, &reqs);
    let out = ok(&card.transmit(&cmd));
    assert!(out.len() <= 8192, "within the chain limit: {}", out.len());
    assert_eq!(
        card.store().writes(),
        writes + per_command,
        "one commit for the batch, as for one piece"
    );
    let reply = dc.commit_batch(&out);
    assert_eq!(reply.pieces.len(), MAX_BATCH);
    let after = dc.record(1);
    assert_eq!(after.dr.0, before.dr.0 - sum);
    assert_eq!(after.ar.0, before.ar.0 + sum);
    assert_eq!(
        after.pieces.0,
        before.pieces.0 + u32::try_from(MAX_BATCH).unwrap()
    );
    // READ SHARD names the batch's last record: its sequence and root.
    let state = shard_state(&mut card, 0);
    let last = dc.ledger.last().unwrap();
    assert_eq!(&state[..32], &last.root_after);
    assert_eq!(state[96..104], last.sequence.to_be_bytes());
    // The last piece's ID through ISSUE INDICIUM is a reprint of the batch's last indicium.
    let reprint = issue(&mut card, &mut dc, 1, ALICE, &reqs[MAX_BATCH - 1]);
    assert_eq!(reprint.indicium, reply.pieces[MAX_BATCH - 1].indicium);
    // The meter goes on, single pieces and batches.
    issue(&mut card, &mut dc, 1, ALICE, &request(40, 5));
    let out = ok(&card.transmit(&batch_cmd(&dc, 1, ALICE, &requests(50, 2, 7))));
    dc.commit_batch(&out);
    assert_eq!(dc.record(1).dr.0, before.dr.0 - sum - 5 - 14);
}

#[test]
fn a_batch_is_refused_whole_and_nothing_is_charged() {
    let (mut card, mut dc) = funded();
    // Alice has 10,000; each piece is within the 10,000 limit, the sum is not covered.
    let cmd = batch_cmd(&dc, 1, ALICE, &requests(1, 3, 4_000));
    refused_unchanged(&mut card, &cmd, Status::InsufficientFunds);
    // One piece above the per-piece limit.
    let mut reqs = requests(1, 3, 100);
    reqs[2].postage = Amount(10_001);
    refused_unchanged(
        &mut card,
        &batch_cmd(&dc, 1, ALICE, &reqs),
        Status::PostageAboveLimit,
    );
    // A piece dated before the one before it.
    let mut reqs = requests(1, 3, 100);
    reqs[1].date = Date::new(2026, 11, 29).unwrap();
    refused_unchanged(
        &mut card,
        &batch_cmd(&dc, 1, ALICE, &reqs),
        Status::DateBeforeLastUsed,
    );
    // One transaction ID twice, or the record's last one.
    let mut reqs = requests(1, 3, 100);
    reqs[2].transaction = reqs[0].transaction;
    refused_unchanged(
        &mut card,
        &batch_cmd(&dc, 1, ALICE, &reqs),
        Status::TransactionIdReused,
    );
    issue(&mut card, &mut dc, 1, ALICE, &request(9, 100));
    refused_unchanged(
        &mut card,
        &batch_cmd(&dc, 1, ALICE, &requests(8, 2, 100)),
        Status::TransactionIdReused,
    );
    // No piece, or more than the bound.
    refused_unchanged(&mut card, &batch_cmd(&dc, 1, ALICE, &[]), Status::WrongData);
    refused_unchanged(
        &mut card,
        &batch_cmd(&dc, 1, ALICE, &requests(20, MAX_BATCH + 1, 1)),
        Status::WrongData,
    );
    // Truncated or trailing bytes.
    let mut short = batch_data(
        1,
        &ALICE,
        &dc.records[&1],
        &dc.proof(1),
        &requests(20, 2, 1),
    );
    short.pop();
    refused_unchanged(
        &mut card,
        &apdu(ins::ISSUE_BATCH, 0, 0, &short),
        Status::WrongLength,
    );
    // Another mailer's record, an edited record, an old record.
    refused_unchanged(
        &mut card,
        &batch_cmd(&dc, 1, BOB, &requests(20, 2, 1)),
        Status::RecordNotOwned,
    );
    let mut edited = dc.clone();
    let r = edited.records.get_mut(&1).unwrap();
    r[40] ^= 1;
    refused_unchanged(
        &mut card,
        &batch_cmd(&edited, 1, ALICE, &requests(20, 2, 1)),
        Status::RecordUnauthentic,
    );
    let old = dc.clone();
    let out = ok(&card.transmit(&batch_cmd(&dc, 1, ALICE, &requests(20, 2, 1))));
    dc.commit_batch(&out);
    refused_unchanged(
        &mut card,
        &batch_cmd(&old, 1, ALICE, &requests(30, 2, 1)),
        Status::RecordStale,
    );
    assert_eq!(dc.record(1).dr, Amount(10_000 - 100 - 2));
}

#[test]
fn resume_of_a_batch_gives_the_same_bytes_charged_once() {
    let (mut card, mut dc) = funded();
    let cmd = batch_cmd(&dc, 1, ALICE, &requests(1, 5, 300));
    let lost = ok(&card.transmit(&cmd));
    let writes = card.store().writes();
    refused_unchanged(&mut card, &cmd, Status::RecordStale);
    let mut resume = cmd.clone();
    resume[1] = ins::RESUME;
    resume[2] = ins::ISSUE_BATCH;
    assert_eq!(ok(&card.transmit(&resume)), lost);
    assert_eq!(card.store().writes(), writes, "RESUME writes nothing");
    let mut card = reopen(card.store().nvm());
    assert_eq!(ok(&card.transmit(&resume)), lost, "after a power cycle too");
    // RESUME of the batch as a single ISSUE (its data does not parse as one), or of another
    // batch (nothing to resume).
    let mut as_issue = resume.clone();
    as_issue[2] = ins::ISSUE_INDICIUM;
    refused_unchanged(&mut card, &as_issue, Status::WrongData);
    let mut other = batch_cmd(&dc, 1, ALICE, &requests(1, 4, 300));
    other[1] = ins::RESUME;
    other[2] = ins::ISSUE_BATCH;
    refused_unchanged(&mut card, &other, Status::NothingToResume);
    dc.commit_batch(&lost);
    assert_eq!(dc.record(1).dr, Amount(10_000 - 1_500));
    issue(&mut card, &mut dc, 1, ALICE, &request(9, 100));
    refused_unchanged(&mut card, &resume, Status::NothingToResume);
}

// ---------------------------------------------------------------- the authentication box

use openpsd_core::records::vbox as rec;
use openpsd_core::store::{Store, Transaction};
use openpsd_core::vbox::auth::{authenticate_data, enroll_data};

fn enroll_cmd(mailer: &[u8; 16], hash: &[u8; 32]) -> Vec<u8> {
    apdu(ins::ENROLL_MAILER, 0, 0, &enroll_data(mailer, hash))
}

fn authenticate_cmd(mailer: &[u8; 16], hash: &[u8; 32], verifier: &[u8; 16]) -> Vec<u8> {
    apdu(
        ins::AUTHENTICATE_MAILER,
        0,
        0,
        &authenticate_data(mailer, hash, verifier),
    )
}

fn enroll(card: &mut BoxCard, mailer: &[u8; 16], hash: &[u8; 32]) -> [u8; 16] {
    ok(&card.transmit(&enroll_cmd(mailer, hash)))
        .try_into()
        .expect("a 16-byte verifier")
}

/// The box's configuration record rewritten as version 1 (no `K_auth`): a box
/// personalized before the authentication box existed. The layout of version 1 is version
/// 2 without its last 32 bytes (the fixture below pins it).
fn as_version_1(card: &mut BoxCard) -> Nvm {
    let v2 = card.store().read(rec::CONFIG).unwrap().unwrap();
    assert_eq!(v2[0], 2);
    let mut v1 = v2[..v2.len() - 32].to_vec();
    v1[0] = 1;
    let mut txn = Transaction::begin(card.store_mut());
    txn.write(rec::CONFIG, v1);
    txn.commit().unwrap();
    card.store().nvm().clone()
}

/// Seed 001, Fig. 3, steps 115–120: the function server sends the mailer's information to
/// the authentication box, which authenticates the mailer. The verifier is made inside
/// under `K_auth` and checked there; neither command writes.
#[test]
fn fig3_steps_115_120_the_box_authenticates_the_mailer_by_its_verifier() {
    let (mut card, _) = new_box();
    let (right, wrong) = ([0x5A; 32], [0x5B; 32]);
    let writes = card.store().writes();
    let v = enroll(&mut card, &ALICE, &right);
    assert_eq!(enroll(&mut card, &ALICE, &right), v, "deterministic");
    assert_ne!(enroll(&mut card, &BOB, &right), v, "bound to the mailer");
    ok(&card.transmit(&authenticate_cmd(&ALICE, &right, &v)));
    assert_eq!(card.store().writes(), writes, "neither command writes");

    let no = Status::MailerNotAuthenticated;
    refused_unchanged(&mut card, &authenticate_cmd(&ALICE, &wrong, &v), no);
    refused_unchanged(&mut card, &authenticate_cmd(&BOB, &right, &v), no);
    let mut edited = v;
    edited[15] ^= 0x80;
    refused_unchanged(&mut card, &authenticate_cmd(&ALICE, &right, &edited), no);
    // Another box (other keys) does not accept this box's verifier.
    let mut other = vbox_card(MemStore::new(), SeededPlatform::new(SEED + 1)).unwrap();
    select(&mut other);
    ok(&other.transmit(&apdu(ins::PERSONALIZE, 0, 0, &personalize_data())));
    refused(&other.transmit(&authenticate_cmd(&ALICE, &right, &v)), no);

    // Bad APDUs: a clear status word, nothing written.
    let mut short = authenticate_data(&ALICE, &right, &v);
    short.pop();
    refused_unchanged(
        &mut card,
        &apdu(ins::AUTHENTICATE_MAILER, 0, 0, &short),
        Status::WrongLength,
    );
    let mut long = enroll_data(&ALICE, &right);
    long.push(0);
    refused_unchanged(
        &mut card,
        &apdu(ins::ENROLL_MAILER, 0, 0, &long),
        Status::WrongLength,
    );
    refused_unchanged(
        &mut card,
        &apdu(ins::ENROLL_MAILER, 1, 0, &enroll_data(&ALICE, &right)),
        Status::IncorrectP1P2,
    );
    let mut blank = vbox_card(MemStore::new(), SeededPlatform::new(SEED)).unwrap();
    select(&mut blank);
    refused(
        &blank.transmit(&enroll_cmd(&ALICE, &right)),
        Status::ConditionsNotSatisfied,
    );
}

/// A box personalized before `K_auth` (configuration version 1) keeps its meters: it
/// authenticates no one until its first ENROLL MAILER, which generates the key and
/// commits the configuration as version 2 before the verifier leaves. Every record made
/// before goes on working, and a power cut at every write of that upgrade leaves the box
/// as it was or upgraded, never without its keys.
#[test]
fn a_box_of_configuration_1_gets_k_auth_at_its_first_enrollment_and_keeps_its_meters() {
    let (mut card, mut dc) = funded();
    let base = as_version_1(&mut card);
    let mut card = reopen(&base);
    let h = [0x42; 32];
    refused_unchanged(
        &mut card,
        &authenticate_cmd(&ALICE, &h, &[0; 16]),
        Status::MailerNotAuthenticated,
    );
    let cuts = sweep(&base, &enroll_cmd(&ALICE, &h), |mut card, at| {
        let cfg = card.store().read(rec::CONFIG).unwrap().unwrap();
        assert!(cfg[0] == 1 || cfg[0] == 2, "{at}: version {}", cfg[0]);
        let v = enroll(&mut card, &ALICE, &h);
        ok(&card.transmit(&authenticate_cmd(&ALICE, &h, &v)));
    });
    assert!(cuts > 0);
    let v = enroll(&mut card, &ALICE, &h);
    let cfg = card.store().read(rec::CONFIG).unwrap().unwrap();
    assert_eq!(cfg[0], 2);
    let before = base.clone();
    let old = reopen(&before).store().read(rec::CONFIG).unwrap().unwrap();
    assert_eq!(cfg.len(), old.len() + 32);
    assert_eq!(cfg[1..old.len()], old[1..], "every key of version 1 kept");
    let writes = card.store().writes();
    assert_eq!(enroll(&mut card, &ALICE, &h), v, "K_auth is generated once");
    assert_eq!(card.store().writes(), writes);
    ok(&card.transmit(&authenticate_cmd(&ALICE, &h, &v)));
    // A meter created and funded before the upgrade still issues.
    dc.card_nvm = card.store().nvm().clone();
    let dr = dc.record(1).dr;
    issue(&mut card, &mut dc, 1, ALICE, &request(1, 10));
    assert_eq!(dc.record(1).dr, Amount(dr.0 - 10));
}

/// The frozen version-1 configuration record (`tests/state/vbox/config-v1.hex`, layout 1 as
/// every box personalized before stop 39 stores it): still read, and upgraded in place by
/// ENROLL MAILER.
#[test]
fn the_frozen_version_1_configuration_is_read_and_upgraded() {
    let hex_text = include_str!("../../tests/state/vbox/config-v1.hex");
    let v1 = hex::decode(hex_text.trim()).unwrap();
    assert_eq!(v1[0], 1);
    let mut store = MemStore::new();
    let mut txn = Transaction::begin(&mut store);
    txn.write(rec::CONFIG, v1.clone());
    txn.commit().unwrap();
    let mut card = reopen(store.nvm());
    let info = ok(&card.transmit(&[0x80, 0xCA, 0x00, 0x01, 0x00]));
    assert_eq!(info[0], 1, "personalized");
    assert_eq!(info[1..9], v1[1..9], "its box ID");
    let v = enroll(&mut card, &BOB, &[9; 32]);
    ok(&card.transmit(&authenticate_cmd(&BOB, &[9; 32], &v)));
    let v2 = card.store().read(rec::CONFIG).unwrap().unwrap();
    assert_eq!((v2[0], v2.len()), (2, v1.len() + 32));
}

use openpsd_core::vbox::login::{LoginRecord, LOGIN_RECORD_LEN};

fn log_in_cmd(mailer: &[u8; 16], hash: &[u8; 32], verifier: &[u8; 16], time: u64) -> Vec<u8> {
    let mut d = authenticate_data(mailer, hash, verifier);
    d.extend_from_slice(&time.to_be_bytes());
    apdu(ins::AUTHENTICATE_MAILER, 1, 0, &d)
}

/// GET DATA 00 02: the box's count of approved log-ins.
fn login_count(card: &mut BoxCard) -> u64 {
    let d = ok(&card.transmit(&[0x80, 0xCA, 0x00, 0x02, 0x00]));
    u64::from_be_bytes(d.try_into().unwrap())
}

/// Seed 001, the transaction box 42's "logins and login history records": an approved
/// log-in asked with P1 = 01 is counted, committed, and answered as a record the box signs
/// (box ID, sequence, mailer, the data center's time); a refused one writes nothing. The
/// sequence survives power-off, and a power cut at every write leaves the count as it was
/// (nothing answered) or one more, never a record whose sequence the box could sign again.
#[test]
fn approved_log_ins_are_counted_and_signed_by_the_box() {
    let (mut card, dc) = new_box();
    let info = ok(&card.transmit(&[0x80, 0xCA, 0x00, 0x01, 0x00]));
    let box_id = &info[1..9];
    let h = [0x61; 32];
    let v = enroll(&mut card, &ALICE, &h);
    assert_eq!(login_count(&mut card), 0, "no log-in yet");
    let first = ok(&card.transmit(&log_in_cmd(&ALICE, &h, &v, 1_780_000_000)));
    assert_eq!(login_count(&mut card), 1);
    assert_eq!(first.len(), LOGIN_RECORD_LEN);
    let l = LoginRecord::verify(&first, &dc.txn_key).unwrap();
    assert_eq!(
        (&l.box_id.0[..], l.sequence, l.mailer, l.time),
        (box_id, 1, ALICE, 1_780_000_000)
    );
    // Another key, or a changed byte: not the box's record.
    let mut edited = first.clone();
    edited[20] ^= 1;
    assert!(LoginRecord::verify(&edited, &dc.txn_key).is_err());
    assert!(LoginRecord::verify(&first, &vendor().public_key()).is_err());
    // P1 = 00 still answers 9000 alone and counts nothing.
    let writes = card.store().writes();
    assert!(ok(&card.transmit(&authenticate_cmd(&ALICE, &h, &v))).is_empty());
    assert_eq!(card.store().writes(), writes);
    // Refused log-ins write nothing and answer no record.
    let no = Status::MailerNotAuthenticated;
    refused_unchanged(&mut card, &log_in_cmd(&ALICE, &[0x62; 32], &v, 5), no);
    refused_unchanged(&mut card, &log_in_cmd(&BOB, &h, &v, 5), no);
    // Bad APDUs: a clear status word, nothing written.
    let mut no_time = authenticate_data(&ALICE, &h, &v);
    refused_unchanged(
        &mut card,
        &apdu(ins::AUTHENTICATE_MAILER, 1, 0, &no_time),
        Status::WrongLength,
    );
    no_time.extend_from_slice(&[0; 8]);
    refused_unchanged(
        &mut card,
        &apdu(ins::AUTHENTICATE_MAILER, 2, 0, &no_time),
        Status::IncorrectP1P2,
    );
    // GET DATA 00 02 reads the count and writes nothing; other P2s or data are refused.
    let writes = card.store().writes();
    assert_eq!(login_count(&mut card), 1, "refusals counted nothing");
    assert_eq!(card.store().writes(), writes);
    refused_unchanged(
        &mut card,
        &[0x80, 0xCA, 0x00, 0x03, 0x00],
        Status::IncorrectP1P2,
    );
    refused_unchanged(
        &mut card,
        &[0x80, 0xCA, 0x00, 0x02, 0x01, 0x00, 0x00],
        Status::WrongLength,
    );
    // The count goes on after power-off.
    let mut card = reopen(card.store().nvm());
    assert_eq!(login_count(&mut card), 1);
    let second = ok(&card.transmit(&log_in_cmd(&ALICE, &h, &v, 7)));
    assert_eq!(
        LoginRecord::verify(&second, &dc.txn_key).unwrap().sequence,
        2
    );

    // A power cut at every write of a recorded log-in: count 2 (nothing left the box) or 3
    // (the record left it, or would have), so the next log-in signs 3 or 4: never 2 again.
    let base = card.store().nvm().clone();
    let cmd = log_in_cmd(&ALICE, &h, &v, 9);
    let cuts = sweep(&base, &cmd, |mut card, at| {
        // What the box reports is what it will sign next, less one: never behind a record.
        let counted = login_count(&mut card);
        let next = ok(&card.transmit(&cmd));
        let seq = LoginRecord::verify(&next, &dc.txn_key).unwrap().sequence;
        assert!(seq == 3 || seq == 4, "{at}: sequence {seq}");
        assert_eq!(seq, counted + 1, "{at}");
    });
    assert!(cuts >= 2, "clean and torn cuts of the one commit");
}
