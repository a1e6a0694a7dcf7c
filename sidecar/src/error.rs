//! The one place errors become HTTP responses. Details are logged; the client only sees
//! a status and a generic message (never a token, claim, or backend error text).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// An error of a request handler.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Missing or wrong internal API token.
    #[error("unauthorized")]
    Unauthorized,
    /// Malformed request (the message is safe to show: it names the parameter, not data).
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// Not found.
    #[error("not found")]
    NotFound,
    /// The databroker failed.
    #[error(transparent)]
    Store(#[from] crate::databroker::StoreError),
    /// The session service failed.
    #[error(transparent)]
    Session(#[from] crate::session::SessionError),
    /// Signing the identity JWT failed.
    #[error(transparent)]
    Sign(#[from] crate::idp::SignError),
    /// Anything else that is our fault.
    #[error("internal error: {0}")]
    Internal(String),
}

impl AppError {
    /// The HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::Unauthorized => StatusCode::UNAUTHORIZED,
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::NotFound => StatusCode::NOT_FOUND,
            AppError::Store(_) | AppError::Session(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Sign(_) | AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        let public = match &self {
            AppError::BadRequest(what) => format!("bad request: {what}"),
            _ => status
                .canonical_reason()
                .unwrap_or("error")
                .to_ascii_lowercase(),
        };
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        } else {
            tracing::debug!(error = %self, "request rejected");
        }
        (status, public).into_response()
    }
}

/// Errors at startup (bad settings, backend unreachable), for `main`.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// A setting is invalid.
    #[error("invalid setting `{option}`: {reason}")]
    Setting {
        /// Pomerium option name.
        option: &'static str,
        /// Why.
        reason: String,
    },
    /// The databroker backend could not be opened.
    #[error(transparent)]
    Store(#[from] crate::databroker::StoreError),
    /// Other (e.g. OIDC discovery from the login module).
    #[error("{0}")]
    Other(String),
}
