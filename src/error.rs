//! The crate's error type: what can stop the server from starting or running. Errors a client
//! causes never get here; they become protocol `error` frames or HTTP error bodies.

use crate::store::StoreError;

/// Why the server could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Binding, accepting or creating the data directory failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The store could not be opened or migrated.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// `hubbub export`, `import` or `copy` stopped (bad input, a refused batch, a database).
    #[error(transparent)]
    Transfer(#[from] crate::store::copy::TransferError),
    /// An operator command (`hubbub user|room|audit|invite`) did nothing.
    #[error(transparent)]
    Operator(#[from] crate::operator::OperatorError),
    /// A flag or variable has a value the server cannot use.
    #[error("configuration error: {0}")]
    Config(String),
}

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
