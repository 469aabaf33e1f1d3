//! What the frozen state fixture tests share: the fixtures of one format under
//! `tests/state/<version>/`, copied to a temporary directory before a card opens them
//! (opening takes a lock and may compact the log), the contents they were made with, and
//! an APDU exchange with a card-sim card.

use std::fs;
use std::path::{Path, PathBuf};

use card_sim::sim::SimulatedCard;
use openpsd_core::types::{Date, TerminalId};

/// Refilled on set 0 of the PSD fixtures.
pub const REFILLED: u64 = 500_000;
/// The one indicium's postage.
pub const POSTAGE: u64 = 1_000;
/// Moved to the purse.
pub const TRANSFERRED: u64 = 7_500;
/// Paid from the purse.
pub const PAID: u64 = 2_500;
/// The terminal the purse paid.
pub const TERMINAL: TerminalId = TerminalId(*b"TERM0001");

/// The day the fixtures were made (the cards' clock in the tests).
pub fn today() -> Date {
    Date::new(2026, 11, 21).expect("valid date")
}

/// `tests/state/<version>`.
pub fn fixtures(version: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("state")
        .join(version)
}

/// Copies fixture `name` of `version` (directory and storage key) into `into`.
pub fn copy_fixture(version: &str, name: &str, into: &Path) -> PathBuf {
    let from = fixtures(version).join(name);
    let to = into.join(name);
    fs::create_dir_all(&to).expect("temp dir");
    for entry in fs::read_dir(&from).expect("fixture directory exists") {
        let entry = entry.expect("fixture entry");
        fs::copy(entry.path(), to.join(entry.file_name())).expect("copy fixture file");
    }
    let key = format!("{name}.storage-key");
    fs::copy(fixtures(version).join(&key), into.join(&key)).expect("copy storage key");
    to
}

/// One APDU to a card-sim card, its response with the status word.
pub fn transmit(card: &mut impl SimulatedCard, apdu: &[u8]) -> Vec<u8> {
    let mut reply = Vec::new();
    card.handle(apdu, &mut reply);
    reply
}
