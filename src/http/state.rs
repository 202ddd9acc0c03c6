//! What every handler shares.

use std::sync::Arc;

use super::auth::ApiKeys;
use super::metrics::HttpMetrics;
use crate::config::Config;
use crate::engine::Engine;

#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    pub config: Arc<Config>,
    pub default_model: String,
    pub metrics: Arc<HttpMetrics>,
    pub api_keys: Arc<ApiKeys>,
}
