//! VALIDATE POSTMARK (seed 004, Fig. 4): a paid service. The PSD checks a compact postmark
//! (its own or another PSD's) against the signer's certificate, the CA it holds as trust
//! anchor and the document's SHA-256, and answers a receipt signed with its device key.
//!
//! What the card checks, each recorded in the receipt's `checks` bits ([`checks`]):
//! the certificate is signed by the CA anchor's key (Fig. 4 step 408), is a postmark
//! certificate (end entity, critical EKU timeStamping alone), was valid at the postmark's
//! genTime; the postmark's key is the certificate's; its signature verifies under that key
//! over the signed attributes rebuilt from the TSTInfo and the certificate's hash; its
//! message imprint is the document's digest. The verdict is "valid" when all hold.
//!
//! Revocation is NOT checked: the card has no CRL or OCSP. A relying party asks the CA's
//! OCSP responder (`docs/ca.md`) about the certificate the receipt names by hash.
//!
//! Charging: a verdict is the service, so "not valid" is charged like "valid" (seed 004
//! Fig. 4 charges at step 404-408, before the outcome is known). Bytes the card cannot
//! read (no compact postmark, no DER certificate, wrong lengths) are refused (`6A80`,
//! `6700`) with nothing written and nothing charged: there is nothing to validate.
//!
//! Order as ISSUE POSTMARK's: every refusal first, one commit (the debit, the time, the
//! receipt kept as the last service), then the reply; a retry with the same transaction ID
//! and the same postmark, certificate and digest returns the stored receipt, charged once.
//!
//! Command data:
//! `txn 8 | postmark length u16 | compact postmark | certificate length u16 | certificate DER | SHA-256 32`.
//!
//! Reply, the receipt (layout version 1, 221 bytes):
//!
//! ```text
//! tag 56 | version 01 | validator device ID 8 | txn 8 | validation time u64 | set 1 |
//! fee u64 | rate table version u32 | verdict 1 (01 valid, 00 not valid) | checks 1 |
//! SHA-256 of the compact postmark 32 | postmark serial: device ID 8 ‖ counter u32 |
//! genTime u64 | SHA-256 of the certificate 32 | document SHA-256 32
//! ‖ device-key signature r‖s 64 over "openpsd validation receipt v1" ‖ body
//! ```

use alloc::vec::Vec;

use crate::crypto::{self, IndiciumKey, SIGNATURE_LEN};
use crate::types::{Amount, DeviceId, TransactionId};
use crate::wire::{Malformed, OpenError, Reader, Writer};

/// What the device key signs before the receipt's body (its own domain, like the
/// attestation's "openpsd key attestation v1" and the audit's "openpsd audit v4").
pub const VALIDATION_LABEL: &[u8] = b"openpsd validation receipt v1";
/// First byte of a receipt.
pub const RECEIPT_TAG: u8 = 0x56;
/// Receipt layout version.
pub const RECEIPT_VERSION: u8 = 1;
/// Length of a receipt's body.
pub const RECEIPT_BODY_LEN: usize = 2 + 8 + 8 + 8 + 1 + 8 + 4 + 1 + 1 + 32 + 8 + 4 + 8 + 32 + 32;
/// Length of a receipt.
pub const RECEIPT_LEN: usize = RECEIPT_BODY_LEN + SIGNATURE_LEN;

/// The receipt's `checks` bits: each set bit is a check that passed.
pub mod checks {
    /// The certificate is signed by the CA the PSD holds as trust anchor.
    pub const CA_SIGNATURE: u8 = 0x01;
    /// The certificate is a postmark certificate (end entity, EKU timeStamping alone,
    /// critical).
    pub const POSTMARK_CERTIFICATE: u8 = 0x02;
    /// The postmark's genTime lies within the certificate's validity.
    pub const VALID_AT_GEN_TIME: u8 = 0x04;
    /// The postmark's key ID is the certificate's key.
    pub const KEY_MATCHES: u8 = 0x08;
    /// The postmark's signature verifies under the certificate's key.
    pub const SIGNATURE: u8 = 0x10;
    /// The postmark's message imprint is the document's digest.
    pub const DIGEST: u8 = 0x20;
    /// All of them: the verdict "valid". (Revocation is not among them.)
    pub const ALL: u8 = 0x3F;
}

/// What a host asks VALIDATE POSTMARK.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidateRequest {
    /// The host's ID for this request; a retry with the same ID gets the same receipt.
    pub transaction: TransactionId,
    /// The compact postmark (`tst::CompactPostmark` bytes).
    pub postmark: Vec<u8>,
    /// The postmark signer's certificate (DER).
    pub certificate: Vec<u8>,
    /// SHA-256 of the document.
    pub digest: [u8; 32],
}

impl ValidateRequest {
    /// Command data; [`Malformed::Length`] if a part exceeds a u16 length.
    pub fn encode(&self) -> Result<Vec<u8>, Malformed> {
        let mut w = Vec::with_capacity(44 + self.postmark.len() + self.certificate.len());
        w.extend_from_slice(&self.transaction.0);
        w.put_u16(u16::try_from(self.postmark.len()).map_err(|_| Malformed::Length)?);
        w.extend_from_slice(&self.postmark);
        w.put_u16(u16::try_from(self.certificate.len()).map_err(|_| Malformed::Length)?);
        w.extend_from_slice(&self.certificate);
        w.extend_from_slice(&self.digest);
        Ok(w)
    }

    /// Parses command data (the parts are read, not checked: the command does that).
    pub fn decode(bytes: &[u8]) -> Result<ValidateRequest, Malformed> {
        let mut r = Reader::new(bytes);
        let transaction = TransactionId(r.array()?);
        let n = usize::from(r.u16()?);
        let postmark = r.take(n)?.to_vec();
        let n = usize::from(r.u16()?);
        let certificate = r.take(n)?.to_vec();
        let digest = r.array()?;
        r.finish()?;
        Ok(ValidateRequest {
            transaction,
            postmark,
            certificate,
            digest,
        })
    }
}

/// What a receipt states.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidationReceipt {
    /// The PSD that validated (its device key signs the receipt).
    pub validator: DeviceId,
    /// The host's transaction ID.
    pub transaction: TransactionId,
    /// When (Unix seconds, the PSD-bounded host clock).
    pub time: u64,
    /// The register set that paid.
    pub set: u8,
    /// The fee charged.
    pub fee: Amount,
    /// The rate table the fee came from.
    pub table_version: u32,
    /// Whether every check passed.
    pub valid: bool,
    /// The checks that passed ([`checks`]).
    pub checks: u8,
    /// SHA-256 of the compact postmark validated.
    pub postmark_hash: [u8; 32],
    /// The postmark's serial: the PSD that issued it.
    pub postmark_device: DeviceId,
    /// The postmark's serial: its counter.
    pub postmark_counter: u32,
    /// The postmark's genTime.
    pub gen_time: u64,
    /// SHA-256 of the certificate checked.
    pub certificate_hash: [u8; 32],
    /// The document's SHA-256 as given.
    pub digest: [u8; 32],
}

impl ValidationReceipt {
    fn body(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(RECEIPT_LEN);
        w.put_u8(RECEIPT_TAG);
        w.put_u8(RECEIPT_VERSION);
        w.extend_from_slice(&self.validator.0);
        w.extend_from_slice(&self.transaction.0);
        w.put_u64(self.time);
        w.put_u8(self.set);
        w.put_u64(self.fee.0);
        w.put_u32(self.table_version);
        w.put_u8(u8::from(self.valid));
        w.put_u8(self.checks);
        w.extend_from_slice(&self.postmark_hash);
        w.extend_from_slice(&self.postmark_device.0);
        w.put_u32(self.postmark_counter);
        w.put_u64(self.gen_time);
        w.extend_from_slice(&self.certificate_hash);
        w.extend_from_slice(&self.digest);
        w
    }

    /// The receipt (the card's side), signed with the device key.
    pub fn sign(&self, device_key: &IndiciumKey) -> Vec<u8> {
        let mut msg = self.body();
        let sig = device_key.sign_labelled(VALIDATION_LABEL, &msg);
        msg.extend_from_slice(&sig);
        msg
    }

    /// Decodes without checking the signature. The verdict must agree with the checks.
    pub fn decode_unverified(msg: &[u8]) -> Result<ValidationReceipt, Malformed> {
        if msg.len() != RECEIPT_LEN {
            return Err(Malformed::Length);
        }
        let mut r = Reader::new(&msg[..RECEIPT_BODY_LEN]);
        if r.u8()? != RECEIPT_TAG || r.u8()? != RECEIPT_VERSION {
            return Err(Malformed::Value);
        }
        let receipt = ValidationReceipt {
            validator: DeviceId(r.array()?),
            transaction: TransactionId(r.array()?),
            time: r.u64()?,
            set: r.u8()?,
            fee: Amount(r.u64()?),
            table_version: r.u32()?,
            valid: match r.u8()? {
                0 => false,
                1 => true,
                _ => return Err(Malformed::Value),
            },
            checks: r.u8()?,
            postmark_hash: r.array()?,
            postmark_device: DeviceId(r.array()?),
            postmark_counter: r.u32()?,
            gen_time: r.u64()?,
            certificate_hash: r.array()?,
            digest: r.array()?,
        };
        r.finish()?;
        if receipt.checks & !checks::ALL != 0 || receipt.valid != (receipt.checks == checks::ALL) {
            return Err(Malformed::Value);
        }
        Ok(receipt)
    }

    /// Decodes and checks the device signature with the validating PSD's key (the one the
    /// KMS registered for it).
    pub fn open(msg: &[u8], device_public_key: &[u8]) -> Result<ValidationReceipt, OpenError> {
        let r = Self::decode_unverified(msg)?;
        let (body, sig) = msg.split_at(RECEIPT_BODY_LEN);
        if !crypto::verify_labelled(device_public_key, VALIDATION_LABEL, body, sig) {
            return Err(OpenError::Unauthentic);
        }
        Ok(r)
    }
}

/// The command (with the `certmeter` feature).
#[cfg(feature = "certmeter")]
mod command {
    use alloc::vec::Vec;

    use super::{checks, ValidateRequest, ValidationReceipt};
    use crate::card::Ctx;
    use crate::crypto::{self, sha256};
    use crate::psd::certmeter::anchor::AnchorKind;
    use crate::psd::certmeter::certificate;
    use crate::psd::certmeter::rates::Service;
    use crate::psd::certmeter::state::LastService;
    use crate::psd::certmeter::tst::{self, CompactPostmark};
    use crate::status::Status;

    impl crate::psd::PsdApplet {
        /// VALIDATE POSTMARK (80 7E 00 set).
        pub(in crate::psd) fn validate_postmark(
            &mut self,
            ctx: &mut Ctx<'_>,
            i: usize,
            data: &[u8],
            reply: &mut Vec<u8>,
        ) -> Result<(), Status> {
            let req = ValidateRequest::decode(data)?;
            // Bad bytes are refused before anything else: nothing to validate, no fee.
            let postmark = CompactPostmark::decode(&req.postmark)?;
            let fields = tst::decode_tst_info(&postmark.tst_info)?;
            let device = self.device()?;
            let p = &self.persistent;
            let cm = &p.certmeter;
            let set_byte = u8::try_from(i).map_err(|_| Status::Internal)?;
            let postmark_hash = sha256(&req.postmark);
            let certificate_hash = sha256(&req.certificate);

            // A retry of the last validation: the same receipt, charged once.
            if let Some(last) = cm.retry(&req.transaction, Service::Validation, set_byte)? {
                let stored = ValidationReceipt::decode_unverified(&last.output)
                    .map_err(|_| Status::Internal)?;
                if stored.postmark_hash != postmark_hash
                    || stored.certificate_hash != certificate_hash
                    || stored.digest != req.digest
                {
                    return Err(Status::TransactionIdReused);
                }
                reply.extend_from_slice(&last.output);
                return Ok(());
            }

            // Without a CA to trust there is no validation to sell.
            let ca = cm
                .anchor(AnchorKind::CertificateCa)
                .ok_or(Status::ConditionsNotSatisfied)?;
            let cert = certificate::examine(&req.certificate, &ca.public_key)?;
            let (now, date) = self.service_time(ctx)?;
            let (fee, table_version) = cm.fee(Service::Validation, date)?;
            let next_set = p.set(i)?.charge(fee)?;

            let mut passed = 0u8;
            let mut pass = |bit: u8, ok: bool| {
                if ok {
                    passed |= bit;
                }
            };
            pass(checks::CA_SIGNATURE, cert.ca_signed);
            pass(checks::POSTMARK_CERTIFICATE, cert.postmark);
            pass(
                checks::VALID_AT_GEN_TIME,
                cert.valid.0 <= fields.gen_time && fields.gen_time <= cert.valid.1,
            );
            let key = cert
                .public_key
                .filter(|k| crypto::key_id(k) == postmark.key_id);
            pass(checks::KEY_MATCHES, key.is_some());
            pass(
                checks::SIGNATURE,
                key.is_some_and(|k| {
                    let attrs = tst::signed_attrs_der(&postmark.tst_info, &certificate_hash);
                    crypto::verify_signature(&k, &attrs, &postmark.signature)
                }),
            );
            pass(checks::DIGEST, fields.digest == req.digest);

            let output = ValidationReceipt {
                validator: device.id,
                transaction: req.transaction,
                time: now,
                set: set_byte,
                fee,
                table_version,
                valid: passed == checks::ALL,
                checks: passed,
                postmark_hash,
                postmark_device: fields.device,
                postmark_counter: fields.counter,
                gen_time: fields.gen_time,
                certificate_hash,
                digest: req.digest,
            }
            .sign(&device.key);
            let mut next = cm.clone();
            next.last_time = now;
            next.last = Some(LastService {
                transaction: req.transaction,
                service: Service::Validation,
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

    fn receipt(valid: bool) -> ValidationReceipt {
        ValidationReceipt {
            validator: DeviceId([1; 8]),
            transaction: TransactionId([2; 8]),
            time: 1_796_035_800,
            set: 0,
            fee: Amount(25),
            table_version: 3,
            valid,
            checks: if valid {
                checks::ALL
            } else {
                checks::ALL & !checks::DIGEST
            },
            postmark_hash: [3; 32],
            postmark_device: DeviceId([4; 8]),
            postmark_counter: 7,
            gen_time: 1_796_000_000,
            certificate_hash: [5; 32],
            digest: [6; 32],
        }
    }

    #[test]
    fn receipts_are_signed_and_strict() {
        let device = IndiciumKey::from_bytes(&[3; 32]).unwrap();
        for valid in [true, false] {
            let r = receipt(valid);
            let msg = r.sign(&device);
            assert_eq!(msg.len(), RECEIPT_LEN);
            assert_eq!(ValidationReceipt::open(&msg, &device.public_key()), Ok(r));
            let other = IndiciumKey::from_bytes(&[4; 32]).unwrap();
            assert_eq!(
                ValidationReceipt::open(&msg, &other.public_key()),
                Err(OpenError::Unauthentic)
            );
            for n in 0..msg.len() {
                let mut m = msg.clone();
                m[n] ^= 1;
                assert!(ValidationReceipt::open(&m, &device.public_key()).is_err());
                assert!(ValidationReceipt::open(&msg[..n], &device.public_key()).is_err());
            }
        }
        // A verdict that contradicts its checks does not decode.
        let mut bad = receipt(false);
        bad.valid = true;
        assert!(ValidationReceipt::decode_unverified(&bad.sign(&device)).is_err());
    }

    #[test]
    fn requests_round_trip_and_garbage_is_an_error() {
        let req = ValidateRequest {
            transaction: TransactionId([9; 8]),
            postmark: alloc::vec![1, 2, 3],
            certificate: alloc::vec![4; 300],
            digest: [7; 32],
        };
        let b = req.encode().unwrap();
        assert_eq!(ValidateRequest::decode(&b), Ok(req));
        for n in 0..b.len() {
            assert!(ValidateRequest::decode(&b[..n]).is_err());
        }
    }
}
