//! Model packages: `models/<name>/` with `extractor.onnx`, `head.onnx`, `labels.txt` and
//! `model.toml`: reading and validating one package. The set of packages is the service's
//! model repository.

mod manifest;
mod package;

pub use manifest::{
    DeclaredLayout, ExifOrientation, Fidelity, HeadKindName, HeadSpec, InputSpec, Manifest, MeasuredEngine,
    Quantization, QuantizationKind, ResizeFilter, ResizeMode, TargetLayer,
};
pub use package::{ModelInfo, ModelPackage, validate_signatures};

use std::path::PathBuf;

/// Everything that can be wrong with a model package; each names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: invalid manifest: {message}")]
    Manifest { path: PathBuf, message: String },
    #[error("{path}: invalid labels: {message}")]
    Labels { path: PathBuf, message: String },
    #[error("{path}: cannot be loaded as an ONNX graph: {message}")]
    Graph { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Mismatch { path: PathBuf, message: String },
}
