//! The card issuer's station for purse cards, and the vendor's test-bench tools for PSDs:
//! personalize and certify a purse, unblock its PIN, reset its failed recognitions; fund a
//! PSD with a refill message signed by a test-bench KMS key (what the KMS does), reset a
//! PSD's failed recognitions (signed by the issuer); give either device the issuer's
//! revocation list.
//!
//! Every command goes to a card in this process (a state directory that no `serve` holds).

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Result};
use openpsd_core::client::{psd_apdu, purse_apdu, Link, PsdClient, PurseClient};
use openpsd_core::crypto::IndiciumKey;
use openpsd_core::platform::Platform;
use openpsd_core::psd::audit::AuditData;
use openpsd_core::psd::refill::RefillCombination;
use openpsd_core::psd::registers::Registers;
use openpsd_core::psd::transfer::reset_recognition_data;
use openpsd_core::purse::personal::{certificate_body, PurseInfo, PursePersonalization};
use openpsd_core::transfer::cert::DeviceKind;
use openpsd_core::types::{Amount, CardId, DeviceId, RegisterSetIndex};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::personalize::{refused, Secrets};
use crate::scheme::Scheme;

/// What the issuer asks for a new purse.
#[derive(Clone, Debug)]
pub struct PurseRequest {
    /// Card ID ("PUR" and 5 random bytes if `None`).
    pub card: Option<CardId>,
    /// The holder's PIN (4 to 12 bytes).
    pub pin: Zeroizing<Vec<u8>>,
    /// Highest balance.
    pub max_balance: Amount,
    /// Highest amount of one transfer.
    pub max_transfer: Amount,
    /// PIN tries (1 to 15).
    pub pin_tries: u8,
    /// Failed recognitions that block transfers (1 to 15).
    pub max_failures: u8,
}

/// What the issuer keeps about a purse (JSON, written beside the card like a PSD's
/// secrets file; nothing in it is secret — the admin key follows from the scheme file and
/// the card ID, and the card's private keys never left it).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PurseRecord {
    /// Always "purse".
    pub kind: String,
    /// Card ID, hex.
    pub card_id: String,
    /// Scheme ID.
    pub scheme: u32,
    /// Purchase public key (SEC1 uncompressed), hex.
    pub public_key: String,
    /// The issuer's certificate on it (ECDSA P-256 over `certificate_body`), hex.
    pub certificate: String,
    /// The issuer's certificate on the card's recognition key (docs/apdu.md layout), hex;
    /// absent in records of cards personalized before certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recognition_certificate: Option<String>,
    /// That certificate's serial (what a revocation list names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<u32>,
}

/// Personalizes a blank purse for `scheme` and certifies its purchase key (the key is
/// generated inside the card; the issuer signs it). Returns the card's public data.
pub fn personalize_purse(
    card: &mut dyn Link,
    platform: &mut dyn Platform,
    scheme: &Scheme,
    req: &PurseRequest,
) -> Result<(PurseInfo, PurseRecord)> {
    let mut purse = PurseClient::new(&mut *card);
    purse.select().map_err(refused)?;
    if purse.info().map_err(refused)?.is_some() {
        bail!("the card is personalized already");
    }
    let id = req.card.unwrap_or_else(|| {
        let mut id = *b"PUR00000";
        platform.fill_random(&mut id[3..]);
        CardId(id)
    });
    let p = PursePersonalization {
        card: id,
        scheme: scheme.id,
        admin_key: *scheme.card_admin_key(id).expose(),
        issuer_public_key: scheme.issuer_key.public_key(),
        max_balance: req.max_balance,
        max_transfer: req.max_transfer,
        pin_tries: req.pin_tries,
        max_failures: req.max_failures,
        pin: req.pin.to_vec(),
    };
    let public_key = purse.personalize(&p).map_err(refused)?;
    drop(p);
    let certificate = scheme
        .issuer_key
        .sign(&certificate_body(id, scheme.id, &public_key));
    purse.certify(&certificate).map_err(refused)?;
    // The recognition key, generated inside the card: the issuer certifies its public half.
    let recognition = purse.recognition_info().map_err(refused)?;
    let device_cert = scheme.certify(platform, DeviceKind::Purse, id.0, recognition.public_key);
    purse
        .install_certificate(&device_cert.encode())
        .map_err(refused)?;
    let info = purse_info(card)?;
    if !info.certified_by(&scheme.issuer_key.public_key()) || info.card != id {
        bail!("the card does not hold the certificate it was given");
    }
    let record = PurseRecord {
        kind: "purse".into(),
        card_id: hex::encode_upper(id.0),
        scheme: scheme.id.0,
        public_key: hex::encode(info.public_key),
        certificate: hex::encode(certificate),
        recognition_certificate: Some(hex::encode(device_cert.encode())),
        serial: Some(device_cert.serial),
    };
    Ok((info, record))
}

/// The purse's public data (selects the purse applet first).
pub fn purse_info(card: &mut dyn Link) -> Result<PurseInfo> {
    let mut purse = PurseClient::new(card);
    purse.select().map_err(refused)?;
    purse
        .info()
        .ok()
        .flatten()
        .ok_or_else(|| anyhow!("not a personalized purse"))
}

/// A counter for issuer commands that goes up without the issuer keeping state: the
/// seconds since 1970 (cards refuse a counter not above the last one they accepted).
pub fn admin_counter_now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
}

/// UNBLOCK PIN: a new PIN and full tries, authorised with the card's admin key.
pub fn unblock_pin(
    card: &mut dyn Link,
    scheme: &Scheme,
    new_pin: &[u8],
    counter: u32,
) -> Result<PurseInfo> {
    let info = purse_info(card)?;
    check_scheme(&info, scheme)?;
    let apdu = Zeroizing::new(purse_apdu::unblock_pin(
        &scheme.card_admin_key(info.card),
        info.card,
        counter,
        new_pin,
    ));
    PurseClient::new(&mut *card)
        .exchange("UNBLOCK PIN", &apdu)
        .map_err(refused)?;
    purse_info(card)
}

/// RESET RECOGNITION on a purse: its failed-recognition counter back to zero.
pub fn reset_purse_recognition(
    card: &mut dyn Link,
    scheme: &Scheme,
    counter: u32,
) -> Result<PurseInfo> {
    let info = purse_info(card)?;
    check_scheme(&info, scheme)?;
    let apdu = purse_apdu::reset_recognition(&scheme.card_admin_key(info.card), info.card, counter);
    PurseClient::new(&mut *card)
        .exchange("RESET RECOGNITION", &apdu)
        .map_err(refused)?;
    purse_info(card)
}

fn check_scheme(info: &PurseInfo, scheme: &Scheme) -> Result<()> {
    if info.scheme != scheme.id {
        bail!(
            "card {} belongs to scheme {}, the scheme file is scheme {}",
            info.card,
            info.scheme.0,
            scheme.id.0
        );
    }
    Ok(())
}

fn public_key_of(secrets: &Secrets) -> Result<([u8; 65], DeviceId)> {
    let key: [u8; 65] = hex::decode(&secrets.public_key)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| anyhow!("secrets file: public_key is not 65 bytes of hex"))?;
    let device: [u8; 8] = hex::decode(&secrets.device_id)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| anyhow!("secrets file: device_id is not 8 bytes of hex"))?;
    Ok((key, DeviceId(device)))
}

/// Funds a PSD's register set as the back office would: an audit checked with the
/// device's public key (from its secrets file), then a refill message signed with `kms`
/// and bound to the audit's control sum and refill count. Returns the registers after the
/// credit.
pub fn refill_psd(
    card: &mut dyn Link,
    platform: &mut dyn Platform,
    secrets: &Secrets,
    kms: &IndiciumKey,
    set: RegisterSetIndex,
    amount: Amount,
) -> Result<Registers> {
    let (public_key, device) = public_key_of(secrets)?;
    let mut psd = PsdClient::new(card);
    psd.exchange("SELECT", &psd_apdu::select())
        .map_err(refused)?;
    let mut nonce = [0u8; 16];
    platform.fill_random(&mut nonce);
    let audit = AuditData::open(&psd.audit(set, &nonce).map_err(refused)?, &public_key)
        .ok_or_else(|| anyhow!("the audit does not verify under the secrets file's public key"))?;
    if audit.device != device {
        bail!(
            "the card is {}, the secrets file is for {device}",
            audit.device
        );
    }
    let mut combination_id = [0u8; 8];
    platform.fill_random(&mut combination_id);
    let msg = RefillCombination {
        device: audit.device,
        license: audit.license,
        amount,
        control_sum: audit.control_sum,
        refills: audit.refills,
        combination_id,
    }
    .sign(kms);
    psd.refill(set, &msg).map_err(refused)
}

/// The baselines a meter server registers the PSD with (`POST /v1/devices`): every
/// register set's control sum and refill count as the card has them now — zeros after
/// personalization, the issuer's funding after [`refill_psd`]. Value the meter's baseline
/// does not include is caught at the device's first audit (an alarm), so whoever funds a
/// device offline hands these to the operator with the secrets file.
pub fn psd_baselines(
    card: &mut dyn Link,
    secrets: &Secrets,
) -> Result<Vec<openpsd_protocol::Baseline>> {
    let mut psd = PsdClient::new(card);
    psd.exchange("SELECT", &psd_apdu::select())
        .map_err(refused)?;
    (0..secrets.licenses.len())
        .map(|i| {
            let set = u8::try_from(i).map_err(|_| anyhow!("too many register sets"))?;
            let r = psd.registers(RegisterSetIndex(set)).map_err(refused)?;
            Ok(openpsd_protocol::Baseline {
                control_sum: r.control_sum.0,
                refills: r.refills.0,
            })
        })
        .collect()
}

/// Personalizes a blank PSD (of `scheme`, when given) for the KMS `kms` and funds its
/// first register set with `amount` as [`refill_psd`] does: a ready device for tools and
/// tests. `req.kms_public_key` must be `kms`'s.
pub fn personalize_and_fund(
    card: &mut dyn Link,
    platform: &mut dyn Platform,
    req: &crate::personalize::Request,
    kms: &IndiciumKey,
    scheme: Option<(&Scheme, u8)>,
    amount: Amount,
) -> Result<Secrets> {
    let (_, secrets) = crate::personalize::personalize_with_scheme(card, platform, req, scheme)?;
    refill_psd(card, platform, &secrets, kms, RegisterSetIndex(0), amount)?;
    Ok(secrets)
}

/// RESET RECOGNITION on a PSD, signed by the scheme's issuer. Returns the device ID.
pub fn reset_psd_recognition(
    card: &mut dyn Link,
    scheme: &Scheme,
    counter: u32,
) -> Result<DeviceId> {
    let mut psd = PsdClient::new(card);
    let info = psd
        .select()
        .map_err(refused)?
        .ok_or_else(|| anyhow!("the PSD is not personalized"))?;
    psd.reset_recognition(&reset_recognition_data(
        &scheme.issuer_key,
        info.device,
        counter,
    ))
    .map_err(refused)?;
    Ok(info.device)
}

/// LOAD REVOCATION on a PSD or a purse (`psd` says which applet): the issuer's signed list
/// (made by [`crate::scheme::Scheme::revocation`]; anyone may carry it). Returns the list
/// version the card holds afterwards.
pub fn load_revocation(card: &mut dyn Link, psd: bool, list: &[u8]) -> Result<u32> {
    let info = if psd {
        let mut c = PsdClient::new(card);
        c.exchange("SELECT", &psd_apdu::select()).map_err(refused)?;
        c.load_revocation(list).map_err(refused)?;
        c.recognition_info().map_err(refused)?
    } else {
        let mut c = PurseClient::new(card);
        c.select().map_err(refused)?;
        c.load_revocation(list).map_err(refused)?;
        c.recognition_info().map_err(refused)?
    };
    Ok(info.revocation_version)
}
