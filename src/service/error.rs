//! The service layer's one error type: everything that can fail between a request and
//! its result, and its [`ErrorKind`]: what a face needs to answer it (the HTTP face turns
//! a kind into a status in `http::error`, the only place a status is chosen). The lower
//! layers' errors are classified here, so no face matches on them.

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
    /// The request cannot finish before its deadline behind the work admitted: refused
    /// before any of its passes ran.
    #[error("{message}")]
    Refused { message: String, retry_after_s: u64 },
    /// The server is draining for shutdown: new work is refused before any is done.
    #[error("the server is not ready: the server is shutting down")]
    NotAccepting,
    #[error("internal error: {0}")]
    Internal(String),
    /// The process could not start serving (ONNX Runtime, the provider, the models folder).
    #[error("{0}")]
    Startup(String),
}

impl From<EngineError> for ServiceError {
    fn from(e: EngineError) -> Self {
        ServiceError::Engine(e)
    }
}

/// What kind of failure an error is, in the terms a caller answers with: whose fault it
/// is and what the client can do. `as_str` is the machine-readable `error_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    BadRequest,
    InvalidParameter,
    InvalidTarget,
    UnsupportedByModel,
    UnknownModel,
    ModelUnavailable,
    DeadlineExceeded,
    /// Draining: new work is refused.
    NotReady,
    EmptyImage,
    UnsupportedImageFormat,
    InvalidImage,
    ImageTooLarge,
    /// Past the engine's capacity: retry shortly.
    Overloaded,
    Cancelled,
    ShuttingDown,
    /// The model failed at run time.
    ModelFailure,
    Internal,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        use ErrorKind as K;
        match self {
            K::BadRequest => "bad_request",
            K::InvalidParameter => "invalid_parameter",
            K::InvalidTarget => "invalid_target",
            K::UnsupportedByModel => "unsupported_by_model",
            K::UnknownModel => "unknown_model",
            K::ModelUnavailable => "model_unavailable",
            K::DeadlineExceeded => "deadline_exceeded",
            K::NotReady => "not_ready",
            K::EmptyImage => "empty_image",
            K::UnsupportedImageFormat => "unsupported_image_format",
            K::InvalidImage => "invalid_image",
            K::ImageTooLarge => "image_too_large",
            K::Overloaded => "overloaded",
            K::Cancelled => "cancelled",
            K::ShuttingDown => "shutting_down",
            K::ModelFailure => "model_failure",
            K::Internal => "internal",
        }
    }
}

impl ServiceError {
    /// When a refused request should come back, in seconds (computed from the queue).
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            ServiceError::Refused { retry_after_s, .. } => Some(*retry_after_s),
            ServiceError::Engine(EngineError::Overloaded { retry_after, .. }) => Some(retry_after.as_secs().max(1)),
            ServiceError::Engine(EngineError::Refused(r)) => Some(r.retry_after.as_secs().max(1)),
            _ => None,
        }
    }

    pub fn kind(&self) -> ErrorKind {
        use ErrorKind as K;
        use ServiceError as S;
        match self {
            S::BadRequest(_) => K::BadRequest,
            S::InvalidParameter(_) => K::InvalidParameter,
            S::InvalidTarget { .. } => K::InvalidTarget,
            S::UnsupportedByModel { .. } => K::UnsupportedByModel,
            S::UnknownModel { .. } => K::UnknownModel,
            S::ModelUnavailable { .. } => K::ModelUnavailable,
            S::DeadlineExceeded { .. } => K::DeadlineExceeded,
            S::Refused { .. } => K::Overloaded,
            S::NotAccepting => K::NotReady,
            // Encoding our own PNG failed: the server's fault, not the request's.
            S::Render(_) | S::Internal(_) | S::Startup(_) => K::Internal,
            S::Imaging(e) => match e {
                ImagingError::Empty => K::EmptyImage,
                ImagingError::UnsupportedFormat => K::UnsupportedImageFormat,
                ImagingError::Decode(_) => K::InvalidImage,
                ImagingError::TooLarge(_) => K::ImageTooLarge,
            },
            S::Engine(e) => match e {
                EngineError::Overloaded { .. } | EngineError::Refused(_) => K::Overloaded,
                EngineError::DeadlineExceeded => K::DeadlineExceeded,
                EngineError::Cancelled => K::Cancelled,
                EngineError::ShuttingDown => K::ShuttingDown,
                EngineError::Runtime { .. } => K::ModelFailure,
                EngineError::Internal(_) => K::Internal,
            },
        }
    }
}
