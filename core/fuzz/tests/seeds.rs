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
        run(&input);
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
    openpsd_core_fuzz::purse::run_purse_bytes(&input);
    let blank = [
        purse_apdu::get_data(1),
        purse_apdu::verify(b"2468"),
        vec![0x80, 0x10, 0, 0, 2, 1, 2],
    ];
    let mut input = vec![1];
    input.extend(frame(&blank));
    openpsd_core_fuzz::purse::run_purse_bytes(&input);
    for data in [&[][..], &[0], &[0, 200, 1, 2], &[2, 4, 0x80, 0xCA, 0, 1]] {
        openpsd_core_fuzz::purse::run_purse_bytes(data);
    }
}

#[test]
fn vbox_inputs_keep_the_box_invariants() {
    use openpsd_core_fuzz::vbox::run_vbox_bytes;
    // Issue, issue with an edit, refill, a lost issue then RESUME, an issue by another
    // mailer, a raw blank APDU, a lost refill then RESUME, then more on every meter.
    let mut input = vec![];
    input.extend_from_slice(&[1, 0, 1, 0x01, 0x00, 0, 0, 0]);
    input.extend_from_slice(&[1, 0, 2, 0x00, 0x50, 0, 40, 0x10]);
    input.extend_from_slice(&[2, 1, 0, 0x03, 0xE8, 0, 0, 0]);
    input.extend_from_slice(&[5, 1, 3, 0x00, 0x20, 0, 0, 0]);
    input.push(3);
    input.extend_from_slice(&[1, 0, 0x84, 0x00, 0x20, 0, 0, 0]);
    input.extend_from_slice(&[0, 0, 5, 0x80, 0xCA, 0x00, 0x01, 0x00]);
    input.extend_from_slice(&[6, 0, 0, 0x00, 0x10, 0, 0, 0]);
    input.push(3);
    input.extend_from_slice(&[1, 2, 4, 0x00, 0x01, 0, 0, 0]);
    input.extend_from_slice(&[1, 0, 1, 0x01, 0x00, 0, 0, 0]);
    let stats = run_vbox_bytes(&input);
    // Done: 2 issues (one a reprint after a refill), 1 refill, 1 lost issue, 1 lost refill;
    // refused: the edited command, the other mailer, the unfunded meter.
    assert_eq!(
        stats,
        openpsd_core_fuzz::vbox::Stats {
            done: 5,
            refused: 3,
            resumed: 2
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
