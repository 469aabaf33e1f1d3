//! Tearing of the certificate meter's commands (seed 004): power is cut at every cell write
//! *k* of LOAD RATE TABLE, LOAD TRUST ANCHOR, GENERATE KEY, INSTALL KEY CERTIFICATE, ISSUE
//! POSTMARK, SIGN, VALIDATE POSTMARK, ISSUE AGENT CERTIFICATE (both modes) and REVOKE KEY (paid and due,
//! Fig. 6), clean and torn; the card is re-opened and the money must still add up: AR + DR +
//! pending = control sum, fees only rise, and a charge exists if and only if its output is
//! retrievable (a retry with the same command returns it, charged once). Prints how many cut
//! points it checked.
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use openpsd_core::client::psd_apdu;
use openpsd_core::crypto::sha256;
use openpsd_core::psd::certmeter::attestation::{KeyAttestation, Purpose};
use openpsd_core::psd::certmeter::postmark::PostmarkRequest;
use openpsd_core::psd::certmeter::sign::{CompactSignature, SignRequest};
use openpsd_core::psd::certmeter::state::{CertMeterState, SlotState};
use openpsd_core::psd::certmeter::tst::{decode_tst_info, CompactPostmark};
use openpsd_core::psd::certmeter::validate::{ValidateRequest, ValidationReceipt};
use openpsd_core::psd::registers::Registers;
use openpsd_core::store::{Nvm, PowerCut};
use openpsd_core::types::*;
use openpsd_core::Status;
use openpsd_tests::certmeter::*;
use openpsd_tests::*;

const SEED: u64 = 44;
const SET0: RegisterSetIndex = RegisterSetIndex(0);

/// Runs `apdu` on cards re-opened from `base` (clock at [`NOW`]), cutting power at its
/// write k = 0, 1, ... (clean, then torn) until it completes uncut. `check` gets the
/// response, the card re-opened from what the cut left, and a label. Returns the number of
/// cut points and the uncut response.
fn sweep(
    base: &Nvm,
    apdu: &[u8],
    mut check: impl FnMut(&[u8], TestCard, &str),
) -> (usize, Vec<u8>) {
    let mut cuts = 0;
    let mut uncut = Vec::new();
    for torn in [false, true] {
        for k in 0.. {
            let mut card = reopen_at(base, SEED);
            let start = card.store().writes();
            card.store_mut().set_power_cut(Some(PowerCut {
                at_write: start + k,
                torn,
            }));
            let resp = card.transmit(apdu);
            if !card.store().is_dead() {
                assert_eq!(psd_apdu::sw(&resp), 0x9000, "uncut command must succeed");
                uncut = resp;
                break;
            }
            cuts += 1;
            let at = format!("cut {k} torn {torn}");
            // Nothing leaves a card whose commit did not complete.
            assert_eq!(resp, Status::MemoryFailure.sw().to_be_bytes(), "{at}");
            check(&resp, reopen_at(card.store().nvm(), SEED), &at);
        }
    }
    assert!(cuts > 0, "the command writes");
    (cuts, uncut)
}

/// The money of set 0: registers and (fees, services).
fn books(card: &mut TestCard) -> (Registers, Amount, PieceCount) {
    let r = registers(card, 0);
    assert_eq!(
        r.ar.0 + r.dr.0 + r.pending.0,
        r.control_sum.0,
        "AR + DR + pending = control sum: {r:?}"
    );
    let (fees, services) = fees_of(card, 0);
    (r, fees, services)
}

fn charged(before: &(Registers, Amount, PieceCount), fee: u64) -> (Registers, Amount, PieceCount) {
    let (r, fees, services) = before;
    (
        Registers {
            ar: Amount(r.ar.0 + fee),
            dr: Amount(r.dr.0 - fee),
            ..*r
        },
        Amount(fees.0 + fee),
        PieceCount(services.0 + 1),
    )
}

fn load_rate_table_tearing() -> usize {
    let (card, _) = certmeter_card(SEED, true);
    let base = card.store().nvm().clone();
    let before = books(&mut reopen_at(&base, SEED));
    let table = standard_table(1);
    let (cuts, _) = sweep(
        &base,
        &psd_apdu::load_rate_table(&table),
        |_, mut card, at| {
            let info = cm_info(&mut card);
            assert!(
                info.tables.is_empty()
                    || info.tables == [(info.tables[0].0.clone(), table.clone())],
                "{at}: no table or the whole table"
            );
            assert_eq!(books(&mut card), before, "{at}: no money moves");
            let v = expect_ok(&card.transmit(&psd_apdu::load_rate_table(&table)));
            assert_eq!(v, 1u32.to_be_bytes(), "{at}");
            assert_eq!(cm_info(&mut card).tables.len(), 1, "{at}");
        },
    );
    cuts
}

fn load_trust_anchor_tearing() -> usize {
    let (mut card, _) = certmeter_card(SEED, true);
    let ca = TestCa::standard();
    expect_ok(&card.transmit(&psd_apdu::load_rate_table(&standard_table(1))));
    let base = card.store().nvm().clone();
    let before = books(&mut reopen_at(&base, SEED));
    let anchor = ca_anchor(&ca, 1);
    let (cuts, _) = sweep(
        &base,
        &psd_apdu::load_trust_anchor(&anchor),
        |_, mut card, at| {
            let info = cm_info(&mut card);
            assert_eq!(info.tables.len(), 1, "{at}: the table survives");
            assert!(
                info.anchors.is_empty() || info.anchors[0].1 == anchor,
                "{at}: no anchor or the whole anchor"
            );
            assert_eq!(books(&mut card), before, "{at}");
            expect_ok(&card.transmit(&psd_apdu::load_trust_anchor(&anchor)));
            assert_eq!(cm_info(&mut card).anchors[0].0.public_key, ca.public_key);
        },
    );
    cuts
}

fn generate_key_tearing() -> usize {
    let (mut card, device_pk) = certmeter_card(SEED, true);
    load_table_and_anchor(&mut card, &TestCa::standard());
    let base = card.store().nvm().clone();
    let before = books(&mut reopen_at(&base, SEED));
    let apdu = psd_apdu::generate_key(Purpose::Postmark, false);
    let (cuts, uncut) = sweep(&base, &apdu, |_, mut card, at| {
        let info = cm_info(&mut card);
        assert!(info.generation <= 1, "{at}");
        assert_eq!(books(&mut card), before, "{at}: generating charges nothing");
        // A retry answers a valid attestation, of the one key generated.
        let bytes = expect_ok(&card.transmit(&apdu));
        let a = KeyAttestation::open(&bytes, &device_pk).expect("retried attestation verifies");
        assert_eq!(
            (a.slot, a.generation, a.purpose),
            (0, 1, Purpose::Postmark),
            "{at}"
        );
        let info = cm_info(&mut card);
        assert_eq!(info.slots.len(), 1, "{at}: one key slot");
        assert_eq!(info.slots[0].public_key, a.public_key, "{at}");
        // Asked again: the same attestation.
        assert_eq!(expect_ok(&card.transmit(&apdu)), bytes, "{at}");
    });
    KeyAttestation::open(psd_apdu::data(&uncut).unwrap(), &device_pk).unwrap();
    cuts
}

/// A card with the table, the anchor and a pending postmark key; its memory and the
/// certificate for that key.
fn pending_key() -> (Nvm, Vec<u8>, u8) {
    let (mut card, device_pk) = certmeter_card(SEED, true);
    let ca = TestCa::standard();
    load_table_and_anchor(&mut card, &ca);
    let (_, a) = generate(&mut card, Purpose::Postmark, &device_pk);
    (
        card.store().nvm().clone(),
        ca.postmark_certificate(&a.public_key),
        a.slot,
    )
}

fn install_key_certificate_tearing() -> usize {
    let (base, cert, slot) = pending_key();
    let before = books(&mut reopen_at(&base, SEED));
    let after = charged(&before, CERTIFICATE_FEE);
    let apdu = psd_apdu::install_key_certificate(slot, SET0, &cert);
    let (cuts, uncut) = sweep(&base, &apdu, |_, mut card, at| {
        let now = books(&mut card);
        assert!(now.1 >= before.1, "{at}: fees only rise");
        let info = cm_info(&mut card);
        let s = &info.slots[usize::from(slot)];
        // Charged if and only if the key is active with its certificate.
        if now == after {
            assert_eq!(s.state, SlotState::Active, "{at}: paid, so active");
            assert_eq!(s.certificate, cert, "{at}");
        } else {
            assert_eq!(now, before, "{at}: {now:?}");
            assert_eq!(s.state, SlotState::Pending, "{at}: not paid, so pending");
            assert!(s.certificate.is_empty(), "{at}");
        }
        // The retry completes, charged once.
        let reply = expect_ok(&card.transmit(&apdu));
        assert_eq!(reply[0], slot);
        assert_eq!(
            u64::from_be_bytes(reply[1..9].try_into().unwrap()),
            CERTIFICATE_FEE,
            "{at}"
        );
        assert_eq!(books(&mut card), after, "{at}: charged once");
        assert_eq!(
            books(&mut reopen_at(card.store().nvm(), SEED)),
            after,
            "{at}"
        );
    });
    assert_eq!(
        Registers::decode(&psd_apdu::data(&uncut).unwrap()[9..]).unwrap(),
        after.0
    );
    cuts
}

fn issue_postmark_tearing() -> usize {
    let (mut card, device_pk) = certmeter_card(SEED, true);
    let ca = TestCa::standard();
    let (_, cert) = activate_postmark_key(&mut card, &device_pk, &ca);
    let base = card.store().nvm().clone();
    let before = books(&mut reopen_at(&base, SEED));
    let after = charged(&before, POSTMARK_FEE);
    let req = PostmarkRequest {
        transaction: TransactionId(*b"postmark"),
        digest: sha256(b"torn letter"),
        nonce: vec![0x5A],
    };
    let apdu = psd_apdu::issue_postmark(SET0, &req);
    // The uncut output, to compare every retry with.
    let reference = expect_ok(&reopen_at(&base, SEED).transmit(&apdu));
    let (cuts, uncut) = sweep(&base, &apdu, |_, mut card, at| {
        let now = books(&mut card);
        assert!(now.1 >= before.1, "{at}: fees only rise");
        let info = cm_info(&mut card);
        if now == after {
            // Charged: the postmark is retrievable, the same bytes, with no second debit.
            assert_eq!(info.postmarks, 1, "{at}");
            assert_eq!(expect_ok(&card.transmit(&apdu)), reference, "{at}");
            assert_eq!(books(&mut card), after, "{at}: no second debit");
        } else {
            // Not charged: nothing counted, and the retry is the first (and only) charge.
            assert_eq!(now, before, "{at}: {now:?}");
            assert_eq!(info.postmarks, 0, "{at}");
            assert_eq!(expect_ok(&card.transmit(&apdu)), reference, "{at}");
            assert_eq!(books(&mut card), after, "{at}");
        }
        // Asked once more: still the same, still once.
        assert_eq!(expect_ok(&card.transmit(&apdu)), reference, "{at}");
        assert_eq!(books(&mut card), after, "{at}");
    });
    assert_eq!(psd_apdu::data(&uncut).unwrap(), reference.as_slice());
    let c = CompactPostmark::decode(&reference).unwrap();
    assert_eq!(
        decode_tst_info(&c.tst_info).unwrap().nonce,
        Some(vec![0x5A])
    );
    let token = openpsd_pki::postmark::expand(&c, &cert, &[]).unwrap();
    openpsd_pki::postmark::verify(&token, &req.digest, &ca.cert_der).unwrap();
    cuts
}

/// ISSUE AGENT CERTIFICATE (Fig. 3A) from an `openssl req` request: charged if and only if
/// the employee's certificate is retrievable (the same bytes on every retry), once.
fn issue_agent_certificate_tearing() -> usize {
    use openpsd_core::psd::certmeter::agent::{AgentIssued, AgentRequest};
    let (mut card, device_pk) = certmeter_card(SEED, true);
    let ca = TestCa::standard();
    activate_agent_key(&mut card, &device_pk, &ca, &AgentProfile::default());
    let base = card.store().nvm().clone();
    let before = books(&mut reopen_at(&base, SEED));
    let after = charged(&before, AGENT_CERTIFICATE_FEE);
    let dir = tempfile::tempdir().unwrap();
    let csr = openssl_csr(
        dir.path(),
        "bob",
        "/O=openpsd customer 42/CN=bob",
        "P-256",
        &[],
    );
    let req = AgentRequest {
        transaction: TransactionId(*b"agent-tx"),
        days: 0,
        csr,
    };
    let apdu = psd_apdu::issue_agent_certificate(SET0, &req);
    let reference = expect_ok(&reopen_at(&base, SEED).transmit(&apdu));
    let (cuts, uncut) = sweep(&base, &apdu, |_, mut card, at| {
        let now = books(&mut card);
        assert!(now.1 >= before.1, "{at}: fees only rise");
        let counter = cm_info(&mut card).postmarks;
        if now == after {
            assert_eq!(counter, 1, "{at}: paid, so counted");
        } else {
            assert_eq!(now, before, "{at}: {now:?}");
            assert_eq!(counter, 0, "{at}: not paid, not counted");
        }
        // Either way the retry returns the one certificate, and it is paid once.
        assert_eq!(expect_ok(&card.transmit(&apdu)), reference, "{at}");
        assert_eq!(books(&mut card), after, "{at}: charged once");
        assert_eq!(expect_ok(&card.transmit(&apdu)), reference, "{at}");
        assert_eq!(books(&mut card), after, "{at}");
    });
    assert_eq!(psd_apdu::data(&uncut).unwrap(), reference.as_slice());
    let issued = AgentIssued::decode(&reference).unwrap();
    assert_eq!(issued.fee, Amount(AGENT_CERTIFICATE_FEE));
    cuts
}

/// ISSUE AGENT CERTIFICATE mode 01 (the PSD generates the key): charged if and only if the
/// certificate and the encrypted key are retrievable (the same bytes on every retry, with
/// the password), once.
fn generate_agent_certificate_tearing() -> usize {
    use openpsd_core::psd::certmeter::agent::{AgentGenerated, GenerateRequest};
    use std::str::FromStr as _;
    let (mut card, device_pk) = certmeter_card(SEED, true);
    let ca = TestCa::standard();
    activate_agent_key(&mut card, &device_pk, &ca, &AgentProfile::default());
    let base = card.store().nvm().clone();
    let before = books(&mut reopen_at(&base, SEED));
    let after = charged(&before, AGENT_CERTIFICATE_FEE);
    let req = GenerateRequest {
        transaction: TransactionId(*b"agentgen"),
        days: 0,
        password: zeroize::Zeroizing::new(b"tearing password".to_vec()),
        subject: der::Encode::to_der(
            &x509_cert::name::Name::from_str("CN=bob,O=openpsd customer 42").unwrap(),
        )
        .unwrap(),
        alt_names: None,
    };
    let apdu = psd_apdu::generate_agent_certificate(SET0, &req);
    let reference = expect_ok(&reopen_at(&base, SEED).transmit(&apdu));
    let (cuts, uncut) = sweep(&base, &apdu, |_, mut card, at| {
        let now = books(&mut card);
        assert!(now.1 >= before.1, "{at}: fees only rise");
        let counter = cm_info(&mut card).postmarks;
        if now == after {
            assert_eq!(counter, 1, "{at}: paid, so counted");
        } else {
            assert_eq!(now, before, "{at}: {now:?}");
            assert_eq!(counter, 0, "{at}: not paid, not counted");
        }
        assert_eq!(expect_ok(&card.transmit(&apdu)), reference, "{at}");
        assert_eq!(books(&mut card), after, "{at}: charged once");
        assert_eq!(expect_ok(&card.transmit(&apdu)), reference, "{at}");
        assert_eq!(books(&mut card), after, "{at}");
    });
    assert_eq!(psd_apdu::data(&uncut).unwrap(), reference.as_slice());
    let issued = AgentGenerated::decode(&reference).unwrap();
    assert_eq!(issued.fee, Amount(AGENT_CERTIFICATE_FEE));
    cuts
}

/// INSTALL KEY CERTIFICATE for a second postmark key, which retires the first in the same
/// commit: at every cut, either the old key is active with its scalar and the new one is
/// pending (nothing charged), or the new key is active, charged once, and the old scalar
/// is gone from the record and from every cell of the memory.
fn rotation_install_tearing() -> usize {
    let (mut card, device_pk) = certmeter_card(SEED, true);
    let ca = TestCa::standard();
    let (old_slot, _) = activate_postmark_key(&mut card, &device_pk, &ca);
    let st = CertMeterState::decode(&certmeter_record(&card).unwrap()).unwrap();
    let old = st.slots[usize::from(old_slot)].as_ref().unwrap();
    let scalar = old.key.as_ref().unwrap().secret_bytes().as_ref().to_vec();
    let (_, b) = generate(&mut card, Purpose::Postmark, &device_pk);
    let cert = ca.postmark_certificate(&b.public_key);
    let base = card.store().nvm().clone();
    let before = books(&mut reopen_at(&base, SEED));
    let after = charged(&before, CERTIFICATE_FEE);
    let apdu = psd_apdu::install_key_certificate(b.slot, SET0, &cert);
    let (cuts, _) = sweep(&base, &apdu, |_, mut card, at| {
        let now = books(&mut card);
        let record = certmeter_record(&card).unwrap();
        let st = CertMeterState::decode(&record).unwrap();
        let (o, n) = (
            st.slots[usize::from(old_slot)].as_ref().unwrap(),
            st.slots[usize::from(b.slot)].as_ref().unwrap(),
        );
        if now == after {
            assert_eq!(
                (o.state, n.state),
                (SlotState::Retired, SlotState::Active),
                "{at}"
            );
            assert!(o.key.is_none(), "{at}");
            assert!(!record.windows(32).any(|w| w == scalar.as_slice()), "{at}");
            assert!(
                !nvm_contains(card.store().nvm(), &scalar),
                "{at}: scalar in a cell"
            );
        } else {
            assert_eq!(now, before, "{at}: {now:?}");
            assert_eq!(
                (o.state, n.state),
                (SlotState::Active, SlotState::Pending),
                "{at}"
            );
        }
        expect_ok(&card.transmit(&apdu));
        assert_eq!(books(&mut card), after, "{at}: charged once");
        assert!(
            !nvm_contains(card.store().nvm(), &scalar),
            "{at}: scalar after the retry"
        );
    });
    cuts
}

/// A card with the sign table, the anchor, a postmark key, a sign key and one postmark:
/// its memory, the compact postmark and the postmark certificate.
fn sign_and_validate_base() -> (Nvm, Vec<u8>, Vec<u8>, [u8; 65]) {
    let (mut card, device_pk) = certmeter_card(SEED, true);
    let ca = TestCa::standard();
    expect_ok(&card.transmit(&psd_apdu::load_rate_table(&sign_table(1))));
    expect_ok(&card.transmit(&psd_apdu::load_trust_anchor(&ca_anchor(&ca, 1))));
    let (_, pm_cert) = activate_key(&mut card, &device_pk, &ca, Purpose::Postmark);
    activate_key(&mut card, &device_pk, &ca, Purpose::Sign);
    let req = PostmarkRequest {
        transaction: TransactionId(*b"postmark"),
        digest: sha256(b"validated letter"),
        nonce: Vec::new(),
    };
    let compact = expect_ok(&card.transmit(&psd_apdu::issue_postmark(SET0, &req)));
    (card.store().nvm().clone(), compact, pm_cert, device_pk)
}

/// A paid service of fee `fee` swept: at every cut either nothing was charged and the
/// last service is not this one, or it was charged once and the retry returns the uncut
/// output; the retry always completes, charged once, the same bytes.
fn paid_service_tearing(base: &Nvm, apdu: &[u8], fee: u64, txn: TransactionId) -> (usize, Vec<u8>) {
    let before = books(&mut reopen_at(base, SEED));
    let after = charged(&before, fee);
    let reference = expect_ok(&reopen_at(base, SEED).transmit(apdu));
    let (cuts, uncut) = sweep(base, apdu, |_, mut card, at| {
        let now = books(&mut card);
        assert!(now.1 >= before.1, "{at}: fees only rise");
        let st = CertMeterState::decode(&certmeter_record(&card).unwrap()).unwrap();
        let mine = st.last.as_ref().filter(|l| l.transaction == txn);
        if now == after {
            // Charged: the output is kept, the very bytes.
            assert_eq!(
                mine.map(|l| l.output.as_slice()),
                Some(reference.as_slice()),
                "{at}"
            );
        } else {
            assert_eq!(now, before, "{at}: {now:?}");
            assert!(mine.is_none(), "{at}: not charged, not kept");
        }
        assert_eq!(expect_ok(&card.transmit(apdu)), reference, "{at}");
        assert_eq!(books(&mut card), after, "{at}: charged once");
        assert_eq!(expect_ok(&card.transmit(apdu)), reference, "{at}");
        assert_eq!(books(&mut card), after, "{at}");
    });
    assert_eq!(psd_apdu::data(&uncut).unwrap(), reference.as_slice());
    (cuts, reference)
}

fn sign_tearing() -> usize {
    let (base, _, _, _) = sign_and_validate_base();
    let req = SignRequest {
        transaction: TransactionId(*b"signtorn"),
        digest: sha256(b"torn contract"),
    };
    let (cuts, reference) = paid_service_tearing(
        &base,
        &psd_apdu::sign(SET0, &req),
        SIGN_FEE,
        req.transaction,
    );
    let c = CompactSignature::decode(&reference).unwrap();
    assert_eq!(c.digest, req.digest);
    cuts
}

fn validate_tearing() -> usize {
    let (base, compact, pm_cert, device_pk) = sign_and_validate_base();
    let req = ValidateRequest {
        transaction: TransactionId(*b"validate"),
        postmark: compact,
        certificate: pm_cert,
        digest: sha256(b"validated letter"),
    };
    let (cuts, reference) = paid_service_tearing(
        &base,
        &psd_apdu::validate_postmark(SET0, &req),
        VALIDATION_FEE,
        req.transaction,
    );
    let r = ValidationReceipt::open(&reference, &device_pk).unwrap();
    assert!(r.valid);
    cuts
}

/// REVOKE KEY at every cut, the fee `revocation` paid from DR (`paid`) or owed: either
/// nothing happened (the key active with its scalar, books and fees due as before) or the
/// commit did (the key retired, its scalar in no cell, the fee charged or owed once, the
/// confirmation retrievable: the same order again answers the uncut bytes). Fees (the
/// register and the fees due) only rise.
fn revoke_key_tearing(revocation: u64, paid: bool) -> usize {
    use openpsd_core::psd::certmeter::rates::Service;
    use openpsd_core::psd::certmeter::revoke::{Reason, RevocationOrder};
    let (mut card, device_pk) = certmeter_card(SEED, true);
    let ca = TestCa::standard();
    let table = rate_table(
        1,
        Date::new(2026, 11, 1).unwrap(),
        &[
            (Service::Postmark, POSTMARK_FEE),
            (Service::Certificate, CERTIFICATE_FEE),
            (Service::Revocation, revocation),
        ],
    );
    expect_ok(&card.transmit(&psd_apdu::load_rate_table(&table)));
    expect_ok(&card.transmit(&psd_apdu::load_trust_anchor(&ca_anchor(&ca, 1))));
    let (_, a) = generate(&mut card, Purpose::Postmark, &device_pk);
    let cert = ca.postmark_certificate(&a.public_key);
    expect_ok(&card.transmit(&psd_apdu::install_key_certificate(a.slot, SET0, &cert)));
    let st = CertMeterState::decode(&certmeter_record(&card).unwrap()).unwrap();
    let scalar = st.slots[usize::from(a.slot)]
        .as_ref()
        .unwrap()
        .key
        .as_ref()
        .unwrap()
        .secret_bytes()
        .as_ref()
        .to_vec();
    let base = card.store().nvm().clone();
    let before = books(&mut reopen_at(&base, SEED));
    let due_before = cm_info(&mut reopen_at(&base, SEED)).fees_due;
    let (after, due_after) = if paid {
        (charged(&before, revocation), due_before)
    } else {
        let (r, fees, services) = &before;
        (
            (*r, *fees, PieceCount(services.0 + 1)),
            Amount(due_before.0 + revocation),
        )
    };
    let order = RevocationOrder {
        device: DEVICE,
        slot: a.slot,
        certificate_hash: sha256(&cert),
        reason: Reason::KeyCompromise,
        counter: 1,
    }
    .sign(&ca.order_key());
    let apdu = psd_apdu::revoke_key(SET0, &order);
    let reference = expect_ok(&reopen_at(&base, SEED).transmit(&apdu));
    let (cuts, uncut) = sweep(&base, &apdu, |_, mut card, at| {
        let now = books(&mut card);
        let due = cm_info(&mut card).fees_due;
        assert!(
            now.1 >= before.1 && due >= due_before,
            "{at}: fees only rise"
        );
        let st = CertMeterState::decode(&certmeter_record(&card).unwrap()).unwrap();
        let s = st.slots[usize::from(a.slot)].as_ref().unwrap();
        if now == after && due == due_after {
            // Committed: retired, the scalar gone, the confirmation retrievable.
            assert_eq!((s.state, st.orders), (SlotState::Retired, 1), "{at}");
            assert!(s.key.is_none(), "{at}");
            assert!(
                !nvm_contains(card.store().nvm(), &scalar),
                "{at}: scalar in a cell"
            );
        } else {
            assert_eq!((now, due), (before, due_before), "{at}: {now:?} {due:?}");
            assert_eq!((s.state, st.orders), (SlotState::Active, 0), "{at}");
            assert!(s.key.is_some(), "{at}");
        }
        // The order again: the uncut confirmation, charged (or owed) once.
        assert_eq!(expect_ok(&card.transmit(&apdu)), reference, "{at}");
        assert_eq!(books(&mut card), after, "{at}: once");
        assert_eq!(cm_info(&mut card).fees_due, due_after, "{at}");
        assert!(!nvm_contains(card.store().nvm(), &scalar), "{at}");
        assert_eq!(expect_ok(&card.transmit(&apdu)), reference, "{at}");
        let mut re = reopen_at(card.store().nvm(), SEED);
        assert_eq!(books(&mut re), after, "{at}");
    });
    assert_eq!(psd_apdu::data(&uncut).unwrap(), reference.as_slice());
    cuts
}

fn main() {
    let counts = [
        ("LOAD RATE TABLE", load_rate_table_tearing()),
        ("LOAD TRUST ANCHOR", load_trust_anchor_tearing()),
        ("GENERATE KEY", generate_key_tearing()),
        ("INSTALL KEY CERTIFICATE", install_key_certificate_tearing()),
        ("ISSUE POSTMARK", issue_postmark_tearing()),
        ("ISSUE AGENT CERTIFICATE", issue_agent_certificate_tearing()),
        (
            "ISSUE AGENT CERTIFICATE generating the key",
            generate_agent_certificate_tearing(),
        ),
        (
            "INSTALL KEY CERTIFICATE retiring a key",
            rotation_install_tearing(),
        ),
        ("SIGN", sign_tearing()),
        ("VALIDATE POSTMARK", validate_tearing()),
        ("REVOKE KEY paid", revoke_key_tearing(25, true)),
        ("REVOKE KEY due", revoke_key_tearing(50_000, false)),
    ];
    let mut total = 0;
    for (name, n) in counts {
        println!("certmeter tearing: {name}: {n} cut points");
        total += n;
    }
    println!("certmeter tearing: {total} cut points in all, every one consistent");
}
