//! Fixed-base P-256 scalar multiplication from precomputed affine tables, and the ECDSA
//! signing and verification built on it (issue 17, parts 1 and 3).
//!
//! A [`FixedBaseTable`] of a point P holds, for every window i of `W` bits of a scalar, the
//! affine points j·2^(W·i)·P for j = 1..2^(W-1). A scalar is recoded into signed digits in
//! [-2^(W-1), 2^(W-1)] (no branches), and k·P is the sum of one table entry per window:
//! ⌈257/W⌉ mixed additions and no doublings (p256's own base-point table, radix 16 in
//! projective coordinates, spends 66 full additions and 4 doublings).
//!
//! * The generator's table is built once per process on first use (a lock-free
//!   `once_cell::race::OnceBox`, which works in `no_std` + `alloc`; p256's
//!   `precomputed-tables` needs `std` or a critical section) rather than embedded in the
//!   binary: ~170 KB of heap, ~2 ms to build.
//! * Signing ([`sign_prehash`]) takes its nonce from RFC 6979 exactly as p256 does and
//!   computes k·G with [`FixedBaseTable::mul`], which is constant time: every digit is
//!   recoded without branches, every window reads *all* of its entries with
//!   `conditional_assign`, the sign is applied with `conditional_negate`, and the mixed
//!   additions are p256's complete (exception-free) formulas. The signature is p256's
//!   byte for byte (the tests compare them on random keys and messages).
//! * Verification is of public data only, so it is allowed to take variable time: the
//!   table entry is read by index and zero digits are skipped ([`FixedBaseTable::mul_vartime`]).
//!   A [`KeyTable`] (in `crypto::PreparedKey`) is a table of a public key, for a verifier
//!   that checks many signatures of one key; a one-off verification ([`verify_prehash`]) uses the
//!   generator's table for u1·G and (off the browser) p256's variable-time wNAF for u2·Q.
//!
//! The browser's module (wasm32) signs and verifies here too, with a narrower table
//! ([`G_WINDOW`]) built on the instance's first signature or verification (3–8 ms in Node).
//! To stay within its size budget it verifies with code it already carries for signing and
//! ECDH (a constant-time inversion of s and p256's constant-time fixed-window multiplication
//! for u2·Q) instead of the variable-time ones; the results are the same. No [`KeyTable`]
//! and no nonce pool there.

use alloc::boxed::Box;
use alloc::vec::Vec;

use once_cell::race::OnceBox;
use p256::ecdsa::Signature;
use p256::elliptic_curve::group::{Curve as _, Group as _};
use p256::elliptic_curve::ops::{Invert, Reduce};
use p256::elliptic_curve::point::AffineCoordinates;
use p256::elliptic_curve::Curve as _;
use p256::{AffinePoint, FieldBytes, NistP256, NonZeroScalar, ProjectivePoint, Scalar, U256};
use sha2::Sha256;
use subtle::{Choice, ConditionallyNegatable, ConditionallySelectable, ConstantTimeEq};
use zeroize::{Zeroize, Zeroizing};

/// The generator table's window width: 37 windows of 64 entries (~170 KB, ~2 ms to build).
/// Measured on 2026-12-01 (`cargo bench -p openpsd-core --bench ecdsa`, k·G alone): widths
/// 4, 5, 6 and 7 took 30.8, 25.8, 24.0 and 24.1 µs in constant time (signing; a wider
/// window spends on its scan what it saves in additions) and 28.7, 23.3, 19.4 and 16.9 µs
/// in variable time (verification, which reads one entry per window): 7 is as fast as 6
/// for signing and the fastest for verification.
#[cfg(not(target_arch = "wasm32"))]
pub const G_WINDOW: usize = 7;
/// In the browser's module (wasm32) the scan costs more against an addition: measured on
/// 2026-12-02 (`scripts/wasm-bench.sh`, typed indicia/s, Node / Chromium), widths 7, 6, 5
/// and 4 gave 3,940 / 7,025, 4,675 / 8,126, 5,040 / 8,188 and 4,957 / 7,509: 5 is the
/// fastest in both (52 windows of 16 entries: ~60 KB of the instance's heap).
#[cfg(target_arch = "wasm32")]
pub const G_WINDOW: usize = 5;

/// A public key's table ([`KeyTable`]; not in the browser's module): the width of the
/// native generator table, for
/// verification at OpenSSL's rate (~170 KB and ~1.5 ms per key; a verifier holding very
/// many keys would want a narrower one).
pub const KEY_WINDOW: usize = 7;

/// The most windows any width here needs (width 4: ⌈257/4⌉ = 65).
const MAX_WINDOWS: usize = 65;

/// Multiples of one point for fixed-base multiplication with `W`-bit signed windows
/// (4 ≤ `W` ≤ 7: a digit of ±2^(W-1) fits an `i8`, and ⌈257/W⌉ digits fit the recoding buffer).
pub struct FixedBaseTable<const W: usize> {
    /// Window i's entries at i·2^(W-1) .. (i+1)·2^(W-1): j·2^(W·i)·P for j = 1..=2^(W-1).
    points: Vec<AffinePoint>,
}

impl<const W: usize> core::fmt::Debug for FixedBaseTable<W> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "FixedBaseTable<{W}>({} points)", self.points.len())
    }
}

impl<const W: usize> FixedBaseTable<W> {
    /// Number of windows: the signed digits of a scalar below 2^256 need W·windows ≥ 257
    /// (the top window then holds less than 2^(W-1), so the last carry is absorbed).
    const WINDOWS: usize = 257_usize.div_ceil(W);
    /// Entries per window.
    const ENTRIES: usize = 1 << (W - 1);

    /// Builds the table of `base` (one batch inversion for all the entries).
    pub fn new(base: &ProjectivePoint) -> Self {
        const { assert!(W >= 4 && W <= 7 && 257_usize.div_ceil(W) <= MAX_WINDOWS) };
        let mut projective = Vec::with_capacity(Self::WINDOWS * Self::ENTRIES);
        let mut window_base = *base;
        for _ in 0..Self::WINDOWS {
            let mut multiple = window_base;
            for _ in 0..Self::ENTRIES {
                projective.push(multiple);
                multiple += &window_base;
            }
            // `multiple` is now (2^(W-1) + 1)·base_i; the next window's base is 2^W·base_i,
            // twice the last entry.
            window_base = projective.last().copied().unwrap_or(window_base).double();
        }
        let mut points = alloc::vec![AffinePoint::IDENTITY; projective.len()];
        ProjectivePoint::batch_normalize(&projective, &mut points);
        Self { points }
    }

    /// Window `i`'s entries.
    fn window(&self, i: usize) -> &[AffinePoint] {
        self.points
            .get(i * Self::ENTRIES..(i + 1) * Self::ENTRIES)
            .unwrap_or_default()
    }

    /// k·P in constant time (k secret): every entry of every window is read.
    pub fn mul(&self, k: &Scalar) -> ProjectivePoint {
        let mut digits = Zeroizing::new([0i8; MAX_WINDOWS]);
        recode::<W>(k, &mut digits);
        let mut acc = ProjectivePoint::IDENTITY;
        let mut selected = AffinePoint::IDENTITY;
        for (i, &digit) in digits.iter().take(Self::WINDOWS).enumerate() {
            let (abs, negative) = split_digit(digit);
            selected = AffinePoint::IDENTITY;
            for (j, entry) in (1u8..).zip(self.window(i)) {
                selected.conditional_assign(entry, j.ct_eq(&abs));
            }
            selected.conditional_negate(negative);
            acc += &selected;
        }
        selected.zeroize();
        acc
    }

    /// k·P in variable time, for public scalars only (verification).
    pub fn mul_vartime(&self, k: &Scalar) -> ProjectivePoint {
        let mut acc = None;
        self.add_mul_vartime(k, &mut acc);
        acc.unwrap_or(ProjectivePoint::IDENTITY)
    }

    /// Adds k·P to `acc` (`None`: nothing yet, so the first entry is taken as it is
    /// rather than added to the identity), in variable time, for public scalars only.
    fn add_mul_vartime(&self, k: &Scalar, acc: &mut Option<ProjectivePoint>) {
        let mut digits = [0i8; MAX_WINDOWS];
        recode::<W>(k, &mut digits);
        for (i, &digit) in digits.iter().take(Self::WINDOWS).enumerate() {
            let Some(entry) = usize::from(digit.unsigned_abs())
                .checked_sub(1)
                .and_then(|j| self.window(i).get(j))
            else {
                continue;
            };
            let entry = if digit < 0 { -entry } else { *entry };
            *acc = Some(match acc.take() {
                Some(sum) => sum + entry,
                None => ProjectivePoint::from(entry),
            });
        }
    }
}

/// A digit's magnitude and sign, without branches.
fn split_digit(digit: i8) -> (u8, Choice) {
    let sign = digit.to_ne_bytes()[0] >> 7; // 1 if negative
    let mask = 0u8.wrapping_sub(sign); // 0xFF if negative
    let abs = (digit.to_ne_bytes()[0] ^ mask).wrapping_add(sign);
    (abs, Choice::from(sign))
}

/// Recodes `k` (< 2^256) into ⌈257/W⌉ signed digits d_i ∈ [-2^(W-1), 2^(W-1)] with
/// k = Σ d_i·2^(W·i), least significant first, without branches on k's bits.
fn recode<const W: usize>(k: &Scalar, digits: &mut [i8; MAX_WINDOWS]) {
    let be = Zeroizing::new(k.to_bytes());
    // Little-endian bytes, with room for the last window's 3-byte read.
    let mut le = Zeroizing::new([0u8; 36]);
    for (dst, src) in le.iter_mut().zip(be.iter().rev()) {
        *dst = *src;
    }
    let windows = 257_usize.div_ceil(W);
    let mask = (1u32 << W) - 1;
    let half = 1u32 << (W - 1);
    let mut carry = 0u32;
    for (i, digit) in digits.iter_mut().take(windows).enumerate() {
        let bit = W * i;
        let byte = bit / 8;
        let b = |n: usize| u32::from(le.get(byte + n).copied().unwrap_or(0));
        let word = b(0) | (b(1) << 8) | (b(2) << 16);
        let value = ((word >> (bit % 8)) & mask) + carry; // 0..=2^W
        carry = (value + half - 1) >> W; // 1 if value > 2^(W-1)
        let signed = value.wrapping_sub(carry << W); // value or value - 2^W, two's complement
        *digit = i8::from_ne_bytes([signed.to_le_bytes()[0]]);
    }
}

/// The generator's table, built on first use and kept for the life of the process.
pub fn generator_table() -> &'static FixedBaseTable<G_WINDOW> {
    static TABLE: OnceBox<FixedBaseTable<G_WINDOW>> = OnceBox::new();
    TABLE.get_or_init(|| Box::new(FixedBaseTable::new(&ProjectivePoint::GENERATOR)))
}

/// The ECDSA scalar of a message digest (its leftmost 256 bits, reduced mod n).
fn digest_scalar(z: &[u8; 32]) -> Scalar {
    <Scalar as Reduce<U256>>::reduce(&U256::from_be_slice(z))
}

/// The scalar of an x-coordinate (reduced mod n).
fn x_scalar(point: &AffinePoint) -> Scalar {
    <Scalar as Reduce<FieldBytes>>::reduce(&point.x())
}

/// ECDSA P-256 over the SHA-256 digest `z` with the RFC 6979 nonce: the same signature as
/// p256's `SigningKey::sign_prehash`, with k·G from the generator's table (constant time).
/// The key's bytes, k and k⁻¹ are zeroized here; the `rfc6979` crate's HMAC-DRBG state is
/// not (it has no zeroize, in p256's signing either).
pub fn sign_prehash(d: &NonZeroScalar, z: &[u8; 32]) -> Signature {
    let x = Zeroizing::new(d.as_ref().to_bytes());
    let order = NistP256::ORDER;
    let mut kgen = rfc6979::KGenerator::<Sha256, U256>::new(&x[..], z, &[], order.as_ref());
    let e = digest_scalar(z);
    loop {
        let mut k_bytes = Zeroizing::new(FieldBytes::default());
        kgen.fill_next_k(&mut k_bytes);
        // RFC 6979 gives 0 < k < n; the checks below fail with probability ~2^-256 and
        // then the next candidate is taken, as p256 does.
        let Some(mut k) = NonZeroScalar::from_repr(*k_bytes).into_option() else {
            continue;
        };
        let k_inv = Zeroizing::new(*Invert::invert(&k).as_ref());
        let big_r = generator_table().mul(&k).to_affine();
        k.zeroize();
        let r = x_scalar(&big_r);
        let s = *k_inv * (e + r * d.as_ref());
        if let Ok(signature) = Signature::from_scalars(r, s) {
            return signature;
        }
    }
}

/// ECDSA P-256 verification of (r ‖ s) over the digest `z`, with `add_u2_q` adding u2·Q:
/// p256's `verify_prehash` (r, s in [1, n); x(u1·G + u2·Q) mod n = r), in variable time.
fn verify_with(
    add_u2_q: impl FnOnce(&Scalar, &mut Option<ProjectivePoint>),
    z: &[u8; 32],
    signature: &[u8],
) -> bool {
    let Ok(signature) = Signature::from_slice(signature) else {
        return false;
    };
    let (r, s) = signature.split_scalars();
    // The browser's module inverts in constant time: the same inversion signing uses, so
    // the module carries one inversion's code (its size budget; s is public either way).
    #[cfg(not(target_arch = "wasm32"))]
    let s_inv = *Invert::invert_vartime(&s).as_ref();
    #[cfg(target_arch = "wasm32")]
    let s_inv = *Invert::invert(&s).as_ref();
    let u1 = digest_scalar(z) * s_inv;
    let u2 = *r.as_ref() * s_inv;
    let mut sum = None;
    generator_table().add_mul_vartime(&u1, &mut sum);
    add_u2_q(&u2, &mut sum);
    let point = sum.unwrap_or(ProjectivePoint::IDENTITY).to_affine();
    // The identity's x reads as 0, never a valid r.
    bool::from(!point.is_identity()) && x_scalar(&point) == *r.as_ref()
}

/// Verifies (r ‖ s) over the digest `z` under `q` (one-off: p256's wNAF for u2·Q; in the
/// browser's module its constant-time multiplication).
pub fn verify_prehash(q: &AffinePoint, z: &[u8; 32], signature: &[u8]) -> bool {
    let q = ProjectivePoint::from(q);
    verify_with(
        |u2, sum| {
            // The browser's module multiplies with p256's constant-time multiplication, which ECDH
            // already needs, rather than carry the wNAF's code too (its size budget).
            #[cfg(not(target_arch = "wasm32"))]
            let u2_q = q.mul_vartime(u2);
            #[cfg(target_arch = "wasm32")]
            let u2_q = q * u2;
            *sum = Some(sum.map_or(u2_q, |s| s + u2_q));
        },
        z,
        signature,
    )
}

/// A public key with its own table, for verifying many signatures of one key (a device's
/// indicia): each verification is then at most 74 mixed additions and no doublings.
pub struct KeyTable {
    table: FixedBaseTable<KEY_WINDOW>,
}

impl core::fmt::Debug for KeyTable {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("KeyTable(..)")
    }
}

impl KeyTable {
    /// Builds the table of `q` (~1.5 ms).
    pub fn new(q: &AffinePoint) -> Self {
        Self {
            table: FixedBaseTable::new(&ProjectivePoint::from(q)),
        }
    }

    /// Verifies (r ‖ s) over the digest `z`.
    pub fn verify_prehash(&self, z: &[u8; 32], signature: &[u8]) -> bool {
        verify_with(|u2, sum| self.table.add_mul_vartime(u2, sum), z, signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(seed: u64) -> Scalar {
        let bytes = crate::crypto::sha256(&seed.to_le_bytes());
        <Scalar as Reduce<FieldBytes>>::reduce(&bytes.into())
    }

    fn check_width<const W: usize>() {
        let base = ProjectivePoint::GENERATOR * scalar(99);
        let table = FixedBaseTable::<W>::new(&base);
        let edge = [
            Scalar::ZERO,
            Scalar::ONE,
            -Scalar::ONE,
            Scalar::from(1u64 << (W - 1)),
            Scalar::from((1u64 << (W - 1)) + 1),
            -Scalar::from(1u64 << (W - 1)),
        ];
        for k in edge.into_iter().chain((0..64).map(scalar)) {
            let expected = (base * k).to_affine();
            assert_eq!(table.mul(&k).to_affine(), expected, "W={W} k={k:?}");
            assert_eq!(table.mul_vartime(&k).to_affine(), expected, "W={W} k={k:?}");
        }
    }

    #[test]
    fn every_width_multiplies_like_p256() {
        check_width::<4>();
        check_width::<5>();
        check_width::<6>();
        check_width::<7>();
    }

    #[test]
    fn recoding_sums_back_to_the_scalar() {
        for k in (0..200).map(scalar).chain([Scalar::ZERO, -Scalar::ONE]) {
            let mut digits = [0i8; MAX_WINDOWS];
            recode::<G_WINDOW>(&k, &mut digits);
            let mut sum = Scalar::ZERO;
            let radix = Scalar::from(1u64 << G_WINDOW);
            for &d in digits.iter().take(257_usize.div_ceil(G_WINDOW)).rev() {
                let magnitude = Scalar::from(u64::from(d.unsigned_abs()));
                sum = sum * radix + if d < 0 { -magnitude } else { magnitude };
                assert!(d.unsigned_abs() <= 1 << (G_WINDOW - 1));
            }
            assert_eq!(sum, k);
        }
    }

    #[test]
    fn split_digit_is_magnitude_and_sign() {
        for d in -128i8..=127 {
            let (abs, negative) = split_digit(d);
            assert_eq!(abs, d.unsigned_abs());
            assert_eq!(bool::from(negative), d < 0);
        }
    }
}
