//! Typed configuration in layers: built-in defaults, then `config/default.toml` (or the
//! named file), then overrides (the CLI's flags and their environment variables), each a
//! table of dotted keys merged over the one below before the whole is checked once.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::engine::EngineConfig;
use crate::imaging::ImageLimits;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub models: ModelsConfig,
    pub runtime: RuntimeConfig,
    pub engine: EngineConfig,
    pub limits: ImageLimits,
    pub server: ServerConfig,
    pub auth: AuthConfig,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelsConfig {
    /// Folder of model packages; every sub-folder with a model.toml is a model.
    pub dir: PathBuf,
    /// The model used when a request names none. When it is absent or broken, the first
    /// ready package is used and the log says so (`GET /models` shows both).
    pub default: Option<String>,
    /// Seconds between looks at the folder for added, changed or removed packages (the
    /// server only; 0: never).
    pub poll_interval_s: u64,
}

impl Default for ModelsConfig {
    fn default() -> Self {
        Self { dir: PathBuf::from("models"), default: Some("efficientnet-lite0".into()), poll_interval_s: 5 }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Path of libonnxruntime.so; ORT_DYLIB_PATH overrides it, `.ort/` is the fall-back.
    pub library: Option<PathBuf>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub bind: String,
    /// Deadline of a request that names none.
    pub request_timeout_ms: u64,
    /// The most a request may ask for.
    pub max_request_timeout_ms: u64,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// How long in-flight work may take to finish after SIGTERM.
    pub shutdown_grace_s: u64,
    /// `pretty` or `json`.
    pub log_format: String,
    /// How long a client may take to send its request body (slow clients are cut off).
    pub body_read_timeout_ms: u64,
    /// Origins allowed by CORS; empty = CORS off (no CORS headers at all).
    pub cors_allowed_origins: Vec<String>,
    /// The result cache's size in MiB (0: off). An entry is an explanation's maps:
    /// about 200 KiB per target at 224×224.
    pub cache_mib: usize,
}

/// Optional API keys. When any key is configured, every route except `/healthz`,
/// `/readyz` (and `/metrics` when `metrics_public`) needs `Authorization: Bearer <key>` or
/// `X-API-Key: <key>`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// A file with one key per line (blank lines and `#` comments ignored).
    pub api_keys_file: Option<PathBuf>,
    /// Keys given inline (prefer the file or `SCORECAM_API_KEYS`; never logged).
    #[serde(skip_serializing)]
    pub api_keys: Vec<String>,
    /// Serve `/metrics` without a key (for a scraper inside the cluster).
    pub metrics_public: bool,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("api_keys_file", &self.api_keys_file)
            .field("api_keys", &format_args!("[{} redacted]", self.api_keys.len()))
            .field("metrics_public", &self.metrics_public)
            .finish()
    }
}

impl AuthConfig {
    /// Every configured key: inline ones and the file's.
    pub fn keys(&self) -> Result<Vec<String>, ConfigError> {
        let mut keys: Vec<String> =
            self.api_keys.iter().map(|k| k.trim().to_string()).filter(|k| !k.is_empty()).collect();
        if let Some(path) = &self.api_keys_file {
            let text =
                std::fs::read_to_string(path).map_err(|source| ConfigError::Io { path: path.clone(), source })?;
            keys.extend(
                text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_string),
            );
        }
        Ok(keys)
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:8080".into(),
            request_timeout_ms: 60_000,
            max_request_timeout_ms: 300_000,
            max_body_bytes: 8 << 20,
            shutdown_grace_s: 30,
            log_format: "pretty".into(),
            body_read_timeout_ms: 30_000,
            cors_allowed_origins: Vec::new(),
            cache_mib: 64,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

impl Config {
    /// Reads a TOML file; unknown keys are errors so typos do not pass silently.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io { path: path.into(), source })?;
        toml::from_str(&text).map_err(|e| ConfigError::Invalid { path: path.into(), message: e.message().to_string() })
    }

    /// The file (as `load` picks it) with `layers` merged over it in order; each layer is a
    /// table whose keys are dotted configuration paths (`server.bind = "…"`).
    pub fn layered(path: Option<&Path>, layers: &[toml::Table]) -> Result<Self, ConfigError> {
        let (source, mut table) = match Self::file(path) {
            Some(p) => {
                let text = std::fs::read_to_string(&p).map_err(|source| ConfigError::Io { path: p.clone(), source })?;
                let table = text
                    .parse::<toml::Table>()
                    .map_err(|e| ConfigError::Invalid { path: p.clone(), message: e.message().to_string() })?;
                (p, table)
            }
            None => (PathBuf::from("(built-in defaults)"), toml::Table::new()),
        };
        for (dotted, value) in layers.iter().flatten() {
            set_path(&mut table, dotted, value.clone());
        }
        table
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid { path: source, message: e.message().to_string() })
    }

    fn file(path: Option<&Path>) -> Option<PathBuf> {
        match path {
            Some(p) => Some(p.to_path_buf()),
            None => Some(PathBuf::from("config/default.toml")).filter(|p| p.is_file()),
        }
    }

    /// The named file, else `config/default.toml` when present, else built-in defaults.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        match path {
            Some(p) => Self::from_file(p),
            None if Path::new("config/default.toml").is_file() => Self::from_file(Path::new("config/default.toml")),
            None => Ok(Self::default()),
        }
    }

    /// Workers and intra-op threads per worker: the configured figures, or (0) one worker
    /// per core with one thread each, which measured fastest on CPU (BENCHMARKS.md).
    pub fn effective_engine(&self) -> EngineConfig {
        let mut engine = self.engine.clone();
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        if engine.workers == 0 {
            engine.workers = cores.checked_div(engine.session.intra_threads).map_or(cores, |w| w.max(1));
        }
        if engine.session.intra_threads == 0 {
            engine.session.intra_threads = (cores / engine.workers).max(1);
        }
        engine
    }
}

/// Turns a struct of optional overrides (fields renamed to dotted paths, `None` skipped)
/// into a layer for [`Config::layered`].
pub fn layer<T: Serialize>(overrides: &T) -> Result<toml::Table, ConfigError> {
    toml::Table::try_from(overrides)
        .map_err(|e| ConfigError::Invalid { path: PathBuf::from("(command line)"), message: e.to_string() })
}

/// Sets `a.b.c` in a table, creating the tables on the way.
fn set_path(table: &mut toml::Table, dotted: &str, value: toml::Value) {
    let mut parts: Vec<&str> = dotted.split('.').collect();
    let last = parts.pop().unwrap_or(dotted);
    let mut t = table;
    for p in parts {
        let entry = t.entry(p.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        t = entry.as_table_mut().expect("made a table above");
    }
    t.insert(last.to_string(), value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_override_the_file_key_by_key() {
        #[derive(Serialize)]
        struct Flags {
            #[serde(rename = "server.bind", skip_serializing_if = "Option::is_none")]
            bind: Option<String>,
            #[serde(rename = "engine.session.intra_threads", skip_serializing_if = "Option::is_none")]
            threads: Option<usize>,
            #[serde(rename = "engine.workers", skip_serializing_if = "Option::is_none")]
            workers: Option<usize>,
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[server]\nbind = \"0.0.0.0:1\"\nrequest_timeout_ms = 5\n[engine]\nworkers = 3\n")
            .unwrap();
        let flags = Flags { bind: Some("127.0.0.1:9".into()), threads: Some(2), workers: None };
        let cfg = Config::layered(Some(&file), &[layer(&flags).unwrap()]).unwrap();
        assert_eq!(cfg.server.bind, "127.0.0.1:9", "the flag wins");
        assert_eq!(cfg.server.request_timeout_ms, 5, "the file's other keys stay");
        assert_eq!(cfg.engine.workers, 3, "an unset flag changes nothing");
        assert_eq!(cfg.engine.session.intra_threads, 2);
        let typo = Config::layered(Some(&file), &[toml::Table::from_iter([("server.bnd".into(), 1.into())])]);
        assert!(typo.unwrap_err().to_string().contains("bnd"));
    }

    #[test]
    fn the_shipped_default_config_parses_and_equals_the_built_in_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml");
        let cfg = Config::from_file(&path).unwrap();
        assert_eq!(cfg, Config::default());
    }

    #[test]
    fn the_gpu_config_differs_only_in_provider_batch_and_workers() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/gpu.toml");
        let gpu = Config::from_file(&path).unwrap();
        assert_eq!(gpu.engine.session.provider.kind, crate::runtime::ProviderKind::Cuda);
        assert_eq!(gpu.engine.session.provider.policy, crate::runtime::DevicePolicy::Require);
        let mut expected = Config::default();
        expected.engine.session.provider = gpu.engine.session.provider.clone();
        expected.engine.max_batch_size = 64;
        expected.engine.workers = 2;
        assert_eq!(gpu, expected);
    }

    #[test]
    fn a_model_can_have_its_own_provider_and_batch_size() {
        let cfg: Config = toml::from_str(
            "[engine]\nmax_batch_size = 4\n[engine.models.big]\nmax_batch_size = 64\n\
             provider = { kind = \"cuda\", policy = \"prefer\", device_id = 1 }\n",
        )
        .unwrap();
        let e = &cfg.engine;
        let cpu = crate::runtime::ProviderKind::Cpu;
        assert_eq!((e.batch_of("big", None, cpu), e.batch_of("other", None, cpu)), (64, 4));
        assert_eq!(e.provider_for("big").kind, crate::runtime::ProviderKind::Cuda);
        assert_eq!(e.provider_for("big").device_id, 1);
        assert_eq!(e.provider_for("other").kind, crate::runtime::ProviderKind::Cpu);
    }

    #[test]
    fn a_measured_batch_size_applies_on_the_cpu_unless_the_model_is_configured() {
        use crate::runtime::ProviderKind::{Cpu, Cuda};
        let cfg: Config =
            toml::from_str("[engine]\nmax_batch_size = 4\n[engine.models.big]\nmax_batch_size = 64\n").unwrap();
        let e = &cfg.engine;
        // The package's measured batch replaces the engine's default on the CPU ...
        assert_eq!(e.batch_of("vit", Some(2), Cpu), 2);
        assert_eq!(e.batch_of("vit", None, Cpu), 4);
        // ... not on a GPU (it was measured on the CPU) ...
        assert_eq!(e.batch_of("vit", Some(2), Cuda), 4);
        // ... and never over the model's own setting.
        assert_eq!(e.batch_of("big", Some(2), Cpu), 64);
        assert_eq!(e.batch_of("big", None, Cuda), 64);
    }

    #[test]
    fn denormals_are_flushed_as_the_package_says_unless_configured() {
        use crate::model::MeasuredEngine;
        let yes = MeasuredEngine { max_batch_size: None, flush_denormals: true, measured: String::new() };
        let no = MeasuredEngine { flush_denormals: false, ..yes.clone() };
        let auto = Config::default().engine;
        assert_eq!((auto.flush_of(Some(&yes)), auto.flush_of(Some(&no)), auto.flush_of(None)), (true, false, false));
        for forced in [true, false] {
            let cfg: Config = toml::from_str(&format!("[engine.session]\nflush_denormals = {forced}\n")).unwrap();
            let e = &cfg.engine;
            assert_eq!((e.flush_of(Some(&yes)), e.flush_of(Some(&no)), e.flush_of(None)), (forced, forced, forced));
        }
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = toml::from_str::<Config>("[engine]\nworkerz = 3\n").unwrap_err().to_string();
        assert!(err.contains("workerz"), "{err}");
    }

    #[test]
    fn the_thread_budget_shares_the_cores() {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let mut cfg = Config::default();
        let e = cfg.effective_engine();
        assert_eq!((e.workers, e.session.intra_threads), (cores, 1), "auto: a worker per core");
        cfg.engine.workers = 64;
        let e = cfg.effective_engine();
        assert_eq!((e.workers, e.session.intra_threads), (64, 1));
        cfg.engine.workers = 0;
        cfg.engine.session.intra_threads = cores;
        let e = cfg.effective_engine();
        assert_eq!((e.workers, e.session.intra_threads), (1, cores), "threads given: workers fill the rest");
    }
}
