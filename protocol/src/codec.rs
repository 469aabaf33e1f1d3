//! Small conversions at the JSON edge: hex fields, device IDs, dates, client-chosen
//! identifiers, JSON bodies. Every parser returns a [`BadField`] naming the field and the
//! step (a service answers it as `400 bad_request`), never panics.

use openpsd_core::types::{Date, DeviceId};

/// A field a client got wrong: the step that refused and why. A service answers it as
/// `400 bad_request` with this step and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadField {
    /// The step that refused, e.g. `meter_request`.
    pub step: String,
    /// What is wrong, naming the field.
    pub message: String,
}

impl BadField {
    /// A refusal at `step`.
    pub fn new(step: &str, message: impl Into<String>) -> Self {
        Self {
            step: step.to_owned(),
            message: message.into(),
        }
    }
}

impl core::fmt::Display for BadField {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} at {}", self.message, self.step)
    }
}

impl std::error::Error for BadField {}

/// Decodes a hex field of exactly `N` bytes.
pub fn hex_array<const N: usize>(field: &str, text: &str, step: &str) -> Result<[u8; N], BadField> {
    let mut out = [0u8; N];
    hex::decode_to_slice(text, &mut out)
        .map_err(|_| BadField::new(step, format!("{field}: expected {} hex digits", 2 * N)))?;
    Ok(out)
}

/// Decodes a hex field of any length up to `max` bytes.
pub fn hex_vec(field: &str, text: &str, max: usize, step: &str) -> Result<Vec<u8>, BadField> {
    if text.len() > 2 * max {
        return Err(BadField::new(step, format!("{field}: too long")));
    }
    hex::decode(text).map_err(|_| BadField::new(step, format!("{field}: not hex")))
}

/// A device ID: 16 hex digits (either case).
pub fn device_id(text: &str, step: &str) -> Result<DeviceId, BadField> {
    hex_array::<8>("device_id", text, step).map(DeviceId)
}

/// The canonical spelling of a device ID (upper-case hex, as personalization writes it).
pub fn device_hex(d: &DeviceId) -> String {
    hex::encode_upper(d.0)
}

/// A date `YYYY-MM-DD`.
pub fn date(field: &str, text: &str, step: &str) -> Result<Date, BadField> {
    text.parse()
        .map_err(|_| BadField::new(step, format!("{field}: expected YYYY-MM-DD")))
}

/// A client-chosen identifier (client transaction ID, account ID, deposit reference,
/// request ID): 1 to 64 of `A-Z a-z 0-9 . _ - : /`.
pub fn ident(field: &str, text: &str, step: &str) -> Result<(), BadField> {
    let ok = !text.is_empty()
        && text.len() <= 64
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':' | b'/'));
    if ok {
        Ok(())
    } else {
        Err(BadField::new(
            step,
            format!("{field}: 1 to 64 characters of A-Z a-z 0-9 . _ - : /"),
        ))
    }
}

/// Parses a JSON request body.
pub fn json<T: serde::de::DeserializeOwned>(body: &[u8], step: &str) -> Result<T, BadField> {
    serde_json::from_slice(body).map_err(|e| BadField::new(step, format!("request body: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idents() {
        assert!(ident("x", "c0ffee01", "s").is_ok());
        assert!(ident("x", "PSD1/abc:1", "s").is_ok());
        for bad in ["", "a b", "é", &"a".repeat(65)] {
            assert!(ident("x", bad, "s").is_err(), "{bad}");
        }
    }

    #[test]
    fn hex_fields_name_the_field() {
        assert_eq!(hex_array::<2>("f", "0aFF", "s"), Ok([0x0a, 0xff]));
        let e = hex_array::<2>("f", "0a", "s").unwrap_err();
        assert_eq!(
            (e.step.as_str(), e.message.as_str()),
            ("s", "f: expected 4 hex digits")
        );
        assert!(hex_vec("f", "00112233", 3, "s").is_err());
        assert_eq!(hex_vec("f", "0011", 3, "s"), Ok(vec![0, 0x11]));
        assert!(device_id("50534400000000011", "s").is_err());
    }
}
