//! The `openpsd` CLI against a card in-process (state:DIR) and through card-sim's TCP
//! transport: status, an indicium that verifies, and a retry with the same transaction
//! ID that returns the same indicium without a second debit.
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

use card_sim::os_platform::{Clock, OsPlatform};
use card_sim::personalize::{self, Request};
use card_sim::sim::{self, FileCard};
use card_sim::transport::run_tcp_server;
use openpsd_core::client::PsdClient;
use openpsd_core::crypto::IndiciumKey;
use openpsd_core::psd::audit::AuditData;
use openpsd_core::psd::refill::RefillCombination;
use openpsd_core::types::*;
use serde_json::Value;

/// A personalized card in `dir`, refilled with `amount` (the test plays the KMS). The card
/// comes back open: a test that serves it keeps using it rather than re-opening the
/// directory, whose lock a child process another test forks at that instant may still hold
/// (the fork copies the descriptor until its exec).
fn funded_card(dir: &Path, amount: u64) -> FileCard {
    let mut card = sim::create_file_card(dir, Clock::System).unwrap();
    let kms = IndiciumKey::from_bytes(&[0x11; 32]).unwrap();
    let req = Request {
        device: Some(DeviceId(*b"PSDHOST1")),
        kms_public_key: kms.public_key(),
        vendor_public_key: None,
        max_postage: Amount(10_000),
        max_dr: Amount(1_000_000),
        inspection_days: 0,
        licenses: vec![personalize::parse_license("4711:10115").unwrap()],
        postal_authority: None,
    };
    let (_, secrets) =
        personalize::personalize(&mut card, &mut OsPlatform::default(), &req).unwrap();
    let public_key = hex::decode(&secrets.public_key).unwrap();
    let mut psd = PsdClient::new(&mut card);
    psd.select().unwrap();
    let set = RegisterSetIndex(0);
    let audit = AuditData::open(&psd.audit(set, &[3; 16]).unwrap(), &public_key).unwrap();
    let msg = RefillCombination {
        device: audit.device,
        license: audit.license,
        amount: Amount(amount),
        control_sum: audit.control_sum,
        refills: audit.refills,
        combination_id: [3; 8],
    }
    .sign(&kms);
    assert_eq!(psd.refill(set, &msg).unwrap().dr, Amount(amount));
    card
}

fn openpsd(card: &str, args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_openpsd"))
        .args(["--json", "--card", card])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openpsd {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

#[test]
fn status_and_indicium_in_process() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("card");
    drop(funded_card(&state, 2_500));
    let card = format!("state:{}", state.display());

    let s = openpsd(&card, &["status"]);
    assert_eq!(s["device_id"], "505344484F535431");
    assert_eq!(s["register_sets"][0]["dr"], 2_500);

    let i = openpsd(&card, &["indicium", "--postage", "0.85", "--to", "20095"]);
    assert_eq!(
        (
            i["verified"].as_bool(),
            i["postage"].as_u64(),
            i["pieces"].as_u64()
        ),
        (Some(true), Some(85), Some(1))
    );
    assert_eq!(i["origin"], "10115");
    let s = openpsd(&card, &["status"]);
    assert_eq!(
        (
            s["register_sets"][0]["ar"].as_u64(),
            s["register_sets"][0]["dr"].as_u64()
        ),
        (Some(85), Some(2_415))
    );
}

#[test]
fn indicium_over_tcp_and_a_retry_with_the_same_transaction_id() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("card");
    let served = state.clone();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let card = format!("tcp:{}", listener.local_addr().unwrap());
    let (ready, funded) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut card = funded_card(&served, 1_000);
        ready.send(()).unwrap();
        run_tcp_server(listener, &mut card)
    });
    funded.recv().unwrap();

    let first = openpsd(
        &card,
        &[
            "indicium",
            "--postage",
            "1.60",
            "--to",
            "80331",
            "--txn",
            "00000000000000AA",
        ],
    );
    let again = openpsd(
        &card,
        &[
            "indicium",
            "--postage",
            "1.60",
            "--to",
            "80331",
            "--txn",
            "00000000000000AA",
        ],
    );
    assert_eq!(
        first["indicium"], again["indicium"],
        "the same indicium comes back"
    );
    let s = openpsd(&card, &["status"]);
    assert_eq!(
        (
            s["register_sets"][0]["dr"].as_u64(),
            s["register_sets"][0]["pieces"].as_u64()
        ),
        (Some(840), Some(1))
    );

    // Refusals are the card's status words, named.
    let out = Command::new(env!("CARGO_BIN_EXE_openpsd"))
        .args([
            "--card",
            &card,
            "indicium",
            "--postage",
            "9.00",
            "--to",
            "80331",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("9A01") && err.contains("insufficient funds"),
        "{err}"
    );
}

#[test]
fn bad_card_specs_and_missing_cards_are_clear_errors() {
    let out = Command::new(env!("CARGO_BIN_EXE_openpsd"))
        .args(["--card", "usb:1", "status"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("expected state:DIR, tcp:HOST:PORT or pcsc:READER"));
    let out = Command::new(env!("CARGO_BIN_EXE_openpsd"))
        .args(["--card", "state:/nonexistent/card", "status"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no card state"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn refill_takes_an_amount_or_a_cancel_not_both() {
    let config = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_openpsd"))
            .args(["--card", "state:/nonexistent/card", "refill"])
            .args(args)
            .env("OPENPSD_CONFIG_DIR", config.path())
            .env_remove("OPENPSD_API_KEY")
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(run(&[]).contains("--amount"), "neither");
    let both = run(&["--amount", "1.00", "--cancel", "t1"]);
    assert!(both.contains("cannot be used with"), "{both}");
    // Either alone gets as far as asking for the customer's login (nobody logged in).
    assert!(run(&["--cancel", "t1"]).contains("not logged in"));
    assert!(run(&["--amount", "1.00"]).contains("not logged in"));
}

/// `openpsd` expected to fail: its stderr.
fn openpsd_fails(card: &str, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_openpsd"))
        .args(["--card", card])
        .args(args)
        .output()
        .unwrap();
    assert!(!out.status.success(), "openpsd {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn license_export_and_import_through_the_cli_and_a_kill_between_file_and_commit() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("card");
    drop(funded_card(&state, 2_500));
    let card = format!("state:{}", state.display());
    let files = dir.path().join("sets");
    let files_arg = files.to_str().unwrap();

    // Killed after the file is written and synced, before the PSD commits: the set is
    // still in the PSD (frozen), the file on disk; the same export again finishes it.
    let mut child = Command::new(env!("CARGO_BIN_EXE_openpsd"))
        .args([
            "--card", &card, "license", "export", "--set", "0", "--to", files_arg,
        ])
        .env("OPENPSD_PAUSE_AT", "export-written")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("paused at export-written") {
        line.clear();
        assert!(
            std::io::BufRead::read_line(&mut err, &mut line).unwrap() > 0,
            "the export ended before its pause point"
        );
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let listed = openpsd(&card, &["license", "list", "--dir", files_arg]);
    assert_eq!(listed["sets"][0]["frozen"], true, "{listed}");
    assert_eq!(listed["exports"][0]["state"], "preparing");
    assert_eq!(listed["files"][0]["usable"], false, "not committed yet");
    let first_file = std::fs::read(listed["files"][0]["file"].as_str().unwrap()).unwrap();

    let out = openpsd(
        &card,
        &["license", "export", "--set", "0", "--to", files_arg],
    );
    let file = out["file"].as_str().unwrap().to_string();
    assert_eq!(std::fs::read(&file).unwrap(), first_file, "the same blob");
    assert_eq!(
        (out["license"].as_u64(), out["dr"].as_u64()),
        (Some(4711), Some(2_500))
    );
    let status = openpsd(&card, &["status"]);
    assert_eq!(
        status["register_sets"].as_array().unwrap().len(),
        0,
        "{status}"
    );
    let listed = openpsd(&card, &["license", "list", "--dir", files_arg]);
    assert_eq!(listed["files"][0]["usable"], true);
    assert_eq!(listed["exports"][0]["state"], "outstanding");

    // Import: back, usable; the same file again is refused for ever, in words.
    let back = openpsd(&card, &["license", "import", &file]);
    assert_eq!(back["slot"], 0);
    let ind = openpsd(
        &card,
        &[
            "indicium",
            "--postage",
            "1.00",
            "--to",
            "20095",
            "--set",
            "0",
        ],
    );
    assert_eq!(ind["dr"], 2_400);
    let err = openpsd_fails(&card, &["license", "import", &file]);
    assert!(
        err.contains("older or duplicate copy: it can never be used"),
        "{err}"
    );
}
