//! The post's fast indicium verifier (`openpsd_post::verify`) against the reference,
//! `openpsd_core::psd::indicium::verify`: the same answer on valid indicia, on every bit
//! flip, truncation, foreign key, out-of-range signature and random byte string; batches
//! equal to one-by-one; and what both do with high-s (malleated) signatures.
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use openpsd_core::crypto::IndiciumKey;
use openpsd_core::psd::indicium;
use openpsd_core::types::*;
use openpsd_post::verify::{
    canonical_indicium, canonical_signature, verify_batch, DeviceKey, IndiciumData, VerifyError,
};

/// The order n of P-256, big-endian.
const N: [u8; 32] = [
    0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
    0xBC, 0xE6, 0xFA, 0xAD, 0xA7, 0x17, 0x9E, 0x84, 0xF3, 0xB9, 0xCA, 0xC2, 0xFC, 0x63, 0x25, 0x51,
];

/// A deterministic generator (splitmix64): the same cases on every run, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap()
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next().to_le_bytes()[0]).collect()
    }
}

fn key(seed: u8) -> IndiciumKey {
    IndiciumKey::from_bytes(&[seed; 32]).unwrap()
}

fn data(k: &IndiciumKey, piece: u32) -> IndiciumData {
    // Postal codes of several lengths, so the signed part is not always the same size.
    let dest: &[u8] = match piece % 3 {
        0 => b"20095",
        1 => b"SW1A1AA",
        _ => b"1",
    };
    IndiciumData {
        key_id: k.key_id(),
        device: DeviceId(*b"DEVICE01"),
        license: LicenseId(7),
        ar: Amount(1_000_000 - 85 * u64::from(piece)),
        dr: Amount(85 * u64::from(piece)),
        pieces: PieceCount(piece),
        postage: Amount(85),
        date: Date::new(2026, 11, 29).unwrap(),
        rate: RateCategory(1),
        origin: PostalCode::new(b"10115").unwrap(),
        destination: PostalCode::new(dest).unwrap(),
    }
}

/// A real indicium: the encoded data signed by the device key, as the PSD makes it.
fn indicium(k: &IndiciumKey, piece: u32) -> Vec<u8> {
    let mut bytes = data(k, piece).encode();
    let sig = k.sign(&bytes);
    bytes.extend_from_slice(&sig);
    bytes
}

/// The fast verifier's answer, checked against the reference's for the same input.
fn check(dk: &DeviceKey, public_key: &[u8], bytes: &[u8]) -> Result<IndiciumData, VerifyError> {
    let fast = dk.verify(bytes);
    let reference = indicium::verify(bytes, public_key);
    assert_eq!(fast, reference, "verifiers disagree on {bytes:02X?}");
    fast
}

/// n − s for a 32-byte big-endian s < n (test's own arithmetic, independent of the crate).
fn n_minus(s: &[u8]) -> [u8; 32] {
    let (mut out, mut borrow) = ([0u8; 32], 0i16);
    for i in (0..32).rev() {
        let d = i16::from(N[i]) - i16::from(s[i]) - borrow;
        borrow = i16::from(d < 0);
        out[i] = u8::try_from(d.rem_euclid(256)).unwrap();
    }
    out
}

#[test]
fn agrees_with_core_on_valid_indicia() {
    let k = key(7);
    let pk = k.public_key();
    let dk = DeviceKey::from_sec1(&pk).unwrap();
    assert_eq!(dk.key_id(), k.key_id());
    for piece in 1..=40 {
        let bytes = indicium(&k, piece);
        assert_eq!(check(&dk, &pk, &bytes), Ok(data(&k, piece)));
    }
}

#[test]
fn every_bit_flip_is_refused() {
    let k = key(7);
    let pk = k.public_key();
    let dk = DeviceKey::from_sec1(&pk).unwrap();
    let bytes = indicium(&k, 3);
    let split = bytes.len() - 64;
    for bit in 0..bytes.len() * 8 {
        let mut flipped = bytes.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        let r = check(&dk, &pk, &flipped);
        assert!(r.is_err(), "bit {bit} flipped verified");
        // Which error: a flip in the signature or in a field that still decodes with the
        // same key ID is a bad signature; a flip in the key ID is the wrong key.
        if bit / 8 >= split {
            assert_eq!(r, Err(VerifyError::BadSignature), "bit {bit}");
        } else if (2..6).contains(&(bit / 8)) {
            assert_eq!(r, Err(VerifyError::WrongKey), "bit {bit}");
        }
    }
}

#[test]
fn another_devices_key_is_wrong_key() {
    let (k, other) = (key(7), key(8));
    let bytes = indicium(&k, 1);
    let other_pk = other.public_key();
    let dk = DeviceKey::from_sec1(&other_pk).unwrap();
    assert_eq!(check(&dk, &other_pk, &bytes), Err(VerifyError::WrongKey));
    // Signed by another device but carrying this key's ID: the ID matches, the signature
    // does not.
    let mut forged = data(&k, 1).encode();
    let sig = other.sign(&forged);
    forged.extend_from_slice(&sig);
    let pk = k.public_key();
    let dk = DeviceKey::from_sec1(&pk).unwrap();
    assert_eq!(check(&dk, &pk, &forged), Err(VerifyError::BadSignature));
}

#[test]
fn truncated_is_malformed() {
    let k = key(7);
    let pk = k.public_key();
    let dk = DeviceKey::from_sec1(&pk).unwrap();
    let bytes = indicium(&k, 2);
    for len in 0..bytes.len() {
        assert_eq!(
            check(&dk, &pk, &bytes[..len]),
            Err(VerifyError::Malformed),
            "prefix of {len} bytes"
        );
    }
    // Signature only, or trailing bytes after a complete indicium: malformed or bad, never Ok.
    assert_eq!(
        check(&dk, &pk, &bytes[bytes.len() - 64..]),
        Err(VerifyError::Malformed)
    );
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(check(&dk, &pk, &longer).is_err());
}

#[test]
fn out_of_range_signatures_are_bad_not_panics() {
    let k = key(7);
    let pk = k.public_key();
    let dk = DeviceKey::from_sec1(&pk).unwrap();
    let bytes = indicium(&k, 4);
    let split = bytes.len() - 64;
    let (r, s) = (&bytes[split..split + 32], &bytes[split + 32..]);
    let mut n_plus_1 = N;
    n_plus_1[31] += 1;
    let n_plus_s = {
        // s + n (mod 2^256) when it does not wrap: the same s mod n, out of range.
        let (mut out, mut carry) = ([0u8; 32], 0u16);
        for i in (0..32).rev() {
            let t = u16::from(s[i]) + u16::from(N[i]) + carry;
            out[i] = (t & 0xFF) as u8;
            carry = t >> 8;
        }
        (carry == 0).then_some(out)
    };
    let mut cases: Vec<([u8; 32], [u8; 32], &str)> = vec![
        (r.try_into().unwrap(), N, "s = n"),
        (r.try_into().unwrap(), n_plus_1, "s = n + 1"),
        (r.try_into().unwrap(), [0xFF; 32], "s = 2^256 - 1"),
        (r.try_into().unwrap(), [0; 32], "s = 0"),
        ([0; 32], s.try_into().unwrap(), "r = 0"),
        (N, s.try_into().unwrap(), "r = n"),
        ([0xFF; 32], s.try_into().unwrap(), "r = 2^256 - 1"),
        ([0; 32], [0; 32], "r = s = 0"),
    ];
    if let Some(big) = n_plus_s {
        cases.push((r.try_into().unwrap(), big, "s + n"));
    }
    for (r, s, what) in cases {
        let mut bad = bytes[..split].to_vec();
        bad.extend_from_slice(&r);
        bad.extend_from_slice(&s);
        assert_eq!(
            check(&dk, &pk, &bad),
            Err(VerifyError::BadSignature),
            "{what}"
        );
    }
}

/// ECDSA malleability: (r, n − s) verifies wherever (r, s) does, in both verifiers; the
/// PSD's signer (p256) does not normalise s, so high-s indicia come from honest devices
/// too; `canonical_signature` maps both forms to one (p256's `normalize_s`).
#[test]
fn high_s_is_accepted_by_both_and_canonicalised() {
    let k = key(7);
    let pk = k.public_key();
    let dk = DeviceKey::from_sec1(&pk).unwrap();
    let mut high_from_signer = 0;
    for piece in 1..=32 {
        let bytes = indicium(&k, piece);
        let split = bytes.len() - 64;
        let sig: [u8; 64] = bytes[split..].try_into().unwrap();
        let mut twin = bytes.clone();
        twin[split + 32..].copy_from_slice(&n_minus(&sig[32..]));
        assert_ne!(twin, bytes);
        // Both forms verify, in the fast verifier and in the reference, to the same data.
        assert_eq!(check(&dk, &pk, &twin), Ok(data(&k, piece)));
        assert_eq!(check(&dk, &pk, &bytes), Ok(data(&k, piece)));

        let twin_sig: [u8; 64] = twin[split..].try_into().unwrap();
        let canon = canonical_signature(&sig);
        assert_eq!(canon, canonical_signature(&twin_sig));
        assert_eq!(canonical_signature(&canon), canon, "idempotent");
        let p256_low = p256::ecdsa::Signature::from_slice(&sig)
            .unwrap()
            .normalize_s();
        assert_eq!(canon[..], p256_low.to_bytes()[..], "p256's low-s form");
        if canon != sig {
            high_from_signer += 1;
        }
        assert_eq!(canonical_indicium(&bytes), canonical_indicium(&twin));
        assert_eq!(
            check(&dk, &pk, &canonical_indicium(&twin).unwrap()),
            Ok(data(&k, piece))
        );
    }
    // RFC 6979 nonces give high s about half the time: the signer does not normalise.
    assert!(
        (4..=28).contains(&high_from_signer),
        "{high_from_signer} of 32 high-s"
    );
    // Invalid s values are left alone (they never verify anyway).
    let mut sig = [1u8; 64];
    sig[32..].copy_from_slice(&N);
    assert_eq!(canonical_signature(&sig), sig);
    sig[32..].copy_from_slice(&[0; 32]);
    assert_eq!(canonical_signature(&sig), sig);
    assert_eq!(canonical_indicium(&[0; 63]), None);
}

#[test]
fn batch_equals_one_by_one() {
    let (a, b) = (key(7), key(8));
    let (ka, kb) = (
        DeviceKey::from_sec1(&a.public_key()).unwrap(),
        DeviceKey::from_sec1(&b.public_key()).unwrap(),
    );
    let mut rng = Rng(13);
    let mut owned: Vec<(bool, Vec<u8>)> = Vec::new();
    for piece in 1..=23 {
        let signer = if piece % 2 == 0 { &a } else { &b };
        let mut bytes = indicium(signer, piece);
        match piece % 5 {
            1 => {
                let i = rng.below(bytes.len());
                bytes[i] ^= 0x10;
            }
            2 => bytes.truncate(rng.below(bytes.len())),
            _ => {}
        }
        // Some checked under the other device's key.
        let under_a = (piece % 2 == 0) != (piece % 7 == 0);
        owned.push((under_a, bytes));
    }
    let items: Vec<(&DeviceKey, &[u8])> = owned
        .iter()
        .map(|(under_a, bytes)| (if *under_a { &ka } else { &kb }, &bytes[..]))
        .collect();
    let one_by_one: Vec<_> = items.iter().map(|(k, b)| k.verify(b)).collect();
    assert!(one_by_one.iter().any(Result::is_ok));
    assert!(one_by_one.iter().any(Result::is_err));
    for threads in [0, 1, 2, 3, 4, 7, 23, 100] {
        assert_eq!(
            verify_batch(&items, threads),
            one_by_one,
            "{threads} threads"
        );
    }
    for len in [0, 1, 2, 5] {
        assert_eq!(
            verify_batch(&items[..len], 2),
            one_by_one[..len],
            "batch of {len}"
        );
    }
}

#[test]
fn random_bytes_never_verify_or_panic() {
    let k = key(7);
    let pk = k.public_key();
    let dk = DeviceKey::from_sec1(&pk).unwrap();
    let header = {
        let full = indicium(&k, 1);
        full[..full.len() - 64].to_vec()
    };
    let mut rng = Rng(42);
    for i in 0..3_000 {
        let bytes = match i % 3 {
            // Anything at all.
            0 => {
                let len = rng.below(200);
                rng.bytes(len)
            }
            // Version, algorithm and this key's ID, random after: some decode and reach
            // the key and signature checks.
            1 => {
                let mut b = header[..6].to_vec();
                let len = rng.below(120);
                b.extend(rng.bytes(len));
                b
            }
            // The valid signed part with a random signature.
            _ => {
                let mut b = header.clone();
                b.extend(rng.bytes(64));
                b
            }
        };
        assert!(check(&dk, &pk, &bytes).is_err(), "{bytes:02X?}");
        let _ = canonical_indicium(&bytes);
    }
}

#[test]
fn from_sec1_takes_uncompressed_points_only() {
    let k = key(7);
    let pk = k.public_key();
    assert!(DeviceKey::from_sec1(&pk).is_some());
    assert_eq!(DeviceKey::from_sec1(&pk).unwrap().public_key(), &pk);
    assert!(DeviceKey::from_sec1(&k.public_key_compressed()).is_none());
    assert!(DeviceKey::from_sec1(&pk[..64]).is_none());
    assert!(DeviceKey::from_sec1(&[]).is_none());
    let mut off_curve = pk;
    off_curve[64] ^= 1;
    assert!(DeviceKey::from_sec1(&off_curve).is_none());
    let mut not_uncompressed = pk;
    not_uncompressed[0] = 0x06; // hybrid encoding: refused, the KMS registers 0x04 only
    assert!(DeviceKey::from_sec1(&not_uncompressed).is_none());
    let mut zero = [0u8; 65];
    zero[0] = 4;
    assert!(DeviceKey::from_sec1(&zero).is_none());
    let mut rng = Rng(5);
    for _ in 0..500 {
        let mut b = rng.bytes(65);
        b[0] = 4;
        assert!(
            DeviceKey::from_sec1(&b).is_none(),
            "random point on the curve?"
        );
    }
}
