//! The `openpsd` CLI against a card in-process (state:DIR) and through card-sim's TCP
//! transport: status, an indicium that verifies, and a retry with the same transaction
//! ID that returns the same indicium without a second debit; license export, import and
//! retire (against a stand-in for the meter's retirement route).
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
use openpsd_core::psd::license::export::Blob;
use openpsd_core::psd::license::retire::Receipt;
use openpsd_core::psd::refill::RefillCombination;
use openpsd_core::types::*;
use openpsd_protocol::license::{Retirement, RetirementRequest};
use serde_json::Value;

/// A personalized card in `dir`, refilled with `amount` (the test plays the KMS). The card
/// comes back open: a test that serves it keeps using it rather than re-opening the
/// directory, whose lock a child process another test forks at that instant may still hold
/// (the fork copies the descriptor until its exec).
fn funded_card(dir: &Path, amount: u64) -> FileCard {
    funded_card_and_key(dir, amount, &[]).0
}

/// [`funded_card`] with more licenses (empty sets after set 0's 4711), and the device's
/// public key (SEC1).
fn funded_card_and_key(dir: &Path, amount: u64, more: &[&str]) -> (FileCard, Vec<u8>) {
    let mut card = sim::create_file_card(dir, Clock::System).unwrap();
    let kms = IndiciumKey::from_bytes(&[0x11; 32]).unwrap();
    let req = Request {
        device: Some(DeviceId(*b"PSDHOST1")),
        kms_public_key: kms.public_key(),
        vendor_public_key: None,
        max_postage: Amount(10_000),
        max_dr: Amount(1_000_000),
        inspection_days: 0,
        licenses: ["4711:10115"]
            .iter()
            .chain(more)
            .map(|l| personalize::parse_license(l).unwrap())
            .collect(),
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
    (card, public_key)
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

/// A stand-in for the meter server's `POST /v1/licenses/retirements` (the contract of
/// `openpsd_protocol::license`), over plain HTTP: it checks the bearer key and the
/// receipt's signature, keeps every request, and answers the same [`Retirement`] for the
/// same (device, epoch). The real route is exercised by scripts/pcsc-test.sh.
struct FakeMeter {
    url: String,
    requests: std::sync::Arc<std::sync::Mutex<Vec<RetirementRequest>>>,
}

impl FakeMeter {
    fn start(device_public_key: Vec<u8>) -> FakeMeter {
        use std::io::{BufRead as _, Read as _, Write as _};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = requests.clone();
        std::thread::spawn(move || {
            let mut booked = std::collections::HashMap::<(String, u64), Retirement>::new();
            for stream in listener.incoming() {
                let mut stream = stream.unwrap();
                let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                reader.read_line(&mut request_line).unwrap();
                let (mut length, mut bearer) = (0usize, String::new());
                loop {
                    let mut h = String::new();
                    reader.read_line(&mut h).unwrap();
                    let h = h.trim_end();
                    if h.is_empty() {
                        break;
                    }
                    let (name, value) = h.split_once(':').unwrap();
                    match name.to_ascii_lowercase().as_str() {
                        "content-length" => length = value.trim().parse().unwrap(),
                        "authorization" => bearer = value.trim().to_owned(),
                        _ => {}
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                let (status, answer) =
                    if !request_line.starts_with("POST /v1/licenses/retirements ") {
                        (404, error_json("not_found", "no such route"))
                    } else if bearer != "Bearer test-key" {
                        (401, error_json("unauthorized", "no credential"))
                    } else {
                        let req: RetirementRequest = serde_json::from_slice(&body).unwrap();
                        kept.lock().unwrap().push(req.clone());
                        let receipt = Receipt::decode(&hex::decode(&req.receipt).unwrap()).unwrap();
                        assert!(receipt.verify(&device_public_key), "a signed receipt");
                        assert_eq!(receipt.device.to_string(), req.device_id);
                        let final_ar = req.blob.as_ref().map_or(0, |b| {
                            let bytes = hex::decode(b).unwrap();
                            assert_eq!(&Blob::digest_of(&bytes)[..], &receipt.digest[..]);
                            Blob::decode(&bytes).unwrap().set.ar.0
                        });
                        let r = booked
                            .entry((req.device_id.clone(), receipt.epoch))
                            .or_insert_with(|| Retirement {
                                device_id: req.device_id.clone(),
                                license: receipt.license.0,
                                epoch: receipt.epoch,
                                refunded: receipt.dr.0,
                                account_id: "acct-test".into(),
                                final_ar,
                                revoked_grant: None,
                                retired_at: 1_780_000_000,
                            });
                        (200, serde_json::to_string(r).unwrap())
                    };
                write!(
                    stream,
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{answer}",
                    answer.len()
                )
                .unwrap();
            }
        });
        FakeMeter { url, requests }
    }

    fn requests(&self) -> Vec<RetirementRequest> {
        self.requests.lock().unwrap().clone()
    }
}

fn error_json(code: &str, message: &str) -> String {
    serde_json::json!({"error": {"code": code, "step": "retire", "message": message}}).to_string()
}

/// `openpsd` with the meter's credential and a config directory of the test's.
fn openpsd_metered(card: &str, config: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_openpsd"))
        .args(["--card", card])
        .args(args)
        .env("OPENPSD_CONFIG_DIR", config)
        .env("OPENPSD_API_KEY", "test-key")
        .env_remove("OPENPSD_PAUSE_AT")
        .output()
        .unwrap()
}

#[test]
fn license_retire_exports_retires_books_and_forgets_and_a_kill_after_the_card_step() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("card");
    // A second license stays: a PSD personalized without the postal authority whose last
    // set is retired and forgotten does not load again ("personalized PSD without register
    // sets", core/src/psd/state.rs).
    let (card, public_key) = funded_card_and_key(&state, 2_500, &["4712:10115"]);
    drop(card);
    let card = format!("state:{}", state.display());
    let files = dir.path().join("sets");
    let files_arg = files.to_str().unwrap();
    let meter = FakeMeter::start(public_key);
    let ind = openpsd(&card, &["indicium", "--postage", "1.00", "--to", "20095"]);
    assert_eq!(ind["dr"], 2_400);

    // Killed after RETIRE SET, before the meter is asked: the set is out of the PSD, its
    // entry retired, the file on disk and never importable again.
    let mut child = Command::new(env!("CARGO_BIN_EXE_openpsd"))
        .args([
            "--card",
            &card,
            "license",
            "retire",
            "--license",
            "4711",
            "--dir",
            files_arg,
            "--meter",
            &meter.url,
        ])
        .env("OPENPSD_PAUSE_AT", "retired")
        .env("OPENPSD_CONFIG_DIR", dir.path())
        .env("OPENPSD_API_KEY", "test-key")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut said = String::new();
    let mut line = String::new();
    while !line.contains("paused at retired") {
        line.clear();
        assert!(
            std::io::BufRead::read_line(&mut err, &mut line).unwrap() > 0,
            "the retirement ended before its pause point: {said}"
        );
        said.push_str(&line);
    }
    child.kill().unwrap();
    child.wait().unwrap();
    for step in [
        "1/4 exporting license 4711",
        "    3/3 committing",
        "2/4 retired",
    ] {
        assert!(said.contains(step), "{said}");
    }
    assert!(
        said.contains("the file can never be imported again"),
        "{said}"
    );
    assert!(meter.requests().is_empty(), "the meter not asked yet");
    let listed = openpsd(&card, &["license", "list", "--dir", files_arg]);
    assert_eq!(
        listed["sets"].as_array().unwrap().len(),
        1,
        "4711 left, 4712 stays: {listed}"
    );
    assert_eq!(listed["sets"][0]["license"], 4712);
    assert_eq!(listed["exports"][0]["state"], "retired", "{listed}");
    assert_eq!(listed["exports"][0]["dr"], 2_400);
    assert_eq!(
        (
            listed["files"][0]["usable"].as_bool(),
            listed["files"][0]["retired"].as_bool()
        ),
        (Some(false), Some(true))
    );
    let file = listed["files"][0]["file"].as_str().unwrap().to_string();
    let err = openpsd_fails(&card, &["license", "import", &file]);
    assert!(err.contains("it can never be used"), "{err}");
    let text = Command::new(env!("CARGO_BIN_EXE_openpsd"))
        .args(["--card", &card, "license", "list", "--dir", files_arg])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("retired: never imported again") && text.contains("kept as evidence"),
        "{text}"
    );

    // Run again: the same receipt, booked with the file, then forgotten.
    let out = openpsd_metered(
        &card,
        dir.path(),
        &[
            "--json",
            "license",
            "retire",
            "--license",
            "4711",
            "--dir",
            files_arg,
            "--meter",
            &meter.url,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            done["refunded"].as_u64(),
            done["final_ar"].as_u64(),
            done["license"].as_u64(),
            done["forgotten"].as_bool(),
            done["file"].as_str()
        ),
        (
            Some(2_400),
            Some(100),
            Some(4711),
            Some(true),
            Some(file.as_str())
        )
    );
    assert_eq!(done["account_id"], "acct-test");
    let asked = meter.requests();
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].receipt, done["receipt"].as_str().unwrap());
    assert_eq!(
        asked[0].blob.as_deref(),
        Some(hex::encode(std::fs::read(&file).unwrap()).as_str()),
        "the file goes with the receipt"
    );
    let listed = openpsd(&card, &["license", "list", "--dir", files_arg]);
    assert_eq!(listed["exports"].as_array().unwrap().len(), 0, "forgotten");
    assert!(Path::new(&file).exists(), "the file stays");

    // Once done, nothing of license 4711 is left to retire.
    let out = openpsd_metered(
        &card,
        dir.path(),
        &[
            "license",
            "retire",
            "--license",
            "4711",
            "--dir",
            files_arg,
            "--meter",
            &meter.url,
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("neither resident nor exported"), "{err}");
}

#[test]
fn license_retire_writes_off_a_lost_file_and_asks_for_a_login_first() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("card");
    // Its only set: the retired entry is kept (see below).
    let (card, public_key) = funded_card_and_key(&state, 2_500, &[]);
    drop(card);
    let card = format!("state:{}", state.display());
    let files = dir.path().join("sets");
    let files_arg = files.to_str().unwrap();
    let meter = FakeMeter::start(public_key);

    // Not logged in: refused before the card gives anything up.
    let out = Command::new(env!("CARGO_BIN_EXE_openpsd"))
        .args(["--card", &card, "license", "retire", "--license", "4711"])
        .args(["--meter", &meter.url])
        .env("OPENPSD_CONFIG_DIR", dir.path())
        .env_remove("OPENPSD_API_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not logged in"));
    let status = openpsd(&card, &["status"]);
    assert_eq!(status["register_sets"][0]["dr"], 2_500, "untouched");

    // Exported, then the file lost: retired all the same, written off.
    let exported = openpsd(
        &card,
        &["license", "export", "--license", "4711", "--to", files_arg],
    );
    std::fs::remove_file(exported["file"].as_str().unwrap()).unwrap();
    let out = openpsd_metered(
        &card,
        dir.path(),
        &[
            "license",
            "retire",
            "--license",
            "4711",
            "--dir",
            files_arg,
            "--meter",
            &meter.url,
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("1/4 license 4711 is exported already"),
        "{err}"
    );
    assert!(err.contains("it is written off"), "{err}");
    assert!(err.contains("refunded 25.00 to account acct-test"), "{err}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("license 4711 retired: 25.00 refunded to account acct-test")
            && said.contains("lost file is written off"),
        "{said}"
    );
    let asked = meter.requests();
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].blob, None, "no file to send");
    // The PSD's last entry is not forgotten: the card refuses to forget the last entry of
    // a PSD with no set and no postal authority (it could never hold a set again). It
    // stays retired, and the PSD loads.
    assert!(err.contains("4/4 kept"), "{err}");
    let listed = openpsd(&card, &["license", "list"]);
    assert_eq!(listed["exports"][0]["state"], "retired", "{listed}");
    assert_eq!(listed["sets"].as_array().unwrap().len(), 0);
    // Run again: the same receipt, the same refund (the meter answers the same), still kept.
    let again = openpsd_metered(
        &card,
        dir.path(),
        &[
            "--json",
            "license",
            "retire",
            "--license",
            "4711",
            "--dir",
            files_arg,
            "--meter",
            &meter.url,
        ],
    );
    assert!(again.status.success());
    let again: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(
        (again["refunded"].as_u64(), again["forgotten"].as_bool()),
        (Some(2_500), Some(false))
    );
    assert_eq!(
        meter.requests()[1].receipt,
        asked[0].receipt,
        "the same receipt"
    );
}

/// `openpsd agent issue` (seed 004, Fig. 3A) on a card whose agent key the test CA
/// certified: the employee's certificate written, the fee and registers printed, and the
/// printed openssl command accepting it; the same --txn again is the same certificate,
/// charged once.
#[test]
fn agent_issue_writes_a_certificate_openssl_verifies_and_a_retry_is_free() {
    use openpsd_core::psd::certmeter::attestation::{KeyAttestation, Purpose};
    use openpsd_tests::certmeter::{
        agent_table, ca_anchor, openssl, openssl_csr, pem, AgentProfile, TestCa,
        AGENT_CERTIFICATE_FEE,
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let state = d.join("card");
    let mut card = sim::create_file_card(&state, Clock::System).unwrap();
    let kms = IndiciumKey::from_bytes(&[0x11; 32]).unwrap();
    let req = Request {
        device: Some(DeviceId(*b"PSDAGENT")),
        kms_public_key: kms.public_key(),
        vendor_public_key: Some(openpsd_tests::licenses::vendor_key().public_key()),
        max_postage: Amount(10_000),
        max_dr: Amount(1_000_000),
        inspection_days: 0,
        licenses: vec![personalize::parse_license("4711:10115").unwrap()],
        postal_authority: None,
    };
    let (_, secrets) =
        personalize::personalize(&mut card, &mut OsPlatform::default(), &req).unwrap();
    let device_pk = hex::decode(&secrets.public_key).unwrap();
    let ca = TestCa::standard();
    {
        let mut psd = PsdClient::new(&mut card);
        psd.select().unwrap();
        let set = RegisterSetIndex(0);
        let audit = AuditData::open(&psd.audit(set, &[3; 16]).unwrap(), &device_pk).unwrap();
        let msg = RefillCombination {
            device: audit.device,
            license: audit.license,
            amount: Amount(5_000),
            control_sum: audit.control_sum,
            refills: audit.refills,
            combination_id: [3; 8],
        }
        .sign(&kms);
        psd.refill(set, &msg).unwrap();
        psd.load_rate_table(&agent_table(1)).unwrap();
        psd.load_trust_anchor(&ca_anchor(&ca, 1)).unwrap();
        let (bytes, _) = psd.generate_key(Purpose::AgentCa, false).unwrap();
        let a = KeyAttestation::open(&bytes, &device_pk).unwrap();
        let cert = ca.agent_certificate(&a.public_key, &AgentProfile::default());
        psd.install_key_certificate(a.slot, set, &cert).unwrap();
    }
    drop(card);
    std::fs::write(d.join("ca.pem"), pem(&ca.cert_der)).unwrap();
    openssl_csr(d, "bob", "/O=openpsd customer 42/CN=bob", "P-256", &[]);
    let card = format!("state:{}", state.display());
    let csr = d.join("bob.csr");
    let out = d.join("bob.pem");
    let ca_pem = d.join("ca.pem");
    let args = [
        "agent",
        "issue",
        "--csr",
        csr.to_str().unwrap(),
        "--txn",
        "00000000000000a1",
        "-o",
        out.to_str().unwrap(),
        "--ca",
        ca_pem.to_str().unwrap(),
    ];
    let first = openpsd(&card, &args);
    assert_eq!(first["fee"], AGENT_CERTIFICATE_FEE);
    let dr = first["registers"]["dr"].as_u64().unwrap();
    let issued = std::fs::read(&out).unwrap();
    let check = first["openssl"].as_str().unwrap();
    let words: Vec<&str> = check.split(' ').collect();
    assert_eq!(words[0], "openssl");
    let (ok, text) = openssl(d, &words[1..]);
    assert!(ok && text.contains(": OK"), "{check}: {text}");
    // The same --txn: the same certificate, the same DR.
    let again = openpsd(&card, &args);
    assert_eq!(again["registers"]["dr"].as_u64().unwrap(), dr);
    assert_eq!(std::fs::read(&out).unwrap(), issued);

    // --generate: the PSD makes the key; the printed `openssl pkcs8` opens it with the
    // password file, its public key is the certificate's, the printed verify accepts it.
    std::fs::write(d.join("pw"), "a long enough password\n").unwrap();
    let (key_p8, cert_pem, pw) = (d.join("carol.p8"), d.join("carol.pem"), d.join("pw"));
    let gen_args = [
        "agent",
        "issue",
        "--generate",
        "--subject",
        "/O=openpsd customer 42/CN=carol",
        "--password-file",
        pw.to_str().unwrap(),
        "--txn",
        "00000000000000a2",
        "-o",
        key_p8.to_str().unwrap(),
        "-c",
        cert_pem.to_str().unwrap(),
        "--ca",
        ca_pem.to_str().unwrap(),
    ];
    let generated = openpsd(&card, &gen_args);
    assert_eq!(generated["fee"], AGENT_CERTIFICATE_FEE);
    assert_eq!(
        generated["registers"]["dr"].as_u64().unwrap(),
        dr - AGENT_CERTIFICATE_FEE
    );
    let open = generated["openssl_pkcs8"].as_str().unwrap();
    let words: Vec<&str> = open.split(' ').collect();
    let (ok, text) = openssl(d, &words[1..]);
    assert!(ok, "{open}: {text}");
    let (ok, from_key) = openssl(d, &["pkey", "-in", "employee.key", "-pubout"]);
    assert!(ok, "{from_key}");
    let (ok, from_cert) = openssl(
        d,
        &[
            "x509",
            "-in",
            cert_pem.to_str().unwrap(),
            "-pubkey",
            "-noout",
        ],
    );
    assert!(ok, "{from_cert}");
    assert_eq!(from_key, from_cert, "the key is the certificate's");
    let check = generated["openssl"].as_str().unwrap();
    let words: Vec<&str> = check.split(' ').collect();
    let (ok, text) = openssl(d, &words[1..]);
    assert!(ok && text.contains(": OK"), "{check}: {text}");
    // The retry: the same encrypted key, charged once.
    let p8 = std::fs::read(&key_p8).unwrap();
    let again = openpsd(&card, &gen_args);
    assert_eq!(
        again["registers"]["dr"].as_u64().unwrap(),
        dr - AGENT_CERTIFICATE_FEE
    );
    assert_eq!(std::fs::read(&key_p8).unwrap(), p8);
    // The agent CA key is requested like any other: `--purpose agent` parses (the request
    // then stops at the missing login), `payment` does not.
    let request = |purpose: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_openpsd"))
            .env("HOME", d)
            .args(["--card", &card, "cert", "request", "--purpose", purpose])
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let agent = request("agent");
    assert!(!agent.contains("invalid value"), "{agent}");
    let payment = request("payment");
    assert!(payment.contains("invalid value"), "{payment}");
}
