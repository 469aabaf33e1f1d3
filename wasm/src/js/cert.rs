//! The certificate meter's JS API (feature `certmeter`: the second module,
//! `scripts/wasm-pkg.sh cert`; wasm/API.md § Certificate meter). Glue only: the logic is in
//! `crate::certmeter`.

use wasm_bindgen::prelude::*;

use super::{js, to_js, Psd};
use crate::error::ApiError;

#[wasm_bindgen(typescript_custom_section)]
const TS_CERT_TYPES: &'static str = r#"
/** One service's fee in a rate table. */
export interface Fee {
  /** "postmark", "validation", "certificate", "signature", "revocation",
   *  "agent_certificate", "credit_line", "payment". */
  service: string;
  code: number;
  /** Amount, e.g. "0.10". */
  fee: string;
}

/** A rate table the PSD holds (LOAD RATE TABLE). */
export interface RateTableInfo {
  version: number;
  /** "YYYY-MM-DD". */
  effective: string;
  /** The table the PSD charges from on the date set by setToday. */
  inEffect: boolean;
  fees: Fee[];
}

/** A key slot (never the private key). */
export interface KeySlot {
  slot: number;
  state: "pending" | "active" | "retired";
  purpose: "postmark" | "sign" | "agent" | "payment";
  generation: number;
  /** 8 hex digits. */
  keyId: string;
  /** 130 hex digits. */
  publicKey: string;
  feePaid: string;
  /** DER; empty while pending. */
  certificate: Uint8Array;
}

/** What psd.certInfo() returns (GET DATA 00 05). */
export interface CertInfo {
  tables: RateTableInfo[];
  feesDue: string;
  slots: KeySlot[];
  postmarks: number;
  anchors: number;
}

/** What psd.generateKey() returns. */
export interface GeneratedKey {
  slot: number;
  purpose: string;
  generation: number;
  /** Hex: the `attestation` of POST /v1/certificates. */
  attestation: string;
}

/** What psd.installKeyCertificate() returns. */
export interface InstalledKey {
  slot: number;
  fee: string;
  registers: Registers;
}

/** The TSTInfo fields of a postmark. */
export interface PostmarkFields {
  /** 64 hex digits: the document's SHA-256. */
  digest: string;
  deviceId: string;
  serial: number;
  /** genTime, Unix seconds UTC. */
  genTime: number;
  fee: string;
  license: number;
  tableVersion: number;
}

/** What psd.issuePostmark() returns. */
export interface IssuedPostmark {
  /** 16 hex digits: re-send it to retry a lost answer (charged once). */
  transactionId: string;
  /** The compact postmark (about 200 bytes): what the DataMatrix label holds. */
  compact: Uint8Array;
  /** The RFC 3161 TimeStampToken, DER (a .tst file; openssl ts -verify reads it). */
  token: Uint8Array;
  /** The postmark certificate, DER. */
  certificate: Uint8Array;
  fields: PostmarkFields;
  registers: Registers;
}

/** What psd.revokeKey() returns. */
export interface RevokedKey {
  slot: number;
  counter: number;
  outcome: "paid" | "due";
  fee: string;
  feesDue: string;
  /** Hex: the `confirmation` of POST /v1/revocations/confirmations. */
  confirmation: string;
  registers: Registers;
}

/** What verifyPostmark() returns. */
export interface PostmarkVerification {
  valid: boolean;
  error: string | null;
  fields: PostmarkFields | null;
}
"#;

fn small(what: &str, v: Option<f64>, max: u8) -> Result<u8, JsValue> {
    match v {
        None => Ok(0),
        // why: an integer in 0..=max, checked in the guard, converts exactly.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Some(f) if f.fract() == 0.0 && (0.0..=f64::from(max)).contains(&f) => Ok(f as u8),
        Some(_) => js(Err(ApiError::input(format!("{what}: 0 to {max}")))),
    }
}

#[wasm_bindgen]
impl Psd {
    /// Sets (or clears) the time the page vouches for, Unix seconds (a postmark's genTime).
    #[wasm_bindgen(js_name = setNow)]
    pub fn set_now(&mut self, seconds: Option<f64>) -> Result<(), JsValue> {
        let now = match seconds {
            None => None,
            // why: whole seconds from 0 to 2^53 - 1, checked in the guard, convert exactly.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            Some(s) if s.fract() == 0.0 && (0.0..=9_007_199_254_740_991.0).contains(&s) => {
                Some(s as u64)
            }
            Some(_) => return js(Err(ApiError::input("now: whole Unix seconds"))),
        };
        self.inner.set_now(now);
        Ok(())
    }

    /// GET DATA 00 05: rate tables (the one in effect ticked), key slots, counters.
    #[wasm_bindgen(js_name = certInfo, unchecked_return_type = "CertInfo")]
    pub fn cert_info(&mut self) -> Result<JsValue, JsValue> {
        to_js(self.inner.cert_info())
    }

    /// The meter's `GET /v1/devices/{id}/updates` (`rate_tables`, `anchors`: hex strings)
    /// loaded; returns `[new tables, new anchors]`.
    #[wasm_bindgen(js_name = loadUpdates)]
    pub fn load_updates(
        &mut self,
        rate_tables: Vec<String>,
        anchors: Vec<String>,
    ) -> Result<Vec<u32>, JsValue> {
        let (t, a) = js(self.inner.load_updates(&rate_tables, &anchors))?;
        Ok(vec![t, a])
    }

    /// GENERATE KEY: `purpose` "postmark" | "sign" | "agent" | "payment".
    #[wasm_bindgen(js_name = generateKey, unchecked_return_type = "GeneratedKey")]
    pub fn generate_key(
        &mut self,
        purpose: &str,
        replace: Option<bool>,
    ) -> Result<JsValue, JsValue> {
        to_js(self.inner.generate_key(purpose, replace.unwrap_or(false)))
    }

    /// INSTALL KEY CERTIFICATE: the CA's certificate (DER) for `slot`; the fee from `set`.
    #[wasm_bindgen(js_name = installKeyCertificate, unchecked_return_type = "InstalledKey")]
    pub fn install_key_certificate(
        &mut self,
        slot: f64,
        certificate: &[u8],
        set: Option<f64>,
    ) -> Result<JsValue, JsValue> {
        let slot = small("slot", Some(slot), 255)?;
        let set = small("set", set, 3)?;
        to_js(self.inner.install_key_certificate(slot, certificate, set))
    }

    /// ISSUE POSTMARK over a document's SHA-256 (hashed by the page), expanded into the
    /// RFC 3161 token.
    #[wasm_bindgen(js_name = issuePostmark, unchecked_return_type = "IssuedPostmark")]
    pub fn issue_postmark(
        &mut self,
        digest: &[u8],
        transaction_id: Option<String>,
        set: Option<f64>,
        nonce: Option<Vec<u8>>,
    ) -> Result<JsValue, JsValue> {
        let set = small("set", set, 3)?;
        to_js(self.inner.issue_postmark(
            digest,
            transaction_id.as_deref(),
            set,
            nonce.as_deref().unwrap_or_default(),
        ))
    }

    /// REVOCATION REQUEST: the device-signed request (hex) for `POST /v1/revocations`.
    #[wasm_bindgen(js_name = revocationRequest)]
    pub fn revocation_request(&mut self, slot: f64, reason: &str) -> Result<String, JsValue> {
        let slot = small("slot", Some(slot), 255)?;
        js(self.inner.revocation_request(slot, reason))
    }

    /// REVOKE KEY: the CA's order (hex); the fee from `set`, or owed.
    #[wasm_bindgen(js_name = revokeKey, unchecked_return_type = "RevokedKey")]
    pub fn revoke_key(&mut self, order: &str, set: Option<f64>) -> Result<JsValue, JsValue> {
        let set = small("set", set, 3)?;
        to_js(self.inner.revoke_key(order, set))
    }
}

/// An RFC 3161 token (DER or PEM) checked in the page against a document's SHA-256 and the
/// CA certificate (DER or PEM). Revocation is not checked.
#[wasm_bindgen(js_name = verifyPostmark, unchecked_return_type = "PostmarkVerification")]
pub fn verify_postmark(
    token: &[u8],
    digest: &[u8],
    ca_certificate: &[u8],
) -> Result<JsValue, JsValue> {
    to_js(crate::certmeter::verify_postmark(
        token,
        digest,
        ca_certificate,
    ))
}
