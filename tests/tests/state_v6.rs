//! Frozen state fixtures, format v6: the export file of **version 3**, which carries the
//! last indicium's signature (issue 17's nonce pool; found missing by the `card_handle`
//! fuzz target). A licensing PSD installed license 9001, was funded, filled its nonce pool
//! (`Card::idle`), issued one indicium from it (a random nonce, not RFC 6979's), and
//! exported that set (prepare and commit). Opened again by card-sim (no pool), the PSD must
//! take the file back once, and a retry of the indicium with the same transaction ID must
//! answer the bytes first answered, debited once: they cannot be signed again. See
//! `state_v1.rs` for how fixtures are kept; files of versions 1 and 2 are checked by the
//! v3 and v4 fixtures.
//!
//! `tests/state/v6/` holds the card-sim PSD state directory `psd/` with its storage key,
//! `exported.psdset` (the blob EXPORT SET answered) and `last-indicium.hex` (what ISSUE
//! INDICIUM answered).
//!
//! The fixtures were made once by `generate_v6` below (ignored; it refuses to overwrite).
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
use openpsd_core::psd::indicium::IndiciumRequest;
use openpsd_core::psd::license::export::{Blob, BLOB_TAG_SIGNED};
use openpsd_core::psd::registers::Registers;
use openpsd_core::types::{Amount, PostalCode, RegisterSetIndex};
use openpsd_tests::{expect_ok, request};
use state_fixture::{today, transmit};

/// The platform seed the fixture PSD was made with.
const SEED: u64 = 6;
/// The license installed, and its funding.
const LICENSE: u32 = 9001;
const FUNDS: u64 = 5_000;
/// The pooled indicium's transaction ID, postage and day (November 2026).
const TXN: u64 = 60;
const POSTAGE: u64 = 150;
const DAY: u8 = 22;

fn fixtures() -> PathBuf {
    state_fixture::fixtures("v6")
}

fn indicium_request() -> IndiciumRequest {
    IndiciumRequest {
        origin: PostalCode::new(b"10115").unwrap(),
        ..request(TXN, POSTAGE, DAY)
    }
}

fn stored_indicium() -> Vec<u8> {
    let text = fs::read_to_string(fixtures().join("last-indicium.hex")).expect("fixture");
    hex::decode(text.trim()).expect("hex")
}

#[test]
fn export_file_v3_comes_back_and_answers_its_pooled_indicium_again() {
    let blob = fs::read(fixtures().join("exported.psdset")).expect("fixture blob");
    assert!(
        blob.starts_with(BLOB_TAG_SIGNED),
        "an export file of version 3"
    );
    let decoded = Blob::decode(&blob).expect("blob decodes");
    let stored = stored_indicium();
    let (signed, signature) = stored.split_at(stored.len() - 64);
    assert_eq!(
        decoded
            .set
            .last_indicium
            .as_ref()
            .map(|(_, p)| p.as_slice()),
        Some(signed)
    );
    assert_eq!(
        decoded.set.last_signature.as_ref().map(|s| &s[..]),
        Some(signature)
    );

    let tmp = tempfile::tempdir().unwrap();
    let dir = state_fixture::copy_fixture("v6", "psd", tmp.path());
    let mut card = open_file_card(&dir, Clock::Fixed(today())).expect("v6 PSD state opens");
    assert_eq!(card.kind(), Some(CardKind::Psd));
    expect_ok(&transmit(&mut card, &psd_apdu::select()));
    let slot = expect_ok(&transmit(&mut card, &psd_apdu::import_set(&blob)))[0];
    let read = |card: &mut _| {
        let r = expect_ok(&transmit(
            card,
            &psd_apdu::read_registers(RegisterSetIndex(slot)),
        ));
        Registers::decode(&r).expect("registers decode")
    };
    let before = read(&mut card);
    assert_eq!(before.license.0, LICENSE);
    assert_eq!(before.dr, Amount(FUNDS - POSTAGE));
    // The retry: the same bytes, signature included, and no second debit.
    let again = expect_ok(&transmit(
        &mut card,
        &psd_apdu::issue_indicium(RegisterSetIndex(slot), &indicium_request()),
    ));
    assert_eq!(again, stored, "the indicium first answered, byte for byte");
    assert_eq!(read(&mut card), before, "debited once");
    // Taken back once only.
    let twice = transmit(&mut card, &psd_apdu::import_set(&blob));
    assert_ne!(
        &twice[twice.len() - 2..],
        &[0x90, 0x00],
        "a second import is refused"
    );
}

#[test]
#[ignore = "writes tests/state/v6 (already made; refuses to overwrite)"]
fn generate_v6() {
    use card_sim::file_store::FileStore;
    use card_sim::sim::{create_file_card, storage_key_path};
    use openpsd_core::store::{SealedStore, StorageKey, Store, Write};
    use openpsd_tests::licenses::{add_license, licensing_card};
    use openpsd_tests::Kms;

    let out = fixtures();
    for name in [
        "psd",
        "psd.storage-key",
        "exported.psdset",
        "last-indicium.hex",
    ] {
        let path = out.join(name);
        assert!(!path.exists(), "{} exists: v6 is frozen", path.display());
    }

    let mut psd = licensing_card(SEED, 0);
    let slot = add_license(&mut psd, LICENSE, b"10115");
    let set = RegisterSetIndex(slot);
    let msg = Kms::new().refill_for(&mut psd, set, Amount(FUNDS), [6; 8]);
    expect_ok(&psd.transmit(&psd_apdu::refill(set, &msg)));
    assert!(psd.idle(), "the nonce pool fills");
    let issued = expect_ok(&psd.transmit(&psd_apdu::issue_indicium(set, &indicium_request())));
    let blob = expect_ok(&psd.transmit(&psd_apdu::export_prepare(set)));
    assert!(blob.starts_with(BLOB_TAG_SIGNED));
    expect_ok(&psd.transmit(&psd_apdu::export_commit(set, &Blob::digest_of(&blob))));

    fs::create_dir_all(&out).expect("v6 directory");
    fs::write(out.join("exported.psdset"), &blob).expect("write blob");
    fs::write(
        out.join("last-indicium.hex"),
        format!("{}\n", hex::encode(&issued)),
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
