//! The nonce pool (issue 17, part 2; Pitney Bowes' US 7,272,581, FIPS 186 appendix 3.2):
//! ECDSA's per-signature (k⁻¹, r) pairs computed ahead, while the device is idle, so that a
//! burst of indicia costs only the on-line part s = k⁻¹·(e + r·d).
//!
//! * Each k is SHA-256 of a domain label, 32 fresh bytes from the platform's RNG
//!   ([`Platform::fill_random`], one draw per batch), the signing key the pool was filled
//!   for and a counter that never repeats in the pool's life: a weak RNG still gives
//!   distinct, secret nonces, and a good one makes them independent of the key.
//! * A batch of up to [`BATCH`] pairs costs [`BATCH`] constant-time k·G from the generator's
//!   table, **one** field inversion (p256's `batch_normalize`, Montgomery's trick) for the
//!   affine x-coordinates, and **one** scalar inversion (Montgomery's trick below) for the
//!   k⁻¹.
//! * The pairs live **only in RAM**: the pool is volatile state of the applet (never in
//!   the store, never in a saved or sealed state), each pair is overwritten with zeros in
//!   the pool the moment it is taken and again after its signature, and the whole pool is
//!   zeroized when it is cleared (a reset or power-off of the card) or dropped. The pool's
//!   buffer is allocated once at its full capacity, so no reallocation leaves copies.
//! * A pair is used for one signature, under whichever key signs (a nonce must never sign
//!   twice; which key it was derived with only hedges the RNG).
//!
//! Not in the browser's module (wasm32): it has no idle loop to fill the pool in.

use alloc::vec::Vec;

use p256::ecdsa::Signature;
use p256::elliptic_curve::group::Curve as _;
use p256::elliptic_curve::ops::{Invert, Reduce};
use p256::elliptic_curve::point::AffineCoordinates;
use p256::elliptic_curve::Field as _;
use p256::{AffinePoint, FieldBytes, NonZeroScalar, ProjectivePoint, Scalar};
use zeroize::{Zeroize, Zeroizing};

use super::comb::generator_table;
use crate::platform::Platform;

/// Pairs computed per batch (one field and one scalar inversion each).
pub const BATCH: usize = 32;
/// Pairs the pool holds at most: a burst of 1,024 indicia (64 KiB of RAM).
pub const CAPACITY: usize = 1024;

/// Domain separation of the nonce derivation.
const LABEL: &[u8] = b"openpsd nonce pool v1";

/// A precomputed (k⁻¹, r): taken from the pool, used once, zeroized on drop.
pub struct NoncePair {
    k_inv: Scalar,
    r: Scalar,
}

impl Drop for NoncePair {
    fn drop(&mut self) {
        self.k_inv.zeroize();
        self.r.zeroize();
    }
}

impl core::fmt::Debug for NoncePair {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("NoncePair(..)")
    }
}

impl NoncePair {
    /// ECDSA over the digest `z` with this pair and the key `d`: s = k⁻¹·(e + r·d).
    /// `None` if s is zero (probability ~2^-256; the caller signs another way).
    pub(crate) fn sign_prehash(self, d: &NonZeroScalar, z: &[u8; 32]) -> Option<Signature> {
        let e = <Scalar as Reduce<p256::U256>>::reduce(&p256::U256::from_be_slice(z));
        let s = Zeroizing::new(self.k_inv * (e + self.r * d.as_ref()));
        Signature::from_scalars(self.r, *s).ok()
    }
}

/// The pool of precomputed (k⁻¹, r) pairs (volatile; see the module's documentation).
#[derive(Default)]
pub struct NoncePool {
    /// (k⁻¹, r) pairs; taken from the end.
    pairs: Vec<(Scalar, Scalar)>,
    /// Nonces derived so far (never repeats while the pool lives).
    counter: u64,
}

impl core::fmt::Debug for NoncePool {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "NoncePool({} pairs)", self.pairs.len())
    }
}

impl NoncePool {
    /// An empty pool (no memory until the first [`NoncePool::fill_batch`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// Pairs ready.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether no pair is ready.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Whether the pool holds [`CAPACITY`] pairs.
    pub fn is_full(&self) -> bool {
        self.pairs.len() >= CAPACITY
    }

    /// Computes one batch of up to [`BATCH`] pairs for `key` (fewer when the pool is nearly
    /// full) with 32 fresh bytes from `platform`; returns how many were computed (0 when full).
    pub fn fill_batch(&mut self, key: &super::IndiciumKey, platform: &mut dyn Platform) -> usize {
        let n = BATCH.min(CAPACITY.saturating_sub(self.pairs.len()));
        if n == 0 {
            return 0;
        }
        if self.pairs.capacity() < CAPACITY {
            // Only while empty of secrets: the first fill (a fresh Vec has nothing to copy).
            self.pairs.reserve_exact(CAPACITY);
        }
        let mut fresh = Zeroizing::new([0u8; 32]);
        platform.fill_random(fresh.as_mut());
        let d = key.secret_bytes();
        let mut ks: Zeroizing<Vec<Scalar>> = Zeroizing::new(Vec::with_capacity(n));
        while ks.len() < n {
            self.counter = self.counter.wrapping_add(1);
            let h = Zeroizing::new(super::sha256_parts(&[
                LABEL,
                fresh.as_ref(),
                d.as_ref(),
                &self.counter.to_be_bytes(),
            ]));
            // Out of [1, n) with probability ~2^-32: the next counter value is taken.
            if let Some(k) = NonZeroScalar::from_repr(FieldBytes::from(*h)).into_option() {
                ks.push(*k.as_ref());
            }
        }
        // R = k·G for each k (constant time), then one field inversion for all of them.
        let table = generator_table();
        let mut projective: Vec<ProjectivePoint> = ks.iter().map(|k| table.mul(k)).collect();
        let mut affine = alloc::vec![AffinePoint::IDENTITY; n];
        ProjectivePoint::batch_normalize(&projective, &mut affine);
        // The projective coordinates of k·G can tell about k (the affine x is public):
        // overwritten (p256's points have no zeroize; `black_box` keeps the stores).
        projective.fill(ProjectivePoint::IDENTITY);
        core::hint::black_box(&projective);
        // Montgomery's trick: prefix[i] = k_0·…·k_i, one inversion of the product, then
        // k_i⁻¹ = (k_0·…·k_i)⁻¹ · (k_0·…·k_(i-1)) walking back.
        let mut prefix: Zeroizing<Vec<Scalar>> = Zeroizing::new(Vec::with_capacity(n));
        let mut product = Scalar::ONE;
        for k in ks.iter() {
            product *= k;
            prefix.push(product);
        }
        // Every k is non-zero, so is the product (n is prime).
        let mut inv = Zeroizing::new(Invert::invert(&product).unwrap_or(Scalar::ZERO));
        product.zeroize();
        let mut inverses: Zeroizing<Vec<Scalar>> = Zeroizing::new(alloc::vec![Scalar::ZERO; n]);
        for i in (0..n).rev() {
            let before = if i == 0 { Scalar::ONE } else { prefix[i - 1] };
            inverses[i] = *inv * before;
            *inv *= ks[i];
        }
        for (k_inv, point) in inverses.iter().zip(&affine) {
            let r = <Scalar as Reduce<FieldBytes>>::reduce(&point.x());
            // r = 0 (probability ~2^-256) cannot sign: the pair is dropped.
            if !bool::from(r.is_zero()) {
                self.pairs.push((*k_inv, r));
            }
        }
        // k·G's y-coordinates are never published.
        affine.fill(AffinePoint::IDENTITY);
        core::hint::black_box(&affine);
        n
    }

    /// Takes one pair (its slot in the pool zeroized), or `None` when the pool is empty.
    pub fn take(&mut self) -> Option<NoncePair> {
        let slot = self.pairs.last_mut()?;
        let pair = NoncePair {
            k_inv: slot.0,
            r: slot.1,
        };
        slot.0.zeroize();
        slot.1.zeroize();
        self.pairs.pop();
        Some(pair)
    }

    /// Zeroizes and forgets every pair (a reset or power-off of the card).
    pub fn clear(&mut self) {
        for pair in self.pairs.iter_mut() {
            pair.0.zeroize();
            pair.1.zeroize();
        }
        self.pairs.clear();
    }
}

impl Drop for NoncePool {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::SeededPlatform;

    #[test]
    fn batch_pairs_are_inverse_nonces_of_their_points() {
        let key = crate::crypto::IndiciumKey::from_bytes(&[5; 32]).unwrap();
        let mut pool = NoncePool::new();
        let mut platform = SeededPlatform::new(3);
        assert_eq!(pool.fill_batch(&key, &mut platform), BATCH);
        assert_eq!(pool.len(), BATCH);
        while let Some(pair) = pool.take() {
            // k = (k⁻¹)⁻¹ and r = x(k·G) mod n.
            let k = pair.k_inv.invert().unwrap();
            let point = (ProjectivePoint::GENERATOR * k).to_affine();
            assert_eq!(<Scalar as Reduce<FieldBytes>>::reduce(&point.x()), pair.r);
        }
        assert!(pool.is_empty());
    }

    #[test]
    fn the_pool_stops_at_its_capacity_and_clears() {
        let key = crate::crypto::IndiciumKey::from_bytes(&[6; 32]).unwrap();
        let mut pool = NoncePool::new();
        let mut platform = SeededPlatform::new(4);
        let mut batches = 0;
        while pool.fill_batch(&key, &mut platform) > 0 {
            batches += 1;
        }
        assert_eq!(pool.len(), CAPACITY);
        assert_eq!(batches, CAPACITY.div_ceil(BATCH));
        assert!(pool.is_full());
        pool.clear();
        assert!(pool.is_empty());
    }
}
