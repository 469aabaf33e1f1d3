//! The purse applet: a stored-value card that receives value from a PSD (seed 002, Fig. 8)
//! and pays merchants with signed purchase records (Fig. 2 and 5).
//!
//! The PIN follows the rule that beats tearing attacks: the try counter is decremented and
//! committed *before* the compare (in constant time) and restored only after a match, so
//! cutting power after a wrong guess still costs a try. Failed recognitions are counted the
//! same way. Value changes commit before the response that depends on them.
//! `docs/purse.md` describes the protocol; `docs/apdu.md` the bytes.
//!
//! Layout: [`command`] parses each APDU once into a [`PurseCommand`]; [`PurseApplet`]'s
//! `call` checks the life-cycle once and dispatches to the handler in the file of its
//! family (`personal.rs`, `pin.rs`, `transfer.rs`, `release.rs`, `purchase.rs`); the money is
//! [`balance`]'s, the records and the persistent/volatile state [`state`]'s.

pub mod balance;
pub mod command;
pub mod personal;
mod pin;
pub mod purchase;
pub mod release;
pub mod state;
mod transfer;

use alloc::boxed::Box;
use alloc::vec::Vec;

use crate::apdu::Command;
use crate::card::{Applet, Card, Ctx};
use crate::platform::Platform;
use crate::records::purse as rec;
use crate::status::Status;
use crate::store::{Store, StoreError, Transaction};
use crate::types::{Amount, TransferCount};

use command::{LifeCycle, PurseCommand};
use state::{Persistent, PurseState, Volatile};

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
    /// INSTALL CERTIFICATE (the issuer's certificate on the recognition key).
    pub const INSTALL_CERTIFICATE: u8 = 0x14;
    /// VERIFY (ISO 7816-4, class 00).
    pub const VERIFY: u8 = 0x20;
    /// CHANGE REFERENCE DATA (ISO 7816-4, class 00).
    pub const CHANGE_PIN: u8 = 0x24;
    /// UNBLOCK PIN (issuer-authenticated; proprietary class).
    pub const UNBLOCK_PIN: u8 = 0x2C;
    /// RESET RECOGNITION (issuer-authenticated).
    pub const RESET_RECOGNITION: u8 = 0x6A;
    /// LOAD REVOCATION (the issuer's signed list of revoked certificates).
    pub const LOAD_REVOCATION: u8 = 0x6C;
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
    /// TRANSFER CLOSE.
    pub const TRANSFER_CLOSE: u8 = 0x7C;
    /// PURCHASE.
    pub const PURCHASE: u8 = 0x7A;
    /// RELEASE PARTNER (issuer-authenticated).
    pub const RELEASE_PARTNER: u8 = 0x7E;
    /// GET DATA.
    pub const GET_DATA: u8 = 0xCA;
}

/// P2 of VERIFY / CHANGE REFERENCE DATA / UNBLOCK PIN: the card's PIN (specific reference
/// data, ISO 7816-4 `81`).
pub const PIN_REF: u8 = 0x81;

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

/// The purse application: its persistent state (`None` while blank) and its volatile
/// state. The handlers live next to what they read and write (`personal.rs`, `pin.rs`,
/// `transfer.rs`, `purchase.rs`; the money in `balance.rs`); [`Applet::call`] below parses
/// the command, checks the life-cycle once, and dispatches.
pub struct PurseApplet {
    persistent: Option<Persistent>,
    volatile: Volatile,
    /// PSDs recognised since power-on (checked certificates, static-static secrets).
    partners: crate::transfer::partners::Partners,
}

impl PurseApplet {
    /// Loads the applet's persistent state; a store without purse records is a blank purse,
    /// a partial or undecodable one an error.
    pub fn load(store: &dyn Store) -> Result<Self, StoreError> {
        Ok(PurseApplet {
            persistent: Persistent::load(store)?,
            volatile: Volatile::default(),
            partners: Default::default(),
        })
    }

    fn life_cycle(&self) -> LifeCycle {
        match self.persistent {
            None => LifeCycle::Blank,
            Some(_) => LifeCycle::Personalized,
        }
    }

    /// The personalized card. Commands that need it are refused before they run on a blank
    /// purse ([`PurseCommand::allowed_in`]); this answers `6985` all the same.
    fn personalized(&self) -> Result<&Persistent, Status> {
        self.persistent
            .as_ref()
            .ok_or(Status::ConditionsNotSatisfied)
    }

    fn personalized_mut(&mut self) -> Result<&mut Persistent, Status> {
        self.persistent
            .as_mut()
            .ok_or(Status::ConditionsNotSatisfied)
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

    /// Balance, if personalized.
    pub fn balance(&self) -> Option<Amount> {
        self.persistent.as_ref().map(|c| c.state.balance)
    }

    /// Transfers credited, if personalized (for tests that check personality moved).
    pub fn transfers(&self) -> Option<TransferCount> {
        self.persistent.as_ref().map(|c| c.state.transfers)
    }
}

/// Commits the balance-and-personality record alone, then adopts it.
fn commit_state(ctx: &mut Ctx<'_>, c: &mut Persistent, state: PurseState) -> Result<(), Status> {
    let mut txn = Transaction::begin(ctx.store);
    txn.write(rec::STATE, state.encode());
    txn.commit()?;
    c.state = state;
    Ok(())
}

impl Applet for PurseApplet {
    fn aid(&self) -> &'static [u8] {
        PURSE_AID
    }

    fn select(&mut self, _ctx: &mut Ctx<'_>) -> Result<(), Status> {
        Ok(())
    }

    fn deselect(&mut self) {
        self.volatile = Volatile::default();
    }

    fn call(
        &mut self,
        ctx: &mut Ctx<'_>,
        cmd: &Command<'_>,
        reply: &mut Vec<u8>,
    ) -> Result<(), Status> {
        use PurseCommand::*;
        let command = PurseCommand::parse(cmd)?;
        if !command.allowed_in(self.life_cycle()) {
            return Err(Status::ConditionsNotSatisfied);
        }
        match command {
            Personalize(data) => self.personalize(ctx, data, reply),
            Certify(data) => self.certify(ctx, data),
            InstallCertificate(data) => self.install_certificate(ctx, data),
            LoadRevocation(data) => self.load_revocation(ctx, data),
            GetData(object) => self.get_data(object, reply),
            Verify(data) => self.verify(ctx, data),
            ChangePin(data) => self.change_pin(ctx, data),
            UnblockPin(data) => self.unblock_pin(ctx, data),
            ResetRecognition(data) => self.reset_recognition(ctx, data),
            Recognize(data) => self.recognize(ctx, data, reply),
            AuthenticatePsd(data) => self.authenticate_psd(ctx, data),
            TransferRequest(data) => self.transfer_request(data, reply),
            TransferCredit(data) => self.transfer_credit(ctx, data, reply),
            TransferStatus => self.transfer_status(reply),
            TransferClose(data) => self.transfer_close(ctx, data),
            // Off the browser's module (its 150 KB gzip budget): the issuer releases places
            // on card-sim and real cards.
            #[cfg(not(target_arch = "wasm32"))]
            ReleasePartner(data) => self.release_partner(ctx, data, reply),
            #[cfg(target_arch = "wasm32")]
            ReleasePartner(_) => Err(Status::InstructionNotSupported),
            Purchase(req) => self.purchase(ctx, req, reply),
        }
    }
}
