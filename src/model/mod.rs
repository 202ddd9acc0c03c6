//! Model packages: `models/<name>/` with `extractor.onnx`, `head.onnx`, `labels.txt` and
//! `model.toml`. The set of models is the folder's contents: a new folder is a new model.

mod manifest;
mod package;
mod registry;

pub use manifest::{FeatureLayout, InputSpec, Manifest, ResizeFilter, ResizeMode, TargetLayer};
pub use package::{ModelInfo, ModelPackage, validate_signatures};
pub use registry::ModelRegistry;

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
    #[error("no model packages (folders with a model.toml) in {0}")]
    NoModels(PathBuf),
    #[error("unknown model `{0}`")]
    Unknown(String),
}
