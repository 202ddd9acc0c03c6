//! ONNX Runtime: finding and loading the shared library, execution providers, sessions.
//!
//! ONNX Runtime is loaded dynamically (`ort`'s `load-dynamic`), so the library is resolved
//! and opened eagerly at start-up: a missing or mismatched library is one clear error here,
//! never a panic on the first request.

mod denormals;
mod graph;
mod layout;
mod library;
mod provider;
mod session;

use denormals::FlushDenormals;
pub use graph::GraphBytes;
pub use layout::FeatureLayout;
pub use library::{LibrarySource, ORT_VERSION, init, resolve_library};
pub use provider::{DevicePolicy, ProviderConfig, ProviderKind};
pub use session::{
    GraphSignature, ModelSessions, Port, SessionConfig, SessionShapes, SideTensor, open_session, read_signature,
};

use std::path::PathBuf;

/// Everything that can go wrong in the runtime layer.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(
        "ONNX Runtime {ORT_VERSION} library not found (looked in: {searched}). \
         Run `scripts/setup/ort.sh` to fetch it, or point ORT_DYLIB_PATH at libonnxruntime.so.{ORT_VERSION}"
    )]
    LibraryNotFound { searched: String },
    #[error(
        "could not load ONNX Runtime from {path}: {reason}. \
         Run `scripts/setup/ort.sh` (ONNX Runtime {ORT_VERSION}) or fix ORT_DYLIB_PATH"
    )]
    LibraryLoad { path: PathBuf, reason: String },
    #[error("execution provider {provider} is not available: {reason}")]
    ProviderUnavailable { provider: String, reason: String },
    #[error("could not create a session for {path}: {source}")]
    Session { path: PathBuf, source: ort::Error },
    #[error("inference failed: {0}")]
    Run(#[from] ort::Error),
    #[error("model output has an unexpected shape: {0}")]
    OutputShape(String),
    #[error("worker start-up failed: {0}")]
    Worker(String),
}
