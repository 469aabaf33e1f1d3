//! The issuer's settlement of a transfer whose purse never comes back (issue 18 §1): the
//! PSD's pending transfer is completed or undone by the scheme issuer's signed decision
//! (TRANSFER RESOLVE P1 `01`), for this PSD and this transfer only, with a counter that
//! goes up. A forged, misdirected or replayed decision is refused with nothing changed, and
//! a power cut at any write of the command leaves the old state or the new one. On the
//! purse, the issuer's RELEASE PARTNER frees the place of a PSD that never comes back and
//! answers, MACed, what the card credited from it: the evidence for the PSD's settlement.
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use openpsd_core::client::psd_apdu;
use openpsd_core::client::purse_apdu;
use openpsd_core::client::transfer::{self as driver, TransferError};
use openpsd_core::client::PsdClient;
use openpsd_core::crypto::{IndiciumKey, MacKey};
use openpsd_core::psd::registers::Registers;
use openpsd_core::psd::settle::{settle_transfer_data, Decision, SETTLE_DATA_LEN};
use openpsd_core::psd::transfer::{reset_recognition_data, Pending, TransferInfo, TransferState};
use openpsd_core::psd::{ins as psd_ins, CLA_PSD};
use openpsd_core::purse::release::Released;
use openpsd_core::purse::state::{Closure, PairedTable, MAX_PAIRED};
use openpsd_core::purse::{ins as purse_ins, CLA_PURSE};
use openpsd_core::store::PowerCut;
use openpsd_core::transfer::card_admin_key;
use openpsd_core::types::*;
use openpsd_core::Status;
use openpsd_tests::purse::*;
use openpsd_tests::*;

const SET0: RegisterSetIndex = RegisterSetIndex(0);
const FUNDS: u64 = 10_000;
const AMOUNT: u64 = 400;
const PSD_SEED: u64 = 51;
const NEW_CARD: CardId = CardId(*b"PURSE002");

/// The command refused with `status`, and the store unchanged (no write at all).
fn refused_unchanged(card: &mut TestCard, apdu: &[u8], status: Status) {
    let before = card.store().nvm().clone();
    let writes = card.store().writes();
    expect_refused(&card.transmit(apdu), status);
    assert_eq!(card.store().writes(), writes, "a refusal writes nothing");
    assert!(card.store().nvm() == &before, "a refusal changes nothing");
}

fn transfer_state(psd: &mut TestCard) -> TransferState {
    driver::psd_transfer_info(psd).expect("transfer info").state
}

/// What the issuer reads from the PSD (GET DATA `00 02`) before it decides.
fn pending_of(psd: &mut TestCard) -> Pending {
    transfer_state(psd).pending.expect("a transfer pending")
}

/// The issuer's settlement APDU for `pending` on the test PSD.
fn settlement(issuer: &IndiciumKey, pending: &Pending, counter: u32, d: Decision) -> Vec<u8> {
    psd_apdu::transfer_settle(&settle_transfer_data(issuer, DEVICE, pending, counter, d))
}

/// Settles and returns the outcome byte and the registers the PSD answered.
fn settle_ok(psd: &mut TestCard, apdu: &[u8]) -> (u8, Registers) {
    let out = expect_ok(&psd.transmit(apdu));
    (out[0], Registers::decode(&out[1..]).expect("registers"))
}

/// A transfer of `AMOUNT` cut after TRANSFER DEBIT (the VAL never reached the purse), or
/// after TRANSFER CREDIT (`credited`: the ACK never reached the PSD). The purse is then
/// lost; the returned purse is only kept to count the value it holds.
fn cut_transfer(psd: &mut TestCard, purse: &mut TestCard, credited: bool) {
    run_until(psd, purse, AMOUNT, if credited { 10 } else { 9 });
    assert_eq!(registers(psd, 0).pending, Amount(AMOUNT));
}

/// DR + pending of the PSD + what each purse holds.
fn total(psd: &mut TestCard, purses: &mut [&mut TestCard]) -> u64 {
    let r = registers(psd, 0);
    assert_eq!(r.ar.0 + r.dr.0 + r.pending.0, r.control_sum.0);
    r.dr.0
        + r.pending.0
        + purses
            .iter_mut()
            .map(|p| purse_data(p).balance.0)
            .sum::<u64>()
}

#[test]
fn a_purse_lost_after_a_lost_val_is_settled_by_the_issuers_undo() {
    let mut psd = funded_psd(PSD_SEED, FUNDS);
    let mut lost = purse(2);
    cut_transfer(&mut psd, &mut lost, false);
    assert_eq!(
        purse_data(&mut lost).balance,
        Amount::ZERO,
        "never credited"
    );

    // The purse is gone: another card is refused while the transfer is pending.
    let mut other = purse_in(3, NEW_CARD, SCHEME, &issuer_key());
    let err = driver::transfer(&mut psd, &mut other, SET0, Amount(100), PIN).unwrap_err();
    assert_eq!(err, TransferError::PendingForOtherCard(CARD));

    // The issuer reads the pending transfer, decides undo and signs it for this PSD.
    psd.reset();
    let pending = pending_of(&mut psd);
    assert_eq!((pending.card, pending.amount), (CARD, Amount(AMOUNT)));
    let (outcome, r) = settle_ok(
        &mut psd,
        &settlement(&issuer_key(), &pending, 1, Decision::Undo),
    );
    assert_eq!(outcome, 0x02, "undone");
    assert_eq!(
        (r.dr, r.pending, r.ar, r.transferred),
        (Amount(FUNDS), Amount::ZERO, Amount::ZERO, Amount::ZERO)
    );
    let state = transfer_state(&mut psd);
    assert_eq!(state.pending, None);
    assert_eq!(
        (state.completed, state.total_out),
        (TransferCount(0), Amount::ZERO)
    );
    assert_eq!(state.reset_counter, 1, "the issuer counter is recorded");

    // The PSD transfers again, to the new purse; value conserved across all three devices.
    driver::transfer(&mut psd, &mut other, SET0, Amount(100), PIN).expect("transfers again");
    assert_eq!(total(&mut psd, &mut [&mut lost, &mut other]), FUNDS);
    assert_eq!(purse_data(&mut other).balance, Amount(100));
}

#[test]
fn a_purse_destroyed_after_a_lost_ack_is_settled_by_the_issuers_complete() {
    let mut psd = funded_psd(PSD_SEED, FUNDS);
    let mut destroyed = purse(2);
    // The ACK is lost: the purse holds the value, the PSD still shows it pending.
    let ack = run_until(&mut psd, &mut destroyed, AMOUNT, 10).last;
    assert_eq!(purse_data(&mut destroyed).balance, Amount(AMOUNT));
    // Read without SELECT, which would end the PSD's session.
    let info = expect_ok(&psd.transmit(&psd_apdu::get_transfer_data()));
    let pending = TransferInfo::decode(&info).unwrap().state.pending.unwrap();

    // The purse's own evidence (its table shows this transfer credited) lets the issuer
    // sign complete. The PSD is still in the session of the lost ACK: the settlement ends
    // that session, so the late ACK cannot complete the transfer a second time.
    let (outcome, r) = settle_ok(
        &mut psd,
        &settlement(&issuer_key(), &pending, 7, Decision::Complete),
    );
    assert_eq!(outcome, 0x01, "completed");
    assert_eq!(
        (r.dr, r.pending, r.ar, r.transferred),
        (
            Amount(FUNDS - AMOUNT),
            Amount::ZERO,
            Amount(AMOUNT),
            Amount(AMOUNT)
        )
    );
    refused_unchanged(
        &mut psd,
        &psd_apdu::transfer_confirm(&ack),
        Status::ConditionsNotSatisfied,
    );
    let state = transfer_state(&mut psd);
    assert_eq!(state.pending, None);
    assert_eq!(
        (state.completed, state.total_out),
        (TransferCount(1), Amount(AMOUNT))
    );
    assert_eq!(state.last_date, Date::new(2026, 11, 21));

    // The value is counted once: in the destroyed purse, out of the PSD's DR.
    let mut other = purse_in(3, NEW_CARD, SCHEME, &issuer_key());
    driver::transfer(&mut psd, &mut other, SET0, Amount(100), PIN).expect("transfers again");
    assert_eq!(total(&mut psd, &mut [&mut destroyed, &mut other]), FUNDS);
    assert_eq!(registers(&mut psd, 0).transferred, Amount(AMOUNT + 100));
}

#[test]
fn the_typed_client_settles_and_reads_the_answer() {
    let mut psd = funded_psd(PSD_SEED, FUNDS);
    let mut lost = purse(2);
    cut_transfer(&mut psd, &mut lost, false);
    psd.reset();
    let pending = pending_of(&mut psd);
    let data = settle_transfer_data(&issuer_key(), DEVICE, &pending, 1, Decision::Undo);
    assert_eq!(data.len(), SETTLE_DATA_LEN);
    let mut client = PsdClient::new(&mut psd);
    client.select().expect("select");
    let (decision, r) = client.settle_transfer(&data).expect("settled");
    assert_eq!(
        (decision, r.dr, r.pending),
        (Decision::Undo, Amount(FUNDS), Amount::ZERO)
    );
}

#[test]
fn forged_misdirected_and_malformed_settlements_are_refused_with_nothing_changed() {
    let mut psd = funded_psd(PSD_SEED, FUNDS);
    let mut lost = purse(2);
    cut_transfer(&mut psd, &mut lost, false);
    psd.reset();
    expect_ok(&psd.transmit(&psd_apdu::select()));
    let pending = pending_of(&mut psd);
    let issuer = issuer_key();
    let sig = |data: Vec<u8>| psd_apdu::transfer_settle(&data);

    // Signed by another key than the scheme issuer's.
    refused_unchanged(
        &mut psd,
        &settlement(&stranger_issuer_key(), &pending, 1, Decision::Undo),
        Status::SecurityStatusNotSatisfied,
    );
    // For another device.
    let other_device = DeviceId(*b"PSD00002");
    refused_unchanged(
        &mut psd,
        &sig(settle_transfer_data(
            &issuer,
            other_device,
            &pending,
            1,
            Decision::Undo,
        )),
        Status::SecurityStatusNotSatisfied,
    );
    // For another transfer: each part of the transfer's identity counts.
    let others = [
        Pending {
            card: NEW_CARD,
            ..pending
        },
        Pending {
            transfer: TransferCount(pending.transfer.0 + 1),
            ..pending
        },
        Pending {
            card_transfers: TransferCount(pending.card_transfers.0 + 1),
            ..pending
        },
        Pending {
            amount: Amount(AMOUNT + 1),
            ..pending
        },
        Pending {
            set: pending.set + 1,
            ..pending
        },
    ];
    for other in &others {
        refused_unchanged(
            &mut psd,
            &settlement(&issuer, other, 1, Decision::Undo),
            Status::SecurityStatusNotSatisfied,
        );
    }
    // The decision changed after signing (undo signed, complete sent), or the counter.
    let mut flipped = settle_transfer_data(&issuer, DEVICE, &pending, 1, Decision::Undo);
    flipped[4] = Decision::Complete.code();
    refused_unchanged(&mut psd, &sig(flipped), Status::SecurityStatusNotSatisfied);
    let mut bumped = settle_transfer_data(&issuer, DEVICE, &pending, 1, Decision::Undo);
    bumped[3] = 2;
    refused_unchanged(&mut psd, &sig(bumped), Status::SecurityStatusNotSatisfied);
    // Not a decision, wrong lengths, wrong P1/P2.
    let mut no_decision = settle_transfer_data(&issuer, DEVICE, &pending, 1, Decision::Undo);
    no_decision[4] = 0x00;
    refused_unchanged(&mut psd, &sig(no_decision), Status::WrongData);
    let good = settle_transfer_data(&issuer, DEVICE, &pending, 1, Decision::Undo);
    refused_unchanged(
        &mut psd,
        &sig(good[..good.len() - 1].to_vec()),
        Status::WrongLength,
    );
    refused_unchanged(
        &mut psd,
        &sig([&good[..], &[0]].concat()),
        Status::WrongLength,
    );
    refused_unchanged(&mut psd, &sig(Vec::new()), Status::WrongLength);
    refused_unchanged(
        &mut psd,
        &psd_apdu::command(CLA_PSD, psd_ins::TRANSFER_RESOLVE, 2, 0, &good, 256),
        Status::IncorrectP1P2,
    );
    refused_unchanged(
        &mut psd,
        &psd_apdu::command(CLA_PSD, psd_ins::TRANSFER_RESOLVE, 1, 1, &good, 256),
        Status::IncorrectP1P2,
    );
    // Still pending, exactly as before; the genuine decision then settles it.
    assert_eq!(transfer_state(&mut psd).pending, Some(pending));
    let (outcome, r) = settle_ok(&mut psd, &sig(good));
    assert_eq!((outcome, r.dr), (0x02, Amount(FUNDS)));
}

#[test]
fn a_settlement_is_not_replayed_and_its_counter_must_go_up() {
    let mut psd = funded_psd(PSD_SEED, FUNDS);
    let mut lost = purse(2);
    let issuer = issuer_key();

    // Nothing pending: refused.
    let idle = Pending {
        card: CARD,
        set: 0,
        transfer: TransferCount(0),
        card_transfers: TransferCount(0),
        amount: Amount(AMOUNT),
    };
    refused_unchanged(
        &mut psd,
        &settlement(&issuer, &idle, 1, Decision::Undo),
        Status::ConditionsNotSatisfied,
    );

    cut_transfer(&mut psd, &mut lost, false);
    psd.reset();
    expect_ok(&psd.transmit(&psd_apdu::select()));
    let first = pending_of(&mut psd);
    assert_eq!(
        first, idle,
        "the transfer signed for before is the one now pending"
    );

    // The counter is the issuer's, shared with RESET RECOGNITION: after a reset with
    // counter 5, a settlement signed with 5 (or less) is refused.
    expect_ok(
        &psd.transmit(&psd_apdu::reset_recognition(&reset_recognition_data(
            &issuer, DEVICE, 5,
        ))),
    );
    refused_unchanged(
        &mut psd,
        &settlement(&issuer, &first, 5, Decision::Undo),
        Status::SecurityStatusNotSatisfied,
    );
    refused_unchanged(
        &mut psd,
        &settlement(&issuer, &first, 4, Decision::Undo),
        Status::SecurityStatusNotSatisfied,
    );
    let undo = settlement(&issuer, &first, 6, Decision::Undo);
    settle_ok(&mut psd, &undo);

    // Replayed with nothing pending: refused.
    refused_unchanged(&mut psd, &undo, Status::ConditionsNotSatisfied);

    // A new transfer is pending (the PSD's next number): the old decision does not settle
    // it, replayed or signed again for the old transfer with a higher counter.
    cut_transfer(&mut psd, &mut lost, false);
    psd.reset();
    expect_ok(&psd.transmit(&psd_apdu::select()));
    let second = pending_of(&mut psd);
    assert_eq!(second.transfer, TransferCount(first.transfer.0 + 1));
    refused_unchanged(&mut psd, &undo, Status::SecurityStatusNotSatisfied);
    refused_unchanged(
        &mut psd,
        &settlement(&issuer, &first, 9, Decision::Undo),
        Status::SecurityStatusNotSatisfied,
    );
    // And a reset cannot reuse the settlement's counter either.
    refused_unchanged(
        &mut psd,
        &psd_apdu::reset_recognition(&reset_recognition_data(&issuer, DEVICE, 6)),
        Status::SecurityStatusNotSatisfied,
    );
    let (outcome, r) = settle_ok(&mut psd, &settlement(&issuer, &second, 7, Decision::Undo));
    assert_eq!(
        (outcome, r.dr, r.pending),
        (0x02, Amount(FUNDS), Amount::ZERO)
    );
    assert_eq!(total(&mut psd, &mut [&mut lost]), FUNDS);
}

#[test]
fn a_psd_without_the_scheme_issuer_refuses_settlements() {
    let mut psd = funded_psd_as(PSD_SEED, personalization(), FUNDS);
    let pending = Pending {
        card: CARD,
        set: 0,
        transfer: TransferCount(0),
        card_transfers: TransferCount(0),
        amount: Amount(AMOUNT),
    };
    refused_unchanged(
        &mut psd,
        &settlement(&issuer_key(), &pending, 1, Decision::Undo),
        Status::ConditionsNotSatisfied,
    );
}

#[test]
fn power_cut_at_every_write_of_a_settlement_leaves_the_old_state_or_the_new() {
    let issuer = issuer_key();
    let mut cuts = 0;
    for (credited, decision) in [(false, Decision::Undo), (true, Decision::Complete)] {
        let mut psd = funded_psd(PSD_SEED, FUNDS);
        let mut lost = purse(2);
        cut_transfer(&mut psd, &mut lost, credited);
        let lost_balance = purse_data(&mut lost).balance.0;
        psd.reset();
        expect_ok(&psd.transmit(&psd_apdu::select()));
        let before_state = transfer_state(&mut psd);
        let before_regs = registers(&mut psd, 0);
        let pending = before_state.pending.expect("pending");
        let apdu = settlement(&issuer, &pending, 1, decision);
        // The state the uncut command leaves.
        let base = psd.store().nvm().clone();
        let mut clean = reopen(&base, PSD_SEED);
        settle_ok(&mut clean, &apdu);
        let after_state = transfer_state(&mut clean);
        let after_regs = registers(&mut clean, 0);
        assert_ne!(before_state, after_state);

        for torn in [false, true] {
            for k in 0.. {
                let mut card = reopen(&base, PSD_SEED);
                let start = card.store().writes();
                card.store_mut().set_power_cut(Some(PowerCut {
                    at_write: start + k,
                    torn,
                }));
                let resp = card.transmit(&apdu);
                if !card.store().is_dead() {
                    assert_eq!(psd_apdu::sw(&resp), 0x9000, "uncut");
                    break;
                }
                cuts += 1;
                let at = format!("{decision:?} cut at write {k} torn {torn}");
                assert_eq!(
                    psd_apdu::sw(&resp),
                    0x6581,
                    "{at}: a cut command answers 6581"
                );
                let mut card = reopen(&card.store().nvm().clone(), PSD_SEED);
                let (state, regs) = (transfer_state(&mut card), registers(&mut card, 0));
                let old = state == before_state && regs == before_regs;
                let new = state == after_state && regs == after_regs;
                assert!(old || new, "{at}: neither old nor new: {state:?} {regs:?}");
                // The issuer sends its decision again: applied once.
                let again = card.transmit(&apdu);
                let want = if old { 0x9000 } else { 0x6985 };
                assert_eq!(psd_apdu::sw(&again), want, "{at}: retried");
                assert_eq!(transfer_state(&mut card), after_state, "{at}");
                assert_eq!(registers(&mut card, 0), after_regs, "{at}");
                let r = registers(&mut card, 0);
                let on_purse = if credited { lost_balance } else { 0 };
                assert_eq!(r.dr.0 + r.pending.0 + on_purse, FUNDS, "{at}: value");
            }
        }
    }
    eprintln!("settlement tearing: {cuts} cut points");
    assert!(cuts >= 4, "too few cut points: {cuts}");
}

// The purse side: RELEASE PARTNER.

/// Running 10 steps credits the purse and loses its acknowledgement.
const CREDITED_ACK_LOST: usize = 10;

/// PSD number `n` of the test scheme (device ID `PSD` + n), funded.
fn psd_n(n: u32) -> (DeviceId, TestCard) {
    let mut p = psd_personalization(SCHEME);
    p.device = DeviceId(*format!("PSD{n:05}").as_bytes().first_chunk().unwrap());
    (p.device, funded_psd_as(u64::from(n) + 100, p, FUNDS))
}

fn admin() -> MacKey {
    card_admin_key(&MacKey::new(ADMIN_KEY), CARD)
}

fn paired(purse: &mut TestCard) -> PairedTable {
    expect_ok(&purse.transmit(&purse_apdu::select()));
    PairedTable::decode(&expect_ok(&purse.transmit(&purse_apdu::get_data(2)))).unwrap()
}

/// The issuer releases `device` on the test purse with `counter` and opens the answer.
fn release(purse: &mut TestCard, counter: u32, device: DeviceId) -> Released {
    expect_ok(&purse.transmit(&purse_apdu::select()));
    let answer = expect_ok(&purse.transmit(&purse_apdu::release_partner(
        &admin(),
        CARD,
        counter,
        device,
    )));
    Released::open(&answer, &admin(), CARD, counter, device).expect("the card's MAC")
}

#[test]
fn a_purse_full_of_psds_that_never_come_back_is_released_and_its_evidence_settles_the_psd() {
    let mut purse = purse(2);
    let mut open: Vec<(DeviceId, TestCard)> = (10u32..).take(MAX_PAIRED).map(psd_n).collect();
    for (_, o) in open.iter_mut() {
        let _ = run_until(o, &mut purse, 10, CREDITED_ACK_LOST);
    }
    let (_, mut x) = psd_n(1);
    let e = driver::transfer(&mut x, &mut purse, SET0, Amount(500), PIN).unwrap_err();
    assert_eq!(e.status(), Some(Status::PartnersOpen), "{e}");

    // The issuer releases the first PSD's entry: the card tells what it credited from it,
    // MACed under its admin key.
    let (gone, ref mut gone_psd) = open[0];
    let pending = pending_of(gone_psd);
    let released = release(&mut purse, 1, gone);
    let entry = released.entry.expect("listed");
    assert_eq!(
        released.card_transfers,
        TransferCount(u32::try_from(MAX_PAIRED).unwrap())
    );
    assert_eq!(
        (entry.last_transfer, entry.total, entry.closure),
        (pending.transfer, Amount(10), Closure::Open),
        "credited: the pending transfer is the card's last credit from it"
    );
    assert_eq!(
        paired(&mut purse).get(gone).unwrap().closure,
        Closure::Unknown,
        "released, not forgotten yet"
    );

    // The purse takes a 17th PSD; the released entry makes room.
    driver::transfer(&mut x, &mut purse, SET0, Amount(500), PIN).expect("room again");
    let table = paired(&mut purse);
    assert!(table.get(gone).is_none());
    assert_eq!(table.forgotten_through, entry.credited_at);

    // Should the released PSD come back after all, the card cannot decide it any more
    // (9A23) — never a wrong "undone", which would create value.
    let err = driver::resolve_pending(gone_psd, &mut purse).unwrap_err();
    assert_eq!(err.status(), Some(Status::TransferUnresolved), "{err}");
    assert_eq!(registers(gone_psd, 0).pending, Amount(10));

    // The issuer signs complete from the card's evidence; the PSD settles.
    expect_ok(&gone_psd.transmit(&psd_apdu::select()));
    let apdu = psd_apdu::transfer_settle(&settle_transfer_data(
        &issuer_key(),
        gone,
        &pending,
        1,
        Decision::Complete,
    ));
    let (outcome, r) = settle_ok(gone_psd, &apdu);
    assert_eq!(
        (outcome, r.dr, r.transferred),
        (0x01, Amount(FUNDS - 10), Amount(10))
    );
    // Value: every PSD's DR + pending, and the purse, add up to what was refilled; the 15
    // others still complete at their next contact.
    for (_, o) in open.iter_mut().skip(1) {
        driver::resolve_pending(o, &mut purse).expect("resolves");
    }
    let psds: u64 = open
        .iter_mut()
        .map(|(_, o)| {
            let r = registers(o, 0);
            r.dr.0 + r.pending.0
        })
        .sum::<u64>()
        + registers(&mut x, 0).dr.0;
    let on_purse = purse_data(&mut purse).balance.0;
    assert_eq!(on_purse, 16 * 10 + 500);
    assert_eq!(psds + on_purse, 17 * FUNDS);
}

#[test]
fn release_partner_refusals_change_nothing_and_its_counter_must_go_up() {
    let mut purse = purse(2);
    let mut psd = funded_psd(PSD_SEED, FUNDS);
    // A whole transfer: the PSD's entry is credited and closed.
    driver::transfer(&mut psd, &mut purse, SET0, Amount(100), PIN).expect("moves");
    expect_ok(&purse.transmit(&purse_apdu::select()));
    let cmd = |key: &MacKey, counter| purse_apdu::release_partner(key, CARD, counter, DEVICE);

    // Not the card's admin key (another card's).
    let other = card_admin_key(&MacKey::new(ADMIN_KEY), NEW_CARD);
    refused_unchanged(
        &mut purse,
        &cmd(&other, 1),
        Status::SecurityStatusNotSatisfied,
    );
    // Another PSD than the MAC names.
    let mut forged = cmd(&admin(), 1);
    forged[5 + 4] ^= 1;
    refused_unchanged(&mut purse, &forged, Status::SecurityStatusNotSatisfied);
    // Lengths and parameters.
    let good = cmd(&admin(), 1);
    let body = &good[5..good.len() - 1];
    let with = |data: &[u8], p1: u8| {
        psd_apdu::command(CLA_PURSE, purse_ins::RELEASE_PARTNER, p1, 0, data, 256)
    };
    refused_unchanged(&mut purse, &with(&body[1..], 0), Status::WrongLength);
    refused_unchanged(
        &mut purse,
        &with(&[body, &[0]].concat(), 0),
        Status::WrongLength,
    );
    refused_unchanged(&mut purse, &with(body, 1), Status::IncorrectP1P2);

    // The counter is the card's admin counter (UNBLOCK PIN, RESET RECOGNITION): after a
    // reset with 5, a release with 5 is refused; 6 goes, once.
    expect_ok(&purse.transmit(&purse_apdu::reset_recognition(&admin(), CARD, 5)));
    refused_unchanged(
        &mut purse,
        &cmd(&admin(), 5),
        Status::SecurityStatusNotSatisfied,
    );
    let before = paired(&mut purse);
    let released = release(&mut purse, 6, DEVICE);
    let entry = released.entry.expect("listed");
    assert_eq!((entry.total, entry.closure), (Amount(100), Closure::Closed));
    assert_eq!(paired(&mut purse), before, "a closed entry stays closed");
    refused_unchanged(
        &mut purse,
        &cmd(&admin(), 6),
        Status::SecurityStatusNotSatisfied,
    );

    // A PSD the card does not list: nothing to release, the card says so.
    let stranger = DeviceId(*b"PSD99999");
    let released = release(&mut purse, 7, stranger);
    assert_eq!(released.entry, None);
    assert_eq!(paired(&mut purse), before);
    // The answer is the card's: a forged or altered one does not open.
    let answer =
        expect_ok(&purse.transmit(&purse_apdu::release_partner(&admin(), CARD, 8, stranger)));
    let mut altered = answer.clone();
    altered[0] ^= 1;
    assert!(Released::open(&altered, &admin(), CARD, 8, stranger).is_err());
    assert!(Released::open(&answer, &admin(), CARD, 8, DEVICE).is_err());
    assert!(Released::open(&answer, &other, CARD, 8, stranger).is_err());
}

#[test]
fn power_cut_at_every_write_of_a_release_leaves_the_old_table_and_counter_or_the_new() {
    let mut purse = purse(2);
    let (device, mut psd) = psd_n(10);
    let _ = run_until(&mut psd, &mut purse, 10, CREDITED_ACK_LOST);
    purse.reset();
    let old = paired(&mut purse);
    let apdu = purse_apdu::release_partner(&admin(), CARD, 1, device);
    let base = purse.store().nvm().clone();
    let mut clean = reopen_purse(&base, 2);
    expect_ok(&clean.transmit(&apdu));
    let new = paired(&mut clean);
    assert_ne!(old, new);
    let mut cuts = 0;
    for torn in [false, true] {
        for k in 0.. {
            let mut card = reopen_purse(&base, 2);
            let start = card.store().writes();
            card.store_mut().set_power_cut(Some(PowerCut {
                at_write: start + k,
                torn,
            }));
            let resp = card.transmit(&apdu);
            if !card.store().is_dead() {
                assert_eq!(psd_apdu::sw(&resp), 0x9000, "uncut");
                break;
            }
            cuts += 1;
            let at = format!("cut at write {k} torn {torn}");
            assert_eq!(psd_apdu::sw(&resp), 0x6581, "{at}");
            let mut card = reopen_purse(&card.store().nvm().clone(), 2);
            let table = paired(&mut card);
            assert!(table == old || table == new, "{at}: {table:?}");
            // The counter moved with the table: the retry goes through only if it did not.
            let again = card.transmit(&apdu);
            let want = if table == old { 0x9000 } else { 0x6982 };
            assert_eq!(psd_apdu::sw(&again), want, "{at}");
            assert_eq!(paired(&mut card), new, "{at}");
        }
    }
    eprintln!("release tearing: {cuts} cut points");
    assert!(cuts >= 2, "too few cut points: {cuts}");
}
