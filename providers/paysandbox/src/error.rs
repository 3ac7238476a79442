//! The crate's one error type, and how it becomes an HTTP answer.

use tessera_contracts::ApiError;
use tessera_fragment::db::AsDbError;

/// Why a request could not be served.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Refused with this answer: bad input, unknown payment, a state that does not allow the action.
    #[error("{0}")]
    Refused(#[from] ApiError),
    /// The database failed; logged with its cause, answered with a generic 500.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl Error {
    /// The answer for the caller (the database's details stay in the log).
    pub fn into_api(self) -> ApiError {
        match self {
            Error::Refused(error) => error,
            Error::Database(error) => tessera_fragment::internal(error),
        }
    }
}

/// Lets [`tessera_fragment::db::retrying`] rerun a transaction that hit a transient lock conflict.
impl AsDbError for Error {
    fn db_error(&self) -> Option<&sqlx::Error> {
        match self {
            Error::Database(error) => Some(error),
            Error::Refused(_) => None,
        }
    }
}
