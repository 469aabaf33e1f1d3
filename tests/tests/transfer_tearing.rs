//! Tearing and message loss during a transfer PSD → purse (seed 002 blocks 118-121): power
//! is cut at every write *k* of every step on whichever device runs it (clean and torn),
//! and separately the host loses every reply. After each interruption the value must be
//! conserved exactly — PSD DR + PSD pending + purse balance = before — and at the next
//! contact the transfer is completed or undone and can be retried to exactly one credit.
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use openpsd_core::client::psd_apdu;
use openpsd_core::client::purse_apdu;
use openpsd_core::client::transfer as driver;
use openpsd_core::psd::{ins as psd_ins, CLA_PSD};
use openpsd_core::purse::state::PairedTable;
use openpsd_core::store::PowerCut;
use openpsd_core::transfer::PsdHello;
use openpsd_core::types::*;
use openpsd_tests::purse::*;
use openpsd_tests::*;

const SET0: RegisterSetIndex = RegisterSetIndex(0);
const FUNDS: u64 = 10_000;
const AMOUNT: u64 = 1_234;
const PSD_SEED: u64 = 31;
const PURSE_SEED: u64 = 32;

struct World {
    psd: TestCard,
    purse: TestCard,
}

impl World {
    fn new(base_psd: &openpsd_core::store::Nvm, base_purse: &openpsd_core::store::Nvm) -> World {
        World {
            psd: reopen(base_psd, PSD_SEED),
            purse: reopen_purse(base_purse, PURSE_SEED),
        }
    }

    fn card(&mut self, d: Dev) -> &mut TestCard {
        match d {
            Dev::Psd => &mut self.psd,
            Dev::Purse => &mut self.purse,
        }
    }

    /// Power comes back on a device that lost it: memory re-read, volatile state gone.
    fn repower(&mut self, d: Dev) {
        match d {
            Dev::Psd => self.psd = reopen(&self.psd.store().nvm().clone(), PSD_SEED),
            Dev::Purse => self.purse = reopen_purse(&self.purse.store().nvm().clone(), PURSE_SEED),
        }
    }

    /// DR, value in flight, purse balance.
    ///
    /// Two devices cannot commit together, so between the purse's credit and the PSD's
    /// confirmation the PSD still shows the amount as pending (unacknowledged) while the
    /// purse already holds it. Value *in flight* is pending that the purse has not credited
    /// — which the purse's record of this PSD's last transfer tells.
    fn value(&mut self) -> (u64, u64, u64) {
        expect_ok(&self.psd.transmit(&psd_apdu::select()));
        let r = registers(&mut self.psd, 0);
        assert!(
            r.ar.0 + r.dr.0 + r.pending.0 == r.control_sum.0,
            "AR + DR + pending = control sum: {r:?}"
        );
        let info = driver::psd_transfer_info(&mut self.psd).expect("PSD transfer info");
        assert_eq!(
            info.state.pending.map_or(0, |p| p.amount.0),
            r.pending.0,
            "the pending record and the pending register agree"
        );
        expect_ok(&self.purse.transmit(&purse_apdu::select()));
        let paired =
            PairedTable::decode(&expect_ok(&self.purse.transmit(&purse_apdu::get_data(2))))
                .expect("paired table");
        let credited = info.state.pending.is_some_and(|p| {
            paired
                .get(DEVICE)
                .is_some_and(|e| e.last_transfer == p.transfer)
        });
        let in_flight = if credited { 0 } else { r.pending.0 };
        let b = purse_data(&mut self.purse).balance.0;
        (r.dr.0, in_flight, b)
    }

    fn conserved(&mut self, at: &str) {
        let (dr, in_flight, balance) = self.value();
        assert_eq!(dr + in_flight + balance, FUNDS, "value not conserved {at}");
    }

    /// The next contact: resolve anything pending, retry if the purse did not get the
    /// value, and check exactly one credit happened.
    fn recover_and_finish(&mut self, at: &str) {
        self.psd.reset();
        self.purse.reset();
        driver::resolve_pending(&mut self.psd, &mut self.purse)
            .unwrap_or_else(|e| panic!("resolve failed {at}: {e}"));
        let (dr, pending, balance) = self.value();
        assert_eq!(pending, 0, "pending left after resolve {at}");
        assert_eq!(dr + balance, FUNDS, "{at}");
        assert!(balance == 0 || balance == AMOUNT, "{at}: balance {balance}");
        if balance == 0 {
            driver::transfer(&mut self.psd, &mut self.purse, SET0, Amount(AMOUNT), PIN)
                .unwrap_or_else(|e| panic!("retry failed {at}: {e}"));
        }
        let (dr, pending, balance) = self.value();
        assert_eq!((dr, pending, balance), (FUNDS - AMOUNT, 0, AMOUNT), "{at}");
        let r = registers(&mut self.psd, 0);
        assert_eq!(r.transferred.0, AMOUNT, "{at}");
    }
}

fn bases() -> (openpsd_core::store::Nvm, openpsd_core::store::Nvm) {
    let psd = funded_psd(PSD_SEED, FUNDS);
    let purse = purse(PURSE_SEED);
    (psd.store().nvm().clone(), purse.store().nvm().clone())
}

#[test]
fn power_cut_at_every_write_of_every_step_on_both_devices_conserves_value() {
    let (base_psd, base_purse) = bases();
    let mut cuts = [0usize; 2];
    for (i, (name, dev)) in STEPS.iter().enumerate() {
        for torn in [false, true] {
            for k in 0.. {
                let mut w = World::new(&base_psd, &base_purse);
                let c = run_until(&mut w.psd, &mut w.purse, AMOUNT, i);
                let card = w.card(*dev);
                let start = card.store().writes();
                card.store_mut().set_power_cut(Some(PowerCut {
                    at_write: start + k,
                    torn,
                }));
                let resp = card.transmit(&step_apdu(i, &c, AMOUNT));
                if !card.store().is_dead() {
                    assert_eq!(psd_apdu::sw(&resp), 0x9000, "{name} uncut");
                    break;
                }
                cuts[(*dev == Dev::Purse) as usize] += 1;
                assert_eq!(
                    psd_apdu::sw(&resp),
                    0x6581,
                    "{name}: a cut command answers 6581"
                );
                let at = format!("cut in {name} at write {k} torn {torn}");
                w.repower(*dev);
                w.conserved(&at);
                w.recover_and_finish(&at);
            }
        }
    }
    eprintln!(
        "transfer tearing: {} cut points on the PSD, {} on the purse",
        cuts[0], cuts[1]
    );
    assert!(cuts[0] >= 8 && cuts[1] >= 8, "too few cut points: {cuts:?}");
}

#[test]
fn every_lost_reply_and_power_loss_of_both_conserves_value() {
    let (base_psd, base_purse) = bases();
    for i in 1..=STEPS.len() {
        // The host got nothing back from step i - 1 (or crashed): both devices lose power.
        let mut w = World::new(&base_psd, &base_purse);
        run_until(&mut w.psd, &mut w.purse, AMOUNT, i);
        let at = format!("reply of {} lost", STEPS[i - 1].0);
        w.repower(Dev::Psd);
        w.repower(Dev::Purse);
        w.conserved(&at);
        w.recover_and_finish(&at);
        // Same, but the devices stay powered and only the host gives up.
        let mut w = World::new(&base_psd, &base_purse);
        run_until(&mut w.psd, &mut w.purse, AMOUNT, i);
        let at = format!("host gave up after {}", STEPS[i - 1].0);
        w.conserved(&at);
        w.recover_and_finish(&at);
    }
}

#[test]
fn power_cut_during_the_resolution_conserves_value() {
    let (base_psd, base_purse) = bases();
    let mut cuts = 0;
    // Pending with the value lost (after DEBIT) and with the acknowledgement lost (after
    // CREDIT): the resolution undoes the first and completes the second.
    for upto in [9, 10] {
        for torn in [false, true] {
            for k in 0.. {
                let mut w = World::new(&base_psd, &base_purse);
                run_until(&mut w.psd, &mut w.purse, AMOUNT, upto);
                w.psd.reset();
                w.purse.reset();
                // Recognise in a fresh session, ask the card, and cut the PSD's RESOLVE.
                let status = {
                    expect_ok(&w.psd.transmit(&psd_apdu::select()));
                    expect_ok(&w.purse.transmit(&purse_apdu::select()));
                    let psd = |ins, data: &[u8]| psd_apdu::command(CLA_PSD, ins, 0, 0, data, 256);
                    let hello = expect_ok(&w.psd.transmit(&psd(psd_ins::OPEN_SESSION, &[])));
                    let hello = PsdHello::decode(&hello).expect("hello");
                    let card = expect_ok(&w.purse.transmit(&purse_apdu::recognize(&hello)));
                    let cr = expect_ok(&w.psd.transmit(&psd(psd_ins::AUTHENTICATE_CARD, &card)));
                    expect_ok(&w.purse.transmit(&purse_apdu::authenticate_psd(&cr)));
                    expect_ok(&w.purse.transmit(&purse_apdu::transfer_status()))
                };
                let start = w.psd.store().writes();
                w.psd.store_mut().set_power_cut(Some(PowerCut {
                    at_write: start + k,
                    torn,
                }));
                let resolve =
                    psd_apdu::command(CLA_PSD, psd_ins::TRANSFER_RESOLVE, 0, 0, &status, 256);
                let resp = w.psd.transmit(&resolve);
                if !w.psd.store().is_dead() {
                    assert_eq!(psd_apdu::sw(&resp), 0x9000);
                    break;
                }
                cuts += 1;
                let at = format!("cut in RESOLVE after step {upto} at {k} torn {torn}");
                w.repower(Dev::Psd);
                w.conserved(&at);
                w.recover_and_finish(&at);
            }
        }
    }
    eprintln!("resolution tearing: {cuts} cut points");
    assert!(cuts >= 4);
}
