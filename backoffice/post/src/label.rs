//! Label scans (PNG/JPEG) to indicium bytes: the DataMatrix decoder.
//!
//! The post office receives mail as scans of printed labels. A label carries the indicium
//! (signed bytes ‖ 64-byte signature) as an ECC 200 Data Matrix, made by the `datamatrix`
//! crate in Base256 mode (`wasm/src/barcode.rs`). [`decode`] turns one scan back into those
//! bytes; [`crate::verify`] then decides whether they are a valid indicium. Nothing here
//! trusts the bytes: a scan is only a way to carry them.
//!
//! Three steps, three crates, all pure Rust (no shelling out, no C):
//! 1. `image` (image-rs, built with its PNG and JPEG decoders only) reads the file. The
//!    header is read first and the size checked against [`MAX_PIXELS`] before any pixel is
//!    decoded, so a small file that claims a huge image (a decompression bomb) costs nothing;
//!    the decoder's own allocation limit is set as a second fence.
//! 2. `rxing` 0.9 (the Rust port of ZXing, built with its Data Matrix reader alone) finds
//!    the symbol in the grey image, samples its modules and corrects errors (Reed-Solomon).
//!    It is the one maintained crate on crates.io that finds a Data Matrix in an image:
//!    `datamatrix` only decodes an already sampled module grid, `zxing-cpp` wraps the C++
//!    library (a C++ build, not Rust), and a libdmtx binding would be C (none is published
//!    under the obvious names). rxing is
//!    maintained (a long line of releases, 0.9.3 the newest; edition 2024, Rust 1.85), has
//!    both ZXing's and zxing-cpp's Data Matrix detectors with their black-box tests, and
//!    reads our labels: 2 to 8 pixels per module, every orientation and tilt, JPEG down to
//!    quality 5, heavy noise, moderate blur (`tests/label.rs`; `tests/label_limits.rs`
//!    prints where it stops). libdmtx's `dmtxread` reads the same bytes from the same
//!    scans (`scripts/post-labels-check.sh`).
//! 3. rxing's text output is not used: it is made for text (character sets, ECI, GS1),
//!    and an indicium is binary. Its corrected *data codewords* are turned into bytes by
//!    `datamatrix::data::decode_data`, the decodation of the crate that encoded the label, so
//!    every mode that encoder may mix with Base256 (ASCII digit pairs, upper shift) comes
//!    back byte for byte.
//!
//! Limits: files above [`MAX_IMAGE_BYTES`] and images above [`MAX_PIXELS`] are refused
//! ([`LabelError::TooLarge`]); within them, memory is bounded by the decoded image (at
//! most 8 bytes a pixel for 16-bit RGBA, plus one byte a pixel of grey) and time by rxing's
//! few passes over it: a clean label decodes in well under a millisecond (`benches/label.rs`),
//! a label on a 35 MP page in ~0.3 s, and the worst case, a large scan of pure noise where
//! every pass fails, takes ~0.13 s a megapixel (release build, 2026-11-29). The decoders are not expected to panic on any input (the fuzz tests
//! in `tests/label.rs` feed random and truncated files); should one still do so, the panic is
//! caught and the scan reported [`LabelError::Unreadable`] rather than taking the post
//! office's worker down (this relies on unwinding, the default outside the wasm profile).

use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};

use image::{DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader, Limits};
use rxing::common::{GlobalHistogramBinarizer, HybridBinarizer};
use rxing::datamatrix::DataMatrixReader;
use rxing::{Binarizer, BinaryBitmap, DecodeHints, ImmutableReader, Luma8Source};

/// Largest scan file accepted, in bytes (20 MiB: room for a 600 dpi grey scan of a whole
/// C5 envelope, 21 MP, as PNG or JPEG).
pub const MAX_IMAGE_BYTES: usize = 20 * 1024 * 1024;

/// Largest scan accepted, in pixels (40 megapixels: an A4 page at 600 dpi is ~35 MP).
/// Checked on the header, before any pixel is decoded.
pub const MAX_PIXELS: u64 = 40_000_000;

/// Allocation limit handed to the image decoder: the largest accepted image at 8 bytes a
/// pixel (16-bit RGBA), the most any PNG or JPEG decodes to, plus room for the decoder's
/// own buffers. A second fence behind the [`MAX_PIXELS`] check, not the first.
const MAX_DECODER_ALLOC: u64 = MAX_PIXELS * 8 + 64 * 1024 * 1024;

/// Why a scan gives no indicium.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelError {
    /// Not a PNG or JPEG we can read (message says what the image crate said).
    Image(String),
    /// An image, but no DataMatrix could be read in it.
    Unreadable,
    /// Larger than MAX_IMAGE_BYTES or MAX_PIXELS (refused before decoding).
    TooLarge,
}

impl std::fmt::Display for LabelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LabelError::Image(msg) => write!(f, "label scan is not a readable PNG or JPEG: {msg}"),
            LabelError::Unreadable => f.write_str("no Data Matrix could be read in the label scan"),
            LabelError::TooLarge => write!(
                f,
                "label scan too large (limits: {MAX_IMAGE_BYTES} bytes, {MAX_PIXELS} pixels)"
            ),
        }
    }
}

impl std::error::Error for LabelError {}

/// The bytes of the Data Matrix in a PNG or JPEG label scan: for an openpsd label, the
/// indicium (not yet verified). Never panics; see the module comment for the limits.
pub fn decode(image: &[u8]) -> Result<Vec<u8>, LabelError> {
    if image.len() > MAX_IMAGE_BYTES {
        return Err(LabelError::TooLarge);
    }
    let grey = load_grey(image)?;
    read_data_matrix(&grey)
}

/// The scan as 8-bit grey, after the size checks.
fn load_grey(image: &[u8]) -> Result<image::GrayImage, LabelError> {
    // Only the two formats scanners send are accepted, whatever else `image` could read:
    // each extra codec is extra attack surface for a file from outside.
    let format = image::guess_format(image).map_err(image_error)?;
    if !matches!(format, ImageFormat::Png | ImageFormat::Jpeg) {
        return Err(LabelError::Image(format!(
            "{} files are not accepted (PNG or JPEG only)",
            format.extensions_str().first().copied().unwrap_or("such")
        )));
    }
    let mut limits = Limits::default();
    limits.max_alloc = Some(MAX_DECODER_ALLOC);
    let mut reader = ImageReader::with_format(Cursor::new(image), format);
    reader.limits(limits);
    // The image crate's decoders are fuzzed upstream; the catch is a backstop (module
    // comment), as for rxing below.
    let decoded = catch_unwind(AssertUnwindSafe(|| {
        // Reads the header only; the pixels are decoded after the size check.
        let decoder = reader.into_decoder().map_err(image_error)?;
        let (w, h) = decoder.dimensions();
        if u64::from(w) * u64::from(h) > MAX_PIXELS {
            return Err(LabelError::TooLarge);
        }
        DynamicImage::from_decoder(decoder).map_err(image_error)
    }));
    match decoded {
        // `into_luma8` takes a grey image as it is and converts anything else (RGB, alpha,
        // 16 bits, palette already expanded) with the Rec. 709 luma weights.
        Ok(img) => Ok(img?.into_luma8()),
        Err(_) => Err(LabelError::Image("the image decoder failed".into())),
    }
}

fn image_error(e: ImageError) -> LabelError {
    match e {
        ImageError::Limits(_) => LabelError::TooLarge,
        e => LabelError::Image(e.to_string()),
    }
}

/// Finds and decodes the Data Matrix in a grey image: at its own scale, then halved.
fn read_data_matrix(grey: &image::GrayImage) -> Result<Vec<u8>, LabelError> {
    // The decoders are not expected to panic; if one does, the scan is unreadable and the
    // worker lives on (module comment).
    catch_unwind(AssertUnwindSafe(|| {
        read_at(grey).or_else(|| {
            // Heavy noise on a fine scan (gaussian, salt and pepper, paper texture) breaks
            // the detector's edge tracing even where every module is still clear on
            // average: the scan at half size, each pixel the mean of 2×2, has half the
            // noise and modules still large enough to read. Tried only after a failure,
            // so clean scans pay nothing.
            let (w, h) = grey.dimensions();
            if w.min(h) < MIN_SIDE_TO_HALVE {
                return None;
            }
            read_at(&half(grey))
        })
    }))
    .ok()
    .flatten()
    .ok_or(LabelError::Unreadable)
}

/// Smallest scan side, in pixels, that is still worth halving: the smallest symbol
/// (10×10 modules) with a quiet zone of one module, at 2 pixels per module after halving.
const MIN_SIDE_TO_HALVE: u32 = 2 * 12 * 2;

/// `grey` at half size, each pixel the mean of a 2×2 block (a last odd row or column is
/// dropped).
fn half(grey: &image::GrayImage) -> image::GrayImage {
    let (w, h) = (grey.width() / 2, grey.height() / 2);
    image::GrayImage::from_fn(w, h, |x, y| {
        let sum: u16 = [(0, 0), (1, 0), (0, 1), (1, 1)]
            .iter()
            .map(|&(dx, dy)| u16::from(grey.get_pixel(2 * x + dx, 2 * y + dy)[0]))
            .sum();
        // The mean of four bytes, rounded, fits a byte.
        image::Luma([u8::try_from((sum + 2) / 4).unwrap_or(u8::MAX)])
    })
}

/// The symbol in `grey` at its own scale, if any of the reader's passes finds it.
///
/// Cheapest first, each tried only when the one before found nothing: the adaptive
/// (local-threshold) binarizer with the zxing-cpp detector, which handles rotation, uneven
/// light and small modules and reads nearly every scan in the tests; then "try harder",
/// which adds ZXing's older detector and the axis-aligned "pure barcode" sampler; then one
/// global threshold, which copes better with blur smearing modules together.
fn read_at(grey: &image::GrayImage) -> Option<Vec<u8>> {
    let (w, h) = grey.dimensions();
    let pixels = grey.as_raw();
    let fast = DecodeHints::default();
    let harder = DecodeHints::default().with(rxing::DecodeHintValue::TryHarder(true));
    let attempt = |adaptive: bool, hints: &DecodeHints| -> Option<Vec<u8>> {
        // Borrows the pixels: each pass binarizes afresh, nothing is copied.
        let source = Luma8Source::new_with_slice(pixels, w, h).ok()?;
        if adaptive {
            try_read(HybridBinarizer::new(source), hints)
        } else {
            try_read(GlobalHistogramBinarizer::new(source), hints)
        }
    };
    attempt(true, &fast)
        .or_else(|| attempt(true, &harder))
        .or_else(|| attempt(false, &harder))
}

/// One detection and decoding attempt; the data codewords as bytes.
fn try_read<B: Binarizer>(binarizer: B, hints: &DecodeHints) -> Option<Vec<u8>> {
    let mut bitmap = BinaryBitmap::new(binarizer);
    let result = DataMatrixReader
        .immutable_decode_with_hints(&mut bitmap, hints)
        .ok()?;
    // rxing's raw bytes are the data codewords after error correction (ECC stripped), in
    // symbol order: exactly what the encoder's `data_codewords()` were.
    datamatrix::data::decode_data(result.getRawBytes()).ok()
}
