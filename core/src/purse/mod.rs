//! The purse applet: a stored-value card that receives value from a PSD (seed 002, Fig. 8)
//! and pays merchants with signed purchase records (Fig. 2 and 5).
//!
//! The PIN follows the rule that beats tearing attacks: the try counter is decremented and
//! committed *before* the compare (in constant time) and restored only after a match, so
//! cutting power after a wrong guess still costs a try. Failed recognitions are counted the
//! same way. Value changes commit before the response that depends on them.
//! `docs/purse.md` describes the protocol; `docs/apdu.md` the bytes.

pub mod personal;
pub mod purchase;
pub mod state;

use alloc::boxed::Box;
use alloc::vec::Vec;

use subtle::ConstantTimeEq;

use crate::apdu::Command;
use crate::card::{Applet, Card, Ctx};
use crate::crypto::{self, IndiciumKey, MacKey, MAC_LEN, SIGNATURE_LEN};
use crate::platform::Platform;
use crate::status::Status;
use crate::store::{RecordId, Store, StoreError, Transaction};
use crate::transfer::{Ack, CardHello, PsdHello, Request, Session, TransferStatus, Value};
use crate::types::{Amount, TransferCount};
use crate::wire::{Reader, Writer};

use personal::{certificate_body, PurseInfo, PursePersonalization, PURSE_BLANK};
use purchase::{PurchaseRecord, PurchaseRequest};
use state::{Identity, Log, LogEntry, LogKind, PairedTable, PinRecord, PurseState};

/// The purse applet's AID: the openpsd RID with PIX `00 02`.
pub const PURSE_AID: &[u8] = &[0xF0, 0x50, 0x53, 0x44, 0x00, 0x00, 0x02];

/// Class byte of the purse's proprietary commands.
pub const CLA_PURSE: u8 = 0x80;

/// Instruction bytes (VERIFY and CHANGE REFERENCE DATA use the ISO class `00`).
pub mod ins {
    /// PERSONALIZE.
    pub const PERSONALIZE: u8 = 0x10;
    /// CERTIFY (install the issuer's certificate on the purchase key).
    pub const CERTIFY: u8 = 0x12;
    /// VERIFY (ISO 7816-4, class 00).
    pub const VERIFY: u8 = 0x20;
    /// CHANGE REFERENCE DATA (ISO 7816-4, class 00).
    pub const CHANGE_PIN: u8 = 0x24;
    /// UNBLOCK PIN (issuer-authenticated; proprietary class).
    pub const UNBLOCK_PIN: u8 = 0x2C;
    /// RESET RECOGNITION (issuer-authenticated).
    pub const RESET_RECOGNITION: u8 = 0x6A;
    /// RECOGNIZE (the PSD's hello in, the card's hello out).
    pub const RECOGNIZE: u8 = 0x70;
    /// AUTHENTICATE PSD (the PSD's cryptogram).
    pub const AUTHENTICATE_PSD: u8 = 0x72;
    /// TRANSFER REQUEST.
    pub const TRANSFER_REQUEST: u8 = 0x74;
    /// TRANSFER CREDIT.
    pub const TRANSFER_CREDIT: u8 = 0x76;
    /// TRANSFER STATUS.
    pub const TRANSFER_STATUS: u8 = 0x78;
    /// PURCHASE.
    pub const PURCHASE: u8 = 0x7A;
    /// GET DATA.
    pub const GET_DATA: u8 = 0xCA;
}

/// P2 of VERIFY / CHANGE REFERENCE DATA / UNBLOCK PIN: the card's PIN (specific reference
/// data, ISO 7816-4 `81`).
pub const PIN_REF: u8 = 0x81;

const REC_IDENTITY: RecordId = 0x0200;
const REC_PIN: RecordId = 0x0201;
const REC_STATE: RecordId = 0x0202;
const REC_PAIRED: RecordId = 0x0203;
const REC_LOG: RecordId = 0x0204;
const REC_LAST_PURCHASE: RecordId = 0x0205;
const PURSE_RECORDS: core::ops::RangeInclusive<RecordId> = 0x0200..=0x02FF;

/// Label of the UNBLOCK PIN MAC.
pub const UNBLOCK_LABEL: &[u8] = b"openpsd purse unblock pin";
/// Label of the purse's RESET RECOGNITION MAC.
pub const RESET_LABEL: &[u8] = b"openpsd purse reset recognition";

/// A card with the purse applet installed, its state loaded from `store`.
pub fn purse_card<S: Store, P: Platform>(store: S, platform: P) -> Result<Card<S, P>, StoreError> {
    let applet = PurseApplet::load(&store)?;
    let mut card = Card::new(store, platform);
    card.install(Box::new(applet));
    Ok(card)
}

struct Personalized {
    id: Identity,
    pin: PinRecord,
    state: PurseState,
    paired: PairedTable,
    log: Log,
    /// The last purchase's request and signed record, for a terminal that lost the reply.
    last_purchase: Option<(PurchaseRequest, Vec<u8>)>,
}

/// Where the card is in a transfer session (volatile).
#[derive(Clone, Debug)]
enum CardSession {
    /// RECOGNIZE answered; the PSD's cryptogram expected.
    AwaitPsd(Session),
    /// Both sides recognised.
    Recognized(Session),
    /// TRANSFER REQUEST made for this amount; the value message expected.
    Requested(Session, Amount),
    /// Credited; the session has nothing more to move.
    Credited(Session),
}

/// The purse application.
pub struct PurseApplet {
    card: Option<Personalized>,
    /// Volatile: PIN verified since selection.
    pin_verified: bool,
    /// Volatile: the transfer session.
    session: Option<CardSession>,
}

impl PurseApplet {
    /// Loads the applet's persistent state; a store without purse records is a blank purse,
    /// a partial or undecodable one an error.
    pub fn load(store: &dyn Store) -> Result<Self, StoreError> {
        let blank = PurseApplet {
            card: None,
            pin_verified: false,
            session: None,
        };
        let any = store
            .ids()?
            .into_iter()
            .any(|id| PURSE_RECORDS.contains(&id));
        let Some(id) = store.read(REC_IDENTITY)? else {
            if any {
                return Err(StoreError::Corrupt("purse records without an identity"));
            }
            return Ok(blank);
        };
        let corrupt = |what| move |_| StoreError::Corrupt(what);
        let need = |rec, what| -> Result<Vec<u8>, StoreError> {
            store.read(rec)?.ok_or(StoreError::Corrupt(what))
        };
        let id = Identity::decode(&id).map_err(corrupt("purse identity"))?;
        let pin = PinRecord::decode(&need(REC_PIN, "purse PIN missing")?)
            .map_err(corrupt("purse PIN"))?;
        let state = PurseState::decode(&need(REC_STATE, "purse state missing")?)
            .map_err(corrupt("purse state"))?;
        let paired = PairedTable::decode(&need(REC_PAIRED, "paired table missing")?)
            .map_err(corrupt("paired table"))?;
        let log = Log::decode(&need(REC_LOG, "purse log missing")?).map_err(corrupt("log"))?;
        let last_purchase = match store.read(REC_LAST_PURCHASE)? {
            None => None,
            Some(b) => Some(decode_last_purchase(&b).map_err(corrupt("last purchase"))?),
        };
        Ok(PurseApplet {
            card: Some(Personalized {
                id,
                pin,
                state,
                paired,
                log,
                last_purchase,
            }),
            ..blank
        })
    }

    fn personalized(&self) -> Result<&Personalized, Status> {
        self.card.as_ref().ok_or(Status::ConditionsNotSatisfied)
    }

    fn personalized_mut(&mut self) -> Result<&mut Personalized, Status> {
        self.card.as_mut().ok_or(Status::ConditionsNotSatisfied)
    }

    fn personalize(
        &mut self,
        ctx: &mut Ctx<'_>,
        cmd: &Command<'_>,
        reply: &mut Vec<u8>,
    ) -> Result<(), Status> {
        cmd.expect_p1p2(0, 0)?;
        if self.card.is_some() {
            return Err(Status::ConditionsNotSatisfied);
        }
        let p = PursePersonalization::decode(cmd.data)?;
        let id = Identity {
            card: p.card,
            scheme: p.scheme,
            card_key: MacKey::new(p.card_key),
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
        let card = Personalized {
            id,
            pin,
            state: PurseState::default(),
            paired: PairedTable::default(),
            log: Log::default(),
            last_purchase: None,
        };
        let mut txn = Transaction::begin(ctx.store);
        txn.write(REC_IDENTITY, card.id.encode().to_vec());
        txn.write(REC_PIN, card.pin.encode().to_vec());
        txn.write(REC_STATE, card.state.encode());
        txn.write(REC_PAIRED, card.paired.encode());
        txn.write(REC_LOG, card.log.encode());
        txn.commit()?;
        reply.extend_from_slice(&card.id.purchase_key.public_key());
        self.card = Some(card);
        Ok(())
    }

    fn certify(&mut self, ctx: &mut Ctx<'_>, cmd: &Command<'_>) -> Result<(), Status> {
        cmd.expect_p1p2(0, 0)?;
        let c = self.personalized_mut()?;
        if c.id.certificate.is_some() {
            return Err(Status::ConditionsNotSatisfied);
        }
        let sig: [u8; SIGNATURE_LEN] = cmd.data.try_into().map_err(|_| Status::WrongLength)?;
        let body = certificate_body(c.id.card, c.id.scheme, &c.id.purchase_key.public_key());
        if !crypto::verify_signature(&c.id.issuer_public_key, &body, &sig) {
            return Err(Status::SecurityStatusNotSatisfied);
        }
        let mut id = c.id.clone();
        id.certificate = Some(sig);
        let mut txn = Transaction::begin(ctx.store);
        txn.write(REC_IDENTITY, id.encode().to_vec());
        txn.commit()?;
        c.id = id;
        Ok(())
    }

    fn get_data(&self, cmd: &Command<'_>, reply: &mut Vec<u8>) -> Result<(), Status> {
        cmd.expect_no_data()?;
        if cmd.p1 != 0 {
            return Err(Status::IncorrectP1P2);
        }
        match (cmd.p2, &self.card) {
            (0x01, None) => reply.put_u8(PURSE_BLANK),
            (0x01, Some(c)) => PurseInfo::from_parts(&c.id, &c.pin, &c.state).write(reply),
            (0x02, Some(c)) => reply.extend_from_slice(&c.paired.encode()),
            (0x03, Some(c)) => reply.extend_from_slice(&c.log.encode()),
            (0x02 | 0x03, None) => return Err(Status::ConditionsNotSatisfied),
            _ => return Err(Status::IncorrectP1P2),
        }
        Ok(())
    }

    /// VERIFY: the try counter is decremented and committed before the compare.
    fn verify(&mut self, ctx: &mut Ctx<'_>, cmd: &Command<'_>) -> Result<(), Status> {
        cmd.expect_p1p2(0, PIN_REF)?;
        let c = self.personalized()?;
        if cmd.data.is_empty() {
            // ISO 7816-4: VERIFY without data asks for the status.
            return match (self.pin_verified, c.pin.tries_left) {
                (true, _) => Ok(()),
                (false, 0) => Err(Status::AuthenticationBlocked),
                (false, n) => Err(Status::VerificationFailed(n)),
            };
        }
        self.pin_verified = false;
        self.check_pin(ctx, cmd.data)
    }

    /// The PIN rule: decrement and commit, compare in constant time, restore on a match.
    fn check_pin(&mut self, ctx: &mut Ctx<'_>, candidate: &[u8]) -> Result<(), Status> {
        let c = self.personalized_mut()?;
        if c.pin.tries_left == 0 {
            return Err(Status::AuthenticationBlocked);
        }
        let mut counted = c.pin.clone();
        counted.tries_left -= 1;
        let mut txn = Transaction::begin(ctx.store);
        txn.write(REC_PIN, counted.encode().to_vec());
        txn.commit()?;
        c.pin = counted;
        if !c.pin.matches(candidate) {
            return Err(Status::VerificationFailed(c.pin.tries_left));
        }
        let mut restored = c.pin.clone();
        restored.tries_left = c.id.pin_tries;
        let mut txn = Transaction::begin(ctx.store);
        txn.write(REC_PIN, restored.encode().to_vec());
        txn.commit()?;
        c.pin = restored;
        self.pin_verified = true;
        Ok(())
    }

    /// CHANGE REFERENCE DATA: old PIN ‖ new PIN (the card knows the old one's length).
    fn change_pin(&mut self, ctx: &mut Ctx<'_>, cmd: &Command<'_>) -> Result<(), Status> {
        cmd.expect_p1p2(0, PIN_REF)?;
        let c = self.personalized()?;
        let old_len = usize::from(c.pin.len);
        let tries = c.id.pin_tries;
        self.pin_verified = false;
        // The old PIN is checked (and a try counted) before anything about the data is
        // judged, so no answer reveals the PIN's length for free.
        let old = cmd.data.get(..old_len).unwrap_or(cmd.data);
        self.check_pin(ctx, old)?;
        self.pin_verified = false;
        let new = cmd.data.get(old_len..).unwrap_or_default();
        let Some(mut next) = PinRecord::new(new, tries) else {
            return Err(Status::WrongData);
        };
        let c = self.personalized_mut()?;
        next.tries_left = tries;
        let mut txn = Transaction::begin(ctx.store);
        txn.write(REC_PIN, next.encode().to_vec());
        txn.commit()?;
        c.pin = next;
        Ok(())
    }

    /// Checks an issuer command's counter and MAC under the card's admin key; returns the
    /// counter and the bytes between it and the MAC.
    fn check_issuer<'d>(&self, label: &[u8], data: &'d [u8]) -> Result<(u32, &'d [u8]), Status> {
        let c = self.personalized()?;
        crate::transfer::open_issuer_command(
            &c.id.admin_key,
            label,
            &c.id.card.0,
            data,
            c.state.admin_counter,
        )
    }

    /// UNBLOCK PIN: counter ‖ new PIN (length-prefixed) ‖ MAC under the card's admin key.
    fn unblock_pin(&mut self, ctx: &mut Ctx<'_>, cmd: &Command<'_>) -> Result<(), Status> {
        cmd.expect_p1p2(0, PIN_REF)?;
        let (counter, rest) = self.check_issuer(UNBLOCK_LABEL, cmd.data)?;
        let mut r = Reader::new(rest);
        let new = r.short_bytes()?;
        r.finish()?;
        let c = self.personalized_mut()?;
        let pin = PinRecord::new(new, c.id.pin_tries).ok_or(Status::WrongData)?;
        let state = PurseState {
            admin_counter: counter,
            ..c.state
        };
        let mut txn = Transaction::begin(ctx.store);
        txn.write(REC_PIN, pin.encode().to_vec());
        txn.write(REC_STATE, state.encode());
        txn.commit()?;
        c.pin = pin;
        c.state = state;
        Ok(())
    }

    /// RESET RECOGNITION: counter ‖ MAC under the card's admin key.
    fn reset_recognition(&mut self, ctx: &mut Ctx<'_>, cmd: &Command<'_>) -> Result<(), Status> {
        cmd.expect_p1p2(0, 0)?;
        if cmd.data.len() != 4 + MAC_LEN {
            return Err(Status::WrongLength);
        }
        let (counter, _) = self.check_issuer(RESET_LABEL, cmd.data)?;
        let c = self.personalized_mut()?;
        let state = PurseState {
            admin_counter: counter,
            failures: 0,
            ..c.state
        };
        commit_state(ctx, c, state)
    }

    fn check_not_blocked(c: &Personalized) -> Result<(), Status> {
        if c.state.failures >= c.id.max_failures {
            return Err(Status::AuthenticationBlocked);
        }
        Ok(())
    }

    /// RECOGNIZE: the PSD's hello; answers the card's hello with the card's cryptogram.
    fn recognize(
        &mut self,
        ctx: &mut Ctx<'_>,
        cmd: &Command<'_>,
        reply: &mut Vec<u8>,
    ) -> Result<(), Status> {
        cmd.expect_p1p2(0, 0)?;
        // A new session ends the old one: its messages can never be accepted again.
        self.session = None;
        let c = self.personalized()?;
        Self::check_not_blocked(c)?;
        let psd = PsdHello::decode(cmd.data)?;
        let mut challenge = [0u8; crate::transfer::CHALLENGE_LEN];
        ctx.platform.fill_random(&mut challenge);
        let mut hello = CardHello {
            card: c.id.card,
            scheme: c.id.scheme,
            transfers: c.state.transfers,
            total_in: c.state.total_in,
            challenge,
            cryptogram: [0; MAC_LEN],
        };
        let session = Session::derive(&c.id.card_key, &psd, &hello);
        hello.cryptogram = session.card_cryptogram();
        reply.extend_from_slice(&hello.encode());
        self.session = Some(CardSession::AwaitPsd(session));
        Ok(())
    }

    /// AUTHENTICATE PSD: the PSD's cryptogram, counted as a failure (committed) before the
    /// compare.
    fn authenticate_psd(&mut self, ctx: &mut Ctx<'_>, cmd: &Command<'_>) -> Result<(), Status> {
        cmd.expect_p1p2(0, 0)?;
        let Some(CardSession::AwaitPsd(session)) = self.session.take() else {
            return Err(Status::ConditionsNotSatisfied);
        };
        let c = self.personalized_mut()?;
        Self::check_not_blocked(c)?;
        let cryptogram: [u8; MAC_LEN] = cmd.data.try_into().map_err(|_| Status::WrongLength)?;
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
        self.session = Some(CardSession::Recognized(session));
        Ok(())
    }

    /// TRANSFER REQUEST: amount in; the MACed request out. Needs a recognised PSD and the
    /// verified PIN; checks the card's limits now so the PSD debits nothing the card would
    /// refuse.
    fn transfer_request(&mut self, cmd: &Command<'_>, reply: &mut Vec<u8>) -> Result<(), Status> {
        cmd.expect_p1p2(0, 0)?;
        let Some(CardSession::Recognized(session)) = &self.session else {
            return Err(Status::ConditionsNotSatisfied);
        };
        if !self.pin_verified {
            return Err(Status::SecurityStatusNotSatisfied);
        }
        let c = self.personalized()?;
        let amount: [u8; 8] = cmd.data.try_into().map_err(|_| Status::WrongLength)?;
        let amount = Amount(u64::from_be_bytes(amount));
        if amount == Amount::ZERO {
            return Err(Status::WrongData);
        }
        if amount > c.id.max_transfer {
            return Err(Status::TransferAboveLimit);
        }
        let after = c
            .state
            .balance
            .checked_add(amount)
            .ok_or(Status::BalanceAboveLimit)?;
        if after > c.id.max_balance {
            return Err(Status::BalanceAboveLimit);
        }
        let session = session.clone();
        reply.extend_from_slice(&Request { amount }.seal(&session));
        self.session = Some(CardSession::Requested(session, amount));
        Ok(())
    }

    /// TRANSFER CREDIT: the PSD's value message; credit, personality, pairing and log are
    /// committed together before the acknowledgement leaves.
    fn transfer_credit(
        &mut self,
        ctx: &mut Ctx<'_>,
        cmd: &Command<'_>,
        reply: &mut Vec<u8>,
    ) -> Result<(), Status> {
        cmd.expect_p1p2(0, 0)?;
        let Some(CardSession::Requested(session, requested)) = &self.session else {
            return Err(Status::ConditionsNotSatisfied);
        };
        let (session, requested) = (session.clone(), *requested);
        let value = Value::open(cmd.data, &session)?;
        if value.amount != requested {
            return Err(Status::WrongData);
        }
        let today = ctx.platform.today();
        let c = self.personalized_mut()?;
        let balance = c
            .state
            .balance
            .checked_add(value.amount)
            .filter(|b| *b <= c.id.max_balance)
            .ok_or(Status::BalanceAboveLimit)?;
        let state = PurseState {
            balance,
            transfers: c
                .state
                .transfers
                .checked_next()
                .ok_or(Status::CounterOverflow)?,
            total_in: c
                .state
                .total_in
                .checked_add(value.amount)
                .ok_or(Status::CounterOverflow)?,
            last_transfer: today.or(c.state.last_transfer),
            ..c.state
        };
        let paired = c
            .paired
            .credited(session.device, value.transfer, value.amount, today)
            .ok_or(Status::CounterOverflow)?;
        let log = c.log.with(LogEntry {
            kind: LogKind::Credit,
            counterpart: session.device.0,
            number: value.transfer.0,
            amount: value.amount,
            balance,
            date: today,
        });
        let mut txn = Transaction::begin(ctx.store);
        txn.write(REC_STATE, state.encode());
        txn.write(REC_PAIRED, paired.encode());
        txn.write(REC_LOG, log.encode());
        txn.commit()?;
        c.state = state;
        c.paired = paired;
        c.log = log;
        let ack = Ack {
            amount: value.amount,
            transfer: value.transfer,
        };
        reply.extend_from_slice(&ack.seal(&session));
        self.session = Some(CardSession::Credited(session));
        Ok(())
    }

    /// TRANSFER STATUS: what the card has credited from this session's PSD, MACed.
    fn transfer_status(&self, cmd: &Command<'_>, reply: &mut Vec<u8>) -> Result<(), Status> {
        cmd.expect_p1p2(0, 0)?;
        cmd.expect_no_data()?;
        let session = match &self.session {
            Some(CardSession::Recognized(s) | CardSession::Credited(s)) => s,
            Some(CardSession::Requested(s, _)) => s,
            _ => return Err(Status::ConditionsNotSatisfied),
        };
        let c = self.personalized()?;
        let status = TransferStatus {
            card_transfers: c.state.transfers,
            last_from_psd: c.paired.get(session.device).map(|p| p.last_transfer),
        };
        reply.extend_from_slice(&status.seal(session));
        Ok(())
    }

    /// PURCHASE: debit committed before the signed record leaves; the same request again
    /// (a terminal that lost the reply) gets the same record, debited once.
    fn purchase(
        &mut self,
        ctx: &mut Ctx<'_>,
        cmd: &Command<'_>,
        reply: &mut Vec<u8>,
    ) -> Result<(), Status> {
        cmd.expect_p1p2(0, 0)?;
        let req = PurchaseRequest::decode(cmd.data)?;
        let verified = self.pin_verified;
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
        if req.amount == Amount::ZERO {
            return Err(Status::WrongData);
        }
        let balance = c
            .state
            .balance
            .checked_sub(req.amount)
            .ok_or(Status::InsufficientFunds)?;
        let number = c
            .state
            .purchases
            .checked_add(1)
            .ok_or(Status::CounterOverflow)?;
        let state = PurseState {
            balance,
            purchases: number,
            ..c.state
        };
        let record = PurchaseRecord {
            card: c.id.card,
            scheme: c.id.scheme,
            number,
            amount: req.amount,
            balance,
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
            number,
            amount: req.amount,
            balance,
            date: Some(req.date),
        });
        let mut txn = Transaction::begin(ctx.store);
        txn.write(REC_STATE, state.encode());
        txn.write(REC_LOG, log.encode());
        txn.write(REC_LAST_PURCHASE, encode_last_purchase(&req, &signed));
        txn.commit()?;
        c.state = state;
        c.log = log;
        reply.extend_from_slice(&signed);
        c.last_purchase = Some((req, signed));
        Ok(())
    }
}

fn commit_state(ctx: &mut Ctx<'_>, c: &mut Personalized, state: PurseState) -> Result<(), Status> {
    let mut txn = Transaction::begin(ctx.store);
    txn.write(REC_STATE, state.encode());
    txn.commit()?;
    c.state = state;
    Ok(())
}

fn encode_last_purchase(req: &PurchaseRequest, record: &[u8]) -> Vec<u8> {
    let mut w = req.encode();
    w.put_u16(record.len() as u16);
    w.extend_from_slice(record);
    w
}

fn decode_last_purchase(
    bytes: &[u8],
) -> Result<(PurchaseRequest, Vec<u8>), crate::wire::Malformed> {
    let req = PurchaseRequest::decode(bytes.get(..24).ok_or(crate::wire::Malformed::Length)?)?;
    let mut r = Reader::new(&bytes[24..]);
    let n = r.u16()?;
    let record = r.take(usize::from(n))?.to_vec();
    r.finish()?;
    Ok((req, record))
}

impl Applet for PurseApplet {
    fn aid(&self) -> &'static [u8] {
        PURSE_AID
    }

    fn select(&mut self, _ctx: &mut Ctx<'_>) -> Result<(), Status> {
        Ok(())
    }

    fn deselect(&mut self) {
        self.pin_verified = false;
        self.session = None;
    }

    fn call(
        &mut self,
        ctx: &mut Ctx<'_>,
        cmd: &Command<'_>,
        reply: &mut Vec<u8>,
    ) -> Result<(), Status> {
        use ins::*;
        let iso = matches!(cmd.ins, VERIFY | CHANGE_PIN);
        let proprietary = matches!(
            cmd.ins,
            PERSONALIZE
                | CERTIFY
                | UNBLOCK_PIN
                | RESET_RECOGNITION
                | RECOGNIZE
                | AUTHENTICATE_PSD
                | TRANSFER_REQUEST
                | TRANSFER_CREDIT
                | TRANSFER_STATUS
                | PURCHASE
                | GET_DATA
        );
        if !iso && !proprietary {
            return Err(Status::InstructionNotSupported);
        }
        let want_cla = if iso { 0x00 } else { CLA_PURSE };
        if cmd.cla != want_cla {
            return Err(Status::ClassNotSupported);
        }
        match cmd.ins {
            PERSONALIZE => self.personalize(ctx, cmd, reply),
            CERTIFY => self.certify(ctx, cmd),
            VERIFY => self.verify(ctx, cmd),
            CHANGE_PIN => self.change_pin(ctx, cmd),
            UNBLOCK_PIN => self.unblock_pin(ctx, cmd),
            RESET_RECOGNITION => self.reset_recognition(ctx, cmd),
            RECOGNIZE => self.recognize(ctx, cmd, reply),
            AUTHENTICATE_PSD => self.authenticate_psd(ctx, cmd),
            TRANSFER_REQUEST => self.transfer_request(cmd, reply),
            TRANSFER_CREDIT => self.transfer_credit(ctx, cmd, reply),
            TRANSFER_STATUS => self.transfer_status(cmd, reply),
            PURCHASE => self.purchase(ctx, cmd, reply),
            _ => self.get_data(cmd, reply),
        }
    }
}

/// The card's transfer count (for tests that check personality moved).
impl PurseApplet {
    /// Balance, if personalized.
    pub fn balance(&self) -> Option<Amount> {
        self.card.as_ref().map(|c| c.state.balance)
    }

    /// Transfers credited, if personalized.
    pub fn transfers(&self) -> Option<TransferCount> {
        self.card.as_ref().map(|c| c.state.transfers)
    }
}
