//! The certificate meter's part of the API (feature `certmeter`, the second module), natively:
//! a PSD state made by the end-to-end tests' certificate meter card (refilled, an accepted
//! audit today) restored into a `PsdDevice` as the page restores the page's state, the
//! rate table and CA anchor loaded as the meter hands them, a postmark key generated and
//! certified by the test CA, a postmark over a document's SHA-256 expanded into the RFC 3161
//! token, checked by stock `openssl ts -verify` and by `verify_postmark`; refusals.

// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use openpsd_core::crypto::sha256;
use openpsd_core::psd::certmeter::attestation::KeyAttestation;
use openpsd_tests::certmeter::{
    ca_anchor, certmeter_card, openssl, pem, standard_table, TestCa, NOW,
};
use openpsd_wasm::certmeter::verify_postmark;
use openpsd_wasm::{state, ErrorKind, PsdDevice};

fn psd() -> PsdDevice {
    let (card, _) = certmeter_card(7, true);
    let saved = state::encode(card.store()).unwrap();
    let mut psd = PsdDevice::restore(&saved, &[9; 32], Some("2026-11-21")).unwrap();
    psd.set_now(Some(NOW));
    psd
}

fn card_sw(e: &openpsd_wasm::ApiError) -> Option<String> {
    e.sw_hex()
}

#[test]
fn postmark_in_the_page_verifies_with_openssl() {
    let ca = TestCa::standard();
    let mut psd = psd();
    let digest = sha256(b"a document");
    // No table yet: no fee for anything (9A40) or no key (9A43), nothing charged.
    let e = psd.issue_postmark(&digest, None, 0, &[]).unwrap_err();
    assert!(
        matches!(card_sw(&e).as_deref(), Some("9A40" | "9A43")),
        "{e:?}"
    );

    let tables = [hex::encode(standard_table(1))];
    let anchors = [hex::encode(ca_anchor(&ca, 1))];
    assert_eq!(psd.load_updates(&tables, &anchors).unwrap(), (1, 1));
    assert_eq!(
        psd.load_updates(&tables, &anchors).unwrap(),
        (0, 0),
        "held: skipped"
    );
    let info = psd.cert_info().unwrap();
    assert_eq!(info.tables.len(), 1);
    assert!(info.tables[0].in_effect);
    assert!(info.tables[0]
        .fees
        .iter()
        .any(|f| f.service == "postmark" && f.fee == "0.10"));

    assert_eq!(
        psd.generate_key("nonsense", false).unwrap_err().kind,
        ErrorKind::Input
    );
    let g = psd.generate_key("postmark", false).unwrap();
    let a = KeyAttestation::decode_unverified(&hex::decode(&g.attestation).unwrap()).unwrap();
    let cert = ca.postmark_certificate(&a.public_key);
    let dr_before = psd.registers(0).unwrap().dr;
    let inst = psd.install_key_certificate(g.slot, &cert, 0).unwrap();
    assert_eq!(inst.fee, "5.00");
    assert_ne!(inst.registers.dr, dr_before);

    let out = psd.issue_postmark(&digest, None, 0, &[]).unwrap();
    assert_eq!(out.fields.fee, "0.10");
    assert_eq!(out.fields.serial, 1);
    assert_eq!(out.fields.gen_time, NOW);
    assert_eq!(out.certificate.0, cert);
    // A retry with the same transaction ID: the same bytes, charged once.
    let dr = psd.registers(0).unwrap().dr;
    let again = psd
        .issue_postmark(&digest, Some(&out.transaction_id), 0, &[])
        .unwrap();
    assert_eq!(again.token, out.token);
    assert_eq!(psd.registers(0).unwrap().dr, dr);

    let v = verify_postmark(&out.token.0, &digest, &ca.cert_der).unwrap();
    assert!(v.valid, "{v:?}");
    let v = verify_postmark(&out.token.0, &sha256(b"another"), &ca.cert_der).unwrap();
    assert!(!v.valid && v.error.unwrap().contains("imprint"));
    let other = TestCa::new(b"another CA");
    assert!(
        !verify_postmark(&out.token.0, &digest, &other.cert_der)
            .unwrap()
            .valid
    );
    assert!(
        !verify_postmark(b"junk", &digest, &ca.cert_der)
            .unwrap()
            .valid
    );
    assert_eq!(
        verify_postmark(&out.token.0, b"short", &ca.cert_der)
            .unwrap_err()
            .kind,
        ErrorKind::Input
    );

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("ca.pem"), pem(&ca.cert_der)).unwrap();
    std::fs::write(d.join("tsa.pem"), pem(&cert)).unwrap();
    std::fs::write(d.join("doc"), b"a document").unwrap();
    std::fs::write(d.join("t.tst"), &out.token.0).unwrap();
    let (ok, text) = openssl(
        d,
        &[
            "ts",
            "-verify",
            "-data",
            "doc",
            "-in",
            "t.tst",
            "-token_in",
            "-CAfile",
            "ca.pem",
            "-untrusted",
            "tsa.pem",
        ],
    );
    assert!(ok && text.contains("Verification: OK"), "{text}");

    // The state the page seals carries it all: restored, the key is still active.
    let saved = psd.save_state().unwrap();
    let mut back = PsdDevice::restore(&saved, &[3; 32], Some("2026-11-21")).unwrap();
    let info = back.cert_info().unwrap();
    assert_eq!(info.postmarks, 1);
    assert!(info
        .slots
        .iter()
        .any(|s| s.state == "active" && s.purpose == "postmark"));
    // Without a clock the PSD refuses (9A47), nothing charged.
    let dr = back.registers(0).unwrap().dr;
    let e = back.issue_postmark(&digest, None, 0, &[]).unwrap_err();
    assert_eq!(card_sw(&e).as_deref(), Some("9A47"));
    assert_eq!(back.registers(0).unwrap().dr, dr);
    assert_eq!(
        back.issue_postmark(&[0; 31], None, 0, &[])
            .unwrap_err()
            .kind,
        ErrorKind::Input
    );
    assert_eq!(
        back.revocation_request(g.slot, "no such reason")
            .unwrap_err()
            .kind,
        ErrorKind::Input
    );
}
