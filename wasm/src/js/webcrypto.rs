//! The outside signer's JS API (feature `webcrypto`: the third module, `web/webcrypto/`;
//! wasm/API.md § WebCrypto signer). Glue only: the logic is in `crate::webcrypto`, and
//! `wasm/js/webcrypto.js` keeps the key and runs the sign step.

use wasm_bindgen::prelude::*;

use super::{from_js, indicium_args, js, only_keys, to_js, Psd, INDICIUM_KEYS};
use crate::device::PsdDevice;
use crate::views::parse_set;

#[wasm_bindgen(typescript_custom_section)]
const TS_WEBCRYPTO_TYPES: &'static str = r#"
/** What psd.issueUnsigned() returns: the debit is committed either way. */
export interface OutsideIssued {
  /** true: sign `payload` (crypto.subtle.sign ECDSA P-256 SHA-256), then storeSignature. */
  pending: boolean;
  /** 16 hex digits: re-send it to get the same answer, debited once. */
  transactionId: string;
  set: number;
  /** The bytes to sign. */
  payload: Uint8Array;
  /** r ‖ s; empty while pending. */
  signature: Uint8Array;
  /** payload ‖ signature; empty while pending. */
  barcode: Uint8Array;
  fields: IndiciumFields;
  registers: Registers;
}
"#;

#[wasm_bindgen]
impl Psd {
    /// A fresh device personalized with PERSONALIZE P1 `01`: the outside signer's public
    /// key (65 bytes, `exportKey('raw', publicKey)`) ‖ `personalization`.
    #[wasm_bindgen(js_name = createOutside)]
    pub fn create_outside(
        signer_public_key: &[u8],
        personalization: &[u8],
        entropy: &[u8],
        today: Option<String>,
    ) -> Result<Psd, JsValue> {
        js(PsdDevice::create_outside(
            signer_public_key,
            personalization,
            entropy,
            today.as_deref(),
        ))
        .map(|inner| Psd { inner })
    }

    /// ISSUE INDICIUM on a PSD with an outside signer: the debit committed, the indicium
    /// to sign (or, for a transaction already signed, the signed one).
    #[wasm_bindgen(js_name = issueUnsigned, unchecked_return_type = "OutsideIssued")]
    pub fn issue_unsigned(
        &mut self,
        #[wasm_bindgen(unchecked_param_type = "IndiciumRequest")] request: JsValue,
        signer_public_key: &[u8],
    ) -> Result<JsValue, JsValue> {
        only_keys("request", &request, INDICIUM_KEYS)?;
        let args = from_js(&request, indicium_args)?;
        to_js(self.inner.issue_unsigned(&args, signer_public_key))
    }

    /// STORE SIGNATURE: the 64-byte r ‖ s of `set`'s pending indicium; the signed
    /// indicium (the PSD verified it under the signer's key and committed it).
    #[wasm_bindgen(js_name = storeSignature, unchecked_return_type = "IssuedIndicium")]
    pub fn store_signature(
        &mut self,
        set: Option<f64>,
        transaction_id: &str,
        signature: &[u8],
        signer_public_key: &[u8],
    ) -> Result<JsValue, JsValue> {
        let set = js(parse_set(set))?;
        to_js(
            self.inner
                .store_signature(set, transaction_id, signature, signer_public_key),
        )
    }
}
