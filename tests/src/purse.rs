//! Harness for the purse and value-transfer tests (seed 002): a scheme (issuer signing and
//! admin keys), a PSD of that scheme funded through a refill and certified by the issuer,
//! and purse cards personalized and certified by the issuer (purchase key and recognition
//! key). No device holds a key of the issuer.

use openpsd_core::client::psd_apdu;
use openpsd_core::client::purse_apdu;
use openpsd_core::crypto::{sha256, IndiciumKey, MacKey};
use openpsd_core::platform::SeededPlatform;
use openpsd_core::psd::device::{Personalization, SchemeSlot};
use openpsd_core::psd::psd_card;
use openpsd_core::purse::personal::{certificate_body, PurseInfo, PursePersonalization};
use openpsd_core::purse::purse_card;
use openpsd_core::store::{MemStore, Nvm};
use openpsd_core::transfer::card_admin_key;
use openpsd_core::transfer::cert::{DeviceCertificate, DeviceKind, RecognitionInfo};
use openpsd_core::types::*;

use crate::{expect_ok, personalization, Kms, TestCard};

/// The test scheme.
pub const SCHEME: SchemeId = SchemeId(0x0002_0001);
/// The issuer's admin key (per-card admin keys are diversified from it).
pub const ADMIN_KEY: [u8; 16] = *b"openpsd-admin-k1";
/// Failed recognitions that block, on both sides.
pub const MAX_FAILURES: u8 = 5;
/// PIN tries.
pub const PIN_TRIES: u8 = 3;
/// The holder's PIN.
pub const PIN: &[u8] = b"2468";
/// Purse limits.
pub const MAX_BALANCE: Amount = Amount(50_000);
/// Per-transfer limit.
pub const MAX_TRANSFER: Amount = Amount(20_000);
/// The test card's ID.
pub const CARD: CardId = CardId(*b"PURSE001");

/// The issuer's signing key (certifies purchase keys and every device's recognition key).
pub fn issuer_key() -> IndiciumKey {
    IndiciumKey::from_bytes(&[9u8; 32]).expect("valid scalar")
}

/// Another issuer (of another scheme, or a forger's): its certificates mean nothing here.
pub fn stranger_issuer_key() -> IndiciumKey {
    IndiciumKey::from_bytes(&[0x5A; 32]).expect("valid scalar")
}

/// The serial the test issuer gives a device's certificate: from its ID, so each device
/// has its own and a test can name it in a revocation list.
pub fn serial_of(device: [u8; 8]) -> u32 {
    let h = sha256(&device);
    u32::from_be_bytes([h[0], h[1], h[2], h[3]])
}

/// The validity the test issuer gives certificates (the test platforms' date is inside).
pub fn validity() -> (Date, Date) {
    (
        Date::new(2026, 1, 1).expect("date"),
        Date::new(2030, 12, 31).expect("date"),
    )
}

/// The issuer's certificate on a device's recognition key.
pub fn certificate_for(
    issuer: &IndiciumKey,
    kind: DeviceKind,
    scheme: SchemeId,
    device: [u8; 8],
    public_key: [u8; 33],
) -> DeviceCertificate {
    let (from, to) = validity();
    DeviceCertificate::issue(
        issuer,
        kind,
        scheme,
        device,
        serial_of(device),
        from,
        to,
        public_key,
    )
}

/// The PSD's personalization: the standard test PSD in scheme `scheme` of the test issuer.
pub fn psd_personalization(scheme: SchemeId) -> Personalization {
    let mut p = personalization();
    p.scheme = Some(SchemeSlot {
        scheme,
        issuer_public_key: issuer_key().public_key(),
        max_failures: MAX_FAILURES,
    });
    p
}

/// A PSD of the test scheme with `amount` refilled on set 0, SELECTed.
pub fn funded_psd(seed: u64, amount: u64) -> TestCard {
    funded_psd_as(seed, psd_personalization(SCHEME), amount)
}

/// Reads a PSD's recognition key and installs `issuer`'s certificate on it (SELECTs it).
pub fn certify_psd(card: &mut TestCard, issuer: &IndiciumKey, scheme: SchemeId) {
    expect_ok(&card.transmit(&psd_apdu::select()));
    let info = expect_ok(&card.transmit(&psd_apdu::get_recognition_data()));
    let info = RecognitionInfo::decode(&info).expect("recognition data");
    let device = expect_ok(&card.transmit(&psd_apdu::get_data()));
    let device = openpsd_core::psd::device::DeviceInfo::decode(&device)
        .expect("device info")
        .expect("personalized")
        .device;
    let cert = certificate_for(issuer, DeviceKind::Psd, scheme, device.0, info.public_key);
    expect_ok(&card.transmit(&psd_apdu::install_certificate(&cert.encode())));
}

/// A PSD personalized with `p` (certified by the test issuer when it has a scheme) and
/// `amount` refilled on set 0, SELECTed.
pub fn funded_psd_as(seed: u64, p: Personalization, amount: u64) -> TestCard {
    let mut platform = SeededPlatform::new(seed);
    platform.today = Date::new(2026, 11, 21);
    let mut card = psd_card(MemStore::new(), platform).expect("blank store loads");
    expect_ok(&card.transmit(&psd_apdu::select()));
    expect_ok(&card.transmit(&psd_apdu::personalize(&p)));
    if let Some(s) = &p.scheme {
        certify_psd(&mut card, &issuer_key(), s.scheme);
    }
    if amount > 0 {
        let msg = Kms::new().refill_for(&mut card, RegisterSetIndex(0), Amount(amount), [1; 8]);
        expect_ok(&card.transmit(&psd_apdu::refill(RegisterSetIndex(0), &msg)));
    }
    card
}

/// The purse personalization for `card` in scheme `scheme` of the test issuer.
pub fn purse_personalization(card: CardId, scheme: SchemeId) -> PursePersonalization {
    PursePersonalization {
        card,
        scheme,
        admin_key: *card_admin_key(&MacKey::new(ADMIN_KEY), card).expose(),
        issuer_public_key: issuer_key().public_key(),
        max_balance: MAX_BALANCE,
        max_transfer: MAX_TRANSFER,
        pin_tries: PIN_TRIES,
        max_failures: MAX_FAILURES,
        pin: PIN.to_vec(),
    }
}

/// A personalized purse of the test issuer, its purchase key and its recognition key
/// certified by `issuer` (the test issuer, or a stranger for a card of another scheme),
/// SELECTed.
pub fn purse_in(seed: u64, card: CardId, scheme: SchemeId, issuer: &IndiciumKey) -> TestCard {
    let mut platform = SeededPlatform::new(seed);
    platform.today = Date::new(2026, 11, 21);
    let mut purse = purse_card(MemStore::new(), platform).expect("blank store loads");
    expect_ok(&purse.transmit(&purse_apdu::select()));
    let mut p = purse_personalization(card, scheme);
    p.issuer_public_key = issuer.public_key();
    let pk = expect_ok(&purse.transmit(&purse_apdu::personalize(&p)));
    let sig = issuer.sign(&certificate_body(card, scheme, &pk));
    expect_ok(&purse.transmit(&purse_apdu::certify(&sig)));
    certify_purse(&mut purse, issuer, scheme, card);
    purse
}

/// Reads a purse's recognition key and installs `issuer`'s certificate on it.
pub fn certify_purse(purse: &mut TestCard, issuer: &IndiciumKey, scheme: SchemeId, card: CardId) {
    let info = expect_ok(&purse.transmit(&purse_apdu::get_data(4)));
    let info = RecognitionInfo::decode(&info).expect("recognition data");
    let cert = certificate_for(issuer, DeviceKind::Purse, scheme, card.0, info.public_key);
    expect_ok(&purse.transmit(&purse_apdu::install_certificate(&cert.encode())));
}

/// The test purse.
pub fn purse(seed: u64) -> TestCard {
    purse_in(seed, CARD, SCHEME, &issuer_key())
}

/// Re-opens a purse's memory (after a power loss) and SELECTs it.
pub fn reopen_purse(nvm: &Nvm, seed: u64) -> TestCard {
    let store = MemStore::open(nvm.clone()).expect("store re-opens");
    let mut platform = SeededPlatform::new(seed);
    platform.today = Date::new(2026, 11, 21);
    let mut card = purse_card(store, platform).expect("state loads");
    expect_ok(&card.transmit(&purse_apdu::select()));
    card
}

/// The purse's public data.
pub fn purse_data(purse: &mut TestCard) -> PurseInfo {
    expect_ok(&purse.transmit(&purse_apdu::select()));
    let data = expect_ok(&purse.transmit(&purse_apdu::get_data(1)));
    PurseInfo::decode(&data)
        .expect("decodes")
        .expect("personalized")
}

/// Which device runs a protocol step.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Dev {
    /// The PSD.
    Psd,
    /// The purse.
    Purse,
}

/// A transfer's steps as the host drives them (seed 002 Fig. 8), and which device runs
/// each; tests cut power or drop replies at any of them.
pub const STEPS: [(&str, Dev); 13] = [
    ("SELECT PSD", Dev::Psd),
    ("SELECT purse", Dev::Purse),
    ("OPEN SESSION", Dev::Psd),
    ("RECOGNIZE", Dev::Purse),
    ("AUTHENTICATE CARD", Dev::Psd),
    ("AUTHENTICATE PSD", Dev::Purse),
    ("VERIFY", Dev::Purse),
    ("TRANSFER REQUEST", Dev::Purse),
    ("TRANSFER DEBIT", Dev::Psd),
    ("TRANSFER CREDIT", Dev::Purse),
    ("TRANSFER CONFIRM", Dev::Psd),
    ("TRANSFER CLOSE (PSD)", Dev::Psd),
    ("TRANSFER CLOSE (purse)", Dev::Purse),
];

/// The response carried from one step to the next.
#[derive(Default)]
pub struct Carry {
    /// The previous step's response data.
    pub last: Vec<u8>,
}

/// The command APDU of step `i` of a transfer of `amount` on set 0.
pub fn step_apdu(i: usize, c: &Carry, amount: u64) -> Vec<u8> {
    use openpsd_core::psd::{ins as psd_ins, CLA_PSD};
    let psd = |ins, p2, data: &[u8]| psd_apdu::command(CLA_PSD, ins, 0, p2, data, 256);
    match i {
        0 => psd_apdu::select(),
        1 => purse_apdu::select(),
        2 => psd(psd_ins::OPEN_SESSION, 0, &[]),
        3 => purse_apdu::recognize(
            &openpsd_core::transfer::PsdHello::decode(&c.last).expect("a PSD hello"),
        ),
        4 => psd(psd_ins::AUTHENTICATE_CARD, 0, &c.last),
        5 => purse_apdu::authenticate_psd(&c.last),
        6 => purse_apdu::verify(PIN),
        7 => purse_apdu::transfer_request(Amount(amount)),
        8 => psd(psd_ins::TRANSFER_DEBIT, 0, &c.last),
        9 => purse_apdu::transfer_credit(&c.last),
        10 => psd(psd_ins::TRANSFER_CONFIRM, 0, &c.last),
        11 => psd_apdu::transfer_close(),
        _ => purse_apdu::transfer_close(&c.last),
    }
}

/// Runs steps `0..upto` of a transfer of `amount`, each of which must succeed; returns
/// the last response.
pub fn run_until(psd: &mut TestCard, purse: &mut TestCard, amount: u64, upto: usize) -> Carry {
    try_run_until(psd, purse, amount, upto)
        .unwrap_or_else(|(step, sw)| panic!("step {} answered {sw:04X}", STEPS[step].0))
}

/// Runs steps `0..upto` of a transfer of `amount` while they succeed; the first refusal
/// stops the run and is returned as (step, status word).
pub fn try_run_until(
    psd: &mut TestCard,
    purse: &mut TestCard,
    amount: u64,
    upto: usize,
) -> Result<Carry, (usize, u16)> {
    let mut c = Carry::default();
    for (i, (_, dev)) in STEPS.iter().enumerate().take(upto) {
        let a = step_apdu(i, &c, amount);
        let card = match dev {
            Dev::Psd => &mut *psd,
            Dev::Purse => &mut *purse,
        };
        let resp = card.transmit(&a);
        match psd_apdu::data(&resp) {
            Ok(d) => c.last = d.to_vec(),
            Err(_) => return Err((i, psd_apdu::sw(&resp))),
        }
    }
    Ok(c)
}
