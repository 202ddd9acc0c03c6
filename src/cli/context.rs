//! Start-up shared by the commands that run models: logging, then the service's own
//! start-up (ONNX Runtime, the model repository: only the model a command uses, when it
//! names one).

use std::sync::Arc;

use super::CliError;
use crate::config::Config;
pub use crate::service::startup::Load;
use crate::service::{Service, ServiceConfig, startup};

/// Logs go to standard error, pretty or as JSON lines.
pub fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "warn,scorecam=info,tower_http=info".into());
    // Colour codes only for a terminal: a log file or collector gets plain lines.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let _ = if format == "json" { builder.json().try_init() } else { builder.try_init() };
}

/// Starts the service (ONNX Runtime first) over the configured models.
pub fn start(config: &Config, load: Load, service: ServiceConfig) -> Result<Arc<Service>, CliError> {
    Ok(startup::start(config, load, service)?)
}
