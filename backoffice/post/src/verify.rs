//! Indicium verification at speed: one device key verifies many indicia.
//!
//! The post office checks the ECDSA P-256 / SHA-256 signature of every scanned indicium
//! (layout and the reference verifier: `openpsd_core::psd::indicium`). This module gives
//! the same answers as the reference, [`openpsd_core::psd::indicium::verify`], on every
//! input (the tests in `tests/verify.rs` hold it to that), but faster:
//!
//! - [`DeviceKey`] checks a device's public key once (a P-256 point, 65-byte uncompressed
//!   SEC1) and keeps its key ID, so each verification only decodes, compares 4 bytes and
//!   checks the signature;
//! - the signature check is `ring`'s (`ECDSA_P256_SHA256_FIXED`): assembly for the P-256
//!   field and scalar arithmetic on x86_64 and aarch64, where the reference (RustCrypto
//!   `p256`, portable Rust) is about 6x slower;
//! - [`verify_batch`] spreads a batch over worker threads (scoped, no global pool).
//!
//! Why `ring`, by measurement: `benches/verify.rs`, run by `scripts/post-bench.sh` next to
//! `openssl speed ecdsap256` in the same run, on the 2-vCPU build machine
//! (2026-11-29, a CI run and other builds going on, so per second of CPU time on both
//! sides), the same 64 indicia for every candidate, one thread, best of 2 rounds:
//!
//! | candidate | verifications/s | vs OpenSSL 3.0.19 (16,900/s) |
//! | --- | --- | --- |
//! | this verifier (ring + decoding + key ID) | 18,850 | 1.11x |
//! | ring, signature only | 18,480 | 1.09x |
//! | aws-lc-rs 1.19 (`ParsedPublicKey`), signature only | 19,620 | 1.16x |
//! | p256 0.14, key parsed once | 3,150 | 0.19x |
//! | core's `indicium::verify` (p256, key parsed per call) | 3,200 | 0.19x |
//!
//! Five such runs put this verifier at 1.11-1.15x OpenSSL, with ±5% noise between runs
//! (ring's signature-only figure once read 1.08x). Two threads: the batch costs the same
//! CPU time per verification on two threads as on one (0-3% more), so it doubles with two
//! idle cores; this busy machine never had them (`openssl speed -multi 2` got 1.00-1.11x
//! at the same moments), and the batch's best wall figure on two threads was 1.43x the
//! best on one.
//!
//! aws-lc-rs is 2-5% faster than ring. ring is kept because it is already built here
//! (service-kit picks rustls's and rcgen's ring provider), while aws-lc-rs builds here (no
//! cmake needed) but adds a compile of the whole AWS-LC C library (~1 min of two cores
//! in release, more under the bench profile's LTO) to every clean build and CI run. The
//! verifier's margin over the 1.1x aim is thin (1.11-1.15x, within the noise): if CI
//! reads under 1.1x, aws-lc-rs is the switch to make; `--features bench-aws-lc` measures
//! it again in the same run, and its API is ring's (plus a parsed key,
//! `ParsedPublicKey`).
//!
//! Preparing a key ([`DeviceKey::from_sec1`]) costs ~0.4 µs, under 1% of a verification
//! (~53 µs), so there is no key cache here: a caller keeps its `DeviceKey`s (they are
//! `Clone`) where it keeps the devices.
//!
//! ECDSA signatures are malleable: if (r, s) verifies, so does (r, n − s). The PSD signs
//! with `p256`, which does not normalise s (half its signatures are "high-s"), and both
//! the reference verifier and ring accept either form, so neither can be refused here.
//! Whoever compares indicia as bytes (a rescanned label against a stored one) compares
//! [`canonical_signature`] forms: otherwise a copied label with s flipped would look like
//! a second, different indicium for the same (device, license, piece).

use openpsd_core::crypto::{self, PUBLIC_KEY_LEN, SIGNATURE_LEN};
use openpsd_core::types::KeyId;
use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};

/// A verified indicium: its decoded fields.
pub use openpsd_core::psd::indicium::{IndiciumData, VerifyError};

/// A device key prepared for many verifications (parsed once).
#[derive(Clone)]
pub struct DeviceKey {
    /// The uncompressed SEC1 point, checked to be on the curve.
    sec1: [u8; PUBLIC_KEY_LEN],
    key_id: KeyId,
}

impl core::fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "DeviceKey({})", hex::encode(self.key_id.0))
    }
}

impl DeviceKey {
    /// From the SEC1 uncompressed public key (65 bytes) the KMS registered; None if not a
    /// P-256 point.
    pub fn from_sec1(public_key: &[u8]) -> Option<DeviceKey> {
        // Uncompressed only: that is what the KMS registers and what the key ID is the hash
        // of (a compressed encoding of the same point would have another key ID), and ring
        // takes no other form.
        let sec1: [u8; PUBLIC_KEY_LEN] = public_key.try_into().ok()?;
        if sec1[0] != 0x04 || !crypto::is_valid_public_key(&sec1) {
            return None;
        }
        Some(DeviceKey {
            sec1,
            key_id: crypto::key_id(&sec1),
        })
    }

    /// The key ID the device's indicia carry: the first 4 bytes of SHA-256 of the key.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The SEC1 uncompressed public key.
    pub fn public_key(&self) -> &[u8; PUBLIC_KEY_LEN] {
        &self.sec1
    }

    /// Verifies one indicium (signed bytes ‖ signature) under this key: Malformed,
    /// WrongKey (key ID differs), BadSignature, or the decoded data.
    ///
    /// The checks run in the reference verifier's order, so both give the same error for
    /// the same input; the signature, the expensive part, is checked last.
    pub fn verify(&self, indicium: &[u8]) -> Result<IndiciumData, VerifyError> {
        let split = indicium
            .len()
            .checked_sub(SIGNATURE_LEN)
            .ok_or(VerifyError::Malformed)?;
        let (signed, signature) = indicium.split_at(split);
        let data = IndiciumData::decode(signed).map_err(|_| VerifyError::Malformed)?;
        if data.key_id != self.key_id {
            return Err(VerifyError::WrongKey);
        }
        // ring re-reads the point on each call (it has no parsed ECDSA key type); that is
        // a few field operations against the ~65 µs of the verification, and the point was
        // validated in from_sec1, so it cannot fail here for a reason other than the
        // signature. r and s out of [1, n) are refused by ring as a bad signature.
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &self.sec1)
            .verify(signed, signature)
            .map_err(|_| VerifyError::BadSignature)?;
        Ok(data)
    }
}

/// Verifies a batch across `threads` worker threads (std::thread::scope; no global pool),
/// each item with its key; results in input order.
///
/// Every verification costs about the same, so the batch is cut into `threads` contiguous
/// runs of equal length; the calling thread takes the first run itself and the results
/// are put together in order. `threads` is clamped to 1..=items.len(); 1 runs on the
/// calling thread without spawning.
pub fn verify_batch(
    items: &[(&DeviceKey, &[u8])],
    threads: usize,
) -> Vec<Result<IndiciumData, VerifyError>> {
    let threads = threads.clamp(1, items.len().max(1));
    if threads == 1 {
        return items.iter().map(|(key, ind)| key.verify(ind)).collect();
    }
    let run = items.len().div_ceil(threads);
    let verify_run = |input: &[(&DeviceKey, &[u8])]| -> Vec<_> {
        input.iter().map(|(key, ind)| key.verify(ind)).collect()
    };
    std::thread::scope(|scope| {
        let mut runs = items.chunks(run);
        let first = runs.next().unwrap_or_default();
        let workers: Vec<_> = runs
            .map(|input| {
                let worker = std::thread::Builder::new()
                    .spawn_scoped(scope, move || verify_run(input))
                    .ok();
                (input, worker)
            })
            .collect();
        let mut out = Vec::with_capacity(items.len());
        out.extend(verify_run(first));
        for (input, worker) in workers {
            match worker.map(|w| w.join()) {
                Some(Ok(results)) => out.extend(results),
                // verify does not panic; if it ever did, the caller sees it, as one by one.
                Some(Err(panic)) => std::panic::resume_unwind(panic),
                // A thread the OS refused (out of threads or memory) is no reason to fail
                // the batch: its run is verified here instead.
                None => out.extend(verify_run(input)),
            }
        }
        out
    })
}

/// The order n of the P-256 group, big-endian.
const ORDER: [u8; 32] = [
    0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
    0xBC, 0xE6, 0xFA, 0xAD, 0xA7, 0x17, 0x9E, 0x84, 0xF3, 0xB9, 0xCA, 0xC2, 0xFC, 0x63, 0x25, 0x51,
];
/// ⌊n / 2⌋: s above this is "high" (the same bound as RustCrypto's `normalize_s`).
const HALF_ORDER: [u8; 32] = [
    0x7F, 0xFF, 0xFF, 0xFF, 0x80, 0x00, 0x00, 0x00, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
    0xDE, 0x73, 0x7D, 0x56, 0xD3, 0x8B, 0xCF, 0x42, 0x79, 0xDC, 0xE5, 0x61, 0x7E, 0x31, 0x92, 0xA8,
];

/// The low-s form of an r ‖ s signature: s replaced by n − s when s > n/2, anything else
/// (already low, or not a valid s at all: 0 or ≥ n) returned unchanged.
///
/// Both forms verify (ECDSA's malleability, see the module comment); the low-s form is the
/// one to store or compare, so one indicium has one byte string whatever form it came in.
pub fn canonical_signature(signature: &[u8; SIGNATURE_LEN]) -> [u8; SIGNATURE_LEN] {
    let mut out = *signature;
    let mut s = [0u8; 32];
    s.copy_from_slice(&signature[32..]);
    // Equal-length big-endian byte strings compare as the numbers they encode.
    if s > HALF_ORDER && s < ORDER {
        let mut borrow = false;
        for i in (0..32).rev() {
            let (d, b1) = ORDER[i].overflowing_sub(s[i]);
            let (d, b2) = d.overflowing_sub(u8::from(borrow));
            out[32 + i] = d;
            borrow = b1 || b2;
        }
    }
    out
}

/// An indicium (signed bytes ‖ signature) with its signature in [`canonical_signature`]
/// form; None if shorter than a signature.
pub fn canonical_indicium(indicium: &[u8]) -> Option<Vec<u8>> {
    let split = indicium.len().checked_sub(SIGNATURE_LEN)?;
    let (signed, signature) = indicium.split_at(split);
    let signature: &[u8; SIGNATURE_LEN] = signature.try_into().ok()?;
    let mut out = Vec::with_capacity(indicium.len());
    out.extend_from_slice(signed);
    out.extend_from_slice(&canonical_signature(signature));
    Some(out)
}
