//! The migration engine's one error type, and how a failure maps to the
//! task's outcome: retry (storage hiccups), fail for good (the plan or the
//! data is wrong, a validation failed), or report nothing (fenced).

use datafusion::error::DataFusionError;

/// Why a migration did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MigrateError {
    /// The plan cannot work as written: bad SQL, a missing column, an
    /// unsupported URL, data that does not parse. Permanent.
    #[error("{0}")]
    Plan(String),
    /// A source dataset does not exist. Permanent.
    #[error("source not found: {0}")]
    SourceNotFound(String),
    /// A validation step did not hold. Permanent; says what differed.
    #[error("validation failed: {0}")]
    Validation(String),
    /// An `exec` step failed: retryable for exit code 75 and time-outs.
    #[error("{message}")]
    Exec { message: String, retryable: bool },
    /// Reading or writing storage failed in a way a retry may fix. Retryable.
    #[error("storage: {0}")]
    Storage(String),
    /// The fleet's policy refuses what the plan asks: a dataset outside
    /// every allowed data root, a path that escapes its root through a
    /// symbolic link or lands in a `_skein/` control folder, or a program
    /// not on the exec allow list. Permanent: an admin, or the plan, must
    /// change first. Nothing was opened, written or started.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// An object store's credentials cannot be found where its data root
    /// (or, without a policy, the environment) says. Permanent until the
    /// node's environment or credentials file is fixed. Never falls back
    /// to the cloud's instance metadata.
    #[error("object-store credentials: {0}")]
    Credentials(String),
    /// This attempt may no longer publish: its lease is gone, or a newer
    /// attempt's output is already published. Nothing is reported.
    #[error("fenced: {0}")]
    Fenced(String),
}

impl MigrateError {
    /// Worth another attempt after a backoff.
    pub fn is_retryable(&self) -> bool {
        matches!(self, MigrateError::Storage(_) | MigrateError::Exec { retryable: true, .. })
    }

    /// The policy refused the plan (see [`MigrateError::Forbidden`]).
    pub fn is_forbidden(&self) -> bool {
        matches!(self, MigrateError::Forbidden(_))
    }

    /// The attempt lost its right to publish: the worker reports nothing.
    pub fn is_fenced(&self) -> bool {
        matches!(self, MigrateError::Fenced(_))
    }
}

impl From<DataFusionError> for MigrateError {
    fn from(e: DataFusionError) -> Self {
        let message = e.to_string();
        match e.find_root() {
            DataFusionError::ObjectStore(os) => match os.as_ref() {
                object_store::Error::NotFound { path, .. } => MigrateError::SourceNotFound(path.clone()),
                _ => MigrateError::Storage(message),
            },
            DataFusionError::IoError(io) if io.kind() == std::io::ErrorKind::NotFound => {
                MigrateError::SourceNotFound(message)
            }
            DataFusionError::IoError(_) => MigrateError::Storage(message),
            _ => MigrateError::Plan(message),
        }
    }
}

impl From<object_store::Error> for MigrateError {
    fn from(e: object_store::Error) -> Self {
        MigrateError::Storage(e.to_string())
    }
}

impl From<std::io::Error> for MigrateError {
    fn from(e: std::io::Error) -> Self {
        MigrateError::Storage(e.to_string())
    }
}

impl From<datafusion::arrow::error::ArrowError> for MigrateError {
    fn from(e: datafusion::arrow::error::ArrowError) -> Self {
        MigrateError::Plan(e.to_string())
    }
}

impl From<datafusion::parquet::errors::ParquetError> for MigrateError {
    fn from(e: datafusion::parquet::errors::ParquetError) -> Self {
        MigrateError::Storage(e.to_string())
    }
}
