//! Shared set-up for integration tests: ONNX Runtime, the real default model, a service.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use scorecam::engine::EngineConfig;
use scorecam::service::{ModelRepository, Service, ServiceConfig};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn init_runtime() {
    let (lib, _) = scorecam::runtime::resolve_library(None, "cpu").expect("run scripts/setup/ort.sh first");
    scorecam::runtime::init(&lib).expect("ONNX Runtime loads");
}

/// One service over the shipped models per test binary (sessions are expensive).
pub fn default_service() -> Arc<Service> {
    static SERVICE: OnceLock<Arc<Service>> = OnceLock::new();
    SERVICE
        .get_or_init(|| {
            init_runtime();
            let mut config = EngineConfig { max_batch_size: 64, workers: 1, ..EngineConfig::default() };
            config.session.intra_threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
            let repo = ModelRepository::new(root().join("models"), Some("efficientnet-lite0".into()), config.clone());
            let service = Service::start(config, repo, ServiceConfig::default()).expect("service starts");
            assert_eq!(service.models().ready().len(), 2, "both shipped models load");
            Arc::new(service)
        })
        .clone()
}

/// Reads a little-endian float32 `.npy` (format 1.0), returning (shape, data).
pub fn read_npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY", "{} is not .npy", path.display());
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
    assert!(header.contains("'descr': '<f4'"), "expected little-endian f32: {header}");
    assert!(header.contains("'fortran_order': False"));
    let shape_str = header.split("'shape': (").nth(1).unwrap().split(')').next().unwrap();
    let shape: Vec<usize> = shape_str.split(',').filter_map(|s| s.trim().parse().ok()).collect();
    let data: Vec<f32> =
        bytes[10 + header_len..].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(data.len(), shape.iter().product::<usize>());
    (shape, data)
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "maps differ in size");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// The real `scorecam serve` on an ephemeral loopback port.
pub struct Server {
    child: std::process::Child,
    pub base: String,
    pub log: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Server {
    /// Starts the server with extra flags; returns once it listens (it is warm by then).
    pub fn start(extra: &[&str]) -> Server {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_scorecam"))
            .args(["serve", "--bind", "127.0.0.1:0", "--log-format", "json"])
            .args(extra)
            .current_dir(root())
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("server starts");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(i) = line.find("listening on http://") {
                    let rest = &line[i + "listening on ".len()..];
                    let end = rest.find('"').unwrap_or(rest.len());
                    let _ = tx.send(rest[..end].to_string());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let base = rx.recv_timeout(std::time::Duration::from_secs(120)).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("server did not start: {:?}", log.lock().unwrap())
        });
        Server { child, base, log }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends SIGTERM (graceful shutdown).
    pub fn terminate(&self) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
    }

    /// Waits for the process to exit; returns its exit code.
    pub fn wait(mut self) -> Option<i32> {
        let status = self.child.wait().ok()?;
        status.code()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn sample_png() -> Vec<u8> {
    std::fs::read(root().join("samples/chelsea.png")).unwrap()
}

/// `.png_body()`: the sample photo as a raw `image/png` body.
pub trait PngBody {
    fn png_body(self) -> Self;
}

impl PngBody for reqwest::RequestBuilder {
    fn png_body(self) -> Self {
        self.header("content-type", "image/png").body(sample_png())
    }
}
