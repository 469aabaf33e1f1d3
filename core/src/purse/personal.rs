//! The purse's PERSONALIZE data, its issuer certificate, and the public data a host reads
//! back (GET DATA), with the three commands that write and read them.

use alloc::vec::Vec;
use zeroize::Zeroizing;

use super::command::DataObject;
use super::state::{
    read_date, write_date, CardRecognition, Identity, Log, PairedTable, Persistent, PinRecord,
    PurseState,
};
use crate::card::Ctx;
use crate::crypto::{self, IndiciumKey, MacKey, MAC_KEY_LEN, PUBLIC_KEY_LEN, SIGNATURE_LEN};
use crate::records::purse as rec;
use crate::status::Status;
use crate::store::Transaction;
use crate::types::{Amount, CardId, Date, SchemeId, TransferCount};
use crate::wire::{Malformed, Reader, Writer};

/// Layout version of [`PursePersonalization`].
pub const PERSONALIZATION_VERSION: u8 = 2;

/// PERSONALIZE command data for a purse (sent once, by the card issuer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PursePersonalization {
    /// Serial number.
    pub card: CardId,
    /// Scheme.
    pub scheme: SchemeId,
    /// Admin key: [`crate::transfer::card_admin_key`] of the issuer's admin key.
    pub admin_key: [u8; MAC_KEY_LEN],
    /// The issuer's public key (SEC1 uncompressed), which will certify the purchase key.
    pub issuer_public_key: [u8; PUBLIC_KEY_LEN],
    /// Highest balance.
    pub max_balance: Amount,
    /// Highest amount of one transfer.
    pub max_transfer: Amount,
    /// PIN tries (1 to 15).
    pub pin_tries: u8,
    /// Failed recognitions that block transfers (1 to 15).
    pub max_failures: u8,
    /// The holder's PIN (4 to 12 bytes).
    pub pin: Vec<u8>,
}

impl Drop for PursePersonalization {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.admin_key);
        zeroize::Zeroize::zeroize(&mut self.pin);
    }
}

impl PursePersonalization {
    /// Layout: version 02 ‖ card ‖ scheme ‖ admin key ‖ issuer key ‖ max balance ‖ max
    /// transfer ‖ PIN tries ‖ max failures ‖ PIN length ‖ PIN. (Version 01 carried a card
    /// key diversified from the scheme's master key; it is refused since issue 12: the card
    /// generates its own recognition key.)
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut w = Zeroizing::new(Vec::with_capacity(140));
        w.put_u8(PERSONALIZATION_VERSION);
        w.extend_from_slice(&self.card.0);
        w.put_u32(self.scheme.0);
        w.extend_from_slice(&self.admin_key);
        w.extend_from_slice(&self.issuer_public_key);
        w.put_u64(self.max_balance.0);
        w.put_u64(self.max_transfer.0);
        w.put_u8(self.pin_tries);
        w.put_u8(self.max_failures);
        w.put_short_bytes(&self.pin);
        w
    }

    /// Parses and validates: a valid issuer key, 0 < max transfer <= max balance, tries
    /// 1 to 15, a PIN of 4 to 12 bytes.
    pub fn decode(bytes: &[u8]) -> Result<PursePersonalization, Malformed> {
        let mut r = Reader::new(bytes);
        if r.u8()? != PERSONALIZATION_VERSION {
            return Err(Malformed::Value);
        }
        let p = PursePersonalization {
            card: CardId(r.array()?),
            scheme: SchemeId(r.u32()?),
            admin_key: r.array()?,
            issuer_public_key: r.array()?,
            max_balance: Amount(r.u64()?),
            max_transfer: Amount(r.u64()?),
            pin_tries: r.u8()?,
            max_failures: r.u8()?,
            pin: r.short_bytes()?.to_vec(),
        };
        r.finish()?;
        let tries_ok = (1..=15).contains(&p.pin_tries) && (1..=15).contains(&p.max_failures);
        let limits_ok = p.max_transfer > Amount::ZERO && p.max_transfer <= p.max_balance;
        if !tries_ok
            || !limits_ok
            || PinRecord::new(&p.pin, p.pin_tries).is_none()
            || !crypto::is_valid_public_key(&p.issuer_public_key)
        {
            return Err(Malformed::Value);
        }
        Ok(p)
    }
}

/// What the issuer signs to certify a purse's purchase key.
pub fn certificate_body(card: CardId, scheme: SchemeId, public_key: &[u8]) -> Vec<u8> {
    let mut w = Vec::with_capacity(100);
    w.extend_from_slice(b"openpsd purse certificate v1");
    w.extend_from_slice(&card.0);
    w.put_u32(scheme.0);
    w.extend_from_slice(public_key);
    w
}

/// The purse's public data (GET DATA 00 01 when personalized).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PurseInfo {
    /// Serial number.
    pub card: CardId,
    /// Scheme.
    pub scheme: SchemeId,
    /// Balance.
    pub balance: Amount,
    /// Highest balance.
    pub max_balance: Amount,
    /// Highest amount of one transfer.
    pub max_transfer: Amount,
    /// Transfers received.
    pub transfers: TransferCount,
    /// Value received over its life.
    pub total_in: Amount,
    /// Date of the last transfer.
    pub last_transfer: Option<Date>,
    /// Purchases made.
    pub purchases: u32,
    /// PIN tries left.
    pub pin_tries_left: u8,
    /// PIN tries when unblocked.
    pub pin_tries: u8,
    /// Failed recognitions in a row.
    pub failures: u8,
    /// Failed recognitions that block transfers.
    pub max_failures: u8,
    /// Purchase verification key.
    pub public_key: [u8; PUBLIC_KEY_LEN],
    /// The issuer's certificate on it, once installed.
    pub certificate: Option<[u8; SIGNATURE_LEN]>,
}

/// GET DATA life-cycle byte: blank.
pub const PURSE_BLANK: u8 = 0x00;
/// GET DATA life-cycle byte: personalized.
pub const PURSE_PERSONALIZED: u8 = 0x01;

impl PurseInfo {
    pub(crate) fn from_parts(id: &Identity, pin: &PinRecord, s: &PurseState) -> PurseInfo {
        PurseInfo {
            card: id.card,
            scheme: id.scheme,
            balance: s.balance,
            max_balance: id.max_balance,
            max_transfer: id.max_transfer,
            transfers: s.transfers,
            total_in: s.total_in,
            last_transfer: s.last_transfer,
            purchases: s.purchases,
            pin_tries_left: pin.tries_left,
            pin_tries: id.pin_tries,
            failures: s.failures,
            max_failures: id.max_failures,
            public_key: id.purchase_key.public_key(),
            certificate: id.certificate,
        }
    }

    /// Layout: 01 ‖ card ‖ scheme ‖ balance ‖ max balance ‖ max transfer ‖ transfers ‖
    /// total in ‖ last transfer date ‖ purchases ‖ PIN tries left ‖ PIN tries ‖ failures ‖
    /// max failures ‖ public key ‖ 00 | 01 certificate.
    pub fn write(&self, w: &mut Vec<u8>) {
        w.put_u8(PURSE_PERSONALIZED);
        w.extend_from_slice(&self.card.0);
        w.put_u32(self.scheme.0);
        w.put_u64(self.balance.0);
        w.put_u64(self.max_balance.0);
        w.put_u64(self.max_transfer.0);
        w.put_u32(self.transfers.0);
        w.put_u64(self.total_in.0);
        write_date(w, self.last_transfer);
        w.put_u32(self.purchases);
        w.put_u8(self.pin_tries_left);
        w.put_u8(self.pin_tries);
        w.put_u8(self.failures);
        w.put_u8(self.max_failures);
        w.extend_from_slice(&self.public_key);
        match &self.certificate {
            None => w.put_u8(0),
            Some(c) => {
                w.put_u8(1);
                w.extend_from_slice(c);
            }
        }
    }

    /// Parses GET DATA; `Ok(None)` for a blank purse.
    pub fn decode(bytes: &[u8]) -> Result<Option<PurseInfo>, Malformed> {
        let mut r = Reader::new(bytes);
        match r.u8()? {
            PURSE_BLANK => return r.finish().map(|_| None),
            PURSE_PERSONALIZED => {}
            _ => return Err(Malformed::Value),
        }
        let info = PurseInfo {
            card: CardId(r.array()?),
            scheme: SchemeId(r.u32()?),
            balance: Amount(r.u64()?),
            max_balance: Amount(r.u64()?),
            max_transfer: Amount(r.u64()?),
            transfers: TransferCount(r.u32()?),
            total_in: Amount(r.u64()?),
            last_transfer: read_date(&mut r)?,
            purchases: r.u32()?,
            pin_tries_left: r.u8()?,
            pin_tries: r.u8()?,
            failures: r.u8()?,
            max_failures: r.u8()?,
            public_key: r.array()?,
            certificate: match r.u8()? {
                0 => None,
                1 => Some(r.array()?),
                _ => return Err(Malformed::Value),
            },
        };
        r.finish()?;
        Ok(Some(info))
    }

    /// Whether the certificate is the issuer's signature on this card's purchase key.
    pub fn certified_by(&self, issuer_public_key: &[u8]) -> bool {
        match &self.certificate {
            None => false,
            Some(c) => crypto::verify_signature(
                issuer_public_key,
                &certificate_body(self.card, self.scheme, &self.public_key),
                c,
            ),
        }
    }
}

impl super::PurseApplet {
    /// PERSONALIZE (80 10 00 00): identity, a fresh purchase key, the PIN and empty
    /// records in one commit; answers the purchase public key.
    pub(super) fn personalize(
        &mut self,
        ctx: &mut Ctx<'_>,
        data: &[u8],
        reply: &mut Vec<u8>,
    ) -> Result<(), Status> {
        let p = PursePersonalization::decode(data)?;
        let id = Identity {
            card: p.card,
            scheme: p.scheme,
            recognition: CardRecognition::Certified(IndiciumKey::generate(ctx.platform)),
            admin_key: MacKey::new(p.admin_key),
            issuer_public_key: p.issuer_public_key,
            purchase_key: IndiciumKey::generate(ctx.platform),
            certificate: None,
            max_balance: p.max_balance,
            max_transfer: p.max_transfer,
            pin_tries: p.pin_tries,
            max_failures: p.max_failures,
        };
        let pin = PinRecord::new(&p.pin, p.pin_tries).ok_or(Status::WrongData)?;
        let card = Persistent {
            id,
            pin,
            state: PurseState::default(),
            paired: PairedTable::default(),
            log: Log::default(),
            last_purchase: None,
            credentials: Default::default(),
        };
        let mut txn = Transaction::begin(ctx.store);
        txn.write(rec::IDENTITY, card.id.encode().to_vec());
        txn.write(rec::PIN, card.pin.encode().to_vec());
        txn.write(rec::STATE, card.state.encode());
        txn.write(rec::PAIRED, card.paired.encode());
        txn.write(rec::LOG, card.log.encode());
        txn.commit()?;
        reply.extend_from_slice(&card.id.purchase_key.public_key());
        self.persistent = Some(card);
        Ok(())
    }

    /// CERTIFY (80 12 00 00): the issuer's signature on the purchase key, installed once.
    pub(super) fn certify(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> Result<(), Status> {
        let c = self.personalized_mut()?;
        if c.id.certificate.is_some() {
            return Err(Status::ConditionsNotSatisfied);
        }
        let sig: [u8; SIGNATURE_LEN] = data.try_into().map_err(|_| Status::WrongLength)?;
        let body = certificate_body(c.id.card, c.id.scheme, &c.id.purchase_key.public_key());
        if !crypto::verify_signature(&c.id.issuer_public_key, &body, &sig) {
            return Err(Status::SecurityStatusNotSatisfied);
        }
        let mut id = c.id.clone();
        id.certificate = Some(sig);
        let mut txn = Transaction::begin(ctx.store);
        txn.write(rec::IDENTITY, id.encode().to_vec());
        txn.commit()?;
        c.id = id;
        Ok(())
    }

    /// GET DATA (80 CA 00 01/02/03): the public data (or the blank byte), the paired table
    /// or the log, the last two as stored.
    pub(super) fn get_data(&self, object: DataObject, reply: &mut Vec<u8>) -> Result<(), Status> {
        match (object, &self.persistent) {
            (DataObject::Info, None) => reply.put_u8(PURSE_BLANK),
            (DataObject::Info, Some(c)) => {
                PurseInfo::from_parts(&c.id, &c.pin, &c.state).write(reply)
            }
            (DataObject::Paired, Some(c)) => reply.extend_from_slice(&c.paired.encode()),
            (DataObject::Log, Some(c)) => reply.extend_from_slice(&c.log.encode()),
            (DataObject::Recognition, Some(_)) => return self.recognition_info(reply),
            (DataObject::Paired | DataObject::Log | DataObject::Recognition, None) => {
                return Err(Status::ConditionsNotSatisfied)
            }
        }
        Ok(())
    }
}
