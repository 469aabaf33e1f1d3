//! The plain objects the API hands to JavaScript (serialized by serde-wasm-bindgen) and the
//! request objects it takes (read by `js.rs`), with the conversions from and to core's
//! types. Field names are camelCase; amounts are decimal strings, dates `YYYY-MM-DD`, byte
//! strings hex (the device ID upper case) except indicium bytes, which are [`Bytes`]
//! (`Uint8Array`).

use openpsd_core::psd::device::DeviceInfo;
use openpsd_core::psd::indicium::IndiciumData;
use openpsd_core::psd::registers::Registers;
use openpsd_core::types::{Amount, Date, DeviceId, PostalCode};
use serde::{Serialize, Serializer};

use crate::error::{ApiError, ApiResult};

/// Bytes that cross to JS as a `Uint8Array` (serde's `serialize_bytes`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bytes(pub Vec<u8>);

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

/// GET DATA.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InfoView {
    /// Device ID: 16 hex digits, upper case.
    pub device_id: String,
    /// Indicium key ID: 8 hex digits, the first 4 bytes of SHA-256 of `publicKey`.
    pub key_id: String,
    /// The indicium public key: 130 hex digits, SEC1 uncompressed P-256 point.
    pub public_key: String,
    /// The vendor's public key: 130 hex digits, SEC1 uncompressed.
    pub vendor_public_key: String,
    /// Highest postage for one piece (amount).
    pub max_postage: String,
    /// Highest value the descending register may hold (amount).
    pub max_dr: String,
    /// Number of register sets (licenses), 1-4.
    pub register_sets: u8,
    /// Last date of mailing used (`YYYY-MM-DD`), `null` if none yet.
    pub last_date: Option<String>,
    /// Days an accepted audit keeps the device printing; 0: no inspection.
    pub inspection_days: u16,
    /// Date of the last accepted RECEIPT (`YYYY-MM-DD`), `null` if none.
    pub last_inspection: Option<String>,
}

impl From<&DeviceInfo> for InfoView {
    fn from(i: &DeviceInfo) -> Self {
        InfoView {
            device_id: device_hex(&i.device),
            key_id: hex::encode(i.key_id.0),
            public_key: hex::encode(i.public_key),
            vendor_public_key: hex::encode(i.vendor_public_key),
            max_postage: i.max_postage.to_string(),
            max_dr: i.max_dr.to_string(),
            register_sets: i.register_sets,
            last_date: i.last_date.map(|d| d.to_string()),
            inspection_days: i.inspection_days,
            last_inspection: i.last_inspection.map(|d| d.to_string()),
        }
    }
}

/// READ REGISTERS (also the REFILL response).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistersView {
    /// The register set's index (0-based).
    pub set: u8,
    /// The set's license number.
    pub license: u32,
    /// The license's origin postal code.
    pub origin: String,
    /// Ascending register: postage used and value transferred out (amount).
    pub ar: String,
    /// Descending register: postage left (amount).
    pub dr: String,
    /// AR + DR (amount).
    pub control_sum: String,
    /// Indicia issued from this set.
    pub pieces: u32,
    /// Refills applied to this set.
    pub refills: u32,
}

impl RegistersView {
    /// The readout of set `set`.
    pub fn new(set: u8, r: &Registers) -> Self {
        RegistersView {
            set,
            license: r.license.0,
            origin: r.origin.to_string(),
            ar: r.ar.to_string(),
            dr: r.dr.to_string(),
            control_sum: r.control_sum.to_string(),
            pieces: r.pieces.0,
            refills: r.refills.0,
        }
    }
}

/// The decoded fields of an indicium.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FieldsView {
    /// ID of the signing key: 8 hex digits.
    pub key_id: String,
    /// The PSD that made it: 16 hex digits, upper case.
    pub device_id: String,
    /// The license (register set) it was debited from.
    pub license: u32,
    /// AR after this piece (amount).
    pub ar: String,
    /// DR after this piece (amount).
    pub dr: String,
    /// Piece count including this piece.
    pub pieces: u32,
    /// Postage paid (amount).
    pub postage: String,
    /// Date of mailing, `YYYY-MM-DD`.
    pub date: String,
    /// Rate category.
    pub rate: u16,
    /// Origin postal code.
    pub origin: String,
    /// Destination postal code.
    pub destination: String,
}

impl From<&IndiciumData> for FieldsView {
    fn from(d: &IndiciumData) -> Self {
        FieldsView {
            key_id: hex::encode(d.key_id.0),
            device_id: device_hex(&d.device),
            license: d.license.0,
            ar: d.ar.to_string(),
            dr: d.dr.to_string(),
            pieces: d.pieces.0,
            postage: d.postage.to_string(),
            date: d.date.to_string(),
            rate: d.rate.0,
            origin: d.origin.to_string(),
            destination: d.destination.to_string(),
        }
    }
}

/// What `issueIndicium` returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IssuedView {
    /// The transaction ID sent (16 hex digits): re-send it to retry a lost answer.
    pub transaction_id: String,
    /// The whole indicium, payload ‖ signature: what the Data Matrix encodes.
    pub barcode: Bytes,
    /// The signed bytes.
    pub payload: Bytes,
    /// The 64-byte ECDSA P-256 signature, r ‖ s.
    pub signature: Bytes,
    /// The payload decoded.
    pub fields: FieldsView,
    /// The register set after this piece.
    pub registers: RegistersView,
}

/// What `verifyIndicium` returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerificationView {
    /// Whether the signature verified under the given public key.
    pub valid: bool,
    /// Why not, in words; `null` when valid.
    pub error: Option<String>,
    /// The decoded fields when the bytes decode (also when the signature fails).
    pub fields: Option<FieldsView>,
}

/// What `buildPersonalization` returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BuiltPersonalizationView {
    /// The PERSONALIZE command data, for `Psd.create`.
    pub personalization: Bytes,
    /// The device ID: 16 hex digits, upper case.
    pub device_id: String,
    /// The vendor public key in the data, hex. (Nothing secret comes back: the PSD makes
    /// its keys inside; what the back office registers, its key ID and public key, comes
    /// from `Psd.info()` after `Psd.create`.)
    pub vendor_public_key: String,
}

/// What `dataMatrixModules` returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ModulesView {
    /// Modules on a side of the square symbol (no quiet zone).
    pub size: u32,
    /// `size` × `size` bytes, row-major, 1 = dark.
    pub modules: Bytes,
}

/// `issueIndicium`'s argument (the JS object's fields are the camelCase names).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IndiciumArgs {
    /// Postage, an amount > 0.
    pub postage: String,
    /// Date of mailing, `YYYY-MM-DD`.
    pub date: String,
    /// Rate category, 0-65535.
    pub rate: u16,
    /// Origin postal code: must be the set's license origin.
    pub origin: String,
    /// Destination postal code: 1-10 of A-Z 0-9 space hyphen.
    pub destination: String,
    /// 16 hex digits; omitted: 8 fresh random bytes.
    pub transaction_id: Option<String>,
    /// Register set index; omitted: 0.
    pub set: Option<u8>,
}

/// One license of `buildPersonalization`'s argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LicenseArg {
    /// License number (distinct within one personalization).
    pub license: u32,
    /// The license's origin postal code.
    pub origin: String,
}

/// `buildPersonalization`'s argument (the JS object's fields are the camelCase names).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PersonalizationArgs {
    /// One to four licenses, one register set each, in set order.
    pub licenses: Vec<LicenseArg>,
    /// Highest postage for one piece: an amount > 0, at most `maxDr`.
    pub max_postage: String,
    /// Highest value of the descending register (amount).
    pub max_dr: String,
    /// Days an accepted audit keeps the device printing; default 0 (no inspection).
    pub inspection_days: u16,
    /// Device ID, 16 hex digits; omitted: `PSD` + 5 random bytes.
    pub device_id: Option<String>,
    /// The key management system's public key (required): 130 hex digits, a P-256 point
    /// (SEC1 uncompressed). The PSD accepts refill messages and receipts signed by its
    /// private half. (`Option` only so that a missing key is refused with a clear message.)
    pub kms_public_key: Option<String>,
    /// Vendor public key, 130 hex digits (a P-256 point); omitted: a throwaway key.
    pub vendor_public_key: Option<String>,
}

/// The device ID as the back office spells it: upper-case hex.
pub fn device_hex(d: &DeviceId) -> String {
    hex::encode_upper(d.0)
}

/// `text` in double quotes, escaped as `format!("{text:?}")` does for ASCII (`\"`, `\\`,
/// `\t`, `\n`, `\r`, `\0`, other controls as `\u{..}`); other characters as they are. For
/// the error messages: `str`'s `Debug` would bring its Unicode tables (escape_debug,
/// is_printable, grapheme_extend: ~2 KB gzip) into the browser module.
pub fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\0' => out.push_str("\\0"),
            c if c.is_ascii_control() => {
                out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// An amount argument.
pub fn parse_amount(field: &str, text: &str) -> ApiResult<Amount> {
    text.parse().map_err(|_| {
        ApiError::input(format!(
            "{field}: {} is not an amount like 12.34",
            quoted(text)
        ))
    })
}

/// A date argument.
pub fn parse_date(field: &str, text: &str) -> ApiResult<Date> {
    text.parse().map_err(|_| {
        ApiError::input(format!(
            "{field}: {} is not a date YYYY-MM-DD",
            quoted(text)
        ))
    })
}

/// A postal code argument.
pub fn parse_postal_code(field: &str, text: &str) -> ApiResult<PostalCode> {
    PostalCode::new(text.as_bytes()).ok_or_else(|| {
        ApiError::input(format!(
            "{field}: {} is not a postal code (1-10 of A-Z 0-9 space hyphen)",
            quoted(text)
        ))
    })
}

/// A hex argument of exactly `N` bytes.
pub fn parse_hex<const N: usize>(field: &str, text: &str) -> ApiResult<[u8; N]> {
    let mut out = [0u8; N];
    hex::decode_to_slice(text, &mut out)
        .map_err(|_| ApiError::input(format!("{field}: expected {} hex digits", 2 * N)))?;
    Ok(out)
}

/// A register set argument from JS (a number): an integer 0-255.
pub fn parse_set(set: Option<f64>) -> ApiResult<u8> {
    match set {
        None => Ok(0),
        // why: an integer in 0-255 (checked in the guard) converts exactly.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Some(s) if s.fract() == 0.0 && (0.0..=255.0).contains(&s) => Ok(s as u8),
        // (No `{s}`: formatting an f64 would pull float printing into the module.)
        Some(_) => Err(ApiError::input(
            "set: not a register set index (an integer 0-255)",
        )),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn quoted_is_debug_for_ascii_and_printable_text() {
        let mut texts: Vec<String> = (0u8..128).map(|b| char::from(b).to_string()).collect();
        texts.extend(
            [
                "",
                "12.3x",
                "a\"b\\c",
                "tab\there",
                "\u{7f}\u{1}",
                "é中😀",
                "O'Hare",
            ]
            .map(String::from),
        );
        texts.push((0u8..128).map(char::from).collect());
        for t in texts {
            assert_eq!(quoted(&t), format!("{t:?}"), "{t:?}");
        }
    }

    use super::*;

    #[test]
    fn arguments_parse_or_say_why() {
        assert_eq!(parse_amount("postage", "0.85").unwrap(), Amount(85));
        assert!(parse_amount("postage", "0,85")
            .unwrap_err()
            .message
            .starts_with("postage:"));
        assert!(parse_date("date", "2026-02-30").is_err());
        assert!(parse_postal_code("origin", "10115").is_ok());
        assert!(parse_postal_code("origin", "ab").is_err());
        assert_eq!(parse_hex::<2>("x", "0aFF").unwrap(), [0x0A, 0xFF]);
        assert!(parse_hex::<2>("x", "0aF").is_err());
        assert_eq!(parse_set(None).unwrap(), 0);
        assert_eq!(parse_set(Some(3.0)).unwrap(), 3);
        for bad in [-1.0, 256.0, 0.5, f64::NAN, f64::INFINITY] {
            assert!(parse_set(Some(bad)).is_err(), "{bad}");
        }
    }
}
