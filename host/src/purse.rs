//! A purse card and value transfer as the host sees them: the purse's status (public data,
//! the PSDs it has been paired with, its log), the PSD's identity, and refusals explained
//! in words (a wrong PIN with the tries left, a blocked PIN, ...).
//!
//! The transfer itself is core's driver, [`openpsd_core::transfer::host::transfer`], over
//! [`crate::link::CardLink`]s.

use openpsd_core::psd::device::DeviceInfo;
use openpsd_core::psd::host as psd_host;
use openpsd_core::purse::host as purse_host;
use openpsd_core::purse::personal::PurseInfo;
use openpsd_core::purse::state::{Log, PairedTable};
use openpsd_core::status::SW_OK;
use openpsd_core::transfer::host::{Link, Side, TransferError};
use openpsd_core::Status;

/// Sends one APDU; the response data of a `9000`, or the refusal as a [`TransferError`].
pub fn exchange(
    link: &mut dyn Link,
    side: Side,
    step: &'static str,
    apdu: &[u8],
) -> Result<Vec<u8>, TransferError> {
    let mut resp = link
        .transmit(apdu)
        .map_err(|e| TransferError::Link(side, e))?;
    if resp.len() < 2 {
        return Err(TransferError::BadResponse(side, step));
    }
    let sw = psd_host::sw(&resp);
    if sw != SW_OK {
        return Err(match Status::from_sw(sw) {
            Some(s) => TransferError::Refused(side, step, s),
            None => TransferError::UnknownStatus(side, step, sw),
        });
    }
    resp.truncate(resp.len() - 2);
    Ok(resp)
}

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

/// Reads a purse's status (SELECT, GET DATA 01, 02, 03).
pub fn purse_status(purse: &mut dyn Link) -> Result<PurseStatus, TransferError> {
    let side = Side::Purse;
    exchange(purse, side, "SELECT", &purse_host::select())?;
    let info = PurseInfo::decode(&exchange(
        purse,
        side,
        "GET DATA",
        &purse_host::get_data(1),
    )?)
    .map_err(|_| TransferError::BadResponse(side, "GET DATA"))?
    .ok_or(TransferError::Refused(
        side,
        "GET DATA",
        Status::ConditionsNotSatisfied,
    ))?;
    let paired = PairedTable::decode(&exchange(
        purse,
        side,
        "GET DATA",
        &purse_host::get_data(2),
    )?)
    .map_err(|_| TransferError::BadResponse(side, "GET DATA 02"))?;
    let log = Log::decode(&exchange(
        purse,
        side,
        "GET DATA",
        &purse_host::get_data(3),
    )?)
    .map_err(|_| TransferError::BadResponse(side, "GET DATA 03"))?;
    Ok(PurseStatus { info, paired, log })
}

/// The PSD's identity (SELECT, GET DATA 01); `None` for a blank PSD.
pub fn psd_device(psd: &mut dyn Link) -> Result<Option<DeviceInfo>, TransferError> {
    exchange(psd, Side::Psd, "SELECT", &psd_host::select())?;
    let data = exchange(psd, Side::Psd, "GET DATA", &psd_host::get_data())?;
    DeviceInfo::decode(&data).map_err(|_| TransferError::BadResponse(Side::Psd, "GET DATA"))
}

/// A transfer or payment refusal in words: the PIN cases spelled out, the rest as the
/// card's status word and its description.
pub fn explain(e: &TransferError) -> String {
    match e {
        TransferError::Refused(Side::Purse, "VERIFY", Status::VerificationFailed(0)) => {
            "wrong PIN: no tries left, the PIN is now blocked (purse answered 63C0); the issuer must unblock it".to_string()
        }
        TransferError::Refused(Side::Purse, "VERIFY", Status::VerificationFailed(n)) => format!(
            "wrong PIN: {n} tries left before the PIN blocks (purse answered {:04X})",
            Status::VerificationFailed(*n).sw()
        ),
        TransferError::Refused(Side::Purse, "VERIFY", Status::AuthenticationBlocked) => {
            "the purse's PIN is blocked (6983): the issuer must unblock it (card-sim unblock-pin)"
                .to_string()
        }
        TransferError::Refused(side, step, s @ Status::AuthenticationBlocked) => format!(
            "the {side} refused {step}: {s} — too many failed recognitions; the issuer must reset them (card-sim reset-recognition)"
        ),
        TransferError::Refused(side, step, s @ Status::VerificationFailed(n))
            if step.starts_with("AUTHENTICATE") =>
        {
            format!(
                "the {side} did not recognise its partner ({step}: {s}); {n} failed recognitions left before transfers block — are both devices of the same scheme?"
            )
        }
        TransferError::Refused(Side::Psd, "OPEN SESSION", s @ Status::ConditionsNotSatisfied) => {
            format!("the PSD refused OPEN SESSION: {s} — is it personalized with a scheme (card-sim personalize --scheme)?")
        }
        TransferError::Refused(side, "SELECT", s @ Status::NotFound) => {
            format!("the {side} refused SELECT: {s} — is this card a {side}?")
        }
        other => other.to_string(),
    }
}
