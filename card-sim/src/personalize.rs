//! Personalizing a PSD from the host side: the vendor's personalization station.
//!
//! The card generates its keys inside; the station chooses the device ID, gives the card
//! the KMS's and the vendor's *public* keys in PERSONALIZE, and hands the back office what
//! it needs (device ID, public key, licenses) as a file beside the card's state — the
//! "secrets file" by its historical name: since the asymmetric refill suite (issue 12) it
//! holds nothing secret, and nothing in it lets anyone add value to any device.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use openpsd_core::client::{ClientError, Link, PsdClient};
use openpsd_core::crypto::IndiciumKey;
use openpsd_core::platform::Platform;
use openpsd_core::psd::device::{DeviceInfo, LicenseSlot, Personalization};
use openpsd_core::transfer::cert::DeviceKind;

use crate::scheme::Scheme;
use openpsd_core::types::{Amount, DeviceId, LicenseId, PostalCode};
use serde::{Deserialize, Serialize};

/// What the station asks for.
#[derive(Clone, Debug)]
pub struct Request {
    /// Device ID (random "PSD" + 5 bytes if `None`).
    pub device: Option<DeviceId>,
    /// The KMS's public key (`kms-public.key`): refill messages and receipts must verify
    /// under it.
    pub kms_public_key: [u8; 65],
    /// The vendor's public key (a fresh throwaway key if `None`).
    pub vendor_public_key: Option<[u8; 65]>,
    /// Per-piece postage limit.
    pub max_postage: Amount,
    /// DR limit.
    pub max_dr: Amount,
    /// Days an accepted audit keeps the device printing (0: no inspection).
    pub inspection_days: u16,
    /// Licenses (register sets) with their origin postal codes.
    pub licenses: Vec<LicenseSlot>,
    /// The postal authority licenses are granted by (seed 003); `None`: the PSD keeps
    /// these sets and takes no license later.
    pub postal_authority: Option<openpsd_core::psd::device::PostalAuthority>,
}

impl Request {
    /// What `card-sim personalize` asks for without options, for the KMS whose public key
    /// is given: a random device ID, a throwaway vendor key, 100.00 per piece, DR at most
    /// 10,000.00, no inspection, and license 4711 mailing from 10115.
    pub fn new(kms_public_key: [u8; 65]) -> Self {
        Request {
            device: None,
            kms_public_key,
            vendor_public_key: None,
            max_postage: Amount(10_000),
            max_dr: Amount(1_000_000),
            inspection_days: 0,
            // `new` accepts "10115": the list always holds the one license.
            licenses: PostalCode::new(b"10115")
                .map(|origin| LicenseSlot {
                    license: LicenseId(4711),
                    origin,
                })
                .into_iter()
                .collect(),
            postal_authority: None,
        }
    }
}

/// What the back office needs about a personalized PSD (JSON). Files written before the
/// asymmetric suite also have `k1`: it is ignored when read, and the KMS no longer takes it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Secrets {
    /// Device ID, hex.
    pub device_id: String,
    /// Indicium key ID, hex.
    pub key_id: String,
    /// Indicium public key (SEC1 uncompressed), hex.
    pub public_key: String,
    /// License numbers and origin postal codes, in register set order.
    pub licenses: Vec<(u32, String)>,
    /// The serial of the issuer's certificate on the PSD's recognition key, when it joined
    /// a scheme (what a revocation list names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_serial: Option<u32>,
}

/// The postal authority block from a PA's data directory: `pa-public.key` (SEC1 hex) and
/// `pa-subject.hex` (its subject name, DER hex), as `backoffice serve --role pa` writes
/// them.
pub fn read_postal_authority(dir: &Path) -> Result<openpsd_core::psd::device::PostalAuthority> {
    let read = |name: &str| -> Result<Vec<u8>> {
        let path = dir.join(name);
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        hex::decode(text.trim()).map_err(|_| anyhow!("{}: expected hex", path.display()))
    };
    let public_key: [u8; 65] = read("pa-public.key")?
        .try_into()
        .map_err(|_| anyhow!("pa-public.key: expected 130 hex digits"))?;
    let subject = read("pa-subject.hex")?;
    if !openpsd_core::crypto::is_valid_public_key(&public_key)
        || !openpsd_core::psd::license::grant::pa_subject_ok(&subject)
    {
        bail!(
            "{}: not a postal authority's key and subject",
            dir.display()
        );
    }
    Ok(openpsd_core::psd::device::PostalAuthority {
        public_key,
        subject,
    })
}

/// Parses `4711:10115` (license:origin postal code).
pub fn parse_license(s: &str) -> Result<LicenseSlot, String> {
    let (l, o) = s
        .split_once(':')
        .ok_or_else(|| format!("'{s}': expected LICENSE:POSTALCODE, e.g. 4711:10115"))?;
    let license = l
        .parse()
        .map_err(|_| format!("'{l}': a license number is an integer"))?;
    let origin = PostalCode::new(o.as_bytes())
        .ok_or_else(|| format!("'{o}': postal codes are 1-10 of A-Z 0-9 space -"))?;
    Ok(LicenseSlot {
        license: LicenseId(license),
        origin,
    })
}

/// Parses a positive amount in currency units ("25", "25.5", "25.00") into minor units.
pub fn parse_amount(text: &str) -> Result<Amount, String> {
    match text.parse::<Amount>() {
        Ok(a) if a > Amount::ZERO => Ok(a),
        Ok(_) => Err(format!("amount {text:?} must be more than zero")),
        Err(e) => Err(format!("amount {text:?}: {e}")),
    }
}

/// A card's refusal as an error naming the command (the client layer's message, which
/// carries the status word and its meaning).
pub fn refused(e: ClientError) -> anyhow::Error {
    anyhow!("{e}")
}

/// Personalizes a blank card and returns its public data and the back office's secrets.
pub fn personalize(
    card: &mut dyn Link,
    platform: &mut dyn Platform,
    req: &Request,
) -> Result<(DeviceInfo, Secrets)> {
    personalize_with_scheme(card, platform, req, None)
}

/// [`personalize`], joining the PSD to a value-transfer scheme when `scheme` is given
/// (with the failed recognitions that block): the PSD gets the issuer's public key and
/// generates its recognition key; the issuer (the scheme file, in this process, never in
/// the card's directory) certifies it, and the PSD can then move value to the scheme's
/// purses.
pub fn personalize_with_scheme(
    card: &mut dyn Link,
    platform: &mut dyn Platform,
    req: &Request,
    scheme: Option<(&Scheme, u8)>,
) -> Result<(DeviceInfo, Secrets)> {
    let mut psd = PsdClient::new(card);
    if psd.select().map_err(refused)?.is_some() {
        bail!("the card is personalized already");
    }
    let device = req.device.unwrap_or_else(|| {
        let mut id = *b"PSD00000";
        platform.fill_random(&mut id[3..]);
        DeviceId(id)
    });
    let vendor_public_key = match req.vendor_public_key {
        Some(k) => k,
        None => IndiciumKey::generate(platform).public_key(),
    };
    let p = Personalization {
        device,
        kms_public_key: req.kms_public_key,
        vendor_public_key,
        max_postage: req.max_postage,
        max_dr: req.max_dr,
        inspection_days: req.inspection_days,
        scheme: scheme.map(|(s, max_failures)| s.slot(max_failures)),
        licenses: req.licenses.clone(),
        postal_authority: req.postal_authority.clone(),
    };
    psd.personalize(&p).map_err(refused)?;
    let info = psd
        .info()
        .ok()
        .flatten()
        .ok_or_else(|| anyhow!("card not personalized after PERSONALIZE"))?;
    let serial = match scheme {
        None => None,
        Some((s, _)) => {
            let recognition = psd.recognition_info().map_err(refused)?;
            let cert = s.certify(platform, DeviceKind::Psd, device.0, recognition.public_key);
            psd.install_certificate(&cert.encode()).map_err(refused)?;
            Some(cert.serial)
        }
    };
    let secrets = Secrets {
        device_id: hex::encode_upper(info.device.0),
        key_id: hex::encode(info.key_id.0),
        public_key: hex::encode(info.public_key),
        licenses: req
            .licenses
            .iter()
            .map(|l| (l.license.0, l.origin.to_string()))
            .collect(),
        certificate_serial: serial,
    };
    Ok((info, secrets))
}

/// Writes the secrets file, readable by its owner only; refuses to overwrite one.
pub fn write_secrets(path: &Path, secrets: &Secrets) -> Result<()> {
    let json = serde_json::to_string_pretty(secrets)?;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating the secrets file {}", path.display()))?;
    f.write_all(json.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    Ok(())
}

/// Reads a secrets file.
pub fn read_secrets(path: &Path) -> Result<Secrets> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a secrets file", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts() {
        assert_eq!(parse_amount("25.00").unwrap(), Amount(2500));
        assert_eq!(parse_amount("25.5").unwrap(), Amount(2550));
        assert_eq!(parse_amount("7").unwrap(), Amount(700));
        for bad in [
            "",
            "0",
            "1.234",
            "-1",
            "1,00",
            ".5",
            "x",
            "184467440737095517",
        ] {
            assert!(parse_amount(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn licenses() {
        let l = parse_license("4711:10115").unwrap();
        assert_eq!(
            (l.license, l.origin.as_bytes()),
            (LicenseId(4711), &b"10115"[..])
        );
        for bad in ["4711", "x:10115", "1:", "1:toolongpostcode", "1:abc"] {
            assert!(parse_license(bad).is_err(), "{bad}");
        }
    }
}
