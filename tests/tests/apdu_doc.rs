//! `docs/apdu.md` is the APDU contract: these checks keep it from falling behind the code.
//! Every status word the card can send and every instruction byte of the PSD and the purse
//! must be documented, the status word table must not list words the card does not have,
//! every example exchange must be what the card answers today (the examples are printed
//! by `apdu_examples` from the real card code), SELECT's response table (§3.4: tag per
//! P2, offsets, lengths, values) must be what SELECT answers on the PSD and the purse, the
//! commands §3.1 says discard pending response bytes must be the ones that do, and
//! `9A14`'s rule (§4.6, §6) must be the card's.
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use openpsd_core::psd::CLA_PSD;
use openpsd_core::purse::CLA_PURSE;
use openpsd_core::status::{Status, SW_OK};
use openpsd_tests::{expect_ok, expect_refused};

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

/// The table's key for a status: its status word, or `63Cx` for the whole
/// `VerificationFailed` family (`Status::ALL` lists it as `VerificationFailed(0)`).
fn row_key(status: Status) -> String {
    match status {
        Status::VerificationFailed(_) => "63Cx".to_string(),
        s => format!("{:04X}", s.sw()),
    }
}

/// The name the table gives a status: its variant, without the tries of `63Cx`.
fn row_name(status: Status) -> String {
    match status {
        Status::VerificationFailed(_) => "`VerificationFailed`".to_string(),
        s => format!("`{s:?}`"),
    }
}

#[test]
fn every_status_word_is_documented_in_the_table_with_its_name() {
    let doc = doc();
    let rows = status_rows(&doc);
    for status in Status::ALL {
        let sw = row_key(status);
        assert!(doc.contains(&sw), "docs/apdu.md does not mention {sw}");
        let row = rows
            .iter()
            .find(|(s, _)| *s == sw)
            .unwrap_or_else(|| panic!("no row for {sw} in the status word table"));
        let name = row_name(status);
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
        .map(|s| row_key(*s))
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
    // The 63Cx row stands for 16 words: each is VerificationFailed with its tries left,
    // and none of them is another status.
    for x in 0..=0x0F_u8 {
        let sw = 0x63C0 | u16::from(x);
        assert_eq!(Status::from_sw(sw), Some(Status::VerificationFailed(x)));
        assert_eq!(Status::VerificationFailed(x).sw(), sw);
        assert!(Status::ALL
            .iter()
            .all(|s| matches!(s, Status::VerificationFailed(_)) || s.sw() != sw));
    }
}

/// The `pub const NAME: u8 = 0xNN;` lines of the `pub mod ins` block of a source file.
fn ins_constants(relative: &str) -> Vec<(String, u8)> {
    let source = read(relative);
    let start = source
        .find("pub mod ins {")
        .unwrap_or_else(|| panic!("no `pub mod ins` in {relative}"));
    let end = start
        + source[start..]
            .find("\n}")
            .unwrap_or_else(|| panic!("end of `pub mod ins` in {relative}"));
    source[start..end]
        .lines()
        .filter_map(|line| {
            let rest = line.trim().strip_prefix("pub const ")?;
            let (name, value) = rest.split_once(": u8 = 0x")?;
            let value = value.strip_suffix(';')?;
            let byte = u8::from_str_radix(value, 16).expect("INS constant is a hex byte");
            Some((name.to_string(), byte))
        })
        .collect()
}

/// The text of the section that starts with `heading` (up to the next `## `).
fn section<'d>(doc: &'d str, heading: &str) -> &'d str {
    let start = doc
        .find(heading)
        .unwrap_or_else(|| panic!("docs/apdu.md has no \"{heading}\" section"));
    let rest = &doc[start..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |i| i + 3);
    &rest[..end]
}

/// Checks that `section` has a `### ` subsection for each command: its heading names the
/// command (the constant's name with spaces, or `alias`) and its header, e.g.
/// `### 4.8 OPEN SESSION (80 60)`, and the commands table of section 1.1 lists it.
fn check_commands(
    doc: &str,
    heading: &str,
    source: &str,
    (applet_cla, iso_class): (u8, &[&str]),
    alias: &[(&str, &str)],
) {
    // Every INS constant of the applet, with its class: the applet's own, or `00` for the
    // ISO 7816-4 commands it implements. A new constant fails here until docs/apdu.md
    // documents it (its section and its row in the overview), and a changed INS byte fails
    // because the document still names the old one.
    let known: Vec<(String, u8, u8)> = ins_constants(source)
        .into_iter()
        .map(|(name, ins)| {
            let cla = if iso_class.contains(&name.as_str()) {
                0x00
            } else {
                applet_cla
            };
            (name, cla, ins)
        })
        .collect();
    assert!(!known.is_empty(), "no INS constants found in {source}");
    let text = section(doc, heading);
    let overview = section(doc, "## 1. Overview");
    for (name, cla, ins) in &known {
        let (name, cla, ins) = (name.as_str(), *cla, *ins);
        let header = format!("{cla:02X} {ins:02X}");
        let title = alias
            .iter()
            .find(|(n, _)| *n == name)
            .map_or_else(|| name.replace('_', " "), |(_, a)| a.to_string());
        let documented = text.lines().any(|l| {
            l.starts_with("### ") && l.contains(&title) && l.contains(&format!("({header}"))
        });
        assert!(
            documented,
            "{heading}: no \"### \" subsection for {title} ({header})"
        );
        let listed = overview.lines().any(|l| {
            l.starts_with(&format!("| {title} |"))
                && l.contains(&format!("| `{cla:02X}` | `{ins:02X}` |"))
        });
        assert!(
            listed,
            "the commands table of section 1 has no row \"| {title} | `{cla:02X}` | `{ins:02X}` |\""
        );
    }
}

#[test]
fn every_instruction_is_documented() {
    let doc = doc();
    // The INS constants are read from the applets' sources (see `check_commands`).
    check_commands(
        &doc,
        "## 4. PSD commands",
        "../core/src/psd/mod.rs",
        (CLA_PSD, &[]),
        &[],
    );
    // VERIFY and CHANGE REFERENCE DATA are ISO 7816-4 commands: class 00.
    check_commands(
        &doc,
        "## 9. Purse commands",
        "../core/src/purse/mod.rs",
        (CLA_PURSE, &["VERIFY", "CHANGE_PIN"]),
        &[("CHANGE_PIN", "CHANGE REFERENCE DATA")],
    );
    check_commands(
        &doc,
        "## 11. Virtual meter box commands",
        "../core/src/vbox/mod.rs",
        // CLA_VBOX (the tests crate builds core without the `vbox` feature).
        (0x80, &[]),
        &[],
    );
}

/// Every `#...` link of the document points at a heading of the document.
#[test]
fn in_document_links_resolve() {
    openpsd_tests::markdown::check_in_page_links(&doc(), "docs/apdu.md", 21);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
    let n = openpsd_tests::markdown::check_links_to_other_docs(&doc(), "docs/apdu.md", &dir);
    assert!(n >= 5, "apdu.md links to the other docs ({n} links found)");
}

/// The example exchanges of a text: each `> command` entry with the `< response` entry
/// right after it, continuation lines (two spaces, then hex bytes) included, so a
/// response is compared whole and under the command that produced it.
fn exchanges(text: &str) -> BTreeSet<(String, String)> {
    let is_hex = |s: &str| {
        !s.is_empty()
            && s.split(' ')
                .all(|b| b.len() == 2 && b.chars().all(|c| c.is_ascii_hexdigit()))
    };
    let mut entries: Vec<(char, String)> = Vec::new();
    let mut open = false;
    for line in text.lines() {
        if let Some(kind) = ['>', '<']
            .into_iter()
            .find(|k| line.starts_with(&format!("{k} ")))
        {
            assert!(
                is_hex(&line[2..]),
                "an example line is not hex bytes: {line:?}"
            );
            entries.push((kind, line.to_string()));
            open = true;
        } else if open && line.starts_with("  ") && is_hex(&line[2..]) {
            let last = entries.last_mut().expect("an open entry");
            last.1.push('\n');
            last.1.push_str(line);
        } else {
            // Anything else ends the entry (and the pair: a response must follow its
            // command directly).
            entries.push(('|', String::new()));
            open = false;
        }
    }
    let mut out = BTreeSet::new();
    for w in entries.windows(2) {
        if let [(a, cmd), (b, resp)] = w {
            if *a == '>' && *b == '<' {
                out.insert((cmd.clone(), resp.clone()));
            }
        }
    }
    let commands = entries.iter().filter(|(k, _)| *k == '>').count();
    let responses = entries.iter().filter(|(k, _)| *k == '<').count();
    assert_eq!(commands, responses, "every command has its response");
    out
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
    let printed = exchanges(&String::from_utf8_lossy(&out.stdout));
    let documented = exchanges(&doc());
    assert!(printed.len() > 70, "the program printed its exchanges");
    let stale: Vec<_> = documented.difference(&printed).collect();
    let missing: Vec<_> = printed.difference(&documented).collect();
    assert!(
        stale.is_empty() && missing.is_empty(),
        "docs/apdu.md examples are stale (regenerate with `cargo run -p openpsd-tests --bin apdu_examples`): \
         in the doc only: {stale:#?}; printed only: {missing:#?}"
    );
}

/// The `### ` subsection of docs/apdu.md that starts with `heading`.
fn subsection<'d>(doc: &'d str, heading: &str) -> &'d str {
    let start = doc
        .find(heading)
        .unwrap_or_else(|| panic!("docs/apdu.md has no \"{heading}\" subsection"));
    let rest = &doc[start..];
    let end = rest[4..].find("\n### ").map_or(rest.len(), |i| i + 4);
    &rest[..end]
}

/// The first backticked hex bytes of `text` (e.g. `F0 50 53`).
fn first_hex(text: &str) -> Option<Vec<u8>> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .find_map(|t| hex::decode(t.replace(' ', "")).ok())
}

#[test]
fn the_select_response_table_is_what_select_answers() {
    use openpsd_core::psd::PSD_AID;
    use openpsd_core::purse::PURSE_AID;
    let doc = doc();
    let text = subsection(&doc, "### 3.4 SELECT");
    // The P2 row names the template each P2 returns: "`00`: return FCI (template `6F`)".
    let p2_row = text
        .lines()
        .find(|l| l.starts_with("| P2 |"))
        .expect("a P2 row");
    let p2s = [(0x00u8, "FCI"), (0x04, "FCP")];
    let mut tags = Vec::new();
    for (p2, word) in p2s {
        let pattern = format!("`{p2:02X}`: return {word} (template `");
        let at = p2_row
            .find(&pattern)
            .unwrap_or_else(|| panic!("the P2 row says what P2 {p2:02X} returns: {pattern}"))
            + pattern.len();
        tags.push(u8::from_str_radix(&p2_row[at..at + 2], 16).unwrap());
    }
    // The response table: offsets, lengths and values, alternatives split by " or ".
    let rows: Vec<Vec<&str>> = text
        .lines()
        .skip_while(|l| !l.starts_with("| Offset |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| l.trim_matches('|').split('|').map(str::trim).collect())
        .collect();
    assert!(rows.len() >= 4, "the SELECT response table");
    let applets: [(&[u8], &str, openpsd_tests::TestCard); 2] = [
        (PSD_AID, "(PSD)", openpsd_tests::blank_card(1)),
        (PURSE_AID, "(purse)", {
            let mut platform = openpsd_core::platform::SeededPlatform::new(2);
            platform.today = openpsd_core::types::Date::new(2026, 11, 21);
            openpsd_core::purse::purse_card(openpsd_core::store::MemStore::new(), platform).unwrap()
        }),
    ];
    for (aid, name, mut card) in applets {
        for (&(p2, word), &tag) in p2s.iter().zip(&tags) {
            let mut expected = Vec::new();
            for row in &rows {
                assert_eq!(
                    row[0].parse::<usize>().unwrap(),
                    expected.len(),
                    "offset of {row:?}"
                );
                let len: usize = row[1].parse().unwrap();
                let alternatives: Vec<&str> = row[3].split(" or ").collect();
                let chosen = alternatives
                    .iter()
                    .find(|a| alternatives.len() == 1 || a.contains(word) || a.contains(name))
                    .unwrap_or_else(|| panic!("no value for {word} {name} in {row:?}"));
                let value = first_hex(chosen).unwrap_or_else(|| panic!("hex in {chosen}"));
                assert_eq!(value.len(), len, "length of {row:?}");
                expected.extend_from_slice(&value);
            }
            assert_eq!(
                expected[0], tag,
                "the table's tag for P2 {p2:02X} is the P2 row's"
            );
            let mut apdu = vec![0x00, 0xA4, 0x04, p2, 0x07];
            apdu.extend_from_slice(aid);
            apdu.push(0x00);
            let resp = card.transmit(&apdu);
            let (data, sw) = resp.split_at(resp.len() - 2);
            assert_eq!(sw, [0x90, 0x00], "SELECT {name} P2 {p2:02X}");
            assert_eq!(
                data,
                &expected[..],
                "SELECT {name} with P2 {p2:02X} answers what §3.4's table says"
            );
        }
    }
}

/// The backticked status words (four hex digits, e.g. `6B00`) of `text`, in order.
fn status_words(text: &str) -> Vec<u16> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|t| t.len() == 4 && t.chars().all(|c| c.is_ascii_hexdigit()))
        .map(|t| u16::from_str_radix(t, 16).unwrap())
        .collect()
}

/// §3.1 step 1 lists, by the status word they get, the commands that discard pending
/// response bytes: each is sent to a PSD with bytes pending, must get that status word,
/// and must leave nothing for the next GET RESPONSE. The list and the commands tried here
/// must be the same set, so a word added to (or dropped from) the doc fails until the
/// test knows a command for it. A refused SELECT and an applet command, which step 1 names
/// without a status word, are tried too; and a proper GET RESPONSE does get the bytes.
#[test]
fn the_commands_that_discard_pending_bytes_are_the_ones_section_3_1_lists() {
    use openpsd_core::client::psd_apdu;
    let doc = doc();
    let text = subsection(&doc, "### 3.1 Order of processing");
    let start = text.find("1. **Pending").expect("step 1 of §3.1");
    let end = start + text[start..].find("\n2. ").expect("step 2 of §3.1");
    let listed: BTreeSet<u16> = status_words(&text[start..end]).into_iter().collect();
    let get_response_table = subsection(&doc, "### 3.5 Response length, Le, 61xx and GET RESPONSE");
    assert!(get_response_table.contains("| Lc / data | none (any data is ignored) |"));
    // A command that gets each word with the PSD selected and bytes pending.
    let known: [(u16, &[u8]); 7] = [
        (0x6700, &[0x00, 0xC0, 0x00]),             // too short
        (0x6881, &[0x81, 0xCA, 0x00, 0x01, 0x00]), // logical channel
        (0x6882, &[0x84, 0xCA, 0x00, 0x01, 0x00]), // secure messaging
        (0x6E00, &[0xA0, 0xC0, 0x00, 0x00, 0x00]), // class
        (0x6B00, &[0x00, 0xC0, 0x00, 0x01, 0x00]), // GET RESPONSE, other P1 P2
        (0x6D00, &[0x80, 0xC0, 0x00, 0x00, 0x00]), // GET RESPONSE, CLA 80
        (0x9000, &[0x10, 0xC0, 0x00, 0x00, 0x00]), // GET RESPONSE, chained
    ];
    let tried: BTreeSet<u16> = known.iter().map(|(sw, _)| *sw).collect();
    let hex = |set: &BTreeSet<u16>| set.iter().map(|sw| format!("{sw:04X}")).collect::<Vec<_>>();
    assert_eq!(
        hex(&listed),
        hex(&tried),
        "§3.1 step 1's status words (left) are not the ones this test tries (right)"
    );
    // A refused SELECT, and an applet command (READ REGISTERS, the purse's GET DATA).
    let refused_select: &[u8] = &[0x00, 0xA4, 0x04, 0x00, 0x05, 0xA0, 0x00, 0x00, 0x00, 0x03];
    let get_response = [0x00, 0xC0, 0x00, 0x00, 0x00];
    // On the PSD and on the purse: bytes are left pending by a SELECT with Le = 1.
    let (psd, _) = openpsd_tests::personalized_card(1);
    let purse = openpsd_tests::purse::purse(2);
    let cards: [(_, _, _, &[u8]); 2] = [
        (
            "PSD",
            psd,
            psd_apdu::select(),
            &[0x80, 0x32, 0x00, 0x00, 0x00],
        ),
        (
            "purse",
            purse,
            openpsd_core::client::purse_apdu::select(),
            &[0x80, 0xCA, 0x00, 0x01, 0x00],
        ),
    ];
    for (name, mut card, mut select, applet_command) in cards {
        let unlisted = [(0x6A82, refused_select), (0x9000, applet_command)];
        *select.last_mut().unwrap() = 0x01;
        let leave_pending = |card: &mut openpsd_tests::TestCard| {
            let first = card.transmit(&select);
            assert_eq!(first.len(), 3, "{name}: FCI cut to 1 byte: {first:02X?}");
            assert_eq!(first[1], 0x61, "{name}: bytes pending: {first:02X?}");
            usize::from(first[2])
        };
        for (sw, apdu) in known.iter().chain(&unlisted) {
            leave_pending(&mut card);
            let resp = card.transmit(apdu);
            assert_eq!(
                psd_apdu::sw(&resp),
                *sw,
                "{name}: {apdu:02X?} with bytes pending answers {sw:04X}"
            );
            let after = card.transmit(&get_response);
            assert_eq!(
                after,
                [0x6B, 0x00],
                "{name}: {apdu:02X?} ({sw:04X}) discards the pending bytes"
            );
        }
        // The control: a GET RESPONSE as §3.1 says (CLA 00, P1 P2 00 00, no chain) gets them,
        // with or without Le, and with data, which §3.5 says is ignored.
        for apdu in [
            &get_response[..],
            &[0x00, 0xC0, 0x00, 0x00],
            &[0x00, 0xC0, 0x00, 0x00, 0x01, 0xFF, 0x00],
        ] {
            let left = leave_pending(&mut card);
            let rest = expect_ok(&card.transmit(apdu));
            assert_eq!(rest.len(), left, "{name}: {apdu:02X?}");
        }
    }
}

/// §3.2's worked examples ("For example `81` → `6881`, ...") are what GET DATA with that
/// class byte gets, on a PSD.
#[test]
fn the_class_byte_examples_of_section_3_2_are_what_the_card_answers() {
    use openpsd_core::client::psd_apdu;
    let doc = doc();
    let text = subsection(&doc, "### 3.2 Class byte");
    let at = text.find("For example ").expect("§3.2's examples");
    let sentence = &text[at..at + text[at..].find(".\n").unwrap_or(text.len() - at)];
    let sentence = sentence.replace('\n', " ");
    let mut checked = 0;
    let (mut card, _) = openpsd_tests::personalized_card(1);
    for pair in sentence.split(", ") {
        let codes: Vec<&str> = pair.split('`').skip(1).step_by(2).collect();
        if let [cla, sw] = codes[..] {
            let cla = u8::from_str_radix(cla, 16).unwrap();
            let sw = u16::from_str_radix(sw, 16).unwrap();
            let resp = card.transmit(&[cla, 0xCA, 0x00, 0x01, 0x00]);
            assert_eq!(psd_apdu::sw(&resp), sw, "CLA {cla:02X}: §3.2 says {sw:04X}");
            checked += 1;
        }
    }
    assert!(checked >= 5, "§3.2's examples read: {sentence}");
}

/// §4.6's checks table, the paragraph under it and §6 say the same of `9A14` (DR +
/// pending + amount above max DR), and the card does that: with value pending, a refill
/// that brings DR + pending to exactly max DR is taken, one a cent more is `9A14`.
#[test]
fn refill_9a14_counts_pending_as_section_4_6_says() {
    use openpsd_core::client::psd_apdu;
    use openpsd_core::types::{Amount, RegisterSetIndex};
    use openpsd_tests::purse::{funded_psd, purse, run_until};
    let doc = doc();
    let text = subsection(&doc, "### 4.6 REFILL (80 52)");
    let rule = "DR + pending + amount > max DR";
    let row = text
        .lines()
        .find(|l| l.starts_with("| `9A14` |"))
        .expect("a 9A14 row in §4.6's checks");
    assert!(row.contains(rule), "the 9A14 row states {rule:?}: {row}");
    assert!(
        text.contains("`9A14`\ncounts pending") || text.contains("`9A14` counts pending"),
        "the paragraph under the table says 9A14 counts pending"
    );
    assert!(text.contains("(DR + pending + amount ≤ max DR)"));
    let status_row = status_rows(&doc)
        .into_iter()
        .find(|(sw, _)| sw == "9A14")
        .expect("9A14 in the status word table")
        .1;
    assert!(
        status_row.contains(rule),
        "§6 states {rule:?}: {status_row}"
    );

    let max = openpsd_tests::MAX_DR.0;
    let funded = 10_000;
    let pending = 700;
    let mut psd = funded_psd(1, funded);
    let mut card = purse(2);
    // Steps 0..9: up to and including TRANSFER DEBIT, so `pending` stays pending.
    run_until(&mut psd, &mut card, pending, 9);
    let regs = openpsd_tests::registers(&mut psd, 0);
    assert_eq!(regs.pending, Amount(pending));
    let room = max - regs.dr.0 - regs.pending.0;
    let kms = openpsd_tests::Kms::new();
    let set = RegisterSetIndex(0);
    let over = kms.refill_for(&mut psd, set, Amount(room + 1), [3; 8]);
    expect_refused(
        &psd.transmit(&psd_apdu::refill(set, &over)),
        Status::RefillAboveLimit,
    );
    assert!(regs.dr.0 + room < max, "DR alone would have had room");
    let exact = kms.refill_for(&mut psd, set, Amount(room), [4; 8]);
    expect_ok(&psd.transmit(&psd_apdu::refill(set, &exact)));
    let regs = openpsd_tests::registers(&mut psd, 0);
    assert_eq!(regs.dr.0 + regs.pending.0, max);
}
