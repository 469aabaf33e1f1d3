//! Issues N indicia through the APDU path (or, with `raw`, signs N payloads with the same
//! key type directly), for instruction-count profiling:
//! `valgrind --tool=callgrind target/release/examples/profile_indicium apdu 200`.
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use openpsd_core::client::psd_apdu;
use openpsd_core::crypto::IndiciumKey;
use openpsd_core::platform::SeededPlatform;
use openpsd_core::psd::device::{LicenseSlot, Personalization};
use openpsd_core::psd::indicium::IndiciumRequest;
use openpsd_core::psd::psd_card;
use openpsd_core::psd::refill::RefillCombination;
use openpsd_core::store::MemStore;
use openpsd_core::types::*;

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_default();
    let n: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(200);
    let kms = IndiciumKey::from_bytes(&[0x11; 32]).unwrap();
    let mut card = psd_card(MemStore::new(), SeededPlatform::new(1)).unwrap();
    card.transmit(&psd_apdu::select());
    let p = Personalization {
        device: DeviceId(*b"BENCH001"),
        kms_public_key: kms.public_key(),
        vendor_public_key: IndiciumKey::from_bytes(&[7; 32]).unwrap().public_key(),
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
    card.transmit(&psd_apdu::personalize(&p));
    let c = RefillCombination {
        device: p.device,
        license: LicenseId(1),
        amount: Amount(1 << 40),
        control_sum: Amount(0),
        refills: RefillCount(0),
        combination_id: [0; 8],
    };
    card.transmit(&psd_apdu::refill(RegisterSetIndex(0), &c.sign(&kms)));
    let req = IndiciumRequest {
        transaction: TransactionId([0; 8]),
        postage: Amount(85),
        date: Date::new(2026, 11, 21).unwrap(),
        rate: RateCategory(1),
        origin: PostalCode::new(b"10115").unwrap(),
        destination: PostalCode::new(b"20095").unwrap(),
    };
    let mut apdu = psd_apdu::issue_indicium(RegisterSetIndex(0), &req);
    let mut reply = Vec::new();
    let key = IndiciumKey::from_bytes(&[0x42; 32]).unwrap();
    let payload = vec![0x5A; 64];
    let p256key = p256::ecdsa::SigningKey::from_slice(&[0x42; 32]).unwrap();
    for i in 0..n {
        if mode == "raw" {
            std::hint::black_box(key.sign(&payload));
        } else if mode == "p256" {
            use p256::ecdsa::signature::Signer;
            let sig: p256::ecdsa::Signature = p256key.sign(&payload);
            std::hint::black_box(sig);
        } else {
            apdu[5..13].copy_from_slice(&(i + 1).to_be_bytes());
            card.handle(&apdu, &mut reply);
        }
    }
    println!("{:04X}", psd_apdu::sw(&reply));
}
