//! The indicium: what the PSD signs for each mail piece, and its verifier.
//!
//! Layout (version 1, big-endian, `docs/apdu.md` § Indicium):
//!
//! ```text
//! version 1 | algorithm 1 | key ID 4 | device ID 8 | license 4 | AR 8 | DR 8 |
//! piece count 4 | postage 8 | date 4 | rate 2 | origin 1+n | destination 1+n ‖ signature 64
//! ```
//!
//! The signature is ECDSA P-256 with SHA-256 over every byte before it. The verifier needs
//! nothing but the bytes and the device's public key, so it runs anywhere (`no_std`).
//! ISSUE INDICIUM, the command that debits a register set and signs, is here too.

use alloc::vec::Vec;

use crate::crypto::{self, SIGNATURE_LEN};
use crate::types::{
    Amount, Date, DeviceId, KeyId, LicenseId, PieceCount, PostalCode, RateCategory, TransactionId,
};
use crate::wire::{Malformed, Reader, Writer};

use super::state::Counters;
use super::{MAX_DAYS_AHEAD, MAX_DAYS_BEHIND};
use crate::card::Ctx;
use crate::records::psd as rec;
use crate::status::Status;
use crate::store::Transaction;

/// Layout version of the indicium.
pub const INDICIUM_VERSION: u8 = 1;
/// Algorithm identifier: ECDSA P-256 with SHA-256.
pub const ALG_ECDSA_P256_SHA256: u8 = 1;

/// What a host asks for (ISSUE INDICIUM command data).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndiciumRequest {
    /// The host's ID for this request; a retry with the same ID returns the same indicium.
    pub transaction: TransactionId,
    /// Postage for the piece.
    pub postage: Amount,
    /// Date of mailing.
    pub date: Date,
    /// Rate category.
    pub rate: RateCategory,
    /// Origin postal code (must be the license's).
    pub origin: PostalCode,
    /// Destination postal code.
    pub destination: PostalCode,
}

impl IndiciumRequest {
    /// Command data layout: `txn 8 | postage 8 | date 4 | rate 2 | origin 1+n | dest 1+n`.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(48);
        w.extend_from_slice(&self.transaction.0);
        w.put_u64(self.postage.0);
        self.date.write(&mut w);
        w.put_u16(self.rate.0);
        self.origin.write(&mut w);
        self.destination.write(&mut w);
        w
    }

    /// Parses command data.
    pub fn decode(bytes: &[u8]) -> Result<Self, Malformed> {
        let mut r = Reader::new(bytes);
        let req = IndiciumRequest {
            transaction: TransactionId(r.array()?),
            postage: Amount(r.u64()?),
            date: Date::read(&mut r)?,
            rate: RateCategory(r.u16()?),
            origin: PostalCode::read(&mut r)?,
            destination: PostalCode::read(&mut r)?,
        };
        r.finish()?;
        Ok(req)
    }
}

/// The signed content of an indicium.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndiciumData {
    /// Identifier of the signing key.
    pub key_id: KeyId,
    /// The PSD that made it.
    pub device: DeviceId,
    /// The license (register set) it was debited from.
    pub license: LicenseId,
    /// AR after this piece.
    pub ar: Amount,
    /// DR after this piece.
    pub dr: Amount,
    /// Piece count including this piece.
    pub pieces: PieceCount,
    /// Postage paid.
    pub postage: Amount,
    /// Date of mailing.
    pub date: Date,
    /// Rate category.
    pub rate: RateCategory,
    /// Origin postal code.
    pub origin: PostalCode,
    /// Destination postal code.
    pub destination: PostalCode,
}

impl IndiciumData {
    /// The bytes that are signed.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(96);
        w.put_u8(INDICIUM_VERSION);
        w.put_u8(ALG_ECDSA_P256_SHA256);
        w.extend_from_slice(&self.key_id.0);
        w.extend_from_slice(&self.device.0);
        w.put_u32(self.license.0);
        w.put_u64(self.ar.0);
        w.put_u64(self.dr.0);
        w.put_u32(self.pieces.0);
        w.put_u64(self.postage.0);
        self.date.write(&mut w);
        w.put_u16(self.rate.0);
        self.origin.write(&mut w);
        self.destination.write(&mut w);
        w
    }

    /// Decodes the signed bytes (without signature).
    pub fn decode(bytes: &[u8]) -> Result<Self, Malformed> {
        let mut r = Reader::new(bytes);
        if r.u8()? != INDICIUM_VERSION || r.u8()? != ALG_ECDSA_P256_SHA256 {
            return Err(Malformed::Value);
        }
        let data = IndiciumData {
            key_id: KeyId(r.array()?),
            device: DeviceId(r.array()?),
            license: LicenseId(r.u32()?),
            ar: Amount(r.u64()?),
            dr: Amount(r.u64()?),
            pieces: PieceCount(r.u32()?),
            postage: Amount(r.u64()?),
            date: Date::read(&mut r)?,
            rate: RateCategory(r.u16()?),
            origin: PostalCode::read(&mut r)?,
            destination: PostalCode::read(&mut r)?,
        };
        r.finish()?;
        Ok(data)
    }

    /// Whether this indicium answers `req` (same postage, date, rate, codes).
    pub fn answers(&self, req: &IndiciumRequest) -> bool {
        self.postage == req.postage
            && self.date == req.date
            && self.rate == req.rate
            && self.origin == req.origin
            && self.destination == req.destination
    }
}

/// Why an indicium does not verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifyError {
    /// Shorter than a signature, or the fields do not decode.
    Malformed,
    /// The key ID in the indicium is not the given key's.
    WrongKey,
    /// The signature does not verify.
    BadSignature,
}

impl core::fmt::Display for VerifyError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            VerifyError::Malformed => "indicium malformed",
            VerifyError::WrongKey => "indicium signed under another key",
            VerifyError::BadSignature => "indicium signature invalid",
        })
    }
}

/// Checks an indicium (signed bytes ‖ 64-byte signature) against the device's SEC1 public
/// key and returns every field.
pub fn verify(indicium: &[u8], public_key: &[u8]) -> Result<IndiciumData, VerifyError> {
    let split = indicium
        .len()
        .checked_sub(SIGNATURE_LEN)
        .ok_or(VerifyError::Malformed)?;
    let (signed, signature) = indicium.split_at(split);
    let data = IndiciumData::decode(signed).map_err(|_| VerifyError::Malformed)?;
    if data.key_id != crypto::key_id(public_key) {
        return Err(VerifyError::WrongKey);
    }
    if !crypto::verify_signature(public_key, signed, signature) {
        return Err(VerifyError::BadSignature);
    }
    Ok(data)
}

impl core::error::Error for VerifyError {}

/// What ISSUE INDICIUM answers on a PSD with an outside signer (feature `webcrypto`): the
/// unsigned indicium while its signature is pending, or the signed one. The two cannot be
/// mistaken: the unsigned bytes decode exactly, the signed ones are 64 bytes longer.
#[cfg(feature = "webcrypto")]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IssueAnswer {
    /// The bytes to sign (the debit is committed); sign them and STORE SIGNATURE.
    Pending(Vec<u8>, IndiciumData),
    /// The signed indicium (a retry of a transaction already signed), verified.
    Signed(Vec<u8>, IndiciumData),
}

#[cfg(feature = "webcrypto")]
impl IssueAnswer {
    /// Reads an answer; a signed one must verify under `signer`, an unsigned one must name
    /// its key.
    pub fn read(answer: Vec<u8>, signer: &[u8]) -> Result<Self, VerifyError> {
        if let Ok(data) = IndiciumData::decode(&answer) {
            if data.key_id != crypto::key_id(signer) {
                return Err(VerifyError::WrongKey);
            }
            return Ok(IssueAnswer::Pending(answer, data));
        }
        let data = verify(&answer, signer)?;
        Ok(IssueAnswer::Signed(answer, data))
    }
}

/// One device key prepared for checking many of its indicia ([`crypto::PreparedKey`]: off
/// the browser, a table of the key that makes each check ~4 times faster than
/// [`verify`]'s after ~1.5 ms to build it). Same checks, same order, same errors as [`verify`].
#[derive(Debug)]
pub struct Verifier {
    key: crypto::PreparedKey,
    key_id: KeyId,
}

impl Verifier {
    /// Prepares a SEC1 public key (compressed or not); `None` if it is not a P-256 point.
    /// The key ID is that of `public_key` as given, as in [`verify`].
    pub fn new(public_key: &[u8]) -> Option<Self> {
        Some(Self {
            key: crypto::PreparedKey::from_sec1(public_key)?,
            key_id: crypto::key_id(public_key),
        })
    }

    /// Checks an indicium (signed bytes ‖ 64-byte signature) and returns every field.
    pub fn verify(&self, indicium: &[u8]) -> Result<IndiciumData, VerifyError> {
        let split = indicium
            .len()
            .checked_sub(SIGNATURE_LEN)
            .ok_or(VerifyError::Malformed)?;
        let (signed, signature) = indicium.split_at(split);
        let data = IndiciumData::decode(signed).map_err(|_| VerifyError::Malformed)?;
        if data.key_id != self.key_id {
            return Err(VerifyError::WrongKey);
        }
        if !self.key.verify(signed, signature) {
            return Err(VerifyError::BadSignature);
        }
        Ok(data)
    }
}

impl super::PsdApplet {
    /// ISSUE INDICIUM (80 40 00 set): checks the request against the set, the device's
    /// limits and dates, commits the debit, then signs. A retry of the last request (same
    /// transaction ID) gets the same indicium back, debited once.
    pub(super) fn issue_indicium(
        &mut self,
        ctx: &mut Ctx<'_>,
        i: usize,
        data: &[u8],
        reply: &mut Vec<u8>,
    ) -> Result<(), Status> {
        // The device through its field, not `self.device()`: the nonce pool is borrowed
        // mutably beside it.
        let device = self.persistent.device()?;
        let req = IndiciumRequest::decode(data)?;
        let counters = self.persistent.counters;
        let set = self.persistent.set(i)?;

        // A retry of the last request gets the same indicium back, debited once.
        if let Some((txn, payload)) = &set.last_indicium {
            if *txn == req.transaction {
                let data = IndiciumData::decode(payload).map_err(|_| Status::Internal)?;
                if !data.answers(&req) {
                    return Err(Status::TransactionIdReused);
                }
                reply.extend_from_slice(payload);
                match &set.last_signature {
                    Some(signature) => reply.extend_from_slice(signature),
                    // Waiting for its outside signature: the unsigned bytes again.
                    #[cfg(feature = "webcrypto")]
                    None if super::outside_signer::pending(device, set) => {}
                    // A record from before version 5: its indicium was signed with RFC
                    // 6979's nonce, so signing again gives the bytes it answered.
                    None => reply.extend_from_slice(&set.signing_key(&device.key).sign(payload)),
                }
                return Ok(());
            }
        }

        #[cfg(feature = "webcrypto")]
        if super::outside_signer::pending(device, set) {
            return Err(Status::SignaturePending);
        }
        if req.postage == Amount::ZERO {
            return Err(Status::WrongData);
        }
        if req.origin != set.origin {
            return Err(Status::OriginMismatch);
        }
        if set.grant.as_ref().is_some_and(|g| !g.covers(req.date)) {
            return Err(Status::LicenseNotValid);
        }
        if req.postage > device.max_postage {
            return Err(Status::PostageAboveLimit);
        }
        if counters.last_date.is_some_and(|last| req.date < last) {
            return Err(Status::DateBeforeLastUsed);
        }
        if let Some(today) = ctx.platform.today() {
            let (day, today) = (req.date.day_number(), today.day_number());
            if day > today.saturating_add(MAX_DAYS_AHEAD) {
                return Err(Status::DateTooFarAhead);
            }
            if day < today.saturating_sub(MAX_DAYS_BEHIND) {
                return Err(Status::DateBeforeLastUsed);
            }
        }
        if device.inspection_days > 0 {
            // Measured on the date of mailing (checked against the platform's clock when
            // there is one, and never going back), so the window closes with the calendar.
            let due = match counters.last_inspection {
                None => true,
                Some(last) => {
                    req.date.day_number()
                        > last
                            .day_number()
                            .saturating_add(u32::from(device.inspection_days))
                }
            };
            if due {
                return Err(Status::InspectionOverdue);
            }
        }
        let mut next = set.debit(req.postage)?;
        // Signed outside the PSD (feature `webcrypto`): the indicium carries that key's ID
        // and leaves unsigned, pending until STORE SIGNATURE.
        #[cfg(feature = "webcrypto")]
        let outside = super::outside_signer::signer_of(device, set);
        #[cfg(not(feature = "webcrypto"))]
        let outside: Option<&[u8; crypto::PUBLIC_KEY_LEN]> = None;
        let data = IndiciumData {
            key_id: outside.map_or_else(|| set.key_id(&device.key), |k| crypto::key_id(k)),
            device: device.id,
            license: next.license,
            ar: next.ar,
            dr: next.dr,
            pieces: next.pieces,
            postage: req.postage,
            date: req.date,
            rate: req.rate,
            origin: req.origin,
            destination: req.destination,
        };
        let payload = data.encode();
        // Signed before the commit, and the signature committed with the debit: its nonce
        // may come from the pool (random), and a retry must answer these very bytes.
        let signature = match outside {
            Some(_) => None,
            #[cfg(not(target_arch = "wasm32"))]
            None => Some(
                next.signing_key(&device.key)
                    .sign_pooled(&payload, &mut self.nonces),
            ),
            #[cfg(target_arch = "wasm32")]
            None => Some(next.signing_key(&device.key).sign(&payload)),
        };
        next.last_indicium = Some((req.transaction, payload.clone()));
        next.last_signature = signature;

        // Commit first: no indicium leaves the card for a debit that is not durable.
        let next_counters = Counters {
            last_date: Some(req.date),
            ..counters
        };
        let mut txn = Transaction::begin(ctx.store);
        txn.write(rec::set(i), next.encode());
        if next_counters != counters {
            txn.write(rec::COUNTERS, next_counters.encode());
        }
        txn.commit()?;

        self.persistent.put_set(i, next);
        self.persistent.counters = next_counters;
        reply.extend_from_slice(&payload);
        if let Some(signature) = signature {
            reply.extend_from_slice(&signature);
        }
        Ok(())
    }
}
