//! The committed APDU scripts are exactly what `tests/src/scripts.rs` generates.
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#[test]
fn committed_scripts_match_the_generator() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts");
    for (name, text) in openpsd_tests::scripts::all() {
        let committed = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        assert!(
            committed == text,
            "tests/scripts/{name} is stale: run `cargo run -p openpsd-tests --example gen_scripts`"
        );
    }
}
