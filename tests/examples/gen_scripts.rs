//! Writes the APDU scripts of `tests/scripts/` (see `tests/src/scripts.rs`).
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]
fn main() -> std::io::Result<()> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts");
    std::fs::create_dir_all(&dir)?;
    for (name, text) in openpsd_tests::scripts::all() {
        std::fs::write(dir.join(name), text)?;
        println!("wrote tests/scripts/{name}");
    }
    Ok(())
}
