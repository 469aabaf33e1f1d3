//! The indicium on paper: a Data Matrix (ECC 200) of the indicium bytes, made by the
//! `datamatrix` crate in Base256 (binary) mode, as an SVG document or a module bitmap.

use datamatrix::{DataMatrix, DataMatrixBuilder, EncodationType, SymbolList};

use crate::error::{ApiError, ApiResult};

/// White modules around the symbol on every side (ISO/IEC 16022 asks for at least one).
pub const QUIET_ZONE: usize = 2;
/// Default size of one module in SVG pixels.
pub const DEFAULT_MODULE_SIZE: u32 = 4;
/// Largest module size accepted.
pub const MAX_MODULE_SIZE: u32 = 64;

/// The square symbol for `bytes`: (side in modules, row-major modules, `true` = dark),
/// without quiet zone.
pub fn modules(bytes: &[u8]) -> ApiResult<(usize, Vec<bool>)> {
    let code = encode(bytes)?;
    let bitmap = code.bitmap();
    let (w, h) = (bitmap.width(), bitmap.height());
    if w != h || bitmap.bits().len() != w * h {
        return Err(ApiError::input("barcode: symbol is not square"));
    }
    Ok((w, bitmap.bits().to_vec()))
}

fn encode(bytes: &[u8]) -> ApiResult<DataMatrix> {
    DataMatrixBuilder::new()
        .with_encodation_types(EncodationType::Base256)
        .with_symbol_list(SymbolList::default())
        .encode(bytes)
        .map_err(|_| ApiError::input("barcode: too many bytes for a Data Matrix symbol"))
}

/// The symbol as an SVG document: black modules on white, a quiet zone of [`QUIET_ZONE`]
/// modules, `module_size` pixels per module (`viewBox` in modules).
pub fn svg(bytes: &[u8], module_size: Option<u32>) -> ApiResult<String> {
    let m = module_size.unwrap_or(DEFAULT_MODULE_SIZE);
    if !(1..=MAX_MODULE_SIZE).contains(&m) {
        return Err(ApiError::input(format!(
            "moduleSize: 1 to {MAX_MODULE_SIZE} pixels, got {m}"
        )));
    }
    let (n, bits) = modules(bytes)?;
    let side = n + 2 * QUIET_ZONE;
    let px = side as u64 * u64::from(m);
    let mut path = String::with_capacity(n * n * 3);
    for (y, row) in bits.chunks(n).enumerate() {
        let mut x = 0;
        while x < n {
            if !row[x] {
                x += 1;
                continue;
            }
            let start = x;
            while x < n && row[x] {
                x += 1;
            }
            let run = x - start;
            path.push_str(&format!(
                "M{} {}h{run}v1h-{run}z",
                start + QUIET_ZONE,
                y + QUIET_ZONE
            ));
        }
    }
    Ok(format!(
        concat!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{px}" height="{px}" "#,
            r#"viewBox="0 0 {side} {side}" shape-rendering="crispEdges">"#,
            r##"<rect width="{side}" height="{side}" fill="#ffffff"/>"##,
            r##"<path fill="#000000" d="{path}"/></svg>"##
        ),
        px = px,
        side = side,
        path = path
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rasterizes our SVG's path back into modules (the subset of SVG `svg` writes).
    fn raster(svg: &str) -> (usize, Vec<bool>) {
        let side: usize = svg
            .split("viewBox=\"0 0 ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .unwrap()
            .parse()
            .unwrap();
        let d = svg
            .split(" d=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        let mut grid = vec![false; side * side];
        for cmd in d.split('M').filter(|c| !c.is_empty()) {
            let (xy, rest) = cmd.split_once('h').unwrap();
            let (x, y) = xy.split_once(' ').unwrap();
            let (x, y): (usize, usize) = (x.parse().unwrap(), y.parse().unwrap());
            let run: usize = rest.split_once('v').unwrap().0.parse().unwrap();
            assert!(rest.ends_with(&format!("v1h-{run}z")));
            for i in x..x + run {
                assert!(!grid[y * side + i], "modules drawn once");
                grid[y * side + i] = true;
            }
        }
        (side, grid)
    }

    #[test]
    fn svg_round_trips_through_the_crates_decoder() {
        let data: Vec<u8> = (0..=255u8).cycle().take(128).collect();
        let svg = svg(&data, Some(3)).unwrap();
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.ends_with("</svg>"));
        let (side, grid) = raster(&svg);
        assert_eq!(
            side,
            44 + 2 * QUIET_ZONE,
            "128 bytes in Base256 need a 44x44 symbol"
        );
        assert!(svg.contains(&format!("width=\"{}\"", side * 3)));
        // The quiet zone is white all round.
        for i in 0..side {
            for q in 0..QUIET_ZONE {
                for (x, y) in [(i, q), (q, i), (i, side - 1 - q), (side - 1 - q, i)] {
                    assert!(!grid[y * side + x], "quiet zone at {x},{y}");
                }
            }
        }
        // Strip the quiet zone and decode with the datamatrix crate's own decoder.
        let n = side - 2 * QUIET_ZONE;
        let inner: Vec<bool> = (QUIET_ZONE..QUIET_ZONE + n)
            .flat_map(|y| grid[y * side + QUIET_ZONE..y * side + QUIET_ZONE + n].to_vec())
            .collect();
        assert_eq!(DataMatrix::decode(&inner, n).unwrap(), data);
    }

    #[test]
    fn bad_arguments_are_errors() {
        assert!(svg(b"x", Some(0)).is_err());
        assert!(svg(b"x", Some(65)).is_err());
        assert!(svg(&vec![0u8; 5000], None).is_err());
        assert!(svg(b"", None).is_ok(), "an empty symbol is still a symbol");
    }
}
