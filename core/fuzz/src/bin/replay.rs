//! Runs fuzz inputs (crash artifacts, corpus files) through the harness on stable.
//!
//! `OPENPSD_FUZZ_TRACE=1 cargo run --bin replay -- FILE...` prints every APDU and response.

fn main() -> std::io::Result<()> {
    for path in std::env::args_os().skip(1) {
        let data = std::fs::read(&path)?;
        let input = openpsd_core_fuzz::Input::decode(&data);
        eprintln!(
            "== {} ({:?}, {} ops)",
            path.to_string_lossy(),
            input.start,
            input.ops.len()
        );
        let moved = openpsd_core_fuzz::run(&input);
        eprintln!("{moved:?}");
    }
    Ok(())
}
