//! The one error type every service answers with: an HTTP status and a JSON body naming the
//! code and the step that refused (`docs/refill.md` § Errors).
//!
//! Handlers never panic on input; anything a client can get wrong becomes one of these. A
//! refusal that comes back from another service keeps its code and step, so the host sees
//! which service and which step said no.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
pub use openpsd_protocol::error::{ErrorBody, ErrorCode, ErrorDetail};
use openpsd_protocol::BadField;

/// A refusal: HTTP status plus the JSON error body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Machine-readable code (`docs/refill.md` table).
    pub code: String,
    /// The step that refused, e.g. `kms_verify_audit`.
    pub step: String,
    /// Human-readable explanation.
    pub message: String,
}

impl ApiError {
    /// An error with an explicit status and code.
    pub fn new(
        status: StatusCode,
        code: ErrorCode,
        step: &str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            code: code.as_str().to_owned(),
            step: step.to_owned(),
            message: message.into(),
        }
    }

    /// An error with a service's own code (its protocol module's `code::…` constants).
    pub fn coded(status: StatusCode, code: &str, step: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.to_owned(),
            step: step.to_owned(),
            message: message.into(),
        }
    }

    /// `400 bad_request`: malformed JSON, hex or field.
    pub fn bad_request(step: &str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            step,
            message,
        )
    }

    /// `404 unknown_device`.
    pub fn unknown_device(step: &str, device: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            ErrorCode::UnknownDevice,
            step,
            format!("device {device} is not registered"),
        )
    }

    /// `409 wrong_state`.
    pub fn wrong_state(step: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, ErrorCode::WrongState, step, message)
    }

    /// `422 audit_inconsistent`: the audit does not follow from the last accepted one.
    pub fn audit_inconsistent(step: &str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::AuditInconsistent,
            step,
            message,
        )
    }

    /// `400 amount_invalid`.
    pub fn amount_invalid(step: &str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::AmountInvalid,
            step,
            message,
        )
    }

    /// `503 service_unavailable`: another service could not be reached; this service
    /// changed nothing that depends on the answer.
    pub fn unavailable(step: &str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::ServiceUnavailable,
            step,
            message,
        )
    }

    /// `500 internal`: the service's own storage or an invariant failed. Nothing the
    /// client sent causes this; the transaction in progress was rolled back.
    pub fn internal(step: &str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            step,
            message,
        )
    }

    /// The JSON body.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code.clone(),
                step: self.step.clone(),
                message: self.message.clone(),
            },
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} at {}: {}",
            self.status.as_u16(),
            self.code,
            self.step,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

impl From<BadField> for ApiError {
    fn from(e: BadField) -> Self {
        Self::bad_request(&e.step, e.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(code = %self.code, step = %self.step, "{}", self.message);
        } else {
            tracing::info!(code = %self.code, step = %self.step, "refused: {}", self.message);
        }
        (self.status, axum::Json(self.body())).into_response()
    }
}

/// Storage failures are internal errors of the step that ran the transaction.
pub trait StorageContext<T> {
    /// Maps a SQLite error into `500 internal` at `step`.
    fn storage(self, step: &str) -> Result<T, ApiError>;
}

impl<T> StorageContext<T> for Result<T, rusqlite::Error> {
    fn storage(self, step: &str) -> Result<T, ApiError> {
        self.map_err(|e| ApiError::internal(step, format!("storage: {e}")))
    }
}
