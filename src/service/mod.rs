//! The service layer: the only caller of the engine. Every face (HTTP `/explain`,
//! `/explain/stream`, `/predict`, the Open Inference Protocol, the CLI, `evaluate`) hands
//! it one validated request and gets one result type back.
//!
//! Its door: [`Service`] (`prepare` → `run` → `render`, or `explain` for all three;
//! `predict`; `classify`; `evaluate_maps`), the request types ([`ExplainRequest`],
//! [`PredictRequest`], [`ImageInput`], parsed from text by [`Params`]), the results
//! ([`Explanation`], [`Rendered`], [`PredictDocument`]), [`ServiceError`], and the model
//! repository. It owns the explanation's logic: which classes, the method's plan, combining
//! scores into maps, the metrics follow-up, rendering.

mod batch;
mod cache;
mod closed_form;
mod error;
mod explain;
pub mod models;
mod params;
mod progress;
mod render;
mod request;
mod result;
pub mod startup;
mod stats;
mod status;
mod targets;

pub use batch::{Inference, Inferred};
pub use cache::{CacheOutcome, ResultCache};
pub use error::{ErrorKind, ServiceError};
pub use explain::{Classified, Prepared};
pub use models::{ModelRepository, ModelStatus};
pub use params::{MAX_PARAM_BYTES, MAX_PARAMS, Params, parse_box, parse_reference};
pub use progress::{Preview, Progress, Stage};
pub use render::{decode_image, heatmap_png, overlay_png, region_mask};
pub use request::{
    ExifOrientation, ExplainRequest, IMAGE_EXTENSIONS, ImageInput, MAX_JSON_MAP_VALUES, MAX_TARGETS, OutputFormat,
    PredictRequest, ReferenceSpec, RegionSpec, Rendering, Resolution, TargetSpec, is_image_name,
};
pub use result::{
    EmbeddingSummary, ExplainDocument, Explanation, ImageSummary, PredictDocument, PredictTimings, Prediction,
    Rendered, RenderedPng, RunStats, StageTimings, TargetMap, predictions, top_k,
};
pub use stats::ServiceStats;
pub use status::{
    Catalog, Figure, HeadSummary, HistogramSnapshot, InputSummary, LayerSummary, MetricsSnapshot, ModelDetails,
    ModelSummary, Readiness,
};
/// The method registry (names, parameters, bounds, defaults), as the faces show it.
pub mod registry {
    pub use crate::cam::methods::{MethodEntry, ParamKind, ParamSpec, all, describe, names, param_names};
}
/// A fault a test may inject into a request's passes (the `fault-injection` feature).
pub use crate::engine::Fault;
/// Decoder bounds, part of the service's configuration.
pub use crate::imaging::ImageLimits;
/// Saliency maps and their grids.
pub use crate::resample::Map;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::engine::{Engine, EngineConfig, EngineError, EngineModel, Refusal};

/// What the service needs besides the engine and the models.
#[derive(Clone, Debug, Default)]
pub struct ServiceConfig {
    pub limits: ImageLimits,
    /// The deadline of a request that names none; `None`: no deadline (the CLI).
    pub default_timeout_ms: Option<u64>,
    /// The longest deadline a request may ask for.
    pub max_timeout_ms: Option<u64>,
    /// The result cache's bound in MiB (0: no cache).
    pub cache_mib: usize,
}

/// Slack past a request's deadline before the service gives up on the engine (which
/// enforces the deadline itself and normally answers first).
const DEADLINE_SLACK: Duration = Duration::from_secs(2);

pub struct Service {
    engine: Arc<Engine>,
    models: Arc<ModelRepository>,
    config: ServiceConfig,
    stats: Arc<ServiceStats>,
    cache: ResultCache,
    /// The closed-form methods' measured heads, per loaded model.
    linear_heads: closed_form::LinearHeads,
}

impl Service {
    /// Loads the repository (a broken package is recorded, never fatal) and starts the
    /// engine with every ready model warmed in every worker.
    pub fn start(engine: EngineConfig, models: ModelRepository, config: ServiceConfig) -> Result<Self, ServiceError> {
        let changes = models.refresh()?;
        for name in &changes.failed {
            tracing::warn!(model = %name, "model package failed to load; serving the others");
        }
        let ready = models.ready();
        let engine = Engine::start(engine, &ready).map_err(|e| ServiceError::Internal(e.to_string()))?;
        let service = Self {
            engine: Arc::new(engine),
            models: Arc::new(models),
            cache: ResultCache::new(config.cache_mib),
            config,
            stats: Default::default(),
            linear_heads: Default::default(),
        };
        service.log_default();
        Ok(service)
    }

    fn log_default(&self) {
        let chosen = self.models.default_name();
        match (self.models.configured_default(), chosen.as_deref()) {
            (Some(c), Some(d)) if c != d => {
                tracing::warn!(
                    configured = c,
                    using = d,
                    "the configured default model is not available; using another"
                )
            }
            (_, None) => tracing::warn!(dir = %self.models.dir().display(), "no model is ready"),
            (_, Some(d)) => tracing::info!(model = d, "default model"),
        }
    }

    pub fn models(&self) -> &Arc<ModelRepository> {
        &self.models
    }

    /// Requests the engine admits at once (running and queued) before it refuses with 429.
    pub fn capacity(&self) -> usize {
        self.engine.capacity()
    }

    /// The decoder limits every upload is held to.
    pub fn limits(&self) -> &ImageLimits {
        &self.config.limits
    }

    /// The model a request that names none gets.
    pub fn default_model(&self) -> Option<String> {
        self.models.default_name()
    }

    /// The ready model a request names, or the default; refused while draining, before
    /// any work is done for the request.
    pub fn model(&self, name: Option<&str>) -> Result<Arc<EngineModel>, ServiceError> {
        if self.engine.is_draining() {
            return Err(ServiceError::NotAccepting);
        }
        match name {
            Some(n) => self.models.get(n),
            None => {
                let name = self.default_model().ok_or_else(|| ServiceError::ModelUnavailable {
                    name: "(default)".into(),
                    reason: format!("no model package is ready in {}", self.models.dir().display()),
                })?;
                self.models.get(&name)
            }
        }
    }

    /// Checks a request's `timeout_ms` and turns it into a deadline (`None`: no deadline).
    fn deadline(&self, timeout_ms: Option<u64>) -> Result<Option<Deadline>, ServiceError> {
        let Some(ms) = timeout_ms.or(self.config.default_timeout_ms) else {
            return Ok(None);
        };
        let max = self.config.max_timeout_ms.unwrap_or(u64::MAX);
        if ms == 0 || ms > max {
            return Err(ServiceError::InvalidParameter(format!("`timeout_ms` must be within 1..={max}, got {ms}")));
        }
        Ok(Some(Deadline { at: Instant::now() + Duration::from_millis(ms), ms, max }))
    }

    /// Re-reads the models folder; new or changed packages are warmed with one clean pass
    /// before they take requests. Returns what changed.
    pub async fn refresh_models(&self) -> Result<models::Changes, ServiceError> {
        let repo = self.models.clone();
        let changes = tokio::task::spawn_blocking(move || repo.refresh())
            .await
            .map_err(|e| ServiceError::Internal(format!("model refresh failed: {e}")))??;
        for name in &changes.loaded {
            if let Ok(model) = self.models.get(name) {
                let [c, h, w] = model.package.info.input_chw;
                // In the cheap requests' lane: behind a queue of explanations the warm-up
                // (and the next look at the folder, which waits for it) would wait minutes.
                let warm = async {
                    let admission = self.engine.admit_priority(&model)?;
                    admission.clean(vec![0.0; c * h * w].into(), &Default::default()).await.map(|_| ())
                };
                if let Err(e) = warm.await {
                    tracing::warn!(model = %name, error = %e, "warm-up of a new model failed");
                }
            }
        }
        if !changes.is_empty() {
            let loaded: Vec<u64> = self.models.ready().iter().map(|m| m.id).collect();
            self.linear_heads.retain(&loaded);
            tracing::info!(loaded = ?changes.loaded, failed = ?changes.failed, removed = ?changes.removed, "models changed");
            self.log_default();
        }
        Ok(changes)
    }

    /// Polls the models folder every `every` until the engine drains.
    pub fn watch_models(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let service = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            while !service.engine.is_draining() {
                tick.tick().await;
                if let Err(e) = service.refresh_models().await {
                    tracing::warn!(error = %e, "could not re-read the models folder");
                }
            }
        })
    }

    /// Stops taking work, waits up to `grace` for what is in flight, stops the engine.
    pub async fn shutdown(&self, grace: Duration) {
        self.engine.shutdown(grace).await;
    }
}

/// A request's deadline, with what to tell the client when it passes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadline {
    at: Instant,
    ms: u64,
    max: u64,
}

impl Deadline {
    fn exceeded(&self) -> ServiceError {
        ServiceError::DeadlineExceeded { timeout_ms: self.ms, max_ms: self.max }
    }

    /// The engine's refusal in the request's terms: how long the queue is, when to come
    /// back, and what to ask for instead.
    fn refused(&self, r: &Refusal, anytime: bool) -> ServiceError {
        let (ahead, own) = (r.ahead.as_secs_f64(), r.own.as_secs_f64());
        // What the deadline would need (from the request's start, as `timeout_ms` counts),
        // with the tenth the admission keeps for the rest, rounded up to 100 ms.
        let spent = self.ms.saturating_sub(self.at.saturating_duration_since(Instant::now()).as_millis() as u64);
        let need_ms = (spent + ((ahead + own) * 1000.0 / 0.9) as u64).div_ceil(100) * 100;
        let alone = if r.fits_alone { "" } else { ", more than this deadline allows on an idle server" };
        let anytime = if anytime { "" } else { ", or the best map within this deadline with `anytime=true`" };
        let message = format!(
            "the server cannot finish this request within its deadline of {} ms: {} admitted requests \
             run before it with about {ahead:.1} s of work, and it needs about {own:.1} s itself{alone}; \
             retry after {} s, ask for a longer deadline (`timeout_ms` of about {need_ms}, at most {} on \
             this server){anytime}",
            self.ms,
            r.ahead_jobs,
            r.retry_after.as_secs(),
            self.max,
        );
        ServiceError::Refused { message, retry_after_s: r.retry_after.as_secs().max(1) }
    }

    /// Runs `work` within the deadline (plus slack: the engine enforces it first); a
    /// refusal is told in the request's terms (`anytime`: whether it asked for a partial
    /// map already).
    async fn bound<T>(
        deadline: Option<Deadline>,
        anytime: bool,
        work: impl Future<Output = Result<T, ServiceError>>,
    ) -> Result<T, ServiceError> {
        let result = match deadline {
            Some(d) => tokio::time::timeout_at(tokio::time::Instant::from_std(d.at) + DEADLINE_SLACK, work)
                .await
                .map_err(|_| d.exceeded())?,
            None => work.await,
        };
        match (result, deadline) {
            (Err(ServiceError::Engine(EngineError::DeadlineExceeded)), Some(d)) => Err(d.exceeded()),
            (Err(ServiceError::Engine(EngineError::Refused(r))), Some(d)) => Err(d.refused(&r, anytime)),
            (r, _) => r,
        }
    }
}
