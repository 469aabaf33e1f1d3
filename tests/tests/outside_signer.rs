//! A PSD whose indicia are signed outside it (PERSONALIZE P1 `01`, STORE SIGNATURE; issue
//! 17 §5, `docs/apdu.md` § 4.37), at the APDU level: the debit is committed before the
//! unsigned indicium leaves, a retry answers the same bytes debited once, another
//! transaction waits for the signature (`9A09`), a wrong signature changes nothing
//! (`9A0A`), and the stored signature makes an indicium that core's verifier and stock
//! `openssl dgst -verify` accept, answered again by every retry.
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use openpsd_core::client::psd_apdu;
use openpsd_core::crypto;
use openpsd_core::psd::device::DeviceInfo;
use openpsd_core::psd::indicium::{self, IndiciumData, IssueAnswer};
use openpsd_core::types::*;
use openpsd_core::Status;
use openpsd_tests::outside::{outside_card, sign, signer_public_key};
use openpsd_tests::*;
use p256::ecdsa::Signature;

const SET0: RegisterSetIndex = RegisterSetIndex(0);

fn issue(card: &mut TestCard, txn: u64, postage: u64) -> Vec<u8> {
    card.transmit(&psd_apdu::issue_indicium(SET0, &request(txn, postage, 21)))
}

#[test]
fn issue_commits_the_debit_and_answers_the_unsigned_indicium_once() {
    let mut card = outside_card(31, 10_000);
    let before = registers(&mut card, 0);
    let payload = expect_ok(&issue(&mut card, 1, 123));
    let data = IndiciumData::decode(&payload).expect("the unsigned indicium decodes exactly");
    assert_eq!(
        data.key_id,
        crypto::key_id(&signer_public_key()),
        "the signer's key ID"
    );
    let after = registers(&mut card, 0);
    assert_eq!(
        (after.ar.0, after.dr.0),
        (before.ar.0 + 123, before.dr.0 - 123)
    );
    assert_eq!(
        (data.ar, data.dr, data.pieces),
        (after.ar, after.dr, after.pieces)
    );
    // The debit is durable: the card re-opened shows it.
    assert_eq!(registers(&mut reopen(card.store().nvm(), 31), 0), after);

    // The same transaction again: the same unsigned bytes, no second debit, also after a
    // power cycle.
    assert_eq!(expect_ok(&issue(&mut card, 1, 123)), payload);
    let mut card = reopen(card.store().nvm(), 31);
    assert_eq!(expect_ok(&issue(&mut card, 1, 123)), payload);
    assert_eq!(registers(&mut card, 0), after);
    match IssueAnswer::read(payload.clone(), &signer_public_key()) {
        Ok(IssueAnswer::Pending(bytes, d)) => assert_eq!((bytes, d), (payload.clone(), data)),
        other => panic!("pending expected, got {other:?}"),
    }

    // Another transaction waits for the signature; the same ID with other data is reuse.
    expect_refused(&issue(&mut card, 2, 50), Status::SignaturePending);
    expect_refused(&issue(&mut card, 1, 124), Status::TransactionIdReused);
    assert_eq!(registers(&mut card, 0), after);
}

#[test]
fn store_signature_checks_it_keeps_it_and_answers_the_signed_indicium() {
    let mut card = outside_card(32, 10_000);
    let payload = expect_ok(&issue(&mut card, 7, 200));
    let after = registers(&mut card, 0);
    let signature = sign(&payload);

    // Wrong signatures change nothing: over other bytes, flipped, of another key, short.
    let other = sign(b"another message");
    let mut flipped = signature;
    flipped[40] ^= 1;
    let foreign = IndiciumKeyForTest::sign(&payload);
    for bad in [other, flipped, foreign] {
        expect_refused(
            &card.transmit(&psd_apdu::store_signature(SET0, &bad)),
            Status::SignatureInvalid,
        );
    }
    let short = openpsd_core::client::command(0x80, 0x46, 0, 0, &signature[..63], 256);
    expect_refused(&card.transmit(&short), Status::WrongLength);
    assert_eq!(
        expect_ok(&issue(&mut card, 7, 200)),
        payload,
        "still pending"
    );
    assert_eq!(registers(&mut card, 0), after);

    let signed = expect_ok(&card.transmit(&psd_apdu::store_signature(SET0, &signature)));
    assert_eq!(&signed[..payload.len()], &payload[..]);
    assert_eq!(&signed[payload.len()..], &signature[..]);
    let data = indicium::verify(&signed, &signer_public_key()).expect("core's verifier");
    assert_eq!((data.ar, data.dr), (after.ar, after.dr));
    assert_eq!(registers(&mut card, 0), after, "no second debit");

    // Nothing is pending any more; the retry answers the signed bytes, also re-opened.
    expect_refused(
        &card.transmit(&psd_apdu::store_signature(SET0, &signature)),
        Status::NoSignaturePending,
    );
    assert_eq!(expect_ok(&issue(&mut card, 7, 200)), signed);
    let mut card = reopen(card.store().nvm(), 32);
    assert_eq!(expect_ok(&issue(&mut card, 7, 200)), signed);
    match IssueAnswer::read(signed.clone(), &signer_public_key()) {
        Ok(IssueAnswer::Signed(bytes, _)) => assert_eq!(bytes, signed),
        other => panic!("signed expected, got {other:?}"),
    }
    // The next transaction goes through, pending in its turn.
    let next = expect_ok(&issue(&mut card, 8, 10));
    assert!(IndiciumData::decode(&next).is_ok());
    assert_eq!(registers(&mut card, 0).ar.0, after.ar.0 + 10);
}

/// WebCrypto's ECDSA does not normalize s: both (r, s) and (r, n − s) are accepted.
#[test]
fn a_high_s_signature_is_accepted() {
    let mut card = outside_card(33, 10_000);
    let payload = expect_ok(&issue(&mut card, 3, 99));
    let sig = Signature::from_slice(&sign(&payload)).expect("signature");
    let flipped = Signature::from_scalars(sig.r().to_bytes(), (-*sig.s()).to_bytes())
        .expect("n − s is a scalar");
    let (low, high) = match sig.normalize_s() == sig {
        true => (sig, flipped),
        false => (flipped, sig),
    };
    assert_ne!(low.to_bytes(), high.to_bytes());
    let high: [u8; 64] = high.to_bytes().into();
    let signed = expect_ok(&card.transmit(&psd_apdu::store_signature(SET0, &high)));
    indicium::verify(&signed, &signer_public_key()).expect("verifies");
}

/// The signed indicium checked by stock OpenSSL under the signer's public key.
#[test]
fn openssl_verifies_the_stored_signature() {
    use p256::pkcs8::EncodePublicKey;
    let mut card = outside_card(34, 10_000);
    let payload = expect_ok(&issue(&mut card, 4, 150));
    let signature = sign(&payload);
    let signed = expect_ok(&card.transmit(&psd_apdu::store_signature(SET0, &signature)));
    let (body, sig) = signed.split_at(signed.len() - 64);
    let dir = tempfile::tempdir().expect("temp dir");
    let pk = p256::PublicKey::from_sec1_bytes(&signer_public_key()).expect("key");
    std::fs::write(
        dir.path().join("pub.der"),
        pk.to_public_key_der().expect("DER").as_bytes(),
    )
    .expect("write");
    std::fs::write(dir.path().join("body"), body).expect("write");
    let der = Signature::from_slice(sig).expect("r ‖ s").to_der();
    std::fs::write(dir.path().join("sig.der"), der.as_bytes()).expect("write");
    let args = [
        "dgst",
        "-sha256",
        "-verify",
        "pub.der",
        "-keyform",
        "DER",
        "-signature",
        "sig.der",
        "body",
    ];
    let (ok, text) = certmeter::openssl(dir.path(), &args);
    assert!(ok && text.contains("Verified OK"), "openssl: {text}");
    // And refuses the indicium once a byte of it changed.
    let mut body2 = body.to_vec();
    body2[20] ^= 1;
    std::fs::write(dir.path().join("body"), body2).expect("write");
    let (ok, _) = certmeter::openssl(dir.path(), &args);
    assert!(!ok, "openssl refuses a changed indicium");
}

/// The device key stays inside: audits and refills go on (the KMS checks them with it),
/// GET DATA shows it, and PERSONALIZE P1 `01` refuses what is not a P-256 point.
#[test]
fn the_device_key_still_signs_audits_and_a_bad_signer_key_is_refused() {
    let mut card = outside_card(35, 10_000);
    let info = DeviceInfo::decode(&expect_ok(&card.transmit(&psd_apdu::get_data())))
        .expect("decodes")
        .expect("personalized");
    assert_ne!(info.public_key, signer_public_key());
    // A second refill after an indicium: AUDIT verifies under the device key.
    let payload = expect_ok(&issue(&mut card, 5, 100));
    let msg = Kms::new().refill_for(&mut card, SET0, Amount(500), [2; 8]);
    expect_ok(&card.transmit(&psd_apdu::refill(SET0, &msg)));
    // The pending indicium is still pending, and still signable.
    let signed = expect_ok(&card.transmit(&psd_apdu::store_signature(SET0, &sign(&payload))));
    indicium::verify(&signed, &signer_public_key()).expect("verifies");

    let mut blank = blank_card(36);
    let mut bad = signer_public_key();
    bad[64] ^= 1;
    expect_refused(
        &blank.transmit(&psd_apdu::personalize_outside(&bad, &personalization())),
        Status::WrongData,
    );
    let short = openpsd_core::client::command(0x80, 0x10, 1, 0, &[4; 30], 256);
    expect_refused(&blank.transmit(&short), Status::WrongData);
    // Nothing was personalized by the refusals.
    assert_eq!(expect_ok(&blank.transmit(&psd_apdu::get_data())), [0]);
}

/// A PSD personalized with P1 `00` signs inside as before, and has nothing to store.
#[test]
fn a_psd_that_signs_inside_refuses_store_signature() {
    let (mut card, pk) = funded_card(37, 10_000);
    let ind = expect_ok(&issue(&mut card, 1, 100));
    indicium::verify(&ind, &pk).expect("signed inside");
    expect_refused(
        &card.transmit(&psd_apdu::store_signature(SET0, &[1; 64])),
        Status::NoSignaturePending,
    );
}

/// A key that is not the signer's.
struct IndiciumKeyForTest;

impl IndiciumKeyForTest {
    fn sign(msg: &[u8]) -> [u8; 64] {
        use p256::ecdsa::signature::Signer;
        let key = p256::ecdsa::SigningKey::from_slice(&[0x33; 32]).expect("scalar");
        let sig: Signature = key.sign(msg);
        sig.to_bytes().into()
    }
}

/// The typed client's `issue_indicium` expects a signed answer. Over a link it cannot
/// know beforehand (GET DATA does not show the outside signer), so it says what happened:
/// `SignedOutside`, the debit committed once, and `issue_outside` with the same request
/// answers that very indicium without a second debit. A host with the card's store
/// (`signs_outside`) refuses before the debit: the wasm module does (its own test).
#[test]
fn the_typed_issue_says_signed_outside_and_the_same_request_completes_it() {
    use openpsd_core::client::{ClientError, PsdClient};
    use openpsd_core::psd::outside_signer::signs_outside;

    let mut card = outside_card(37, 10_000);
    assert!(signs_outside(card.store(), SET0), "known from the store");
    let before = registers(&mut card, 0);
    let req = request(1, 123, 21);
    let mut client = PsdClient::new(&mut card);
    client.select().unwrap();
    let e = client.issue_indicium(SET0, &req).unwrap_err();
    assert!(matches!(e, ClientError::SignedOutside), "{e:?}");
    assert!(e.to_string().contains("issue_outside"), "{e}");
    let answer = client
        .issue_outside(SET0, &req, &signer_public_key())
        .unwrap();
    assert!(matches!(answer, IssueAnswer::Pending(..)), "{answer:?}");
    let after = registers(&mut card, 0);
    assert_eq!(
        (after.dr.0, after.pieces.0),
        (before.dr.0 - 123, before.pieces.0 + 1),
        "debited once"
    );
}
