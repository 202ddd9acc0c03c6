//! Shared set-up for integration tests: ONNX Runtime, the real default model, an engine.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use scorecam::engine::{Engine, EngineConfig};
use scorecam::model::ModelRegistry;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn init_runtime() {
    let (lib, _) =
        scorecam::runtime::resolve_library(None, "cpu").expect("run scripts/setup-ort.sh first");
    scorecam::runtime::init(&lib).expect("ONNX Runtime loads");
}

/// One engine over the real default model per test binary (sessions are expensive).
pub fn default_engine() -> Arc<Engine> {
    static ENGINE: OnceLock<Arc<Engine>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            init_runtime();
            let registry =
                ModelRegistry::discover(&root().join("models")).expect("default model loads");
            let config = EngineConfig {
                max_batch_size: 64,
                ..EngineConfig::default()
            };
            let mut config = config;
            config.session.intra_threads = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1);
            Arc::new(Engine::start(registry, config).expect("engine starts"))
        })
        .clone()
}

/// Reads a little-endian float32 `.npy` (format 1.0), returning (shape, data).
pub fn read_npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY", "{} is not .npy", path.display());
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
    assert!(
        header.contains("'descr': '<f4'"),
        "expected little-endian f32: {header}"
    );
    assert!(header.contains("'fortran_order': False"));
    let shape_str = header
        .split("'shape': (")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    let shape: Vec<usize> = shape_str
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let data: Vec<f32> = bytes[10 + header_len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(data.len(), shape.iter().product::<usize>());
    (shape, data)
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "maps differ in size");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
