//! Runs fuzzer bytes as raw APDUs against a purse card and checks, after every one, what
//! must hold whatever the terminal or a fake PSD sends: no panic, a status word on every
//! response, the records still loading, the balance within its maximum and never above the
//! value ever received, the RAM copy equal to the memory, the PIN's try counter never above
//! its maximum, and no record outside the purse's range.
//!
//! ```text
//! input = start:u8 (odd: blank; 0 mod 4: personalized and certified; 2 mod 4: the same
//!         after receiving 10 000 from the card target's transfer PSD, so PURCHASE can
//!         debit) { len:u8 apdu }*
//! ```

use openpsd_core::client::purse_apdu;
use openpsd_core::crypto::{IndiciumKey, MacKey};
use openpsd_core::platform::SeededPlatform;
use openpsd_core::purse::personal::{certificate_body, PursePersonalization};
use openpsd_core::purse::state::{Identity, PinRecord, PurseState};
use openpsd_core::purse::{purse_card, PurseApplet};
use openpsd_core::records::purse as rec;
use openpsd_core::store::{MemStore, Nvm, Store};
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
/// Its PIN.
pub const PIN: &[u8] = b"2468";
/// Its scheme (the card target's transfer start is a PSD of this scheme).
pub const SCHEME: SchemeId = SchemeId(0x0002_0001);

fn card_id() -> CardId {
    CardId(*b"PURSE001")
}

/// The card target's transfer PSD, which the funded fixture received from.
fn transfer_psd() -> openpsd_core::types::DeviceId {
    openpsd_core::types::DeviceId(*b"PSD00001")
}

/// The fixture's personalization (as `openpsd-tests` has it).
pub fn personalization() -> PursePersonalization {
    let card = card_id();
    PursePersonalization {
        card,
        scheme: SCHEME,
        admin_key: *admin_key().expose(),
        issuer_public_key: issuer().public_key(),
        max_balance: MAX_BALANCE,
        max_transfer: Amount(20_000),
        pin_tries: PIN_TRIES,
        max_failures: 5,
        pin: PIN.to_vec(),
    }
}

/// The scheme issuer's key (restored once per process).
pub fn issuer() -> IndiciumKey {
    static K: std::sync::OnceLock<IndiciumKey> = std::sync::OnceLock::new();
    K.get_or_init(|| IndiciumKey::from_bytes(&[9u8; 32]).expect("valid scalar"))
        .clone()
}

/// The scheme issuer's certificate on the recognition key a device reports (GET DATA
/// answer `data`), valid 2026 to 2030.
pub fn certificate(kind: DeviceKind, id: [u8; 8], data: &[u8]) -> Vec<u8> {
    let info = RecognitionInfo::decode(data).expect("recognition data");
    DeviceCertificate::issue(
        &issuer(),
        kind,
        SCHEME,
        id,
        1,
        Date::new(2026, 1, 1).expect("date"),
        Date::new(2030, 12, 31).expect("date"),
        info.public_key,
    )
    .encode()
}

/// The personalized, certified purse's memory (built once per process).
pub fn personalized_nvm() -> &'static Nvm {
    static NVM: std::sync::OnceLock<Nvm> = std::sync::OnceLock::new();
    NVM.get_or_init(|| build(true).store().nvm().clone())
}

/// The value the funded start received.
pub const FUNDS: Amount = Amount(10_000);

/// The funded purse's memory: [`personalized_nvm`] after a transfer of [`FUNDS`] from the
/// card target's transfer PSD (built once per process).
pub fn funded_nvm() -> &'static Nvm {
    static NVM: std::sync::OnceLock<Nvm> = std::sync::OnceLock::new();
    NVM.get_or_init(|| {
        let mut purse = personalized_card();
        let store = MemStore::open(crate::harness::transfer_nvm().clone()).expect("opens");
        let mut psd =
            openpsd_core::psd::psd_card(store, crate::harness::platform()).expect("PSD loads");
        openpsd_core::client::transfer::transfer(
            &mut psd,
            &mut purse,
            openpsd_core::types::RegisterSetIndex(0),
            FUNDS,
            PIN,
        )
        .expect("the fixture transfer");
        purse.store().nvm().clone()
    })
}

/// The card's admin key (what the issuer MACs UNBLOCK PIN and RESET RECOGNITION with).
pub fn admin_key() -> MacKey {
    card_admin_key(&MacKey::new(*b"openpsd-admin-k1"), card_id())
}

/// The personalized, certified purse, SELECTed, on a copy of [`personalized_nvm`].
pub fn personalized_card() -> PurseCard {
    card_on(personalized_nvm())
}

fn card_on(nvm: &Nvm) -> PurseCard {
    let store = MemStore::open(nvm.clone()).expect("purse memory opens");
    let mut card = purse_card(store, platform()).expect("purse loads");
    assert_eq!(sw(&card.transmit(&purse_apdu::select())), 0x9000);
    card
}

fn platform() -> SeededPlatform {
    let mut p = SeededPlatform::new(2);
    p.today = Date::new(2026, 11, 21);
    p
}

pub(crate) fn sw(resp: &[u8]) -> u16 {
    assert!(
        resp.len() >= 2,
        "a response without a status word: {resp:02X?}"
    );
    u16::from_be_bytes([resp[resp.len() - 2], resp[resp.len() - 1]])
}

/// A purse SELECTed: personalized and certified, or blank.
pub fn start(personalized: bool) -> PurseCard {
    if personalized {
        personalized_card()
    } else {
        build(false)
    }
}

fn build(personalized: bool) -> PurseCard {
    let mut card = purse_card(MemStore::new(), platform()).expect("blank store loads");
    assert_eq!(sw(&card.transmit(&purse_apdu::select())), 0x9000);
    if personalized {
        let resp = card.transmit(&purse_apdu::personalize(&personalization()));
        assert_eq!(sw(&resp), 0x9000);
        let pk = &resp[..resp.len() - 2];
        let sig = issuer().sign(&certificate_body(card_id(), SCHEME, pk));
        assert_eq!(sw(&card.transmit(&purse_apdu::certify(&sig))), 0x9000);
        // The recognition key's certificate, so fuzzed hellos reach the ECDH and MACs.
        let resp = card.transmit(&purse_apdu::get_data(4));
        assert_eq!(sw(&resp), 0x9000);
        let cert = certificate(DeviceKind::Purse, card_id().0, &resp[..resp.len() - 2]);
        let resp = card.transmit(&purse_apdu::install_certificate(&cert));
        assert_eq!(sw(&resp), 0x9000);
    }
    card
}

/// Checks the invariants on the card's memory (read from the store, so the fuzzed
/// sequence is not disturbed: any command would drop a chain or a pending response).
pub fn check(card: &PurseCard) {
    let store = card.store();
    let applet = PurseApplet::load(store).expect("the purse's records load");
    let Some(state) = store.read(rec::STATE).expect("readable") else {
        assert_eq!(applet.balance(), None, "a balance without a state record");
        return;
    };
    let state = PurseState::decode(&state).expect("state record decodes");
    // The card's own limits: a fuzzed PERSONALIZE of the blank start may set others than
    // the fixture's.
    let id = store
        .read(rec::IDENTITY)
        .expect("readable")
        .expect("identity record");
    let id = Identity::decode(&id).expect("identity record decodes");
    assert!(
        state.balance <= id.max_balance,
        "balance {:?} above the maximum {:?}",
        state.balance,
        id.max_balance
    );
    assert!(
        state.balance <= state.total_in,
        "more value than ever received"
    );
    assert_eq!(Some(state.balance), applet.balance());
    let pin = store.read(rec::PIN).expect("readable").expect("PIN record");
    let pin = PinRecord::decode(&pin).expect("PIN record decodes");
    assert!(
        pin.tries_left <= id.pin_tries,
        "PIN tries {} above the card's maximum {}",
        pin.tries_left,
        id.pin_tries
    );
}

/// The seed corpus of the `purse_handle` target: every purse command, well formed, on
/// each start (written by `cargo run --bin gen-corpus`, replayed by `cargo test`).
pub fn seeds() -> crate::ByteSeeds {
    use openpsd_core::purse::purchase::PurchaseRequest;
    use openpsd_core::types::TerminalId;
    let frame = |start: u8, apdus: &[Vec<u8>]| -> Vec<u8> {
        let mut out = vec![start];
        for a in apdus {
            let n = u8::try_from(a.len()).expect("seed APDU under 256 bytes");
            out.push(n);
            out.extend_from_slice(a);
        }
        out
    };
    let buy = |counter: u32, amount: u64| {
        purse_apdu::purchase(&PurchaseRequest {
            terminal: TerminalId(*b"TERM0001"),
            terminal_counter: counter,
            amount: Amount(amount),
            date: Date::new(2026, 11, 21).expect("date"),
        })
    };
    let admin = admin_key();
    vec![
        (
            "purchase",
            frame(
                2,
                &[
                    buy(1, 100),
                    purse_apdu::verify(PIN),
                    buy(1, 100),
                    buy(1, 100),
                    buy(1, 101),
                    buy(2, 9_900),
                    buy(3, 1),
                    buy(4, 0),
                    purse_apdu::get_data(1),
                    purse_apdu::get_data(2),
                    purse_apdu::get_data(3),
                ],
            ),
        ),
        (
            "pin",
            frame(
                0,
                &[
                    purse_apdu::verify(&[]),
                    purse_apdu::verify(b"1111"),
                    purse_apdu::change_pin(PIN, b"13579"),
                    purse_apdu::verify(b"13579"),
                    purse_apdu::verify(b"0000"),
                    purse_apdu::verify(b"0000"),
                    purse_apdu::verify(b"0000"),
                    purse_apdu::verify(b"13579"),
                    purse_apdu::unblock_pin(&admin, card_id(), 1, b"2468"),
                    purse_apdu::unblock_pin(&admin, card_id(), 1, b"2468"),
                    purse_apdu::verify(PIN),
                    purse_apdu::unblock_pin(&MacKey::new([1; 16]), card_id(), 2, b"2468"),
                ],
            ),
        ),
        (
            "issuer",
            frame(
                2,
                &[
                    purse_apdu::reset_recognition(&admin, card_id(), 5),
                    purse_apdu::reset_recognition(&admin, card_id(), 5),
                    purse_apdu::reset_recognition(&MacKey::new([1; 16]), card_id(), 6),
                    // The issuer releases the PSD the fixture received from; replayed and
                    // forged releases are refused.
                    purse_apdu::release_partner(&admin, card_id(), 6, transfer_psd()),
                    purse_apdu::release_partner(&admin, card_id(), 6, transfer_psd()),
                    purse_apdu::release_partner(
                        &MacKey::new([1; 16]),
                        card_id(),
                        7,
                        transfer_psd(),
                    ),
                    purse_apdu::load_revocation(&[0; 16]),
                    purse_apdu::install_certificate(&[0x30, 0x00]),
                    purse_apdu::certify(&[0; 64]),
                    purse_apdu::get_data(4),
                    purse_apdu::transfer_status(),
                    purse_apdu::transfer_close(&[0; 20]),
                    purse_apdu::transfer_credit(&[0; 28]),
                    purse_apdu::authenticate_psd(&[0; 16]),
                ],
            ),
        ),
        (
            "blank",
            frame(
                1,
                &[
                    purse_apdu::get_data(1),
                    purse_apdu::verify(PIN),
                    purse_apdu::personalize(&personalization()),
                    purse_apdu::certify(&[0; 64]),
                    purse_apdu::get_data(4),
                ],
            ),
        ),
    ]
}

/// Runs fuzzer bytes (see the module comment); returns each APDU's INS (0 for one
/// shorter than 2 bytes) and status word.
pub fn run_purse_bytes(data: &[u8]) -> Vec<(u8, u16)> {
    let mut seen = Vec::new();
    let Some((&first, mut rest)) = data.split_first() else {
        return seen;
    };
    let mut card = match first % 4 {
        0 => personalized_card(),
        2 => card_on(funded_nvm()),
        _ => build(false),
    };
    for _ in 0..MAX_APDUS {
        let Some((&len, tail)) = rest.split_first() else {
            break;
        };
        let n = usize::from(len).min(tail.len());
        let (apdu, tail) = tail.split_at(n);
        rest = tail;
        let resp = card.transmit(apdu);
        seen.push((apdu.get(1).copied().unwrap_or(0), sw(&resp)));
        check(&card);
    }
    // Only the purse's records were ever written.
    let ids = card.store().ids().expect("ids readable");
    assert!(
        ids.iter().all(|id| rec::RANGE.contains(id)),
        "foreign records"
    );
    seen
}
