//! The browser's meter client (`web-demo/meter.js`) is written by hand; this test reads it
//! and checks it against the Rust types, so the two cannot drift: every state it branches
//! on is a [`RefillState`], every field it reads from a refill or an inspection is one the
//! meter server sends, every body it posts has exactly the fields of the request type, and
//! every error code it makes up for itself is either a real [`ErrorCode`] or one of its own
//! client-side codes.
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use openpsd_protocol::{
    ErrorCode, ErrorDetail, InspectionRequest, InspectionView, RefillRequest, RefillState,
    RefillView,
};
use serde::Serialize;

const METER_JS: &str = include_str!("../../web-demo/meter.js");

/// Codes meter.js makes up for failures that never reach a service: an answer that is not
/// JSON (`bad_answer`), a non-2xx without an error body (`http_` + the status).
const CLIENT_CODES: &[&str] = &["bad_answer", "http_"];

/// Every string literal that directly follows `prefix` in the source.
fn literals_after(src: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = src;
    while let Some(at) = rest.find(prefix) {
        rest = &rest[at + prefix.len()..];
        if let Some(end) = rest.find('\'') {
            out.push(rest[..end].to_owned());
        }
    }
    out
}

/// Identifiers read as `var.NAME` in the source.
fn fields_read(src: &str, var: &str) -> BTreeSet<String> {
    let needle = format!("{var}.");
    let mut out = BTreeSet::new();
    for (at, _) in src.match_indices(&needle) {
        let before = src[..at].chars().last().unwrap_or(' ');
        if before.is_ascii_alphanumeric() || before == '_' || before == '.' {
            continue;
        }
        let name: String = src[at + needle.len()..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        out.insert(name);
    }
    out
}

/// The JSON field names a value serializes to.
fn keys<T: Serialize>(v: &T) -> BTreeSet<String> {
    match serde_json::to_value(v).expect("serializable") {
        serde_json::Value::Object(m) => m.keys().cloned().collect(),
        other => panic!("not an object: {other}"),
    }
}

fn full_refill() -> RefillView {
    RefillView {
        client_txn_id: String::new(),
        device_id: String::new(),
        set: 0,
        account_id: String::new(),
        amount: 0,
        state: RefillState::Completed,
        nonce: String::new(),
        combination_id: Some(String::new()),
        refill_message: Some(String::new()),
        receipt: Some(String::new()),
        confirm_nonce: Some(String::new()),
        void_message: Some(String::new()),
        void_combination_id: Some(String::new()),
        error: Some(ErrorDetail {
            code: String::new(),
            step: String::new(),
            message: String::new(),
        }),
    }
}

#[test]
fn every_state_meter_js_branches_on_is_a_refill_state() {
    let mut states: Vec<String> = literals_after(METER_JS, "r.state === '");
    states.extend(literals_after(METER_JS, "r.state !== '"));
    assert!(
        states.len() >= 4,
        "meter.js no longer compares states? {states:?}"
    );
    for s in &states {
        assert!(
            RefillState::ALL.iter().any(|r| r == s.as_str()),
            "meter.js compares the refill state with '{s}', which the meter server never sends"
        );
    }
}

#[test]
fn every_field_meter_js_reads_is_one_the_meter_server_sends() {
    let refill = keys(&full_refill());
    let inspection = keys(&InspectionView {
        inspection_id: String::new(),
        device_id: String::new(),
        set: 0,
        nonce: String::new(),
        receipt: Some(String::new()),
    });
    // `r` is a refill view everywhere but in inspect(), where it is the inspection's
    // answer; both are checked against the union of what they may be.
    let answers: BTreeSet<String> = refill.union(&inspection).cloned().collect();
    let read_r = fields_read(METER_JS, "r");
    let read_i = fields_read(METER_JS, "i");
    assert!(read_r.contains("state") && read_i.contains("inspection_id"));
    for f in &read_r {
        assert!(
            answers.contains(f),
            "meter.js reads r.{f}: not in RefillView/InspectionView"
        );
    }
    for f in &read_i {
        assert!(
            inspection.contains(f),
            "meter.js reads i.{f}: not in InspectionView"
        );
    }
    for f in literals_after(METER_JS, "fieldBytes(r, '") {
        assert!(answers.contains(&f), "meter.js decodes r.{f}: not sent");
    }
    for f in literals_after(METER_JS, "fieldBytes(i, '") {
        assert!(inspection.contains(&f), "meter.js decodes i.{f}: not sent");
    }
}

/// The object literal posted after `call('POST', 'PATH', {` — its keys.
fn posted_keys(path: &str) -> BTreeSet<String> {
    let needle = format!("call('POST', '{path}', {{");
    let at = METER_JS
        .find(&needle)
        .unwrap_or_else(|| panic!("meter.js no longer posts to {path}"));
    let body = &METER_JS[at + needle.len()..];
    let body = &body[..body.find('}').expect("closing brace")];
    body.split(',')
        .map(|part| part.split(':').next().unwrap_or("").trim().to_owned())
        .filter(|k| !k.is_empty())
        .collect()
}

#[test]
fn the_bodies_meter_js_posts_have_the_request_types_fields() {
    let refill = RefillRequest {
        client_txn_id: String::new(),
        device_id: String::new(),
        set: 0,
        account_id: Some(String::new()),
        amount: 0,
    };
    assert_eq!(posted_keys("/v1/refills"), keys(&refill));
    let inspection = InspectionRequest {
        device_id: String::new(),
        set: 0,
    };
    assert_eq!(posted_keys("/v1/inspections"), keys(&inspection));
    // The audit body of the other calls.
    let audits = METER_JS.matches("{ audit: bytesToHex(audit) }").count();
    assert_eq!(
        audits, 3,
        "audit, confirm and inspection audit each post {{audit}}"
    );
    assert_eq!(
        keys(&openpsd_protocol::AuditBody {
            audit: String::new()
        }),
        BTreeSet::from(["audit".to_owned()])
    );
}

#[test]
fn the_error_codes_meter_js_uses_are_real_or_its_own() {
    let codes = literals_after(METER_JS, "code: '");
    assert!(!codes.is_empty());
    for c in &codes {
        assert!(
            ErrorCode::ALL.iter().any(|e| e == c.as_str()) || CLIENT_CODES.contains(&c.as_str()),
            "meter.js uses error code '{c}', which is neither a service's nor listed as its own"
        );
    }
}

#[test]
fn the_enums_spell_themselves_as_serde_does() {
    for s in RefillState::ALL {
        assert_eq!(
            serde_json::to_value(s).expect("json"),
            serde_json::Value::String(s.as_str().to_owned())
        );
        assert_eq!(s.as_str().parse::<RefillState>(), Ok(*s));
    }
    for c in ErrorCode::ALL {
        assert_eq!(
            serde_json::to_value(c).expect("json"),
            serde_json::Value::String(c.as_str().to_owned())
        );
    }
    assert!("nonsense".parse::<RefillState>().is_err());
}
