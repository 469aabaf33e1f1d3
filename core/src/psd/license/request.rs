//! LICENSE REQUEST (`80 42 P1 00`, seed 003 Fig. 4 steps 60-62): the PSD generates the
//! license key and a nonce, commits them as its pending request, and answers the request
//! signed twice: by the new key (proof of possession) and by the device key (this device
//! asks). The manufacturer checks both before it forwards the request to the postal
//! authority.
//!
//! P1 `00` answers the pending request again, byte for byte (signatures are RFC 6979), or
//! makes one if none is pending; P1 `01` replaces a pending request by a new one (its key
//! is forgotten: a grant for it can no longer be installed).

use alloc::vec::Vec;

use crate::crypto::{self, IndiciumKey, PUBLIC_KEY_LEN, SIGNATURE_LEN};
use crate::types::{DeviceId, LicenseId, PostalCode};
use crate::wire::{Malformed, Reader, Writer};

use super::grant::NONCE_LEN;

/// Layout version of the request.
pub const REQUEST_VERSION: u8 = 1;
/// Label of the license key's proof of possession (over the body).
pub const POP_LABEL: &[u8] = b"openpsd license pop v1";
/// Label of the device key's signature (over body ‖ proof of possession).
pub const REQUEST_LABEL: &[u8] = b"openpsd license request v1";

/// What the host asks for: LICENSE REQUEST's command data, `license (4) ‖ origin`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LicenseAsk {
    /// The license wanted; 0 lets the postal authority assign a number.
    pub license: LicenseId,
    /// The licensing post office's postal code.
    pub origin: PostalCode,
}

impl LicenseAsk {
    /// Command data layout.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(16);
        w.put_u32(self.license.0);
        self.origin.write(&mut w);
        w
    }

    /// Parses command data.
    pub fn decode(bytes: &[u8]) -> Result<LicenseAsk, Malformed> {
        let mut r = Reader::new(bytes);
        let ask = LicenseAsk {
            license: LicenseId(r.u32()?),
            origin: PostalCode::read(&mut r)?,
        };
        r.finish()?;
        Ok(ask)
    }
}

/// The signed part of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestBody {
    /// The device asking.
    pub device: DeviceId,
    /// The device's request counter (never reused: the manufacturer deduplicates by it).
    pub counter: u32,
    /// The license asked for (0: the PA assigns).
    pub license: LicenseId,
    /// The origin asked for.
    pub origin: PostalCode,
    /// The new license key, generated inside the PSD (SEC1 uncompressed).
    pub license_public_key: [u8; PUBLIC_KEY_LEN],
    /// Fresh from the PSD: binds the grant to this request.
    pub nonce: [u8; NONCE_LEN],
}

impl RequestBody {
    /// `version ‖ device ‖ counter ‖ license ‖ origin ‖ license key ‖ nonce`.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(110);
        w.put_u8(REQUEST_VERSION);
        w.extend_from_slice(&self.device.0);
        w.put_u32(self.counter);
        w.put_u32(self.license.0);
        self.origin.write(&mut w);
        w.extend_from_slice(&self.license_public_key);
        w.extend_from_slice(&self.nonce);
        w
    }

    fn read(r: &mut Reader<'_>) -> Result<RequestBody, Malformed> {
        if r.u8()? != REQUEST_VERSION {
            return Err(Malformed::Value);
        }
        Ok(RequestBody {
            device: DeviceId(r.array()?),
            counter: r.u32()?,
            license: LicenseId(r.u32()?),
            origin: PostalCode::read(r)?,
            license_public_key: r.array()?,
            nonce: r.array()?,
        })
    }
}

/// A license request as the PSD answers it: body ‖ proof of possession ‖ device signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LicenseRequest {
    /// The signed fields.
    pub body: RequestBody,
    /// The license key's signature over [`POP_LABEL`] ‖ body.
    pub pop: [u8; SIGNATURE_LEN],
    /// The device key's signature over [`REQUEST_LABEL`] ‖ body ‖ pop.
    pub device_signature: [u8; SIGNATURE_LEN],
}

/// Why a request does not verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestError {
    /// It does not decode.
    Malformed,
    /// The license key is not a point of the curve, or its proof of possession fails.
    ProofOfPossession,
    /// The device's signature fails.
    DeviceSignature,
}

impl core::fmt::Display for RequestError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            RequestError::Malformed => "license request malformed",
            RequestError::ProofOfPossession => "proof of possession of the license key fails",
            RequestError::DeviceSignature => "device signature on the license request fails",
        })
    }
}

impl core::error::Error for RequestError {}

impl LicenseRequest {
    /// Signs `body` with the new key and the device key.
    pub fn sign(body: RequestBody, license_key: &IndiciumKey, device_key: &IndiciumKey) -> Self {
        let bytes = body.encode();
        let pop = license_key.sign_labelled(POP_LABEL, &bytes);
        let mut signed = bytes;
        signed.extend_from_slice(&pop);
        let device_signature = device_key.sign_labelled(REQUEST_LABEL, &signed);
        LicenseRequest {
            body,
            pop,
            device_signature,
        }
    }

    /// The response layout.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = self.body.encode();
        w.extend_from_slice(&self.pop);
        w.extend_from_slice(&self.device_signature);
        w
    }

    /// Parses the response layout.
    pub fn decode(bytes: &[u8]) -> Result<LicenseRequest, Malformed> {
        let mut r = Reader::new(bytes);
        let req = LicenseRequest {
            body: RequestBody::read(&mut r)?,
            pop: r.array()?,
            device_signature: r.array()?,
        };
        r.finish()?;
        Ok(req)
    }

    /// Checks both signatures: the proof of possession under the key it carries, the
    /// device's under `device_public_key` (the manufacturer's registry, or the device's
    /// certificate).
    pub fn verify(&self, device_public_key: &[u8]) -> Result<(), RequestError> {
        let body = self.body.encode();
        if !crypto::verify_labelled(&self.body.license_public_key, POP_LABEL, &body, &self.pop) {
            return Err(RequestError::ProofOfPossession);
        }
        let mut signed = body;
        signed.extend_from_slice(&self.pop);
        if !crypto::verify_labelled(
            device_public_key,
            REQUEST_LABEL,
            &signed,
            &self.device_signature,
        ) {
            return Err(RequestError::DeviceSignature);
        }
        Ok(())
    }

    /// SHA-256 of the encoded request: what the manufacturer's forward names.
    pub fn digest(&self) -> [u8; 32] {
        crypto::sha256(&self.encode())
    }
}

#[cfg(feature = "licenses")]
impl crate::psd::PsdApplet {
    /// LICENSE REQUEST (80 42 P1 00): P1 `00` answers the pending request again (or makes
    /// one); `01` replaces it. The new key and nonce are committed before the answer, so a
    /// grant for them can be installed after any power cut.
    pub(in crate::psd) fn license_request(
        &mut self,
        ctx: &mut crate::card::Ctx<'_>,
        replace: bool,
        data: &[u8],
        reply: &mut Vec<u8>,
    ) -> Result<(), crate::status::Status> {
        use crate::records::psd as rec;
        use crate::status::Status;

        let ask = LicenseAsk::decode(data)?;
        let device = self.persistent.device()?;
        if device.postal_authority.is_none() {
            return Err(Status::NoPostalAuthority);
        }
        let licenses = &self.persistent.licenses;
        if let (Some(p), false) = (&licenses.pending, replace) {
            if p.license != ask.license || p.origin != ask.origin {
                // Another request is pending: P1 01 replaces it.
                return Err(Status::ConditionsNotSatisfied);
            }
            let body = p.body(device.id);
            reply.extend_from_slice(&LicenseRequest::sign(body, &p.key, &device.key).encode());
            return Ok(());
        }
        if ask.license.0 != 0 && self.persistent.holds_license(ask.license) {
            return Err(Status::LicenseExists);
        }
        let counter = licenses
            .request_counter
            .checked_add(1)
            .ok_or(Status::CounterOverflow)?;
        let mut nonce = [0u8; NONCE_LEN];
        ctx.platform.fill_random(&mut nonce);
        let pending = super::PendingRequest {
            counter,
            license: ask.license,
            origin: ask.origin,
            key: IndiciumKey::generate(ctx.platform),
            nonce,
        };
        let mut next = licenses.clone();
        next.request_counter = counter;
        let request = LicenseRequest::sign(pending.body(device.id), &pending.key, &device.key);
        next.pending = Some(pending);
        let mut txn = crate::store::Transaction::begin(ctx.store);
        txn.write(rec::LICENSES, next.encode().to_vec());
        txn.commit()?;
        self.persistent.licenses = next;
        reply.extend_from_slice(&request.encode());
        Ok(())
    }
}

impl super::PendingRequest {
    /// The request body this pending request answers with.
    pub fn body(&self, device: DeviceId) -> RequestBody {
        RequestBody {
            device,
            counter: self.counter,
            license: self.license,
            origin: self.origin,
            license_public_key: self.key.public_key(),
            nonce: self.nonce,
        }
    }
}
