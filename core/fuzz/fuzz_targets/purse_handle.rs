//! `Card::handle` on a purse card: any sequence of APDUs must never panic and must keep the
//! balance within its limits (see `core/fuzz/src/purse.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = openpsd_core_fuzz::purse::run_purse_bytes(data);
});
