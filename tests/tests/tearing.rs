//! Tearing: power is cut at every cell write *k* of a command, clean and torn, the card is
//! re-opened, and the money must still add up (seed 000 steps 290-305 for refills, the
//! indicium flow of seeds 001/003): AR + DR equals the control sum, no indicium came out
//! whose debit was not committed, no value was created or lost, and the same command can
//! be retried to completion. Prints how many cut points it checked.

use openpsd_core::psd::host;
use openpsd_core::psd::indicium;
use openpsd_core::psd::registers::Registers;
use openpsd_core::store::{Nvm, PowerCut};
use openpsd_core::types::*;
use openpsd_core::Status;
use openpsd_tests::*;

const SET0: RegisterSetIndex = RegisterSetIndex(0);
const SEED: u64 = 20;

/// Runs `apdu` on a card re-opened from `base`, with power cut at the `k`-th write of the
/// command. Returns the response and the memory it left, or `None` if the command made
/// fewer than `k + 1` writes (it completed, and the sweep is over).
fn cut_at(base: &Nvm, apdu: &[u8], k: u64, torn: bool) -> Option<(Vec<u8>, Nvm)> {
    let mut card = reopen(base, SEED);
    let start = card.store().writes();
    card.store_mut().set_power_cut(Some(PowerCut {
        at_write: start + k,
        torn,
    }));
    let resp = card.transmit(apdu);
    if !card.store().is_dead() {
        assert_eq!(host::sw(&resp), 0x9000, "uncut command must succeed");
        return None;
    }
    Some((resp, card.store().nvm().clone()))
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
    let req = request(77, 123, 21);
    let apdu = host::issue_indicium(SET0, &req);
    let debited = Registers {
        ar: Amount(before.ar.0 + 123),
        dr: Amount(before.dr.0 - 123),
        pieces: PieceCount(before.pieces.0 + 1),
        ..before
    };
    let mut cuts = 0;
    for torn in [false, true] {
        for k in 0.. {
            let Some((resp, nvm)) = cut_at(&base, &apdu, k, torn) else {
                break;
            };
            cuts += 1;
            // No indicium leaves a card whose commit did not complete.
            assert_eq!(
                resp,
                Status::MemoryFailure.sw().to_be_bytes(),
                "cut {k} torn {torn}"
            );
            let mut card = reopen(&nvm, SEED);
            let after = registers(&mut card, 0);
            consistent(&after);
            assert_eq!(
                after.control_sum, before.control_sum,
                "no value created or lost"
            );
            assert!(
                after == before || after == debited,
                "cut {k} torn {torn}: {after:?}"
            );
            // The host retries with the same transaction ID and gets the piece, debited once.
            let ind = expect_ok(&card.transmit(&apdu));
            let d = indicium::verify(&ind, &pk).expect("retried indicium verifies");
            assert_eq!(
                (d.ar, d.dr, d.pieces),
                (debited.ar, debited.dr, debited.pieces)
            );
            assert_eq!(registers(&mut card, 0), debited);
            assert_eq!(registers(&mut reopen(card.store().nvm(), SEED), 0), debited);
        }
    }
    cuts
}

fn refill_tearing() -> usize {
    let (mut card, _) = funded_card(SEED, 10_000);
    expect_ok(&card.transmit(&host::issue_indicium(SET0, &request(1, 250, 21))));
    let msg = Kms::new().refill_for(&mut card, SET0, Amount(4_000), [8; 8]);
    let base = card.store().nvm().clone();
    let before = registers(&mut reopen(&base, SEED), 0);
    let credited = Registers {
        dr: Amount(before.dr.0 + 4_000),
        control_sum: Amount(before.control_sum.0 + 4_000),
        refills: RefillCount(before.refills.0 + 1),
        ..before
    };
    let apdu = host::refill(SET0, &msg);
    let mut cuts = 0;
    for torn in [false, true] {
        for k in 0.. {
            let Some((resp, nvm)) = cut_at(&base, &apdu, k, torn) else {
                break;
            };
            cuts += 1;
            assert_eq!(
                resp,
                Status::MemoryFailure.sw().to_be_bytes(),
                "cut {k} torn {torn}"
            );
            let mut card = reopen(&nvm, SEED);
            let after = registers(&mut card, 0);
            consistent(&after);
            assert!(
                after == before || after == credited,
                "cut {k} torn {torn}: {after:?}"
            );
            // Retrying the same message credits it exactly once overall.
            let retry = card.transmit(&apdu);
            if after == credited {
                expect_refused(&retry, Status::RefillReplayed);
            } else {
                expect_ok(&retry);
            }
            assert_eq!(registers(&mut card, 0), credited);
        }
    }
    cuts
}

fn personalization_tearing() -> usize {
    let base = blank_card(SEED).store().nvm().clone();
    let apdu = host::personalize(&personalization());
    let mut cuts = 0;
    for torn in [false, true] {
        for k in 0.. {
            let Some((_, nvm)) = cut_at(&base, &apdu, k, torn) else {
                break;
            };
            cuts += 1;
            // Either still blank (and personalizable) or fully personalized: never half.
            let mut card = reopen(&nvm, SEED);
            let resp = card.transmit(&apdu);
            if host::sw(&resp) == Status::ConditionsNotSatisfied.sw() {
                for set in 0..LICENSES.len() as u8 {
                    consistent(&registers(&mut card, set));
                }
            } else {
                expect_ok(&resp);
            }
            assert_eq!(registers(&mut card, 1).license, LicenseId(LICENSES[1].0));
        }
    }
    cuts
}

fn main() {
    let i = indicium_tearing();
    let r = refill_tearing();
    let p = personalization_tearing();
    println!("tearing: issue indicium {i} cut points, refill {r}, personalize {p} (clean and torn writes)");
    assert!(
        i >= 8 && r >= 8 && p >= 8,
        "every command was cut at several writes"
    );
    println!(
        "tearing: all {} cut points kept AR + DR = control sum, no value created or lost",
        i + r + p
    );
}
