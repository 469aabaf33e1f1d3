//! Credit (seed 004, Figs. 7-9): a line of credit from a creditor, drawn on by payment
//! certificates the PSD signs for a merchant and an order.
//!
//! - The **line of credit certificate** (Fig. 7A) is an X.509 certificate the creditor
//!   issues on the PSD's payment key (purpose 4, generated inside and attested), signed by
//!   the creditor's key the vendor vouches for (trust anchor of kind `Creditor`). The line
//!   (number, amount, currency) is a non-critical private extension
//!   (1.3.6.1.4.1.32473.1.3, [`CreditLine`]); its validity is the certificate's. Why
//!   X.509: a merchant or an auditor checks the chain creditor → payment key with stock
//!   tools (`openssl verify`), and Fig. 7A's fields (holder, serial, key, issuer, amount,
//!   dates, use, issuer signature) are a certificate's. LOAD CREDIT LINE (`80 58`)
//!   installs it as the payment key's certificate (activating a pending payment key) and
//!   sets the credit remaining to the line (Fig. 8 step 812).
//! - The **payment certificate** (Fig. 7B) is a DER [`PaymentInfo`] (line hash, counter,
//!   device, amount, remaining after, merchant, order, time, transaction) signed with
//!   ECDSA P-256/SHA-256 by the payment key, in an X.509-like envelope
//!   `SEQUENCE { PaymentInfo, AlgorithmIdentifier, BIT STRING }` ([`PaymentCertificate`]):
//!   anyone with the line certificate checks it (`openssl dgst -sha256 -verify`). PAY
//!   (`80 5A`) makes one (Fig. 9 steps 904-910).
//!
//! The state is the record `CREDIT` ([`CreditState`]), apart from the certificate meter's
//! record: the line held, the credit remaining, the payment counter and the last payment
//! (so a retry with the same transaction ID returns the same bytes, charged once).
//!
//! The formats compile always (the host and the creditor read them); the commands answer
//! only with the `certmeter` feature.

use alloc::vec::Vec;

use crate::crypto::{self, PUBLIC_KEY_LEN, SIGNATURE_LEN};
use crate::types::{Amount, Date, DeviceId, TransactionId};
use crate::wire::{Malformed, Reader, Writer};

/// The credit-line extension, 1.3.6.1.4.1.32473.1.3 (OID content octets; 32473 is RFC
/// 5612's documentation arc, as the postmark policy's).
pub const CREDIT_LINE_OID: &[u8] = &[0x2B, 6, 1, 4, 1, 0x81, 0xFD, 0x59, 1, 3];
/// The same, dotted.
pub const CREDIT_LINE_OID_TEXT: &str = "1.3.6.1.4.1.32473.1.3";
/// ecdsa-with-SHA256 (OID content octets).
const ECDSA_SHA256_OID: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 4, 3, 2];
/// Layout version of [`PaymentInfo`] and of the record.
const VERSION: u8 = 1;
/// Longest merchant or order ID.
pub const MAX_ID_LEN: usize = 32;
/// Days from 1970-01-01 to 2000-01-01 (where [`Date::day_number`] counts from).
const DAYS_1970_TO_2000: u64 = 10_957;

/// The line a creditor grants (the extension's value:
/// `SEQUENCE { number INTEGER, amount INTEGER, currency PrintableString SIZE(3) }`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CreditLine {
    /// Rises with every line the creditor issues to a customer: a newer line replaces the
    /// one held, an older one is refused.
    pub number: u32,
    /// The amount granted, in minor units.
    pub amount: Amount,
    /// ISO 4217 code, upper-case letters.
    pub currency: [u8; 3],
}

impl CreditLine {
    /// The extension's value (DER).
    pub fn to_der(&self) -> Vec<u8> {
        let mut body = Vec::new();
        push_uint(&mut body, u64::from(self.number));
        push_uint(&mut body, self.amount.0);
        tlv(&mut body, 0x13, &self.currency);
        wrap(0x30, &body)
    }

    /// Parses the extension's value: DER, one encoding only.
    pub fn from_der(der: &[u8]) -> Result<CreditLine, Malformed> {
        let mut outer = der;
        let mut r = read_tlv(&mut outer, 0x30)?;
        if !outer.is_empty() {
            return Err(Malformed::Length);
        }
        let number = u32::try_from(read_uint(&mut r)?).map_err(|_| Malformed::Value)?;
        let amount = Amount(read_uint(&mut r)?);
        let currency: [u8; 3] = read_tlv(&mut r, 0x13)?
            .try_into()
            .map_err(|_| Malformed::Value)?;
        if !r.is_empty() || !currency.iter().all(u8::is_ascii_uppercase) {
            return Err(Malformed::Value);
        }
        Ok(CreditLine {
            number,
            amount,
            currency,
        })
    }
}

/// What the holder asks PAY for: `txn 8 | amount u64 | merchant len 1 ‖ merchant |
/// order len 1 ‖ order` (IDs 1 to 32 printable ASCII characters).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayRequest {
    /// The host's ID for this request; a retry with the same ID gets the same payment.
    pub transaction: TransactionId,
    /// The amount to pay, in the line's minor units.
    pub amount: Amount,
    /// The merchant paid (who alone may present the payment to the creditor).
    pub merchant: Vec<u8>,
    /// The merchant's order.
    pub order: Vec<u8>,
}

fn id_ok(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_LEN && id.iter().all(|b| (0x20..0x7F).contains(b))
}

impl PayRequest {
    /// Command data.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(18 + self.merchant.len() + self.order.len());
        w.extend_from_slice(&self.transaction.0);
        w.put_u64(self.amount.0);
        w.put_short_bytes(&self.merchant);
        w.put_short_bytes(&self.order);
        w
    }

    /// Parses command data; a zero amount or an ID out of bounds is refused.
    pub fn decode(bytes: &[u8]) -> Result<PayRequest, Malformed> {
        let mut r = Reader::new(bytes);
        let req = PayRequest {
            transaction: TransactionId(r.array()?),
            amount: Amount(r.u64()?),
            merchant: r.short_bytes()?.to_vec(),
            order: r.short_bytes()?.to_vec(),
        };
        r.finish()?;
        if req.amount == Amount::ZERO || !id_ok(&req.merchant) || !id_ok(&req.order) {
            return Err(Malformed::Value);
        }
        Ok(req)
    }
}

/// What a payment certificate says (Fig. 7B), DER:
///
/// ```text
/// PaymentInfo ::= SEQUENCE {
///   version INTEGER (1), line OCTET STRING (SHA-256 of the line certificate),
///   counter INTEGER (1, 2, ... per line), device OCTET STRING (8),
///   amount INTEGER, currency PrintableString, remaining INTEGER (after this payment),
///   merchant UTF8String, order UTF8String, time GeneralizedTime,
///   transaction OCTET STRING (8) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentInfo {
    /// SHA-256 of the line of credit certificate drawn on.
    pub line: [u8; 32],
    /// The payment's number on this line, from 1, without gaps.
    pub counter: u32,
    /// The PSD.
    pub device: DeviceId,
    /// The amount paid.
    pub amount: Amount,
    /// The line's currency.
    pub currency: [u8; 3],
    /// Credit remaining after this payment.
    pub remaining: Amount,
    /// The merchant paid.
    pub merchant: Vec<u8>,
    /// The merchant's order.
    pub order: Vec<u8>,
    /// The PSD's clock (Unix seconds).
    pub time: u64,
    /// The holder's transaction ID.
    pub transaction: TransactionId,
}

impl PaymentInfo {
    /// DER.
    pub fn to_der(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(200);
        push_uint(&mut b, u64::from(VERSION));
        tlv(&mut b, 0x04, &self.line);
        push_uint(&mut b, u64::from(self.counter));
        tlv(&mut b, 0x04, &self.device.0);
        push_uint(&mut b, self.amount.0);
        tlv(&mut b, 0x13, &self.currency);
        push_uint(&mut b, self.remaining.0);
        tlv(&mut b, 0x0C, &self.merchant);
        tlv(&mut b, 0x0C, &self.order);
        tlv(&mut b, 0x18, &generalized_time(self.time));
        tlv(&mut b, 0x04, &self.transaction.0);
        wrap(0x30, &b)
    }

    /// Parses DER (one encoding only: re-encoding gives the same bytes).
    pub fn from_der(der: &[u8]) -> Result<PaymentInfo, Malformed> {
        let mut outer = der;
        let mut r = read_tlv(&mut outer, 0x30)?;
        if !outer.is_empty() || read_uint(&mut r)? != u64::from(VERSION) {
            return Err(Malformed::Value);
        }
        let info = PaymentInfo {
            line: read_tlv(&mut r, 0x04)?
                .try_into()
                .map_err(|_| Malformed::Value)?,
            counter: u32::try_from(read_uint(&mut r)?).map_err(|_| Malformed::Value)?,
            device: DeviceId(
                read_tlv(&mut r, 0x04)?
                    .try_into()
                    .map_err(|_| Malformed::Value)?,
            ),
            amount: Amount(read_uint(&mut r)?),
            currency: read_tlv(&mut r, 0x13)?
                .try_into()
                .map_err(|_| Malformed::Value)?,
            remaining: Amount(read_uint(&mut r)?),
            merchant: read_tlv(&mut r, 0x0C)?.to_vec(),
            order: read_tlv(&mut r, 0x0C)?.to_vec(),
            time: parse_generalized_time(read_tlv(&mut r, 0x18)?)?,
            transaction: TransactionId(
                read_tlv(&mut r, 0x04)?
                    .try_into()
                    .map_err(|_| Malformed::Value)?,
            ),
        };
        if !r.is_empty() || info.to_der() != der {
            return Err(Malformed::Value);
        }
        Ok(info)
    }
}

/// A payment certificate: `SEQUENCE { PaymentInfo, AlgorithmIdentifier
/// (ecdsa-with-SHA256), BIT STRING (ECDSA-Sig-Value over the PaymentInfo's DER) }`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentCertificate {
    /// The signed PaymentInfo (DER).
    pub info_der: Vec<u8>,
    /// `r ‖ s`.
    pub signature: [u8; SIGNATURE_LEN],
}

impl PaymentCertificate {
    /// DER.
    pub fn to_der(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(self.info_der.len() + 90);
        b.extend_from_slice(&self.info_der);
        let mut alg = Vec::new();
        tlv(&mut alg, 0x06, ECDSA_SHA256_OID);
        tlv(&mut b, 0x30, &alg);
        let mut sig = Vec::with_capacity(72);
        for half in self.signature.chunks(32) {
            push_uint_bytes(&mut sig, half);
        }
        let sig = wrap(0x30, &sig);
        let mut bits = Vec::with_capacity(sig.len() + 1);
        bits.push(0);
        bits.extend_from_slice(&sig);
        tlv(&mut b, 0x03, &bits);
        wrap(0x30, &b)
    }

    /// Parses DER (strictly: re-encoding gives the same bytes).
    pub fn from_der(der: &[u8]) -> Result<PaymentCertificate, Malformed> {
        let mut outer = der;
        let mut r = read_tlv(&mut outer, 0x30)?;
        if !outer.is_empty() {
            return Err(Malformed::Length);
        }
        let start = r;
        read_tlv(&mut r, 0x30)?;
        let info_der = start[..start.len() - r.len()].to_vec();
        let mut alg = read_tlv(&mut r, 0x30)?;
        if read_tlv(&mut alg, 0x06)? != ECDSA_SHA256_OID || !alg.is_empty() {
            return Err(Malformed::Value);
        }
        let bits = read_tlv(&mut r, 0x03)?;
        let (&unused, mut sig) = bits.split_first().ok_or(Malformed::Value)?;
        let mut seq = read_tlv(&mut sig, 0x30)?;
        if unused != 0 || !sig.is_empty() || !r.is_empty() {
            return Err(Malformed::Value);
        }
        let mut signature = [0u8; SIGNATURE_LEN];
        for half in signature.chunks_mut(32) {
            let m = read_uint_bytes(&mut seq)?;
            let pad = 32usize.checked_sub(m.len()).ok_or(Malformed::Value)?;
            half[pad..].copy_from_slice(m);
        }
        let cert = PaymentCertificate {
            info_der,
            signature,
        };
        if !seq.is_empty() || cert.to_der() != der {
            return Err(Malformed::Value);
        }
        PaymentInfo::from_der(&cert.info_der)?;
        Ok(cert)
    }

    /// The PaymentInfo, if the signature verifies under `payment_key` (the line
    /// certificate's subject key).
    pub fn verify(&self, payment_key: &[u8; PUBLIC_KEY_LEN]) -> Option<PaymentInfo> {
        if !crypto::verify_signature(payment_key, &self.info_der, &self.signature) {
            return None;
        }
        PaymentInfo::from_der(&self.info_der).ok()
    }
}

/// PAY's reply and what the record keeps: `fee u64 | payment certificate (DER)`.
pub fn pay_reply(fee: Amount, certificate: &[u8]) -> Vec<u8> {
    let mut w = Vec::with_capacity(8 + certificate.len());
    w.put_u64(fee.0);
    w.extend_from_slice(certificate);
    w
}

/// Splits PAY's reply into the fee and the payment certificate.
pub fn split_pay_reply(reply: &[u8]) -> Result<(Amount, PaymentCertificate), Malformed> {
    let mut r = Reader::new(reply);
    let fee = Amount(r.u64()?);
    Ok((fee, PaymentCertificate::from_der(r.remaining())?))
}

/// The last payment kept for a retry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastPayment {
    /// The host's transaction ID.
    pub transaction: TransactionId,
    /// The register set charged.
    pub set: u8,
    /// The request's data, as sent: a retry must ask the same.
    pub request: Vec<u8>,
    /// The reply ([`pay_reply`]).
    pub reply: Vec<u8>,
}

/// The record `CREDIT` (absent until the first line), version 1:
///
/// ```text
/// 01 | line number u32 | line hash 32 | slot 1 | amount u64 | currency 3 |
/// first day 4 | last day 4 | remaining u64 | payment counter u32 | last payment time u64 |
/// last payment: 00 | 01 ‖ txn 8 ‖ set 1 ‖ request len 1 ‖ request ‖ reply len u16 ‖ reply
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreditState {
    /// The line held.
    pub line: CreditLine,
    /// SHA-256 of its certificate.
    pub line_hash: [u8; 32],
    /// The payment key's slot (its certificate is the line's).
    pub slot: u8,
    /// The line's first and last day.
    pub valid: (Date, Date),
    /// Credit remaining: never above the line, never rises but by a newer line.
    pub remaining: Amount,
    /// Payments made on this line.
    pub counter: u32,
    /// The time of the last payment: payment time never goes back.
    pub last_time: u64,
    /// The last payment.
    pub last: Option<LastPayment>,
}

impl CreditState {
    /// The record's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(128);
        w.put_u8(VERSION);
        w.put_u32(self.line.number);
        w.extend_from_slice(&self.line_hash);
        w.put_u8(self.slot);
        w.put_u64(self.line.amount.0);
        w.extend_from_slice(&self.line.currency);
        self.valid.0.write(&mut w);
        self.valid.1.write(&mut w);
        w.put_u64(self.remaining.0);
        w.put_u32(self.counter);
        w.put_u64(self.last_time);
        match &self.last {
            None => w.put_u8(0),
            Some(l) => {
                w.put_u8(1);
                w.extend_from_slice(&l.transaction.0);
                w.put_u8(l.set);
                w.put_short_bytes(&l.request);
                // why: a reply is a fee and a payment certificate, well under 64 KiB.
                #[allow(clippy::cast_possible_truncation)]
                w.put_u16(l.reply.len() as u16);
                w.extend_from_slice(&l.reply);
            }
        }
        w
    }

    /// Parses the record; anything that does not fit the layout is an error.
    pub fn decode(bytes: &[u8]) -> Result<CreditState, Malformed> {
        let mut r = Reader::new(bytes);
        if r.u8()? != VERSION {
            return Err(Malformed::Value);
        }
        let number = r.u32()?;
        let line_hash = r.array()?;
        let slot = r.u8()?;
        let amount = Amount(r.u64()?);
        let currency = r.array()?;
        let valid = (Date::read(&mut r)?, Date::read(&mut r)?);
        let st = CreditState {
            line: CreditLine {
                number,
                amount,
                currency,
            },
            line_hash,
            slot,
            valid,
            remaining: Amount(r.u64()?),
            counter: r.u32()?,
            last_time: r.u64()?,
            last: match r.u8()? {
                0 => None,
                1 => {
                    let transaction = TransactionId(r.array()?);
                    let set = r.u8()?;
                    let request = r.short_bytes()?.to_vec();
                    let len = usize::from(r.u16()?);
                    Some(LastPayment {
                        transaction,
                        set,
                        request,
                        reply: r.take(len)?.to_vec(),
                    })
                }
                _ => return Err(Malformed::Value),
            },
        };
        r.finish()?;
        if st.remaining > st.line.amount {
            return Err(Malformed::Value);
        }
        Ok(st)
    }
}

/// LOAD CREDIT LINE's reply: `line number u32 | fee u64 | remaining u64 | registers of the
/// set (READ REGISTERS layout)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineReply {
    /// The line held now.
    pub number: u32,
    /// The fee paid for it.
    pub fee: Amount,
    /// Credit remaining.
    pub remaining: Amount,
    /// The registers (READ REGISTERS layout).
    pub registers: Vec<u8>,
}

impl LineReply {
    /// Parses the reply.
    pub fn decode(bytes: &[u8]) -> Result<LineReply, Malformed> {
        let mut r = Reader::new(bytes);
        Ok(LineReply {
            number: r.u32()?,
            fee: Amount(r.u64()?),
            remaining: Amount(r.u64()?),
            registers: r.remaining().to_vec(),
        })
    }
}

/// Why a creditor refuses a payment certificate presented for settlement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SettleRefusal {
    /// Not a payment certificate, or not signed by the line's payment key.
    Unauthentic,
    /// Drawn on another line.
    OtherLine,
    /// Presented by another merchant than the one it names.
    OtherMerchant,
    /// Its counter was settled already (double presentment).
    AlreadySettled,
    /// An earlier payment of the line was not settled yet (a gap): settle in order.
    OutOfOrder,
    /// Its remaining is not the line less every amount settled and its own (or its
    /// currency is not the line's).
    Inconsistent,
}

/// A creditor's settlement book of one line (Fig. 9's last step): each (line, counter)
/// is accepted once and in order, and the remaining it states must be the line less the
/// amounts settled before and its own, which a missing, repeated or altered payment breaks.
/// The creditor service keeps one per line it issued (`settled` and `drawn` are what it
/// stores); this is the rule, without the storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettlementBook {
    /// SHA-256 of the line certificate.
    pub line_hash: [u8; 32],
    /// The payment key the line certifies.
    pub payment_key: [u8; PUBLIC_KEY_LEN],
    /// The line.
    pub line: CreditLine,
    /// The last counter settled (0: none).
    pub settled: u32,
    /// Σ amounts settled.
    pub drawn: Amount,
}

impl SettlementBook {
    /// Checks `payment` (DER) presented by `merchant` and, if it is the next one, books it.
    /// Nothing changes on a refusal.
    pub fn settle(
        &mut self,
        payment: &[u8],
        merchant: &[u8],
    ) -> Result<PaymentInfo, SettleRefusal> {
        let cert = PaymentCertificate::from_der(payment).map_err(|_| SettleRefusal::Unauthentic)?;
        let info = cert
            .verify(&self.payment_key)
            .ok_or(SettleRefusal::Unauthentic)?;
        if info.line != self.line_hash {
            return Err(SettleRefusal::OtherLine);
        }
        if info.merchant != merchant {
            return Err(SettleRefusal::OtherMerchant);
        }
        if info.counter <= self.settled {
            return Err(SettleRefusal::AlreadySettled);
        }
        if Some(info.counter) != self.settled.checked_add(1) {
            return Err(SettleRefusal::OutOfOrder);
        }
        let drawn = self
            .drawn
            .checked_add(info.amount)
            .ok_or(SettleRefusal::Inconsistent)?;
        if info.currency != self.line.currency
            || self.line.amount.checked_sub(drawn) != Some(info.remaining)
        {
            return Err(SettleRefusal::Inconsistent);
        }
        self.settled = info.counter;
        self.drawn = drawn;
        Ok(info)
    }
}

/// The commands (with the `certmeter` feature).
#[cfg(feature = "certmeter")]
mod command {
    use alloc::vec::Vec;

    use der::{Decode as _, Encode as _};
    use x509_cert::ext::pkix::BasicConstraints;
    use x509_cert::Certificate;

    use super::{
        pay_reply, CreditLine, CreditState, LastPayment, PayRequest, PaymentCertificate,
        PaymentInfo, CREDIT_LINE_OID,
    };
    use crate::card::Ctx;
    use crate::crypto::{self, PUBLIC_KEY_LEN};
    use crate::psd::certmeter::anchor::AnchorKind;
    use crate::psd::certmeter::attestation::Purpose;
    use crate::psd::certmeter::rates::{self, Service};
    use crate::psd::certmeter::state::{SlotState, MAX_CERTIFICATE_LEN};
    use crate::records::psd as rec;
    use crate::status::Status;
    use crate::store::{Store, Transaction};
    use crate::types::{Amount, Date};
    use crate::wire::Writer;

    /// ecdsa-with-SHA256.
    const ECDSA_SHA256: der::asn1::ObjectIdentifier =
        der::asn1::ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");

    /// The record, if a line was ever loaded.
    fn load(store: &dyn Store) -> Result<Option<CreditState>, Status> {
        match store.read(rec::CREDIT)? {
            None => Ok(None),
            Some(b) => CreditState::decode(&b)
                .map(Some)
                .map_err(|_| Status::Internal),
        }
    }

    /// What a line certificate says, once checked: its key, validity and line.
    struct CheckedLine {
        public_key: [u8; PUBLIC_KEY_LEN],
        valid: (Date, Date),
        /// The same, notBefore and notAfter in Unix seconds (the key slot keeps them).
        valid_seconds: (u64, u64),
        line: CreditLine,
    }

    /// Checks a line of credit certificate: DER (one encoding), ECDSA P-256/SHA-256 by
    /// `creditor`, not a CA, valid `today`, with the credit-line extension. `6A80` if it
    /// is not a DER certificate, `9A44` for everything else.
    fn check_line(
        cert: &[u8],
        creditor: &[u8; PUBLIC_KEY_LEN],
        today: Date,
    ) -> Result<CheckedLine, Status> {
        if cert.len() > MAX_CERTIFICATE_LEN {
            return Err(Status::WrongLength);
        }
        let parsed = Certificate::from_der(cert).map_err(|_| Status::WrongData)?;
        if parsed.to_der().ok().as_deref() != Some(cert) {
            return Err(Status::WrongData);
        }
        let mismatch = Status::CertificateMismatch;
        let tbs = parsed.tbs_certificate();
        if parsed.signature_algorithm().oid != ECDSA_SHA256 || tbs.signature().oid != ECDSA_SHA256 {
            return Err(mismatch);
        }
        let tbs_der = tbs.to_der().map_err(|_| mismatch)?;
        let rs =
            super::super::certificate::ecdsa_rs(parsed.signature().as_bytes().ok_or(mismatch)?)
                .ok_or(mismatch)?;
        if !crypto::verify_signature(creditor, &tbs_der, &rs) {
            return Err(mismatch);
        }
        let public_key: [u8; PUBLIC_KEY_LEN] = tbs
            .subject_public_key_info()
            .subject_public_key
            .as_bytes()
            .and_then(|b| b.try_into().ok())
            .ok_or(mismatch)?;
        let date = |t: &x509_cert::time::Time| {
            let dt = t.to_date_time();
            Date::new(dt.year(), dt.month(), dt.day())
        };
        let v = tbs.validity();
        let valid = match (date(&v.not_before), date(&v.not_after)) {
            (Some(f), Some(t)) if f <= today && today <= t => (f, t),
            _ => return Err(mismatch),
        };
        if let Some((_, bc)) = tbs
            .get_extension::<BasicConstraints>()
            .map_err(|_| mismatch)?
        {
            if bc.ca {
                return Err(mismatch);
            }
        }
        let ext = tbs
            .extensions()
            .into_iter()
            .flatten()
            .find(|e| e.extn_id.as_bytes() == CREDIT_LINE_OID)
            .ok_or(mismatch)?;
        let line = CreditLine::from_der(ext.extn_value.as_bytes()).map_err(|_| mismatch)?;
        Ok(CheckedLine {
            public_key,
            valid,
            valid_seconds: (
                v.not_before.to_unix_duration().as_secs(),
                v.not_after.to_unix_duration().as_secs(),
            ),
            line,
        })
    }

    impl crate::psd::PsdApplet {
        /// LOAD CREDIT LINE (80 58 00 set): the creditor's line of credit certificate on
        /// the PSD's payment key (pending or active). Checks the creditor's signature
        /// (anchor `Creditor`), the key, the dates and that the line is newer than the one
        /// held; then ONE commit: the credit-line fee (if the rate table prices it; free
        /// otherwise) from the set, the payment key active with the line as its
        /// certificate (an older payment key retired), remaining = line. The same line
        /// again answers again, with nothing written.
        pub(in crate::psd) fn load_credit_line(
            &mut self,
            ctx: &mut Ctx<'_>,
            i: usize,
            data: &[u8],
            reply: &mut Vec<u8>,
        ) -> Result<(), Status> {
            self.device()?;
            let held = load(ctx.store)?;
            let hash = crypto::sha256(data);
            let cm = &self.persistent.certmeter;
            if let Some(h) = held.as_ref().filter(|h| h.line_hash == hash) {
                let fee = cm
                    .slots
                    .get(usize::from(h.slot))
                    .and_then(Option::as_ref)
                    .map_or(Amount::ZERO, |s| s.fee_paid);
                return self.line_reply(h, fee, i, reply);
            }
            let creditor = cm
                .anchor(AnchorKind::Creditor)
                .ok_or(Status::CertificateMismatch)?;
            // The date under the postmark's clock rules: a host cannot pick a day on which
            // a line would be in date, or a dearer table not yet in effect.
            let (_, today) = self.service_time(ctx)?;
            let checked = check_line(data, &creditor.public_key, today)?;
            // The payment key the line names, pending or active, of this PSD only.
            let s = cm
                .slots
                .iter()
                .position(|s| {
                    s.as_ref().is_some_and(|s| {
                        s.purpose == Purpose::Payment
                            && s.state != SlotState::Retired
                            && s.public_key == checked.public_key
                    })
                })
                .ok_or(Status::CertificateMismatch)?;
            if held
                .as_ref()
                .is_some_and(|h| h.line.number >= checked.line.number)
            {
                return Err(Status::NotNewer);
            }
            if cm.fees_due != Amount::ZERO {
                return Err(Status::FeesDue);
            }
            let fee = rates::in_effect(&cm.tables, today)
                .and_then(|t| t.fee(Service::CreditLine))
                .unwrap_or(Amount::ZERO);
            let next_set = if fee == Amount::ZERO {
                None
            } else {
                Some(self.persistent.set(i)?.charge(fee)?)
            };
            let mut next = cm.clone();
            for (n, other) in next.slots.iter_mut().enumerate() {
                let Some(other) = other else { continue };
                if n != s && other.purpose == Purpose::Payment && other.state == SlotState::Active {
                    other.state = SlotState::Retired;
                    other.key = None;
                }
            }
            let slot = next
                .slots
                .get_mut(s)
                .and_then(Option::as_mut)
                .ok_or(Status::Internal)?;
            slot.state = SlotState::Active;
            slot.certificate = data.to_vec();
            slot.fee_paid = fee;
            slot.valid = Some(checked.valid_seconds);
            let credit = CreditState {
                line: checked.line,
                line_hash: hash,
                slot: u8::try_from(s).map_err(|_| Status::Internal)?,
                valid: checked.valid,
                remaining: checked.line.amount,
                counter: 0,
                // Payment time never goes back, across lines too; the last payment stays
                // retrievable (a retry of it is not drawn again on the new line).
                last_time: held.as_ref().map_or(0, |h| h.last_time),
                last: held.and_then(|h| h.last),
            };
            let mut txn = Transaction::begin(ctx.store);
            if let Some(set) = &next_set {
                txn.write(rec::set(i), set.encode());
            }
            txn.write(rec::CERTMETER, next.encode());
            txn.write(rec::CREDIT, credit.encode());
            txn.commit()?;
            if let Some(set) = next_set {
                self.persistent.put_set(i, set);
            }
            self.persistent.certmeter = next;
            self.line_reply(&credit, fee, i, reply)
        }

        fn line_reply(
            &self,
            credit: &CreditState,
            fee: Amount,
            i: usize,
            reply: &mut Vec<u8>,
        ) -> Result<(), Status> {
            reply.put_u32(credit.line.number);
            reply.put_u64(fee.0);
            reply.put_u64(credit.remaining.0);
            self.persistent.set(i)?.readout().write(reply);
            Ok(())
        }

        /// PAY (80 5A 00 set): a payment certificate for `amount` to a merchant's order,
        /// drawn on the line held (Fig. 9). Every check first (the active payment key and
        /// its line, the clock within the line's dates, amount ≤ remaining → `9A46`, the
        /// payment fee from the set's DR); the certificate is signed, then ONE commit
        /// (remaining − amount, counter + 1, the fee, the reply kept); then the reply:
        /// `fee u64 | payment certificate`. A retry with the same transaction ID and the
        /// same request returns the same bytes, charged and drawn once.
        pub(in crate::psd) fn pay(
            &mut self,
            ctx: &mut Ctx<'_>,
            i: usize,
            data: &[u8],
            reply: &mut Vec<u8>,
        ) -> Result<(), Status> {
            let req = PayRequest::decode(data)?;
            let device = self.device()?;
            let set_byte = u8::try_from(i).map_err(|_| Status::Internal)?;
            let held = load(ctx.store)?;
            if let Some(last) = held
                .as_ref()
                .and_then(|h| h.last.as_ref())
                .filter(|l| l.transaction == req.transaction)
            {
                if last.set != set_byte || last.request != data {
                    return Err(Status::TransactionIdReused);
                }
                reply.extend_from_slice(&last.reply);
                return Ok(());
            }
            let cm = &self.persistent.certmeter;
            let (s, slot) = cm.active(Purpose::Payment)?;
            let credit = held.ok_or(Status::NoKeyForPurpose)?;
            if usize::from(credit.slot) != s {
                return Err(Status::CertificateMismatch);
            }
            // The postmark's clock rules (never back from the last timed service, never
            // before the last accepted audit's day, never past the inspection window), and
            // never back from the last payment.
            let (now, date) = self.service_time(ctx)?;
            if now < credit.last_time {
                return Err(Status::ClockRefused);
            }
            // Outside the line's validity the creditor would not honour it: not signed (the
            // slot keeps it to the second, the CREDIT record to the day).
            if date < credit.valid.0 || date > credit.valid.1 || !slot.covers(now) {
                return Err(Status::CertificateMismatch);
            }
            let remaining = credit
                .remaining
                .checked_sub(req.amount)
                .ok_or(Status::CreditInsufficient)?;
            let (fee, _) = cm.fee(Service::Payment, date)?;
            let next_set = self.persistent.set(i)?.charge(fee)?;
            let counter = credit
                .counter
                .checked_add(1)
                .ok_or(Status::CounterOverflow)?;
            let info_der = PaymentInfo {
                line: credit.line_hash,
                counter,
                device: device.id,
                amount: req.amount,
                currency: credit.line.currency,
                remaining,
                merchant: req.merchant,
                order: req.order,
                time: now,
                transaction: req.transaction,
            }
            .to_der();
            let key = slot.key.as_ref().ok_or(Status::KeyRevoked)?;
            let certificate = PaymentCertificate {
                signature: key.sign(&info_der),
                info_der,
            }
            .to_der();
            let out = pay_reply(fee, &certificate);
            let next = CreditState {
                remaining,
                counter,
                last_time: now,
                last: Some(LastPayment {
                    transaction: req.transaction,
                    set: set_byte,
                    request: data.to_vec(),
                    reply: out.clone(),
                }),
                ..credit
            };
            // Commit first: no payment leaves the card for a draw and a fee not durable.
            let mut txn = Transaction::begin(ctx.store);
            txn.write(rec::set(i), next_set.encode());
            txn.write(rec::CREDIT, next.encode());
            txn.commit()?;
            self.persistent.put_set(i, next_set);
            reply.extend_from_slice(&out);
            Ok(())
        }
    }
}

// --- DER helpers (small and strict: these formats need INTEGER, strings and SEQUENCE). ---

fn push_len(out: &mut Vec<u8>, len: usize) {
    // why: every length here is below 64 KiB; the casts keep the low bytes.
    #[allow(clippy::cast_possible_truncation)]
    if len < 0x80 {
        out.push(len as u8);
    } else if len < 0x100 {
        out.extend_from_slice(&[0x81, len as u8]);
    } else {
        out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]);
    }
}

fn tlv(out: &mut Vec<u8>, tag: u8, content: &[u8]) {
    out.push(tag);
    push_len(out, content.len());
    out.extend_from_slice(content);
}

fn wrap(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(content.len() + 4);
    tlv(&mut v, tag, content);
    v
}

/// A non-negative INTEGER from its big-endian magnitude (leading zeros dropped, one
/// zero byte added when the top bit is set).
fn push_uint_bytes(out: &mut Vec<u8>, magnitude: &[u8]) {
    let first = magnitude
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(magnitude.len());
    let m = &magnitude[first..];
    let mut content = Vec::with_capacity(m.len() + 1);
    if m.first().is_none_or(|&b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(m);
    tlv(out, 0x02, &content);
}

fn push_uint(out: &mut Vec<u8>, v: u64) {
    push_uint_bytes(out, &v.to_be_bytes());
}

/// The content of the next TLV of `tag` (definite, minimal lengths only).
fn read_tlv<'a>(r: &mut &'a [u8], tag: u8) -> Result<&'a [u8], Malformed> {
    let (&t, rest) = r.split_first().ok_or(Malformed::Length)?;
    if t != tag {
        return Err(Malformed::Value);
    }
    let (&l, mut rest) = rest.split_first().ok_or(Malformed::Length)?;
    let len = match l {
        0..=0x7F => usize::from(l),
        0x81 | 0x82 => {
            let n = usize::from(l & 0x7F);
            if rest.len() < n {
                return Err(Malformed::Length);
            }
            let (bytes, tail) = rest.split_at(n);
            rest = tail;
            let len = bytes.iter().fold(0usize, |a, &b| (a << 8) | usize::from(b));
            if len < 0x80 || (n == 2 && len < 0x100) {
                return Err(Malformed::Value);
            }
            len
        }
        _ => return Err(Malformed::Value),
    };
    if rest.len() < len {
        return Err(Malformed::Length);
    }
    let (content, tail) = rest.split_at(len);
    *r = tail;
    Ok(content)
}

/// The magnitude of a non-negative, minimally encoded INTEGER.
fn read_uint_bytes<'a>(r: &mut &'a [u8]) -> Result<&'a [u8], Malformed> {
    let c = read_tlv(r, 0x02)?;
    match c {
        [] => Err(Malformed::Value),
        [b, ..] if b & 0x80 != 0 => Err(Malformed::Value),
        [0, b, ..] if b & 0x80 == 0 => Err(Malformed::Value),
        [0, rest @ ..] if !rest.is_empty() => Ok(rest),
        _ => Ok(c),
    }
}

fn read_uint(r: &mut &[u8]) -> Result<u64, Malformed> {
    let m = read_uint_bytes(r)?;
    if m.len() > 8 {
        return Err(Malformed::Value);
    }
    Ok(m.iter().fold(0u64, |a, &b| (a << 8) | u64::from(b)))
}

/// `YYYYMMDDHHMMSSZ` of Unix seconds (from 2000 on; earlier times are clamped to 2000).
fn generalized_time(secs: u64) -> [u8; 15] {
    let date = Date::from_unix_seconds(secs).unwrap_or(Date {
        year: 2000,
        month: 1,
        day: 1,
    });
    let rem = secs % 86_400;
    let mut out = [b'0'; 15];
    let mut put = |at: usize, v: u64, n: usize| {
        let mut v = v;
        for i in (0..n).rev() {
            // why: v % 10 is a single digit.
            #[allow(clippy::cast_possible_truncation)]
            {
                out[at + i] = b'0' + (v % 10) as u8;
            }
            v /= 10;
        }
    };
    put(0, u64::from(date.year), 4);
    put(4, u64::from(date.month), 2);
    put(6, u64::from(date.day), 2);
    put(8, rem / 3600, 2);
    put(10, rem / 60 % 60, 2);
    put(12, rem % 60, 2);
    out[14] = b'Z';
    out
}

fn parse_generalized_time(text: &[u8]) -> Result<u64, Malformed> {
    if text.len() != 15 || text[14] != b'Z' || !text[..14].iter().all(u8::is_ascii_digit) {
        return Err(Malformed::Value);
    }
    let n = |a: usize, b: usize| {
        text[a..b]
            .iter()
            .fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'))
    };
    let date = Date::new(
        u16::try_from(n(0, 4)).map_err(|_| Malformed::Value)?,
        u8::try_from(n(4, 6)).map_err(|_| Malformed::Value)?,
        u8::try_from(n(6, 8)).map_err(|_| Malformed::Value)?,
    )
    .ok_or(Malformed::Value)?;
    let (h, m, s) = (n(8, 10), n(10, 12), n(12, 14));
    if h > 23 || m > 59 || s > 59 {
        return Err(Malformed::Value);
    }
    Ok((u64::from(date.day_number()) + DAYS_1970_TO_2000) * 86_400 + h * 3600 + m * 60 + s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::IndiciumKey;

    fn info() -> PaymentInfo {
        PaymentInfo {
            line: [7; 32],
            counter: 3,
            device: DeviceId(*b"PSD00001"),
            amount: Amount(12_345),
            currency: *b"EUR",
            remaining: Amount(0x80_0000),
            merchant: b"shop-1".to_vec(),
            order: b"order 42".to_vec(),
            time: 1_795_255_200,
            transaction: TransactionId([9; 8]),
        }
    }

    #[test]
    fn a_payment_certificate_round_trips_verifies_and_refuses_any_change() {
        let key = IndiciumKey::from_bytes(&[5; 32]).unwrap();
        let info_der = info().to_der();
        assert_eq!(PaymentInfo::from_der(&info_der).unwrap(), info());
        let cert = PaymentCertificate {
            signature: key.sign(&info_der),
            info_der,
        };
        let der = cert.to_der();
        let back = PaymentCertificate::from_der(&der).unwrap();
        assert_eq!(back, cert);
        assert_eq!(back.verify(&key.public_key()), Some(info()));
        let other = IndiciumKey::from_bytes(&[6; 32]).unwrap();
        assert_eq!(back.verify(&other.public_key()), None);
        for n in 0..der.len() {
            let mut d = der.clone();
            d[n] ^= 0x01;
            if let Ok(c) = PaymentCertificate::from_der(&d) {
                assert_eq!(c.verify(&key.public_key()), None, "byte {n}");
            }
            let _ = PaymentCertificate::from_der(&der[..n]);
        }
    }

    #[test]
    fn settlement_once_in_order_by_the_merchant_named_with_remaining_consistent() {
        let key = IndiciumKey::from_bytes(&[5; 32]).unwrap();
        let line = CreditLine {
            number: 1,
            amount: Amount(1_000),
            currency: *b"EUR",
        };
        let pay = |counter: u32, amount: u64, remaining: u64, merchant: &[u8]| {
            let info_der = PaymentInfo {
                counter,
                amount: Amount(amount),
                remaining: Amount(remaining),
                merchant: merchant.to_vec(),
                line: [7; 32],
                ..info()
            }
            .to_der();
            PaymentCertificate {
                signature: key.sign(&info_der),
                info_der,
            }
            .to_der()
        };
        let mut book = SettlementBook {
            line_hash: [7; 32],
            payment_key: key.public_key(),
            line,
            settled: 0,
            drawn: Amount::ZERO,
        };
        let p1 = pay(1, 300, 700, b"shop-1");
        let p2 = pay(2, 200, 500, b"shop-2");
        let p3 = pay(3, 100, 400, b"shop-1");
        // A gap: 2 before 1.
        assert_eq!(book.settle(&p2, b"shop-2"), Err(SettleRefusal::OutOfOrder));
        // Another merchant presents 1.
        assert_eq!(
            book.settle(&p1, b"shop-2"),
            Err(SettleRefusal::OtherMerchant)
        );
        let before = book.clone();
        assert_eq!(book.settle(&p1, b"shop-1").unwrap().counter, 1);
        // Double presentment.
        assert_eq!(
            book.settle(&p1, b"shop-1"),
            Err(SettleRefusal::AlreadySettled)
        );
        assert_ne!(book, before);
        assert_eq!(book.settle(&p3, b"shop-1"), Err(SettleRefusal::OutOfOrder));
        assert_eq!(book.settle(&p2, b"shop-2").unwrap().counter, 2);
        assert_eq!(book.settle(&p3, b"shop-1").unwrap().counter, 3);
        assert_eq!((book.settled, book.drawn), (3, Amount(600)));
        // A remaining that does not add up (a payment the book never saw, signed anyway).
        assert_eq!(
            book.settle(&pay(4, 50, 999, b"shop-1"), b"shop-1"),
            Err(SettleRefusal::Inconsistent)
        );
        // Signed by another key, or for another line.
        let other = IndiciumKey::from_bytes(&[6; 32]).unwrap();
        let info_der = PaymentInfo {
            counter: 4,
            line: [7; 32],
            ..info()
        }
        .to_der();
        let forged = PaymentCertificate {
            signature: other.sign(&info_der),
            info_der,
        }
        .to_der();
        assert_eq!(
            book.settle(&forged, b"shop-1"),
            Err(SettleRefusal::Unauthentic)
        );
        let mut other_line = book.clone();
        other_line.line_hash = [8; 32];
        assert_eq!(
            other_line.settle(&pay(4, 50, 350, b"shop-1"), b"shop-1"),
            Err(SettleRefusal::OtherLine)
        );
        assert_eq!((book.settled, book.drawn), (3, Amount(600)));
    }

    #[test]
    fn times_lines_requests_and_the_record_round_trip() {
        for t in [946_684_800, 1_795_255_200, 4_102_444_799] {
            assert_eq!(parse_generalized_time(&generalized_time(t)), Ok(t));
        }
        let line = CreditLine {
            number: 2,
            amount: Amount(100_000),
            currency: *b"EUR",
        };
        assert_eq!(CreditLine::from_der(&line.to_der()), Ok(line));
        assert!(CreditLine::from_der(&[0x30, 0]).is_err());
        let req = PayRequest {
            transaction: TransactionId([1; 8]),
            amount: Amount(5),
            merchant: b"m".to_vec(),
            order: b"o".to_vec(),
        };
        assert_eq!(PayRequest::decode(&req.encode()), Ok(req.clone()));
        let zero = PayRequest {
            amount: Amount::ZERO,
            ..req.clone()
        };
        assert!(PayRequest::decode(&zero.encode()).is_err());
        let st = CreditState {
            line,
            line_hash: [3; 32],
            slot: 1,
            valid: (
                Date::new(2026, 1, 1).unwrap(),
                Date::new(2027, 1, 1).unwrap(),
            ),
            remaining: Amount(99_000),
            counter: 4,
            last_time: 5,
            last: Some(LastPayment {
                transaction: TransactionId([1; 8]),
                set: 0,
                request: req.encode(),
                reply: alloc::vec![1, 2, 3],
            }),
        };
        let bytes = st.encode();
        assert_eq!(CreditState::decode(&bytes), Ok(st));
        for n in 0..bytes.len() {
            assert!(CreditState::decode(&bytes[..n]).is_err());
        }
    }
}
