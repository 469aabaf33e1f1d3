//! `openpsd sign`, `sign verify`, `postmark validate` and `postmark verify-receipt` against a
//! card in-process (state:DIR) with a postmark key and a sign key certified by the test CA:
//! the fee printed, the printed `openssl cms -verify` command run as printed, the receipt
//! checked with the device key, and a retry with the same transaction ID not charged twice.
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use card_sim::os_platform::{Clock, OsPlatform};
use card_sim::personalize::{self, Request};
use card_sim::sim;
use openpsd_core::client::PsdClient;
use openpsd_core::crypto::IndiciumKey;
use openpsd_core::psd::audit::AuditData;
use openpsd_core::psd::certmeter::attestation::Purpose;
use openpsd_core::psd::certmeter::rates::Service;
use openpsd_core::psd::refill::RefillCombination;
use openpsd_core::types::*;
use openpsd_tests::certmeter::{
    ca_anchor, pem, rate_table, CertProfile, TestCa, KP_EMAIL_PROTECTION,
};
use serde_json::Value;

/// A funded card in `dir` with the sign rate table, the CA anchor and active postmark and
/// sign keys; the device's public key.
fn certmeter_file_card(dir: &Path, ca: &TestCa) -> Vec<u8> {
    let mut card = sim::create_file_card(dir, Clock::System).unwrap();
    let kms = IndiciumKey::from_bytes(&[0x11; 32]).unwrap();
    let req = Request {
        device: Some(DeviceId(*b"PSDSIGN1")),
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
    let public_key = hex::decode(&secrets.public_key).unwrap();
    let mut psd = PsdClient::new(&mut card);
    psd.select().unwrap();
    let set = RegisterSetIndex(0);
    let audit = AuditData::open(&psd.audit(set, &[3; 16]).unwrap(), &public_key).unwrap();
    let msg = RefillCombination {
        device: audit.device,
        license: audit.license,
        amount: Amount(10_000),
        control_sum: audit.control_sum,
        refills: audit.refills,
        combination_id: [3; 8],
    }
    .sign(&kms);
    psd.refill(set, &msg).unwrap();
    // The system clock's date: a table in effect since 2000 and certificates valid from
    // yesterday for a year, whatever the date the test runs.
    let table = rate_table(
        1,
        Date::new(2000, 1, 1).unwrap(),
        &[
            (Service::Postmark, 10),
            (Service::Validation, 4),
            (Service::Certificate, 500),
            (Service::Signature, 7),
        ],
    );
    psd.load_rate_table(&table).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let valid = (now - 86_400, now + 365 * 86_400);
    psd.load_trust_anchor(&ca_anchor(ca, 1)).unwrap();
    for purpose in [Purpose::Postmark, Purpose::Sign] {
        let (_, a) = psd.generate_key(purpose, false).unwrap();
        let profile = match purpose {
            Purpose::Sign => CertProfile {
                eku: vec![KP_EMAIL_PROTECTION],
                eku_critical: false,
                valid,
                ..CertProfile::default()
            },
            _ => CertProfile {
                valid,
                ..CertProfile::default()
            },
        };
        let cert = ca.certify(&a.public_key, &profile);
        psd.install_key_certificate(a.slot, set, &cert).unwrap();
    }
    public_key
}

fn openpsd(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_openpsd"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn json(dir: &Path, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (ok, text) = openpsd(dir, &all);
    assert!(ok, "openpsd {args:?}: {text}");
    serde_json::from_str(text.lines().last().unwrap()).unwrap()
}

#[test]
fn sign_then_openssl_and_validate_then_verify_receipt() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let state = d.join("card");
    let ca = TestCa::standard();
    let device_key = certmeter_file_card(&state, &ca);
    let card = format!("state:{}", state.display());
    std::fs::write(d.join("ca.pem"), pem(&ca.cert_der)).unwrap();
    std::fs::write(d.join("doc.txt"), b"a contract\n").unwrap();

    // SIGN: the fee, the registers, and the openssl command, which succeeds as printed.
    let (ok, text) = openpsd(
        d,
        &[
            "--card",
            &card,
            "sign",
            "doc.txt",
            "--ca",
            "ca.pem",
            "--txn",
            "00000000000000A1",
        ],
    );
    assert!(ok, "{text}");
    assert!(text.contains("fee 0.07;"), "{text}");
    let check = text
        .lines()
        .find_map(|l| l.strip_prefix("check it: "))
        .unwrap();
    let args: Vec<&str> = check.split_whitespace().collect();
    assert_eq!(args[..3], ["openssl", "cms", "-verify"]);
    let out = Command::new("openssl")
        .args(&args[1..])
        .current_dir(d)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.contains("Verification successful"),
        "{stderr}"
    );
    // The same transaction again: the same signature, not charged.
    let first = std::fs::read(d.join("doc.txt.p7s")).unwrap();
    let again = json(
        d,
        &[
            "--card",
            &card,
            "sign",
            "doc.txt",
            "--txn",
            "00000000000000A1",
        ],
    );
    assert_eq!(again["fee"], 0);
    assert_eq!(std::fs::read(d.join("doc.txt.p7s")).unwrap(), first);
    let v = json(
        d,
        &["sign", "verify", "doc.txt", "doc.txt.p7s", "--ca", "ca.pem"],
    );
    assert_eq!(v["valid"], true);
    std::fs::write(d.join("other.txt"), b"another contract\n").unwrap();
    let (ok, _) = openpsd(
        d,
        &[
            "sign",
            "verify",
            "other.txt",
            "doc.txt.p7s",
            "--ca",
            "ca.pem",
        ],
    );
    assert!(!ok);

    // A postmark, validated by the PSD for the validation fee, the receipt checked.
    json(
        d,
        &["--card", &card, "postmark", "doc.txt", "--ca", "ca.pem"],
    );
    let v = json(
        d,
        &[
            "--card",
            &card,
            "postmark",
            "validate",
            "doc.txt",
            "doc.txt.tst",
        ],
    );
    assert_eq!(
        (v["valid"].clone(), v["fee"].clone()),
        (true.into(), 4.into())
    );
    assert_eq!(v["device_key"], hex::encode(&device_key));
    let r = json(
        d,
        &[
            "postmark",
            "verify-receipt",
            "doc.txt.tst.receipt",
            "--device-key",
            &hex::encode(&device_key),
        ],
    );
    assert_eq!(
        (r["authentic"].clone(), r["valid"].clone()),
        (true.into(), true.into())
    );
    // Another document: "not valid", charged all the same.
    let v = json(
        d,
        &[
            "--card",
            &card,
            "postmark",
            "validate",
            "other.txt",
            "doc.txt.tst",
        ],
    );
    assert_eq!(v["valid"], false);
    assert_eq!(v["failed"][0], "postmark is for another document");
    let (ok, text) = openpsd(
        d,
        &[
            "--card",
            &card,
            "postmark",
            "validate",
            "other.txt",
            "doc.txt.tst",
        ],
    );
    assert!(ok && text.contains("NOT VALID"), "{text}");
}
