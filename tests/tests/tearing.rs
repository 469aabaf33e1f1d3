//! Tearing: power is cut at every cell write *k* of a command, clean and torn, the card is
//! re-opened, and the money must still add up (seed 000 steps 290-305 for refills, the
//! indicium flow of seeds 001/003): AR + DR equals the control sum, no indicium came out
//! whose debit was not committed, no value was created or lost, and the same command can
//! be retried to completion. Prints how many cut points it checked.
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use openpsd_core::client::psd_apdu;
use openpsd_core::psd::device::DeviceInfo;
use openpsd_core::psd::indicium;
use openpsd_core::psd::registers::Registers;
use openpsd_core::store::Nvm;
use openpsd_core::types::*;
use openpsd_core::Status;
use openpsd_tests::*;

const SET0: RegisterSetIndex = RegisterSetIndex(0);
const SEED: u64 = 20;

/// Runs `apdu` on cards re-opened from `base`, cutting power at its write k = 0, 1, ...
/// (clean, then torn) until the command completes uncut. For each cut, `check` gets the
/// response, the card re-opened from what the cut left, and a label. Returns the number
/// of cut points.
fn sweep(base: &Nvm, apdu: &[u8], check: impl FnMut(&[u8], TestCard, &str)) -> usize {
    sweep_after(base, |_| {}, apdu, check)
}

/// [`sweep`], with `prepare` run on each re-opened card before the command (for commands
/// that need volatile state, like RECEIPT after its AUDIT).
fn sweep_after(
    base: &Nvm,
    prepare: impl Fn(&mut TestCard),
    apdu: &[u8],
    check: impl FnMut(&[u8], TestCard, &str),
) -> usize {
    sweep_cuts(base, SEED, prepare, apdu, check)
}

fn consistent(r: &Registers) {
    assert_eq!(
        r.ar.checked_add(r.dr),
        Some(r.control_sum),
        "AR + DR = control sum: {r:?}"
    );
}

fn indicium_tearing() -> usize {
    let (card, pk) = funded_card(SEED, 10_000);
    let base = card.store().nvm().clone();
    let before = registers(&mut reopen(&base, SEED), 0);
    let apdu = psd_apdu::issue_indicium(SET0, &request(77, 123, 21));
    let debited = Registers {
        ar: Amount(before.ar.0 + 123),
        dr: Amount(before.dr.0 - 123),
        pieces: PieceCount(before.pieces.0 + 1),
        ..before
    };
    sweep(&base, &apdu, |resp, mut card, at| {
        // No indicium leaves a card whose commit did not complete.
        assert_eq!(resp, Status::MemoryFailure.sw().to_be_bytes(), "{at}");
        let after = registers(&mut card, 0);
        consistent(&after);
        assert_eq!(
            after.control_sum, before.control_sum,
            "no value created or lost"
        );
        assert!(after == before || after == debited, "{at}: {after:?}");
        // The host retries with the same transaction ID and gets the piece, debited once.
        let ind = expect_ok(&card.transmit(&apdu));
        let d = indicium::verify(&ind, &pk).expect("retried indicium verifies");
        assert_eq!(
            (d.ar, d.dr, d.pieces),
            (debited.ar, debited.dr, debited.pieces)
        );
        assert_eq!(registers(&mut card, 0), debited);
        assert_eq!(registers(&mut reopen(card.store().nvm(), SEED), 0), debited);
    })
}

/// [`indicium_tearing`] with the nonce pool filled before the command (the signature's
/// nonce is random, so the record must carry it): every retry, on the card the cut left
/// and on it re-opened (pool gone), answers the same bytes, debited once.
fn pooled_indicium_tearing() -> usize {
    let (card, pk) = funded_card(SEED, 10_000);
    let base = card.store().nvm().clone();
    let before = registers(&mut reopen(&base, SEED), 0);
    let apdu = psd_apdu::issue_indicium(SET0, &request(78, 123, 21));
    // One batch (32 pairs) is enough for the command and its retries.
    let fill = |card: &mut TestCard| assert!(card.idle(), "the pool fills");
    sweep_after(&base, fill, &apdu, |resp, mut card, at| {
        assert_eq!(resp, Status::MemoryFailure.sw().to_be_bytes(), "{at}");
        let after = registers(&mut card, 0);
        consistent(&after);
        assert_eq!(after.control_sum, before.control_sum, "{at}");
        fill(&mut card);
        let ind = expect_ok(&card.transmit(&apdu));
        indicium::verify(&ind, &pk).expect("retried indicium verifies");
        assert_eq!(
            expect_ok(&card.transmit(&apdu)),
            ind,
            "{at}: the same bytes again"
        );
        let mut again = reopen(card.store().nvm(), SEED);
        assert_eq!(
            expect_ok(&again.transmit(&apdu)),
            ind,
            "{at}: the same bytes re-opened"
        );
        assert_eq!(
            registers(&mut again, 0).pieces.0,
            before.pieces.0 + 1,
            "{at}: debited once"
        );
    })
}

fn refill_tearing() -> usize {
    let (mut card, _) = funded_card(SEED, 10_000);
    expect_ok(&card.transmit(&psd_apdu::issue_indicium(SET0, &request(1, 250, 21))));
    let msg = Kms::new().refill_for(&mut card, SET0, Amount(4_000), [8; 8]);
    let base = card.store().nvm().clone();
    let before = registers(&mut reopen(&base, SEED), 0);
    let credited = Registers {
        dr: Amount(before.dr.0 + 4_000),
        control_sum: Amount(before.control_sum.0 + 4_000),
        refills: RefillCount(before.refills.0 + 1),
        ..before
    };
    let apdu = psd_apdu::refill(SET0, &msg);
    sweep(&base, &apdu, |resp, mut card, at| {
        assert_eq!(resp, Status::MemoryFailure.sw().to_be_bytes(), "{at}");
        let after = registers(&mut card, 0);
        consistent(&after);
        assert!(after == before || after == credited, "{at}: {after:?}");
        // Retrying the same message credits it exactly once overall.
        let retry = card.transmit(&apdu);
        if after == credited {
            expect_refused(&retry, Status::RefillReplayed);
        } else {
            expect_ok(&retry);
        }
        assert_eq!(registers(&mut card, 0), credited);
    })
}

/// A void (a refill of amount zero, the back office's cancel) torn at every write: either
/// not applied (the original refill still applies, once) or applied (refill count moved,
/// its ID recorded, nothing credited, and the original refused for ever).
fn void_tearing() -> usize {
    let (mut card, _) = funded_card(SEED, 10_000);
    let kms = Kms::new();
    let original = kms.refill_for(&mut card, SET0, Amount(4_000), [8; 8]);
    let void = kms.refill_for(&mut card, SET0, Amount(0), [9; 8]);
    let base = card.store().nvm().clone();
    let before = registers(&mut reopen(&base, SEED), 0);
    let voided = Registers {
        refills: RefillCount(before.refills.0 + 1),
        ..before
    };
    let apdu = psd_apdu::refill(SET0, &void);
    sweep(&base, &apdu, |resp, mut card, at| {
        assert_eq!(resp, Status::MemoryFailure.sw().to_be_bytes(), "{at}");
        let after = registers(&mut card, 0);
        consistent(&after);
        assert!(after == before || after == voided, "{at}: {after:?}");
        if after == before {
            // Not applied: the original could still win the race; then the void is stale.
            let mut other = reopen(card.store().nvm(), SEED);
            expect_ok(&other.transmit(&psd_apdu::refill(SET0, &original)));
            expect_refused(&other.transmit(&apdu), Status::RefillReplayed);
            expect_ok(&card.transmit(&apdu));
        } else {
            expect_refused(&card.transmit(&apdu), Status::RefillReplayed);
        }
        assert_eq!(registers(&mut card, 0), voided);
        let audited = kms.audit(&mut card, SET0, [3; 16]);
        assert_eq!(
            audited.last_combination, [9; 8],
            "{at}: the void's ID recorded"
        );
        expect_refused(
            &card.transmit(&psd_apdu::refill(SET0, &original)),
            Status::RefillReplayed,
        );
    })
}

fn personalization_tearing() -> usize {
    let base = blank_card(SEED).store().nvm().clone();
    let apdu = psd_apdu::personalize(&personalization());
    sweep(&base, &apdu, |_, mut card, _| {
        // Either still blank (and personalizable) or fully personalized: never half.
        let resp = card.transmit(&apdu);
        if psd_apdu::sw(&resp) == Status::ConditionsNotSatisfied.sw() {
            for set in 0..u8::try_from(LICENSES.len()).unwrap() {
                consistent(&registers(&mut card, set));
            }
        } else {
            expect_ok(&resp);
        }
        assert_eq!(registers(&mut card, 1).license, LicenseId(LICENSES[1].0));
    })
}

fn receipt_tearing() -> usize {
    let (card, _) = funded_card(SEED, 10_000);
    let base = card.store().nvm().clone();
    let nonce = *b"tearing-receipt!";
    let receipt = openpsd_core::psd::receipt::Receipt {
        device: DEVICE,
        nonce,
        accepted_on: Date::new(2026, 11, 21).unwrap(),
    }
    .sign(&kms_key());
    let before = registers(&mut reopen(&base, SEED), 0);
    let audit = |card: &mut TestCard| {
        Kms::new().audit(card, SET0, nonce);
    };
    sweep_after(
        &base,
        audit,
        &psd_apdu::receipt(&receipt),
        |resp, mut card, at| {
            assert_eq!(resp, Status::MemoryFailure.sw().to_be_bytes(), "{at}");
            assert_eq!(
                registers(&mut card, 0),
                before,
                "{at}: a receipt moves no money"
            );
            // The audit's nonce was volatile: the host audits again and sends the receipt.
            audit(&mut card);
            expect_ok(&card.transmit(&psd_apdu::receipt(&receipt)));
            let info = DeviceInfo::decode(&expect_ok(&card.transmit(&psd_apdu::get_data())))
                .unwrap()
                .unwrap();
            assert_eq!(info.last_inspection, Date::new(2026, 11, 21), "{at}");
        },
    )
}

/// ISSUE INDICIUM on a PSD with an outside signer (issue 17 §5): cut at every write, the
/// debit is either not there or committed with its pending indicium, and the retry answers
/// the unsigned indicium, debited once.
fn outside_issue_tearing() -> usize {
    let card = outside::outside_card(SEED, 10_000);
    let base = card.store().nvm().clone();
    let before = registers(&mut reopen(&base, SEED), 0);
    let apdu = psd_apdu::issue_indicium(SET0, &request(79, 123, 21));
    let debited = Registers {
        ar: Amount(before.ar.0 + 123),
        dr: Amount(before.dr.0 - 123),
        pieces: PieceCount(before.pieces.0 + 1),
        ..before
    };
    sweep(&base, &apdu, |resp, mut card, at| {
        assert_eq!(resp, Status::MemoryFailure.sw().to_be_bytes(), "{at}");
        let after = registers(&mut card, 0);
        consistent(&after);
        assert!(after == before || after == debited, "{at}: {after:?}");
        let payload = expect_ok(&card.transmit(&apdu));
        let d = indicium::IndiciumData::decode(&payload).expect("the unsigned indicium");
        assert_eq!(
            (d.ar, d.dr, d.pieces),
            (debited.ar, debited.dr, debited.pieces)
        );
        assert_eq!(
            expect_ok(&card.transmit(&apdu)),
            payload,
            "{at}: same bytes"
        );
        assert_eq!(registers(&mut card, 0), debited);
    })
}

/// STORE SIGNATURE cut at every write: the indicium is either still pending (the retry
/// answers the unsigned bytes, and storing again completes it) or signed (the retry
/// answers the signed bytes); registers never move.
fn store_signature_tearing() -> usize {
    let mut card = outside::outside_card(SEED, 10_000);
    let issue = psd_apdu::issue_indicium(SET0, &request(80, 123, 21));
    let payload = expect_ok(&card.transmit(&issue));
    let signature = outside::sign(&payload);
    let base = card.store().nvm().clone();
    let debited = registers(&mut reopen(&base, SEED), 0);
    let apdu = psd_apdu::store_signature(SET0, &signature);
    let pk = outside::signer_public_key();
    sweep(&base, &apdu, |resp, mut card, at| {
        assert_eq!(resp, Status::MemoryFailure.sw().to_be_bytes(), "{at}");
        let answer = expect_ok(&card.transmit(&issue));
        let signed = if answer == payload {
            expect_ok(&card.transmit(&apdu))
        } else {
            answer
        };
        indicium::verify(&signed, &pk).expect("the signed indicium verifies");
        assert_eq!(&signed[..payload.len()], &payload[..], "{at}");
        assert_eq!(
            expect_ok(&card.transmit(&issue)),
            signed,
            "{at}: same bytes"
        );
        assert_eq!(registers(&mut card, 0), debited, "{at}: no second debit");
    })
}

fn main() {
    let i = indicium_tearing();
    let pooled = pooled_indicium_tearing();
    println!("tearing: issue indicium from the nonce pool {pooled} cut points");
    assert!(pooled >= 8, "the pooled indicium was cut at several writes");
    let r = refill_tearing();
    let v = void_tearing();
    let p = personalization_tearing();
    let c = receipt_tearing();
    let oi = outside_issue_tearing();
    let os = store_signature_tearing();
    println!("tearing: outside signer's issue indicium {oi} cut points, store signature {os}");
    assert!(
        oi >= 8 && os >= 4,
        "the outside signer's commands were cut at several writes"
    );
    println!(
        "tearing: issue indicium {i} cut points, refill {r}, void {v}, personalize {p}, receipt {c} (clean and torn writes)"
    );
    assert!(
        i >= 8 && r >= 8 && v >= 8 && p >= 8 && c >= 4,
        "every command was cut at several writes"
    );
    println!(
        "tearing: all {} cut points kept AR + DR = control sum, no value created or lost",
        i + r + v + p + c + oi + os
    );
}
