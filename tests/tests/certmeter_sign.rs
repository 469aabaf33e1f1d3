//! The certificate meter's signatures and paid validation (seed 004), in process: SIGN
//! with the key of purpose Sign for the signature fee, expanded into a detached CMS
//! SignedData that stock `openssl cms -verify` accepts; the purposes kept apart both ways;
//! VALIDATE POSTMARK (Fig. 4) for the validation fee with a device-signed receipt, "valid"
//! and "not valid" verdicts both charged, unreadable bytes refused with nothing written.
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use openpsd_core::client::psd_apdu;
use openpsd_core::crypto::{self, sha256};
use openpsd_core::psd::certmeter::attestation::Purpose;
use openpsd_core::psd::certmeter::postmark::PostmarkRequest;
use openpsd_core::psd::certmeter::sign::{CompactSignature, SignRequest};
use openpsd_core::psd::certmeter::tst::CompactPostmark;
use openpsd_core::psd::certmeter::validate::{checks, ValidateRequest, ValidationReceipt};
use openpsd_core::types::*;
use openpsd_core::Status;
use openpsd_tests::certmeter::*;
use openpsd_tests::*;

const SEED: u64 = 45;
const SET0: RegisterSetIndex = RegisterSetIndex(0);

/// The command refused with `status`, and the store unchanged (no write at all).
fn refused_unchanged(card: &mut TestCard, apdu: &[u8], status: Status) {
    let before = card.store().nvm().clone();
    let writes = card.store().writes();
    expect_refused(&card.transmit(apdu), status);
    assert_eq!(card.store().writes(), writes, "a refusal writes nothing");
    assert!(card.store().nvm() == &before, "a refusal changes nothing");
}

/// A card with the sign table, the CA anchor and the keys of `purposes` active.
fn card_with(purposes: &[Purpose]) -> (TestCard, [u8; 65], TestCa, Vec<Vec<u8>>) {
    let (mut card, device_pk) = certmeter_card(SEED, true);
    let ca = TestCa::standard();
    expect_ok(&card.transmit(&psd_apdu::load_rate_table(&sign_table(1))));
    expect_ok(&card.transmit(&psd_apdu::load_trust_anchor(&ca_anchor(&ca, 1))));
    let certs = purposes
        .iter()
        .map(|p| activate_key(&mut card, &device_pk, &ca, *p).1)
        .collect();
    (card, device_pk, ca, certs)
}

fn sign_req(txn: u64, content: &[u8]) -> SignRequest {
    SignRequest {
        transaction: TransactionId(txn.to_be_bytes()),
        digest: sha256(content),
    }
}

fn sign(card: &mut TestCard, req: &SignRequest) -> Vec<u8> {
    expect_ok(&card.transmit(&psd_apdu::sign(SET0, req)))
}

/// Runs `openssl cms -verify` on `content` and `p7s` under the test CA, in `dir`.
fn openssl_cms_verify(
    dir: &std::path::Path,
    ca: &TestCa,
    content: &[u8],
    p7s: &[u8],
) -> (bool, String) {
    std::fs::write(dir.join("ca.pem"), pem(&ca.cert_der)).unwrap();
    std::fs::write(dir.join("doc"), content).unwrap();
    std::fs::write(dir.join("sig.p7s"), p7s).unwrap();
    let args = [
        "cms", "-verify", "-binary", "-inform", "DER", "-in", "sig.p7s", "-content", "doc",
        "-CAfile", "ca.pem", "-out", "out",
    ];
    let r = openssl(dir, &args);
    eprintln!("openssl {}\n{}", args.join(" "), r.1);
    r
}

#[test]
fn sign_charges_the_fee_and_openssl_cms_verify_accepts_the_expanded_signature() {
    let (mut card, _, ca, certs) = card_with(&[Purpose::Sign]);
    let cert = &certs[0];
    let r0 = registers(&mut card, 0);
    let (fees0, n0) = fees_of(&mut card, 0);
    let content = b"a contract, signed for a fee\n";
    let req = sign_req(1, content);
    let bytes = sign(&mut card, &req);
    let c = CompactSignature::decode(&bytes).unwrap();
    assert_eq!(bytes.len(), 110);
    assert_eq!((c.signing_time, c.digest), (NOW, sha256(content)));
    let info = cm_info(&mut card);
    let slot = info.active(Purpose::Sign).unwrap();
    assert_eq!(c.key_id, crypto::key_id(&slot.public_key));
    let r1 = registers(&mut card, 0);
    assert_eq!(
        (r1.ar.0, r1.dr.0, r1.control_sum),
        (r0.ar.0 + SIGN_FEE, r0.dr.0 - SIGN_FEE, r0.control_sum)
    );
    assert_eq!(
        fees_of(&mut card, 0),
        (Amount(fees0.0 + SIGN_FEE), PieceCount(n0.0 + 1))
    );

    let p7s = openpsd_pki::sign::expand(&c, cert, &[]).unwrap();
    let v = openpsd_pki::sign::verify(&p7s, &sha256(content), &ca.cert_der).unwrap();
    assert_eq!((&v.compact, &v.certificate), (&c, cert));
    let dir = tempfile::tempdir().unwrap();
    // The sign profile's EKU is emailProtection: OpenSSL's default purpose (smimesign)
    // accepts it, no -purpose any needed.
    let (ok, text) = openssl_cms_verify(dir.path(), &ca, content, &p7s);
    assert!(ok && text.contains("Verification successful"), "{text}");
    assert_eq!(std::fs::read(dir.path().join("out")).unwrap(), content);
    // What OpenSSL reads in it: our signed attributes, the UTCTime signingTime.
    let (ok, text) = openssl(
        dir.path(),
        &[
            "cms", "-cmsout", "-print", "-inform", "DER", "-in", "sig.p7s",
        ],
    );
    assert!(ok, "{text}");
    assert!(
        text.contains("signingTime") && text.contains("UTCTIME:Nov 21 10:00:00 2026 GMT"),
        "{text}"
    );
    // Another content: refused by OpenSSL and natively.
    let (ok, text) = openssl_cms_verify(dir.path(), &ca, b"another contract\n", &p7s);
    assert!(!ok, "{text}");
    assert!(openpsd_pki::sign::verify(&p7s, &sha256(b"x"), &ca.cert_der).is_err());
    // Another CA: refused.
    let other = TestCa::new(b"another CA");
    let (ok, _) = openssl_cms_verify(dir.path(), &other, content, &p7s);
    assert!(!ok);
    assert!(openpsd_pki::sign::verify(&p7s, &sha256(content), &other.cert_der).is_err());
    // A forged r‖s does not expand.
    let mut forged = c.clone();
    forged.signature[10] ^= 1;
    assert!(openpsd_pki::sign::expand(&forged, cert, &[]).is_err());
}

#[test]
fn a_retry_is_the_same_bytes_charged_once_and_another_digest_is_refused() {
    let (mut card, _, _, _) = card_with(&[Purpose::Sign, Purpose::Postmark]);
    let req = sign_req(7, b"once");
    let first = sign(&mut card, &req);
    let after = registers(&mut card, 0);
    let fees = fees_of(&mut card, 0);
    // Later (the clock moved): the stored signature, its time included, not a new one.
    set_clock(&mut card, Some(NOW + 60));
    assert_eq!(sign(&mut card, &req), first);
    assert_eq!(registers(&mut card, 0), after, "charged once");
    assert_eq!(fees_of(&mut card, 0), fees);
    // Same ID, another digest; or the ID reused by a postmark: refused, nothing written.
    refused_unchanged(
        &mut card,
        &psd_apdu::sign(SET0, &sign_req(7, b"twice")),
        Status::TransactionIdReused,
    );
    let pm = PostmarkRequest {
        transaction: req.transaction,
        digest: req.digest,
        nonce: Vec::new(),
    };
    refused_unchanged(
        &mut card,
        &psd_apdu::issue_postmark(SET0, &pm),
        Status::TransactionIdReused,
    );
    // A new ID: a new signature, a second fee.
    let second = sign(&mut card, &sign_req(8, b"once"));
    assert_ne!(second, first);
    assert_eq!(registers(&mut card, 0).dr.0, after.dr.0 - SIGN_FEE);
}

#[test]
fn the_sign_key_never_postmarks_and_the_postmark_key_never_signs() {
    // Only a sign key: no postmark. Only a postmark key: no signature.
    let (mut card, _, _, _) = card_with(&[Purpose::Sign]);
    let pm = PostmarkRequest {
        transaction: TransactionId(*b"postmark"),
        digest: sha256(b"doc"),
        nonce: Vec::new(),
    };
    refused_unchanged(
        &mut card,
        &psd_apdu::issue_postmark(SET0, &pm),
        Status::NoKeyForPurpose,
    );
    let (mut card, _, _, _) = card_with(&[Purpose::Postmark]);
    refused_unchanged(
        &mut card,
        &psd_apdu::sign(SET0, &sign_req(1, b"doc")),
        Status::NoKeyForPurpose,
    );

    // Both keys: each command signs with its own, and its output verifies under that
    // certificate only.
    let (mut card, _, ca, certs) = card_with(&[Purpose::Postmark, Purpose::Sign]);
    let (pm_cert, sign_cert) = (&certs[0], &certs[1]);
    let info = cm_info(&mut card);
    let pm_key = info.active(Purpose::Postmark).unwrap().public_key;
    let sign_key = info.active(Purpose::Sign).unwrap().public_key;
    assert_ne!(pm_key, sign_key);
    let s = CompactSignature::decode(&sign(&mut card, &sign_req(2, b"doc"))).unwrap();
    assert_eq!(s.key_id, crypto::key_id(&sign_key));
    assert!(openpsd_pki::sign::expand(&s, pm_cert, &[]).is_err());
    openpsd_pki::sign::expand(&s, sign_cert, &[]).unwrap();
    let p = CompactPostmark::decode(&expect_ok(
        &card.transmit(&psd_apdu::issue_postmark(SET0, &pm)),
    ))
    .unwrap();
    assert_eq!(p.key_id, crypto::key_id(&pm_key));
    assert!(openpsd_pki::postmark::expand(&p, sign_cert, &[]).is_err());
    let token = openpsd_pki::postmark::expand(&p, pm_cert, &[]).unwrap();
    openpsd_pki::postmark::verify(&token, &sha256(b"doc"), &ca.cert_der).unwrap();
}

#[test]
fn sign_refusals_write_nothing() {
    // No fee for signatures in the table in effect.
    let (mut card, device_pk) = certmeter_card(SEED, true);
    let ca = TestCa::standard();
    let table = rate_table(
        1,
        Date::new(2026, 11, 1).unwrap(),
        &[(
            openpsd_core::psd::certmeter::rates::Service::Certificate,
            CERTIFICATE_FEE,
        )],
    );
    expect_ok(&card.transmit(&psd_apdu::load_rate_table(&table)));
    expect_ok(&card.transmit(&psd_apdu::load_trust_anchor(&ca_anchor(&ca, 1))));
    activate_key(&mut card, &device_pk, &ca, Purpose::Sign);
    refused_unchanged(
        &mut card,
        &psd_apdu::sign(SET0, &sign_req(1, b"doc")),
        Status::NoRate,
    );

    let (mut card, _, _, _) = card_with(&[Purpose::Sign]);
    let good = psd_apdu::sign(SET0, &sign_req(1, b"doc"));
    // Wrong lengths, P1, an unknown set.
    let short = openpsd_core::client::command(0x80, 0x78, 0, 0, &[0; 39], 256);
    refused_unchanged(&mut card, &short, Status::WrongLength);
    let long = openpsd_core::client::command(0x80, 0x78, 0, 0, &[0; 41], 256);
    refused_unchanged(&mut card, &long, Status::WrongLength);
    let p1 = openpsd_core::client::command(0x80, 0x78, 1, 0, &[0; 40], 256);
    refused_unchanged(&mut card, &p1, Status::IncorrectP1P2);
    let set9 = psd_apdu::sign(RegisterSetIndex(9), &sign_req(1, b"doc"));
    refused_unchanged(&mut card, &set9, Status::ReferencedDataNotFound);
    // No clock, or a clock moved back behind the last timed service.
    set_clock(&mut card, None);
    refused_unchanged(&mut card, &good, Status::ClockRefused);
    set_clock(&mut card, Some(NOW));
    sign(&mut card, &sign_req(2, b"doc"));
    set_clock(&mut card, Some(NOW - 1));
    refused_unchanged(&mut card, &good, Status::ClockRefused);
}

// ---- VALIDATE POSTMARK (Fig. 4) -------------------------------------------------------

/// A card with both keys and one postmark of `document`: (card, device key, CA, the
/// compact postmark, the postmark certificate, the sign certificate).
fn with_postmark(document: &[u8]) -> (TestCard, [u8; 65], TestCa, Vec<u8>, Vec<u8>, Vec<u8>) {
    let (mut card, device_pk, ca, certs) = card_with(&[Purpose::Postmark, Purpose::Sign]);
    let pm = PostmarkRequest {
        transaction: TransactionId(*b"postmark"),
        digest: sha256(document),
        nonce: Vec::new(),
    };
    let compact = expect_ok(&card.transmit(&psd_apdu::issue_postmark(SET0, &pm)));
    let [pm_cert, sign_cert] = <[Vec<u8>; 2]>::try_from(certs).unwrap();
    (card, device_pk, ca, compact, pm_cert, sign_cert)
}

fn validate_req(txn: u64, postmark: &[u8], cert: &[u8], document: &[u8]) -> ValidateRequest {
    ValidateRequest {
        transaction: TransactionId(txn.to_be_bytes()),
        postmark: postmark.to_vec(),
        certificate: cert.to_vec(),
        digest: sha256(document),
    }
}

/// VALIDATE POSTMARK: the receipt, opened with the device key, and checked to be charged
/// exactly the validation fee.
fn validate(
    card: &mut TestCard,
    device_pk: &[u8; 65],
    req: &ValidateRequest,
) -> (Vec<u8>, ValidationReceipt) {
    let dr = registers(card, 0).dr.0;
    let bytes = expect_ok(&card.transmit(&psd_apdu::validate_postmark(SET0, req)));
    let r = ValidationReceipt::open(&bytes, device_pk).expect("receipt verifies");
    assert_eq!(registers(card, 0).dr.0, dr - VALIDATION_FEE, "charged");
    assert_eq!(
        (
            r.validator,
            r.transaction,
            r.time,
            r.fee,
            r.table_version,
            r.set
        ),
        (DEVICE, req.transaction, NOW, Amount(VALIDATION_FEE), 1, 0)
    );
    assert_eq!(
        (r.postmark_hash, r.certificate_hash, r.digest),
        (sha256(&req.postmark), sha256(&req.certificate), req.digest)
    );
    (bytes, r)
}

#[test]
fn fig4_a_valid_postmark_gets_a_valid_receipt_charged_once() {
    let document = b"a letter to validate\n";
    let (mut card, device_pk, _, compact, pm_cert, _) = with_postmark(document);
    let (fees0, n0) = fees_of(&mut card, 0);
    let req = validate_req(1, &compact, &pm_cert, document);
    let (bytes, r) = validate(&mut card, &device_pk, &req);
    assert!(r.valid, "{r:?}");
    assert_eq!(r.checks, checks::ALL);
    assert_eq!(
        (r.postmark_device, r.postmark_counter, r.gen_time),
        (DEVICE, 1, NOW)
    );
    assert_eq!(
        fees_of(&mut card, 0),
        (Amount(fees0.0 + VALIDATION_FEE), PieceCount(n0.0 + 1))
    );
    // A retry: the same receipt, charged once.
    let dr = registers(&mut card, 0).dr;
    assert_eq!(
        expect_ok(&card.transmit(&psd_apdu::validate_postmark(SET0, &req))),
        bytes
    );
    assert_eq!(registers(&mut card, 0).dr, dr);
    // The same ID for another document: refused.
    refused_unchanged(
        &mut card,
        &psd_apdu::validate_postmark(SET0, &validate_req(1, &compact, &pm_cert, b"other")),
        Status::TransactionIdReused,
    );
    // Another device's key does not open the receipt.
    assert!(ValidationReceipt::open(&bytes, &TestCa::standard().public_key).is_err());
}

#[test]
fn fig4_tampered_postmark_wrong_digest_or_foreign_certificate_are_not_valid_and_charged() {
    let document = b"a letter to validate\n";
    let (mut card, device_pk, ca, compact, pm_cert, sign_cert) = with_postmark(document);

    // The wrong document: everything but the digest holds.
    let (_, r) = validate(
        &mut card,
        &device_pk,
        &validate_req(1, &compact, &pm_cert, b"another letter\n"),
    );
    assert!(!r.valid);
    assert_eq!(r.checks, checks::ALL & !checks::DIGEST);

    // A signature bit flipped: the signature check fails.
    let mut tampered = compact.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let (_, r) = validate(
        &mut card,
        &device_pk,
        &validate_req(2, &tampered, &pm_cert, document),
    );
    assert!(!r.valid);
    assert_eq!(r.checks, checks::ALL & !checks::SIGNATURE);

    // The TSTInfo changed (its serial): still readable, the signature no longer holds.
    let mut c = CompactPostmark::decode(&compact).unwrap();
    let f = openpsd_core::psd::certmeter::tst::decode_tst_info(&c.tst_info).unwrap();
    let mut f2 = f.clone();
    f2.counter += 1;
    c.tst_info = openpsd_core::psd::certmeter::tst::tst_info_der(&f2);
    let (_, r) = validate(
        &mut card,
        &device_pk,
        &validate_req(3, &c.encode().unwrap(), &pm_cert, document),
    );
    assert_eq!((r.valid, r.postmark_counter), (false, 2));
    assert_eq!(r.checks & checks::SIGNATURE, 0);

    // The certificate of the same key from a CA the PSD does not trust.
    let info = cm_info(&mut card);
    let pm_key = info.active(Purpose::Postmark).unwrap().public_key;
    let foreign = TestCa::new(b"a foreign CA").postmark_certificate(&pm_key);
    let (_, r) = validate(
        &mut card,
        &device_pk,
        &validate_req(4, &compact, &foreign, document),
    );
    assert!(!r.valid);
    assert_eq!(r.checks & checks::CA_SIGNATURE, 0);
    assert_ne!(r.checks & checks::KEY_MATCHES, 0);

    // The sign certificate shown for a postmark: not a postmark certificate, another key.
    let (_, r) = validate(
        &mut card,
        &device_pk,
        &validate_req(5, &compact, &sign_cert, document),
    );
    assert!(!r.valid);
    assert_eq!(
        r.checks,
        checks::CA_SIGNATURE | checks::VALID_AT_GEN_TIME | checks::DIGEST
    );

    // A certificate expired before the postmark's time.
    let expired = ca.certify(
        &pm_key,
        &CertProfile {
            valid: (VALID_FROM, NOW - 86_400),
            ..CertProfile::default()
        },
    );
    let (_, r) = validate(
        &mut card,
        &device_pk,
        &validate_req(6, &compact, &expired, document),
    );
    assert_eq!(r.checks & checks::VALID_AT_GEN_TIME, 0);
    assert!(!r.valid);
}

#[test]
fn fig4_unreadable_bytes_are_refused_with_nothing_written() {
    let document = b"a letter to validate\n";
    let (mut card, _, _, compact, pm_cert, _) = with_postmark(document);
    let v = |req: &ValidateRequest| psd_apdu::validate_postmark(SET0, req);
    // Not a compact postmark; not a certificate; a truncated request.
    let mut bad = compact.clone();
    bad[0] = 0x51;
    refused_unchanged(
        &mut card,
        &v(&validate_req(1, &bad, &pm_cert, document)),
        Status::WrongData,
    );
    refused_unchanged(
        &mut card,
        &v(&validate_req(
            1,
            &compact[..compact.len() - 1],
            &pm_cert,
            document,
        )),
        Status::WrongLength,
    );
    refused_unchanged(
        &mut card,
        &v(&validate_req(1, &compact, b"not a certificate", document)),
        Status::WrongData,
    );
    let data = validate_req(1, &compact, &pm_cert, document)
        .encode()
        .unwrap();
    for cut in [0, 7, 9, 100, data.len() - 1] {
        let apdu = openpsd_core::client::command(0x80, 0x7E, 0, 0, &data[..cut], 256);
        let before = card.store().writes();
        let sw = psd_apdu::sw(&card.transmit(&apdu));
        assert!(sw == 0x6700 || sw == 0x6A80, "{sw:04X} at {cut}");
        assert_eq!(card.store().writes(), before);
    }
    // No validation fee in the table: refused.
    let (mut card, device_pk) = certmeter_card(SEED, true);
    let ca = TestCa::standard();
    load_table_and_anchor(&mut card, &ca);
    activate_key(&mut card, &device_pk, &ca, Purpose::Postmark);
    refused_unchanged(
        &mut card,
        &v(&validate_req(1, &compact, &pm_cert, document)),
        Status::NoRate,
    );
}

#[test]
fn fig4_a_psd_without_keys_of_its_own_validates() {
    // Validation needs the CA anchor and the device key (for the receipt), no certified
    // key: a PSD with none validates a postmark made elsewhere.
    let document = b"a letter from elsewhere\n";
    let (_, _, _, compact, pm_cert, _) = with_postmark(document);
    let (mut other, other_pk, _, _) = card_with(&[]);
    let (_, r) = validate(
        &mut other,
        &other_pk,
        &validate_req(1, &compact, &pm_cert, document),
    );
    assert!(r.valid);
}

/// A rough rate (run with `--release -- --ignored --nocapture`): SIGN through the full APDU
/// path (parse, checks, fee, signed attributes, ECDSA, one commit, reply) against raw P-256
/// signing of the same signed attributes with the same key. Not a criterion benchmark.
#[test]
#[ignore = "a measurement: run in release"]
fn sign_rate_apdu_path_vs_raw() {
    use openpsd_core::psd::certmeter::state::CertMeterState;
    let (mut card, _, _, certs) = card_with(&[Purpose::Sign]);
    let n = 1000u64;
    let reqs: Vec<Vec<u8>> = (0..n)
        .map(|i| psd_apdu::sign(SET0, &sign_req(1000 + i, &i.to_be_bytes())))
        .collect();
    let t = std::time::Instant::now();
    for r in &reqs {
        expect_ok(&card.transmit(r));
    }
    let apdu = t.elapsed();
    let st = CertMeterState::decode(&certmeter_record(&card).unwrap()).unwrap();
    let slot = st.active(Purpose::Sign).unwrap().1;
    let key = slot.key.as_ref().unwrap();
    let c = CompactSignature::decode(&st.last.as_ref().unwrap().output).unwrap();
    let attrs = c.signed_attrs(&sha256(&certs[0]));
    let t = std::time::Instant::now();
    for _ in 0..n {
        std::hint::black_box(key.sign(std::hint::black_box(&attrs)));
    }
    let raw = t.elapsed();
    let rate = |d: std::time::Duration| n as f64 / d.as_secs_f64();
    println!(
        "SIGN through the APDU path: {:.0}/s; raw P-256 sign of the same attributes: {:.0}/s; ratio {:.3}",
        rate(apdu),
        rate(raw),
        raw.as_secs_f64() / apdu.as_secs_f64()
    );
}
