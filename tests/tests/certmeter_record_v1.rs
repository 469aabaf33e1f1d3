//! Frozen fixture: a certificate meter record of version 1 (before revocation), as PSDs
//! wrote it before issue 15's second half. `tests/state/v4/certmeter_v1.records` holds
//! every record of an in-process PSD (device, register sets, CERTMETER v1 with an active
//! postmark key, one postmark issued) as `id u16 ‖ length u32 ‖ bytes`, one after the
//! other. The test checks the record is version 1, that a PSD loads it and goes on
//! (postmark, then REVOKE KEY, which writes version 2), and that the bytes a PSD writes for
//! a state without revocation are still version 1, byte for byte.
//!
//! The fixture was made once by `generate_certmeter_v1` below (ignored; it refuses to
//! overwrite) on the branch that introduced version 2, whose version-1 encoder is the one
//! of main before it (the layout and the encoder's code for it unchanged).
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use openpsd_core::client::psd_apdu;
use openpsd_core::crypto::sha256;
use openpsd_core::psd::certmeter::postmark::PostmarkRequest;
use openpsd_core::psd::certmeter::revoke::{Reason, RevocationConfirmation, RevocationOrder};
use openpsd_core::psd::certmeter::state::{CertMeterState, SlotState};
use openpsd_core::psd::psd_card;
use openpsd_core::records::psd::CERTMETER;
use openpsd_core::store::{MemStore, Store, Write};
use openpsd_core::types::*;
use openpsd_tests::certmeter::*;
use openpsd_tests::*;

const SEED: u64 = 404;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("state/v4/certmeter_v1.records")
}

fn postmark(txn: u64) -> Vec<u8> {
    psd_apdu::issue_postmark(
        RegisterSetIndex(0),
        &PostmarkRequest {
            transaction: TransactionId(txn.to_be_bytes()),
            digest: sha256(b"v1 fixture"),
            nonce: vec![],
        },
    )
}

#[test]
#[ignore = "writes the fixture once; refuses to overwrite it"]
fn generate_certmeter_v1() {
    let path = fixture();
    assert!(
        !path.exists(),
        "{} exists: never regenerate a fixture",
        path.display()
    );
    let (mut card, device_pk) = certmeter_card(SEED, true);
    activate_postmark_key(&mut card, &device_pk, &TestCa::standard());
    expect_ok(&card.transmit(&postmark(1)));
    std::fs::write(&path, store_records(&card)).unwrap();
}

#[test]
fn a_version_1_record_loads_serves_and_becomes_version_2_at_the_first_revocation() {
    let records = decode_records(&std::fs::read(fixture()).expect("fixture present"));
    let v1 = records
        .iter()
        .find(|(id, _)| *id == CERTMETER)
        .map(|(_, v)| v.clone())
        .expect("a CERTMETER record");
    assert_eq!(v1[0], 1, "the fixture is version 1");
    let st = CertMeterState::decode(&v1).expect("version 1 decodes");
    assert_eq!((st.orders, st.last_revocation.clone()), (0, None));
    assert_eq!(st.postmarks, 1);
    let slot = st.slots[0].as_ref().unwrap();
    assert_eq!(slot.state, SlotState::Active);
    let cert = slot.certificate.clone();
    // Nothing revoked: re-encoded as the same version-1 bytes.
    assert_eq!(st.encode(), v1);

    let mut store = MemStore::new();
    let writes: Vec<Write> = records
        .into_iter()
        .map(|(id, v)| Write { id, value: Some(v) })
        .collect();
    store.commit(&writes).unwrap();
    let mut card = psd_card(store, platform(SEED)).expect("the v1 state loads");
    expect_ok(&card.transmit(&psd_apdu::select()));
    // A retry of the fixture's postmark is the stored one; a new one is served.
    expect_ok(&card.transmit(&postmark(1)));
    expect_ok(&card.transmit(&postmark(2)));
    assert_eq!(certmeter_record(&card).unwrap()[0], 1, "still version 1");

    let order = RevocationOrder {
        device: DEVICE,
        slot: 0,
        certificate_hash: sha256(&cert),
        reason: Reason::CessationOfOperation,
        counter: 1,
    }
    .sign(&TestCa::standard().order_key());
    let reply = expect_ok(&card.transmit(&psd_apdu::revoke_key(RegisterSetIndex(0), &order)));
    let pk = device_public_key(&mut card);
    RevocationConfirmation::open(&reply, &pk).unwrap();
    let v2 = certmeter_record(&card).unwrap();
    assert_eq!(v2[0], 2, "the first revocation writes version 2");
    let st2 = CertMeterState::decode(&v2).unwrap();
    assert_eq!(st2.orders, 1);
    assert_eq!(st2.last_revocation.unwrap().confirmation, reply);
}
