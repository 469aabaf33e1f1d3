//! Runs fuzz inputs (crash artifacts, corpus files) through the harness on stable.
//!
//! `OPENPSD_FUZZ_TRACE=1 cargo run --bin replay -- FILE...` prints every APDU and response.
//! The target is the one whose name is a directory of the file's path (cargo fuzz writes
//! `artifacts/<target>/crash-…` and keeps `corpus/<target>/`), `card_handle` otherwise;
//! `--target NAME` chooses it for every later file.

/// The fuzz targets, by name, and the harness function each runs.
const TARGETS: &[(&str, fn(&[u8]))] = &[
    ("card_handle", |d| {
        let input = openpsd_core_fuzz::Input::decode(d);
        eprintln!("{:?}, {} ops", input.start, input.ops.len());
        eprintln!("{:?}", openpsd_core_fuzz::run(&input));
    }),
    ("purse_handle", |d| {
        eprintln!("{:?}", openpsd_core_fuzz::purse::run_purse_bytes(d));
    }),
    ("vbox_handle", |d| {
        eprintln!("{:?}", openpsd_core_fuzz::vbox::run_vbox_bytes(d));
    }),
    ("state_file_log", |d| {
        eprintln!("{:?}", openpsd_core_fuzz::state::run_file_log(d));
    }),
    ("state_sealed", |d| {
        eprintln!("{:?}", openpsd_core_fuzz::state::run_sealed(d));
    }),
    ("state_wasm", |d| {
        eprintln!("{:?}", openpsd_core_fuzz::state::run_wasm_state(d));
    }),
];

fn by_name(name: &str) -> Option<fn(&[u8])> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

fn main() -> std::io::Result<()> {
    let mut chosen: Option<fn(&[u8])> = None;
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--target" {
            let name = args.next().unwrap_or_default();
            let name = name.to_string_lossy();
            chosen = Some(by_name(&name).ok_or_else(|| {
                std::io::Error::other(format!(
                    "no target {name}; the targets: {}",
                    TARGETS
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?);
            continue;
        }
        let path = std::path::PathBuf::from(arg);
        let run = chosen
            .or_else(|| {
                path.components()
                    .find_map(|c| by_name(&c.as_os_str().to_string_lossy()))
            })
            .unwrap_or(TARGETS[0].1);
        let data = std::fs::read(&path)?;
        eprintln!("== {} ({} bytes)", path.display(), data.len());
        run(&data);
    }
    Ok(())
}
