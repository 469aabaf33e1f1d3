//! The certificate meter (seed 004, EP 0 762 692), in process: step 257 (a vendor-signed
//! rate table), claim 12 (the CA trust anchor), Fig. 5 (a key generated inside, attested,
//! certified by a CA, installed for the certificate fee) and Fig. 3 (a postmark for the
//! postmark fee, expanded into an RFC 3161 token that stock `openssl ts -verify` accepts),
//! and every refusal with its status word and nothing written.
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use openpsd_core::client::psd_apdu;
use openpsd_core::crypto::{self, sha256, IndiciumKey};
use openpsd_core::psd::certmeter::anchor::{Anchor, AnchorKind};
use openpsd_core::psd::certmeter::attestation::{KeyAttestation, Purpose};
use openpsd_core::psd::certmeter::postmark::PostmarkRequest;
use openpsd_core::psd::certmeter::rates::Service;
use openpsd_core::psd::certmeter::state::{CertMeterState, SlotState};
use openpsd_core::psd::certmeter::tst::{decode_tst_info, CompactPostmark};
use openpsd_core::psd::indicium;
use openpsd_core::psd::registers::Registers;
use openpsd_core::types::*;
use openpsd_core::Status;
use openpsd_tests::certmeter::*;
use openpsd_tests::*;

const SEED: u64 = 41;
const SET0: RegisterSetIndex = RegisterSetIndex(0);

/// The command refused with `status`, and the store unchanged (no write at all).
fn refused_unchanged(card: &mut TestCard, apdu: &[u8], status: Status) {
    let before = card.store().nvm().clone();
    let writes = card.store().writes();
    expect_refused(&card.transmit(apdu), status);
    assert_eq!(card.store().writes(), writes, "a refusal writes nothing");
    assert!(card.store().nvm() == &before, "a refusal changes nothing");
}

fn postmark_request(txn: u64, document: &[u8], nonce: &[u8]) -> PostmarkRequest {
    PostmarkRequest {
        transaction: TransactionId(txn.to_be_bytes()),
        digest: sha256(document),
        nonce: nonce.to_vec(),
    }
}

fn postmark(card: &mut TestCard, req: &PostmarkRequest) -> Vec<u8> {
    expect_ok(&card.transmit(&psd_apdu::issue_postmark(SET0, req)))
}

/// AR − transferred − fees = postage printed, and AR + DR + pending = control sum.
fn books_balance(card: &mut TestCard, postage: u64) {
    let r = registers(card, 0);
    let (fees, _) = fees_of(card, 0);
    assert_eq!(
        r.ar.0 + r.dr.0 + r.pending.0,
        r.control_sum.0,
        "AR + DR + pending = control sum: {r:?}"
    );
    assert_eq!(
        r.ar.0 - r.transferred.0 - fees.0,
        postage,
        "AR − transferred − fees = postage: {r:?}, fees {fees:?}"
    );
}

#[test]
fn seed004_step257_fig5_fig3_table_anchor_key_certificate_postmark_verified_by_openssl() {
    let (mut card, device_pk) = certmeter_card(SEED, true);
    let ca = TestCa::standard();
    let r0 = registers(&mut card, 0);
    assert_eq!(r0.dr, Amount(FUNDS));
    books_balance(&mut card, 0);

    // Step 257: the vendor's rate table; claim 12: the vendor's word for the CA's key.
    let v = expect_ok(&card.transmit(&psd_apdu::load_rate_table(&standard_table(1))));
    assert_eq!(v, 1u32.to_be_bytes());
    expect_ok(&card.transmit(&psd_apdu::load_trust_anchor(&ca_anchor(&ca, 1))));
    let info = cm_info(&mut card);
    assert_eq!(info.tables.len(), 1);
    assert_eq!(info.tables[0].1, standard_table(1));
    assert_eq!(info.anchors[0].0.public_key, ca.public_key);
    assert_eq!(info.anchors[0].0.kind, AnchorKind::CertificateCa);

    // Fig. 5 steps 508-512: a key generated inside, attested by the device key.
    let (att_bytes, att) = generate(&mut card, Purpose::Postmark, &device_pk);
    assert_eq!(att_bytes.len(), 209);
    assert_eq!(
        (att.device, att.slot, att.purpose, att.generation),
        (DEVICE, 0, Purpose::Postmark, 1)
    );
    // Asked again (a lost reply), the pending key's attestation comes back, byte for byte.
    let (again, _) = generate(&mut card, Purpose::Postmark, &device_pk);
    assert_eq!(again, att_bytes);
    // Nothing charged yet.
    assert_eq!(registers(&mut card, 0), r0);
    assert_eq!(cm_info(&mut card).slots[0].state, SlotState::Pending);

    // Steps 514-520: the CA certifies the attested key; installing it pays the fee.
    let cert = ca.postmark_certificate(&att.public_key);
    let reply =
        expect_ok(&card.transmit(&psd_apdu::install_key_certificate(att.slot, SET0, &cert)));
    assert_eq!(reply[0], att.slot);
    assert_eq!(
        u64::from_be_bytes(reply[1..9].try_into().unwrap()),
        CERTIFICATE_FEE
    );
    let r1 = registers(&mut card, 0);
    assert_eq!(Registers::decode(&reply[9..]).unwrap(), r1);
    assert_eq!(
        (r1.ar, r1.dr, r1.control_sum, r1.pieces),
        (
            Amount(r0.ar.0 + CERTIFICATE_FEE),
            Amount(r0.dr.0 - CERTIFICATE_FEE),
            r0.control_sum,
            r0.pieces
        )
    );
    assert_eq!(
        fees_of(&mut card, 0),
        (Amount(CERTIFICATE_FEE), PieceCount(1))
    );
    let info = cm_info(&mut card);
    let slot = info.active(Purpose::Postmark).expect("active postmark key");
    assert_eq!(
        (slot.slot, slot.certificate.as_slice(), slot.fee_paid),
        (att.slot, cert.as_slice(), Amount(CERTIFICATE_FEE))
    );
    books_balance(&mut card, 0);

    // Fig. 3: a postmark for the postmark fee.
    let document = b"a letter worth a postmark\n";
    let req = postmark_request(1, document, &[]);
    let bytes = postmark(&mut card, &req);
    let compact = CompactPostmark::decode(&bytes).unwrap();
    assert_eq!(compact.key_id, crypto::key_id(&att.public_key));
    let r2 = registers(&mut card, 0);
    assert_eq!(
        (r2.ar, r2.dr),
        (
            Amount(r1.ar.0 + POSTMARK_FEE),
            Amount(r1.dr.0 - POSTMARK_FEE)
        )
    );
    assert_eq!(
        fees_of(&mut card, 0),
        (Amount(CERTIFICATE_FEE + POSTMARK_FEE), PieceCount(2))
    );
    let f = decode_tst_info(&compact.tst_info).unwrap();
    assert_eq!(
        (
            f.digest,
            f.device,
            f.counter,
            f.gen_time,
            f.nonce.clone(),
            f.fee,
            f.license,
            f.table_version
        ),
        (
            sha256(document),
            DEVICE,
            1,
            NOW,
            None,
            Amount(POSTMARK_FEE),
            LicenseId(LICENSES[0].0),
            1
        )
    );

    // Expanded into an RFC 3161 token, checked by stock OpenSSL and natively.
    let token = openpsd_pki::postmark::expand(&compact, &cert, &[]).unwrap();
    assert_eq!(
        openpsd_pki::postmark::verify(&token, &sha256(document), &ca.cert_der).unwrap(),
        f
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("ca.pem"), pem(&ca.cert_der)).unwrap();
    std::fs::write(d.join("tsa.pem"), pem(&cert)).unwrap();
    std::fs::write(d.join("doc"), document).unwrap();
    std::fs::write(d.join("t.tst"), &token).unwrap();
    let verify = [
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
    ];
    let (ok, text) = openssl(d, &verify);
    eprintln!("openssl {}\n{text}", verify.join(" "));
    assert!(ok && text.contains("Verification: OK"), "{text}");
    // The certificate itself, as the CA issued it.
    let (ok, text) = openssl(
        d,
        &[
            "verify",
            "-purpose",
            "timestampsign",
            "-CAfile",
            "ca.pem",
            "tsa.pem",
        ],
    );
    eprintln!("openssl verify -purpose timestampsign -CAfile ca.pem tsa.pem\n{text}");
    assert!(ok && text.contains("tsa.pem: OK"), "{text}");
    // A changed document fails.
    std::fs::write(d.join("doc"), b"a forged letter\n").unwrap();
    let (ok, text) = openssl(d, &verify);
    eprintln!("(document changed) openssl {}\n{text}", verify.join(" "));
    assert!(!ok && text.contains("message imprint mismatch"), "{text}");

    // A retry with the same transaction ID: the same bytes, debited once.
    assert_eq!(postmark(&mut card, &req), bytes);
    assert_eq!(registers(&mut card, 0), r2);
    assert_eq!(cm_info(&mut card).postmarks, 1);

    // A second postmark with a nonce, a second later.
    set_clock(&mut card, Some(NOW + 1));
    let bytes2 = postmark(&mut card, &postmark_request(2, document, &[0x42, 0x01]));
    let c2 = CompactPostmark::decode(&bytes2).unwrap();
    let f2 = decode_tst_info(&c2.tst_info).unwrap();
    assert_eq!(
        (f2.counter, f2.gen_time, f2.nonce),
        (2, NOW + 1, Some(vec![0x42, 0x01]))
    );
    std::fs::write(d.join("doc"), document).unwrap();
    std::fs::write(
        d.join("t.tst"),
        openpsd_pki::postmark::expand(&c2, &cert, &[]).unwrap(),
    )
    .unwrap();
    let (ok, text) = openssl(d, &verify);
    assert!(ok && text.contains("Verification: OK"), "{text}");

    // Postage and fees side by side: an indicium, then the books.
    let ind = expect_ok(&card.transmit(&psd_apdu::issue_indicium(SET0, &request(3, 85, 21))));
    indicium::verify(&ind, &device_pk).unwrap();
    books_balance(&mut card, 85);
    assert_eq!(
        fees_of(&mut card, 0),
        (Amount(CERTIFICATE_FEE + 2 * POSTMARK_FEE), PieceCount(3))
    );
    // All of it survives a power cycle.
    let mut card = reopen_at(card.store().nvm(), SEED);
    books_balance(&mut card, 85);
    assert_eq!(cm_info(&mut card).postmarks, 2);
}

#[test]
fn rate_tables_and_anchors_older_equal_skipping_or_forged_refused_with_nothing_written() {
    let (mut card, _) = certmeter_card(SEED, false);
    let ca = TestCa::standard();
    let forger = IndiciumKey::from_bytes(&[0x66; 32]).unwrap();
    expect_ok(&card.transmit(&psd_apdu::load_rate_table(&standard_table(2))));

    // The same table again: its version, and nothing written.
    let writes = card.store().writes();
    let v = expect_ok(&card.transmit(&psd_apdu::load_rate_table(&standard_table(2))));
    assert_eq!(v, 2u32.to_be_bytes());
    assert_eq!(card.store().writes(), writes);
    // Older, or equal with other fees.
    refused_unchanged(
        &mut card,
        &psd_apdu::load_rate_table(&standard_table(1)),
        Status::NotNewer,
    );
    let equal = rate_table(2, today(), &[(Service::Postmark, 1)]);
    refused_unchanged(
        &mut card,
        &psd_apdu::load_rate_table(&equal),
        Status::NotNewer,
    );
    // A later table skipping the next (a host keeping a dearer table 3 out by loading 4):
    // refused, so the newest held that the audit reports is never past a table skipped.
    let later = rate_table(4, today(), &[(Service::Postmark, 1)]);
    refused_unchanged(
        &mut card,
        &psd_apdu::load_rate_table(&later),
        Status::ConditionsNotSatisfied,
    );
    // Forged: signed by another key, or a fee changed after signing.
    let forged = openpsd_core::psd::certmeter::rates::RateTable {
        version: 9,
        effective: today(),
        fees: vec![(Service::Postmark, Amount(0))],
    }
    .sign(&forger)
    .unwrap();
    refused_unchanged(
        &mut card,
        &psd_apdu::load_rate_table(&forged),
        Status::SecurityStatusNotSatisfied,
    );
    let mut tampered = standard_table(3);
    tampered[20] ^= 1; // inside the first fee
    refused_unchanged(
        &mut card,
        &psd_apdu::load_rate_table(&tampered),
        Status::SecurityStatusNotSatisfied,
    );

    // Anchors: forged, then older and equal-version.
    let forged = Anchor {
        kind: AnchorKind::CertificateCa,
        version: 5,
        public_key: ca.public_key,
    }
    .sign(&forger);
    refused_unchanged(
        &mut card,
        &psd_apdu::load_trust_anchor(&forged),
        Status::SecurityStatusNotSatisfied,
    );
    expect_ok(&card.transmit(&psd_apdu::load_trust_anchor(&ca_anchor(&ca, 2))));
    let writes = card.store().writes();
    expect_ok(&card.transmit(&psd_apdu::load_trust_anchor(&ca_anchor(&ca, 2))));
    assert_eq!(
        card.store().writes(),
        writes,
        "the same anchor writes nothing"
    );
    let other = TestCa::new(b"another CA");
    for version in [1, 2] {
        refused_unchanged(
            &mut card,
            &psd_apdu::load_trust_anchor(&ca_anchor(&other, version)),
            Status::NotNewer,
        );
    }
}

#[test]
fn no_table_or_no_fee_for_the_service_refused_with_nothing_written() {
    let (mut card, device_pk) = certmeter_card(SEED, false);
    let ca = TestCa::standard();
    expect_ok(&card.transmit(&psd_apdu::load_trust_anchor(&ca_anchor(&ca, 1))));
    // No table at all.
    refused_unchanged(
        &mut card,
        &psd_apdu::generate_key(Purpose::Postmark, false),
        Status::NoRate,
    );
    // A table without a certificate fee: no key is made.
    let postmark_only = rate_table(1, today(), &[(Service::Postmark, POSTMARK_FEE)]);
    expect_ok(&card.transmit(&psd_apdu::load_rate_table(&postmark_only)));
    refused_unchanged(
        &mut card,
        &psd_apdu::generate_key(Purpose::Postmark, false),
        Status::NoRate,
    );
    // A table without a postmark fee: the key installs, postmarks are refused.
    let certificate_only = rate_table(2, today(), &[(Service::Certificate, CERTIFICATE_FEE)]);
    expect_ok(&card.transmit(&psd_apdu::load_rate_table(&certificate_only)));
    let (_, a) = generate(&mut card, Purpose::Postmark, &device_pk);
    let cert = ca.postmark_certificate(&a.public_key);
    expect_ok(&card.transmit(&psd_apdu::install_key_certificate(a.slot, SET0, &cert)));
    refused_unchanged(
        &mut card,
        &psd_apdu::issue_postmark(SET0, &postmark_request(1, b"doc", &[])),
        Status::NoRate,
    );
    // A table effective only tomorrow is not in effect today.
    let tomorrow = Date::from_unix_seconds(NOW + 86_400).unwrap();
    let later = rate_table(3, tomorrow, &[(Service::Postmark, 1)]);
    expect_ok(&card.transmit(&psd_apdu::load_rate_table(&later)));
    refused_unchanged(
        &mut card,
        &psd_apdu::issue_postmark(SET0, &postmark_request(1, b"doc", &[])),
        Status::NoRate,
    );
    set_clock(&mut card, Some(NOW + 86_400));
    let c =
        CompactPostmark::decode(&postmark(&mut card, &postmark_request(1, b"doc", &[]))).unwrap();
    let f = decode_tst_info(&c.tst_info).unwrap();
    assert_eq!((f.fee, f.table_version), (Amount(1), 3));
}

#[test]
fn descending_register_short_refused_at_install_and_postmark() {
    let (mut card, device_pk) = certmeter_card(SEED, false);
    let ca = TestCa::standard();
    let dear = rate_table(
        1,
        today(),
        &[
            (Service::Postmark, POSTMARK_FEE),
            (Service::Certificate, FUNDS + 1),
        ],
    );
    expect_ok(&card.transmit(&psd_apdu::load_rate_table(&dear)));
    expect_ok(&card.transmit(&psd_apdu::load_trust_anchor(&ca_anchor(&ca, 1))));
    let (_, a) = generate(&mut card, Purpose::Postmark, &device_pk);
    let cert = ca.postmark_certificate(&a.public_key);
    refused_unchanged(
        &mut card,
        &psd_apdu::install_key_certificate(a.slot, SET0, &cert),
        Status::InsufficientFunds,
    );
    // Exactly the funds: installs, DR at zero.
    let exact = rate_table(
        2,
        today(),
        &[
            (Service::Postmark, POSTMARK_FEE),
            (Service::Certificate, FUNDS),
        ],
    );
    expect_ok(&card.transmit(&psd_apdu::load_rate_table(&exact)));
    expect_ok(&card.transmit(&psd_apdu::install_key_certificate(a.slot, SET0, &cert)));
    assert_eq!(registers(&mut card, 0).dr, Amount::ZERO);
    refused_unchanged(
        &mut card,
        &psd_apdu::issue_postmark(SET0, &postmark_request(1, b"doc", &[])),
        Status::InsufficientFunds,
    );
    books_balance(&mut card, 0);
}

#[test]
fn clock_missing_or_moved_back_refused_with_nothing_written() {
    let (mut card, device_pk) = certmeter_card(SEED, true);
    let ca = TestCa::standard();
    load_table_and_anchor(&mut card, &ca);
    let (_, a) = generate(&mut card, Purpose::Postmark, &device_pk);
    let cert = ca.postmark_certificate(&a.public_key);
    // No clock: no install (the certificate's validity cannot be checked), no key made.
    set_clock(&mut card, None);
    refused_unchanged(
        &mut card,
        &psd_apdu::install_key_certificate(a.slot, SET0, &cert),
        Status::ClockRefused,
    );
    refused_unchanged(
        &mut card,
        &psd_apdu::generate_key(Purpose::Sign, false),
        Status::ClockRefused,
    );
    set_clock(&mut card, Some(NOW));
    expect_ok(&card.transmit(&psd_apdu::install_key_certificate(a.slot, SET0, &cert)));
    // No clock: no postmark.
    set_clock(&mut card, None);
    refused_unchanged(
        &mut card,
        &psd_apdu::issue_postmark(SET0, &postmark_request(1, b"doc", &[])),
        Status::ClockRefused,
    );
    // A date but no time: still no postmark.
    card.platform_mut().today = Some(today());
    refused_unchanged(
        &mut card,
        &psd_apdu::issue_postmark(SET0, &postmark_request(1, b"doc", &[])),
        Status::ClockRefused,
    );
    set_clock(&mut card, Some(NOW + 3_600));
    postmark(&mut card, &postmark_request(1, b"doc", &[]));
    // Moved back before the last postmark: refused; the same second is fine.
    set_clock(&mut card, Some(NOW + 3_599));
    refused_unchanged(
        &mut card,
        &psd_apdu::issue_postmark(SET0, &postmark_request(2, b"doc", &[])),
        Status::ClockRefused,
    );
    set_clock(&mut card, Some(NOW + 3_600));
    postmark(&mut card, &postmark_request(2, b"doc", &[]));
    // Before the day of the last back-office contact (a fresh card: no postmark yet).
    let (mut fresh, fresh_pk) = certmeter_card(SEED + 1, true);
    activate_postmark_key(&mut fresh, &fresh_pk, &ca);
    set_clock(&mut fresh, Some(NOW - 86_400));
    refused_unchanged(
        &mut fresh,
        &psd_apdu::issue_postmark(SET0, &postmark_request(1, b"doc", &[])),
        Status::ClockRefused,
    );
}

#[test]
fn inspection_overdue_refuses_postmarks_with_nothing_written() {
    let ca = TestCa::standard();
    // Inspection days set, never inspected.
    let (mut card, device_pk) = certmeter_card(SEED, false);
    let mut p = personalization();
    p.inspection_days = INSPECTION_DAYS;
    let mut never = blank_card(SEED + 2);
    set_clock(&mut never, Some(NOW));
    expect_ok(&never.transmit(&psd_apdu::personalize(&p)));
    let never_pk = device_public_key(&mut never);
    let msg = Kms::new().refill_for(&mut never, SET0, Amount(FUNDS), [1; 8]);
    expect_ok(&never.transmit(&psd_apdu::refill(SET0, &msg)));
    activate_postmark_key(&mut never, &never_pk, &ca);
    refused_unchanged(
        &mut never,
        &psd_apdu::issue_postmark(SET0, &postmark_request(1, b"doc", &[])),
        Status::InspectionOverdue,
    );
    // Without inspection days, no window applies.
    activate_postmark_key(&mut card, &device_pk, &ca);
    set_clock(&mut card, Some(NOW + 400 * 86_400));
    postmark(&mut card, &postmark_request(1, b"doc", &[]));

    // Inspected today: day 28 after is fine, day 29 is overdue.
    let (mut card, device_pk) = certmeter_card(SEED + 3, true);
    activate_postmark_key(&mut card, &device_pk, &ca);
    set_clock(&mut card, Some(NOW + 28 * 86_400));
    postmark(&mut card, &postmark_request(1, b"doc", &[]));
    set_clock(&mut card, Some(NOW + 29 * 86_400));
    refused_unchanged(
        &mut card,
        &psd_apdu::issue_postmark(SET0, &postmark_request(2, b"doc", &[])),
        Status::InspectionOverdue,
    );
}

#[test]
fn transaction_id_reused_with_another_digest_or_nonce_refused() {
    let (mut card, device_pk) = certmeter_card(SEED, true);
    let ca = TestCa::standard();
    activate_postmark_key(&mut card, &device_pk, &ca);
    let first = postmark(&mut card, &postmark_request(7, b"doc", &[1]));
    for other in [
        postmark_request(7, b"another doc", &[1]),
        postmark_request(7, b"doc", &[2]),
        postmark_request(7, b"doc", &[]),
    ] {
        refused_unchanged(
            &mut card,
            &psd_apdu::issue_postmark(SET0, &other),
            Status::TransactionIdReused,
        );
    }
    // The same request still answers the same bytes.
    assert_eq!(
        postmark(&mut card, &postmark_request(7, b"doc", &[1])),
        first
    );
}

#[test]
fn certificates_refused_with_nothing_written() {
    let (mut card, device_pk) = certmeter_card(SEED, false);
    let ca = TestCa::standard();
    expect_ok(&card.transmit(&psd_apdu::load_rate_table(&standard_table(1))));
    let (_, a) = generate(&mut card, Purpose::Postmark, &device_pk);
    let good = ca.postmark_certificate(&a.public_key);
    // No anchor loaded yet.
    refused_unchanged(
        &mut card,
        &psd_apdu::install_key_certificate(a.slot, SET0, &good),
        Status::CertificateMismatch,
    );
    expect_ok(&card.transmit(&psd_apdu::load_trust_anchor(&ca_anchor(&ca, 1))));

    let stranger = IndiciumKey::from_bytes(&[0x77; 32]).unwrap();
    let foreign = TestCa::new(b"a foreign CA");
    let with = |p: CertProfile| ca.certify(&a.public_key, &p);
    let bad: Vec<(&str, Vec<u8>)> = vec![
        (
            "another key",
            ca.postmark_certificate(&stranger.public_key()),
        ),
        ("a foreign CA", foreign.postmark_certificate(&a.public_key)),
        (
            "EKU not critical",
            with(CertProfile {
                eku_critical: false,
                ..Default::default()
            }),
        ),
        (
            "EKU with extra purposes",
            with(CertProfile {
                eku: vec![KP_TIME_STAMPING, KP_EMAIL_PROTECTION],
                ..Default::default()
            }),
        ),
        (
            "EKU of the sign purpose",
            with(CertProfile {
                eku: vec![KP_EMAIL_PROTECTION],
                eku_critical: false,
                ..Default::default()
            }),
        ),
        (
            "CA:TRUE",
            with(CertProfile {
                ca: true,
                ..Default::default()
            }),
        ),
        (
            "expired",
            with(CertProfile {
                valid: (VALID_FROM, NOW - 86_400),
                ..Default::default()
            }),
        ),
        (
            "not yet valid",
            with(CertProfile {
                valid: (NOW + 86_400, VALID_TO),
                ..Default::default()
            }),
        ),
    ];
    for (what, cert) in &bad {
        let before = card.store().nvm().clone();
        let resp = card.transmit(&psd_apdu::install_key_certificate(a.slot, SET0, cert));
        assert_eq!(
            psd_apdu::sw(&resp),
            Status::CertificateMismatch.sw(),
            "{what}: {resp:02X?}"
        );
        assert!(card.store().nvm() == &before, "{what}: nothing written");
    }
    // A key of one purpose never takes another purpose's certificate: a sign key with
    // the postmark profile.
    let (_, s) = generate(&mut card, Purpose::Sign, &device_pk);
    refused_unchanged(
        &mut card,
        &psd_apdu::install_key_certificate(s.slot, SET0, &ca.postmark_certificate(&s.public_key)),
        Status::CertificateMismatch,
    );
    // A certificate for the other slot's key.
    refused_unchanged(
        &mut card,
        &psd_apdu::install_key_certificate(s.slot, SET0, &good),
        Status::CertificateMismatch,
    );
    // A slot never generated.
    refused_unchanged(
        &mut card,
        &psd_apdu::install_key_certificate(3, SET0, &good),
        Status::NoKeyForPurpose,
    );
    // Not DER at all.
    let mut junk = good.clone();
    junk.truncate(40);
    refused_unchanged(
        &mut card,
        &psd_apdu::install_key_certificate(a.slot, SET0, &junk),
        Status::WrongData,
    );
    // After all that, the good one installs.
    expect_ok(&card.transmit(&psd_apdu::install_key_certificate(a.slot, SET0, &good)));
    assert_eq!(
        fees_of(&mut card, 0),
        (Amount(CERTIFICATE_FEE), PieceCount(1))
    );
}

#[test]
fn double_install_answers_again_without_a_second_debit() {
    let (mut card, device_pk) = certmeter_card(SEED, false);
    let ca = TestCa::standard();
    load_table_and_anchor(&mut card, &ca);
    let (_, a) = generate(&mut card, Purpose::Postmark, &device_pk);
    let cert = ca.postmark_certificate(&a.public_key);
    let apdu = psd_apdu::install_key_certificate(a.slot, SET0, &cert);
    let first = expect_ok(&card.transmit(&apdu));
    let before = card.store().nvm().clone();
    let second = expect_ok(&card.transmit(&apdu));
    assert_eq!(second, first, "the same reply");
    assert!(
        card.store().nvm() == &before,
        "nothing written the second time"
    );
    assert_eq!(
        fees_of(&mut card, 0),
        (Amount(CERTIFICATE_FEE), PieceCount(1))
    );
    assert_eq!(registers(&mut card, 0).dr, Amount(FUNDS - CERTIFICATE_FEE));
    // Another certificate for the active key (a second install) is refused.
    let other = ca.certify(
        &a.public_key,
        &CertProfile {
            valid: (VALID_FROM, VALID_TO - 1),
            ..Default::default()
        },
    );
    refused_unchanged(
        &mut card,
        &psd_apdu::install_key_certificate(a.slot, SET0, &other),
        Status::NoKeyForPurpose,
    );
}

#[test]
fn postmark_without_an_active_key_refused() {
    let (mut card, device_pk) = certmeter_card(SEED, false);
    let ca = TestCa::standard();
    load_table_and_anchor(&mut card, &ca);
    // No key at all, then only a pending one, then only an active key of another purpose.
    refused_unchanged(
        &mut card,
        &psd_apdu::issue_postmark(SET0, &postmark_request(1, b"doc", &[])),
        Status::NoKeyForPurpose,
    );
    generate(&mut card, Purpose::Postmark, &device_pk);
    refused_unchanged(
        &mut card,
        &psd_apdu::issue_postmark(SET0, &postmark_request(1, b"doc", &[])),
        Status::NoKeyForPurpose,
    );
    let (_, s) = generate(&mut card, Purpose::Sign, &device_pk);
    let sign_cert = ca.certify(
        &s.public_key,
        &CertProfile {
            eku: vec![KP_EMAIL_PROTECTION],
            eku_critical: false,
            ..Default::default()
        },
    );
    expect_ok(&card.transmit(&psd_apdu::install_key_certificate(s.slot, SET0, &sign_cert)));
    refused_unchanged(
        &mut card,
        &psd_apdu::issue_postmark(SET0, &postmark_request(1, b"doc", &[])),
        Status::NoKeyForPurpose,
    );
    books_balance(&mut card, 0);
}

#[test]
fn a_second_key_of_the_purpose_retires_the_first_and_its_scalar_is_gone() {
    let (mut card, device_pk) = certmeter_card(SEED, false);
    let ca = TestCa::standard();
    let (slot0, cert0) = activate_postmark_key(&mut card, &device_pk, &ca);
    postmark(&mut card, &postmark_request(1, b"doc", &[]));
    let record = certmeter_record(&card).expect("record written");
    let st = CertMeterState::decode(&record).unwrap();
    let old = st.slots[usize::from(slot0)].as_ref().unwrap();
    let scalar = old.key.as_ref().unwrap().secret_bytes().as_ref().to_vec();
    assert!(record.windows(32).any(|w| w == scalar.as_slice()));
    assert!(
        nvm_contains(card.store().nvm(), &scalar),
        "the search finds a live scalar"
    );

    // A new postmark key while the first is active: pending in another slot; the first
    // still signs.
    let (_, b) = generate(&mut card, Purpose::Postmark, &device_pk);
    assert_ne!(b.slot, slot0);
    assert_eq!(b.generation, 2);
    let c =
        CompactPostmark::decode(&postmark(&mut card, &postmark_request(2, b"doc", &[]))).unwrap();
    assert_eq!(c.key_id, crypto::key_id(&old.public_key));

    // Installing its certificate retires the first key in the same commit.
    let cert1 = ca.postmark_certificate(&b.public_key);
    expect_ok(&card.transmit(&psd_apdu::install_key_certificate(b.slot, SET0, &cert1)));
    let record = certmeter_record(&card).unwrap();
    assert!(
        !record.windows(32).any(|w| w == scalar.as_slice()),
        "the CERTMETER record holds no copy of the retired scalar"
    );
    assert!(
        !nvm_contains(card.store().nvm(), &scalar),
        "no cell of the memory (home or journal) holds the retired scalar"
    );
    let st = CertMeterState::decode(&record).unwrap();
    let retired = st.slots[usize::from(slot0)].as_ref().unwrap();
    assert_eq!(retired.state, SlotState::Retired);
    assert!(retired.key.is_none());
    assert_eq!(retired.certificate, cert0, "kept for the record");
    let info = cm_info(&mut card);
    assert_eq!(info.active(Purpose::Postmark).unwrap().slot, b.slot);

    // Postmarks now come from the new key, and verify with its certificate.
    let c =
        CompactPostmark::decode(&postmark(&mut card, &postmark_request(3, b"doc", &[]))).unwrap();
    assert_eq!(c.key_id, crypto::key_id(&b.public_key));
    let token = openpsd_pki::postmark::expand(&c, &cert1, &[]).unwrap();
    openpsd_pki::postmark::verify(&token, &sha256(b"doc"), &ca.cert_der).unwrap();
    assert!(openpsd_pki::postmark::expand(&c, &cert0, &[]).is_err());
    assert_eq!(
        fees_of(&mut card, 0),
        (
            Amount(2 * CERTIFICATE_FEE + 3 * POSTMARK_FEE),
            PieceCount(5)
        )
    );
    books_balance(&mut card, 0);
}

/// A retry of the last postmark after its key was replaced returns identical bytes (the
/// record keeps the whole postmark, signature included), charged once.
#[test]
fn a_postmark_retried_after_a_key_rotation_is_the_same_bytes() {
    let (mut card, device_pk) = certmeter_card(SEED, false);
    let ca = TestCa::standard();
    activate_postmark_key(&mut card, &device_pk, &ca);
    let req = postmark_request(1, b"doc", &[]);
    let first = postmark(&mut card, &req);
    let (_, b) = generate(&mut card, Purpose::Postmark, &device_pk);
    let cert = ca.postmark_certificate(&b.public_key);
    expect_ok(&card.transmit(&psd_apdu::install_key_certificate(b.slot, SET0, &cert)));
    let before = registers(&mut card, 0);
    let again = postmark(&mut card, &req);
    assert_eq!(registers(&mut card, 0), before, "charged once");
    assert_eq!(again, first, "a retry returns identical bytes");
}

/// Retired slots are reused (the oldest first): a PSD has four key slots, and a postmark key
/// can still be replaced again and again (before the fix, the fifth GENERATE KEY of a
/// PSD's life was refused with 6A84 for good).
#[test]
fn keys_can_be_replaced_more_than_three_times() {
    let (mut card, device_pk) = certmeter_card(SEED, false);
    let ca = TestCa::standard();
    activate_postmark_key(&mut card, &device_pk, &ca);
    for round in 0..6u32 {
        let resp = card.transmit(&psd_apdu::generate_key(Purpose::Postmark, false));
        assert_eq!(
            psd_apdu::sw(&resp),
            0x9000,
            "GENERATE KEY after {} keys: {resp:02X?}",
            cm_info(&mut card).generation
        );
        let a = KeyAttestation::open(psd_apdu::data(&resp).unwrap(), &device_pk).unwrap();
        assert_eq!(a.generation, round + 2);
        let cert = ca.postmark_certificate(&a.public_key);
        expect_ok(&card.transmit(&psd_apdu::install_key_certificate(a.slot, SET0, &cert)));
        let info = cm_info(&mut card);
        assert!(info.slots.len() <= 4);
        assert_eq!(info.active(Purpose::Postmark).unwrap().slot, a.slot);
        let c = CompactPostmark::decode(&postmark(
            &mut card,
            &postmark_request(u64::from(round) + 1, b"doc", &[]),
        ))
        .unwrap();
        assert_eq!(c.key_id, crypto::key_id(&a.public_key));
        // No scalar of a retired key anywhere in the record.
        let st = CertMeterState::decode(&certmeter_record(&card).unwrap()).unwrap();
        for s in st.slots.iter().flatten() {
            assert_eq!(s.key.is_some(), s.state != SlotState::Retired);
        }
    }
    assert_eq!(
        fees_of(&mut card, 0),
        (
            Amount(7 * CERTIFICATE_FEE + 6 * POSTMARK_FEE),
            PieceCount(13)
        )
    );
}

/// From review: a postmark is not sold outside its certificate's validity (no verifier
/// would take it), keys of purposes not issued yet are not made (they would only fill a
/// slot), and the clock's lower bound is the last accepted audit's day on every PSD.
#[test]
fn postmarks_outside_the_certificate_validity_and_unissued_purposes_refused() {
    let ca = TestCa::standard();
    let (mut card, device_pk) = certmeter_card(SEED, true);
    load_table_and_anchor(&mut card, &ca);
    let (_, a) = generate(&mut card, Purpose::Postmark, &device_pk);
    // A certificate valid for one day from NOW's day on.
    let day = NOW - NOW % 86_400;
    let cert = ca.certify(
        &a.public_key,
        &CertProfile {
            valid: (day, day + 86_399),
            ..CertProfile::default()
        },
    );
    expect_ok(&card.transmit(&psd_apdu::install_key_certificate(a.slot, SET0, &cert)));
    postmark(&mut card, &postmark_request(1, b"doc", &[]));
    // The next day the certificate has expired: refused, nothing charged.
    set_clock(&mut card, Some(day + 86_400 + 60));
    refused_unchanged(
        &mut card,
        &psd_apdu::issue_postmark(SET0, &postmark_request(2, b"doc", &[])),
        Status::CertificateMismatch,
    );
    // Every purpose is made now (agent keys: certmeter_agent.rs, payment keys:
    // certmeter_credit.rs); a purpose code the PSD does not know is refused.
    for code in [0x00, 0x05, 0xFF] {
        let mut apdu = psd_apdu::generate_key(Purpose::Postmark, false);
        apdu[2] = code;
        refused_unchanged(&mut card, &apdu, Status::IncorrectP1P2);
    }
}

/// Validity to the second (record version 3): a certificate that begins at 11:00 and ends
/// at 12:00 sells no postmark at 10:00 or at 12:00:01 of the same day, although the day is
/// inside its first and last day.
#[test]
fn postmarks_outside_the_certificate_hours_refused() {
    let ca = TestCa::standard();
    let (mut card, device_pk) = certmeter_card(SEED, true);
    load_table_and_anchor(&mut card, &ca);
    let (_, a) = generate(&mut card, Purpose::Postmark, &device_pk);
    assert_eq!(NOW % 86_400, 10 * 3_600, "NOW is 10:00 UTC");
    let cert = ca.certify(
        &a.public_key,
        &CertProfile {
            valid: (NOW + 3_600, NOW + 7_200),
            ..CertProfile::default()
        },
    );
    expect_ok(&card.transmit(&psd_apdu::install_key_certificate(a.slot, SET0, &cert)));
    refused_unchanged(
        &mut card,
        &psd_apdu::issue_postmark(SET0, &postmark_request(1, b"doc", &[])),
        Status::CertificateMismatch,
    );
    set_clock(&mut card, Some(NOW + 3_600));
    postmark(&mut card, &postmark_request(1, b"doc", &[]));
    set_clock(&mut card, Some(NOW + 7_200));
    postmark(&mut card, &postmark_request(2, b"doc", &[]));
    set_clock(&mut card, Some(NOW + 7_201));
    refused_unchanged(
        &mut card,
        &psd_apdu::issue_postmark(SET0, &postmark_request(3, b"doc", &[])),
        Status::CertificateMismatch,
    );
}

/// A register set that paid fees leaves the PSD and comes back (seed 003's export, a
/// version 2 file) with its fee registers: fees never turn into postage, and the set can
/// be retired (refunded) like any other.
#[test]
fn a_set_that_paid_fees_exports_and_imports_with_its_fee_registers() {
    use openpsd_core::psd::license::export::{Blob, BLOB_TAG_FEES};
    let ca = TestCa::standard();
    let (mut card, device_pk) = certmeter_card(SEED, true);
    activate_postmark_key(&mut card, &device_pk, &ca);
    postmark(&mut card, &postmark_request(1, b"doc", &[]));
    let paid = fees_of(&mut card, 0);
    assert_eq!(paid.0 .0, CERTIFICATE_FEE + POSTMARK_FEE);
    let before = registers(&mut card, 0);
    let blob = expect_ok(&card.transmit(&psd_apdu::export_prepare(SET0)));
    assert!(
        blob.starts_with(BLOB_TAG_FEES),
        "a set that paid is a version 2 file"
    );
    let decoded = Blob::decode(&blob).unwrap();
    assert_eq!((decoded.set.fees, decoded.set.services), paid);
    let digest = Blob::digest_of(&blob);
    expect_ok(&card.transmit(&psd_apdu::export_commit(SET0, &digest)));
    let slot = expect_ok(&card.transmit(&psd_apdu::import_set(&blob)));
    let back = registers(&mut card, slot[0]);
    assert_eq!(
        (back.ar, back.dr, back.control_sum),
        (before.ar, before.dr, before.control_sum)
    );
    assert_eq!(
        fees_of(&mut card, slot[0]),
        paid,
        "the fee registers came back"
    );
}
