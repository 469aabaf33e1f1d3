//! The one error type of the API: a card refusal (with its status word), a malformed
//! argument, or a saved state that does not load. `js.rs` turns it into a JS `Error`.

use core::fmt;
use std::string::{String, ToString};

use openpsd_core::client::ClientError;
use openpsd_core::Status;

/// Which kind of failure; its [`ErrorKind::name`] is the JS error's `name`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The PSD answered a status word other than `9000`.
    Card,
    /// An argument was malformed before anything reached the card.
    Input,
    /// Bytes given as a saved state are not one.
    State,
    /// A transfer stopped without a card's status word (a link or layout failure, a
    /// transfer pending for another card).
    Transfer,
}

impl ErrorKind {
    /// The JS `Error.name`.
    pub const fn name(self) -> &'static str {
        match self {
            ErrorKind::Card => "CardError",
            ErrorKind::Input => "InputError",
            ErrorKind::State => "StateError",
            ErrorKind::Transfer => "TransferError",
        }
    }
}

/// A failure of an API call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// What failed.
    pub kind: ErrorKind,
    /// Human-readable text (for a card refusal: `Status::describe`).
    pub message: String,
    /// The status word, for card refusals.
    pub sw: Option<u16>,
}

/// The client layer's errors, mapped once: a card's status word (defined or not) is a
/// `CardError` with that word, a malformed answer the card's `6F00`, anything else (a
/// transfer stopped for another reason) a `TransferError`.
impl From<ClientError> for ApiError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Refused(_, _, s) => ApiError::card(s.sw()),
            ClientError::UnknownStatus(_, _, sw) => ApiError::card(sw),
            ClientError::BadResponse(..) => ApiError::card(Status::Internal.sw()),
            other => ApiError::transfer(other.to_string()),
        }
    }
}

impl ApiError {
    /// The card refused with `sw`.
    pub fn card(sw: u16) -> Self {
        let message = match Status::from_sw(sw) {
            Some(s) => s.describe().to_string(),
            None => format!("card answered {sw:04X}"),
        };
        Self {
            kind: ErrorKind::Card,
            message,
            sw: Some(sw),
        }
    }

    /// A malformed argument.
    pub fn input(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Input,
            message: message.into(),
            sw: None,
        }
    }

    /// Not a saved state.
    pub fn state(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::State,
            message: message.into(),
            sw: None,
        }
    }

    /// A transfer that stopped without a status word.
    pub fn transfer(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Transfer,
            message: message.into(),
            sw: None,
        }
    }

    /// The status word as four upper-case hex digits, for card refusals.
    pub fn sw_hex(&self) -> Option<String> {
        self.sw.map(|sw| format!("{sw:04X}"))
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.sw {
            Some(sw) => write!(f, "{}: {} ({sw:04X})", self.kind.name(), self.message),
            None => write!(f, "{}: {}", self.kind.name(), self.message),
        }
    }
}

impl core::error::Error for ApiError {}

/// Result of an API call.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_errors_carry_the_status_description() {
        let e = ApiError::card(0x9A01);
        assert_eq!(e.kind.name(), "CardError");
        assert_eq!(e.message, Status::InsufficientFunds.describe());
        assert_eq!(e.sw_hex().as_deref(), Some("9A01"));
        assert_eq!(ApiError::card(0x1234).message, "card answered 1234");
        // A PSD of the retired K1 refill suite: a card refusal like any other, with core's
        // text (the page tells the mailer to personalize a new device).
        let e = ApiError::card(0x9A16);
        assert_eq!(
            (e.kind, e.sw_hex().as_deref()),
            (ErrorKind::Card, Some("9A16"))
        );
        assert_eq!(e.message, Status::LegacyRefillSuite.describe());
    }
}
