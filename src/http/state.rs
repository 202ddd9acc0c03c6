//! What every handler shares.

use std::sync::Arc;

use super::keys::ApiKeys;
use super::metrics::HttpMetrics;
use crate::config::Config;
use crate::service::Service;

#[derive(Clone)]
pub struct AppState {
    pub service: Arc<Service>,
    pub config: Arc<Config>,
    pub metrics: Arc<HttpMetrics>,
    pub api_keys: Arc<ApiKeys>,
}
