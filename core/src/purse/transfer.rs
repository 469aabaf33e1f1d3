//! The purse's side of value transfer from a PSD (seed 002, Fig. 8): recognition, request,
//! credit, the status a PSD resolves a pending transfer with, and the issuer's reset of
//! the failed-recognition counter. The messages are [`crate::transfer`]'s; the money is
//! [`super::balance`]'s.
//!
//! Failed recognitions are counted like PIN tries: committed before the compare.

use alloc::vec::Vec;

use subtle::ConstantTimeEq;

use crate::card::Ctx;
use crate::crypto::IndiciumKey;
use crate::crypto::MAC_LEN;
use crate::records::purse as rec;
use crate::status::Status;
use crate::store::Transaction;
use crate::transfer::cert::{DeviceCertificate, DeviceKind, RecognitionInfo};
use crate::transfer::{Ack, CardHello, Close, PsdHello, Request, Session, TransferStatus, Value};
use crate::types::Amount;

use super::balance::Limits;
use super::state::{CardRecognition, LogEntry, LogKind, Persistent, PurseState};
use super::{commit_state, PurseApplet, RESET_LABEL};

/// Where the card is in a transfer session (volatile).
#[derive(Clone, Debug)]
pub(super) enum CardSession {
    /// RECOGNIZE answered; the PSD's cryptogram expected.
    AwaitPsd(Session),
    /// Both sides recognised.
    Recognized(Session),
    /// TRANSFER REQUEST made for this amount; the value message expected.
    Requested(Session, Amount),
    /// Credited; the session has nothing more to move.
    Credited(Session),
}

fn check_not_blocked(c: &Persistent) -> Result<(), Status> {
    if c.state.failures >= c.id.max_failures {
        return Err(Status::AuthenticationBlocked);
    }
    Ok(())
}

/// The card's means of recognition: its key and its certificate. `9A25` for a card
/// personalized with a key diversified from the retired scheme key, `9A26` before the
/// issuer installed the certificate.
fn recognition(c: &Persistent) -> Result<(&IndiciumKey, &DeviceCertificate), Status> {
    match &c.id.recognition {
        CardRecognition::Legacy(_) => Err(Status::LegacyRecognition),
        CardRecognition::Certified(key) => {
            let cert = c
                .credentials
                .certificate
                .as_ref()
                .ok_or(Status::NotCertified)?;
            Ok((key, cert))
        }
    }
}

impl PurseApplet {
    /// RESET RECOGNITION (80 6A 00 00): counter ‖ MAC under the card's admin key.
    pub(super) fn reset_recognition(
        &mut self,
        ctx: &mut Ctx<'_>,
        data: &[u8],
    ) -> Result<(), Status> {
        let (counter, _) = self.check_issuer(RESET_LABEL, data)?;
        let c = self.personalized_mut()?;
        let state = PurseState {
            admin_counter: counter,
            failures: 0,
            ..c.state
        };
        commit_state(ctx, c, state)
    }

    /// RECOGNIZE (80 70 00 00): the PSD's hello; checks the PSD's certificate (public
    /// data: nothing secret is compared, so a refusal here, `9A27`, is not counted) and
    /// answers the card's hello with its certificate and cryptogram.
    pub(super) fn recognize(
        &mut self,
        ctx: &mut Ctx<'_>,
        data: &[u8],
        reply: &mut Vec<u8>,
    ) -> Result<(), Status> {
        // A new session ends the old one: its messages can never be accepted again.
        self.volatile.session = None;
        let c = self
            .persistent
            .as_ref()
            .ok_or(Status::ConditionsNotSatisfied)?;
        check_not_blocked(c)?;
        let (key, certificate) = recognition(c)?;
        let psd = PsdHello::decode(data)?;
        if psd.scheme != c.id.scheme {
            return Err(Status::CertificateRefused);
        }
        let z2 = self
            .partners
            .recognise(
                key,
                &psd.certificate,
                &c.id.issuer_public_key,
                (DeviceKind::Psd, c.id.scheme, psd.device.0),
                ctx.platform.today(),
                c.credentials.revocation.as_ref(),
            )
            .map_err(|_| Status::CertificateRefused)?;
        let mut challenge = [0u8; crate::transfer::CHALLENGE_LEN];
        ctx.platform.fill_random(&mut challenge);
        let mut hello = CardHello {
            card: c.id.card,
            scheme: c.id.scheme,
            transfers: c.state.transfers,
            total_in: c.state.total_in,
            challenge,
            certificate: *certificate,
            cryptogram: [0; MAC_LEN],
        };
        let session =
            Session::for_card(key, z2.as_ref(), &psd, &hello).ok_or(Status::CertificateRefused)?;
        hello.cryptogram = session.card_cryptogram();
        reply.extend_from_slice(&hello.encode());
        self.volatile.session = Some(CardSession::AwaitPsd(session));
        Ok(())
    }

    /// INSTALL CERTIFICATE (80 14 00 00): the issuer's certificate on this card's
    /// recognition key. A newer one (renewal) may replace it; only the issuer can sign one.
    pub(super) fn install_certificate(
        &mut self,
        ctx: &mut Ctx<'_>,
        data: &[u8],
    ) -> Result<(), Status> {
        let c = self.personalized_mut()?;
        let CardRecognition::Certified(key) = &c.id.recognition else {
            return Err(Status::LegacyRecognition);
        };
        let next = c.credentials.with_certificate(
            data,
            &c.id.issuer_public_key,
            (DeviceKind::Purse, c.id.scheme, c.id.card.0),
            key.public_key_compressed(),
        )?;
        let mut txn = Transaction::begin(ctx.store);
        txn.write(rec::CREDENTIALS, next.encode());
        txn.commit()?;
        c.credentials = next;
        Ok(())
    }

    /// LOAD REVOCATION (80 6C 00 00): the issuer's newer revocation list.
    pub(super) fn load_revocation(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> Result<(), Status> {
        let c = self.personalized_mut()?;
        if let CardRecognition::Legacy(_) = c.id.recognition {
            return Err(Status::LegacyRecognition);
        }
        let Some(next) =
            c.credentials
                .with_revocation(data, &c.id.issuer_public_key, c.id.scheme)?
        else {
            return Ok(());
        };
        let mut txn = Transaction::begin(ctx.store);
        txn.write(rec::CREDENTIALS, next.encode());
        txn.commit()?;
        c.credentials = next;
        Ok(())
    }

    /// GET DATA 00 04: the recognition key, certificate and revocation list version.
    pub(super) fn recognition_info(&self, reply: &mut Vec<u8>) -> Result<(), Status> {
        let c = self.personalized()?;
        match &c.id.recognition {
            CardRecognition::Legacy(_) => Err(Status::LegacyRecognition),
            CardRecognition::Certified(key) => {
                RecognitionInfo::new(key, &c.credentials).write(reply);
                Ok(())
            }
        }
    }

    /// AUTHENTICATE PSD (80 72 00 00): the PSD's cryptogram, counted as a failure
    /// (committed) before the compare.
    pub(super) fn authenticate_psd(
        &mut self,
        ctx: &mut Ctx<'_>,
        data: &[u8],
    ) -> Result<(), Status> {
        let Some(CardSession::AwaitPsd(session)) = self.volatile.session.take() else {
            return Err(Status::ConditionsNotSatisfied);
        };
        let c = self.personalized_mut()?;
        check_not_blocked(c)?;
        let cryptogram: [u8; MAC_LEN] = data.try_into().map_err(|_| Status::WrongLength)?;
        let failures = c.state.failures.saturating_add(1);
        commit_state(
            ctx,
            c,
            PurseState {
                failures,
                ..c.state
            },
        )?;
        if !bool::from(session.psd_cryptogram().ct_eq(&cryptogram)) {
            let left = c.id.max_failures.saturating_sub(failures);
            return Err(Status::VerificationFailed(left));
        }
        commit_state(
            ctx,
            c,
            PurseState {
                failures: 0,
                ..c.state
            },
        )?;
        self.volatile.session = Some(CardSession::Recognized(session));
        Ok(())
    }

    /// TRANSFER REQUEST (80 74 00 00): amount in; the MACed request out. Needs a recognised
    /// PSD and the verified PIN; checks the card's limits now so the PSD debits nothing the
    /// card would refuse.
    pub(super) fn transfer_request(
        &mut self,
        data: &[u8],
        reply: &mut Vec<u8>,
    ) -> Result<(), Status> {
        let Some(CardSession::Recognized(session)) = &self.volatile.session else {
            return Err(Status::ConditionsNotSatisfied);
        };
        if !self.volatile.pin_verified {
            return Err(Status::SecurityStatusNotSatisfied);
        }
        let c = self.personalized()?;
        let amount: [u8; 8] = data.try_into().map_err(|_| Status::WrongLength)?;
        let amount = Amount(u64::from_be_bytes(amount));
        let limits = Limits {
            max_balance: c.id.max_balance,
            max_transfer: c.id.max_transfer,
        };
        c.state.check_request(amount, limits)?;
        // A place for this PSD in the paired table, or the PSD would debit what the card
        // cannot credit.
        if !c.paired.has_room_for(session.device) {
            return Err(Status::PartnersOpen);
        }
        let session = session.clone();
        reply.extend_from_slice(&Request { amount }.seal(&session));
        self.volatile.session = Some(CardSession::Requested(session, amount));
        Ok(())
    }

    /// TRANSFER CREDIT (80 76 00 00): the PSD's value message; credit, personality, pairing
    /// and log are committed together before the acknowledgement leaves.
    pub(super) fn transfer_credit(
        &mut self,
        ctx: &mut Ctx<'_>,
        data: &[u8],
        reply: &mut Vec<u8>,
    ) -> Result<(), Status> {
        let Some(CardSession::Requested(session, requested)) = &self.volatile.session else {
            return Err(Status::ConditionsNotSatisfied);
        };
        let (session, requested) = (session.clone(), *requested);
        let value = Value::open(data, &session)?;
        if value.amount != requested {
            return Err(Status::WrongData);
        }
        let today = ctx.platform.today();
        let c = self.personalized_mut()?;
        let state = c.state.credited(value.amount, c.id.max_balance, today)?;
        let paired = c.paired.credited(
            session.device,
            value.transfer,
            value.amount,
            today,
            state.transfers,
        )?;
        let log = c.log.with(LogEntry {
            kind: LogKind::Credit,
            counterpart: session.device.0,
            number: value.transfer.0,
            amount: value.amount,
            balance: state.balance,
            date: today,
        });
        let mut txn = Transaction::begin(ctx.store);
        txn.write(rec::STATE, state.encode());
        txn.write(rec::PAIRED, paired.encode());
        txn.write(rec::LOG, log.encode());
        txn.commit()?;
        c.state = state;
        c.paired = paired;
        c.log = log;
        let ack = Ack {
            amount: value.amount,
            transfer: value.transfer,
        };
        reply.extend_from_slice(&ack.seal(&session));
        self.volatile.session = Some(CardSession::Credited(session));
        Ok(())
    }

    /// TRANSFER STATUS (80 78 00 00): what the card has credited from this session's PSD,
    /// MACed.
    pub(super) fn transfer_status(&self, reply: &mut Vec<u8>) -> Result<(), Status> {
        let session = match &self.volatile.session {
            Some(CardSession::Recognized(s) | CardSession::Credited(s)) => s,
            Some(CardSession::Requested(s, _)) => s,
            _ => return Err(Status::ConditionsNotSatisfied),
        };
        let c = self.personalized()?;
        let last_from_psd = c.paired.get(session.device).map(|p| p.last_transfer);
        let status = TransferStatus {
            card_transfers: c.state.transfers,
            last_from_psd,
            forgotten_through: last_from_psd
                .is_none()
                .then_some(c.paired.forgotten_through),
        };
        reply.extend_from_slice(&status.seal(session));
        Ok(())
    }

    /// TRANSFER CLOSE (80 7C 00 00): the PSD's CLS, MACed in this session: it has nothing
    /// pending with this card, so the card's record of its last credit may be forgotten
    /// (closed, committed). A statement older than that credit is refused (`6985`).
    pub(super) fn transfer_close(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> Result<(), Status> {
        let session = match &self.volatile.session {
            Some(CardSession::Recognized(s) | CardSession::Credited(s)) => s.clone(),
            _ => return Err(Status::ConditionsNotSatisfied),
        };
        let close = Close::open(data, &session)?;
        let c = self.personalized_mut()?;
        let Some(paired) = c.paired.closed(session.device, close.started)? else {
            return Ok(());
        };
        let mut txn = Transaction::begin(ctx.store);
        txn.write(rec::PAIRED, paired.encode());
        txn.commit()?;
        c.paired = paired;
        Ok(())
    }
}
