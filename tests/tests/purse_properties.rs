//! Property test over random interleavings of transfers PSD → purse, purchases at a
//! merchant, power cuts at any write of any transfer step on either device, lost replies,
//! resets and resolutions (seed 002). After every operation, value is conserved exactly:
//! PSD DR + value in flight + purse balance + merchant takings = the refill; at the end,
//! after the next contact resolves what is pending, nothing is in flight and the purse has
//! received exactly what the PSD counts as transferred.
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use openpsd_core::client::psd_apdu;
use openpsd_core::client::purse_apdu;
use openpsd_core::client::transfer as driver;
use openpsd_core::purse::purchase::{PurchaseRecord, PurchaseRequest};
use openpsd_core::purse::state::PairedTable;
use openpsd_core::store::PowerCut;
use openpsd_core::types::*;
use openpsd_core::Status;
use openpsd_tests::purse::*;
use openpsd_tests::*;
use proptest::prelude::*;

const FUNDS: u64 = 100_000;
const SET0: RegisterSetIndex = RegisterSetIndex(0);

#[derive(Clone, Debug)]
enum Op {
    Transfer(u64),
    Purchase(u64),
    /// A transfer of this amount, power cut at write k of step `step` (torn or clean).
    CutTransfer(u64, usize, u64, bool),
    /// A transfer whose host stops after `step` steps.
    Abandon(u64, usize),
    ResetBoth,
    Resolve,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1u64..6_000).prop_map(Op::Transfer),
        (1u64..4_000).prop_map(Op::Purchase),
        (1u64..6_000, 0usize..STEPS.len(), 0u64..12, any::<bool>())
            .prop_map(|(a, s, k, t)| Op::CutTransfer(a, s, k, t)),
        (1u64..6_000, 1usize..=STEPS.len()).prop_map(|(a, s)| Op::Abandon(a, s)),
        Just(Op::ResetBoth),
        Just(Op::Resolve),
    ]
}

struct World {
    psd: TestCard,
    purse: TestCard,
    counter: u32,
    takings: u64,
    seen: std::collections::BTreeSet<u32>,
}

impl World {
    fn value(&mut self) -> (u64, u64, u64, u64) {
        expect_ok(&self.psd.transmit(&psd_apdu::select()));
        let r = registers(&mut self.psd, 0);
        assert_eq!(r.ar.0 + r.dr.0 + r.pending.0, r.control_sum.0);
        let info = driver::psd_transfer_info(&mut self.psd).expect("info");
        expect_ok(&self.purse.transmit(&purse_apdu::select()));
        let paired =
            PairedTable::decode(&expect_ok(&self.purse.transmit(&purse_apdu::get_data(2))))
                .expect("table");
        let credited = info.state.pending.is_some_and(|p| {
            paired
                .get(DEVICE)
                .is_some_and(|e| e.last_transfer == p.transfer)
        });
        let in_flight = if credited { 0 } else { r.pending.0 };
        let balance = purse_data(&mut self.purse).balance.0;
        (r.dr.0, in_flight, balance, r.transferred.0)
    }

    fn check(&mut self, what: &str) {
        let (dr, in_flight, balance, _) = self.value();
        assert_eq!(
            dr + in_flight + balance + self.takings,
            FUNDS,
            "value not conserved after {what}"
        );
    }

    fn repower(&mut self, d: Dev) {
        match d {
            Dev::Psd => self.psd = reopen(&self.psd.store().nvm().clone(), 41),
            Dev::Purse => self.purse = reopen_purse(&self.purse.store().nvm().clone(), 42),
        }
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Transfer(a) => {
                // A transfer always goes through (a pending one is resolved first) unless
                // the money or the purse's limit says no.
                if let Err(e) =
                    driver::transfer(&mut self.psd, &mut self.purse, SET0, Amount(a), PIN)
                {
                    assert!(
                        matches!(
                            e.status(),
                            Some(Status::InsufficientFunds | Status::BalanceAboveLimit)
                        ),
                        "transfer of {a} refused: {e}"
                    );
                }
            }
            Op::Purchase(a) => {
                expect_ok(&self.purse.transmit(&purse_apdu::select()));
                expect_ok(&self.purse.transmit(&purse_apdu::verify(PIN)));
                self.counter += 1;
                let req = PurchaseRequest {
                    terminal: TerminalId(*b"TERM0001"),
                    terminal_counter: self.counter,
                    amount: Amount(a),
                    date: Date::new(2026, 11, 21).expect("date"),
                };
                let resp = self.purse.transmit(&purse_apdu::purchase(&req));
                match psd_apdu::data(&resp) {
                    Ok(rec) => {
                        let pk = purse_data(&mut self.purse).public_key;
                        let r = PurchaseRecord::verify(rec, &pk).expect("signed");
                        assert!(self.seen.insert(r.number), "purchase number reused");
                        self.takings += r.amount.0;
                    }
                    Err(s) => assert_eq!(s, Status::InsufficientFunds),
                }
            }
            Op::CutTransfer(a, step, k, torn) => {
                // Only a transfer that could start (nothing pending) reaches its steps.
                let Ok(c) = try_run_until(&mut self.psd, &mut self.purse, a, step) else {
                    return;
                };
                let dev = STEPS[step].1;
                let card = match dev {
                    Dev::Psd => &mut self.psd,
                    Dev::Purse => &mut self.purse,
                };
                let start = card.store().writes();
                card.store_mut().set_power_cut(Some(PowerCut {
                    at_write: start + k,
                    torn,
                }));
                card.transmit(&step_apdu(step, &c, a));
                card.store_mut().set_power_cut(None);
                if card.store().is_dead() {
                    self.repower(dev);
                }
            }
            Op::Abandon(a, upto) => {
                let _ = try_run_until(&mut self.psd, &mut self.purse, a, upto);
            }
            Op::ResetBoth => {
                self.psd.reset();
                self.purse.reset();
            }
            Op::Resolve => {
                let _ = driver::resolve_pending(&mut self.psd, &mut self.purse);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn random_transfers_purchases_and_interruptions_conserve_value(
        ops in proptest::collection::vec(op(), 1..24)
    ) {
        let mut w = World {
            psd: funded_psd(41, FUNDS),
            purse: purse(42),
            counter: 0,
            takings: 0,
            seen: Default::default(),
        };
        for op in &ops {
            w.apply(op);
            w.check(&format!("{op:?}"));
        }
        // The next contact settles everything.
        w.psd.reset();
        w.purse.reset();
        driver::resolve_pending(&mut w.psd, &mut w.purse).expect("resolves");
        let (dr, in_flight, balance, transferred) = w.value();
        prop_assert_eq!(in_flight, 0);
        prop_assert_eq!(registers(&mut w.psd, 0).pending, Amount::ZERO);
        prop_assert_eq!(dr + balance + w.takings, FUNDS);
        prop_assert_eq!(purse_data(&mut w.purse).total_in.0, transferred);
    }
}

/// APDUs aimed at the purse's and the PSD's transfer commands, mostly malformed.
fn garbage() -> impl Strategy<Value = Vec<u8>> {
    let ins = prop_oneof![
        Just(0x10u8),
        Just(0x12),
        Just(0x20),
        Just(0x24),
        Just(0x2C),
        Just(0x60),
        Just(0x62),
        Just(0x64),
        Just(0x66),
        Just(0x68),
        Just(0x6A),
        Just(0x70),
        Just(0x72),
        Just(0x74),
        Just(0x76),
        Just(0x78),
        Just(0x7A),
        Just(0xCA),
        any::<u8>(),
    ];
    (
        prop_oneof![Just(0x00u8), Just(0x80), any::<u8>()],
        ins,
        any::<u8>(),
        prop_oneof![Just(0u8), Just(0x81), any::<u8>()],
        proptest::collection::vec(any::<u8>(), 0..120),
    )
        .prop_map(|(cla, ins, p1, p2, data)| {
            let mut a = vec![cla, ins, p1, p2];
            if !data.is_empty() {
                a.push(u8::try_from(data.len()).unwrap());
                a.extend_from_slice(&data);
            }
            a
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn garbage_never_panics_and_refusals_write_nothing(
        apdus in proptest::collection::vec(garbage(), 1..40)
    ) {
        let mut psd = funded_psd(41, FUNDS);
        let mut purse = purse(42);
        expect_ok(&purse.transmit(&purse_apdu::verify(PIN)));
        for a in &apdus {
            for card in [&mut psd, &mut purse] {
                let before = card.store().writes();
                let resp = card.transmit(a);
                let sw = psd_apdu::sw(&resp);
                prop_assert!(resp.len() >= 2);
                // Refusals write nothing, except the counted ones (wrong PIN or
                // cryptogram: 63Cx) whose counter commit is the point.
                if sw != 0x9000 && sw & 0xFF00 != 0x6100 && sw & 0xFFF0 != 0x63C0 {
                    prop_assert_eq!(card.store().writes(), before, "{:02X?} -> {:04X}", a, sw);
                    prop_assert_eq!(resp.len(), 2);
                }
            }
        }
        // Whatever happened, the money still adds up.
        psd.reset();
        purse.reset();
        expect_ok(&psd.transmit(&psd_apdu::select()));
        let r = registers(&mut psd, 0);
        prop_assert_eq!(r.ar.0 + r.dr.0 + r.pending.0, r.control_sum.0);
        prop_assert!(r.dr.0 + r.pending.0 + purse_data(&mut purse).balance.0 <= FUNDS);
    }
}
