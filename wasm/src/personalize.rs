//! Host-side helpers around the PSD: PERSONALIZE data built with core's encoder (what the
//! vendor's personalization station does), and — for demos and tests only — the key
//! management system's two signing operations (a refill message and a receipt for an
//! audit checked under the device's public key), so a PSD can be funded and inspected
//! without a back office.

use openpsd_core::crypto::{self, IndiciumKey, PUBLIC_KEY_LEN};
use openpsd_core::platform::Platform;
use openpsd_core::psd::audit::AuditData;
use openpsd_core::psd::device::{LicenseSlot, Personalization, MAX_REGISTER_SETS};
use openpsd_core::psd::receipt::Receipt;
use openpsd_core::psd::refill::RefillCombination;
use openpsd_core::types::{Amount, DeviceId, LicenseId};
use zeroize::Zeroizing;

use crate::device::entropy;
use crate::entropy::HostEntropy;
use crate::error::{ApiError, ApiResult};
use crate::views::{
    device_hex, parse_amount, parse_date, parse_hex, parse_postal_code, BuiltPersonalizationView,
    Bytes, PersonalizationArgs,
};

/// PERSONALIZE command data for `args`; a vendor key and a device ID not given come from
/// `entropy`. The KMS's public key must be given.
pub fn build_personalization(
    args: &PersonalizationArgs,
    entropy_bytes: &[u8],
) -> ApiResult<BuiltPersonalizationView> {
    let mut rng = HostEntropy::new(entropy(entropy_bytes)?, None);
    if args.licenses.is_empty() || args.licenses.len() > MAX_REGISTER_SETS {
        return Err(ApiError::input(format!(
            "licenses: 1 to {MAX_REGISTER_SETS} licenses, got {}",
            args.licenses.len()
        )));
    }
    let mut licenses = Vec::with_capacity(args.licenses.len());
    for l in &args.licenses {
        if licenses
            .iter()
            .any(|s: &LicenseSlot| s.license.0 == l.license)
        {
            return Err(ApiError::input(format!(
                "licenses: license {} twice",
                l.license
            )));
        }
        licenses.push(LicenseSlot {
            license: LicenseId(l.license),
            origin: parse_postal_code("licenses.origin", &l.origin)?,
        });
    }
    let max_postage = parse_amount("maxPostage", &args.max_postage)?;
    let max_dr = parse_amount("maxDr", &args.max_dr)?;
    if max_postage == Amount::ZERO || max_postage > max_dr {
        return Err(ApiError::input(
            "maxPostage: must be more than 0.00 and at most maxDr",
        ));
    }
    let device = match &args.device_id {
        Some(d) => DeviceId(parse_hex::<8>("deviceId", d)?),
        None => {
            let mut id = *b"PSD00000";
            rng.fill_random(&mut id[3..]);
            DeviceId(id)
        }
    };
    let kms_public_key = match &args.kms_public_key {
        Some(k) => parse_public_key("kmsPublicKey", k)?,
        None => {
            return Err(ApiError::input(
                "kmsPublicKey: required: the key management system's public key, 130 hex \
                 digits (SEC1 uncompressed P-256, 04 || X || Y)",
            ));
        }
    };
    let vendor_public_key = match &args.vendor_public_key {
        Some(k) => parse_public_key("vendorPublicKey", k)?,
        None => IndiciumKey::generate(&mut rng).public_key(),
    };
    let p = Personalization {
        device,
        kms_public_key,
        vendor_public_key,
        max_postage,
        max_dr,
        inspection_days: args.inspection_days,
        licenses,
        scheme: None,
        postal_authority: None,
    };
    let encoded = p.encode();
    // Core's own decoder has the last word (it is what PERSONALIZE runs); both keys were
    // checked above, so this refusal is not expected.
    Personalization::decode(&encoded)
        .map_err(|_| ApiError::input("personalization: core's decoder refuses the data"))?;
    Ok(BuiltPersonalizationView {
        personalization: Bytes(encoded),
        device_id: device_hex(&device),
        vendor_public_key: hex::encode(vendor_public_key),
    })
}

/// A public key argument: 130 hex digits that are a P-256 point.
fn parse_public_key(field: &str, text: &str) -> ApiResult<[u8; PUBLIC_KEY_LEN]> {
    let key = parse_hex::<PUBLIC_KEY_LEN>(field, text)?;
    if !crypto::is_valid_public_key(&key) {
        return Err(ApiError::input(format!(
            "{field}: not a P-256 point (SEC1 uncompressed, 04 || X || Y)"
        )));
    }
    Ok(key)
}

/// The KMS's signing key and the audit it checked under the device's public key.
fn open_audit(
    kms_signing_key_hex: &str,
    device_public_key_hex: &str,
    audit: &[u8],
) -> ApiResult<(IndiciumKey, AuditData)> {
    let scalar = Zeroizing::new(parse_hex::<32>("kmsSigningKey", kms_signing_key_hex)?);
    let kms = IndiciumKey::from_bytes(scalar.as_ref()).ok_or_else(|| {
        ApiError::input("kmsSigningKey: not a P-256 private key (a scalar from 1 to n-1)")
    })?;
    let device_public_key = parse_public_key("devicePublicKey", device_public_key_hex)?;
    match AuditData::open(audit, &device_public_key) {
        Some(a) => Ok((kms, a)),
        None if AuditData::decode_unverified(audit).is_ok() => Err(ApiError::input(
            "audit: its signature does not verify under devicePublicKey (another device's \
             audit, or altered)",
        )),
        None => Err(ApiError::input(
            "audit: not an audit message (AUDIT's answer: body and the device's signature)",
        )),
    }
}

/// DEMO / TEST ONLY (the KMS's job; a real page never holds the KMS's signing key): a
/// refill message for what `audit` shows, once the audit verifies under the device's
/// public key.
pub fn demo_kms_refill(
    kms_signing_key_hex: &str,
    device_public_key_hex: &str,
    audit: &[u8],
    amount: &str,
    combination_id_hex: Option<&str>,
) -> ApiResult<Vec<u8>> {
    let (kms, a) = open_audit(kms_signing_key_hex, device_public_key_hex, audit)?;
    let combination_id = match combination_id_hex {
        Some(c) => parse_hex::<8>("combinationId", c)?,
        None => [1; 8],
    };
    Ok(RefillCombination {
        device: a.device,
        license: a.license,
        amount: parse_amount("amount", amount)?,
        control_sum: a.control_sum,
        refills: a.refills,
        combination_id,
    }
    .sign(&kms))
}

/// DEMO / TEST ONLY (the KMS's job; a real page never holds the KMS's signing key): a
/// receipt accepting `audit` on `accepted_on`, once the audit verifies under the device's
/// public key.
pub fn demo_kms_receipt(
    kms_signing_key_hex: &str,
    device_public_key_hex: &str,
    audit: &[u8],
    accepted_on: &str,
) -> ApiResult<Vec<u8>> {
    let (kms, a) = open_audit(kms_signing_key_hex, device_public_key_hex, audit)?;
    Ok(Receipt {
        device: a.device,
        nonce: a.nonce,
        accepted_on: parse_date("acceptedOn", accepted_on)?,
    }
    .sign(&kms))
}
