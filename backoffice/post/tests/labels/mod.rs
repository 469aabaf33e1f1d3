//! Label scans made in Rust for the label tests and bench: a real signed indicium, encoded
//! as the browser PSD does (`datamatrix`, Base256), rasterized with a quiet zone, then
//! degraded the way scanners and printers degrade it (rotation, noise, blur, JPEG).
//! Everything is deterministic (fixed keys, a seeded xorshift), so a failure reproduces.
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]
// Pixel arithmetic: every cast below is of a value already clamped to the target range.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

use std::io::Cursor;

use datamatrix::{DataMatrixBuilder, EncodationType, SymbolList};
use image::codecs::jpeg::JpegEncoder;
use image::{GrayImage, ImageFormat, Luma};
use openpsd_core::crypto::IndiciumKey;
use openpsd_core::psd::indicium::IndiciumData;
use openpsd_core::types::*;

/// White modules around the symbol (the browser PSD's `QUIET_ZONE`).
pub const QUIET_ZONE: u32 = 2;

/// The device key that signs the test indicia (the tests' usual fixed scalar).
pub fn device_key() -> IndiciumKey {
    IndiciumKey::from_bytes(&[7; 32]).unwrap()
}

/// A signed indicium (signed bytes ‖ 64-byte signature) and the public key that verifies
/// it. `n` varies the piece count, amounts and destination, so the bytes differ.
pub fn indicium(n: u32) -> (Vec<u8>, [u8; 65]) {
    indicium_with(
        n,
        b"10115",
        format!("{:05}", 10_000 + n % 90_000).as_bytes(),
    )
}

/// As [`indicium`], with the given origin and destination postal codes (1 to 10 bytes:
/// they make the indicium's length vary).
pub fn indicium_with(n: u32, origin: &[u8], destination: &[u8]) -> (Vec<u8>, [u8; 65]) {
    let key = device_key();
    let data = IndiciumData {
        key_id: key.key_id(),
        device: DeviceId(*b"PSD00001"),
        license: LicenseId(4711),
        ar: Amount(1_000_000 - 85 * u64::from(n)),
        dr: Amount(85 * u64::from(n)),
        pieces: PieceCount(n),
        postage: Amount(85),
        date: Date::new(2026, 11, 21).unwrap(),
        rate: RateCategory(1),
        origin: PostalCode::new(origin).unwrap(),
        destination: PostalCode::new(destination).unwrap(),
    };
    let mut bytes = data.encode();
    let signature = key.sign(&bytes);
    bytes.extend_from_slice(&signature);
    (bytes, key.public_key())
}

/// The symbol for `bytes` as `wasm/src/barcode.rs` makes it: (side in modules, row-major
/// modules, `true` = dark), without quiet zone.
pub fn modules(bytes: &[u8]) -> (u32, Vec<bool>) {
    let code = DataMatrixBuilder::new()
        .with_encodation_types(EncodationType::Base256)
        .with_symbol_list(SymbolList::default())
        .encode(bytes)
        .unwrap();
    let bitmap = code.bitmap();
    assert_eq!(bitmap.width(), bitmap.height(), "square symbols only");
    (bitmap.width() as u32, bitmap.bits().to_vec())
}

/// The symbol printed at `px` pixels per module, black (0) on white (255), with a quiet
/// zone of [`QUIET_ZONE`] modules on every side.
pub fn render(bytes: &[u8], px: u32) -> GrayImage {
    render_with(bytes, px, QUIET_ZONE, 0, 255)
}

/// As [`render`], with the quiet zone in modules and the ink and paper grey levels.
pub fn render_with(bytes: &[u8], px: u32, quiet: u32, ink: u8, paper: u8) -> GrayImage {
    let (n, bits) = modules(bytes);
    let side = (n + 2 * quiet) * px;
    GrayImage::from_fn(side, side, |x, y| {
        let (mx, my) = (x / px, y / px);
        let dark = (quiet..quiet + n).contains(&mx)
            && (quiet..quiet + n).contains(&my)
            && bits[((my - quiet) * n + (mx - quiet)) as usize];
        Luma([if dark { ink } else { paper }])
    })
}

/// `img` pasted at (x, y) onto a white page of `w`×`h` pixels.
pub fn on_page(img: &GrayImage, w: u32, h: u32, x: u32, y: u32) -> GrayImage {
    let mut page = GrayImage::from_pixel(w, h, Luma([255]));
    image::imageops::overlay(&mut page, img, i64::from(x), i64::from(y));
    page
}

/// PNG file of `img`.
pub fn png(img: &GrayImage) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png).unwrap();
    out.into_inner()
}

/// JPEG file of `img` at `quality` (1-100).
pub fn jpeg(img: &GrayImage, quality: u8) -> Vec<u8> {
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, quality)
        .encode_image(img)
        .unwrap();
    out
}

/// `img` rotated by `degrees` (counter-clockwise) about its centre, by bilinear
/// resampling onto a canvas large enough to hold it, white outside the original.
pub fn rotate(img: &GrayImage, degrees: f64) -> GrayImage {
    let (w, h) = (f64::from(img.width()), f64::from(img.height()));
    let (s, c) = degrees.to_radians().sin_cos();
    let out_w = (w * c.abs() + h * s.abs()).ceil();
    let out_h = (w * s.abs() + h * c.abs()).ceil();
    let (cx, cy, ox, oy) = (w / 2.0, h / 2.0, out_w / 2.0, out_h / 2.0);
    let sample = |x: f64, y: f64| -> f64 {
        let (x0, y0) = (x.floor(), y.floor());
        let (fx, fy) = (x - x0, y - y0);
        let px = |xi: f64, yi: f64| -> f64 {
            if xi < 0.0 || yi < 0.0 || xi >= w || yi >= h {
                255.0
            } else {
                f64::from(img.get_pixel(xi as u32, yi as u32)[0])
            }
        };
        let top = px(x0, y0) * (1.0 - fx) + px(x0 + 1.0, y0) * fx;
        let bottom = px(x0, y0 + 1.0) * (1.0 - fx) + px(x0 + 1.0, y0 + 1.0) * fx;
        top * (1.0 - fy) + bottom * fy
    };
    GrayImage::from_fn(out_w as u32, out_h as u32, |x, y| {
        // Inverse mapping: the source point that lands on this pixel's centre.
        let (dx, dy) = (f64::from(x) + 0.5 - ox, f64::from(y) + 0.5 - oy);
        let sx = c * dx - s * dy + cx - 0.5;
        let sy = s * dx + c * dy + cy - 0.5;
        Luma([sample(sx, sy).round().clamp(0.0, 255.0) as u8])
    })
}

/// Deterministic pseudo-random numbers (xorshift64*), so every noisy scan reproduces.
pub struct Rng(u64);

impl Rng {
    /// A generator from a non-zero-ized seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u = 1.0 - self.unit();
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// Salt-and-pepper noise: each pixel becomes black or white with probability `p`.
pub fn salt_and_pepper(img: &GrayImage, p: f64, seed: u64) -> GrayImage {
    let mut rng = Rng::new(seed);
    let mut out = img.clone();
    for px in out.pixels_mut() {
        if rng.unit() < p {
            px[0] = if rng.next_u64() & 1 == 0 { 0 } else { 255 };
        }
    }
    out
}

/// Additive gaussian noise of standard deviation `sigma` grey levels.
pub fn gaussian_noise(img: &GrayImage, sigma: f64, seed: u64) -> GrayImage {
    let mut rng = Rng::new(seed);
    let mut out = img.clone();
    for px in out.pixels_mut() {
        px[0] = (f64::from(px[0]) + sigma * rng.normal())
            .round()
            .clamp(0.0, 255.0) as u8;
    }
    out
}

/// Gaussian blur of standard deviation `sigma` pixels (out-of-focus scan, ink spread).
pub fn blur(img: &GrayImage, sigma: f32) -> GrayImage {
    image::imageops::blur(img, sigma)
}

/// Uneven lighting: the page darkens linearly from left (`1.0`) to right (`right`).
pub fn shade(img: &GrayImage, right: f64) -> GrayImage {
    let w = f64::from(img.width().max(2) - 1);
    let mut out = img.clone();
    for (x, _, px) in out.enumerate_pixels_mut() {
        let k = 1.0 + (right - 1.0) * f64::from(x) / w;
        px[0] = (f64::from(px[0]) * k).round().clamp(0.0, 255.0) as u8;
    }
    out
}

/// The standard scan of the bench and the CI cross-check: indicium `n` at 4 pixels per
/// module, as PNG.
pub fn typical_png(n: u32) -> (Vec<u8>, Vec<u8>, [u8; 65]) {
    let (bytes, public_key) = indicium(n);
    (png(&render(&bytes, 4)), bytes, public_key)
}
