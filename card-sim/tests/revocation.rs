//! The issuer's revocation through the CLI: `card-sim scheme revoke` signs a list naming a
//! PSD's certificate serial (from its secrets file), `card-sim load-revocation` gives it to
//! a purse, and the purse then refuses that PSD (`9A27`) while value stays where it was.
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use card_sim::os_platform::Clock;
use card_sim::sim::open_file_card;
use common::{card_sim, funded_psd};
use openpsd_core::client::transfer as driver;
use openpsd_core::types::*;
use openpsd_core::Status;

fn transfer(d: &Path, amount: u64) -> Result<(), driver::TransferError> {
    let mut psd = open_file_card(&d.join("psd"), Clock::System).unwrap();
    let mut purse = open_file_card(&d.join("purse"), Clock::System).unwrap();
    driver::transfer(
        &mut psd,
        &mut purse,
        RegisterSetIndex(0),
        Amount(amount),
        b"1357",
    )
    .map(drop)
}

#[test]
fn a_psd_revoked_by_the_issuer_is_refused_by_the_purse() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    funded_psd(d, "100.00");
    let args = ["personalize", "--kind", "purse", "--state", "purse"];
    card_sim(
        &[&args[..], &["--scheme", "scheme.json", "--pin", "1357"]].concat(),
        d,
    );
    // No secret of the issuer lands beside the cards.
    for f in ["psd.secrets.json", "purse.secrets.json"] {
        let text = std::fs::read_to_string(d.join(f)).unwrap();
        assert!(!text.contains("issuer_signing_key") && !text.contains("scheme_key"));
    }
    transfer(d, 500).unwrap();

    let secrets: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("psd.secrets.json")).unwrap())
            .unwrap();
    let serial = secrets["certificate_serial"].as_u64().unwrap().to_string();
    let out = card_sim(
        &[
            "scheme",
            "revoke",
            "--scheme",
            "scheme.json",
            "--version",
            "1",
            "--serial",
            &serial,
            "--out",
            "revoked.hex",
        ],
        d,
    );
    assert!(out.contains("version 1 (1 serials)"), "{out}");
    let out = card_sim(
        &[
            "load-revocation",
            "--state",
            "purse",
            "--list",
            "revoked.hex",
        ],
        d,
    );
    assert!(out.contains("revocation list version 1 held"), "{out}");
    let err = transfer(d, 500).unwrap_err();
    assert_eq!(err.status(), Some(Status::CertificateRefused));

    // An older list cannot lift it; a newer one can.
    card_sim(
        &[
            "scheme",
            "revoke",
            "--scheme",
            "scheme.json",
            "--version",
            "2",
            "--out",
            "v2.hex",
        ],
        d,
    );
    card_sim(
        &["load-revocation", "--state", "purse", "--list", "v2.hex"],
        d,
    );
    transfer(d, 500).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_card-sim"))
        .args([
            "load-revocation",
            "--state",
            "purse",
            "--list",
            "revoked.hex",
        ])
        .current_dir(d)
        .output()
        .unwrap();
    assert!(!out.status.success(), "an older list is refused");
}
