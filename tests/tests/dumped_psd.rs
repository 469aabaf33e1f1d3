//! A PSD whose whole memory is known — every key its device record holds, read out of the
//! dump — cannot make any *other* device accept a refill or a receipt, nor make the key
//! management system vouch for another device's audit (issue 12). Each attempt is refused
//! and no value moves. Recognition and transfers with a dumped key are in
//! `recognition.rs` (a thief's key opens no other device's session).
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use openpsd_core::client::psd_apdu;
use openpsd_core::crypto::IndiciumKey;
use openpsd_core::psd::audit::AuditData;
use openpsd_core::psd::device::{Device, Recognition, RefillKey};
use openpsd_core::psd::receipt::Receipt;
use openpsd_core::psd::refill::RefillCombination;
use openpsd_core::records;
use openpsd_core::store::Store;
use openpsd_core::types::{Amount, DeviceId, RegisterSetIndex};
use openpsd_core::Status;
use openpsd_tests::purse::{funded_psd_as, psd_personalization, SCHEME};
use openpsd_tests::{device_public_key, expect_ok, expect_refused, registers, Kms, TestCard};

const SET0: RegisterSetIndex = RegisterSetIndex(0);

/// Two funded PSDs of the scheme: the thief's (`PSDTHIEF`) and a victim (`PSDVICTM`).
fn two_psds() -> (TestCard, TestCard) {
    let mut p = psd_personalization(SCHEME);
    p.device = DeviceId(*b"PSDTHIEF");
    let thief = funded_psd_as(41, p.clone(), 0);
    p.device = DeviceId(*b"PSDVICTM");
    let victim = funded_psd_as(42, p, 0);
    (fund(thief, 10_000), fund(victim, 10_000))
}

fn fund(mut psd: TestCard, amount: u64) -> TestCard {
    let msg = Kms::new().refill_for(&mut psd, SET0, Amount(amount), [1; 8]);
    expect_ok(&psd.transmit(&psd_apdu::refill(SET0, &msg)));
    psd
}

/// Every private key the thief's device record holds (its dump), and the public refill key.
fn dump(psd: &TestCard) -> (Vec<IndiciumKey>, [u8; 65]) {
    let rec = psd
        .store()
        .read(records::psd::DEVICE)
        .unwrap()
        .expect("device record");
    let d = Device::decode(&rec).unwrap();
    let mut keys = vec![d.key.clone()];
    if let Some(Recognition::Certified { key, .. }) = d.scheme.map(|s| s.recognition) {
        keys.push(key);
    }
    let RefillKey::Kms(kms) = d.refill_key else {
        panic!("a new PSD holds the KMS's public key")
    };
    (keys, kms)
}

#[test]
fn a_dumped_psd_signs_no_refill_or_receipt_another_psd_accepts() {
    let (mut thief, mut victim) = two_psds();
    let (keys, kms_public) = dump(&thief);
    assert_eq!(keys.len(), 2, "the indicium key and the recognition key");
    // The dump holds the KMS's public key only: no private key of it is in the device.
    assert!(keys.iter().all(|k| k.public_key() != kms_public));

    let before = registers(&mut victim, 0);
    let audit = Kms::new().audit(&mut victim, SET0, [7; 16]);
    let combination = RefillCombination {
        device: audit.device,
        license: audit.license,
        amount: Amount(50_000),
        control_sum: audit.control_sum,
        refills: audit.refills,
        combination_id: [9; 8],
    };
    let receipt = Receipt {
        device: audit.device,
        nonce: audit.nonce,
        accepted_on: openpsd_core::types::Date::new(2026, 11, 21).unwrap(),
    };
    for key in &keys {
        expect_refused(
            &victim.transmit(&psd_apdu::refill(SET0, &combination.sign(key))),
            Status::SecurityStatusNotSatisfied,
        );
        expect_refused(
            &victim.transmit(&psd_apdu::receipt(&receipt.sign(key))),
            Status::SecurityStatusNotSatisfied,
        );
        // Nor on the thief's own device: only the KMS credits it.
        let own = Kms::new().combination_for(&mut thief, SET0, Amount(50_000), [8; 8]);
        expect_refused(
            &thief.transmit(&psd_apdu::refill(SET0, &own.sign(key))),
            Status::SecurityStatusNotSatisfied,
        );
    }
    assert_eq!(registers(&mut victim, 0), before, "no value moved");
    assert_eq!(registers(&mut thief, 0).control_sum, Amount(10_000));
}

#[test]
fn a_dumped_psd_makes_no_audit_the_kms_takes_for_another_device() {
    let (thief, mut victim) = two_psds();
    let (keys, _) = dump(&thief);
    let victim_key = device_public_key(&mut victim);
    let honest = Kms::new().audit(&mut victim, SET0, [3; 16]);
    // The thief claims the victim spent nothing and holds a large DR.
    let forged = AuditData {
        ar: Amount::ZERO,
        dr: Amount(1_000_000),
        control_sum: Amount(1_000_000),
        ..honest
    };
    for key in &keys {
        assert!(
            AuditData::open(&forged.sign(key), &victim_key).is_none(),
            "an audit signed with the thief's key does not verify as the victim's"
        );
    }
}
