//! Frozen state fixtures, format v2: PSDs personalized with device certificates (issue 12
//! items 1-2) but still with K1, the symmetric refill key; purses of the certificate scheme.
//! See `state_v1.rs` for how fixtures are kept.
//!
//! The fixtures were made once by `generate_v2` below (ignored; it refuses to overwrite).
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod state_fixture;

use std::fs;
use std::path::{Path, PathBuf};

use card_sim::os_platform::Clock;
use card_sim::sim::{open_file_card, CardKind, SimulatedCard};
use openpsd_core::client::psd_apdu;
use openpsd_core::client::purse_apdu;
use openpsd_core::client::transfer as driver;
use openpsd_core::psd::device::DeviceInfo;
use openpsd_core::psd::indicium;
use openpsd_core::psd::registers::Registers;
use openpsd_core::purse::personal::PurseInfo;
use openpsd_core::purse::purchase::PurchaseRequest;
use openpsd_core::types::{Amount, RegisterSetIndex};
use openpsd_core::Status;
use openpsd_tests::purse::{CARD, PIN};
use openpsd_tests::{expect_ok, request, DEVICE};
use state_fixture::{today, transmit, PAID, POSTAGE, REFILLED, TERMINAL, TRANSFERRED};

fn fixtures() -> PathBuf {
    state_fixture::fixtures("v2")
}

fn copy_fixture(name: &str, into: &Path) -> PathBuf {
    state_fixture::copy_fixture("v2", name, into)
}

fn set0(card: &mut impl SimulatedCard) -> Registers {
    let r = expect_ok(&transmit(
        card,
        &psd_apdu::read_registers(RegisterSetIndex(0)),
    ));
    Registers::decode(&r).expect("registers decode")
}

#[test]
fn psd_state_v2_prints_and_transfers_on_and_refuses_the_k1_suite_with_9a16() {
    // A PSD certified for transfers (issue 12 items 1-2) but personalized while K1 was
    // still the refill suite: its device record is format 1. It keeps printing and moving
    // value to purses of its scheme; audits, refills and receipts are refused with `9A16`,
    // before anything is written.
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = copy_fixture("psd", tmp.path());
    let mut card = open_file_card(&dir, Clock::Fixed(today())).expect("v2 PSD state opens");
    assert_eq!(card.kind(), Some(CardKind::Psd));
    expect_ok(&transmit(&mut card, &psd_apdu::select()));
    let info = expect_ok(&transmit(&mut card, &psd_apdu::get_data()));
    let info = DeviceInfo::decode(&info)
        .expect("device info decodes")
        .expect("personalized");
    assert_eq!(info.device, DEVICE);
    let before = set0(&mut card);
    assert_eq!(before.control_sum, Amount(REFILLED));
    assert_eq!(before.ar, Amount(POSTAGE + TRANSFERRED));

    let mut log = fs::read(dir.join("state.log")).expect("state log");
    for apdu in [
        psd_apdu::audit(RegisterSetIndex(0), &[0x4E; 16]),
        psd_apdu::refill(RegisterSetIndex(0), &[0; 106]),
        psd_apdu::receipt(&[0; 94]),
    ] {
        assert_eq!(
            psd_apdu::sw(&transmit(&mut card, &apdu)),
            Status::LegacyRefillSuite.sw()
        );
        let now = fs::read(dir.join("state.log")).expect("state log");
        assert_eq!(now, log, "a refused command wrote nothing");
        log = now;
    }

    let issued = expect_ok(&transmit(
        &mut card,
        &psd_apdu::issue_indicium(RegisterSetIndex(0), &request(2, POSTAGE, 21)),
    ));
    let data = indicium::verify(&issued, &info.public_key).expect("indicium verifies");
    assert_eq!(data.pieces.0, 2);

    // Its certificate still opens transfers to a purse of the scheme.
    let mut purse = openpsd_tests::purse::purse(5);
    driver::transfer(&mut card, &mut purse, RegisterSetIndex(0), Amount(100), PIN)
        .expect("a v2 PSD still transfers");
    assert_eq!(
        openpsd_tests::purse::purse_data(&mut purse).balance,
        Amount(100)
    );
    let after = set0(&mut card);
    assert_eq!(after.dr, Amount(before.dr.0 - POSTAGE - 100));
    assert_eq!(after.control_sum, before.control_sum);
}

#[test]
fn purse_state_v2_loads_and_pays() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = copy_fixture("purse", tmp.path());
    let mut card = open_file_card(&dir, Clock::Fixed(today())).expect("v2 purse state opens");
    assert_eq!(card.kind(), Some(CardKind::Purse));
    expect_ok(&transmit(&mut card, &purse_apdu::select()));
    let info = PurseInfo::decode(&expect_ok(&transmit(&mut card, &purse_apdu::get_data(1))))
        .expect("purse info decodes")
        .expect("personalized");
    assert_eq!(info.card, CARD);
    assert_eq!(info.balance, Amount(TRANSFERRED - PAID));
    expect_ok(&transmit(&mut card, &purse_apdu::verify(PIN)));
    let req = PurchaseRequest {
        terminal: TERMINAL,
        terminal_counter: 2,
        amount: Amount(500),
        date: today(),
    };
    expect_ok(&transmit(&mut card, &purse_apdu::purchase(&req)));
    let info = PurseInfo::decode(&expect_ok(&transmit(&mut card, &purse_apdu::get_data(1))))
        .expect("purse info decodes")
        .expect("personalized");
    assert_eq!(info.balance, Amount(TRANSFERRED - PAID - 500));
}

/// Wrote the v2 fixtures (once; they are then frozen): a certified PSD refilled, one
/// indicium issued, one transfer to the test purse; the purse credited, one purchase. Made
/// at commit "tests: frozen v2 state fixtures", before the asymmetric refill suite: the
/// helpers now personalize with the KMS's public key, so a run today would write format 2
/// records, not these. Run with `cargo test -p openpsd-tests --test state_v2 -- --ignored`.
#[test]
#[ignore = "writes tests/state/v2 (already made; refuses to overwrite)"]
fn generate_v2() {
    use card_sim::file_store::FileStore;
    use card_sim::sim::{create_file_card, storage_key_path};
    use openpsd_core::store::{SealedStore, StorageKey, Store, Write};
    use openpsd_tests::purse::{funded_psd, purse, run_until};

    let out = fixtures();
    for name in ["psd", "purse"] {
        let dir = out.join(name);
        assert!(!dir.exists(), "{} exists: v2 is frozen", dir.display());
    }

    let mut psd = funded_psd(1, REFILLED);
    expect_ok(&psd.transmit(&psd_apdu::issue_indicium(
        RegisterSetIndex(0),
        &request(1, POSTAGE, 21),
    )));
    let mut purse = purse(2);
    run_until(&mut psd, &mut purse, TRANSFERRED, 11);
    let req = PurchaseRequest {
        terminal: TERMINAL,
        terminal_counter: 1,
        amount: Amount(PAID),
        date: today(),
    };
    expect_ok(&purse.transmit(&purse_apdu::purchase(&req)));

    for (name, mem) in [("psd", psd.store()), ("purse", purse.store())] {
        let dir = out.join(name);
        drop(create_file_card(&dir, Clock::Fixed(today())).expect("card-sim creates a card"));
        let key_hex = fs::read_to_string(storage_key_path(&dir)).expect("storage key");
        let key: [u8; 32] = hex::decode(key_hex.trim())
            .expect("hex key")
            .try_into()
            .expect("32 bytes");
        let writes: Vec<Write> = mem
            .ids()
            .expect("ids")
            .into_iter()
            .map(|id| Write {
                id,
                value: mem.read(id).expect("read"),
            })
            .collect();
        let mut sealed =
            SealedStore::new(FileStore::open(&dir).expect("opens"), StorageKey::new(key));
        sealed.commit(&writes).expect("commit");
        drop(sealed);
        fs::remove_file(dir.join("lock")).ok();
    }
}
