//! Frozen state fixtures, format v3: licenses (seed 003). A PSD personalized with the postal
//! authority block (device record tag `0x50`), a register set added by LICENSE INSTALL
//! (register set record version 3: the grant's license key, serial and validity), a set
//! exported and committed (record `0x0104` LICENSES: the seal key, the export counter and
//! an outstanding entry) whose blob is kept beside, and a license request left pending (its
//! key and nonce in the same record). See `state_v1.rs` for how fixtures are kept.
//!
//! `tests/state/v3/` holds the card-sim PSD state directory `psd/` with its storage key,
//! `exported.psdset` (the blob EXPORT SET answered, as `openpsd license export` keeps it)
//! and `pending-request.hex` (what LICENSE REQUEST answered for the pending request).
//!
//! The fixtures were made once by `generate_v3` below (ignored; it refuses to overwrite).
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
use openpsd_core::crypto;
use openpsd_core::psd::audit::AuditData;
use openpsd_core::psd::device::DeviceInfo;
use openpsd_core::psd::indicium::{self, IndiciumRequest};
use openpsd_core::psd::license::export::Blob;
use openpsd_core::psd::license::request::{LicenseAsk, LicenseRequest};
use openpsd_core::psd::license::{ExportEntry, ExportState, LicenseInfo, SlotInfo};
use openpsd_core::psd::refill::RefillCombination;
use openpsd_core::psd::registers::Registers;
use openpsd_core::types::{
    Amount, LicenseId, PieceCount, PostalCode, RefillCount, RegisterSetIndex,
};
use openpsd_core::Status;
use openpsd_tests::licenses::{grant, serial_for, validity};
use openpsd_tests::{expect_ok, kms_key, request, DEVICE, LICENSES};
use state_fixture::{today, transmit, POSTAGE, REFILLED};

/// The platform seed the fixture PSD was made with.
const SEED: u64 = 3;
/// The license granted by the test PA and installed (slot 2), and its town.
const LICENSED: (u32, &[u8]) = (9001, b"10115");
/// Refilled on the licensed set.
const LICENSED_REFILLED: u64 = 20_000;
/// The one indicium printed on the licensed set.
const LICENSED_POSTAGE: u64 = 1_450;
/// Refilled on set 1 (license 4712) before it was exported.
const EXPORTED_REFILLED: u64 = 3_000;
/// The one indicium printed on set 1 before it was exported.
const EXPORTED_POSTAGE: u64 = 250;
/// The license asked for and left pending, and its town.
const PENDING: (u32, &[u8]) = (9002, b"80331");
/// The licensed set's key (SEC1 uncompressed), generated inside the PSD at its request.
const LICENSE_KEY: &str = "04fd4f323c1bf6a2e7234972bd7f53abe210927ed2f5fd58c8547fe9a83878e4ad06c1ec933c984369071d61b896d077f6890f024e5e649f8a89f10bd8acf501a6";

fn fixtures() -> PathBuf {
    state_fixture::fixtures("v3")
}

fn copy_fixture(name: &str, into: &Path) -> PathBuf {
    state_fixture::copy_fixture("v3", name, into)
}

/// The fixture PSD copied into `tmp`, opened and SELECTed.
fn open_psd(tmp: &Path) -> (PathBuf, impl SimulatedCard) {
    let dir = copy_fixture("psd", tmp);
    let mut card = open_file_card(&dir, Clock::Fixed(today())).expect("v3 PSD state opens");
    assert_eq!(card.kind(), Some(CardKind::Psd));
    expect_ok(&transmit(&mut card, &psd_apdu::select()));
    (dir, card)
}

fn registers(card: &mut impl SimulatedCard, set: u8) -> Registers {
    let r = expect_ok(&transmit(
        card,
        &psd_apdu::read_registers(RegisterSetIndex(set)),
    ));
    Registers::decode(&r).expect("registers decode")
}

fn device_info(card: &mut impl SimulatedCard) -> DeviceInfo {
    let info = expect_ok(&transmit(card, &psd_apdu::get_data()));
    DeviceInfo::decode(&info)
        .expect("device info decodes")
        .expect("personalized")
}

fn license_info(card: &mut impl SimulatedCard) -> LicenseInfo {
    LicenseInfo::decode(&expect_ok(&transmit(card, &psd_apdu::get_license_data())))
        .expect("license info decodes")
}

fn code(c: &[u8]) -> PostalCode {
    PostalCode::new(c).expect("valid code")
}

/// An indicium request on `origin`, dated 2026-11-`day`.
fn request_at(txn: u64, postage: u64, day: u8, origin: &[u8]) -> IndiciumRequest {
    IndiciumRequest {
        origin: code(origin),
        ..request(txn, postage, day)
    }
}

fn pending_ask() -> LicenseAsk {
    LicenseAsk {
        license: LicenseId(PENDING.0),
        origin: code(PENDING.1),
    }
}

fn license_key() -> [u8; 65] {
    hex::decode(LICENSE_KEY)
        .expect("hex key")
        .try_into()
        .expect("65 bytes")
}

/// Registers of a set refilled once with `refilled` and used once for `postage`.
fn used_once(license: (u32, &[u8]), refilled: u64, postage: u64) -> Registers {
    Registers {
        license: LicenseId(license.0),
        origin: code(license.1),
        ar: Amount(postage),
        dr: Amount(refilled - postage),
        control_sum: Amount(refilled),
        pieces: PieceCount(1),
        refills: RefillCount(1),
        transferred: Amount::ZERO,
        pending: Amount::ZERO,
    }
}

/// The refill message the test KMS signs for `amount` on the set's state now: AUDIT, the
/// audit checked with the device key, the combination signed (as `Kms::refill_for`).
fn kms_refill(card: &mut impl SimulatedCard, set: u8, amount: u64, id: [u8; 8]) -> Vec<u8> {
    let nonce: [u8; 16] = id.repeat(2).try_into().expect("16 bytes");
    let msg = expect_ok(&transmit(
        card,
        &psd_apdu::audit(RegisterSetIndex(set), &nonce),
    ));
    let device_key = device_info(card).public_key;
    let a = AuditData::open(&msg, &device_key).expect("audit verifies");
    assert_eq!(a.nonce, nonce);
    RefillCombination {
        device: a.device,
        license: a.license,
        amount: Amount(amount),
        control_sum: a.control_sum,
        refills: a.refills,
        combination_id: id,
    }
    .sign(&kms_key())
}

fn stored_blob() -> Vec<u8> {
    fs::read(fixtures().join("exported.psdset")).expect("exported.psdset")
}

fn stored_request() -> Vec<u8> {
    let hex_text =
        fs::read_to_string(fixtures().join("pending-request.hex")).expect("pending-request.hex");
    hex::decode(hex_text.trim()).expect("hex request")
}

#[test]
fn psd_state_v3_shows_its_licenses_and_prints_on_the_license_key() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let (_dir, mut card) = open_psd(tmp.path());
    let info = device_info(&mut card);
    assert_eq!(info.device, DEVICE);
    assert_eq!(info.register_sets, 3, "slots up to the last one in use");
    assert_eq!(info.last_date, Some(today()));

    // GET DATA 00 04: the personalized set, the exported slot free, the licensed set, the
    // pending request and the outstanding export.
    let blob = stored_blob();
    let licenses = license_info(&mut card);
    let key = license_key();
    assert_eq!(
        licenses.slots,
        vec![
            SlotInfo::Set {
                license: LicenseId(LICENSES[0].0),
                key_id: info.key_id,
                public_key: info.public_key,
                not_after: None,
                frozen: false,
            },
            SlotInfo::Free,
            SlotInfo::Set {
                license: LicenseId(LICENSED.0),
                key_id: crypto::key_id(&key),
                public_key: key,
                not_after: Some(validity().1),
                frozen: false,
            },
            SlotInfo::Free,
        ]
    );
    assert_eq!(licenses.pending, Some((2, LicenseId(PENDING.0))));
    assert_eq!(licenses.export_counter, 2);
    assert_eq!(
        licenses.exports,
        vec![ExportEntry {
            license: LicenseId(LICENSES[1].0),
            epoch: 1,
            digest: Blob::digest_of(&blob),
            state: ExportState::Outstanding,
            slot: 1,
            control_sum: Amount(EXPORTED_REFILLED),
            dr: Amount(EXPORTED_REFILLED - EXPORTED_POSTAGE),
        }]
    );

    // The registers as recorded; the exported slot holds nothing.
    assert_eq!(
        registers(&mut card, 0),
        used_once(LICENSES[0], REFILLED, POSTAGE)
    );
    let licensed = used_once(LICENSED, LICENSED_REFILLED, LICENSED_POSTAGE);
    assert_eq!(registers(&mut card, 2), licensed);
    assert_eq!(
        psd_apdu::sw(&transmit(
            &mut card,
            &psd_apdu::read_registers(RegisterSetIndex(1))
        )),
        Status::ReferencedDataNotFound.sw()
    );

    // The stored license key still signs: the indicium verifies under the key GET DATA
    // 00 04 shows, not under the device key.
    let issued = expect_ok(&transmit(
        &mut card,
        &psd_apdu::issue_indicium(RegisterSetIndex(2), &request_at(11, 300, 22, LICENSED.1)),
    ));
    let data = indicium::verify(&issued, &key).expect("indicium verifies under the license key");
    assert_eq!(
        (data.license, data.key_id, data.pieces),
        (LicenseId(LICENSED.0), crypto::key_id(&key), PieceCount(2))
    );
    assert_eq!(data.dr, Amount(LICENSED_REFILLED - LICENSED_POSTAGE - 300));
    assert_eq!(
        indicium::verify(&issued, &info.public_key),
        Err(indicium::VerifyError::WrongKey)
    );
    // The licensed set refills through the test KMS, like any other.
    let msg = kms_refill(&mut card, 2, 1_000, [0x21; 8]);
    expect_ok(&transmit(
        &mut card,
        &psd_apdu::refill(RegisterSetIndex(2), &msg),
    ));
    let after = registers(&mut card, 2);
    assert_eq!(after.control_sum, Amount(LICENSED_REFILLED + 1_000));
    assert_eq!(after.refills, RefillCount(2));
    // So does the personalized set, and it prints with the device key.
    let msg = kms_refill(&mut card, 0, 2_000, [0x22; 8]);
    expect_ok(&transmit(
        &mut card,
        &psd_apdu::refill(RegisterSetIndex(0), &msg),
    ));
    let issued = expect_ok(&transmit(
        &mut card,
        &psd_apdu::issue_indicium(RegisterSetIndex(0), &request(12, POSTAGE, 22)),
    ));
    let data = indicium::verify(&issued, &info.public_key).expect("indicium verifies");
    assert_eq!(data.pieces, PieceCount(2));
}

#[test]
fn psd_state_v3_answers_the_pending_request_as_recorded_and_installs_its_grant() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let (_dir, mut card) = open_psd(tmp.path());
    let recorded = stored_request();
    let again = expect_ok(&transmit(
        &mut card,
        &psd_apdu::license_request(&pending_ask(), false),
    ));
    assert_eq!(again, recorded, "the pending request, byte for byte");
    let request = LicenseRequest::decode(&recorded).expect("request decodes");
    request
        .verify(&device_info(&mut card).public_key)
        .expect("PoP and device signature verify");
    assert_eq!(request.body.device, DEVICE);
    assert_eq!(request.body.counter, 2);

    // The stored pending key and nonce take the grant: the new set lands in the free slot 1.
    let install = grant(&request, PENDING.0, &serial_for(PENDING.0));
    let resp = expect_ok(&transmit(&mut card, &psd_apdu::license_install(&install)));
    assert_eq!(resp[0], 1, "first free slot");
    let licenses = license_info(&mut card);
    assert_eq!(licenses.pending, None);
    assert!(matches!(
        licenses.slots[1],
        SlotInfo::Set { license, public_key, .. }
            if license == LicenseId(PENDING.0) && public_key == request.body.license_public_key
    ));
    // The licenses already here are refused at the request.
    for (license, origin) in [LICENSED, LICENSES[1]] {
        let ask = LicenseAsk {
            license: LicenseId(license),
            origin: code(origin),
        };
        assert_eq!(
            psd_apdu::sw(&transmit(
                &mut card,
                &psd_apdu::license_request(&ask, false)
            )),
            Status::LicenseExists.sw(),
            "license {license}"
        );
    }
}

#[test]
fn exported_set_v3_imports_once_and_prints() {
    let blob = stored_blob();
    let parsed = Blob::decode(&blob).expect("blob decodes");
    assert_eq!((parsed.device, parsed.epoch), (DEVICE, 1));
    assert_eq!(parsed.set.license, LicenseId(LICENSES[1].0));
    assert_eq!(parsed.set.grant, None, "a personalized set");

    let tmp = tempfile::tempdir().expect("temp dir");
    let (dir, mut card) = open_psd(tmp.path());
    let info = device_info(&mut card);
    assert!(Blob::verify_signature(&blob, &info.public_key));
    let slot = expect_ok(&transmit(&mut card, &psd_apdu::import_set(&blob)))[0];
    assert_eq!(slot, 1, "back in the free slot");
    assert_eq!(
        registers(&mut card, slot),
        used_once(LICENSES[1], EXPORTED_REFILLED, EXPORTED_POSTAGE)
    );
    assert!(license_info(&mut card).exports.is_empty());

    let log = fs::read(dir.join("state.log")).expect("state log");
    assert_eq!(
        psd_apdu::sw(&transmit(&mut card, &psd_apdu::import_set(&blob))),
        Status::ExportNotOutstanding.sw()
    );
    assert_eq!(Status::ExportNotOutstanding.sw(), 0x9A33);
    assert_eq!(
        fs::read(dir.join("state.log")).expect("state log"),
        log,
        "a refused import wrote nothing"
    );

    let issued = expect_ok(&transmit(
        &mut card,
        &psd_apdu::issue_indicium(
            RegisterSetIndex(slot),
            &request_at(13, 100, 22, LICENSES[1].1),
        ),
    ));
    let data = indicium::verify(&issued, &info.public_key).expect("indicium verifies");
    assert_eq!(data.license, LicenseId(LICENSES[1].0));
    assert_eq!(data.dr, Amount(EXPORTED_REFILLED - EXPORTED_POSTAGE - 100));
}

/// Wrote the v3 fixtures (once; they are then frozen): a PSD personalized with the test PA
/// and vendor and two sets; set 0 (4711) refilled and one indicium printed; license 9001
/// requested, granted by the test PA and countersigned by the vendor, installed (slot 2),
/// refilled and one indicium printed on its key; set 1 (4712) refilled, one indicium,
/// exported and committed (the blob kept as `exported.psdset`); license 9002 requested and
/// left pending (`pending-request.hex`). Run with
/// `cargo test -p openpsd-tests --test state_v3 -- --ignored`.
#[test]
#[ignore = "writes tests/state/v3 (already made; refuses to overwrite)"]
fn generate_v3() {
    use card_sim::file_store::FileStore;
    use card_sim::sim::{create_file_card, storage_key_path};
    use openpsd_core::store::{SealedStore, StorageKey, Store, Write};
    use openpsd_tests::licenses::{add_license, licensing_card, request_license};
    use openpsd_tests::{Kms, TestCard};

    let out = fixtures();
    for name in [
        "psd",
        "psd.storage-key",
        "exported.psdset",
        "pending-request.hex",
    ] {
        let path = out.join(name);
        assert!(!path.exists(), "{} exists: v3 is frozen", path.display());
    }

    fn fund(card: &mut TestCard, slot: u8, amount: u64, id: u8) {
        let msg = Kms::new().refill_for(card, RegisterSetIndex(slot), Amount(amount), [id; 8]);
        expect_ok(&card.transmit(&psd_apdu::refill(RegisterSetIndex(slot), &msg)));
    }
    // The day the fixtures were made: 2026-11-21 (`state_fixture::today`).
    let day = 21;

    let mut psd = licensing_card(SEED, 2);
    fund(&mut psd, 0, REFILLED, 1);
    expect_ok(&psd.transmit(&psd_apdu::issue_indicium(
        RegisterSetIndex(0),
        &request(1, POSTAGE, day),
    )));

    let slot = add_license(&mut psd, LICENSED.0, LICENSED.1);
    assert_eq!(slot, 2);
    fund(&mut psd, slot, LICENSED_REFILLED, 2);
    expect_ok(&psd.transmit(&psd_apdu::issue_indicium(
        RegisterSetIndex(slot),
        &request_at(2, LICENSED_POSTAGE, day, LICENSED.1),
    )));

    fund(&mut psd, 1, EXPORTED_REFILLED, 3);
    expect_ok(&psd.transmit(&psd_apdu::issue_indicium(
        RegisterSetIndex(1),
        &request_at(3, EXPORTED_POSTAGE, day, LICENSES[1].1),
    )));
    let blob = expect_ok(&psd.transmit(&psd_apdu::export_prepare(RegisterSetIndex(1))));
    expect_ok(&psd.transmit(&psd_apdu::export_commit(
        RegisterSetIndex(1),
        &Blob::digest_of(&blob),
    )));

    let pending = request_license(&mut psd, PENDING.0, PENDING.1);
    let pending_bytes = expect_ok(&psd.transmit(&psd_apdu::license_request(&pending_ask(), false)));
    assert_eq!(
        LicenseRequest::decode(&pending_bytes).expect("decodes"),
        pending
    );

    let info = openpsd_tests::licenses::license_info(&mut psd);
    if let SlotInfo::Set { public_key, .. } = info.slots[2] {
        println!("LICENSE_KEY = {}", hex::encode(public_key));
    }

    fs::create_dir_all(&out).expect("v3 directory");
    fs::write(out.join("exported.psdset"), &blob).expect("write blob");
    fs::write(
        out.join("pending-request.hex"),
        format!("{}\n", hex::encode(&pending_bytes)),
    )
    .expect("write request");

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
