//! Start-up: the one named function through which a face reaches the runtime. It loads
//! ONNX Runtime (the library the configuration names, else the pinned one found on the
//! usual paths), checks the server's execution provider, and starts the service over the
//! configured models folder.

use std::sync::Arc;

use super::{ModelRepository, Service, ServiceConfig, ServiceError};
use crate::config::Config;
use crate::runtime;

/// Which packages a process loads.
pub enum Load {
    /// Every package (the server, `models`).
    All,
    /// The named model, else the configured default (a one-shot command needs no other).
    One(Option<String>),
}

/// Loads ONNX Runtime and starts the service over the configured models.
pub fn start(config: &Config, load: Load, service: ServiceConfig) -> Result<Arc<Service>, ServiceError> {
    let startup = |e: runtime::RuntimeError| ServiceError::Startup(e.to_string());
    let (lib, source) = runtime::resolve_library(
        config.runtime.library.as_deref(),
        config.engine.session.provider.kind.library_variant(),
    )
    .map_err(startup)?;
    runtime::init(&lib).map_err(startup)?;
    tracing::debug!(library = %lib.display(), ?source, "ONNX Runtime loaded");
    // The server's own provider is a start-up matter (`policy = "require"` must refuse to
    // start without it); a model's own override failing only fails that model.
    config.engine.session.provider.select().map_err(startup)?;
    let dir = config.models.dir.clone();
    if !dir.is_dir() {
        return Err(ServiceError::Startup(format!("{}: the models folder does not exist", dir.display())));
    }
    let only = match load {
        Load::All => None,
        // Only when that package is there: otherwise load them all and let the service say
        // which ones there are.
        Load::One(name) => {
            name.or_else(|| config.models.default.clone()).filter(|n| dir.join(n).join("model.toml").is_file())
        }
    };
    let repo = ModelRepository::new(dir, config.models.default.clone(), config.effective_engine()).only(only);
    Ok(Arc::new(Service::start(config.effective_engine(), repo, service)?))
}
