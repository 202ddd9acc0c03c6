//! The set of loaded models: every package folder under the models directory.

use std::path::Path;
use std::sync::Arc;

use super::{ModelError, ModelPackage};

#[derive(Clone, Debug)]
pub struct ModelRegistry {
    models: Vec<Arc<ModelPackage>>,
}

impl ModelRegistry {
    /// Loads every sub-folder of `dir` that holds a `model.toml`, sorted by name. A broken
    /// package is an error (start-up must not silently serve fewer models than asked).
    pub fn discover(dir: &Path) -> Result<Self, ModelError> {
        let entries = std::fs::read_dir(dir).map_err(|source| ModelError::Io { path: dir.into(), source })?;
        let mut dirs: Vec<_> =
            entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.join("model.toml").is_file()).collect();
        dirs.sort();
        if dirs.is_empty() {
            return Err(ModelError::NoModels(dir.into()));
        }
        let models = dirs.iter().map(|d| ModelPackage::load(d).map(Arc::new)).collect::<Result<_, _>>()?;
        Ok(Self { models })
    }

    pub fn from_packages(models: Vec<ModelPackage>) -> Self {
        Self { models: models.into_iter().map(Arc::new).collect() }
    }

    pub fn all(&self) -> &[Arc<ModelPackage>] {
        &self.models
    }

    /// Looks a model up by name. Names are only compared, never turned into paths.
    pub fn get(&self, name: &str) -> Result<&Arc<ModelPackage>, ModelError> {
        self.models.iter().find(|m| m.name == name).ok_or_else(|| ModelError::Unknown(name.to_string()))
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.models.iter().position(|m| m.name == name)
    }
}
