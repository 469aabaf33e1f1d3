//! Frozen state fixtures, format v7: the PSD device record of **version 3** (feature
//! `webcrypto`, issue 17 §5), which keeps the public key of the signer outside the PSD
//! (PERSONALIZE P1 `01`). The PSD was personalized with the test signer's key
//! (`openpsd_tests::outside`), funded, issued one indicium whose outside signature was
//! stored (STORE SIGNATURE), then a second one, left **pending** (debited, unsigned), and
//! was saved. Opened again by card-sim, the record must load as version 3 with that key, the
//! pending indicium must come back unsigned for its transaction ID, debited once, another
//! transaction must wait (`9A09`), and the stored signature must complete it. See
//! `state_v1.rs` for how fixtures are kept; device records of version 2 are in every older
//! fixture.
//!
//! `tests/state/v7/` holds the card-sim PSD state directory `psd/` with its storage key,
//! `signed-indicium.hex` (the first indicium, signed outside) and `pending-indicium.hex`
//! (the second one's unsigned bytes, as ISSUE INDICIUM answered them).
//!
//! The fixtures were made once by `generate_v7` below (ignored; it refuses to overwrite).
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// The purse's constants of the shared module are not used here.
#[allow(dead_code)]
mod state_fixture;

use std::fs;
use std::path::{Path, PathBuf};

use card_sim::file_store::FileStore;
use card_sim::os_platform::Clock;
use card_sim::sim::{open_file_card, storage_key_path, CardKind};
use openpsd_core::client::psd_apdu;
use openpsd_core::psd::indicium::{self, IndiciumData};
use openpsd_core::psd::outside_signer;
use openpsd_core::psd::registers::Registers;
use openpsd_core::records::psd as rec;
use openpsd_core::store::{SealedStore, StorageKey, Store};
use openpsd_core::types::RegisterSetIndex;
use openpsd_core::Status;
use openpsd_tests::outside::{outside_card, sign, signer_public_key};
use openpsd_tests::{expect_ok, request};
use state_fixture::{today, transmit};

/// The platform seed the fixture PSD was made with.
const SEED: u64 = 7;
/// Refilled on set 0.
const FUNDS: u64 = 10_000;
/// The signed indicium's and the pending one's transaction IDs, and their postage.
const SIGNED_TXN: u64 = 70;
const PENDING_TXN: u64 = 71;
const POSTAGE: u64 = 123;
const SET0: RegisterSetIndex = RegisterSetIndex(0);

fn fixtures() -> PathBuf {
    state_fixture::fixtures("v7")
}

fn hex_fixture(name: &str) -> Vec<u8> {
    let text = fs::read_to_string(fixtures().join(name)).expect("fixture");
    hex::decode(text.trim()).expect("hex")
}

fn issue(txn: u64) -> Vec<u8> {
    psd_apdu::issue_indicium(SET0, &request(txn, POSTAGE, 21))
}

/// The sealed store of the card-sim state directory `dir`, read with its storage key.
fn sealed(dir: &Path) -> SealedStore<FileStore> {
    let key_hex = fs::read_to_string(storage_key_path(dir)).expect("storage key");
    let key: [u8; 32] = hex::decode(key_hex.trim())
        .expect("hex key")
        .try_into()
        .expect("32 bytes");
    SealedStore::new(FileStore::open(dir).expect("opens"), StorageKey::new(key))
}

#[test]
fn device_record_v3_keeps_the_outside_signer() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = state_fixture::copy_fixture("v7", "psd", tmp.path());
    let store = sealed(&dir);
    let device = store
        .read(rec::DEVICE)
        .expect("reads")
        .expect("a device record");
    assert_eq!(device[0], 3, "device record version 3");
    // version ‖ device ID (8) ‖ device key (32) ‖ KMS key (65) ‖ the signer's key (65) ‖ …
    assert_eq!(
        &device[1 + 8 + 32 + 65..][..65],
        &signer_public_key()[..],
        "the signer's key after the KMS's"
    );
    // What a host with the state asks before the typed (signed) issue.
    // Both personalized sets are signed outside; slot 2 is free.
    assert!(outside_signer::signs_outside(&store, SET0));
    assert!(outside_signer::signs_outside(&store, RegisterSetIndex(1)));
    assert!(!outside_signer::signs_outside(&store, RegisterSetIndex(2)));
}

#[test]
fn psd_state_v7_answers_its_pending_indicium_and_takes_its_signature() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = state_fixture::copy_fixture("v7", "psd", tmp.path());
    let mut card = open_file_card(&dir, Clock::Fixed(today())).expect("v7 PSD state opens");
    assert_eq!(card.kind(), Some(CardKind::Psd));
    expect_ok(&transmit(&mut card, &psd_apdu::select()));
    let read = |card: &mut _| {
        let r = expect_ok(&transmit(card, &psd_apdu::read_registers(SET0)));
        Registers::decode(&r).expect("registers decode")
    };
    let before = read(&mut card);
    assert_eq!(before.dr.0, FUNDS - 2 * POSTAGE, "both debited when issued");
    assert_eq!(before.pieces.0, 2);

    // The first indicium verifies under the outside key.
    let signed = hex_fixture("signed-indicium.hex");
    indicium::verify(&signed, &signer_public_key()).expect("the signed indicium verifies");

    // The pending one: the same unsigned bytes for its transaction ID, not debited again;
    // another transaction waits.
    let pending = hex_fixture("pending-indicium.hex");
    let data = IndiciumData::decode(&pending).expect("unsigned bytes decode exactly");
    assert_eq!(data.dr, before.dr);
    assert_eq!(
        expect_ok(&transmit(&mut card, &issue(PENDING_TXN))),
        pending
    );
    assert_eq!(read(&mut card), before, "charged once");
    let refused = transmit(&mut card, &issue(PENDING_TXN + 1));
    assert_eq!(
        refused[refused.len() - 2..],
        Status::SignaturePending.sw().to_be_bytes()
    );
    assert_eq!(read(&mut card), before, "nothing debited while pending");

    // A wrong signature changes nothing; the right one completes it.
    let wrong = transmit(&mut card, &psd_apdu::store_signature(SET0, &sign(b"other")));
    assert_eq!(
        wrong[wrong.len() - 2..],
        Status::SignatureInvalid.sw().to_be_bytes()
    );
    let stored = expect_ok(&transmit(
        &mut card,
        &psd_apdu::store_signature(SET0, &sign(&pending)),
    ));
    assert_eq!(&stored[..pending.len()], &pending[..]);
    indicium::verify(&stored, &signer_public_key()).expect("completed indicium verifies");
    assert_eq!(
        expect_ok(&transmit(&mut card, &issue(PENDING_TXN))),
        stored,
        "the retry answers it signed"
    );

    // And the device goes on: a new indicium, debited, pending.
    let next = expect_ok(&transmit(&mut card, &issue(PENDING_TXN + 1)));
    IndiciumData::decode(&next).expect("a new unsigned indicium");
    let after = read(&mut card);
    assert_eq!((after.dr.0, after.pieces.0), (before.dr.0 - POSTAGE, 3));
}

#[test]
#[ignore = "writes tests/state/v7 (already made; refuses to overwrite)"]
fn generate_v7() {
    use card_sim::sim::create_file_card;
    use openpsd_core::store::Write;

    let out = fixtures();
    for name in [
        "psd",
        "psd.storage-key",
        "signed-indicium.hex",
        "pending-indicium.hex",
    ] {
        let path = out.join(name);
        assert!(!path.exists(), "{} exists: v7 is frozen", path.display());
    }

    let mut psd = outside_card(SEED, FUNDS);
    let first = expect_ok(&psd.transmit(&issue(SIGNED_TXN)));
    let signed = expect_ok(&psd.transmit(&psd_apdu::store_signature(SET0, &sign(&first))));
    let pending = expect_ok(&psd.transmit(&issue(PENDING_TXN)));
    IndiciumData::decode(&pending).expect("pending: unsigned");

    fs::create_dir_all(&out).expect("v7 directory");
    for (name, bytes) in [
        ("signed-indicium.hex", &signed),
        ("pending-indicium.hex", &pending),
    ] {
        fs::write(out.join(name), format!("{}\n", hex::encode(bytes))).expect("write indicium");
    }

    let dir = out.join("psd");
    let mem = psd.store();
    drop(create_file_card(&dir, Clock::Fixed(today())).expect("card-sim creates a card"));
    let writes: Vec<Write> = mem
        .ids()
        .expect("ids")
        .into_iter()
        .map(|id| Write {
            id,
            value: mem.read(id).expect("read"),
        })
        .collect();
    let mut store = sealed(&dir);
    store.commit(&writes).expect("commit");
    drop(store);
    fs::remove_file(dir.join("lock")).ok();
}
