//! Frozen fixture: a certificate meter record of version 2 (revocation held, validity in
//! whole days), as PSDs wrote it before validity to the second (version 3).
//! `tests/state/v4/certmeter_v2.records` holds every record of an in-process PSD (device,
//! register sets, CERTMETER v2: a postmark key activated, one postmark issued, then the key
//! revoked by a CA order) as `id u16 ‖ length u32 ‖ bytes`, one after the other. The test
//! checks the record is version 2, that a PSD loads it and goes on (the order retried
//! answers the kept confirmation; the revoked key serves nothing; a second key is
//! generated), and that the bytes a PSD writes for such a state are still version 2, byte
//! for byte.
//!
//! The fixture was made once by `generate_certmeter_v2` below (ignored; it refuses to
//! overwrite) with the version-2 encoder of main, unchanged since version 3 was added
//! (version 3 is written only for validities that are not whole days).
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use openpsd_core::client::psd_apdu;
use openpsd_core::crypto::sha256;
use openpsd_core::psd::certmeter::attestation::Purpose;
use openpsd_core::psd::certmeter::postmark::PostmarkRequest;
use openpsd_core::psd::certmeter::revoke::{Reason, RevocationOrder};
use openpsd_core::psd::certmeter::state::{CertMeterState, SlotState};
use openpsd_core::psd::psd_card;
use openpsd_core::records::psd::CERTMETER;
use openpsd_core::store::{MemStore, Store, Write};
use openpsd_core::types::*;
use openpsd_tests::certmeter::*;
use openpsd_tests::*;

const SEED: u64 = 405;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("state/v4/certmeter_v2.records")
}

fn postmark(txn: u64) -> Vec<u8> {
    psd_apdu::issue_postmark(
        RegisterSetIndex(0),
        &PostmarkRequest {
            transaction: TransactionId(txn.to_be_bytes()),
            digest: sha256(b"v2 fixture"),
            nonce: vec![],
        },
    )
}

fn order(certificate: &[u8]) -> Vec<u8> {
    RevocationOrder {
        device: DEVICE,
        slot: 0,
        certificate_hash: sha256(certificate),
        reason: Reason::KeyCompromise,
        counter: 1,
    }
    .sign(&TestCa::standard().order_key())
}

/// A postmark key whose certificate is valid for whole days (2026-01-01 00:00:00 to
/// 2035-12-31 23:59:59), which version 2 holds.
fn activate_whole_days(card: &mut TestCard, device_pk: &[u8; 65]) -> Vec<u8> {
    let ca = TestCa::standard();
    load_table_and_anchor(card, &ca);
    let (_, a) = generate(card, Purpose::Postmark, device_pk);
    let profile = CertProfile {
        valid: (VALID_FROM, VALID_TO - 1),
        ..CertProfile::default()
    };
    let cert = ca.certify(&a.public_key, &profile);
    expect_ok(&card.transmit(&psd_apdu::install_key_certificate(
        a.slot,
        RegisterSetIndex(0),
        &cert,
    )));
    cert
}

#[test]
#[ignore = "writes the fixture once; refuses to overwrite it"]
fn generate_certmeter_v2() {
    let path = fixture();
    assert!(
        !path.exists(),
        "{} exists: never regenerate a fixture",
        path.display()
    );
    let (mut card, device_pk) = certmeter_card(SEED, true);
    let cert = activate_whole_days(&mut card, &device_pk);
    expect_ok(&card.transmit(&postmark(1)));
    expect_ok(&card.transmit(&psd_apdu::revoke_key(RegisterSetIndex(0), &order(&cert))));
    assert_eq!(certmeter_record(&card).unwrap()[0], 2);
    std::fs::write(&path, store_records(&card)).unwrap();
}

#[test]
fn a_version_2_record_loads_and_goes_on() {
    let records = decode_records(&std::fs::read(fixture()).expect("fixture present"));
    let v2 = records
        .iter()
        .find(|(id, _)| *id == CERTMETER)
        .map(|(_, v)| v.clone())
        .expect("a CERTMETER record");
    assert_eq!(v2[0], 2, "the fixture is version 2");
    let st = CertMeterState::decode(&v2).expect("version 2 decodes");
    assert_eq!(st.orders, 1);
    let kept = st
        .last_revocation
        .clone()
        .expect("the confirmation is kept");
    assert_eq!(st.postmarks, 1);
    let slot = st.slots[0].as_ref().unwrap();
    assert_eq!(slot.state, SlotState::Retired);
    assert!(slot.key.is_none(), "the revoked scalar is gone");
    let (from, to) = slot
        .valid
        .expect("the revoked certificate's validity is kept");
    assert_eq!((from % 86_400, (to + 1) % 86_400), (0, 0), "whole days");
    let cert = slot.certificate.clone();
    // Re-encoded as the same version-2 bytes.
    assert_eq!(st.encode(), v2);

    let mut store = MemStore::new();
    let writes: Vec<Write> = records
        .into_iter()
        .map(|(id, v)| Write { id, value: Some(v) })
        .collect();
    store.commit(&writes).unwrap();
    let mut card = psd_card(store, platform(SEED)).expect("the v2 state loads");
    expect_ok(&card.transmit(&psd_apdu::select()));
    // The order retried answers the confirmation kept, changing nothing.
    let again =
        expect_ok(&card.transmit(&psd_apdu::revoke_key(RegisterSetIndex(0), &order(&cert))));
    assert_eq!(again, kept.confirmation);
    assert_eq!(certmeter_record(&card).unwrap(), v2);
    // The revoked key serves nothing; a retry of the fixture's postmark is still the
    // stored one (it was paid before the revocation).
    let refused = card.transmit(&postmark(2));
    assert_ne!(
        psd_apdu::sw(&refused),
        0x9000,
        "a revoked key serves no postmark"
    );
    assert_eq!(
        certmeter_record(&card).unwrap(),
        v2,
        "a refusal changes nothing"
    );
    // A new key in another slot: the record stays version 2 (whole days).
    let device_pk = device_public_key(&mut card);
    activate_whole_days(&mut card, &device_pk);
    expect_ok(&card.transmit(&postmark(3)));
    assert_eq!(certmeter_record(&card).unwrap()[0], 2, "still version 2");
}
