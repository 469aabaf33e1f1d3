//! Checking an indicium in the host: core's verifier (`psd::indicium::verify`) with its
//! result as a plain object, and the fields decoded even when no key is at hand.

use openpsd_core::psd::indicium::{verify, IndiciumData};

use crate::error::{ApiError, ApiResult};
use crate::views::{FieldsView, VerificationView};

/// Why `valid` is false when no public key was given.
pub const NO_KEY: &str = "no public key given: fields decoded, signature not checked";

/// Verifies `barcode` (signed bytes ‖ signature) under the SEC1 public key in hex, if any.
/// Bad indicium bytes are `valid: false`; a key that is not hex is an `InputError`.
pub fn verify_indicium(
    barcode: &[u8],
    public_key_hex: Option<&str>,
) -> ApiResult<VerificationView> {
    let decoded = barcode
        .len()
        .checked_sub(openpsd_core::crypto::SIGNATURE_LEN)
        .and_then(|n| IndiciumData::decode(&barcode[..n]).ok());
    let fields = decoded.as_ref().map(FieldsView::from);
    let Some(key_hex) = public_key_hex else {
        return Ok(VerificationView {
            valid: false,
            error: Some(NO_KEY.into()),
            fields,
        });
    };
    let key = hex::decode(key_hex).map_err(|_| {
        ApiError::input("publicKeyHex: not hex (130 hex digits, SEC1 uncompressed)")
    })?;
    Ok(match verify(barcode, &key) {
        Ok(data) => VerificationView {
            valid: true,
            error: None,
            fields: Some(FieldsView::from(&data)),
        },
        Err(e) => VerificationView {
            valid: false,
            error: Some(e.to_string()),
            fields,
        },
    })
}
