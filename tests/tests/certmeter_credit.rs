//! Credit (seed 004, Figs. 7-9), in process: a creditor's line of credit certificate on the
//! PSD's payment key (LOAD CREDIT LINE `80 58`), payment certificates drawn on it (PAY
//! `80 5A`) checked natively and by stock `openssl`, every refusal with nothing written,
//! and power cut at every write of both commands (clean and torn): remaining + Σ paid =
//! line, fees only rise, a charge exists if and only if its output is retrievable.
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::str::FromStr as _;
use std::time::{Duration, UNIX_EPOCH};

use der::asn1::OctetString;
use der::{Any, Encode as _};
use openpsd_core::client::psd_apdu;
use openpsd_core::crypto::sha256;
use openpsd_core::psd::certmeter::anchor::{Anchor, AnchorKind};
use openpsd_core::psd::certmeter::attestation::{KeyAttestation, Purpose};
use openpsd_core::psd::certmeter::credit::{
    split_pay_reply, CreditLine, CreditState, LineReply, PayRequest, PaymentInfo,
    CREDIT_LINE_OID_TEXT,
};
use openpsd_core::psd::certmeter::rates::Service;
use openpsd_core::psd::certmeter::state::SlotState;
use openpsd_core::psd::registers::Registers;
use openpsd_core::records::psd as rec;
use openpsd_core::store::{Nvm, PowerCut, Store as _};
use openpsd_core::types::*;
use openpsd_core::Status;
use openpsd_tests::certmeter::*;
use openpsd_tests::licenses::vendor_key;
use openpsd_tests::*;
use p256::ecdsa::{DerSignature, SigningKey};
use spki::{AlgorithmIdentifierOwned, ObjectIdentifier, SubjectPublicKeyInfoOwned};
use x509_cert::builder::profile::BuilderProfile;
use x509_cert::builder::{Builder as _, CertificateBuilder};
use x509_cert::certificate::TbsCertificate;
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, KeyUsages};
use x509_cert::ext::{Extension, ToExtension as _};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};

const SEED: u64 = 47;
const SET0: RegisterSetIndex = RegisterSetIndex(0);
const LINE_FEE: u64 = 50;
const PAYMENT_FEE: u64 = 3;
const LINE: u64 = 1_000;

// --- A test creditor: a self-signed root and line certificates on payment keys. ---

struct Profile {
    issuer: Name,
    subject: Name,
    /// `None`: the creditor's own root.
    line: Option<CreditLine>,
}

impl BuilderProfile for Profile {
    fn get_issuer(&self, _subject: &Name) -> Name {
        self.issuer.clone()
    }

    fn get_subject(&self) -> Name {
        self.subject.clone()
    }

    fn build_extensions(
        &self,
        _spk: spki::SubjectPublicKeyInfoRef<'_>,
        _issuer_spk: spki::SubjectPublicKeyInfoRef<'_>,
        tbs: &TbsCertificate,
    ) -> x509_cert::builder::Result<Vec<Extension>> {
        let subject = tbs.subject();
        let mut v: Vec<Extension> = Vec::new();
        let Some(line) = &self.line else {
            let bc = BasicConstraints {
                ca: true,
                path_len_constraint: Some(0),
            };
            v.push((true, &bc).to_extension(subject, &v)?);
            let ku = KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign);
            v.push((true, &ku).to_extension(subject, &v)?);
            return Ok(v);
        };
        let bc = BasicConstraints {
            ca: false,
            path_len_constraint: None,
        };
        v.push((true, &bc).to_extension(subject, &v)?);
        let ku = KeyUsage(KeyUsages::DigitalSignature | KeyUsages::NonRepudiation);
        v.push((true, &ku).to_extension(subject, &v)?);
        v.push(Extension {
            extn_id: ObjectIdentifier::new_unwrap(CREDIT_LINE_OID_TEXT),
            critical: false,
            extn_value: OctetString::new(line.to_der())?,
        });
        Ok(v)
    }
}

fn spki_of(sec1: &[u8; 65]) -> SubjectPublicKeyInfoOwned {
    SubjectPublicKeyInfoOwned {
        algorithm: AlgorithmIdentifierOwned {
            oid: ObjectIdentifier::new_unwrap("1.2.840.10045.2.1"),
            parameters: Some(Any::from(ObjectIdentifier::new_unwrap(
                "1.2.840.10045.3.1.7",
            ))),
        },
        subject_public_key: der::asn1::BitString::from_bytes(sec1).expect("bit string"),
    }
}

fn validity(from: u64, to: u64) -> Validity {
    let t = |s| Time::try_from(UNIX_EPOCH + Duration::from_secs(s)).expect("time");
    Validity::new(t(from), t(to))
}

/// 2026-12-31 00:00 UTC: the standard line's last day.
const LINE_TO: u64 = 1_798_675_200;

struct Creditor {
    key: SigningKey,
    name: Name,
    public_key: [u8; 65],
    cert_der: Vec<u8>,
}

impl Creditor {
    fn new(seed: &[u8]) -> Creditor {
        let key = SigningKey::from_slice(&sha256(seed)).expect("scalar");
        let mut public_key = [0u8; 65];
        public_key.copy_from_slice(key.verifying_key().to_sec1_point(false).as_bytes());
        let name = Name::from_str("CN=openpsd test creditor,O=openpsd,C=DE").expect("name");
        let cert = CertificateBuilder::new(
            Profile {
                issuer: name.clone(),
                subject: name.clone(),
                line: None,
            },
            SerialNumber::new(&[0x01]).expect("serial"),
            validity(VALID_FROM, VALID_TO),
            spki_of(&public_key),
        )
        .expect("builder")
        .build::<_, DerSignature>(&key)
        .expect("creditor certificate");
        Creditor {
            key,
            name,
            public_key,
            cert_der: cert.to_der().expect("DER"),
        }
    }

    fn standard() -> Creditor {
        Creditor::new(b"openpsd test creditor")
    }

    /// A line of credit certificate (Fig. 7A) on `payment_key`.
    fn line(&self, payment_key: &[u8; 65], number: u32, amount: u64, to: u64) -> Vec<u8> {
        let subject =
            Name::from_str("CN=alice,serialNumber=5053443030303031,O=openpsd customer 42")
                .expect("name");
        let cert = CertificateBuilder::new(
            Profile {
                issuer: self.name.clone(),
                subject,
                line: Some(CreditLine {
                    number,
                    amount: Amount(amount),
                    currency: *b"EUR",
                }),
            },
            SerialNumber::new(&[0x10, 0, number.to_be_bytes()[3]]).expect("serial"),
            validity(VALID_FROM, to),
            spki_of(payment_key),
        )
        .expect("builder")
        .build::<_, DerSignature>(&self.key)
        .expect("line certificate");
        cert.to_der().expect("DER")
    }

    fn anchor(&self, version: u32) -> Vec<u8> {
        Anchor {
            kind: AnchorKind::Creditor,
            version,
            public_key: self.public_key,
        }
        .sign(&vendor_key())
    }
}

// --- The card. ---

/// A card with a table pricing lines and payments, the creditor's anchor and a pending
/// payment key; its attestation.
fn credit_card(creditor: &Creditor) -> (TestCard, KeyAttestation) {
    let (mut card, device_pk) = certmeter_card(SEED, false);
    let table = rate_table(
        1,
        Date::new(2026, 11, 1).unwrap(),
        &[
            (Service::Postmark, POSTMARK_FEE),
            (Service::Certificate, CERTIFICATE_FEE),
            (Service::CreditLine, LINE_FEE),
            (Service::Payment, PAYMENT_FEE),
        ],
    );
    expect_ok(&card.transmit(&psd_apdu::load_rate_table(&table)));
    expect_ok(&card.transmit(&psd_apdu::load_trust_anchor(&creditor.anchor(1))));
    let (_, a) = generate(&mut card, Purpose::Payment, &device_pk);
    assert_eq!(a.purpose, Purpose::Payment);
    (card, a)
}

fn credit(card: &TestCard) -> Option<CreditState> {
    card.store()
        .read(rec::CREDIT)
        .unwrap()
        .map(|b| CreditState::decode(&b).expect("record decodes"))
}

fn pay_req(txn: u64, amount: u64, merchant: &str, order: &str) -> PayRequest {
    PayRequest {
        transaction: TransactionId(txn.to_be_bytes()),
        amount: Amount(amount),
        merchant: merchant.as_bytes().to_vec(),
        order: order.as_bytes().to_vec(),
    }
}

/// The command refused with `status`, and the store unchanged (no write at all).
fn refused_unchanged(card: &mut TestCard, apdu: &[u8], status: Status) {
    let before = card.store().nvm().clone();
    let writes = card.store().writes();
    expect_refused(&card.transmit(apdu), status);
    assert_eq!(card.store().writes(), writes, "a refusal writes nothing");
    assert!(card.store().nvm() == &before, "a refusal changes nothing");
}

/// Set 0's registers and fees paid, with AR + DR + pending = control sum checked.
fn books(card: &mut TestCard) -> (Registers, Amount) {
    let r = registers(card, 0);
    assert_eq!(r.ar.0 + r.dr.0 + r.pending.0, r.control_sum.0, "{r:?}");
    (r, fees_of(card, 0).0)
}

#[test]
fn seed004_fig8_fig9_line_loaded_payments_drawn_retried_and_checked_by_openssl() {
    let creditor = Creditor::standard();
    let (mut card, a) = credit_card(&creditor);
    let (r0, fees0) = books(&mut card);
    assert!(credit(&card).is_none());

    // Fig. 8: the line of credit certificate, loaded for the line fee; remaining = line.
    let line = creditor.line(&a.public_key, 1, LINE, LINE_TO);
    let reply = LineReply::decode(&expect_ok(
        &card.transmit(&psd_apdu::load_credit_line(SET0, &line)),
    ))
    .unwrap();
    assert_eq!(
        (reply.number, reply.fee, reply.remaining),
        (1, Amount(LINE_FEE), Amount(LINE))
    );
    let (r1, fees1) = books(&mut card);
    assert_eq!(Registers::decode(&reply.registers).unwrap(), r1);
    assert_eq!((r1.ar.0, r1.dr.0), (r0.ar.0 + LINE_FEE, r0.dr.0 - LINE_FEE));
    assert_eq!(fees1, Amount(fees0.0 + LINE_FEE));
    let info = cm_info(&mut card);
    let slot = info.active(Purpose::Payment).expect("payment key active");
    assert_eq!(slot.certificate, line);
    let c = credit(&card).unwrap();
    assert_eq!(
        (c.remaining, c.counter, c.line_hash),
        (Amount(LINE), 0, sha256(&line))
    );
    // Loaded again (a lost reply): the same answer, nothing written, no second fee.
    let writes = card.store().writes();
    let again = expect_ok(&card.transmit(&psd_apdu::load_credit_line(SET0, &line)));
    assert_eq!(LineReply::decode(&again).unwrap(), reply);
    assert_eq!(card.store().writes(), writes);

    // Fig. 9: a payment within the line, for the payment fee; only the fee moves money.
    let req = pay_req(1, 300, "shop-7", "order 1001");
    let bytes = expect_ok(&card.transmit(&psd_apdu::pay(SET0, &req)));
    let (fee, cert) = split_pay_reply(&bytes).unwrap();
    assert_eq!(fee, Amount(PAYMENT_FEE));
    let p = cert
        .verify(&a.public_key)
        .expect("signed by the payment key");
    assert_eq!(
        p,
        PaymentInfo {
            line: sha256(&line),
            counter: 1,
            device: DEVICE,
            amount: Amount(300),
            currency: *b"EUR",
            remaining: Amount(LINE - 300),
            merchant: b"shop-7".to_vec(),
            order: b"order 1001".to_vec(),
            time: NOW,
            transaction: req.transaction,
        }
    );
    let (r2, fees2) = books(&mut card);
    assert_eq!(
        (r2.ar.0, r2.dr.0, r2.control_sum, r2.pieces),
        (
            r1.ar.0 + PAYMENT_FEE,
            r1.dr.0 - PAYMENT_FEE,
            r1.control_sum,
            r1.pieces
        )
    );
    assert_eq!(fees2, Amount(fees1.0 + PAYMENT_FEE));
    // A retry: the same bytes, charged and drawn once.
    assert_eq!(expect_ok(&card.transmit(&psd_apdu::pay(SET0, &req))), bytes);
    assert_eq!(books(&mut card), (r2, fees2));
    assert_eq!(credit(&card).unwrap().remaining, Amount(LINE - 300));
    // The same transaction ID for another payment: refused, nothing written.
    refused_unchanged(
        &mut card,
        &psd_apdu::pay(SET0, &pay_req(1, 301, "shop-7", "order 1001")),
        Status::TransactionIdReused,
    );

    // Stock openssl: the line under the creditor, its extension, the payment's signature.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("creditor.pem"), pem(&creditor.cert_der)).unwrap();
    std::fs::write(d.join("line.pem"), pem(&line)).unwrap();
    std::fs::write(d.join("pay.der"), cert.to_der()).unwrap();
    std::fs::write(d.join("info.der"), &cert.info_der).unwrap();
    let sig = p256::ecdsa::Signature::from_slice(&cert.signature).unwrap();
    std::fs::write(d.join("sig.der"), sig.to_der().as_bytes()).unwrap();
    let (ok, text) = openssl(d, &["verify", "-CAfile", "creditor.pem", "line.pem"]);
    eprintln!("openssl verify -CAfile creditor.pem line.pem\n{text}");
    assert!(ok && text.contains("line.pem: OK"), "{text}");
    let (ok, text) = openssl(d, &["x509", "-in", "line.pem", "-noout", "-text"]);
    assert!(ok && text.contains(CREDIT_LINE_OID_TEXT), "{text}");
    let (ok, text) = openssl(
        d,
        &[
            "x509", "-in", "line.pem", "-noout", "-pubkey", "-out", "pub.pem",
        ],
    );
    assert!(ok, "{text}");
    let verify = [
        "dgst",
        "-sha256",
        "-verify",
        "pub.pem",
        "-signature",
        "sig.der",
        "info.der",
    ];
    let (ok, text) = openssl(d, &verify);
    eprintln!("openssl {}\n{text}", verify.join(" "));
    assert!(ok && text.contains("Verified OK"), "{text}");
    let (ok, text) = openssl(d, &["asn1parse", "-inform", "DER", "-in", "pay.der"]);
    eprintln!("openssl asn1parse -inform DER -in pay.der\n{text}");
    assert!(
        ok && text.contains("shop-7") && text.contains("ecdsa-with-SHA256"),
        "{text}"
    );
    // The lossless CMS expansion (pki/src/payment.rs): stock `openssl cms -verify` against
    // the creditor's certificate, the content extracted is the PaymentInfo, and back.
    let p7m = openpsd_pki::payment::expand(&cert, &line, &[]).unwrap();
    std::fs::write(d.join("pay.p7m"), &p7m).unwrap();
    let cms_verify = [
        "cms",
        "-verify",
        "-inform",
        "DER",
        "-in",
        "pay.p7m",
        "-CAfile",
        "creditor.pem",
        "-attime",
        &NOW.to_string(),
        "-out",
        "content.der",
    ];
    let (ok, text) = openssl(d, &cms_verify);
    eprintln!("openssl {}\n{text}", cms_verify.join(" "));
    assert!(ok && text.contains("Verification successful"), "{text}");
    assert_eq!(std::fs::read(d.join("content.der")).unwrap(), cert.info_der);
    let (back, signer) = openpsd_pki::payment::compact(&p7m).unwrap();
    assert_eq!(back, cert, "lossless");
    assert_eq!(signer, line);
    // With the creditor's certificate included it verifies the same.
    let with_chain =
        openpsd_pki::payment::expand(&cert, &line, std::slice::from_ref(&creditor.cert_der))
            .unwrap();
    std::fs::write(d.join("pay.p7m"), &with_chain).unwrap();
    let (ok, text) = openssl(d, &cms_verify);
    assert!(ok && text.contains("Verification successful"), "{text}");
    // Another line's certificate is refused, and a changed content fails openssl.
    let other_line = creditor.line(&a.public_key, 2, LINE, LINE_TO);
    assert!(openpsd_pki::payment::expand(&cert, &other_line, &[]).is_err());
    let mut forged_p7m = p7m.clone();
    let at = forged_p7m.windows(6).position(|w| w == b"shop-7").unwrap();
    forged_p7m[at + 5] = b'8';
    std::fs::write(d.join("pay.p7m"), &forged_p7m).unwrap();
    let (ok, text) = openssl(d, &cms_verify);
    assert!(!ok, "a changed PaymentInfo must fail: {text}");
    assert!(openpsd_pki::payment::compact(&forged_p7m).is_err());

    // A changed PaymentInfo fails.
    let mut forged = cert.info_der.clone();
    let at = forged.windows(6).position(|w| w == b"shop-7").unwrap();
    forged[at + 5] = b'8';
    std::fs::write(d.join("info.der"), &forged).unwrap();
    let (ok, text) = openssl(d, &verify);
    assert!(!ok && text.contains("Verification failure"), "{text}");

    // Over the line: 9A46, nothing written.
    refused_unchanged(
        &mut card,
        &psd_apdu::pay(SET0, &pay_req(2, LINE - 299, "shop-7", "order 1002")),
        Status::CreditInsufficient,
    );
    // Exactly the rest: accepted; counter 2, remaining 0.
    set_clock(&mut card, Some(NOW + 60));
    let bytes = expect_ok(&card.transmit(&psd_apdu::pay(
        SET0,
        &pay_req(3, LINE - 300, "shop-9", "o-2"),
    )));
    let p2 = split_pay_reply(&bytes)
        .unwrap()
        .1
        .verify(&a.public_key)
        .unwrap();
    assert_eq!(
        (p2.counter, p2.remaining, p2.time),
        (2, Amount::ZERO, NOW + 60)
    );
    refused_unchanged(
        &mut card,
        &psd_apdu::pay(SET0, &pay_req(4, 1, "shop-9", "o-3")),
        Status::CreditInsufficient,
    );

    // A newer line replaces the one held: remaining = the new line, counter from 0.
    let line2 = creditor.line(&a.public_key, 2, 5_000, LINE_TO);
    let reply = LineReply::decode(&expect_ok(
        &card.transmit(&psd_apdu::load_credit_line(SET0, &line2)),
    ))
    .unwrap();
    assert_eq!((reply.number, reply.remaining), (2, Amount(5_000)));
    // The older line again: refused, nothing written.
    refused_unchanged(
        &mut card,
        &psd_apdu::load_credit_line(SET0, &line),
        Status::NotNewer,
    );
    let bytes = expect_ok(&card.transmit(&psd_apdu::pay(SET0, &pay_req(5, 10, "m", "o"))));
    let p3 = split_pay_reply(&bytes)
        .unwrap()
        .1
        .verify(&a.public_key)
        .unwrap();
    assert_eq!(
        (p3.line, p3.counter, p3.remaining),
        (sha256(&line2), 1, Amount(4_990))
    );
    // All of it survives a power cycle.
    let mut card = reopen_at(card.store().nvm(), SEED);
    assert_eq!(credit(&card).unwrap().remaining, Amount(4_990));
    assert_eq!(
        expect_ok(&card.transmit(&psd_apdu::pay(SET0, &pay_req(5, 10, "m", "o")))),
        bytes
    );
}

#[test]
fn forged_foreign_expired_or_replayed_lines_and_bad_payments_refused_with_nothing_written() {
    let creditor = Creditor::standard();
    let (mut card, a) = credit_card(&creditor);
    // No line yet: no active payment key.
    refused_unchanged(
        &mut card,
        &psd_apdu::pay(SET0, &pay_req(1, 1, "m", "o")),
        Status::NoKeyForPurpose,
    );
    // Forged: the same line signed by another key.
    let forger = Creditor::new(b"not the creditor");
    refused_unchanged(
        &mut card,
        &psd_apdu::load_credit_line(SET0, &forger.line(&a.public_key, 1, LINE, LINE_TO)),
        Status::CertificateMismatch,
    );
    // Another device's line (a key this PSD does not hold).
    let other = SigningKey::from_slice(&sha256(b"another PSD's payment key")).unwrap();
    let mut other_pk = [0u8; 65];
    other_pk.copy_from_slice(other.verifying_key().to_sec1_point(false).as_bytes());
    refused_unchanged(
        &mut card,
        &psd_apdu::load_credit_line(SET0, &creditor.line(&other_pk, 1, LINE, LINE_TO)),
        Status::CertificateMismatch,
    );
    // Expired before today.
    refused_unchanged(
        &mut card,
        &psd_apdu::load_credit_line(
            SET0,
            &creditor.line(&a.public_key, 1, LINE, NOW - 86_400 * 2),
        ),
        Status::CertificateMismatch,
    );
    // Not a certificate at all.
    refused_unchanged(
        &mut card,
        &psd_apdu::load_credit_line(SET0, &[0x30, 0x03, 1, 2, 3]),
        Status::WrongData,
    );
    // Signed by the creditor's key, for this key, but without the line extension (the
    // test CA of the same seed has the creditor's key).
    refused_unchanged(
        &mut card,
        &psd_apdu::load_credit_line(
            SET0,
            &TestCa::new(b"openpsd test creditor").postmark_certificate(&a.public_key),
        ),
        Status::CertificateMismatch,
    );
    let line2 = creditor.line(&a.public_key, 2, LINE, LINE_TO);
    expect_ok(&card.transmit(&psd_apdu::load_credit_line(SET0, &line2)));
    // Replayed: an older line after a newer one, and another line of the same number.
    refused_unchanged(
        &mut card,
        &psd_apdu::load_credit_line(SET0, &creditor.line(&a.public_key, 1, LINE, LINE_TO)),
        Status::NotNewer,
    );
    refused_unchanged(
        &mut card,
        &psd_apdu::load_credit_line(SET0, &creditor.line(&a.public_key, 2, 9_999, LINE_TO)),
        Status::NotNewer,
    );
    // Bad payment requests: a zero amount, an empty or too long merchant.
    for req in [
        pay_req(1, 0, "m", "o"),
        pay_req(1, 1, "", "o"),
        pay_req(1, 1, &"m".repeat(33), "o"),
        pay_req(1, 1, "m", "o\n"),
    ] {
        refused_unchanged(&mut card, &psd_apdu::pay(SET0, &req), Status::WrongData);
    }
    // Past the line's last day: not signed.
    set_clock(&mut card, Some(LINE_TO + 86_400 + 10));
    refused_unchanged(
        &mut card,
        &psd_apdu::pay(SET0, &pay_req(1, 1, "m", "o")),
        Status::CertificateMismatch,
    );
    // The clock moved back behind the last payment.
    set_clock(&mut card, Some(NOW));
    expect_ok(&card.transmit(&psd_apdu::pay(SET0, &pay_req(2, 1, "m", "o"))));
    set_clock(&mut card, Some(NOW - 1));
    refused_unchanged(
        &mut card,
        &psd_apdu::pay(SET0, &pay_req(3, 1, "m", "o")),
        Status::ClockRefused,
    );
    // The payment key stays active under its line.
    let info = cm_info(&mut card);
    assert_eq!(
        info.active(Purpose::Payment).unwrap().state,
        SlotState::Active
    );
}

// --- Tearing. ---

/// Runs `apdu` on cards re-opened from `base`, cutting power at its write k = 0, 1, ...
/// (clean, then torn) until it completes uncut; `check` gets the card re-opened from what
/// the cut left. Returns the number of cut points.
fn sweep(base: &Nvm, apdu: &[u8], mut check: impl FnMut(TestCard, &str)) -> usize {
    let mut cuts = 0;
    for torn in [false, true] {
        for k in 0.. {
            let mut card = reopen_at(base, SEED);
            let start = card.store().writes();
            card.store_mut().set_power_cut(Some(PowerCut {
                at_write: start + k,
                torn,
            }));
            let resp = card.transmit(apdu);
            if !card.store().is_dead() {
                assert_eq!(psd_apdu::sw(&resp), 0x9000, "uncut command must succeed");
                break;
            }
            cuts += 1;
            let at = format!("cut {k} torn {torn}");
            assert_eq!(resp, Status::MemoryFailure.sw().to_be_bytes(), "{at}");
            check(reopen_at(card.store().nvm(), SEED), &at);
        }
    }
    assert!(cuts > 0, "the command writes");
    cuts
}

#[test]
fn tearing_at_every_write_of_load_credit_line_and_pay_keeps_credit_and_fees_whole() {
    let creditor = Creditor::standard();
    let (card, a) = credit_card(&creditor);
    let line = creditor.line(&a.public_key, 1, LINE, LINE_TO);

    // LOAD CREDIT LINE: either nothing (no line, no fee) or all (line, fee); the retry
    // completes, charged once.
    let base = card.store().nvm().clone();
    let (r0, fees0) = books(&mut reopen_at(&base, SEED));
    let load = psd_apdu::load_credit_line(SET0, &line);
    let cuts_load = sweep(&base, &load, |mut card, at| {
        let (r, fees) = books(&mut card);
        assert!(fees >= fees0, "{at}: fees only rise");
        match credit(&card) {
            None => {
                assert_eq!((r, fees), (r0, fees0), "{at}: no line, no fee");
                assert_eq!(
                    cm_info(&mut card).slots[usize::from(a.slot)].state,
                    SlotState::Pending,
                    "{at}"
                );
            }
            Some(c) => {
                assert_eq!(c.remaining, Amount(LINE), "{at}");
                assert_eq!(fees.0, fees0.0 + LINE_FEE, "{at}: the line, its fee");
            }
        }
        expect_ok(&card.transmit(&load));
        assert_eq!(
            books(&mut card).1 .0,
            fees0.0 + LINE_FEE,
            "{at}: charged once"
        );
        assert_eq!(credit(&card).unwrap().remaining, Amount(LINE), "{at}");
    });

    // PAY, after one payment of 100: remaining + Σ paid = line; charged ⇔ retrievable.
    let mut card = reopen_at(&base, SEED);
    expect_ok(&card.transmit(&load));
    expect_ok(&card.transmit(&psd_apdu::pay(SET0, &pay_req(1, 100, "m", "o1"))));
    let base = card.store().nvm().clone();
    let (_, fees1) = books(&mut reopen_at(&base, SEED));
    let req = pay_req(2, 250, "m", "o2");
    let pay = psd_apdu::pay(SET0, &req);
    let cuts_pay = sweep(&base, &pay, |mut card, at| {
        let (_, fees) = books(&mut card);
        let c = credit(&card).unwrap();
        assert!(fees >= fees1, "{at}: fees only rise");
        let paid = if c.counter == 2 { 350 } else { 100 };
        assert_eq!(
            c.remaining.0 + paid,
            LINE,
            "{at}: remaining + Σ paid = line"
        );
        // Charged if and only if the payment is kept for a retry.
        let charged = fees.0 == fees1.0 + PAYMENT_FEE;
        assert!(charged || fees == fees1, "{at}: {fees:?}");
        assert_eq!(charged, c.counter == 2, "{at}: a charge ⇔ a payment");
        assert_eq!(
            charged,
            c.last
                .as_ref()
                .is_some_and(|l| l.transaction == req.transaction),
            "{at}: a charge ⇔ its output retrievable"
        );
        let bytes = expect_ok(&card.transmit(&pay));
        let p = split_pay_reply(&bytes)
            .unwrap()
            .1
            .verify(&a.public_key)
            .unwrap();
        assert_eq!((p.counter, p.remaining), (2, Amount(LINE - 350)), "{at}");
        assert_eq!(books(&mut card).1 .0, fees1.0 + PAYMENT_FEE, "{at}: once");
        assert_eq!(expect_ok(&card.transmit(&pay)), bytes, "{at}: same bytes");
    });
    eprintln!("tear points: LOAD CREDIT LINE {cuts_load}, PAY {cuts_pay}");
}
