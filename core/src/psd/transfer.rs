//! The PSD's side of value transfer to a purse card (seed 002, Fig. 8): recognition,
//! debit into pending, confirmation, resolution of an interrupted transfer at the next
//! contact, and the authenticated reset of the failed-recognition counter. The issuer's
//! settlement of a transfer whose purse never comes back is in [`super::settle`].
//!
//! The persistent [`TransferState`] is the PSD's transfer *personality* (transfers started,
//! completed, totalizer, last date), its failed-recognition counter, and the pending
//! transfer if one is in flight. It is committed in the same transaction as the register
//! set whose pending register it explains, so the two never disagree.

use alloc::boxed::Box;
use alloc::vec::Vec;

use subtle::ConstantTimeEq;

use super::device::Recognition;
use super::PsdApplet;
use crate::card::Ctx;
use crate::crypto::IndiciumKey;
use crate::records::psd as rec;
use crate::status::Status;
use crate::store::{StoreError, Transaction};
use crate::transfer::cert::{Credentials, DeviceCertificate, DeviceKind, RecognitionInfo};
use crate::transfer::{
    self, Ack, CardHello, PsdHello, Request, Resolution, Session, TransferStatus, Value,
    CHALLENGE_LEN,
};
use crate::types::{Amount, CardId, Date, TransferCount};
use crate::wire::{Malformed, Reader, Writer};

/// A transfer debited from DR that the purse has not acknowledged yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pending {
    /// The card it is for.
    pub card: CardId,
    /// The register set it was debited from.
    pub set: u8,
    /// The PSD's number for it.
    pub transfer: TransferCount,
    /// The card's transfer count in the session it was made in.
    pub card_transfers: TransferCount,
    /// The value.
    pub amount: Amount,
}

/// The PSD's persistent transfer state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransferState {
    /// Transfers started (numbers each transfer; part of the session context).
    pub started: TransferCount,
    /// Transfers the purse acknowledged.
    pub completed: TransferCount,
    /// Value moved out, acknowledged (the totalizer).
    pub total_out: Amount,
    /// Date of the last completed transfer, when the platform had a clock.
    pub last_date: Option<Date>,
    /// Failed recognitions in a row.
    pub failures: u8,
    /// Highest issuer counter used, by RESET RECOGNITION and by the issuer's settlement of
    /// a pending transfer (each must go up).
    pub reset_counter: u32,
    /// The transfer in flight, if any.
    pub pending: Option<Pending>,
}

impl TransferState {
    /// Record layout, version 1.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(64);
        w.put_u8(1);
        w.put_u32(self.started.0);
        w.put_u32(self.completed.0);
        w.put_u64(self.total_out.0);
        match self.last_date {
            None => w.put_u32(0),
            Some(d) => d.write(&mut w),
        }
        w.put_u8(self.failures);
        w.put_u32(self.reset_counter);
        match &self.pending {
            None => w.put_u8(0),
            Some(p) => {
                w.put_u8(1);
                w.extend_from_slice(&p.card.0);
                w.put_u8(p.set);
                w.put_u32(p.transfer.0);
                w.put_u32(p.card_transfers.0);
                w.put_u64(p.amount.0);
            }
        }
        w
    }

    /// Parses the record.
    pub fn decode(bytes: &[u8]) -> Result<TransferState, Malformed> {
        let mut r = Reader::new(bytes);
        if r.u8()? != 1 {
            return Err(Malformed::Value);
        }
        let started = TransferCount(r.u32()?);
        let completed = TransferCount(r.u32()?);
        let total_out = Amount(r.u64()?);
        let last_date = if r.remaining().starts_with(&[0, 0, 0, 0]) {
            r.take(4)?;
            None
        } else {
            Some(Date::read(&mut r)?)
        };
        let failures = r.u8()?;
        let reset_counter = r.u32()?;
        let pending = match r.u8()? {
            0 => None,
            1 => Some(Pending {
                card: CardId(r.array()?),
                set: r.u8()?,
                transfer: TransferCount(r.u32()?),
                card_transfers: TransferCount(r.u32()?),
                amount: Amount(r.u64()?),
            }),
            _ => return Err(Malformed::Value),
        };
        r.finish()?;
        Ok(TransferState {
            started,
            completed,
            total_out,
            last_date,
            failures,
            reset_counter,
            pending,
        })
    }

    /// Loads the record (absent: a PSD that never transferred).
    pub(super) fn load(bytes: Option<Vec<u8>>) -> Result<TransferState, StoreError> {
        match bytes {
            None => Ok(TransferState::default()),
            Some(b) => {
                TransferState::decode(&b).map_err(|_| StoreError::Corrupt("transfer record"))
            }
        }
    }
}

/// Where the PSD is in a transfer session (volatile: lost at reset or deselect).
#[derive(Clone, Debug)]
pub(super) enum PsdSession {
    /// OPEN SESSION answered with this hello, made with this ephemeral key (boxed: the
    /// hello with its certificate is the largest state by far).
    Opened(Box<(PsdHello, IndiciumKey)>),
    /// The card proved the session key.
    Recognized(Session),
    /// DEBIT committed this value; CONFIRM expected.
    Debited(Session, Value),
    /// The pending transfer ended (CONFIRM or RESOLVE): only TRANSFER CLOSE is left.
    Ended(Session),
}

/// The public transfer data (GET DATA `00 02`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransferInfo {
    /// The scheme.
    pub scheme: crate::types::SchemeId,
    /// Failed recognitions that block the function.
    pub max_failures: u8,
    /// The persistent state.
    pub state: TransferState,
}

impl TransferInfo {
    /// Layout: scheme ‖ max failures ‖ transfer record (as stored).
    pub fn write(&self, w: &mut Vec<u8>) {
        w.put_u32(self.scheme.0);
        w.put_u8(self.max_failures);
        w.extend_from_slice(&self.state.encode());
    }

    /// Parses the layout.
    pub fn decode(bytes: &[u8]) -> Result<TransferInfo, Malformed> {
        let mut r = Reader::new(bytes);
        let scheme = crate::types::SchemeId(r.u32()?);
        let max_failures = r.u8()?;
        let state = TransferState::decode(r.remaining())?;
        Ok(TransferInfo {
            scheme,
            max_failures,
            state,
        })
    }
}

/// The PSD's means of recognition: its key, the issuer's public key and its certificate.
/// `6985` without a scheme, `9A25` for a PSD personalized with the retired scheme key,
/// `9A26` before the issuer installed the certificate.
fn recognition_of(
    p: &super::state::Persistent,
) -> Result<(&IndiciumKey, &[u8], &DeviceCertificate), Status> {
    let scheme = p
        .device
        .as_ref()
        .and_then(|d| d.scheme.as_ref())
        .ok_or(Status::ConditionsNotSatisfied)?;
    match &scheme.recognition {
        Recognition::Legacy(_) => Err(Status::LegacyRecognition),
        Recognition::Certified {
            issuer_public_key,
            key,
        } => {
            let cert = p
                .credentials
                .certificate
                .as_ref()
                .ok_or(Status::NotCertified)?;
            Ok((key, issuer_public_key, cert))
        }
    }
}

/// Outcome byte of TRANSFER RESOLVE: the card had credited it.
pub const RESOLVED_COMPLETED: u8 = 0x01;
/// Outcome byte of TRANSFER RESOLVE: the value went back to DR.
pub const RESOLVED_UNDONE: u8 = 0x02;

impl PsdApplet {
    fn scheme(&self) -> Result<&super::device::Scheme, Status> {
        self.device()?
            .scheme
            .as_ref()
            .ok_or(Status::ConditionsNotSatisfied)
    }

    /// An overdue PSD moves no value out either: the inspection exists to stop a device
    /// that has not shown its registers to the back office, whatever the value is for.
    /// Judged on the platform's date, else on the last date of mailing used.
    fn check_inspection(&self, ctx: &Ctx<'_>) -> Result<(), Status> {
        let days = self.device()?.inspection_days;
        if days == 0 {
            return Ok(());
        }
        let when = ctx.platform.today().or(self.persistent.counters.last_date);
        let due = match (self.persistent.counters.last_inspection, when) {
            (None, _) => true,
            (Some(last), Some(d)) => {
                d.day_number() > last.day_number().saturating_add(u32::from(days))
            }
            (Some(_), None) => false,
        };
        if due {
            return Err(Status::InspectionOverdue);
        }
        Ok(())
    }

    fn check_not_blocked(&self) -> Result<(), Status> {
        if self.persistent.transfer.failures >= self.scheme()?.max_failures {
            return Err(Status::AuthenticationBlocked);
        }
        Ok(())
    }

    fn commit_transfer(
        &mut self,
        ctx: &mut Ctx<'_>,
        state: TransferState,
        set: Option<(usize, super::registers::RegisterSet)>,
    ) -> Result<(), Status> {
        let mut txn = Transaction::begin(ctx.store);
        txn.write(rec::TRANSFER, state.encode());
        if let Some((i, s)) = &set {
            txn.write(rec::set(*i), s.encode());
        }
        txn.commit()?;
        self.persistent.transfer = state;
        if let Some((i, s)) = set {
            self.persistent.put_set(i, s);
        }
        Ok(())
    }

    /// The PSD's means of recognition (see [`recognition_of`]).
    fn recognition(&self) -> Result<(&IndiciumKey, &[u8], &DeviceCertificate), Status> {
        recognition_of(&self.persistent)
    }

    /// OPEN SESSION (80 60 00 00): a fresh challenge and ephemeral key, the PSD's
    /// personality and its certificate.
    pub(super) fn open_session(
        &mut self,
        ctx: &mut Ctx<'_>,
        reply: &mut Vec<u8>,
    ) -> Result<(), Status> {
        self.volatile.session = None;
        let scheme = self.scheme()?.id;
        self.check_not_blocked()?;
        let certificate = *self.recognition()?.2;
        let device = self.device()?.id;
        let mut challenge = [0u8; CHALLENGE_LEN];
        ctx.platform.fill_random(&mut challenge);
        let ephemeral = IndiciumKey::generate(ctx.platform);
        let hello = PsdHello {
            device,
            scheme,
            transfers: self.persistent.transfer.started,
            total_out: self.persistent.transfer.total_out,
            challenge,
            pending_for: self.persistent.transfer.pending.map(|p| p.card),
            ephemeral: ephemeral.public_key_compressed(),
            certificate,
        };
        reply.extend_from_slice(&hello.encode());
        self.volatile.session = Some(PsdSession::Opened(Box::new((hello, ephemeral))));
        Ok(())
    }

    /// AUTHENTICATE CARD (80 62 00 00): checks the card's certificate and cryptogram,
    /// counting the attempt as failed (committed) before either check; answers the PSD's
    /// cryptogram.
    pub(super) fn authenticate_card(
        &mut self,
        ctx: &mut Ctx<'_>,
        data: &[u8],
        reply: &mut Vec<u8>,
    ) -> Result<(), Status> {
        let Some(PsdSession::Opened(opened)) = self.volatile.session.take() else {
            return Err(Status::ConditionsNotSatisfied);
        };
        let (hello, ephemeral) = *opened;
        self.check_not_blocked()?;
        let card = CardHello::decode(data)?;
        let (scheme, max_failures) = {
            let s = self.scheme()?;
            (s.id, s.max_failures)
        };

        // Count the attempt first: cutting power after a wrong cryptogram gains nothing.
        let failures = self.persistent.transfer.failures.saturating_add(1);
        let counted = TransferState {
            failures,
            ..self.persistent.transfer
        };
        self.commit_transfer(ctx, counted, None)?;

        let (key, issuer, _) = recognition_of(&self.persistent)?;
        let z2 = self.partners.recognise(
            key,
            &card.certificate,
            issuer,
            (DeviceKind::Purse, scheme, card.card.0),
            ctx.platform.today(),
            self.persistent.credentials.revocation.as_ref(),
        );
        let session = z2
            .ok()
            .and_then(|z2| Session::for_psd(&ephemeral, z2.as_ref(), &hello, &card));
        let ok = card.scheme == scheme
            && session
                .as_ref()
                .is_some_and(|s| bool::from(s.card_cryptogram().ct_eq(&card.cryptogram)));
        let Some(session) = session.filter(|_| ok) else {
            let left = max_failures.saturating_sub(failures);
            return Err(Status::VerificationFailed(left));
        };
        let cleared = TransferState {
            failures: 0,
            ..self.persistent.transfer
        };
        self.commit_transfer(ctx, cleared, None)?;
        reply.extend_from_slice(&session.psd_cryptogram());
        self.volatile.session = Some(PsdSession::Recognized(session));
        Ok(())
    }

    /// INSTALL CERTIFICATE (80 14 00 00): the issuer's certificate on this PSD's
    /// recognition key. A newer one (renewal) may replace it; only the issuer can sign one.
    pub(super) fn install_certificate(
        &mut self,
        ctx: &mut Ctx<'_>,
        data: &[u8],
    ) -> Result<(), Status> {
        let id = self.device()?.id;
        let s = self.scheme()?;
        let Recognition::Certified {
            issuer_public_key,
            key,
        } = &s.recognition
        else {
            return Err(Status::LegacyRecognition);
        };
        let next = self.persistent.credentials.with_certificate(
            data,
            issuer_public_key,
            (DeviceKind::Psd, s.id, id.0),
            key.public_key_compressed(),
        )?;
        self.commit_credentials(ctx, next)
    }

    /// LOAD REVOCATION (80 6C 00 00): the issuer's newer revocation list.
    pub(super) fn load_revocation(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> Result<(), Status> {
        let s = self.scheme()?;
        let Recognition::Certified {
            issuer_public_key, ..
        } = &s.recognition
        else {
            return Err(Status::LegacyRecognition);
        };
        match self
            .persistent
            .credentials
            .with_revocation(data, issuer_public_key, s.id)?
        {
            None => Ok(()),
            Some(next) => self.commit_credentials(ctx, next),
        }
    }

    fn commit_credentials(&mut self, ctx: &mut Ctx<'_>, next: Credentials) -> Result<(), Status> {
        let mut txn = Transaction::begin(ctx.store);
        txn.write(rec::CREDENTIALS, next.encode());
        txn.commit()?;
        self.persistent.credentials = next;
        Ok(())
    }

    /// GET DATA 00 03: the recognition key, certificate and revocation list version.
    pub(super) fn recognition_info(&self, reply: &mut Vec<u8>) -> Result<(), Status> {
        match &self.scheme()?.recognition {
            Recognition::Legacy(_) => Err(Status::LegacyRecognition),
            Recognition::Certified { key, .. } => {
                RecognitionInfo::new(key, &self.persistent.credentials).write(reply);
                Ok(())
            }
        }
    }

    /// TRANSFER DEBIT (80 64 00 set): the purse's request; DR → pending, committed before
    /// the value message leaves.
    pub(super) fn transfer_debit(
        &mut self,
        ctx: &mut Ctx<'_>,
        i: usize,
        data: &[u8],
        reply: &mut Vec<u8>,
    ) -> Result<(), Status> {
        let Some(PsdSession::Recognized(session)) = &self.volatile.session else {
            return Err(Status::ConditionsNotSatisfied);
        };
        let session = session.clone();
        if self.persistent.transfer.pending.is_some() {
            return Err(Status::TransferPending);
        }
        let req = Request::open(data, &session)?;
        self.check_inspection(ctx)?;
        if req.amount == Amount::ZERO {
            return Err(Status::WrongData);
        }
        let next_set = self.persistent.set(i)?.transfer_out(req.amount)?;
        let number = self.persistent.transfer.started;
        let started = number.checked_next().ok_or(Status::CounterOverflow)?;
        let state = TransferState {
            started,
            pending: Some(Pending {
                card: session.card,
                // `i` came from P2 (a byte) through `set_index`: the conversion cannot fail.
                set: u8::try_from(i).map_err(|_| Status::Internal)?,
                transfer: number,
                card_transfers: session.card_transfers,
                amount: req.amount,
            }),
            ..self.persistent.transfer
        };
        self.commit_transfer(ctx, state, Some((i, next_set)))?;
        let value = Value {
            amount: req.amount,
            transfer: number,
        };
        reply.extend_from_slice(&value.seal(&session));
        self.volatile.session = Some(PsdSession::Debited(session, value));
        Ok(())
    }

    /// TRANSFER CONFIRM (80 66 00 00): the purse's acknowledgement; pending → AR.
    pub(super) fn transfer_confirm(
        &mut self,
        ctx: &mut Ctx<'_>,
        data: &[u8],
        reply: &mut Vec<u8>,
    ) -> Result<(), Status> {
        let Some(PsdSession::Debited(session, value)) = &self.volatile.session else {
            return Err(Status::ConditionsNotSatisfied);
        };
        let (session, value) = (session.clone(), *value);
        let ack = Ack::open(data, &session)?;
        if ack.amount != value.amount || ack.transfer != value.transfer {
            return Err(Status::WrongData);
        }
        let i = self.finish_pending(ctx, Resolution::Complete)?;
        self.volatile.session = Some(PsdSession::Ended(session));
        self.persistent.set(i)?.readout().write(reply);
        Ok(())
    }

    /// TRANSFER RESOLVE (80 68 00 00): in a fresh recognised session, the card's status
    /// completes or undoes the pending transfer.
    pub(super) fn transfer_resolve(
        &mut self,
        ctx: &mut Ctx<'_>,
        data: &[u8],
        reply: &mut Vec<u8>,
    ) -> Result<(), Status> {
        let Some(PsdSession::Recognized(session)) = &self.volatile.session else {
            return Err(Status::ConditionsNotSatisfied);
        };
        let session = session.clone();
        let Some(pending) = self.persistent.transfer.pending else {
            return Err(Status::ConditionsNotSatisfied);
        };
        if pending.card != session.card {
            return Err(Status::PendingForOtherCard);
        }
        let status = TransferStatus::open(data, &session)?;
        let resolution = transfer::resolve(pending.transfer, pending.card_transfers, &status);
        let outcome = match resolution {
            Resolution::Complete => RESOLVED_COMPLETED,
            Resolution::Undo => RESOLVED_UNDONE,
            Resolution::Unknown => return Err(Status::TransferUnresolved),
        };
        let i = self.finish_pending(ctx, resolution)?;
        self.volatile.session = Some(PsdSession::Ended(session));
        reply.put_u8(outcome);
        self.persistent.set(i)?.readout().write(reply);
        Ok(())
    }

    /// TRANSFER CLOSE (80 6E 00 00): in a recognised session, or after this session's
    /// CONFIRM or RESOLVE, the CLS — transfers started, MACed — saying the PSD has nothing
    /// pending with this session's card, so the card may forget its last credit from it
    /// (`9A20` while a transfer for this card is pending). Writes nothing.
    pub(super) fn transfer_close(&mut self, reply: &mut Vec<u8>) -> Result<(), Status> {
        let session = match &self.volatile.session {
            Some(PsdSession::Recognized(s) | PsdSession::Ended(s)) => s,
            _ => return Err(Status::ConditionsNotSatisfied),
        };
        if self
            .persistent
            .transfer
            .pending
            .is_some_and(|p| p.card == session.card)
        {
            return Err(Status::TransferPending);
        }
        let close = transfer::Close {
            started: self.persistent.transfer.started,
        };
        reply.extend_from_slice(&close.seal(session));
        Ok(())
    }

    /// Commits the end of the pending transfer; returns its register set.
    fn finish_pending(
        &mut self,
        ctx: &mut Ctx<'_>,
        resolution: Resolution,
    ) -> Result<usize, Status> {
        self.finish_pending_from(ctx, self.persistent.transfer, resolution)
    }

    /// Commits the end of the pending transfer on top of `base` (the transfer state, with
    /// whatever else the command changes in the same commit); returns its register set.
    pub(super) fn finish_pending_from(
        &mut self,
        ctx: &mut Ctx<'_>,
        base: TransferState,
        resolution: Resolution,
    ) -> Result<usize, Status> {
        let pending = base.pending.ok_or(Status::Internal)?;
        let i = usize::from(pending.set);
        let set = self.persistent.set(i)?;
        if set.pending != pending.amount {
            return Err(Status::Internal);
        }
        let (next_set, state) = match resolution {
            Resolution::Complete => (
                set.transfer_completed()?,
                TransferState {
                    completed: base
                        .completed
                        .checked_next()
                        .ok_or(Status::CounterOverflow)?,
                    total_out: base
                        .total_out
                        .checked_add(pending.amount)
                        .ok_or(Status::CounterOverflow)?,
                    last_date: ctx.platform.today().or(base.last_date),
                    pending: None,
                    ..base
                },
            ),
            Resolution::Undo => (
                set.transfer_undone()?,
                TransferState {
                    pending: None,
                    ..base
                },
            ),
            Resolution::Unknown => return Err(Status::TransferUnresolved),
        };
        self.commit_transfer(ctx, state, Some((i, next_set)))?;
        Ok(i)
    }

    /// RESET RECOGNITION (80 6A 00 00): counter ‖ the scheme issuer's signature; clears
    /// the failed recognitions. The counter must exceed the last one used, so a reset
    /// cannot be replayed.
    pub(super) fn reset_recognition(
        &mut self,
        ctx: &mut Ctx<'_>,
        data: &[u8],
    ) -> Result<(), Status> {
        let device = self.device()?;
        let issuer_public_key = certified_issuer(device)?;
        if data.len() != 4 + crate::crypto::SIGNATURE_LEN {
            return Err(Status::WrongLength);
        }
        let (counter_bytes, sig) = data.split_at(4);
        let counter = u32::from_be_bytes([
            counter_bytes[0],
            counter_bytes[1],
            counter_bytes[2],
            counter_bytes[3],
        ]);
        let signed = [RESET_LABEL, &device.id.0[..], counter_bytes].concat();
        if !crate::crypto::verify_signature(issuer_public_key, &signed, sig)
            || counter <= self.persistent.transfer.reset_counter
        {
            return Err(Status::SecurityStatusNotSatisfied);
        }
        let state = TransferState {
            failures: 0,
            reset_counter: counter,
            ..self.persistent.transfer
        };
        self.commit_transfer(ctx, state, None)
    }

    /// GET DATA 00 02: the transfer function's public data.
    pub(super) fn transfer_info(&self, reply: &mut Vec<u8>) -> Result<(), Status> {
        let scheme = self.scheme()?;
        TransferInfo {
            scheme: scheme.id,
            max_failures: scheme.max_failures,
            state: self.persistent.transfer,
        }
        .write(reply);
        Ok(())
    }
}

/// The issuer's public key of a certified-scheme PSD, certificate installed or not.
pub(super) fn certified_issuer(device: &super::device::Device) -> Result<&[u8], Status> {
    match device.scheme.as_ref().map(|s| &s.recognition) {
        Some(Recognition::Certified {
            issuer_public_key, ..
        }) => Ok(issuer_public_key),
        Some(Recognition::Legacy(_)) => Err(Status::LegacyRecognition),
        None => Err(Status::ConditionsNotSatisfied),
    }
}

/// What the issuer signs before the device ID and counter of RESET RECOGNITION.
pub const RESET_LABEL: &[u8] = b"openpsd psd reset recognition v2";

/// Builds RESET RECOGNITION's data: counter ‖ the issuer's signature over
/// [`RESET_LABEL`] ‖ device ID ‖ counter (what the scheme issuer sends).
pub fn reset_recognition_data(
    issuer: &IndiciumKey,
    device: crate::types::DeviceId,
    counter: u32,
) -> Vec<u8> {
    let c = counter.to_be_bytes();
    let mut out = c.to_vec();
    out.extend_from_slice(&issuer.sign(&[RESET_LABEL, &device.0[..], &c].concat()));
    out
}
