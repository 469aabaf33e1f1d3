//! Runs an [`Input`] against a PSD card on a [`MemStore`] and checks, after every APDU and
//! every operation, what must hold whatever the host sends. A broken property panics with
//! a message saying which; so does any panic inside the card.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use openpsd_core::apdu;
use openpsd_core::client::psd_apdu;
use openpsd_core::crypto::IndiciumKey;
use openpsd_core::platform::SeededPlatform;
use openpsd_core::psd::audit::AuditData;
use openpsd_core::psd::device::{
    Device, LicenseSlot, Personalization, PostalAuthority, SchemeSlot,
};
use openpsd_core::psd::indicium::{self, IndiciumRequest};
use openpsd_core::psd::license::export::Blob;
use openpsd_core::psd::license::grant::{self, CardFields, GrantFields};
use openpsd_core::psd::license::install::Install;
use openpsd_core::psd::license::request::{LicenseAsk, LicenseRequest};
use openpsd_core::psd::license::retire::Receipt;
use openpsd_core::psd::license::{ExportEntry, ExportState, LicenseInfo, LicenseState, SlotInfo};
use openpsd_core::psd::psd_card;
use openpsd_core::psd::refill::{RefillCombination, REFILL_MESSAGE_LEN};
use openpsd_core::psd::registers::{RegisterSet, Registers};
use openpsd_core::psd::transfer::TransferState;
use openpsd_core::status::Status;
use openpsd_core::store::{MemStore, Nvm, PowerCut, Store};
use openpsd_core::types::*;
use openpsd_core::Card;

use crate::input::{Input, Op, Start};

/// The card under test.
pub type FuzzCard = Card<MemStore, SeededPlatform>;

/// A fixed key, restored once per process (restoring one costs a scalar multiplication).
fn fixed_key(cell: &'static OnceLock<IndiciumKey>, scalar: u8) -> IndiciumKey {
    cell.get_or_init(|| IndiciumKey::from_bytes(&[scalar; 32]).expect("scalar"))
        .clone()
}

/// The fixture KMS's signing key (the PSD holds its public half).
pub fn kms_key() -> IndiciumKey {
    static K: OnceLock<IndiciumKey> = OnceLock::new();
    fixed_key(&K, 0x11)
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
const REC_LICENSES: u16 = openpsd_core::records::psd::LICENSES;
const MAX_SETS: u8 = openpsd_core::psd::device::MAX_REGISTER_SETS as u8;
const SW_OK: u16 = 0x9000;

/// The test postal authority's CA key (as `openpsd-tests`' `licenses::pa_key`).
pub fn pa_key() -> IndiciumKey {
    static K: OnceLock<IndiciumKey> = OnceLock::new();
    fixed_key(&K, 0x50)
}

/// The PA's public key, computed once.
fn pa_public_key() -> [u8; 65] {
    static P: OnceLock<[u8; 65]> = OnceLock::new();
    *P.get_or_init(|| pa_key().public_key())
}

/// A key neither the PA nor the vendor holds (forged grants).
fn other_key() -> IndiciumKey {
    static K: OnceLock<IndiciumKey> = OnceLock::new();
    fixed_key(&K, 0x33)
}

/// The test vendor's key (as `openpsd-tests`' `licenses::vendor_key`).
pub fn vendor_key() -> IndiciumKey {
    static K: OnceLock<IndiciumKey> = OnceLock::new();
    fixed_key(&K, 7)
}

/// The PA's subject: `CN=openpsd test PA`, DER (as `openpsd-tests`' `licenses::pa_subject`).
pub fn pa_subject() -> Vec<u8> {
    let cn = b"openpsd test PA";
    let mut atv = vec![0x06, 0x03, 0x55, 0x04, 0x03, 0x0C, cn.len() as u8];
    atv.extend_from_slice(cn);
    let mut set = vec![0x30, atv.len() as u8];
    set.extend_from_slice(&atv);
    let mut rdn = vec![0x31, set.len() as u8];
    rdn.extend_from_slice(&set);
    let mut name = vec![0x30, rdn.len() as u8];
    name.extend_from_slice(&rdn);
    name
}

/// The fixture's personalization data (as `openpsd-tests` has it), with the postal
/// authority block so that licenses can be added.
pub fn personalization() -> Personalization {
    Personalization {
        device: DEVICE,
        kms_public_key: kms_key().public_key(),
        vendor_public_key: vendor_key().public_key(),
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
        postal_authority: Some(PostalAuthority {
            public_key: pa_key().public_key(),
            subject: pa_subject(),
        }),
    }
}

/// The transfer start's scheme: the purse fixture's (`crate::purse`).
pub const SCHEME: SchemeId = crate::purse::SCHEME;

/// The transfer start's personalization: [`personalization`] with a scheme block (the
/// purse fixture's issuer, five failed recognitions allowed).
pub fn transfer_personalization() -> Personalization {
    Personalization {
        scheme: Some(SchemeSlot {
            scheme: SCHEME,
            issuer_public_key: crate::purse::issuer().public_key(),
            max_failures: 5,
        }),
        ..personalization()
    }
}

/// The grant's validity by `flags` bits 2-3 (see [`Op::GrantLicense`]).
pub fn grant_validity(flags: u8) -> (Date, Date) {
    let d = |y, m, d| Date::new(y, m, d).expect("valid date");
    match (flags >> 2) & 3 {
        2 => (d(2026, 1, 1), d(2026, 11, 20)),
        3 => (d(2026, 11, 25), d(2026, 12, 31)),
        _ => (d(2026, 11, 1), d(2027, 10, 31)),
    }
}

/// The license `Op::GrantLicense` asks for.
pub fn asked_license(license: u8) -> u32 {
    match license {
        0 => 0,
        1 | 2 => LICENSES[usize::from(license) - 1].0,
        n => 9000 + u32::from(n),
    }
}

/// The PA and the vendor answer `request`: the grant for `license` (the one asked for,
/// or 20000 + the request counter if 0 was asked), signed by the fixture PA, countersigned
/// by the fixture vendor, then spoiled as `corrupt % 10` says (see [`Op::GrantLicense`]).
pub fn grant_for(request: &LicenseRequest, flags: u8, corrupt: u8) -> Install {
    let b = &request.body;
    // 0 asked: the PA picks by `corrupt / 10 % 3`: a fresh number, the fixture's 4711
    // (resident: refused), or always 20001.
    let license = match (b.license.0, corrupt / 10 % 3) {
        (0, 1) => LICENSES[0].0,
        (0, 2) => 20_001,
        (0, _) => 20_000 + b.counter,
        (l, _) => l,
    };
    let mut serial = vec![0x11];
    serial.extend_from_slice(&license.to_be_bytes());
    let (not_before, not_after) = grant_validity(flags);
    let fields = GrantFields {
        serial,
        not_before,
        not_after,
        license: LicenseId(license),
        origin: b.origin,
    };
    let subject = pa_subject();
    let pa = pa_key();
    let pa_public = pa_public_key();
    let mut nonce = b.nonce;
    let mut device = b.device;
    match corrupt % 10 {
        8 => nonce[0] ^= 1,
        9 => device.0[7] ^= 1,
        _ => {}
    }
    let card = CardFields {
        pa_subject: &subject,
        pa_public_key: &pa_public,
        device,
        license_public_key: &b.license_public_key,
        nonce: &nonce,
    };
    let tbs = grant::tbs_certificate(&fields, &card).expect("template takes the fields");
    let other = other_key();
    let pa_signer = if corrupt % 10 == 1 { &other } else { &pa };
    let vendor = vendor_key();
    let vendor_signer = if corrupt % 10 == 2 { &other } else { &vendor };
    let mut install = Install {
        request: b.counter,
        pa_signature: pa_signer.sign(&tbs),
        countersignature: vendor_signer.sign(&grant::countersign_message(&tbs, device, &nonce)),
        fields,
    };
    let f = &mut install.fields;
    match corrupt % 10 {
        3 => f.license.0 ^= 1,
        4 => {
            f.origin = PostalCode::new(if f.origin.as_bytes() == b"10115" {
                b"80331"
            } else {
                b"10115"
            })
            .expect("valid code")
        }
        5 => f.serial[0] ^= 0x22,
        6 => f.not_after = Date::new(2030, 1, 1).expect("valid date"),
        7 => install.request = install.request.wrapping_add(1),
        _ => {}
    }
    install
}

/// The date the platform reports at start.
pub fn today() -> Date {
    Date::new(2026, 11, 21).expect("valid date")
}

/// The platform every card of a run starts with (seeded: LICENSE REQUEST's key and nonce
/// are the same on every run).
pub fn platform() -> SeededPlatform {
    let mut p = SeededPlatform::new(PLATFORM_SEED);
    p.today = Some(today());
    p.now = Some(NOW);
    p
}

/// The time the platform reports at start: [`today`] 10:00:00 UTC.
pub const NOW: u64 = 1_795_255_200;

/// 10:00:00 UTC on `date`, in Unix seconds.
pub fn ten_o_clock(date: Date) -> u64 {
    // day_number counts from 2000-01-01, which is Unix day 10957.
    (u64::from(date.day_number()) + 10_957) * 86_400 + 36_000
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

/// The outside signer of [`Start::Outside`](crate::input::Start::Outside)'s PSD: a fixed
/// key, so the seeds can carry its signatures.
pub fn outside_signer() -> openpsd_core::crypto::IndiciumKey {
    openpsd_core::crypto::IndiciumKey::from_bytes(&[0x0D; 32]).expect("scalar")
}

/// The memory of the outside signer's fixture: personalized with P1 `01` and
/// [`outside_signer`]'s public key, sets 0 and 1 refilled with [`FUNDS`].
pub fn outside_nvm() -> &'static Nvm {
    static NVM: OnceLock<Nvm> = OnceLock::new();
    NVM.get_or_init(|| {
        let mut card = psd_card(MemStore::new(), platform()).expect("blank store loads");
        ok_data(&card.transmit(&psd_apdu::select()), "select");
        ok_data(
            &card.transmit(&psd_apdu::personalize_outside(
                &outside_signer().public_key(),
                &personalization(),
            )),
            "personalize",
        );
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

/// The memory of the transfer fixture: personalized with [`transfer_personalization`],
/// its recognition key certified by the scheme issuer, sets 0 and 1 refilled with
/// [`FUNDS`].
pub fn transfer_nvm() -> &'static Nvm {
    static NVM: OnceLock<Nvm> = OnceLock::new();
    NVM.get_or_init(|| {
        let mut card = psd_card(MemStore::new(), platform()).expect("blank store loads");
        ok_data(&card.transmit(&psd_apdu::select()), "select");
        ok_data(
            &card.transmit(&psd_apdu::personalize(&transfer_personalization())),
            "personalize",
        );
        let data = ok_data(
            &card.transmit(&psd_apdu::get_recognition_data()),
            "recognition data",
        );
        let cert = crate::purse::certificate(
            openpsd_core::transfer::cert::DeviceKind::Psd,
            DEVICE.0,
            &data,
        );
        ok_data(
            &card.transmit(&psd_apdu::install_certificate(&cert)),
            "install certificate",
        );
        for (set, amount) in FUNDS.iter().enumerate() {
            let msg = kms_refill_message(&mut card, set as u8, *amount, 0xE0 + set as u8);
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

/// Register set slots as persisted (records `0x0110..`, a free slot's record absent).
type Slots = Vec<Option<RegisterSet>>;

#[derive(Clone)]
struct Keys {
    id: DeviceId,
    public_key: [u8; 65],
    max_postage: Amount,
    /// The outside signer's key, on a PSD personalized with one.
    outside: Option<[u8; 65]>,
}

impl Keys {
    fn from_device(d: &Device) -> Keys {
        Keys {
            id: d.id,
            public_key: d.public_key,
            max_postage: d.max_postage,
            outside: d.outside_signer,
        }
    }
}

/// What an export carries (registers, grant, last indicium and its signature), compared by
/// value (the grant by its secret scalar).
fn same_exported(a: &RegisterSet, b: &RegisterSet) -> bool {
    let grant = |s: &RegisterSet| {
        s.grant.as_ref().map(|g| {
            (
                *g.key.secret_bytes(),
                g.serial.clone(),
                g.not_before,
                g.not_after,
            )
        })
    };
    (
        a.license,
        a.origin,
        a.ar,
        a.dr,
        a.control_sum,
        a.transferred,
        a.pending,
        a.pieces,
        a.refills,
        a.last_combination,
    ) == (
        b.license,
        b.origin,
        b.ar,
        b.dr,
        b.control_sum,
        b.transferred,
        b.pending,
        b.pieces,
        b.refills,
        b.last_combination,
    ) && grant(a) == grant(b)
        && a.last_indicium == b.last_indicium
        && a.last_signature == b.last_signature
}

/// Σ control sums of the resident sets + Σ those of the outstanding and retired exports:
/// the value the PSD answers for (a retired entry until RETIRE SET forgets it).
fn value(sets: &Slots, lic: &LicenseState) -> u128 {
    let resident: u128 = sets
        .iter()
        .flatten()
        .map(|s| u128::from(s.control_sum.0))
        .sum();
    let out: u128 = lic
        .exports
        .iter()
        .filter(|e| e.state != ExportState::Preparing)
        .map(|e| u128::from(e.control_sum.0))
        .sum();
    resident + out
}

/// Most blobs and accepted installs remembered for re-sending.
const REMEMBERED: usize = 32;

struct Harness {
    card: Option<FuzzCard>,
    /// The purse of the transfer start (`None` on the others).
    purse: Option<crate::purse::PurseCard>,
    /// The purse's total received and the PSD's total moved out, at start.
    base_totals: (Amount, Amount),
    /// The PSD is selected (volatile).
    selected: bool,
    /// Response bytes wait for GET RESPONSE.
    pending: bool,
    /// A command chain is in progress.
    chain: bool,
    /// Device keys, read once from the device record after personalization.
    keys: Option<Keys>,
    /// Whether the device record existed after the previous operation.
    personalized: bool,
    /// Register set slots as persisted after the previous operation.
    sets: Slots,
    /// The license record as persisted after the previous operation (its bytes, decoded).
    lic: (Option<Vec<u8>>, LicenseState),
    /// Every license this card has held since personalization, with its registers as last
    /// seen (resident, or as it left in an export): a set's history follows it from slot
    /// to file to slot.
    history: HashMap<u32, RegisterSet>,
    /// Export epochs imported so far (each at most once).
    imported: HashSet<u64>,
    /// Decoded set records by slot, keyed by their bytes (a grant's key costs a scalar
    /// multiplication to decode).
    set_cache: Vec<Option<(Vec<u8>, RegisterSet)>>,
    /// Public keys of grant keys, by scalar.
    pub_cache: HashMap<[u8; 32], [u8; 65]>,
    /// Blobs EXPORT SET answered, in order (for Op::Import).
    blobs: Vec<Vec<u8>>,
    /// LICENSE INSTALL APDUs the card accepted (a replay must be refused).
    installs: Vec<Vec<u8>>,
    /// A power cut is armed for the running operation.
    armed: bool,
    /// Op::Arm: the cut to arm at the start of the next operation.
    arm_next: Option<(u8, bool)>,
    /// Sets whose control sum this operation may raise (a REFILL on them was accepted,
    /// or was sent with a power cut armed and may have passed its commit point).
    credit_ok: [bool; MAX_SETS as usize],
    /// Slots an EXPORT SET commit may have emptied in this operation.
    vanish_ok: [bool; MAX_SETS as usize],
    /// A LICENSE INSTALL may have added a set in this operation.
    install_ok: bool,
    /// An IMPORT SET may have restored a set in this operation.
    import_ok: bool,
    /// A RETIRE SET may have retired or forgotten an entry in this operation.
    retire_ok: bool,
    reply: Vec<u8>,
}

impl Harness {
    fn new(start: Start) -> Self {
        let store = match start {
            Start::Blank => MemStore::new(),
            Start::Personalized => MemStore::open(personalized_nvm().clone()).expect("opens"),
            Start::Funded => MemStore::open(funded_nvm().clone()).expect("opens"),
            Start::Outside => MemStore::open(outside_nvm().clone()).expect("opens"),
            Start::Transfer => MemStore::open(transfer_nvm().clone()).expect("opens"),
            Start::Certmeter => {
                MemStore::open(crate::certmeter::certmeter_nvm().clone()).expect("opens")
            }
        };
        let card = psd_card(store, platform()).expect("fixture loads");
        let purse = (start == Start::Transfer).then(crate::purse::personalized_card);
        let mut h = Harness {
            card: Some(card),
            purse,
            base_totals: (Amount::ZERO, Amount::ZERO),
            selected: false,
            pending: false,
            chain: false,
            keys: None,
            personalized: start != Start::Blank,
            sets: Vec::new(),
            lic: (None, LicenseState::default()),
            history: HashMap::new(),
            imported: HashSet::new(),
            set_cache: vec![None; usize::from(MAX_SETS)],
            pub_cache: HashMap::new(),
            blobs: Vec::new(),
            installs: Vec::new(),
            armed: false,
            arm_next: None,
            credit_ok: [false; MAX_SETS as usize],
            vanish_ok: [false; MAX_SETS as usize],
            install_ok: false,
            import_ok: false,
            retire_ok: false,
            reply: Vec::new(),
        };
        if start != Start::Blank {
            // The fixture's keys, decoded once per process (a scalar multiplication saved
            // per execution).
            fn keys_of(nvm: &Nvm) -> Keys {
                let store = MemStore::open(nvm.clone()).expect("opens");
                let rec = store.read(REC_DEVICE).expect("readable").expect("present");
                Keys::from_device(&Device::decode(&rec).expect("device record decodes"))
            }
            static KEYS: OnceLock<Keys> = OnceLock::new();
            static TRANSFER_KEYS: OnceLock<Keys> = OnceLock::new();
            static OUTSIDE_KEYS: OnceLock<Keys> = OnceLock::new();
            h.keys = Some(if start == Start::Transfer {
                TRANSFER_KEYS
                    .get_or_init(|| keys_of(transfer_nvm()))
                    .clone()
            } else if start == Start::Outside {
                OUTSIDE_KEYS.get_or_init(|| keys_of(outside_nvm())).clone()
            } else {
                KEYS.get_or_init(|| keys_of(personalized_nvm())).clone()
            });
        }
        h.base_totals = (h.purse_total_in(), h.transfer_state().total_out);
        h.sets = h.persisted_sets();
        h.lic = h.license_state();
        h.history = h
            .sets
            .iter()
            .flatten()
            .map(|s| (s.license.0, s.clone()))
            .collect();
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

    /// The persisted slots; every record must decode, which includes AR + DR = control
    /// sum.
    fn persisted_sets(&mut self) -> Slots {
        let mut sets = Vec::with_capacity(usize::from(MAX_SETS));
        for i in 0..usize::from(MAX_SETS) {
            let id = REC_SET_BASE + i as u16;
            let bytes = match self.card().store().read(id) {
                Ok(b) => b,
                Err(e) => panic!("register set {i} unreadable in a live store: {e}"),
            };
            sets.push(bytes.map(|bytes| match &self.set_cache[i] {
                Some((b, s)) if *b == bytes => s.clone(),
                _ => {
                    let s = RegisterSet::decode(&bytes).unwrap_or_else(|e| {
                        panic!("persisted register set {i} does not decode ({e:?}): {bytes:02X?}")
                    });
                    self.set_cache[i] = Some((bytes, s.clone()));
                    s
                }
            }));
        }
        sets
    }

    /// The persisted license record (absent: the default state); it must decode.
    fn license_state(&mut self) -> (Option<Vec<u8>>, LicenseState) {
        let bytes = self
            .card()
            .store()
            .read(REC_LICENSES)
            .unwrap_or_else(|e| panic!("licenses record unreadable in a live store: {e}"));
        if bytes == self.lic.0 {
            return self.lic.clone();
        }
        let state = match &bytes {
            None => LicenseState::default(),
            Some(b) => LicenseState::decode(b)
                .unwrap_or_else(|e| panic!("licenses record does not decode ({e:?}): {b:02X?}")),
        };
        (bytes, state)
    }

    /// The public key that signs set `s`'s indicia.
    fn signing_public_key(&mut self, s: &RegisterSet, device: &[u8; 65]) -> [u8; 65] {
        match &s.grant {
            None => *device,
            Some(g) => *self
                .pub_cache
                .entry(*g.key.secret_bytes())
                .or_insert_with(|| g.public_key()),
        }
    }

    /// Sends one APDU, checks the response's form, tracks volatile state, re-opens the
    /// memory if a power cut hit, and checks what a successful command returned. Returns
    /// the response.
    fn exchange(&mut self, cmd: &[u8]) -> Vec<u8> {
        let mut reply = core::mem::take(&mut self.reply);
        let in_chain = self.chain;
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

        // Which commands may have committed: those that succeeded, and any sent while a
        // power cut was armed.
        let done = sw == SW_OK || sw1 == 0x61;
        if cmd.len() >= 4 && cmd[0] == 0x80 && (done || self.armed) {
            let (ins, p1, p2) = (cmd[1], cmd[2], usize::from(cmd[3]));
            match ins {
                0x52 => {
                    if let Some(c) = self.credit_ok.get_mut(p2) {
                        *c = true;
                    }
                }
                0x44 => self.install_ok = true,
                0x4A => self.import_ok = true,
                0x4C => self.retire_ok = true,
                0x48 if p1 == 1 => {
                    if let Some(c) = self.vanish_ok.get_mut(p2) {
                        *c = true;
                    }
                }
                _ => {}
            }
        }
        if self.card().store().is_dead() {
            // Nothing leaves the card for a command whose commit lost power.
            assert_eq!(
                resp,
                Status::MemoryFailure.sw().to_be_bytes(),
                "response to a command whose commit lost power"
            );
            self.reopen("a power cut");
            return resp;
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
        let (ins, p1, p2) = (cmd[1], cmd[2], cmd[3]);
        let get_response = cla == 0x00 && ins == 0xC0;
        if !get_response {
            self.chain = cla & 0x10 != 0 && sw == SW_OK;
        }
        if cla == 0x00 && ins == 0xA4 && done {
            self.selected = true;
        }
        if cla != 0x80 || sw != SW_OK {
            return resp;
        }
        // The command's data, when it was not the end of a chain.
        let data = (!in_chain).then(|| view.data());
        self.check_response(ins, p1, p2, &resp[..data_len], data);
        if ins == 0x44 && !in_chain {
            // Accepted once: a replay must be refused (Op::GrantLicense flags bit 4).
            if self.installs.len() >= REMEMBERED {
                self.installs.remove(0);
            }
            self.installs.push(cmd.to_vec());
        }
        resp
    }

    /// Checks the complete response of a successful command against the persisted state
    /// it is about.
    fn check_response(&mut self, ins: u8, p1: u8, p2: u8, data: &[u8], cmd_data: Option<&[u8]>) {
        if matches!(
            ins,
            0x70 | 0x5C | 0x74 | 0x76 | 0x72 | 0x78 | 0x7E | 0x56 | 0x58 | 0x5A | 0x7A | 0x7C
        ) || (ins == 0xCA && p2 == 0x05)
        {
            let device = self.keys().map(|k| k.public_key);
            let sets = self.persisted_sets();
            crate::certmeter::check_response(
                self.card(),
                device,
                &sets,
                ins,
                p1,
                p2,
                data,
                cmd_data,
            );
            return;
        }
        if !matches!(ins, 0x40 | 0x46 | 0x50 | 0x52 | 0x42 | 0x44 | 0x48 | 0x4A | 0xCA) {
            return;
        }
        let stored = self.persisted_sets();
        let (_, lic) = self.license_state();
        let Some(keys) = self.keys().cloned() else {
            return;
        };
        let set = usize::from(p2);
        let resident = |ins: u8| -> RegisterSet {
            stored
                .get(set)
                .cloned()
                .flatten()
                .unwrap_or_else(|| panic!("INS {ins:02X} succeeded on missing set {set}"))
        };
        match ins {
            // The outside signer's commands: an unsigned indicium is the set's pending one;
            // a signed one verifies under the outside key (below, and STORE SIGNATURE).
            0x40 if keys.outside.is_some()
                && resident(ins).grant.is_none()
                && indicium::IndiciumData::decode(data).is_ok() =>
            {
                let s = resident(ins);
                assert_eq!(
                    s.last_indicium.as_ref().map(|(_, p)| p.as_slice()),
                    Some(data),
                    "the unsigned indicium is not the one the set remembers"
                );
                assert_eq!(s.last_signature, None, "answered unsigned, but signed");
                let d = indicium::IndiciumData::decode(data).expect("decodes");
                assert_eq!(
                    (d.license, d.ar, d.pieces),
                    (s.license, s.ar, s.pieces),
                    "pending indicium registers differ from the persisted set"
                );
            }
            0x46 => {
                let s = resident(ins);
                let key = keys.outside.expect("STORE SIGNATURE succeeded without a signer");
                assert!(s.grant.is_none(), "STORE SIGNATURE on a licensed set");
                indicium::verify(data, &key)
                    .unwrap_or_else(|e| panic!("stored indicium does not verify: {e}"));
                let (signed, signature) = data.split_at(data.len() - 64);
                assert_eq!(
                    s.last_indicium.as_ref().map(|(_, p)| p.as_slice()),
                    Some(signed)
                );
                assert_eq!(s.last_signature.as_ref().map(|x| x.as_slice()), Some(signature));
            }
            0x40 => {
                let s = resident(ins);
                let key = match keys.outside {
                    Some(outside) if s.grant.is_none() => outside,
                    _ => self.signing_public_key(&s, &keys.public_key),
                };
                let d = indicium::verify(data, &key)
                    .unwrap_or_else(|e| panic!("issued indicium does not verify: {e}"));
                let signed = &data[..data.len() - 64];
                assert_eq!(
                    s.last_indicium.as_ref().map(|(_, p)| p.as_slice()),
                    Some(signed),
                    "indicium is not the one the set remembers"
                );
                assert_eq!(
                    s.last_signature.as_ref().map(|sig| sig.as_slice()),
                    Some(&data[data.len() - 64..]),
                    "the signature is not the one the set remembers (record version 5)"
                );
                assert_eq!(
                    (d.license, d.ar, d.pieces),
                    (s.license, s.ar, s.pieces),
                    "indicium registers differ from the persisted set"
                );
                assert!(d.postage > Amount::ZERO && d.postage <= keys.max_postage);
                if let Some(g) = &s.grant {
                    assert!(g.covers(d.date), "indicium dated outside its license");
                }
            }
            0x50 => {
                let s = resident(ins);
                let a = AuditData::open(data, &keys.public_key).expect("audit signature verifies");
                let r = s.readout();
                assert_eq!(
                    (a.license, a.set.0 as usize, a.ar, a.dr, a.control_sum),
                    (r.license, set, r.ar, r.dr, r.control_sum),
                    "audit differs from the persisted set"
                );
                assert_eq!((a.pieces, a.refills), (r.pieces, r.refills));
            }
            0x52 => {
                let s = resident(ins);
                let r = Registers::decode(data).expect("REFILL response decodes");
                assert_eq!(
                    r,
                    s.readout(),
                    "REFILL response differs from the persisted set"
                );
            }
            0x42 => {
                let req = LicenseRequest::decode(data).expect("LICENSE REQUEST answer decodes");
                req.verify(&keys.public_key)
                    .unwrap_or_else(|e| panic!("license request does not verify: {e}"));
                let p = lic
                    .pending
                    .as_ref()
                    .expect("a request answered with none pending");
                let b = &req.body;
                assert_eq!(
                    (b.device, b.counter, b.license, b.origin, b.nonce),
                    (keys.id, p.counter, p.license, p.origin, p.nonce),
                    "license request differs from the pending one"
                );
                assert_eq!(b.license_public_key, p.key.public_key(), "request key");
                assert!(p.counter <= lic.request_counter);
            }
            0x44 => {
                assert_eq!(data.len(), 9, "LICENSE INSTALL answer: {data:02X?}");
                let slot = usize::from(data[0]);
                let s = stored
                    .get(slot)
                    .cloned()
                    .flatten()
                    .unwrap_or_else(|| panic!("install answered slot {slot}, which is free"));
                let g = s.grant.as_ref().expect("an installed set has its grant");
                let key = self.signing_public_key(&s, &keys.public_key);
                assert_eq!(data[1..5], openpsd_core::crypto::key_id(&key).0, "key ID");
                assert_eq!(data[5..9], s.license.0.to_be_bytes(), "license");
                if let Some(cmd) = cmd_data {
                    let i = Install::decode(cmd).expect("an accepted install decodes");
                    assert_eq!(
                        (i.fields.license, i.fields.origin, i.fields.not_after),
                        (s.license, s.origin, g.not_after),
                        "installed set differs from its grant"
                    );
                    assert_eq!(lic.last_installed, i.request, "last installed request");
                }
                assert!(lic.pending.is_none(), "request still pending after install");
            }
            0x48 => match p1 {
                0 => {
                    let s = resident(ins);
                    let blob = Blob::decode(data).expect("exported blob decodes");
                    assert!(
                        Blob::verify_signature(data, &keys.public_key),
                        "blob signature"
                    );
                    let c = &blob.set;
                    assert_eq!(blob.device, keys.id, "blob device");
                    assert_eq!(
                        (
                            c.license,
                            c.origin,
                            c.ar,
                            c.dr,
                            c.control_sum,
                            c.pieces,
                            c.refills
                        ),
                        (
                            s.license,
                            s.origin,
                            s.ar,
                            s.dr,
                            s.control_sum,
                            s.pieces,
                            s.refills
                        ),
                        "blob registers differ from the set"
                    );
                    let e = lic
                        .exports
                        .iter()
                        .find(|e| usize::from(e.slot) == set && e.state == ExportState::Preparing)
                        .expect("a prepared export has its entry");
                    assert_eq!(
                        (e.epoch, e.digest, e.license),
                        (blob.epoch, Blob::digest_of(data), s.license),
                        "export entry differs from the blob"
                    );
                    // One epoch, one blob: a repeated prepare answers the same bytes.
                    for old in &self.blobs {
                        if let Ok(o) = Blob::decode(old) {
                            if o.epoch == blob.epoch && o.device == blob.device {
                                assert_eq!(old.as_slice(), data, "two blobs for epoch {}", o.epoch);
                            }
                        }
                    }
                    if !self.blobs.iter().any(|b| b.as_slice() == data) {
                        if self.blobs.len() >= REMEMBERED {
                            self.blobs.remove(0);
                        }
                        self.blobs.push(data.to_vec());
                    }
                }
                1 => {
                    let epoch: [u8; 8] = data.try_into().expect("commit answers the epoch");
                    let epoch = u64::from_be_bytes(epoch);
                    assert!(stored[set].is_none(), "slot {set} still used after commit");
                    assert!(
                        lic.exports.iter().any(|e| e.epoch == epoch
                            && e.state == ExportState::Outstanding
                            && usize::from(e.slot) == set),
                        "committed epoch {epoch} not outstanding"
                    );
                }
                _ => {
                    assert!(data.is_empty());
                    assert!(
                        !lic.exports.iter().any(
                            |e| usize::from(e.slot) == set && e.state == ExportState::Preparing
                        ),
                        "export of slot {set} still preparing after cancel"
                    );
                }
            },
            0x4A => {
                assert_eq!(data.len(), 1, "IMPORT SET answer: {data:02X?}");
                let slot = usize::from(data[0]);
                let s = stored
                    .get(slot)
                    .cloned()
                    .flatten()
                    .unwrap_or_else(|| panic!("import answered slot {slot}, which is free"));
                if let Some(cmd) = cmd_data {
                    let blob = Blob::decode(cmd).expect("an imported blob decodes");
                    let c = &blob.set;
                    assert_eq!(
                        (c.license, c.ar, c.dr, c.control_sum, c.pieces, c.refills),
                        (s.license, s.ar, s.dr, s.control_sum, s.pieces, s.refills),
                        "imported set differs from its blob"
                    );
                    assert!(
                        !self.imported.contains(&blob.epoch),
                        "epoch {} imported twice",
                        blob.epoch
                    );
                    assert!(
                        !lic.exports.iter().any(|e| e.epoch == blob.epoch),
                        "imported epoch still in the table"
                    );
                }
            }
            0x4C if p1 == 0 => {
                let r = Receipt::decode(data).expect("a RETIRE SET answer decodes");
                assert!(r.verify(&keys.public_key), "receipt signature");
                assert_eq!(r.device, keys.id, "receipt device");
                let e = lic
                    .exports
                    .iter()
                    .find(|e| e.epoch == r.epoch)
                    .expect("a retired epoch stays in the table until forgotten");
                assert_eq!(
                    (e.state, e.license, e.control_sum, e.dr, e.digest),
                    (
                        ExportState::Retired,
                        r.license,
                        r.control_sum,
                        r.dr,
                        r.digest
                    ),
                    "receipt differs from its entry"
                );
            }
            0x4C => {
                assert!(data.is_empty(), "forget answers nothing");
                if let Some(cmd) = cmd_data.and_then(|c| <[u8; 8]>::try_from(c).ok()) {
                    let epoch = u64::from_be_bytes(cmd);
                    assert!(
                        !lic.exports.iter().any(|e| e.epoch == epoch),
                        "forgotten epoch {epoch} still in the table"
                    );
                }
            }
            _ if p1 == 0 && p2 == 4 => {
                let info = LicenseInfo::decode(data).expect("GET DATA 00 04 decodes");
                self.check_license_info(&info, &stored, &lic, &keys);
            }
            _ => {}
        }
    }

    /// GET DATA 00 04 against the persisted slots and license record.
    fn check_license_info(
        &mut self,
        info: &LicenseInfo,
        sets: &Slots,
        lic: &LicenseState,
        keys: &Keys,
    ) {
        assert_eq!(info.slots.len(), sets.len(), "GET DATA 00 04: slot count");
        for (i, (slot, s)) in info.slots.iter().zip(sets).enumerate() {
            match (slot, s) {
                (SlotInfo::Free, None) => {}
                (
                    SlotInfo::Set {
                        license,
                        key_id,
                        not_after,
                        frozen,
                        ..
                    },
                    Some(s),
                ) => {
                    let key = self.signing_public_key(s, &keys.public_key);
                    assert_eq!(
                        (*license, *key_id, *not_after),
                        (
                            s.license,
                            openpsd_core::crypto::key_id(&key),
                            s.grant.as_ref().map(|g| g.not_after)
                        ),
                        "GET DATA 00 04: slot {i}"
                    );
                    let prep = lic
                        .exports
                        .iter()
                        .any(|e| usize::from(e.slot) == i && e.state == ExportState::Preparing);
                    assert_eq!(*frozen, prep, "GET DATA 00 04: slot {i} frozen");
                }
                _ => panic!("GET DATA 00 04: slot {i} is {slot:?}, memory has {s:?}"),
            }
        }
        assert_eq!(
            info.pending,
            lic.pending.as_ref().map(|p| (p.counter, p.license)),
            "GET DATA 00 04: pending request"
        );
        assert_eq!(
            (info.export_counter, &info.exports),
            (lic.export_counter, &lic.exports),
            "GET DATA 00 04: exports"
        );
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
        self.armed = false;
        let resp = self.exchange(&psd_apdu::select());
        assert_eq!(sw(&resp), SW_OK, "SELECT after {why}");
    }

    fn origin(&self, set: u8) -> PostalCode {
        self.sets
            .get(usize::from(set))
            .cloned()
            .flatten()
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
        if let Some((at, torn)) = self.arm_next.take() {
            self.arm(at, torn);
        }
        match op {
            Op::Apdu(a) => {
                if let Ok(view) = apdu::parse(a) {
                    crate::certmeter::decoders(view.data());
                }
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
                self.arm(*at_write, *torn);
                self.exchange(a);
            }
            Op::Arm { at_write, torn } => self.arm_next = Some((*at_write, *torn)),
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
                let a = AuditData::open(&resp[..resp.len() - 2], &keys.public_key)
                    .expect("audit signature");
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
                let today = match day {
                    0 => None,
                    d => Date::new(2026, 11, 1 + (d - 1) % 30),
                };
                let p = self.card().platform_mut();
                p.today = today;
                p.now = today.map(ten_o_clock);
            }
            Op::Reopen => self.reopen("a power cycle"),
            Op::GrantLicense {
                license,
                flags,
                corrupt,
            } => self.grant_license(*license, *flags, *corrupt),
            Op::Export { slot, mode } => self.export(slot % MAX_SETS, *mode),
            Op::Transfer {
                mode,
                set,
                amount,
                fault,
            } => self.transfer(*mode, *set, *amount, *fault),
            Op::Retire { which, forget } => {
                let epochs: Vec<u64> = self
                    .license_state()
                    .1
                    .exports
                    .iter()
                    .map(|e| e.epoch)
                    .collect();
                let epoch = match epochs.len() {
                    0 => u64::from(*which),
                    n => epochs[usize::from(*which) % n],
                };
                if *forget {
                    self.exchange(&psd_apdu::forget_retired(epoch));
                } else {
                    self.exchange(&psd_apdu::retire_set(epoch));
                }
            }
            Op::Import { which, corrupt } => {
                let mut blob = match self.blobs.len() {
                    0 => Vec::new(),
                    n => self.blobs[usize::from(*which) % n].clone(),
                };
                if *corrupt != 0 && !blob.is_empty() {
                    let at = (usize::from(*corrupt) - 1) * blob.len() / 255;
                    let at = at.min(blob.len() - 1);
                    blob[at] ^= 1 << (corrupt % 8);
                }
                let resp = self.exchange(&psd_apdu::import_set(&blob));
                if *corrupt != 0 {
                    assert_ne!(sw(&resp), SW_OK, "import of a changed blob accepted");
                }
            }
        }
        if self.armed {
            if let Some(card) = self.card.as_mut() {
                card.store_mut().set_power_cut(None);
            }
            self.armed = false;
        }
    }

    /// The PSD's persisted transfer state (the default before the first transfer).
    fn transfer_state(&mut self) -> TransferState {
        match self
            .card()
            .store()
            .read(openpsd_core::records::psd::TRANSFER)
        {
            Ok(Some(b)) => TransferState::decode(&b)
                .unwrap_or_else(|e| panic!("transfer record does not decode ({e:?}): {b:02X?}")),
            Ok(None) => TransferState::default(),
            Err(e) => panic!("transfer record unreadable in a live store: {e}"),
        }
    }

    /// The purse's value received over its life (zero without a purse).
    fn purse_total_in(&self) -> Amount {
        let Some(purse) = &self.purse else {
            return Amount::ZERO;
        };
        let rec = purse
            .store()
            .read(openpsd_core::records::purse::STATE)
            .expect("purse state readable")
            .expect("purse state present");
        openpsd_core::purse::state::PurseState::decode(&rec)
            .expect("purse state decodes")
            .total_in
    }

    /// One APDU to the purse (none without one): its response's form checked, the purse
    /// re-opened if a power cut hit it.
    fn purse_exchange(&mut self, cmd: &[u8]) -> Option<Vec<u8>> {
        let purse = self.purse.as_mut()?;
        let resp = purse.transmit(cmd);
        if trace() {
            eprintln!("purse> {}\npurse< {}", hex(cmd), hex(&resp));
        }
        let sw = crate::purse::sw(&resp);
        assert!(
            sw == SW_OK || sw >> 8 == 0x61 || Status::from_sw(sw).is_some(),
            "purse: undefined status word {sw:04X}"
        );
        if purse.store().is_dead() {
            assert_eq!(
                resp,
                Status::MemoryFailure.sw().to_be_bytes(),
                "purse: response to a command whose commit lost power"
            );
            let card = self.purse.take().expect("purse present");
            let (store, platform) = card.into_parts();
            let store = MemStore::open(store.nvm().clone())
                .unwrap_or_else(|e| panic!("purse memory does not re-open: {e}"));
            let card = openpsd_core::purse::purse_card(store, platform)
                .unwrap_or_else(|e| panic!("purse state does not load after a power cut: {e}"));
            self.purse = Some(card);
        }
        crate::purse::check(self.purse.as_ref().expect("purse present"));
        Some(resp)
    }

    /// Op::Transfer: the harness is the host between the PSD and the purse; `fault`
    /// spoils one step (see [`Op::Transfer`]).
    fn transfer(&mut self, mode: u8, set: u8, amount: u16, fault: u8) {
        use openpsd_core::client::purse_apdu;
        use openpsd_core::transfer::PsdHello;
        let (fault_step, fault_kind) = match fault {
            0 => (usize::MAX, 0),
            f => (usize::from((f - 1) % 16), (f - 1) / 16 % 4),
        };
        let flip = |cmd: &mut Vec<u8>| {
            if cmd.len() > 5 {
                let n = cmd.len() - 5;
                let at = 5 + usize::from(mode >> 2) * 7 % n;
                cmd[at] ^= 1 << (mode >> 2 & 7);
            }
        };
        if mode % 4 >= 2 {
            // RESET RECOGNITION, by the issuer or (mode 3) forged.
            let forged = mode % 4 == 3;
            let issuer = if forged {
                other_key()
            } else {
                crate::purse::issuer()
            };
            let data = openpsd_core::psd::transfer::reset_recognition_data(
                &issuer,
                DEVICE,
                u32::from(amount),
            );
            let mut cmd = psd_apdu::reset_recognition(&data);
            if fault_step == 0 && fault_kind == 1 {
                flip(&mut cmd);
            }
            let resp = self.exchange(&cmd);
            if forged {
                assert_ne!(sw(&resp), SW_OK, "a forged RESET RECOGNITION accepted");
            }
            return;
        }
        // Each step: (to the purse?, the command from the previous answer).
        let resolve = mode % 4 == 1;
        let mut prev: Vec<u8> = Vec::new();
        for step in 0..16usize {
            let to_purse = matches!(step, 1 | 3 | 5 | 6)
                || (!resolve && matches!(step, 7 | 9 | 12))
                || (resolve && step == 9);
            let cmd = match (step, resolve) {
                (0, _) => psd_apdu::select(),
                (1, _) => purse_apdu::select(),
                (2, _) => psd_apdu::open_session(),
                (3, _) => match PsdHello::decode(&prev) {
                    Ok(h) => purse_apdu::recognize(&h),
                    Err(_) => return,
                },
                (4, _) => psd_apdu::authenticate_card(&prev),
                (5, _) => purse_apdu::authenticate_psd(&prev),
                (6, false) => purse_apdu::verify(crate::purse::PIN),
                (7, false) => purse_apdu::transfer_request(Amount(u64::from(amount))),
                (8, false) => psd_apdu::transfer_debit(RegisterSetIndex(set), &prev),
                (9, false) => purse_apdu::transfer_credit(&prev),
                (10, false) => psd_apdu::transfer_confirm(&prev),
                (11, false) | (8, true) => psd_apdu::transfer_close(),
                (12, false) | (9, true) => purse_apdu::transfer_close(&prev),
                (6, true) => purse_apdu::transfer_status(),
                (7, true) => psd_apdu::transfer_resolve(&prev),
                _ => return,
            };
            let mut cmd = cmd;
            let here = step == fault_step;
            let mut armed_here = false;
            if here && fault_kind == 0 {
                return;
            }
            if here && fault_kind == 1 {
                flip(&mut cmd);
            }
            if here && fault_kind == 2 {
                if to_purse {
                    if let Some(p) = self.purse.as_mut() {
                        let at = p.store().writes();
                        p.store_mut().set_power_cut(Some(PowerCut {
                            at_write: at,
                            torn: mode & 4 != 0,
                        }));
                    }
                } else if !self.armed {
                    self.arm(0, mode & 4 != 0);
                    armed_here = true;
                }
            }
            let times = if here && fault_kind == 3 { 2 } else { 1 };
            let mut resp = Vec::new();
            for _ in 0..times {
                resp = if to_purse {
                    match self.purse_exchange(&cmd) {
                        Some(r) => r,
                        None => return,
                    }
                } else {
                    self.exchange(&cmd)
                };
            }
            if let Some(p) = self.purse.as_mut() {
                p.store_mut().set_power_cut(None);
            }
            if armed_here && self.armed {
                if let Some(card) = self.card.as_mut() {
                    card.store_mut().set_power_cut(None);
                }
                self.armed = false;
            }
            if sw(&resp) != SW_OK {
                return;
            }
            prev = resp[..resp.len() - 2].to_vec();
        }
    }

    fn arm(&mut self, at: u8, torn: bool) {
        let base = self.card().store().writes();
        self.card().store_mut().set_power_cut(Some(PowerCut {
            at_write: base + u64::from(at),
            torn,
        }));
        self.armed = true;
    }

    /// Op::GrantLicense: the harness plays the postal authority and the vendor.
    fn grant_license(&mut self, license: u8, flags: u8, corrupt: u8) {
        let ask = LicenseAsk {
            license: LicenseId(asked_license(license)),
            origin: PostalCode::new(if flags & 1 == 0 { b"10115" } else { b"80331" })
                .expect("valid code"),
        };
        let resp = self.exchange(&psd_apdu::license_request(&ask, flags & 2 != 0));
        if sw(&resp) != SW_OK {
            return;
        }
        let request = LicenseRequest::decode(&resp[..resp.len() - 2]).expect("request decodes");
        let apdu = psd_apdu::license_install(&grant_for(&request, flags, corrupt));
        let resp = self.exchange(&apdu);
        if !corrupt.is_multiple_of(10) {
            assert_ne!(
                sw(&resp),
                SW_OK,
                "forged grant (mode {}) installed",
                corrupt % 10
            );
        }
        let replay = (flags & 0x10 != 0 && !self.installs.is_empty())
            .then(|| self.installs[usize::from(flags >> 5) % self.installs.len()].clone());
        if let Some(old) = replay {
            let resp = self.exchange(&old);
            assert_ne!(sw(&resp), SW_OK, "an installed grant installed again");
        }
    }

    /// Op::Export: prepare, then commit / cancel as `mode % 5` says.
    fn export(&mut self, slot: u8, mode: u8) {
        let set = RegisterSetIndex(slot);
        let resp = self.exchange(&psd_apdu::export_prepare(set));
        if sw(&resp) != SW_OK || mode.is_multiple_of(5) {
            return;
        }
        let mut digest = Blob::digest_of(&resp[..resp.len() - 2]);
        match mode % 5 {
            2 => {
                self.exchange(&psd_apdu::export_cancel(set));
            }
            3 => {
                // The right digest on the next slot, or a wrong one on this slot.
                let slot = if mode & 0x80 != 0 {
                    RegisterSetIndex((slot + 1) % MAX_SETS)
                } else {
                    digest[usize::from(mode) % digest.len()] ^= 0x80;
                    set
                };
                let resp = self.exchange(&psd_apdu::export_commit(slot, &digest));
                assert_ne!(
                    sw(&resp),
                    SW_OK,
                    "export committed with a wrong digest or slot"
                );
            }
            m => {
                let first = self.exchange(&psd_apdu::export_commit(set, &digest));
                if m == 4 && sw(&first) == SW_OK {
                    let again = self.exchange(&psd_apdu::export_commit(set, &digest));
                    if sw(&again) == SW_OK {
                        assert_eq!(again, first, "a retried commit answers another epoch");
                    }
                }
            }
        }
    }

    /// After each operation: the persisted registers moved only as a debit, a credit, an
    /// install, an export or an import allows; value is conserved; the card's READ
    /// REGISTERS (and GET DATA 00 04) answers match the memory.
    fn check_state(&mut self) {
        crate::certmeter::check_record(self.card());
        let now = self.persisted_sets();
        let lic_now = self.license_state();
        let before = core::mem::replace(&mut self.sets, now.clone());
        let (lic_before_bytes, lic_before) = core::mem::replace(&mut self.lic, lic_now.clone());
        let changed = lic_before_bytes != lic_now.0
            || before
                .iter()
                .zip(&now)
                .any(|(b, n)| b.is_some() != n.is_some());
        let lic_now = lic_now.1;
        let personalized = self.keys().is_some();
        let was_personalized = core::mem::replace(&mut self.personalized, personalized);
        if !was_personalized {
            // PERSONALIZE made the sets: their history starts here.
            self.history = now
                .iter()
                .flatten()
                .map(|s| (s.license.0, s.clone()))
                .collect();
        } else {
            self.check_transitions(&before, &now, &lic_before, &lic_now);
        }
        self.check_transfers(&now);
        self.credit_ok = [false; MAX_SETS as usize];
        self.vanish_ok = [false; MAX_SETS as usize];
        self.install_ok = false;
        self.import_ok = false;
        self.retire_ok = false;

        // READ REGISTERS, when it cannot disturb a chain or a pending response.
        if !self.selected || self.pending || self.chain {
            return;
        }
        for (i, s) in now.iter().enumerate() {
            let resp = self.exchange(&[0x80, 0x32, 0x00, i as u8, 0x00]);
            match s {
                Some(s) => {
                    assert_eq!(sw(&resp), SW_OK, "READ REGISTERS {i}");
                    let r = Registers::decode(&resp[..resp.len() - 2])
                        .expect("READ REGISTERS response decodes");
                    assert_eq!(
                        r.ar.checked_add(r.dr)
                            .and_then(|s| s.checked_add(r.pending)),
                        Some(r.control_sum),
                        "AR + DR + pending = CS"
                    );
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
        if personalized && changed {
            // Checked against the memory in check_response.
            let resp = self.exchange(&psd_apdu::get_license_data());
            assert_eq!(sw(&resp), SW_OK, "GET DATA 00 04");
        }
    }

    /// The pending transfer the transfer record names is the one pending register that is
    /// not zero; with a purse beside the PSD, what the purse received since the start is
    /// what the PSD counts as moved out, give or take the pending transfer.
    fn check_transfers(&mut self, now: &Slots) {
        let ts = self.transfer_state();
        let pending: Vec<(usize, Amount)> = now
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| (i, s.pending)))
            .filter(|(_, p)| *p != Amount::ZERO)
            .collect();
        match ts.pending {
            None => assert!(
                pending.is_empty(),
                "pending registers {pending:?} without a pending transfer"
            ),
            Some(p) => assert_eq!(
                pending,
                vec![(usize::from(p.set), p.amount)],
                "the pending transfer {p:?} is not the pending registers"
            ),
        }
        if self.purse.is_none() {
            return;
        }
        let got = self
            .purse_total_in()
            .0
            .checked_sub(self.base_totals.0 .0)
            .expect("the purse's total received fell");
        let out = ts
            .total_out
            .0
            .checked_sub(self.base_totals.1 .0)
            .expect("the PSD's total moved out fell");
        match ts.pending {
            None => assert_eq!(
                got, out,
                "the purse received {got}, the PSD moved out {out}, nothing pending"
            ),
            Some(p) => assert!(
                out <= got && got <= out + p.amount.0,
                "the purse received {got}, the PSD moved out {out}, {} pending",
                p.amount.0
            ),
        }
    }

    /// The slot-by-slot and table-by-table rules between two operations on a personalized
    /// card.
    fn check_transitions(
        &mut self,
        before: &Slots,
        now: &Slots,
        lb: &LicenseState,
        ln: &LicenseState,
    ) {
        let max_postage = self.keys().map(|k| k.max_postage);
        let outstanding = |l: &LicenseState| -> Vec<_> {
            l.exports
                .iter()
                .filter(|e| e.state == ExportState::Outstanding)
                .copied()
                .collect()
        };
        let (out_b, out_n) = (outstanding(lb), outstanding(ln));
        let mut credits: u128 = 0;
        for (i, (b, n)) in before.iter().zip(now).enumerate() {
            match (b, n) {
                (Some(b), Some(n)) if b.license == n.license => {
                    credits += self.check_set(i, b, n, max_postage);
                }
                _ => {
                    if let Some(b) = b {
                        // Vanished: only an export commit, into an outstanding entry.
                        assert!(
                            self.vanish_ok[i],
                            "set {i} ({:?}) vanished without an export commit",
                            b.license
                        );
                        let e = out_n
                            .iter()
                            .find(|e| e.license == b.license)
                            .unwrap_or_else(|| {
                                panic!("set {i} vanished without an outstanding export")
                            });
                        assert!(
                            !out_b.iter().any(|o| o.epoch == e.epoch),
                            "set {i} vanished into an old entry"
                        );
                        assert_eq!(
                            (usize::from(e.slot), e.control_sum, e.dr),
                            (i, b.control_sum, b.dr),
                            "set {i}: the outstanding entry differs from the set"
                        );
                        self.history.insert(b.license.0, b.clone());
                    }
                    if let Some(n) = n {
                        if let Some(e) = out_b.iter().find(|e| e.license == n.license) {
                            // Back from a file: exactly the registers that left.
                            assert!(self.import_ok, "set {i} imported without IMPORT SET");
                            assert!(
                                !ln.exports.iter().any(|x| x.epoch == e.epoch),
                                "set {i} imported, its entry kept"
                            );
                            let old = self
                                .history
                                .get(&n.license.0)
                                .expect("an exported license has a history");
                            assert!(
                                same_exported(old, n),
                                "set {i}: imported registers differ from the exported ones: {old:?} -> {n:?}"
                            );
                            assert_eq!((e.control_sum, e.dr), (n.control_sum, n.dr));
                            assert!(
                                self.imported.insert(e.epoch),
                                "epoch {} imported twice",
                                e.epoch
                            );
                        } else {
                            // New: only a LICENSE INSTALL, a zeroed set for a license
                            // never seen here.
                            assert!(self.install_ok, "set {i} appeared without an install");
                            assert!(
                                !self.history.contains_key(&n.license.0),
                                "set {i}: license {:?} installed again",
                                n.license
                            );
                            assert!(
                                n.grant.is_some()
                                    && n.ar == Amount::ZERO
                                    && n.dr == Amount::ZERO
                                    && n.control_sum == Amount::ZERO
                                    && n.pieces.0 == 0
                                    && n.refills.0 == 0,
                                "set {i}: an installed set is not zeroed: {n:?}"
                            );
                        }
                    }
                }
            }
            if let Some(n) = n {
                self.history.insert(n.license.0, n.clone());
            }
        }
        // One license, one set: never two resident, never resident and outstanding.
        let mut held = HashSet::new();
        for l in now
            .iter()
            .flatten()
            .map(|s| s.license)
            .chain(out_n.iter().map(|e| e.license))
        {
            assert!(held.insert(l.0), "license {l:?} held twice");
        }
        // Outstanding entries: the same until imported or retired (then the same but
        // for the state).
        for e in &out_b {
            if let Some(x) = out_n.iter().find(|x| x.epoch == e.epoch) {
                assert_eq!(x, e, "outstanding entry changed");
            } else if let Some(x) = ln.exports.iter().find(|x| x.epoch == e.epoch) {
                assert!(
                    self.retire_ok,
                    "entry {} retired without RETIRE SET",
                    e.epoch
                );
                assert_eq!(
                    *x,
                    ExportEntry {
                        state: ExportState::Retired,
                        ..*e
                    },
                    "retired entry differs from the outstanding one"
                );
            } else {
                assert!(
                    now.iter().flatten().any(|s| s.license == e.license),
                    "outstanding entry {} removed without its set coming back",
                    e.epoch
                );
            }
        }
        // Epochs: the counter never falls, new entries take epochs never used, a frozen
        // set does not move.
        assert!(
            ln.export_counter >= lb.export_counter,
            "export counter fell"
        );
        for e in &ln.exports {
            if !lb.exports.iter().any(|x| x.epoch == e.epoch) {
                assert!(
                    e.epoch >= lb.export_counter,
                    "export epoch {} reused",
                    e.epoch
                );
            }
            if e.state == ExportState::Preparing {
                let s = now[usize::from(e.slot)]
                    .as_ref()
                    .expect("a preparing export's set is resident");
                assert_eq!(
                    (s.license, s.control_sum, s.dr),
                    (e.license, e.control_sum, e.dr),
                    "a frozen set moved"
                );
            }
        }
        assert!(
            ln.request_counter >= lb.request_counter,
            "request counter fell"
        );
        // Retired entries: unchanged until forgotten, and only RETIRE SET forgets them
        // (their value then belongs to the back office's refund).
        let mut forgotten: u128 = 0;
        for e in lb
            .exports
            .iter()
            .filter(|e| e.state == ExportState::Retired)
        {
            match ln.exports.iter().find(|x| x.epoch == e.epoch) {
                Some(x) => assert_eq!(x, e, "retired entry changed"),
                None => {
                    assert!(
                        self.retire_ok,
                        "retired entry {} forgotten without RETIRE SET",
                        e.epoch
                    );
                    forgotten += u128::from(e.control_sum.0);
                }
            }
        }
        // Value conservation: only a REFILL's credit adds value; only a forget of a
        // retired entry takes it out.
        let (vb, vn) = (value(before, lb), value(now, ln));
        assert_eq!(
            vn + forgotten,
            vb + credits,
            "value not conserved: {vb} + credits {credits} != {vn} + forgotten {forgotten}"
        );
    }

    /// One set that stayed in its slot; returns its credit.
    fn check_set(&self, i: usize, b: &RegisterSet, n: &RegisterSet, max: Option<Amount>) -> u128 {
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
            assert_eq!(
                (n.fees, n.services),
                (b.fees, b.services),
                "set {i}: a refill charged a fee"
            );
            u128::from(credit)
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
            0
        } else {
            let pieces = n.pieces.0 - b.pieces.0;
            // A transfer to a purse: DR to pending (debit), pending to AR and transferred
            // (confirmed or resolved as completed) or back to DR (undone). One operation
            // completes the transfer that was pending, or makes a whole new one.
            let moved = n
                .transferred
                .0
                .checked_sub(b.transferred.0)
                .unwrap_or_else(|| panic!("set {i}: transferred fell {b:?} -> {n:?}"));
            assert!(
                moved == 0
                    || moved == b.pending.0
                    || (b.pending == Amount::ZERO && n.pending == Amount::ZERO),
                "set {i}: {moved} transferred with {:?} pending before, {:?} after",
                b.pending,
                n.pending
            );
            assert!(
                b.pending == n.pending || b.pending == Amount::ZERO || n.pending == Amount::ZERO,
                "set {i}: pending changed from {:?} to {:?}",
                b.pending,
                n.pending
            );
            if moved != 0 || b.pending != n.pending {
                assert_eq!(
                    (pieces, n.services, n.fees),
                    (0, b.services, b.fees),
                    "set {i}: a transfer counted a piece or a service"
                );
            }
            let debit =
                n.ar.0
                    .checked_sub(b.ar.0)
                    .expect("AR fell")
                    .checked_sub(moved)
                    .unwrap_or_else(|| panic!("set {i}: transferred rose more than AR"));
            // Fees (the certificate meter's services) are debited like postage but counted
            // apart: fees only rise, one service at a time, and never with a piece.
            let fee = n
                .fees
                .0
                .checked_sub(b.fees.0)
                .unwrap_or_else(|| panic!("set {i}: fees fell {b:?} -> {n:?}"));
            let services = n
                .services
                .0
                .checked_sub(b.services.0)
                .unwrap_or_else(|| panic!("set {i}: service count fell"));
            assert!(
                services <= 1,
                "set {i}: {services} services in one operation"
            );
            assert!(
                fee == 0 || services == 1,
                "set {i}: fee {fee} charged without a service counted"
            );
            assert!(
                !(services == 1 && pieces == 1),
                "set {i}: a piece and a service in one operation"
            );
            let postage = debit
                .checked_sub(fee)
                .unwrap_or_else(|| panic!("set {i}: fee {fee} not in AR ({debit})"));
            assert!(pieces <= 1, "set {i}: {pieces} pieces in one operation");
            assert_eq!(
                postage > 0,
                pieces == 1,
                "set {i}: postage {postage} for {pieces} pieces"
            );
            if let Some(max) = max {
                assert!(
                    postage <= max.0,
                    "set {i}: debit {postage} above the per-piece limit"
                );
            }
            0
        }
    }
}
/// What a run moved to the purse of the transfer start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Moved {
    /// Value the purse received.
    pub received: Amount,
    /// Value the PSD counts as moved out (completed transfers).
    pub moved_out: Amount,
    /// Value still pending at the end.
    pub pending: Amount,
}

/// Runs one decoded input; panics if the card panics or a property breaks. Returns what
/// went to the purse.
pub fn run(input: &Input) -> Moved {
    let mut h = Harness::new(input.start);
    for op in &input.ops {
        h.run_op(op);
        h.check_state();
    }
    let ts = h.transfer_state();
    Moved {
        received: Amount(h.purse_total_in().0 - h.base_totals.0 .0),
        moved_out: Amount(ts.total_out.0 - h.base_totals.1 .0),
        pending: ts.pending.map_or(Amount::ZERO, |p| p.amount),
    }
}

/// Decodes and runs raw fuzzer bytes.
pub fn run_bytes(data: &[u8]) {
    crate::certmeter::decoders(data);
    let _ = run(&Input::decode(data));
}
