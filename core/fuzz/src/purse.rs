//! Runs fuzzer bytes as raw APDUs against a purse card and checks, after every one, what
//! must hold whatever the terminal or a fake PSD sends: no panic, a status word on every
//! response, the records still loading, the balance within its maximum and never above the
//! value ever received, the RAM copy equal to the memory, the PIN's try counter never above
//! its maximum, and no record outside the purse's range.
//!
//! ```text
//! input = start:u8 (even: personalized and certified, odd: blank) { len:u8 apdu }*
//! ```

use openpsd_core::client::purse_apdu;
use openpsd_core::crypto::{IndiciumKey, MacKey};
use openpsd_core::platform::SeededPlatform;
use openpsd_core::purse::personal::{certificate_body, PursePersonalization};
use openpsd_core::purse::state::{PinRecord, PurseState};
use openpsd_core::purse::{purse_card, PurseApplet};
use openpsd_core::records::purse as rec;
use openpsd_core::store::{MemStore, Store};
use openpsd_core::transfer::card_admin_key;
use openpsd_core::transfer::cert::{DeviceCertificate, DeviceKind, RecognitionInfo};
use openpsd_core::types::{Amount, CardId, Date, SchemeId};
use openpsd_core::Card;

/// The card under test.
pub type PurseCard = Card<MemStore, SeededPlatform>;

/// Most APDUs run from one input.
pub const MAX_APDUS: usize = 64;
/// The fixture purse's maximum balance.
pub const MAX_BALANCE: Amount = Amount(50_000);
/// Its PIN tries.
pub const PIN_TRIES: u8 = 3;

fn card_id() -> CardId {
    CardId(*b"PURSE001")
}

/// The fixture's personalization (as `openpsd-tests` has it).
pub fn personalization() -> PursePersonalization {
    let card = card_id();
    PursePersonalization {
        card,
        scheme: SchemeId(0x0002_0001),
        admin_key: *card_admin_key(&MacKey::new(*b"openpsd-admin-k1"), card).expose(),
        issuer_public_key: issuer().public_key(),
        max_balance: MAX_BALANCE,
        max_transfer: Amount(20_000),
        pin_tries: PIN_TRIES,
        max_failures: 5,
        pin: b"2468".to_vec(),
    }
}

fn issuer() -> IndiciumKey {
    IndiciumKey::from_bytes(&[9u8; 32]).expect("valid scalar")
}

fn platform() -> SeededPlatform {
    let mut p = SeededPlatform::new(2);
    p.today = Date::new(2026, 11, 21);
    p
}

fn sw(resp: &[u8]) -> u16 {
    assert!(
        resp.len() >= 2,
        "a response without a status word: {resp:02X?}"
    );
    u16::from_be_bytes([resp[resp.len() - 2], resp[resp.len() - 1]])
}

/// A purse SELECTed: personalized and certified, or blank.
pub fn start(personalized: bool) -> PurseCard {
    let mut card = purse_card(MemStore::new(), platform()).expect("blank store loads");
    assert_eq!(sw(&card.transmit(&purse_apdu::select())), 0x9000);
    if personalized {
        let resp = card.transmit(&purse_apdu::personalize(&personalization()));
        assert_eq!(sw(&resp), 0x9000);
        let pk = &resp[..resp.len() - 2];
        let sig = issuer().sign(&certificate_body(card_id(), SchemeId(0x0002_0001), pk));
        assert_eq!(sw(&card.transmit(&purse_apdu::certify(&sig))), 0x9000);
        // The recognition key's certificate, so fuzzed hellos reach the ECDH and MACs.
        let resp = card.transmit(&purse_apdu::get_data(4));
        assert_eq!(sw(&resp), 0x9000);
        let info = RecognitionInfo::decode(&resp[..resp.len() - 2]).expect("recognition data");
        let cert = DeviceCertificate::issue(
            &issuer(),
            DeviceKind::Purse,
            SchemeId(0x0002_0001),
            card_id().0,
            1,
            Date::new(2026, 1, 1).expect("date"),
            Date::new(2030, 12, 31).expect("date"),
            info.public_key,
        );
        let resp = card.transmit(&purse_apdu::install_certificate(&cert.encode()));
        assert_eq!(sw(&resp), 0x9000);
    }
    card
}

/// Checks the invariants on the card's memory (read from the store, so the fuzzed
/// sequence is not disturbed: any command would drop a chain or a pending response).
fn check(card: &PurseCard) {
    let store = card.store();
    let applet = PurseApplet::load(store).expect("the purse's records load");
    let Some(state) = store.read(rec::STATE).expect("readable") else {
        assert_eq!(applet.balance(), None, "a balance without a state record");
        return;
    };
    let state = PurseState::decode(&state).expect("state record decodes");
    assert!(
        state.balance <= MAX_BALANCE,
        "balance {:?} above the maximum",
        state.balance
    );
    assert!(
        state.balance <= state.total_in,
        "more value than ever received"
    );
    assert_eq!(Some(state.balance), applet.balance());
    let pin = store.read(rec::PIN).expect("readable").expect("PIN record");
    let pin = PinRecord::decode(&pin).expect("PIN record decodes");
    assert!(pin.tries_left <= PIN_TRIES, "PIN tries above the maximum");
}

/// Runs fuzzer bytes (see the module comment).
pub fn run_purse_bytes(data: &[u8]) {
    let Some((&first, mut rest)) = data.split_first() else {
        return;
    };
    let mut card = start(first % 2 == 0);
    for _ in 0..MAX_APDUS {
        let Some((&len, tail)) = rest.split_first() else {
            break;
        };
        let n = usize::from(len).min(tail.len());
        let (apdu, tail) = tail.split_at(n);
        rest = tail;
        let resp = card.transmit(apdu);
        sw(&resp);
        check(&card);
    }
    // Only the purse's records were ever written.
    let ids = card.store().ids().expect("ids readable");
    assert!(
        ids.iter().all(|id| rec::RANGE.contains(id)),
        "foreign records"
    );
}
