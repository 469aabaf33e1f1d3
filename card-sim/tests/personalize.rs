//! `card-sim personalize`: keys made inside the card, the KMS's public key given to it,
//! what the back office needs in a separate file with nothing secret in it, and the card's
//! keys never in its state file in clear.
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// A test-bench KMS key pair in `dir/kms`; returns the public key file.
fn bench_kms(dir: &Path) -> PathBuf {
    let out = Command::new(env!("CARGO_BIN_EXE_card-sim"))
        .args(["bench-kms", "--dir"])
        .arg(dir.join("kms"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir.join("kms/kms-public.key")
}

#[test]
fn a_psd_needs_the_kms_public_key_and_nothing_is_kept_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_card-sim"))
        .args(["personalize", "--state"])
        .arg(dir.path().join("psd"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--kms-public-key"), "{err}");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn the_back_office_file_holds_nothing_secret_and_the_state_no_key_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let kms = bench_kms(dir.path());
    let state = dir.path().join("psd");
    let out = Command::new(env!("CARGO_BIN_EXE_card-sim"))
        .args(["personalize", "--license", "4711:10115", "--kms-public-key"])
        .arg(&kms)
        .arg("--state")
        .arg(&state)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("device_id ") && stdout.contains("public_key 04"),
        "{stdout}"
    );

    // The file names the device and its public data only: no field of it is a secret.
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("psd.secrets.json")).unwrap(),
    )
    .unwrap();
    let mut fields: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort_unstable();
    assert_eq!(fields, ["device_id", "key_id", "licenses", "public_key"]);
    // The KMS's public key went into the card, which is sealed on disk: not in clear.
    let kms_key = hex::decode(std::fs::read_to_string(&kms).unwrap().trim()).unwrap();
    let log = std::fs::read(state.join("state.log")).unwrap();
    assert!(!log.windows(kms_key.len()).any(|w| w == kms_key));

    // Without its storage key the card does not open (and is not taken for a blank one).
    std::fs::rename(
        dir.path().join("psd.storage-key"),
        dir.path().join("elsewhere"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_card-sim"))
        .args(["run", "--state"])
        .arg(&state)
        .arg(dir.path().join("none.apdu"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("storage key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // With another key it is corrupt, never blank.
    std::fs::write(dir.path().join("psd.storage-key"), "11".repeat(32)).unwrap();
    let err = card_sim::sim::open_file_card(&state, card_sim::os_platform::Clock::None)
        .err()
        .unwrap();
    assert!(
        matches!(err, openpsd_core::store::StoreError::Corrupt(_)),
        "{err}"
    );
}

#[test]
fn a_failed_personalization_keeps_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("cards/psd");
    let kms = bench_kms(dir.path());
    let out = Command::new(env!("CARGO_BIN_EXE_card-sim"))
        .args(["personalize", "--kms-public-key"])
        .arg(&kms)
        .args(["--max-postage", "200", "--max-dr", "100", "--state"])
        .arg(&state)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("6A80"));
    let left: Vec<_> = std::fs::read_dir(dir.path().join("cards"))
        .map(|d| d.collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn a_card_can_be_created_below_directories_that_do_not_exist_yet() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("cards/new/psd");
    let out = Command::new(env!("CARGO_BIN_EXE_card-sim"))
        .args(["create", "--state"])
        .arg(&state)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("cards/new/psd.storage-key").exists());
}

#[test]
fn a_purse_is_personalized_and_certified_or_nothing_is_kept() {
    use card_sim::os_platform::Clock;
    use card_sim::sim::{self, CardKind};
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_card-sim"))
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    assert!(
        run(&["scheme", "create", "--out", "scheme.json", "--id", "5"])
            .status
            .success()
    );
    // Wrong or missing options: refused, nothing made.
    for bad in [
        &[
            "personalize",
            "--kind",
            "purse",
            "--state",
            "p",
            "--pin",
            "1234",
        ][..],
        &[
            "personalize",
            "--kind",
            "purse",
            "--state",
            "p",
            "--scheme",
            "scheme.json",
        ],
        &[
            "personalize",
            "--kind",
            "purse",
            "--state",
            "p",
            "--scheme",
            "scheme.json",
            "--pin",
            "12",
        ],
        &[
            "personalize",
            "--kind",
            "purse",
            "--state",
            "p",
            "--scheme",
            "scheme.json",
            "--pin",
            "1234",
            "--license",
            "1:10115",
        ],
        &[
            "personalize",
            "--kind",
            "purse",
            "--state",
            "p",
            "--scheme",
            "scheme.json",
            "--pin",
            "1234",
            "--card-id",
            "0011",
        ],
        &["personalize", "--state", "p", "--pin", "1234"],
        &[
            "personalize",
            "--kind",
            "purse",
            "--state",
            "p",
            "--scheme",
            "missing.json",
            "--pin",
            "1234",
        ],
    ] {
        let out = run(bad);
        assert!(!out.status.success(), "{bad:?}");
        assert!(!dir.path().join("p").exists(), "{bad:?} left a card");
        assert!(!dir.path().join("p.storage-key").exists());
    }
    let out = run(&[
        "personalize",
        "--kind",
        "purse",
        "--state",
        "p",
        "--scheme",
        "scheme.json",
        "--pin",
        "1234",
        "--card-id",
        "5055525345303035",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("card_id 5055525345303035"), "{stdout}");
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("p.secrets.json")).unwrap())
            .unwrap();
    assert_eq!(record["kind"], "purse");
    assert_eq!(record["scheme"], 5);
    // A second personalization of the same state is refused.
    assert!(!run(&[
        "personalize",
        "--kind",
        "purse",
        "--state",
        "p",
        "--scheme",
        "scheme.json",
        "--pin",
        "1234"
    ])
    .status
    .success());

    // The card runs the purse applet only; a blank card both; a PSD the PSD's.
    let card = sim::open_file_card(&dir.path().join("p"), Clock::None).unwrap();
    assert_eq!(card.kind(), Some(CardKind::Purse));
    drop(card);
    assert!(run(&["create", "--state", "blank"]).status.success());
    let blank = sim::open_file_card(&dir.path().join("blank"), Clock::None).unwrap();
    assert_eq!(blank.kind(), Some(CardKind::Blank));
    assert!(run(&["bench-kms", "--dir", "kms"]).status.success());
    let psd = [
        "personalize",
        "--state",
        "psd",
        "--scheme",
        "scheme.json",
        "--kms-public-key",
        "kms/kms-public.key",
    ];
    assert!(run(&psd).status.success());
    let psd = sim::open_file_card(&dir.path().join("psd"), Clock::None).unwrap();
    assert_eq!(psd.kind(), Some(CardKind::Psd));
}
