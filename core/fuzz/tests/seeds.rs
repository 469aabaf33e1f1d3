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
