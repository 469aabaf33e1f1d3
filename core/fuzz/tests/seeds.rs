//! Runs every seed through the harness on stable (no fuzzer needed): the seeds decode to
//! themselves and none breaks a property.

use openpsd_core_fuzz::{run, seeds::seeds, Input};

#[test]
fn seeds_round_trip_and_pass() {
    for (name, input) in seeds() {
        let bytes = input.encode();
        assert_eq!(
            Input::decode(&bytes),
            input,
            "seed {name} does not round-trip"
        );
        let _ = run(&input);
    }
}

/// The transfer start reaches `psd/transfer.rs` through to the end: its seeds move value
/// to the purse, and every transfer a fault interrupted is resolved by the next contact.
#[test]
fn transfer_seeds_move_value() {
    let all = seeds();
    let moved = |name: &str| {
        let (_, input) = all
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("seed {name}"));
        run(input)
    };
    let m = moved("transfer");
    assert_eq!(
        (m.received.0, m.moved_out.0, m.pending.0),
        (3_500, 3_500, 0)
    );
    // Value lost, undone, sent again; the acknowledgement lost, completed, then another.
    assert_eq!(moved("transfer-lost-value").received.0, 700);
    assert_eq!(moved("transfer-lost-ack").received.0, 1_700);
    for name in [
        "transfer-changed-messages",
        "transfer-power-cuts",
        "transfer-repeated",
        "transfer-limits",
    ] {
        let m = moved(name);
        assert_eq!(m.received, m.moved_out, "{name}: {m:?}");
        assert_eq!(m.pending.0, 0, "{name}: {m:?}");
        assert!(m.received.0 > 0, "{name}: nothing moved");
    }
    // Five failed recognitions block; the issuer's reset (not the forged one) unblocks.
    assert_eq!(moved("transfer-blocked-reset").received.0, 10);
    // The purse never comes back: the issuer's settlement (undo after a lost value, complete
    // after a lost acknowledgement) lets the next transfer go.
    let m = moved("transfer-lost-value-settled");
    assert_eq!((m.received.0, m.moved_out.0, m.pending.0), (700, 700, 0));
    let m = moved("transfer-lost-ack-settled");
    assert_eq!(
        (m.received.0, m.moved_out.0, m.pending.0),
        (1_700, 1_700, 0)
    );
}

/// The purse target's seeds: each decodes and keeps the invariants, and between them every
/// purse command the terminal or the issuer sends succeeds at least once (the transfer
/// commands succeed in the card target's transfer seeds, above).
#[test]
fn purse_seeds_reach_every_command() {
    let mut ok = std::collections::BTreeSet::new();
    for (_, bytes) in openpsd_core_fuzz::purse::seeds() {
        for (ins, sw) in openpsd_core_fuzz::purse::run_purse_bytes(&bytes) {
            if sw == 0x9000 {
                ok.insert(ins);
            }
        }
    }
    // VERIFY, CHANGE REFERENCE DATA, PERSONALIZE, UNBLOCK PIN, RESET RECOGNITION,
    // PURCHASE, GET DATA, RELEASE PARTNER.
    for ins in [0x20, 0x24, 0x10, 0x2C, 0x6A, 0x7A, 0xCA, 0x7E] {
        assert!(
            ok.contains(&ins),
            "no purse seed gets 9000 for INS {ins:02X}: {ok:02X?}"
        );
    }
}

#[test]
fn arbitrary_bytes_decode() {
    for data in [
        &[][..],
        &[7],
        &[0xFF; 40],
        &[0x02, 0x00],
        &[0, 0, 9, 0x80, 0x32],
    ] {
        openpsd_core_fuzz::run_bytes(data);
    }
}

#[test]
fn purse_inputs_keep_the_purse_invariants() {
    use openpsd_core::client::purse_apdu;
    let frame = |apdus: &[Vec<u8>]| -> Vec<u8> {
        apdus
            .iter()
            .flat_map(|a| core::iter::once(a.len() as u8).chain(a.iter().copied()))
            .collect()
    };
    let personalized = [
        purse_apdu::verify(b"1111"),
        purse_apdu::verify(b"2468"),
        purse_apdu::transfer_request(openpsd_core::types::Amount(100)),
        vec![0x80, 0x7A, 0, 0, 3, 1, 2, 3],
        purse_apdu::get_data(2),
        vec![0x90, 0x7A, 0, 0, 0],
        purse_apdu::verify(b"0000"),
        purse_apdu::verify(b"0000"),
        purse_apdu::verify(b"0000"),
        purse_apdu::verify(b"2468"),
        purse_apdu::verify(&[]),
        vec![0x00, 0xA4, 0x04, 0x00, 5, 0xF0, 0x50, 0x53, 0x44, 0x00],
    ];
    let mut input = vec![0];
    input.extend(frame(&personalized));
    let _ = openpsd_core_fuzz::purse::run_purse_bytes(&input);
    let blank = [
        purse_apdu::get_data(1),
        purse_apdu::verify(b"2468"),
        vec![0x80, 0x10, 0, 0, 2, 1, 2],
    ];
    let mut input = vec![1];
    input.extend(frame(&blank));
    let _ = openpsd_core_fuzz::purse::run_purse_bytes(&input);
    for data in [&[][..], &[0], &[0, 200, 1, 2], &[2, 4, 0x80, 0xCA, 0, 1]] {
        let _ = openpsd_core_fuzz::purse::run_purse_bytes(data);
    }
}

#[test]
fn vbox_inputs_keep_the_box_invariants() {
    use openpsd_core_fuzz::vbox::{run_vbox_bytes, seeds, Stats};
    let seeds = seeds();
    let stats = |name: &str| {
        let (_, bytes) = seeds.iter().find(|(n, _)| *n == name).expect("a seed");
        run_vbox_bytes(bytes)
    };
    // Done: 2 issues (one a reprint after a refill), 1 refill, 1 lost issue, 1 lost refill;
    // refused: the edited command, the other mailer, the unfunded meter.
    assert_eq!(
        stats("singles-lost-resume"),
        Stats {
            done: 5,
            refused: 3,
            resumed: 2,
            logins: 0
        }
    );
    // ENROLL MAILER goes through (a raw APDU: not counted); a made-up verifier and a short
    // ENROLL are refused; the two recorded log-ins are signed with sequences 1 and 2.
    assert_eq!(
        stats("mailer-auth"),
        Stats {
            done: 0,
            refused: 2,
            resumed: 0,
            logins: 2
        }
    );
    // Batches: 4 pieces, 2 lost then resumed; the unfunded meter's and the stale ID's refused.
    assert_eq!(
        stats("batches"),
        Stats {
            done: 2,
            refused: 2,
            resumed: 1,
            logins: 0
        }
    );
    // The chain part is neither done nor refused; the joined command is refused; the last
    // issue goes through.
    assert_eq!(
        stats("chained-part"),
        Stats {
            done: 1,
            refused: 1,
            resumed: 0,
            logins: 0
        }
    );
    for seed in 0u8..24 {
        let bytes: Vec<u8> = (0..120u32)
            .map(|i| {
                (i as u8)
                    .wrapping_mul(31)
                    .wrapping_add(seed.wrapping_mul(17))
            })
            .collect();
        run_vbox_bytes(&bytes);
    }
}

/// The transfer seeds with bytes changed at pseudo-random places (the same on every run):
/// what a fuzzer's first mutations do, on stable.
#[test]
fn mutated_transfer_seeds_keep_the_invariants() {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut runs = 0;
    for (name, input) in seeds() {
        if !name.starts_with("transfer") {
            continue;
        }
        let bytes = input.encode();
        for _ in 0..20 {
            let mut m = bytes.clone();
            for _ in 0..1 + next() % 4 {
                let at = 1 + (next() as usize) % (m.len() - 1);
                m[at] = next() as u8;
            }
            openpsd_core_fuzz::run_bytes(&m);
            runs += 1;
        }
    }
    assert!(runs >= 160, "{runs} runs");
}

/// The outside signer's seed reaches STORE SIGNATURE's success, not only its refusals: its
/// APDUs replayed on the fixture answer 9000 to the right signature and `9A0A` to the
/// wrong one.
#[test]
fn outside_seed_stores_its_signature() {
    use openpsd_core::psd::psd_card;
    use openpsd_core::store::MemStore;
    use openpsd_core_fuzz::harness::{outside_nvm, platform};
    use openpsd_core_fuzz::Op;
    let all = seeds();
    let (_, input) = all
        .iter()
        .find(|(n, _)| *n == "outside-issue-store")
        .expect("the seed");
    let store = MemStore::open(outside_nvm().clone()).expect("opens");
    let mut card = psd_card(store, platform()).expect("loads");
    card.transmit(&openpsd_core::client::psd_apdu::select());
    let mut sws = Vec::new();
    for op in &input.ops {
        let Op::Apdu(a) = op else { continue };
        let resp = card.transmit(a);
        sws.push(u16::from_be_bytes([
            resp[resp.len() - 2],
            resp[resp.len() - 1],
        ]));
    }
    assert_eq!(
        sws,
        [0x9000, 0x9000, 0x9A09, 0x9A0A, 0x6700, 0x9000, 0x9A0B, 0x9000, 0x9000, 0x9000]
    );
}
