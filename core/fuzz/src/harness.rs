//! Runs an [`Input`] against a PSD card on a [`MemStore`] and checks, after every APDU and
//! every operation, what must hold whatever the host sends. A broken property panics with
//! a message saying which; so does any panic inside the card.

use std::sync::OnceLock;

use openpsd_core::apdu;
use openpsd_core::client::psd_apdu;
use openpsd_core::crypto::IndiciumKey;
use openpsd_core::platform::SeededPlatform;
use openpsd_core::psd::audit::AuditData;
use openpsd_core::psd::device::{Device, LicenseSlot, Personalization};
use openpsd_core::psd::indicium::{self, IndiciumRequest};
use openpsd_core::psd::psd_card;
use openpsd_core::psd::refill::{RefillCombination, REFILL_MESSAGE_LEN};
use openpsd_core::psd::registers::{RegisterSet, Registers};
use openpsd_core::status::Status;
use openpsd_core::store::{MemStore, Nvm, PowerCut, Store};
use openpsd_core::types::*;
use openpsd_core::Card;

use crate::input::{Input, Op, Start};

/// The card under test.
pub type FuzzCard = Card<MemStore, SeededPlatform>;

/// The fixture KMS's signing key (the PSD holds its public half).
pub fn kms_key() -> IndiciumKey {
    IndiciumKey::from_bytes(&[0x11; 32]).expect("scalar")
}
/// Device ID of the fixture device.
pub const DEVICE: DeviceId = DeviceId(*b"PSD00001");
/// Its licenses and towns (register sets 0 and 1).
pub const LICENSES: [(u32, &[u8]); 2] = [(4711, b"10115"), (4712, b"80331")];
/// Per-piece limit.
pub const MAX_POSTAGE: Amount = Amount(10_000);
/// DR limit.
pub const MAX_DR: Amount = Amount(1_000_000);
/// What the funded fixture refills on sets 0 and 1.
pub const FUNDS: [u64; 2] = [500_000, 20_000];
/// Seed of the platform's random stream.
pub const PLATFORM_SEED: u64 = 1;

const REC_DEVICE: u16 = openpsd_core::records::psd::DEVICE;
const REC_SET_BASE: u16 = openpsd_core::records::psd::SET_BASE;
const MAX_SETS: u8 = openpsd_core::psd::device::MAX_REGISTER_SETS as u8;
const SW_OK: u16 = 0x9000;

/// The fixture's personalization data (as `openpsd-tests` has it).
pub fn personalization() -> Personalization {
    let vendor = openpsd_core::crypto::IndiciumKey::from_bytes(&[7u8; 32]).expect("scalar");
    Personalization {
        device: DEVICE,
        kms_public_key: kms_key().public_key(),
        vendor_public_key: vendor.public_key(),
        max_postage: MAX_POSTAGE,
        max_dr: MAX_DR,
        inspection_days: 0,
        scheme: None,
        licenses: LICENSES
            .iter()
            .map(|(l, o)| LicenseSlot {
                license: LicenseId(*l),
                origin: PostalCode::new(o).expect("valid code"),
            })
            .collect(),
        postal_authority: None,
    }
}

/// The date the platform reports at start.
pub fn today() -> Date {
    Date::new(2026, 11, 21).expect("valid date")
}

fn platform() -> SeededPlatform {
    let mut p = SeededPlatform::new(PLATFORM_SEED);
    p.today = Some(today());
    p
}

fn sw(resp: &[u8]) -> u16 {
    psd_apdu::sw(resp)
}

fn ok_data(resp: &[u8], what: &str) -> Vec<u8> {
    assert_eq!(sw(resp), SW_OK, "fixture: {what} failed: {resp:02X?}");
    resp[..resp.len() - 2].to_vec()
}

/// A sealed refill message for what an AUDIT of `set` shows now (the KMS's steps 210-275).
pub(crate) fn kms_refill_message(card: &mut FuzzCard, set: u8, amount: u64, id: u8) -> Vec<u8> {
    let nonce = [id; 16];
    let msg = ok_data(
        &card.transmit(&psd_apdu::audit(RegisterSetIndex(set), &nonce)),
        "audit",
    );
    let device = personalized_public_key(card);
    let a = AuditData::open(&msg, &device).expect("fixture audit signature");
    RefillCombination {
        device: a.device,
        license: a.license,
        amount: Amount(amount),
        control_sum: a.control_sum,
        refills: a.refills,
        combination_id: [id; 8],
    }
    .sign(&kms_key())
}

/// The fixture card's device public key (GET DATA).
fn personalized_public_key(card: &mut FuzzCard) -> [u8; 65] {
    let info = ok_data(&card.transmit(&psd_apdu::get_data()), "get data");
    openpsd_core::psd::device::DeviceInfo::decode(&info)
        .expect("device info")
        .expect("personalized")
        .public_key
}

/// The memory of the personalized fixture (built once per process).
pub fn personalized_nvm() -> &'static Nvm {
    static NVM: OnceLock<Nvm> = OnceLock::new();
    NVM.get_or_init(|| {
        let mut card = psd_card(MemStore::new(), platform()).expect("blank store loads");
        ok_data(&card.transmit(&psd_apdu::select()), "select");
        ok_data(
            &card.transmit(&psd_apdu::personalize(&personalization())),
            "personalize",
        );
        card.store().nvm().clone()
    })
}

/// The memory of the funded fixture: personalized, sets 0 and 1 refilled with [`FUNDS`].
pub fn funded_nvm() -> &'static Nvm {
    static NVM: OnceLock<Nvm> = OnceLock::new();
    NVM.get_or_init(|| {
        let store = MemStore::open(personalized_nvm().clone()).expect("store opens");
        let mut card = psd_card(store, platform()).expect("state loads");
        ok_data(&card.transmit(&psd_apdu::select()), "select");
        for (set, amount) in FUNDS.iter().enumerate() {
            let msg = kms_refill_message(&mut card, set as u8, *amount, 0xF0 + set as u8);
            ok_data(
                &card.transmit(&psd_apdu::refill(RegisterSetIndex(set as u8), &msg)),
                "refill",
            );
        }
        card.store().nvm().clone()
    })
}

/// Whether `OPENPSD_FUZZ_TRACE` is set: every APDU and response goes to stderr.
fn trace() -> bool {
    static TRACE: OnceLock<bool> = OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("OPENPSD_FUZZ_TRACE").is_some())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

/// The class checks of `Card` (ISO 7816-4 5.1.1), to know whether a command reached the
/// chain / pending-response logic.
fn class_ok(cla: u8) -> bool {
    matches!(cla, 0x00..=0x1F | 0x80..=0xFE)
        && cla & 0x03 == 0
        && cla & 0x0C == 0
        && cla & 0x60 == 0
}

/// The persisted register sets (records `0x0110..`); every record must decode, which
/// includes AR + DR = control sum.
fn persisted_sets(store: &MemStore) -> Vec<RegisterSet> {
    let mut sets = Vec::new();
    for i in 0..u16::from(MAX_SETS) {
        match store.read(REC_SET_BASE + i) {
            Ok(Some(bytes)) => sets.push(RegisterSet::decode(&bytes).unwrap_or_else(|e| {
                panic!("persisted register set {i} does not decode ({e:?}): {bytes:02X?}")
            })),
            Ok(None) => break,
            Err(e) => panic!("register set {i} unreadable in a live store: {e}"),
        }
    }
    sets
}

#[derive(Clone)]
struct Keys {
    public_key: [u8; 65],
    max_postage: Amount,
}

impl Keys {
    fn from_device(d: &Device) -> Keys {
        Keys {
            public_key: d.public_key,
            max_postage: d.max_postage,
        }
    }
}

struct Harness {
    card: Option<FuzzCard>,
    /// The PSD is selected (volatile).
    selected: bool,
    /// Response bytes wait for GET RESPONSE.
    pending: bool,
    /// A command chain is in progress.
    chain: bool,
    /// Device keys, read once from the device record after personalization.
    keys: Option<Keys>,
    /// Register sets as persisted after the previous operation.
    sets: Vec<RegisterSet>,
    /// Sets whose control sum this operation may raise (a REFILL on them was accepted,
    /// or was cut by power loss and may have passed its commit point).
    credit_ok: [bool; MAX_SETS as usize],
    reply: Vec<u8>,
}

impl Harness {
    fn new(start: Start) -> Self {
        let store = match start {
            Start::Blank => MemStore::new(),
            Start::Personalized => MemStore::open(personalized_nvm().clone()).expect("opens"),
            Start::Funded => MemStore::open(funded_nvm().clone()).expect("opens"),
        };
        let card = psd_card(store, platform()).expect("fixture loads");
        let mut h = Harness {
            card: Some(card),
            selected: false,
            pending: false,
            chain: false,
            keys: None,
            sets: Vec::new(),
            credit_ok: [false; MAX_SETS as usize],
            reply: Vec::new(),
        };
        if start != Start::Blank {
            // The fixture's keys, decoded once per process (a scalar multiplication saved
            // per execution).
            static KEYS: OnceLock<Keys> = OnceLock::new();
            h.keys = Some(
                KEYS.get_or_init(|| {
                    let store = MemStore::open(personalized_nvm().clone()).expect("opens");
                    let rec = store.read(REC_DEVICE).expect("readable").expect("present");
                    Keys::from_device(&Device::decode(&rec).expect("device record decodes"))
                })
                .clone(),
            );
        }
        h.sets = persisted_sets(h.card().store());
        let resp = h.exchange(&psd_apdu::select());
        assert_eq!(sw(&resp), SW_OK, "SELECT of a fresh card");
        h
    }

    fn card(&mut self) -> &mut FuzzCard {
        self.card.as_mut().expect("card present")
    }

    fn keys(&mut self) -> Option<&Keys> {
        if self.keys.is_none() {
            let rec = self
                .card()
                .store()
                .read(REC_DEVICE)
                .expect("device record readable")?;
            let d = Device::decode(&rec).expect("device record decodes");
            self.keys = Some(Keys::from_device(&d));
        }
        self.keys.as_ref()
    }

    /// Sends one APDU, checks the response's form, tracks volatile state, and checks what
    /// a successful ISSUE INDICIUM / AUDIT / REFILL returned. Returns the response.
    fn exchange(&mut self, cmd: &[u8]) -> Vec<u8> {
        let mut reply = core::mem::take(&mut self.reply);
        self.card().handle(cmd, &mut reply);
        let resp = reply.clone();
        self.reply = reply;
        if trace() {
            eprintln!("> {}\n< {}", hex(cmd), hex(&resp));
        }

        // Every response ends with a status word the card defines.
        assert!(resp.len() >= 2, "response without status word: {resp:02X?}");
        let sw = sw(&resp);
        let [sw1, _] = sw.to_be_bytes();
        let data_len = resp.len() - 2;
        assert!(
            sw == SW_OK || sw1 == 0x61 || Status::from_sw(sw).is_some(),
            "undefined status word {sw:04X}"
        );
        // Data only with 9000 or 61xx; 61xx always with data.
        if data_len > 0 {
            assert!(
                sw == SW_OK || sw1 == 0x61,
                "response data with status {sw:04X}: {resp:02X?}"
            );
        }
        if sw1 == 0x61 {
            assert!(data_len > 0, "61xx without data");
        }

        // Any command but a successful GET RESPONSE drops response bytes not fetched,
        // malformed ones included.
        self.pending = sw1 == 0x61;
        let Ok(view) = apdu::parse(cmd) else {
            // Malformed APDUs leave a chain in progress as it was.
            assert_eq!(data_len, 0);
            return resp;
        };
        let ne = view.expected();
        if ne > 0 {
            assert!(data_len <= ne, "{data_len} bytes returned for Ne = {ne}");
        }
        let cla = cmd[0];
        if !class_ok(cla) {
            return resp;
        }
        let (ins, p2) = (cmd[1], cmd[3]);
        let get_response = cla == 0x00 && ins == 0xC0;
        if !get_response {
            self.chain = cla & 0x10 != 0 && sw == SW_OK;
        }
        let done = sw == SW_OK || sw1 == 0x61;
        if cla == 0x00 && ins == 0xA4 && done {
            self.selected = true;
        }
        if cla != 0x80 || !done {
            return resp;
        }
        let set = usize::from(p2);
        if ins == 0x52 {
            if let Some(c) = self.credit_ok.get_mut(set) {
                *c = true;
            }
        }
        if matches!(ins, 0x40 | 0x50 | 0x52) && sw == SW_OK {
            self.check_response(ins, set, &resp[..data_len]);
        }
        resp
    }

    /// Checks the complete response of a successful ISSUE INDICIUM, AUDIT or REFILL
    /// against the persisted set it is about.
    fn check_response(&mut self, ins: u8, set: usize, data: &[u8]) {
        let stored = persisted_sets(self.card().store());
        let s = stored
            .get(set)
            .unwrap_or_else(|| panic!("INS {ins:02X} succeeded on missing set {set}"))
            .clone();
        let keys = self
            .keys()
            .expect("a personalized card has a device record");
        match ins {
            0x40 => {
                let d = indicium::verify(data, &keys.public_key)
                    .unwrap_or_else(|e| panic!("issued indicium does not verify: {e}"));
                let signed = &data[..data.len() - 64];
                assert_eq!(
                    s.last_indicium.as_ref().map(|(_, p)| p.as_slice()),
                    Some(signed),
                    "indicium is not the one the set remembers"
                );
                assert_eq!(
                    (d.license, d.ar, d.pieces),
                    (s.license, s.ar, s.pieces),
                    "indicium registers differ from the persisted set"
                );
                assert!(d.postage > Amount::ZERO && d.postage <= keys.max_postage);
            }
            0x50 => {
                let a = AuditData::open(data, &keys.public_key).expect("audit signature verifies");
                let r = s.readout();
                assert_eq!(
                    (a.license, a.set.0 as usize, a.ar, a.dr, a.control_sum),
                    (r.license, set, r.ar, r.dr, r.control_sum),
                    "audit differs from the persisted set"
                );
                assert_eq!((a.pieces, a.refills), (r.pieces, r.refills));
            }
            _ => {
                let r = Registers::decode(data).expect("REFILL response decodes");
                assert_eq!(
                    r,
                    s.readout(),
                    "REFILL response differs from the persisted set"
                );
            }
        }
    }

    /// Power loss and power-up: the memory as it is is re-opened, the PSD SELECTed.
    fn reopen(&mut self, why: &str) {
        let card = self.card.take().expect("card present");
        let (store, platform) = card.into_parts();
        let nvm = store.nvm().clone();
        let store = MemStore::open(nvm)
            .unwrap_or_else(|e| panic!("memory does not re-open after {why}: {e}"));
        let card = psd_card(store, platform)
            .unwrap_or_else(|e| panic!("PSD state does not load after {why}: {e}"));
        self.card = Some(card);
        self.selected = false;
        self.pending = false;
        self.chain = false;
        let resp = self.exchange(&psd_apdu::select());
        assert_eq!(sw(&resp), SW_OK, "SELECT after {why}");
    }

    fn origin(&self, set: u8) -> PostalCode {
        self.sets
            .get(usize::from(set))
            .map(|s| s.origin)
            .unwrap_or_else(|| PostalCode::new(LICENSES[0].1).expect("valid code"))
    }

    fn run_op(&mut self, op: &Op) {
        if trace() {
            match op {
                Op::Apdu(_) => {}
                Op::PowerCut { at_write, torn, .. } => {
                    eprintln!("# power cut at write +{at_write} torn={torn}")
                }
                other => eprintln!("# {other:?}"),
            }
        }
        match op {
            Op::Apdu(a) => {
                self.exchange(a);
            }
            Op::Reset => {
                self.card().reset();
                self.selected = false;
                self.pending = false;
                self.chain = false;
            }
            Op::PowerCut {
                at_write,
                torn,
                apdu: a,
            } => {
                let base = self.card().store().writes();
                self.card().store_mut().set_power_cut(Some(PowerCut {
                    at_write: base + u64::from(*at_write),
                    torn: *torn,
                }));
                // A cut REFILL may have passed its commit point.
                if a.len() >= 4 && a[0] == 0x80 && a[1] == 0x52 {
                    if let Some(c) = self.credit_ok.get_mut(usize::from(a[3])) {
                        *c = true;
                    }
                }
                let resp = self.exchange(a);
                if self.card().store().is_dead() {
                    // Nothing leaves the card for a commit that did not complete.
                    assert_eq!(
                        resp,
                        Status::MemoryFailure.sw().to_be_bytes(),
                        "response to a command whose commit lost power"
                    );
                    self.reopen("a power cut");
                } else {
                    self.card().store_mut().set_power_cut(None);
                }
            }
            Op::KmsRefill { set, amount, id } => {
                let set = set % MAX_SETS;
                let nonce = [*id; 16];
                let resp = self.exchange(&psd_apdu::audit(RegisterSetIndex(set), &nonce));
                let msg = match (sw(&resp), self.keys()) {
                    (SW_OK, Some(keys)) => {
                        let a = AuditData::open(&resp[..resp.len() - 2], &keys.public_key)
                            .expect("audit signature verifies");
                        RefillCombination {
                            device: a.device,
                            license: a.license,
                            amount: Amount(u64::from(*amount)),
                            control_sum: a.control_sum,
                            refills: a.refills,
                            combination_id: [*id; 8],
                        }
                        .sign(&kms_key())
                    }
                    _ => vec![0; REFILL_MESSAGE_LEN],
                };
                self.exchange(&psd_apdu::refill(RegisterSetIndex(set), &msg));
            }
            Op::ForgedRefill { set, amount, mode } => {
                let set = set % MAX_SETS;
                let resp = self.exchange(&psd_apdu::audit(RegisterSetIndex(set), &[*mode; 16]));
                let (SW_OK, Some(keys)) = (sw(&resp), self.keys()) else {
                    return;
                };
                let a = AuditData::open(&resp[..resp.len() - 2], &keys.public_key).expect("audit signature");
                let mut c = RefillCombination {
                    device: a.device,
                    license: a.license,
                    amount: Amount(u64::from(*amount)),
                    control_sum: a.control_sum,
                    refills: a.refills,
                    combination_id: [*mode; 8],
                };
                match mode % 5 {
                    0 => c.device.0[7] ^= 1,
                    1 => c.control_sum.0 = c.control_sum.0.wrapping_add(1),
                    2 => c.refills.0 = c.refills.0.wrapping_add(1),
                    3 => c.refills.0 = c.refills.0.wrapping_sub(1),
                    _ => c.license.0 ^= 1,
                }
                let msg = c.sign(&kms_key());
                let resp = self.exchange(&psd_apdu::refill(RegisterSetIndex(set), &msg));
                assert_ne!(
                    sw(&resp),
                    SW_OK,
                    "forged refill (mode {}) accepted",
                    mode % 5
                );
            }
            Op::Issue {
                set,
                txn,
                postage,
                day,
            } => {
                let req = IndiciumRequest {
                    transaction: TransactionId(u64::from(*txn).to_be_bytes()),
                    postage: Amount(u64::from(*postage)),
                    date: Date::new(2026, 11, 1 + day % 30).expect("valid day"),
                    rate: RateCategory(1),
                    origin: self.origin(*set),
                    destination: PostalCode::new(b"20095").expect("valid code"),
                };
                self.exchange(&psd_apdu::issue_indicium(RegisterSetIndex(*set), &req));
            }
            Op::Clock { day } => {
                self.card().platform_mut().today = match day {
                    0 => None,
                    d => Date::new(2026, 11, 1 + (d - 1) % 30),
                };
            }
            Op::Reopen => self.reopen("a power cycle"),
        }
    }

    /// After each operation: the persisted registers moved only as a debit or a credit
    /// allows, and the card's READ REGISTERS answers match them.
    fn check_state(&mut self) {
        let now = persisted_sets(self.card().store());
        let before = core::mem::replace(&mut self.sets, now.clone());
        if !before.is_empty() {
            assert_eq!(
                now.len(),
                before.len(),
                "register sets appeared or vanished"
            );
        }
        let max_postage = self.keys().map(|k| k.max_postage);
        for (i, (b, n)) in before.iter().zip(&now).enumerate() {
            assert_eq!(
                (n.license, n.origin),
                (b.license, b.origin),
                "set {i} identity"
            );
            assert!(
                n.pieces >= b.pieces,
                "set {i}: piece count went back {b:?} -> {n:?}"
            );
            assert!(n.refills >= b.refills, "set {i}: refill count went back");
            if n.control_sum != b.control_sum {
                assert!(
                    self.credit_ok[i],
                    "set {i}: control sum changed without a successful REFILL: {b:?} -> {n:?}"
                );
                assert!(n.control_sum > b.control_sum, "set {i}: control sum fell");
                let credit = n.control_sum.0 - b.control_sum.0;
                assert_eq!(
                    n.dr.0.checked_sub(b.dr.0),
                    Some(credit),
                    "set {i}: DR credit"
                );
                assert_eq!(
                    (n.ar, n.pieces),
                    (b.ar, b.pieces),
                    "set {i}: refill debited"
                );
                assert_eq!(
                    n.refills.0,
                    b.refills.0 + 1,
                    "set {i}: refill not counted once"
                );
            } else if n.refills != b.refills {
                // A void: a successful REFILL of amount zero moves the count on by one and
                // moves no value.
                assert!(
                    self.credit_ok[i],
                    "set {i}: refill counted without a successful REFILL"
                );
                assert_eq!(
                    n.refills.0,
                    b.refills.0 + 1,
                    "set {i}: void not counted once"
                );
                assert_eq!(
                    (n.ar, n.dr, n.pieces),
                    (b.ar, b.dr, b.pieces),
                    "set {i}: a void moved value"
                );
            } else {
                let pieces = n.pieces.0 - b.pieces.0;
                let debit = n.ar.0.checked_sub(b.ar.0).expect("AR fell");
                assert!(pieces <= 1, "set {i}: {pieces} pieces in one operation");
                assert_eq!(
                    debit > 0,
                    pieces == 1,
                    "set {i}: debit {debit} for {pieces} pieces"
                );
                if let Some(max) = max_postage {
                    assert!(
                        debit <= max.0,
                        "set {i}: debit {debit} above the per-piece limit"
                    );
                }
            }
        }
        self.credit_ok = [false; MAX_SETS as usize];

        // READ REGISTERS, when it cannot disturb a chain or a pending response.
        if !self.selected || self.pending || self.chain {
            return;
        }
        let personalized = self.keys().is_some();
        for i in 0..=now.len().min(usize::from(MAX_SETS) - 1) {
            let resp = self.exchange(&[0x80, 0x32, 0x00, i as u8, 0x00]);
            match now.get(i) {
                Some(s) => {
                    assert_eq!(sw(&resp), SW_OK, "READ REGISTERS {i}");
                    let r = Registers::decode(&resp[..resp.len() - 2])
                        .expect("READ REGISTERS response decodes");
                    assert_eq!(r.ar.checked_add(r.dr), Some(r.control_sum), "AR + DR = CS");
                    assert_eq!(r, s.readout(), "card's registers differ from its memory");
                }
                None => {
                    let want = if personalized {
                        Status::ReferencedDataNotFound
                    } else {
                        Status::ConditionsNotSatisfied
                    };
                    assert_eq!(resp, want.sw().to_be_bytes(), "READ REGISTERS {i}");
                }
            }
        }
    }
}

/// Runs one decoded input; panics if the card panics or a property breaks.
pub fn run(input: &Input) {
    let mut h = Harness::new(input.start);
    for op in &input.ops {
        h.run_op(op);
        h.check_state();
    }
}

/// Decodes and runs raw fuzzer bytes.
pub fn run_bytes(data: &[u8]) {
    run(&Input::decode(data));
}
