//! `openpsd_post::label`: label scans (PNG/JPEG) back to indicium bytes.
//!
//! Every scan is made here from a real signed indicium (`labels/mod.rs`): rendered at 2 to
//! 8 pixels per module, saved as PNG or JPEG, rotated, tilted, noised, blurred, shaded or
//! placed on a page. Each must decode to exactly the indicium, and the indicium must verify
//! under the device key. Then what is not a label: no code, not an image, a decompression
//! bomb, random and truncated files (never a panic).
//!
//! `cargo test -p openpsd-post --test label`; the files for the libdmtx cross-check
//! (`scripts/post-labels-check.sh`) come from the ignored `write_label_files`.
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Pixel arithmetic on small, checked values.
#![allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]

mod labels;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use image::{GrayImage, ImageFormat, Luma};
use labels::*;
use openpsd_core::psd::indicium;
use openpsd_post::label::{decode, LabelError, MAX_IMAGE_BYTES, MAX_PIXELS};

/// Asserts that `file` decodes to exactly `expected` and that it verifies under `key`.
#[track_caller]
fn assert_reads(file: &[u8], expected: &[u8], key: &[u8; 65], what: &str) {
    match decode(file) {
        Ok(bytes) => {
            assert_eq!(bytes, expected, "{what}: wrong bytes");
            let data = indicium::verify(&bytes, key).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(data.key_id, device_key().key_id(), "{what}");
        }
        Err(e) => panic!("{what}: {e:?}"),
    }
}

#[test]
fn png_at_2_3_4_6_8_pixels_per_module() {
    for (n, px) in [2u32, 3, 4, 6, 8].into_iter().enumerate() {
        let (bytes, key) = indicium(n as u32 + 1);
        let file = png(&render(&bytes, px));
        assert_reads(&file, &bytes, &key, &format!("PNG, {px} px/module"));
    }
}

#[test]
fn indicia_of_every_length() {
    // Postal codes of 1 to 10 bytes make indicia of 124 to 142 bytes, and the encoder's
    // mix of ASCII (digit pairs) and Base256 codewords varies with them; each comes back
    // exactly. All fit a 44×44 symbol (other sizes: `any_bytes_come_back_exactly`).
    let mut sides = std::collections::BTreeSet::new();
    for (origin, destination) in [
        (&b"1"[..], &b"2"[..]),
        (b"10115", b"80331"),
        (b"SW1A 1AA", b"75008"),
        (b"1234567890", b"ABCDEFGHIJ"),
    ] {
        let (bytes, key) = indicium_with(9, origin, destination);
        sides.insert(modules(&bytes).0);
        let what = format!("{} bytes", bytes.len());
        assert_reads(&png(&render(&bytes, 4)), &bytes, &key, &what);
        assert_reads(&png(&render(&bytes, 2)), &bytes, &key, &what);
    }
    assert_eq!(sides.into_iter().collect::<Vec<_>>(), [44]);
}

#[test]
fn any_bytes_come_back_exactly() {
    // Not only indicia: digits (ASCII digit pairs), text and binary of many lengths, so
    // the codewords-to-bytes step is checked on every mode the encoder mixes in.
    let mut rng = Rng::new(5);
    let mut inputs: Vec<Vec<u8>> = vec![
        vec![0],
        b"0123456789012345678901234567890123456789".to_vec(),
        b"openpsd indicium, version 1".to_vec(),
        (0..=255u8).collect(),
        vec![0xFF; 200],
    ];
    for len in [1usize, 2, 17, 64, 130, 250, 251, 300, 555] {
        inputs.push(rng.bytes(len));
    }
    let mut sides = std::collections::BTreeSet::new();
    for bytes in inputs {
        sides.insert(modules(&bytes).0);
        let file = png(&render(&bytes, 3));
        assert_eq!(decode(&file), Ok(bytes.clone()), "{} bytes", bytes.len());
    }
    assert!(sides.len() >= 8, "symbol sides {sides:?}");
}

#[test]
fn jpeg_with_artefacts() {
    for (px, quality) in [(3u32, 90u8), (4, 75), (4, 50), (4, 30), (6, 20), (8, 50)] {
        let (bytes, key) = indicium(u32::from(quality) + px);
        let file = jpeg(&render(&bytes, px), quality);
        assert_reads(
            &file,
            &bytes,
            &key,
            &format!("JPEG q{quality}, {px} px/module"),
        );
    }
}

#[test]
fn rotated_90_180_270() {
    let (bytes, key) = indicium(42);
    let img = render(&bytes, 4);
    for (deg, rotated) in [
        (90, image::imageops::rotate90(&img)),
        (180, image::imageops::rotate180(&img)),
        (270, image::imageops::rotate270(&img)),
    ] {
        assert_reads(&png(&rotated), &bytes, &key, &format!("PNG {deg}°"));
        assert_reads(&jpeg(&rotated, 75), &bytes, &key, &format!("JPEG {deg}°"));
    }
    // Mirrored (scanned through the back of a transparent window envelope).
    let mirrored = image::imageops::flip_horizontal(&img);
    assert_reads(&png(&mirrored), &bytes, &key, "mirrored");
}

#[test]
fn tilted_by_a_few_degrees() {
    // Bilinear resampling, as a scanner's deskew or a crooked label gives.
    let (bytes, key) = indicium(43);
    for px in [4u32, 8] {
        let img = render(&bytes, px);
        for deg in [-10.0, -5.0, -2.0, 1.0, 3.0, 5.0, 10.0] {
            let tilted = rotate(&img, deg);
            assert_reads(
                &png(&tilted),
                &bytes,
                &key,
                &format!("{deg}°, {px} px/module"),
            );
        }
    }
    let tilted = rotate(&render(&bytes, 4), 5.0);
    assert_reads(&jpeg(&tilted, 60), &bytes, &key, "JPEG q60, 5°");
}

#[test]
fn any_angle_at_8_pixels_per_module() {
    // The zxing-cpp detector follows the symbol's edges at any angle; at 8 px/module a
    // 45° tilt still leaves each module ~5 px across after resampling.
    let (bytes, key) = indicium(44);
    let img = render(&bytes, 8);
    for deg in [15.0, 30.0, 45.0, 60.0, 135.0, 200.0, 315.0] {
        assert_reads(&png(&rotate(&img, deg)), &bytes, &key, &format!("{deg}°"));
    }
}

#[test]
fn salt_and_pepper_noise() {
    let (bytes, key) = indicium(45);
    for (px, p) in [(4u32, 0.01), (4, 0.03), (8, 0.05)] {
        let noisy = salt_and_pepper(&render(&bytes, px), p, u64::from(px) * 100);
        assert_reads(
            &png(&noisy),
            &bytes,
            &key,
            &format!("{p} salt and pepper, {px} px"),
        );
    }
}

#[test]
fn gaussian_noise_and_jpeg() {
    let (bytes, key) = indicium(46);
    for (px, sigma) in [(2u32, 20.0), (4, 30.0), (4, 50.0), (8, 60.0)] {
        let noisy = gaussian_noise(&render(&bytes, px), sigma, 7);
        assert_reads(&png(&noisy), &bytes, &key, &format!("σ {sigma}, {px} px"));
    }
    let noisy = gaussian_noise(&rotate(&render(&bytes, 4), -3.0), 25.0, 8);
    assert_reads(&jpeg(&noisy, 70), &bytes, &key, "σ 25, -3°, JPEG q70");
}

#[test]
fn slight_blur() {
    let (bytes, key) = indicium(47);
    for (px, sigma) in [(3u32, 0.7f32), (4, 1.0), (4, 1.5), (8, 2.5)] {
        let blurred = blur(&render(&bytes, px), sigma);
        assert_reads(
            &png(&blurred),
            &bytes,
            &key,
            &format!("blur σ {sigma}, {px} px"),
        );
    }
    let worst = jpeg(
        &gaussian_noise(&blur(&rotate(&render(&bytes, 4), 4.0), 1.0), 15.0, 9),
        60,
    );
    assert_reads(&worst, &bytes, &key, "4°, blur 1.0, σ 15, JPEG q60");
}

#[test]
fn low_contrast_and_uneven_light() {
    let (bytes, key) = indicium(48);
    // Grey ink on grey paper (a worn ribbon, recycled envelopes).
    let faint = render_with(&bytes, 4, QUIET_ZONE, 110, 170);
    assert_reads(&png(&faint), &bytes, &key, "ink 110 on paper 170");
    // Light falling off across the scan to a third.
    let shaded = shade(&render(&bytes, 4), 0.35);
    assert_reads(&png(&shaded), &bytes, &key, "shaded");
    // One module of quiet zone only.
    let tight = render_with(&bytes, 4, 1, 0, 255);
    assert_reads(&png(&tight), &bytes, &key, "quiet zone of 1 module");
}

#[test]
fn label_on_a_whole_envelope_scan() {
    // A C6 envelope at 150 dpi (~960×680) with the label in the top right corner and
    // some print elsewhere (address lines as black bars), then slightly tilted.
    let (bytes, key) = indicium(49);
    let mut page = on_page(&render(&bytes, 3), 960, 680, 760, 40);
    for (i, w) in [300u32, 240, 280, 160].into_iter().enumerate() {
        let y = 380 + 40 * i as u32;
        for yy in y..y + 18 {
            for x in 120..120 + w {
                page.put_pixel(x, yy, Luma([if (x / 9) % 3 == 0 { 255 } else { 20 }]));
            }
        }
    }
    assert_reads(&png(&page), &bytes, &key, "envelope");
    assert_reads(
        &jpeg(&rotate(&page, 2.0), 80),
        &bytes,
        &key,
        "envelope, 2°, JPEG",
    );
}

#[test]
fn colour_alpha_and_16_bit_pngs() {
    let (bytes, key) = indicium(50);
    let grey = render(&bytes, 4);
    let rgb = image::DynamicImage::ImageLuma8(grey.clone()).into_rgb8();
    let rgba = image::DynamicImage::ImageLuma8(grey.clone()).into_rgba8();
    let grey16 = image::DynamicImage::ImageLuma8(grey.clone()).into_luma16();
    for (what, img) in [
        ("RGB", image::DynamicImage::ImageRgb8(rgb.clone())),
        ("RGBA", image::DynamicImage::ImageRgba8(rgba)),
        ("16-bit grey", image::DynamicImage::ImageLuma16(grey16)),
    ] {
        let mut file = std::io::Cursor::new(Vec::new());
        img.write_to(&mut file, ImageFormat::Png).unwrap();
        assert_reads(file.get_ref(), &bytes, &key, what);
    }
    let mut file = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(rgb)
        .write_to(&mut file, ImageFormat::Jpeg)
        .unwrap();
    assert_reads(file.get_ref(), &bytes, &key, "colour JPEG");
}

#[test]
fn an_image_without_a_code_is_unreadable() {
    let white = GrayImage::from_pixel(400, 300, Luma([255]));
    assert_eq!(decode(&png(&white)), Err(LabelError::Unreadable));
    let black = GrayImage::from_pixel(64, 64, Luma([0]));
    assert_eq!(decode(&png(&black)), Err(LabelError::Unreadable));
    let tiny = GrayImage::from_pixel(1, 1, Luma([0]));
    assert_eq!(decode(&png(&tiny)), Err(LabelError::Unreadable));
    let noise = gaussian_noise(&GrayImage::from_pixel(300, 300, Luma([128])), 80.0, 3);
    assert_eq!(decode(&png(&noise)), Err(LabelError::Unreadable));
    assert_eq!(decode(&jpeg(&noise, 50)), Err(LabelError::Unreadable));
    // A checkerboard looks like modules everywhere but has no finder pattern.
    let checker = GrayImage::from_fn(200, 200, |x, y| {
        Luma([if (x / 4 + y / 4) % 2 == 0 { 0 } else { 255 }])
    });
    assert_eq!(decode(&png(&checker)), Err(LabelError::Unreadable));
    // Half a label: the symbol cut through the middle.
    let (bytes, _) = indicium(51);
    let full = render(&bytes, 4);
    let half = image::imageops::crop_imm(&full, 0, 0, full.width() / 2, full.height()).to_image();
    assert_eq!(decode(&png(&half)), Err(LabelError::Unreadable));
}

#[test]
fn a_damaged_label_beyond_error_correction_is_unreadable() {
    // A white bar across a third of the symbol: more codewords lost than Reed-Solomon
    // can restore. No wrong bytes come out, only `Unreadable`.
    let (bytes, key) = indicium(52);
    let mut img = render(&bytes, 4);
    let side = img.width();
    for y in side / 3..2 * side / 3 {
        for x in 4 * QUIET_ZONE + 4..side - 4 * QUIET_ZONE - 4 {
            img.put_pixel(x, y, Luma([255]));
        }
    }
    assert_eq!(decode(&png(&img)), Err(LabelError::Unreadable));
    // A few modules scratched are corrected.
    let mut img = render(&bytes, 4);
    for y in 40..48 {
        for x in 40..60 {
            img.put_pixel(x, y, Luma([255]));
        }
    }
    assert_reads(&png(&img), &bytes, &key, "scratched");
}

#[test]
fn what_is_not_a_png_or_jpeg_is_an_image_error() {
    for garbage in [
        &b""[..],
        b"hello",
        b"%PDF-1.7\n",
        b"<svg xmlns=\"http://www.w3.org/2000/svg\"/>",
        &[0u8; 100],
    ] {
        assert!(
            matches!(decode(garbage), Err(LabelError::Image(_))),
            "{garbage:?}"
        );
    }
    // Formats the image crate knows, but not ours: refused, not decoded.
    let gif = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;";
    let bmp = b"BM\x3a\x00\x00\x00\x00\x00\x00\x00\x36\x00\x00\x00";
    for other in [&gif[..], &bmp[..]] {
        match decode(other) {
            Err(LabelError::Image(msg)) => assert!(msg.contains("PNG or JPEG"), "{msg}"),
            r => panic!("{r:?}"),
        }
    }
    // A PNG signature with nothing after it, a JPEG start with nothing after it.
    assert!(matches!(
        decode(b"\x89PNG\r\n\x1a\n"),
        Err(LabelError::Image(_))
    ));
    assert!(matches!(decode(b"\xff\xd8\xff"), Err(LabelError::Image(_))));
    let e = decode(b"hello").unwrap_err();
    assert!(e.to_string().contains("PNG or JPEG"), "{e}");
}

/// CRC-32 (IEEE) for hand-made PNG chunks.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// A valid PNG header claiming `w`×`h` 8-bit grey pixels, with a tiny IDAT (a zlib stream
/// of zeros would expand to the full size: the decompression bomb).
fn png_claiming(w: u32, h: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]); // 8 bits, grey, deflate, filter 0, no interlace
    png_chunk(&mut out, b"IHDR", &ihdr);
    png_chunk(
        &mut out,
        b"IDAT",
        &[0x78, 0x9c, 0xed, 0xc1, 0x01, 0x0d, 0x00, 0x00],
    );
    png_chunk(&mut out, b"IEND", &[]);
    out
}

#[test]
fn decompression_bombs_are_refused_before_decoding() {
    let t = Instant::now();
    assert_eq!(
        decode(&png_claiming(100_000, 100_000)),
        Err(LabelError::TooLarge)
    );
    // Just over the pixel limit, in either direction.
    let side = (MAX_PIXELS as f64).sqrt() as u32 + 1;
    assert_eq!(decode(&png_claiming(side, side)), Err(LabelError::TooLarge));
    assert_eq!(
        decode(&png_claiming(MAX_PIXELS as u32 + 1, 1)),
        Err(LabelError::TooLarge)
    );
    assert_eq!(
        decode(&png_claiming(1, MAX_PIXELS as u32 + 1)),
        Err(LabelError::TooLarge)
    );
    // A real 16×16 JPEG whose frame header is patched to claim 65535×65535 (4.3
    // gigapixels), and one claiming 8000×8000 (64 MP, JPEG's sizes are 16-bit).
    let small = jpeg(&GrayImage::from_pixel(16, 16, Luma([255])), 90);
    let sof = small.windows(2).position(|m| m == [0xFF, 0xC0]).unwrap();
    for side in [u16::MAX, 8000] {
        let mut jpg = small.clone();
        jpg[sof + 5..sof + 9].copy_from_slice(&[side.to_be_bytes(), side.to_be_bytes()].concat());
        assert_eq!(decode(&jpg), Err(LabelError::TooLarge), "{side}");
    }
    // A file above the byte limit is refused without being looked at.
    let mut big = png(&GrayImage::from_pixel(8, 8, Luma([255])));
    big.resize(MAX_IMAGE_BYTES + 1, 0);
    assert_eq!(decode(&big), Err(LabelError::TooLarge));
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // Within the limit, the same kind of header is decoded and found wanting.
    assert!(matches!(
        decode(&png_claiming(100, 100)),
        Err(LabelError::Image(_))
    ));
    assert!(LabelError::TooLarge.to_string().contains("too large"));
}

#[test]
fn random_and_truncated_files_never_panic() {
    let mut rng = Rng::new(99);
    let (bytes, _) = indicium(53);
    let img = render(&bytes, 2);
    let real = [png(&img), jpeg(&img, 75), png(&rotate(&img, 5.0))];
    let mut inputs: Vec<Vec<u8>> = Vec::new();
    for _ in 0..300 {
        let len = (rng.next_u64() % 2000) as usize;
        inputs.push(rng.bytes(len));
    }
    for file in &real {
        // Truncated at many lengths, including inside the header.
        let step = (file.len() / 97).max(1);
        for cut in (0..file.len()).step_by(step).chain(1..64) {
            inputs.push(file[..cut.min(file.len())].to_vec());
        }
        // Random bytes after a valid start, and bytes flipped anywhere.
        for _ in 0..60 {
            let mut f = file.clone();
            let at = (rng.next_u64() % f.len() as u64) as usize;
            if rng.next_u64() & 1 == 0 {
                f[at] ^= 1 << (rng.next_u64() % 8);
            } else {
                f.truncate(at);
                f.extend(rng.bytes(100));
            }
            inputs.push(f);
        }
    }
    for (sig, n) in [
        (&b"\x89PNG\r\n\x1a\n"[..], 100),
        (&b"\xff\xd8\xff\xe0"[..], 100),
    ] {
        for _ in 0..n {
            let mut f = sig.to_vec();
            let len = (rng.next_u64() % 600) as usize;
            f.extend(rng.bytes(len));
            inputs.push(f);
        }
    }
    // `decode` catches a decoder's panic itself (its last line of defence), so a panic
    // would not show as one here: count every panic raised on this test's thread instead.
    static PANICS: AtomicUsize = AtomicUsize::new(0);
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().name() == Some("random_and_truncated_files_never_panic") {
            PANICS.fetch_add(1, Ordering::SeqCst);
        }
        previous(info);
    }));
    let t = Instant::now();
    for (i, f) in inputs.iter().enumerate() {
        let r = decode(f);
        assert_eq!(
            PANICS.load(Ordering::SeqCst),
            0,
            "input {i} panicked: {f:02x?}"
        );
        if let Ok(b) = r {
            // Only an intact label may decode, and then to its own bytes.
            assert_eq!(b, bytes, "input {i}");
        }
    }
    eprintln!("{} inputs in {:?}", inputs.len(), t.elapsed());
}

/// Writes label scans and their expected bytes for `scripts/post-labels-check.sh`, which
/// checks that libdmtx's `dmtxread` reads the same bytes as this decoder:
/// `OPENPSD_LABELS_DIR=dir cargo test -p openpsd-post --test label -- --ignored write_label_files`.
#[test]
#[ignore = "writes files for the dmtxread cross-check (scripts/post-labels-check.sh)"]
fn write_label_files() {
    let dir = std::path::PathBuf::from(
        std::env::var_os("OPENPSD_LABELS_DIR").expect("OPENPSD_LABELS_DIR: where to write"),
    );
    std::fs::create_dir_all(&dir).unwrap();
    let (bytes, _) = indicium(60);
    let scans: Vec<(&str, GrayImage)> = vec![
        ("px2", render(&bytes, 2)),
        ("px4", render(&bytes, 4)),
        ("px8", render(&bytes, 8)),
        ("rot90", image::imageops::rotate90(&render(&bytes, 4))),
        ("tilt5", rotate(&render(&bytes, 4), 5.0)),
        ("noise", gaussian_noise(&render(&bytes, 4), 30.0, 1)),
        ("blur", blur(&render(&bytes, 4), 1.0)),
    ];
    for (name, img) in scans {
        let file = png(&img);
        assert_eq!(decode(&file).as_deref(), Ok(&bytes[..]), "{name}");
        std::fs::write(dir.join(format!("{name}.png")), &file).unwrap();
        std::fs::write(dir.join(format!("{name}.hex")), hex::encode(&bytes)).unwrap();
    }
    // Other indicia, so the check is not of one byte string.
    for n in [61u32, 62, 63] {
        let (file, bytes, _) = typical_png(n);
        assert_eq!(decode(&file).as_deref(), Ok(&bytes[..]), "indicium {n}");
        std::fs::write(dir.join(format!("indicium{n}.png")), &file).unwrap();
        std::fs::write(dir.join(format!("indicium{n}.hex")), hex::encode(&bytes)).unwrap();
    }
}
