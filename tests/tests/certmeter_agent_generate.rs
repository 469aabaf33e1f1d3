//! ISSUE AGENT CERTIFICATE mode 01 (seed 004 Fig. 3A, step 354): the PSD generates the
//! employee's key, certifies it, and hands it out as a PKCS#8 EncryptedPrivateKeyInfo
//! (PBES2: PBKDF2-HMAC-SHA256, AES-256-CBC). Stock `openssl pkcs8` opens it with the
//! password, the key is the certificate's, `openssl verify` accepts the chain; the scalar
//! is nowhere in the card's memory; refusals change nothing; a retry is the same bytes,
//! charged once, and needs the same password.
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::str::FromStr as _;

use der::{Decode as _, Encode as _};
use openpsd_core::client::psd_apdu;
use openpsd_core::psd::certmeter::agent::{AgentGenerated, GenerateRequest};
use openpsd_core::types::*;
use openpsd_core::Status;
use openpsd_tests::certmeter::*;
use openpsd_tests::*;
use x509_cert::name::Name;
use x509_cert::Certificate;

const SEED: u64 = 58;
const SET0: RegisterSetIndex = RegisterSetIndex(0);
const PASSWORD: &[u8] = b"correct horse battery";

fn subject(rfc4514: &str) -> Vec<u8> {
    Name::from_str(rfc4514).unwrap().to_der().unwrap()
}

fn request(txn: &[u8; 8], days: u16, password: &[u8], subj: &str) -> GenerateRequest {
    GenerateRequest {
        transaction: TransactionId(*txn),
        days,
        password: zeroize::Zeroizing::new(password.to_vec()),
        subject: subject(subj),
        alt_names: None,
    }
}

fn apdu(req: &GenerateRequest) -> Vec<u8> {
    psd_apdu::generate_agent_certificate(SET0, req).to_vec()
}

fn agent_card() -> (TestCard, Vec<u8>, TestCa) {
    let (mut card, device_pk) = certmeter_card(SEED, true);
    let ca = TestCa::standard();
    let cert = activate_agent_key(&mut card, &device_pk, &ca, &AgentProfile::default());
    (card, cert, ca)
}

/// The command refused with `status`, and the store unchanged (no write at all).
fn refused_unchanged(card: &mut TestCard, apdu: &[u8], status: Status) {
    let before = card.store().nvm().clone();
    let writes = card.store().writes();
    expect_refused(&card.transmit(apdu), status);
    assert_eq!(card.store().writes(), writes, "a refusal writes nothing");
    assert!(card.store().nvm() == &before, "a refusal changes nothing");
}

#[test]
fn openssl_opens_the_generated_key_and_it_is_the_certificates() {
    let (mut card, agent_cert, ca) = agent_card();
    let r0 = registers(&mut card, 0);
    let (fees0, n0) = fees_of(&mut card, 0);
    let req = request(
        b"gen-0001",
        30,
        PASSWORD,
        "CN=bob,OU=Sales,O=openpsd customer 42",
    );
    let t = std::time::Instant::now();
    let reply = expect_ok(&card.transmit(&apdu(&req)));
    eprintln!("mode 01 on the card path: {:?}", t.elapsed());
    let issued = AgentGenerated::decode(&reply).unwrap();
    assert_eq!(issued.fee, Amount(AGENT_CERTIFICATE_FEE));
    let r1 = registers(&mut card, 0);
    assert_eq!(r1.dr, Amount(r0.dr.0 - AGENT_CERTIFICATE_FEE));
    assert_eq!(r1.ar, Amount(r0.ar.0 + AGENT_CERTIFICATE_FEE));
    assert_eq!(r1.control_sum, r0.control_sum);
    assert_eq!(
        fees_of(&mut card, 0),
        (
            Amount(fees0.0 + AGENT_CERTIFICATE_FEE),
            PieceCount(n0.0 + 1)
        )
    );

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("pw"), [PASSWORD, b"\n"].concat()).unwrap();
    std::fs::write(d.join("key.p8"), &issued.encrypted_key).unwrap();
    std::fs::write(d.join("ca.pem"), pem(&ca.cert_der)).unwrap();
    std::fs::write(d.join("agent.pem"), pem(&agent_cert)).unwrap();
    std::fs::write(d.join("bob.pem"), pem(&issued.certificate)).unwrap();
    // The parameters OpenSSL reads: PBES2, PBKDF2 with SHA-256, AES-256-CBC.
    let (ok, text) = openssl(d, &["asn1parse", "-inform", "DER", "-in", "key.p8"]);
    assert!(ok, "{text}");
    for want in ["PBES2", "PBKDF2", "hmacWithSHA256", "aes-256-cbc"] {
        assert!(text.contains(want), "{want} in\n{text}");
    }
    // Stock `openssl pkcs8` opens it with the password file...
    let (ok, text) = openssl(
        d,
        &[
            "pkcs8", "-inform", "DER", "-in", "key.p8", "-passin", "file:pw", "-out", "bob.key",
        ],
    );
    assert!(ok, "openssl pkcs8: {text}");
    // ... and not with another.
    std::fs::write(d.join("bad"), b"correct horse battery!\n").unwrap();
    let (ok, _) = openssl(
        d,
        &[
            "pkcs8", "-inform", "DER", "-in", "key.p8", "-passin", "file:bad", "-out", "x.key",
        ],
    );
    assert!(!ok, "a wrong password must not open the key");
    // The key is the certificate's: the same public key, and a signature verifies.
    let (ok, from_key) = openssl(d, &["pkey", "-in", "bob.key", "-pubout"]);
    assert!(ok, "{from_key}");
    let (ok, from_cert) = openssl(d, &["x509", "-in", "bob.pem", "-pubkey", "-noout"]);
    assert!(ok, "{from_cert}");
    assert_eq!(from_key, from_cert);
    std::fs::write(d.join("bob.pub"), &from_cert).unwrap();
    std::fs::write(d.join("msg"), b"from bob").unwrap();
    let (ok, text) = openssl(
        d,
        &[
            "dgst", "-sha256", "-sign", "bob.key", "-out", "msg.sig", "msg",
        ],
    );
    assert!(ok, "{text}");
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
    // The chain CA → agent → employee.
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
    assert!(ok && text.contains("bob.pem: OK"), "{text}");
    let cert = Certificate::from_der(&issued.certificate).unwrap();
    let v = cert.tbs_certificate().validity();
    assert_eq!(
        v.not_after.to_unix_duration().as_secs() - v.not_before.to_unix_duration().as_secs(),
        30 * 86_400
    );

    // The scalar is nowhere in the card's memory: only its encryption is kept.
    let (ok, text) = openssl(
        d,
        &[
            "pkcs8", "-topk8", "-nocrypt", "-in", "bob.key", "-outform", "DER", "-out", "bob.der",
        ],
    );
    assert!(ok, "{text}");
    let plain = std::fs::read(d.join("bob.der")).unwrap();
    let scalar = &plain[36..68];
    assert!(
        !nvm_contains(card.store().nvm(), scalar),
        "the scalar is not kept"
    );
    assert!(nvm_contains(card.store().nvm(), &issued.encrypted_key));

    // A retry: the same bytes, nothing written, charged once.
    let writes = card.store().writes();
    let t = std::time::Instant::now();
    assert_eq!(expect_ok(&card.transmit(&apdu(&req))), reply);
    eprintln!(
        "mode 01 retry (one PBKDF2 to check the password): {:?}",
        t.elapsed()
    );
    assert_eq!(card.store().writes(), writes);
    assert_eq!(registers(&mut card, 0), r1);
    // Re-opened from memory: the same.
    let mut card = reopen_at(card.store().nvm(), SEED);
    assert_eq!(expect_ok(&card.transmit(&apdu(&req))), reply);
    // The same transaction with another password, other days, another subject, or as a
    // PKCS#10 request: refused, nothing written.
    for other in [
        request(
            b"gen-0001",
            30,
            b"another password",
            "CN=bob,OU=Sales,O=openpsd customer 42",
        ),
        request(
            b"gen-0001",
            31,
            PASSWORD,
            "CN=bob,OU=Sales,O=openpsd customer 42",
        ),
        request(
            b"gen-0001",
            30,
            PASSWORD,
            "CN=eve,OU=Sales,O=openpsd customer 42",
        ),
    ] {
        refused_unchanged(&mut card, &apdu(&other), Status::TransactionIdReused);
    }
    let csr = openssl_csr(d, "eve", "/O=openpsd customer 42/CN=eve", "P-256", &[]);
    let csr_req = openpsd_core::psd::certmeter::agent::AgentRequest {
        transaction: TransactionId(*b"gen-0001"),
        days: 30,
        csr,
    };
    refused_unchanged(
        &mut card,
        &psd_apdu::issue_agent_certificate(SET0, &csr_req),
        Status::TransactionIdReused,
    );
    // A second generated key: the next serial, another key.
    let second = AgentGenerated::decode(&expect_ok(&card.transmit(&apdu(&request(
        b"gen-0002",
        0,
        PASSWORD,
        "CN=carol,O=openpsd customer 42",
    )))))
    .unwrap();
    assert_ne!(second.encrypted_key, issued.encrypted_key);
}

#[test]
fn refusals_change_nothing() {
    let (mut card, _, _) = agent_card();
    let cases: Vec<(Vec<u8>, Status)> = vec![
        // Passwords too short, too long, or holding a line end or NUL.
        (
            apdu(&request(b"bad-0001", 0, b"short", "CN=bob,O=openpsd customer 42")),
            Status::WrongLength,
        ),
        (
            apdu(&request(b"bad-0002", 0, &[b'a'; 65], "CN=bob,O=openpsd customer 42")),
            Status::WrongLength,
        ),
        (
            apdu(&request(b"bad-0003", 0, b"pass\nword", "CN=bob,O=openpsd customer 42")),
            Status::WrongData,
        ),
        (
            apdu(&request(b"bad-0004", 0, b"pass\0word", "CN=bob,O=openpsd customer 42")),
            Status::WrongData,
        ),
        // Names outside the agent certificate's constraints.
        (
            apdu(&request(b"bad-0005", 0, PASSWORD, "CN=eve,O=openpsd customer 43")),
            Status::NameOutsideConstraints,
        ),
        (
            apdu(&request(b"bad-0006", 0, PASSWORD, "CN=eve,O=OPENPSD customer 42")),
            Status::NameOutsideConstraints,
        ),
        // An emailAddress in the subject with no rfc822Name subtree permitting it.
        (
            apdu(&request(
                b"bad-0007",
                0,
                PASSWORD,
                "1.2.840.113549.1.9.1=#160F626F62406578616D706C652E636F6D,CN=bob,O=openpsd customer 42",
            )),
            Status::NameOutsideConstraints,
        ),
    ];
    for (a, status) in cases {
        refused_unchanged(&mut card, &a, status);
    }
    // A subjectAltName outside (no rfc822Name subtree) and one not DER.
    let mut req = request(b"bad-0008", 0, PASSWORD, "CN=bob,O=openpsd customer 42");
    let san = x509_cert::ext::pkix::SubjectAltName(vec![
        x509_cert::ext::pkix::name::GeneralName::Rfc822Name(
            der::asn1::Ia5String::new("bob@example.com").unwrap(),
        ),
    ]);
    req.alt_names = Some(san.to_der().unwrap());
    refused_unchanged(&mut card, &apdu(&req), Status::NameOutsideConstraints);
    req.alt_names = Some(vec![0x30, 0x03, 0x81, 0x01]);
    refused_unchanged(&mut card, &apdu(&req), Status::WrongData);
    // A subject that is not a Name.
    let mut req = request(b"bad-0009", 0, PASSWORD, "CN=bob,O=openpsd customer 42");
    req.subject = vec![0x04, 0x00];
    refused_unchanged(&mut card, &apdu(&req), Status::WrongData);
    let a = apdu(&request(
        b"bad-0010",
        0,
        PASSWORD,
        "CN=bob,O=openpsd customer 42",
    ));
    // Unknown mode.
    let mut p1 = a.clone();
    p1[2] = 0x02;
    refused_unchanged(&mut card, &p1, Status::IncorrectP1P2);
    // After all that, the first proper request is issued, charged once.
    let r0 = registers(&mut card, 0);
    expect_ok(&card.transmit(&a));
    assert_eq!(
        registers(&mut card, 0).dr,
        Amount(r0.dr.0 - AGENT_CERTIFICATE_FEE)
    );
}
