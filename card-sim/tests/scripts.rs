//! The APDU scripts of `tests/scripts/` run in-process through `card-sim run`, each on a
//! fresh blank card; a wrong expectation makes it exit non-zero and name the line.
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

fn scripts() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/scripts");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/scripts exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "apdu"))
        .collect();
    v.sort();
    v
}

#[test]
fn every_script_passes_in_process() {
    let scripts = scripts();
    assert!(scripts.len() >= 8, "the scripts are there: {scripts:?}");
    let out = Command::new(env!("CARGO_BIN_EXE_card-sim"))
        .args(["run", "--clock", "none"])
        .args(&scripts)
        .output()
        .expect("card-sim runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.lines().filter(|l| l.contains(": ok (")).count(),
        scripts.len(),
        "{stdout}"
    );
}

#[test]
fn a_wrong_expectation_fails_with_line_apdu_expected_and_got() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wrong.apdu");
    std::fs::write(&path, "00 A4 04 00 07 F0 50 53 44 00 00 01\n# expect 9000\n80 CA 00 01 00\n# expect 6A82\n80 CA 00 01 00\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_card-sim"))
        .arg("run")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 3: > 80 CA 00 01 00"), "{err}");
    assert!(
        err.contains("expected 6A82") && err.contains("got      00 90 00"),
        "{err}"
    );
}
