//! Frozen state fixtures, format v2: PSDs personalized with device certificates (issue 12
//! items 1-2) but still with K1, the symmetric refill key; purses of the certificate scheme.
//! See `state_v1.rs` for how fixtures are kept.
//!
//! The fixtures were made once by `generate_v2` below (ignored; it refuses to overwrite).
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};

use card_sim::os_platform::Clock;
use openpsd_core::client::psd_apdu;
use openpsd_core::client::purse_apdu;
use openpsd_core::purse::purchase::PurchaseRequest;
use openpsd_core::types::{Amount, Date, RegisterSetIndex, TerminalId};
use openpsd_tests::{expect_ok, request};

const REFILLED: u64 = 500_000;
const POSTAGE: u64 = 1_000;
const TRANSFERRED: u64 = 7_500;
const PAID: u64 = 2_500;
const TERMINAL: TerminalId = TerminalId(*b"TERM0001");

fn today() -> Date {
    Date::new(2026, 11, 21).expect("valid date")
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("state/v2")
}

#[test]
#[ignore = "writes tests/state/v2 (already made; refuses to overwrite)"]
fn generate_v2() {
    use card_sim::file_store::FileStore;
    use card_sim::sim::{create_file_card, storage_key_path};
    use openpsd_core::store::{SealedStore, StorageKey, Store, Write};
    use openpsd_tests::purse::{funded_psd, purse, run_until};

    let out = fixtures();
    for name in ["psd", "purse"] {
        let dir = out.join(name);
        assert!(!dir.exists(), "{} exists: v2 is frozen", dir.display());
    }

    let mut psd = funded_psd(1, REFILLED);
    expect_ok(&psd.transmit(&psd_apdu::issue_indicium(
        RegisterSetIndex(0),
        &request(1, POSTAGE, 21),
    )));
    let mut purse = purse(2);
    run_until(&mut psd, &mut purse, TRANSFERRED, 11);
    let req = PurchaseRequest {
        terminal: TERMINAL,
        terminal_counter: 1,
        amount: Amount(PAID),
        date: today(),
    };
    expect_ok(&purse.transmit(&purse_apdu::purchase(&req)));

    for (name, mem) in [("psd", psd.store()), ("purse", purse.store())] {
        let dir = out.join(name);
        drop(create_file_card(&dir, Clock::Fixed(today())).expect("card-sim creates a card"));
        let key_hex = fs::read_to_string(storage_key_path(&dir)).expect("storage key");
        let key: [u8; 32] = hex::decode(key_hex.trim())
            .expect("hex key")
            .try_into()
            .expect("32 bytes");
        let writes: Vec<Write> = mem
            .ids()
            .expect("ids")
            .into_iter()
            .map(|id| Write {
                id,
                value: mem.read(id).expect("read"),
            })
            .collect();
        let mut sealed =
            SealedStore::new(FileStore::open(&dir).expect("opens"), StorageKey::new(key));
        sealed.commit(&writes).expect("commit");
        drop(sealed);
        fs::remove_file(dir.join("lock")).ok();
    }
}
