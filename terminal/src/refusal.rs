//! Transfer and payment refusals explained in words (a wrong PIN with the tries left, a
//! blocked PIN, ...): the terminal's errors read this way, and the `openpsd` CLI explains
//! transfers with it too (`openpsd_host::purse::explain` is this function).

use openpsd_core::client::transfer::{Side, TransferError};
use openpsd_core::Status;

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
        TransferError::Refused(side, step, s @ Status::TransferUnresolved) => format!(
            "the {side} refused {step}: {s} — the purse no longer knows what became of the PSD's pending transfer; the scheme issuer settles it: give the issuer `openpsd pending --out pending.json`, then apply its decision with `openpsd settle DECISION`"
        ),
        TransferError::PendingForOtherCard(_) => format!(
            "{e}; if that card is lost or destroyed, the scheme issuer settles the transfer (`openpsd pending`, then `openpsd settle DECISION`)"
        ),
        other => other.to_string(),
    }
}
