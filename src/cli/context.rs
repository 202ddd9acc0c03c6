//! Start-up shared by the commands that run models: ONNX Runtime, the model repository
//! (only the model a command uses, when it names one), the service.

use std::sync::Arc;

use super::CliError;
use crate::config::Config;
use crate::runtime;
use crate::service::{ModelRepository, Service, ServiceConfig};

/// Logs go to standard error, pretty or as JSON lines.
pub fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "warn,scorecam=info,tower_http=info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if format == "json" { builder.json().try_init() } else { builder.try_init() };
}

/// Which packages a command loads.
pub enum Load {
    /// Every package (the server, `models`).
    All,
    /// The named model, else the configured default (a one-shot command needs no other).
    One(Option<String>),
}

/// Loads ONNX Runtime and starts the service over the configured models.
pub fn start(config: &Config, load: Load, service: ServiceConfig) -> Result<Arc<Service>, CliError> {
    let (lib, source) = runtime::resolve_library(
        config.runtime.library.as_deref(),
        config.engine.session.provider.kind.library_variant(),
    )?;
    runtime::init(&lib)?;
    tracing::debug!(library = %lib.display(), ?source, "ONNX Runtime loaded");
    // The server's own provider is a start-up matter (`policy = "require"` must refuse to
    // start without it); a model's own override failing only fails that model.
    config.engine.session.provider.select()?;
    let dir = config.models.dir.clone();
    if !dir.is_dir() {
        return Err(CliError::Invalid(format!("{}: the models folder does not exist", dir.display())));
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
