//! The README's main job: `backoffice-demo` (`backoffice demo`) refills a card through the meter server and
//! issues indicia, with the ledger debited exactly what the card was credited.
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn the_demo_refills_through_the_meter_server_and_franks() {
    let dir = tempfile::tempdir().unwrap();
    let run = || {
        let out = Command::new(env!("CARGO_BIN_EXE_backoffice-demo"))
            .args([
                "--exit",
                "--meter-listen",
                "127.0.0.1:0",
                "--kms-listen",
                "127.0.0.1:0",
            ])
            .args([
                "--recharge-listen",
                "127.0.0.1:0",
                "--post-listen",
                "127.0.0.1:0",
            ])
            .arg("--data")
            .arg(dir.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let first = run();
    for expected in [
        "personalized PSD",
        "registered with the KMS",
        "audit receipt accepted",
        "confirmed: completed",
        "indicium #3",
        "registers: AR 5.15 DR 19.85 control sum 25.00 pieces 3 refills 1",
        "available 75.00  held 0.00  debited 25.00  (deposited 100.00)",
    ] {
        assert!(
            first.contains(expected),
            "missing {expected:?} in:\n{first}"
        );
    }
    // Again on the same data: the same card and account carry on.
    let second = run();
    assert!(!second.contains("personalized PSD"), "{second}");
    assert!(
        second.contains("control sum 50.00 pieces 6 refills 2"),
        "{second}"
    );
    assert!(
        second.contains("available 50.00  held 0.00  debited 50.00"),
        "{second}"
    );
}
