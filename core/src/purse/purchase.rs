//! Paying a merchant (seed 002 Fig. 2 and 5, CEPS-style): the terminal's purchase request
//! and the purse's signed purchase record.
//!
//! The record names the card, the card's purchase number, the amount, the balance after,
//! the terminal and the terminal's own counter, and the date; the purse signs it with its
//! purchase key (ECDSA P-256), which the issuer certified. A terminal needs only the
//! issuer's public key to check a purchase: no secret sits in the merchant's shop.

use alloc::vec::Vec;

use crate::card::Ctx;
use crate::crypto::{self, SIGNATURE_LEN};
use crate::records::purse as rec;
use crate::status::Status;
use crate::store::Transaction;
use crate::types::{Amount, CardId, Date, SchemeId, TerminalId};
use crate::wire::{Malformed, Reader, Writer};

use super::state::{LogEntry, LogKind};

/// PURCHASE command data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PurchaseRequest {
    /// The terminal.
    pub terminal: TerminalId,
    /// The terminal's counter for this purchase (it never reuses one).
    pub terminal_counter: u32,
    /// Price.
    pub amount: Amount,
    /// Date of the purchase (the terminal's).
    pub date: Date,
}

impl PurchaseRequest {
    /// terminal ‖ counter ‖ amount ‖ date.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(24);
        w.extend_from_slice(&self.terminal.0);
        w.put_u32(self.terminal_counter);
        w.put_u64(self.amount.0);
        self.date.write(&mut w);
        w
    }

    /// Parses the layout.
    pub fn decode(bytes: &[u8]) -> Result<PurchaseRequest, Malformed> {
        let mut r = Reader::new(bytes);
        let p = PurchaseRequest {
            terminal: TerminalId(r.array()?),
            terminal_counter: r.u32()?,
            amount: Amount(r.u64()?),
            date: Date::read(&mut r)?,
        };
        r.finish()?;
        Ok(p)
    }
}

/// What the purse signs for a purchase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PurchaseRecord {
    /// The card.
    pub card: CardId,
    /// Its scheme.
    pub scheme: SchemeId,
    /// The card's purchase (transaction) number.
    pub number: u32,
    /// Price paid.
    pub amount: Amount,
    /// Balance after.
    pub balance: Amount,
    /// The terminal.
    pub terminal: TerminalId,
    /// The terminal's counter.
    pub terminal_counter: u32,
    /// Date.
    pub date: Date,
}

const PURCHASE_TAG: &[u8] = b"openpsd purchase v1";

impl PurchaseRecord {
    /// The signed bytes: tag ‖ card ‖ scheme ‖ number ‖ amount ‖ balance ‖ terminal ‖
    /// terminal counter ‖ date.
    pub fn body(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(72);
        w.extend_from_slice(PURCHASE_TAG);
        w.extend_from_slice(&self.card.0);
        w.put_u32(self.scheme.0);
        w.put_u32(self.number);
        w.put_u64(self.amount.0);
        w.put_u64(self.balance.0);
        w.extend_from_slice(&self.terminal.0);
        w.put_u32(self.terminal_counter);
        self.date.write(&mut w);
        w
    }

    /// Parses body ‖ signature without checking the signature.
    pub fn decode(bytes: &[u8]) -> Result<(PurchaseRecord, [u8; SIGNATURE_LEN]), Malformed> {
        let mut r = Reader::new(bytes);
        if r.take(PURCHASE_TAG.len())? != PURCHASE_TAG {
            return Err(Malformed::Value);
        }
        let rec = PurchaseRecord {
            card: CardId(r.array()?),
            scheme: SchemeId(r.u32()?),
            number: r.u32()?,
            amount: Amount(r.u64()?),
            balance: Amount(r.u64()?),
            terminal: TerminalId(r.array()?),
            terminal_counter: r.u32()?,
            date: Date::read(&mut r)?,
        };
        let sig = r.array()?;
        r.finish()?;
        Ok((rec, sig))
    }

    /// Parses body ‖ signature and checks the signature with the card's purchase key.
    pub fn verify(bytes: &[u8], public_key: &[u8]) -> Option<PurchaseRecord> {
        let (rec, sig) = Self::decode(bytes).ok()?;
        crypto::verify_signature(public_key, &rec.body(), &sig).then_some(rec)
    }
}

/// The last-purchase record: request ‖ record length (`u16`) ‖ signed record.
pub(super) fn encode_last_purchase(req: &PurchaseRequest, record: &[u8]) -> Vec<u8> {
    let mut w = req.encode();
    // why: the record is a fixed-layout purchase record and its 64-byte signature, which
    // the applet just built: far below 64 KiB.
    #[allow(clippy::cast_possible_truncation)]
    w.put_u16(record.len() as u16);
    w.extend_from_slice(record);
    w
}

/// Parses the last-purchase record.
pub(super) fn decode_last_purchase(bytes: &[u8]) -> Result<(PurchaseRequest, Vec<u8>), Malformed> {
    let req = PurchaseRequest::decode(bytes.get(..24).ok_or(Malformed::Length)?)?;
    let mut r = Reader::new(&bytes[24..]);
    let n = r.u16()?;
    let record = r.take(usize::from(n))?.to_vec();
    r.finish()?;
    Ok((req, record))
}

impl super::PurseApplet {
    /// PURCHASE (80 7A 00 00): debit committed before the signed record leaves; the same
    /// request again (a terminal that lost the reply) gets the same record, debited once.
    pub(super) fn purchase(
        &mut self,
        ctx: &mut Ctx<'_>,
        req: PurchaseRequest,
        reply: &mut Vec<u8>,
    ) -> Result<(), Status> {
        let verified = self.volatile.pin_verified;
        let c = self.personalized_mut()?;
        if c.id.certificate.is_none() {
            return Err(Status::ConditionsNotSatisfied);
        }
        if !verified {
            return Err(Status::SecurityStatusNotSatisfied);
        }
        if let Some((last, record)) = &c.last_purchase {
            if last.terminal == req.terminal && last.terminal_counter == req.terminal_counter {
                if *last != req {
                    return Err(Status::TransactionIdReused);
                }
                reply.extend_from_slice(record);
                return Ok(());
            }
        }
        let state = c.state.debited(req.amount)?;
        let record = PurchaseRecord {
            card: c.id.card,
            scheme: c.id.scheme,
            number: state.purchases,
            amount: req.amount,
            balance: state.balance,
            terminal: req.terminal,
            terminal_counter: req.terminal_counter,
            date: req.date,
        };
        let mut signed = record.body();
        let sig = c.id.purchase_key.sign(&signed);
        signed.extend_from_slice(&sig);
        let log = c.log.with(LogEntry {
            kind: LogKind::Purchase,
            counterpart: req.terminal.0,
            number: state.purchases,
            amount: req.amount,
            balance: state.balance,
            date: Some(req.date),
        });
        let mut txn = Transaction::begin(ctx.store);
        txn.write(rec::STATE, state.encode());
        txn.write(rec::LOG, log.encode());
        txn.write(rec::LAST_PURCHASE, encode_last_purchase(&req, &signed));
        txn.commit()?;
        c.state = state;
        c.log = log;
        reply.extend_from_slice(&signed);
        c.last_purchase = Some((req, signed));
        Ok(())
    }
}
