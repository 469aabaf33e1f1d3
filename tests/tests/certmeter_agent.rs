//! Agent certificates (seed 004, Fig. 3A), in process: the PSD holds an agent CA
//! certificate under the customer's name constraints and certifies an employee's key from
//! a PKCS#10 request stock `openssl req` made; stock `openssl verify` accepts the employee's
//! certificate on the path CA → agent → employee. Every refusal: its status word and
//! nothing written.
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use der::Decode as _;
use openpsd_core::client::psd_apdu;
use openpsd_core::psd::certmeter::agent::{AgentIssued, AgentRequest};
use openpsd_core::psd::certmeter::attestation::Purpose;
use openpsd_core::psd::certmeter::rates::Service;
use openpsd_core::psd::certmeter::state::CertMeterState;
use openpsd_core::types::*;
use openpsd_core::Status;
use openpsd_tests::certmeter::*;
use openpsd_tests::*;
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage};
use x509_cert::Certificate;

const SEED: u64 = 57;
const SET0: RegisterSetIndex = RegisterSetIndex(0);
/// An employee inside the customer's organisation.
const BOB: &str = "/O=openpsd customer 42/OU=Sales/CN=bob";

/// The command refused with `status`, and the store unchanged (no write at all).
fn refused_unchanged(card: &mut TestCard, apdu: &[u8], status: Status) {
    let before = card.store().nvm().clone();
    let writes = card.store().writes();
    expect_refused(&card.transmit(apdu), status);
    assert_eq!(card.store().writes(), writes, "a refusal writes nothing");
    assert!(card.store().nvm() == &before, "a refusal changes nothing");
}

fn request(txn: &[u8; 8], days: u16, csr: &[u8]) -> AgentRequest {
    AgentRequest {
        transaction: TransactionId(*txn),
        days,
        csr: csr.to_vec(),
    }
}

fn issue(card: &mut TestCard, req: &AgentRequest) -> Vec<u8> {
    expect_ok(&card.transmit(&psd_apdu::issue_agent_certificate(SET0, req)))
}

fn secs(t: &x509_cert::time::Time) -> u64 {
    t.to_unix_duration().as_secs()
}

/// A card with an active agent key under `profile`; its agent certificate.
fn agent_card(profile: &AgentProfile) -> (TestCard, Vec<u8>, TestCa) {
    let (mut card, device_pk) = certmeter_card(SEED, true);
    let ca = TestCa::standard();
    let cert = activate_agent_key(&mut card, &device_pk, &ca, profile);
    (card, cert, ca)
}

#[test]
fn fig3a_an_employee_certificate_from_an_openssl_csr_is_verified_by_openssl() {
    // The agent certificate ends in 30 days: the employee's (asked for 365) ends with it.
    let agent_end = NOW + 30 * 86_400;
    let profile = AgentProfile {
        valid: (VALID_FROM, agent_end),
        ..AgentProfile::default()
    };
    let (mut card, agent_cert, ca) = agent_card(&profile);
    let r0 = registers(&mut card, 0);
    let (fees0, n0) = fees_of(&mut card, 0);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let csr = openssl_csr(d, "bob", BOB, "P-256", &[]);

    let req = request(b"agent001", 365, &csr);
    let reply = issue(&mut card, &req);
    let issued = AgentIssued::decode(&reply).unwrap();
    assert_eq!(issued.fee, Amount(AGENT_CERTIFICATE_FEE));
    let r1 = registers(&mut card, 0);
    assert_eq!(
        (r1.ar, r1.dr, r1.control_sum),
        (
            Amount(r0.ar.0 + AGENT_CERTIFICATE_FEE),
            Amount(r0.dr.0 - AGENT_CERTIFICATE_FEE),
            r0.control_sum
        )
    );
    assert_eq!(
        fees_of(&mut card, 0),
        (
            Amount(fees0.0 + AGENT_CERTIFICATE_FEE),
            PieceCount(n0.0 + 1)
        )
    );

    // Stock OpenSSL: the path CA → agent → employee, name constraints included.
    std::fs::write(d.join("ca.pem"), pem(&ca.cert_der)).unwrap();
    std::fs::write(d.join("agent.pem"), pem(&agent_cert)).unwrap();
    std::fs::write(d.join("bob.pem"), pem(&issued.certificate)).unwrap();
    let verify = [
        "verify",
        "-attime",
        &NOW.to_string(),
        "-CAfile",
        "ca.pem",
        "-untrusted",
        "agent.pem",
        "bob.pem",
    ];
    let (ok, text) = openssl(d, &verify);
    eprintln!("openssl {}\n{text}", verify.join(" "));
    assert!(ok && text.contains("bob.pem: OK"), "{text}");
    // The employee's key is the CSR's: a signature by bob.key verifies under bob.pem.
    std::fs::write(d.join("msg"), b"from bob").unwrap();
    let (ok, text) = openssl(
        d,
        &[
            "dgst", "-sha256", "-sign", "bob.key", "-out", "msg.sig", "msg",
        ],
    );
    assert!(ok, "{text}");
    let (ok, text) = openssl(d, &["x509", "-in", "bob.pem", "-pubkey", "-noout"]);
    assert!(ok, "{text}");
    std::fs::write(d.join("bob.pub"), text).unwrap();
    let (ok, text) = openssl(
        d,
        &[
            "dgst",
            "-sha256",
            "-verify",
            "bob.pub",
            "-signature",
            "msg.sig",
            "msg",
        ],
    );
    assert!(ok && text.contains("Verified OK"), "{text}");
    let (ok, text) = openssl(d, &["x509", "-in", "bob.pem", "-noout", "-text"]);
    assert!(ok, "{text}");
    assert!(text.contains("CA:FALSE"), "{text}");

    // What the card wrote.
    let cert = Certificate::from_der(&issued.certificate).unwrap();
    let agent = Certificate::from_der(&agent_cert).unwrap();
    let tbs = cert.tbs_certificate();
    assert_eq!(tbs.issuer(), agent.tbs_certificate().subject());
    assert_eq!(
        tbs.subject().to_string(),
        "CN=bob,OU=Sales,O=openpsd customer 42"
    );
    let (critical, bc) = tbs.get_extension::<BasicConstraints>().unwrap().unwrap();
    assert!(critical && !bc.ca, "CA:FALSE, critical");
    let (_, ku) = tbs.get_extension::<KeyUsage>().unwrap().unwrap();
    assert!(ku.digital_signature() && !ku.key_cert_sign());
    let v = tbs.validity();
    let av = agent.tbs_certificate().validity();
    assert_eq!(secs(&v.not_before), NOW);
    assert_eq!(secs(&v.not_after), agent_end, "capped at the agent's end");
    assert!(secs(&v.not_before) >= secs(&av.not_before));
    assert!(secs(&v.not_after) <= secs(&av.not_after));
    // Serial: 41 ‖ device ID ‖ the device's service counter.
    let mut serial = vec![0x41];
    serial.extend_from_slice(&DEVICE.0);
    serial.extend_from_slice(&1u32.to_be_bytes());
    assert_eq!(tbs.serial_number().as_bytes(), serial.as_slice());

    // A second employee: the next serial, a default validity (capped too).
    let csr2 = openssl_csr(d, "carol", "/O=openpsd customer 42/CN=carol", "P-256", &[]);
    let second = AgentIssued::decode(&issue(&mut card, &request(b"agent002", 0, &csr2))).unwrap();
    let c2 = Certificate::from_der(&second.certificate).unwrap();
    serial.truncate(9);
    serial.extend_from_slice(&2u32.to_be_bytes());
    assert_eq!(
        c2.tbs_certificate().serial_number().as_bytes(),
        serial.as_slice()
    );
    // Its retry asking for more days than the cap gave: the same certificate (the cap
    // gave it all it could); asking for fewer than it got: refused, nothing written.
    let second_bytes = second.encode();
    assert_eq!(
        issue(&mut card, &request(b"agent002", 400, &csr2)),
        second_bytes
    );
    refused_unchanged(
        &mut card,
        &psd_apdu::issue_agent_certificate(SET0, &request(b"agent002", 10, &csr2)),
        Status::TransactionIdReused,
    );
    // The retry of the first now is another transaction's: refused.
    refused_unchanged(
        &mut card,
        &psd_apdu::issue_agent_certificate(SET0, &request(b"agent002", 0, &csr)),
        Status::TransactionIdReused,
    );
}

#[test]
fn a_retry_gets_the_same_bytes_charged_once() {
    let (mut card, _, _) = agent_card(&AgentProfile::default());
    let dir = tempfile::tempdir().unwrap();
    let csr = openssl_csr(dir.path(), "bob", BOB, "P-256", &[]);
    let req = request(b"retry-me", 0, &csr);
    let first = issue(&mut card, &req);
    let after = registers(&mut card, 0);
    let fees = fees_of(&mut card, 0);
    let writes = card.store().writes();
    assert_eq!(issue(&mut card, &req), first, "the same bytes");
    assert_eq!(card.store().writes(), writes, "a retry writes nothing");
    assert_eq!(registers(&mut card, 0), after, "charged once");
    assert_eq!(fees_of(&mut card, 0), fees);
    // The days are part of the request: 365 is what 0 asked for; 364 is another request.
    assert_eq!(issue(&mut card, &request(b"retry-me", 365, &csr)), first);
    refused_unchanged(
        &mut card,
        &psd_apdu::issue_agent_certificate(SET0, &request(b"retry-me", 364, &csr)),
        Status::TransactionIdReused,
    );
    // Re-opened from memory: still the same bytes.
    let mut card = reopen_at(card.store().nvm(), SEED);
    assert_eq!(issue(&mut card, &req), first);
    // The same transaction ID with another request, or another set: refused.
    let other = openssl_csr(
        dir.path(),
        "eve",
        "/O=openpsd customer 42/CN=eve",
        "P-256",
        &[],
    );
    refused_unchanged(
        &mut card,
        &psd_apdu::issue_agent_certificate(SET0, &request(b"retry-me", 0, &other)),
        Status::TransactionIdReused,
    );
    // The same key and subject asking for a subjectAltName the first request did not ask
    // for: refused, never the certificate issued for other names.
    let (ok, text) = openssl(
        dir.path(),
        &[
            "req",
            "-new",
            "-key",
            "bob.key",
            "-subj",
            BOB,
            "-addext",
            "subjectAltName=email:bob@example.com",
            "-outform",
            "DER",
            "-out",
            "bob-san.csr",
        ],
    );
    assert!(ok, "openssl req: {text}");
    let with_san = std::fs::read(dir.path().join("bob-san.csr")).unwrap();
    refused_unchanged(
        &mut card,
        &psd_apdu::issue_agent_certificate(SET0, &request(b"retry-me", 0, &with_san)),
        Status::TransactionIdReused,
    );
    let st = CertMeterState::decode(&certmeter_record(&card).unwrap()).unwrap();
    assert_eq!(st.last.unwrap().service, Service::AgentCertificate);
}

#[test]
fn names_outside_the_constraints_are_refused_with_nothing_written() {
    let (mut card, _, _) = agent_card(&AgentProfile::default());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (stem, subj, extra) in [
        // Another organisation.
        ("o43", "/O=openpsd customer 43/CN=mallory", &[][..]),
        // The organisation's name as a prefix of another.
        ("o420", "/O=openpsd customer 420/CN=mallory", &[][..]),
        // Not first: the subtree is the name's first RDN.
        ("late", "/C=DE/O=openpsd customer 42/CN=mallory", &[][..]),
        // No subject.
        ("empty", "/", &[][..]),
        // Inside by subject, but a SAN of a type the agent has no subtree for.
        (
            "san",
            BOB,
            &["-addext", "subjectAltName=email:bob@example.com"][..],
        ),
        (
            "dns",
            BOB,
            &["-addext", "subjectAltName=DNS:www.example.com"][..],
        ),
        // A directoryName SAN outside.
        (
            "dirsan",
            BOB,
            &[
                "-addext",
                "subjectAltName=dirName:dir_sect",
                "-config",
                "dir.cnf",
            ][..],
        ),
    ] {
        if stem == "dirsan" {
            std::fs::write(
                d.join("dir.cnf"),
                "[req]\ndistinguished_name=dn\n[dn]\n[dir_sect]\nO=somebody else\nCN=x\n",
            )
            .unwrap();
        }
        let csr = openssl_csr(d, stem, subj, "P-256", extra);
        refused_unchanged(
            &mut card,
            &psd_apdu::issue_agent_certificate(SET0, &request(b"outside!", 0, &csr)),
            Status::NameOutsideConstraints,
        );
    }
    // The same subject inside, as PrintableStrings (the account's O is a UTF8String): the
    // card compares characters.
    std::fs::write(
        d.join("printable.cnf"),
        "[req]\ndistinguished_name=dn\nstring_mask=default\n[dn]\n",
    )
    .unwrap();
    let csr = openssl_csr(d, "printable", BOB, "P-256", &["-config", "printable.cnf"]);
    let (_, text) = openssl(d, &["asn1parse", "-inform", "DER", "-in", "printable.csr"]);
    assert!(
        text.lines()
            .any(|l| l.contains("PRINTABLESTRING") && l.ends_with(":openpsd customer 42")),
        "{text}"
    );
    issue(&mut card, &request(b"inside!!", 0, &csr));
}

#[test]
fn an_email_subtree_admits_its_mailboxes_only() {
    let profile = AgentProfile {
        permitted_email: vec!["example.com".into()],
        ..AgentProfile::default()
    };
    let (mut card, agent_cert, ca) = agent_card(&profile);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = openssl_csr(
        d,
        "out",
        BOB,
        "P-256",
        &["-addext", "subjectAltName=email:bob@example.org"],
    );
    refused_unchanged(
        &mut card,
        &psd_apdu::issue_agent_certificate(SET0, &request(b"mail-out", 0, &out)),
        Status::NameOutsideConstraints,
    );
    let csr = openssl_csr(
        d,
        "bob",
        BOB,
        "P-256",
        &["-addext", "subjectAltName=email:bob@example.com"],
    );
    let issued = AgentIssued::decode(&issue(&mut card, &request(b"mail-in!", 0, &csr))).unwrap();
    std::fs::write(d.join("ca.pem"), pem(&ca.cert_der)).unwrap();
    std::fs::write(d.join("agent.pem"), pem(&agent_cert)).unwrap();
    std::fs::write(d.join("bob.pem"), pem(&issued.certificate)).unwrap();
    let (ok, text) = openssl(
        d,
        &[
            "verify",
            "-attime",
            &NOW.to_string(),
            "-CAfile",
            "ca.pem",
            "-untrusted",
            "agent.pem",
            "bob.pem",
        ],
    );
    assert!(ok && text.contains("bob.pem: OK"), "{text}");
    let (_, text) = openssl(
        d,
        &["x509", "-in", "bob.pem", "-noout", "-ext", "subjectAltName"],
    );
    assert!(text.contains("email:bob@example.com"), "{text}");
}

#[test]
fn bad_requests_are_refused_with_nothing_written() {
    let (mut card, _, _) = agent_card(&AgentProfile::default());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let csr = openssl_csr(d, "bob", BOB, "P-256", &[]);
    // The self-signature broken (its last byte), then the subject changed under it.
    let mut bad_sig = csr.clone();
    let n = bad_sig.len();
    bad_sig[n - 1] ^= 1;
    let mut bad_subject = csr.clone();
    let at = bad_subject
        .windows(3)
        .position(|w| w == b"bob")
        .expect("CN in the CSR");
    bad_subject[at] = b'r';
    // Another curve, and not P-256 at all.
    let p384 = openssl_csr(d, "p384", BOB, "P-384", &[]);
    for (what, data) in [
        ("bad signature", bad_sig),
        ("subject changed", bad_subject),
        ("P-384", p384),
        ("not DER", b"not a request".to_vec()),
        ("truncated", csr[..csr.len() - 5].to_vec()),
    ] {
        eprintln!("{what}");
        refused_unchanged(
            &mut card,
            &psd_apdu::issue_agent_certificate(SET0, &request(b"bad-csr!", 0, &data)),
            Status::WrongData,
        );
    }
    // A request's data under mode 01 (the card generating the key) does not parse there
    // (certmeter_agent_generate.rs tests mode 01); unknown modes are refused.
    let mut apdu = psd_apdu::issue_agent_certificate(SET0, &request(b"mode-01!", 0, &csr));
    apdu[2] = 1;
    refused_unchanged(&mut card, &apdu, Status::WrongLength);
    for p1 in [2u8, 0xFF] {
        let mut apdu = psd_apdu::issue_agent_certificate(SET0, &request(b"mode-01!", 0, &csr));
        apdu[2] = p1;
        refused_unchanged(&mut card, &apdu, Status::IncorrectP1P2);
    }
    // No request, a transaction ID only.
    let short = psd_apdu::command(0x80, 0x56, 0, 0, b"12345678", 0);
    refused_unchanged(&mut card, &short, Status::WrongLength);
}

#[test]
fn a_card_without_an_agent_key_cannot_issue() {
    let (mut card, device_pk) = certmeter_card(SEED, true);
    let ca = TestCa::standard();
    // A postmark key is active; no agent key.
    activate_postmark_key(&mut card, &device_pk, &ca);
    expect_ok(&card.transmit(&psd_apdu::load_rate_table(&agent_table(2))));
    let dir = tempfile::tempdir().unwrap();
    let csr = openssl_csr(dir.path(), "bob", BOB, "P-256", &[]);
    refused_unchanged(
        &mut card,
        &psd_apdu::issue_agent_certificate(SET0, &request(b"no-agent", 0, &csr)),
        Status::NoKeyForPurpose,
    );
    // A pending agent key is not enough either.
    let (_, a) = generate(&mut card, Purpose::AgentCa, &device_pk);
    assert_eq!(a.purpose, Purpose::AgentCa);
    refused_unchanged(
        &mut card,
        &psd_apdu::issue_agent_certificate(SET0, &request(b"no-agent", 0, &csr)),
        Status::NoKeyForPurpose,
    );
}

#[test]
fn install_takes_only_a_constrained_agent_ca_certificate_for_an_agent_key() {
    let (mut card, device_pk) = certmeter_card(SEED, true);
    let ca = TestCa::standard();
    expect_ok(&card.transmit(&psd_apdu::load_rate_table(&agent_table(1))));
    expect_ok(&card.transmit(&psd_apdu::load_trust_anchor(&ca_anchor(&ca, 1))));
    let (_, a) = generate(&mut card, Purpose::AgentCa, &device_pk);
    let wrong = [
        AgentProfile {
            permitted: vec![],
            ..AgentProfile::default()
        },
        AgentProfile {
            nc_critical: false,
            ..AgentProfile::default()
        },
        AgentProfile {
            path_len: Some(1),
            ..AgentProfile::default()
        },
        AgentProfile {
            path_len: None,
            ..AgentProfile::default()
        },
        AgentProfile {
            ca: false,
            path_len: None,
            ..AgentProfile::default()
        },
    ];
    for p in &wrong {
        let cert = ca.agent_certificate(&a.public_key, p);
        refused_unchanged(
            &mut card,
            &psd_apdu::install_key_certificate(a.slot, SET0, &cert),
            Status::CertificateMismatch,
        );
    }
    // An end-entity (postmark) certificate for the agent key: refused too.
    let ee = ca.postmark_certificate(&a.public_key);
    refused_unchanged(
        &mut card,
        &psd_apdu::install_key_certificate(a.slot, SET0, &ee),
        Status::CertificateMismatch,
    );
    // And an agent CA certificate for a postmark key.
    let (_, pm) = generate(&mut card, Purpose::Postmark, &device_pk);
    let agent_for_pm = ca.agent_certificate(&pm.public_key, &AgentProfile::default());
    refused_unchanged(
        &mut card,
        &psd_apdu::install_key_certificate(pm.slot, SET0, &agent_for_pm),
        Status::CertificateMismatch,
    );
    let good = ca.agent_certificate(&a.public_key, &AgentProfile::default());
    expect_ok(&card.transmit(&psd_apdu::install_key_certificate(a.slot, SET0, &good)));
    assert!(cm_info(&mut card).active(Purpose::AgentCa).is_some());
}

#[test]
fn outside_the_agent_certificate_validity_nothing_is_sold() {
    let profile = AgentProfile {
        valid: (VALID_FROM, NOW + 3600),
        ..AgentProfile::default()
    };
    let (mut card, _, _) = agent_card(&profile);
    let dir = tempfile::tempdir().unwrap();
    let csr = openssl_csr(dir.path(), "bob", BOB, "P-256", &[]);
    set_clock(&mut card, Some(NOW + 7200));
    refused_unchanged(
        &mut card,
        &psd_apdu::issue_agent_certificate(SET0, &request(b"too-late", 0, &csr)),
        Status::CertificateMismatch,
    );
    set_clock(&mut card, None);
    refused_unchanged(
        &mut card,
        &psd_apdu::issue_agent_certificate(SET0, &request(b"no-clock", 0, &csr)),
        Status::ClockRefused,
    );
}

#[test]
fn without_an_agent_fee_or_funds_nothing_is_issued() {
    let (mut card, device_pk) = certmeter_card(SEED, true);
    let ca = TestCa::standard();
    // The agent key certified under the agent table, then a table without the agent fee.
    activate_agent_key(&mut card, &device_pk, &ca, &AgentProfile::default());
    expect_ok(&card.transmit(&psd_apdu::load_rate_table(&rate_table(
        2,
        today(),
        &[(Service::Postmark, POSTMARK_FEE)],
    ))));
    let dir = tempfile::tempdir().unwrap();
    let csr = openssl_csr(dir.path(), "bob", BOB, "P-256", &[]);
    refused_unchanged(
        &mut card,
        &psd_apdu::issue_agent_certificate(SET0, &request(b"no-rate!", 0, &csr)),
        Status::NoRate,
    );
    // A fee larger than the funds.
    expect_ok(&card.transmit(&psd_apdu::load_rate_table(&rate_table(
        3,
        today(),
        &[(Service::AgentCertificate, FUNDS * 10)],
    ))));
    let apdu = psd_apdu::issue_agent_certificate(SET0, &request(b"no-funds", 0, &csr));
    let before = card.store().nvm().clone();
    let resp = card.transmit(&apdu);
    assert_ne!(psd_apdu::sw(&resp), 0x9000);
    assert!(card.store().nvm() == &before, "nothing written");
    // The request encodes and decodes.
    let req = request(b"12345678", 9, &csr);
    assert_eq!(AgentRequest::decode(&req.encode()).unwrap(), req);
}
