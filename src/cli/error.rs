//! The CLI's one error type; `main` prints it and exits 1.

use std::path::PathBuf;

use crate::config::ConfigError;
use crate::service::ServiceError;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// A request failed for one input file.
    #[error("{path}: {source}")]
    Input { path: PathBuf, source: ServiceError },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Invalid(String),
}

impl CliError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> CliError {
        let path = path.into();
        move |source| CliError::Io { path, source }
    }
}
