//! scorecam: Score-CAM saliency maps for ONNX image classifiers.
//!
//! The crate is split by what each part knows about (see ARCHITECTURE.md):
//! `cam` is the pure algorithm, `runtime` wraps ONNX Runtime, `model` reads model packages,
//! `imaging` turns uploaded bytes into tensors, `engine` schedules batched passes over
//! worker threads, `render` turns maps into PNG/JSON, and `http`/`cli` are thin faces.

pub mod cam;
pub mod cli;
pub mod config;
pub mod engine;
pub mod evaluation;
pub mod http;
pub mod imaging;
pub mod model;
pub mod pipeline;
pub mod render;
pub mod runtime;
