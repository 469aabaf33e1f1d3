//! The HTTP contract, byte for byte: every route of the meter server, the KMS, the
//! recharging center and the demo room is called once (and its main refusals too), and the
//! exact request and response bodies are compared with `tests/golden/http.txt`.
//!
//! Only what is random or dated is masked — runs of 16 or more hex digits (nonces, IDs,
//! keys, MACs, signatures) become `<hex:N>` and dates `<date>` — so a renamed field, a
//! reordered field, another state string or error code, a changed status or message fails
//! the test. It pins the JSON the services speak while their code moves (issue 10); after
//! an intended change of the contract, regenerate the file with `GOLDEN_UPDATE=1` and
//! review its diff.
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../tests/common/mod.rs"]
mod common;

use std::cell::RefCell;
use std::fmt::Write as _;
use std::rc::Rc;

use card_sim::sim::{SimCard, SimulatedCard};
use common::Psd;
use openpsd_core::client::{psd_apdu, purse_apdu};
use openpsd_core::platform::SeededPlatform;
use openpsd_core::psd::device::Personalization;
use openpsd_core::store::MemStore;
use openpsd_demo::web::{self, WebOptions};
use openpsd_protocol::{
    AuditBody, Baseline, CombinationRecord, Deposit, HoldRequest, InspectionRequest,
    MeterRegistration, NewAccount, Outcome, ReceiptRequest, RefillRequest, Resolve, Settle,
    SignedCombination,
};
use serde::Serialize;
use serde_json::{json, Value};

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/http.txt");

/// Calls services and writes down what went over the wire.
struct Recorder {
    /// With the operator's certificate (device registration, deposits, the ledger).
    operator: reqwest::Client,
    /// With the meter's certificate (what only the meter may call at the KMS and the RC).
    as_meter: reqwest::Client,
    /// With no certificate: a customer at the meter, with their bearer token once logged in.
    customer: reqwest::Client,
    bearer: Option<String>,
    /// The room's session cookie, once it set one.
    cookie: Option<String>,
    transcript: String,
    /// Random values learnt on the way (the room's license number) and their stand-ins,
    /// replaced in everything recorded after they were learnt.
    learnt: Vec<(String, String)>,
    /// Where the last call's lines start in `transcript`.
    last: usize,
}

impl Recorder {
    async fn call(
        &mut self,
        service: &str,
        base: &str,
        method: &str,
        path: &str,
        body: Option<String>,
    ) -> (u16, Value) {
        let url = format!("{base}{path}");
        // Each route as the identity allowed to call it (`docs/security.md`).
        let http = match service {
            "kms" if path.starts_with("/v1/devices") => &self.operator,
            "rc" if path.contains("/deposits") || path == "/v1/ledger" => &self.operator,
            "meter" if path.starts_with("/v1/devices") || path.starts_with("/v1/alarms") => {
                &self.operator
            }
            "kms" | "rc" => &self.as_meter,
            _ => &self.customer,
        };
        let req = match method {
            "GET" => http.get(&url),
            _ => http.post(&url),
        };
        let req = match (&self.bearer, service) {
            (Some(t), "meter") => req.bearer_auth(t),
            _ => req,
        };
        let req = match (&self.cookie, service) {
            (Some(c), "room" | "web") => req.header("cookie", c),
            _ => req,
        };
        let req = match &body {
            Some(b) => req
                .header("content-type", "application/json")
                .body(b.clone()),
            None => req,
        };
        let resp = req.send().await.expect("the service answers");
        let status = resp.status().as_u16();
        if let Some(c) = resp.headers().get("set-cookie") {
            let c = c.to_str().expect("cookie").to_owned();
            self.cookie = c.split(';').next().map(str::to_owned);
        }
        let text = resp.text().await.expect("a body");
        let value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let mut lines = format!("{service} {method} {path}\n");
        if let Some(b) = &body {
            let _ = writeln!(lines, "> {b}");
        }
        let _ = writeln!(lines, "< {status} {text}");
        for (value, stand_in) in &self.learnt {
            lines = lines.replace(value.as_str(), stand_in);
        }
        self.last = self.transcript.len();
        self.transcript.push_str(&lines);
        (status, value)
    }

    async fn post<B: Serialize>(
        &mut self,
        service: &str,
        base: &str,
        path: &str,
        body: &B,
    ) -> (u16, Value) {
        let body = serde_json::to_string(body).expect("serializable");
        self.call(service, base, "POST", path, Some(body)).await
    }

    async fn get(&mut self, service: &str, base: &str, path: &str) -> (u16, Value) {
        self.call(service, base, "GET", path, None).await
    }
}

/// Masks what changes from run to run: runs of 16+ hex digits, key IDs (8 hex, derived
/// from a fresh key) and `YYYY-MM-DD` dates.
fn mask(text: &str) -> String {
    const KEY_ID: &str = "\"key_id\":\"";
    let mut text = mask_runs(text);
    let mut from = 0;
    while let Some(at) = text[from..].find(KEY_ID) {
        let start = from + at + KEY_ID.len();
        let end = start + text[start..].find('"').unwrap_or(0);
        text.replace_range(start..end, &format!("<hex:{}>", end - start));
        from = start;
    }
    text
}

fn mask_runs(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let word = |c: u8| c.is_ascii_alphanumeric();
    while i < b.len() {
        let starts_word = i == 0 || !word(b[i - 1]);
        if starts_word {
            let mut j = i;
            while j < b.len() && b[j].is_ascii_hexdigit() {
                j += 1;
            }
            if j - i >= 16 && (j == b.len() || !word(b[j])) {
                let _ = write!(out, "<hex:{}>", j - i);
                i = j;
                continue;
            }
            let date = b.len() >= i + 10
                && b[i..i + 10].iter().enumerate().all(|(k, c)| match k {
                    4 | 7 => *c == b'-',
                    _ => c.is_ascii_digit(),
                })
                && (i + 10 == b.len() || !word(b[i + 10]));
            if date {
                out.push_str("<date>");
                i += 10;
                continue;
            }
        }
        // Copy one whole character (the text is UTF-8).
        let ch = text[i..].chars().next().unwrap_or('?');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

fn s(v: &Value) -> String {
    v.as_str().expect("a string field").to_owned()
}

#[test]
fn masking_keeps_words_and_masks_hex_and_dates() {
    assert_eq!(
        mask(
            r#"{"a":"0123456789abcdef0123","b":"2026-11-29","c":"deadbeef","d":"x0123456789abcdef0","key_id":"00aa11bb"}"#
        ),
        r#"{"a":"<hex:20>","b":"<date>","c":"deadbeef","d":"x0123456789abcdef0","key_id":"<hex:8>"}"#
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn http_json_is_byte_for_byte_the_golden_transcript() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = openpsd_backoffice::spawn_all(&dir.path().join("bo"))
        .await
        .expect("services start");
    let (meter, kms, rc) = (
        h.meter.url.clone(),
        h.kms.url.clone(),
        h.recharge.url.clone(),
    );
    let client = |role| {
        reqwest::Client::builder()
            .use_preconfigured_tls(
                openpsd_service_kit::tls::client_config(&h.pki, role).expect("TLS"),
            )
            .build()
            .expect("client")
    };
    use openpsd_service_kit::tls::Role;
    let mut r = Recorder {
        operator: client(Some(Role::Operator)),
        as_meter: client(Some(Role::Meter)),
        customer: client(None),
        bearer: None,
        cookie: None,
        transcript: String::new(),
        learnt: Vec::new(),
        last: 0,
    };
    let mut psd = Psd::new(1, 0, &h.kms_public_key);
    let dev = psd.device_id();

    // ---------------------------------------------------------------- KMS
    r.get("kms", &kms, "/health").await;
    r.call("kms", &kms, "GET", "/v1/nothing", None).await;
    r.call("kms", &kms, "POST", "/v1/devices", Some("{}".into()))
        .await;
    r.post("kms", &kms, "/v1/devices", &psd.secrets).await;
    r.post("kms", &kms, "/v1/devices", &psd.secrets).await;
    r.get("kms", &kms, &format!("/v1/devices/{dev}")).await;
    r.get("kms", &kms, "/v1/devices/0000000000000099").await;
    r.get("kms", &kms, "/v1/public-key").await;
    // A registration that still carries K1 (the retired suite): refused, nothing stored.
    let mut with_k1 = serde_json::to_value(&psd.secrets).expect("json");
    with_k1["k1"] = serde_json::json!("00".repeat(16));
    with_k1["device_id"] = serde_json::json!("0000000000000098");
    r.post("kms", &kms, "/v1/devices", &with_k1).await;
    r.post(
        "kms",
        &kms,
        "/v1/devices/0000000000000099/revoke",
        &serde_json::json!({"reason": "lost"}),
    )
    .await;
    r.post(
        "kms",
        &kms,
        &format!("/v1/devices/{dev}/revoke"),
        &serde_json::json!({"reason": ""}),
    )
    .await;

    // --------------------------------------------------- recharging center
    r.get("rc", &rc, "/health").await;
    r.call("rc", &rc, "GET", "/v1/nothing", None).await;
    r.post(
        "rc",
        &rc,
        "/v1/accounts",
        &NewAccount {
            account_id: "acme".into(),
        },
    )
    .await;
    let deposit = Deposit {
        amount: 10_000,
        reference: "acme-1".into(),
    };
    r.post("rc", &rc, "/v1/accounts/acme/deposits", &deposit)
        .await;
    r.post("rc", &rc, "/v1/accounts/acme/deposits", &deposit)
        .await;
    r.post(
        "rc",
        &rc,
        "/v1/accounts/acme/deposits",
        &Deposit {
            amount: 0,
            reference: "acme-0".into(),
        },
    )
    .await;
    r.get("rc", &rc, "/v1/accounts/acme").await;
    r.get("rc", &rc, "/v1/accounts/nobody").await;

    // --------------------------------------------------------------- meter
    r.get("meter", &meter, "/health").await;
    r.call("meter", &meter, "GET", "/v1/nothing", None).await;
    r.call("meter", &meter, "GET", "/v1/me", None).await;
    let creds = openpsd_protocol::Credentials {
        username: "acme".into(),
        password: "acme password 1234".into(),
    };
    let (_, c) = r.post("meter", &meter, "/v1/customers", &creds).await;
    let account = c["account_id"].as_str().expect("account").to_owned();
    r.learnt.push((account.clone(), "<account>".into()));
    r.post("meter", &meter, "/v1/customers", &creds).await;
    r.post(
        "meter",
        &meter,
        "/v1/sessions",
        &openpsd_protocol::Credentials {
            username: "acme".into(),
            password: "wrong password".into(),
        },
    )
    .await;
    let (_, session) = r.post("meter", &meter, "/v1/sessions", &creds).await;
    let expires = session["expires_at"].to_string();
    r.learnt.push((expires.clone(), "<expires>".into()));
    let last = r.last;
    r.transcript = format!(
        "{}{}",
        &r.transcript[..last],
        r.transcript[last..].replace(&expires, "<expires>")
    );
    r.bearer = Some(session["token"].as_str().expect("token").to_owned());
    r.get("meter", &meter, "/v1/me").await;
    r.post(
        "rc",
        &rc,
        &format!("/v1/accounts/{account}/deposits"),
        &Deposit {
            amount: 10_000,
            reference: "acme-customer-1".into(),
        },
    )
    .await;
    // The operator registers the device: owner and baselines.
    let registration = MeterRegistration {
        device_id: dev.clone(),
        account_id: account.clone(),
        baselines: vec![],
    };
    r.post("meter", &meter, "/v1/devices", &registration).await;
    r.post("meter", &meter, "/v1/devices", &registration).await;
    r.post(
        "meter",
        &meter,
        "/v1/devices",
        &MeterRegistration {
            baselines: vec![
                Baseline {
                    control_sum: 500,
                    refills: 1,
                },
                Baseline {
                    control_sum: 0,
                    refills: 0,
                },
            ],
            ..registration.clone()
        },
    )
    .await;
    r.post(
        "meter",
        &meter,
        "/v1/devices",
        &MeterRegistration {
            device_id: "0000000000000099".into(),
            ..registration.clone()
        },
    )
    .await;
    r.get("meter", &meter, &format!("/v1/devices/{dev}")).await;
    r.get("meter", &meter, "/v1/devices/0000000000000099").await;
    let request = |txn: &str, amount: u64| RefillRequest {
        client_txn_id: txn.into(),
        device_id: dev.clone(),
        set: 0,
        account_id: Some(account.clone()),
        amount,
    };
    // Another account than the owner's: as for an unknown device.
    r.post(
        "meter",
        &meter,
        "/v1/refills",
        &RefillRequest {
            account_id: Some("mallory".into()),
            ..request("t0", 100)
        },
    )
    .await;
    r.post("meter", &meter, "/v1/refills", &request("t0", 0))
        .await;
    r.post(
        "meter",
        &meter,
        "/v1/refills",
        &RefillRequest {
            device_id: "0000000000000099".into(),
            ..request("t0", 100)
        },
    )
    .await;
    let (_, v) = r
        .post("meter", &meter, "/v1/refills", &request("t1", 2_500))
        .await;
    r.post("meter", &meter, "/v1/refills", &request("t1", 2_500))
        .await;
    r.post("meter", &meter, "/v1/refills", &request("t9", 100))
        .await;
    r.get("meter", &meter, "/v1/refills/t1").await;
    r.get("meter", &meter, "/v1/refills/nothing").await;
    r.post(
        "meter",
        &meter,
        "/v1/refills/t1/confirm",
        &AuditBody { audit: "00".into() },
    )
    .await;
    let audit = psd.audit(0, &s(&v["nonce"]));
    let (_, v) = r
        .post(
            "meter",
            &meter,
            "/v1/refills/t1/audit",
            &AuditBody {
                audit: audit.clone(),
            },
        )
        .await;
    psd.refill(0, &s(&v["refill_message"]))
        .expect("REFILL accepted");
    psd.receipt(&s(&v["receipt"])).expect("RECEIPT accepted");
    let confirm = psd.audit(0, &s(&v["confirm_nonce"]));
    r.post(
        "meter",
        &meter,
        "/v1/refills/t1/confirm",
        &AuditBody { audit: confirm },
    )
    .await;
    r.get("meter", &meter, "/v1/refills/t1").await;
    // More than the deposit: the RC refuses, the refill ends `refused` with its error.
    let (_, v) = r
        .post("meter", &meter, "/v1/refills", &request("t2", 100_000))
        .await;
    let audit = psd.audit(0, &s(&v["nonce"]));
    r.post(
        "meter",
        &meter,
        "/v1/refills/t2/audit",
        &AuditBody { audit },
    )
    .await;
    r.get("meter", &meter, "/v1/refills/t2").await;
    // An inspection.
    let (_, i) = r
        .post(
            "meter",
            &meter,
            "/v1/inspections",
            &InspectionRequest {
                device_id: dev.clone(),
                set: 0,
            },
        )
        .await;
    let id = s(&i["inspection_id"]);
    r.get("meter", &meter, &format!("/v1/inspections/{id}"))
        .await;
    let audit = psd.audit(0, &s(&i["nonce"]));
    r.post(
        "meter",
        &meter,
        &format!("/v1/inspections/{id}/audit"),
        &AuditBody {
            audit: audit.clone(),
        },
    )
    .await;
    r.get("meter", &meter, &format!("/v1/inspections/{id}"))
        .await;
    r.get("meter", &meter, "/v1/inspections/nothing").await;
    // Cancel before the message left: released at once.
    r.post("meter", &meter, "/v1/refills", &request("t3", 300))
        .await;
    r.post("meter", &meter, "/v1/refills/t3/cancel", &json!({}))
        .await;
    // Cancel after it left: a void with the same precondition, applied, confirmed.
    let (_, v4) = r
        .post("meter", &meter, "/v1/refills", &request("t4", 400))
        .await;
    let a4 = psd.audit(0, &s(&v4["nonce"]));
    r.post(
        "meter",
        &meter,
        "/v1/refills/t4/audit",
        &AuditBody { audit: a4 },
    )
    .await;
    let (_, c4) = r
        .post("meter", &meter, "/v1/refills/t4/cancel", &json!({}))
        .await;
    r.post("meter", &meter, "/v1/refills/t4/cancel", &json!({}))
        .await;
    psd.refill(0, &s(&c4["void_message"]))
        .expect("void accepted");
    let confirm4 = psd.audit(0, &s(&c4["confirm_nonce"]));
    r.post(
        "meter",
        &meter,
        "/v1/refills/t4/confirm",
        &AuditBody { audit: confirm4 },
    )
    .await;
    r.post("meter", &meter, "/v1/refills/t1/cancel", &json!({}))
        .await;
    r.post("meter", &meter, "/v1/refills/nothing/cancel", &json!({}))
        .await;
    // Alarms: none raised; nothing to resolve.
    r.get("meter", &meter, "/v1/alarms").await;
    r.post(
        "meter",
        &meter,
        &format!("/v1/devices/{dev}/resolve"),
        &Resolve {
            note: "nothing wrong".into(),
            accept_audit: false,
        },
    )
    .await;

    // ------------------------- the KMS and the RC as the meter calls them
    let (_, verified) = r
        .post(
            "kms",
            &kms,
            "/v1/audits/verify",
            &AuditBody {
                audit: audit.clone(),
            },
        )
        .await;
    r.post(
        "kms",
        &kms,
        "/v1/audits/verify",
        &AuditBody {
            audit: "0011".into(),
        },
    )
    .await;
    r.post(
        "kms",
        &kms,
        "/v1/receipts",
        &ReceiptRequest {
            audit: audit.clone(),
            accepted_on: "2026-11-29".into(),
        },
    )
    .await;
    let hold = HoldRequest {
        request_id: "golden-hold".into(),
        account_id: "acme".into(),
        device_id: dev.clone(),
        license: 4711,
        amount: 100,
        control_sum: verified["control_sum"].as_u64().expect("control sum"),
        refills: u32::try_from(verified["refills"].as_u64().expect("refills")).expect("u32"),
    };
    let (_, signed) = r.post("rc", &rc, "/v1/combinations", &hold).await;
    r.post(
        "rc",
        &rc,
        "/v1/combinations",
        &HoldRequest {
            request_id: "golden-hold-2".into(),
            amount: 1_000_000,
            ..hold.clone()
        },
    )
    .await;
    let signed: SignedCombination = serde_json::from_value(signed).expect("signed combination");
    let cid = signed.combination.combination_id.clone();
    let (_, record) = r.get("rc", &rc, &format!("/v1/combinations/{cid}")).await;
    let _: CombinationRecord = serde_json::from_value(record).expect("combination record");
    r.get("rc", &rc, "/v1/combinations/0000000000000000").await;
    r.post("kms", &kms, "/v1/refill-messages", &signed).await;
    // Its void (the meter asks for one when the owner cancels an issued refill), sealed.
    let (_, void) = r
        .post(
            "rc",
            &rc,
            &format!("/v1/combinations/{cid}/void"),
            &json!({}),
        )
        .await;
    r.post(
        "rc",
        &rc,
        "/v1/combinations/0000000000000000/void",
        &json!({}),
    )
    .await;
    let void: SignedCombination = serde_json::from_value(void).expect("signed void");
    r.post("kms", &kms, "/v1/refill-messages", &void).await;
    r.get("rc", &rc, &format!("/v1/combinations/{cid}")).await;
    let mut forged = signed.clone();
    forged.combination.amount += 1;
    r.post("kms", &kms, "/v1/refill-messages", &forged).await;
    r.post(
        "rc",
        &rc,
        &format!("/v1/combinations/{cid}/settle"),
        &Settle {
            outcome: Outcome::Released,
        },
    )
    .await;
    r.post(
        "rc",
        &rc,
        &format!("/v1/combinations/{cid}/settle"),
        &Settle {
            outcome: Outcome::Applied,
        },
    )
    .await;
    r.get("rc", &rc, "/v1/ledger").await;

    // ------------------------------------------------------ the demo room
    room(&mut r, dir.path(), &h).await;

    h.stop().await;
    check(&r.transcript);
}

type Sim = SimCard<MemStore, SeededPlatform>;

/// The demo room's routes (`backoffice demo --web`) and the meter API passed through it.
async fn room(r: &mut Recorder, dir: &std::path::Path, h: &openpsd_backoffice::Handles) {
    let root = dir.join("web-demo");
    let pkg = dir.join("pkg");
    std::fs::create_dir_all(&root).expect("dir");
    std::fs::create_dir_all(&pkg).expect("dir");
    std::fs::write(root.join("index.html"), "<!doctype html><title>t</title>").expect("page");
    let w = web::start(
        &WebOptions {
            listen: "127.0.0.1:0".into(),
            root,
            pkg,
            post: None,
            datacenter: None,
        },
        h,
    )
    .await
    .expect("web listener");
    let base = w.url.clone();
    r.get("room", &base, "/pkg/nothing.js").await;
    r.post(
        "room",
        &base,
        "/demo/v1/devices",
        &json!({"origin": "not a code!"}),
    )
    .await;
    let (_, pers) = r
        .post(
            "room",
            &base,
            "/demo/v1/devices",
            &json!({"origin": "80331"}),
        )
        .await;
    // The room picks the license at random: pinned as a number, masked as a value.
    let license = pers["license"].as_u64().expect("a license number");
    r.learnt
        .push((format!(":{license},"), ":<license>,".into()));
    r.learnt
        .push((format!("[{license},"), "[<license>,".into()));
    let mut lines = r.transcript.split_off(r.last);
    for (value, stand_in) in &r.learnt {
        lines = lines.replace(value.as_str(), stand_in);
    }
    r.transcript.push_str(&lines);
    let device_id = s(&pers["device_id"]);
    let account = s(&pers["account_id"]);
    // The PSD the page would make from it.
    let data = hex::decode(s(&pers["personalize"])).expect("hex");
    let p = Personalization::decode(&data).expect("PERSONALIZE data");
    let mut platform = SeededPlatform::new(1);
    platform.today = Some(openpsd_service_kit::codec::today_utc());
    let mut sim = Sim::new(MemStore::new(), platform).expect("card");
    let mut reply = Vec::new();
    sim.handle(&psd_apdu::select(), &mut reply);
    reply.clear();
    sim.handle(&psd_apdu::personalize(&p), &mut reply);
    let out = psd_apdu::data(&reply).expect("PERSONALIZE accepted");
    let (key_id, public_key) = (hex::encode(&out[..4]), hex::encode(&out[4..]));
    let sim = Rc::new(RefCell::new(sim));

    r.post(
        "room",
        &base,
        "/v1/refills",
        &json!({"client_txn_id": "early", "device_id": device_id, "set": 0,
                "account_id": account, "amount": 100}),
    )
    .await;
    let register = format!("/demo/v1/devices/{device_id}/register");
    r.post(
        "room",
        &base,
        &register,
        &json!({"key_id": "00000000", "public_key": public_key}),
    )
    .await;
    r.post(
        "room",
        &base,
        &register,
        &json!({"key_id": key_id, "public_key": public_key}),
    )
    .await;
    r.post(
        "room",
        &base,
        "/demo/v1/devices/5053440000000000/register",
        &json!({"key_id": key_id, "public_key": public_key}),
    )
    .await;
    r.get("room", &base, &format!("/demo/v1/accounts/{account}"))
        .await;
    r.get("room", &base, "/demo/v1/accounts/demo").await;
    r.get("room", &base, "/v1/refills/nothing").await;
    // The meter's operator routes are not the page's.
    r.get("room", &base, "/v1/alarms").await;
    r.post(
        "room",
        &base,
        "/v1/devices",
        &json!({"device_id": device_id, "account_id": "mallory"}),
    )
    .await;

    // Purses.
    r.post("room", &base, "/demo/v1/purses", &json!({"pin": "12ab"}))
        .await;
    let (_, made) = r
        .post("room", &base, "/demo/v1/purses", &json!({"pin": "2468"}))
        .await;
    let card_id = s(&made["card_id"]);
    let data = hex::decode(s(&made["personalize"])).expect("hex");
    let pp = openpsd_core::purse::personal::PursePersonalization::decode(&data)
        .expect("purse PERSONALIZE data");
    let mut platform = SeededPlatform::new(7);
    platform.today = Some(openpsd_service_kit::codec::today_utc());
    let mut purse = openpsd_core::purse::purse_card(MemStore::new(), platform).expect("purse");
    purse.transmit(&purse_apdu::select());
    let reply = purse.transmit(&purse_apdu::personalize(&pp));
    let purse_key = hex::encode(psd_apdu::data(&reply).expect("purse PERSONALIZE accepted"));
    r.post(
        "room",
        &base,
        "/demo/v1/purses/5052530000000000/certify",
        &json!({"public_key": purse_key}),
    )
    .await;
    r.post(
        "room",
        &base,
        &format!("/demo/v1/purses/{card_id}/certify"),
        &json!({"public_key": purse_key}),
    )
    .await;
    drop(sim);
    w.stop().await;
}

fn check(transcript: &str) {
    let got = mask(transcript);
    if std::env::var_os("GOLDEN_UPDATE").is_some() {
        std::fs::write(GOLDEN, &got).expect("writing the golden file");
        return;
    }
    let want = std::fs::read_to_string(GOLDEN)
        .expect("tests/golden/http.txt (make it with GOLDEN_UPDATE=1 and review it)");
    for (n, (g, w)) in got.lines().zip(want.lines()).enumerate() {
        assert_eq!(g, w, "line {} of tests/golden/http.txt differs", n + 1);
    }
    assert_eq!(
        got.lines().count(),
        want.lines().count(),
        "transcript length differs from tests/golden/http.txt"
    );
}
