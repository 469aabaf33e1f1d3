//! Paying a merchant (seed 002 Fig. 2 and 5, CEPS-style): the terminal's purchase request
//! and the purse's signed purchase record.
//!
//! The record names the card, the card's purchase number, the amount, the balance after,
//! the terminal and the terminal's own counter, and the date; the purse signs it with its
//! purchase key (ECDSA P-256), which the issuer certified. A terminal needs only the
//! issuer's public key to check a purchase: no secret sits in the merchant's shop.

use alloc::vec::Vec;

use crate::crypto::{self, SIGNATURE_LEN};
use crate::types::{Amount, CardId, Date, SchemeId, TerminalId};
use crate::wire::{Malformed, Reader, Writer};

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
