//! ISSUE POSTMARK (seed 004, Fig. 3): a document's SHA-256, the time and a serial number
//! signed inside the PSD with its postmark key, for the fee of the rate table in effect.
//!
//! The order is the certificate meter's for every paid service: every check (the key, the
//! clock, the inspection window, the fee, the funds) before anything is written; one commit
//! (the debit, the counter, the time and the signed postmark as the last service); then
//! the reply. The signature is made before the commit so the record keeps the whole
//! postmark: a retry with the same transaction ID returns the stored bytes, charged once,
//! even if the postmark key was replaced in between.
//!
//! The time is the host's clock, which the PSD bounds: never before the last postmark,
//! never before the day of the last back-office contact (the last accepted audit), never
//! after the inspection window that contact opened (`docs/certmeter.md` § What a postmark
//! proves).
//!
//! Command data: `txn 8 | SHA-256 32 | nonce length 1 (0..=16) | nonce`. Reply: the
//! compact postmark ([`super::tst::CompactPostmark`]).

use alloc::vec::Vec;

use crate::types::TransactionId;
use crate::wire::{Malformed, Reader, Writer};

/// Longest nonce a host may ask to be echoed.
pub const MAX_NONCE_LEN: usize = 16;

/// What a host asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostmarkRequest {
    /// The host's ID for this request; a retry with the same ID gets the same postmark.
    pub transaction: TransactionId,
    /// SHA-256 of the document.
    pub digest: [u8; 32],
    /// The RFC 3161 nonce to echo (empty: none).
    pub nonce: Vec<u8>,
}

impl PostmarkRequest {
    /// Command data.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(41 + self.nonce.len());
        w.extend_from_slice(&self.transaction.0);
        w.extend_from_slice(&self.digest);
        w.put_short_bytes(&self.nonce);
        w
    }

    /// Parses command data: a nonce of 1 to 16 bytes, without leading zeros (an RFC 3161
    /// nonce is an INTEGER: one value, one encoding).
    pub fn decode(bytes: &[u8]) -> Result<PostmarkRequest, Malformed> {
        let mut r = Reader::new(bytes);
        let req = PostmarkRequest {
            transaction: TransactionId(r.array()?),
            digest: r.array()?,
            nonce: r.short_bytes()?.to_vec(),
        };
        r.finish()?;
        if req.nonce.len() > MAX_NONCE_LEN || req.nonce.first() == Some(&0) {
            return Err(Malformed::Value);
        }
        Ok(req)
    }

    /// The nonce as the TSTInfo holds it (`None`: none asked for).
    pub fn nonce(&self) -> Option<Vec<u8>> {
        (!self.nonce.is_empty()).then(|| self.nonce.clone())
    }
}

/// The command (with the `certmeter` feature).
#[cfg(feature = "certmeter")]
mod command {
    use alloc::vec::Vec;

    use super::PostmarkRequest;
    use crate::card::Ctx;
    use crate::psd::certmeter::attestation::Purpose;
    use crate::psd::certmeter::rates::Service;
    use crate::psd::certmeter::state::LastService;
    use crate::psd::certmeter::tst::{self, CompactPostmark, PostmarkFields};
    use crate::status::Status;

    impl crate::psd::PsdApplet {
        /// ISSUE POSTMARK (80 72 00 set).
        pub(in crate::psd) fn issue_postmark(
            &mut self,
            ctx: &mut Ctx<'_>,
            i: usize,
            data: &[u8],
            reply: &mut Vec<u8>,
        ) -> Result<(), Status> {
            let req = PostmarkRequest::decode(data)?;
            let device = self.device()?;
            let p = &self.persistent;
            let cm = &p.certmeter;
            let set_byte = u8::try_from(i).map_err(|_| Status::Internal)?;

            // A retry of the last postmark: the same bytes, charged once.
            if let Some(last) = cm.retry(&req.transaction, Service::Postmark, set_byte)? {
                let stored = CompactPostmark::decode(&last.output).map_err(|_| Status::Internal)?;
                let fields =
                    tst::decode_tst_info(&stored.tst_info).map_err(|_| Status::Internal)?;
                if fields.digest != req.digest || fields.nonce != req.nonce() {
                    return Err(Status::TransactionIdReused);
                }
                // The stored bytes, signature included: the same reply even after the key
                // that signed it was replaced.
                reply.extend_from_slice(&last.output);
                return Ok(());
            }

            cm.active(Purpose::Postmark)?;
            let (now, date) = self.service_time(ctx)?;
            // Outside its certificate's validity a postmark would not verify: not sold.
            let (_, slot) = cm.active(Purpose::Postmark)?;
            if !slot.covers(now) {
                return Err(Status::CertificateMismatch);
            }
            let (fee, table_version) = cm.fee(Service::Postmark, date)?;
            let set = p.set(i)?;
            let next_set = set.charge(fee)?;
            let counter = cm.postmarks.checked_add(1).ok_or(Status::CounterOverflow)?;
            let fields = PostmarkFields {
                digest: req.digest,
                device: device.id,
                counter,
                gen_time: now,
                nonce: req.nonce(),
                fee,
                license: set.license,
                table_version,
            };
            fields.check().map_err(|_| Status::ClockRefused)?;
            let tst_info = tst::tst_info_der(&fields);
            // Signed before the commit, which keeps the whole postmark (so a retry is the
            // same bytes whatever key is active then); nothing leaves before the commit.
            let (_, slot) = cm.active(Purpose::Postmark)?;
            let compact = sign(slot, tst_info)?;
            let mut next = cm.clone();
            next.postmarks = counter;
            next.last_time = now;
            next.last = Some(LastService {
                transaction: req.transaction,
                service: Service::Postmark,
                set: set_byte,
                output: compact.clone(),
            });

            // Commit first: no postmark leaves the card for a fee that is not durable.
            self.commit_service(ctx, i, next_set, next, false)?;
            reply.extend_from_slice(&compact);
            Ok(())
        }
    }

    /// The compact postmark of `tst_info`: signed as the CMS signer of a time-stamp token
    /// would sign (over the signed attributes that name the TSTInfo's digest and the
    /// postmark certificate).
    fn sign(
        slot: &crate::psd::certmeter::state::KeySlot,
        tst_info: Vec<u8>,
    ) -> Result<Vec<u8>, Status> {
        let key = slot.key.as_ref().ok_or(Status::KeyRevoked)?;
        let attrs = tst::signed_attrs_der(&tst_info, &slot.certificate_hash());
        CompactPostmark {
            key_id: key.key_id(),
            signature: key.sign(&attrs),
            tst_info,
        }
        .encode()
        .map_err(|_| Status::Internal)
    }
}
