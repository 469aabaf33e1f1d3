//! The outside signer's API natively (`cargo test -p openpsd-wasm --features webcrypto
//! --test webcrypto`): a PSD personalized with an outside key, an indicium left pending,
//! retried, signed outside (p256, standing in for WebCrypto) and stored; wrong signatures
//! refused with the card's status word and nothing changed.
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use openpsd_core::psd::indicium;
use openpsd_tests::outside::{sign, signer_public_key};
use openpsd_wasm::personalize::{build_personalization, demo_kms_refill};
use openpsd_wasm::views::{IndiciumArgs, LicenseArg, PersonalizationArgs};
use openpsd_wasm::PsdDevice;

const TODAY: &str = "2026-11-21";
const KMS_KEY_HEX: &str = "1111111111111111111111111111111111111111111111111111111111111111";

fn outside_funded() -> PsdDevice {
    let kms = openpsd_core::crypto::IndiciumKey::from_bytes(&[0x11; 32]).unwrap();
    let args = PersonalizationArgs {
        licenses: vec![LicenseArg {
            license: 4711,
            origin: "10115".into(),
        }],
        max_postage: "100.00".into(),
        max_dr: "10000.00".into(),
        inspection_days: 0,
        device_id: Some(hex::encode(b"PSD00001")),
        kms_public_key: Some(hex::encode(kms.public_key())),
        vendor_public_key: None,
    };
    let built = build_personalization(&args, &[9; 32]).unwrap();
    let mut psd = PsdDevice::create_outside(
        &signer_public_key(),
        &built.personalization.0,
        &[1; 32],
        Some(TODAY),
    )
    .unwrap();
    let audit = psd.audit(b"server-nonce-123", 0).unwrap();
    let device_key = psd.info().unwrap().public_key;
    let msg = demo_kms_refill(KMS_KEY_HEX, &device_key, &audit, "50.00", None).unwrap();
    psd.apply_refill(&msg, 0).unwrap();
    psd
}

fn piece(txn: &str) -> IndiciumArgs {
    IndiciumArgs {
        postage: "0.85".into(),
        date: TODAY.into(),
        rate: 1,
        origin: "10115".into(),
        destination: "20095".into(),
        transaction_id: Some(txn.into()),
        set: None,
    }
}

#[test]
fn pending_retry_sign_store_retry() {
    let mut psd = outside_funded();
    let pk = signer_public_key();
    let first = psd.issue_unsigned(&piece("0000000000000001"), &pk).unwrap();
    assert!(first.pending);
    assert!(first.signature.0.is_empty() && first.barcode.0.is_empty());
    assert_eq!(first.registers.dr, "49.15", "debited before any signature");
    // A retry (the page died before signing): same bytes, debited once; the state saved
    // now and restored gives the same.
    let again = psd.issue_unsigned(&piece("0000000000000001"), &pk).unwrap();
    assert_eq!(again, first);
    let saved = psd.save_state().unwrap();
    let mut psd = PsdDevice::restore(&saved, &[2; 32], Some(TODAY)).unwrap();
    assert_eq!(
        psd.issue_unsigned(&piece("0000000000000001"), &pk).unwrap(),
        first
    );
    // Another transaction waits; a wrong signature is the card's 9A0A.
    let e = psd
        .issue_unsigned(&piece("0000000000000002"), &pk)
        .unwrap_err();
    assert_eq!((e.kind.name(), e.sw), ("CardError", Some(0x9A09)));
    let e = psd
        .store_signature(0, "0000000000000001", &sign(b"other bytes"), &pk)
        .unwrap_err();
    assert_eq!(e.sw, Some(0x9A0A));
    let e = psd
        .store_signature(0, "0000000000000001", &[0; 10], &pk)
        .unwrap_err();
    assert_eq!(e.kind.name(), "InputError");

    let sig = sign(&first.payload.0);
    let signed = psd
        .store_signature(0, "0000000000000001", &sig, &pk)
        .unwrap();
    assert_eq!(signed.payload.0, first.payload.0);
    assert_eq!(signed.signature.0, sig);
    indicium::verify(&signed.barcode.0, &pk).expect("verifies under the outside key");
    assert_eq!(signed.registers.dr, "49.15");
    // The retry after the store answers the signed indicium.
    let after = psd.issue_unsigned(&piece("0000000000000001"), &pk).unwrap();
    assert!(!after.pending);
    assert_eq!(after.barcode.0, signed.barcode.0);
}

#[test]
fn a_bad_signer_key_is_an_input_error() {
    let Err(e) = PsdDevice::create_outside(&[4; 64], &[2], &[1; 32], None) else {
        panic!("a 64-byte key was taken");
    };
    assert_eq!(e.kind.name(), "InputError");
}

/// The typed `issueIndicium` expects a signed answer: on a set signed outside it is refused
/// before ISSUE INDICIUM is sent (an input error naming `issueUnsigned`), nothing debited,
/// before and after a save and restore; the same transaction then goes through
/// `issueUnsigned` as the first debit.
#[test]
fn issue_indicium_refused_before_the_debit() {
    let mut psd = outside_funded();
    let before = psd.registers(0).unwrap();
    let e = psd.issue_indicium(&piece("0000000000000001")).unwrap_err();
    assert_eq!((e.kind.name(), e.sw), ("InputError", None));
    assert!(e.message.contains("issueUnsigned"), "{}", e.message);
    assert_eq!(psd.registers(0).unwrap(), before, "nothing debited");
    let saved = psd.save_state().unwrap();
    let mut psd = PsdDevice::restore(&saved, &[2; 32], Some(TODAY)).unwrap();
    let e = psd.issue_indicium(&piece("0000000000000001")).unwrap_err();
    assert_eq!(e.kind.name(), "InputError");
    assert_eq!(psd.registers(0).unwrap(), before, "nothing debited");
    let first = psd
        .issue_unsigned(&piece("0000000000000001"), &signer_public_key())
        .unwrap();
    assert!(first.pending);
    assert_eq!(first.registers.dr, "49.15", "one debit, by issueUnsigned");
}
