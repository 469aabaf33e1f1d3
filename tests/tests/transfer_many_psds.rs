//! Pending transfers with many PSDs paying into the same purses (seed 002, Fig. 8 blocks
//! 118-121, and issue 18's "value that stays pending for ever"): a PSD whose value message
//! or acknowledgement was lost must have its transfer undone or completed at the next
//! contact, however many other PSDs used the purse meanwhile. The purse keeps 16 PSDs and
//! never forgets one whose last credit is open (the PSD has not yet said, by TRANSFER
//! CLOSE, that it has nothing pending with the card), so a PSD it does not list was not
//! credited (`core::transfer::resolve`); with 16 open credits it refuses a 17th PSD
//! (`9A2C`) before anything is debited.
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use openpsd_core::client::psd_apdu;
use openpsd_core::client::transfer::{self as driver, Resolved};
use openpsd_core::purse::state::MAX_PAIRED;
use openpsd_core::types::*;
use openpsd_core::Status;
use openpsd_tests::purse::*;
use openpsd_tests::*;
use proptest::prelude::*;

const FUNDS: u64 = 100_000;
const SET0: RegisterSetIndex = RegisterSetIndex(0);
/// TRANSFER DEBIT is step 8: running 9 steps debits the PSD and loses the value message.
const DEBITED_VAL_LOST: usize = 9;
/// Running 10 steps credits the purse and loses its acknowledgement.
const CREDITED_ACK_LOST: usize = 10;

/// PSD number `n` of the test scheme (device ID `PSD` + n), funded.
fn psd_n(n: u32) -> TestCard {
    let mut p = psd_personalization(SCHEME);
    p.device = DeviceId(*format!("PSD{n:05}").as_bytes().first_chunk().unwrap());
    funded_psd_as(u64::from(n) + 100, p, FUNDS)
}

/// Purse number `n` (card ID `PURSE` + n).
fn purse_n(n: u32) -> TestCard {
    let card = CardId(*format!("PURSE{n:03}").as_bytes().first_chunk().unwrap());
    purse_in(u64::from(n) + 900, card, SCHEME, &issuer_key())
}

fn dr(psd: &mut TestCard) -> u64 {
    expect_ok(&psd.transmit(&psd_apdu::select()));
    registers(psd, 0).dr.0
}

fn pending(psd: &mut TestCard) -> u64 {
    expect_ok(&psd.transmit(&psd_apdu::select()));
    registers(psd, 0).pending.0
}

fn pay(psd: &mut TestCard, purse: &mut TestCard, amount: u64) {
    driver::transfer(psd, purse, SET0, Amount(amount), PIN).expect("transfer");
}

/// The case: X's value message is lost, Y then pays the same purse; at X's next
/// contact the purse shows it never credited X (it has forgotten no PSD), so X gets its
/// value back and can transfer again.
#[test]
fn fig8_block_121_a_lost_value_message_then_another_psds_transfer_is_undone() {
    let mut x = psd_n(1);
    let mut y = psd_n(2);
    let mut purse = purse_n(1);
    let _ = run_until(&mut x, &mut purse, 1_000, DEBITED_VAL_LOST);
    assert_eq!((dr(&mut x), pending(&mut x)), (FUNDS - 1_000, 1_000));
    pay(&mut y, &mut purse, 500);
    let r = driver::resolve_pending(&mut x, &mut purse).expect("resolves");
    assert_eq!(r, Some((Resolved::Undone, Amount(1_000))));
    assert_eq!((dr(&mut x), pending(&mut x)), (FUNDS, 0));
    assert_eq!(purse_data(&mut purse).balance.0, 500);
    pay(&mut x, &mut purse, 300);
    assert_eq!(purse_data(&mut purse).balance.0, 800);
}

/// A credit whose acknowledgement was lost is completed at the next contact, after other
/// PSDs' transfers too: the purse still lists X with that transfer.
#[test]
fn fig8_block_121_a_lost_acknowledgement_then_other_transfers_is_completed() {
    let mut x = psd_n(1);
    let mut y = psd_n(2);
    let mut purse = purse_n(1);
    let _ = run_until(&mut x, &mut purse, 1_000, CREDITED_ACK_LOST);
    for _ in 0..20 {
        pay(&mut y, &mut purse, 100);
    }
    let r = driver::resolve_pending(&mut x, &mut purse).expect("resolves");
    assert_eq!(r, Some((Resolved::Completed, Amount(1_000))));
    assert_eq!((dr(&mut x), pending(&mut x)), (FUNDS - 1_000, 0));
    assert_eq!(purse_data(&mut purse).balance.0, 3_000);
}

/// A purse that has never forgotten a PSD proves "not credited" however many credits
/// other PSDs made since (here 40, from one PSD).
#[test]
fn a_purse_that_never_forgot_a_psd_proves_not_credited_after_any_number_of_credits() {
    let mut x = psd_n(1);
    let mut y = psd_n(2);
    let mut purse = purse_n(1);
    let _ = run_until(&mut x, &mut purse, 1_000, DEBITED_VAL_LOST);
    for _ in 0..40 {
        pay(&mut y, &mut purse, 100);
    }
    let r = driver::resolve_pending(&mut x, &mut purse).expect("resolves");
    assert_eq!(r, Some((Resolved::Undone, Amount(1_000))));
    assert_eq!(dr(&mut x), FUNDS);
}

/// A purse that forgot PSDs long ago (17 distinct PSDs before X's session), then credited
/// one busy PSD 40 times: every PSD it forgot was credited before X's session, so "no
/// record of X" still proves "not credited".
#[test]
fn a_purse_that_forgot_psds_before_the_pending_session_still_proves_not_credited() {
    let mut others: Vec<TestCard> = (10u32..).take(MAX_PAIRED + 1).map(psd_n).collect();
    let mut purse = purse_n(1);
    for o in others.iter_mut() {
        pay(o, &mut purse, 10);
    }
    let mut x = psd_n(1);
    let _ = run_until(&mut x, &mut purse, 1_000, DEBITED_VAL_LOST);
    for _ in 0..40 {
        pay(&mut others[3], &mut purse, 10);
    }
    let r = driver::resolve_pending(&mut x, &mut purse).expect("resolves");
    assert_eq!(r, Some((Resolved::Undone, Amount(1_000))));
}

/// 17 distinct PSDs pay into a purse after X's session (which before the purse's closed
/// entries left X undecided, `9A23`): each closed its transfer, so the purse forgets them
/// without a trace and X's lost value message is undone; X's lost acknowledgement is
/// completed just the same, its open entry never forgotten.
#[test]
fn fig8_block_121_seventeen_distinct_psds_after_the_pending_session_no_longer_leave_it_undecided() {
    let mut others: Vec<TestCard> = (10u32..).take(MAX_PAIRED + 1).map(psd_n).collect();
    for (n, steps, expect) in [
        (1, DEBITED_VAL_LOST, Resolved::Undone),
        (2, CREDITED_ACK_LOST, Resolved::Completed),
    ] {
        let mut purse = purse_n(n);
        for o in others.iter_mut() {
            pay(o, &mut purse, 10);
        }
        let mut x = psd_n(1);
        let _ = run_until(&mut x, &mut purse, 1_000, steps);
        for o in others.iter_mut() {
            pay(o, &mut purse, 10);
        }
        let r = driver::resolve_pending(&mut x, &mut purse).expect("resolves");
        assert_eq!(r, Some((expect, Amount(1_000))));
        assert_eq!(pending(&mut x), 0);
    }
}

/// TRANSFER REQUEST `9A2C`: a purse whose 16 places all hold credits not closed (16 PSDs
/// whose acknowledgements were lost) refuses a 17th PSD before it debits anything; once
/// one of the 16 meets the purse again (resolve, then TRANSFER CLOSE) the 17th pays.
#[test]
fn transfer_request_refused_while_sixteen_credits_are_not_closed() {
    let mut open: Vec<TestCard> = (10u32..).take(MAX_PAIRED).map(psd_n).collect();
    let mut purse = purse_n(1);
    for o in open.iter_mut() {
        let _ = run_until(o, &mut purse, 10, CREDITED_ACK_LOST);
    }
    let mut x = psd_n(1);
    let e = driver::transfer(&mut x, &mut purse, SET0, Amount(500), PIN).unwrap_err();
    assert_eq!(e.status(), Some(Status::PartnersOpen), "{e}");
    assert_eq!((dr(&mut x), pending(&mut x)), (FUNDS, 0), "nothing debited");
    let r = driver::resolve_pending(&mut open[4], &mut purse).expect("resolves");
    assert_eq!(r, Some((Resolved::Completed, Amount(10))));
    pay(&mut x, &mut purse, 500);
    assert_eq!(purse_data(&mut purse).balance.0, 16 * 10 + 500);
    // The other 15 still complete.
    for o in open.iter_mut() {
        let _ = driver::resolve_pending(o, &mut purse).expect("resolves");
        assert_eq!(pending(o), 0);
    }
}

#[derive(Clone, Debug)]
enum Op {
    /// A whole transfer from PSD `psd` to purse `purse`.
    Transfer {
        psd: usize,
        purse: usize,
        amount: u64,
    },
    /// A transfer whose host stops after `steps` steps (the value or the acknowledgement
    /// lost on the way, or earlier).
    Lost {
        psd: usize,
        purse: usize,
        amount: u64,
        steps: usize,
    },
    /// The PSD's host resolves its pending transfer with purse `purse` (another purse than
    /// the pending one's is refused and changes nothing).
    Resolve { psd: usize, purse: usize },
}

const PSDS: usize = 20;
const PURSES: usize = 2;
const PSD_NUMBERS: std::ops::Range<u32> = 1..21;
const PURSE_NUMBERS: std::ops::Range<u32> = 1..3;

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..PSDS, 0..PURSES, 1u64..3_000).prop_map(|(psd, purse, amount)| Op::Transfer {
            psd,
            purse,
            amount
        }),
        (0..PSDS, 0..PURSES, 1u64..3_000, 8usize..=11).prop_map(|(psd, purse, amount, steps)| {
            Op::Lost {
                psd,
                purse,
                amount,
                steps,
            }
        }),
        (0..PSDS, 0..PURSES).prop_map(|(psd, purse)| Op::Resolve { psd, purse }),
    ]
}

/// Σ DR + Σ balance + value in flight (pending, unless the purse lists the pending
/// transfer as credited): what was refilled.
fn conserved(psds: &mut [TestCard], purses: &mut [TestCard]) -> u64 {
    let mut total = 0;
    let mut balances = Vec::new();
    let mut tables = Vec::new();
    for p in purses.iter_mut() {
        let info = purse_data(p);
        balances.push(info.balance.0);
        expect_ok(&p.transmit(&openpsd_core::client::purse_apdu::select()));
        let t = expect_ok(&p.transmit(&openpsd_core::client::purse_apdu::get_data(2)));
        tables.push((
            info.card,
            openpsd_core::purse::state::PairedTable::decode(&t).unwrap(),
        ));
    }
    for psd in psds.iter_mut() {
        let info = driver::psd_transfer_info(psd).unwrap();
        let r = registers(psd, 0);
        total += r.dr.0;
        if let Some(p) = info.state.pending {
            let device = openpsd_core::psd::device::DeviceInfo::decode(&expect_ok(
                &psd.transmit(&psd_apdu::get_data()),
            ))
            .unwrap()
            .unwrap()
            .device;
            let credited = tables.iter().any(|(card, t)| {
                *card == p.card && t.get(device).is_some_and(|e| e.last_transfer == p.transfer)
            });
            if !credited {
                total += r.pending.0;
            }
        }
    }
    total + balances.iter().sum::<u64>()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// Every interleaving of lost messages with other PSDs using the same purses conserves
    /// value after every step, and ends with nothing pending once each PSD's host meets
    /// the purse its transfer waits for.
    #[test]
    fn lost_messages_among_many_psds_and_purses_all_end_and_conserve_value(
        ops in proptest::collection::vec(op(), 1..80)
    ) {
        let mut psds: Vec<TestCard> = PSD_NUMBERS.map(psd_n).collect();
        let mut purses: Vec<TestCard> = PURSE_NUMBERS.map(purse_n).collect();
        let start = FUNDS * PSDS as u64;
        for op in &ops {
            match *op {
                Op::Transfer { psd, purse, amount } => {
                    if let Err(e) = driver::transfer(
                        &mut psds[psd], &mut purses[purse], SET0, Amount(amount), PIN,
                    ) {
                        prop_assert!(
                            matches!(
                                e.status(),
                                Some(Status::BalanceAboveLimit | Status::TransferPending | Status::PartnersOpen)
                            ) || matches!(e, driver::TransferError::PendingForOtherCard(_)),
                            "transfer refused: {}", e
                        );
                    }
                }
                Op::Lost { psd, purse, amount, steps } => {
                    let _ = try_run_until(&mut psds[psd], &mut purses[purse], amount, steps);
                }
                Op::Resolve { psd, purse } => {
                    match driver::resolve_pending(&mut psds[psd], &mut purses[purse]) {
                        Ok(_) | Err(driver::TransferError::PendingForOtherCard(_)) => {}
                        Err(e) => prop_assert!(false, "resolve: {}", e),
                    }
                }
            }
            prop_assert_eq!(conserved(&mut psds, &mut purses), start, "after {:?}", op);
        }
        // The next contact of each PSD with the purse it waits for ends every transfer.
        for (i, psd) in psds.iter_mut().enumerate() {
            for (j, purse) in purses.iter_mut().enumerate() {
                match driver::resolve_pending(psd, purse) {
                    Ok(_) | Err(driver::TransferError::PendingForOtherCard(_)) => {}
                    Err(e) => prop_assert!(false, "PSD {} purse {}: {}", i, j, e),
                }
            }
            prop_assert_eq!(pending(psd), 0, "PSD {} still pending", i);
        }
        prop_assert_eq!(conserved(&mut psds, &mut purses), start);
    }
}

/// TRANSFER CLOSE binds the PSD's transfers-started count: a CLS the PSD made in the
/// session before its debit cannot close the credit that followed (`6985` on the purse),
/// so the lost acknowledgement is still completed; and a PSD with a transfer pending for
/// the card refuses to say it has none (`9A20`).
#[test]
fn transfer_close_made_before_the_credit_is_refused_and_a_pending_psd_makes_none() {
    use openpsd_core::client::purse_apdu;
    let mut x = psd_n(1);
    let mut purse = purse_n(1);
    // Through TRANSFER REQUEST: the REQ in hand.
    let c = run_until(&mut x, &mut purse, 1_000, 8);
    let early = expect_ok(&x.transmit(&psd_apdu::transfer_close()));
    let val = expect_ok(&x.transmit(&psd_apdu::transfer_debit(SET0, &c.last)));
    let _ack_lost = expect_ok(&purse.transmit(&purse_apdu::transfer_credit(&val)));
    let r = purse.transmit(&purse_apdu::transfer_close(&early));
    assert_eq!(psd_apdu::sw(&r), 0x6985, "a CLS older than the credit");
    // A new session: the PSD, pending for this card, makes no CLS.
    let _ = run_until(&mut x, &mut purse, 1, 6);
    let r = x.transmit(&psd_apdu::transfer_close());
    assert_eq!(psd_apdu::sw(&r), 0x9A20);
    let r = driver::resolve_pending(&mut x, &mut purse).expect("resolves");
    assert_eq!(r, Some((Resolved::Completed, Amount(1_000))));
}
