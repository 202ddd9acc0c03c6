//! The model repository: every package folder under the models directory, each either
//! ready (an engine model) or failed (with the reason). A broken package never stops the
//! others; the folder is re-read on `refresh` (the server polls it), so packages can be
//! added, replaced or removed while the server runs: in-flight work keeps the model it
//! started with, new requests get the new one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use serde::Serialize;

use super::ServiceError;
use crate::engine::{EngineConfig, EngineModel};
use crate::model::ModelPackage;

/// The files whose size and modification time identify a package's version.
const PACKAGE_FILES: [&str; 4] = ["model.toml", "labels.txt", "extractor.onnx", "head.onnx"];

#[derive(Clone, Debug, PartialEq, Eq)]
struct Fingerprint(Vec<(u64, Option<SystemTime>)>);

impl Fingerprint {
    fn of(dir: &Path) -> Self {
        Self(
            PACKAGE_FILES
                .iter()
                .map(|f| match std::fs::metadata(dir.join(f)) {
                    Ok(m) => (m.len(), m.modified().ok()),
                    Err(_) => (0, None),
                })
                .collect(),
        )
    }
}

#[derive(Clone, Debug)]
pub enum ModelState {
    Ready(Arc<EngineModel>),
    Failed(String),
}

#[derive(Clone, Debug)]
struct Entry {
    state: ModelState,
    fingerprint: Fingerprint,
    /// Which load of this name this is (1 for the first), so clients can tell a reload.
    version: u64,
}

/// What `GET /models` and `scorecam models` show of one package.
#[derive(Clone, Debug, Serialize)]
pub struct ModelStatus {
    pub name: String,
    /// `ready` or `failed`.
    pub state: &'static str,
    pub version: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip)]
    pub model: Option<Arc<EngineModel>>,
}

/// What one refresh changed, for the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub loaded: Vec<String>,
    pub failed: Vec<String>,
    pub removed: Vec<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.loaded.is_empty() && self.failed.is_empty() && self.removed.is_empty()
    }
}

pub struct ModelRepository {
    dir: PathBuf,
    /// Only this package is loaded (the CLI loads just the model it uses).
    only: Option<String>,
    configured_default: Option<String>,
    engine: EngineConfig,
    entries: RwLock<BTreeMap<String, Entry>>,
}

impl ModelRepository {
    /// An empty repository over `dir`; `refresh` loads it.
    pub fn new(dir: PathBuf, configured_default: Option<String>, engine: EngineConfig) -> Self {
        Self { dir, only: None, configured_default, engine, entries: RwLock::new(BTreeMap::new()) }
    }

    /// Restricts the repository to one package name.
    pub fn only(mut self, name: Option<String>) -> Self {
        self.only = name;
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn package_dirs(&self) -> Result<Vec<(String, PathBuf)>, ServiceError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| {
            ServiceError::Internal(format!("cannot read the models folder {}: {e}", self.dir.display()))
        })?;
        let mut dirs: Vec<(String, PathBuf)> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.join("model.toml").is_file())
            .filter_map(|p| Some((p.file_name()?.to_str()?.to_string(), p)))
            .filter(|(name, _)| self.only.as_ref().is_none_or(|o| o == name))
            .collect();
        dirs.sort();
        Ok(dirs)
    }

    /// Re-reads the folder: loads new and changed packages (blocking: it opens ONNX
    /// Runtime sessions to validate them), forgets removed ones. A failure is recorded
    /// against its package and never affects the others.
    pub fn refresh(&self) -> Result<Changes, ServiceError> {
        let dirs = self.package_dirs()?;
        let mut changes = Changes::default();
        let known: BTreeMap<String, Entry> = self.entries.read().map(|e| e.clone()).unwrap_or_default();
        let mut next = BTreeMap::new();
        for (name, dir) in &dirs {
            let fingerprint = Fingerprint::of(dir);
            if let Some(entry) = known.get(name).filter(|e| e.fingerprint == fingerprint) {
                next.insert(name.clone(), entry.clone());
                continue;
            }
            let version = known.get(name).map_or(1, |e| e.version + 1);
            let state = match self.load(dir) {
                Ok(model) => {
                    changes.loaded.push(name.clone());
                    ModelState::Ready(model)
                }
                Err(reason) => {
                    tracing::warn!(model = %name, %reason, "model package not loaded");
                    changes.failed.push(name.clone());
                    ModelState::Failed(reason)
                }
            };
            next.insert(name.clone(), Entry { state, fingerprint, version });
        }
        changes.removed = known.keys().filter(|k| !next.contains_key(*k)).cloned().collect();
        if let Ok(mut entries) = self.entries.write() {
            *entries = next;
        }
        Ok(changes)
    }

    fn load(&self, dir: &Path) -> Result<Arc<EngineModel>, String> {
        let package = ModelPackage::load(dir).map_err(|e| e.to_string())?;
        self.engine.engine_model(Arc::new(package)).map_err(|e| e.to_string())
    }

    /// The ready model called `name`.
    pub fn get(&self, name: &str) -> Result<Arc<EngineModel>, ServiceError> {
        let entries = self.entries.read().map_err(|_| ServiceError::Internal("model table poisoned".into()))?;
        match entries.get(name).map(|e| &e.state) {
            Some(ModelState::Ready(m)) => Ok(m.clone()),
            Some(ModelState::Failed(reason)) => {
                Err(ServiceError::ModelUnavailable { name: name.to_string(), reason: reason.clone() })
            }
            None => Err(ServiceError::UnknownModel {
                name: name.to_string(),
                available: entries.keys().cloned().collect::<Vec<_>>().join(", "),
            }),
        }
    }

    /// The model a request that names none gets: the configured default when it is
    /// ready, else the first ready package (the caller logs that fallback).
    pub fn default_name(&self) -> Option<String> {
        let entries = self.entries.read().ok()?;
        let ready = |n: &String| matches!(entries.get(n).map(|e| &e.state), Some(ModelState::Ready(_)));
        self.configured_default
            .clone()
            .filter(ready)
            .or_else(|| entries.iter().find(|(_, e)| matches!(e.state, ModelState::Ready(_))).map(|(n, _)| n.clone()))
    }

    pub fn configured_default(&self) -> Option<&str> {
        self.configured_default.as_deref()
    }

    /// Every package, ready or not, by name.
    pub fn list(&self) -> Vec<ModelStatus> {
        let Ok(entries) = self.entries.read() else { return Vec::new() };
        entries
            .iter()
            .map(|(name, e)| match &e.state {
                ModelState::Ready(m) => ModelStatus {
                    name: name.clone(),
                    state: "ready",
                    version: e.version,
                    error: None,
                    model: Some(m.clone()),
                },
                ModelState::Failed(reason) => ModelStatus {
                    name: name.clone(),
                    state: "failed",
                    version: e.version,
                    error: Some(reason.clone()),
                    model: None,
                },
            })
            .collect()
    }

    /// The ready models.
    pub fn ready(&self) -> Vec<Arc<EngineModel>> {
        self.list().into_iter().filter_map(|s| s.model).collect()
    }
}
