//! Where the label decoder stops reading: a table of angle, resolution, noise, blur and
//! JPEG quality against success, printed for the record (module comment of `label.rs`).
//! Not a pass/fail test: `cargo test -p openpsd-post --release --test label_limits -- --ignored --nocapture`.
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod labels;

use std::time::Instant;

use image::{GrayImage, Luma};
use labels::*;
use openpsd_post::label::decode;

fn ok(file: &[u8], bytes: &[u8]) -> &'static str {
    if decode(file).as_deref() == Ok(bytes) {
        "ok"
    } else {
        "--"
    }
}

#[test]
#[ignore = "prints the decoder's limits; run by hand"]
fn print_decoder_limits() {
    let (bytes, _) = indicium(1);
    println!("angle (deg) by px/module, PNG, bilinear");
    for px in [2u32, 3, 4, 8] {
        let img = render(&bytes, px);
        let row: Vec<String> = [0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 45.0]
            .iter()
            .map(|&d| format!("{d}:{}", ok(&png(&rotate(&img, d)), &bytes)))
            .collect();
        println!("  {px} px: {}", row.join(" "));
    }
    println!("JPEG quality by px/module");
    for px in [2u32, 3, 4] {
        let img = render(&bytes, px);
        let row: Vec<String> = [90u8, 75, 50, 30, 20, 10, 5]
            .iter()
            .map(|&q| format!("q{q}:{}", ok(&jpeg(&img, q), &bytes)))
            .collect();
        println!("  {px} px: {}", row.join(" "));
    }
    println!("gaussian noise sigma by px/module");
    for px in [2u32, 4, 8] {
        let img = render(&bytes, px);
        let row: Vec<String> = [20.0, 30.0, 40.0, 50.0, 60.0, 80.0, 100.0]
            .iter()
            .map(|&s| format!("{s}:{}", ok(&png(&gaussian_noise(&img, s, 1)), &bytes)))
            .collect();
        println!("  {px} px: {}", row.join(" "));
    }
    println!("salt and pepper fraction by px/module");
    for px in [2u32, 4, 8] {
        let img = render(&bytes, px);
        let row: Vec<String> = [0.01, 0.02, 0.05, 0.1, 0.15, 0.2]
            .iter()
            .map(|&p| format!("{p}:{}", ok(&png(&salt_and_pepper(&img, p, 1)), &bytes)))
            .collect();
        println!("  {px} px: {}", row.join(" "));
    }
    println!("blur sigma (px) by px/module");
    for px in [2u32, 4, 8] {
        let img = render(&bytes, px);
        let row: Vec<String> = [0.5f32, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0]
            .iter()
            .map(|&s| format!("{s}:{}", ok(&png(&blur(&img, s)), &bytes)))
            .collect();
        println!("  {px} px: {}", row.join(" "));
    }
    println!("time for scans without a code (worst case: every pass fails)");
    for side in [1000u32, 3000, 6000] {
        let page = gaussian_noise(&GrayImage::from_pixel(side, side, Luma([200])), 40.0, 2);
        let file = png(&page);
        let t = Instant::now();
        let r = decode(&file);
        println!("  {side}x{side} noise: {:?} in {:?}", r, t.elapsed());
        let file = png(&GrayImage::from_pixel(side, side, Luma([255])));
        let t = Instant::now();
        let r = decode(&file);
        println!("  {side}x{side} white: {:?} in {:?}", r, t.elapsed());
    }
    println!("time for a label on a 600 dpi A4 page (4960x7016, 35 MP)");
    let page = on_page(&render(&bytes, 12), 4960, 7016, 4000, 300);
    let file = png(&page);
    let t = Instant::now();
    println!(
        "  {}, {} bytes, in {:?}",
        ok(&file, &bytes),
        file.len(),
        t.elapsed()
    );
}
