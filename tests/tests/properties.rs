//! Property tests: random sequences of commands — indicia, refills (genuine, replayed,
//! tampered), audits, garbage APDUs, resets and power cuts — keep the invariants: every
//! register set has AR + DR = control sum, the control sum moves only by genuine refills,
//! AR moves only by issued indicia, and no byte string makes the card panic.
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use openpsd_core::client::psd_apdu;
use openpsd_core::psd::indicium;
use openpsd_core::psd::registers::Registers;
use openpsd_core::store::PowerCut;
use openpsd_core::types::*;
use openpsd_tests::*;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Indicium {
        set: u8,
        txn: u8,
        postage: u64,
        day: u8,
    },
    Refill {
        set: u8,
        amount: u64,
        tamper: u8,
    },
    ReplayLastRefill,
    Audit {
        set: u8,
    },
    Garbage(Vec<u8>),
    Reset,
    CutNext {
        k: u64,
        torn: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3u8, 0..6u8, 0..3_000u64, 20..24u8)
            .prop_map(|(set, txn, postage, day)| Op::Indicium { set, txn, postage, day }),
        2 => (0..3u8, 0..60_000u64, 0..4u8).prop_map(|(set, amount, tamper)| Op::Refill { set, amount, tamper }),
        1 => Just(Op::ReplayLastRefill),
        1 => (0..3u8).prop_map(|set| Op::Audit { set }),
        2 => prop::collection::vec(any::<u8>(), 0..80).prop_map(Op::Garbage),
        2 => prop::collection::vec(any::<u8>(), 4..12).prop_map(|mut v| { v[0] = 0x80; Op::Garbage(v) }),
        1 => Just(Op::Reset),
        1 => (0..8u64, any::<bool>()).prop_map(|(k, torn)| Op::CutNext { k, torn }),
    ]
}

/// What the registers must be, tracked outside the card.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Model {
    ar: u64,
    control_sum: u64,
    pieces: u32,
}

fn check(card: &mut TestCard, model: &[Model; 2]) {
    for (set, m) in model.iter().enumerate() {
        let r = registers(card, u8::try_from(set).unwrap());
        assert_eq!(
            r.ar.checked_add(r.dr),
            Some(r.control_sum),
            "AR + DR = control sum"
        );
        assert_eq!(
            (r.ar.0, r.control_sum.0, r.pieces.0),
            (m.ar, m.control_sum, m.pieces)
        );
    }
}

fn observe(r: &Registers) -> Model {
    Model {
        ar: r.ar.0,
        control_sum: r.control_sum.0,
        pieces: r.pieces.0,
    }
}

proptest! {
    // 256 cases by default; PROPTEST_CASES=N for a longer soak.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256),
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_command_sequences_keep_the_invariants(ops in prop::collection::vec(op(), 1..40)) {
        let (mut card, pk) = funded_card(30, 20_000);
        let kms = Kms::new();
        let mut model = [Model { ar: 0, control_sum: 20_000, pieces: 0 }, Model { ar: 0, control_sum: 0, pieces: 0 }];
        // The last refill message: its set, bytes, amount, whether it was tampered with, and
        // whether the card applied it.
        let mut last_refill: Option<(u8, Vec<u8>, u64, bool, bool)> = None;
        let mut cut: Option<PowerCut> = None;
        // Per register set, the last indicium issued: its transaction ID and bytes (None
        // when a power cut swallowed the answer after the commit).
        let mut last_issued: [Option<(u8, Option<Vec<u8>>)>; 2] = [None, None];

        for op in ops {
            if let Some(c) = cut.take() {
                let start = card.store().writes();
                card.store_mut().set_power_cut(Some(PowerCut { at_write: start + c.at_write, ..c }));
            }
            let before = model;
            // (set, apdu, what success means for the model)
            let (set, apdu, on_success): (usize, Vec<u8>, Option<Model>) = match &op {
                Op::Indicium { set, txn, postage, day } => {
                    let mut req = request(u64::from(*txn), *postage, *day);
                    if let Some((_, town)) = LICENSES.get(usize::from(*set)) {
                        req.origin = PostalCode::new(town).unwrap();
                    }
                    let s = usize::from(*set).min(1);
                    let m = model[s];
                    (s, psd_apdu::issue_indicium(RegisterSetIndex(*set), &req),
                     Some(Model { ar: m.ar + postage, pieces: m.pieces + 1, ..m }))
                }
                Op::Refill { set, amount, tamper } => {
                    let s = usize::from(*set).min(1);
                    let real = RegisterSetIndex((*set).min(1));
                    let mut msg = kms.refill_for(&mut card, real, Amount(*amount), [*tamper; 8]);
                    if *tamper == 1 { msg[20] ^= 0x40; }
                    last_refill = Some((*set, msg.clone(), *amount, *tamper == 1, false));
                    let m = model[s];
                    (s, psd_apdu::refill(RegisterSetIndex(*set), &msg),
                     Some(Model { control_sum: m.control_sum + amount, ..m }))
                }
                Op::ReplayLastRefill => match &last_refill {
                    Some((set, msg, amount, ..)) => {
                        let s = usize::from(*set).min(1);
                        let m = model[s];
                        (s, psd_apdu::refill(RegisterSetIndex(*set), msg),
                         Some(Model { control_sum: m.control_sum + amount, ..m }))
                    }
                    None => continue,
                },
                Op::Audit { set } => (0, psd_apdu::audit(RegisterSetIndex(*set), &[7; 16]), None),
                Op::Garbage(bytes) => (0, bytes.clone(), None),
                Op::Reset => {
                    card.reset();
                    expect_ok(&card.transmit(&psd_apdu::select()));
                    continue;
                }
                Op::CutNext { k, torn } => {
                    cut = Some(PowerCut { at_write: *k, torn: *torn });
                    continue;
                }
            };
            let resp = card.transmit(&apdu);
            let ok = psd_apdu::sw(&resp) == 0x9000;

            if card.store().is_dead() {
                // Power failed mid-command: no success may have been reported, and after
                // power-up the set is either untouched or fully updated.
                prop_assert!(!ok, "a command whose commit was cut reported success");
                card = reopen(card.store().nvm(), 30);
                let observed = observe(&registers(&mut card, u8::try_from(set).unwrap()));
                prop_assert!(observed == before[set] || Some(observed) == on_success,
                    "after a cut: {observed:?}, expected {:?} or {on_success:?}", before[set]);
                model[set] = observed;
                if let (Op::Refill { .. } | Op::ReplayLastRefill, Some((.., applied))) = (&op, last_refill.as_mut()) {
                    *applied |= Some(observed) == on_success;
                }
                if let Op::Indicium { txn, .. } = &op {
                    if Some(observed) == on_success {
                        last_issued[set] = Some((*txn, None));
                    }
                }
            } else {
                card.store_mut().set_power_cut(None);
                if ok {
                    match (&op, on_success) {
                        (Op::Indicium { txn, .. }, Some(m)) => {
                            let d = indicium::verify(&resp[..resp.len() - 2], &pk).expect("issued indicia verify");
                            let bytes = resp[..resp.len() - 2].to_vec();
                            if d.pieces.0 == m.pieces {
                                model[set] = m;
                                last_issued[set] = Some((*txn, Some(bytes)));
                            } else {
                                // No debit: only a retry of the set's last transaction, and
                                // it returns that transaction's indicium again.
                                let Some((last_txn, earlier)) = &mut last_issued[set] else {
                                    return Err(TestCaseError::fail("an indicium without a debit and no earlier one"));
                                };
                                prop_assert_eq!(*last_txn, *txn, "indicium without a debit for a new transaction");
                                if let Some(e) = earlier {
                                    prop_assert_eq!(&*e, &bytes, "a retry returned another indicium");
                                }
                                *earlier = Some(bytes);
                            }
                        }
                        (Op::Refill { .. } | Op::ReplayLastRefill, Some(m)) => {
                            let Some((.., tampered, applied)) = last_refill.as_mut() else { unreachable!() };
                            prop_assert!(!*applied, "a refill message was accepted twice");
                            prop_assert!(!*tampered, "a tampered refill was accepted");
                            *applied = true;
                            model[set] = m;
                        }
                        (Op::Garbage(_), _) | (Op::Audit { .. }, _) => {}
                        _ => {}
                    }
                }
            }
            if matches!(op, Op::Garbage(_)) {
                // Garbage may have opened a command chain (CLA bit 10); the next command
                // then gets 6883 and the chain is dropped, as ISO 7816-4 says.
                let probe = psd_apdu::sw(&card.transmit(&psd_apdu::read_registers(RegisterSetIndex(0))));
                prop_assert!(probe == 0x9000 || probe == 0x6883, "probe after garbage: {probe:04X}");
            }
            check(&mut card, &model);
        }
    }
}
