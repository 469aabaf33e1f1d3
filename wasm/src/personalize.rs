//! Host-side helpers around the PSD: PERSONALIZE data built with core's encoder (what the
//! vendor's personalization station does), and — for demos and tests only — the key
//! management system's two K1 operations (sealing a refill message and a receipt for an
//! audit), so a PSD can be funded and inspected without a back office.

use openpsd_core::crypto::{IndiciumKey, MacKey};
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

/// PERSONALIZE command data for `args`; keys and device ID not given come from `entropy`.
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
    let k1 = match &args.k1 {
        Some(k) => Zeroizing::new(parse_hex::<16>("k1", k)?),
        None => {
            let mut k = Zeroizing::new([0u8; 16]);
            rng.fill_random(k.as_mut());
            k
        }
    };
    let vendor_public_key = match &args.vendor_public_key {
        Some(k) => parse_hex::<65>("vendorPublicKey", k)?,
        None => IndiciumKey::generate(&mut rng).public_key(),
    };
    let p = Personalization {
        device,
        k1: *k1,
        vendor_public_key,
        max_postage,
        max_dr,
        inspection_days: args.inspection_days,
        licenses,
        scheme: None,
    };
    let encoded = p.encode();
    // Core's own decoder has the last word (it is what PERSONALIZE runs): e.g. a vendor
    // key that is not a P-256 point.
    Personalization::decode(&encoded).map_err(|_| {
        ApiError::input("vendorPublicKey: not a P-256 point (SEC1 uncompressed, 04 || X || Y)")
    })?;
    Ok(BuiltPersonalizationView {
        personalization: Bytes(encoded.to_vec()),
        device_id: device_hex(&device),
        k1: hex::encode(*k1),
        vendor_public_key: hex::encode(vendor_public_key),
    })
}

fn open_audit(k1_hex: &str, audit: &[u8]) -> ApiResult<(MacKey, AuditData)> {
    let k1 = MacKey::new(parse_hex::<16>("k1", k1_hex)?);
    let a = AuditData::open(audit, &k1)
        .ok_or_else(|| ApiError::input("audit: does not verify under K1 (or not an audit)"))?;
    Ok((k1, a))
}

/// DEMO / TEST ONLY (the KMS's job): a refill message for what `audit` shows.
pub fn demo_kms_refill(
    k1_hex: &str,
    audit: &[u8],
    amount: &str,
    combination_id_hex: Option<&str>,
) -> ApiResult<Vec<u8>> {
    let (k1, a) = open_audit(k1_hex, audit)?;
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
    .seal(&k1))
}

/// DEMO / TEST ONLY (the KMS's job): a receipt accepting `audit` on `accepted_on`.
pub fn demo_kms_receipt(k1_hex: &str, audit: &[u8], accepted_on: &str) -> ApiResult<Vec<u8>> {
    let (k1, a) = open_audit(k1_hex, audit)?;
    Ok(Receipt {
        device: a.device,
        nonce: a.nonce,
        accepted_on: parse_date("acceptedOn", accepted_on)?,
    }
    .seal(&k1))
}
