//! `Card::handle` on a PSD card: any sequence of APDUs, resets and power cuts must never
//! panic and must keep the registers' invariants (see `docs/fuzzing.md`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    openpsd_core_fuzz::run_bytes(data);
});
