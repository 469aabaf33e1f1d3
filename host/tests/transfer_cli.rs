//! The `openpsd` commands for value transfer and merchant terminals, with the cards run
//! in-process (state:DIR): transfer, purse, resolve, terminal init, pay, batch, import of a
//! replay; refusals that explain themselves; `--help` on every new command.
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use card_sim::os_platform::OsPlatform;
use card_sim::scheme::{self, Scheme};
use common::{fails, ok_json, openpsd};
use serde_json::Value;

/// The cards (see [`common::cards`]), and the scheme's files: `scheme.json`, and the issuer
/// key `issuer.json` a terminal checks purses with.
fn cards(dir: &Path) {
    let s = common::cards(dir, *b"PSDCLI01", *b"PURSECLI");
    s.write(&dir.join("scheme.json")).unwrap();
    scheme::write_public(&dir.join("issuer.json"), &s.public()).unwrap();
}

#[test]
fn transfer_pay_batch_and_replay_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    cards(d);
    let psd = format!("state:{}", d.join("psd").display());
    let purse = format!("state:{}", d.join("purse").display());
    let db = d.join("shop.db");
    let db = db.to_str().unwrap();

    let t = ok_json(&[
        "--json", "transfer", "--amount", "10.00", "--psd", &psd, "--card", &purse, "--pin", "1234",
    ]);
    assert_eq!(t["registers"]["dr"], 4_000);
    assert_eq!(t["registers"]["transferred"], 1_000);
    assert_eq!(t["purse"]["balance"], 1_000);
    assert_eq!(t["resolved_first"], Value::Null);

    let e = fails(&[
        "transfer", "--amount", "1.00", "--psd", &psd, "--card", &purse, "--pin", "9999",
    ]);
    assert!(
        e.contains("wrong PIN: 2 tries left") && e.contains("63C2"),
        "{e}"
    );
    let e = fails(&[
        "transfer", "--amount", "100.01", "--psd", &psd, "--card", &purse, "--pin", "1234",
    ]);
    assert!(e.contains("9A22"), "{e}");
    let e = fails(&[
        "transfer", "--amount", "1.00", "--psd", &psd, "--pin", "1234",
    ]);
    assert!(e.contains("--card"), "{e}");

    let p = ok_json(&["--json", "--card", &purse, "purse"]);
    assert_eq!(p["balance"], 1_000);
    assert_eq!(p["pin_tries_left"], 3, "the right PIN restored the tries");
    assert_eq!(p["paired"][0]["psd"], "505344434C493031");
    assert_eq!(p["log"][0]["kind"], "credit");

    let r = ok_json(&["--json", "resolve", "--psd", &psd, "--card", &purse]);
    assert_eq!(r["resolved"], Value::Null);

    let issuer = d.join("issuer.json");
    let issuer = issuer.to_str().unwrap();
    ok_json(&[
        "--json",
        "terminal",
        "init",
        "--terminal",
        db,
        "--id",
        "5445524D434C4931",
        "--issuer-key",
        issuer,
    ]);
    let e = fails(&[
        "terminal",
        "init",
        "--terminal",
        db,
        "--id",
        "5445524D434C4931",
        "--issuer-key",
        issuer,
    ]);
    assert!(e.contains("holds a terminal already"), "{e}");

    let paid = ok_json(&[
        "--json",
        "pay",
        "--amount",
        "2.50",
        "--card",
        &purse,
        "--terminal",
        db,
        "--pin",
        "1234",
    ]);
    assert_eq!(paid["balance_after"], 750);
    let b = ok_json(&["--json", "batch", "--terminal", db]);
    assert_eq!(
        (b["count"].as_u64(), b["total"].as_u64()),
        (Some(1), Some(250))
    );

    let rec = d.join("rec.json");
    std::fs::write(&rec, paid.to_string()).unwrap();
    let e = fails(&["batch", "import", "--terminal", db, rec.to_str().unwrap()]);
    assert!(e.contains("replayed purchase refused"), "{e}");
    let b = ok_json(&["--json", "batch", "--terminal", db]);
    assert_eq!(b["total"], 250, "the replay added nothing");

    let closed = ok_json(&["--json", "batch", "close", "--terminal", db]);
    assert!(closed["closed_at"].is_i64());
    let e = fails(&["batch", "close", "--terminal", db]);
    assert!(e.contains("no open batch"), "{e}");

    // Another scheme's key file does not match the terminal.
    let other = Scheme::generate(Some(32), &mut OsPlatform::default());
    scheme::write_public(&d.join("other.json"), &other.public()).unwrap();
    let e = fails(&[
        "pay",
        "--amount",
        "1.00",
        "--card",
        &purse,
        "--terminal",
        db,
        "--pin",
        "1234",
        "--issuer-key",
        d.join("other.json").to_str().unwrap(),
    ]);
    assert!(e.contains("not the issuer key"), "{e}");
    let e = fails(&["batch", "--terminal", d.join("none.db").to_str().unwrap()]);
    assert!(e.contains("no terminal database"), "{e}");
}

#[test]
fn every_new_command_has_help() {
    for args in [
        &["transfer", "--help"][..],
        &["resolve", "--help"],
        &["purse", "--help"],
        &["pay", "--help"],
        &["batch", "--help"],
        &["batch", "close", "--help"],
        &["batch", "import", "--help"],
        &["terminal", "--help"],
        &["terminal", "init", "--help"],
        &["terminal", "show", "--help"],
        &["terminal", "void", "--help"],
    ] {
        let out = openpsd(args);
        assert!(out.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage"),
            "{args:?}"
        );
    }
}
