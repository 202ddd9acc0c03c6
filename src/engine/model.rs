//! A model as the engine runs it: a validated package with its execution provider,
//! session settings and batch size fixed when it was loaded. Each load gets a new id, so
//! a package changed on disk is a new engine model and the old one lives on until the
//! last job that holds it ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::model::ModelPackage;
use crate::runtime::{ProviderKind, SessionConfig};

pub struct EngineModel {
    pub id: u64,
    pub package: Arc<ModelPackage>,
    pub provider: ProviderKind,
    /// Session settings, with the model's own provider configuration.
    pub session: SessionConfig,
    /// Most image passes in one batch.
    pub max_batch: usize,
}

impl std::fmt::Debug for EngineModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineModel")
            .field("id", &self.id)
            .field("name", &self.package.name)
            .field("provider", &self.provider)
            .finish()
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl EngineModel {
    pub(crate) fn new(
        package: Arc<ModelPackage>,
        provider: ProviderKind,
        session: SessionConfig,
        max_batch: usize,
    ) -> Self {
        Self { id: NEXT_ID.fetch_add(1, Ordering::Relaxed), package, provider, session, max_batch: max_batch.max(1) }
    }

    pub fn name(&self) -> &str {
        &self.package.name
    }
}
