//! The plain objects the API hands to JavaScript (serialized by serde-wasm-bindgen) and the
//! request objects it takes, with the conversions from and to core's types. Field names are
//! camelCase; amounts are decimal strings, dates `YYYY-MM-DD`, byte strings hex (the device
//! ID upper case) except indicium bytes, which are [`Bytes`] (`Uint8Array`).

use openpsd_core::psd::device::DeviceInfo;
use openpsd_core::psd::indicium::IndiciumData;
use openpsd_core::psd::registers::Registers;
use openpsd_core::types::{Amount, Date, DeviceId, PostalCode};
use serde::{Deserialize, Serialize, Serializer};

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
    pub device_id: String,
    pub key_id: String,
    pub public_key: String,
    pub vendor_public_key: String,
    pub max_postage: String,
    pub max_dr: String,
    pub register_sets: u8,
    pub last_date: Option<String>,
    pub inspection_days: u16,
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
    pub set: u8,
    pub license: u32,
    pub origin: String,
    pub ar: String,
    pub dr: String,
    pub control_sum: String,
    pub pieces: u32,
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
    pub key_id: String,
    pub device_id: String,
    pub license: u32,
    pub ar: String,
    pub dr: String,
    pub pieces: u32,
    pub postage: String,
    pub date: String,
    pub rate: u16,
    pub origin: String,
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
    pub transaction_id: String,
    pub barcode: Bytes,
    pub payload: Bytes,
    pub signature: Bytes,
    pub fields: FieldsView,
    pub registers: RegistersView,
}

/// What `verifyIndicium` returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerificationView {
    pub valid: bool,
    pub error: Option<String>,
    pub fields: Option<FieldsView>,
}

/// What `buildPersonalization` returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BuiltPersonalizationView {
    pub personalization: Bytes,
    pub device_id: String,
    pub k1: String,
    pub vendor_public_key: String,
}

/// What `dataMatrixModules` returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ModulesView {
    pub size: u32,
    pub modules: Bytes,
}

/// `issueIndicium`'s argument.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IndiciumArgs {
    pub postage: String,
    pub date: String,
    pub rate: u16,
    pub origin: String,
    pub destination: String,
    #[serde(default)]
    pub transaction_id: Option<String>,
    #[serde(default)]
    pub set: Option<u8>,
}

/// One license of `buildPersonalization`'s argument.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LicenseArg {
    pub license: u32,
    pub origin: String,
}

/// `buildPersonalization`'s argument.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PersonalizationArgs {
    pub licenses: Vec<LicenseArg>,
    pub max_postage: String,
    pub max_dr: String,
    #[serde(default)]
    pub inspection_days: u16,
    #[serde(default)]
    pub device_id: Option<String>,
    #[serde(default)]
    pub k1: Option<String>,
    #[serde(default)]
    pub vendor_public_key: Option<String>,
}

/// The device ID as the back office spells it: upper-case hex.
pub fn device_hex(d: &DeviceId) -> String {
    hex::encode_upper(d.0)
}

/// An amount argument.
pub fn parse_amount(field: &str, text: &str) -> ApiResult<Amount> {
    text.parse()
        .map_err(|_| ApiError::input(format!("{field}: {text:?} is not an amount like 12.34")))
}

/// A date argument.
pub fn parse_date(field: &str, text: &str) -> ApiResult<Date> {
    text.parse()
        .map_err(|_| ApiError::input(format!("{field}: {text:?} is not a date YYYY-MM-DD")))
}

/// A postal code argument.
pub fn parse_postal_code(field: &str, text: &str) -> ApiResult<PostalCode> {
    PostalCode::new(text.as_bytes()).ok_or_else(|| {
        ApiError::input(format!(
            "{field}: {text:?} is not a postal code (1-10 of A-Z 0-9 space hyphen)"
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
        Some(s) if s.fract() == 0.0 && (0.0..=255.0).contains(&s) => Ok(s as u8),
        // (No `{s}`: formatting an f64 would pull float printing into the module.)
        Some(_) => Err(ApiError::input(
            "set: not a register set index (an integer 0-255)",
        )),
    }
}

#[cfg(test)]
mod tests {
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
