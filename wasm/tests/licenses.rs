//! The license commands of the JS API (seed 003), natively: request, install with a grant
//! signed as the back office's postal authority and manufacturer sign it, the slots and
//! their balances, export in two phases, import once, and the refusals as `CardError`s
//! with their status words.
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(not(target_arch = "wasm32"))]

use openpsd_core::psd::license::request::LicenseRequest;
use openpsd_tests::licenses::{grant, licensing_personalization, serial_for};
use openpsd_wasm::views::IndiciumArgs;
use openpsd_wasm::{ErrorKind, PsdDevice};

const TODAY: &str = "2026-11-21";

/// A PSD personalized with the postal authority block and one set of its own (slot 0).
fn licensing_psd() -> PsdDevice {
    let p = licensing_personalization(1);
    PsdDevice::create(&p.encode(), &[7; 32], Some(TODAY)).unwrap()
}

/// The grant for the PSD's request (hex, as the page gets it from the meter server).
fn grant_hex(request_hex: &str, license: u32) -> String {
    let request = LicenseRequest::decode(&hex::decode(request_hex).unwrap()).unwrap();
    hex::encode(grant(&request, license, &serial_for(license)).encode())
}

/// An indicium request on `set` (license origin 10115).
fn indicium_on(set: u8) -> IndiciumArgs {
    IndiciumArgs {
        postage: "0.85".into(),
        date: TODAY.into(),
        rate: 1,
        origin: "10115".into(),
        destination: "20095".into(),
        transaction_id: None,
        set: Some(set),
    }
}

fn card_sw(e: &openpsd_wasm::ApiError) -> Option<String> {
    assert_eq!(e.kind, ErrorKind::Card, "{e}");
    e.sw_hex()
}

#[test]
fn request_install_export_and_import_once() {
    let mut psd = licensing_psd();
    let before = psd.licenses().unwrap();
    assert_eq!(before.slots.len(), 4);
    assert_eq!(before.slots[0].license, Some(4711), "the personalized set");
    assert_eq!(before.slots[0].valid_until, None);
    assert_eq!(before.slots[1].license, None, "free");
    assert!(before.pending.is_none() && before.exports.is_empty());

    // Request: the same again answers the same bytes; the PSD keeps it pending.
    let request = psd.license_request("10115", 0, false).unwrap();
    assert_eq!(psd.license_request("10115", 0, false).unwrap(), request);
    assert_eq!(psd.licenses().unwrap().pending, Some(0));

    // Install: a new set in the first free slot, with its own registers.
    let install = grant_hex(&request, 9001);
    let installed = psd.license_install(&install).unwrap();
    assert_eq!((installed.slot, installed.license), (1, 9001));
    let r = psd.registers(1).unwrap();
    assert_eq!(
        (r.license, r.dr.as_str(), r.origin.as_str()),
        (9001, "0.00", "10115")
    );
    let e = psd.license_install(&install).unwrap_err();
    assert_eq!(card_sw(&e).as_deref(), Some("9A32"), "a grant is used once");
    let l = psd.licenses().unwrap();
    let s = &l.slots[1];
    assert_eq!((s.license, s.frozen), (Some(9001), false));
    assert_eq!(s.key_id.as_deref(), Some(installed.key_id.as_str()));
    assert_eq!(s.valid_until.as_deref(), Some("2027-10-31"));
    assert!(l.pending.is_none());

    // Export, phase 1: frozen, the same bytes again; phase 2: the slot is free.
    let blob = psd.export_prepare(1).unwrap();
    assert_eq!(psd.export_prepare(1).unwrap(), blob);
    let l = psd.licenses().unwrap();
    assert!(l.slots[1].frozen);
    let prepared = l.exports[0].clone();
    assert!(prepared.preparing && prepared.license == 9001 && prepared.slot == 1);
    let e = psd.issue_indicium(&indicium_on(1)).unwrap_err();
    assert_eq!(
        card_sw(&e).as_deref(),
        Some("9A34"),
        "a frozen set does not print"
    );
    let epoch = psd.export_commit(1, &blob).unwrap();
    assert_eq!(epoch, prepared.epoch);
    let l = psd.licenses().unwrap();
    assert_eq!(l.slots[1].license, None);
    assert_eq!(l.exports.len(), 1);
    let x = &l.exports[0];
    assert_eq!((x.license, x.preparing, x.slot), (9001, false, 1));
    assert_eq!((x.epoch.as_str(), x.dr.as_str()), (epoch.as_str(), "0.00"));

    // The export survives a save and restore of the PSD (the table is in its store).
    let saved = psd.save_state().unwrap();
    let mut psd = PsdDevice::restore(&saved, &[8; 32], Some(TODAY)).unwrap();
    assert_eq!(psd.licenses().unwrap().exports.len(), 1);

    // Import: back in slot 1, the entry consumed; the same file again is 9A33.
    assert_eq!(psd.import_set(&blob).unwrap(), 1);
    assert_eq!(psd.registers(1).unwrap().license, 9001);
    assert!(psd.licenses().unwrap().exports.is_empty());
    let e = psd.import_set(&blob).unwrap_err();
    assert_eq!(card_sw(&e).as_deref(), Some("9A33"));
    assert!(
        e.message.contains("older or duplicate copy"),
        "{}",
        e.message
    );
    assert_eq!(
        psd.licenses().unwrap().slots[1].license,
        Some(9001),
        "nothing changed"
    );
}

#[test]
fn refusals_are_errors_with_nothing_written() {
    let mut psd = licensing_psd();
    // What is not hex never reaches the card; the card judges the layout of the rest.
    for bad in ["", "zz", "0"] {
        let e = psd.license_install(bad).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Input, "{bad:?}: {e}");
    }
    for (bad, sw) in [("00", "6A80"), ("0102", "6700")] {
        let e = psd.license_install(bad).unwrap_err();
        assert_eq!(card_sw(&e).as_deref(), Some(sw), "{bad:?}");
    }
    assert!(psd.licenses().unwrap().pending.is_none(), "nothing written");
    let e = psd.license_request("not a code!", 0, false).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Input);
    // The card's refusals: a free slot, slot 0 of another PSD's file, garbage.
    assert_eq!(
        card_sw(&psd.export_prepare(2).unwrap_err()).as_deref(),
        Some("6A88")
    );
    let e = psd.import_set(&[1, 2, 3]).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Card, "{e}");
    assert!(psd.export_cancel(0).is_err(), "no export prepared");
    // Cancel unfreezes; the set prints again.
    psd.export_prepare(0).unwrap();
    assert!(psd.licenses().unwrap().slots[0].frozen);
    psd.export_cancel(0).unwrap();
    let l = psd.licenses().unwrap();
    assert!(!l.slots[0].frozen && l.exports.is_empty());
}

#[test]
fn a_psd_without_the_postal_authority_says_so() {
    let mut p = licensing_personalization(1);
    p.postal_authority = None;
    let mut psd = PsdDevice::create(&p.encode(), &[7; 32], Some(TODAY)).unwrap();
    let e = psd.license_request("10115", 0, false).unwrap_err();
    assert_eq!(card_sw(&e).as_deref(), Some("9A37"));
}
