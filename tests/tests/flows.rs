//! The PSD's flows end to end, in-process, as APDU exchanges (SYSTEM.md flows 1-3).
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use openpsd_core::client::psd_apdu;
use openpsd_core::crypto::IndiciumKey;
use openpsd_core::psd::audit::AuditData;
use openpsd_core::psd::device::DeviceInfo;
use openpsd_core::psd::indicium::{self, IndiciumRequest, VerifyError};
use openpsd_core::psd::refill::RefillCombination;
use openpsd_core::store::MemStore;
use openpsd_core::types::*;
use openpsd_core::Status;
use openpsd_tests::*;

const SET0: RegisterSetIndex = RegisterSetIndex(0);
const SET1: RegisterSetIndex = RegisterSetIndex(1);

#[test]
fn personalization_generates_key_inside_and_is_refused_a_second_time() {
    let mut card = blank_card(1);
    let blank = expect_ok(&card.transmit(&psd_apdu::get_data()));
    assert_eq!(DeviceInfo::decode(&blank).unwrap(), None);

    let resp = expect_ok(&card.transmit(&psd_apdu::personalize(&personalization())));
    assert_eq!(resp.len(), 4 + 65);
    let info = DeviceInfo::decode(&expect_ok(&card.transmit(&psd_apdu::get_data())))
        .unwrap()
        .unwrap();
    assert_eq!(info.device, DEVICE);
    assert_eq!(&info.public_key[..], &resp[4..]);
    assert_eq!(info.key_id.0, resp[..4]);
    assert_eq!(info.vendor_public_key, vendor_public_key());
    assert_eq!(
        (info.max_postage, info.max_dr, info.register_sets),
        (MAX_POSTAGE, MAX_DR, 2)
    );

    // Once only: the second attempt changes nothing, not even the key.
    expect_refused(
        &card.transmit(&psd_apdu::personalize(&personalization())),
        Status::ConditionsNotSatisfied,
    );
    let again = DeviceInfo::decode(&expect_ok(&card.transmit(&psd_apdu::get_data())))
        .unwrap()
        .unwrap();
    assert_eq!(again, info);
}

#[test]
fn personalization_with_bad_data_is_refused_and_leaves_a_blank_card() {
    let mut card = blank_card(2);
    let mut p = personalization();
    p.vendor_public_key[10] ^= 0xFF; // not a point on the curve
    expect_refused(
        &card.transmit(&psd_apdu::personalize(&p)),
        Status::WrongData,
    );
    let mut p = personalization();
    p.max_postage = Amount(MAX_DR.0 + 1);
    expect_refused(
        &card.transmit(&psd_apdu::personalize(&p)),
        Status::WrongData,
    );
    let data = personalization().encode();
    let cut = psd_apdu::command(0x80, 0x10, 0, 0, &data[..data.len() - 1], 256);
    expect_refused(&card.transmit(&cut), Status::WrongLength);
    assert_eq!(card.store().writes(), 0, "nothing was written");
    assert_eq!(
        DeviceInfo::decode(&expect_ok(&card.transmit(&psd_apdu::get_data()))).unwrap(),
        None
    );
}

#[test]
fn commands_before_personalization_are_refused() {
    let mut card = blank_card(3);
    expect_refused(
        &card.transmit(&psd_apdu::read_registers(SET0)),
        Status::ConditionsNotSatisfied,
    );
    expect_refused(
        &card.transmit(&psd_apdu::issue_indicium(SET0, &request(1, 100, 21))),
        Status::ConditionsNotSatisfied,
    );
    expect_refused(
        &card.transmit(&psd_apdu::audit(SET0, &[0; 16])),
        Status::ConditionsNotSatisfied,
    );
}

#[test]
fn register_sets_start_at_zero_for_each_license() {
    let (mut card, _) = personalized_card(4);
    for (i, (license, origin)) in LICENSES.iter().enumerate() {
        let r = registers(&mut card, u8::try_from(i).unwrap());
        assert_eq!(r.license, LicenseId(*license));
        assert_eq!(r.origin.as_bytes(), *origin);
        assert_eq!(
            (r.ar, r.dr, r.control_sum, r.pieces, r.refills),
            (
                Amount(0),
                Amount(0),
                Amount(0),
                PieceCount(0),
                RefillCount(0)
            )
        );
    }
    expect_refused(
        &card.transmit(&psd_apdu::read_registers(RegisterSetIndex(2))),
        Status::ReferencedDataNotFound,
    );
}

#[test]
fn indicium_debits_dr_credits_ar_counts_the_piece_and_verifies() {
    let (mut card, pk) = funded_card(5, 50_000);
    let ind = expect_ok(&card.transmit(&psd_apdu::issue_indicium(SET0, &request(1, 85, 21))));
    let d = indicium::verify(&ind, &pk).expect("indicium verifies");
    assert_eq!(d.device, DEVICE);
    assert_eq!(d.license, LicenseId(LICENSES[0].0));
    assert_eq!(
        (d.ar, d.dr, d.pieces, d.postage),
        (Amount(85), Amount(49_915), PieceCount(1), Amount(85))
    );
    assert_eq!(d.date, Date::new(2026, 11, 21).unwrap());
    assert_eq!(d.origin.as_bytes(), b"10115");
    assert_eq!(d.destination.as_bytes(), b"20095");
    assert_eq!(d.rate, RateCategory(1));

    let r = registers(&mut card, 0);
    assert_eq!(
        (r.ar, r.dr, r.control_sum, r.pieces),
        (Amount(85), Amount(49_915), Amount(50_000), PieceCount(1))
    );

    // The verifier refuses a changed byte, a foreign key, and garbage.
    let mut forged = ind.clone();
    forged[30] ^= 1;
    assert_eq!(
        indicium::verify(&forged, &pk),
        Err(VerifyError::BadSignature)
    );
    let (_, other_pk) = personalized_card(99);
    assert_eq!(
        indicium::verify(&ind, &other_pk),
        Err(VerifyError::WrongKey)
    );
    assert_eq!(
        indicium::verify(&ind[..40], &pk),
        Err(VerifyError::Malformed)
    );
}

#[test]
fn indicium_with_insufficient_funds_is_refused_and_registers_unchanged() {
    let (mut card, _) = funded_card(6, 100);
    let before = registers(&mut card, 0);
    expect_refused(
        &card.transmit(&psd_apdu::issue_indicium(SET0, &request(1, 101, 21))),
        Status::InsufficientFunds,
    );
    assert_eq!(registers(&mut card, 0), before);
    // Exactly the balance works; then nothing is left.
    expect_ok(&card.transmit(&psd_apdu::issue_indicium(SET0, &request(2, 100, 21))));
    expect_refused(
        &card.transmit(&psd_apdu::issue_indicium(SET0, &request(3, 1, 21))),
        Status::InsufficientFunds,
    );
    assert_eq!(registers(&mut card, 0).dr, Amount(0));
}

#[test]
fn indicium_limits_dates_and_origin_are_enforced() {
    let (mut card, _) = funded_card(7, 100_000);
    let refuse = |card: &mut TestCard, req, status| {
        let before = registers(card, 0);
        expect_refused(
            &card.transmit(&psd_apdu::issue_indicium(SET0, &req)),
            status,
        );
        assert_eq!(registers(card, 0), before);
    };
    refuse(
        &mut card,
        request(1, MAX_POSTAGE.0 + 1, 21),
        Status::PostageAboveLimit,
    );
    refuse(&mut card, request(2, 0, 21), Status::WrongData);
    let mut other_town = request(3, 100, 21);
    other_town.origin = PostalCode::new(b"99999").unwrap();
    refuse(&mut card, other_town, Status::OriginMismatch);
    refuse(&mut card, request(4, 100, 29), Status::DateTooFarAhead);
    // Backdating: one day behind the clock (2026-11-21) is allowed, two are not.
    refuse(&mut card, request(8, 100, 19), Status::DateBeforeLastUsed);

    expect_ok(&card.transmit(&psd_apdu::issue_indicium(SET0, &request(9, 100, 20))));
    expect_ok(&card.transmit(&psd_apdu::issue_indicium(SET0, &request(5, 100, 22))));
    refuse(&mut card, request(6, 100, 21), Status::DateBeforeLastUsed);
    expect_ok(&card.transmit(&psd_apdu::issue_indicium(SET0, &request(7, 100, 22))));
}

#[test]
fn indicium_retry_with_same_transaction_id_returns_the_same_indicium_debited_once() {
    let (mut card, pk) = funded_card(8, 1_000);
    let first = expect_ok(&card.transmit(&psd_apdu::issue_indicium(SET0, &request(42, 300, 21))));
    let again = expect_ok(&card.transmit(&psd_apdu::issue_indicium(SET0, &request(42, 300, 21))));
    assert_eq!(first, again);
    assert_eq!(indicium::verify(&again, &pk).unwrap().pieces, PieceCount(1));
    assert_eq!(registers(&mut card, 0).dr, Amount(700));
    // The same ID for a different piece is refused.
    expect_refused(
        &card.transmit(&psd_apdu::issue_indicium(SET0, &request(42, 301, 21))),
        Status::TransactionIdReused,
    );
}

#[test]
fn register_sets_account_separately() {
    let (mut card, pk) = funded_card(9, 1_000);
    let kms = Kms::new();
    let msg = kms.refill_for(&mut card, SET1, Amount(2_000), [2; 8]);
    expect_ok(&card.transmit(&psd_apdu::refill(SET1, &msg)));
    let mut req = request(1, 500, 21);
    req.origin = PostalCode::new(LICENSES[1].1).unwrap();
    let ind = expect_ok(&card.transmit(&psd_apdu::issue_indicium(SET1, &req)));
    assert_eq!(
        indicium::verify(&ind, &pk).unwrap().license,
        LicenseId(LICENSES[1].0)
    );
    assert_eq!(registers(&mut card, 0).dr, Amount(1_000));
    assert_eq!(registers(&mut card, 1).dr, Amount(1_500));
}

#[test]
fn audit_is_signed_by_the_device_key_and_reports_the_registers_and_nonce() {
    let (mut card, pk) = funded_card(10, 5_000);
    expect_ok(&card.transmit(&psd_apdu::issue_indicium(SET0, &request(1, 250, 21))));
    let nonce = *b"server-nonce-123";
    let msg = expect_ok(&card.transmit(&psd_apdu::audit(SET0, &nonce)));
    let a = AuditData::open(&msg, &pk).expect("the signature verifies under the device key");
    assert_eq!(
        (a.device, a.license, a.set),
        (DEVICE, LicenseId(4711), SET0)
    );
    assert_eq!(
        (a.ar, a.dr, a.control_sum, a.pieces, a.refills),
        (
            Amount(250),
            Amount(4_750),
            Amount(5_000),
            PieceCount(1),
            RefillCount(1)
        )
    );
    assert_eq!(a.nonce, nonce);
    // Another device's key (here: the KMS's), or a changed byte, does not verify.
    assert!(AuditData::open(&msg, &kms_key().public_key()).is_none());
    let mut changed = msg.clone();
    changed[20] ^= 1;
    assert!(AuditData::open(&changed, &pk).is_none());
    // Whoever holds every key of the back office cannot make this device's audit: the
    // signing key never left the card.
    let short = psd_apdu::command(0x80, 0x50, 0, 0, &[0; 15], 256);
    expect_refused(&card.transmit(&short), Status::WrongLength);
}

#[test]
fn refill_verified_and_credited_once() {
    let (mut card, _) = personalized_card(11);
    let kms = Kms::new();
    let msg = kms.refill_for(&mut card, SET0, Amount(25_00), [3; 8]);
    let data = expect_ok(&card.transmit(&psd_apdu::refill(SET0, &msg)));
    let r = registers(&mut card, 0);
    assert_eq!(
        openpsd_core::psd::registers::Registers::decode(&data).unwrap(),
        r
    );
    assert_eq!(
        (r.dr, r.control_sum, r.refills),
        (Amount(25_00), Amount(25_00), RefillCount(1))
    );

    // Replay of the same message: refused, nothing credited.
    expect_refused(
        &card.transmit(&psd_apdu::refill(SET0, &msg)),
        Status::RefillReplayed,
    );
    assert_eq!(registers(&mut card, 0), r);
}

fn refused_refill(card: &mut TestCard, set: RegisterSetIndex, msg: &[u8], status: Status) {
    let before = (registers(card, 0), registers(card, 1));
    let writes = card.store().writes();
    expect_refused(&card.transmit(&psd_apdu::refill(set, msg)), status);
    assert_eq!(
        (registers(card, 0), registers(card, 1)),
        before,
        "nothing credited"
    );
    assert_eq!(card.store().writes(), writes, "nothing written");
}

#[test]
fn refill_attacks_are_refused_each_with_its_own_status() {
    let (mut card, _) = funded_card(12, 1_000);
    let kms = Kms::new();
    let good = kms.combination_for(&mut card, SET0, Amount(500), [4; 8]);

    // A changed amount breaks the signature.
    let mut msg = good.sign(&kms.key);
    msg[14 + 7] ^= 0x01;
    refused_refill(&mut card, SET0, &msg, Status::SecurityStatusNotSatisfied);
    // Signed by another key (a forger without the KMS's key; here a key of the right
    // shape, as a PSD holder could make).
    refused_refill(
        &mut card,
        SET0,
        &good.sign(&IndiciumKey::from_bytes(&[9; 32]).unwrap()),
        Status::SecurityStatusNotSatisfied,
    );
    // Another device's message (properly signed for it by the KMS).
    let other = RefillCombination {
        device: DeviceId(*b"PSD00002"),
        ..good
    };
    refused_refill(&mut card, SET0, &other.sign(&kms.key), Status::WrongDevice);
    // For set 0's license but applied to set 1.
    refused_refill(
        &mut card,
        SET1,
        &good.sign(&kms.key),
        Status::RefillWrongLicense,
    );
    // Bound to a control sum the device no longer has.
    let stale = RefillCombination {
        control_sum: Amount(999),
        ..good
    };
    refused_refill(&mut card, SET0, &stale.sign(&kms.key), Status::RefillStale);
    // Made for a refill count ahead of the device.
    let ahead = RefillCombination {
        refills: RefillCount(good.refills.0 + 1),
        ..good
    };
    refused_refill(&mut card, SET0, &ahead.sign(&kms.key), Status::RefillStale);
    // Above the DR limit.
    let big = RefillCombination {
        amount: MAX_DR,
        ..good
    };
    refused_refill(
        &mut card,
        SET0,
        &big.sign(&kms.key),
        Status::RefillAboveLimit,
    );
    // A truncated message.
    refused_refill(
        &mut card,
        SET0,
        &good.sign(&kms.key)[..40],
        Status::WrongLength,
    );

    // The genuine one still works, once.
    expect_ok(&card.transmit(&psd_apdu::refill(SET0, &good.sign(&kms.key))));
    assert_eq!(registers(&mut card, 0).dr, Amount(1_500));
    refused_refill(
        &mut card,
        SET0,
        &good.sign(&kms.key),
        Status::RefillReplayed,
    );
}

/// A void (amount zero) and the refill it cancels share their precondition: whichever the
/// card applies first, the other is refused for ever, and the void credits nothing.
#[test]
fn a_void_and_its_refill_apply_at_most_one_of_the_two() {
    let kms = Kms::new();
    for void_first in [true, false] {
        let (mut card, _) = funded_card(13, 1_000);
        let before = registers(&mut card, 0);
        let refill = kms.combination_for(&mut card, SET0, Amount(500), [4; 8]);
        let void = RefillCombination {
            amount: Amount(0),
            combination_id: [5; 8],
            ..refill
        };
        let (first, second) = if void_first {
            (void, refill)
        } else {
            (refill, void)
        };
        expect_ok(&card.transmit(&psd_apdu::refill(SET0, &first.sign(&kms.key))));
        refused_refill(
            &mut card,
            SET0,
            &second.sign(&kms.key),
            Status::RefillReplayed,
        );
        let after = registers(&mut card, 0);
        assert_eq!(after.refills.0, before.refills.0 + 1);
        let audited = kms.audit(&mut card, SET0, [7; 16]);
        assert_eq!(audited.last_combination, first.combination_id);
        assert_eq!(after.dr.0, before.dr.0 + first.amount.0);
        assert_eq!(after.control_sum.0, before.control_sum.0 + first.amount.0);
    }
}

#[test]
fn refill_made_before_an_earlier_refill_landed_is_stale_or_replayed() {
    let (mut card, _) = personalized_card(13);
    let kms = Kms::new();
    // Two combinations made from the same audit: only the first can apply.
    let first = kms.refill_for(&mut card, SET0, Amount(100), [5; 8]);
    let second = kms.refill_for(&mut card, SET0, Amount(200), [6; 8]);
    expect_ok(&card.transmit(&psd_apdu::refill(SET0, &first)));
    refused_refill(&mut card, SET0, &second, Status::RefillReplayed);
    assert_eq!(registers(&mut card, 0).control_sum, Amount(100));
}

#[test]
fn state_survives_power_cycles_and_unreadable_state_is_an_error() {
    let (mut card, pk) = funded_card(14, 10_000);
    expect_ok(&card.transmit(&psd_apdu::issue_indicium(SET0, &request(1, 100, 21))));
    let before = registers(&mut card, 0);

    // Power cycle: selection is volatile, registers are not.
    card.reset();
    expect_refused(
        &card.transmit(&psd_apdu::read_registers(SET0)),
        Status::ConditionsNotSatisfied,
    );
    let mut card = reopen(card.store().nvm(), 14);
    assert_eq!(registers(&mut card, 0), before);
    let ind = expect_ok(&card.transmit(&psd_apdu::issue_indicium(SET0, &request(2, 100, 21))));
    assert_eq!(indicium::verify(&ind, &pk).unwrap().pieces, PieceCount(2));

    // A damaged register set record: the card refuses to start instead of starting blank.
    let mut nvm = card.store().nvm().clone();
    assert!(nvm.corrupt_record(0x0110));
    assert!(MemStore::open(nvm).is_err());
}

fn inspected_card(seed: u64) -> (TestCard, [u8; 65]) {
    let mut card = blank_card(seed);
    let mut p = personalization();
    p.inspection_days = 28;
    let data = expect_ok(&card.transmit(&psd_apdu::personalize(&p)));
    let msg = Kms::new().refill_for(&mut card, SET0, Amount(10_000), [1; 8]);
    expect_ok(&card.transmit(&psd_apdu::refill(SET0, &msg)));
    (card, data[4..].try_into().unwrap())
}

fn receipt(nonce: [u8; 16], day: (u16, u8, u8)) -> Vec<u8> {
    openpsd_core::psd::receipt::Receipt {
        device: DEVICE,
        nonce,
        accepted_on: Date::new(day.0, day.1, day.2).unwrap(),
    }
    .sign(&kms_key())
}

#[test]
fn inspection_overdue_refuses_indicia_until_an_accepted_audit_renews_it() {
    let (mut card, _) = inspected_card(20);
    // Never inspected: no franking.
    let before = registers(&mut card, 0);
    expect_refused(
        &card.transmit(&psd_apdu::issue_indicium(SET0, &request(1, 85, 21))),
        Status::InspectionOverdue,
    );
    assert_eq!(registers(&mut card, 0), before);

    // Audit, receipt for that audit: the PSD records the date and franks again.
    let nonce = *b"inspection-nonce";
    Kms::new().audit(&mut card, SET0, nonce);
    let resp = expect_ok(&card.transmit(&psd_apdu::receipt(&receipt(nonce, (2026, 11, 20)))));
    assert_eq!(resp, [0x07, 0xEA, 11, 20]);
    expect_ok(&card.transmit(&psd_apdu::issue_indicium(SET0, &request(2, 85, 21))));
    let info = DeviceInfo::decode(&expect_ok(&card.transmit(&psd_apdu::get_data())))
        .unwrap()
        .unwrap();
    assert_eq!(
        (info.inspection_days, info.last_inspection),
        (28, Date::new(2026, 11, 20))
    );

    // 28 days after the inspection is still fine; the 29th is not (dates of mailing).
    card.platform_mut().today = None;
    let on = |d: u8| IndiciumRequest {
        date: Date::new(2026, 12, d).unwrap(),
        ..request(u64::from(d) + 100, 10, 21)
    };
    expect_ok(&card.transmit(&psd_apdu::issue_indicium(SET0, &on(18))));
    expect_refused(
        &card.transmit(&psd_apdu::issue_indicium(SET0, &on(19))),
        Status::InspectionOverdue,
    );
}

#[test]
fn receipts_are_accepted_only_for_this_sessions_last_audit_and_genuine() {
    let (mut card, _) = inspected_card(21);
    let nonce = *b"first-audit-nonc";
    let writes = card.store().writes();
    // No audit yet in this session.
    expect_refused(
        &card.transmit(&psd_apdu::receipt(&receipt(nonce, (2026, 11, 21)))),
        Status::ReceiptForOtherAudit,
    );
    Kms::new().audit(&mut card, SET0, nonce);
    // For another audit's nonce; forged; for another device; malformed.
    expect_refused(
        &card.transmit(&psd_apdu::receipt(&receipt([9; 16], (2026, 11, 21)))),
        Status::ReceiptForOtherAudit,
    );
    let mut forged = receipt(nonce, (2026, 11, 21));
    forged[30] ^= 1;
    expect_refused(
        &card.transmit(&psd_apdu::receipt(&forged)),
        Status::SecurityStatusNotSatisfied,
    );
    let other = openpsd_core::psd::receipt::Receipt {
        device: DeviceId(*b"PSD00002"),
        nonce,
        accepted_on: Date::new(2026, 11, 21).unwrap(),
    }
    .sign(&kms_key());
    expect_refused(
        &card.transmit(&psd_apdu::receipt(&other)),
        Status::WrongDevice,
    );
    expect_refused(
        &card.transmit(&psd_apdu::receipt(&forged[..20])),
        Status::WrongLength,
    );
    assert_eq!(
        card.store().writes(),
        writes,
        "nothing written by refused receipts"
    );

    // A reset forgets the audit: the receipt of the audit before it no longer counts.
    card.reset();
    expect_ok(&card.transmit(&psd_apdu::select()));
    expect_refused(
        &card.transmit(&psd_apdu::receipt(&receipt(nonce, (2026, 11, 21)))),
        Status::ReceiptForOtherAudit,
    );

    // Accepted once; the same receipt again names no fresh audit.
    Kms::new().audit(&mut card, SET0, nonce);
    expect_ok(&card.transmit(&psd_apdu::receipt(&receipt(nonce, (2026, 11, 21)))));
    expect_refused(
        &card.transmit(&psd_apdu::receipt(&receipt(nonce, (2026, 11, 21)))),
        Status::ReceiptForOtherAudit,
    );
    // A receipt dated ahead of the device's clock (2026-11-21) is refused.
    Kms::new().audit(&mut card, SET0, nonce);
    expect_refused(
        &card.transmit(&psd_apdu::receipt(&receipt(nonce, (2026, 11, 23)))),
        Status::WrongData,
    );
    // An older date never moves the inspection back.
    Kms::new().audit(&mut card, SET0, nonce);
    assert_eq!(
        expect_ok(&card.transmit(&psd_apdu::receipt(&receipt(nonce, (2026, 10, 1))))),
        [0x07, 0xEA, 11, 21]
    );
}

#[test]
fn audits_name_the_last_refill_combination_applied() {
    let (mut card, _) = personalized_card(22);
    let kms = Kms::new();
    assert_eq!(kms.audit(&mut card, SET0, [1; 16]).last_combination, [0; 8]);
    let msg = kms.refill_for(&mut card, SET0, Amount(500), [0xC7; 8]);
    expect_ok(&card.transmit(&psd_apdu::refill(SET0, &msg)));
    assert_eq!(
        kms.audit(&mut card, SET0, [2; 16]).last_combination,
        [0xC7; 8]
    );
    assert_eq!(
        kms.audit(&mut card, SET1, [3; 16]).last_combination,
        [0; 8],
        "per register set"
    );
}
