//! docs/card-sim.md is what an outsider writes a client or a back-office tool from: these
//! checks keep it from drifting away from the code.
//!
//! * The framing table: every frame the table lists is sent to a card served over TCP and
//!   answered (or not) as the table says; its control codes and names are exactly
//!   `transport::control`'s; the ATR written in the doc is [`ATR`].
//! * The file tables (scheme, public scheme, PSD and purse secrets, baselines): the fields of
//!   each table are exactly the keys the code writes (files made here by the real code, on
//!   in-memory cards), each field's JSON type and hex length and case are what the table
//!   says, and the JSON example under each table has the same fields and is read by the
//!   code that reads such files.
//! * Every in-document link of card-sim.md names a heading.
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use card_sim::issuer::{self, PurseRecord, PurseRequest};
use card_sim::os_platform::OsPlatform;
use card_sim::personalize::{self, Request, Secrets};
use card_sim::scheme::{Scheme, SchemePublic};
use card_sim::sim::{SimCard, ATR};
use card_sim::transport::{control, run_tcp_server_with};
use openpsd_core::client::psd_apdu;
use openpsd_core::crypto::IndiciumKey;
use openpsd_core::psd::device::LicenseSlot;
use openpsd_core::store::MemStore;
use openpsd_core::types::{Amount, LicenseId, PostalCode};
use serde_json::Value;

fn doc() -> String {
    let path = format!("{}/../docs/card-sim.md", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// The text from the heading line `heading` to the next heading.
fn section<'d>(doc: &'d str, heading: &str) -> &'d str {
    let start = doc
        .lines()
        .position(|l| l == heading)
        .unwrap_or_else(|| panic!("docs/card-sim.md has no heading {heading:?}"));
    let lines: Vec<&str> = doc.lines().collect();
    let from: usize = lines[..=start].iter().map(|l| l.len() + 1).sum();
    let rest = &doc[from..];
    let end = rest
        .lines()
        .scan(0usize, |at, l| {
            let here = *at;
            *at += l.len() + 1;
            Some((here, l))
        })
        .find(|(_, l)| l.starts_with('#'))
        .map_or(rest.len(), |(i, _)| i);
    &rest[..end]
}

/// The first table of `text`: its body rows, each as its trimmed cells.
fn table(text: &str) -> Vec<Vec<String>> {
    let rows: Vec<Vec<String>> = text
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect();
    assert!(rows.len() > 2, "a table with a body in {text:?}");
    rows[2..].to_vec()
}

/// The first ```json block of `text`.
fn json_example(text: &str) -> Value {
    let start = text.find("```json\n").expect("a JSON example") + 8;
    let end = start + text[start..].find("```").expect("the example ends");
    serde_json::from_str(&text[start..end]).expect("the example is JSON")
}

fn backticked(cell: &str) -> &str {
    cell.trim_matches('`')
}

/// One row of a file table: field, JSON description.
struct Field {
    name: String,
    json: String,
}

impl Field {
    /// Only in files of an earlier version: never written now.
    fn legacy(&self) -> bool {
        self.json.contains(" only")
    }

    /// May be absent from a file written now.
    fn optional(&self) -> bool {
        self.json.contains("absent")
    }

    /// Checks `value` against the JSON column: type, and for hex strings length and case.
    fn check(&self, value: &Value, whose: &str) {
        let what = format!("{whose}: field `{}` ({})", self.name, self.json);
        let words: Vec<&str> = self
            .json
            .split(' ')
            .map(|w| w.trim_matches([',', ';']))
            .collect();
        match words[0] {
            "number" => assert!(value.is_u64(), "{what}: {value} is not a number"),
            "string" => assert!(value.is_string(), "{what}: {value} is not a string"),
            "array" => {
                assert!(value.is_array(), "{what}: {value} is not an array");
                if self.json.contains("[number, string] pairs") {
                    for pair in value.as_array().unwrap() {
                        let p = pair.as_array().expect("a pair");
                        assert!(
                            p.len() == 2 && p[0].is_u64() && p[1].is_string(),
                            "{what}: {pair}"
                        );
                    }
                }
            }
            other => panic!("{what}: unknown JSON type {other:?}"),
        }
        if let Some(i) = words
            .iter()
            .position(|w| *w == "lower-case" || *w == "upper-case")
        {
            assert_eq!(
                words.get(i + 1..i + 3),
                Some(&["hex", "digits"][..]),
                "{what}"
            );
            let digits: usize = words[i - 1].parse().expect("a digit count");
            let text = value.as_str().expect("a hex string");
            assert_eq!(text.len(), digits, "{what}: {text}");
            let upper = words[i] == "upper-case";
            assert!(
                text.chars().all(|c| c.is_ascii_digit()
                    || (c.is_ascii_hexdigit()
                        && if upper {
                            c.is_ascii_uppercase()
                        } else {
                            c.is_ascii_lowercase()
                        })),
                "{what}: {text} is not {} hex",
                words[i]
            );
        }
    }
}

fn fields(text: &str) -> Vec<Field> {
    table(text)
        .into_iter()
        .map(|row| Field {
            name: backticked(&row[0]).to_string(),
            json: row[1].clone(),
        })
        .collect()
}

/// The table under `heading` against `written` (an object the code wrote) and the
/// example under it; returns the example for the caller's reader.
fn check_file_table(heading: &str, written: &Value) -> Value {
    let doc = doc();
    let text = section(&doc, heading);
    let fields = fields(text);
    let documented: BTreeSet<&str> = fields
        .iter()
        .filter(|f| !f.legacy())
        .map(|f| f.name.as_str())
        .collect();
    let keys: BTreeSet<&str> = written
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        documented, keys,
        "{heading}: the table's fields (left) are not the ones the code writes (right)"
    );
    for f in fields.iter().filter(|f| !f.legacy()) {
        f.check(&written[&f.name], &format!("{heading}, as written"));
    }
    let example = json_example(text);
    let element = match &example {
        Value::Array(items) => items.first().expect("an element").clone(),
        v => v.clone(),
    };
    let obj = element.as_object().expect("the example is an object");
    for f in &fields {
        match obj.get(&f.name) {
            Some(v) => f.check(v, &format!("{heading}, the example")),
            None => assert!(
                f.legacy() || f.optional(),
                "{heading}: the example lacks `{}`",
                f.name
            ),
        }
    }
    for k in obj.keys() {
        assert!(
            fields.iter().any(|f| f.name == *k),
            "{heading}: the example has `{k}`, which the table does not"
        );
    }
    example
}

fn platform() -> OsPlatform {
    OsPlatform::default()
}

fn blank() -> SimCard<MemStore, OsPlatform> {
    SimCard::new(MemStore::new(), platform()).unwrap()
}

fn scheme() -> Scheme {
    Scheme::generate(Some(4711), &mut platform())
}

#[test]
fn the_scheme_file_tables_are_what_card_sim_writes_and_reads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scheme.json");
    let s = scheme();
    s.write(&path).unwrap();
    let written: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let example = check_file_table("### The scheme file", &written);
    let ex_path = dir.path().join("example.json");
    std::fs::write(&ex_path, example.to_string()).unwrap();
    let read = Scheme::read(&ex_path).expect("card-sim reads the documented example");
    assert_eq!(Some(u64::from(read.id.0)), example["scheme"].as_u64());

    let public = serde_json::to_value(s.public()).unwrap();
    let example = check_file_table("### The public scheme file", &public);
    SchemePublic::parse(&example.to_string())
        .unwrap()
        .checked()
        .expect("the documented public file is read");
}

#[test]
fn the_secrets_and_baselines_tables_are_what_card_sim_writes() {
    let s = scheme();
    let mut psd = blank();
    let kms = IndiciumKey::generate(&mut platform());
    let mut req = Request::new(kms.public_key());
    req.licenses.push(LicenseSlot {
        license: LicenseId(4712),
        origin: PostalCode::new(b"20095").unwrap(),
    });
    let (_, secrets) =
        personalize::personalize_with_scheme(&mut psd, &mut platform(), &req, Some((&s, 5)))
            .unwrap();
    assert!(secrets.certificate_serial.is_some());
    let written = serde_json::to_value(&secrets).unwrap();
    let example = check_file_table("### The PSD's secrets file", &written);
    let read: Secrets = serde_json::from_value(example).expect("the example is a secrets file");
    assert!(!read.licenses.is_empty());

    // The baselines of a funded PSD.
    issuer::refill_psd(
        &mut psd,
        &mut platform(),
        &secrets,
        &kms,
        openpsd_core::types::RegisterSetIndex(0),
        Amount(10_000),
    )
    .unwrap();
    let baselines = issuer::psd_baselines(&mut psd, &secrets).unwrap();
    let written = serde_json::to_value(&baselines).unwrap();
    assert_eq!(written.as_array().unwrap().len(), req.licenses.len());
    let example = check_file_table("### The baselines file", &written[0]);
    let _: Vec<openpsd_protocol::Baseline> =
        serde_json::from_value(example).expect("the example is a baselines file");

    let mut purse = blank();
    let preq = PurseRequest {
        card: None,
        pin: zeroize::Zeroizing::new(b"1234".to_vec()),
        max_balance: Amount(50_000),
        max_transfer: Amount(10_000),
        pin_tries: 3,
        max_failures: 5,
    };
    let (_, record) = issuer::personalize_purse(&mut purse, &mut platform(), &s, &preq).unwrap();
    let written = serde_json::to_value(&record).unwrap();
    let example = check_file_table("### The purse's secrets file", &written);
    let _: PurseRecord = serde_json::from_value(example).expect("the example is a purse record");
}

/// Whether the card answers `body` (a frame) within a short wait; the answer if so.
fn answer(stream: &mut TcpStream, body: &[u8]) -> Option<Vec<u8>> {
    let mut frame = u16::try_from(body.len()).unwrap().to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    stream.write_all(&frame).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut len = [0u8; 2];
    match stream.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return None,
        Err(e) => panic!("{e}"),
    }
    let mut out = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut out).unwrap();
    Some(out)
}

#[test]
fn the_framing_table_is_what_the_transport_does() {
    let doc = doc();
    let text = section(&doc, "### The framing");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut card = blank();
        let _ = run_tcp_server_with(listener, &mut card, Duration::from_secs(10));
    });
    let mut stream = TcpStream::connect(addr).unwrap();
    let known = [
        (control::POWER_OFF, "power off"),
        (control::POWER_ON, "power on"),
        (control::RESET, "reset"),
        (control::GET_ATR, "get ATR"),
    ];
    let mut codes = Vec::new();
    let rows = table(text);
    for row in &rows {
        let (body, what, answered) = (&row[0], &row[1], &row[2]);
        let frame: Vec<u8> = if body.starts_with("empty") {
            Vec::new()
        } else if body.starts_with("any other single byte") {
            let unknown = (0..=255u8)
                .find(|b| known.iter().all(|(k, _)| k != b))
                .unwrap();
            vec![unknown]
        } else if body.starts_with("2 bytes or more") {
            psd_apdu::select()
        } else {
            let code = u8::from_str_radix(backticked(body), 16)
                .unwrap_or_else(|_| panic!("a control code: {body}"));
            let name = known
                .iter()
                .find(|(k, _)| *k == code)
                .unwrap_or_else(|| panic!("`{code:02X}` is no control code of the transport"))
                .1;
            assert_eq!(what, name, "the name of control code {code:02X}");
            codes.push(code);
            vec![code]
        };
        let got = answer(&mut stream, &frame);
        if answered == "nothing" {
            assert_eq!(got, None, "frame {frame:02X?} ({what}) is answered");
        } else {
            let got = got.unwrap_or_else(|| panic!("frame {frame:02X?} ({what}) unanswered"));
            assert!(answered.starts_with("one frame"), "{answered}");
            if frame == [control::GET_ATR] {
                assert!(answered.contains(&format!("{}-byte ATR", ATR.len())));
                assert_eq!(got, ATR);
            } else {
                assert_eq!(got[got.len() - 2..], [0x90, 0x00], "SELECT answered");
            }
        }
    }
    codes.sort_unstable();
    let mut all: Vec<u8> = known.iter().map(|(k, _)| *k).collect();
    all.sort_unstable();
    assert_eq!(
        codes, all,
        "the table lists every control code, and only those"
    );

    // The ATR as the doc writes it.
    let at = text.find("The ATR `").expect("the ATR in hex") + 9;
    let hex: String = text[at..at + text[at..].find('`').unwrap()]
        .split(' ')
        .collect();
    assert_eq!(hex::decode(hex).unwrap(), ATR);
}

#[test]
fn in_document_links_resolve() {
    let doc = doc();
    let mut in_code = false;
    let anchors: BTreeSet<String> = doc
        .lines()
        .filter(|l| {
            if l.starts_with("```") {
                in_code = !in_code;
            }
            !in_code && l.starts_with('#')
        })
        .map(|l| {
            l.trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter_map(|c| match c {
                    ' ' => Some('-'),
                    c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                    _ => None,
                })
                .collect()
        })
        .collect();
    let mut rest = doc.as_str();
    let mut links = 0;
    while let Some(i) = rest.find("](#") {
        let tail = &rest[i + 3..];
        let end = tail.find(')').expect("a link ends");
        let anchor = &tail[..end];
        assert!(
            anchors.contains(anchor),
            "docs/card-sim.md links to #{anchor}, which is no heading"
        );
        links += 1;
        rest = &tail[end..];
    }
    assert!(links >= 8, "docs/card-sim.md has its cross references");
}
