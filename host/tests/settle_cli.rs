//! The mailer's side of the issuer's settlement through `openpsd`, on a PSD served over
//! TCP by card-sim's own server (what `card-sim serve --tcp` runs): `openpsd pending` reads
//! the pending transfer for the issuer, the issuer signs with card-sim's settlement library
//! (what `card-sim settle` runs), and `openpsd settle` applies the decision — once, and only
//! to the transfer it names.
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::TcpListener;
use std::path::Path;

use card_sim::os_platform::Clock;
use card_sim::scheme::Scheme;
use card_sim::settlement::{self, Basis, PendingReport};
use card_sim::sim::{self, FileCard};
use common::{fails, ok_json};
use openpsd_core::client::transfer as driver;
use openpsd_core::client::{Link, LinkError};
use openpsd_core::psd::settle::Decision;
use openpsd_core::purse::ins as purse_ins;
use openpsd_core::types::*;
use serde_json::Value;

/// The purse, gone when it is sent TRANSFER CREDIT: the VAL is lost.
struct ValLost<'a>(&'a mut FileCard);

impl Link for ValLost<'_> {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, LinkError> {
        if apdu.get(1) == Some(&purse_ins::TRANSFER_CREDIT) {
            return Err(LinkError("gone".into()));
        }
        self.0.transmit(apdu)
    }
}

/// A funded PSD of scheme 31 with 30.00 pending for a purse that is then lost.
fn psd_with_a_lost_val(dir: &Path) -> Scheme {
    let s = common::cards(dir, *b"PSDSET01", *b"PURSESET");
    let mut psd = sim::open_file_card(&dir.join("psd"), Clock::System).unwrap();
    let mut purse = sim::open_file_card(&dir.join("purse"), Clock::System).unwrap();
    let e = driver::transfer(
        &mut psd,
        &mut ValLost(&mut purse),
        RegisterSetIndex(0),
        Amount(3_000),
        b"1234",
    )
    .unwrap_err();
    assert!(matches!(e, driver::TransferError::Link(..)), "{e}");
    s
}

fn write(path: &Path, d: &settlement::DecisionFile) {
    std::fs::write(path, serde_json::to_string_pretty(d).unwrap()).unwrap();
}

#[test]
fn a_mailer_reads_the_pending_transfer_and_applies_the_issuers_decision_over_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let scheme = psd_with_a_lost_val(d);

    // The PSD served as `card-sim serve --tcp` serves it.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let state = d.join("psd");
    std::thread::spawn(move || {
        let mut card = sim::open_file_card(&state, Clock::System).unwrap();
        card_sim::transport::run_tcp_server(listener, &mut card)
    });
    let spec = format!("tcp:127.0.0.1:{port}");

    let pending = d.join("pending.json");
    let report = ok_json(&[
        "--json",
        "--card",
        &spec,
        "pending",
        "--out",
        pending.to_str().unwrap(),
    ]);
    assert_eq!(report["device"], "5053445345543031");
    assert_eq!(report["pending"]["amount"], 3_000);
    assert_eq!(report["pending"]["card"], hex::encode_upper(b"PURSESET"));
    let report = PendingReport::read(&pending).unwrap();

    // The issuer: a decision for another transfer, and the genuine one.
    let mut other = report.clone();
    other.pending.as_mut().unwrap().transfer += 1;
    let undo = Basis::Issuer(Decision::Undo);
    write(
        &d.join("other.json"),
        &settlement::settle(&scheme, &other, &undo, 10).unwrap(),
    );
    write(
        &d.join("undo.json"),
        &settlement::settle(&scheme, &report, &undo, 10).unwrap(),
    );

    let e = fails(&[
        "--card",
        &spec,
        "settle",
        d.join("other.json").to_str().unwrap(),
    ]);
    assert!(
        e.contains("the decision is for transfer 1") && e.contains("has transfer 0"),
        "{e}"
    );
    let out = ok_json(&[
        "--json",
        "--card",
        &spec,
        "settle",
        d.join("undo.json").to_str().unwrap(),
    ]);
    assert_eq!(out["outcome"], "undone");
    assert_eq!(
        (out["dr"].clone(), out["pending"].clone()),
        (5_000.into(), 0.into())
    );
    let e = fails(&[
        "--card",
        &spec,
        "settle",
        d.join("undo.json").to_str().unwrap(),
    ]);
    assert!(e.contains("nothing pending"), "replayed: {e}");
    let after = ok_json(&["--json", "--card", &spec, "pending"]);
    assert_eq!(after["pending"], Value::Null);
    assert_eq!(after["issuer_counter"], 10);
}
