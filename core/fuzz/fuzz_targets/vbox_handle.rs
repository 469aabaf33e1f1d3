//! `Card::handle` on the virtual meter box: raw APDUs and record commands from a stand-in
//! database, edited or lost; refusals write nothing, roots and books stay exact (see
//! `core/fuzz/src/vbox.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = openpsd_core_fuzz::vbox::run_vbox_bytes(data);
});
