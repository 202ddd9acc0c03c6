//! The service layer's one error type: everything that can fail between a request and
//! its result. The faces map it to exit codes (CLI) or statuses (`http::error`, the only
//! place a status is chosen).

use crate::engine::EngineError;
use crate::imaging::ImagingError;
use crate::render::RenderError;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Imaging(#[from] ImagingError),
    #[error(transparent)]
    Engine(EngineError),
    /// Rendering the result failed: the server's fault, never the request's.
    #[error(transparent)]
    Render(#[from] RenderError),
    /// The request's structure is wrong (too many or too long parameters).
    #[error("{0}")]
    BadRequest(String),
    #[error("invalid parameter: {0}")]
    InvalidParameter(String),
    /// The method needs something of the model that this model does not have (the
    /// gradient-family methods: a head that is pooling followed by a linear layer).
    #[error("method `{method}` cannot explain model `{model}`: {reason}")]
    UnsupportedByModel { method: String, model: String, reason: String },
    #[error("target class {class} is out of range: the model has {classes} classes (0..{classes})")]
    InvalidTarget { class: usize, classes: usize },
    #[error("unknown model `{name}` (available: {available})")]
    UnknownModel { name: String, available: String },
    #[error("model `{name}` is not available: {reason}")]
    ModelUnavailable { name: String, reason: String },
    #[error(
        "the deadline of {timeout_ms} ms passed before the work finished; ask for more time with \
         `timeout_ms` (up to {max_ms} ms on this server), or fewer passes (e.g. `max_channels`)"
    )]
    DeadlineExceeded { timeout_ms: u64, max_ms: u64 },
    /// The server is draining for shutdown: new work is refused before any is done.
    #[error("the server is not ready: the server is shutting down")]
    NotAccepting,
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<EngineError> for ServiceError {
    fn from(e: EngineError) -> Self {
        ServiceError::Engine(e)
    }
}
