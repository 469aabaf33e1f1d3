//! AES-SIV (RFC 5297, AES-CMAC-SIV with a 256-bit key: two AES-128 keys) for the export
//! blob's seal ([`super::export::Blob`]), written out here on top of the `aes` block cipher
//! and the AES-CMAC of [`crate::crypto::MacKey`] instead of taken from the `aes-siv` crate.
//!
//! Why by hand: size. The browser module (wasm/, a 150 KB gzip budget) builds the license
//! commands, and `aes-siv`'s CTR mode (the `ctr` crate over `aes`'s batched fixsliced
//! blocks) plus its generic S2V and AEAD glue added their own copy of that code next to
//! the single-block AES that CMAC already uses. Here the keystream is one block at a time
//! through the same `Aes128` as CMAC, and S2V goes through the one CMAC instantiation
//! (`MacKey::mac`) the rest of the card uses. The output is the same bytes as
//! `aes_siv::siv::Aes128Siv::encrypt` (the tag V, then the ciphertext): the tests below
//! check it against that crate on many inputs and against RFC 5297's A.1 vector, so no
//! stored blob changes. (The sealed store, `store::sealed`, still uses the crate: it is
//! not in the browser module.)

use aes::cipher::{BlockCipherEncrypt, KeyInit};
use aes::Aes128;
use alloc::vec::Vec;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::crypto::MacKey;

/// Length of an AES-SIV key: the S2V (CMAC) key, then the CTR key.
pub const KEY_LEN: usize = 32;
/// Length of the synthetic IV that starts a sealed message.
pub const TAG_LEN: usize = 16;

/// `dbl` of RFC 5297 (multiplication by x in GF(2^128), big-endian).
fn dbl(d: [u8; 16]) -> [u8; 16] {
    let x = u128::from_be_bytes(d);
    ((x << 1) ^ (if x >> 127 == 1 { 0x87 } else { 0 })).to_be_bytes()
}

fn xor(a: [u8; 16], b: [u8; 16]) -> [u8; 16] {
    (u128::from_be_bytes(a) ^ u128::from_be_bytes(b)).to_be_bytes()
}

/// S2V (RFC 5297 2.4) of the associated-data strings `headers` and `plaintext`.
fn s2v(mac: &MacKey, headers: &[&[u8]], plaintext: &[u8]) -> [u8; 16] {
    let mut d = mac.mac(&[&[0u8; 16]]);
    for h in headers {
        d = xor(dbl(d), mac.mac(&[h]));
    }
    if plaintext.len() >= 16 {
        let (head, tail) = plaintext.split_at(plaintext.len() - 16);
        let mut last = [0u8; 16];
        last.copy_from_slice(tail);
        mac.mac(&[head, &xor(last, d)])
    } else {
        let mut padded = [0u8; 16];
        padded[..plaintext.len()].copy_from_slice(plaintext);
        padded[plaintext.len()] = 0x80;
        mac.mac(&[&xor(dbl(d), padded)])
    }
}

/// XORs `data` with AES-CTR's keystream under `key` from the IV `v` with bits 31 and 63
/// cleared (RFC 5297 2.5), a 128-bit big-endian counter; `key`'s second half is the CTR key.
fn ctr(key: &[u8; KEY_LEN], v: &[u8; 16], data: &mut [u8]) {
    let k2: Zeroizing<[u8; 16]> = Zeroizing::new(core::array::from_fn(|i| key[16 + i]));
    let cipher = Aes128::new(&(*k2).into());
    let mut q = *v;
    q[8] &= 0x7f;
    q[12] &= 0x7f;
    let mut counter = u128::from_be_bytes(q);
    for chunk in data.chunks_mut(16) {
        let mut block = counter.to_be_bytes().into();
        cipher.encrypt_block(&mut block);
        for (b, k) in chunk.iter_mut().zip(block.iter()) {
            *b ^= k;
        }
        counter = counter.wrapping_add(1);
    }
}

fn mac_key(key: &[u8; KEY_LEN]) -> MacKey {
    MacKey::new(core::array::from_fn(|i| key[i]))
}

/// Seals `plaintext` with the associated data `headers`: V ‖ C, as
/// `Aes128Siv::encrypt(headers, plaintext)`.
pub fn seal(key: &[u8; KEY_LEN], headers: &[&[u8]], plaintext: &[u8]) -> Vec<u8> {
    let v = s2v(&mac_key(key), headers, plaintext);
    let mut out = Vec::with_capacity(TAG_LEN + plaintext.len());
    out.extend_from_slice(&v);
    out.extend_from_slice(plaintext);
    ctr(key, &v, &mut out[TAG_LEN..]);
    out
}

/// Opens V ‖ C sealed by [`seal`] with the same key and associated data: the plaintext, or
/// `None` if it is not authentic (nothing of it is returned then).
pub fn open(key: &[u8; KEY_LEN], headers: &[&[u8]], sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < TAG_LEN {
        return None;
    }
    let (v, c) = sealed.split_at(TAG_LEN);
    let mut tag = [0u8; TAG_LEN];
    tag.copy_from_slice(v);
    let mut out = c.to_vec();
    ctr(key, &tag, &mut out);
    let expected = s2v(&mac_key(key), headers, &out);
    if bool::from(expected.ct_eq(&tag)) {
        Some(out)
    } else {
        zeroize::Zeroize::zeroize(&mut out);
        None
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;
    use aes_siv::siv::Aes128Siv;
    use proptest::prelude::*;

    fn oracle_seal(key: &[u8; 32], ad: &[&[u8]], pt: &[u8]) -> Vec<u8> {
        Aes128Siv::new(key.into()).encrypt(ad, pt).unwrap()
    }

    /// RFC 5297 A.1 (deterministic authenticated encryption).
    #[test]
    fn rfc5297_a1() {
        let key: [u8; 32] =
            hex::decode("fffefdfcfbfaf9f8f7f6f5f4f3f2f1f0f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff")
                .unwrap()
                .try_into()
                .unwrap();
        let ad = hex::decode("101112131415161718191a1b1c1d1e1f2021222324252627").unwrap();
        let pt = hex::decode("112233445566778899aabbccddee").unwrap();
        let sealed = seal(&key, &[&ad], &pt);
        assert_eq!(
            hex::encode(&sealed),
            "85632d07c6e8f37f950acd320a2ecc9340c02b9690c4dc04daef7f6afe5c"
        );
        assert_eq!(open(&key, &[&ad], &sealed).unwrap(), pt);
        assert_eq!(sealed, oracle_seal(&key, &[&ad], &pt));
    }

    /// Every length around the block boundaries, several AD counts, against the crate.
    #[test]
    fn equals_aes_siv_on_every_small_length() {
        let key: [u8; 32] = core::array::from_fn(|i| (i as u8).wrapping_mul(37) ^ 0x5a);
        let data: Vec<u8> = (0..200u32).map(|i| (i * 131 + 7) as u8).collect();
        for len in 0..=80 {
            for n_ad in 0..=3 {
                let ads: Vec<&[u8]> = (0..n_ad)
                    .map(|i| &data[i * 17..i * 17 + len % 40])
                    .collect();
                let pt = &data[100..100 + len];
                let sealed = seal(&key, &ads, pt);
                assert_eq!(sealed, oracle_seal(&key, &ads, pt), "len {len} ads {n_ad}");
                assert_eq!(open(&key, &ads, &sealed).as_deref(), Some(pt));
            }
        }
    }

    /// The counter carries across the cleared bits and 32-bit word boundaries as the
    /// crate's 128-bit counter does.
    #[test]
    fn counter_carries_like_aes_siv() {
        for seed in 0..64u8 {
            let key: [u8; 32] = core::array::from_fn(|i| seed.wrapping_mul(i as u8 + 1));
            let pt = [seed; 100];
            let ad = [seed ^ 0xff; 3];
            assert_eq!(seal(&key, &[&ad], &pt), oracle_seal(&key, &[&ad], &pt));
        }
    }

    proptest! {
        #[test]
        fn equals_aes_siv(
            key in any::<[u8; 32]>(),
            ad in proptest::collection::vec(any::<u8>(), 0..300),
            pt in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let sealed = seal(&key, &[&ad], &pt);
            prop_assert_eq!(&sealed, &oracle_seal(&key, &[&ad], &pt));
            prop_assert_eq!(open(&key, &[&ad], &sealed), Some(pt.clone()));
            let crate_open = Aes128Siv::new((&key).into()).decrypt([&ad], &sealed).unwrap();
            prop_assert_eq!(crate_open, pt);
        }

        #[test]
        fn tampering_is_refused(
            key in any::<[u8; 32]>(),
            ad in proptest::collection::vec(any::<u8>(), 0..64),
            pt in proptest::collection::vec(any::<u8>(), 0..64),
            at in any::<usize>(),
            bit in 0u8..8,
        ) {
            let mut sealed = seal(&key, &[&ad], &pt);
            let i = at % sealed.len();
            sealed[i] ^= 1 << bit;
            prop_assert_eq!(open(&key, &[&ad], &sealed), None);
            prop_assert_eq!(open(&key, &[&ad], &sealed[..TAG_LEN - 1]), None);
        }
    }
}
