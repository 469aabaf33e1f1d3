//! The JS API itself (the wasm-bindgen glue of `js.rs`), compiled to wasm32 and run by
//! wasm-bindgen-test under Node and under headless Chromium (`scripts/wasm-test.sh`):
//! objects in and out are real JS values, errors real JS `Error`s.
#![cfg(target_arch = "wasm32")]
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use js_sys::{Function, Reflect, Uint8Array, JSON};
use openpsd_core::crypto::IndiciumKey;
use openpsd_core::Status;
use openpsd_wasm::js::{
    build_personalization, data_matrix_modules, data_matrix_svg, demo_kms_receipt, demo_kms_refill,
    verify_indicium, Psd,
};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_test::wasm_bindgen_test;

const TODAY: &str = "2026-11-21";
/// The test KMS's signing key (the scalar 0x11…11), as `demoKmsRefill` takes it.
const KMS_KEY_HEX: &str = "1111111111111111111111111111111111111111111111111111111111111111";

/// The test KMS's public key, as `buildPersonalization` takes it.
fn kms_public_hex() -> String {
    hex::encode(IndiciumKey::from_bytes(&[0x11; 32]).unwrap().public_key())
}

fn json(text: &str) -> JsValue {
    JSON::parse(text).unwrap()
}

fn get(v: &JsValue, key: &str) -> JsValue {
    Reflect::get(v, &key.into()).unwrap()
}

fn text(v: &JsValue, key: &str) -> String {
    get(v, key)
        .as_string()
        .unwrap_or_else(|| panic!("{key} is not a string"))
}

fn bytes(v: &JsValue) -> Vec<u8> {
    v.dyn_ref::<Uint8Array>().expect("a Uint8Array").to_vec()
}

/// A personalized device (its KMS: the test KMS).
fn device(entropy: u8) -> Psd {
    let built = build_personalization(
        json(&format!(
            r#"{{"licenses":[{{"license":4711,"origin":"10115"}},{{"license":4712,"origin":"80331"}}],
                "maxPostage":"100.00","maxDr":"10000.00","deviceId":"5053443030303031",
                "kmsPublicKey":"{}"}}"#,
            kms_public_hex()
        )),
        &[9; 32],
    )
    .unwrap();
    assert!(
        get(&built, "k1").is_undefined(),
        "nothing secret comes back"
    );
    Psd::create(
        &bytes(&get(&built, "personalization")),
        &[entropy; 32],
        Some(TODAY.into()),
    )
    .ok()
    .unwrap()
}

/// The device's public key, hex (what the KMS checks its audits with).
fn device_key(psd: &mut Psd) -> String {
    text(&psd.info().ok().unwrap(), "publicKey")
}

fn funded(amount: &str) -> Psd {
    let mut psd = device(1);
    let audit = psd.audit(&[7; 16], None).ok().unwrap();
    let key = device_key(&mut psd);
    let msg = demo_kms_refill(KMS_KEY_HEX, &key, &audit, amount, None)
        .ok()
        .unwrap();
    let regs = psd.apply_refill(&msg, None).ok().unwrap();
    assert_eq!(text(&regs, "dr"), amount);
    psd
}

fn piece(postage: &str) -> JsValue {
    json(&format!(
        r#"{{"postage":"{postage}","date":"{TODAY}","rate":1,"origin":"10115","destination":"20095"}}"#
    ))
}

/// The JS error's name, sw and message.
fn error(e: JsValue) -> (String, Option<u16>, String) {
    let err = e.dyn_into::<js_sys::Error>().expect("a JS Error");
    let sw = get(&err, "sw").as_f64().map(|f| f as u16);
    if let Some(sw) = sw {
        assert_eq!(text(&err, "swHex"), format!("{sw:04X}"));
    }
    (err.name().into(), sw, err.message().into())
}

#[wasm_bindgen_test]
fn issue_an_indicium_and_verify_it() {
    let mut psd = funded("25.00");
    let info = psd.info().ok().unwrap();
    assert_eq!(text(&info, "deviceId"), "5053443030303031");
    assert!(get(&info, "lastDate").is_null());
    let issued = psd.issue_indicium(piece("0.85")).ok().unwrap();
    let barcode = bytes(&get(&issued, "barcode"));
    assert_eq!(barcode.len(), 128);
    let fields = get(&issued, "fields");
    assert_eq!(text(&fields, "postage"), "0.85");
    assert_eq!(text(&fields, "dr"), "24.15");
    assert_eq!(get(&fields, "pieces").as_f64(), Some(1.0));
    assert_eq!(text(&get(&issued, "registers"), "ar"), "0.85");
    assert_eq!(
        barcode,
        [
            bytes(&get(&issued, "payload")),
            bytes(&get(&issued, "signature"))
        ]
        .concat()
    );

    let v = verify_indicium(&barcode, Some(text(&info, "publicKey")))
        .ok()
        .unwrap();
    assert_eq!(get(&v, "valid").as_bool(), Some(true));
    assert!(get(&v, "error").is_null());
    assert_eq!(text(&get(&v, "fields"), "destination"), "20095");
    let mut tampered = barcode.clone();
    tampered[40] ^= 1;
    let v = verify_indicium(&tampered, Some(text(&info, "publicKey")))
        .ok()
        .unwrap();
    assert_eq!(get(&v, "valid").as_bool(), Some(false));
    assert_eq!(text(&v, "error"), "indicium signature invalid");

    // A retry with the same transaction ID: the same indicium, no second debit.
    let retry = piece("0.85");
    Reflect::set(
        &retry,
        &"transactionId".into(),
        &get(&issued, "transactionId"),
    )
    .unwrap();
    let again = psd.issue_indicium(retry).ok().unwrap();
    assert_eq!(bytes(&get(&again, "barcode")), barcode);
    assert_eq!(text(&psd.registers(Some(0.0)).ok().unwrap(), "dr"), "24.15");
}

#[wasm_bindgen_test]
fn refusals_are_errors_with_the_status_word() {
    let mut psd = device(1);
    let (name, sw, message) = error(psd.issue_indicium(piece("0.85")).err().unwrap());
    assert_eq!((name.as_str(), sw), ("CardError", Some(0x9A01)));
    assert_eq!(message, Status::InsufficientFunds.describe());
    let (name, sw, _) = error(psd.registers(Some(3.0)).err().unwrap());
    assert_eq!((name.as_str(), sw), ("CardError", Some(0x6A88)));
    let (_, sw, _) = error(psd.audit(&[0; 15], None).err().unwrap());
    assert_eq!(sw, Some(0x6700));

    for (what, e) in [
        ("set", psd.registers(Some(300.0)).err().unwrap()),
        ("set", psd.registers(Some(0.5)).err().unwrap()),
        ("unknown field", psd.issue_indicium(json(r#"{"postage":"1"}"#)).err().unwrap()),
        (
            "typo",
            psd.issue_indicium(json(
                r#"{"postage":"1","date":"2026-11-21","rate":1,"origin":"10115","destination":"20095","transactionID":"00"}"#,
            ))
            .err()
            .unwrap(),
        ),
        ("postage", psd.issue_indicium(piece("1,00")).err().unwrap()),
        ("not an object", psd.issue_indicium(JsValue::from(5)).err().unwrap()),
        ("entropy", Psd::create(&[], &[0; 31], None).err().unwrap()),
        ("today", psd.set_today(Some("tomorrow".into())).err().unwrap()),
    ] {
        let (name, sw, _) = error(e);
        assert_eq!((name.as_str(), sw), ("InputError", None), "{what}");
    }
    // transmit never throws.
    assert_eq!(psd.transmit(&[0x80]), vec![0x67, 0x00]);

    // PERSONALIZE data needs the KMS's public key: missing or not a point, an InputError.
    for (what, request) in [
        (
            "missing",
            r#"{"licenses":[{"license":1,"origin":"10115"}],"maxPostage":"1","maxDr":"2"}"#
                .to_string(),
        ),
        (
            "not a point",
            format!(
                r#"{{"licenses":[{{"license":1,"origin":"10115"}}],"maxPostage":"1","maxDr":"2",
                    "kmsPublicKey":"04{}"}}"#,
                "00".repeat(64)
            ),
        ),
        (
            "k1 is gone",
            format!(
                r#"{{"licenses":[{{"license":1,"origin":"10115"}}],"maxPostage":"1","maxDr":"2",
                    "kmsPublicKey":"{}","k1":"{}"}}"#,
                kms_public_hex(),
                "00".repeat(16)
            ),
        ),
    ] {
        let (name, sw, message) =
            error(build_personalization(json(&request), &[9; 32]).unwrap_err());
        assert_eq!((name.as_str(), sw), ("InputError", None), "{what}");
        let field = if what == "k1 is gone" {
            "k1"
        } else {
            "kmsPublicKey"
        };
        assert!(message.contains(field), "{what}: {message}");
    }
}

/// Request objects are read by hand in `js.rs` with the rules and messages of
/// serde-wasm-bindgen, which read them before (these texts are what it said).
#[wasm_bindgen_test]
fn request_fields_are_refused_as_before() {
    let mut psd = device(1);
    let fields = r#""date":"2026-11-21","origin":"10115","destination":"20095""#;
    for (request, expected) in [
        (
            format!(r#"{{"rate":1,{fields}}}"#),
            "missing field `postage`",
        ),
        (
            format!(r#"{{"postage":1,"rate":1,{fields}}}"#),
            "invalid type: floating point `1.0`, expected a string",
        ),
        (
            format!(r#"{{"postage":"1","rate":1.5,{fields}}}"#),
            "invalid type: floating point `1.5`, expected u16",
        ),
        (
            format!(r#"{{"postage":"1","rate":1e21,{fields}}}"#),
            "invalid type: floating point `1000000000000000000000.0`, expected u16",
        ),
        (
            format!(r#"{{"postage":"1","rate":65536,{fields}}}"#),
            "invalid value: integer `65536`, expected u16",
        ),
        (
            format!(r#"{{"postage":"1","rate":null,{fields}}}"#),
            "invalid type: unit value, expected u16",
        ),
        (
            format!(r#"{{"postage":"1","rate":1,"set":-1,{fields}}}"#),
            "invalid type: floating point `-1.0`, expected u8",
        ),
        (
            format!(r#"{{"postage":"1","rate":1,"transactionId":true,{fields}}}"#),
            "invalid type: boolean `true`, expected a string",
        ),
        // Type errors first, then the missing fields.
        (
            r#"{"date":5}"#.to_string(),
            "invalid type: floating point `5.0`, expected a string",
        ),
    ] {
        let (name, _, message) = error(psd.issue_indicium(json(&request)).err().unwrap());
        assert_eq!(name, "InputError");
        assert_eq!(message, format!("request: Error: {expected}"), "{request}");
    }
    // An explicit null is an omitted optional field.
    let mut psd = funded("25.00");
    let request = format!(r#"{{"postage":"1","rate":1,"transactionId":null,"set":null,{fields}}}"#);
    assert!(psd.issue_indicium(json(&request)).is_ok());

    let kms = kms_public_hex();
    for (request, expected) in [
        (
            format!(r#"{{"maxPostage":"1","maxDr":"2","kmsPublicKey":"{kms}"}}"#),
            "Error: missing field `licenses`",
        ),
        (
            format!(
                r#"{{"licenses":[{{"license":-2,"origin":"1"}}],"maxPostage":"1","maxDr":"2",
                    "kmsPublicKey":"{kms}"}}"#
            ),
            "Error: invalid type: floating point `-2.0`, expected u32",
        ),
        (
            format!(
                r#"{{"licenses":[{{"license":1}}],"maxPostage":"1","maxDr":"2","kmsPublicKey":"{kms}"}}"#
            ),
            "Error: missing field `origin`",
        ),
        (
            format!(
                r#"{{"licenses":[],"maxPostage":"1","maxDr":"2","kmsPublicKey":"{kms}",
                    "inspectionDays":"7"}}"#
            ),
            r#"Error: invalid type: string "7", expected u16"#,
        ),
    ] {
        let (name, _, message) =
            error(build_personalization(json(&request), &[9; 32]).unwrap_err());
        assert_eq!(name, "InputError");
        assert_eq!(message, format!("request: {expected}"), "{request}");
    }
}

#[wasm_bindgen_test]
fn the_demo_kms_checks_the_audit_under_the_device_key() {
    let mut psd = device(1);
    let key = device_key(&mut psd);
    let audit = psd.audit(&[8; 16], None).ok().unwrap();
    assert_eq!(audit.len(), 151);
    // Another device's key, or an altered audit: the demo KMS says so.
    let other = device_key(&mut device(2));
    let mut altered = audit.clone();
    altered[30] ^= 1;
    for (k, a) in [(&other, &audit), (&key, &altered)] {
        let (name, _, message) =
            error(demo_kms_refill(KMS_KEY_HEX, k, a, "1.00", None).unwrap_err());
        assert_eq!(name, "InputError");
        assert!(message.contains("does not verify"), "{message}");
    }
    let (name, _, message) = error(demo_kms_refill("00", &key, &audit, "1.00", None).unwrap_err());
    assert_eq!(name, "InputError");
    assert!(message.starts_with("kmsSigningKey"), "{message}");
    // Signed by the test KMS: the PSD takes the message and the receipt.
    let msg = demo_kms_refill(KMS_KEY_HEX, &key, &audit, "1.00", None)
        .ok()
        .unwrap();
    assert_eq!(
        text(&psd.apply_refill(&msg, None).ok().unwrap(), "dr"),
        "1.00"
    );
    let audit = psd.audit(&[9; 16], None).ok().unwrap();
    let receipt = demo_kms_receipt(KMS_KEY_HEX, &key, &audit, TODAY)
        .ok()
        .unwrap();
    assert_eq!(psd.receipt(&receipt).ok().unwrap(), TODAY);
    // Signed by another KMS key than the personalized one: a forgery to the PSD (6982).
    let audit = psd.audit(&[10; 16], None).ok().unwrap();
    let msg = demo_kms_refill(&"22".repeat(32), &key, &audit, "1.00", None)
        .ok()
        .unwrap();
    let (name, sw, _) = error(psd.apply_refill(&msg, None).err().unwrap());
    assert_eq!((name.as_str(), sw), ("CardError", Some(0x6982)));
}

#[wasm_bindgen_test]
fn restore_keeps_the_registers_and_refuses_a_tampered_state() {
    let mut psd = funded("25.00");
    psd.issue_indicium(piece("1.20")).ok().unwrap();
    let state = psd.save_state().ok().unwrap();
    let mut back = Psd::restore(&state, &[3; 32], Some(TODAY.into()))
        .ok()
        .unwrap();
    let (a, b) = (
        JSON::stringify(&psd.registers(None).ok().unwrap()).unwrap(),
        JSON::stringify(&back.registers(None).ok().unwrap()).unwrap(),
    );
    assert_eq!(a, b);
    assert_eq!(
        text(&back.info().ok().unwrap(), "publicKey"),
        text(&psd.info().ok().unwrap(), "publicKey")
    );
    back.issue_indicium(piece("1.00")).ok().unwrap();
    assert_eq!(text(&back.registers(None).ok().unwrap(), "dr"), "22.80");

    for i in [0, state.len() / 2, state.len() - 1] {
        let mut bad = state.clone();
        bad[i] ^= 0x80;
        let (name, _, _) = error(Psd::restore(&bad, &[3; 32], None).err().unwrap());
        assert_eq!(name, "StateError", "byte {i}");
    }
    let (name, _, _) = error(Psd::restore(&[], &[3; 32], None).err().unwrap());
    assert_eq!(name, "StateError");
}

#[wasm_bindgen_test]
fn the_data_matrix_svg_is_well_formed() {
    let mut psd = funded("25.00");
    let issued = psd.issue_indicium(piece("0.85")).ok().unwrap();
    let barcode = bytes(&get(&issued, "barcode"));
    let svg = data_matrix_svg(&barcode, Some(5)).ok().unwrap();
    assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    assert!(svg.ends_with("</svg>"));
    assert!(svg.contains("width=\"240\""), "(44 + 4) modules x 5 px");
    assert!(svg.matches("<path").count() == 1 && svg.len() > 1000);
    // In a browser, the XML parser must accept it as SVG (Node has no DOMParser).
    let parse = Function::new_with_args(
        "s",
        "if (typeof DOMParser === 'undefined') return null;
         const d = new DOMParser().parseFromString(s, 'image/svg+xml');
         return d.getElementsByTagName('parsererror').length === 0 &&
                d.documentElement.localName === 'svg';",
    );
    let ok = parse.call1(&JsValue::NULL, &svg.clone().into()).unwrap();
    assert!(
        ok.is_null() || ok.as_bool() == Some(true),
        "DOMParser refused the SVG"
    );

    let modules = data_matrix_modules(&barcode).ok().unwrap();
    assert_eq!(get(&modules, "size").as_f64(), Some(44.0));
    let bits: Vec<bool> = bytes(&get(&modules, "modules"))
        .iter()
        .map(|b| *b == 1)
        .collect();
    assert_eq!(datamatrix::DataMatrix::decode(&bits, 44).unwrap(), barcode);
    let (name, _, _) = error(data_matrix_svg(&barcode, Some(0)).err().unwrap());
    assert_eq!(name, "InputError");
}

#[wasm_bindgen_test]
fn a_transfer_to_a_purse_moves_value_in_wasm() {
    use openpsd_core::crypto::MacKey;
    use openpsd_core::psd::device::{Personalization, SchemeSlot};
    use openpsd_core::purse::personal::{certificate_body, PursePersonalization};
    use openpsd_core::transfer::card_admin_key;
    use openpsd_core::transfer::cert::{DeviceCertificate, DeviceKind};
    use openpsd_core::types::{Amount, CardId, Date, SchemeId};
    use openpsd_wasm::js::Purse;

    let (scheme, card) = (SchemeId(7), CardId(*b"PURSE001"));
    let issuer = IndiciumKey::from_bytes(&[9u8; 32]).unwrap();
    let certificate = |kind, id: [u8; 8], key: String| {
        DeviceCertificate::issue(
            &issuer,
            kind,
            scheme,
            id,
            1,
            Date::new(2026, 1, 1).unwrap(),
            Date::new(2036, 1, 1).unwrap(),
            hex::decode(key).unwrap().try_into().unwrap(),
        )
        .encode()
    };
    let built = build_personalization(
        json(&format!(
            r#"{{"licenses":[{{"license":4711,"origin":"10115"}}],"maxPostage":"100.00","maxDr":"10000.00",
                "kmsPublicKey":"{}"}}"#,
            kms_public_hex()
        )),
        &[9; 32],
    )
    .unwrap();
    let mut p = Personalization::decode(&bytes(&get(&built, "personalization"))).unwrap();
    p.scheme = Some(SchemeSlot {
        scheme,
        issuer_public_key: issuer.public_key(),
        max_failures: 5,
    });
    let mut psd = Psd::create(&p.encode(), &[1; 32], Some(TODAY.into()))
        .ok()
        .unwrap();
    let key = psd.recognition_key().ok().unwrap();
    psd.install_certificate(&certificate(DeviceKind::Psd, p.device.0, key))
        .ok()
        .unwrap();
    let audit = psd.audit(&[7; 16], None).ok().unwrap();
    let key = device_key(&mut psd);
    let msg = demo_kms_refill(KMS_KEY_HEX, &key, &audit, "50.00", None)
        .ok()
        .unwrap();
    psd.apply_refill(&msg, None).ok().unwrap();

    let pp = PursePersonalization {
        card,
        scheme,
        admin_key: *card_admin_key(&MacKey::new([3; 16]), card).expose(),
        issuer_public_key: issuer.public_key(),
        max_balance: Amount(50_000),
        max_transfer: Amount(20_000),
        pin_tries: 3,
        max_failures: 5,
        pin: b"2468".to_vec(),
    };
    let mut purse = Purse::create(&pp.encode(), &[2; 32], Some(TODAY.into()))
        .ok()
        .unwrap();
    let pk = hex::decode(text(&purse.info().unwrap(), "publicKey")).unwrap();
    let info = purse
        .certify(&issuer.sign(&certificate_body(card, scheme, &pk)))
        .unwrap();
    assert_eq!(get(&info, "certified"), JsValue::TRUE);
    let key = purse.recognition_key().ok().unwrap();
    purse
        .install_certificate(&certificate(DeviceKind::Purse, card.0, key))
        .ok()
        .unwrap();

    let out = psd
        .transfer_to_purse(&mut purse, "5", "2468", None)
        .unwrap();
    assert_eq!(text(&out, "amount"), "5.00");
    assert!(get(&out, "resolvedFirst").is_null());
    assert_eq!(text(&get(&out, "registers"), "dr"), "45.00");
    assert_eq!(text(&get(&out, "purse"), "balance"), "5.00");
    let (name, sw, _) = error(
        psd.transfer_to_purse(&mut purse, "5", "1111", None)
            .unwrap_err(),
    );
    assert_eq!((name.as_str(), sw), ("CardError", Some(0x63C2)));
    let saved = purse.save_state().unwrap();
    let mut back = Purse::restore(&saved, &[3; 32], None).ok().unwrap();
    assert_eq!(text(&back.info().unwrap(), "balance"), "5.00");
}

/// In wasm32 core signs with its own generator table (a 5-bit window, `comb.rs`) and
/// verifies with it and p256's constant-time multiplication: every signature must be p256's own,
/// byte for byte (RFC 6979 makes both deterministic), verify with p256's verifier and with
/// core's, and a signature or message changed by one bit must be refused by core's.
#[wasm_bindgen_test]
fn the_module_signs_like_p256_and_verifies_like_it() {
    use openpsd_core::crypto::{sha256, verify_signature, PreparedKey};
    use p256::ecdsa::signature::{Signer, Verifier};
    use p256::ecdsa::{Signature, SigningKey};

    for key_seed in 0u8..4 {
        let secret = sha256(&[b'k', key_seed]);
        let key = IndiciumKey::from_bytes(&secret).unwrap();
        let reference = SigningKey::from_slice(&secret).unwrap();
        let public = key.public_key();
        assert_eq!(
            reference.verifying_key().to_sec1_point(false).as_bytes(),
            &public[..]
        );
        let prepared = PreparedKey::from_sec1(&public).unwrap();
        for n in 0u8..8 {
            let msg = [key_seed, n, 0x5a, 0xa5];
            let ours = key.sign(&msg);
            let theirs: Signature = reference.sign(&msg);
            assert_eq!(
                ours[..],
                theirs.to_bytes()[..],
                "key {key_seed} message {n}"
            );
            assert!(reference
                .verifying_key()
                .verify(&msg, &Signature::from_slice(&ours).unwrap())
                .is_ok());
            assert!(verify_signature(&public, &msg, &ours));
            assert!(prepared.verify(&msg, &ours));
            let mut bad = ours;
            bad[usize::from(n) % 64] ^= 1;
            assert!(!verify_signature(&public, &msg, &bad));
            assert!(!prepared.verify(&msg, &bad));
            let mut other = msg;
            other[3] ^= 0x80;
            assert!(!verify_signature(&public, &other, &ours));
        }
    }
}
