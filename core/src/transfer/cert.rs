//! Device certificates and the issuer's revocation list: what lets a PSD and a purse
//! recognise each other with no shared secret (issue 12).
//!
//! Every PSD and purse of a scheme generates its own P-256 *recognition key* inside; the
//! scheme's issuer signs a [`DeviceCertificate`] on its public half at personalization.
//! Devices hold only the issuer's public key, so a device whose memory is read out gives
//! away its own key and nothing that opens another device.
//!
//! The layout is fixed and compact (123 bytes), not X.509: the card checks it with one
//! signature verification and byte compares, no ASN.1 parser (the largest attack surface a
//! card could carry), and a certificate plus an ephemeral key plus the hello still fit one
//! short APDU (255 bytes). Nothing outside the scheme needs to read these certificates.

use alloc::vec::Vec;

use crate::crypto::{self, IndiciumKey, COMPRESSED_KEY_LEN, SIGNATURE_LEN};
use crate::types::{Date, SchemeId};
use crate::wire::{Malformed, Reader, Writer};

/// Layout version of [`DeviceCertificate`].
pub const CERTIFICATE_VERSION: u8 = 1;
/// Encoded length of a [`DeviceCertificate`].
pub const CERTIFICATE_LEN: usize = 1 + 1 + 4 + 8 + 4 + 4 + 4 + COMPRESSED_KEY_LEN + SIGNATURE_LEN;
/// Most serials one [`RevocationList`] names (it must fit a short APDU and a record).
pub const MAX_REVOKED: usize = 32;

const CERTIFICATE_LABEL: &[u8] = b"openpsd device certificate v1";
const REVOCATION_LABEL: &[u8] = b"openpsd revocation list v1";

/// What kind of device a certificate is for: a PSD never accepts a PSD as its partner,
/// nor a purse a purse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    /// A postal security device (sends value).
    Psd,
    /// A purse card (receives value).
    Purse,
}

impl DeviceKind {
    fn byte(self) -> u8 {
        match self {
            DeviceKind::Psd => 0x01,
            DeviceKind::Purse => 0x02,
        }
    }

    fn from_byte(b: u8) -> Result<DeviceKind, Malformed> {
        match b {
            0x01 => Ok(DeviceKind::Psd),
            0x02 => Ok(DeviceKind::Purse),
            _ => Err(Malformed::Value),
        }
    }
}

/// The issuer's statement "this recognition key belongs to this device of this scheme".
///
/// Layout (123 bytes): version `01` ‖ kind (`01` PSD, `02` purse) ‖ scheme (4) ‖ device or
/// card ID (8) ‖ serial (4) ‖ not before (date, 4) ‖ not after (date, 4) ‖ public key (SEC1
/// compressed, 33) ‖ ECDSA P-256 signature r ‖ s (64) over `"openpsd device certificate
/// v1"` ‖ everything before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceCertificate {
    /// PSD or purse.
    pub kind: DeviceKind,
    /// The scheme it may transfer in.
    pub scheme: SchemeId,
    /// The device ID (PSD) or card ID (purse).
    pub device: [u8; 8],
    /// The issuer's serial number for this certificate (what revocation names).
    pub serial: u32,
    /// First day of validity.
    pub not_before: Date,
    /// Last day of validity.
    pub not_after: Date,
    /// The device's recognition key.
    pub public_key: [u8; COMPRESSED_KEY_LEN],
    /// The issuer's signature.
    pub signature: [u8; SIGNATURE_LEN],
}

/// Why a partner's certificate is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertificateError {
    /// Not signed by this scheme's issuer.
    BadSignature,
    /// For another kind of device, another scheme or another device than the hello says.
    WrongSubject,
    /// Outside its validity on the checking device's date.
    Expired,
    /// Its serial is on the issuer's revocation list the checking device holds.
    Revoked,
}

impl DeviceCertificate {
    fn body(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(CERTIFICATE_LEN);
        w.put_u8(CERTIFICATE_VERSION);
        w.put_u8(self.kind.byte());
        w.put_u32(self.scheme.0);
        w.extend_from_slice(&self.device);
        w.put_u32(self.serial);
        self.not_before.write(&mut w);
        self.not_after.write(&mut w);
        w.extend_from_slice(&self.public_key);
        w
    }

    /// Signs a certificate (the issuer's side: card-sim's scheme file, the demo room).
    #[allow(clippy::too_many_arguments)]
    pub fn issue(
        issuer: &IndiciumKey,
        kind: DeviceKind,
        scheme: SchemeId,
        device: [u8; 8],
        serial: u32,
        not_before: Date,
        not_after: Date,
        public_key: [u8; COMPRESSED_KEY_LEN],
    ) -> DeviceCertificate {
        let mut c = DeviceCertificate {
            kind,
            scheme,
            device,
            serial,
            not_before,
            not_after,
            public_key,
            signature: [0; SIGNATURE_LEN],
        };
        c.signature = issuer.sign(&[CERTIFICATE_LABEL, &c.body()].concat());
        c
    }

    /// The layout above.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = self.body();
        w.extend_from_slice(&self.signature);
        w
    }

    /// Parses the layout (the signature is checked by [`DeviceCertificate::check`]).
    pub fn decode(bytes: &[u8]) -> Result<DeviceCertificate, Malformed> {
        let mut r = Reader::new(bytes);
        let c = Self::read(&mut r)?;
        r.finish()?;
        Ok(c)
    }

    /// Reads one certificate from a longer message.
    pub fn read(r: &mut Reader<'_>) -> Result<DeviceCertificate, Malformed> {
        if r.u8()? != CERTIFICATE_VERSION {
            return Err(Malformed::Value);
        }
        Ok(DeviceCertificate {
            kind: DeviceKind::from_byte(r.u8()?)?,
            scheme: SchemeId(r.u32()?),
            device: r.array()?,
            serial: r.u32()?,
            not_before: Date::read(r)?,
            not_after: Date::read(r)?,
            public_key: r.array()?,
            signature: r.array()?,
        })
    }

    /// Whether the issuer signed exactly these bytes.
    pub fn signed_by(&self, issuer_public_key: &[u8]) -> bool {
        crypto::verify_signature(
            issuer_public_key,
            &[CERTIFICATE_LABEL, &self.body()].concat(),
            &self.signature,
        )
    }

    /// The checks a device makes on its partner's certificate: the issuer's signature, the
    /// subject (kind, scheme, the ID the hello claims), the validity on `today` (skipped on
    /// a device without a clock, see docs/purse.md) and the revocation list.
    pub fn check(
        &self,
        issuer_public_key: &[u8],
        expect: (DeviceKind, SchemeId, [u8; 8]),
        today: Option<Date>,
        revoked: Option<&RevocationList>,
    ) -> Result<(), CertificateError> {
        self.check_unsigned(expect, today, revoked)?;
        if !self.signed_by(issuer_public_key) {
            return Err(CertificateError::BadSignature);
        }
        Ok(())
    }

    /// [`DeviceCertificate::check`] but the signature: what can change from one
    /// recognition to the next (the date, the revocation list, the hello's claim).
    pub fn check_unsigned(
        &self,
        expect: (DeviceKind, SchemeId, [u8; 8]),
        today: Option<Date>,
        revoked: Option<&RevocationList>,
    ) -> Result<(), CertificateError> {
        let (kind, scheme, device) = expect;
        if self.kind != kind || self.scheme != scheme || self.device != device {
            return Err(CertificateError::WrongSubject);
        }
        if let Some(d) = today {
            if d < self.not_before || d > self.not_after {
                return Err(CertificateError::Expired);
            }
        }
        if revoked.is_some_and(|l| l.revokes(self.serial)) {
            return Err(CertificateError::Revoked);
        }
        Ok(())
    }
}

/// The issuer's signed list of revoked certificate serials. A device keeps the newest it
/// was given (LOAD REVOCATION); a list is accepted only with the issuer's signature, for
/// the device's scheme, and with a higher version than the one held, so an old list cannot
/// bring a revoked device back.
///
/// Layout: version `01` ‖ scheme (4) ‖ list version (4) ‖ count (1, at most
/// [`MAX_REVOKED`]) ‖ serials (4 each) ‖ signature (64) over `"openpsd revocation list v1"`
/// ‖ everything before it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevocationList {
    /// The scheme.
    pub scheme: SchemeId,
    /// Increases with every list the issuer publishes.
    pub version: u32,
    /// Revoked certificate serials.
    pub serials: Vec<u32>,
    /// The issuer's signature.
    pub signature: [u8; SIGNATURE_LEN],
}

impl RevocationList {
    fn body(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(10 + 4 * self.serials.len());
        w.put_u8(1);
        w.put_u32(self.scheme.0);
        w.put_u32(self.version);
        // `issue` and `decode` keep the count at most MAX_REVOKED (32).
        w.put_u8(u8::try_from(self.serials.len()).unwrap_or(u8::MAX));
        for s in &self.serials {
            w.put_u32(*s);
        }
        w
    }

    /// Signs a list (the issuer's side). `None` if it names more than [`MAX_REVOKED`].
    pub fn issue(
        issuer: &IndiciumKey,
        scheme: SchemeId,
        version: u32,
        serials: Vec<u32>,
    ) -> Option<RevocationList> {
        if serials.len() > MAX_REVOKED {
            return None;
        }
        let mut l = RevocationList {
            scheme,
            version,
            serials,
            signature: [0; SIGNATURE_LEN],
        };
        l.signature = issuer.sign(&[REVOCATION_LABEL, &l.body()].concat());
        Some(l)
    }

    /// The layout above.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = self.body();
        w.extend_from_slice(&self.signature);
        w
    }

    /// Parses the layout (the signature is checked by [`RevocationList::signed_by`]).
    pub fn decode(bytes: &[u8]) -> Result<RevocationList, Malformed> {
        let mut r = Reader::new(bytes);
        if r.u8()? != 1 {
            return Err(Malformed::Value);
        }
        let scheme = SchemeId(r.u32()?);
        let version = r.u32()?;
        let n = usize::from(r.u8()?);
        if n > MAX_REVOKED {
            return Err(Malformed::Value);
        }
        let mut serials = Vec::with_capacity(n);
        for _ in 0..n {
            serials.push(r.u32()?);
        }
        let signature = r.array()?;
        r.finish()?;
        Ok(RevocationList {
            scheme,
            version,
            serials,
            signature,
        })
    }

    /// Whether the issuer signed exactly these bytes.
    pub fn signed_by(&self, issuer_public_key: &[u8]) -> bool {
        crypto::verify_signature(
            issuer_public_key,
            &[REVOCATION_LABEL, &self.body()].concat(),
            &self.signature,
        )
    }

    /// Whether `serial` is revoked.
    pub fn revokes(&self, serial: u32) -> bool {
        self.serials.contains(&serial)
    }
}

/// What a device of the certificate scheme keeps besides its key: its own certificate,
/// once the issuer installed it, and the newest revocation list it was given. One record
/// (PSD `0x0103`, purse `0x0206`), written only by INSTALL CERTIFICATE and LOAD
/// REVOCATION, so transfers never rewrite it.
///
/// Layout: `01` ‖ `00` | `01` certificate ‖ `00` | `01` revocation list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Credentials {
    /// The device's own certificate.
    pub certificate: Option<DeviceCertificate>,
    /// The newest revocation list accepted.
    pub revocation: Option<RevocationList>,
}

impl Credentials {
    /// The record layout.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(3 + CERTIFICATE_LEN + 200);
        w.put_u8(1);
        match &self.certificate {
            None => w.put_u8(0),
            Some(c) => {
                w.put_u8(1);
                w.extend_from_slice(&c.encode());
            }
        }
        match &self.revocation {
            None => w.put_u8(0),
            Some(l) => {
                w.put_u8(1);
                w.extend_from_slice(&l.encode());
            }
        }
        w
    }

    /// Parses the record.
    pub fn decode(bytes: &[u8]) -> Result<Credentials, Malformed> {
        let mut r = Reader::new(bytes);
        if r.u8()? != 1 {
            return Err(Malformed::Value);
        }
        let certificate = match r.u8()? {
            0 => None,
            1 => Some(DeviceCertificate::read(&mut r)?),
            _ => return Err(Malformed::Value),
        };
        let revocation = match r.u8()? {
            0 => None,
            1 => Some(RevocationList::decode(r.remaining())?),
            _ => return Err(Malformed::Value),
        };
        if revocation.is_none() {
            r.finish()?;
        }
        Ok(Credentials {
            certificate,
            revocation,
        })
    }

    /// INSTALL CERTIFICATE's check: the issuer's signature on this device's own kind,
    /// scheme, ID and recognition key. Returns the credentials to commit.
    pub fn with_certificate(
        &self,
        data: &[u8],
        issuer_public_key: &[u8],
        own: (DeviceKind, SchemeId, [u8; 8]),
        own_key: [u8; COMPRESSED_KEY_LEN],
    ) -> Result<Credentials, crate::status::Status> {
        use crate::status::Status;
        let cert = DeviceCertificate::decode(data).map_err(|_| Status::WrongData)?;
        let (kind, scheme, device) = own;
        if cert.kind != kind
            || cert.scheme != scheme
            || cert.device != device
            || cert.public_key != own_key
        {
            return Err(Status::WrongData);
        }
        if !cert.signed_by(issuer_public_key) {
            return Err(Status::SecurityStatusNotSatisfied);
        }
        Ok(Credentials {
            certificate: Some(cert),
            revocation: self.revocation.clone(),
        })
    }

    /// LOAD REVOCATION's check: the issuer's signature, this scheme, a newer version than
    /// the list held (the same list again is accepted and changes nothing, so a host may
    /// push the newest list at every contact). `Ok(None)`: nothing to write.
    pub fn with_revocation(
        &self,
        data: &[u8],
        issuer_public_key: &[u8],
        scheme: SchemeId,
    ) -> Result<Option<Credentials>, crate::status::Status> {
        use crate::status::Status;
        let list = RevocationList::decode(data).map_err(|_| Status::WrongData)?;
        if list.scheme != scheme {
            return Err(Status::WrongData);
        }
        if !list.signed_by(issuer_public_key) {
            return Err(Status::SecurityStatusNotSatisfied);
        }
        match &self.revocation {
            Some(held) if *held == list => return Ok(None),
            Some(held) if held.version >= list.version => {
                return Err(Status::ConditionsNotSatisfied)
            }
            _ => {}
        }
        Ok(Some(Credentials {
            certificate: self.certificate,
            revocation: Some(list),
        }))
    }
}

/// GET DATA's recognition object (PSD `00 03`, purse `00 04`): what the issuer needs to
/// certify the device and what a host shows.
///
/// Layout: recognition key (SEC1 compressed, 33) ‖ `00` | `01` certificate ‖ revocation
/// list version (4; `00000000` when none is held).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecognitionInfo {
    /// The device's recognition public key.
    pub public_key: [u8; COMPRESSED_KEY_LEN],
    /// Its certificate, once installed.
    pub certificate: Option<DeviceCertificate>,
    /// The version of the revocation list held (0: none).
    pub revocation_version: u32,
}

impl RecognitionInfo {
    /// From a device's key and credentials.
    pub fn new(key: &IndiciumKey, c: &Credentials) -> RecognitionInfo {
        RecognitionInfo {
            public_key: key.public_key_compressed(),
            certificate: c.certificate,
            revocation_version: c.revocation.as_ref().map_or(0, |l| l.version),
        }
    }

    /// The layout above.
    pub fn write(&self, w: &mut Vec<u8>) {
        w.extend_from_slice(&self.public_key);
        match &self.certificate {
            None => w.put_u8(0),
            Some(c) => {
                w.put_u8(1);
                w.extend_from_slice(&c.encode());
            }
        }
        w.put_u32(self.revocation_version);
    }

    /// Parses the layout.
    pub fn decode(bytes: &[u8]) -> Result<RecognitionInfo, Malformed> {
        let mut r = Reader::new(bytes);
        let public_key = r.array()?;
        let certificate = match r.u8()? {
            0 => None,
            1 => Some(DeviceCertificate::read(&mut r)?),
            _ => return Err(Malformed::Value),
        };
        let revocation_version = r.u32()?;
        r.finish()?;
        Ok(RecognitionInfo {
            public_key,
            certificate,
            revocation_version,
        })
    }
}
