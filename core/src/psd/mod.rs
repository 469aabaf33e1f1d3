//! The PSD applet: personalization, register sets, indicia, audits, refills and value
//! transfer to purses.
//!
//! Layout: [`command`] parses each APDU once into a [`PsdCommand`] (class, P1/P2, life-cycle
//! permission); [`PsdApplet`]'s `call` checks the life-cycle and the register set once and
//! dispatches to the handler, which lives in the file of its command family next to its
//! message format ([`device`], [`registers`], [`indicium`], [`audit`], [`refill`],
//! [`receipt`], [`transfer`], [`settle`], [`license`]); `state.rs` holds the persistent and
//! volatile state.
//!
//! Every command that changes money commits its new registers through a
//! [`Transaction`](crate::store::Transaction) before it writes a byte of response that
//! depends on them; the RAM copy is replaced only after the commit succeeded. A power cut
//! mid-command therefore leaves the store either before or after the command, and the host
//! learns about a debit only once it is durable. `docs/apdu.md` is the contract for every
//! command here.

pub mod audit;
pub mod certmeter;
pub mod command;
pub mod device;
pub mod indicium;
pub mod license;
#[cfg(feature = "webcrypto")]
pub mod outside_signer;
pub mod receipt;
pub mod refill;
pub mod registers;
pub mod settle;
mod state;
pub mod transfer;

use alloc::vec::Vec;

use crate::apdu::Command;
use crate::card::{Applet, Ctx};
use crate::status::Status;
use crate::store::{Store, StoreError};
use crate::types::RegisterSetIndex;

use command::PsdCommand;
use registers::RegisterSet;
use state::{Persistent, Volatile};

/// The PSD applet's AID: proprietary RID `F0 50 53 44 00` (`F0` + "PSD" + `00`), PIX `00 01`.
pub const PSD_AID: &[u8] = &[0xF0, 0x50, 0x53, 0x44, 0x00, 0x00, 0x01];

/// Class byte of the PSD's proprietary commands.
pub const CLA_PSD: u8 = 0x80;

/// Instruction bytes.
pub mod ins {
    /// PERSONALIZE.
    pub const PERSONALIZE: u8 = 0x10;
    /// INSTALL CERTIFICATE (the issuer's certificate on the recognition key).
    pub const INSTALL_CERTIFICATE: u8 = 0x14;
    /// READ REGISTERS.
    pub const READ_REGISTERS: u8 = 0x32;
    /// ISSUE INDICIUM.
    pub const ISSUE_INDICIUM: u8 = 0x40;
    /// STORE SIGNATURE (an indicium's outside signature; feature `webcrypto`).
    pub const STORE_SIGNATURE: u8 = 0x46;
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
    /// TRANSFER CLOSE (the PSD's statement that nothing is pending with the card).
    pub const TRANSFER_CLOSE: u8 = 0x6E;
    /// RESET RECOGNITION (issuer-authenticated).
    pub const RESET_RECOGNITION: u8 = 0x6A;
    /// LOAD REVOCATION (the issuer's signed list of revoked certificates).
    pub const LOAD_REVOCATION: u8 = 0x6C;
    /// LICENSE REQUEST (seed 003, Fig. 4 steps 60-62).
    pub const LICENSE_REQUEST: u8 = 0x42;
    /// LICENSE INSTALL (seed 003, Fig. 4 step 67).
    pub const LICENSE_INSTALL: u8 = 0x44;
    /// EXPORT SET (seed 003, Fig. 5).
    pub const EXPORT_SET: u8 = 0x48;
    /// IMPORT SET (seed 003, claim 5).
    pub const IMPORT_SET: u8 = 0x4A;
    /// RETIRE SET (an exported set given up for a refund).
    pub const RETIRE_SET: u8 = 0x4C;
    /// LOAD RATE TABLE (seed 004, step 257).
    pub const LOAD_RATE_TABLE: u8 = 0x70;
    /// LOAD TRUST ANCHOR (seed 004, claim 12).
    pub const LOAD_TRUST_ANCHOR: u8 = 0x5C;
    /// GENERATE KEY (seed 004, Fig. 5 steps 508-512).
    pub const GENERATE_KEY: u8 = 0x74;
    /// INSTALL KEY CERTIFICATE (seed 004, Fig. 5 step 520).
    pub const INSTALL_KEY_CERTIFICATE: u8 = 0x76;
    /// ISSUE POSTMARK (seed 004, Fig. 3).
    pub const ISSUE_POSTMARK: u8 = 0x72;
    /// SIGN (seed 004: a document signature as a CMS signer).
    pub const SIGN: u8 = 0x78;
    /// VALIDATE POSTMARK (seed 004, Fig. 4).
    pub const VALIDATE_POSTMARK: u8 = 0x7E;
    /// LOAD CREDIT LINE (seed 004, Fig. 8).
    pub const LOAD_CREDIT_LINE: u8 = 0x58;
    /// PAY (seed 004, Fig. 9).
    pub const PAY: u8 = 0x5A;
    /// REVOCATION REQUEST (seed 004, Fig. 6 step 604).
    pub const REVOCATION_REQUEST: u8 = 0x7A;
    /// REVOKE KEY (seed 004, Fig. 6 steps 612-620).
    pub const REVOKE_KEY: u8 = 0x7C;
    /// GET DATA (device public data).
    pub const GET_DATA: u8 = 0xCA;
    /// ISSUE AGENT CERTIFICATE (seed 004, Fig. 3A).
    pub const ISSUE_AGENT_CERTIFICATE: u8 = 0x56;
}

/// Days a date of mailing may lie ahead of the platform's clock (when it has one).
pub const MAX_DAYS_AHEAD: u32 = 7;
/// Days a date of mailing may lie behind the platform's clock: one, for hosts in time zones
/// behind UTC; backdating beyond that is refused.
pub const MAX_DAYS_BEHIND: u32 = 1;

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

/// The PSD application: its persistent and volatile state. The handlers live next to the
/// message formats they read and write (`device.rs`, `registers.rs`, `indicium.rs`,
/// `audit.rs`, `refill.rs`, `receipt.rs`, `transfer.rs`); [`Applet::call`] below parses the
/// command, checks the life-cycle and the register set once, and dispatches.
pub struct PsdApplet {
    persistent: Persistent,
    volatile: Volatile,
    /// Purses recognised since power-on (checked certificates, static-static secrets).
    partners: crate::transfer::partners::Partners,
    /// Precomputed signature nonces for indicia (RAM only; filled by [`Applet::idle`],
    /// zeroized at deselect, reset and power-off; docs/ecdsa.md).
    #[cfg(not(target_arch = "wasm32"))]
    nonces: crate::crypto::nonce::NoncePool,
}

impl PsdApplet {
    /// Loads the applet's persistent state. A store without PSD records is a blank PSD;
    /// records that do not decode, or register sets without a device, are an error.
    pub fn load(store: &dyn Store) -> Result<Self, StoreError> {
        Ok(PsdApplet {
            persistent: Persistent::load(store)?,
            volatile: Volatile::default(),
            partners: Default::default(),
            #[cfg(not(target_arch = "wasm32"))]
            nonces: Default::default(),
        })
    }

    /// Precomputed nonces ready for indicia (0 in the browser's module, which has no pool).
    pub fn nonce_pool_len(&self) -> usize {
        #[cfg(not(target_arch = "wasm32"))]
        return self.nonces.len();
        #[cfg(target_arch = "wasm32")]
        0
    }

    /// Whether the PSD is personalized (it may hold no register set: every set of a PSD
    /// personalized for licenses comes later).
    pub fn is_personalized(&self) -> bool {
        self.persistent.device.is_some()
    }

    /// The register sets in use, with their slots (for hosts that embed the applet
    /// directly, and tests).
    pub fn register_sets(&self) -> impl Iterator<Item = (usize, &RegisterSet)> {
        self.persistent
            .sets
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| (i, s)))
    }

    fn device(&self) -> Result<&device::Device, Status> {
        self.persistent.device()
    }

    /// The register set P2 names, once the life-cycle check passed: `6A88` if the device
    /// has no set in that slot.
    fn set_index(&self, set: RegisterSetIndex) -> Result<usize, Status> {
        let i = usize::from(set.0);
        self.persistent.set(i).map(|_| i)
    }

    /// [`Self::set_index`] for a command that moves value: `9A34` while the set is frozen
    /// by an export being prepared.
    fn live_set_index(&self, set: RegisterSetIndex) -> Result<usize, Status> {
        let i = self.set_index(set)?;
        if self.persistent.frozen(i) {
            return Err(Status::SetFrozen);
        }
        Ok(i)
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
        self.volatile = Volatile::default();
        #[cfg(not(target_arch = "wasm32"))]
        self.nonces.clear();
    }

    /// Fills the nonce pool by one batch (a personalized PSD whose pool is not full).
    #[cfg(not(target_arch = "wasm32"))]
    fn idle(&mut self, ctx: &mut Ctx<'_>) -> bool {
        match self.persistent.device() {
            Ok(device) => self.nonces.fill_batch(&device.key, ctx.platform) > 0,
            Err(_) => false,
        }
    }

    fn call(
        &mut self,
        ctx: &mut Ctx<'_>,
        cmd: &Command<'_>,
        reply: &mut Vec<u8>,
    ) -> Result<(), Status> {
        use PsdCommand::*;
        let command = PsdCommand::parse(cmd)?;
        if !command.allowed_in(self.persistent.life_cycle()) {
            return Err(Status::ConditionsNotSatisfied);
        }
        match command {
            Personalize(data) => self.personalize(ctx, data, reply),
            #[cfg(feature = "webcrypto")]
            PersonalizeOutside(data) => self.personalize_outside(ctx, data, reply),
            #[cfg(feature = "webcrypto")]
            StoreSignature(set, data) => {
                let i = self.set_index(set)?;
                self.store_signature(ctx, i, data, reply)
            }
            // Never parsed without the feature (P1 `01` and its INS are refused there).
            #[cfg(not(feature = "webcrypto"))]
            PersonalizeOutside(_) | StoreSignature(..) => Err(Status::InstructionNotSupported),
            GetDeviceInfo => {
                self.device_info(reply);
                Ok(())
            }
            GetTransferInfo => self.transfer_info(reply),
            GetRecognitionInfo => self.recognition_info(reply),
            InstallCertificate(data) => self.install_certificate(ctx, data),
            LoadRevocation(data) => self.load_revocation(ctx, data),
            ReadRegisters(set) => {
                let i = self.set_index(set)?;
                self.read_registers(i, reply)
            }
            IssueIndicium(set, data) => {
                let i = self.live_set_index(set)?;
                self.issue_indicium(ctx, i, data, reply)
            }
            Audit(set, data) => {
                let i = self.set_index(set)?;
                self.audit(i, data, reply)
            }
            Refill(set, data) => {
                let i = self.live_set_index(set)?;
                self.refill(ctx, i, data, reply)
            }
            Receipt(data) => self.receipt(ctx, data, reply),
            OpenSession => self.open_session(ctx, reply),
            AuthenticateCard(data) => self.authenticate_card(ctx, data, reply),
            TransferDebit(set, data) => {
                let i = self.live_set_index(set)?;
                self.transfer_debit(ctx, i, data, reply)
            }
            TransferConfirm(data) => self.transfer_confirm(ctx, data, reply),
            TransferResolve(data) => self.transfer_resolve(ctx, data, reply),
            // Off the browser's module (its 150 KB gzip budget): a browser PSD answers
            // `6D00`, its pending transfer is settled by the next contact only.
            #[cfg(not(target_arch = "wasm32"))]
            TransferSettle(data) => self.transfer_settle(ctx, data, reply),
            #[cfg(target_arch = "wasm32")]
            TransferSettle(_) => Err(Status::InstructionNotSupported),
            TransferClose => self.transfer_close(reply),
            ResetRecognition(data) => self.reset_recognition(ctx, data),
            #[cfg(feature = "licenses")]
            LicenseRequest { replace, data } => self.license_request(ctx, replace, data, reply),
            #[cfg(feature = "licenses")]
            LicenseInstall(data) => self.license_install(ctx, data, reply),
            #[cfg(feature = "licenses")]
            ExportSet { phase, set, data } => {
                // A retried commit finds its slot free already: only the range is checked.
                let i = usize::from(set.0);
                if i >= device::MAX_REGISTER_SETS {
                    return Err(Status::ReferencedDataNotFound);
                }
                self.export_set(ctx, phase, i, data, reply)
            }
            #[cfg(feature = "licenses")]
            ImportSet(data) => self.import_set(ctx, data, reply),
            #[cfg(feature = "licenses")]
            RetireSet { forget, data } => self.retire_set(ctx, forget, data, reply),
            #[cfg(feature = "licenses")]
            GetLicenseInfo => self.license_info(reply),
            #[cfg(feature = "certmeter")]
            LoadRateTable(data) => self.load_rate_table(ctx, data, reply),
            #[cfg(feature = "certmeter")]
            LoadTrustAnchor(data) => self.load_trust_anchor(ctx, data),
            #[cfg(feature = "certmeter")]
            GenerateKey {
                purpose,
                replace,
                data,
            } => self.generate_key(ctx, purpose, replace, data, reply),
            #[cfg(feature = "certmeter")]
            InstallKeyCertificate { slot, set, data } => {
                self.install_key_certificate(ctx, slot, set, data, reply)
            }
            #[cfg(feature = "certmeter")]
            IssuePostmark(set, data) => {
                let i = self.live_set_index(set)?;
                self.issue_postmark(ctx, i, data, reply)
            }
            #[cfg(feature = "certmeter")]
            LoadCreditLine(set, data) => {
                let i = self.live_set_index(set)?;
                self.load_credit_line(ctx, i, data, reply)
            }
            #[cfg(feature = "certmeter")]
            Pay(set, data) => {
                let i = self.live_set_index(set)?;
                self.pay(ctx, i, data, reply)
            }
            #[cfg(feature = "certmeter")]
            GetCertMeterInfo => {
                self.certmeter_info(reply);
                Ok(())
            }
            #[cfg(feature = "certmeter")]
            Sign(set, data) => {
                let i = self.live_set_index(set)?;
                self.sign(ctx, i, data, reply)
            }
            #[cfg(feature = "certmeter")]
            ValidatePostmark(set, data) => {
                let i = self.live_set_index(set)?;
                self.validate_postmark(ctx, i, data, reply)
            }
            #[cfg(feature = "certmeter")]
            IssueAgentCertificate { mode, set, data } => {
                let i = self.live_set_index(set)?;
                self.issue_agent_certificate(ctx, mode, i, data, reply)
            }
            #[cfg(feature = "certmeter")]
            RevocationRequest { slot, data } => self.revocation_request(slot, data, reply),
            #[cfg(feature = "certmeter")]
            RevokeKey(set, data) => self.revoke_key(ctx, set, data, reply),
            #[cfg(not(feature = "certmeter"))]
            LoadRateTable(_)
            | LoadTrustAnchor(_)
            | GenerateKey { .. }
            | InstallKeyCertificate { .. }
            | IssuePostmark(..)
            | GetCertMeterInfo
            | Sign(..)
            | ValidatePostmark(..)
            | IssueAgentCertificate { .. }
            | LoadCreditLine(..)
            | Pay(..)
            | RevocationRequest { .. }
            | RevokeKey(..) => Err(Status::InstructionNotSupported),
            // Never parsed without the feature (their INS are unknown there).
            #[cfg(not(feature = "licenses"))]
            LicenseRequest { .. }
            | LicenseInstall(_)
            | ExportSet { .. }
            | ImportSet(_)
            | RetireSet { .. }
            | GetLicenseInfo => Err(Status::InstructionNotSupported),
        }
    }
}
