//! The state parsers: card-sim's file store log (`state.log`): arbitrary images and writer-made scripts cut and changed. Never a panic, refusals are
//! "corrupt" errors, write -> read round-trips (see `core/fuzz/src/state.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = openpsd_core_fuzz::state::run_file_log(data);
});
