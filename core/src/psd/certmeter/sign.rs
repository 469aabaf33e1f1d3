//! SIGN (seed 004: "security services ... message non-repudiation" for a fee): a document's
//! SHA-256 signed inside the PSD with its active key of purpose Sign, as the one signer of
//! a detached CMS SignedData (RFC 5652) that stock `openssl cms -verify` accepts once the
//! host has wrapped it (`openpsd-pki`, `sign` module).
//!
//! The card signs the CMS signed attributes, built by hand with the postmark's writer
//! ([`super::tst::cms_signed_attrs_der`]): contentType id-data, signingTime (the host's
//! clock under the postmark's rules: never back, never before the last back-office
//! contact, never after the inspection window), messageDigest (the host's SHA-256 of the
//! content) and signingCertificateV2 naming the sign certificate's hash. The host gives
//! nothing else: the time is the card's to bound and the certificate is the card's own,
//! so a signature never states anything the card did not check.
//!
//! The postmark key never signs here and the sign key never signs a postmark: each command
//! takes the active key of its own purpose (seed 004, claims 19-21).
//!
//! Fee and order as ISSUE POSTMARK's: every check first, one commit (the debit, the time,
//! the compact signature kept as the last service), then the reply; a retry with the same
//! transaction ID returns the stored bytes, charged once.
//!
//! Command data: `txn 8 | SHA-256 32`. Reply: the compact signature,
//! `53 | 01 | key ID 4 | signing time u64 | SHA-256 32 | r‖s 64` (110 bytes).

use alloc::vec::Vec;

use crate::crypto::SIGNATURE_LEN;
use crate::types::{KeyId, TransactionId};
use crate::wire::{Malformed, Reader, Writer};

use super::tst::{self, MAX_GEN_TIME, MIN_GEN_TIME};

/// First byte of a compact signature.
pub const SIGNATURE_TAG: u8 = 0x53;
/// Layout version of the compact signature.
pub const SIGNATURE_VERSION: u8 = 1;
/// Length of a compact signature.
pub const COMPACT_SIGNATURE_LEN: usize = 2 + 4 + 8 + 32 + SIGNATURE_LEN;
/// Length of SIGN's command data.
pub const SIGN_REQUEST_LEN: usize = 8 + 32;

/// What a host asks SIGN for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignRequest {
    /// The host's ID for this request; a retry with the same ID gets the same signature.
    pub transaction: TransactionId,
    /// SHA-256 of the content.
    pub digest: [u8; 32],
}

impl SignRequest {
    /// Command data.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(SIGN_REQUEST_LEN);
        w.extend_from_slice(&self.transaction.0);
        w.extend_from_slice(&self.digest);
        w
    }

    /// Parses command data (exactly 40 bytes).
    pub fn decode(bytes: &[u8]) -> Result<SignRequest, Malformed> {
        let mut r = Reader::new(bytes);
        let req = SignRequest {
            transaction: TransactionId(r.array()?),
            digest: r.array()?,
        };
        r.finish()?;
        Ok(req)
    }
}

/// SIGN's reply: everything the host needs, with the sign certificate, to rebuild the
/// exact signed attributes and wrap them in a CMS SignedData.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompactSignature {
    /// `crypto::key_id` of the sign key that signed.
    pub key_id: KeyId,
    /// signingTime, Unix seconds UTC.
    pub signing_time: u64,
    /// SHA-256 of the content (the messageDigest attribute).
    pub digest: [u8; 32],
    /// ECDSA P-256 r‖s over [`CompactSignature::signed_attrs`].
    pub signature: [u8; SIGNATURE_LEN],
}

impl CompactSignature {
    /// The signed attributes (DER, SET OF tag `0x31`) under the certificate whose DER
    /// hashes to `cert_der_hash`: what the card signed.
    pub fn signed_attrs(&self, cert_der_hash: &[u8; 32]) -> Vec<u8> {
        signed_attrs_der(&self.digest, self.signing_time, cert_der_hash)
    }

    /// The compact bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(COMPACT_SIGNATURE_LEN);
        w.put_u8(SIGNATURE_TAG);
        w.put_u8(SIGNATURE_VERSION);
        w.extend_from_slice(&self.key_id.0);
        w.put_u64(self.signing_time);
        w.extend_from_slice(&self.digest);
        w.extend_from_slice(&self.signature);
        w
    }

    /// Reads compact bytes: exact length, tag and version, a signing time the attributes
    /// can hold (2000..=9999). The signature is not checked (it needs the certificate).
    pub fn decode(bytes: &[u8]) -> Result<CompactSignature, Malformed> {
        let mut r = Reader::new(bytes);
        if r.u8()? != SIGNATURE_TAG || r.u8()? != SIGNATURE_VERSION {
            return Err(Malformed::Value);
        }
        let c = CompactSignature {
            key_id: KeyId(r.array()?),
            signing_time: r.u64()?,
            digest: r.array()?,
            signature: r.array()?,
        };
        r.finish()?;
        if !(MIN_GEN_TIME..=MAX_GEN_TIME).contains(&c.signing_time) {
            return Err(Malformed::Value);
        }
        Ok(c)
    }
}

/// The signed attributes of a document signature: contentType id-data, signingTime,
/// messageDigest `digest`, signingCertificateV2 naming `cert_der_hash`.
pub fn signed_attrs_der(digest: &[u8; 32], signing_time: u64, cert_der_hash: &[u8; 32]) -> Vec<u8> {
    tst::cms_signed_attrs_der(tst::ID_DATA, digest, Some(signing_time), cert_der_hash)
}

/// The command (with the `certmeter` feature).
#[cfg(feature = "certmeter")]
mod command {
    use alloc::vec::Vec;

    use super::{CompactSignature, SignRequest};
    use crate::card::Ctx;
    use crate::psd::certmeter::attestation::Purpose;
    use crate::psd::certmeter::rates::Service;
    use crate::psd::certmeter::state::LastService;
    use crate::psd::certmeter::tst::{MAX_GEN_TIME, MIN_GEN_TIME};
    use crate::status::Status;

    impl crate::psd::PsdApplet {
        /// SIGN (80 78 00 set).
        pub(in crate::psd) fn sign(
            &mut self,
            ctx: &mut Ctx<'_>,
            i: usize,
            data: &[u8],
            reply: &mut Vec<u8>,
        ) -> Result<(), Status> {
            let req = SignRequest::decode(data)?;
            self.device()?;
            let p = &self.persistent;
            let cm = &p.certmeter;
            let set_byte = u8::try_from(i).map_err(|_| Status::Internal)?;

            // A retry of the last signature: the same bytes, charged once.
            if let Some(last) = cm.retry(&req.transaction, Service::Signature, set_byte)? {
                let stored =
                    CompactSignature::decode(&last.output).map_err(|_| Status::Internal)?;
                if stored.digest != req.digest {
                    return Err(Status::TransactionIdReused);
                }
                reply.extend_from_slice(&last.output);
                return Ok(());
            }

            // The sign key, never the postmark key.
            cm.active(Purpose::Sign)?;
            let (now, date) = self.service_time(ctx)?;
            if !(MIN_GEN_TIME..=MAX_GEN_TIME).contains(&now) {
                return Err(Status::ClockRefused);
            }
            // Outside its certificate's validity a signature would not verify: not sold.
            let (_, slot) = cm.active(Purpose::Sign)?;
            if !slot.covers(now) {
                return Err(Status::CertificateMismatch);
            }
            let (fee, _) = cm.fee(Service::Signature, date)?;
            let next_set = p.set(i)?.charge(fee)?;
            let key = slot.key.as_ref().ok_or(Status::KeyRevoked)?;
            let mut compact = CompactSignature {
                key_id: key.key_id(),
                signing_time: now,
                digest: req.digest,
                signature: [0; crate::crypto::SIGNATURE_LEN],
            };
            // Signed before the commit, which keeps it (a retry is the same bytes whatever
            // key is active then); nothing leaves before the commit.
            compact.signature = key.sign(&compact.signed_attrs(&slot.certificate_hash()));
            let output = compact.encode();
            let mut next = cm.clone();
            next.last_time = now;
            next.last = Some(LastService {
                transaction: req.transaction,
                service: Service::Signature,
                set: set_byte,
                output: output.clone(),
            });

            self.commit_service(ctx, i, next_set, next, false)?;
            reply.extend_from_slice(&output);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_signature_round_trips_and_is_strict() {
        let c = CompactSignature {
            key_id: KeyId([1, 2, 3, 4]),
            signing_time: 1_796_035_800,
            digest: [0xAB; 32],
            signature: [0x5A; 64],
        };
        let b = c.encode();
        assert_eq!(b.len(), COMPACT_SIGNATURE_LEN);
        assert_eq!(CompactSignature::decode(&b), Ok(c.clone()));
        for n in 0..b.len() {
            assert!(CompactSignature::decode(&b[..n]).is_err());
        }
        let mut longer = b.clone();
        longer.push(0);
        assert!(CompactSignature::decode(&longer).is_err());
        let mut t = b.clone();
        t[0] = 0x50;
        assert!(CompactSignature::decode(&t).is_err());
        let early = CompactSignature {
            signing_time: MIN_GEN_TIME - 1,
            ..c.clone()
        };
        assert!(CompactSignature::decode(&early.encode()).is_err());
        assert!(SignRequest::decode(&[0; 39]).is_err());
        assert!(SignRequest::decode(&[0; 41]).is_err());
    }

    fn hex(b: &[u8]) -> alloc::string::String {
        b.iter().map(|x| alloc::format!("{x:02x}")).collect()
    }

    #[test]
    fn signed_attributes_hold_utc_time_before_2050_and_generalized_after() {
        // 2026-11-30T10:50:00Z
        let attrs = signed_attrs_der(&[0xAB; 32], 1_796_035_800, &[0xCC; 32]);
        let h = hex(&attrs);
        assert!(h.contains("06092a864886f70d0109033"), "contentType");
        assert!(
            h.contains("060b2a864886f70d010910022f"),
            "signingCertificateV2"
        );
        assert!(
            h.contains("301c06092a864886f70d010905310f170d3236313133303130353030305a"),
            "signingTime as UTCTime: {h}"
        );
        assert!(h.contains("0609 2a864886f70d010701".replace(' ', "").as_str()));
        // 2050-01-01T00:00:00Z
        let h = hex(&signed_attrs_der(&[0; 32], 2_524_608_000, &[0; 32]));
        assert!(
            h.contains("301e06092a864886f70d0109053111180f32303530303130313030303030305a"),
            "{h}"
        );
    }
}
