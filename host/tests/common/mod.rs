//! What the `openpsd` CLI tests share: running the `openpsd` binary, and the cards an
//! issuer makes for a transfer — a PSD of scheme 31 funded with 50.00 and a purse of the
//! same scheme with the PIN 1234, in the card state directories `psd` and `purse`.
#![allow(dead_code)] // each test binary uses a different part

use std::path::Path;
use std::process::{Command, Output};

use card_sim::issuer::{self, PurseRequest};
use card_sim::os_platform::{Clock, OsPlatform};
use card_sim::personalize::Request;
use card_sim::scheme::Scheme;
use card_sim::sim;
use openpsd_core::types::*;
use serde_json::Value;

/// Runs `openpsd ARGS`, without the card or the PIN from the environment.
pub fn openpsd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_openpsd"))
        .args(args)
        .env_remove("OPENPSD_CARD")
        .env_remove("OPENPSD_PIN")
        .output()
        .unwrap()
}

/// Runs `openpsd ARGS`, which must succeed; answers its JSON output.
pub fn ok_json(args: &[&str]) -> Value {
    let out = openpsd(args);
    assert!(
        out.status.success(),
        "openpsd {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

/// Runs `openpsd ARGS`, which must fail; answers its stderr.
pub fn fails(args: &[&str]) -> String {
    let out = openpsd(args);
    assert!(!out.status.success(), "openpsd {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// In `dir`: the PSD `psd` (device `device`) personalized for a new scheme 31 and funded
/// with 50.00, and the purse `purse` (card `card`, PIN 1234) of that scheme. Answers the
/// scheme.
pub fn cards(dir: &Path, device: [u8; 8], card: [u8; 8]) -> Scheme {
    let s = Scheme::generate(Some(31), &mut OsPlatform::default());
    let mut psd = sim::create_file_card(&dir.join("psd"), Clock::System).unwrap();
    let kms = openpsd_core::crypto::IndiciumKey::from_bytes(&[0x11; 32]).unwrap();
    let req = Request {
        device: Some(DeviceId(device)),
        ..Request::new(kms.public_key())
    };
    issuer::personalize_and_fund(
        &mut psd,
        &mut OsPlatform::default(),
        &req,
        &kms,
        Some((&s, 5)),
        Amount(5_000),
    )
    .unwrap();
    let mut purse = sim::create_file_card(&dir.join("purse"), Clock::System).unwrap();
    let req = PurseRequest {
        card: Some(CardId(card)),
        pin: zeroize::Zeroizing::new(b"1234".to_vec()),
        max_balance: Amount(50_000),
        max_transfer: Amount(10_000),
        pin_tries: 3,
        max_failures: 5,
    };
    issuer::personalize_purse(&mut purse, &mut OsPlatform::default(), &s, &req).unwrap();
    s
}
