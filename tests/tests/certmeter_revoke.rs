//! Revocation (seed 004, Fig. 6), in process: REVOCATION REQUEST (the device-signed
//! request for the CA), REVOKE KEY (the CA's signed order: the key retired, its scalar
//! erased, the Revocation fee paid from DR or owed), fees due blocking paid services until
//! a refill settles them, every refused order with nothing written, the same order again
//! answering the same confirmation, and the file store keeping no copy of the scalar.
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use openpsd_core::client::psd_apdu;
use openpsd_core::crypto::{sha256, IndiciumKey};
use openpsd_core::psd::certmeter::attestation::Purpose;
use openpsd_core::psd::certmeter::postmark::PostmarkRequest;
use openpsd_core::psd::certmeter::rates::Service;
use openpsd_core::psd::certmeter::revoke::{
    Outcome, Reason, RevocationConfirmation, RevocationOrder, RevocationRequest,
};
use openpsd_core::psd::certmeter::state::{CertMeterState, SlotState};
use openpsd_core::psd::psd_card;
use openpsd_core::store::{Store, Write};
use openpsd_core::types::*;
use openpsd_core::Status;
use openpsd_tests::certmeter::*;
use openpsd_tests::*;

const SEED: u64 = 47;
const SET0: RegisterSetIndex = RegisterSetIndex(0);
/// The Revocation fee of [`table`] when DR pays it.
const REVOCATION_FEE: u64 = 25;

/// Rate table version 1 with the standard fees and `revocation` for a revocation.
fn table(revocation: u64) -> Vec<u8> {
    rate_table(
        1,
        Date::new(2026, 11, 1).unwrap(),
        &[
            (Service::Postmark, POSTMARK_FEE),
            (Service::Certificate, CERTIFICATE_FEE),
            (Service::Revocation, revocation),
        ],
    )
}

/// A certmeter card with the table (revocation at `revocation`), the CA anchor and an
/// active postmark key: the card, the device key, the CA, the slot and the certificate.
fn revocable(revocation: u64) -> (TestCard, [u8; 65], TestCa, u8, Vec<u8>) {
    let (mut card, device_pk) = certmeter_card(SEED, true);
    let ca = TestCa::standard();
    expect_ok(&card.transmit(&psd_apdu::load_rate_table(&table(revocation))));
    expect_ok(&card.transmit(&psd_apdu::load_trust_anchor(&ca_anchor(&ca, 1))));
    let (_, a) = generate(&mut card, Purpose::Postmark, &device_pk);
    let cert = ca.postmark_certificate(&a.public_key);
    expect_ok(&card.transmit(&psd_apdu::install_key_certificate(a.slot, SET0, &cert)));
    (card, device_pk, ca, a.slot, cert)
}

fn order(ca: &TestCa, slot: u8, cert: &[u8], counter: u32) -> Vec<u8> {
    RevocationOrder {
        device: DEVICE,
        slot,
        certificate_hash: sha256(cert),
        reason: Reason::KeyCompromise,
        counter,
    }
    .sign(&ca.order_key())
}

/// The command refused with `status`, and the store unchanged (no write at all).
fn refused_unchanged(card: &mut TestCard, apdu: &[u8], status: Status) {
    let before = card.store().nvm().clone();
    let writes = card.store().writes();
    expect_refused(&card.transmit(apdu), status);
    assert_eq!(card.store().writes(), writes, "a refusal writes nothing");
    assert!(card.store().nvm() == &before, "a refusal changes nothing");
}

/// The command answers, and writes nothing.
fn answered_unchanged(card: &mut TestCard, apdu: &[u8]) -> Vec<u8> {
    let writes = card.store().writes();
    let data = expect_ok(&card.transmit(apdu));
    assert_eq!(card.store().writes(), writes, "writes nothing");
    data
}

fn scalar_of(card: &TestCard, slot: u8) -> Vec<u8> {
    let st = CertMeterState::decode(&certmeter_record(card).unwrap()).unwrap();
    let s = st.slots[usize::from(slot)].as_ref().unwrap();
    s.key.as_ref().unwrap().secret_bytes().as_ref().to_vec()
}

fn postmark_apdu(txn: u64) -> Vec<u8> {
    psd_apdu::issue_postmark(
        SET0,
        &PostmarkRequest {
            transaction: TransactionId(txn.to_be_bytes()),
            digest: sha256(&txn.to_be_bytes()),
            nonce: vec![],
        },
    )
}

fn books_balance(card: &mut TestCard) {
    let r = registers(card, 0);
    assert_eq!(r.ar.0 + r.dr.0 + r.pending.0, r.control_sum.0, "{r:?}");
}

#[test]
fn fig6_request_order_paid_key_retired_scalar_gone_postmark_refused_replay_identical() {
    let (mut card, device_pk, ca, slot, cert) = revocable(REVOCATION_FEE);
    let scalar = scalar_of(&card, slot);
    assert!(nvm_contains(card.store().nvm(), &scalar));
    expect_ok(&card.transmit(&postmark_apdu(1)));

    // Step 604: the request, signed by the device key, writes nothing.
    let challenge = [0xC4; 16];
    let bytes = answered_unchanged(
        &mut card,
        &psd_apdu::revocation_request(slot, Reason::KeyCompromise, &challenge),
    );
    let req = RevocationRequest::open(&bytes, &device_pk).expect("device signature");
    assert_eq!(
        (
            req.device,
            req.slot,
            req.purpose,
            req.certificate_hash,
            req.reason,
            req.challenge
        ),
        (
            DEVICE,
            slot,
            Purpose::Postmark,
            sha256(&cert),
            Reason::KeyCompromise,
            challenge
        )
    );
    // Not under another key (the CA checks it with the device key the KMS registered).
    assert!(RevocationRequest::open(&bytes, &ca.public_key).is_err());

    // Steps 612-620: the CA's order; paid from DR.
    let before = registers(&mut card, 0);
    let (fees0, services0) = fees_of(&mut card, 0);
    let o = order(&ca, slot, &cert, 1);
    let reply = expect_ok(&card.transmit(&psd_apdu::revoke_key(SET0, &o)));
    let c = RevocationConfirmation::open(&reply, &device_pk).expect("confirmation verifies");
    assert_eq!(
        (
            c.device,
            c.slot,
            c.certificate_hash,
            c.counter,
            c.outcome,
            c.fee,
            c.set
        ),
        (
            DEVICE,
            slot,
            sha256(&cert),
            1,
            Outcome::Paid,
            Amount(REVOCATION_FEE),
            0
        )
    );
    let after = registers(&mut card, 0);
    assert_eq!(after.dr.0, before.dr.0 - REVOCATION_FEE);
    assert_eq!(after.ar.0, before.ar.0 + REVOCATION_FEE);
    assert_eq!(after.control_sum, before.control_sum);
    assert_eq!(
        fees_of(&mut card, 0),
        (
            Amount(fees0.0 + REVOCATION_FEE),
            PieceCount(services0.0 + 1)
        )
    );
    books_balance(&mut card);
    let info = cm_info(&mut card);
    assert_eq!(info.slots[usize::from(slot)].state, SlotState::Retired);
    assert_eq!(info.fees_due, Amount::ZERO);
    // The scalar is in no cell of the memory (record, journal, anything).
    assert!(!nvm_contains(card.store().nvm(), &scalar), "scalar erased");

    // A revoked key's postmark: 9A45, nothing written.
    refused_unchanged(&mut card, &postmark_apdu(2), Status::KeyRevoked);

    // The same order again: the same confirmation, byte for byte, charged once.
    let again = answered_unchanged(&mut card, &psd_apdu::revoke_key(SET0, &o));
    assert_eq!(again, reply);
    // ...also through another set's P2 (the confirmation names the set that paid).
    assert_eq!(registers(&mut card, 0), after);
    // And after a re-open (the confirmation is in the record).
    let mut card = reopen_at(card.store().nvm(), SEED);
    assert_eq!(
        answered_unchanged(&mut card, &psd_apdu::revoke_key(SET0, &o)),
        reply
    );
    // An older or a different order of the same number: refused, nothing written.
    let other = RevocationOrder {
        device: DEVICE,
        slot,
        certificate_hash: sha256(&cert),
        reason: Reason::Superseded,
        counter: 1,
    }
    .sign(&ca.order_key());
    refused_unchanged(
        &mut card,
        &psd_apdu::revoke_key(SET0, &other),
        Status::NotNewer,
    );
    refused_unchanged(
        &mut card,
        &psd_apdu::revoke_key(SET0, &order(&ca, slot, &cert, 0)),
        Status::NotNewer,
    );
    // The retired key can still be named in a request (the CA answers what it knows).
    RevocationRequest::open(
        &answered_unchanged(
            &mut card,
            &psd_apdu::revocation_request(slot, Reason::Unspecified, &[0; 16]),
        ),
        &device_pk,
    )
    .unwrap();
}

#[test]
fn fig6_refused_orders_and_requests_write_nothing() {
    let (mut card, device_pk, ca, slot, cert) = revocable(REVOCATION_FEE);
    // Forged: signed by a key the PSD does not trust.
    let forger = IndiciumKey::from_bytes(&[0x66; 32]).unwrap();
    let forged = RevocationOrder {
        device: DEVICE,
        slot,
        certificate_hash: sha256(&cert),
        reason: Reason::KeyCompromise,
        counter: 1,
    }
    .sign(&forger);
    refused_unchanged(
        &mut card,
        &psd_apdu::revoke_key(SET0, &forged),
        Status::SecurityStatusNotSatisfied,
    );
    // A bit flipped anywhere: refused.
    let good = order(&ca, slot, &cert, 1);
    for n in [0, 5, 20, good.len() - 1] {
        let mut bad = good.clone();
        bad[n] ^= 1;
        let before = card.store().nvm().clone();
        let resp = card.transmit(&psd_apdu::revoke_key(SET0, &bad));
        assert_ne!(psd_apdu::sw(&resp), 0x9000, "byte {n}");
        assert!(card.store().nvm() == &before);
    }
    // Truncated, or empty.
    refused_unchanged(
        &mut card,
        &psd_apdu::revoke_key(SET0, &good[..good.len() - 1]),
        Status::WrongLength,
    );
    refused_unchanged(
        &mut card,
        &psd_apdu::revoke_key(SET0, &[]),
        Status::WrongLength,
    );
    // For another device.
    let elsewhere = RevocationOrder {
        device: DeviceId(*b"OTHERPSD"),
        slot,
        certificate_hash: sha256(&cert),
        reason: Reason::KeyCompromise,
        counter: 1,
    }
    .sign(&ca.order_key());
    refused_unchanged(
        &mut card,
        &psd_apdu::revoke_key(SET0, &elsewhere),
        Status::WrongDevice,
    );
    // Another slot (empty), another certificate.
    refused_unchanged(
        &mut card,
        &psd_apdu::revoke_key(SET0, &order(&ca, 3, &cert, 1)),
        Status::CertificateMismatch,
    );
    refused_unchanged(
        &mut card,
        &psd_apdu::revoke_key(SET0, &order(&ca, slot, b"another certificate", 1)),
        Status::CertificateMismatch,
    );
    // A pending key has no certificate to revoke.
    let (_, pending) = generate(&mut card, Purpose::Sign, &device_pk);
    refused_unchanged(
        &mut card,
        &psd_apdu::revoke_key(SET0, &order(&ca, pending.slot, &[], 1)),
        Status::CertificateMismatch,
    );
    // A set that does not exist.
    refused_unchanged(
        &mut card,
        &psd_apdu::revoke_key(RegisterSetIndex(9), &good),
        Status::ReferencedDataNotFound,
    );
    // Requests: empty slot, pending slot, unknown reason, wrong length, P2.
    let req = |slot: u8, data: &[u8], p2: u8| {
        let mut apdu = psd_apdu::revocation_request(slot, Reason::Unspecified, &[0; 16]);
        apdu[3] = p2;
        apdu.truncate(4);
        apdu.push(u8::try_from(data.len()).unwrap());
        apdu.extend_from_slice(data);
        apdu.push(0);
        apdu
    };
    let data = [[1u8].as_slice(), &[0; 16]].concat();
    refused_unchanged(&mut card, &req(3, &data, 0), Status::NoKeyForPurpose);
    refused_unchanged(
        &mut card,
        &req(pending.slot, &data, 0),
        Status::CertificateMismatch,
    );
    let bad_reason = [[2u8].as_slice(), &[0; 16]].concat();
    refused_unchanged(&mut card, &req(slot, &bad_reason, 0), Status::WrongData);
    refused_unchanged(&mut card, &req(slot, &data[..16], 0), Status::WrongLength);
    refused_unchanged(&mut card, &req(slot, &data, 1), Status::IncorrectP1P2);
    // And the good order still applies after all that.
    expect_ok(&card.transmit(&psd_apdu::revoke_key(SET0, &good)));
}

#[test]
fn fig6_fees_due_block_paid_services_until_a_refill_settles_them() {
    // A fee DR cannot pay: owed.
    const BIG: u64 = 15_000;
    let (mut card, device_pk, ca, postmark_slot, _) = revocable(BIG);
    // A second key (signing) to revoke, so the postmark key stays active.
    let (_, a) = generate(&mut card, Purpose::Sign, &device_pk);
    let cert = ca.certify(
        &a.public_key,
        &CertProfile {
            eku: vec![KP_EMAIL_PROTECTION],
            eku_critical: false,
            ..CertProfile::default()
        },
    );
    expect_ok(&card.transmit(&psd_apdu::install_key_certificate(a.slot, SET0, &cert)));
    let scalar = scalar_of(&card, a.slot);
    let before = registers(&mut card, 0);
    let (fees0, services0) = fees_of(&mut card, 0);
    assert!(before.dr.0 < BIG);

    let reply =
        expect_ok(&card.transmit(&psd_apdu::revoke_key(SET0, &order(&ca, a.slot, &cert, 1))));
    let c = RevocationConfirmation::open(&reply, &device_pk).unwrap();
    assert_eq!((c.outcome, c.fee), (Outcome::Due, Amount(BIG)));
    // No money moved; the service counted; the fee owed.
    let r = registers(&mut card, 0);
    assert_eq!(
        (r.ar, r.dr, r.control_sum),
        (before.ar, before.dr, before.control_sum)
    );
    assert_eq!(fees_of(&mut card, 0), (fees0, PieceCount(services0.0 + 1)));
    assert_eq!(cm_info(&mut card).fees_due, Amount(BIG));
    assert!(!nvm_contains(card.store().nvm(), &scalar));
    assert_eq!(
        cm_info(&mut card).active(Purpose::Postmark).unwrap().slot,
        postmark_slot
    );

    // Paid services wait: postmark, key generation.
    refused_unchanged(&mut card, &postmark_apdu(1), Status::FeesDue);
    refused_unchanged(
        &mut card,
        &psd_apdu::generate_key(Purpose::Sign, false),
        Status::FeesDue,
    );

    // A refill smaller than the fees due settles all of DR; the rest stays due.
    let small = 3_000;
    let msg = Kms::new().refill_for(&mut card, SET0, Amount(small), [2; 8]);
    let r1 = openpsd_core::psd::registers::Registers::decode(&expect_ok(
        &card.transmit(&psd_apdu::refill(SET0, &msg)),
    ))
    .unwrap();
    let settled = before.dr.0 + small;
    assert_eq!(r1.dr, Amount(0));
    assert_eq!(r1.ar.0, before.ar.0 + settled);
    assert_eq!(r1.control_sum.0, before.control_sum.0 + small);
    assert_eq!(cm_info(&mut card).fees_due, Amount(BIG - settled));
    assert_eq!(fees_of(&mut card, 0).0, Amount(fees0.0 + settled));
    books_balance(&mut card);
    refused_unchanged(&mut card, &postmark_apdu(1), Status::FeesDue);

    // A refill that covers the rest: settled, services work again.
    let msg = Kms::new().refill_for(&mut card, SET0, Amount(10_000), [3; 8]);
    let r2 = openpsd_core::psd::registers::Registers::decode(&expect_ok(
        &card.transmit(&psd_apdu::refill(SET0, &msg)),
    ))
    .unwrap();
    let rest = BIG - settled;
    assert_eq!(r2.dr.0, 10_000 - rest);
    assert_eq!(r2.control_sum.0, r1.control_sum.0 + 10_000);
    assert_eq!(cm_info(&mut card).fees_due, Amount::ZERO);
    assert_eq!(fees_of(&mut card, 0).0, Amount(fees0.0 + BIG));
    books_balance(&mut card);
    expect_ok(&card.transmit(&postmark_apdu(1)));
    assert_eq!(registers(&mut card, 0).dr.0, 10_000 - rest - POSTMARK_FEE);
}

#[test]
fn fig6_an_order_for_a_key_already_replaced_still_confirms_and_is_charged() {
    let (mut card, device_pk, ca, old_slot, old_cert) = revocable(REVOCATION_FEE);
    let (_, b) = generate(&mut card, Purpose::Postmark, &device_pk);
    let cert = ca.postmark_certificate(&b.public_key);
    expect_ok(&card.transmit(&psd_apdu::install_key_certificate(b.slot, SET0, &cert)));
    assert_eq!(
        cm_info(&mut card).slots[usize::from(old_slot)].state,
        SlotState::Retired
    );
    let before = registers(&mut card, 0);
    let reply = expect_ok(&card.transmit(&psd_apdu::revoke_key(
        SET0,
        &order(&ca, old_slot, &old_cert, 1),
    )));
    let c = RevocationConfirmation::open(&reply, &device_pk).unwrap();
    assert_eq!(
        (c.slot, c.outcome, c.fee),
        (old_slot, Outcome::Paid, Amount(REVOCATION_FEE))
    );
    assert_eq!(registers(&mut card, 0).dr.0, before.dr.0 - REVOCATION_FEE);
    // The newer key is untouched and postmarks.
    assert_eq!(
        cm_info(&mut card).active(Purpose::Postmark).unwrap().slot,
        b.slot
    );
    expect_ok(&card.transmit(&postmark_apdu(1)));
}

#[test]
fn fig6_no_price_no_table_makes_a_revocation_free_never_refused() {
    let (mut card, device_pk) = certmeter_card(SEED, true);
    let ca = TestCa::standard();
    // The standard table does not price revocation.
    let (slot, cert) = activate_postmark_key(&mut card, &device_pk, &ca);
    let before = registers(&mut card, 0);
    let reply = expect_ok(&card.transmit(&psd_apdu::revoke_key(SET0, &order(&ca, slot, &cert, 7))));
    let c = RevocationConfirmation::open(&reply, &device_pk).unwrap();
    assert_eq!((c.outcome, c.fee, c.counter), (Outcome::Paid, Amount(0), 7));
    assert_eq!(registers(&mut card, 0).dr, before.dr);
    // Counters need only rise: 7 then 9.
    let (_, b) = generate(&mut card, Purpose::Postmark, &device_pk);
    let cert_b = ca.postmark_certificate(&b.public_key);
    expect_ok(&card.transmit(&psd_apdu::install_key_certificate(b.slot, SET0, &cert_b)));
    expect_ok(&card.transmit(&psd_apdu::revoke_key(SET0, &order(&ca, b.slot, &cert_b, 9))));
    // ...and the older one is refused now.
    refused_unchanged(
        &mut card,
        &psd_apdu::revoke_key(SET0, &order(&ca, slot, &cert, 7)),
        Status::NotNewer,
    );
}

/// The simulator's file store appends a frame per commit; after REVOKE KEY the file holds
/// no frame with the revoked scalar.
#[test]
fn fig6_the_file_store_keeps_no_copy_of_the_revoked_scalar() {
    let (card, _, ca, slot, cert) = revocable(REVOCATION_FEE);
    let scalar = scalar_of(&card, slot);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("card");
    let mut fs = card_sim::file_store::FileStore::create(&dir).unwrap();
    // The card's records, one frame each: the CERTMETER frame holds the scalar.
    for id in card.store().ids().unwrap() {
        fs.commit(&[Write {
            id,
            value: card.store().read(id).unwrap(),
        }])
        .unwrap();
    }
    let log = || {
        std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| std::fs::read(e.unwrap().path()).unwrap_or_default())
            .collect::<Vec<_>>()
    };
    let holds = |files: Vec<Vec<u8>>| files.iter().any(|f| f.windows(32).any(|w| w == scalar));
    assert!(holds(log()), "the scalar is in the log before");
    let mut sim = psd_card(fs, platform(SEED)).unwrap();
    expect_ok(&sim.transmit(&psd_apdu::select()));
    expect_ok(&sim.transmit(&psd_apdu::revoke_key(SET0, &order(&ca, slot, &cert, 1))));
    assert!(!holds(log()), "no trace of the scalar in the card's files");
    // The state re-opens from the rewritten log, the key retired.
    drop(sim);
    let fs = card_sim::file_store::FileStore::open(&dir).unwrap();
    let st = CertMeterState::decode(
        &fs.read(openpsd_core::records::psd::CERTMETER)
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        st.slots[usize::from(slot)].as_ref().unwrap().state,
        SlotState::Retired
    );
    assert_eq!(st.orders, 1);
}
