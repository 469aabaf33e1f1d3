//! docs/card-sim.md is what an outsider writes a client or a back-office tool from: these
//! checks keep it from drifting away from the code.
//!
//! * The framing table: its control codes and names are exactly `transport::control`'s;
//!   the ATR written in the doc is [`ATR`].
//! * The file tables (scheme, public scheme, PSD and purse secrets, baselines): the fields of
//!   each table are exactly the keys the code writes (files made here by the real code, on
//!   in-memory cards), each field's JSON type and hex length and case are what the table
//!   says, and the JSON example under each table has the same fields and is read by the
//!   code that reads such files.
//! * Each documented example is read by card-sim's reader and written back unchanged (in
//!   the hex case the doc says card-sim writes), also from the other hex case, and the
//!   legacy fields the doc says are still read are.
//! * The framing table and the TCP client rules, against a real `card-sim serve --tcp`:
//!   answered frames, power events clearing volatile state, ignored frames not, one client
//!   at a time, a fresh power-up per connection, the idle bound.
//! * Card kinds: `create --kind`, and personalization deciding the kind at the next
//!   power-up (a script's `reset`) and for the next process.
//! * Every in-document link of card-sim.md names a heading.
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use card_sim::issuer::{self, PurseRecord, PurseRequest};
use card_sim::os_platform::OsPlatform;
use card_sim::personalize::{self, Request, Secrets};
use card_sim::scheme::{Scheme, SchemePublic};
use card_sim::sim::{SimCard, ATR};
use card_sim::transport::{control, CLIENT_IDLE};
use openpsd_core::client::psd_apdu;
use openpsd_core::crypto::IndiciumKey;
use openpsd_core::psd::device::LicenseSlot;
use openpsd_core::store::MemStore;
use openpsd_core::types::{Amount, LicenseId, PostalCode};
use serde_json::Value;

mod common;

#[path = "../../tests/src/markdown.rs"]
mod markdown;

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

/// `value` with the case of every hex string's letters swapped (strings of 8 hex digits
/// or more): what a file written by another tool, in the other case, may hold.
fn swap_hex_case(value: &Value) -> Value {
    match value {
        Value::String(t) if t.len() >= 8 && t.chars().all(|c| c.is_ascii_hexdigit()) => {
            Value::String(
                t.chars()
                    .map(|c| {
                        if c.is_ascii_uppercase() {
                            c.to_ascii_lowercase()
                        } else {
                            c.to_ascii_uppercase()
                        }
                    })
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(swap_hex_case).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), swap_hex_case(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Reads the scheme file `json` with card-sim's reader and writes it back with its writer.
fn scheme_round_trip(dir: &std::path::Path, name: &str, json: &Value) -> Value {
    let src = dir.join(format!("{name}.json"));
    std::fs::write(&src, json.to_string()).unwrap();
    let read = Scheme::read(&src).unwrap_or_else(|e| panic!("{name}: card-sim reads it: {e:#}"));
    let out = dir.join(format!("{name}.out.json"));
    read.write(&out).unwrap();
    serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap()
}

/// The scheme file tables against `scheme create`'s writer, and each documented example
/// read by card-sim's reader: written back it is the example itself (every field, in the
/// case the doc says card-sim writes), also when given with the hex in the other case
/// ("reads either case") and as a version 1 file with `scheme_key` ("still read", "never
/// written"). A file whose public key is not the signing key's is refused, as documented.
#[test]
fn the_scheme_file_tables_are_what_card_sim_writes_and_reads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scheme.json");
    let s = scheme();
    s.write(&path).unwrap();
    let written: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let example = check_file_table("### The scheme file", &written);
    assert_eq!(scheme_round_trip(dir.path(), "example", &example), example);
    let swapped = swap_hex_case(&example);
    assert_ne!(swapped, example);
    assert_eq!(scheme_round_trip(dir.path(), "upper", &swapped), example);
    let mut v1 = example.clone();
    v1["version"] = 1.into();
    v1["scheme_key"] = "00112233445566778899aabbccddeeff".into();
    assert_eq!(scheme_round_trip(dir.path(), "v1", &v1), example);
    let mut wrong = example.clone();
    wrong["issuer_public_key"] = written["issuer_public_key"].clone();
    let bad = dir.path().join("wrong.json");
    std::fs::write(&bad, wrong.to_string()).unwrap();
    assert!(
        Scheme::read(&bad).is_err(),
        "a public key not the signing key's"
    );

    let public = serde_json::to_value(s.public()).unwrap();
    let example = check_file_table("### The public scheme file", &public);
    let read = SchemePublic::parse(&example.to_string()).unwrap();
    assert_eq!(serde_json::to_value(&read).unwrap(), example);
    let key = read.checked().expect("the documented public file is read");
    let swapped = SchemePublic::parse(&swap_hex_case(&example).to_string()).unwrap();
    assert_eq!(swapped.checked().unwrap(), key, "hex in either case");
    // "any others ignored": the whole scheme file is a public scheme file too.
    let whole = SchemePublic::parse(&written.to_string()).unwrap();
    assert_eq!(whole.checked().unwrap().1, s.public().checked().unwrap().1);
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
    let read: Secrets =
        serde_json::from_value(example.clone()).expect("the example is a secrets file");
    assert!(!read.licenses.is_empty());
    assert_eq!(
        serde_json::to_value(&read).unwrap(),
        example,
        "every field read"
    );
    // A file written before issue 12 has `k1`: ignored (read, never written back).
    let mut old = example.clone();
    old["k1"] = "00112233445566778899aabbccddeeff".into();
    let read_old: Secrets = serde_json::from_value(old).expect("a file with k1 is read");
    assert_eq!(read_old, read);

    // The baselines of a funded PSD; the secrets file given in the other hex case ("every
    // reader takes either case"): `card-sim refill` reads it.
    let other_case: Secrets = serde_json::from_value(swap_hex_case(&written)).unwrap();
    assert_ne!(other_case, secrets);
    issuer::refill_psd(
        &mut psd,
        &mut platform(),
        &other_case,
        &kms,
        openpsd_core::types::RegisterSetIndex(0),
        Amount(10_000),
    )
    .unwrap();
    let baselines = issuer::psd_baselines(&mut psd, &secrets).unwrap();
    let written = serde_json::to_value(&baselines).unwrap();
    assert_eq!(written.as_array().unwrap().len(), req.licenses.len());
    let example = check_file_table("### The baselines file", &written[0]);
    let read: Vec<openpsd_protocol::Baseline> =
        serde_json::from_value(example.clone()).expect("the example is a baselines file");
    assert_eq!(
        serde_json::to_value(&read).unwrap(),
        example,
        "every field read"
    );

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
    let read: PurseRecord =
        serde_json::from_value(example.clone()).expect("the example is a purse record");
    assert_eq!(
        serde_json::to_value(&read).unwrap(),
        example,
        "every field read"
    );
}

/// The file at `dir/name` as JSON, after checking its permission bits.
fn json_file(dir: &std::path::Path, name: &str, mode: u32) -> Value {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    let meta = std::fs::metadata(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(meta.permissions().mode() & 0o777, mode, "{name}: mode");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// The files the `card-sim` binary itself writes (scheme, public scheme, bench-KMS keys,
/// the PSD's and the purse's secrets, baselines) have the documented names beside the
/// card's directory, modes, fields and encodings; neither a secrets file nor a KMS key is
/// ever overwritten.
#[test]
fn the_files_the_cli_writes_are_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run = |args: &[&str]| common::card_sim(args, d);
    run(&["scheme", "create", "--out", "scheme.json", "--id", "4711"]);
    check_file_table("### The scheme file", &json_file(d, "scheme.json", 0o600));
    run(&[
        "scheme",
        "public",
        "--scheme",
        "scheme.json",
        "--out",
        "public.json",
    ]);
    let public: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("public.json")).unwrap()).unwrap();
    check_file_table("### The public scheme file", &public);

    run(&["bench-kms", "--dir", "kms"]);
    for (name, digits, private) in [
        ("kms/kms-signing.key", 64, true),
        ("kms/kms-public.key", 130, false),
    ] {
        use std::os::unix::fs::PermissionsExt;
        let text = std::fs::read_to_string(d.join(name)).unwrap();
        let text = text.trim();
        assert_eq!(text.len(), digits, "{name}");
        assert!(hex::decode(text).is_ok(), "{name} is hex");
        if private {
            let m = std::fs::metadata(d.join(name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(m & 0o777, 0o600, "{name}: mode");
        }
    }
    let doc = doc();
    let row = doc
        .lines()
        .find(|l| l.starts_with("| `card-sim bench-kms --dir DIR`"))
        .expect("the bench-kms row");
    assert!(row.contains("`DIR/kms-signing.key` (64 hex digits, mode 0600)"));
    assert!(row.contains("`DIR/kms-public.key` (130 hex digits)"));
    assert!(row.contains("refuses to overwrite a key"));
    let signing = std::fs::read(d.join("kms/kms-signing.key")).unwrap();
    let again = Command::new(env!("CARGO_BIN_EXE_card-sim"))
        .args(["bench-kms", "--dir", "kms"])
        .current_dir(d)
        .output()
        .unwrap();
    assert!(!again.status.success(), "bench-kms over an existing key");
    assert_eq!(
        std::fs::read(d.join("kms/kms-signing.key")).unwrap(),
        signing
    );

    run(&[
        "personalize",
        "--state",
        "psd",
        "--scheme",
        "scheme.json",
        "--kms-public-key",
        "kms/kms-public.key",
        "--license",
        "4711:10115",
        "--license",
        "4712:20095",
    ]);
    let secrets = json_file(d, "psd.secrets.json", 0o600);
    check_file_table("### The PSD's secrets file", &secrets);
    assert_eq!(
        secrets["licenses"],
        serde_json::json!([[4711, "10115"], [4712, "20095"]]),
        "one [license, origin] pair per set, in set order"
    );
    run(&[
        "refill",
        "--state",
        "psd",
        "--amount",
        "100.00",
        "--kms-signing-key",
        "kms/kms-signing.key",
    ]);
    let baselines: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("psd.baselines.json")).unwrap())
            .unwrap();
    assert_eq!(
        baselines,
        serde_json::json!([{"control_sum": 10000, "refills": 1}, {"control_sum": 0, "refills": 0}]),
        "one object per set of the secrets file, in minor units"
    );
    check_file_table("### The baselines file", &baselines[0]);

    run(&[
        "personalize",
        "--kind",
        "purse",
        "--state",
        "purse",
        "--scheme",
        "scheme.json",
        "--pin",
        "1234",
    ]);
    check_file_table(
        "### The purse's secrets file",
        &json_file(d, "purse.secrets.json", 0o600),
    );

    // A secrets file is written once: another card's personalization is refused rather
    // than overwrite it.
    let before = std::fs::read(d.join("psd.secrets.json")).unwrap();
    let again = Command::new(env!("CARGO_BIN_EXE_card-sim"))
        .args([
            "personalize",
            "--state",
            "psd2",
            "--kms-public-key",
            "kms/kms-public.key",
            "--secrets",
            "psd.secrets.json",
        ])
        .current_dir(d)
        .output()
        .unwrap();
    assert!(
        !again.status.success(),
        "an existing secrets file overwritten"
    );
    assert_eq!(std::fs::read(d.join("psd.secrets.json")).unwrap(), before);
}

/// Sends the frame `body`; the card's answer if one comes within `wait`.
fn answer_within(stream: &mut TcpStream, body: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let mut frame = u16::try_from(body.len()).unwrap().to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    stream.write_all(&frame).unwrap();
    stream.set_read_timeout(Some(wait)).unwrap();
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

/// Sends a frame that should be answered: the answer, waited for generously (a loaded
/// machine), or `None`.
fn answer(stream: &mut TcpStream, body: &[u8]) -> Option<Vec<u8>> {
    answer_within(stream, body, Duration::from_secs(10))
}

/// Sends a frame that should not be answered: the answer if one comes within a short wait.
fn unanswered(stream: &mut TcpStream, body: &[u8]) -> Option<Vec<u8>> {
    answer_within(stream, body, Duration::from_millis(300))
}

/// The card's state after a frame: kept (the bytes a short SELECT left pending are still
/// there for GET RESPONSE) or cleared as by a power-up (nothing pending, nothing selected).
fn leave_bytes_pending(stream: &mut TcpStream) {
    // SELECT with Le = 1: the FCI's first byte and 61xx.
    let mut select = psd_apdu::select();
    *select.last_mut().unwrap() = 0x01;
    let r = answer(stream, &select).expect("SELECT answered");
    assert_eq!(r[r.len() - 2], 0x61, "bytes pending: {r:02X?}");
}

fn state_kept(stream: &mut TcpStream) -> bool {
    let r = answer(stream, &[0x00, 0xC0, 0x00, 0x00, 0x00]).expect("GET RESPONSE answered");
    match r[r.len() - 2..] {
        [0x90, 0x00] => true,
        [0x6B, 0x00] => {
            // Nothing pending: and nothing selected either, as after a power-up.
            let r = answer(stream, &[0x80, 0xCA, 0x00, 0x01, 0x00]).unwrap();
            assert_eq!(r, [0x69, 0x85], "no applet selected after a power-up");
            false
        }
        _ => panic!("GET RESPONSE answered {r:02X?}"),
    }
}

/// `card-sim create` in a temporary directory, served by `card-sim serve --tcp`.
fn served_blank_card() -> (tempfile::TempDir, common::Server, u16) {
    let dir = tempfile::tempdir().unwrap();
    common::card_sim(&["create", "--state", "card"], dir.path());
    let (server, port) = common::serve(&dir.path().join("card"));
    (dir, server, port)
}

/// Every row of the framing table, sent to a real `card-sim serve --tcp` process: answered
/// or not as the table says, with what it says; power off, power on and reset clearing the
/// card's volatile state as the paragraph under the table says, the frames it calls ignored
/// leaving it as it was.
#[test]
fn the_framing_table_is_what_card_sim_serve_tcp_does() {
    let doc = doc();
    let text = section(&doc, "### The framing");
    assert!(
        text.contains("Power off, power on and reset each act as a power-up of the card"),
        "the paragraph on power events"
    );
    let (_dir, _server, port) = served_blank_card();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
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
        let frames: Vec<Vec<u8>> = if body.starts_with("empty") {
            vec![Vec::new()]
        } else if body.starts_with("any other single byte") {
            // A few: each unanswered frame costs the wait for an answer that does not come.
            [0x03u8, 0x05, 0x80, 0xFF]
                .into_iter()
                .inspect(|b| assert!(known.iter().all(|(k, _)| k != b)))
                .map(|b| vec![b])
                .collect()
        } else if body.starts_with("2 bytes or more") {
            // The shortest (no APDU: 6700) and a SELECT.
            vec![vec![0x00, 0xA4], psd_apdu::select()]
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
            vec![vec![code]]
        };
        for frame in frames {
            let apdu = frame.len() >= 2;
            if !apdu {
                leave_bytes_pending(&mut stream);
            }
            let got = if answered == "nothing" {
                unanswered(&mut stream, &frame)
            } else {
                answer(&mut stream, &frame)
            };
            if answered == "nothing" {
                assert_eq!(got, None, "frame {frame:02X?} ({what}) is answered");
            } else {
                let got = got.unwrap_or_else(|| panic!("frame {frame:02X?} ({what}) unanswered"));
                assert!(answered.starts_with("one frame"), "{answered}");
                if frame == [control::GET_ATR] {
                    assert!(answered.contains(&format!("{}-byte ATR", ATR.len())));
                    assert_eq!(got, ATR);
                } else if frame.len() == 2 {
                    assert_eq!(got, [0x67, 0x00], "a 2-byte APDU is too short");
                } else {
                    assert_eq!(got[got.len() - 2..], [0x90, 0x00], "SELECT answered");
                }
            }
            if !apdu {
                let power = known[..3].iter().any(|(k, _)| [*k] == frame[..]);
                assert_eq!(
                    state_kept(&mut stream),
                    !power,
                    "frame {frame:02X?} ({what}): state {}",
                    if power { "cleared" } else { "kept" }
                );
                if power {
                    assert!(!what.contains("ignored"), "{what}");
                } else if frame.len() != 1 || frame[0] != control::GET_ATR {
                    assert!(what.contains("ignored"), "{what}");
                }
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

/// "TCP clients": one client at a time (a second client's frames wait, unanswered, until
/// the first has gone), each connection a fresh power-up (nothing pending, nothing
/// selected), and the idle bound the doc gives is the transport's.
#[test]
fn the_tcp_client_rules_are_what_card_sim_serve_tcp_does() {
    let doc = doc();
    let text = section(&doc, "### TCP clients (`serve --tcp`)");
    assert!(text.contains("**One client at a time.**"));
    assert!(text.contains("**Each connection is a fresh power-up**"));
    let at = text
        .find("a client that sends no frame for ")
        .expect("the idle bound")
        + 33;
    let secs: u64 = text[at..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .expect("the idle bound in seconds");
    assert_eq!(
        Duration::from_secs(secs),
        CLIENT_IDLE,
        "the documented idle bound"
    );
    let table = doc
        .lines()
        .find(|l| l.starts_with("| `card-sim serve --state DIR --tcp ADDR`"));
    let table = table.expect("the serve --tcp row of the commands table");
    assert!(
        table.contains("one client at a time") && table.contains(&format!("silent for {secs} s"))
    );

    let (_dir, _server, port) = served_blank_card();
    let mut first = TcpStream::connect(("127.0.0.1", port)).unwrap();
    leave_bytes_pending(&mut first);
    let mut second = TcpStream::connect(("127.0.0.1", port)).unwrap();
    // Not answered while the first client is there.
    assert_eq!(
        unanswered(&mut second, &[0x00, 0xC0, 0x00, 0x00, 0x00]),
        None
    );
    assert!(state_kept(&mut first), "the first client keeps the card");
    drop(first);
    // Then answered, on a freshly powered-up card: the first client's pending bytes and
    // selection are gone.
    second
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut len = [0u8; 2];
    second.read_exact(&mut len).unwrap();
    let mut r = vec![0u8; usize::from(u16::from_be_bytes(len))];
    second.read_exact(&mut r).unwrap();
    assert_eq!(r, [0x6B, 0x00], "nothing pending for the next client");
    assert_eq!(
        answer(&mut second, &[0x80, 0xCA, 0x00, 0x01, 0x00]).unwrap(),
        [0x69, 0x85],
        "nothing selected for the next client"
    );
}

/// "Card kinds" and `create --kind`: a card made by `card-sim create --kind purse` is
/// blank with both applets (the option changes only the message); personalized as a PSD by
/// APDUs it still answers the purse's AID until its next power-up — here a `reset` line of
/// a script run on it — and from then on answers `6A82`, also to the next process that
/// opens it (`serve --tcp`).
#[test]
fn the_card_kinds_section_is_what_card_sim_does() {
    let doc = doc();
    let row = doc
        .lines()
        .find(|l| l.starts_with("| `card-sim create --state DIR"))
        .expect("the create row");
    assert!(
        row.contains("`--kind` changes only the message printed"),
        "{row}"
    );
    let kinds = section(&doc, "## Card kinds");
    assert!(kinds.contains("a `reset` line of a script"));
    assert!(kinds.contains("SELECT of its AID answers `6A82`"));

    let dir = tempfile::tempdir().unwrap();
    common::card_sim(
        &["create", "--kind", "purse", "--state", "card"],
        dir.path(),
    );
    // The blank card answers both AIDs, whatever --kind said.
    {
        let (_server, port) = common::serve(&dir.path().join("card"));
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        for select in [
            psd_apdu::select(),
            openpsd_core::client::purse_apdu::select(),
        ] {
            let r = answer(&mut tcp, &select).unwrap();
            assert_eq!(r[r.len() - 2..], [0x90, 0x00], "{select:02X?}");
        }
    }
    // The PSD's PERSONALIZE of a generated script, then the purse's SELECT before and after
    // a reset.
    let script = std::fs::read_to_string(format!(
        "{}/../tests/scripts/indicium.apdu",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let personalize_end = script
        .match_indices("# expect 9000\n")
        .nth(1)
        .map(|(i, m)| i + m.len())
        .expect("SELECT and PERSONALIZE");
    assert!(script[..personalize_end].contains("\n80 10 00 00 "));
    let purse_select = "00 A4 04 00 07 F0 50 53 44 00 00 02 00\n";
    let script = format!(
        "{}{purse_select}# expect 9000\nreset\n{purse_select}# expect 6A82\n",
        &script[..personalize_end]
    );
    std::fs::write(dir.path().join("kind.apdu"), script).unwrap();
    common::card_sim(
        &["run", "--clock", "none", "--state", "card", "kind.apdu"],
        dir.path(),
    );
    let (_server, port) = common::serve(&dir.path().join("card"));
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let select = openpsd_core::client::purse_apdu::select();
    assert_eq!(answer(&mut tcp, &select).unwrap(), [0x6A, 0x82]);
    let r = answer(&mut tcp, &psd_apdu::select()).unwrap();
    assert_eq!(r[r.len() - 2..], [0x90, 0x00]);
}

/// "Card kinds", the virtual meter box: `create --kind vbox` makes a blank card whose box
/// applet answers (GET DATA: blank); PERSONALIZE sent by a TCP client (as the data center
/// does) makes it a box from the next connection on: the PSD's AID answers `6A82`, the
/// box's answers and holds what it was given, also in the next process (`serve --tcp`).
#[test]
fn a_vbox_card_is_made_blank_and_personalized_by_its_host() {
    use openpsd_core::vbox::{ins, CLA_VBOX, VBOX_AID};
    let doc = doc();
    let row = doc
        .lines()
        .find(|l| l.starts_with("| `card-sim create --state DIR"))
        .expect("the create row");
    assert!(row.contains("psd\\|purse\\|vbox"), "{row}");
    let kinds = section(&doc, "## Card kinds");
    assert!(kinds.contains("`kind=virtual meter box`"), "{kinds}");

    let dir = tempfile::tempdir().unwrap();
    common::card_sim(&["create", "--kind", "vbox", "--state", "box"], dir.path());
    let mut select = vec![0x00, 0xA4, 0x04, 0x00, 7];
    select.extend_from_slice(VBOX_AID);
    let get_data = [CLA_VBOX, ins::GET_DATA, 0x00, 0x01, 0x00];
    let key = IndiciumKey::from_bytes(&[0x42; 32]).unwrap().public_key();
    let mut personalize = b"VBtest01".to_vec();
    personalize.extend_from_slice(&4u16.to_be_bytes());
    personalize.push(3);
    personalize.extend_from_slice(&key);
    personalize.extend_from_slice(&key);
    let mut apdu = vec![CLA_VBOX, ins::PERSONALIZE, 0, 0, 0];
    apdu.extend_from_slice(&u16::try_from(personalize.len()).unwrap().to_be_bytes());
    apdu.extend_from_slice(&personalize);
    apdu.extend_from_slice(&[0, 0]);
    {
        let (_server, port) = common::serve(&dir.path().join("box"));
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let r = answer(&mut tcp, &select).unwrap();
        assert_eq!(
            r[r.len() - 2..],
            [0x90, 0x00],
            "the blank card's box applet"
        );
        assert_eq!(
            answer(&mut tcp, &get_data).unwrap(),
            [0x00, 0x90, 0x00],
            "blank"
        );
        let r = answer(&mut tcp, &apdu).unwrap();
        assert_eq!(r[r.len() - 2..], [0x90, 0x00], "PERSONALIZE");
        drop(tcp);
        // The next client: a fresh power-up, nothing selected; the card is a box now.
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        assert_eq!(
            answer(&mut tcp, &get_data).unwrap()[..],
            [0x69, 0x85][..],
            "nothing selected"
        );
        assert_eq!(answer(&mut tcp, &psd_apdu::select()).unwrap(), [0x6A, 0x82]);
    }
    let (_server, port) = common::serve(&dir.path().join("box"));
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    assert_eq!(answer(&mut tcp, &psd_apdu::select()).unwrap(), [0x6A, 0x82]);
    let r = answer(&mut tcp, &select).unwrap();
    assert_eq!(r[r.len() - 2..], [0x90, 0x00]);
    let info = answer(&mut tcp, &get_data).unwrap();
    assert_eq!(info[0], 1, "personalized");
    assert_eq!(&info[1..9], b"VBtest01");
    assert_eq!(info[info.len() - 2..], [0x90, 0x00]);
}

#[test]
fn in_document_links_resolve() {
    markdown::check_in_page_links(&doc(), "docs/card-sim.md", 8);
}

#[test]
fn links_to_other_docs_resolve() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
    let links = markdown::check_links_to_other_docs(&doc(), "docs/card-sim.md", &dir);
    assert!(links >= 2, "docs/card-sim.md links to other docs");
}
