//! The device's identity and keys: the PERSONALIZE command's data, the persistent device
//! record, and the public data a host reads back (GET DATA).

use alloc::vec::Vec;
use zeroize::Zeroizing;

use crate::crypto::{self, IndiciumKey, MacKey, PUBLIC_KEY_LEN};
use crate::status::Status;
use crate::types::{Amount, Date, DeviceId, KeyId, LicenseId, PostalCode, SchemeId};
use crate::wire::{Malformed, Reader, Writer};

/// Most register sets a PSD holds.
pub const MAX_REGISTER_SETS: usize = 4;
/// Layout version of the personalization data and the device record (2: the KMS's public
/// key where version 1 had K1, the symmetric audit/refill key; issue 12).
pub const FORMAT_VERSION: u8 = 2;
/// Layout version of a device record written before the asymmetric refill suite: still
/// read (the PSD keeps printing, and transfers if certified) and written back unchanged;
/// audits, refills and receipts are refused with `9A16`.
const LEGACY_FORMAT_VERSION: u8 = 1;
/// Layout version of the device record of a PSD whose indicia are signed outside it
/// (feature `webcrypto`): version 2 with the outside signer's public key (65) after the
/// KMS's. Without the feature such a record does not load.
#[cfg(feature = "webcrypto")]
pub(super) const OUTSIDE_SIGNER_FORMAT_VERSION: u8 = 3;
/// Layout version of GET DATA's answer (unchanged by the refill suite).
pub const INFO_VERSION: u8 = 1;

/// A register set to create at personalization.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LicenseSlot {
    /// License number.
    pub license: LicenseId,
    /// The license's origin postal code.
    pub origin: PostalCode,
}

/// The value-transfer scheme a PSD joins at personalization (seed 002): the scheme, the
/// issuer's public key that certifies partners, and how many failed recognitions block the
/// function. No secret: the PSD generates its own recognition key, and the issuer certifies
/// it afterwards (INSTALL CERTIFICATE).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchemeSlot {
    /// The scheme.
    pub scheme: SchemeId,
    /// The scheme issuer's public key (SEC1 uncompressed).
    pub issuer_public_key: [u8; PUBLIC_KEY_LEN],
    /// Failed recognitions in a row that block transfers (1 to 15).
    pub max_failures: u8,
}

/// Tag of the scheme block of a PSD personalized before certificates (issue 12): it held
/// the scheme's master key. Still read from device records (the PSD keeps printing and
/// refilling; transfers are refused with `9A25`), never accepted in PERSONALIZE.
const LEGACY_SCHEME_TAG: u8 = 0x53;
/// Tag of the certificate scheme block.
const SCHEME_TAG: u8 = 0x43;

fn check_max_failures(m: u8) -> Result<u8, Malformed> {
    if m == 0 || m > 15 {
        return Err(Malformed::Value);
    }
    Ok(m)
}

impl SchemeSlot {
    /// PERSONALIZE's scheme block: `43` ‖ scheme ‖ issuer key (65) ‖ max failures.
    fn write(&self, w: &mut Vec<u8>) {
        w.put_u8(SCHEME_TAG);
        w.put_u32(self.scheme.0);
        w.extend_from_slice(&self.issuer_public_key);
        w.put_u8(self.max_failures);
    }

    /// Reads an optional trailing scheme block of PERSONALIZE.
    fn read_optional(r: &mut Reader<'_>) -> Result<Option<SchemeSlot>, Malformed> {
        if r.remaining().is_empty() || r.remaining().first() == Some(&PA_TAG) {
            return Ok(None);
        }
        if r.u8()? != SCHEME_TAG {
            return Err(Malformed::Value);
        }
        let slot = SchemeSlot {
            scheme: SchemeId(r.u32()?),
            issuer_public_key: r.array()?,
            max_failures: check_max_failures(r.u8()?)?,
        };
        if !crypto::is_valid_public_key(&slot.issuer_public_key) {
            return Err(Malformed::Value);
        }
        Ok(Some(slot))
    }
}

/// Tag of the postal authority block (seed 003): the PA's key and subject name, which a
/// PSD needs to check license grants. Optional: a PSD without it keeps its personalized
/// register sets and cannot add licenses (`9A37`).
const PA_TAG: u8 = 0x50;

/// The postal authority a PSD takes license grants from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostalAuthority {
    /// The PA's CA public key (SEC1 uncompressed).
    pub public_key: [u8; PUBLIC_KEY_LEN],
    /// The PA's subject name, full DER, exactly as in its CA certificate (the issuer of
    /// every grant, [`super::license::grant`]).
    pub subject: Vec<u8>,
}

impl PostalAuthority {
    /// `50` ‖ key (65) ‖ subject length (1) ‖ subject.
    fn write(&self, w: &mut Vec<u8>) {
        w.put_u8(PA_TAG);
        w.extend_from_slice(&self.public_key);
        w.put_short_bytes(&self.subject);
    }

    /// Reads an optional trailing PA block.
    fn read_optional(r: &mut Reader<'_>) -> Result<Option<PostalAuthority>, Malformed> {
        if r.remaining().first() != Some(&PA_TAG) {
            return Ok(None);
        }
        r.u8()?;
        let pa = PostalAuthority {
            public_key: r.array()?,
            subject: r.short_bytes()?.to_vec(),
        };
        if !crypto::is_valid_public_key(&pa.public_key)
            || !super::license::grant::pa_subject_ok(&pa.subject)
        {
            return Err(Malformed::Value);
        }
        Ok(Some(pa))
    }
}

/// PERSONALIZE command data (sent once, in the vendor's trusted personalization room).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Personalization {
    /// Serial number of the device.
    pub device: DeviceId,
    /// The key management system's public key (SEC1 uncompressed): what refill messages
    /// and audit receipts must be signed with (seed 000's "second secret key", now a
    /// private key that never leaves the KMS).
    pub kms_public_key: [u8; PUBLIC_KEY_LEN],
    /// The vendor's public key (SEC1 uncompressed).
    pub vendor_public_key: [u8; PUBLIC_KEY_LEN],
    /// Highest postage for one piece.
    pub max_postage: Amount,
    /// Highest value the descending register may hold.
    pub max_dr: Amount,
    /// Days an accepted audit keeps the device printing (0: no inspection).
    pub inspection_days: u16,
    /// Register sets to create (1 to [`MAX_REGISTER_SETS`]).
    pub licenses: Vec<LicenseSlot>,
    /// The value-transfer scheme, if the PSD may move value to purse cards.
    pub scheme: Option<SchemeSlot>,
    /// The postal authority, if the PSD may add licenses (seed 003).
    pub postal_authority: Option<PostalAuthority>,
}

impl Personalization {
    /// Command data layout (no secret in it: the PSD generates its keys inside).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(192);
        w.put_u8(FORMAT_VERSION);
        w.extend_from_slice(&self.device.0);
        w.extend_from_slice(&self.kms_public_key);
        w.extend_from_slice(&self.vendor_public_key);
        w.put_u64(self.max_postage.0);
        w.put_u64(self.max_dr.0);
        w.put_u16(self.inspection_days);
        // A count over 255 goes out as 255, which PERSONALIZE refuses like any count over
        // MAX_REGISTER_SETS; a truncated count (257 → 1) could have read as a valid one.
        w.put_u8(u8::try_from(self.licenses.len()).unwrap_or(u8::MAX));
        for l in &self.licenses {
            w.put_u32(l.license.0);
            l.origin.write(&mut w);
        }
        if let Some(s) = &self.scheme {
            s.write(&mut w);
        }
        if let Some(pa) = &self.postal_authority {
            pa.write(&mut w);
        }
        w
    }

    /// Parses and validates command data: valid KMS and vendor keys, 1 to 4 distinct
    /// licenses (0 with a postal authority block: every set comes later as a license),
    /// 0 < max postage <= max DR. Version 1 data (with K1) is refused.
    pub fn decode(bytes: &[u8]) -> Result<Personalization, Malformed> {
        let mut r = Reader::new(bytes);
        if r.u8()? != FORMAT_VERSION {
            return Err(Malformed::Value);
        }
        let mut p = Personalization {
            device: DeviceId(r.array()?),
            kms_public_key: r.array()?,
            vendor_public_key: r.array()?,
            max_postage: Amount(r.u64()?),
            max_dr: Amount(r.u64()?),
            inspection_days: r.u16()?,
            licenses: Vec::new(),
            scheme: None,
            postal_authority: None,
        };
        let n = usize::from(r.u8()?);
        if n > MAX_REGISTER_SETS {
            return Err(Malformed::Value);
        }
        for _ in 0..n {
            let slot = LicenseSlot {
                license: LicenseId(r.u32()?),
                origin: PostalCode::read(&mut r)?,
            };
            if p.licenses.iter().any(|l| l.license == slot.license) {
                return Err(Malformed::Value);
            }
            p.licenses.push(slot);
        }
        p.scheme = SchemeSlot::read_optional(&mut r)?;
        p.postal_authority = PostalAuthority::read_optional(&mut r)?;
        r.finish()?;
        // No set at all is allowed only where sets can come later, as licenses.
        if n == 0 && (p.postal_authority.is_none() || !cfg!(feature = "licenses")) {
            return Err(Malformed::Value);
        }
        let limits_ok = p.max_postage > Amount::ZERO && p.max_postage <= p.max_dr;
        let keys_ok = crypto::is_valid_public_key(&p.vendor_public_key)
            && crypto::is_valid_public_key(&p.kms_public_key);
        if !limits_ok || !keys_ok {
            return Err(Malformed::Value);
        }
        Ok(p)
    }
}

/// The personalized device, as it lives in RAM while the card is powered.
#[derive(Clone, Debug)]
pub struct Device {
    /// Serial number.
    pub id: DeviceId,
    /// Indicium signing key (generated inside).
    pub key: IndiciumKey,
    /// Its public key, cached.
    pub public_key: [u8; PUBLIC_KEY_LEN],
    /// What authenticates the back office's refill messages and receipts.
    pub refill_key: RefillKey,
    /// Vendor public key.
    pub vendor_public_key: [u8; PUBLIC_KEY_LEN],
    /// Per-piece limit.
    pub max_postage: Amount,
    /// DR limit.
    pub max_dr: Amount,
    /// Days an accepted audit keeps the device printing (0: no inspection).
    pub inspection_days: u16,
    /// The value-transfer scheme, if any.
    pub scheme: Option<Scheme>,
    /// The postal authority licenses come from, if any.
    pub postal_authority: Option<PostalAuthority>,
    /// The public key (SEC1 uncompressed) of the signer outside the PSD that signs the
    /// indicia of its personalized sets (PERSONALIZE P1 `01`; the device key still signs
    /// audits, receipts and exports, and a licensed set's key its own indicia).
    #[cfg(feature = "webcrypto")]
    pub outside_signer: Option<[u8; PUBLIC_KEY_LEN]>,
}

/// What a PSD checks refill messages and audit receipts with, and signs audits with.
#[derive(Clone, Debug)]
pub enum RefillKey {
    /// The KMS's public key: refill messages and receipts are its ECDSA signatures; the
    /// PSD signs audits with its own device key. The KMS holds no secret of the device.
    Kms([u8; PUBLIC_KEY_LEN]),
    /// K1, the symmetric key of a PSD personalized before the asymmetric suite: kept only
    /// so the record is written back unchanged. The back office no longer holds K1, so
    /// AUDIT, REFILL and RECEIPT are refused with `9A16`.
    LegacyK1(MacKey),
}

/// A PSD's value-transfer scheme, in RAM.
#[derive(Clone, Debug)]
pub struct Scheme {
    /// The scheme.
    pub id: SchemeId,
    /// Failed recognitions in a row that block transfers.
    pub max_failures: u8,
    /// How this PSD recognises purses.
    pub recognition: Recognition,
}

/// A PSD's means of recognising purses.
#[derive(Clone, Debug)]
pub enum Recognition {
    /// Personalized before certificates: the scheme's master key, kept only so the record
    /// is written back unchanged; transfers are refused (`9A25`).
    Legacy(MacKey),
    /// Its own recognition key and the issuer's public key.
    Certified {
        /// The scheme issuer's public key (SEC1 uncompressed).
        issuer_public_key: [u8; PUBLIC_KEY_LEN],
        /// The PSD's recognition key, generated inside at personalization.
        key: IndiciumKey,
    },
}

impl Scheme {
    /// The device record's scheme block: `43` ‖ scheme ‖ issuer key ‖ max failures ‖
    /// recognition key (32), or the legacy `53` ‖ scheme ‖ scheme key (16) ‖ max failures.
    fn write(&self, w: &mut Vec<u8>) {
        match &self.recognition {
            Recognition::Legacy(k) => {
                w.put_u8(LEGACY_SCHEME_TAG);
                w.put_u32(self.id.0);
                w.extend_from_slice(k.expose());
                w.put_u8(self.max_failures);
            }
            Recognition::Certified {
                issuer_public_key,
                key,
            } => {
                w.put_u8(SCHEME_TAG);
                w.put_u32(self.id.0);
                w.extend_from_slice(issuer_public_key);
                w.put_u8(self.max_failures);
                w.extend_from_slice(key.secret_bytes().as_ref());
            }
        }
    }

    fn read_optional(r: &mut Reader<'_>) -> Result<Option<Scheme>, Malformed> {
        if r.remaining().is_empty() || r.remaining().first() == Some(&PA_TAG) {
            return Ok(None);
        }
        let tag = r.u8()?;
        let id = SchemeId(r.u32()?);
        let scheme = match tag {
            LEGACY_SCHEME_TAG => {
                let key = MacKey::new(r.array()?);
                Scheme {
                    id,
                    max_failures: check_max_failures(r.u8()?)?,
                    recognition: Recognition::Legacy(key),
                }
            }
            SCHEME_TAG => {
                let issuer_public_key = r.array()?;
                let max_failures = check_max_failures(r.u8()?)?;
                let key = IndiciumKey::from_bytes(r.take(32)?).ok_or(Malformed::Value)?;
                Scheme {
                    id,
                    max_failures,
                    recognition: Recognition::Certified {
                        issuer_public_key,
                        key,
                    },
                }
            }
            _ => return Err(Malformed::Value),
        };
        Ok(Some(scheme))
    }
}

impl Device {
    /// A device from personalization data and freshly generated keys: the indicium key
    /// and, with a scheme, the recognition key.
    pub fn new(
        p: &Personalization,
        key: IndiciumKey,
        recognition_key: Option<IndiciumKey>,
    ) -> Self {
        Device {
            id: p.device,
            public_key: key.public_key(),
            key,
            refill_key: RefillKey::Kms(p.kms_public_key),
            vendor_public_key: p.vendor_public_key,
            max_postage: p.max_postage,
            max_dr: p.max_dr,
            inspection_days: p.inspection_days,
            scheme: p
                .scheme
                .as_ref()
                .zip(recognition_key)
                .map(|(s, key)| Scheme {
                    id: s.scheme,
                    max_failures: s.max_failures,
                    recognition: Recognition::Certified {
                        issuer_public_key: s.issuer_public_key,
                        key,
                    },
                }),
            postal_authority: p.postal_authority.clone(),
            #[cfg(feature = "webcrypto")]
            outside_signer: None,
        }
    }

    /// The key identifier of the indicium key.
    pub fn key_id(&self) -> KeyId {
        crypto::key_id(&self.public_key)
    }

    /// The KMS's public key; `9A16` for a PSD of the retired K1 suite.
    pub fn kms_public_key(&self) -> Result<&[u8; PUBLIC_KEY_LEN], Status> {
        match &self.refill_key {
            RefillKey::Kms(k) => Ok(k),
            RefillKey::LegacyK1(_) => Err(Status::LegacyRefillSuite),
        }
    }

    /// Persistent record (holds the secrets; never leaves the card). A legacy record is
    /// written in its own format, unchanged.
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut w = Zeroizing::new(Vec::with_capacity(224));
        match &self.refill_key {
            RefillKey::Kms(k) => {
                #[cfg(feature = "webcrypto")]
                let outside = self.outside_signer.as_ref();
                #[cfg(not(feature = "webcrypto"))]
                let outside: Option<&[u8; PUBLIC_KEY_LEN]> = None;
                #[cfg(feature = "webcrypto")]
                w.put_u8(match outside {
                    Some(_) => OUTSIDE_SIGNER_FORMAT_VERSION,
                    None => FORMAT_VERSION,
                });
                #[cfg(not(feature = "webcrypto"))]
                w.put_u8(FORMAT_VERSION);
                w.extend_from_slice(&self.id.0);
                w.extend_from_slice(self.key.secret_bytes().as_ref());
                w.extend_from_slice(k);
                if let Some(outside) = outside {
                    w.extend_from_slice(outside);
                }
            }
            RefillKey::LegacyK1(k1) => {
                w.put_u8(LEGACY_FORMAT_VERSION);
                w.extend_from_slice(&self.id.0);
                w.extend_from_slice(self.key.secret_bytes().as_ref());
                w.extend_from_slice(k1.expose());
            }
        }
        w.extend_from_slice(&self.vendor_public_key);
        w.put_u64(self.max_postage.0);
        w.put_u64(self.max_dr.0);
        w.put_u16(self.inspection_days);
        if let Some(s) = &self.scheme {
            s.write(&mut w);
        }
        if let Some(pa) = &self.postal_authority {
            pa.write(&mut w);
        }
        w
    }

    /// Restores the device record (either format).
    pub fn decode(bytes: &[u8]) -> Result<Device, Malformed> {
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        let id = DeviceId(r.array()?);
        let key = IndiciumKey::from_bytes(r.take(32)?).ok_or(Malformed::Value)?;
        #[cfg(feature = "webcrypto")]
        let mut outside_signer = None;
        let refill_key = match version {
            FORMAT_VERSION => RefillKey::Kms(r.array()?),
            #[cfg(feature = "webcrypto")]
            OUTSIDE_SIGNER_FORMAT_VERSION => {
                let kms = RefillKey::Kms(r.array()?);
                let outside: [u8; PUBLIC_KEY_LEN] = r.array()?;
                if !crypto::is_valid_public_key(&outside) {
                    return Err(Malformed::Value);
                }
                outside_signer = Some(outside);
                kms
            }
            LEGACY_FORMAT_VERSION => RefillKey::LegacyK1(MacKey::new(r.array()?)),
            _ => return Err(Malformed::Value),
        };
        let vendor_public_key = r.array()?;
        let max_postage = Amount(r.u64()?);
        let max_dr = Amount(r.u64()?);
        let inspection_days = r.u16()?;
        let scheme = Scheme::read_optional(&mut r)?;
        let postal_authority = PostalAuthority::read_optional(&mut r)?;
        r.finish()?;
        Ok(Device {
            id,
            public_key: key.public_key(),
            key,
            refill_key,
            vendor_public_key,
            max_postage,
            max_dr,
            inspection_days,
            scheme,
            postal_authority,
            #[cfg(feature = "webcrypto")]
            outside_signer,
        })
    }
}

/// The device's public data (GET DATA response when personalized).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Serial number.
    pub device: DeviceId,
    /// Identifier of the indicium key.
    pub key_id: KeyId,
    /// Indicium verification key (SEC1 uncompressed).
    pub public_key: [u8; PUBLIC_KEY_LEN],
    /// Vendor public key.
    pub vendor_public_key: [u8; PUBLIC_KEY_LEN],
    /// Per-piece limit.
    pub max_postage: Amount,
    /// DR limit.
    pub max_dr: Amount,
    /// Number of register sets.
    pub register_sets: u8,
    /// Last date of mailing used, if any.
    pub last_date: Option<Date>,
    /// Days an accepted audit keeps the device printing (0: no inspection).
    pub inspection_days: u16,
    /// Date of the last accepted audit (receipt), if any.
    pub last_inspection: Option<Date>,
}

/// Life-cycle byte of GET DATA: blank.
pub const STATE_BLANK: u8 = 0x00;
/// Life-cycle byte of GET DATA: personalized.
pub const STATE_PERSONALIZED: u8 = 0x01;

impl DeviceInfo {
    /// GET DATA layout: state 01 | version | device ID | key ID | public key | vendor key |
    /// max postage | max DR | sets | last date | inspection days | last inspection (dates
    /// 00000000 if none).
    pub fn write(&self, w: &mut Vec<u8>) {
        w.put_u8(STATE_PERSONALIZED);
        w.put_u8(INFO_VERSION);
        w.extend_from_slice(&self.device.0);
        w.extend_from_slice(&self.key_id.0);
        w.extend_from_slice(&self.public_key);
        w.extend_from_slice(&self.vendor_public_key);
        w.put_u64(self.max_postage.0);
        w.put_u64(self.max_dr.0);
        w.put_u8(self.register_sets);
        write_optional_date(w, self.last_date);
        w.put_u16(self.inspection_days);
        write_optional_date(w, self.last_inspection);
    }

    /// Decodes GET DATA; `Ok(None)` for a blank device.
    pub fn decode(bytes: &[u8]) -> Result<Option<DeviceInfo>, Malformed> {
        let mut r = Reader::new(bytes);
        match r.u8()? {
            STATE_BLANK => return r.finish().map(|_| None),
            STATE_PERSONALIZED => {}
            _ => return Err(Malformed::Value),
        }
        if r.u8()? != INFO_VERSION {
            return Err(Malformed::Value);
        }
        let device = DeviceId(r.array()?);
        let key_id = KeyId(r.array()?);
        let public_key = r.array()?;
        let vendor_public_key = r.array()?;
        let max_postage = Amount(r.u64()?);
        let max_dr = Amount(r.u64()?);
        let register_sets = r.u8()?;
        let last_date = read_optional_date(&mut r)?;
        let inspection_days = r.u16()?;
        let last_inspection = read_optional_date(&mut r)?;
        r.finish()?;
        Ok(Some(DeviceInfo {
            device,
            key_id,
            public_key,
            vendor_public_key,
            max_postage,
            max_dr,
            register_sets,
            last_date,
            inspection_days,
            last_inspection,
        }))
    }
}

fn write_optional_date(w: &mut Vec<u8>, d: Option<Date>) {
    match d {
        Some(d) => d.write(w),
        None => w.put_u32(0),
    }
}

fn read_optional_date(r: &mut Reader<'_>) -> Result<Option<Date>, Malformed> {
    if r.remaining().starts_with(&[0, 0, 0, 0]) {
        r.take(4)?;
        Ok(None)
    } else {
        Date::read(r).map(Some)
    }
}

impl super::PsdApplet {
    /// PERSONALIZE (80 10 00 00): creates the device, its key and its register sets in one
    /// commit; answers the key ID and the indicium public key.
    pub(super) fn personalize(
        &mut self,
        ctx: &mut crate::card::Ctx<'_>,
        data: &[u8],
        reply: &mut Vec<u8>,
    ) -> Result<(), Status> {
        let p = Personalization::decode(data)?;
        let device = Self::generate_device(ctx, &p);
        self.commit_personalization(ctx, &p, device, reply)
    }

    /// The device of `p` with freshly generated keys: the device key and, with a scheme,
    /// the recognition key.
    pub(super) fn generate_device(ctx: &mut crate::card::Ctx<'_>, p: &Personalization) -> Device {
        let key = IndiciumKey::generate(ctx.platform);
        let recognition_key = p
            .scheme
            .as_ref()
            .map(|_| IndiciumKey::generate(ctx.platform));
        Device::new(p, key, recognition_key)
    }

    /// Commits `device` and the register sets of `p` in one transaction; answers the key
    /// ID and the device's public key.
    pub(super) fn commit_personalization(
        &mut self,
        ctx: &mut crate::card::Ctx<'_>,
        p: &Personalization,
        device: Device,
        reply: &mut Vec<u8>,
    ) -> Result<(), Status> {
        use super::registers::RegisterSet;
        use super::state::Counters;
        use super::transfer::TransferState;
        use crate::records::psd as rec;

        let mut sets: Vec<Option<RegisterSet>> = p
            .licenses
            .iter()
            .map(|l| Some(RegisterSet::new(l.license, l.origin)))
            .collect();
        sets.resize(MAX_REGISTER_SETS, None);
        let mut txn = crate::store::Transaction::begin(ctx.store);
        txn.write(rec::DEVICE, device.encode().to_vec());
        txn.write(rec::COUNTERS, Counters::default().encode());
        for (i, s) in sets.iter().enumerate() {
            if let Some(s) = s {
                txn.write(rec::set(i), s.encode());
            }
        }
        txn.commit()?;
        reply.extend_from_slice(&device.key_id().0);
        reply.extend_from_slice(&device.public_key);
        let persistent = &mut self.persistent;
        persistent.device = Some(device);
        persistent.sets = sets;
        persistent.counters = Counters::default();
        persistent.transfer = TransferState::default();
        persistent.licenses = super::license::LicenseState::default();
        Ok(())
    }

    /// GET DATA (80 CA 00 01): the device's public data, or the blank state byte.
    pub(super) fn device_info(&self, reply: &mut Vec<u8>) {
        let p = &self.persistent;
        match &p.device {
            None => reply.put_u8(STATE_BLANK),
            Some(d) => DeviceInfo {
                device: d.id,
                key_id: d.key_id(),
                public_key: d.public_key,
                vendor_public_key: d.vendor_public_key,
                max_postage: d.max_postage,
                max_dr: d.max_dr,
                // Slots up to the last one in use: a host reads 0..n and skips free
                // slots (`6A88`); GET DATA 00 04 lists them.
                // why: at most MAX_REGISTER_SETS (4) slots.
                #[allow(clippy::cast_possible_truncation)]
                register_sets: p
                    .sets
                    .iter()
                    .rposition(Option::is_some)
                    .map_or(0, |i| i + 1) as u8,
                last_date: p.counters.last_date,
                inspection_days: d.inspection_days,
                last_inspection: p.counters.last_inspection,
            }
            .write(reply),
        }
    }
}
