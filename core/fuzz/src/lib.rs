//! Fuzzing harness for `openpsd_core::Card::handle` with the PSD applet.
//!
//! * [`input`]: how fuzzer bytes become a start state and a sequence of operations
//!   (raw APDUs, resets, power cuts, KMS refills, well-formed indicium requests, license
//!   grants signed by the harness as PA and vendor, exports, imports of remembered blobs).
//! * [`harness`]: runs them on a card over a [`MemStore`](openpsd_core::store::MemStore) and
//!   asserts the properties listed in `docs/fuzzing.md`.
//! * [`certmeter`]: the certificate meter's start state (rate table, CA anchor, active
//!   postmark key), the checks of its commands' responses and record, and its decoders
//!   run on raw bytes.
//! * [`seeds`]: the seed corpus written by `cargo run --bin gen-corpus`.
//! * [`purse`]: the purse applet's target: raw APDUs on a purse card, its invariants.
//! * [`state`]: the state parsers' targets: card-sim's file store log, core's sealed
//!   records and record decoders, the wasm module's saved state.
//! * [`vbox`]: the virtual meter box's target: raw APDUs and record commands built from a
//!   stand-in database (edited, lost, resumed), its invariants.

pub mod certmeter;
pub mod harness;
pub mod input;
pub mod purse;
pub mod seeds;
pub mod state;
pub mod vbox;

pub use harness::{run, run_bytes};
pub use input::{Input, Op, Start};

/// A byte-string target's seed corpus: file names and inputs.
pub type ByteSeeds = Vec<(&'static str, Vec<u8>)>;
