//! The PSD applet: personalization, register sets, indicia, audits and refills.
//!
//! Every command that changes money commits its new registers through a [`Transaction`]
//! before it writes a byte of response that depends on them; the RAM copy is replaced only
//! after the commit succeeded. A power cut mid-command therefore leaves the store either
//! before or after the command, and the host learns about a debit only once it is durable.
//! `docs/apdu.md` is the contract for every command here.

pub mod audit;
pub mod device;
pub mod indicium;
pub mod receipt;
pub mod refill;
pub mod registers;
pub mod transfer;

use alloc::vec::Vec;

use crate::apdu::Command;
use crate::card::{Applet, Ctx};
use crate::crypto::IndiciumKey;
use crate::status::Status;
use crate::store::{RecordId, Store, StoreError, Transaction};
use crate::types::{Amount, Date, RegisterSetIndex};
use crate::wire::{Reader, Writer};

use audit::{AuditData, NONCE_LEN};
use device::{Device, DeviceInfo, Personalization, STATE_BLANK};
use indicium::{IndiciumData, IndiciumRequest};
use receipt::Receipt;
use refill::RefillCombination;
use registers::RegisterSet;
use transfer::{PsdSession, TransferState, REC_TRANSFER};

/// The PSD applet's AID: proprietary RID `F0 50 53 44 00` (`F0` + "PSD" + `00`), PIX `00 01`.
pub const PSD_AID: &[u8] = &[0xF0, 0x50, 0x53, 0x44, 0x00, 0x00, 0x01];

/// Class byte of the PSD's proprietary commands.
pub const CLA_PSD: u8 = 0x80;

/// Instruction bytes.
pub mod ins {
    /// PERSONALIZE.
    pub const PERSONALIZE: u8 = 0x10;
    /// READ REGISTERS.
    pub const READ_REGISTERS: u8 = 0x32;
    /// ISSUE INDICIUM.
    pub const ISSUE_INDICIUM: u8 = 0x40;
    /// AUDIT.
    pub const AUDIT: u8 = 0x50;
    /// REFILL.
    pub const REFILL: u8 = 0x52;
    /// RECEIPT (audit accepted by the back office).
    pub const RECEIPT: u8 = 0x54;
    /// OPEN SESSION (value transfer: the PSD's hello).
    pub const OPEN_SESSION: u8 = 0x60;
    /// AUTHENTICATE CARD (the card's hello and cryptogram).
    pub const AUTHENTICATE_CARD: u8 = 0x62;
    /// TRANSFER DEBIT (the purse's request).
    pub const TRANSFER_DEBIT: u8 = 0x64;
    /// TRANSFER CONFIRM (the purse's acknowledgement).
    pub const TRANSFER_CONFIRM: u8 = 0x66;
    /// TRANSFER RESOLVE (the purse's status, for a pending transfer).
    pub const TRANSFER_RESOLVE: u8 = 0x68;
    /// RESET RECOGNITION (issuer-authenticated).
    pub const RESET_RECOGNITION: u8 = 0x6A;
    /// GET DATA (device public data).
    pub const GET_DATA: u8 = 0xCA;
}

/// Days a date of mailing may lie ahead of the platform's clock (when it has one).
pub const MAX_DAYS_AHEAD: u32 = 7;
/// Days a date of mailing may lie behind the platform's clock: one, for hosts in time zones
/// behind UTC; backdating beyond that is refused.
pub const MAX_DAYS_BEHIND: u32 = 1;

const REC_DEVICE: RecordId = 0x0100;
const REC_COUNTERS: RecordId = 0x0101;
pub(crate) const REC_SET_BASE: RecordId = 0x0110;
const PSD_RECORDS: core::ops::RangeInclusive<RecordId> = 0x0100..=0x01FF;

/// A card with the PSD applet installed, its state loaded from `store`.
pub fn psd_card<S: Store, P: crate::platform::Platform>(
    store: S,
    platform: P,
) -> Result<crate::card::Card<S, P>, StoreError> {
    let applet = PsdApplet::load(&store)?;
    let mut card = crate::card::Card::new(store, platform);
    card.install(alloc::boxed::Box::new(applet));
    Ok(card)
}

/// The PSD application.
pub struct PsdApplet {
    device: Option<Device>,
    counters: Counters,
    sets: Vec<RegisterSet>,
    /// Volatile: the nonce of the last AUDIT since power-on, which a RECEIPT must name.
    last_audit_nonce: Option<[u8; NONCE_LEN]>,
    /// Value transfer to purses: personality, failed recognitions, pending transfer.
    transfer: TransferState,
    /// Volatile: the transfer session in progress.
    session: Option<PsdSession>,
}

/// Device-wide persistent counters (one record).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counters {
    /// Last date of mailing used (dates never go back).
    last_date: Option<Date>,
    /// Date of the last audit the back office accepted (RECEIPT).
    last_inspection: Option<Date>,
}

impl PsdApplet {
    /// Loads the applet's persistent state. A store without PSD records is a blank PSD;
    /// records that do not decode, or register sets without a device, are an error.
    pub fn load(store: &dyn Store) -> Result<Self, StoreError> {
        let ids: Vec<RecordId> = store
            .ids()?
            .into_iter()
            .filter(|id| PSD_RECORDS.contains(id))
            .collect();
        let Some(device) = store.read(REC_DEVICE)? else {
            if ids.is_empty() {
                return Ok(PsdApplet {
                    device: None,
                    counters: Counters::default(),
                    sets: Vec::new(),
                    last_audit_nonce: None,
                    transfer: TransferState::default(),
                    session: None,
                });
            }
            return Err(StoreError::Corrupt("PSD records without a device record"));
        };
        let device = Device::decode(&device).map_err(|_| StoreError::Corrupt("device record"))?;
        let counters = match store.read(REC_COUNTERS)? {
            None => return Err(StoreError::Corrupt("counters record missing")),
            Some(bytes) => decode_counters(&bytes)?,
        };
        let mut sets = Vec::new();
        for i in 0..device::MAX_REGISTER_SETS as u16 {
            match store.read(REC_SET_BASE + i)? {
                Some(bytes) => sets.push(
                    RegisterSet::decode(&bytes)
                        .map_err(|_| StoreError::Corrupt("register set record"))?,
                ),
                None => break,
            }
        }
        if sets.is_empty() {
            return Err(StoreError::Corrupt(
                "personalized PSD without register sets",
            ));
        }
        let transfer = TransferState::load(store.read(REC_TRANSFER)?)?;
        if let Some(p) = &transfer.pending {
            let set = sets
                .get(usize::from(p.set))
                .ok_or(StoreError::Corrupt("pending transfer on a missing set"))?;
            if set.pending != p.amount {
                return Err(StoreError::Corrupt(
                    "pending transfer and register disagree",
                ));
            }
        }
        Ok(PsdApplet {
            device: Some(device),
            counters,
            sets,
            last_audit_nonce: None,
            transfer,
            session: None,
        })
    }

    /// The register sets (for hosts that embed the applet directly, and tests).
    pub fn register_sets(&self) -> &[RegisterSet] {
        &self.sets
    }

    fn device(&self) -> Result<&Device, Status> {
        self.device.as_ref().ok_or(Status::ConditionsNotSatisfied)
    }

    fn set_index(&self, p2: u8) -> Result<usize, Status> {
        let i = usize::from(p2);
        if self.device.is_some() && i < self.sets.len() {
            Ok(i)
        } else if self.device.is_none() {
            Err(Status::ConditionsNotSatisfied)
        } else {
            Err(Status::ReferencedDataNotFound)
        }
    }

    fn personalize(
        &mut self,
        ctx: &mut Ctx<'_>,
        cmd: &Command<'_>,
        reply: &mut Vec<u8>,
    ) -> Result<(), Status> {
        cmd.expect_p1p2(0, 0)?;
        if self.device.is_some() {
            return Err(Status::ConditionsNotSatisfied);
        }
        let p = Personalization::decode(cmd.data)?;
        let device = Device::new(&p, IndiciumKey::generate(ctx.platform));
        let sets: Vec<RegisterSet> = p
            .licenses
            .iter()
            .map(|l| RegisterSet::new(l.license, l.origin))
            .collect();
        let mut txn = Transaction::begin(ctx.store);
        txn.write(REC_DEVICE, device.encode().to_vec());
        txn.write(REC_COUNTERS, encode_counters(Counters::default()));
        for (i, s) in sets.iter().enumerate() {
            txn.write(REC_SET_BASE + i as u16, s.encode());
        }
        txn.commit()?;
        reply.extend_from_slice(&device.key_id().0);
        reply.extend_from_slice(&device.public_key);
        self.device = Some(device);
        self.sets = sets;
        self.counters = Counters::default();
        self.transfer = TransferState::default();
        Ok(())
    }

    fn get_data(&self, cmd: &Command<'_>, reply: &mut Vec<u8>) -> Result<(), Status> {
        if cmd.p1 == 0x00 && cmd.p2 == 0x02 {
            cmd.expect_no_data()?;
            return self.transfer_info(reply);
        }
        cmd.expect_p1p2(0x00, 0x01)?;
        cmd.expect_no_data()?;
        match &self.device {
            None => reply.put_u8(STATE_BLANK),
            Some(d) => DeviceInfo {
                device: d.id,
                key_id: d.key_id(),
                public_key: d.public_key,
                vendor_public_key: d.vendor_public_key,
                max_postage: d.max_postage,
                max_dr: d.max_dr,
                register_sets: self.sets.len() as u8,
                last_date: self.counters.last_date,
                inspection_days: d.inspection_days,
                last_inspection: self.counters.last_inspection,
            }
            .write(reply),
        }
        Ok(())
    }

    fn read_registers(&self, cmd: &Command<'_>, reply: &mut Vec<u8>) -> Result<(), Status> {
        expect_p1_zero(cmd)?;
        cmd.expect_no_data()?;
        let i = self.set_index(cmd.p2)?;
        self.sets[i].readout().write(reply);
        Ok(())
    }

    fn issue_indicium(
        &mut self,
        ctx: &mut Ctx<'_>,
        cmd: &Command<'_>,
        reply: &mut Vec<u8>,
    ) -> Result<(), Status> {
        expect_p1_zero(cmd)?;
        let i = self.set_index(cmd.p2)?;
        let device = self.device()?;
        let req = IndiciumRequest::decode(cmd.data)?;
        let set = &self.sets[i];

        // A retry of the last request gets the same indicium back, debited once.
        if let Some((txn, payload)) = &set.last_indicium {
            if *txn == req.transaction {
                let data = IndiciumData::decode(payload).map_err(|_| Status::Internal)?;
                if !data.answers(&req) {
                    return Err(Status::TransactionIdReused);
                }
                reply.extend_from_slice(payload);
                reply.extend_from_slice(&device.key.sign(payload));
                return Ok(());
            }
        }

        if req.postage == Amount::ZERO {
            return Err(Status::WrongData);
        }
        if req.origin != set.origin {
            return Err(Status::OriginMismatch);
        }
        if req.postage > device.max_postage {
            return Err(Status::PostageAboveLimit);
        }
        if self.counters.last_date.is_some_and(|last| req.date < last) {
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
            let due = match self.counters.last_inspection {
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
        let data = IndiciumData {
            key_id: device.key_id(),
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
        next.last_indicium = Some((req.transaction, payload.clone()));

        // Commit first: no indicium leaves the card for a debit that is not durable.
        let counters = Counters {
            last_date: Some(req.date),
            ..self.counters
        };
        let mut txn = Transaction::begin(ctx.store);
        txn.write(REC_SET_BASE + i as u16, next.encode());
        if counters != self.counters {
            txn.write(REC_COUNTERS, encode_counters(counters));
        }
        txn.commit()?;

        let signature = device.key.sign(&payload);
        self.sets[i] = next;
        self.counters = counters;
        reply.extend_from_slice(&payload);
        reply.extend_from_slice(&signature);
        Ok(())
    }

    fn audit(&mut self, cmd: &Command<'_>, reply: &mut Vec<u8>) -> Result<(), Status> {
        expect_p1_zero(cmd)?;
        let i = self.set_index(cmd.p2)?;
        let device = self.device()?;
        let nonce: [u8; NONCE_LEN] = cmd.data.try_into().map_err(|_| Status::WrongLength)?;
        let s = &self.sets[i];
        let audit = AuditData {
            device: device.id,
            license: s.license,
            set: RegisterSetIndex(i as u8),
            ar: s.ar,
            dr: s.dr,
            control_sum: s.control_sum,
            pieces: s.pieces,
            refills: s.refills,
            transferred: s.transferred,
            pending: s.pending,
            last_combination: s.last_combination,
            nonce,
        };
        reply.extend_from_slice(&audit.seal(&device.k1));
        self.last_audit_nonce = Some(nonce);
        Ok(())
    }

    fn refill(
        &mut self,
        ctx: &mut Ctx<'_>,
        cmd: &Command<'_>,
        reply: &mut Vec<u8>,
    ) -> Result<(), Status> {
        expect_p1_zero(cmd)?;
        let i = self.set_index(cmd.p2)?;
        let device = self.device()?;
        // Step 290: the MAC under K1 first; nothing in an unauthenticated message counts.
        let c = RefillCombination::open(cmd.data, &device.k1)?;
        // Step 300: the combination must be for this device, this set, and its present state.
        let set = &self.sets[i];
        if c.device != device.id {
            return Err(Status::WrongDevice);
        }
        if c.license != set.license {
            return Err(Status::RefillWrongLicense);
        }
        if c.refills < set.refills {
            return Err(Status::RefillReplayed);
        }
        if c.refills != set.refills || c.control_sum != set.control_sum {
            return Err(Status::RefillStale);
        }
        if c.amount == Amount::ZERO {
            return Err(Status::WrongData);
        }
        // Step 305: credit, committed before the host hears of it.
        let next = set.credit(c.amount, device.max_dr, c.combination_id)?;
        let mut txn = Transaction::begin(ctx.store);
        txn.write(REC_SET_BASE + i as u16, next.encode());
        txn.commit()?;
        next.readout().write(reply);
        self.sets[i] = next;
        Ok(())
    }
}

impl PsdApplet {
    fn receipt(
        &mut self,
        ctx: &mut Ctx<'_>,
        cmd: &Command<'_>,
        reply: &mut Vec<u8>,
    ) -> Result<(), Status> {
        cmd.expect_p1p2(0, 0)?;
        let device = self.device()?;
        let r = Receipt::open(cmd.data, &device.k1)?;
        if r.device != device.id {
            return Err(Status::WrongDevice);
        }
        // Only the audit this session produced last: an old receipt cannot renew anything.
        let fresh = self
            .last_audit_nonce
            .is_some_and(|n| bool::from(subtle::ConstantTimeEq::ct_eq(&n[..], &r.nonce[..])));
        if !fresh {
            return Err(Status::ReceiptForOtherAudit);
        }
        // A receipt dated ahead of the device's clock would stretch the inspection window.
        if let Some(today) = ctx.platform.today() {
            if r.accepted_on.day_number() > today.day_number().saturating_add(MAX_DAYS_BEHIND) {
                return Err(Status::WrongData);
            }
        }
        let inspected = self.counters.last_inspection.max(Some(r.accepted_on));
        let counters = Counters {
            last_inspection: inspected,
            ..self.counters
        };
        if counters != self.counters {
            let mut txn = Transaction::begin(ctx.store);
            txn.write(REC_COUNTERS, encode_counters(counters));
            txn.commit()?;
            self.counters = counters;
        }
        self.last_audit_nonce = None;
        if let Some(d) = self.counters.last_inspection {
            d.write(reply);
        }
        Ok(())
    }
}

impl Applet for PsdApplet {
    fn aid(&self) -> &'static [u8] {
        PSD_AID
    }

    fn select(&mut self, _ctx: &mut Ctx<'_>) -> Result<(), Status> {
        Ok(())
    }

    fn deselect(&mut self) {
        self.last_audit_nonce = None;
        self.session = None;
    }

    fn call(
        &mut self,
        ctx: &mut Ctx<'_>,
        cmd: &Command<'_>,
        reply: &mut Vec<u8>,
    ) -> Result<(), Status> {
        use ins::*;
        let known = matches!(
            cmd.ins,
            PERSONALIZE
                | READ_REGISTERS
                | ISSUE_INDICIUM
                | AUDIT
                | REFILL
                | RECEIPT
                | GET_DATA
                | OPEN_SESSION
                | AUTHENTICATE_CARD
                | TRANSFER_DEBIT
                | TRANSFER_CONFIRM
                | TRANSFER_RESOLVE
                | RESET_RECOGNITION
        );
        if !known {
            return Err(Status::InstructionNotSupported);
        }
        if cmd.cla != CLA_PSD {
            return Err(Status::ClassNotSupported);
        }
        match cmd.ins {
            PERSONALIZE => self.personalize(ctx, cmd, reply),
            READ_REGISTERS => self.read_registers(cmd, reply),
            ISSUE_INDICIUM => self.issue_indicium(ctx, cmd, reply),
            AUDIT => self.audit(cmd, reply),
            REFILL => self.refill(ctx, cmd, reply),
            RECEIPT => self.receipt(ctx, cmd, reply),
            OPEN_SESSION => self.open_session(ctx, cmd, reply),
            AUTHENTICATE_CARD => self.authenticate_card(ctx, cmd, reply),
            TRANSFER_DEBIT => self.transfer_debit(ctx, cmd, reply),
            TRANSFER_CONFIRM => self.transfer_confirm(ctx, cmd, reply),
            TRANSFER_RESOLVE => self.transfer_resolve(ctx, cmd, reply),
            RESET_RECOGNITION => self.reset_recognition(ctx, cmd),
            _ => self.get_data(cmd, reply),
        }
    }
}

fn expect_p1_zero(cmd: &Command<'_>) -> Result<(), Status> {
    if cmd.p1 == 0 {
        Ok(())
    } else {
        Err(Status::IncorrectP1P2)
    }
}

fn encode_counters(c: Counters) -> Vec<u8> {
    let mut w = Vec::with_capacity(11);
    w.put_u8(1);
    for d in [c.last_date, c.last_inspection] {
        match d {
            None => w.put_u8(0),
            Some(d) => {
                w.put_u8(1);
                d.write(&mut w);
            }
        }
    }
    w
}

fn decode_counters(bytes: &[u8]) -> Result<Counters, StoreError> {
    let corrupt = |_| StoreError::Corrupt("counters record");
    let mut r = Reader::new(bytes);
    if r.u8().map_err(corrupt)? != 1 {
        return Err(StoreError::Corrupt("counters record version"));
    }
    let mut date = || -> Result<Option<Date>, StoreError> {
        match r.u8().map_err(corrupt)? {
            0 => Ok(None),
            1 => Ok(Some(Date::read(&mut r).map_err(corrupt)?)),
            _ => Err(StoreError::Corrupt("counters record")),
        }
    };
    let counters = Counters {
        last_date: date()?,
        last_inspection: date()?,
    };
    r.finish().map_err(corrupt)?;
    Ok(counters)
}
