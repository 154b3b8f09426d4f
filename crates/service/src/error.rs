//! The service error: either something the client can act on, or an internal failure that the
//! HTTP layer turns into `500 M_UNKNOWN` (logged once, never shown verbatim).

use myelin_core::MatrixError;
use myelin_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Matrix(#[from] MatrixError),
    /// User-interactive authentication is incomplete: the client gets the flows (HTTP 401).
    #[error("user-interactive authentication required")]
    Uia(Box<crate::uia::UiaChallenge>),
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn internal(message: impl std::fmt::Display) -> Self {
        Error::Internal(message.to_string())
    }
}

impl From<StoreError> for Error {
    fn from(error: StoreError) -> Self {
        Error::Internal(error.to_string())
    }
}
