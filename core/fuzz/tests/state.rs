//! The state parsers' targets on stable: their seeds (each does what its name says) and a
//! few thousand pseudo-random inputs each (no fuzzer needed).

use openpsd_core_fuzz::state::{run_file_log, run_sealed, run_wasm_state, seeds};

fn seeds_of(target: &str) -> openpsd_core_fuzz::ByteSeeds {
    seeds()
        .into_iter()
        .find(|(t, _)| *t == target)
        .unwrap_or_else(|| panic!("no seeds for {target}"))
        .1
}

fn seed(target: &str, name: &str) -> Vec<u8> {
    seeds_of(target)
        .into_iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no seed {target}/{name}"))
        .1
}

/// xorshift64: the same inputs on every run.
fn random_inputs(seed: u64, n: usize, max_len: usize) -> impl Iterator<Item = Vec<u8>> {
    let mut x = seed;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..n).map(move |_| {
        let len = (next() % max_len as u64) as usize;
        (0..len).map(|_| next() as u8).collect()
    })
}

#[test]
fn file_log_seeds() {
    for (_, s) in seeds_of("state_file_log") {
        run_file_log(&s);
    }
    assert!(run_file_log(&seed("state_file_log", "image")).read);
    assert!(
        run_file_log(&seed("state_file_log", "torn")).read,
        "a torn append is cut off"
    );
    assert!(
        !run_file_log(&seed("state_file_log", "damaged")).read,
        "damage before the last frame is refused"
    );
    let s = run_file_log(&seed("state_file_log", "script"));
    assert!(s.commits >= 2 && s.flip_refused, "{s:?}");
    let s = run_file_log(&seed("state_file_log", "script-last-frame"));
    assert!(s.flip_dropped_last, "{s:?}");
}

#[test]
fn sealed_seeds() {
    let seeds = seeds_of("state_sealed");
    // Every PSD and purse record the fixtures hold has its seed.
    assert!(seeds.len() >= 12, "{} sealed seeds", seeds.len());
    for (name, s) in &seeds {
        let r = run_sealed(s);
        if s[0] == 2 {
            assert!(
                r.decoded && r.loaded,
                "{name}: the fixture's own record: {r:?}"
            );
        }
    }
}

#[test]
fn wasm_state_seeds() {
    for (name, s) in seeds_of("state_wasm") {
        let r = run_wasm_state(&s);
        assert_eq!(r.decoded, name != "changed", "{name}");
    }
}

#[test]
fn random_bytes() {
    for (i, data) in random_inputs(0x9E37_79B9_7F4A_7C15, 3_000, 300).enumerate() {
        run_file_log(&data);
        run_wasm_state(&data);
        if i % 10 == 0 {
            // Loads an applet: slower.
            run_sealed(&data);
        }
    }
}
