//! The wasm-bindgen glue: the JS classes and functions of `wasm/API.md`, their TypeScript
//! types, and the conversion of [`ApiError`] into JS `Error`s with `name`, `sw` and `swHex`.
//! Nothing here decides anything; the logic is in the modules it calls (tested natively).

use serde::Serialize;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

use crate::device::PsdDevice;
use crate::error::{ApiError, ApiResult};
#[cfg(feature = "demo")]
use crate::personalize;
use crate::purse::PurseDevice;
use crate::views::{parse_set, IndiciumArgs, ModulesView};
#[cfg(feature = "demo")]
use crate::views::{LicenseArg, PersonalizationArgs};
use crate::{barcode, indicium, views::Bytes};

#[cfg(feature = "certmeter")]
mod cert;
#[cfg(feature = "webcrypto")]
mod webcrypto;

#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &'static str = r#"
/** GET DATA of a personalized PSD. */
export interface PsdInfo {
  /** 16 hex digits, upper case. */
  deviceId: string;
  /** 8 hex digits: first 4 bytes of SHA-256 of publicKey. */
  keyId: string;
  /** 130 hex digits: SEC1 uncompressed P-256 point (the indicium key). */
  publicKey: string;
  vendorPublicKey: string;
  /** Amount, e.g. "100.00". */
  maxPostage: string;
  maxDr: string;
  registerSets: number;
  /** Last date of mailing used, "YYYY-MM-DD". */
  lastDate: string | null;
  /** 0: no inspection. */
  inspectionDays: number;
  lastInspection: string | null;
}

/** One register set (READ REGISTERS). Amounts are decimal strings. */
export interface Registers {
  set: number;
  license: number;
  origin: string;
  ar: string;
  dr: string;
  controlSum: string;
  pieces: number;
  refills: number;
}

/** What issueIndicium asks for. */
export interface IndiciumRequest {
  /** Amount > 0, e.g. "0.85". */
  postage: string;
  /** Date of mailing, "YYYY-MM-DD". */
  date: string;
  /** Rate category 0-65535. */
  rate: number;
  /** The set's license origin postal code. */
  origin: string;
  destination: string;
  /** 16 hex digits; omitted: random. Re-send the same to retry a lost answer. */
  transactionId?: string;
  set?: number;
}

/** The decoded fields of an indicium. */
export interface IndiciumFields {
  keyId: string;
  deviceId: string;
  license: number;
  ar: string;
  dr: string;
  pieces: number;
  postage: string;
  date: string;
  rate: number;
  origin: string;
  destination: string;
}

/** What issueIndicium returns. */
export interface IssuedIndicium {
  transactionId: string;
  /** payload ‖ signature: the whole indicium, what the DataMatrix encodes. */
  barcode: Uint8Array;
  payload: Uint8Array;
  signature: Uint8Array;
  fields: IndiciumFields;
  registers: Registers;
}

/** What verifyIndicium returns. */
export interface Verification {
  valid: boolean;
  error: string | null;
  fields: IndiciumFields | null;
}

/** What buildPersonalization takes. */
export interface PersonalizationRequest {
  licenses: { license: number; origin: string }[];
  maxPostage: string;
  maxDr: string;
  inspectionDays?: number;
  deviceId?: string;
  /** Required: the key management system's public key, 130 hex digits (SEC1
   *  uncompressed P-256). Refill messages and receipts must be signed by its private half. */
  kmsPublicKey: string;
  /** 130 hex digits; omitted: a throwaway key. */
  vendorPublicKey?: string;
}

/** What buildPersonalization returns (nothing secret: the PSD makes its keys inside; the
 *  key ID and public key to register with the KMS come from psd.info() after Psd.create). */
export interface BuiltPersonalization {
  personalization: Uint8Array;
  deviceId: string;
  vendorPublicKey: string;
}

/** A Data Matrix symbol without quiet zone: size x size modules, row-major, 1 = dark. */
export interface DataMatrixModules {
  size: number;
  modules: Uint8Array;
}

/** GET DATA of a personalized purse. Amounts are decimal strings. */
export interface PurseInfo {
  /** 16 hex digits, upper case. */
  cardId: string;
  scheme: number;
  balance: string;
  maxBalance: string;
  maxTransfer: string;
  transfers: number;
  totalIn: string;
  /** "YYYY-MM-DD". */
  lastTransfer: string | null;
  purchases: number;
  pinTriesLeft: number;
  pinTries: number;
  failures: number;
  maxFailures: number;
  /** 130 hex digits: the purchase key (SEC1 uncompressed P-256). */
  publicKey: string;
  /** Whether the issuer's certificate is installed. */
  certified: boolean;
}

/** What transferToPurse returns. */
export interface PurseTransfer {
  amount: string;
  /** A transfer the PSD had pending with this purse, resolved first. */
  resolvedFirst: { outcome: "completed" | "undone"; amount: string } | null;
  /** The PSD's register set after. */
  registers: Registers;
  /** The purse after. */
  purse: PurseInfo;
}

/** One slot of psd.licenses(); its balance is psd.registers(slot). */
export interface LicenseSlot {
  slot: number;
  /** null when the slot is free. */
  license: number | null;
  /** 8 hex digits: the key that signs this set's indicia (null when free). */
  keyId: string | null;
  /** Last valid date of the grant, "YYYY-MM-DD"; null for a set made at personalization. */
  validUntil: string | null;
  /** An export is prepared: no indicium, refill or transfer until commit or cancel (9A34). */
  frozen: boolean;
}

/** One entry of the PSD's table of exports. */
export interface LicenseExport {
  license: number;
  /** Decimal string (a u64, never reused). */
  epoch: string;
  /** true: prepared, the set still in the PSD (frozen); false: committed, the file holds it. */
  preparing: boolean;
  slot: number;
  /** The set's DR, which the PSD keeps answering for while it is out. */
  dr: string;
}

/** What psd.licenses() returns (GET DATA 00 04). */
export interface Licenses {
  slots: LicenseSlot[];
  /** The license a pending LICENSE REQUEST asks for (0: the postal authority numbers it). */
  pending: number | null;
  exports: LicenseExport[];
}

/** What psd.licenseInstall() returns. */
export interface InstalledLicense {
  slot: number;
  /** 8 hex digits. */
  keyId: string;
  license: number;
}

/** Every error this module throws. */
export interface OpenpsdError extends Error {
  name: "CardError" | "InputError" | "StateError" | "TransferError";
  /** Status word of a CardError (e.g. 0x9A01). */
  sw?: number;
  /** "9A01". */
  swHex?: string;
}
"#;

/// The JS `Error` for an API error: `name` is its kind; card refusals carry `sw`, `swHex`.
fn js_error(e: ApiError) -> JsValue {
    let err = js_sys::Error::new(&e.message);
    err.set_name(e.kind.name());
    if let (Some(sw), Some(sw_hex)) = (e.sw, e.sw_hex()) {
        // Setting a property on a fresh Error object cannot fail.
        let _ = js_sys::Reflect::set(&err, &"sw".into(), &JsValue::from(sw));
        let _ = js_sys::Reflect::set(&err, &"swHex".into(), &JsValue::from(sw_hex));
    }
    err.into()
}

fn js<T>(r: ApiResult<T>) -> Result<T, JsValue> {
    r.map_err(js_error)
}

fn to_js<T: Serialize>(r: ApiResult<T>) -> Result<JsValue, JsValue> {
    let v = r.map_err(js_error)?;
    let ser = serde_wasm_bindgen::Serializer::new()
        .serialize_missing_as_null(true)
        .serialize_maps_as_objects(true);
    v.serialize(&ser)
        .map_err(|e| js_error(ApiError::input(format!("result: {e}"))))
}

/// Refuses keys of a plain object outside `allowed` (serde-wasm-bindgen reads only the keys
/// it knows, so a typo like `transactionID` would otherwise be silently ignored).
fn only_keys(what: &str, v: &JsValue, allowed: &[&str]) -> Result<(), JsValue> {
    if !v.is_object() {
        return Err(js_error(ApiError::input(format!(
            "{what}: expected an object"
        ))));
    }
    for key in js_sys::Object::keys(v.unchecked_ref::<js_sys::Object>()).iter() {
        let key = key.as_string().unwrap_or_default();
        if !allowed.contains(&key.as_str()) {
            // `allowed.join(", ")` by hand: `str::join`'s generic copy was its only use in
            // the module (1.2 KB before wasm-opt; wasm/API.md § Building).
            let mut expected = String::new();
            for (i, k) in allowed.iter().enumerate() {
                if i > 0 {
                    expected.push_str(", ");
                }
                expected.push_str(k);
            }
            return Err(js_error(ApiError::input(format!(
                "{what}: unknown field {} (expected {expected})",
                crate::views::quoted(&key),
            ))));
        }
    }
    Ok(())
}

/// A request object read field by field (`issueIndicium`, `buildPersonalization`). By hand,
/// not with serde's `Deserialize`: serde's error path prints floats ("invalid type: floating
/// point `1.5`") with `core::fmt`'s float printing; serde's visitors and that printing made
/// the module 9.6 KB (gzip) bigger than this reader does (scripts/wasm-bench.sh).
/// The rules and the messages are serde-wasm-bindgen 0.6's, which read these before: a field
/// is missing when absent (`undefined` and not `in` the object); `null`/`undefined` is
/// `None` for an optional field and a type error otherwise; integers are JS safe integers;
/// the type errors of the present fields (in field order) come before the missing fields.
/// The "Error: " at the start of a message is what serde-wasm-bindgen's error printed.
struct Request<'a>(&'a JsValue);

/// A reason a request is refused, without the "request: " prefix.
type Refusal = String;

impl Request<'_> {
    /// The field `name`; `None` when it is missing.
    fn field(&self, name: &str) -> Result<Option<JsValue>, Refusal> {
        let key = JsValue::from(name);
        let v = js_sys::Reflect::get(self.0, &key).map_err(thrown)?;
        if v.is_undefined() && !js_sys::Reflect::has(self.0, &key).map_err(thrown)? {
            return Ok(None);
        }
        Ok(Some(v))
    }

    /// A string field (`None`: missing).
    fn string(&self, name: &str) -> Result<Option<String>, Refusal> {
        self.field(name)?.map(string).transpose()
    }

    /// An optional string field: missing, `null` or `undefined` is `None`.
    fn optional_string(&self, name: &str) -> Result<Option<String>, Refusal> {
        self.field(name)?
            .filter(|v| !v.is_null_or_undefined())
            .map(string)
            .transpose()
    }

    /// An unsigned integer field of type `ty` (`None`: missing).
    fn uint<T: TryFrom<u64>>(&self, name: &str, ty: &str) -> Result<Option<T>, Refusal> {
        self.field(name)?.map(|v| uint(&v, ty)).transpose()
    }
}

#[wasm_bindgen]
extern "C" {
    /// JS's `String(v)` (also how serde-wasm-bindgen printed its errors).
    #[wasm_bindgen(js_name = String)]
    fn js_string(v: &JsValue) -> String;
}

/// What a getter or an iterator threw.
fn thrown(e: JsValue) -> Refusal {
    js_string(&e)
}

fn missing(name: &str) -> Refusal {
    format!("Error: missing field `{name}`")
}

fn required<T>(v: Option<T>, name: &str) -> Result<T, Refusal> {
    v.ok_or_else(|| missing(name))
}

fn string(v: JsValue) -> Result<String, Refusal> {
    v.as_string().ok_or_else(|| invalid_type(&v, "a string"))
}

/// A JS safe integer that fits `T` (serde: "u16", "u32", ...).
fn uint<T: TryFrom<u64>>(v: &JsValue, ty: &str) -> Result<T, Refusal> {
    const MAX_SAFE: f64 = 9_007_199_254_740_991.0;
    match v.as_f64() {
        // why: an integer in 0..=2^53 - 1, checked in the guard, converts exactly.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Some(f) if f.fract() == 0.0 && (0.0..=MAX_SAFE).contains(&f) => {
            let n = f as u64;
            T::try_from(n)
                .map_err(|_| format!("Error: invalid value: integer `{n}`, expected {ty}"))
        }
        _ => Err(invalid_type(v, ty)),
    }
}

/// serde's "invalid type" message for `v` as serde-wasm-bindgen describes JS values.
fn invalid_type(v: &JsValue, expected: &str) -> Refusal {
    let unexpected = if v.is_null_or_undefined() {
        "unit value".to_string()
    } else if let Some(b) = v.as_bool() {
        format!("boolean `{b}`")
    } else if let Some(f) = v.as_f64() {
        format!("floating point `{}`", float_text(f))
    } else if let Some(s) = v.as_string() {
        format!("string {}", crate::views::quoted(&s))
    } else if v.is_instance_of::<js_sys::Uint8Array>() || v.is_instance_of::<js_sys::ArrayBuffer>()
    {
        "byte array".to_string()
    } else {
        format!("{v:?}")
    };
    format!("Error: invalid type: {unexpected}, expected {expected}")
}

/// A number as serde printed it (Rust's `f64` `Display`, ".0" added to a finite number
/// without a decimal point), from JS's `Number#toString`, which has the same shortest
/// round-trip digits but may use an exponent.
fn float_text(f: f64) -> String {
    if f.is_infinite() {
        return if f > 0.0 { "inf" } else { "-inf" }.to_string();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0.0" } else { "0.0" }.to_string();
    }
    let js = js_string(&JsValue::from(f));
    if f.is_nan() {
        return js;
    }
    // JS writes an exponent for |x| >= 1e21 and |x| < 1e-6: "d.ddde+21", "d.ddde-7" (one digit
    // before the point, at most 17 digits); Rust writes the digits out.
    let text = match js.split_once('e') {
        Some((mantissa, exp)) => {
            let (sign, mantissa) = mantissa
                .strip_prefix('-')
                .map_or(("", mantissa), |m| ("-", m));
            let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
            let digits = format!("{int}{frac}");
            match exp.strip_prefix('-') {
                Some(x) => {
                    let zeros = exponent(x).saturating_sub(int.len());
                    format!("{sign}0.{}{digits}", zeros_text(zeros))
                }
                None => {
                    let x = exponent(exp.trim_start_matches('+'));
                    let zeros = (int.len() + x).saturating_sub(digits.len());
                    format!("{sign}{digits}{}", zeros_text(zeros))
                }
            }
        }
        None => js,
    };
    if text.contains('.') {
        text
    } else {
        text + ".0"
    }
}

/// The decimal digits of a JS exponent (at most 3), by hand: `str::parse::<usize>` and
/// `str::repeat` were used nowhere else in the module (wasm/API.md § Building).
fn exponent(digits: &str) -> usize {
    digits.bytes().fold(0usize, |n, b| {
        n.saturating_mul(10)
            .saturating_add(usize::from(b.wrapping_sub(b'0') % 10))
    })
}

/// `n` zeros.
fn zeros_text(n: usize) -> String {
    let mut s = String::with_capacity(n);
    for _ in 0..n {
        s.push('0');
    }
    s
}

/// `issueIndicium`'s argument (an object: [`only_keys`] checked it).
fn indicium_args(r: &Request) -> Result<IndiciumArgs, Refusal> {
    let postage = r.string("postage")?;
    let date = r.string("date")?;
    let rate = r.uint("rate", "u16")?;
    let origin = r.string("origin")?;
    let destination = r.string("destination")?;
    let transaction_id = r.optional_string("transactionId")?;
    let set = match r.field("set")? {
        Some(v) if !v.is_null_or_undefined() => Some(uint(&v, "u8")?),
        _ => None,
    };
    Ok(IndiciumArgs {
        postage: required(postage, "postage")?,
        date: required(date, "date")?,
        rate: required(rate, "rate")?,
        origin: required(origin, "origin")?,
        destination: required(destination, "destination")?,
        transaction_id,
        set,
    })
}

#[cfg(feature = "demo")]
/// `buildPersonalization`'s argument (an object: [`only_keys`] checked it).
fn personalization_args(r: &Request) -> Result<PersonalizationArgs, Refusal> {
    let licenses = r.field("licenses")?.map(|v| licenses(&v)).transpose()?;
    let max_postage = r.string("maxPostage")?;
    let max_dr = r.string("maxDr")?;
    let inspection_days = r.uint("inspectionDays", "u16")?;
    let device_id = r.optional_string("deviceId")?;
    let kms_public_key = r.optional_string("kmsPublicKey")?;
    let vendor_public_key = r.optional_string("vendorPublicKey")?;
    Ok(PersonalizationArgs {
        licenses: required(licenses, "licenses")?,
        max_postage: required(max_postage, "maxPostage")?,
        max_dr: required(max_dr, "maxDr")?,
        inspection_days: inspection_days.unwrap_or(0),
        device_id,
        kms_public_key,
        vendor_public_key,
    })
}

#[cfg(feature = "demo")]
/// `licenses`: any JS iterable of `{ license, origin }` objects.
fn licenses(v: &JsValue) -> Result<Vec<LicenseArg>, Refusal> {
    let Some(iter) = js_sys::try_iter(v).map_err(thrown)? else {
        return Err(invalid_type(v, "a sequence"));
    };
    let mut out = Vec::new();
    for l in iter {
        let l = l.map_err(thrown)?;
        if !l.is_object() {
            return Err(invalid_type(&l, "struct LicenseArg"));
        }
        let r = Request(&l);
        let license = r.uint("license", "u32")?;
        let origin = r.string("origin")?;
        out.push(LicenseArg {
            license: required(license, "license")?,
            origin: required(origin, "origin")?,
        });
    }
    Ok(out)
}

/// The request `v` read by `read`; a refusal is an `InputError` "request: ...".
fn from_js<T>(v: &JsValue, read: fn(&Request) -> Result<T, Refusal>) -> Result<T, JsValue> {
    read(&Request(v)).map_err(|e| js_error(ApiError::input(format!("request: {e}"))))
}

const INDICIUM_KEYS: &[&str] = &[
    "postage",
    "date",
    "rate",
    "origin",
    "destination",
    "transactionId",
    "set",
];
#[cfg(feature = "demo")]
const PERSONALIZATION_KEYS: &[&str] = &[
    "licenses",
    "maxPostage",
    "maxDr",
    "inspectionDays",
    "deviceId",
    "kmsPublicKey",
    "vendorPublicKey",
];

/// A postal security device: the core's PSD applet on an in-memory store.
#[wasm_bindgen]
pub struct Psd {
    inner: PsdDevice,
}

#[wasm_bindgen]
impl Psd {
    /// A fresh device personalized with `personalization` (PERSONALIZE command data);
    /// `entropy`: 32 bytes from `crypto.getRandomValues`; `today`: "YYYY-MM-DD" or none.
    pub fn create(
        personalization: &[u8],
        entropy: &[u8],
        today: Option<String>,
    ) -> Result<Psd, JsValue> {
        js(PsdDevice::create(
            personalization,
            entropy,
            today.as_deref(),
        ))
        .map(|inner| Psd { inner })
    }

    /// The device of `saveState()` bytes; anything else throws a `StateError`.
    pub fn restore(state: &[u8], entropy: &[u8], today: Option<String>) -> Result<Psd, JsValue> {
        js(PsdDevice::restore(state, entropy, today.as_deref())).map(|inner| Psd { inner })
    }

    /// The persistent store as bytes (holds the device's secrets: seal it at rest).
    #[wasm_bindgen(js_name = saveState)]
    pub fn save_state(&self) -> Result<Vec<u8>, JsValue> {
        js(self.inner.save_state())
    }

    /// Sets (or with `null` clears) the date the platform vouches for.
    #[wasm_bindgen(js_name = setToday)]
    pub fn set_today(&mut self, today: Option<String>) -> Result<(), JsValue> {
        js(self.inner.set_today(today.as_deref()))
    }

    /// One raw command APDU; the response APDU (data ‖ SW1 SW2). Never throws.
    pub fn transmit(&mut self, apdu: &[u8]) -> Vec<u8> {
        self.inner.transmit(apdu)
    }

    /// GET DATA.
    #[wasm_bindgen(unchecked_return_type = "PsdInfo")]
    pub fn info(&mut self) -> Result<JsValue, JsValue> {
        to_js(self.inner.info())
    }

    /// READ REGISTERS of `set` (default 0).
    #[wasm_bindgen(unchecked_return_type = "Registers")]
    pub fn registers(&mut self, set: Option<f64>) -> Result<JsValue, JsValue> {
        let set = js(parse_set(set))?;
        to_js(self.inner.registers(set))
    }

    /// ISSUE INDICIUM.
    #[wasm_bindgen(js_name = issueIndicium, unchecked_return_type = "IssuedIndicium")]
    pub fn issue_indicium(
        &mut self,
        #[wasm_bindgen(unchecked_param_type = "IndiciumRequest")] request: JsValue,
    ) -> Result<JsValue, JsValue> {
        only_keys("request", &request, INDICIUM_KEYS)?;
        let args = from_js(&request, indicium_args)?;
        to_js(self.inner.issue_indicium(&args))
    }

    /// AUDIT of `set` with the server's 16-byte nonce: the 151-byte audit message (signed
    /// by the device key). `9A16` (CardError) from a PSD personalized before the asymmetric
    /// refill suite: it keeps issuing indicia but must be personalized again to be refilled.
    pub fn audit(&mut self, nonce: &[u8], set: Option<f64>) -> Result<Vec<u8>, JsValue> {
        let set = js(parse_set(set))?;
        js(self.inner.audit(nonce, set))
    }

    /// REFILL of `set` with a 106-byte refill message (signed by the KMS); the registers
    /// after the credit.
    #[wasm_bindgen(js_name = applyRefill, unchecked_return_type = "Registers")]
    pub fn apply_refill(&mut self, message: &[u8], set: Option<f64>) -> Result<JsValue, JsValue> {
        let set = js(parse_set(set))?;
        to_js(self.inner.apply_refill(message, set))
    }

    /// RECEIPT; returns the last inspection date ("YYYY-MM-DD").
    pub fn receipt(&mut self, receipt: &[u8]) -> Result<String, JsValue> {
        js(self.inner.receipt(receipt))
    }

    /// The recognition key (SEC1 compressed, hex) for the scheme issuer to certify.
    #[wasm_bindgen(js_name = recognitionKey)]
    pub fn recognition_key(&mut self) -> Result<String, JsValue> {
        js(self.inner.recognition_key())
    }

    /// INSTALL CERTIFICATE: the issuer's certificate on the recognition key (the room's
    /// answer); needed before the first transfer.
    #[wasm_bindgen(js_name = installCertificate)]
    pub fn install_certificate(&mut self, certificate: &[u8]) -> Result<(), JsValue> {
        js(self.inner.install_certificate(certificate))
    }

    /// Moves `amount` from register set `set` (default 0) to `purse`, with the holder's PIN
    /// (core's transfer driver over both cards). Save both states afterwards.
    #[wasm_bindgen(js_name = transferToPurse, unchecked_return_type = "PurseTransfer")]
    pub fn transfer_to_purse(
        &mut self,
        purse: &mut Purse,
        amount: &str,
        pin: &str,
        set: Option<f64>,
    ) -> Result<JsValue, JsValue> {
        let set = js(parse_set(set))?;
        to_js(purse.inner.receive(&mut self.inner, amount, pin, set))
    }

    /// GET DATA 00 04: the license slots, the pending request, the exports.
    #[wasm_bindgen(unchecked_return_type = "Licenses")]
    pub fn licenses(&mut self) -> Result<JsValue, JsValue> {
        to_js(self.inner.licenses())
    }

    /// LICENSE REQUEST for `license` (0 or omitted: the postal authority numbers it) at
    /// `origin`: the signed request, hex, for the meter server's `POST /v1/licenses`.
    /// The same again answers the same request; `replace` makes a new one.
    #[wasm_bindgen(js_name = licenseRequest)]
    pub fn license_request(
        &mut self,
        origin: &str,
        license: Option<u32>,
        replace: Option<bool>,
    ) -> Result<String, JsValue> {
        js(self
            .inner
            .license_request(origin, license.unwrap_or(0), replace.unwrap_or(false)))
    }

    /// LICENSE INSTALL with the grant's `install` (hex): the new set's slot, key ID and
    /// license.
    #[wasm_bindgen(js_name = licenseInstall, unchecked_return_type = "InstalledLicense")]
    pub fn license_install(&mut self, install: &str) -> Result<JsValue, JsValue> {
        to_js(self.inner.license_install(install))
    }

    /// EXPORT SET, prepare: freezes `set` and returns the sealed blob to keep (a file).
    #[wasm_bindgen(js_name = exportPrepare)]
    pub fn export_prepare(&mut self, set: f64) -> Result<Vec<u8>, JsValue> {
        let set = js(parse_set(Some(set)))?;
        js(self.inner.export_prepare(set))
    }

    /// EXPORT SET, commit (after the blob is kept): frees the slot; the epoch (decimal).
    #[wasm_bindgen(js_name = exportCommit)]
    pub fn export_commit(&mut self, set: f64, blob: &[u8]) -> Result<String, JsValue> {
        let set = js(parse_set(Some(set)))?;
        js(self.inner.export_commit(set, blob))
    }

    /// EXPORT SET, cancel: the set is live again.
    #[wasm_bindgen(js_name = exportCancel)]
    pub fn export_cancel(&mut self, set: f64) -> Result<(), JsValue> {
        let set = js(parse_set(Some(set)))?;
        js(self.inner.export_cancel(set))
    }

    /// IMPORT SET: the set of an exported file back in a free slot, once; the slot.
    #[wasm_bindgen(js_name = importSet)]
    pub fn import_set(&mut self, blob: &[u8]) -> Result<u8, JsValue> {
        js(self.inner.import_set(blob))
    }
}

/// A purse card: the core's purse applet on an in-memory store.
#[wasm_bindgen]
pub struct Purse {
    inner: PurseDevice,
}

#[wasm_bindgen]
impl Purse {
    /// A fresh purse personalized with `personalization` (the purse's PERSONALIZE data);
    /// `entropy`: 32 bytes from `crypto.getRandomValues`; `today`: "YYYY-MM-DD" or none.
    pub fn create(
        personalization: &[u8],
        entropy: &[u8],
        today: Option<String>,
    ) -> Result<Purse, JsValue> {
        js(PurseDevice::create(
            personalization,
            entropy,
            today.as_deref(),
        ))
        .map(|inner| Purse { inner })
    }

    /// The purse of `saveState()` bytes; anything else throws a `StateError`.
    pub fn restore(state: &[u8], entropy: &[u8], today: Option<String>) -> Result<Purse, JsValue> {
        js(PurseDevice::restore(state, entropy, today.as_deref())).map(|inner| Purse { inner })
    }

    /// The persistent store as bytes (holds the card's keys and PIN: seal it at rest).
    #[wasm_bindgen(js_name = saveState)]
    pub fn save_state(&self) -> Result<Vec<u8>, JsValue> {
        js(self.inner.save_state())
    }

    /// One raw command APDU; the response APDU (data ‖ SW1 SW2). Never throws.
    pub fn transmit(&mut self, apdu: &[u8]) -> Vec<u8> {
        self.inner.transmit(apdu)
    }

    /// GET DATA.
    #[wasm_bindgen(unchecked_return_type = "PurseInfo")]
    pub fn info(&mut self) -> Result<JsValue, JsValue> {
        to_js(self.inner.info())
    }

    /// CERTIFY: installs the issuer's signature on the purchase key; the info after.
    #[wasm_bindgen(unchecked_return_type = "PurseInfo")]
    pub fn certify(&mut self, signature: &[u8]) -> Result<JsValue, JsValue> {
        to_js(self.inner.certify(signature))
    }

    /// The recognition key (SEC1 compressed, hex) for the scheme issuer to certify.
    #[wasm_bindgen(js_name = recognitionKey)]
    pub fn recognition_key(&mut self) -> Result<String, JsValue> {
        js(self.inner.recognition_key())
    }

    /// INSTALL CERTIFICATE: the issuer's certificate on the recognition key (the room's
    /// answer); needed before the first transfer.
    #[wasm_bindgen(js_name = installCertificate)]
    pub fn install_certificate(&mut self, certificate: &[u8]) -> Result<(), JsValue> {
        js(self.inner.install_certificate(certificate))
    }
}

/// Verifies an indicium (signed bytes ‖ signature) under a SEC1 public key in hex.
#[wasm_bindgen(js_name = verifyIndicium, unchecked_return_type = "Verification")]
pub fn verify_indicium(barcode: &[u8], public_key_hex: Option<String>) -> Result<JsValue, JsValue> {
    to_js(indicium::verify_indicium(
        barcode,
        public_key_hex.as_deref(),
    ))
}

/// A Data Matrix of `bytes` (Base256) as an SVG document string.
#[wasm_bindgen(js_name = dataMatrixSvg)]
pub fn data_matrix_svg(bytes: &[u8], module_size: Option<u32>) -> Result<String, JsValue> {
    js(barcode::svg(bytes, module_size))
}

/// The Data Matrix of `bytes` as a module bitmap (no quiet zone).
#[wasm_bindgen(js_name = dataMatrixModules, unchecked_return_type = "DataMatrixModules")]
pub fn data_matrix_modules(bytes: &[u8]) -> Result<JsValue, JsValue> {
    to_js(barcode::modules(bytes).and_then(|(size, bits)| {
        Ok(ModulesView {
            // A Data Matrix symbol is at most 144 modules a side: this cannot fail.
            size: u32::try_from(size).map_err(|_| ApiError::input("barcode: symbol too large"))?,
            modules: Bytes(bits.into_iter().map(u8::from).collect()),
        })
    }))
}

// The three demo functions below (a personalization room and a KMS in the page) are not
// used by the web demo: they are built only with the `demo` feature (the tests, the
// benchmark and the Node example; scripts/wasm-pkg.sh demo), which keeps ~6 KB gzip out of
// the shipped module (wasm/API.md, size).

/// PERSONALIZE command data built with core's encoder.
#[cfg(feature = "demo")]
#[wasm_bindgen(js_name = buildPersonalization, unchecked_return_type = "BuiltPersonalization")]
pub fn build_personalization(
    #[wasm_bindgen(unchecked_param_type = "PersonalizationRequest")] request: JsValue,
    entropy: &[u8],
) -> Result<JsValue, JsValue> {
    only_keys("request", &request, PERSONALIZATION_KEYS)?;
    let licenses = js_sys::Reflect::get(&request, &"licenses".into())?;
    if let Some(list) = licenses.dyn_ref::<js_sys::Array>() {
        for l in list.iter() {
            only_keys("licenses[]", &l, &["license", "origin"])?;
        }
    }
    let args = from_js(&request, personalization_args)?;
    to_js(personalize::build_personalization(&args, entropy))
}

/// DEMO / TEST ONLY: a real page never holds the KMS key. The KMS's refill message for an
/// audit that verifies under the device's public key, signed with the KMS's signing key.
#[cfg(feature = "demo")]
#[wasm_bindgen(js_name = demoKmsRefill)]
pub fn demo_kms_refill(
    kms_signing_key_hex: &str,
    device_public_key_hex: &str,
    audit: &[u8],
    amount: &str,
    combination_id_hex: Option<String>,
) -> Result<Vec<u8>, JsValue> {
    js(personalize::demo_kms_refill(
        kms_signing_key_hex,
        device_public_key_hex,
        audit,
        amount,
        combination_id_hex.as_deref(),
    ))
}

/// DEMO / TEST ONLY: a real page never holds the KMS key. The KMS's receipt, accepted on
/// `accepted_on`, for an audit that verifies under the device's public key, signed with the
/// KMS's signing key.
#[cfg(feature = "demo")]
#[wasm_bindgen(js_name = demoKmsReceipt)]
pub fn demo_kms_receipt(
    kms_signing_key_hex: &str,
    device_public_key_hex: &str,
    audit: &[u8],
    accepted_on: &str,
) -> Result<Vec<u8>, JsValue> {
    js(personalize::demo_kms_receipt(
        kms_signing_key_hex,
        device_public_key_hex,
        audit,
        accepted_on,
    ))
}
