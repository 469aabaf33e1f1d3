//! The cryptography the device uses, wrapped small: ECDSA P-256 with SHA-256 for indicia,
//! audits, refill messages, receipts and certificates; ECDH P-256 for recognition;
//! AES-128-CMAC for the purse issuer's per-card admin key (and K1 of legacy PSD records);
//! SHA-256 for digests.
//!
//! Keys are zeroized on drop; MACs are compared in constant time.
//!
//! ECDSA signing and verification compute their generator multiple from a precomputed table
//! built once per process or wasm instance ([`comb`]; the signatures are p256's, byte for
//! byte). Off the browser, [`PreparedKey`] adds a table of a public key for a verifier that
//! checks many signatures of one key.

use cmac::{Cmac, KeyInit, Mac};
use p256::ecdsa::{SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::platform::Platform;
use crate::types::KeyId;

pub mod comb;
#[cfg(not(target_arch = "wasm32"))]
pub mod nonce;

/// Length of a SEC1 uncompressed P-256 public key.
pub const PUBLIC_KEY_LEN: usize = 65;
/// Length of a SEC1 compressed P-256 public key (certificates and recognition hellos, where
/// the bytes must fit one short APDU).
pub const COMPRESSED_KEY_LEN: usize = 33;
/// Length of an ECDH P-256 shared secret (the x-coordinate).
pub const SHARED_SECRET_LEN: usize = 32;
/// Length of an ECDSA P-256 signature (r ‖ s).
pub const SIGNATURE_LEN: usize = 64;
/// Length of an AES-CMAC tag.
pub const MAC_LEN: usize = 16;
/// Length of K1, an AES-128 key.
pub const MAC_KEY_LEN: usize = 16;

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// SHA-256 of the concatenation of `parts` (without copying them together).
pub fn sha256_parts(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// An AES-128 CMAC key: a purse's admin key, or K1 of a PSD personalized before the
/// asymmetric refill suite (read, never used).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MacKey([u8; MAC_KEY_LEN]);

impl MacKey {
    /// Wraps raw key bytes.
    pub fn new(bytes: [u8; MAC_KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// The raw key, for sealing it into persistent storage.
    pub fn expose(&self) -> &[u8; MAC_KEY_LEN] {
        &self.0
    }

    /// AES-CMAC over the concatenation of `parts`.
    pub fn mac(&self, parts: &[&[u8]]) -> [u8; MAC_LEN] {
        let mut m = <Cmac<aes::Aes128> as KeyInit>::new(&self.0.into());
        for p in parts {
            m.update(p);
        }
        m.finalize().into_bytes().into()
    }

    /// Whether `tag` is the MAC of `parts`, compared in constant time.
    pub fn verify(&self, parts: &[&[u8]], tag: &[u8]) -> bool {
        let expected = self.mac(parts);
        tag.len() == MAC_LEN && bool::from(expected.ct_eq(tag))
    }
}

impl core::fmt::Debug for MacKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("MacKey(..)")
    }
}

/// The device's indicium signing key (its verifying key is cached alongside).
#[derive(Clone)]
pub struct IndiciumKey {
    key: SigningKey,
}

impl IndiciumKey {
    /// Generates a key inside the device from the platform's randomness.
    pub fn generate(platform: &mut dyn Platform) -> Self {
        loop {
            let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
            platform.fill_random(bytes.as_mut());
            // Rejection sampling: out of range (0 or >= n) happens with probability ~2^-32.
            if let Ok(key) = SigningKey::from_slice(bytes.as_ref()) {
                return Self { key };
            }
        }
    }

    /// Restores a key from its 32-byte scalar.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        SigningKey::from_slice(bytes).ok().map(|key| Self { key })
    }

    /// The 32-byte scalar, for sealing into persistent storage (zeroized on drop).
    pub fn secret_bytes(&self) -> zeroize::Zeroizing<[u8; 32]> {
        let mut out = zeroize::Zeroizing::new([0u8; 32]);
        out.copy_from_slice(&self.key.to_bytes());
        out
    }

    /// The public key as an uncompressed SEC1 point.
    pub fn public_key(&self) -> [u8; PUBLIC_KEY_LEN] {
        let mut out = [0u8; PUBLIC_KEY_LEN];
        out.copy_from_slice(self.key.verifying_key().to_sec1_point(false).as_bytes());
        out
    }

    /// The public key as a compressed SEC1 point.
    pub fn public_key_compressed(&self) -> [u8; COMPRESSED_KEY_LEN] {
        let mut out = [0u8; COMPRESSED_KEY_LEN];
        out.copy_from_slice(self.key.verifying_key().to_sec1_point(true).as_bytes());
        out
    }

    /// ECDH P-256 with a peer's SEC1 public key (compressed or not): the x-coordinate of
    /// this key's scalar times the peer's point. `None` if the peer's key is not a point of
    /// the curve (the identity cannot be decoded, so the result is never all zeros).
    pub fn agree(&self, peer: &[u8]) -> Option<zeroize::Zeroizing<[u8; SHARED_SECRET_LEN]>> {
        use p256::elliptic_curve::point::AffineCoordinates;
        let peer = p256::PublicKey::from_sec1_bytes(peer).ok()?;
        let scalar: &p256::Scalar = self.key.as_nonzero_scalar().as_ref();
        let point = (peer.to_projective() * scalar).to_affine();
        let mut out = zeroize::Zeroizing::new([0u8; SHARED_SECRET_LEN]);
        out.copy_from_slice(&point.x());
        Some(out)
    }

    /// The key's identifier.
    pub fn key_id(&self) -> KeyId {
        key_id(&self.public_key())
    }

    /// ECDSA P-256 / SHA-256 signature over `msg` (deterministic, RFC 6979).
    pub fn sign(&self, msg: &[u8]) -> [u8; SIGNATURE_LEN] {
        let sig = comb::sign_prehash(self.key.as_nonzero_scalar(), &sha256(msg));
        let mut out = [0u8; SIGNATURE_LEN];
        out.copy_from_slice(&sig.to_bytes());
        out
    }

    /// ECDSA P-256 / SHA-256 signature over `msg` with a precomputed nonce from `pool`
    /// (random, so not reproducible: the caller keeps the signature if it must answer
    /// again), or [`IndiciumKey::sign`]'s deterministic one when the pool is empty.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn sign_pooled(&self, msg: &[u8], pool: &mut nonce::NoncePool) -> [u8; SIGNATURE_LEN] {
        let pooled = pool
            .take()
            .and_then(|pair| pair.sign_prehash(self.key.as_nonzero_scalar(), &sha256(msg)));
        match pooled {
            Some(sig) => {
                let mut out = [0u8; SIGNATURE_LEN];
                out.copy_from_slice(&sig.to_bytes());
                out
            }
            None => self.sign(msg),
        }
    }
}

impl IndiciumKey {
    /// ECDSA signature over `label` ‖ `body`: the label keeps one key's signatures on
    /// different message kinds apart (an audit can never read as an indicium).
    pub fn sign_labelled(&self, label: &[u8], body: &[u8]) -> [u8; SIGNATURE_LEN] {
        let mut msg = alloc::vec::Vec::with_capacity(label.len() + body.len());
        msg.extend_from_slice(label);
        msg.extend_from_slice(body);
        self.sign(&msg)
    }

    /// `body` ‖ [`IndiciumKey::sign_labelled`] of it: the layout of a record signed whole
    /// (the box's transaction and log-in records).
    pub fn sign_appended(
        &self,
        label: &[u8],
        mut body: alloc::vec::Vec<u8>,
    ) -> alloc::vec::Vec<u8> {
        let sig = self.sign_labelled(label, &body);
        body.extend_from_slice(&sig);
        body
    }
}

/// The body of a record made by [`IndiciumKey::sign_appended`], if its last
/// [`SIGNATURE_LEN`] bytes verify over `label` ‖ the rest; `None` otherwise (too short too).
pub fn open_appended<'a>(public_key: &[u8], label: &[u8], record: &'a [u8]) -> Option<&'a [u8]> {
    let (body, sig) = record.split_at_checked(record.len().checked_sub(SIGNATURE_LEN)?)?;
    verify_labelled(public_key, label, body, sig).then_some(body)
}

/// Verifies a signature made by [`IndiciumKey::sign_labelled`].
pub fn verify_labelled(public_key: &[u8], label: &[u8], body: &[u8], signature: &[u8]) -> bool {
    let mut msg = alloc::vec::Vec::with_capacity(label.len() + body.len());
    msg.extend_from_slice(label);
    msg.extend_from_slice(body);
    verify_signature(public_key, &msg, signature)
}

impl core::fmt::Debug for IndiciumKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("IndiciumKey(..)")
    }
}

/// The identifier of a public key: the first 4 bytes of its SHA-256.
pub fn key_id(public_key: &[u8]) -> KeyId {
    let h = sha256(public_key);
    KeyId([h[0], h[1], h[2], h[3]])
}

/// Whether `public_key` (SEC1) is a valid P-256 point.
pub fn is_valid_public_key(public_key: &[u8]) -> bool {
    VerifyingKey::from_sec1_bytes(public_key).is_ok()
}

/// Verifies an ECDSA P-256 / SHA-256 signature (r ‖ s) over `msg` with a SEC1 public key.
pub fn verify_signature(public_key: &[u8], msg: &[u8], signature: &[u8]) -> bool {
    let Ok(vk) = VerifyingKey::from_sec1_bytes(public_key) else {
        return false;
    };
    verify_with_key(&vk, msg, signature)
}

/// Verifies (r ‖ s) over `msg` under a parsed key, with the generator's table.
fn verify_with_key(vk: &VerifyingKey, msg: &[u8], signature: &[u8]) -> bool {
    comb::verify_prehash(vk.as_affine(), &sha256(msg), signature)
}

/// A public key parsed once for many verifications (one device's indicia): off the browser
/// it carries a precomputed table of the point (~170 KB, ~1.5 ms to build), which makes each
/// verification about 4 times faster than [`verify_signature`]; in the browser's module
/// it is the parsed key alone. Results are [`verify_signature`]'s.
pub struct PreparedKey {
    key: VerifyingKey,
    #[cfg(not(target_arch = "wasm32"))]
    table: comb::KeyTable,
}

impl PreparedKey {
    /// Parses a SEC1 public key (compressed or not) and builds its table; `None` if it is
    /// not a P-256 point.
    pub fn from_sec1(public_key: &[u8]) -> Option<Self> {
        let key = VerifyingKey::from_sec1_bytes(public_key).ok()?;
        Some(Self {
            #[cfg(not(target_arch = "wasm32"))]
            table: comb::KeyTable::new(key.as_affine()),
            key,
        })
    }

    /// The key as an uncompressed SEC1 point.
    pub fn public_key(&self) -> [u8; PUBLIC_KEY_LEN] {
        let mut out = [0u8; PUBLIC_KEY_LEN];
        out.copy_from_slice(self.key.to_sec1_point(false).as_bytes());
        out
    }

    /// Verifies an ECDSA P-256 / SHA-256 signature (r ‖ s) over `msg`.
    pub fn verify(&self, msg: &[u8], signature: &[u8]) -> bool {
        self.verify_digest(&sha256(msg), signature)
    }

    /// Verifies a signature made by [`IndiciumKey::sign_labelled`].
    pub fn verify_labelled(&self, label: &[u8], body: &[u8], signature: &[u8]) -> bool {
        self.verify_digest(&sha256_parts(&[label, body]), signature)
    }

    /// Verifies (r ‖ s) over a SHA-256 digest.
    fn verify_digest(&self, digest: &[u8; 32], signature: &[u8]) -> bool {
        #[cfg(not(target_arch = "wasm32"))]
        {
            self.table.verify_prehash(digest, signature)
        }
        #[cfg(target_arch = "wasm32")]
        {
            comb::verify_prehash(self.key.as_affine(), digest, signature)
        }
    }
}

impl core::fmt::Debug for PreparedKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "PreparedKey({:02x?})", key_id(&self.public_key()).0)
    }
}
