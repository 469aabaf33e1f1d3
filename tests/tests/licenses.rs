//! Licenses (seed 003), in process: the grant chain of Fig. 4 (steps 60-67), register sets
//! parked on the host's disk and restored (Fig. 5, claims 4-5), and every refusal with
//! its status word and nothing written.
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use openpsd_core::client::psd_apdu;
use openpsd_core::crypto;
use openpsd_core::psd::indicium;
use openpsd_core::psd::license::export::Blob;
use openpsd_core::psd::license::request::LicenseAsk;
use openpsd_core::psd::license::{ExportState, SlotInfo};
use openpsd_core::types::*;
use openpsd_core::Status;
use openpsd_tests::licenses::*;
use openpsd_tests::*;

const SEED: u64 = 31;

/// An indicium request on `origin` for `postage`, dated 2026-11-`day`.
fn request_at(txn: u64, postage: u64, day: u8, origin: &[u8]) -> indicium::IndiciumRequest {
    indicium::IndiciumRequest {
        origin: PostalCode::new(origin).unwrap(),
        ..request(txn, postage, day)
    }
}

/// Refills `amount` on the set in `slot` through the test KMS.
fn fund(card: &mut TestCard, slot: u8, amount: u64, id: u8) {
    let msg = Kms::new().refill_for(card, RegisterSetIndex(slot), Amount(amount), [id; 8]);
    expect_ok(&card.transmit(&psd_apdu::refill(RegisterSetIndex(slot), &msg)));
}

/// The card's commands refused with `status`, and the store unchanged.
fn refused_unchanged(card: &mut TestCard, apdu: &[u8], status: Status) {
    let before = card.store().nvm().clone();
    let writes = card.store().writes();
    expect_refused(&card.transmit(apdu), status);
    assert_eq!(card.store().writes(), writes, "a refusal writes nothing");
    assert!(card.store().nvm() == &before, "a refusal changes nothing");
}

#[test]
fn fig4_request_grant_countersign_install_then_print_on_the_license_key() {
    let mut card = licensing_card(SEED, 0);
    let request = request_license(&mut card, 9001, b"10115");
    // Step 63: the manufacturer checks both signatures with the device's key.
    let device_key = device_public_key(&mut card);
    request
        .verify(&device_key)
        .expect("PoP and device signature verify");
    assert_eq!(request.body.device, DEVICE);
    // Asking again answers the same request, byte for byte.
    let again = request_license(&mut card, 9001, b"10115");
    assert_eq!(again, request);

    let install = grant(&request, 9001, &serial_for(9001));
    let resp = expect_ok(&card.transmit(&psd_apdu::license_install(&install)));
    let slot = resp[0];
    assert_eq!(slot, 0, "first free slot");
    let key_id = crypto::key_id(&request.body.license_public_key);
    assert_eq!(&resp[1..5], &key_id.0, "the set signs with the license key");

    let info = license_info(&mut card);
    assert_eq!(
        info.slots[0],
        SlotInfo::Set {
            license: LicenseId(9001),
            key_id,
            public_key: request.body.license_public_key,
            not_after: Some(validity().1),
            frozen: false,
        }
    );
    assert_eq!(info.pending, None);

    // Printing and refilling choose the set by license; the indicium carries its key ID
    // and verifies with the license key, not the device key.
    fund(&mut card, slot, 5_000, 1);
    let ind = expect_ok(&card.transmit(&psd_apdu::issue_indicium(
        RegisterSetIndex(slot),
        &request_at(1, 150, 22, b"10115"),
    )));
    let data = indicium::verify(&ind, &request.body.license_public_key).expect("verifies");
    assert_eq!((data.license, data.key_id), (LicenseId(9001), key_id));
    assert_eq!(
        indicium::verify(&ind, &device_key),
        Err(indicium::VerifyError::WrongKey)
    );
    let r = registers(&mut card, slot);
    assert_eq!(
        (r.ar, r.dr, r.pieces),
        (Amount(150), Amount(4_850), PieceCount(1))
    );
}

#[test]
fn a_license_on_a_psd_personalized_with_sets_takes_the_next_slot() {
    let mut card = licensing_card(SEED, 2);
    assert_eq!(add_license(&mut card, 9001, b"10115"), 2);
    assert_eq!(add_license(&mut card, 9002, b"80331"), 3);
    let request = request_license(&mut card, 9003, b"10115");
    let install = grant(&request, 9003, &serial_for(9003));
    refused_unchanged(
        &mut card,
        &psd_apdu::license_install(&install),
        Status::NotEnoughMemory,
    );
}

#[test]
fn grants_refused_with_nothing_written() {
    let mut card = licensing_card(SEED, 0);
    let request = request_license(&mut card, 9001, b"10115");
    let (pa, vendor) = (pa_key(), vendor_key());
    let other = crypto::IndiciumKey::from_bytes(&[0x33; 32]).unwrap();

    // The PA alone (no valid countersignature) or the vendor alone (no valid PA signature).
    for (pa_signer, vendor_signer) in [(&pa, &other), (&other, &vendor), (&other, &other)] {
        let forged = grant_with(
            &request,
            9001,
            &serial_for(9001),
            validity(),
            pa_signer,
            vendor_signer,
        );
        refused_unchanged(
            &mut card,
            &psd_apdu::license_install(&forged),
            Status::SecurityStatusNotSatisfied,
        );
    }
    // A field changed after signing: license, origin, serial, validity.
    let good = grant(&request, 9001, &serial_for(9001));
    let mut tampered = vec![good.clone(), good.clone(), good.clone(), good.clone()];
    tampered[0].fields.license = LicenseId(9002);
    tampered[1].fields.origin = PostalCode::new(b"80331").unwrap();
    tampered[2].fields.serial = serial_for(9002);
    tampered[3].fields.not_after = Date::new(2030, 1, 1).unwrap();
    for t in &tampered {
        refused_unchanged(
            &mut card,
            &psd_apdu::license_install(t),
            Status::SecurityStatusNotSatisfied,
        );
    }
    // A grant for another key or nonce: the request replaced (P1 01), then the old grant.
    let ask = LicenseAsk {
        license: LicenseId(9001),
        origin: PostalCode::new(b"10115").unwrap(),
    };
    let second = openpsd_core::psd::license::request::LicenseRequest::decode(&expect_ok(
        &card.transmit(&psd_apdu::license_request(&ask, true)),
    ))
    .unwrap();
    assert_ne!(second.body.nonce, request.body.nonce);
    assert_ne!(
        second.body.license_public_key,
        request.body.license_public_key
    );
    refused_unchanged(
        &mut card,
        &psd_apdu::license_install(&good),
        Status::GrantAlreadyUsed,
    );
    let mut for_old_key = grant(&second, 9001, &serial_for(9001));
    let old = grant(&request, 9001, &serial_for(9001));
    for_old_key.pa_signature = old.pa_signature;
    for_old_key.countersignature = old.countersignature;
    refused_unchanged(
        &mut card,
        &psd_apdu::license_install(&for_old_key),
        Status::SecurityStatusNotSatisfied,
    );
    // A grant for another device: the same request body under another device ID.
    let mut body = second.clone();
    body.body.device = DeviceId(*b"PSD00002");
    let mut for_other_device = grant(&body, 9001, &serial_for(9001));
    for_other_device.request = second.body.counter;
    refused_unchanged(
        &mut card,
        &psd_apdu::license_install(&for_other_device),
        Status::SecurityStatusNotSatisfied,
    );
    // A request counter never used.
    let mut future = grant(&second, 9001, &serial_for(9001));
    future.request += 1;
    refused_unchanged(
        &mut card,
        &psd_apdu::license_install(&future),
        Status::NoLicenseRequest,
    );
    // The right grant installs once; replayed, it is refused.
    let install = grant(&second, 9001, &serial_for(9001));
    expect_ok(&card.transmit(&psd_apdu::license_install(&install)));
    refused_unchanged(
        &mut card,
        &psd_apdu::license_install(&install),
        Status::GrantAlreadyUsed,
    );
    // The same license again: refused at the request.
    refused_unchanged(
        &mut card,
        &psd_apdu::license_request(&ask, false),
        Status::LicenseExists,
    );
}

#[test]
fn a_grant_that_ends_before_the_last_date_used_is_refused() {
    let mut card = licensing_card(SEED, 1);
    // Print on the personalized set on 2026-11-25: the last date used.
    let msg = Kms::new().refill_for(&mut card, RegisterSetIndex(0), Amount(1_000), [1; 8]);
    expect_ok(&card.transmit(&psd_apdu::refill(RegisterSetIndex(0), &msg)));
    expect_ok(&card.transmit(&psd_apdu::issue_indicium(
        RegisterSetIndex(0),
        &request(1, 100, 25),
    )));
    let request = request_license(&mut card, 9001, b"10115");
    let expired = grant_with(
        &request,
        9001,
        &serial_for(9001),
        (
            Date::new(2026, 1, 1).unwrap(),
            Date::new(2026, 11, 24).unwrap(),
        ),
        &pa_key(),
        &vendor_key(),
    );
    refused_unchanged(
        &mut card,
        &psd_apdu::license_install(&expired),
        Status::LicenseNotValid,
    );
    // A grant valid later than the date of mailing: indicia outside it are refused.
    let later = grant_with(
        &request,
        9001,
        &serial_for(9001),
        (
            Date::new(2026, 11, 27).unwrap(),
            Date::new(2027, 1, 1).unwrap(),
        ),
        &pa_key(),
        &vendor_key(),
    );
    let slot = expect_ok(&card.transmit(&psd_apdu::license_install(&later)))[0];
    fund(&mut card, slot, 1_000, 2);
    refused_unchanged(
        &mut card,
        &psd_apdu::issue_indicium(RegisterSetIndex(slot), &request_at(2, 100, 26, b"10115")),
        Status::LicenseNotValid,
    );
}

#[test]
fn a_psd_without_the_postal_authority_cannot_ask() {
    let (mut card, _) = personalized_card(SEED);
    let ask = LicenseAsk {
        license: LicenseId(9001),
        origin: PostalCode::new(b"10115").unwrap(),
    };
    refused_unchanged(
        &mut card,
        &psd_apdu::license_request(&ask, false),
        Status::NoPostalAuthority,
    );
}

/// Exports the set in `slot`: prepare, then commit. Returns the blob.
fn export(card: &mut TestCard, slot: u8) -> Vec<u8> {
    let blob = expect_ok(&card.transmit(&psd_apdu::export_prepare(RegisterSetIndex(slot))));
    let digest = Blob::digest_of(&blob);
    expect_ok(&card.transmit(&psd_apdu::export_commit(RegisterSetIndex(slot), &digest)));
    blob
}

#[test]
fn fig5_export_frees_the_slot_and_import_restores_a_usable_set() {
    let mut card = licensing_card(SEED, 0);
    let slot = add_license(&mut card, 9001, b"10115");
    fund(&mut card, slot, 5_000, 1);
    expect_ok(&card.transmit(&psd_apdu::issue_indicium(
        RegisterSetIndex(slot),
        &request_at(1, 150, 22, b"10115"),
    )));
    let before = registers(&mut card, slot);

    // Prepare: the set is frozen, the same bytes come back, and the registers are in clear.
    let blob = expect_ok(&card.transmit(&psd_apdu::export_prepare(RegisterSetIndex(slot))));
    let again = expect_ok(&card.transmit(&psd_apdu::export_prepare(RegisterSetIndex(slot))));
    assert_eq!(blob, again, "prepare is repeatable");
    let parsed = Blob::decode(&blob).unwrap();
    assert_eq!((parsed.set.ar, parsed.set.dr), (before.ar, before.dr));
    assert!(Blob::verify_signature(&blob, &device_public_key(&mut card)));
    for apdu in [
        psd_apdu::issue_indicium(RegisterSetIndex(slot), &request_at(2, 100, 22, b"10115")),
        psd_apdu::refill(RegisterSetIndex(slot), &[0; 8]),
    ] {
        refused_unchanged(&mut card, &apdu, Status::SetFrozen);
    }
    let info = license_info(&mut card);
    assert!(matches!(info.slots[0], SlotInfo::Set { frozen: true, .. }));
    assert_eq!(info.exports[0].state, ExportState::Preparing);

    // Commit: the slot is free, the entry outstanding.
    let digest = Blob::digest_of(&blob);
    let epoch =
        expect_ok(&card.transmit(&psd_apdu::export_commit(RegisterSetIndex(slot), &digest)));
    assert_eq!(epoch, 1u64.to_be_bytes());
    let again =
        expect_ok(&card.transmit(&psd_apdu::export_commit(RegisterSetIndex(slot), &digest)));
    assert_eq!(again, epoch, "a retried commit answers the same");
    expect_refused(
        &card.transmit(&psd_apdu::read_registers(RegisterSetIndex(slot))),
        Status::ReferencedDataNotFound,
    );
    let info = license_info(&mut card);
    assert_eq!(info.slots[0], SlotInfo::Free);
    assert_eq!(info.exports[0].state, ExportState::Outstanding);
    assert_eq!(info.exports[0].control_sum, before.control_sum);

    // Import: the set is back, prints and refills.
    let slot = expect_ok(&card.transmit(&psd_apdu::import_set(&blob)))[0];
    let after = registers(&mut card, slot);
    assert_eq!(after, before);
    assert!(license_info(&mut card).exports.is_empty());
    expect_ok(&card.transmit(&psd_apdu::issue_indicium(
        RegisterSetIndex(slot),
        &request_at(2, 100, 23, b"10115"),
    )));
    fund(&mut card, slot, 1_000, 2);
    // The imported file again: it can never be used.
    refused_unchanged(
        &mut card,
        &psd_apdu::import_set(&blob),
        Status::ExportNotOutstanding,
    );
}

#[test]
fn an_old_copy_a_second_copy_and_another_psds_file_never_restore() {
    let mut card = licensing_card(SEED, 0);
    let slot = add_license(&mut card, 9001, b"10115");
    fund(&mut card, slot, 5_000, 1);
    let first = export(&mut card, slot);
    let slot = expect_ok(&card.transmit(&psd_apdu::import_set(&first)))[0];
    // Spend, export again: the first file is now an old copy.
    expect_ok(&card.transmit(&psd_apdu::issue_indicium(
        RegisterSetIndex(slot),
        &request_at(1, 4_000, 22, b"10115"),
    )));
    let second = export(&mut card, slot);
    refused_unchanged(
        &mut card,
        &psd_apdu::import_set(&first),
        Status::ExportNotOutstanding,
    );
    // One byte of the clear registers changed: the seal fails.
    let mut edited = second.clone();
    let dr_at = second.len() - 64 - 49 - 100;
    edited[dr_at] ^= 1;
    let status = psd_apdu::sw(&card.transmit(&psd_apdu::import_set(&edited)));
    assert!(
        status == Status::SecurityStatusNotSatisfied.sw() || status == Status::WrongData.sw(),
        "edited blob refused, got {status:04X}"
    );
    // Another PSD with the same device ID (a cloned identity): its seal key differs.
    let mut clone = licensing_card(SEED + 1, 1);
    expect_ok(&clone.transmit(&psd_apdu::export_prepare(RegisterSetIndex(0))));
    refused_unchanged(
        &mut clone,
        &psd_apdu::import_set(&second),
        Status::SecurityStatusNotSatisfied,
    );
    // Another device.
    let mut other = blank_card(SEED + 2);
    let mut p = licensing_personalization(1);
    p.device = DeviceId(*b"PSD00002");
    expect_ok(&other.transmit(&psd_apdu::personalize(&p)));
    refused_unchanged(
        &mut other,
        &psd_apdu::import_set(&second),
        Status::WrongDevice,
    );
    // The second copy comes back once.
    expect_ok(&card.transmit(&psd_apdu::import_set(&second)));
    refused_unchanged(
        &mut card,
        &psd_apdu::import_set(&second),
        Status::ExportNotOutstanding,
    );
}

#[test]
fn cancel_unfreezes_and_spends_the_epoch() {
    let mut card = licensing_card(SEED, 1);
    fund(&mut card, 0, 1_000, 1);
    let blob = expect_ok(&card.transmit(&psd_apdu::export_prepare(RegisterSetIndex(0))));
    expect_ok(&card.transmit(&psd_apdu::export_cancel(RegisterSetIndex(0))));
    expect_ok(&card.transmit(&psd_apdu::issue_indicium(
        RegisterSetIndex(0),
        &request(1, 100, 22),
    )));
    // The cancelled file names no entry: refused. Committing it is refused too.
    refused_unchanged(
        &mut card,
        &psd_apdu::import_set(&blob),
        Status::ExportNotOutstanding,
    );
    refused_unchanged(
        &mut card,
        &psd_apdu::export_commit(RegisterSetIndex(0), &Blob::digest_of(&blob)),
        Status::ConditionsNotSatisfied,
    );
    let next = expect_ok(&card.transmit(&psd_apdu::export_prepare(RegisterSetIndex(0))));
    assert_eq!(
        Blob::decode(&next).unwrap().epoch,
        2,
        "epochs are never reused"
    );
}

#[test]
fn the_table_of_outstanding_exports_is_bounded() {
    let mut card = licensing_card(SEED, 0);
    for n in 0..16u32 {
        let slot = add_license(&mut card, 9000 + n, b"10115");
        export(&mut card, slot);
    }
    let slot = add_license(&mut card, 9100, b"10115");
    refused_unchanged(
        &mut card,
        &psd_apdu::export_prepare(RegisterSetIndex(slot)),
        Status::ExportTableFull,
    );
    // An exported license cannot be granted again on this PSD.
    let ask = LicenseAsk {
        license: LicenseId(9000),
        origin: PostalCode::new(b"10115").unwrap(),
    };
    refused_unchanged(
        &mut card,
        &psd_apdu::license_request(&ask, false),
        Status::LicenseExists,
    );
}

#[test]
fn import_into_a_full_psd_keeps_the_file_valid() {
    let mut card = licensing_card(SEED, 0);
    let slot = add_license(&mut card, 9001, b"10115");
    let blob = export(&mut card, slot);
    for n in 0..4 {
        add_license(&mut card, 9010 + n, b"10115");
    }
    refused_unchanged(
        &mut card,
        &psd_apdu::import_set(&blob),
        Status::NotEnoughMemory,
    );
    let out = export(&mut card, 0);
    assert!(!out.is_empty());
    expect_ok(&card.transmit(&psd_apdu::import_set(&blob)));
}

/// Σ control sums of the resident sets + Σ those of the outstanding and retired exports:
/// what the PSD answers for (a retired entry until the back office booked its receipt and
/// the host forgot it). Constant through every license command, cut or not.
fn value(card: &mut TestCard) -> u64 {
    let info = license_info(card);
    let resident: u64 = (0..info.slots.len())
        .filter(|i| info.slots[*i] != SlotInfo::Free)
        .map(|i| registers(card, u8::try_from(i).unwrap()).control_sum.0)
        .sum();
    let outstanding: u64 = info
        .exports
        .iter()
        .filter(|e| e.state != ExportState::Preparing)
        .map(|e| e.control_sum.0)
        .sum();
    resident + outstanding
}

/// How many resident sets hold `license` (0 or 1, never 2).
fn copies(card: &mut TestCard, license: u32) -> usize {
    license_info(card)
        .slots
        .iter()
        .filter(|s| matches!(s, SlotInfo::Set { license: l, .. } if l.0 == license))
        .count()
}

/// Cuts power at every write of `apdu` (clean and torn) on cards re-opened from `base`;
/// after each cut the value is what it was, at most one copy of `license` is resident,
/// and re-sending the command completes (or says it already did: `done`).
fn tear(base: &TestCard, apdu: &[u8], license: u32, done: Option<Status>) -> usize {
    let nvm = base.store().nvm().clone();
    let expected = value(&mut reopen(&nvm, SEED));
    sweep_cuts(
        &nvm,
        SEED,
        |_| {},
        apdu,
        |resp, mut card, label| {
            assert!(
                psd_apdu::sw(resp) == 0 || resp.len() == 2,
                "{label}: a cut command answers nothing"
            );
            assert_eq!(value(&mut card), expected, "{label}: value conserved");
            assert!(copies(&mut card, license) <= 1, "{label}: one copy at most");
            let sw = psd_apdu::sw(&card.transmit(apdu));
            assert!(
                sw == 0x9000 || done.is_some_and(|s| s.sw() == sw),
                "{label}: the retry completes, got {sw:04X}"
            );
            assert_eq!(value(&mut card), expected, "{label}: value after the retry");
            assert!(
                copies(&mut card, license) <= 1,
                "{label}: one copy after the retry"
            );
        },
    )
}

#[test]
fn power_cut_at_every_write_of_every_license_command_conserves_value() {
    let mut cuts = 0;
    // LICENSE REQUEST.
    let mut card = licensing_card(SEED, 1);
    fund(&mut card, 0, 2_000, 1);
    let ask = LicenseAsk {
        license: LicenseId(9001),
        origin: PostalCode::new(b"10115").unwrap(),
    };
    cuts += tear(&card, &psd_apdu::license_request(&ask, false), 9001, None);
    // LICENSE INSTALL: the pending key and its set never both exist nor both vanish.
    let request = request_license(&mut card, 9001, b"10115");
    let install = psd_apdu::license_install(&grant(&request, 9001, &serial_for(9001)));
    let nvm = card.store().nvm().clone();
    cuts += sweep_cuts(
        &nvm,
        SEED,
        |_| {},
        &install,
        |_, mut c, label| {
            let info = license_info(&mut c);
            assert_ne!(
                info.pending.is_some(),
                copies(&mut c, 9001) == 1,
                "{label}: pending request xor installed set"
            );
        },
    );
    cuts += tear(&card, &install, 9001, Some(Status::GrantAlreadyUsed));
    expect_ok(&card.transmit(&install));
    fund(&mut card, 1, 3_000, 2);
    // EXPORT SET: prepare, commit, cancel.
    let prepare = psd_apdu::export_prepare(RegisterSetIndex(1));
    cuts += tear(&card, &prepare, 9001, None);
    let blob = expect_ok(&card.transmit(&prepare));
    let commit = psd_apdu::export_commit(RegisterSetIndex(1), &Blob::digest_of(&blob));
    cuts += tear(&card, &commit, 9001, None);
    // A cancel that did happen has nothing left to cancel: `6985`.
    cuts += tear(
        &card,
        &psd_apdu::export_cancel(RegisterSetIndex(1)),
        9001,
        Some(Status::ConditionsNotSatisfied),
    );
    expect_ok(&card.transmit(&commit));
    // IMPORT SET: back exactly once.
    cuts += tear(
        &card,
        &psd_apdu::import_set(&blob),
        9001,
        Some(Status::ExportNotOutstanding),
    );
    // RETIRE SET: the outstanding entry is retired exactly once (the retry answers the same
    // receipt); forget: the entry is there or gone, never half.
    let epoch = license_info(&mut card).exports[0].epoch;
    let retire = psd_apdu::retire_set(epoch);
    cuts += tear(&card, &retire, 9001, None);
    let receipt = expect_ok(&card.transmit(&retire));
    let forget = psd_apdu::forget_retired(epoch);
    let nvm = card.store().nvm().clone();
    cuts += sweep_cuts(
        &nvm,
        SEED,
        |_| {},
        &forget,
        |_, mut c, label| {
            let states: Vec<_> = license_info(&mut c)
                .exports
                .iter()
                .map(|e| e.state)
                .collect();
            assert!(
                states.is_empty() || states == [ExportState::Retired],
                "{label}: {states:?}"
            );
            if !states.is_empty() {
                assert_eq!(
                    expect_ok(&c.transmit(&retire)),
                    receipt,
                    "{label}: same receipt"
                );
            }
            expect_ok(&c.transmit(&forget));
            assert!(
                license_info(&mut c).exports.is_empty(),
                "{label}: forgotten"
            );
        },
    );
    println!("license commands: {cuts} power cuts checked");
    assert!(cuts >= 14);
}

#[test]
fn a_set_with_a_transfer_pending_cannot_be_exported() {
    use openpsd_tests::purse::{funded_psd, purse, run_until};
    let mut psd = funded_psd(SEED, 10_000);
    let mut card = purse(SEED + 1);
    // Steps up to TRANSFER DEBIT: the PSD debited 400 and waits for the purse's answer.
    run_until(&mut psd, &mut card, 400, 9);
    assert_eq!(registers(&mut psd, 0).pending, Amount(400));
    refused_unchanged(
        &mut psd,
        &psd_apdu::export_prepare(RegisterSetIndex(0)),
        Status::TransferPending,
    );
    // The other set has nothing pending: it may go.
    expect_ok(&psd.transmit(&psd_apdu::export_prepare(RegisterSetIndex(1))));
}

#[test]
fn a_grant_for_another_origin_or_for_license_zero_is_refused() {
    let mut card = licensing_card(SEED, 0);
    let request = request_license(&mut card, 0, b"10115");
    // Signed by both over this device, key and nonce, but for another town.
    let mut elsewhere = request.clone();
    elsewhere.body.origin = PostalCode::new(b"80331").unwrap();
    let install = grant(&elsewhere, 9001, &serial_for(9001));
    refused_unchanged(
        &mut card,
        &psd_apdu::license_install(&install),
        Status::WrongData,
    );
    // License 0 means "the PA numbers it": never a license of its own.
    let zero = grant(&request, 0, &serial_for(1));
    refused_unchanged(
        &mut card,
        &psd_apdu::license_install(&zero),
        Status::WrongData,
    );
    expect_ok(&card.transmit(&psd_apdu::license_install(&grant(
        &request,
        77,
        &serial_for(77),
    ))));
}

#[test]
fn a_lost_indicium_reply_is_answered_again_after_an_export_and_import() {
    let mut card = licensing_card(SEED, 0);
    let slot = add_license(&mut card, 9001, b"10115");
    fund(&mut card, slot, 5_000, 1);
    let req = request_at(41, 150, 22, b"10115");
    let first = expect_ok(&card.transmit(&psd_apdu::issue_indicium(RegisterSetIndex(slot), &req)));
    let blob = export(&mut card, slot);
    let slot = expect_ok(&card.transmit(&psd_apdu::import_set(&blob)))[0];
    let again = expect_ok(&card.transmit(&psd_apdu::issue_indicium(RegisterSetIndex(slot), &req)));
    assert_eq!(again, first, "the same indicium");
    assert_eq!(registers(&mut card, slot).dr, Amount(4_850), "debited once");
}

/// The same with the nonce pool filled: the indicium was signed with a random nonce, so only
/// the signature the blob carries (version 3) lets the importing PSD answer the same bytes
/// (found by the 1-hour run of the `card_handle` fuzz target).
#[test]
fn a_lost_indicium_reply_signed_from_the_nonce_pool_is_answered_again_after_an_import() {
    use openpsd_core::psd::license::export::BLOB_TAG_SIGNED;
    let mut card = licensing_card(SEED, 0);
    let slot = add_license(&mut card, 9001, b"10115");
    fund(&mut card, slot, 5_000, 1);
    assert!(card.idle(), "the idle PSD fills its nonce pool");
    let req = request_at(41, 150, 22, b"10115");
    let first = expect_ok(&card.transmit(&psd_apdu::issue_indicium(RegisterSetIndex(slot), &req)));
    let blob = export(&mut card, slot);
    assert!(
        blob.starts_with(BLOB_TAG_SIGNED),
        "the blob carries the signature"
    );
    let carried = Blob::decode(&blob).unwrap().set.last_signature;
    assert_eq!(
        carried.as_ref().map(|s| &s[..]),
        first.get(first.len() - 64..)
    );
    let slot = expect_ok(&card.transmit(&psd_apdu::import_set(&blob)))[0];
    // An empty pool would sign again with RFC 6979's nonce: other bytes than the first.
    let again = expect_ok(&card.transmit(&psd_apdu::issue_indicium(RegisterSetIndex(slot), &req)));
    assert_eq!(again, first, "the same indicium, signature and all");
    assert_eq!(registers(&mut card, slot).dr, Amount(4_850), "debited once");
    // A version 3 file whose carried signature was edited fails its seal: refused.
    let blob = export(&mut card, slot);
    let carried = Blob::decode(&blob).unwrap().set.last_signature.unwrap();
    let at = blob.windows(64).position(|w| w == carried).unwrap();
    let mut edited = blob.clone();
    edited[at + 10] ^= 1;
    assert!(Blob::decode(&edited).is_ok(), "still a well-formed file");
    let refused = card.transmit(&psd_apdu::import_set(&edited));
    assert_ne!(
        refused[refused.len() - 2..],
        [0x90, 0x00],
        "an edited file is refused"
    );
    expect_ok(&card.transmit(&psd_apdu::import_set(&blob)));
}

/// RETIRE SET (the write-off of a lost file, the withdrawal of a replaced PSD's set): an
/// outstanding export is given up once, with a receipt the device key signed; no copy of
/// its file is ever imported again; forget frees the entry.
#[test]
fn a_retired_export_never_comes_back_and_its_receipt_is_signed() {
    use openpsd_core::psd::license::retire::Receipt;
    let mut card = licensing_card(SEED, 0);
    let slot = add_license(&mut card, 9001, b"10115");
    fund(&mut card, slot, 5_000, 1);
    expect_ok(&card.transmit(&psd_apdu::issue_indicium(
        RegisterSetIndex(slot),
        &request_at(1, 1_200, 22, b"10115"),
    )));
    // Not exported yet: nothing to retire; prepared only: the set is still resident.
    refused_unchanged(
        &mut card,
        &psd_apdu::retire_set(1),
        Status::ExportNotOutstanding,
    );
    let blob = expect_ok(&card.transmit(&psd_apdu::export_prepare(RegisterSetIndex(slot))));
    refused_unchanged(
        &mut card,
        &psd_apdu::retire_set(1),
        Status::ConditionsNotSatisfied,
    );
    expect_ok(&card.transmit(&psd_apdu::export_commit(
        RegisterSetIndex(slot),
        &Blob::digest_of(&blob),
    )));
    // Malformed: not an epoch.
    refused_unchanged(
        &mut card,
        &openpsd_core::client::command(0x80, 0x4C, 0, 0, &[1, 2, 3], 256),
        Status::WrongLength,
    );
    refused_unchanged(
        &mut card,
        &openpsd_core::client::command(0x80, 0x4C, 2, 0, &1u64.to_be_bytes(), 256),
        Status::IncorrectP1P2,
    );

    let bytes = expect_ok(&card.transmit(&psd_apdu::retire_set(1)));
    assert_eq!(bytes.len(), Receipt::LEN);
    assert_eq!(Receipt::LEN, 138, "docs/apdu.md §4.23");
    let receipt = Receipt::decode(&bytes).unwrap();
    assert_eq!(receipt.license, LicenseId(9001));
    assert_eq!(receipt.epoch, 1);
    assert_eq!(
        (receipt.control_sum, receipt.dr),
        (Amount(5_000), Amount(3_800))
    );
    assert_eq!(receipt.digest, Blob::digest_of(&blob));
    assert!(receipt.verify(&device_public_key(&mut card)));
    let mut forged = receipt.clone();
    forged.dr = Amount(4_000);
    assert!(!forged.verify(&device_public_key(&mut card)));
    // Asked again: the same bytes. The file never comes back, and its export is not
    // committed again (that would make the entry outstanding, and the file importable).
    assert_eq!(expect_ok(&card.transmit(&psd_apdu::retire_set(1))), bytes);
    refused_unchanged(
        &mut card,
        &psd_apdu::export_commit(RegisterSetIndex(slot), &Blob::digest_of(&blob)),
        Status::ConditionsNotSatisfied,
    );
    refused_unchanged(
        &mut card,
        &psd_apdu::import_set(&blob),
        Status::ExportNotOutstanding,
    );
    // Still listed (retired) until forgotten; the license is not installed meanwhile.
    assert_eq!(
        license_info(&mut card).exports[0].state,
        ExportState::Retired
    );
    expect_ok(&card.transmit(&psd_apdu::forget_retired(1)));
    assert!(license_info(&mut card).exports.is_empty());
    expect_ok(&card.transmit(&psd_apdu::forget_retired(1)));
    refused_unchanged(
        &mut card,
        &psd_apdu::import_set(&blob),
        Status::ExportNotOutstanding,
    );
    // An outstanding (not retired) entry is not forgotten.
    let slot = add_license(&mut card, 9002, b"10115");
    export(&mut card, slot);
    let epoch = license_info(&mut card).exports[0].epoch;
    refused_unchanged(
        &mut card,
        &psd_apdu::forget_retired(epoch),
        Status::ConditionsNotSatisfied,
    );
}

/// A PSD personalized without the postal authority, whose only set was exported and
/// retired: its last entry cannot be forgotten (it could never hold a set again), and the
/// PSD still opens.
#[test]
fn the_last_entry_of_a_psd_without_the_postal_authority_stays() {
    let mut card = purse::funded_psd(SEED, 2_000);
    // The second set goes first: forgotten, as the first set stays.
    let blob = export(&mut card, 1);
    let epoch = Blob::decode(&blob).unwrap().epoch;
    expect_ok(&card.transmit(&psd_apdu::retire_set(epoch)));
    expect_ok(&card.transmit(&psd_apdu::forget_retired(epoch)));
    let blob = export(&mut card, 0);
    let epoch = Blob::decode(&blob).unwrap().epoch;
    expect_ok(&card.transmit(&psd_apdu::retire_set(epoch)));
    refused_unchanged(
        &mut card,
        &psd_apdu::forget_retired(epoch),
        Status::ConditionsNotSatisfied,
    );
    let nvm = card.store().nvm().clone();
    let mut again = reopen(&nvm, SEED);
    assert_eq!(
        license_info(&mut again).exports[0].state,
        ExportState::Retired
    );
}
