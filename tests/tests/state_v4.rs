//! Frozen state fixtures, format v4: the certificate meter (seed 004). A PSD that loaded a
//! rate table and the CA's trust anchor, generated a postmark key and installed its
//! certificate (the fee paid by set 0: register set record version 4, with fees and
//! services), issued a postmark on set 1, exported set 1 (an export file of version 2,
//! which carries the fee registers) and then issued a postmark on set 0, which is kept as
//! the last service (record `0x0105` CERTMETER, version 1). See `state_v1.rs` for how
//! fixtures are kept.
//!
//! `tests/state/v4/` holds the card-sim PSD state directory `psd/` with its storage key,
//! `exported.psdset` (the blob EXPORT SET answered) and `last-postmark.hex` (what ISSUE
//! POSTMARK answered for the last service).
//!
//! The fixtures were made once by `generate_v4` below (ignored; it refuses to overwrite).
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// The purse's constants of the shared module are not used here.
#[allow(dead_code)]
mod state_fixture;

use std::fs;
use std::path::{Path, PathBuf};

use card_sim::os_platform::Clock;
use card_sim::sim::{open_file_card, CardKind, SimulatedCard};
use openpsd_core::client::psd_apdu;
use openpsd_core::crypto::sha256;
use openpsd_core::psd::audit::AuditData;
use openpsd_core::psd::certmeter::info::CertMeterInfo;
use openpsd_core::psd::certmeter::postmark::PostmarkRequest;
use openpsd_core::psd::certmeter::tst::CompactPostmark;
use openpsd_core::psd::device::DeviceInfo;
use openpsd_core::psd::license::export::{Blob, BLOB_TAG_FEES};
use openpsd_core::psd::registers::Registers;
use openpsd_core::types::{Amount, PieceCount, RegisterSetIndex, TransactionId};
use openpsd_tests::certmeter::{today, CERTIFICATE_FEE, FUNDS, POSTMARK_FEE};
use openpsd_tests::expect_ok;
use state_fixture::transmit;

/// The platform seed the fixture PSD was made with.
const SEED: u64 = 4;
/// Refilled on set 1 before its postmark and export.
const SET1_FUNDS: u64 = 2_000;
/// The transaction ID of the postmark on set 1 (exported with it).
const EXPORTED_TXN: u64 = 1;
/// The transaction ID of the last postmark (set 0), kept as the last service.
const LAST_TXN: u64 = 2;
/// The document the last postmark was issued for.
const LAST_DOCUMENT: &[u8] = b"state v4: the last postmark";

fn fixtures() -> PathBuf {
    state_fixture::fixtures("v4")
}

/// The fixture PSD copied into `tmp`, opened at the fixture's date and SELECTed.
fn open_psd(tmp: &Path) -> impl SimulatedCard {
    let dir = state_fixture::copy_fixture("v4", "psd", tmp);
    let mut card = open_file_card(&dir, Clock::Fixed(today())).expect("v4 PSD state opens");
    assert_eq!(card.kind(), Some(CardKind::Psd));
    expect_ok(&transmit(&mut card, &psd_apdu::select()));
    card
}

fn registers(card: &mut impl SimulatedCard, set: u8) -> Registers {
    let r = expect_ok(&transmit(
        card,
        &psd_apdu::read_registers(RegisterSetIndex(set)),
    ));
    Registers::decode(&r).expect("registers decode")
}

fn info(card: &mut impl SimulatedCard) -> CertMeterInfo {
    CertMeterInfo::decode(&expect_ok(&transmit(card, &psd_apdu::get_certmeter_data())))
        .expect("GET DATA 00 05 decodes")
}

fn fees_of(info: &CertMeterInfo, set: u8) -> Option<(Amount, PieceCount)> {
    info.sets
        .iter()
        .find(|(s, _, _)| *s == set)
        .map(|(_, f, n)| (*f, *n))
}

fn request(txn: u64, document: &[u8]) -> PostmarkRequest {
    PostmarkRequest {
        transaction: TransactionId(txn.to_be_bytes()),
        digest: sha256(document),
        nonce: Vec::new(),
    }
}

fn stored_postmark() -> Vec<u8> {
    let hex_text = fs::read_to_string(fixtures().join("last-postmark.hex")).expect("fixture");
    hex::decode(hex_text.trim()).expect("hex")
}

#[test]
fn psd_state_v4_keeps_its_fee_registers_key_and_last_postmark() {
    let tmp = tempfile::tempdir().unwrap();
    let mut card = open_psd(tmp.path());

    // Set 0 paid the certificate fee and the last postmark's fee (record version 4).
    let set0 = registers(&mut card, 0);
    assert_eq!(set0.dr.0, FUNDS - CERTIFICATE_FEE - POSTMARK_FEE);
    assert_eq!(set0.ar.0 + set0.dr.0 + set0.pending.0, set0.control_sum.0);
    let cm = info(&mut card);
    assert_eq!(
        fees_of(&cm, 0),
        Some((Amount(CERTIFICATE_FEE + POSTMARK_FEE), PieceCount(2)))
    );
    assert_eq!(fees_of(&cm, 1), None, "set 1 left with its fees");
    assert_eq!(cm.postmarks, 2, "two postmarks issued");
    assert_eq!(cm.fees_due, Amount::ZERO);
    assert_eq!(cm.tables.len(), 1, "the rate table is kept");
    assert_eq!(cm.anchors.len(), 1, "the CA's anchor is kept");
    assert_eq!(cm.slots.len(), 1);
    assert!(!cm.slots[0].certificate.is_empty(), "the certificate kept");

    // The last service answers again, byte for byte, charged once.
    let stored = stored_postmark();
    let again = expect_ok(&transmit(
        &mut card,
        &psd_apdu::issue_postmark(RegisterSetIndex(0), &request(LAST_TXN, LAST_DOCUMENT)),
    ));
    assert_eq!(again, stored, "the retry returns the stored postmark");
    assert_eq!(registers(&mut card, 0), set0, "charged once");

    // The key still signs: a new postmark, the serial's counter and the fees move on.
    let next = expect_ok(&transmit(
        &mut card,
        &psd_apdu::issue_postmark(RegisterSetIndex(0), &request(3, b"after the fixture")),
    ));
    let compact = CompactPostmark::decode(&next).expect("compact postmark");
    assert_eq!(
        compact.key_id,
        CompactPostmark::decode(&stored).unwrap().key_id,
        "the same key"
    );
    assert_ne!(next, stored);
    let after = registers(&mut card, 0);
    assert_eq!(after.dr.0, set0.dr.0 - POSTMARK_FEE);
    assert_eq!(info(&mut card).postmarks, 3);

    // The audit reports the fees and the newest rate table held (version 5) under the
    // device key.
    let device_key = DeviceInfo::decode(&expect_ok(&transmit(&mut card, &psd_apdu::get_data())))
        .expect("device info decodes")
        .expect("personalized")
        .public_key;
    let msg = expect_ok(&transmit(
        &mut card,
        &psd_apdu::audit(RegisterSetIndex(0), b"state v4 audit!!"),
    ));
    let a = AuditData::open(&msg, &device_key).expect("audit verifies");
    assert_eq!(a.fees, Amount(CERTIFICATE_FEE + 2 * POSTMARK_FEE));
    assert_eq!(a.services, PieceCount(3));
    assert_eq!(a.rate_table, 1, "the fixture holds rate table version 1");
}

#[test]
fn exported_set_v4_comes_back_with_its_fee_registers() {
    let tmp = tempfile::tempdir().unwrap();
    let mut card = open_psd(tmp.path());
    let blob = fs::read(fixtures().join("exported.psdset")).expect("fixture blob");
    assert!(
        blob.starts_with(BLOB_TAG_FEES),
        "an export file of version 2"
    );
    let decoded = Blob::decode(&blob).expect("blob decodes");
    assert_eq!(
        (decoded.set.fees, decoded.set.services),
        (Amount(POSTMARK_FEE), PieceCount(1))
    );
    let slot = expect_ok(&transmit(&mut card, &psd_apdu::import_set(&blob)))[0];
    let back = registers(&mut card, slot);
    assert_eq!(back.dr.0, SET1_FUNDS - POSTMARK_FEE);
    assert_eq!(back.ar.0, POSTMARK_FEE, "the fee is in AR, not postage");
    assert_eq!(
        fees_of(&info(&mut card), slot),
        Some((Amount(POSTMARK_FEE), PieceCount(1)))
    );
    // Imported once only.
    let again = transmit(&mut card, &psd_apdu::import_set(&blob));
    assert_ne!(
        &again[again.len() - 2..],
        &[0x90, 0x00],
        "a second import is refused"
    );
}

#[test]
#[ignore = "writes tests/state/v4 (already made; refuses to overwrite)"]
fn generate_v4() {
    use card_sim::file_store::FileStore;
    use card_sim::sim::{create_file_card, storage_key_path};
    use openpsd_core::store::{SealedStore, StorageKey, Store, Write};
    use openpsd_tests::certmeter::{activate_postmark_key, certmeter_card, TestCa};
    use openpsd_tests::Kms;

    let out = fixtures();
    for name in [
        "psd",
        "psd.storage-key",
        "exported.psdset",
        "last-postmark.hex",
    ] {
        let path = out.join(name);
        assert!(!path.exists(), "{} exists: v4 is frozen", path.display());
    }

    let ca = TestCa::standard();
    let (mut psd, device_pk) = certmeter_card(SEED, true);
    activate_postmark_key(&mut psd, &device_pk, &ca);

    let set1 = RegisterSetIndex(1);
    let msg = Kms::new().refill_for(&mut psd, set1, Amount(SET1_FUNDS), [2; 8]);
    expect_ok(&psd.transmit(&psd_apdu::refill(set1, &msg)));
    expect_ok(&psd.transmit(&psd_apdu::issue_postmark(
        set1,
        &request(EXPORTED_TXN, b"state v4: exported"),
    )));
    let blob = expect_ok(&psd.transmit(&psd_apdu::export_prepare(set1)));
    expect_ok(&psd.transmit(&psd_apdu::export_commit(set1, &Blob::digest_of(&blob))));

    let last = expect_ok(&psd.transmit(&psd_apdu::issue_postmark(
        RegisterSetIndex(0),
        &request(LAST_TXN, LAST_DOCUMENT),
    )));

    fs::create_dir_all(&out).expect("v4 directory");
    fs::write(out.join("exported.psdset"), &blob).expect("write blob");
    fs::write(
        out.join("last-postmark.hex"),
        format!("{}\n", hex::encode(&last)),
    )
    .expect("write postmark");

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
