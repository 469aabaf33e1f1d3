//! The box's keys: generated inside at PERSONALIZE (through the platform's randomness),
//! never exported, one purpose each (docs/virtual-meter.md §2).
//!
//! - `K_rec` (AES-256-CMAC): the MAC of every meter record.
//! - `K_wrap` (AES-256-CMAC as a KDF): per-meter wrap keys, SP 800-108 counter-mode KDF of
//!   the meter ID (the seed's keys "derived by encrypting the serial"); a meter's indicium
//!   key is sealed under its wrap key with AES-SIV (RFC 5297), the meter ID as associated data.
//! - `K_gen` (AES-256-CMAC as a KDF): the seed of each meter's indicium key. The scalar is
//!   derived from the meter ID, its slot and the shard root before CREATE METER, so a
//!   CREATE re-run by RESUME gives the same key and the same bytes, while no one without
//!   `K_gen` can predict it.
//! - `K_auth` (AES-256-CMAC): the mailers' password verifiers (the seed's authentication
//!   box 40, [`super::auth`]). A box personalized before it existed gets it at its first
//!   ENROLL MAILER.

use aes_siv::aead::KeyInit;
use aes_siv::siv::Aes256Siv;
use alloc::vec::Vec;
use cmac::{Cmac, Mac};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::crypto::{IndiciumKey, MAC_LEN};
use crate::platform::Platform;
use crate::types::DeviceId;

/// Length of each box key (AES-256).
pub const BOX_KEY_LEN: usize = 32;
/// Length of a wrapped indicium key: SIV tag 16 ‖ scalar 32.
pub const WRAPPED_KEY_LEN: usize = 48;

const LABEL_WRAP: &[u8] = b"openpsd vbox wrap v1";
const LABEL_GEN: &[u8] = b"openpsd vbox indicium key v1";
const LABEL_AUTH: &[u8] = b"openpsd vbox mailer verifier v1";

/// Length of a mailer ID (the data center's, as in the meter record).
pub const MAILER_ID_LEN: usize = 16;
/// Length of the password hash the data center sends (its Argon2id output).
pub const PASSWORD_HASH_LEN: usize = 32;
/// Length of a mailer's verifier (an AES-CMAC tag).
pub const VERIFIER_LEN: usize = MAC_LEN;

/// One AES-256 CMAC key.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Cmac256([u8; BOX_KEY_LEN]);

impl Cmac256 {
    /// Wraps raw key bytes.
    pub fn new(bytes: [u8; BOX_KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// Generates a key from the platform's randomness.
    pub fn generate(platform: &mut dyn Platform) -> Self {
        let mut k = [0u8; BOX_KEY_LEN];
        platform.fill_random(&mut k);
        Self(k)
    }

    /// The raw key, for the box's own store.
    pub fn expose(&self) -> &[u8; BOX_KEY_LEN] {
        &self.0
    }

    /// AES-256-CMAC over the concatenation of `parts`.
    pub fn mac(&self, parts: &[&[u8]]) -> [u8; MAC_LEN] {
        let mut m = <Cmac<aes::Aes256> as KeyInit>::new(&self.0.into());
        for p in parts {
            m.update(p);
        }
        m.finalize().into_bytes().into()
    }

    /// Whether `tag` is the MAC of `parts` (constant time).
    pub fn verify(&self, parts: &[&[u8]], tag: &[u8]) -> bool {
        tag.len() == MAC_LEN && bool::from(self.mac(parts).ct_eq(tag))
    }

    /// SP 800-108 KDF in counter mode with AES-256-CMAC as the PRF:
    /// block *i* = CMAC(i (1 byte) ‖ label ‖ `00` ‖ context ‖ L (2 bytes, bits)).
    pub fn kdf<const N: usize>(&self, label: &[u8], context: &[&[u8]]) -> Zeroizing<[u8; N]> {
        let mut out = Zeroizing::new([0u8; N]);
        // N is a small constant (32 or 64): the bit length fits two bytes.
        let bits = u16::try_from(N * 8).unwrap_or(u16::MAX).to_be_bytes();
        for (i, chunk) in out.chunks_mut(MAC_LEN).enumerate() {
            let counter = [u8::try_from(i + 1).unwrap_or(u8::MAX)];
            let mut m = <Cmac<aes::Aes256> as KeyInit>::new(&self.0.into());
            m.update(&counter);
            m.update(label);
            m.update(&[0]);
            for c in context {
                m.update(c);
            }
            m.update(&bits);
            let block: [u8; MAC_LEN] = m.finalize().into_bytes().into();
            chunk.copy_from_slice(&block[..chunk.len()]);
        }
        out
    }
}

impl core::fmt::Debug for Cmac256 {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Cmac256(..)")
    }
}

/// The box's secret keys.
#[derive(Clone, Debug)]
pub struct BoxKeys {
    /// Meter record MACs.
    pub rec: Cmac256,
    /// Per-meter wrap keys.
    pub wrap: Cmac256,
    /// Per-meter indicium key generation.
    pub gen: Cmac256,
    /// Mailers' password verifiers; `None` in a box personalized before they existed,
    /// until its first ENROLL MAILER.
    pub auth: Option<Cmac256>,
}

impl BoxKeys {
    /// Four fresh keys from the platform.
    pub fn generate(platform: &mut dyn Platform) -> Self {
        Self {
            rec: Cmac256::generate(platform),
            wrap: Cmac256::generate(platform),
            gen: Cmac256::generate(platform),
            auth: Some(Cmac256::generate(platform)),
        }
    }

    /// A mailer's verifier: CMAC under `K_auth` of the label, the mailer ID and the
    /// password hash (`None` without `K_auth`). Bound to the mailer, so a verifier copied
    /// to another mailer's row does not log in as that mailer.
    pub fn mailer_verifier(
        &self,
        mailer: &[u8; MAILER_ID_LEN],
        password_hash: &[u8; PASSWORD_HASH_LEN],
    ) -> Option<[u8; VERIFIER_LEN]> {
        Some(
            self.auth
                .as_ref()?
                .mac(&[LABEL_AUTH, mailer, password_hash]),
        )
    }

    /// Whether `verifier` is the mailer's for `password_hash` (constant time; `None`
    /// without `K_auth`).
    pub fn check_mailer(
        &self,
        mailer: &[u8; MAILER_ID_LEN],
        password_hash: &[u8; PASSWORD_HASH_LEN],
        verifier: &[u8; VERIFIER_LEN],
    ) -> Option<bool> {
        Some(
            self.auth
                .as_ref()?
                .verify(&[LABEL_AUTH, mailer, password_hash], verifier),
        )
    }

    fn meter_wrap_cipher(&self, meter: DeviceId) -> Aes256Siv {
        let k = self.wrap.kdf::<64>(LABEL_WRAP, &[&meter.0]);
        let bytes: &[u8; 64] = &k;
        Aes256Siv::new(bytes.into())
    }

    /// A new meter's indicium key: derived from `K_gen`, the meter, its slot and the shard
    /// root before the meter was created (deterministic for RESUME). Rejection sampling
    /// over a counter, as [`IndiciumKey::generate`] does over random bytes.
    pub fn meter_indicium_key(&self, meter: DeviceId, slot: u32, root: &[u8; 32]) -> IndiciumKey {
        let mut attempt = 0u32;
        loop {
            let s = self.gen.kdf::<32>(
                LABEL_GEN,
                &[&meter.0, &slot.to_be_bytes(), root, &attempt.to_be_bytes()],
            );
            if let Some(k) = IndiciumKey::from_bytes(s.as_ref()) {
                return k;
            }
            attempt = attempt.wrapping_add(1);
        }
    }

    /// Seals a meter's indicium key under its wrap key (`None` only if AES-SIV failed,
    /// which it does not for a 32-byte key).
    pub fn wrap_key(&self, meter: DeviceId, key: &IndiciumKey) -> Option<[u8; WRAPPED_KEY_LEN]> {
        let mut cipher = self.meter_wrap_cipher(meter);
        let sealed = cipher
            .encrypt([&meter.0[..]], key.secret_bytes().as_ref())
            .ok()?;
        sealed.try_into().ok()
    }

    /// Opens a meter's wrapped indicium key; `None` if it was not sealed for this meter by
    /// this box.
    pub fn unwrap_key(&self, meter: DeviceId, wrapped: &[u8]) -> Option<IndiciumKey> {
        let mut cipher = self.meter_wrap_cipher(meter);
        let plain: Zeroizing<Vec<u8>> =
            Zeroizing::new(cipher.decrypt([&meter.0[..]], wrapped).ok()?);
        IndiciumKey::from_bytes(&plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> BoxKeys {
        BoxKeys {
            rec: Cmac256::new([1; 32]),
            wrap: Cmac256::new([2; 32]),
            gen: Cmac256::new([3; 32]),
            auth: Some(Cmac256::new([5; 32])),
        }
    }

    /// AES-256-CMAC: NIST SP 800-38B appendix D.3, example 2 (a 16-byte message).
    #[test]
    fn cmac_aes256_sp800_38b() {
        let key: [u8; 32] =
            hex::decode("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4")
                .unwrap()
                .try_into()
                .unwrap();
        let msg = hex::decode("6bc1bee22e409f96e93d7e117393172a").unwrap();
        assert_eq!(
            hex::encode(Cmac256::new(key).mac(&[&msg])),
            "28a7023f452e8f82bd4bf28d8c37c35c"
        );
    }

    #[test]
    fn wrap_is_bound_to_the_meter_and_derivation_is_deterministic() {
        let k = keys();
        let (a, b) = (DeviceId(*b"VM000001"), DeviceId(*b"VM000002"));
        let key = k.meter_indicium_key(a, 7, &[9; 32]);
        assert_eq!(
            key.public_key(),
            k.meter_indicium_key(a, 7, &[9; 32]).public_key()
        );
        assert_ne!(
            key.public_key(),
            k.meter_indicium_key(a, 8, &[9; 32]).public_key()
        );
        let w = k.wrap_key(a, &key).unwrap();
        assert_eq!(k.unwrap_key(a, &w).unwrap().public_key(), key.public_key());
        assert!(k.unwrap_key(b, &w).is_none(), "another meter's wrapped key");
        let mut bad = w;
        bad[20] ^= 1;
        assert!(k.unwrap_key(a, &bad).is_none(), "an edited wrapped key");
        let other = BoxKeys {
            wrap: Cmac256::new([4; 32]),
            ..keys()
        };
        assert!(other.unwrap_key(a, &w).is_none(), "another box");
    }

    #[test]
    fn a_verifier_holds_for_its_mailer_and_password_hash_only() {
        let k = keys();
        let (a, b) = ([0xA1; 16], [0xB2; 16]);
        let v = k.mailer_verifier(&a, &[7; 32]).unwrap();
        assert_eq!(k.check_mailer(&a, &[7; 32], &v), Some(true));
        assert_eq!(
            k.check_mailer(&a, &[8; 32], &v),
            Some(false),
            "another password"
        );
        assert_eq!(
            k.check_mailer(&b, &[7; 32], &v),
            Some(false),
            "another mailer"
        );
        let mut bad = v;
        bad[0] ^= 1;
        assert_eq!(
            k.check_mailer(&a, &[7; 32], &bad),
            Some(false),
            "an edited verifier"
        );
        let other = BoxKeys {
            auth: Some(Cmac256::new([6; 32])),
            ..keys()
        };
        assert_eq!(
            other.check_mailer(&a, &[7; 32], &v),
            Some(false),
            "another box"
        );
        let old = BoxKeys {
            auth: None,
            ..keys()
        };
        assert_eq!(old.check_mailer(&a, &[7; 32], &v), None, "no K_auth yet");
        assert_eq!(old.mailer_verifier(&a, &[7; 32]), None);
    }
}
