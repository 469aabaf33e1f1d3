//! Licenses (seed 003) in tests: a stand-in postal authority and manufacturer that sign
//! grants exactly as the back office's `pa` and `vendor` services do (with core's own
//! template), a PSD personalized with the PA's key and no register set of its own, and the
//! Fig. 4 exchange as one call.

use openpsd_core::client::psd_apdu;
use openpsd_core::crypto::IndiciumKey;
use openpsd_core::psd::device::{Personalization, PostalAuthority};
use openpsd_core::psd::license::grant::{self, CardFields, GrantFields};
use openpsd_core::psd::license::install::Install;
use openpsd_core::psd::license::request::{LicenseAsk, LicenseRequest};
use openpsd_core::psd::license::LicenseInfo;
use openpsd_core::types::*;

use crate::{blank_card, expect_ok, personalization, TestCard};

/// The test postal authority's CA key.
pub fn pa_key() -> IndiciumKey {
    IndiciumKey::from_bytes(&[0x50; 32]).expect("valid scalar")
}

/// The test vendor's key (its public half is [`crate::vendor_public_key`]).
pub fn vendor_key() -> IndiciumKey {
    IndiciumKey::from_bytes(&[7u8; 32]).expect("valid scalar")
}

/// The PA's subject: `CN=openpsd test PA`, DER.
pub fn pa_subject() -> Vec<u8> {
    const CN: &[u8] = b"openpsd test PA";
    // SEQUENCE { SET { SEQUENCE { OID 2.5.4.3, UTF8String CN } } }: every length is short.
    let der = |tag: u8, content: &[u8]| {
        let mut v = vec![tag, u8::try_from(content.len()).expect("short length")];
        v.extend_from_slice(content);
        v
    };
    let mut atv = der(0x06, &[0x55, 0x04, 0x03]);
    atv.extend_from_slice(&der(0x0C, CN));
    der(0x30, &der(0x31, &der(0x30, &atv)))
}

/// The test PSD's personalization with the PA block and `sets` of the usual licenses
/// (0 to 2).
pub fn licensing_personalization(sets: usize) -> Personalization {
    let mut p = personalization();
    p.licenses.truncate(sets);
    p.postal_authority = Some(PostalAuthority {
        public_key: pa_key().public_key(),
        subject: pa_subject(),
    });
    p
}

/// A card personalized for licenses with `sets` personalized register sets, SELECTed.
pub fn licensing_card(seed: u64, sets: usize) -> TestCard {
    let mut card = blank_card(seed);
    expect_ok(&card.transmit(&psd_apdu::personalize(&licensing_personalization(sets))));
    card
}

/// The grant's validity in tests: 2026-11-01 to 2027-10-31.
pub fn validity() -> (Date, Date) {
    (
        Date::new(2026, 11, 1).expect("date"),
        Date::new(2027, 10, 31).expect("date"),
    )
}

/// What the PA grants for a request: the certificate fields, the PA's signature, and the
/// vendor's countersignature (the chain of Fig. 4, steps 63-66, minus the transport).
pub fn grant(request: &LicenseRequest, license: u32, serial: &[u8]) -> Install {
    grant_with(
        request,
        license,
        serial,
        validity(),
        &pa_key(),
        &vendor_key(),
    )
}

/// [`grant`] with the validity and both signing keys chosen (forgeries in tests).
pub fn grant_with(
    request: &LicenseRequest,
    license: u32,
    serial: &[u8],
    (not_before, not_after): (Date, Date),
    pa: &IndiciumKey,
    vendor: &IndiciumKey,
) -> Install {
    let b = &request.body;
    let fields = GrantFields {
        serial: serial.to_vec(),
        not_before,
        not_after,
        license: LicenseId(license),
        origin: b.origin,
    };
    let subject = pa_subject();
    let pa_public = pa_key().public_key();
    let card = CardFields {
        pa_subject: &subject,
        pa_public_key: &pa_public,
        device: b.device,
        license_public_key: &b.license_public_key,
        nonce: &b.nonce,
    };
    let tbs = grant::tbs_certificate(&fields, &card).expect("template takes the fields");
    let pa_signature = pa.sign(&tbs);
    let countersignature = vendor.sign(&grant::countersign_message(&tbs, b.device, &b.nonce));
    Install {
        request: b.counter,
        fields,
        pa_signature,
        countersignature,
    }
}

/// LICENSE REQUEST for `license` at `origin`; the decoded request.
pub fn request_license(card: &mut TestCard, license: u32, origin: &[u8]) -> LicenseRequest {
    let ask = LicenseAsk {
        license: LicenseId(license),
        origin: PostalCode::new(origin).expect("valid code"),
    };
    let resp = expect_ok(&card.transmit(&psd_apdu::license_request(&ask, false)));
    LicenseRequest::decode(&resp).expect("request decodes")
}

/// Fig. 4 end to end: request, grant, countersign, install. Returns the slot.
pub fn add_license(card: &mut TestCard, license: u32, origin: &[u8]) -> u8 {
    let request = request_license(card, license, origin);
    let install = grant(&request, license, &serial_for(license));
    expect_ok(&card.transmit(&psd_apdu::license_install(&install)))[0]
}

/// A certificate serial for `license` (first octet non-zero, as the template wants).
pub fn serial_for(license: u32) -> Vec<u8> {
    let mut s = vec![0x11];
    s.extend_from_slice(&license.to_be_bytes());
    s
}

/// GET DATA 00 04.
pub fn license_info(card: &mut TestCard) -> LicenseInfo {
    LicenseInfo::decode(&expect_ok(&card.transmit(&psd_apdu::get_license_data())))
        .expect("license info decodes")
}
