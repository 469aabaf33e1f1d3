//! `docs/apdu.md` is the APDU contract: these checks keep it from falling behind the code.
//! Every status word the card can send and every PSD instruction byte must be documented,
//! and the status word table must not list words the card does not have.

use std::collections::BTreeSet;

use openpsd_core::psd::{ins, CLA_PSD};
use openpsd_core::status::{Status, SW_OK};

fn read(relative: &str) -> String {
    let path = format!("{}/{relative}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

fn doc() -> String {
    read("../docs/apdu.md")
}

/// The rows of the status word table: `| `XXXX` | `Name` | ...`, as (SW text, row).
fn status_rows(doc: &str) -> Vec<(String, String)> {
    let start = doc
        .find("## 6. Status words")
        .expect("docs/apdu.md has a \"## 6. Status words\" section");
    let section = &doc[start..];
    let end = section[3..].find("\n## ").map_or(section.len(), |i| i + 3);
    section[..end]
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("| `")?;
            let sw = rest.get(..4)?;
            rest.get(4..5).filter(|c| *c == "`")?;
            Some((sw.to_string(), line.to_string()))
        })
        .collect()
}

#[test]
fn every_status_word_is_documented_in_the_table_with_its_name() {
    let doc = doc();
    let rows = status_rows(&doc);
    for status in Status::ALL {
        let sw = format!("{:04X}", status.sw());
        assert!(doc.contains(&sw), "docs/apdu.md does not mention {sw}");
        let row = rows
            .iter()
            .find(|(s, _)| *s == sw)
            .unwrap_or_else(|| panic!("no row for {sw} in the status word table"));
        let name = format!("`{status:?}`");
        assert!(
            row.1.contains(&name),
            "the table row for {sw} does not name {name}: {}",
            row.1
        );
    }
}

#[test]
fn the_status_word_table_lists_only_words_the_card_sends() {
    let doc = doc();
    let known: BTreeSet<String> = Status::ALL
        .iter()
        .map(|s| format!("{:04X}", s.sw()))
        .chain([format!("{SW_OK:04X}"), "61xx".to_string()])
        .collect();
    let rows = status_rows(&doc);
    assert!(rows.len() >= known.len(), "status word table too short");
    let mut seen = BTreeSet::new();
    for (sw, row) in &rows {
        assert!(
            known.contains(sw),
            "documented status word {sw} is not in the code: {row}"
        );
        assert!(seen.insert(sw.clone()), "status word {sw} is listed twice");
    }
    assert_eq!(seen, known, "status word table and Status::ALL differ");
}

#[test]
fn status_words_are_distinct() {
    let sws: BTreeSet<u16> = Status::ALL.iter().map(|s| s.sw()).collect();
    assert_eq!(sws.len(), Status::ALL.len());
    for s in Status::ALL {
        assert_eq!(Status::from_sw(s.sw()), Some(s));
    }
}

#[test]
fn every_instruction_is_documented() {
    let doc = doc();
    let known = [
        ins::PERSONALIZE,
        ins::READ_REGISTERS,
        ins::ISSUE_INDICIUM,
        ins::AUDIT,
        ins::REFILL,
        ins::RECEIPT,
        ins::GET_DATA,
    ];
    for i in known {
        let byte = format!("{i:02X}");
        assert!(
            doc.contains(&byte),
            "docs/apdu.md does not mention INS {byte}"
        );
        let header = format!("{CLA_PSD:02X} {i:02X}");
        assert!(
            doc.contains(&header),
            "docs/apdu.md has no command header \"{header}\""
        );
    }

    // Constants added to `psd::ins` later must be documented too: read them from the
    // source, so a new one that is not in the list above still fails here.
    let source = read("../core/src/psd/mod.rs");
    let start = source
        .find("pub mod ins {")
        .expect("psd::ins in core/src/psd/mod.rs");
    let end = start + source[start..].find("\n}").expect("end of psd::ins");
    let mut found = 0;
    for line in source[start..end].lines() {
        let Some(value) = line
            .trim()
            .strip_prefix("pub const ")
            .and_then(|l| l.split("= 0x").nth(1))
            .and_then(|v| v.strip_suffix(';'))
        else {
            continue;
        };
        found += 1;
        let byte = u8::from_str_radix(value, 16).expect("INS constant is a hex byte");
        assert!(
            known.contains(&byte),
            "psd::ins has {byte:02X}, which this test (and maybe docs/apdu.md) does not know"
        );
    }
    assert_eq!(found, known.len(), "INS constants found in the source");
}

#[test]
fn the_example_exchanges_are_what_the_card_answers_today() {
    // docs/apdu.md's examples were printed by tests/src/bin/apdu_examples.rs (deterministic:
    // seeded platform); a change of the card shows up here until the doc is regenerated.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_apdu_examples"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = |text: &str| -> std::collections::BTreeSet<String> {
        text.lines()
            .filter(|l| l.starts_with("> ") || l.starts_with("< "))
            .map(str::to_string)
            .collect()
    };
    let printed = lines(&String::from_utf8_lossy(&out.stdout));
    let documented = lines(&doc());
    assert!(printed.len() > 40, "the program printed its exchanges");
    let stale: Vec<_> = documented.difference(&printed).collect();
    let missing: Vec<_> = printed.difference(&documented).collect();
    assert!(
        stale.is_empty() && missing.is_empty(),
        "docs/apdu.md examples are stale (regenerate with `cargo run -p openpsd-tests --bin apdu_examples`): \
         in the doc only: {stale:?}; printed only: {missing:?}"
    );
}
