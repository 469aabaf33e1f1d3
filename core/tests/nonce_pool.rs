//! The nonce pool (issue 17 part 2, core/src/crypto/nonce.rs) through the APDU path:
//! indicia signed from the pool verify (core's verifier, p256's, and the `openssl` CLI),
//! differ from RFC 6979's (the pool was used), fall back to RFC 6979 when the pool is
//! empty, and a retry with the same transaction ID answers the same bytes, debited once,
//! across a reset (the pool is gone) and a reload from the store.
//!
//! `cargo test -p openpsd-core --test nonce_pool` (the OpenSSL test needs `openssl` on PATH).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use openpsd_core::client::psd_apdu;
use openpsd_core::crypto::{nonce, IndiciumKey};
use openpsd_core::platform::SeededPlatform;
use openpsd_core::psd::device::{DeviceInfo, LicenseSlot, Personalization};
use openpsd_core::psd::indicium::{self, IndiciumRequest, Verifier};
use openpsd_core::psd::psd_card;
use openpsd_core::psd::refill::RefillCombination;
use openpsd_core::psd::registers::Registers;
use openpsd_core::store::MemStore;
use openpsd_core::types::*;
use openpsd_core::Card;
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};

type TestCard = Card<MemStore, SeededPlatform>;

fn sw(r: &[u8]) -> u16 {
    psd_apdu::sw(r)
}

fn ok(r: Vec<u8>) -> Vec<u8> {
    assert_eq!(sw(&r), 0x9000, "{r:02X?}");
    r[..r.len() - 2].to_vec()
}

fn funded_card(seed: u64) -> TestCard {
    let kms = IndiciumKey::from_bytes(&[0x11; 32]).unwrap();
    let vendor = IndiciumKey::from_bytes(&[7; 32]).unwrap().public_key();
    let mut card = psd_card(MemStore::new(), SeededPlatform::new(seed)).unwrap();
    ok(card.transmit(&psd_apdu::select()));
    let p = Personalization {
        device: DeviceId(*b"NONCE001"),
        kms_public_key: kms.public_key(),
        vendor_public_key: vendor,
        max_postage: Amount(1_000),
        max_dr: Amount(u64::MAX / 2),
        inspection_days: 0,
        scheme: None,
        licenses: vec![LicenseSlot {
            license: LicenseId(1),
            origin: PostalCode::new(b"10115").unwrap(),
        }],
        postal_authority: None,
    };
    ok(card.transmit(&psd_apdu::personalize(&p)));
    let refill = RefillCombination {
        device: p.device,
        license: LicenseId(1),
        amount: Amount(1_000_000),
        control_sum: Amount(0),
        refills: RefillCount(0),
        combination_id: [0; 8],
    };
    ok(card.transmit(&psd_apdu::refill(RegisterSetIndex(0), &refill.sign(&kms))));
    card
}

fn public_key(card: &mut TestCard) -> [u8; 65] {
    let info = ok(card.transmit(&psd_apdu::get_data()));
    DeviceInfo::decode(&info).unwrap().unwrap().public_key
}

fn request(txn: u64) -> IndiciumRequest {
    IndiciumRequest {
        transaction: TransactionId(txn.to_be_bytes()),
        postage: Amount(85),
        date: Date::new(2026, 12, 1).unwrap(),
        rate: RateCategory(1),
        origin: PostalCode::new(b"10115").unwrap(),
        destination: PostalCode::new(b"20095").unwrap(),
    }
}

fn issue(card: &mut TestCard, txn: u64) -> Vec<u8> {
    ok(card.transmit(&psd_apdu::issue_indicium(
        RegisterSetIndex(0),
        &request(txn),
    )))
}

fn registers(card: &mut TestCard) -> Registers {
    Registers::decode(&ok(
        card.transmit(&psd_apdu::read_registers(RegisterSetIndex(0)))
    ))
    .unwrap()
}

/// Fills the selected PSD's pool the way a host does while idle; returns the batches.
fn fill(card: &mut TestCard) -> usize {
    let mut batches = 0;
    while card.idle() {
        batches += 1;
    }
    batches
}

fn p256_verifies(public_key: &[u8], indicium: &[u8]) -> bool {
    let (signed, signature) = indicium.split_at(indicium.len() - 64);
    let vk = VerifyingKey::from_sec1_bytes(public_key).unwrap();
    vk.verify(signed, &Signature::from_slice(signature).unwrap())
        .is_ok()
}

#[test]
fn pooled_indicia_verify_and_use_the_pool() {
    let mut card = funded_card(1);
    let pk = public_key(&mut card);
    let batches = fill(&mut card);
    assert_eq!(batches, nonce::CAPACITY.div_ceil(nonce::BATCH));
    assert!(!card.idle(), "a full pool does no more work");

    // The same request on a twin card with an empty pool: RFC 6979's bytes.
    let mut twin = funded_card(1);
    let deterministic = issue(&mut twin, 1);

    let verifier = Verifier::new(&pk).unwrap();
    let mut seen = std::collections::HashSet::new();
    for txn in 1..=200u64 {
        let ind = issue(&mut card, txn);
        verifier.verify(&ind).expect("core's prepared verifier");
        indicium::verify(&ind, &pk).expect("core's one-off verifier");
        assert!(p256_verifies(&pk, &ind), "p256 verifies");
        assert!(
            seen.insert(ind[ind.len() - 64..ind.len() - 32].to_vec()),
            "r never repeats"
        );
        if txn == 1 {
            assert_eq!(
                ind[..ind.len() - 64],
                deterministic[..deterministic.len() - 64]
            );
            assert_ne!(ind, deterministic, "signed from the pool, not RFC 6979");
        }
    }
    assert_eq!(registers(&mut card).pieces, PieceCount(200));
}

#[test]
fn an_empty_pool_falls_back_to_rfc_6979() {
    let mut a = funded_card(2);
    let mut b = funded_card(2);
    // Neither card's pool was filled: both sign deterministically, byte for byte alike.
    assert_eq!(issue(&mut a, 7), issue(&mut b, 7));
    // A pool of one batch is used up, then the signer falls back.
    assert!(a.idle());
    for txn in 8..8 + nonce::BATCH as u64 {
        let pooled = issue(&mut a, txn);
        assert_ne!(pooled, issue(&mut b, txn), "txn {txn} from the pool");
    }
    let txn = 8 + nonce::BATCH as u64;
    assert_eq!(
        issue(&mut a, txn),
        issue(&mut b, txn),
        "pool empty: RFC 6979 again"
    );
}

#[test]
fn a_retry_answers_the_pooled_bytes_debited_once() {
    let mut card = funded_card(3);
    let pk = public_key(&mut card);
    assert!(card.idle());
    let first = issue(&mut card, 42);
    let after = registers(&mut card);

    // Same card, same transaction: the stored signature, no second debit.
    assert_eq!(issue(&mut card, 42), first);
    assert_eq!(registers(&mut card), after);

    // A reset (power cycle) zeroizes the pool; the stored bytes still answer.
    card.reset();
    ok(card.transmit(&psd_apdu::select()));
    assert!(card.idle(), "the pool was emptied by the reset");
    assert_eq!(issue(&mut card, 42), first);
    assert_eq!(registers(&mut card), after);

    // A PSD loaded afresh from its store (the record holds the signature, version 5).
    let (store, platform) = card.into_parts();
    let mut card = psd_card(store, platform).unwrap();
    ok(card.transmit(&psd_apdu::select()));
    assert_eq!(issue(&mut card, 42), first);
    assert_eq!(registers(&mut card), after);
    assert!(p256_verifies(&pk, &first));

    // The same transaction ID with another request is still refused.
    let mut other = request(42);
    other.postage = Amount(86);
    let r = card.transmit(&psd_apdu::issue_indicium(RegisterSetIndex(0), &other));
    assert_ne!(sw(&r), 0x9000);
    assert_eq!(registers(&mut card), after);
}

/// A few pooled indicia checked by stock `openssl` (`dgst -sha256 -verify`), the
/// project's oracle: the public key as SPKI DER, the signature as DER.
#[test]
fn openssl_verifies_pooled_indicia() {
    let mut card = funded_card(4);
    let pk = public_key(&mut card);
    assert!(card.idle());
    let dir = std::env::temp_dir().join(format!("openpsd-nonce-pool-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // SubjectPublicKeyInfo of an uncompressed P-256 key: the fixed prefix, then the point.
    let mut spki = hex::decode("3059301306072a8648ce3d020106082a8648ce3d030107034200").unwrap();
    spki.extend_from_slice(&pk);
    let key_path = dir.join("key.der");
    std::fs::write(&key_path, &spki).unwrap();
    for txn in 1..=4u64 {
        let ind = issue(&mut card, txn);
        let (signed, signature) = ind.split_at(ind.len() - 64);
        let der = Signature::from_slice(signature).unwrap().to_der();
        let (msg_path, sig_path) = (dir.join("msg"), dir.join("sig.der"));
        std::fs::write(&msg_path, signed).unwrap();
        std::fs::write(&sig_path, der.as_bytes()).unwrap();
        let verify = |sig: &std::path::Path| {
            std::process::Command::new("openssl")
                .args(["dgst", "-sha256", "-keyform", "DER", "-verify"])
                .arg(&key_path)
                .arg("-signature")
                .arg(sig)
                .arg(&msg_path)
                .output()
                .expect("openssl on PATH")
        };
        let out = verify(&sig_path);
        assert!(
            out.status.success(),
            "openssl refused txn {txn}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // And refuses a corrupted one (the oracle can fail).
        let mut bad = signature.to_vec();
        bad[40] ^= 1;
        let bad_der = Signature::from_slice(&bad).unwrap().to_der();
        std::fs::write(&sig_path, bad_der.as_bytes()).unwrap();
        assert!(
            !verify(&sig_path).status.success(),
            "openssl accepted a bad signature"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
