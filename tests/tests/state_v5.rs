//! Frozen state fixtures, format v5: a register set record of version 5 (issue 17's nonce
//! pool), which keeps the last indicium's signature. The PSD filled its nonce pool
//! (`Card::idle`), issued one indicium from it (a random nonce, not RFC 6979's) and was
//! saved; opened again by card-sim (no pool), a retry with the same transaction ID must
//! answer the stored bytes, debited once: they cannot be signed again. See `state_v1.rs`
//! for how fixtures are kept; versions 1 to 4 (no signature in the record) are re-signed
//! with RFC 6979 on retry, which their own fixture tests check.
//!
//! `tests/state/v5/` holds the card-sim PSD state directory `psd/` with its storage key
//! and `last-indicium.hex` (what ISSUE INDICIUM answered).
//!
//! The fixtures were made once by `generate_v5` below (ignored; it refuses to overwrite).
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// The purse's constants of the shared module are not used here.
#[allow(dead_code)]
mod state_fixture;

use std::fs;
use std::path::PathBuf;

use card_sim::os_platform::Clock;
use card_sim::sim::{open_file_card, CardKind};
use openpsd_core::client::psd_apdu;
use openpsd_core::psd::indicium;
use openpsd_core::psd::registers::Registers;
use openpsd_core::types::RegisterSetIndex;
use openpsd_tests::{expect_ok, funded_card, request};
use state_fixture::{today, transmit};

/// The platform seed the fixture PSD was made with.
const SEED: u64 = 5;
/// Refilled on set 0.
const FUNDS: u64 = 10_000;
/// The last indicium's transaction ID and postage.
const TXN: u64 = 50;
const POSTAGE: u64 = 123;

fn fixtures() -> PathBuf {
    state_fixture::fixtures("v5")
}

fn stored_indicium() -> Vec<u8> {
    let text = fs::read_to_string(fixtures().join("last-indicium.hex")).expect("fixture");
    hex::decode(text.trim()).expect("hex")
}

#[test]
fn psd_state_v5_answers_its_pooled_indicium_again() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = state_fixture::copy_fixture("v5", "psd", tmp.path());
    let mut card = open_file_card(&dir, Clock::Fixed(today())).expect("v5 PSD state opens");
    assert_eq!(card.kind(), Some(CardKind::Psd));
    expect_ok(&transmit(&mut card, &psd_apdu::select()));
    let read = |card: &mut _| {
        let r = expect_ok(&transmit(
            card,
            &psd_apdu::read_registers(RegisterSetIndex(0)),
        ));
        Registers::decode(&r).expect("registers decode")
    };
    let before = read(&mut card);
    assert_eq!(before.dr.0, FUNDS - POSTAGE, "debited once when issued");
    assert_eq!(before.pieces.0, 1);

    let stored = stored_indicium();
    let apdu = psd_apdu::issue_indicium(RegisterSetIndex(0), &request(TXN, POSTAGE, 21));
    let again = expect_ok(&transmit(&mut card, &apdu));
    assert_eq!(again, stored, "the retry answers the stored bytes");
    assert_eq!(read(&mut card), before, "charged once");

    // The same PSD made afresh from its seed, its pool empty, signs that request with RFC
    // 6979: other bytes, so the answer above came from the record, not from signing again.
    let (mut twin, pk) = funded_card(SEED, FUNDS);
    let deterministic = expect_ok(&twin.transmit(&apdu));
    assert_eq!(
        deterministic[..deterministic.len() - 64],
        stored[..stored.len() - 64]
    );
    assert_ne!(deterministic, stored, "the stored signature is the pool's");
    indicium::verify(&stored, &pk).expect("the stored indicium verifies");

    // And the device goes on: a new indicium, debited.
    let next = expect_ok(&transmit(
        &mut card,
        &psd_apdu::issue_indicium(RegisterSetIndex(0), &request(TXN + 1, POSTAGE, 21)),
    ));
    indicium::verify(&next, &pk).expect("a new indicium verifies");
    assert_eq!(read(&mut card).pieces.0, 2);
}

#[test]
#[ignore = "writes tests/state/v5 (already made; refuses to overwrite)"]
fn generate_v5() {
    use card_sim::file_store::FileStore;
    use card_sim::sim::{create_file_card, storage_key_path};
    use openpsd_core::store::{SealedStore, StorageKey, Store, Write};

    let out = fixtures();
    for name in ["psd", "psd.storage-key", "last-indicium.hex"] {
        let path = out.join(name);
        assert!(!path.exists(), "{} exists: v5 is frozen", path.display());
    }

    let (mut psd, _) = funded_card(SEED, FUNDS);
    assert!(psd.idle(), "one batch of nonces");
    let apdu = psd_apdu::issue_indicium(RegisterSetIndex(0), &request(TXN, POSTAGE, 21));
    let last = expect_ok(&psd.transmit(&apdu));

    fs::create_dir_all(&out).expect("v5 directory");
    fs::write(
        out.join("last-indicium.hex"),
        format!("{}\n", hex::encode(&last)),
    )
    .expect("write indicium");

    let dir = out.join("psd");
    let mem = psd.store();
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
    let mut sealed = SealedStore::new(FileStore::open(&dir).expect("opens"), StorageKey::new(key));
    sealed.commit(&writes).expect("commit");
    drop(sealed);
    fs::remove_file(dir.join("lock")).ok();
}
