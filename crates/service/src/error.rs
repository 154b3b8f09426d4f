//! The service error: either something the client can act on, or an internal failure that the
//! HTTP layer answers with `M_UNKNOWN` (logged once with its whole chain of causes, never shown
//! to the client).

use std::fmt;

use myelin_core::MatrixError;
use myelin_store::StoreError;

/// An internal failure's cause, kept whole so that the log shows every `source()` below it.
pub type BoxedError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Matrix(#[from] MatrixError),
    /// User-interactive authentication is incomplete: the client gets the flows (the api's
    /// challenge).
    #[error("user-interactive authentication required")]
    Uia(Box<crate::uia::UiaChallenge>),
    /// Displays the whole chain of causes.
    #[error("internal error: {}", Chain(&**.0))]
    Internal(BoxedError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An internal failure known only by its message.
    pub fn internal(message: impl fmt::Display) -> Self {
        Error::Internal(message.to_string().into())
    }

    /// An internal failure: what was being done, and the error that stopped it.
    pub fn internal_with(
        context: impl fmt::Display,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Internal(Box::new(WithContext { context: context.to_string(), source: Box::new(source) }))
    }
}

impl From<StoreError> for Error {
    fn from(error: StoreError) -> Self {
        Error::Internal(Box::new(error))
    }
}

/// A message in front of the error that caused it.
#[derive(Debug)]
struct WithContext {
    context: String,
    source: BoxedError,
}

impl fmt::Display for WithContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.context)
    }
}

impl std::error::Error for WithContext {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

/// An error followed by each of its causes, `: `-separated. A cause whose text its parent's
/// already ends with (a wrapper that repeats its source, as `StoreError` does for SQLite) is
/// not repeated.
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut previous = self.0.to_string();
        f.write_str(&previous)?;
        let mut cause = self.0.source();
        while let Some(error) = cause {
            let text = error.to_string();
            if !previous.ends_with(&text) {
                write!(f, ": {text}")?;
            }
            previous = text;
            cause = error.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PostgreSQL client error shows only its kind ("invalid connection string"); the cause
    /// is its `source()`.
    fn postgres_error() -> StoreError {
        let error = "host=localhost port=not-a-port"
            .parse::<tokio_postgres::Config>()
            .expect_err("the port is not a number");
        assert!(!error.to_string().contains("port"), "the cause is only in source(): {error}");
        StoreError::Postgres(error)
    }

    #[test]
    fn the_text_of_a_wrapped_store_error_contains_its_cause() {
        let error = Error::from(postgres_error());
        let text = error.to_string();
        assert!(text.starts_with("internal error: PostgreSQL: invalid connection string"), "{text}");
        assert!(text.contains("port"), "the cause is lost: {text}");
    }

    #[test]
    fn context_comes_first_and_causes_are_not_repeated() {
        let error = Error::internal_with("reading push rules", postgres_error());
        let text = error.to_string();
        assert!(text.starts_with("internal error: reading push rules: PostgreSQL: "), "{text}");
        assert_eq!(text.matches("invalid connection string").count(), 1, "{text}");
        assert!(text.contains("port"), "{text}");
    }

    #[test]
    fn a_message_alone_is_kept() {
        assert_eq!(Error::internal("no such thing").to_string(), "internal error: no such thing");
    }
}
