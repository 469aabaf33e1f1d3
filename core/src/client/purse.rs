//! [`PurseClient`]: the purse's commands as typed calls over any [`Link`], following
//! `docs/apdu.md`.

use alloc::vec::Vec;

use super::{exchange, purse_apdu, ClientError, Link, Side};
use crate::purse::personal::{PurseInfo, PursePersonalization};
use crate::purse::purchase::PurchaseRequest;
use crate::purse::state::{Log, PairedTable};
use crate::status::Status;
use crate::transfer::cert::RecognitionInfo;

/// Everything a purse tells about itself.
#[derive(Clone, Debug)]
pub struct PurseStatus {
    /// Public data: balance, limits, PIN tries, personality, keys.
    pub info: PurseInfo,
    /// The PSDs it has received value from (least recent first).
    pub paired: PairedTable,
    /// Its last operations (oldest first).
    pub log: Log,
}

/// A purse card behind a link.
pub struct PurseClient<L> {
    link: L,
}

impl<L: Link> PurseClient<L> {
    /// A client on `link`; call [`PurseClient::select`] first.
    pub fn new(link: L) -> Self {
        Self { link }
    }

    /// The link, for commands this client does not type.
    pub fn link(&mut self) -> &mut L {
        &mut self.link
    }

    /// The link back.
    pub fn into_link(self) -> L {
        self.link
    }

    /// Sends a command; the response data of a `9000` (see [`exchange`]).
    pub fn exchange(&mut self, step: &'static str, apdu: &[u8]) -> Result<Vec<u8>, ClientError> {
        exchange(&mut self.link, Side::Purse, step, apdu)
    }

    /// SELECTs the purse applet.
    pub fn select(&mut self) -> Result<(), ClientError> {
        self.exchange("SELECT", &purse_apdu::select()).map(drop)
    }

    /// PERSONALIZE (once); the card's answer (its purchase public key, `docs/apdu.md`).
    pub fn personalize(&mut self, p: &PursePersonalization) -> Result<Vec<u8>, ClientError> {
        self.exchange("PERSONALIZE", &purse_apdu::personalize(p))
    }

    /// CERTIFY with the issuer's signature over the purchase key.
    pub fn certify(&mut self, signature: &[u8]) -> Result<(), ClientError> {
        self.exchange("CERTIFY", &purse_apdu::certify(signature))
            .map(drop)
    }

    /// The card's recognition key, certificate and revocation version (GET DATA 04).
    pub fn recognition_info(&mut self) -> Result<RecognitionInfo, ClientError> {
        let data = self.exchange("GET DATA", &purse_apdu::get_data(4))?;
        RecognitionInfo::decode(&data)
            .map_err(|_| ClientError::BadResponse(Side::Purse, "GET DATA"))
    }

    /// INSTALL CERTIFICATE: the issuer's certificate on the recognition key.
    pub fn install_certificate(&mut self, certificate: &[u8]) -> Result<(), ClientError> {
        self.exchange(
            "INSTALL CERTIFICATE",
            &purse_apdu::install_certificate(certificate),
        )
        .map(drop)
    }

    /// LOAD REVOCATION: the issuer's revocation list.
    pub fn load_revocation(&mut self, list: &[u8]) -> Result<(), ClientError> {
        self.exchange("LOAD REVOCATION", &purse_apdu::load_revocation(list))
            .map(drop)
    }

    /// The purse's public data (GET DATA 01); `None` for a blank purse.
    pub fn info(&mut self) -> Result<Option<PurseInfo>, ClientError> {
        let data = self.exchange("GET DATA", &purse_apdu::get_data(1))?;
        PurseInfo::decode(&data).map_err(|_| ClientError::BadResponse(Side::Purse, "GET DATA"))
    }

    /// SELECT, then public data, paired PSDs and log (GET DATA 01, 02, 03).
    pub fn status(&mut self) -> Result<PurseStatus, ClientError> {
        self.select()?;
        let info = self.info()?.ok_or(ClientError::Refused(
            Side::Purse,
            "GET DATA",
            Status::ConditionsNotSatisfied,
        ))?;
        let data = self.exchange("GET DATA", &purse_apdu::get_data(2))?;
        // A purse of the version before answers a version 1 table: read as late as
        // possible, bounded by the card's count, as that purse would load it.
        let paired = PairedTable::decode(&data)
            .map_err(|_| ClientError::BadResponse(Side::Purse, "GET DATA 02"))?
            .bounded_by(info.transfers);
        let data = self.exchange("GET DATA", &purse_apdu::get_data(3))?;
        let log =
            Log::decode(&data).map_err(|_| ClientError::BadResponse(Side::Purse, "GET DATA 03"))?;
        Ok(PurseStatus { info, paired, log })
    }

    /// VERIFY the PIN.
    pub fn verify(&mut self, pin: &[u8]) -> Result<(), ClientError> {
        self.exchange("VERIFY", &purse_apdu::verify(pin)).map(drop)
    }

    /// PURCHASE: the purse's signed purchase record. A retry of the same request after a
    /// lost reply returns the same record, debited once.
    pub fn purchase(&mut self, req: &PurchaseRequest) -> Result<Vec<u8>, ClientError> {
        self.exchange("PURCHASE", &purse_apdu::purchase(req))
    }
}
