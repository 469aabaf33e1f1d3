//! Writes the seed corpus of the `card_handle` target.
//!
//! `cargo run --bin gen-corpus [DIR]` (default: `corpus/card_handle` next to this crate's
//! Cargo.toml). Files are named `seed-NN-<name>`; earlier `seed-*` files are removed first,
//! other files in the directory (what the fuzzer added) are left alone.

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus/card_handle"));
    std::fs::create_dir_all(&dir)?;
    // Seeds from an earlier generator (renumbered or renamed) go first.
    for entry in std::fs::read_dir(&dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with("seed-") {
            std::fs::remove_file(entry.path())?;
        }
    }
    let seeds = openpsd_core_fuzz::seeds::seeds();
    for (i, (name, input)) in seeds.iter().enumerate() {
        let bytes = input.encode();
        let path = dir.join(format!("seed-{i:02}-{name}"));
        std::fs::write(&path, &bytes)?;
        println!(
            "{} ({} bytes, {} ops)",
            path.display(),
            bytes.len(),
            input.ops.len()
        );
    }
    println!("{} seeds in {}", seeds.len(), dir.display());
    // The other targets' seeds, in corpus/<target> beside it.
    let root = dir.parent().map(PathBuf::from).unwrap_or_default();
    let mut others: Vec<(&str, openpsd_core_fuzz::ByteSeeds)> = vec![
        ("purse_handle", openpsd_core_fuzz::purse::seeds()),
        ("vbox_handle", openpsd_core_fuzz::vbox::seeds()),
    ];
    others.extend(openpsd_core_fuzz::state::seeds());
    for (target, seeds) in others {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with("seed-") {
                std::fs::remove_file(entry.path())?;
            }
        }
        for (i, (name, bytes)) in seeds.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i:02}-{name}")), bytes)?;
        }
        println!("{} seeds in {}", seeds.len(), dir.display());
    }
    Ok(())
}
