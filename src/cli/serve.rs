//! `scorecam serve`: the HTTP API over the service, with the models folder watched.

use std::sync::Arc;
use std::time::Duration;

use super::CliError;
use super::context::{self, Load};
use crate::config::Config;
use crate::service::ServiceConfig;

pub async fn serve(config: Config) -> Result<(), CliError> {
    let config = Arc::new(config);
    match serde_json::to_string(&*config) {
        Ok(effective) => tracing::info!(config = %effective, "effective configuration"),
        Err(e) => tracing::warn!(error = %e, "could not print the configuration"),
    }
    let keys = config.auth.keys()?;
    tracing::info!(api_keys = keys.len(), "authentication {}", if keys.is_empty() { "off" } else { "on" });
    let service_config = ServiceConfig {
        limits: config.limits.clone(),
        default_timeout_ms: Some(config.server.request_timeout_ms),
        max_timeout_ms: Some(config.server.max_request_timeout_ms),
        cache_mib: config.server.cache_mib,
    };
    let service = context::start(&config, Load::All, service_config)?;
    let listener = tokio::net::TcpListener::bind(&config.server.bind)
        .await
        .map_err(|e| CliError::Invalid(format!("cannot listen on {}: {e}", config.server.bind)))?;
    let addr = listener.local_addr().map_err(CliError::io("the listening socket"))?;
    if config.models.poll_interval_s > 0 {
        service.watch_models(Duration::from_secs(config.models.poll_interval_s));
    }
    let state = crate::http::AppState {
        service: service.clone(),
        api_keys: Arc::new(crate::http::ApiKeys::new(keys, config.auth.metrics_public)),
        config,
        metrics: Default::default(),
    };
    tracing::info!(%addr, models = service.readiness().map(|r| r.models.len()).unwrap_or(0), "listening on http://{addr}");
    crate::http::serve(listener, state, crate::http::shutdown_signal()).await.map_err(CliError::io("the server"))
}
