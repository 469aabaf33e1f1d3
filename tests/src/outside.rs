//! The outside signer of a PSD personalized with PERSONALIZE P1 `01` (feature `webcrypto`):
//! a P-256 key of the test's own (p256's ECDSA, not core's signer), the card made with its
//! public key, and the signature STORE SIGNATURE takes, as WebCrypto gives it (r ‖ s).

use openpsd_core::client::psd_apdu;
use openpsd_core::types::*;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};

use crate::{blank_card, expect_ok, personalization, Kms, TestCard};

/// The outside signer: a fixed key, so a test's bytes repeat.
pub fn signer() -> SigningKey {
    SigningKey::from_slice(&[0x5A; 32]).expect("scalar")
}

/// Its public key, SEC1 uncompressed.
pub fn signer_public_key() -> [u8; 65] {
    let mut pk = [0u8; 65];
    pk.copy_from_slice(signer().verifying_key().to_sec1_point(false).as_bytes());
    pk
}

/// The outside signature (r ‖ s) of `payload`, by [`signer`].
pub fn sign(payload: &[u8]) -> [u8; 64] {
    let sig: Signature = signer().sign(payload);
    sig.to_bytes().into()
}

/// A card personalized with [`signer_public_key`] (P1 `01`) and `amount` refilled on set 0.
pub fn outside_card(seed: u64, amount: u64) -> TestCard {
    let mut card = blank_card(seed);
    expect_ok(&card.transmit(&psd_apdu::personalize_outside(
        &signer_public_key(),
        &personalization(),
    )));
    let msg = Kms::new().refill_for(&mut card, RegisterSetIndex(0), Amount(amount), [1; 8]);
    expect_ok(&card.transmit(&psd_apdu::refill(RegisterSetIndex(0), &msg)));
    card
}
