//! The purse and value transfer, step by step as seed 002 (WO 97/40602) Fig. 8 draws them:
//! recognition (blocks 111-112, 117), PIN (113-116), amount and funds (118-119), registers
//! adjusted (120) and personality updated (121); then paying a merchant (Fig. 2, 5).
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use openpsd_core::client::psd_apdu;
use openpsd_core::client::purse_apdu;
use openpsd_core::client::transfer::{self as driver, Resolved, TransferError};
use openpsd_core::crypto::{IndiciumKey, MacKey};
use openpsd_core::psd::transfer::reset_recognition_data;
use openpsd_core::psd::{ins as psd_ins, CLA_PSD};
use openpsd_core::purse::purchase::{PurchaseRecord, PurchaseRequest};
use openpsd_core::purse::state::{Log, LogKind, PairedTable};
use openpsd_core::transfer::cert::DeviceKind;
use openpsd_core::transfer::{card_admin_key, CardHello, PsdHello, Session};
use openpsd_core::types::*;
use openpsd_core::Status;
use openpsd_tests::purse::*;
use openpsd_tests::*;

const SET0: RegisterSetIndex = RegisterSetIndex(0);

fn psd_cmd(ins: u8, p2: u8, data: &[u8]) -> Vec<u8> {
    psd_apdu::command(CLA_PSD, ins, 0, p2, data, 256)
}

/// Runs recognition by hand: returns the PSD's hello and the card's hello bytes.
fn recognise(psd: &mut TestCard, purse: &mut TestCard) -> (PsdHello, Vec<u8>) {
    expect_ok(&psd.transmit(&psd_apdu::select()));
    expect_ok(&purse.transmit(&purse_apdu::select()));
    let hello = expect_ok(&psd.transmit(&psd_cmd(psd_ins::OPEN_SESSION, 0, &[])));
    let hello = PsdHello::decode(&hello).expect("hello");
    let card = expect_ok(&purse.transmit(&purse_apdu::recognize(&hello)));
    let crypt = expect_ok(&psd.transmit(&psd_cmd(psd_ins::AUTHENTICATE_CARD, 0, &card)));
    expect_ok(&purse.transmit(&purse_apdu::authenticate_psd(&crypt)));
    (hello, card)
}

fn total(psd: &mut TestCard, purse: &mut TestCard) -> u64 {
    let r = registers(psd, 0);
    r.dr.0 + r.pending.0 + purse_data(purse).balance.0
}

#[test]
fn fig8_block_120_transfer_moves_value_from_dr_to_the_purse() {
    let mut psd = funded_psd(1, 10_000);
    let mut purse = purse(2);
    let out = driver::transfer(&mut psd, &mut purse, SET0, Amount(2_500), PIN).expect("moves");
    assert_eq!(out.resolved_first, None);
    let r = registers(&mut psd, 0);
    assert_eq!(r.dr, Amount(7_500));
    assert_eq!(r.ar, Amount(2_500), "value moved out counts as used");
    assert_eq!(r.transferred, Amount(2_500));
    assert_eq!(r.pending, Amount::ZERO);
    assert_eq!(
        r.control_sum,
        Amount(10_000),
        "a transfer never moves the control sum"
    );
    assert_eq!(r.pieces, PieceCount(0), "no mail piece was franked");
    assert_eq!(out.registers, r);
    let p = purse_data(&mut purse);
    assert_eq!(p.balance, Amount(2_500));
    assert_eq!(out.purse, p);
}

#[test]
fn fig8_block_121_both_devices_update_their_personality() {
    let mut psd = funded_psd(1, 10_000);
    let mut purse = purse(2);
    driver::transfer(&mut psd, &mut purse, SET0, Amount(1_000), PIN).expect("first");
    driver::transfer(&mut psd, &mut purse, SET0, Amount(700), PIN).expect("second");

    let info = driver::psd_transfer_info(&mut psd).expect("info");
    assert_eq!(info.state.started, TransferCount(2));
    assert_eq!(info.state.completed, TransferCount(2));
    assert_eq!(info.state.total_out, Amount(1_700));
    assert_eq!(info.state.last_date, Date::new(2026, 11, 21));
    assert_eq!(info.state.pending, None);

    let p = purse_data(&mut purse);
    assert_eq!(p.transfers, TransferCount(2));
    assert_eq!(p.total_in, Amount(1_700));
    assert_eq!(p.last_transfer, Date::new(2026, 11, 21));
    let paired =
        PairedTable::decode(&expect_ok(&purse.transmit(&purse_apdu::get_data(2)))).expect("table");
    let entry = paired.get(DEVICE).expect("the PSD is remembered");
    assert_eq!((entry.count, entry.total), (2, Amount(1_700)));
    assert_eq!(entry.last_transfer, TransferCount(1));
    let log = Log::decode(&expect_ok(&purse.transmit(&purse_apdu::get_data(3)))).expect("log");
    assert_eq!(log.0.len(), 2);
    assert_eq!(log.0[1].kind, LogKind::Credit);
    assert_eq!(log.0[1].balance, Amount(1_700));
    assert_eq!(log.0[1].counterpart, DEVICE.0);
}

#[test]
fn session_keys_depend_on_both_personalities_and_ids() {
    let psd_key = IndiciumKey::from_bytes(&[3; 32]).unwrap();
    let card_key = IndiciumKey::from_bytes(&[4; 32]).unwrap();
    let psd_eph = IndiciumKey::from_bytes(&[5; 32]).unwrap();
    let other_eph = IndiciumKey::from_bytes(&[6; 32]).unwrap();
    let issuer = issuer_key();
    // Z2, the static-static secret: the same from either side.
    let z2 = card_key.agree(&psd_key.public_key_compressed()).unwrap();
    assert_eq!(
        *z2,
        *psd_key.agree(&card_key.public_key_compressed()).unwrap()
    );
    let psd = PsdHello {
        device: DEVICE,
        scheme: SCHEME,
        transfers: TransferCount(4),
        total_out: Amount(100),
        challenge: [1; 16],
        pending_for: None,
        ephemeral: psd_eph.public_key_compressed(),
        certificate: certificate_for(
            &issuer,
            DeviceKind::Psd,
            SCHEME,
            DEVICE.0,
            psd_key.public_key_compressed(),
        ),
    };
    let card = CardHello {
        card: CARD,
        scheme: SCHEME,
        transfers: TransferCount(9),
        total_in: Amount(100),
        challenge: [2; 16],
        certificate: certificate_for(
            &issuer,
            DeviceKind::Purse,
            SCHEME,
            CARD.0,
            card_key.public_key_compressed(),
        ),
        cryptogram: [0; 16],
    };
    let on_card = |p: &PsdHello, c: &CardHello| {
        Session::for_card(&card_key, z2.as_ref(), p, c)
            .unwrap()
            .card_cryptogram()
    };
    let base = on_card(&psd, &card);
    // Both sides derive the same key from their own private halves.
    let on_psd = Session::for_psd(&psd_eph, z2.as_ref(), &psd, &card).unwrap();
    assert_eq!(on_psd.card_cryptogram(), base);
    let variants = [
        on_card(
            &PsdHello {
                transfers: TransferCount(5),
                ..psd.clone()
            },
            &card,
        ),
        on_card(
            &PsdHello {
                total_out: Amount(101),
                ..psd.clone()
            },
            &card,
        ),
        on_card(
            &psd,
            &CardHello {
                transfers: TransferCount(10),
                ..card.clone()
            },
        ),
        on_card(
            &PsdHello {
                device: DeviceId(*b"PSD00002"),
                ..psd.clone()
            },
            &card,
        ),
        on_card(
            &psd,
            &CardHello {
                challenge: [3; 16],
                ..card.clone()
            },
        ),
        on_card(
            &PsdHello {
                ephemeral: other_eph.public_key_compressed(),
                ..psd.clone()
            },
            &card,
        ),
    ];
    for v in variants {
        assert_ne!(v, base);
    }
    // A PSD without the certified key's private half has another Z2, hence another key.
    let impostor = IndiciumKey::from_bytes(&[7; 32]).unwrap();
    let z2_wrong = impostor.agree(&card_key.public_key_compressed()).unwrap();
    let wrong = Session::for_psd(&psd_eph, z2_wrong.as_ref(), &psd, &card).unwrap();
    assert_ne!(wrong.card_cryptogram(), base);
}

#[test]
fn fig8_block_119_insufficient_funds_debits_nothing() {
    let mut psd = funded_psd(1, 1_000);
    let mut purse = purse(2);
    let err = driver::transfer(&mut psd, &mut purse, SET0, Amount(1_001), PIN).unwrap_err();
    assert_eq!(err.status(), Some(Status::InsufficientFunds));
    assert_eq!(registers(&mut psd, 0).dr, Amount(1_000));
    assert_eq!(purse_data(&mut purse).balance, Amount::ZERO);
}

#[test]
fn purse_limits_are_checked_before_the_psd_debits() {
    let mut psd = funded_psd(1, 100_000);
    let mut purse = purse(2);
    let err = driver::transfer(&mut psd, &mut purse, SET0, Amount(20_001), PIN).unwrap_err();
    assert_eq!(err.status(), Some(Status::TransferAboveLimit));
    for _ in 0..2 {
        driver::transfer(&mut psd, &mut purse, SET0, Amount(20_000), PIN).expect("fits");
    }
    let err = driver::transfer(&mut psd, &mut purse, SET0, Amount(10_001), PIN).unwrap_err();
    assert_eq!(err.status(), Some(Status::BalanceAboveLimit));
    assert_eq!(registers(&mut psd, 0).dr, Amount(60_000));
    assert_eq!(purse_data(&mut purse).balance, Amount(40_000));
}

#[test]
fn a_card_of_another_scheme_refuses_the_psd_and_nothing_is_counted() {
    // A purse of another issuer checks the PSD's certificate first (public data, nothing
    // secret compared): refused, nothing written on either side.
    let mut psd = funded_psd(1, 10_000);
    let mut stranger = purse_in(3, CARD, SchemeId(0x0002_0002), &stranger_issuer_key());
    let err = driver::transfer(&mut psd, &mut stranger, SET0, Amount(100), PIN).unwrap_err();
    assert_eq!(
        err,
        TransferError::Refused(driver::Side::Purse, "RECOGNIZE", Status::CertificateRefused)
    );
    let mut same_id = purse_in(4, CARD, SCHEME, &stranger_issuer_key());
    let err = driver::transfer(&mut psd, &mut same_id, SET0, Amount(100), PIN).unwrap_err();
    assert_eq!(err.status(), Some(Status::CertificateRefused));
    assert_eq!(
        driver::psd_transfer_info(&mut psd).unwrap().state.failures,
        0
    );
    assert_eq!(registers(&mut psd, 0).dr, Amount(10_000));
}

/// A card that answers RECOGNIZE without checking anything (a forger's): its hello
/// carries `cert` and a cryptogram under the session its own `key` gives.
fn forged_card_hello(
    psd: &mut TestCard,
    key: &IndiciumKey,
    cert: openpsd_core::transfer::cert::DeviceCertificate,
) -> Vec<u8> {
    expect_ok(&psd.transmit(&psd_apdu::select()));
    let hello = expect_ok(&psd.transmit(&psd_cmd(psd_ins::OPEN_SESSION, 0, &[])));
    let hello = PsdHello::decode(&hello).expect("hello");
    let mut card = CardHello {
        card: CardId(cert.device),
        scheme: cert.scheme,
        transfers: TransferCount(0),
        total_in: Amount::ZERO,
        challenge: [7; 16],
        certificate: cert,
        cryptogram: [0; 16],
    };
    let z2 = key.agree(&hello.certificate.public_key).unwrap();
    card.cryptogram = Session::for_card(key, z2.as_ref(), &hello, &card)
        .unwrap()
        .card_cryptogram();
    card.encode()
}

#[test]
fn fig8_block_111_117_a_card_not_certified_by_the_issuer_is_refused_and_counted() {
    let mut psd = funded_psd(1, 10_000);
    // The forger certifies its own key with its own "issuer", for this scheme and card ID.
    let key = IndiciumKey::from_bytes(&[0x33; 32]).unwrap();
    let cert = certificate_for(
        &stranger_issuer_key(),
        DeviceKind::Purse,
        SCHEME,
        CARD.0,
        key.public_key_compressed(),
    );
    for left in (0..MAX_FAILURES).rev() {
        let card = forged_card_hello(&mut psd, &key, cert);
        expect_refused(
            &psd.transmit(&psd_cmd(psd_ins::AUTHENTICATE_CARD, 0, &card)),
            Status::VerificationFailed(left),
        );
    }
    // Block 117: the function is blocked, even for a card of the right scheme.
    let mut good = purse(2);
    let err = driver::transfer(&mut psd, &mut good, SET0, Amount(100), PIN).unwrap_err();
    assert_eq!(err.status(), Some(Status::AuthenticationBlocked));
    let info = driver::psd_transfer_info(&mut psd).expect("info");
    assert_eq!(info.state.failures, MAX_FAILURES);
    assert_eq!(registers(&mut psd, 0).dr, Amount(10_000));

    // Only an authenticated reset (signed by the scheme issuer, counter going up) unblocks it.
    let issuer = issuer_key();
    let reset = |counter, key: &IndiciumKey| {
        psd_cmd(
            psd_ins::RESET_RECOGNITION,
            0,
            &reset_recognition_data(key, DEVICE, counter),
        )
    };
    expect_refused(
        &psd.transmit(&reset(1, &stranger_issuer_key())),
        Status::SecurityStatusNotSatisfied,
    );
    expect_ok(&psd.transmit(&reset(1, &issuer)));
    expect_refused(
        &psd.transmit(&reset(1, &issuer)),
        Status::SecurityStatusNotSatisfied,
    );
    driver::transfer(&mut psd, &mut good, SET0, Amount(100), PIN).expect("unblocked");
}

#[test]
fn fig8_block_112_the_purse_counts_failed_psd_cryptograms_and_blocks() {
    let mut psd = funded_psd(1, 10_000);
    let mut purse = purse(2);
    expect_ok(&psd.transmit(&psd_apdu::select()));
    for left in (0..MAX_FAILURES).rev() {
        let hello = expect_ok(&psd.transmit(&psd_cmd(psd_ins::OPEN_SESSION, 0, &[])));
        let hello = PsdHello::decode(&hello).expect("hello");
        expect_ok(&purse.transmit(&purse_apdu::recognize(&hello)));
        expect_refused(
            &purse.transmit(&purse_apdu::authenticate_psd(&[0x55; 16])),
            Status::VerificationFailed(left),
        );
    }
    let err = driver::transfer(&mut psd, &mut purse, SET0, Amount(100), PIN).unwrap_err();
    assert_eq!(
        err,
        TransferError::Refused(
            driver::Side::Purse,
            "RECOGNIZE",
            Status::AuthenticationBlocked
        )
    );
    let admin = card_admin_key(&MacKey::new(ADMIN_KEY), CARD);
    expect_ok(&purse.transmit(&purse_apdu::reset_recognition(&admin, CARD, 7)));
    expect_refused(
        &purse.transmit(&purse_apdu::reset_recognition(&admin, CARD, 7)),
        Status::SecurityStatusNotSatisfied,
    );
    driver::transfer(&mut psd, &mut purse, SET0, Amount(100), PIN).expect("unblocked");
}

#[test]
fn fig8_block_113_116_wrong_pin_until_blocked_then_issuer_unblock() {
    let mut psd = funded_psd(1, 10_000);
    let mut purse = purse(2);
    for left in (0..PIN_TRIES).rev() {
        let err = driver::transfer(&mut psd, &mut purse, SET0, Amount(100), b"0000").unwrap_err();
        assert_eq!(err.status(), Some(Status::VerificationFailed(left)));
    }
    // Blocked: even the right PIN is refused, and VERIFY without data says so.
    let err = driver::transfer(&mut psd, &mut purse, SET0, Amount(100), PIN).unwrap_err();
    assert_eq!(err.status(), Some(Status::AuthenticationBlocked));
    expect_refused(
        &purse.transmit(&purse_apdu::verify(&[])),
        Status::AuthenticationBlocked,
    );
    assert_eq!(purse_data(&mut purse).pin_tries_left, 0);

    // A transfer request without a verified PIN is refused.
    recognise(&mut psd, &mut purse);
    expect_refused(
        &purse.transmit(&purse_apdu::transfer_request(Amount(100))),
        Status::SecurityStatusNotSatisfied,
    );

    // Unblock: only with the card's admin key and a fresh counter.
    let wrong = MacKey::new([1; 16]);
    expect_refused(
        &purse.transmit(&purse_apdu::unblock_pin(&wrong, CARD, 1, b"1357")),
        Status::SecurityStatusNotSatisfied,
    );
    let admin = card_admin_key(&MacKey::new(ADMIN_KEY), CARD);
    expect_ok(&purse.transmit(&purse_apdu::unblock_pin(&admin, CARD, 1, b"1357")));
    expect_refused(
        &purse.transmit(&purse_apdu::unblock_pin(&admin, CARD, 1, b"1357")),
        Status::SecurityStatusNotSatisfied,
    );
    assert_eq!(purse_data(&mut purse).pin_tries_left, PIN_TRIES);
    driver::transfer(&mut psd, &mut purse, SET0, Amount(100), b"1357").expect("new PIN");
    assert_eq!(registers(&mut psd, 0).dr, Amount(9_900));
}

#[test]
fn pin_change_needs_the_old_pin() {
    let mut purse = purse(2);
    expect_refused(
        &purse.transmit(&purse_apdu::change_pin(b"1111", b"9999")),
        Status::VerificationFailed(PIN_TRIES - 1),
    );
    expect_ok(&purse.transmit(&purse_apdu::change_pin(PIN, b"97531")));
    expect_refused(
        &purse.transmit(&purse_apdu::verify(PIN)),
        Status::VerificationFailed(PIN_TRIES - 1),
    );
    expect_ok(&purse.transmit(&purse_apdu::verify(b"97531")));
    assert_eq!(purse_data(&mut purse).pin_tries_left, PIN_TRIES);
}

#[test]
fn pin_attack_power_cut_after_a_wrong_guess_still_costs_a_try() {
    use openpsd_core::store::PowerCut;
    let purse0 = purse(2);
    let base = purse0.store().nvm().clone();
    let mut evaluated = 0;
    for torn in [false, true] {
        for k in 0.. {
            let mut card = reopen_purse(&base, 2);
            let start = card.store().writes();
            card.store_mut().set_power_cut(Some(PowerCut {
                at_write: start + k,
                torn,
            }));
            let resp = card.transmit(&purse_apdu::verify(b"0000"));
            let dead = card.store().is_dead();
            let after = purse_data(&mut reopen_purse(card.store().nvm(), 2)).pin_tries_left;
            if !dead {
                // The guess was compared only after the decrement was durable, and no
                // write follows a wrong guess: there is no later instant to cut.
                assert_eq!(
                    resp,
                    Status::VerificationFailed(PIN_TRIES - 1).sw().to_be_bytes()
                );
                assert_eq!(after, PIN_TRIES - 1, "cut {k} torn {torn}");
                evaluated += 1;
                break;
            }
            // Power went before the compare: no answer, nothing learned.
            assert_eq!(psd_apdu::sw(&resp), Status::MemoryFailure.sw());
            assert!(after == PIN_TRIES || after == PIN_TRIES - 1);
        }
    }
    assert_eq!(evaluated, 2);
    // And a correct guess cut between the decrement and the restore costs a try too, but
    // never gives a verified PIN without the decrement having been durable.
    let mut card = reopen_purse(&base, 2);
    let start = card.store().writes();
    let decrement_writes = {
        let mut probe = reopen_purse(&base, 2);
        let s = probe.store().writes();
        probe.transmit(&purse_apdu::verify(b"0000"));
        probe.store().writes() - s
    };
    card.store_mut().set_power_cut(Some(PowerCut {
        at_write: start + decrement_writes,
        torn: false,
    }));
    let resp = card.transmit(&purse_apdu::verify(PIN));
    assert_eq!(psd_apdu::sw(&resp), Status::MemoryFailure.sw());
    let after = purse_data(&mut reopen_purse(card.store().nvm(), 2)).pin_tries_left;
    assert_eq!(after, PIN_TRIES - 1);
}

#[test]
fn messages_out_of_order_or_replayed_are_refused_and_change_nothing() {
    let mut psd = funded_psd(1, 10_000);
    let mut purse = purse(2);
    // Reordered: credit or confirm before anything.
    recognise(&mut psd, &mut purse);
    expect_ok(&purse.transmit(&purse_apdu::verify(PIN)));
    expect_refused(
        &purse.transmit(&purse_apdu::transfer_credit(&[0; 28])),
        Status::ConditionsNotSatisfied,
    );
    expect_refused(
        &psd.transmit(&psd_cmd(psd_ins::TRANSFER_CONFIRM, 0, &[0; 28])),
        Status::ConditionsNotSatisfied,
    );
    let req = expect_ok(&purse.transmit(&purse_apdu::transfer_request(Amount(300))));
    // A forged request (amount changed) fails the MAC.
    let mut forged = req.clone();
    forged[7] ^= 1;
    expect_refused(
        &psd.transmit(&psd_cmd(psd_ins::TRANSFER_DEBIT, 0, &forged)),
        Status::SecurityStatusNotSatisfied,
    );
    let value = expect_ok(&psd.transmit(&psd_cmd(psd_ins::TRANSFER_DEBIT, 0, &req)));
    // Replayed request: the PSD has moved on.
    expect_refused(
        &psd.transmit(&psd_cmd(psd_ins::TRANSFER_DEBIT, 0, &req)),
        Status::ConditionsNotSatisfied,
    );
    let ack = expect_ok(&purse.transmit(&purse_apdu::transfer_credit(&value)));
    // Replayed value: credited once.
    expect_refused(
        &purse.transmit(&purse_apdu::transfer_credit(&value)),
        Status::ConditionsNotSatisfied,
    );
    expect_ok(&psd.transmit(&psd_cmd(psd_ins::TRANSFER_CONFIRM, 0, &ack)));
    expect_refused(
        &psd.transmit(&psd_cmd(psd_ins::TRANSFER_CONFIRM, 0, &ack)),
        Status::ConditionsNotSatisfied,
    );
    assert_eq!(total(&mut psd, &mut purse), 10_000);
    assert_eq!(purse_data(&mut purse).balance, Amount(300));

    // The old value message in a new session: wrong session key.
    recognise(&mut psd, &mut purse);
    expect_ok(&purse.transmit(&purse_apdu::verify(PIN)));
    expect_ok(&purse.transmit(&purse_apdu::transfer_request(Amount(300))));
    expect_refused(
        &purse.transmit(&purse_apdu::transfer_credit(&value)),
        Status::SecurityStatusNotSatisfied,
    );
    assert_eq!(purse_data(&mut purse).balance, Amount(300));
    assert_eq!(total(&mut psd, &mut purse), 10_000);
}

#[test]
fn lost_value_message_is_undone_at_the_next_contact() {
    let mut psd = funded_psd(1, 10_000);
    let mut purse = purse(2);
    recognise(&mut psd, &mut purse);
    expect_ok(&purse.transmit(&purse_apdu::verify(PIN)));
    let req = expect_ok(&purse.transmit(&purse_apdu::transfer_request(Amount(400))));
    let _lost = expect_ok(&psd.transmit(&psd_cmd(psd_ins::TRANSFER_DEBIT, 0, &req)));
    let r = registers(&mut psd, 0);
    assert_eq!((r.dr, r.pending), (Amount(9_600), Amount(400)));
    assert_eq!(total(&mut psd, &mut purse), 10_000);
    // While pending, another transfer is refused; indicia still work.
    let info = driver::psd_transfer_info(&mut psd).expect("info");
    assert_eq!(info.state.pending.map(|p| p.card), Some(CARD));
    let out = driver::resolve_pending(&mut psd, &mut purse).expect("resolves");
    assert_eq!(out, Some((Resolved::Undone, Amount(400))));
    let r = registers(&mut psd, 0);
    assert_eq!(
        (r.dr, r.pending, r.ar),
        (Amount(10_000), Amount::ZERO, Amount::ZERO)
    );
    assert_eq!(purse_data(&mut purse).balance, Amount::ZERO);
}

#[test]
fn lost_acknowledgement_is_completed_at_the_next_contact() {
    let mut psd = funded_psd(1, 10_000);
    let mut purse = purse(2);
    recognise(&mut psd, &mut purse);
    expect_ok(&purse.transmit(&purse_apdu::verify(PIN)));
    let req = expect_ok(&purse.transmit(&purse_apdu::transfer_request(Amount(400))));
    let value = expect_ok(&psd.transmit(&psd_cmd(psd_ins::TRANSFER_DEBIT, 0, &req)));
    let _lost_ack = expect_ok(&purse.transmit(&purse_apdu::transfer_credit(&value)));
    assert_eq!(
        total(&mut psd, &mut purse),
        10_400,
        "pending + credited, until resolved"
    );
    // Both sides reset; the next transfer resolves first, then moves its own amount.
    psd.reset();
    purse.reset();
    let out = driver::transfer(&mut psd, &mut purse, SET0, Amount(100), PIN).expect("moves");
    assert_eq!(out.resolved_first, Some((Resolved::Completed, Amount(400))));
    let r = registers(&mut psd, 0);
    assert_eq!(
        (r.dr, r.pending, r.transferred),
        (Amount(9_500), Amount::ZERO, Amount(500))
    );
    assert_eq!(purse_data(&mut purse).balance, Amount(500));
    assert_eq!(total(&mut psd, &mut purse), 10_000);
}

#[test]
fn a_pending_transfer_waits_for_its_own_card() {
    let mut psd = funded_psd(1, 10_000);
    let mut purse = purse(2);
    recognise(&mut psd, &mut purse);
    expect_ok(&purse.transmit(&purse_apdu::verify(PIN)));
    let req = expect_ok(&purse.transmit(&purse_apdu::transfer_request(Amount(400))));
    expect_ok(&psd.transmit(&psd_cmd(psd_ins::TRANSFER_DEBIT, 0, &req)));
    let mut other = purse_in(4, CardId(*b"PURSE002"), SCHEME, &issuer_key());
    let err = driver::transfer(&mut psd, &mut other, SET0, Amount(100), PIN).unwrap_err();
    assert_eq!(err, TransferError::PendingForOtherCard(CARD));
    // Resolving by hand with the other card is refused by the PSD itself.
    recognise(&mut psd, &mut other);
    let status = expect_ok(&other.transmit(&purse_apdu::transfer_status()));
    expect_refused(
        &psd.transmit(&psd_cmd(psd_ins::TRANSFER_RESOLVE, 0, &status)),
        Status::PendingForOtherCard,
    );
    assert_eq!(registers(&mut psd, 0).pending, Amount(400));
}

#[test]
fn audits_show_transfers_separately() {
    let mut psd = funded_psd(1, 10_000);
    let mut purse = purse(2);
    driver::transfer(&mut psd, &mut purse, SET0, Amount(1_200), PIN).expect("moves");
    expect_ok(&psd.transmit(&psd_apdu::issue_indicium(SET0, &request(1, 85, 21))));
    let a = Kms::new().audit(&mut psd, SET0, [7; 16]);
    assert_eq!(a.transferred, Amount(1_200));
    assert_eq!(a.ar, Amount(1_285));
    assert_eq!(a.pending, Amount::ZERO);
    assert_eq!(a.ar.0 + a.dr.0 + a.pending.0, a.control_sum.0);
}

fn purchase(terminal: u8, counter: u32, amount: u64) -> PurchaseRequest {
    PurchaseRequest {
        terminal: TerminalId([terminal; 8]),
        terminal_counter: counter,
        amount: Amount(amount),
        date: Date::new(2026, 11, 21).expect("date"),
    }
}

#[test]
fn fig2_the_purse_pays_a_merchant_with_a_signed_record() {
    let mut psd = funded_psd(1, 10_000);
    let mut purse = purse(2);
    driver::transfer(&mut psd, &mut purse, SET0, Amount(1_000), PIN).expect("moves");
    let info = purse_data(&mut purse);
    assert!(info.certified_by(&issuer_key().public_key()));

    // No PIN, no purchase.
    expect_refused(
        &purse.transmit(&purse_apdu::purchase(&purchase(1, 1, 250))),
        Status::SecurityStatusNotSatisfied,
    );
    expect_ok(&purse.transmit(&purse_apdu::verify(PIN)));
    let rec = expect_ok(&purse.transmit(&purse_apdu::purchase(&purchase(1, 1, 250))));
    let r = PurchaseRecord::verify(&rec, &info.public_key).expect("signature verifies");
    assert_eq!(
        (
            r.card,
            r.number,
            r.amount,
            r.balance,
            r.terminal,
            r.terminal_counter
        ),
        (CARD, 1, Amount(250), Amount(750), TerminalId([1; 8]), 1)
    );
    // A terminal that lost the reply gets the same record, debited once.
    let again = expect_ok(&purse.transmit(&purse_apdu::purchase(&purchase(1, 1, 250))));
    assert_eq!(again, rec);
    // The same counter with another amount is refused.
    expect_refused(
        &purse.transmit(&purse_apdu::purchase(&purchase(1, 1, 999))),
        Status::TransactionIdReused,
    );
    // Too much.
    expect_refused(
        &purse.transmit(&purse_apdu::purchase(&purchase(1, 2, 751))),
        Status::InsufficientFunds,
    );
    let rec2 = expect_ok(&purse.transmit(&purse_apdu::purchase(&purchase(1, 2, 750))));
    let r2 = PurchaseRecord::verify(&rec2, &info.public_key).expect("verifies");
    assert_eq!((r2.number, r2.balance), (2, Amount::ZERO));
    // A tampered record does not verify.
    let mut bad = rec2.clone();
    bad[40] ^= 1;
    assert!(PurchaseRecord::verify(&bad, &info.public_key).is_none());
    let log = Log::decode(&expect_ok(&purse.transmit(&purse_apdu::get_data(3)))).expect("log");
    assert_eq!(
        log.0.iter().filter(|e| e.kind == LogKind::Purchase).count(),
        2
    );
}

#[test]
fn an_uncertified_purse_cannot_pay_and_a_bad_certificate_is_refused() {
    use openpsd_core::platform::SeededPlatform;
    use openpsd_core::store::MemStore;
    let mut platform = SeededPlatform::new(5);
    platform.today = Date::new(2026, 11, 21);
    let mut card = openpsd_core::purse::purse_card(MemStore::new(), platform).expect("blank loads");
    expect_ok(&card.transmit(&purse_apdu::select()));
    let pk = expect_ok(
        &card.transmit(&purse_apdu::personalize(&purse_personalization(
            CARD, SCHEME,
        ))),
    );
    expect_refused(
        &card.transmit(&purse_apdu::personalize(&purse_personalization(
            CARD, SCHEME,
        ))),
        Status::ConditionsNotSatisfied,
    );
    let forged = IndiciumKey::from_bytes(&[8; 32]).expect("scalar").sign(
        &openpsd_core::purse::personal::certificate_body(CARD, SCHEME, &pk),
    );
    expect_refused(
        &card.transmit(&purse_apdu::certify(&forged)),
        Status::SecurityStatusNotSatisfied,
    );
    expect_ok(&card.transmit(&purse_apdu::verify(PIN)));
    expect_refused(
        &card.transmit(&purse_apdu::purchase(&purchase(1, 1, 1))),
        Status::ConditionsNotSatisfied,
    );
}

#[test]
fn a_refill_counts_pending_value_against_max_dr() {
    // Pending value may come back to DR; a refill may not fill the room it needs.
    let mut psd = funded_psd(1, MAX_DR.0);
    let mut purse = purse(2);
    recognise(&mut psd, &mut purse);
    expect_ok(&purse.transmit(&purse_apdu::verify(PIN)));
    let req = expect_ok(&purse.transmit(&purse_apdu::transfer_request(Amount(100))));
    expect_ok(&psd.transmit(&psd_cmd(psd_ins::TRANSFER_DEBIT, 0, &req)));
    let msg = Kms::new().refill_for(&mut psd, SET0, Amount(100), [2; 8]);
    expect_refused(
        &psd.transmit(&psd_apdu::refill(SET0, &msg)),
        Status::RefillAboveLimit,
    );
    let out = driver::resolve_pending(&mut psd, &mut purse).expect("resolves");
    assert_eq!(out, Some((Resolved::Undone, Amount(100))));
    assert_eq!(registers(&mut psd, 0).dr, MAX_DR);
}

#[test]
fn change_pin_with_short_data_costs_a_try_and_reveals_no_length() {
    let mut purse = purse(2);
    for (data, left) in [(&b"246"[..], 2), (&b"2468"[..], 1)] {
        // Too short for old ‖ new, or exactly the old PIN with no new one: both are a
        // wrong-PIN try or a refused new PIN — never a length answer before the compare.
        let resp = purse.transmit(&openpsd_core::client::command(
            0x00, 0x24, 0x00, 0x81, data, 0,
        ));
        if data == PIN {
            assert_eq!(psd_apdu::sw(&resp), Status::WrongData.sw(), "empty new PIN");
            assert_eq!(purse_data(&mut purse).pin_tries_left, PIN_TRIES);
        } else {
            assert_eq!(psd_apdu::sw(&resp), Status::VerificationFailed(left).sw());
        }
    }
}

#[test]
fn a_purse_remembers_many_psds_and_hosts_read_long_answers() {
    let mut purse = purse(2);
    for n in 0..12u8 {
        let mut p = psd_personalization(SCHEME);
        p.device = DeviceId([b'P', b'S', b'D', b'0', b'0', b'0', b'A', b'0' + n]);
        let mut psd = funded_psd_as(100 + u64::from(n), p, 1_000);
        driver::transfer(&mut psd, &mut purse, SET0, Amount(10), PIN).expect("moves");
    }
    expect_ok(&purse.transmit(&purse_apdu::select()));
    let table = PairedTable::decode(&expect_ok(&purse.transmit(&purse_apdu::get_data(2))))
        .expect("the whole table, over 256 bytes");
    assert_eq!(table.entries.len(), 12);
    let log = Log::decode(&expect_ok(&purse.transmit(&purse_apdu::get_data(3)))).expect("log");
    assert_eq!(log.0.len(), 10, "the log keeps the last 10");
    assert_eq!(purse_data(&mut purse).balance, Amount(120));
}

#[test]
fn an_overdue_psd_moves_no_value_out() {
    let mut p = psd_personalization(SCHEME);
    p.inspection_days = 28;
    let mut psd = funded_psd_as(1, p, 10_000);
    let mut purse = purse(2);
    let err = driver::transfer(&mut psd, &mut purse, SET0, Amount(100), PIN).unwrap_err();
    assert_eq!(err.status(), Some(Status::InspectionOverdue));
    assert_eq!(registers(&mut psd, 0).dr, Amount(10_000));
    assert_eq!(purse_data(&mut purse).balance, Amount::ZERO);
}
