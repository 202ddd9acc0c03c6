//! scorecam: Score-CAM saliency maps for ONNX image classifiers.
//!
//! The crate is split by what each part knows about (see ARCHITECTURE.md):
//! `cam` is the pure algorithm, `runtime` wraps ONNX Runtime, `model` reads model packages,
//! `imaging` turns uploaded bytes into tensors, `resample` holds every resize both of them
//! use, `render` draws maps, `engine` is a queue
//! of pass sets over worker threads, `service` is the one road from a request to a result,
//! and `http`/`cli` (with `evaluation`) are thin faces over it.

pub mod cam;
pub mod cli;
pub mod config;
pub mod engine;
pub mod evaluation;
pub mod http;
pub mod imaging;
pub mod model;
pub mod render;
pub mod resample;
pub mod runtime;
pub mod service;
