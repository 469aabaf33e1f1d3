//! Test harness for openpsd's end-to-end tests: a PSD card on an in-memory store with a
//! seeded platform, a stand-in for the key management system (it checks audits with the
//! device's public key and signs refill combinations with its own key, as the back office
//! does), and helpers that speak the
//! APDU contract of `docs/apdu.md`.
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use openpsd_core::client::psd_apdu;
use openpsd_core::crypto::IndiciumKey;
use openpsd_core::platform::SeededPlatform;
use openpsd_core::psd::audit::AuditData;
use openpsd_core::psd::device::{LicenseSlot, Personalization};
use openpsd_core::psd::indicium::IndiciumRequest;
use openpsd_core::psd::psd_card;
use openpsd_core::psd::refill::RefillCombination;
use openpsd_core::psd::registers::Registers;
use openpsd_core::store::{MemStore, Nvm};
use openpsd_core::types::*;
use openpsd_core::{Card, Status};

pub mod certmeter;
pub mod licenses;
pub mod markdown;
pub mod outside;
pub mod purse;
pub mod scripts;

/// The card type under test.
pub type TestCard = Card<MemStore, SeededPlatform>;

/// The test KMS's signing key (every test PSD holds its public half).
pub fn kms_key() -> IndiciumKey {
    IndiciumKey::from_bytes(&[0x11; 32]).expect("valid scalar")
}
/// Device ID of the test device.
pub const DEVICE: DeviceId = DeviceId(*b"PSD00001");
/// Its two licenses and their towns.
pub const LICENSES: [(u32, &[u8]); 2] = [(4711, b"10115"), (4712, b"80331")];
/// Per-piece limit.
pub const MAX_POSTAGE: Amount = Amount(10_000);
/// DR limit.
pub const MAX_DR: Amount = Amount(1_000_000);

/// A valid vendor public key (fixed, from a fixed scalar).
pub fn vendor_public_key() -> [u8; 65] {
    let key = IndiciumKey::from_bytes(&[7u8; 32]).expect("valid scalar");
    key.public_key()
}

/// The personalization data of the test device.
pub fn personalization() -> Personalization {
    Personalization {
        device: DEVICE,
        kms_public_key: kms_key().public_key(),
        vendor_public_key: vendor_public_key(),
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

/// A blank card (nothing personalized), SELECTed.
pub fn blank_card(seed: u64) -> TestCard {
    let mut platform = SeededPlatform::new(seed);
    platform.today = Date::new(2026, 11, 21);
    let mut card = psd_card(MemStore::new(), platform).expect("blank store loads");
    expect_ok(&card.transmit(&psd_apdu::select()));
    card
}

/// A personalized card, SELECTed; returns it and the device's public key.
pub fn personalized_card(seed: u64) -> (TestCard, [u8; 65]) {
    let mut card = blank_card(seed);
    let resp = card.transmit(&psd_apdu::personalize(&personalization()));
    let data = expect_ok(&resp);
    let mut pk = [0u8; 65];
    pk.copy_from_slice(&data[4..]);
    (card, pk)
}

/// A personalized card with `amount` refilled on set 0.
pub fn funded_card(seed: u64, amount: u64) -> (TestCard, [u8; 65]) {
    let (mut card, pk) = personalized_card(seed);
    let msg = Kms::new().refill_for(&mut card, RegisterSetIndex(0), Amount(amount), [1; 8]);
    expect_ok(&card.transmit(&psd_apdu::refill(RegisterSetIndex(0), &msg)));
    (card, pk)
}

/// The data of a `9000` response; panics (test failure) with the status otherwise.
pub fn expect_ok(resp: &[u8]) -> Vec<u8> {
    match psd_apdu::data(resp) {
        Ok(d) => d.to_vec(),
        Err(s) => panic!("expected 9000, got {:04X} ({s:?})", psd_apdu::sw(resp)),
    }
}

/// The status word of a response that must be a refusal without data.
pub fn expect_refused(resp: &[u8], status: Status) {
    assert_eq!(
        psd_apdu::sw(resp),
        status.sw(),
        "expected {status:?}, got {:02X?}",
        resp
    );
    assert_eq!(resp.len(), 2, "a refusal carries no data");
}

/// Reads a register set.
pub fn registers(card: &mut TestCard, set: u8) -> Registers {
    let data = expect_ok(&card.transmit(&psd_apdu::read_registers(RegisterSetIndex(set))));
    Registers::decode(&data).expect("registers decode")
}

/// Re-opens the card's memory as it is now (after a power loss, say) and SELECTs the PSD.
pub fn reopen(nvm: &Nvm, seed: u64) -> TestCard {
    let store = MemStore::open(nvm.clone()).expect("store re-opens");
    let mut platform = SeededPlatform::new(seed);
    platform.today = Date::new(2026, 11, 21);
    let mut card = psd_card(store, platform).expect("state loads");
    expect_ok(&card.transmit(&psd_apdu::select()));
    card
}

/// An indicium request on set 0's town.
pub fn request(txn: u64, postage: u64, day: u8) -> IndiciumRequest {
    IndiciumRequest {
        transaction: TransactionId(txn.to_be_bytes()),
        postage: Amount(postage),
        date: Date::new(2026, 11, day).expect("valid day"),
        rate: RateCategory(1),
        origin: PostalCode::new(LICENSES[0].1).expect("valid code"),
        destination: PostalCode::new(b"20095").expect("valid code"),
    }
}

/// Stand-in for the key management system and recharging center: checks audits with the
/// device's public key and signs refill combinations for what an audit showed.
pub struct Kms {
    /// The KMS's signing key.
    pub key: IndiciumKey,
}

impl Default for Kms {
    fn default() -> Self {
        Self::new()
    }
}

/// The device public key a (SELECTed) PSD reports in GET DATA.
pub fn device_public_key(card: &mut TestCard) -> [u8; 65] {
    let info = expect_ok(&card.transmit(&psd_apdu::get_data()));
    openpsd_core::psd::device::DeviceInfo::decode(&info)
        .expect("device info decodes")
        .expect("personalized")
        .public_key
}

impl Kms {
    /// The test KMS.
    pub fn new() -> Self {
        Self { key: kms_key() }
    }

    /// Runs AUDIT on the card and verifies its signature (seed 000, steps 210-230).
    pub fn audit(&self, card: &mut TestCard, set: RegisterSetIndex, nonce: [u8; 16]) -> AuditData {
        let msg = expect_ok(&card.transmit(&psd_apdu::audit(set, &nonce)));
        let pk = device_public_key(card);
        let data = AuditData::open(&msg, &pk).expect("audit signature verifies");
        assert_eq!(data.nonce, nonce);
        data
    }

    /// A refill combination for what the card's audit shows now (steps 260-265).
    pub fn combination_for(
        &self,
        card: &mut TestCard,
        set: RegisterSetIndex,
        amount: Amount,
        id: [u8; 8],
    ) -> RefillCombination {
        let a = self.audit(card, set, id.repeat(2).try_into().expect("16 bytes"));
        RefillCombination {
            device: a.device,
            license: a.license,
            amount,
            control_sum: a.control_sum,
            refills: a.refills,
            combination_id: id,
        }
    }

    /// The sealed refill message for `amount` on the card's current state (step 275).
    pub fn refill_for(
        &self,
        card: &mut TestCard,
        set: RegisterSetIndex,
        amount: Amount,
        id: [u8; 8],
    ) -> Vec<u8> {
        self.combination_for(card, set, amount, id).sign(&self.key)
    }
}

/// Runs `apdu` on cards re-opened from `base` (platform `seed`), `prepare` first, cutting
/// power at its write k = 0, 1, ... (clean, then torn) until the command completes uncut.
/// For each cut, `check` gets the response, the card re-opened from what the cut left, and
/// a label. Returns the number of cut points.
pub fn sweep_cuts(
    base: &Nvm,
    seed: u64,
    prepare: impl Fn(&mut TestCard),
    apdu: &[u8],
    mut check: impl FnMut(&[u8], TestCard, &str),
) -> usize {
    let mut cuts = 0;
    for torn in [false, true] {
        for k in 0.. {
            let mut card = reopen(base, seed);
            prepare(&mut card);
            let start = card.store().writes();
            card.store_mut()
                .set_power_cut(Some(openpsd_core::store::PowerCut {
                    at_write: start + k,
                    torn,
                }));
            let resp = card.transmit(apdu);
            if !card.store().is_dead() {
                assert_eq!(psd_apdu::sw(&resp), 0x9000, "uncut command must succeed");
                break;
            }
            cuts += 1;
            check(
                &resp,
                reopen(card.store().nvm(), seed),
                &format!("cut {k} torn {torn}"),
            );
        }
    }
    cuts
}
