//! A generated P-256 key as PKCS#8 `EncryptedPrivateKeyInfo` (RFC 5958 § 3) under PBES2
//! (RFC 8018 § 6.2): PBKDF2-HMAC-SHA256 derives an AES-256 key from the password, AES-256-CBC
//! (PKCS#7 padding) encrypts the DER `PrivateKeyInfo`. What `openssl pkcs8 -topk8 -v2
//! aes-256-cbc` writes and `openssl pkcs8 -in key.p8 -passin file:F` opens (ISSUE AGENT
//! CERTIFICATE mode 01).
//!
//! The cryptography is RustCrypto's (`pbkdf2` with `hmac`, `cbc` over `aes`); the DER
//! around it has one fixed shape, written here byte by byte rather than through the
//! `pkcs5`/`pkcs8` crates' encryption features, which would bring their own parameter
//! parsers (scrypt, PBES1) into the card for one layout it only writes.

use alloc::vec::Vec;

use aes::Aes256;
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockModeDecrypt as _, BlockModeEncrypt as _, KeyIvInit as _};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::crypto::{IndiciumKey, PUBLIC_KEY_LEN};

/// PBKDF2 iterations: OpenSSL's default for `openssl pkcs8 -topk8` (`PKCS5_DEFAULT_ITER`)
/// times ten. The whole mode-01 command takes 130-170 ms through the APDU path in a test
/// build, a retry (one derivation to check the password) ~60 ms (docs/certmeter.md § Agent
/// certificates).
pub const ITERATIONS: u32 = 20_480;
/// Salt length (RFC 8018 recommends at least 8 octets).
pub const SALT_LEN: usize = 16;
/// The AES-CBC initialisation vector's length.
pub const IV_LEN: usize = 16;

/// `PrivateKeyInfo` of a P-256 key up to the private key (RFC 5915 `ECPrivateKey` inside,
/// its curve named by the algorithm identifier, the public key included).
const PRIVATE_KEY_INFO_HEAD: [u8; 36] = [
    0x30, 0x81, 0x87, // SEQUENCE (135)
    0x02, 0x01, 0x00, // version 0
    0x30, 0x13, // AlgorithmIdentifier
    0x06, 0x07, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01, // id-ecPublicKey
    0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07, // prime256v1
    0x04, 0x6D, // OCTET STRING (109)
    0x30, 0x6B, // ECPrivateKey SEQUENCE (107)
    0x02, 0x01, 0x01, // version 1
    0x04, 0x20, // privateKey OCTET STRING (32)
];
/// `[1] publicKey BIT STRING` header, before the 65-octet point.
const PUBLIC_KEY_HEAD: [u8; 5] = [0xA1, 0x44, 0x03, 0x42, 0x00];
/// Length of the `PrivateKeyInfo`.
const PRIVATE_KEY_INFO_LEN: usize = PRIVATE_KEY_INFO_HEAD.len() + 32 + 5 + PUBLIC_KEY_LEN;

/// PBES2 (1.2.840.113549.1.5.13).
const PBES2: [u8; 11] = [
    0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x05, 0x0D,
];
/// PBKDF2 (1.2.840.113549.1.5.12).
const PBKDF2: [u8; 11] = [
    0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x05, 0x0C,
];
/// AlgorithmIdentifier hmacWithSHA256 (1.2.840.113549.2.9), parameters NULL.
const HMAC_SHA256: [u8; 14] = [
    0x30, 0x0C, 0x06, 0x08, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x02, 0x09, 0x05, 0x00,
];
/// aes256-CBC (2.16.840.1.101.3.4.1.42).
const AES256_CBC: [u8; 11] = [
    0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2A,
];

/// The unencrypted `PrivateKeyInfo` of `key` (zeroized on drop).
fn private_key_info(key: &IndiciumKey) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(PRIVATE_KEY_INFO_LEN));
    out.extend_from_slice(&PRIVATE_KEY_INFO_HEAD);
    out.extend_from_slice(key.secret_bytes().as_ref());
    out.extend_from_slice(&PUBLIC_KEY_HEAD);
    out.extend_from_slice(&key.public_key());
    out
}

/// The AES-256 key PBKDF2-HMAC-SHA256 derives from `password` and `salt`.
fn derive(password: &[u8], salt: &[u8; SALT_LEN]) -> Zeroizing<[u8; 32]> {
    let mut k = Zeroizing::new([0u8; 32]);
    pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, ITERATIONS, k.as_mut());
    k
}

/// `key` encrypted under `password`: the DER `EncryptedPrivateKeyInfo`.
pub fn encrypt(
    key: &IndiciumKey,
    password: &[u8],
    salt: &[u8; SALT_LEN],
    iv: &[u8; IV_LEN],
) -> Vec<u8> {
    let plain = private_key_info(key);
    let k = derive(password, salt);
    // PKCS#7 pads to the next block: 138 octets become 144.
    let mut buf = Zeroizing::new(Vec::with_capacity(plain.len() + 16));
    buf.extend_from_slice(&plain);
    buf.resize((plain.len() / 16 + 1) * 16, 0);
    let ciphertext = cbc::Encryptor::<Aes256>::new((&*k).into(), iv.into())
        .encrypt_padded::<Pkcs7>(&mut buf, plain.len())
        .map(<[u8]>::to_vec)
        .unwrap_or_default();

    let alg = encrypt_alg(salt, iv);
    let mut body = tlv(0x30, &alg);
    body.extend_from_slice(&tlv(0x04, &ciphertext));
    tlv(0x30, &body)
}

/// Whether `encrypted` (as [`encrypt`] wrote it) opens under `password` to the private key
/// of `public_key`: a retry of mode 01 must present the first request's password. The
/// scalar is only in zeroized buffers while checked.
pub fn opens_to(encrypted: &[u8], password: &[u8], public_key: &[u8; PUBLIC_KEY_LEN]) -> bool {
    let Some((salt, iv, ciphertext)) = parts(encrypted) else {
        return false;
    };
    let k = derive(password, &salt);
    let mut buf = Zeroizing::new(ciphertext.to_vec());
    let Ok(plain) =
        cbc::Decryptor::<Aes256>::new((&*k).into(), (&iv).into()).decrypt_padded::<Pkcs7>(&mut buf)
    else {
        return false;
    };
    if plain.len() != PRIVATE_KEY_INFO_LEN
        || plain[..PRIVATE_KEY_INFO_HEAD.len()] != PRIVATE_KEY_INFO_HEAD
    {
        return false;
    }
    let scalar = &plain[PRIVATE_KEY_INFO_HEAD.len()..PRIVATE_KEY_INFO_HEAD.len() + 32];
    // The whole plaintext must be what `encrypt` wrote for that key (its public key too).
    IndiciumKey::from_bytes(scalar).is_some_and(|key| {
        &key.public_key() == public_key && private_key_info(&key).as_slice() == plain
    })
}

/// Salt, IV and ciphertext of an `EncryptedPrivateKeyInfo` [`encrypt`] wrote (its layout
/// exactly, with this module's iteration count).
fn parts(der: &[u8]) -> Option<([u8; SALT_LEN], [u8; IV_LEN], &[u8])> {
    let (tag, body, rest) = read_tlv(der)?;
    if tag != 0x30 || !rest.is_empty() {
        return None;
    }
    let (_, alg, rest) = read_tlv(body)?;
    let (tag, ciphertext, end) = read_tlv(rest)?;
    if tag != 0x04 || !end.is_empty() || ciphertext.is_empty() || ciphertext.len() % 16 != 0 {
        return None;
    }
    // The algorithm identifier as `encrypt` writes it for this salt and IV.
    let salt: [u8; SALT_LEN] = alg.get(SALT_AT..SALT_AT + SALT_LEN)?.try_into().ok()?;
    let iv: [u8; IV_LEN] = alg.get(alg.len().checked_sub(IV_LEN)?..)?.try_into().ok()?;
    Some((salt, iv, ciphertext)).filter(|_| encrypt_alg(&salt, &iv).as_slice() == alg)
}

/// Where the salt sits in [`encrypt_alg`]'s bytes: after the PBES2 OID, two SEQUENCE
/// headers, the PBKDF2 OID, a SEQUENCE header and the OCTET STRING header.
const SALT_AT: usize = PBES2.len() + 2 + 2 + PBKDF2.len() + 2 + 2;

/// The content of the `encryptionAlgorithm` SEQUENCE for `salt` and `iv`.
fn encrypt_alg(salt: &[u8; SALT_LEN], iv: &[u8; IV_LEN]) -> Vec<u8> {
    let mut kdf_params = tlv(0x04, salt);
    kdf_params.extend_from_slice(&uint(ITERATIONS));
    kdf_params.extend_from_slice(&HMAC_SHA256);
    let mut kdf = PBKDF2.to_vec();
    kdf.extend_from_slice(&tlv(0x30, &kdf_params));
    let mut enc = AES256_CBC.to_vec();
    enc.extend_from_slice(&tlv(0x04, iv));
    let mut params = tlv(0x30, &kdf);
    params.extend_from_slice(&tlv(0x30, &enc));
    let mut alg = PBES2.to_vec();
    alg.extend_from_slice(&tlv(0x30, &params));
    alg
}

/// A DER INTEGER of `n` (positive).
fn uint(n: u32) -> Vec<u8> {
    let bytes = n.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count().min(3);
    let mut v = Vec::with_capacity(5);
    if bytes[skip] & 0x80 != 0 {
        v.push(0);
    }
    v.extend_from_slice(&bytes[skip..]);
    tlv(0x02, &v)
}

/// A DER TLV (lengths below 64 KiB, all this module writes).
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 4);
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.extend_from_slice(&len.to_be_bytes()[size_of::<usize>() - 1..]);
    } else if len < 0x100 {
        out.push(0x81);
        out.extend_from_slice(&len.to_be_bytes()[size_of::<usize>() - 1..]);
    } else {
        out.push(0x82);
        out.extend_from_slice(&len.to_be_bytes()[size_of::<usize>() - 2..]);
    }
    out.extend_from_slice(content);
    out
}

/// One DER TLV (short or one/two-octet lengths): tag, content, what follows.
fn read_tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, b) = b.split_first()?;
    let (&first, b) = b.split_first()?;
    let (len, b) = match first {
        0..=0x7F => (usize::from(first), b),
        0x81 => (usize::from(*b.first()?), b.get(1..)?),
        0x82 => (
            usize::from(u16::from_be_bytes([*b.first()?, *b.get(1)?])),
            b.get(2..)?,
        ),
        _ => return None,
    };
    let content = b.get(..len)?;
    Some((tag, content, &b[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::SeededPlatform;

    /// Compiles only while the ciphers wipe their key schedules on drop: the round keys
    /// derived from the password must not stay in freed memory (the `zeroize` features of
    /// `aes`, `cbc` and `hmac` in the manifests).
    #[test]
    fn key_schedules_are_wiped_on_drop() {
        fn wiped<T: zeroize::ZeroizeOnDrop>() {}
        wiped::<Aes256>();
        wiped::<cbc::Encryptor<Aes256>>();
        wiped::<cbc::Decryptor<Aes256>>();
        wiped::<cmac::block_api::CmacCore<Aes256>>();
    }

    #[test]
    fn encrypts_and_opens_only_under_its_password() {
        let mut p = SeededPlatform::new(7);
        let key = IndiciumKey::generate(&mut p);
        assert_eq!(private_key_info(&key).len(), PRIVATE_KEY_INFO_LEN);
        let der = encrypt(&key, b"correct horse", &[1; SALT_LEN], &[2; IV_LEN]);
        assert!(opens_to(&der, b"correct horse", &key.public_key()));
        assert!(!opens_to(&der, b"correct horsf", &key.public_key()));
        let other = IndiciumKey::generate(&mut p);
        assert!(!opens_to(&der, b"correct horse", &other.public_key()));
        // Any byte changed: no longer ours.
        for i in (0..der.len()).step_by(5) {
            let mut bad = der.clone();
            bad[i] ^= 0x01;
            assert!(
                !opens_to(&bad, b"correct horse", &key.public_key()),
                "byte {i}"
            );
        }
        assert!(!opens_to(
            &der[..der.len() - 1],
            b"correct horse",
            &key.public_key()
        ));
        assert_eq!(uint(2048), [0x02, 0x02, 0x08, 0x00]);
        assert_eq!(uint(0x8000), [0x02, 0x03, 0x00, 0x80, 0x00]);
    }
}
